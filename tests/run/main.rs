//! `piste run` end to end: the real binary, a real git repository, real processes and the real
//! Docker Engine (images built locally from busybox-static; nothing is pulled).

mod artifacts;
mod cancel;
mod delivery;
mod docker;
mod git;
mod keywords;
#[path = "../common/registry.rs"]
mod registry;
mod reuse;
mod semantics;
mod steps;
mod trigger;
mod variables;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A throwaway git repository holding a pipeline.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(pipeline: &str) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = Project { dir };
        p.git(&["init", "-q", "-b", "main"]);
        p.write(".gitlab-ci.yml", pipeline);
        p.commit();
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, content: &str) {
        let p = self.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=piste", "-c", "user.email=piste@example.test", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git must be installed (scripts/deps.sh)");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn commit(&self) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", "test"]);
    }

    /// Runs `piste run ARGS --format json` and parses the events.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["run", "--format", "json"];
        all.extend_from_slice(args);
        let out =
            Command::new(env!("CARGO_BIN_EXE_piste")).args(&all).current_dir(self.path()).env("NO_COLOR", "1").output().expect("run piste");
        Run::from(out)
    }
}

/// A finished `piste run`: exit code, events, stderr.
pub struct Run {
    pub code: Option<i32>,
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let events = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        Run { code: out.status.code(), events, stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }
}

impl Run {
    /// The `job_finished` events of `job`, in order (one per attempt).
    pub fn finished(&self, job: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == "job_finished" && e["job"] == job).collect()
    }

    /// Final status of `job`.
    pub fn status(&self, job: &str) -> String {
        self.finished(job).last().map_or_else(|| "absent".into(), |e| e["status"].as_str().unwrap_or("?").to_string())
    }

    /// Log lines of `job`.
    pub fn log(&self, job: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "log" && e["job"] == job)
            .map(|e| e["line"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn pipeline_status(&self) -> String {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "pipeline_finished")
            .map_or("none".into(), |e| e["status"].as_str().unwrap_or("?").to_string())
    }

    /// Index of an event, for ordering assertions.
    pub fn position(&self, event: &str, job: &str) -> usize {
        self.events
            .iter()
            .position(|e| e["event"] == event && e["job"] == job)
            .unwrap_or_else(|| panic!("no {event} for {job}:\n{}", self.stdout))
    }

    pub fn debug(&self) -> String {
        format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

/// The busybox image the container tests use, built once per machine from busybox-static.
/// Fails loudly when Docker is not there: these tests never skip.
pub fn image() -> &'static str {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/demo-image.sh");
        // flock: nextest runs tests in parallel processes.
        let out = Command::new("flock").args(["/tmp/piste-demo-image.lock", "bash"]).arg(&script).output().expect("flock and bash");
        assert!(
            out.status.success(),
            "building the test image needs a running Docker Engine and busybox-static (run scripts/deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    "piste-demo/busybox:1"
}

/// Containers piste left behind for jobs whose name contains `marker` (tests run in parallel,
/// so each looks only for its own jobs).
pub fn leftover_containers(marker: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--filter", "label=piste.managed=true", "--format", "{{.Label \"piste.job\"}}"])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(marker)).map(str::to_string).collect()
}
