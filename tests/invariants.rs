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
    for krate in ["pipeline-spec/src", "scheduler/src", "runner/src", "server/src"] {
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

/// The crate graph states the architecture (ARCHITECTURE.md, *Invariants*): `cargo tree -p CRATE
/// -i DEP` must find no path, dev-dependencies included, for each pair below. `make lint` runs the
/// same check from the shell.
#[test]
fn crate_graph_states_the_architecture() {
    const ABSENT: &[(&str, &[&str])] = &[
        ("pipeline-spec", &["tokio", "git2", "reqwest", "bollard", "scheduler", "runner", "server"]),
        ("scheduler", &["tokio", "axum", "sqlx", "git2", "maud", "reqwest", "bollard", "runner", "server"]),
        ("runner", &["sqlx", "axum", "maud", "server"]),
        // Shared by the server and the runner: std and the `git` program only.
        ("git-remote", &["tokio", "git2", "runner", "server"]),
        // One rustls crypto provider (ring): a second one compiled in makes rustls panic.
        ("piste", &["aws-lc-rs", "aws-lc-sys", "openssl-sys"]),
    ];
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (krate, banned) in ABSENT {
        for dep in *banned {
            let out = std::process::Command::new(&cargo)
                .args(["tree", "--offline", "--quiet", "-p", krate, "-i", dep])
                .current_dir(root())
                .output()
                .expect("run `cargo tree`");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            // `cargo tree -i` fails with "did not match any packages" when nothing depends on
            // the crate at all; any other failure is a broken check, not a pass.
            let absent_everywhere = stderr.contains("did not match any packages");
            assert!(
                stdout.trim().is_empty() && (out.status.success() || absent_everywhere),
                "`{krate}` must not depend on `{dep}`:\n{stdout}{stderr}"
            );
        }
    }
}

/// Every route of the server either decides through `auth` (its handler takes the request's
/// `Caller`) or is one of the routes with their own rules: runner and job tokens, webhook
/// signatures, the login itself, health and metrics. A new people's route that forgets the
/// check fails here.
#[test]
fn every_peoples_route_checks_the_caller() {
    const OWN_RULES: [&str; 13] = [
        "api::healthz",
        "api::metrics",
        "api::webhook",
        "api::git",
        "oidc::login",
        "oidc::callback",
        "runners::register",
        "runners::request_job",
        "runners::heartbeat",
        "runners::append_log",
        "runners::upload_artifacts",
        "runners::download_artifacts",
        "runners::link_artifacts",
    ];
    let lib = std::fs::read_to_string(root().join("server/src/lib.rs")).unwrap();
    let router = lib.split("pub fn router(").nth(1).expect("lib.rs has `router`");
    let router = &router[..router.find("\n}\n").expect("the end of `router`")];
    let mut handlers = Vec::new();
    for piece in router.split(['(', ')', ' ', '.', ',']).filter(|p| p.contains("::")) {
        let name = piece.trim_matches(|c: char| !c.is_alphanumeric() && c != ':' && c != '_');
        if ["api", "pages", "follow", "oidc", "runners", "live", "artifacts", "log_search"]
            .iter()
            .any(|m| name.starts_with(&format!("{m}::")))
        {
            handlers.push(name.to_string());
        }
    }
    assert!(handlers.len() > 20, "routes found: {handlers:?}");
    handlers.retain(|h| !OWN_RULES.contains(&h.as_str()) && h != "runners::finish");
    for h in handlers {
        let (module, function) = h.split_once("::").unwrap();
        let source = std::fs::read_to_string(root().join(format!("server/src/{module}.rs"))).unwrap();
        let start = source.find(&format!("pub async fn {function}(")).unwrap_or_else(|| panic!("{h} is not in {module}.rs"));
        let signature = &source[start..start + source[start..].find('{').unwrap()];
        assert!(
            signature.contains("caller: Caller") || signature.contains("caller: crate::auth::Caller"),
            "{h} does not take the `Caller`: {signature}"
        );
    }
}
