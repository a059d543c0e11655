//! Architectural invariants from ARCHITECTURE.md, checked mechanically.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// Source lines outside `#[cfg(test)]` modules (tests may use the filesystem freely).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        out.push((i + 1, line.to_string()));
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn pipeline_spec_does_no_io_and_knows_nothing_of_tokio() {
    let cargo = std::fs::read_to_string(root().join("pipeline-spec/Cargo.toml")).unwrap();
    let deps = cargo.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    for banned in ["tokio", "bollard", "git2", "reqwest", "hyper"] {
        assert!(!deps.contains(banned), "pipeline-spec must not depend on {banned}");
    }
    for file in rust_files(&root().join("pipeline-spec/src")) {
        if file.components().any(|c| c.as_os_str() == "tests") || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        for (n, line) in code_lines(&file) {
            for banned in ["std::fs", "std::net", "std::process", "std::env::var", "File::open"] {
                assert!(!line.contains(banned), "{}:{n}: pipeline-spec is pure, found `{banned}`", file.display());
            }
        }
    }
}

#[test]
fn only_the_binary_prints() {
    for krate in ["pipeline-spec/src", "scheduler/src", "runner/src"] {
        for file in rust_files(&root().join(krate)) {
            for (n, line) in code_lines(&file) {
                let code = line.split("//").next().unwrap_or("");
                for banned in ["println!", "eprintln!", "print!(", "eprint!(", "dbg!("] {
                    assert!(
                        !code.contains(banned),
                        "{}:{n}: libraries do not print (`{banned}`); return data or log with tracing",
                        file.display()
                    );
                }
            }
        }
    }
}
