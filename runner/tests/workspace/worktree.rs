//! `--worktree`: uncommitted changes of the source reach the job's checkout.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use runner::workspace::{CheckoutSpec, WorkspaceError};

use crate::{Repo, files, mode};

fn worktree_spec() -> CheckoutSpec {
    CheckoutSpec { worktree: true, ..CheckoutSpec::new("") }
}

fn project() -> (Repo, String) {
    let repo = Repo::new();
    repo.write("README.md", "committed\n").write("src/main.rs", "fn main() {}\n").write("old.txt", "to delete\n");
    repo.write("dir-to-be/file", "was a file path\n").write(".gitignore", "target/\n*.secret\n");
    let sha = repo.commit("init");
    (repo, sha)
}

#[test]
fn modifications_additions_and_deletions_are_applied() {
    let (repo, sha) = project();
    repo.write("README.md", "edited, not committed\n");
    repo.write("notes/new.txt", "untracked\n");
    repo.write("staged.txt", "staged only\n");
    repo.git.index().and_then(|mut i| i.add_path("staged.txt".as_ref()).and_then(|()| i.write())).unwrap();
    repo.remove("old.txt");
    repo.write("target/build.out", "ignored\n").write("api.secret", "ignored\n");
    repo.write(".piste/cache/keys/x.tar.gz", "piste state\n");
    repo.write("tool.sh", "#!/bin/sh\n");
    fs::set_permissions(repo.path().join("tool.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("README.md", repo.path().join("readme-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", repo.path().join("absolute-link")).unwrap();

    let ws = repo.workspaces();
    let dir = ws.prepare(0, &worktree_spec()).unwrap();
    let mut expected = repo.tree(&sha);
    expected.insert("README.md".into(), "edited, not committed\n".into());
    expected.insert("notes/new.txt".into(), "untracked\n".into());
    expected.insert("staged.txt".into(), "staged only\n".into());
    expected.remove("old.txt");
    expected.insert("tool.sh".into(), "#!/bin/sh\n".into());
    expected.insert("readme-link".into(), "-> README.md".into());
    expected.insert("absolute-link".into(), "-> /etc/hostname".into());
    assert_eq!(files(&dir), expected);
    assert_eq!(mode(&dir.join("tool.sh")), 0o750);
    // Symlinks are links in the workspace too, never copies of what they point at.
    assert!(fs::symlink_metadata(dir.join("absolute-link")).unwrap().file_type().is_symlink());
}

#[test]
fn each_job_sees_the_tree_as_it_is_now() {
    let (repo, sha) = project();
    let ws = repo.workspaces();
    repo.write("README.md", "first edit\n").write("scratch.txt", "scratch\n");
    let dir = ws.prepare(0, &worktree_spec()).unwrap();
    assert_eq!(fs::read_to_string(dir.join("README.md")).unwrap(), "first edit\n");
    // The developer reverts the edit and deletes the scratch file between two jobs.
    repo.write("README.md", "committed\n").remove("scratch.txt");
    let dir = ws.prepare(0, &worktree_spec()).unwrap();
    assert_eq!(files(&dir), repo.tree(&sha));
}

#[test]
fn a_file_replaced_by_a_directory_and_back() {
    let (repo, sha) = project();
    let ws = repo.workspaces();
    fs::remove_dir_all(repo.path().join("dir-to-be")).unwrap();
    repo.write("dir-to-be", "now a file\n");
    let dir = ws.prepare(0, &worktree_spec()).unwrap();
    assert_eq!(fs::read_to_string(dir.join("dir-to-be")).unwrap(), "now a file\n");

    fs::remove_file(repo.path().join("README.md")).unwrap();
    repo.write("README.md/inside.txt", "a directory now\n");
    let dir = ws.prepare(0, &worktree_spec()).unwrap();
    assert_eq!(fs::read_to_string(dir.join("README.md/inside.txt")).unwrap(), "a directory now\n");
    let mut expected = repo.tree(&sha);
    expected.remove("README.md");
    expected.remove("dir-to-be/file");
    expected.insert("dir-to-be".into(), "now a file\n".into());
    expected.insert("README.md/inside.txt".into(), "a directory now\n".into());
    assert_eq!(files(&dir), expected);
}

#[test]
fn a_workspace_symlink_is_never_written_through() {
    let (repo, _) = project();
    let ws = repo.workspaces();
    let outside = repo.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let dir = ws.prepare(0, &worktree_spec()).unwrap();
    // A job left `notes` as a symlink to a directory outside; with clean disabled it stays.
    std::os::unix::fs::symlink(&outside, dir.join("notes")).unwrap();
    repo.write("notes/new.txt", "untracked\n");
    let spec = CheckoutSpec { clean_flags: Some("none".into()), ..worktree_spec() };
    ws.prepare(0, &spec).unwrap();
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "wrote through a symlink");
    assert_eq!(fs::read_to_string(dir.join("notes/new.txt")).unwrap(), "untracked\n");
}

#[test]
fn worktree_needs_head() {
    let (repo, first) = project();
    repo.write("README.md", "second\n");
    repo.commit("second");
    let ws = repo.workspaces();
    let err = ws.prepare(0, &CheckoutSpec { worktree: true, ..CheckoutSpec::new(first.clone()) }).unwrap_err();
    assert!(matches!(err, WorkspaceError::WorktreeNotHead { .. }), "{err:?}");
    assert!(err.to_string().contains(&first), "{err}");
    // Naming HEAD's commit explicitly is fine.
    let head = repo.git.head().unwrap().peel_to_commit().unwrap().id().to_string();
    ws.prepare(0, &CheckoutSpec { worktree: true, ..CheckoutSpec::new(head) }).unwrap();
}
