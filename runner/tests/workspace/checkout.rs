//! Checkout per strategy: contents match the commit, reuse across jobs, fallbacks, errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use runner::workspace::{CheckoutSpec, GitStrategy, WorkspaceError, Workspaces};

use crate::{Repo, files, listing, mode, write};

/// Three commits exercising additions, changes, deletions, an exec bit and a symlink.
fn history(repo: &Repo) -> [String; 3] {
    repo.write("README.md", "v1\n").write("src/main.rs", "fn main() {}\n").write("src/lib.rs", "// lib\n");
    repo.write(".gitignore", "target/\n*.log\n");
    let a = repo.commit("one");
    repo.write("README.md", "v2\n").remove("src/lib.rs").write("docs/guide.md", "guide\n").write("run.sh", "#!/bin/sh\n");
    fs::set_permissions(repo.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("docs/guide.md", repo.path().join("guide")).unwrap();
    let b = repo.commit("two");
    repo.write("src/lib.rs", "// back\n").remove("docs/guide.md").write("docs/other.md", "other\n");
    let c = repo.commit("three");
    [a, b, c]
}

#[test]
fn each_commit_is_checked_out_exactly() {
    let repo = Repo::new();
    let shas = history(&repo);
    let ws = repo.workspaces();
    for i in [0, 1, 2, 1, 0, 2, 2, 0] {
        let dir = ws.prepare(0, &CheckoutSpec::new(shas[i].clone())).unwrap();
        assert_eq!(files(&dir), repo.tree(&shas[i]), "commit {i}");
        if i >= 1 {
            assert_eq!(mode(&dir.join("run.sh")) & 0o111, 0o111, "exec bit at commit {i}");
        }
        let head = git2::Repository::open(&dir).unwrap().head().unwrap().peel_to_commit().unwrap().id().to_string();
        assert_eq!(head, shas[i]);
    }
}

#[test]
fn layout_is_root_slot_project() {
    let repo = Repo::new();
    let sha = history(&repo)[0].clone();
    let ws = repo.workspaces();
    let dir = ws.prepare(3, &CheckoutSpec::new(sha)).unwrap();
    let root = fs::canonicalize(repo.path().join(".piste/builds")).unwrap();
    assert_eq!(dir, root.join("3").join("app"));
    assert_eq!(ws.path(3), dir);
    let top: Vec<String> = listing(&root).into_keys().filter(|k| !k.contains('/')).collect();
    assert_eq!(top, [".gitignore", "3"]);
    assert_eq!(fs::read_to_string(root.join(".gitignore")).unwrap(), "*\n");
    // The source stays clean: the workspaces are ignored.
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    let statuses = repo.git.statuses(Some(&mut opts)).unwrap();
    let dirty: Vec<String> = statuses.iter().map(|s| s.path().unwrap().to_owned()).collect();
    assert!(dirty.is_empty(), "{dirty:?}");
}

/// The benchmark scenario: 50 jobs in a row in one slot, each leaving a mess behind.
#[test]
fn fifty_jobs_reuse_one_slot() {
    let repo = Repo::new();
    for i in 0..20 {
        repo.write(&format!("dir{}/file{i}.txt", i % 4), &format!("content {i}\n"));
    }
    repo.write(".gitignore", "target/\n");
    let first = repo.commit("first");
    repo.write("dir0/file0.txt", "changed\n").write("dir1/new.txt", "new\n").remove("dir2/file2.txt");
    let second = repo.commit("second");
    let ws = repo.workspaces();
    for job in 0..50 {
        let sha = if job % 7 == 6 { &first } else { &second };
        let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
        assert_eq!(files(&dir), repo.tree(sha), "job {job}");
        assert!(!dir.join("out").exists() && !dir.join("target").exists(), "job {job}: outputs of the previous job survived");
        // The job: outputs, an ignored build dir, a same-size edit of a tracked file (which a
        // stat-only check could miss), a deletion, a read-only directory.
        write(&dir, &format!("out/job{job}/result.txt"), "output");
        write(&dir, "target/debug/app", "binary");
        fs::write(dir.join("dir1/file1.txt"), "CONTENT 1\n").unwrap();
        fs::remove_file(dir.join("dir3/file3.txt")).unwrap();
        fs::set_permissions(dir.join("out"), fs::Permissions::from_mode(0o555)).unwrap();
    }
}

#[test]
fn slot_objects_come_from_alternates() {
    let repo = Repo::new();
    let sha = history(&repo)[2].clone();
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha)).unwrap();
    let objects = dir.join(".git/objects");
    let alternates = fs::read_to_string(objects.join("info/alternates")).unwrap();
    let source_objects = fs::canonicalize(repo.git.path().join("objects")).unwrap();
    assert_eq!(alternates, format!("{}\n", source_objects.display()));
    let stored: Vec<String> = listing(&objects).into_iter().filter(|(_, v)| v != "/").map(|(k, _)| k).collect();
    assert_eq!(stored, ["info/alternates"], "the slot stores no object of its own");
}

#[test]
fn clone_strategy_recreates_the_slot() {
    let repo = Repo::new();
    let sha = history(&repo)[1].clone();
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
    fs::write(dir.join(".git/marker"), "old repository").unwrap();
    write(&dir, "keep-me-with-none-flags", "x");
    let spec = CheckoutSpec { strategy: GitStrategy::Clone, clean_flags: Some("none".into()), ..CheckoutSpec::new(sha.clone()) };
    let again = ws.prepare(0, &spec).unwrap();
    assert_eq!(again, dir);
    assert!(!dir.join(".git/marker").exists(), "the repository was not recreated");
    assert_eq!(files(&dir), repo.tree(&sha));
}

#[test]
fn none_strategy_touches_nothing() {
    let repo = Repo::new();
    let [a, b, _] = history(&repo);
    let ws = repo.workspaces();
    let none = |sha: &str| CheckoutSpec { strategy: GitStrategy::None, ..CheckoutSpec::new(sha) };
    // A slot never used: an empty directory, no repository.
    let fresh = ws.prepare(1, &none(&a)).unwrap();
    assert!(fresh.is_dir());
    assert!(listing(&fresh).is_empty() && !fresh.join(".git").exists());

    let dir = ws.prepare(0, &CheckoutSpec::new(a.clone())).unwrap();
    write(&dir, "artifact.bin", "from an earlier job");
    fs::write(dir.join("README.md"), "edited").unwrap();
    let before = listing(&dir);
    assert_eq!(ws.prepare(0, &none(&b)).unwrap(), dir);
    assert_eq!(listing(&dir), before);
}

#[test]
fn empty_strategy_leaves_an_empty_directory() {
    let repo = Repo::new();
    let sha = history(&repo)[0].clone();
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
    let spec = CheckoutSpec { strategy: GitStrategy::Empty, ..CheckoutSpec::new(sha) };
    assert_eq!(ws.prepare(0, &spec).unwrap(), dir);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

/// GitLab ("Git checkout", `GIT_CHECKOUT: "false"`): the runner fetches but runs neither
/// checkout nor clean; the job can check out what it wants itself.
#[test]
fn checkout_false_skips_checkout_and_clean() {
    let repo = Repo::new();
    let [a, b, _] = history(&repo);
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec::new(a.clone())).unwrap();
    write(&dir, "leftover.txt", "x");
    let spec = CheckoutSpec { checkout: false, ..CheckoutSpec::new(b.clone()) };
    ws.prepare(0, &spec).unwrap();
    let mut expected = repo.tree(&a);
    expected.insert("leftover.txt".into(), "x".into());
    assert_eq!(files(&dir), expected);
    // A fresh slot without checkout: a repository and no files.
    let fresh = ws.prepare(1, &spec).unwrap();
    assert!(fresh.join(".git/objects/info/alternates").is_file());
    assert!(files(&fresh).is_empty());
    // Fetched: the job's commit is there to check out.
    let slot = git2::Repository::open(&fresh).unwrap();
    assert!(slot.find_commit(git2::Oid::from_str(&b).unwrap()).is_ok());
}

/// `GIT_DEPTH` changes the history the job sees (`submodules.rs` checks that), never its files.
#[test]
fn depth_keeps_the_files_of_the_commit() {
    let repo = Repo::new();
    let sha = history(&repo)[2].clone();
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec { depth: Some(1), ..CheckoutSpec::new(sha.clone()) }).unwrap();
    assert_eq!(files(&dir), repo.tree(&sha));
}

#[test]
fn revisions_are_resolved_in_the_source() {
    let repo = Repo::new();
    let [a, _, c] = history(&repo);
    let ws = repo.workspaces();
    let branch = repo.git.head().unwrap().shorthand().unwrap().to_owned();
    for (rev, sha) in [("", &c), ("HEAD", &c), ("HEAD~2", &a), (&a[..10], &a), (branch.as_str(), &c)] {
        let dir = ws.prepare(0, &CheckoutSpec::new(rev)).unwrap();
        assert_eq!(files(&dir), repo.tree(sha), "rev `{rev}`");
    }
}

#[test]
fn broken_slots_are_recreated() {
    let repo = Repo::new();
    let sha = history(&repo)[1].clone();
    let ws = repo.workspaces();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
    type Breakage = fn(&Path);
    let breakages: [(&str, Breakage); 5] = [
        ("stale index lock", |d| fs::write(d.join(".git/index.lock"), "").unwrap()),
        ("garbage HEAD", |d| fs::write(d.join(".git/HEAD"), "garbage").unwrap()),
        ("alternates elsewhere", |d| fs::write(d.join(".git/objects/info/alternates"), "/nowhere\n").unwrap()),
        ("no .git", |d| fs::remove_dir_all(d.join(".git")).unwrap()),
        ("a file instead of the project directory", |d| {
            fs::remove_dir_all(d).unwrap();
            fs::write(d, "not a directory").unwrap();
        }),
    ];
    for (what, breakage) in breakages {
        breakage(&dir);
        assert_eq!(ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap(), dir, "{what}");
        assert_eq!(files(&dir), repo.tree(&sha), "{what}");
    }
}

#[test]
fn a_symlinked_slot_is_replaced_not_followed() {
    let repo = Repo::new();
    let sha = history(&repo)[0].clone();
    let ws = repo.workspaces();
    let outside = repo.tmp.path().join("outside");
    write(&outside, "app/precious.txt", "keep");
    fs::create_dir_all(ws.root()).unwrap();
    std::os::unix::fs::symlink(&outside, ws.root().join("0")).unwrap();
    let dir = ws.prepare(0, &CheckoutSpec { strategy: GitStrategy::Clone, ..CheckoutSpec::new(sha.clone()) }).unwrap();
    assert!(!fs::symlink_metadata(ws.root().join("0")).unwrap().file_type().is_symlink());
    assert_eq!(files(&dir), repo.tree(&sha));
    assert_eq!(fs::read_to_string(outside.join("app/precious.txt")).unwrap(), "keep");
}

#[test]
fn slots_prepare_in_parallel() {
    let repo = Repo::new();
    let shas = history(&repo);
    let ws = repo.workspaces();
    let trees: Vec<_> = shas.iter().map(|sha| repo.tree(sha)).collect();
    std::thread::scope(|s| {
        for slot in 0..3 {
            let (ws, shas, trees) = (&ws, &shas, &trees);
            s.spawn(move || {
                for round in 0..15 {
                    let i = (slot + round) % 3;
                    let dir = ws.prepare(slot, &CheckoutSpec::new(shas[i].clone())).unwrap();
                    assert_eq!(&files(&dir), &trees[i], "slot {slot} round {round}");
                    write(&dir, "target/junk", "x");
                }
            });
        }
    });
}

#[test]
fn errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let err = Workspaces::new(&plain, &tmp.path().join("builds")).unwrap_err();
    assert!(matches!(err, WorkspaceError::NotARepository { .. }), "{err:?}");
    assert!(err.to_string().contains("is not in a git repository") && err.to_string().contains("GIT_STRATEGY: none"), "{err}");

    let bare = tmp.path().join("bare.git");
    git2::Repository::init_bare(&bare).unwrap();
    let err = Workspaces::new(&bare, &tmp.path().join("builds")).unwrap_err();
    assert!(matches!(err, WorkspaceError::BareRepository { .. }), "{err:?}");

    let empty = tmp.path().join("empty");
    git2::Repository::init(&empty).unwrap();
    let err = Workspaces::new(&empty, &empty.join(".piste/builds")).unwrap_err();
    assert!(matches!(err, WorkspaceError::NoCommit { .. }), "{err:?}");
    assert!(err.to_string().contains("no commit yet"), "{err}");

    let repo = Repo::new();
    history(&repo);
    for root in [repo.path(), repo.tmp.path().to_owned()] {
        let err = Workspaces::new(&repo.path(), &root).unwrap_err();
        assert!(matches!(err, WorkspaceError::InvalidRoot { .. }), "{err:?}");
    }
    let ws = repo.workspaces();
    for rev in ["0123456789012345678901234567890123456789", "no-such-branch", "HEAD~99"] {
        let err = ws.prepare(0, &CheckoutSpec::new(rev)).unwrap_err();
        assert!(matches!(err, WorkspaceError::UnknownRevision { .. }), "{rev}: {err:?}");
        assert!(err.to_string().contains("does not name a commit"), "{err}");
    }
    let err = ws.prepare(5, &CheckoutSpec { clean_flags: Some("-ffdx --interactive".into()), ..CheckoutSpec::new("") }).unwrap_err();
    assert!(err.to_string().contains("GIT_CLEAN_FLAGS `-ffdx --interactive`: `--interactive` is not supported"), "{err}");
    assert!(!ws.root().join("5").exists(), "a refused spec must not touch the slot");
}

#[test]
fn a_subdirectory_finds_its_repository() {
    let repo = Repo::new();
    let sha = history(&repo)[0].clone();
    let ws = runner::workspace::Workspaces::new(&repo.path().join("src"), &repo.path().join(".piste/builds")).unwrap();
    assert_eq!(ws.source(), fs::canonicalize(repo.path()).unwrap());
    let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
    assert_eq!(files(&dir), repo.tree(&sha));
}

/// Jobs that use git in their checkout (stage, unstage, commit, switch) leave nothing behind.
#[test]
fn git_operations_of_a_job_are_undone() {
    let repo = Repo::new();
    let [a, b, _] = history(&repo);
    let ws = repo.workspaces();
    type Job = fn(&Path);
    let jobs: [(&str, Job); 4] = [
        ("stages a new file", |d| {
            write(d, "staged-by-job.txt", "x");
            let git = git2::Repository::open(d).unwrap();
            let mut index = git.index().unwrap();
            index.add_path(Path::new("staged-by-job.txt")).unwrap();
            index.write().unwrap();
        }),
        ("unstages a tracked file", |d| {
            let git = git2::Repository::open(d).unwrap();
            let mut index = git.index().unwrap();
            index.remove_path(Path::new("README.md")).unwrap();
            index.write().unwrap();
        }),
        ("commits", |d| {
            write(d, "committed-by-job.txt", "x");
            let git = git2::Repository::open(d).unwrap();
            let mut index = git.index().unwrap();
            index.add_path(Path::new("committed-by-job.txt")).unwrap();
            index.write().unwrap();
            let tree = git.find_tree(index.write_tree().unwrap()).unwrap();
            let sig = git2::Signature::now("Job", "job@example.com").unwrap();
            let parent = git.head().unwrap().peel_to_commit().unwrap();
            git.commit(Some("HEAD"), &sig, &sig, "job commit", &tree, &[&parent]).unwrap();
        }),
        ("checks out another commit", |d| {
            let git = git2::Repository::open(d).unwrap();
            let first = git.head().unwrap().peel_to_commit().unwrap().parent(0).unwrap();
            git.checkout_tree(first.as_object(), Some(git2::build::CheckoutBuilder::new().force())).unwrap();
            git.set_head_detached(first.id()).unwrap();
        }),
    ];
    for (what, job) in jobs {
        let dir = ws.prepare(0, &CheckoutSpec::new(b.clone())).unwrap();
        assert_eq!(files(&dir), repo.tree(&b), "before the job that {what}");
        job(&dir);
        let dir = ws.prepare(0, &CheckoutSpec::new(b.clone())).unwrap();
        assert_eq!(files(&dir), repo.tree(&b), "after the job that {what}");
        let status = git2::Repository::open(&dir).unwrap().statuses(None).unwrap().len();
        assert_eq!(status, 0, "the slot's index differs from HEAD after the job that {what}");
    }
    let dir = ws.prepare(0, &CheckoutSpec::new(a.clone())).unwrap();
    assert_eq!(files(&dir), repo.tree(&a));
}

/// Without clean, switching commits still removes the files the new commit does not have.
#[test]
fn switching_commits_without_clean_removes_deleted_files() {
    let repo = Repo::new();
    let shas = history(&repo);
    let ws = repo.workspaces();
    for i in [0, 1, 2, 0, 2, 1] {
        let spec = CheckoutSpec { clean_flags: Some("none".into()), ..CheckoutSpec::new(shas[i].clone()) };
        let dir = ws.prepare(0, &spec).unwrap();
        assert_eq!(files(&dir), repo.tree(&shas[i]), "commit {i}");
    }
}

/// A job that points the slot's repository elsewhere cannot make the next checkout or clean
/// write outside the slot.
#[test]
fn a_job_cannot_redirect_the_slot() {
    let repo = Repo::new();
    let sha = history(&repo)[1].clone();
    let ws = repo.workspaces();
    let outside = repo.tmp.path().join("outside");
    write(&outside, "precious.txt", "keep");
    let victim = repo.tmp.path().join("victim");
    git2::Repository::init(&victim).unwrap();
    write(&victim, "precious.txt", "keep");
    type Redirect = fn(&Path, &Path, &Path);
    let redirects: [(&str, Redirect); 3] = [
        ("core.worktree", |d, outside, _| {
            git2::Repository::open(d).unwrap().config().unwrap().set_str("core.worktree", outside.to_str().unwrap()).unwrap();
        }),
        ("a .git symlink", |d, _, victim| {
            fs::remove_dir_all(d.join(".git")).unwrap();
            std::os::unix::fs::symlink(victim.join(".git"), d.join(".git")).unwrap();
        }),
        ("the project directory moved away and symlinked", |d, outside, _| {
            let moved = outside.join("moved");
            fs::rename(d, &moved).unwrap();
            std::os::unix::fs::symlink(&moved, d).unwrap();
            write(&moved, "junk.txt", "a clean through the symlink would remove this");
        }),
    ];
    for (what, redirect) in redirects {
        let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
        redirect(&dir, &outside, &victim);
        let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
        assert_eq!(files(&dir), repo.tree(&sha), "{what}");
        let mut outside_now: Vec<String> = listing(&outside).into_keys().collect();
        if let Some(moved) = listing(&outside).get("moved") {
            assert_eq!(moved, "/");
            let mut untouched = repo.tree(&sha);
            untouched.insert("junk.txt".into(), "a clean through the symlink would remove this".into());
            assert_eq!(files(&outside.join("moved")), untouched, "{what}: the moved checkout was touched");
            outside_now.retain(|p| p == "precious.txt");
            fs::remove_dir_all(outside.join("moved")).unwrap();
        }
        assert_eq!(outside_now, ["precious.txt"], "{what}: wrote outside the slot");
        assert_eq!(listing(&victim).into_keys().collect::<Vec<_>>(), ["precious.txt"], "{what}: wrote into another repository");
    }
}

/// A job that changes its checkout's git configuration (`core.fsmonitor`, an include, hooks)
/// cannot reach a later job: the next checkout of the slot starts from git metadata piste made.
#[test]
fn a_job_cannot_leave_git_configuration_or_hooks_behind() {
    let repo = Repo::new();
    let sha = history(&repo)[1].clone();
    let ws = repo.workspaces();
    type Poison = fn(&Path);
    let poisons: [(&str, Poison); 4] = [
        ("core.fsmonitor", |d| {
            git2::Repository::open(d).unwrap().config().unwrap().set_str("core.fsmonitor", "touch pwned").unwrap();
        }),
        ("include.path", |d| {
            git2::Repository::open(d).unwrap().config().unwrap().set_str("include.path", "/tmp/evil.gitconfig").unwrap();
        }),
        ("a hook", |d| write(&d.join(".git/hooks"), "post-checkout", "#!/bin/sh\ntouch pwned\n")),
        ("attributes", |d| write(&d.join(".git/info"), "attributes", "* filter=evil\n")),
    ];
    for (what, poison) in poisons {
        let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
        poison(&dir);
        let dir = ws.prepare(0, &CheckoutSpec::new(sha.clone())).unwrap();
        let config = git2::Config::open(&dir.join(".git/config")).unwrap();
        for key in ["core.fsmonitor", "include.path"] {
            assert!(config.get_string(key).is_err(), "{what}: `{key}` survived into the next job");
        }
        assert!(!dir.join(".git/hooks/post-checkout").exists(), "{what}: the hook survived");
        assert!(!dir.join(".git/info/attributes").exists(), "{what}: the attributes survived");
        assert_eq!(files(&dir), repo.tree(&sha), "{what}");
    }
}
