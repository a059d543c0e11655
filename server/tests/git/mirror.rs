//! Mirrors: fetch, commits, files at a commit, changed paths, and their limits.

use server::git::{GitError, MAX_FILE_BYTES, Mirror};

use crate::Source;

#[test]
fn files_are_read_at_the_commit_asked_for() {
    let src = Source::new();
    let one = src.commit(&[(".gitlab-ci.yml", Some("v1: {script: [echo 1]}\n")), ("ci/a.yml", Some("a: 1\n"))], "one");
    let two = src.commit(&[(".gitlab-ci.yml", Some("v2: {script: [echo 2]}\n")), ("ci/a.yml", None)], "two");
    let m = src.mirror("app");
    assert!(m.has_commit(&one) && m.has_commit(&two));
    assert_eq!(m.read_file(&one, ".gitlab-ci.yml").unwrap().as_deref(), Some("v1: {script: [echo 1]}\n"));
    assert_eq!(m.read_file(&two, ".gitlab-ci.yml").unwrap().as_deref(), Some("v2: {script: [echo 2]}\n"));
    assert_eq!(m.read_file(&one, "ci/a.yml").unwrap().as_deref(), Some("a: 1\n"));
    assert_eq!(m.read_file(&two, "ci/a.yml").unwrap(), None, "deleted in `two`");
    assert_eq!(m.read_file(&one, "./ci//a.yml").unwrap().as_deref(), Some("a: 1\n"));
    assert_eq!(m.read_file(&one, "/ci/a.yml").unwrap().as_deref(), Some("a: 1\n"));
    assert_eq!(m.read_file(&one, "nope.yml").unwrap(), None);
    assert_eq!(m.read_file(&one, "ci/a.yml/deeper").unwrap(), None);
}

#[test]
fn reading_refuses_what_is_not_a_small_text_file() {
    let src = Source::new();
    src.commit(&[("dir/f.yml", Some("x: 1\n"))], "one");
    src.commit_bytes(&[("bin.yml", Some(&[0xff, 0xfe, 0x00][..]))], "binary");
    src.commit_bytes(&[("big.yml", Some(&vec![b'#'; MAX_FILE_BYTES as usize + 1][..]))], "big");
    let sha = src.commit_symlink("link.yml", "/etc/passwd", "link");
    let m = src.mirror("app");
    assert!(matches!(m.read_file(&sha, "dir"), Err(GitError::NotAFile { what: "a directory", .. })));
    assert!(matches!(m.read_file(&sha, "link.yml"), Err(GitError::NotAFile { what: "a symbolic link", .. })));
    assert!(matches!(m.read_file(&sha, "bin.yml"), Err(GitError::NotText(_))));
    let err = m.read_file(&sha, "big.yml").unwrap_err();
    assert!(matches!(err, GitError::TooLarge { size, limit: MAX_FILE_BYTES, .. } if size == MAX_FILE_BYTES + 1), "{err}");
    for bad in ["../etc/passwd", "dir/../../x", "", "/", "a\0b"] {
        assert!(matches!(m.read_file(&sha, bad), Err(GitError::InvalidPath { .. })), "{bad:?}");
    }
    for bad in ["HEAD", "main", "abc", "--upload-pack=x", &"z".repeat(40)] {
        assert!(matches!(m.read_file(bad, "dir/f.yml"), Err(GitError::InvalidSha(_))), "{bad:?}");
        assert!(!m.has_commit(bad));
    }
    let absent = "0123456789012345678901234567890123456789";
    assert!(matches!(m.read_file(absent, "dir/f.yml"), Err(GitError::MissingCommit(_))));
    assert!(!m.has_commit(absent));
}

#[test]
fn changed_files_between_commits() {
    let src = Source::new();
    let one = src.commit(&[("a.txt", Some("a")), ("b/c.txt", Some("c")), ("keep.txt", Some("k"))], "one");
    let two = src.commit(&[("a.txt", Some("A")), ("b/c.txt", None), ("b/d.txt", Some("c")), ("new/e.txt", Some("e"))], "two");
    let m = src.mirror("app");
    assert_eq!(m.changed_files(&one, &two).unwrap(), ["a.txt", "b/c.txt", "b/d.txt", "new/e.txt"]);
    assert_eq!(m.changed_files(&two, &one).unwrap(), ["a.txt", "b/c.txt", "b/d.txt", "new/e.txt"]);
    assert!(m.changed_files(&two, &two).unwrap().is_empty());
    assert!(matches!(m.changed_files("0000000000000000000000000000000000000000", &two), Err(GitError::MissingCommit(_))));
}

#[test]
fn too_many_changed_files_is_an_error_not_a_truncation() {
    let src = Source::new();
    let one = src.commit(&[("seed", Some("s"))], "one");
    // Built with tree builders: 100 directories of files, one more than the limit in all.
    let repo = &src.repo;
    let blob = repo.blob(b"").unwrap();
    let mut root = repo.treebuilder(Some(&repo.head().unwrap().peel_to_tree().unwrap())).unwrap();
    let total = server::git::MAX_CHANGED_FILES + 1;
    for d in 0..100 {
        let mut dir = repo.treebuilder(None).unwrap();
        for i in (d..total).step_by(100) {
            dir.insert(format!("f{i}"), blob, 0o100644).unwrap();
        }
        root.insert(format!("d{d}"), dir.write().unwrap(), 0o040000).unwrap();
    }
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    let sig = crate::signature();
    let two = repo.commit(Some("HEAD"), &sig, &sig, "many", &tree, &[&parent]).unwrap().to_string();
    let m = src.mirror("app");
    assert!(matches!(m.changed_files(&one, &two), Err(GitError::TooManyChanges { .. })));
}

#[test]
fn commits_tags_refs_and_merge_bases() {
    let src = Source::new();
    let base = src.commit(&[("f", Some("1"))], "base\n\nbody");
    let main = src.commit(&[("f", Some("2"))], "on main");
    src.branch("feature", &base);
    src.repo.set_head("refs/heads/feature").unwrap();
    let feature = src.commit(&[("g", Some("1"))], "on feature");
    src.repo.set_head("refs/heads/main").unwrap();
    let tag_object = src.annotated_tag("v1.0", &main, "release");
    let m = src.mirror("app");

    let info = m.commit(&base).unwrap();
    assert_eq!((info.id.as_str(), info.message.as_str()), (base.as_str(), "base\n\nbody"));
    assert_eq!((info.author_name.as_str(), info.author_email.as_str()), ("Ada Lovelace", "ada@example.com"));
    assert_eq!(info.timestamp, "2023-11-14T23:13:20+01:00");
    // An annotated tag's object peels to its commit.
    assert_eq!(m.commit(&tag_object).unwrap().id, main);
    assert!(!m.has_commit(&tag_object), "a tag object is not a commit");

    assert_eq!(m.resolve_ref("main").unwrap(), Some(main.clone()));
    assert_eq!(m.resolve_ref("feature").unwrap(), Some(feature.clone()));
    assert_eq!(m.resolve_ref("v1.0").unwrap(), Some(main.clone()));
    assert_eq!(m.resolve_ref("refs/tags/v1.0").unwrap(), Some(main.clone()));
    assert_eq!(m.resolve_ref(&base).unwrap(), Some(base.clone()));
    assert_eq!(m.resolve_ref("nope").unwrap(), None);
    assert!(matches!(m.resolve_ref("a..b"), Err(GitError::InvalidRef(_))));
    assert!(matches!(m.resolve_ref("--output=/tmp/x"), Err(GitError::InvalidRef(_))));

    assert_eq!(m.default_head().unwrap(), Some(main.clone()), "HEAD follows the source's default branch");
    assert_eq!(m.merge_base(&main, &feature).unwrap(), Some(base.clone()));

    let pinned = m.pin(42, &feature).unwrap();
    assert_eq!(pinned, "refs/pipelines/42");
    assert_eq!(m.resolve_ref("refs/pipelines/42").unwrap(), Some(feature.clone()));
}

/// Runners' checkouts pin the pipeline's ref again, several at once (the real-runners bench
/// saw libgit2 refuse a second writer of `refs/pipelines/N.lock` and the checkout answered
/// 500): every concurrent pin succeeds, and the ref names the commit; a pin moved to another
/// commit is written.
#[test]
fn concurrent_pins_of_one_pipeline_all_succeed() {
    let src = Source::new();
    let one = src.commit(&[("f", Some("1"))], "one");
    let two = src.commit(&[("f", Some("2"))], "two");
    let m = src.mirror("app");
    for round in 0..20 {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (m, one) = (m.clone(), one.clone());
                std::thread::spawn(move || m.pin(round, &one))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), format!("refs/pipelines/{round}"));
        }
        assert_eq!(m.resolve_ref(&format!("refs/pipelines/{round}")).unwrap(), Some(one.clone()));
    }
    m.pin(0, &two).unwrap();
    assert_eq!(m.resolve_ref("refs/pipelines/0").unwrap(), Some(two));
}

#[test]
fn fetch_follows_the_source_and_prunes_deleted_branches() {
    let src = Source::new();
    let one = src.commit(&[("f", Some("1"))], "one");
    src.branch("gone", &one);
    let m = src.mirror("app");
    assert_eq!(m.resolve_ref("gone").unwrap(), Some(one.clone()));
    let pinned = m.pin(1, &one).unwrap();

    src.repo.find_reference("refs/heads/gone").unwrap().delete().unwrap();
    let two = src.commit(&[("f", Some("2"))], "two");
    m.fetch(&src.url()).unwrap();
    assert!(m.has_commit(&two));
    assert_eq!(m.resolve_ref("main").unwrap(), Some(two));
    assert_eq!(m.resolve_ref("gone").unwrap(), None, "pruned");
    assert_eq!(m.resolve_ref(&pinned).unwrap(), Some(one), "pipeline refs are not the source's to prune");
}

#[test]
fn fetch_accepts_file_urls_and_reopens_existing_mirrors() {
    let src = Source::new();
    let one = src.commit(&[("f", Some("1"))], "one");
    let dir = src.tmp.path().join("mirrors/by-url.git");
    let m = Mirror::open_or_init(&dir).unwrap();
    m.fetch(&format!("file://{}", src.url())).unwrap();
    assert!(m.has_commit(&one));
    let again = Mirror::open_or_init(&dir).unwrap();
    assert_eq!(again, m);
    assert!(again.has_commit(&one));
    assert!(dir.join("HEAD").is_file(), "a bare repository");
}

#[test]
fn fetch_of_specific_refspecs() {
    let src = Source::new();
    let one = src.commit(&[("f", Some("1"))], "one");
    // A merge request head, as GitLab publishes it.
    src.repo.reference("refs/merge-requests/3/head", git2::Oid::from_str(&one).unwrap(), true, "mr").unwrap();
    let m = Mirror::open_or_init(&src.tmp.path().join("mirrors/mr.git")).unwrap();
    m.fetch_refspecs(&src.url(), &["+refs/merge-requests/3/head:refs/merge-requests/3/head"]).unwrap();
    assert!(m.has_commit(&one));
    assert_eq!(m.resolve_ref("main").unwrap(), None, "only what was asked for");
    assert_eq!(m.resolve_ref("refs/merge-requests/3/head").unwrap(), Some(one));
}

#[test]
fn fetch_errors_name_the_url() {
    let src = Source::new();
    let m = Mirror::open_or_init(&src.tmp.path().join("mirrors/x.git")).unwrap();
    let missing = src.tmp.path().join("no-such-repo");
    let err = m.fetch(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, GitError::Fetch { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-repo"), "{err}");
}

#[test]
fn concurrent_fetches_of_one_mirror_are_serialised() {
    let src = Source::new();
    for i in 0..5 {
        src.commit(&[("f", Some(&i.to_string()))], "c");
    }
    let dir = src.tmp.path().join("mirrors/busy.git");
    let url = src.url();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (dir, url) = (dir.clone(), url.clone());
            std::thread::spawn(move || Mirror::open_or_init(&dir).and_then(|m| m.fetch(&url)))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
}
