//! `GIT_SUBMODULE_*` and `GIT_DEPTH` on real repositories served by `git daemon` (the
//! `git://` protocol) on 127.0.0.1. GitLab's rules (docs: ci/runners/configure_runners "Git
//! submodule strategy", "Shallow cloning"; ci/runners/git_submodules "Using relative URLs").

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runner::workspace::{CheckoutSpec, GitStrategy, SubmoduleSource, SubmoduleSpec, WorkspaceError, Workspaces, submodules};
use tokio_util::sync::CancellationToken;

/// Kills the daemon on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .args(args)
        .output()
        .expect("git (Debian's git package)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Served repositories under `<tmp>/served`, the project's clone at `<tmp>/app`.
struct World {
    tmp: tempfile::TempDir,
    port: u16,
    _daemon: Guard,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let served = tmp.path().join("served");
        std::fs::create_dir_all(&served).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let exec = git(tmp.path(), &["--exec-path"]);
        // `git-daemon` itself: `git daemon` runs it as a child that would outlive a kill.
        let child = Command::new(Path::new(&exec).join("git-daemon"))
            .args(["--reuseaddr", "--listen=127.0.0.1", "--export-all", "--informative-errors"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", served.display()))
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git-daemon (Debian's git package)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        World { tmp, port, _daemon: Guard(child) }
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// A served repository `name` with `files` (and gitlinks `(path, url, sha)`) committed on
    /// `main`; returns the commit.
    fn repo(&self, name: &str, files: &[(&str, &str)], links: &[(&str, &str, &str)]) -> String {
        let work = self.tmp.path().join("work").join(name);
        if !work.exists() {
            std::fs::create_dir_all(&work).unwrap();
            git(&work, &["init", "-q", "-b", "main"]);
        }
        self.commit_in(&work, files, links);
        let bare = self.tmp.path().join("served").join(name);
        if !bare.exists() {
            git(self.tmp.path(), &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        }
        git(&work, &["push", "-q", "-f", bare.to_str().unwrap(), "HEAD:refs/heads/main"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    fn commit_in(&self, work: &Path, files: &[(&str, &str)], links: &[(&str, &str, &str)]) -> String {
        for (path, text) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let mut modules = String::new();
        for (path, url, sha) in links {
            modules.push_str(&format!("[submodule \"{path}\"]\n\tpath = {path}\n\turl = {url}\n"));
            git(work, &["update-index", "--add", "--cacheinfo", &format!("160000,{sha},{path}")]);
        }
        if !links.is_empty() {
            std::fs::write(work.join(".gitmodules"), modules).unwrap();
        }
        // Not `add -A`: the gitlinks' directories do not exist here.
        let mut add = vec!["add", "--"];
        add.extend(files.iter().map(|(p, _)| *p));
        if !links.is_empty() {
            add.push(".gitmodules");
        }
        if add.len() > 2 {
            git(work, &add);
        }
        git(work, &["commit", "-q", "--allow-empty", "-m", "commit"]);
        git(work, &["rev-parse", "HEAD"])
    }

    /// The project `app` (a clone whose `origin` is `git://…/app.git`), with `links`.
    fn app(&self, links: &[(&str, &str, &str)]) -> (PathBuf, String) {
        let app = self.tmp.path().join("app");
        if !app.exists() {
            std::fs::create_dir_all(&app).unwrap();
            git(&app, &["init", "-q", "-b", "main"]);
            git(&app, &["remote", "add", "origin", &self.url("app.git")]);
        }
        let sha = self.commit_in(&app, &[("README", "app\n")], links);
        (app, sha)
    }
}

fn spec(strategy: &str, paths: &str, flags: &str, depth: Option<&str>) -> SubmoduleSpec {
    SubmoduleSpec::parse(Some(strategy), Some(paths), Some(flags), None, depth, None).unwrap()
}

/// Checks out `sha` in slot 0 and updates its submodules as GitLab's runner would.
fn checkout(app: &Path, sha: &str, sm: &SubmoduleSpec, origin: &str) -> Result<(PathBuf, String), WorkspaceError> {
    let ws = Workspaces::new(app, &app.join(".piste/builds")).unwrap();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha)).unwrap();
    let source = SubmoduleSource { base_url: Some(origin.to_owned()), allow_file: true, ..SubmoduleSource::default() };
    submodules::update(&dir, sm, &source, &CancellationToken::new()).map(|out| (dir, out))
}

fn read(p: PathBuf) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// "Git submodule strategy": `recursive` clones submodules of submodules; a relative URL
/// (`../lib.git`) resolves against the project's URL, a nested relative one against its parent
/// submodule's; an absolute `git://` URL is fetched as written. `normal` stays at the top level.
#[test]
fn recursive_and_normal_submodule_strategies_with_relative_and_absolute_urls() {
    let w = World::new();
    let deep = w.repo("deep.git", &[("deep.txt", "deep\n")], &[]);
    let lib = w.repo("lib.git", &[("lib.txt", "lib\n")], &[("deep", "../deep.git", &deep)]);
    let other = w.repo("other.git", &[("other.txt", "other\n")], &[]);
    let (app, sha) = w.app(&[("lib", "../lib.git", &lib), ("vendor/other", &w.url("other.git"), &other)]);
    let origin = w.url("app.git");

    let (dir, out) = checkout(&app, &sha, &spec("recursive", "", "", None), &origin).unwrap();
    assert_eq!(read(dir.join("lib/lib.txt")).as_deref(), Some("lib\n"), "{out}");
    assert_eq!(read(dir.join("lib/deep/deep.txt")).as_deref(), Some("deep\n"), "{out}");
    assert_eq!(read(dir.join("vendor/other/other.txt")).as_deref(), Some("other\n"), "{out}");
    assert_eq!(git(&dir.join("lib"), &["rev-parse", "HEAD"]), lib);
    assert!(out.contains("Submodule path 'lib': checked out"), "{out}");
    // The slot's own configuration is untouched: no URL, so nothing to leak nor to trip the
    // next job's check that the slot is as piste made it.
    let config = std::fs::read_to_string(dir.join(".git/config")).unwrap();
    assert!(!config.contains("submodule"), "{config}");

    // The next job in the slot (`fetch`): what the job wrote in a submodule is gone, and `normal`
    // leaves the nested submodule empty.
    std::fs::write(dir.join("lib/planted.txt"), "x").unwrap();
    let (dir2, _) = checkout(&app, &sha, &spec("normal", "", "", None), &origin).unwrap();
    assert_eq!(dir2, dir);
    assert_eq!(read(dir.join("lib/lib.txt")).as_deref(), Some("lib\n"));
    assert!(!dir.join("lib/planted.txt").exists());
    assert!(std::fs::read_dir(dir.join("lib/deep")).unwrap().next().is_none(), "normal does not recurse");

    // `none` (the default) does nothing.
    let ws = Workspaces::new(&app, &app.join(".piste/builds")).unwrap();
    let fresh = ws.prepare(1, &CheckoutSpec { strategy: GitStrategy::Clone, ..CheckoutSpec::new(sha.clone()) }).unwrap();
    let none = SubmoduleSpec::default();
    assert_eq!(submodules::update(&fresh, &none, &SubmoduleSource::default(), &CancellationToken::new()).unwrap(), "");
    assert!(std::fs::read_dir(fresh.join("lib")).unwrap().next().is_none());
}

/// `GIT_SUBMODULE_PATHS` takes git pathspecs, `:(exclude)path` included; `GIT_SUBMODULE_DEPTH`
/// makes shallow submodule clones; `GIT_SUBMODULE_UPDATE_FLAGS: --remote` checks out the
/// submodule's remote branch instead of the recorded commit.
#[test]
fn submodule_paths_depth_and_update_flags() {
    let w = World::new();
    let lib1 = w.repo("lib.git", &[("lib.txt", "one\n")], &[]);
    let lib2 = w.repo("lib.git", &[("lib.txt", "two\n")], &[]);
    let other = w.repo("other.git", &[("other.txt", "other\n")], &[]);
    let (app, sha) = w.app(&[("lib", "../lib.git", &lib2), ("other", "../other.git", &other)]);
    let origin = w.url("app.git");

    let (dir, out) = checkout(&app, &sha, &spec("normal", ":(exclude)other", "--jobs 2", Some("1")), &origin).unwrap();
    assert_eq!(read(dir.join("lib/lib.txt")).as_deref(), Some("two\n"), "{out}");
    assert!(std::fs::read_dir(dir.join("other")).unwrap().next().is_none(), "excluded: {out}");
    assert_eq!(git(&dir.join("lib"), &["rev-parse", "--is-shallow-repository"]), "true");
    assert_eq!(git(&dir.join("lib"), &["rev-list", "--count", "HEAD"]), "1");

    // The project records lib1; `--remote` takes lib's `main` (lib2) instead.
    let (app, sha) = w.app(&[("lib", "../lib.git", &lib1)]);
    let (dir, _) = checkout(&app, &sha, &spec("normal", "lib", "", None), &origin).unwrap();
    assert_eq!(read(dir.join("lib/lib.txt")).as_deref(), Some("one\n"));
    assert_eq!(git(&dir.join("lib"), &["rev-list", "--count", "HEAD"]), "1");
    let (dir, _) = checkout(&app, &sha, &spec("normal", "lib", "--remote", None), &origin).unwrap();
    assert_eq!(read(dir.join("lib/lib.txt")).as_deref(), Some("two\n"));
}

/// A submodule whose URL serves nothing fails the checkout with git's message naming it,
/// promptly (no hang, no prompt); a bad `GIT_SUBMODULE_UPDATE_FLAGS` is refused before git runs.
#[test]
fn a_failing_submodule_url_is_a_clear_error() {
    let w = World::new();
    let lib = w.repo("lib.git", &[("lib.txt", "lib\n")], &[]);
    let (app, sha) = w.app(&[("lib", &w.url("missing.git"), &lib)]);
    let err = checkout(&app, &sha, &spec("normal", "", "", None), &w.url("app.git")).unwrap_err().to_string();
    assert!(err.contains("git submodule update --init") && err.contains("missing.git"), "{err}");

    let err = SubmoduleSpec::parse(Some("normal"), None, Some("--reference /srv/cache"), None, None, None).unwrap_err().to_string();
    assert!(err.contains("GIT_SUBMODULE_UPDATE_FLAGS `--reference /srv/cache`: `--reference` is not supported"), "{err}");

    // `.gitmodules` cannot make the runner read its own files through an include.
    let app = w.tmp.path().join("app");
    std::fs::write(app.join(".gitmodules"), "[include]\n\tpath = /etc/gitconfig\n[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n")
        .unwrap();
    git(&app, &["add", ".gitmodules"]);
    git(&app, &["commit", "-qm", "include"]);
    let sha = git(&app, &["rev-parse", "HEAD"]);
    let err = checkout(&app, &sha, &spec("normal", "", "", None), &w.url("app.git")).unwrap_err().to_string();
    assert!(err.contains("may not have `[include]`"), "{err}");

    // On a runner, a submodule may not read the runner's own disk.
    let (app, sha) = w.app(&[("lib", "/etc", &lib)]);
    let ws = Workspaces::new(&app, &app.join(".piste/builds")).unwrap();
    let dir = ws.prepare(0, &CheckoutSpec::new(sha)).unwrap();
    let runner = SubmoduleSource { base_url: Some(w.url("app.git")), isolated: true, ..SubmoduleSource::default() };
    let err = submodules::update(&dir, &spec("normal", "", "", None), &runner, &CancellationToken::new()).unwrap_err().to_string();
    assert!(err.contains("`/etc` is a path on the runner"), "{err}");
}

/// "Shallow cloning": with `GIT_DEPTH: N` the job sees N commits and a shallow repository, with
/// either strategy; `GIT_DEPTH: 0` (or unset) is the whole history.
#[test]
fn git_depth_makes_the_checkout_shallow() {
    let w = World::new();
    let (app, _) = w.app(&[]);
    w.app(&[]);
    w.app(&[]);
    let (_, sha) = w.app(&[]);
    let ws = Workspaces::new(&app, &app.join(".piste/builds")).unwrap();
    let count = |dir: &Path| git(dir, &["rev-list", "--count", "HEAD"]);
    for strategy in [GitStrategy::Clone, GitStrategy::Fetch] {
        let dir = ws.prepare(0, &CheckoutSpec { strategy, depth: Some(2), ..CheckoutSpec::new(sha.clone()) }).unwrap();
        assert_eq!(count(&dir), "2", "{strategy:?}");
        assert_eq!(git(&dir, &["rev-parse", "--is-shallow-repository"]), "true");
        assert_eq!(git(&dir, &["log", "--format=%H", "-1"]), sha);
    }
    let dir = ws.prepare(0, &CheckoutSpec { depth: Some(0), ..CheckoutSpec::new(sha.clone()) }).unwrap();
    assert_eq!(count(&dir), "4");
    assert_eq!(git(&dir, &["rev-parse", "--is-shallow-repository"]), "false");
    // A depth beyond the history is the whole history, not shallow (as git leaves it).
    let dir = ws.prepare(0, &CheckoutSpec { depth: Some(50), ..CheckoutSpec::new(sha) }).unwrap();
    assert_eq!(count(&dir), "4");
    assert_eq!(git(&dir, &["rev-parse", "--is-shallow-repository"]), "false");
}
