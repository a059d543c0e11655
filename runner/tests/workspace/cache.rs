//! Caches: keys (literal and `key:files`), round trips, fallbacks, hostile keys, atomic
//! replacement under concurrent readers.

use std::fs;
use std::path::{Path, PathBuf};

use runner::cache::{CacheError, CacheKeySpec, CacheStore};

use crate::{files, listing, write};

struct Sandbox {
    tmp: tempfile::TempDir,
    store: CacheStore,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let store = CacheStore::new(tmp.path().join("cache")).unwrap();
        Sandbox { tmp, store }
    }

    /// A fresh workspace directory `name`.
    fn ws(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}

fn files_key(files: &[&str], prefix: Option<&str>) -> CacheKeySpec {
    CacheKeySpec::Files { files: files.iter().map(|s| (*s).to_owned()).collect(), prefix: prefix.map(str::to_owned) }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn save_then_restore_round_trips() {
    let sb = Sandbox::new();
    let ws = sb.ws("job1");
    write(&ws, "vendor/a/lib.rb", "a");
    write(&ws, "vendor/b/deep/lib.rb", "b");
    write(&ws, ".yarn-cache/x", "x");
    write(&ws, "not-cached.txt", "no");
    write(&ws, "build/untracked.o", "obj");
    std::os::unix::fs::symlink("a/lib.rb", ws.join("vendor/link")).unwrap();
    let saved = sb.store.save(&ws, "deps", &strings(&["vendor/", ".yarn-cache"]), &[PathBuf::from("build/untracked.o")]).unwrap();
    assert!(saved.saved && saved.sha256.is_some() && saved.bytes > 0, "{saved:?}");
    assert_eq!(saved.key, "deps");
    assert!(saved.warnings.is_empty(), "{:?}", saved.warnings);

    let next = sb.ws("job2");
    assert_eq!(sb.store.restore(&next, &strings(&["deps"])).unwrap().as_deref(), Some("deps"));
    let mut expected = files(&ws);
    expected.remove("not-cached.txt");
    assert_eq!(files(&next), expected);
    assert_eq!(fs::read_dir(sb.store.root().join("tmp")).unwrap().count(), 0, "temp files left behind");
}

#[test]
fn nothing_to_save_keeps_the_previous_archive() {
    let sb = Sandbox::new();
    let ws = sb.ws("job1");
    write(&ws, "vendor/x", "old");
    sb.store.save(&ws, "k", &strings(&["vendor"]), &[]).unwrap();
    let empty = sb.ws("job2");
    let summary = sb.store.save(&empty, "k", &strings(&["vendor"]), &[]).unwrap();
    assert!(!summary.saved && summary.sha256.is_none());
    assert!(summary.warnings.iter().any(|w| w.contains("no matching files")), "{:?}", summary.warnings);
    let restored = sb.ws("job3");
    sb.store.restore(&restored, &strings(&["k"])).unwrap();
    assert_eq!(fs::read_to_string(restored.join("vendor/x")).unwrap(), "old");
}

#[test]
fn restore_tries_key_then_fallbacks_in_order() {
    let sb = Sandbox::new();
    for key in ["feature-fallback", "main"] {
        let ws = sb.ws(&format!("save-{key}"));
        write(&ws, "deps/from", key);
        sb.store.save(&ws, key, &strings(&["deps"]), &[]).unwrap();
    }
    let check = |keys: &[&str], hit: Option<&str>| {
        let ws = sb.ws(&format!("restore-{}", keys.join("+")));
        assert_eq!(sb.store.restore(&ws, &strings(keys)).unwrap().as_deref(), hit, "{keys:?}");
        if let Some(hit) = hit {
            assert_eq!(fs::read_to_string(ws.join("deps/from")).unwrap(), hit);
        } else {
            assert!(listing(&ws).is_empty());
        }
    };
    check(&["feature-x", "feature-fallback", "main"], Some("feature-fallback"));
    check(&["feature-x", "", "main", "feature-fallback"], Some("main"));
    check(&["main", "main"], Some("main"));
    check(&["nothing", "", "nothing-either"], None);
    check(&[], None);
}

#[test]
fn key_files_hash_content() {
    let sb = Sandbox::new();
    let ws = sb.ws("ws");
    let key = |spec: &CacheKeySpec| sb.store.key_for(&ws, spec).unwrap();
    let lock = files_key(&["Gemfile.lock"], None);
    assert_eq!(key(&lock), "default", "no file yet");
    assert_eq!(key(&files_key(&["Gemfile.lock"], Some("ruby"))), "ruby-default");

    write(&ws, "Gemfile.lock", "rake 13\n");
    let first = key(&lock);
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(key(&files_key(&["Gemfile.lock"], Some("ruby"))), format!("ruby-{first}"));
    assert_eq!(key(&files_key(&["/Gemfile.lock"], None)), first, "a leading `/` is dropped, as GitLab does");
    assert_eq!(key(&files_key(&["./Gemfile.lock", "missing.lock"], None)), first);

    write(&ws, "Gemfile.lock", "rake 14\n");
    let second = key(&lock);
    assert_ne!(first, second, "the key follows the content");
    write(&ws, "Gemfile.lock", "rake 13\n");
    assert_eq!(key(&lock), first);

    // Content, not names: the same bytes under another name give the same key.
    fs::rename(ws.join("Gemfile.lock"), ws.join("other.lock")).unwrap();
    assert_eq!(key(&files_key(&["other.lock"], None)), first);
    // Two files: order and duplicates do not matter.
    write(&ws, "package-lock.json", "{}\n");
    let both = key(&files_key(&["other.lock", "package-lock.json"], None));
    assert_eq!(key(&files_key(&["package-lock.json", "other.lock"], None)), both);
    assert_ne!(both, first);
    // A directory is not a file.
    fs::create_dir(ws.join("dir.lock")).unwrap();
    assert_eq!(key(&files_key(&["dir.lock"], None)), "default");
    // A literal key is used as given.
    assert_eq!(key(&CacheKeySpec::Literal("build-main".into())), "build-main");
}

#[test]
fn key_files_wildcards() {
    let sb = Sandbox::new();
    let ws = sb.ws("ws");
    write(&ws, "a/package.json", "a");
    write(&ws, "b/c/package.json", "bc");
    write(&ws, "package.json", "top");
    write(&ws, ".git/package.json", "never");
    let key = |files: &[&str]| sb.store.key_for(&ws, &files_key(files, None)).unwrap();
    let explicit = key(&["a/package.json", "b/c/package.json"]);
    assert_eq!(key(&["**/package.json"]), explicit, "`**` crosses directories, `.git` is skipped");
    assert_eq!(key(&["*/package.json"]), key(&["a/package.json"]), "`*` stays in one directory");
    assert_eq!(key(&["*.json"]), key(&["package.json"]));
    assert_eq!(key(&["*.nothing"]), "default");
}

#[test]
fn key_files_stay_inside_the_workspace() {
    let sb = Sandbox::new();
    let ws = sb.ws("ws");
    write(sb.tmp.path(), "secret.lock", "outside");
    let err = sb.store.key_for(&ws, &files_key(&["../secret.lock"], None)).unwrap_err();
    assert!(matches!(err, CacheError::InvalidFile { .. }), "{err:?}");
    assert!(err.to_string().contains("`../secret.lock`"), "{err}");
    // Symlinks are hashed as links, never followed, and never traversed.
    std::os::unix::fs::symlink(sb.tmp.path(), ws.join("up")).unwrap();
    assert_eq!(sb.store.key_for(&ws, &files_key(&["up/secret.lock"], None)).unwrap(), "default");
    std::os::unix::fs::symlink("../secret.lock", ws.join("link.lock")).unwrap();
    let via_link = sb.store.key_for(&ws, &files_key(&["link.lock"], None)).unwrap();
    write(sb.tmp.path(), "secret.lock", "changed outside");
    assert_eq!(sb.store.key_for(&ws, &files_key(&["link.lock"], None)).unwrap(), via_link);
}

#[test]
fn hostile_keys_are_refused_everywhere() {
    let sb = Sandbox::new();
    let ws = sb.ws("ws");
    write(&ws, "vendor/x", "x");
    let before = listing(sb.tmp.path());
    for key in ["../escape", "..", ".", "a/b", "/etc/passwd", "a\\b", "%2e%2E", "x%2Fy", "x%5cy", "", "line\nbreak", "nul\0byte"] {
        let invalid = |r: Result<(), CacheError>| match r {
            Err(CacheError::InvalidKey { .. }) => {}
            other => panic!("key {key:?}: expected InvalidKey, got {other:?}"),
        };
        invalid(sb.store.save(&ws, key, &strings(&["vendor"]), &[]).map(drop));
        invalid(sb.store.archive_path(key).map(drop));
        invalid(sb.store.key_for(&ws, &CacheKeySpec::Literal(key.to_owned())).map(drop));
        if !key.is_empty() {
            invalid(sb.store.restore(&ws, &strings(&["fine", key])).map(drop));
        }
    }
    assert_eq!(listing(sb.tmp.path()), before, "a refused key created or changed something");
    let err = sb.store.key_for(&ws, &files_key(&["x"], Some("feature/x"))).unwrap_err();
    assert!(err.to_string().contains("invalid cache key `feature/x-default`"), "{err}");
}

#[test]
fn odd_but_valid_keys_stay_in_the_store() {
    let sb = Sandbox::new();
    let ws = sb.ws("ws");
    write(&ws, "vendor/x", "x");
    let long = "k".repeat(400);
    for key in ["...", "%2E%2E%2E", "main branch", "ünïcode", "~sha256-x", long.as_str()] {
        sb.store.save(&ws, key, &strings(&["vendor"]), &[]).unwrap();
        let path = sb.store.archive_path(key).unwrap();
        assert_eq!(path.parent().unwrap(), sb.store.root().join("keys"), "{key}");
        assert!(path.is_file(), "{key}");
        let out = sb.ws(&format!("out-{}", key.len()));
        assert_eq!(sb.store.restore(&out, &[key.to_owned()]).unwrap().as_deref(), Some(key));
    }
    assert_eq!(fs::read_dir(sb.store.root().join("keys")).unwrap().count(), 6);
}

#[test]
fn a_corrupt_archive_is_an_error() {
    let sb = Sandbox::new();
    let ws = sb.ws("ws");
    fs::write(sb.store.archive_path("k").unwrap(), b"not a tarball").unwrap();
    let err = sb.store.restore(&ws, &strings(&["k"])).unwrap_err();
    assert!(matches!(err, CacheError::Archive { .. }), "{err:?}");
}

/// A reader racing a writer sees the old archive or the new one, never a mix.
#[test]
fn concurrent_saves_replace_atomically() {
    let sb = Sandbox::new();
    let versions: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|v| {
            let ws = sb.ws(&format!("src-{v}"));
            write(&ws, "deps/big.bin", &v.repeat(512 * 1024));
            write(&ws, "deps/version", v);
            ws
        })
        .collect();
    sb.store.save(&versions[0], "shared", &strings(&["deps"]), &[]).unwrap();
    std::thread::scope(|s| {
        let (store, versions) = (&sb.store, &versions);
        s.spawn(move || {
            for i in 0..20 {
                store.save(&versions[i % 2], "shared", &strings(&["deps"]), &[]).unwrap();
            }
        });
        let (store, base) = (&sb.store, sb.tmp.path());
        s.spawn(move || {
            for i in 0..20 {
                let out = base.join(format!("reader-{i}"));
                assert_eq!(store.restore(&out, &strings(&["shared"])).unwrap().as_deref(), Some("shared"));
                let version = fs::read_to_string(out.join("deps/version")).unwrap();
                let big = fs::read_to_string(out.join("deps/big.bin")).unwrap();
                assert_eq!(big, version.repeat(512 * 1024), "read {i} mixed two archives");
            }
        });
    });
    assert_eq!(fs::read_dir(sb.store.root().join("tmp")).unwrap().count(), 0);
}

proptest::proptest! {
    /// Whatever the key, an accepted key names a file directly inside `keys/`.
    #[test]
    fn any_accepted_key_stays_in_the_store(key in "(?s).{0,300}") {
        let tmp = tempfile::tempdir().unwrap();
        let store = CacheStore::new(tmp.path()).unwrap();
        let keys = store.root().join("keys");
        if let Ok(path) = store.archive_path(&key) {
            proptest::prop_assert_eq!(path.parent(), Some(keys.as_path()));
            let name = path.file_name().unwrap().to_str().unwrap();
            proptest::prop_assert!(name != "." && name != ".." && !name.contains('/'));
            proptest::prop_assert!(name.len() <= 255);
        }
    }
}

/// GitLab's "Archive is up to date!": a cache restored and left unchanged by the job is not
/// archived again; any file changed, added or removed makes the next save archive.
#[test]
fn an_unchanged_cache_is_not_archived_again() {
    let sb = Sandbox::new();
    let first = sb.ws("job1");
    write(&first, "vendor/a", "a");
    write(&first, "vendor/b", "b");
    let paths = strings(&["vendor/"]);
    assert!(sb.store.save(&first, "deps", &paths, &[]).unwrap().saved);
    let archive = sb.store.archive_path("deps").unwrap();
    let before = fs::metadata(&archive).unwrap().modified().unwrap();

    let warm = sb.ws("job2");
    sb.store.restore(&warm, &strings(&["deps"])).unwrap();
    sb.store.remember(&warm, "deps", &paths, &[]).unwrap();
    let again = sb.store.save(&warm, "deps", &paths, &[]).unwrap();
    assert!(again.up_to_date && !again.saved, "{again:?}");
    assert_eq!(fs::metadata(&archive).unwrap().modified().unwrap(), before, "the archive was not rewritten");

    type Change = fn(&Path);
    let changes: [(&str, Change); 3] = [
        ("a file rewritten", |ws| write(ws, "vendor/a", "A2")),
        ("a file added", |ws| write(ws, "vendor/c", "c")),
        ("a file removed", |ws| fs::remove_file(ws.join("vendor/b")).unwrap()),
    ];
    for (i, (what, change)) in changes.into_iter().enumerate() {
        let ws = sb.ws(&format!("job-change-{i}"));
        sb.store.restore(&ws, &strings(&["deps"])).unwrap();
        sb.store.remember(&ws, "deps", &paths, &[]).unwrap();
        change(&ws);
        let saved = sb.store.save(&ws, "deps", &paths, &[]).unwrap();
        assert!(saved.saved && !saved.up_to_date, "{what}: {saved:?}");
        let check = sb.ws(&format!("check-{i}"));
        sb.store.restore(&check, &strings(&["deps"])).unwrap();
        let mut expected = files(&ws);
        expected.retain(|k, _| k.starts_with("vendor"));
        assert_eq!(files(&check), expected, "{what}: the new archive holds the change");
    }
}
