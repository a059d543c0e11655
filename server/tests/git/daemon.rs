//! Mirrors fetched through a real `git daemon` (the `git://` protocol) on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use server::git::Mirror;

use crate::{Guard, Source, free_port, git, wait_for};

/// `git daemon` exporting every repository under `base`, on a free port of 127.0.0.1.
struct Daemon {
    _child: Guard,
    port: u16,
}

impl Daemon {
    fn start(base: &Path, home: &Path) -> Daemon {
        let port = free_port();
        let cmd = git(home);
        // `git-daemon` itself: `git daemon` would run it as a child that outlives a kill of `git`.
        let exec_path = git(home).arg("--exec-path").output().expect("git --exec-path");
        let program = Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(program)
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
            .args(["--reuseaddr", "--listen=127.0.0.1", "--export-all", "--informative-errors"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`git daemon` (part of Debian's git package)");
        let child = Guard(child);
        wait_for(SocketAddr::from(([127, 0, 0, 1], port)));
        Daemon { _child: child, port }
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

#[test]
fn a_mirror_fetches_over_git_protocol_from_git_daemon() {
    let src = Source::new();
    let one = src.commit(&[(".gitlab-ci.yml", Some("build: {script: [make]}\n"))], "one");
    // Serve a bare copy, as a forge would.
    let served = src.tmp.path().join("served");
    let bare = Mirror::open_or_init(&served.join("app.git")).unwrap();
    bare.fetch(&src.url()).unwrap();
    let daemon = Daemon::start(&served, src.tmp.path());

    let mirror = Mirror::open_or_init(&src.tmp.path().join("mirrors/app.git")).unwrap();
    mirror.fetch(&daemon.url("app.git")).unwrap();
    assert!(mirror.has_commit(&one));
    assert_eq!(mirror.read_file(&one, ".gitlab-ci.yml").unwrap().as_deref(), Some("build: {script: [make]}\n"));
    assert_eq!(mirror.default_head().unwrap(), Some(one.clone()));

    // A later push upstream arrives with the next fetch, and only the new objects travel.
    let two = src.commit(&[(".gitlab-ci.yml", Some("build: {script: [make all]}\n")), ("src/lib.c", Some("int x;\n"))], "two");
    bare.fetch(&src.url()).unwrap();
    mirror.fetch(&daemon.url("app.git")).unwrap();
    assert!(mirror.has_commit(&two));
    assert_eq!(mirror.changed_files(&one, &two).unwrap(), [".gitlab-ci.yml", "src/lib.c"]);

    // An unknown repository is an error naming the URL, not a panic.
    let err = mirror.fetch(&daemon.url("nope.git")).unwrap_err();
    assert!(err.to_string().contains("nope.git"), "{err}");
}

/// More history than libgit2's first batch of 20 "have" lines: the negotiation takes a round
/// (haves, the server's ACKs, then "done") through the socket stream that asks for quick
/// acknowledgements (server/src/git/tcp.rs, issue 12). The fetch brings exactly the pushed
/// commit; a port nobody listens on is an error naming the URL.
#[test]
fn a_fetch_negotiating_past_the_first_batch_of_haves_brings_the_pushed_commit() {
    let src = Source::new();
    let mut last = src.commit(&[("count", Some("0\n"))], "c0");
    for i in 1..45 {
        last = src.commit(&[("count", Some(&format!("{i}\n")))], &format!("c{i}"));
    }
    let served = src.tmp.path().join("served");
    let bare = Mirror::open_or_init(&served.join("app.git")).unwrap();
    bare.fetch(&src.url()).unwrap();
    let daemon = Daemon::start(&served, src.tmp.path());
    let mirror = Mirror::open_or_init(&src.tmp.path().join("mirrors/app.git")).unwrap();
    mirror.fetch(&daemon.url("app.git")).unwrap();
    assert!(mirror.has_commit(&last));

    for round in 45..48 {
        let next = src.commit(&[("count", Some(&format!("{round}\n")))], &format!("c{round}"));
        bare.fetch(&src.url()).unwrap();
        assert!(!mirror.has_commit(&next));
        mirror.fetch(&daemon.url("app.git")).unwrap();
        assert_eq!(mirror.read_file(&next, "count").unwrap(), Some(format!("{round}\n")));
        assert_eq!(mirror.changed_files(&last, &next).unwrap(), ["count"]);
        assert_eq!(mirror.default_head().unwrap(), Some(next.clone()));
        last = next;
    }

    let port = free_port();
    let err = mirror.fetch(&format!("git://127.0.0.1:{port}/app.git")).unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("connect"), "{err}");
}
