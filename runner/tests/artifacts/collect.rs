//! `artifacts:paths` / `exclude` / `untracked` semantics.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use runner::artifacts::{ArtifactSpec, Collected, collect};

use crate::Sandbox;

fn spec(paths: &[&str], exclude: &[&str]) -> ArtifactSpec {
    ArtifactSpec {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        untracked: Vec::new(),
    }
}

fn names(c: &Collected) -> Vec<String> {
    c.files.iter().map(|p| p.display().to_string()).collect()
}

/// Runs `paths` / `exclude` over a fixed project and compares the file list and warnings.
fn check(paths: &[&str], exclude: &[&str], files: &[&str], warnings: &[&str]) {
    let sb = project();
    let c = collect(&sb.ws(), &spec(paths, exclude)).unwrap();
    assert_eq!(names(&c), files, "files for paths {paths:?} exclude {exclude:?}");
    assert_eq!(c.warnings, warnings, "warnings for paths {paths:?} exclude {exclude:?}");
}

fn project() -> Sandbox {
    let sb = Sandbox::new();
    for f in [
        "README.md",
        "notes.txt",
        "dist/app.js",
        "dist/app.js.map",
        "dist/css/site.css",
        "dist/css/site.css.map",
        "dist/tmp/cache.bin",
        "out/a.apk",
        "out/x/b.apk",
        "out/x/y/c.apk",
        "out/x/y/c.txt",
        "src/main.rs",
    ] {
        sb.file(f, f);
    }
    fs::create_dir_all(sb.ws().join("dist/empty")).unwrap();
    sb
}

#[test]
fn directory_brings_everything_under_it() {
    check(
        &["dist/"],
        &[],
        &[
            "dist",
            "dist/app.js",
            "dist/app.js.map",
            "dist/css",
            "dist/css/site.css",
            "dist/css/site.css.map",
            "dist/empty",
            "dist/tmp",
            "dist/tmp/cache.bin",
        ],
        &[],
    );
}

#[test]
fn single_star_stays_in_one_directory() {
    check(&["*.txt"], &[], &["notes.txt"], &[]);
    check(&["out/*.apk"], &[], &["out/a.apk"], &[]);
    check(&["out/*/*.apk"], &[], &["out/x/b.apk"], &[]);
}

#[test]
fn doublestar_matches_any_depth_including_none() {
    check(&["out/**/*.apk"], &[], &["out/a.apk", "out/x/b.apk", "out/x/y/c.apk"], &[]);
    check(&["**/c.*"], &[], &["out/x/y/c.apk", "out/x/y/c.txt"], &[]);
}

#[test]
fn matched_directories_are_recursive() {
    check(&["out/x*"], &[], &["out/x", "out/x/b.apk", "out/x/y", "out/x/y/c.apk", "out/x/y/c.txt"], &[]);
}

#[test]
fn exclude_removes_matches_and_is_not_recursive() {
    check(&["dist/"], &["dist/**/*.map", "dist/tmp/**", "dist/empty"], &["dist", "dist/app.js", "dist/css", "dist/css/site.css"], &[]);
    // Excluding a directory by its own name keeps what is under it, as GitLab does.
    check(&["out/x"], &["out/x"], &["out/x/b.apk", "out/x/y", "out/x/y/c.apk", "out/x/y/c.txt"], &[]);
}

#[test]
fn overlapping_paths_are_deduplicated_and_sorted() {
    check(&["src/main.rs", "src", "./src/main.rs", "README.md"], &[], &["README.md", "src", "src/main.rs"], &[]);
}

#[test]
fn no_match_is_a_warning_not_an_error() {
    check(&["nope/*", "missing.txt"], &[], &[], &["`nope/*`: no matching files", "`missing.txt`: no matching files"]);
    check(&["README.md"], &["*.md"], &[], &["`README.md`: no matching files"]);
    check(&["."], &[], &[], &["`.`: no matching files"]);
}

#[test]
fn paths_outside_the_workspace_are_refused() {
    let sb = project();
    sb.file("../outside.txt", "secret");
    let abs_inside = format!("{}/README.md", sb.ws().display());
    let c = collect(&sb.ws(), &spec(&["../outside.txt", "/etc/passwd", &abs_inside, "a/../../x"], &[])).unwrap();
    assert_eq!(names(&c), ["README.md"]);
    assert_eq!(
        c.warnings,
        [
            "`../outside.txt`: outside the project directory; skipped",
            "`/etc/passwd`: outside the project directory; skipped",
            "`a/../../x`: outside the project directory; skipped",
        ]
    );
}

#[test]
fn symlinks_are_entries_never_followed() {
    let sb = project();
    let outside = sb.base().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "s3cret").unwrap();
    symlink(&outside, sb.ws().join("escape")).unwrap();
    symlink("/etc/passwd", sb.ws().join("dist/passwd")).unwrap();
    symlink("css", sb.ws().join("dist/current")).unwrap();
    symlink("../README.md", sb.ws().join("dist/readme")).unwrap();
    symlink("../../x", sb.ws().join("dist/climb")).unwrap();

    let c = collect(&sb.ws(), &spec(&["escape", "escape/secret", "escape/*", "dist/", "**/secret"], &[])).unwrap();
    let files = names(&c);
    assert!(files.iter().all(|f| !f.starts_with("escape")), "{files:?}");
    assert!(files.contains(&"dist/current".to_owned()), "inside symlink kept: {files:?}");
    assert!(files.contains(&"dist/readme".to_owned()), "{files:?}");
    assert!(!files.iter().any(|f| f.starts_with("dist/current/")), "symlinked dir traversed: {files:?}");
    assert!(!files.contains(&"dist/passwd".to_owned()) && !files.contains(&"dist/climb".to_owned()));
    let w = c.warnings.join("\n");
    let target = outside.display();
    assert!(w.contains(&format!("`escape`: symlink to an absolute path (`{target}`); skipped")), "{w}");
    assert!(w.contains("`escape/secret`: `escape` is a symlink; paths through it are not followed"), "{w}");
    assert!(w.contains("`escape/*`: `escape` is a symlink; paths through it are not followed"), "{w}");
    assert!(w.contains("`dist/passwd`: symlink to an absolute path (`/etc/passwd`); skipped"), "{w}");
    assert!(w.contains("`dist/climb`: symlink pointing outside the tree (`../../x`); skipped"), "{w}");
    assert!(w.contains("`**/secret`: no matching files"), "{w}");
}

#[test]
fn special_files_are_skipped_with_a_warning_and_hard_links_kept() {
    let sb = project();
    let listener = std::os::unix::net::UnixListener::bind(sb.ws().join("dist/sock")).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, sb.ws().join("dist/fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap();
    fs::hard_link(sb.ws().join("dist/app.js"), sb.ws().join("dist/app-link.js")).unwrap();
    let c = collect(&sb.ws(), &spec(&["dist/*"], &[])).unwrap();
    let files = names(&c);
    assert!(files.contains(&"dist/app-link.js".to_owned()) && files.contains(&"dist/app.js".to_owned()));
    assert!(!files.iter().any(|f| f.ends_with("sock") || f.ends_with("fifo")), "{files:?}");
    assert_eq!(c.warnings, ["`dist/fifo`: a fifo; skipped", "`dist/sock`: a socket; skipped"]);
    drop(listener);
}

#[test]
fn untracked_files_are_added_with_excludes_applied() {
    let sb = project();
    let mut s = spec(&["README.md"], &["**/*.map"]);
    s.untracked = ["notes.txt", "dist/app.js.map", "./src/main.rs", "../outside", "gone.txt"].iter().map(PathBuf::from).collect();
    let c = collect(&sb.ws(), &s).unwrap();
    assert_eq!(names(&c), ["README.md", "notes.txt", "src/main.rs"]);
    assert_eq!(c.warnings, ["untracked `../outside`: outside the project directory; skipped"]);

    let mut s = spec(&[], &[]);
    s.untracked = vec![PathBuf::from("gone.txt")];
    let c = collect(&sb.ws(), &s).unwrap();
    assert_eq!(c.warnings, ["untracked: no files"]);
}

#[test]
fn missing_workspace_is_an_error() {
    let sb = Sandbox::new();
    let err = collect(&sb.base().join("nope"), &spec(&["x"], &[])).unwrap_err();
    assert!(err.to_string().contains("cannot read workspace"), "{err}");
}
