//! `piste/gitops-bump@v1` against real deployment repositories: a bare repository served by
//! `git daemon --enable=receive-pack` on 127.0.0.1 (started and stopped here), a plain path,
//! and (`transport`) HTTPS through nginx and ssh through sshd.

#[path = "../../../server/tests/common/https.rs"]
mod https_forge;
#[path = "../../../server/tests/common/ssh.rs"]
mod ssh_forge;
#[path = "../../../server/tests/common/tls.rs"]
mod tls_ca;
mod transport;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runner::steps::gitops::{Auth, Bump, BumpError, Origin, Target, bump};

const VALUES: &str = "# Production values\nreplicaCount: 3\n\nimage:\n  repository: registry.local/app/web  # built by the package job\n  tag: \"1.0.0\"\n  pullPolicy: IfNotPresent\n\napi:\n  image:\n    tag: 1.0.0\n";
const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\nimages:\n  - name: web\n    newName: registry.local/app/web\n    newTag: \"1.0.0\"\n  - name: api # the backend\n    newTag: 1.0.0\n";
const FLUX: &str = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: registry.local/app/web:1.0.0 # {\"$imagepolicy\": \"flux-system:web\"}\n        - name: sidecar\n          image: registry.local/tools/proxy:2.3\n";

/// Kills the process on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A deployment repository `deploy.git` (branch `main`), and a `git daemon` serving it.
struct Remote {
    tmp: tempfile::TempDir,
    _daemon: Option<Guard>,
    port: u16,
}

fn git_in(home: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Someone")
        .env("GIT_AUTHOR_EMAIL", "someone@example.com")
        .env("GIT_COMMITTER_NAME", "Someone")
        .env("GIT_COMMITTER_EMAIL", "someone@example.com");
    cmd
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("git (Debian's git package)");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Remote {
    /// Without a daemon: the repository by path.
    fn new() -> Remote {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let bare = home.join("served/deploy.git");
        std::fs::create_dir_all(&bare).unwrap();
        run({
            let mut c = git_in(home, &bare);
            c.args(["init", "--bare", "-q", "-b", "main"]);
            c
        });
        let work = home.join("work");
        run({
            let mut c = git_in(home, home);
            c.args(["clone", "-q"]).arg(&bare).arg(&work);
            c
        });
        for (path, text) in
            [("envs/prod/values.yaml", VALUES), ("kustomization.yaml", KUSTOMIZATION), ("flux/deploy.yaml", FLUX), ("README", "deploy\n")]
        {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let g = |args: &[&str]| {
            let mut c = git_in(home, &work);
            c.args(args);
            run(c)
        };
        g(&["checkout", "-q", "-b", "main"]);
        g(&["add", "-A"]);
        g(&["commit", "-q", "-m", "initial"]);
        g(&["push", "-q", "origin", "main"]);
        Remote { tmp, _daemon: None, port: 0 }
    }

    /// Served by `git daemon --enable=receive-pack` on a free port of 127.0.0.1.
    fn served() -> Remote {
        let mut r = Remote::new();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // `git-daemon` itself: `git daemon` would run it as a child that outlives a kill of `git`.
        let exec_path = run({
            let mut c = git_in(r.home(), r.home());
            c.arg("--exec-path");
            c
        });
        let served = r.home().join("served");
        let mut cmd = git_in(r.home(), r.home());
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
            .args(["--reuseaddr", "--listen=127.0.0.1", "--export-all", "--informative-errors", "--enable=receive-pack"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", served.display()))
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`git daemon` (part of Debian's git package)");
        let _ = cmd.arg("--version");
        r._daemon = Some(Guard(child));
        r.port = port;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..500 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("git daemon did not listen on {addr}");
    }

    fn home(&self) -> &Path {
        self.tmp.path()
    }

    fn bare(&self) -> PathBuf {
        self.home().join("served/deploy.git")
    }

    fn url(&self) -> String {
        if self.port == 0 { self.bare().display().to_string() } else { format!("git://127.0.0.1:{}/deploy.git", self.port) }
    }

    fn git(&self, args: &[&str]) -> String {
        let mut c = git_in(self.home(), &self.bare());
        c.args(args);
        run(c)
    }

    fn show(&self, rev: &str, file: &str) -> String {
        self.git(&["show", &format!("{rev}:{file}")]) + "\n"
    }

    fn commits(&self) -> usize {
        self.git(&["rev-list", "--count", "main"]).parse().unwrap()
    }

    /// A commit changing `file` on top of `main`, pushed to `refs/foreign/aside` (not `main`).
    fn commit_aside(&self, file: &str, text: &str) -> String {
        let work = self.home().join("work");
        std::fs::write(work.join(file), text).unwrap();
        let g = |args: &[&str]| {
            let mut c = git_in(self.home(), &work);
            c.args(args);
            run(c)
        };
        g(&["fetch", "-q", "origin", "main"]);
        g(&["reset", "-q", "--soft", "origin/main"]);
        g(&["commit", "-q", "-m", &format!("edit {file}"), "--", file]);
        g(&["push", "-q", "origin", "HEAD:refs/foreign/aside"]);
        g(&["rev-parse", "HEAD"])
    }

    fn hook(&self, name: &str, script: &str) {
        let path = self.bare().join("hooks").join(name);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn bump(&self, target: Target, value: &str, pipeline: u64) -> Bump {
        Bump {
            repo: self.url(),
            branch: Some("main".into()),
            file: "envs/prod/values.yaml".into(),
            target,
            value: value.into(),
            auth: Auth::None,
            ca_file: None,
            known_hosts: None,
            author: Some("Piste Bot <bot@example.com>".into()),
            message: None,
            origin: Origin { project: "group/app".into(), pipeline, job: "42".into() },
            cache_dir: self.home().join("runner-cache"),
        }
    }
}

fn key(k: &str) -> Target {
    Target::Key(k.into())
}

#[test]
fn a_bump_changes_one_line_commits_with_trailers_and_the_same_bump_again_commits_nothing() {
    let remote = Remote::served();
    let done = bump(&remote.bump(key("image.tag"), "1.1.0", 7)).unwrap();
    assert!(done.changed);
    assert_eq!(remote.git(&["rev-parse", "main"]), done.commit);
    assert_eq!(remote.git(&["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/values.yaml", "one line changed");
    assert_eq!(remote.show("main", "envs/prod/values.yaml"), VALUES.replace("tag: \"1.0.0\"", "tag: \"1.1.0\""), "every other byte kept");
    let message = remote.git(&["log", "-1", "--format=%B", "main"]);
    for trailer in ["Piste-Project: group/app", "Piste-Pipeline: 7", "Piste-Job: 42", "Piste-Target: envs/prod/values.yaml#key=image.tag"] {
        assert!(message.contains(trailer), "{trailer} in {message}");
    }
    assert_eq!(remote.git(&["log", "-1", "--format=%an <%ae>", "main"]), "Piste Bot <bot@example.com>");

    let again = bump(&remote.bump(key("image.tag"), "1.1.0", 8)).unwrap();
    assert!(!again.changed);
    assert_eq!(again.commit, done.commit, "the commit that holds the value");
    assert_eq!(remote.commits(), 2, "no new commit");
    assert!(again.notes.iter().any(|n| n.contains("nothing to commit")), "{:?}", again.notes);
}

#[test]
fn concurrent_bumps_of_different_images_both_land_with_linear_history() {
    let remote = Remote::served();
    let (a, b) = (remote.bump(key("image.tag"), "2.0.0", 11), remote.bump(key("api.image.tag"), "3.0.0", 12));
    // Two runners: each its own cache of the deployment repository.
    let b = Bump { cache_dir: remote.home().join("other-runner"), ..b };
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| bump(&a));
        let tb = s.spawn(|| bump(&b));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(ra.unwrap().changed && rb.unwrap().changed);
    assert_eq!(remote.commits(), 3);
    assert_eq!(remote.git(&["rev-list", "--merges", "main"]), "", "no merge commit: linear history");
    let values = remote.show("main", "envs/prod/values.yaml");
    assert_eq!(values, VALUES.replace("tag: \"1.0.0\"", "tag: \"2.0.0\"").replace("    tag: 1.0.0", "    tag: 3.0.0"));
}

#[test]
fn a_commit_pushed_first_by_someone_else_is_absorbed_by_the_retry() {
    let remote = Remote::served();
    // A foreign commit (README changed), not yet on `main`.
    let work = remote.home().join("work");
    std::fs::write(work.join("README"), "deploy repository\n").unwrap();
    let g = |args: &[&str]| {
        let mut c = git_in(remote.home(), &work);
        c.args(args);
        run(c)
    };
    g(&["commit", "-q", "-am", "docs: README"]);
    let foreign = g(&["rev-parse", "HEAD"]);
    g(&["push", "-q", "origin", "HEAD:refs/foreign/readme"]);
    // The foreign commit lands on `main` after the bump fetched and before its push is taken:
    // the first pre-receive moves `main` (outside the push's quarantine), so the server rejects
    // the push's stale update, as it does when another client won the race.
    remote.hook(
        "pre-receive",
        &format!(
            "#!/bin/sh\nif [ ! -e raced ]; then touch raced; env -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES git update-ref refs/heads/main {foreign}; fi\nexit 0\n"
        ),
    );
    let done = bump(&remote.bump(key("image.tag"), "1.2.0", 20)).unwrap();
    assert!(done.changed);
    assert!(done.notes.iter().any(|n| n.contains("rejected") && n.contains("trying again")), "{:?}", done.notes);
    assert_eq!(remote.git(&["rev-parse", "main~1"]), foreign, "the bump sits on the foreign commit");
    assert_eq!(remote.git(&["rev-list", "--merges", "main"]), "");
    assert_eq!(remote.show("main", "README"), "deploy repository\n\n".trim_end().to_string() + "\n");
    assert!(remote.show("main", "envs/prod/values.yaml").contains("tag: \"1.2.0\""));
}

#[test]
fn a_push_refused_by_a_server_hook_fails_with_the_hooks_message() {
    let remote = Remote::served();
    remote.hook("pre-receive", "#!/bin/sh\necho 'deploys are frozen until Monday (ticket OPS-12)' >&2\nexit 1\n");
    let err = bump(&remote.bump(key("image.tag"), "9.9.9", 30)).unwrap_err();
    assert!(matches!(err, BumpError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("deploys are frozen until Monday (ticket OPS-12)"), "{err}");
    assert_eq!(remote.commits(), 1, "nothing landed");
}

#[test]
fn a_newer_pipelines_value_is_not_overwritten_by_an_older_one() {
    let remote = Remote::new();
    assert!(bump(&remote.bump(key("image.tag"), "5.0.0", 50)).unwrap().changed);
    // Another value of the same file, by an older pipeline: not the same target, so it lands.
    assert!(bump(&remote.bump(key("api.image.tag"), "4.0.0", 49)).unwrap().changed);
    let late = bump(&remote.bump(key("image.tag"), "4.9.0", 49)).unwrap();
    assert!(!late.changed);
    assert!(late.notes.iter().any(|n| n.contains("Skipped: pipeline 50")), "{:?}", late.notes);
    assert!(remote.show("main", "envs/prod/values.yaml").contains("tag: \"5.0.0\""));
    // Another project's newer pipeline does not count.
    let other = Bump {
        origin: Origin { project: "group/other".into(), pipeline: 1, job: "1".into() },
        ..remote.bump(key("image.tag"), "5.1.0", 1)
    };
    assert!(bump(&other).unwrap().changed);
}

#[test]
fn kustomize_images_and_flux_markers_change_one_line_each() {
    let remote = Remote::new();
    let digest = format!("sha256:{}", "b".repeat(64));
    let k =
        Bump { file: "kustomization.yaml".into(), ..remote.bump(Target::KustomizeImage("api".into()), "registry.local/app/api:1.4.2", 60) };
    assert!(bump(&k).unwrap().changed);
    assert_eq!(remote.show("main", "kustomization.yaml"), KUSTOMIZATION.replace("    newTag: 1.0.0", "    newTag: 1.4.2"));
    let k = Bump {
        file: "kustomization.yaml".into(),
        ..remote.bump(Target::KustomizeImage("web".into()), &format!("registry.local/app/web@{digest}"), 61)
    };
    assert!(bump(&k).unwrap().changed);
    assert_eq!(remote.git(&["diff", "--numstat", "main~1", "main"]), "1\t0\tkustomization.yaml", "one line added: digest");
    assert!(remote.show("main", "kustomization.yaml").contains(&format!("  - name: web\n    digest: {digest}\n")));

    let f = Bump {
        file: "flux/deploy.yaml".into(),
        ..remote.bump(Target::ImagePolicy("flux-system:web".into()), "registry.local/app/web:1.1.0", 62)
    };
    assert!(bump(&f).unwrap().changed);
    assert_eq!(remote.show("main", "flux/deploy.yaml"), FLUX.replace("web:1.0.0 #", "web:1.1.0 #"));
    assert_eq!(remote.git(&["diff", "--numstat", "main~1", "main"]), "1\t1\tflux/deploy.yaml");
}

#[test]
fn bad_inputs_are_clear_errors_and_the_default_branch_is_the_remotes() {
    let remote = Remote::served();
    let b = Bump { branch: None, ..remote.bump(key("image.tag"), "1.0.1", 70) };
    let done = bump(&b).unwrap();
    assert_eq!(done.branch, "main");
    let missing = Bump { file: "envs/staging/values.yaml".into(), ..remote.bump(key("image.tag"), "1", 71) };
    assert!(bump(&missing).unwrap_err().to_string().contains("`envs/staging/values.yaml` does not exist on `main`"));
    let no_key = bump(&remote.bump(key("image.digest"), "x", 72)).unwrap_err();
    assert!(no_key.to_string().contains("no key `image.digest`"), "{no_key}");
    let escape = Bump { file: "../x".into(), ..remote.bump(key("a"), "1", 73) };
    assert!(matches!(bump(&escape), Err(BumpError::Input(_))));
    let relative = Bump { repo: "deploy.git".into(), ..remote.bump(key("a"), "1", 74) };
    assert!(bump(&relative).unwrap_err().to_string().contains("is a relative path"));
    let ftp = Bump { repo: "ftp://git.example.test/deploy.git".into(), ..remote.bump(key("a"), "1", 75) };
    assert!(bump(&ftp).unwrap_err().to_string().contains("unsupported URL"));
}

/// Argo CD's `.argocd-source-<app>.yaml` (what Argo CD Image Updater writes back): `key` is a
/// `helm.parameters` name there, `kustomize_image` a `kustomize.images` item.
#[test]
fn argocd_override_files_are_bumped_by_parameter_and_image() {
    let remote = Remote::new();
    let text = "helm:\n  parameters:\n  - name: image.tag\n    value: 1.0.0\n    forcestring: true\nkustomize:\n  images:\n  - web=registry.local/app/web:1.0.0\n";
    let work = remote.home().join("work");
    std::fs::create_dir_all(work.join("apps/prod")).unwrap();
    std::fs::write(work.join("apps/prod/.argocd-source-web.yaml"), text).unwrap();
    let g = |args: &[&str]| {
        let mut c = git_in(remote.home(), &work);
        c.args(args);
        run(c)
    };
    g(&["add", "-A"]);
    g(&["commit", "-q", "-m", "argocd overrides"]);
    g(&["push", "-q", "origin", "main"]);
    let file = "apps/prod/.argocd-source-web.yaml";
    let b = Bump { file: file.into(), ..remote.bump(key("image.tag"), "1.4.2", 80) };
    assert!(bump(&b).unwrap().changed);
    assert_eq!(remote.git(&["diff", "--numstat", "main~1", "main"]), format!("1\t1\t{file}"));
    let digest = format!("sha256:{}", "d".repeat(64));
    let k =
        Bump { file: file.into(), ..remote.bump(Target::KustomizeImage("web".into()), &format!("registry.local/app/web@{digest}"), 81) };
    assert!(bump(&k).unwrap().changed);
    assert_eq!(
        remote.show("main", file),
        text.replace("value: 1.0.0", "value: 1.4.2")
            .replace("web=registry.local/app/web:1.0.0", &format!("web=registry.local/app/web@{digest}"))
    );
}
