//! Ctrl-C: the run stops, `after_script` runs, nothing is left behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Project, image, leftover_containers};

fn interrupt_after_start(p: &Project, args: &[&str], job: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["run", "--format", "json"])
        .args(args)
        .current_dir(p.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    // Wait until the job prints its first line: it is really running.
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("\"event\":\"log\"") && line.contains(job) && line.contains("started-marker") {
            break;
        }
    }
    // SIGINT, as Ctrl-C sends.
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let mut rest = String::new();
    for l in reader.lines().map_while(Result::ok) {
        rest.push_str(&l);
        rest.push('\n');
    }
    let status = child.wait().unwrap();
    (status.code(), seen + &rest)
}

#[test]
fn ctrl_c_stops_a_shell_job_runs_after_script_and_kills_its_processes() {
    let marker = format!("piste-cancel-{}", std::process::id());
    let yml = format!(
        "long:\n  script:\n    - echo started-marker\n    - (exec -a {marker} sleep 300) &\n    - sleep 300\n  after_script:\n    - echo after-script-ran\n"
    );
    let p = Project::new(&yml);
    let (code, out) = interrupt_after_start(&p, &["--executor", "shell"], "long");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("after-script-ran"), "after_script runs on cancel: {out}");
    assert!(out.contains("\"status\":\"canceled\""), "{out}");
    let ps = Command::new("pgrep").args(["-f", &marker]).output().unwrap();
    assert!(ps.stdout.is_empty(), "process left behind: {}", String::from_utf8_lossy(&ps.stdout));
}

#[test]
fn ctrl_c_removes_the_job_container() {
    let img = image();
    let marker = format!("cancelme{}", std::process::id());
    let yml = format!("{marker}:\n  image: {img}\n  script:\n    - echo started-marker\n    - sleep 300\n");
    let p = Project::new(&yml);
    let (code, out) = interrupt_after_start(&p, &["--executor", "docker"], &marker);
    assert_eq!(code, Some(1), "{out}");
    assert!(leftover_containers(&marker).is_empty(), "containers left: {:?}", leftover_containers(&marker));
}

#[test]
fn watch_reruns_on_a_change_and_stops_on_ctrl_c() {
    let p = Project::new("show:\n  script:\n    - cat note.txt\n");
    p.write("note.txt", "first\n");
    p.commit();
    let mut child = Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["run", "--format", "json", "--executor", "shell", "--worktree", "--watch"])
        .current_dir(p.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut finished = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while finished < 2 && Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("\"event\":\"pipeline_finished\"") {
            finished += 1;
            if finished == 1 {
                // Let the watcher settle, then change a file (not committed: --worktree).
                std::thread::sleep(Duration::from_millis(300));
                p.write("note.txt", "second\n");
            }
        }
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(finished, 2, "the change triggered a second run:\n{seen}");
    assert!(seen.contains("\"line\":\"first\"") && seen.contains("\"line\":\"second\""), "{seen}");
    assert!(status.code().is_some(), "exits cleanly on Ctrl-C");
}
