//! `GIT_CLEAN_FLAGS`: what a job leaves behind and what the next checkout removes, compared
//! with expectations taken from git itself (and checked against the git CLI when present).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use runner::workspace::{CheckoutSpec, Workspaces};

use crate::{Repo, listing, write};

/// A committed project: `a`, `src/lib.rs` and a `.gitignore` for `*.log` and `ig/`.
fn project() -> (Repo, String) {
    let repo = Repo::new();
    repo.write("a", "a\n").write("src/lib.rs", "lib\n").write(".gitignore", "*.log\nig/\n");
    let sha = repo.commit("init");
    (repo, sha)
}

/// What a job leaves behind: untracked files and directories, ignored ones, an untracked
/// directory holding an ignored file, another repository, outputs inside a tracked directory.
fn mess(dir: &Path) {
    for (rel, content) in [
        ("new.txt", "untracked"),
        ("top.log", "ignored"),
        ("u/x.txt", "untracked in untracked dir"),
        ("u/keep.log", "ignored in untracked dir"),
        ("u/v/y.txt", "deeper"),
        ("ig/z.txt", "in an ignored dir"),
        ("src/generated.rs", "untracked in tracked dir"),
        ("src/debug.log", "ignored in tracked dir"),
        ("nested/n", "file of another repository"),
    ] {
        write(dir, rel, content);
    }
    git2::Repository::init(dir.join("nested")).unwrap();
}

/// Paths left after preparing with `flags` over the mess, `.git` and `nested/.git` left out.
fn after(ws: &Workspaces, sha: &str, slot: usize, flags: &str) -> Vec<String> {
    let dir = ws.prepare(slot, &CheckoutSpec::new(sha)).unwrap();
    mess(&dir);
    ws.prepare(slot, &CheckoutSpec { clean_flags: Some(flags.to_owned()), ..CheckoutSpec::new(sha) }).unwrap();
    remaining(&dir)
}

fn remaining(dir: &Path) -> Vec<String> {
    listing(dir).into_keys().filter(|k| !k.starts_with("nested/.git")).collect()
}

const TRACKED: [&str; 4] = [".gitignore", "a", "src", "src/lib.rs"];

fn expect(extra: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = TRACKED.iter().chain(extra).map(|s| (*s).to_owned()).collect();
    all.sort();
    all
}

/// Expected results, as git 2.47 behaves.
#[test]
fn flag_sets_behave_like_git() {
    let (repo, sha) = project();
    let ws = repo.workspaces();
    let nested = ["nested", "nested/n"];
    let cases: Vec<(&str, Vec<String>)> = vec![
        // GitLab's default: everything but tracked files goes.
        ("-ffdx", expect(&[])),
        ("", expect(&[])),
        // One -f keeps the other repository.
        ("-fdx", expect(&nested)),
        // Without -x, ignored files stay, even inside an untracked directory.
        ("-ffd", expect(&["top.log", "u", "u/keep.log", "ig", "ig/z.txt", "src/debug.log"])),
        // -X removes only ignored files, looking inside untracked directories.
        ("-ffdX", expect(&["new.txt", "u", "u/x.txt", "u/v", "u/v/y.txt", "src/generated.rs", "nested", "nested/n"])),
        // Without -d, untracked directories stay whole.
        ("-fx", expect(&["u", "u/x.txt", "u/keep.log", "u/v", "u/v/y.txt", "ig", "ig/z.txt", "nested", "nested/n"])),
        // -e keeps what it matches, even with -x.
        ("-ffdx -e u/", expect(&["u", "u/x.txt", "u/keep.log", "u/v", "u/v/y.txt"])),
        ("-ffdx -e *.log", expect(&["top.log", "u", "u/keep.log", "src/debug.log"])),
        ("-ffd --exclude=u/x.txt", expect(&["top.log", "u", "u/x.txt", "u/keep.log", "ig", "ig/z.txt", "src/debug.log"])),
    ];
    for (slot, (flags, expected)) in cases.into_iter().enumerate() {
        assert_eq!(after(&ws, &sha, slot, flags), expected, "GIT_CLEAN_FLAGS `{flags}`");
    }
}

#[test]
fn none_keeps_everything_but_repairs_tracked_files() {
    let (repo, sha) = project();
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
    mess(&dir);
    fs::write(dir.join("a"), "edited by the job\n").unwrap();
    let before = remaining(&dir);
    ws.prepare(0, &CheckoutSpec { clean_flags: Some("none".into()), ..CheckoutSpec::new(sha) }).unwrap();
    assert_eq!(remaining(&dir), before);
    assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "a\n", "checkout still restores tracked files");
}

/// The same flag sets against the git CLI, run on a copy of the same workspace.
#[test]
fn flag_sets_match_the_git_cli() {
    let (repo, sha) = project();
    let ws = repo.workspaces();
    let flag_sets = [
        "-ffdx",
        "-fdx",
        "-ffd",
        "-fd",
        "-ffdX",
        "-fdX",
        "-fX",
        "-fx",
        "-f",
        "-ffdx -e u/",
        "-ffd -e u/x.txt",
        "-fdX -e *.txt",
        "-ffdX -e u/",
        "-ffd -e *.txt",
        "-fx -e new.txt",
        "-ffdx -e /src/*.rs",
        "-ffdxq",
    ];
    for (slot, flags) in flag_sets.into_iter().enumerate() {
        let dir = ws.prepare(slot, &CheckoutSpec::new(sha.clone())).unwrap();
        mess(&dir);
        fs::create_dir_all(dir.join("emptydir")).unwrap();
        fs::create_dir_all(dir.join("u/emptysub")).unwrap();
        let copy = repo.tmp.path().join(format!("copy{slot}"));
        let status = Command::new("cp").arg("-a").arg(&dir).arg(&copy).status().expect("cp");
        assert!(status.success());
        let out = Command::new("git")
            .arg("-C")
            .arg(&copy)
            .arg("clean")
            .args(flags.split_whitespace())
            .output()
            .expect("the git CLI is needed for this test (scripts/deps.sh installs it)");
        assert!(out.status.success(), "git clean {flags}: {}", String::from_utf8_lossy(&out.stderr));
        ws.prepare(slot, &CheckoutSpec { clean_flags: Some(flags.to_owned()), ..CheckoutSpec::new(sha.clone()) }).unwrap();
        assert_eq!(remaining(&dir), remaining(&copy), "GIT_CLEAN_FLAGS `{flags}`");
    }
}

#[test]
fn symlinks_are_removed_not_followed() {
    let (repo, sha) = project();
    let ws = repo.workspaces();
    let outside = repo.tmp.path().join("outside");
    write(&outside, "precious.txt", "keep");
    let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("escape")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("ig")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("src/passwd.log")).unwrap();
    ws.prepare(0, &CheckoutSpec::new(sha)).unwrap();
    assert_eq!(remaining(&dir), expect(&[]));
    assert_eq!(fs::read_to_string(outside.join("precious.txt")).unwrap(), "keep");
}

#[test]
fn read_only_and_deep_trees_are_removed() {
    let (repo, sha) = project();
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
    // Go's module cache makes read-only directories.
    write(&dir, "gopath/pkg/mod/x@v1/file.go", "package x");
    for d in ["gopath/pkg/mod/x@v1", "gopath/pkg/mod"] {
        fs::set_permissions(dir.join(d), fs::Permissions::from_mode(0o555)).unwrap();
    }
    let deep: String = (0..300).map(|i| format!("d{}/", i % 10)).collect();
    write(&dir, &format!("{deep}leaf"), "deep");
    ws.prepare(0, &CheckoutSpec::new(sha)).unwrap();
    assert_eq!(remaining(&dir), expect(&[]));
}
