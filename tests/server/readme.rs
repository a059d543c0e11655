//! The README's server walkthrough, run as typed: the first `sh` block of its "A server and its
//! runners" section, in an empty folder, with relative paths and the config file shown there.
//! Only the port changes (8080 may be taken). A newcomer's first run once failed on a relative
//! `data_dir` while every test used absolute temp paths; this test is the newcomer.

use std::path::PathBuf;
use std::process::Command;

use crate::support::free_port;

fn readme_block() -> String {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## A server and its runners").nth(1).expect("the README has the server section");
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = section[start..].find("\n```").expect("the block ends") + start;
    section[start..end].to_string()
}

#[test]
fn the_readme_server_walkthrough_runs_as_written() {
    let block = readme_block();
    assert!(block.contains("data_dir = \"piste-data\""), "the walkthrough keeps its relative data_dir");
    let port = free_port();
    let script = block.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_piste"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    // The block leaves the server and the runner running, as a reader's shell would; stop them.
    let wrapped = format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}\n");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&wrapped)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("PISTE_URL")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    let context = format!(
        "stdout:\n{stdout}\nstderr:\n{}\nserve.log:\n{}\nrunner.log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs("serve.log"),
        logs("runner.log")
    );
    assert!(out.status.success(), "{context}");
    let sha = Command::new("git").args(["-C", "app", "rev-parse", "--short=8", "HEAD"]).current_dir(dir.path()).output().unwrap();
    let short = String::from_utf8_lossy(&sha.stdout).trim().to_string();
    assert!(stdout.contains(&format!("hello from {short}")), "the job ran at the pushed commit: {context}");
    assert!(stdout.contains("\"pipeline\":1"), "the webhook answered with the pipeline: {context}");
    assert!(dir.path().join("piste-data").is_dir(), "data_dir is next to piste.toml: {context}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server was stopped with the script");
}
