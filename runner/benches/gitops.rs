//! `piste/gitops-bump@v1` end to end on loopback: fetch from `git daemon --enable=receive-pack`,
//! edit one value, commit, push — p50 and p90 of 40 bumps with the runner's cached clone, the
//! first (cold) bump, and a bump that finds the value already there (no commit). Then the same
//! warm bump over https (nginx + `git http-backend`, a test CA, Basic auth) and over ssh
//! (sshd, a key), which go through the `git` program.
//!
//! cargo bench -p runner --bench gitops      (target: p50 < 300 ms)

#[path = "../../server/tests/common/https.rs"]
mod https_forge;
#[path = "../../server/tests/common/ssh.rs"]
mod ssh_forge;
#[path = "../../server/tests/common/tls.rs"]
mod tls_ca;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runner::steps::gitops::{Auth, Bump, Origin, Target, bump};

const VALUES: &str =
    "# Production values\nreplicaCount: 3\nimage:\n  repository: registry.local/app/web\n  tag: \"1.0.0\"\n  pullPolicy: IfNotPresent\n";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@example.test", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git (Debian's git package)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("envs/prod")).unwrap();
    std::fs::write(work.join("envs/prod/values.yaml"), VALUES).unwrap();
    // Some history, as a real deployment repository has.
    git(&work, &["init", "-q", "-b", "main"]);
    for i in 0..200 {
        std::fs::write(work.join(format!("envs/prod/app{}.yaml", i % 20)), format!("n: {i}\n")).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("change {i}")]);
    }
    std::fs::create_dir_all(tmp.path().join("repos")).unwrap();
    git(tmp.path(), &["clone", "-q", "--bare", "work", "repos/deploy.git"]);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let exec_path = git(tmp.path(), &["--exec-path"]);
    let mut daemon = Command::new(Path::new(&exec_path).join("git-daemon"))
        .args(["--export-all", "--reuseaddr", "--enable=receive-pack", "--listen=127.0.0.1", &format!("--port={port}")])
        .arg(format!("--base-path={}", tmp.path().join("repos").display()))
        .arg(tmp.path().join("repos"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let make_for = |repo: String, auth: Auth, ca_file: Option<std::path::PathBuf>, known_hosts: Option<String>| {
        let cache = tmp.path().join(format!("runner-{}", repo.split("://").next().unwrap_or("x")));
        move |value: String, pipeline: u64| Bump {
            repo: repo.clone(),
            branch: Some("main".into()),
            file: "envs/prod/values.yaml".into(),
            target: Target::Key("image.tag".into()),
            value,
            auth: auth.clone(),
            ca_file: ca_file.clone(),
            known_hosts: known_hosts.clone(),
            author: None,
            message: None,
            origin: Origin { project: "bench/app".into(), pipeline, job: "1".into() },
            cache_dir: cache.clone(),
        }
    };
    let make = |value: String, pipeline: u64| Bump {
        repo: format!("git://127.0.0.1:{port}/deploy.git"),
        branch: Some("main".into()),
        file: "envs/prod/values.yaml".into(),
        target: Target::Key("image.tag".into()),
        value,
        auth: Auth::None,
        ca_file: None,
        known_hosts: None,
        author: None,
        message: None,
        origin: Origin { project: "bench/app".into(), pipeline, job: "1".into() },
        cache_dir: tmp.path().join("runner"),
    };
    let time = |b: &Bump| {
        let t = Instant::now();
        let done = bump(b).expect("bump");
        (t.elapsed(), done.changed)
    };
    let (cold, changed) = time(&make("0.0.1".into(), 1));
    assert!(changed);
    let mut warm = Vec::new();
    for i in 0..40u64 {
        let (d, changed) = time(&make(format!("1.{i}.0"), 2 + i));
        assert!(changed);
        warm.push(d);
    }
    let (noop, changed) = time(&make("1.39.0".into(), 100));
    assert!(!changed);
    warm.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("gitops bump, git:// on loopback, 200-commit repository, cached clone:");
    println!("  p50 {:7.1} ms   p90 {:7.1} ms   (40 bumps; target p50 < 300 ms)", ms(warm[warm.len() / 2]), ms(warm[warm.len() * 9 / 10]));
    println!("  first bump (clone into an empty cache) {:7.1} ms", ms(cold));
    println!("  bump with the value already there (no commit) {:7.1} ms", ms(noop));
    let _ = daemon.kill();
    let _ = daemon.wait();

    // The transports of the `git` program: a first bump fills each cache, then 20 warm ones.
    let https = https_forge::HttpsForge::serve(&tmp.path().join("repos"), &tmp.path().join("nginx"));
    let sshd = ssh_forge::SshForge::serve(&tmp.path().join("sshd"));
    let token = Auth::Token { user: https_forge::USER.into(), token: https_forge::PASSWORD.into() };
    let key = std::fs::read_to_string(&sshd.key).unwrap();
    let hosts = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    let transports = [
        ("https (nginx, test CA, Basic)", make_for(format!("{}deploy.git", https.base), token, Some(https.ca.cert.clone()), None)),
        ("ssh (sshd, a key)", make_for(sshd.url(&tmp.path().join("repos/deploy.git")), Auth::SshKey(key), None, Some(hosts))),
    ];
    let mut pipeline = 1000;
    for (name, make) in transports {
        pipeline += 1;
        let (cold, _) = time(&make("2.0.0".into(), pipeline));
        let mut warm = Vec::new();
        for i in 0..20u64 {
            pipeline += 1;
            let (d, changed) = time(&make(format!("3.{pipeline}.{i}"), pipeline));
            assert!(changed);
            warm.push(d);
        }
        warm.sort();
        println!(
            "gitops bump over {name}: p50 {:7.1} ms   p90 {:7.1} ms   (20 bumps; first {:7.1} ms)",
            ms(warm[warm.len() / 2]),
            ms(warm[warm.len() * 9 / 10]),
            ms(cold)
        );
    }
}
