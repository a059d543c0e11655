//! Harness: a temp directory per test with an upstream repository the fake server serves, the
//! fake server, and a running agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner::agent::{Agent, AgentError, RunnerConfig};
use runner::executor::{Executor, ShellExecutor};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fake::Fake;

/// The project every test uses (a path with a group, as on a forge).
pub const PROJECT: &str = "group/app";
pub const RUNNER_TOKEN: &str = "test-runner-token-0123456789";

/// A test's world: temp dir, upstream repository, fake server.
pub struct World {
    pub tmp: TempDir,
    pub repo: Upstream,
    pub fake: Fake,
}

impl World {
    pub async fn new() -> World {
        let tmp = tempfile::tempdir().expect("temp dir");
        let git_root = tmp.path().join("git");
        let repo = Upstream::new(&git_root.join(PROJECT));
        let fake = Fake::start(git_root).await;
        fake.state.add_runner(RUNNER_TOKEN);
        World { tmp, repo, fake }
    }

    pub fn config(&self) -> RunnerConfig {
        RunnerConfig {
            url: self.fake.url(),
            token: RUNNER_TOKEN.into(),
            name: "test-node".into(),
            tags: vec!["linux".into()],
            builds_dir: None,
            executor: None,
            concurrency: None,
            ca_file: None,
            log_interval_ms: None,
        }
    }

    pub fn work_dir(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    /// An agent with the shell executor and `concurrency` slots.
    pub fn shell_agent(&self, concurrency: usize) -> RunningAgent {
        self.agent(Arc::new(ShellExecutor::new()), false, concurrency, |a| a)
    }

    pub fn agent(
        &self,
        executor: Arc<dyn Executor>,
        containers: bool,
        concurrency: usize,
        tune: impl FnOnce(Agent) -> Agent,
    ) -> RunningAgent {
        let agent = tune(Agent::new(self.config(), executor, containers, concurrency, self.work_dir()));
        RunningAgent::start(agent)
    }

    /// A shell agent whose `runner.toml` settings are changed by `configure`.
    pub fn shell_agent_configured(&self, concurrency: usize, configure: impl FnOnce(&mut RunnerConfig)) -> RunningAgent {
        let mut config = self.config();
        configure(&mut config);
        RunningAgent::start(Agent::new(config, Arc::new(ShellExecutor::new()), false, concurrency, self.work_dir()))
    }
}

/// An agent running in a task.
pub struct RunningAgent {
    pub shutdown: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    pub fn start(agent: Agent) -> RunningAgent {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { agent.run(token).await });
        RunningAgent { shutdown, task }
    }

    /// Asks it to stop and waits (at most `limit`) for `run` to return.
    pub async fn stop(self, limit: Duration) -> Result<(), AgentError> {
        self.shutdown.cancel();
        tokio::time::timeout(limit, self.task).await.expect("the agent stops in time").expect("the agent task")
    }
}

/// A repository with a working tree, committed to with git2.
pub struct Upstream {
    pub path: PathBuf,
    repo: git2::Repository,
}

impl Upstream {
    pub fn new(path: &Path) -> Upstream {
        std::fs::create_dir_all(path).unwrap();
        let repo = git2::Repository::init(path).expect("init upstream");
        repo.set_head("refs/heads/main").unwrap();
        let mut config = repo.config().unwrap();
        config.set_str("user.name", "Test").unwrap();
        config.set_str("user.email", "test@example.invalid").unwrap();
        // As the server's mirror: a commit may be fetched by id (libgit2 speaks protocol v0/v1).
        config.set_bool("uploadpack.allowReachableSHA1InWant", true).unwrap();
        Upstream { path: path.to_owned(), repo }
    }

    /// Writes `files` and commits them on `branch`; returns the commit id.
    pub fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        for (name, content) in files {
            let p = self.path.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
        let mut index = self.repo.index().unwrap();
        for (name, _) in files {
            index.add_path(Path::new(name)).unwrap();
        }
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let refname = format!("refs/heads/{branch}");
        let parent = self.repo.find_reference(&refname).ok().and_then(|r| r.peel_to_commit().ok());
        let sig = self.repo.signature().unwrap();
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = self.repo.commit(Some(&refname), &sig, &sig, message, &tree, &parents).unwrap();
        id.to_string()
    }
}

/// Extracts an archive (tar.zst, or tar.gz) into a map of path → content (files only).
pub fn archive_files(archive: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(runner::artifacts::codec::decoder(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
            out.insert(path, content);
        }
    }
    out
}

/// Builds an archive of `files` with the runner's own archiver.
pub fn make_archive(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, content) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        paths.push(PathBuf::from(name));
    }
    let mut out = Vec::new();
    runner::artifacts::write_archive(dir.path(), &paths, &mut out).unwrap();
    out
}

/// The log with section timestamps replaced, so two runs of one job compare equal.
pub fn normalized(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(i) = rest.find("section_") {
        out.push_str(&rest[..i]);
        let marker = &rest[i..];
        match ["section_start:", "section_end:"].iter().find(|p| marker.starts_with(**p)) {
            Some(prefix) => {
                out.push_str(prefix);
                out.push('T');
                let after = &marker[prefix.len()..];
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                rest = &after[digits..];
            }
            None => {
                out.push_str("section_");
                rest = &marker["section_".len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A job variable: from the pipeline file, or a masked project secret.
pub fn var(key: &str, value: &str, masked: bool) -> scheduler::job::SpecVar {
    let layer = if masked { scheduler::job::Layer::Project } else { scheduler::job::Layer::Yaml };
    scheduler::job::SpecVar { key: key.into(), value: value.into(), raw: masked, masked, layer }
}

/// The failure class of an outcome, `None` when it did not fail.
pub fn reason_of(outcome: &scheduler::Outcome) -> Option<scheduler::FailureReason> {
    match outcome {
        scheduler::Outcome::Failed { reason, .. } => Some(*reason),
        _ => None,
    }
}
