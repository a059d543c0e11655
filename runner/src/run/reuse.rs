//! Reuse of job results for `piste run`: a job whose inputs did not change since a run where it
//! succeeded is recorded as passed with that run's artifacts, dotenv and log.
//!
//! The key is a SHA-256 over a length-prefixed encoding of what the job reads: the executor
//! (`shell`, or the Docker image ids of its image and services), the job's specification
//! (scripts, `after_script`, artifacts, cache, timeout, …), its final variables without the
//! per-run ones ([`PER_RUN`]), the digests of the artifacts it downloads, and the git tree of
//! its checkout — or only the tree entries matching its `rules:changes`/`only:changes` when it
//! declares them. Records live in `.piste/reuse/<key>.json`; the artifacts and the log they
//! point to are blobs of the local content-addressed store. Only successes are recorded.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use pipeline_spec::expand::expand_keep_unknown;
use pipeline_spec::glob::Glob;
use pipeline_spec::model::Job;
use scheduler::job::JobSpec;
use serde::{Deserialize, Serialize};

use crate::cas::{Digest, Store};

/// Predefined variables whose values change from one run of the same inputs to the next
/// (ids, URLs, timestamps, tokens, where the workspace is) or name the commit rather than its
/// files (the tree stands for them): never part of a key.
pub const PER_RUN: &[&str] = &[
    "CI_PIPELINE_ID",
    "CI_PIPELINE_IID",
    "CI_PIPELINE_URL",
    "CI_PIPELINE_CREATED_AT",
    "CI_JOB_ID",
    "CI_JOB_URL",
    "CI_JOB_STARTED_AT",
    "CI_JOB_TOKEN",
    "CI_JOB_JWT",
    "CI_JOB_JWT_V1",
    "CI_JOB_JWT_V2",
    "CI_JOB_STATUS",
    "CI_BUILD_ID",
    "CI_BUILD_TOKEN",
    "CI_REGISTRY_PASSWORD",
    "CI_DEPENDENCY_PROXY_PASSWORD",
    "CI_REPOSITORY_URL",
    "CI_PROJECT_DIR",
    "CI_BUILDS_DIR",
    "CI_CONCURRENT_ID",
    "CI_CONCURRENT_PROJECT_ID",
    "CI_RUNNER_ID",
    "CI_RUNNER_SHORT_TOKEN",
    "CI_RUNNER_DESCRIPTION",
    "CI_RUNNER_TAGS",
    "CI_COMMIT_SHA",
    "CI_COMMIT_SHORT_SHA",
    "CI_COMMIT_BEFORE_SHA",
    "CI_COMMIT_MESSAGE",
    "CI_COMMIT_TITLE",
    "CI_COMMIT_DESCRIPTION",
    "CI_COMMIT_MESSAGE_IS_TRUNCATED",
    "CI_COMMIT_TIMESTAMP",
    "CI_COMMIT_AUTHOR",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA",
    "CI_MERGE_REQUEST_TARGET_BRANCH_SHA",
    "CI_MERGE_REQUEST_DIFF_BASE_SHA",
    "GITLAB_USER_ID",
    "GITLAB_USER_EMAIL",
    "GITLAB_USER_LOGIN",
    "GITLAB_USER_NAME",
];

/// The job variable that opts a job in (`"true"`) or out (`"false"`).
pub const VARIABLE: &str = "PISTE_REUSE";

/// Where the run stands on reuse: `--no-reuse` (off), `--reuse` or `.piste/config.toml`'s
/// `reuse = true` (every eligible job), or neither (jobs with `PISTE_REUSE: "true"` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Off,
    #[default]
    PerJob,
    Project,
}

/// Which earlier job a reused result comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReusedFrom {
    pub pipeline: u64,
    pub job_id: u64,
    pub job: String,
}

impl std::fmt::Display for ReusedFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reused from pipeline {}, job {} ({})", self.pipeline, self.job_id, self.job)
    }
}

/// What a success left, under its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub from: ReusedFrom,
    pub artifacts: Option<String>,
    pub dotenv: Vec<(String, String)>,
    /// The masked log, a blob of the store.
    pub log: String,
}

/// Why a job's result is never reused (`None`: it may be).
pub fn ineligible(spec: &JobSpec, job: Option<&Job>, mode: Mode, vars: &[(String, String)], worktree: bool) -> Option<&'static str> {
    let wanted = vars.iter().rev().find(|(k, _)| k == VARIABLE).map(|(_, v)| v.trim().to_ascii_lowercase());
    match (mode, wanted.as_deref()) {
        (Mode::Off, _) => return Some("--no-reuse"),
        (_, Some("false" | "0" | "no")) => return Some("PISTE_REUSE is false"),
        (Mode::PerJob, Some("true" | "1" | "yes")) | (Mode::Project, _) => {}
        (Mode::PerJob, _) => return Some("not opted in"),
    }
    if spec.manual {
        return Some("a manual or delayed job");
    }
    if !spec.steps.is_empty() {
        return Some("a job with `run:` steps");
    }
    let Some(job) = job else { return Some("not a job of the pipeline file") };
    if job.environment.is_some() {
        return Some("a job with an environment");
    }
    if job.trigger.is_some() {
        return Some("a trigger job");
    }
    if worktree {
        return Some("--worktree: uncommitted changes are not in the key");
    }
    None
}

/// `rules:changes` and `only:changes` patterns of a job, expanded with its variables.
pub fn change_patterns(job: &Job, vars: &[(String, String)]) -> Vec<String> {
    let map: HashMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rules = job.rules.iter().flatten().filter_map(|r| r.changes.as_ref()).flatten();
    let only = job.only.iter().flat_map(|p| &p.changes);
    let mut out: Vec<String> = rules.chain(only).map(|p| expand_keep_unknown(p, &map)).collect();
    out.sort();
    out.dedup();
    out
}

/// The git part of a key: the commit's tree id, or, with `patterns`, the (path, mode, blob)
/// entries of the tree matching one of them.
pub fn tree_input(repo: &Path, sha: &str, patterns: &[String]) -> Result<Vec<u8>, String> {
    let repo = git2::Repository::open(repo).map_err(|e| e.message().to_string())?;
    let oid = git2::Oid::from_str(sha).map_err(|e| e.message().to_string())?;
    let tree = repo.find_commit(oid).and_then(|c| c.tree()).map_err(|e| e.message().to_string())?;
    if patterns.is_empty() {
        return Ok(format!("tree {}", tree.id()).into_bytes());
    }
    let globs: Vec<Glob> = patterns.iter().filter_map(|p| Glob::new(p)).collect();
    let mut out = Vec::new();
    write_field(&mut out, b"changes");
    for p in patterns {
        write_field(&mut out, p.as_bytes());
    }
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() != Some(git2::ObjectType::Tree) {
            let path = format!("{root}{}", String::from_utf8_lossy(entry.name_bytes()));
            if globs.iter().any(|g| g.matches(&path)) {
                write_field(&mut out, path.as_bytes());
                write_field(&mut out, format!("{:o} {}", entry.filemode(), entry.id()).as_bytes());
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| e.message().to_string())?;
    Ok(out)
}

/// Everything a key is computed from.
pub struct KeyInputs<'a> {
    pub spec: &'a JobSpec,
    /// `shell`, or `docker` with the image ids.
    pub executor: String,
    /// The job's final variables (expanded), in order.
    pub variables: &'a [(String, String)],
    /// Each dependency and the digest of its artifacts.
    pub artifacts: Vec<(String, Option<Digest>)>,
    /// From [`tree_input`].
    pub tree: Vec<u8>,
}

/// The key: SHA-256 over length-prefixed fields.
pub fn key(k: &KeyInputs<'_>) -> Result<Digest, String> {
    let mut buf = Vec::new();
    write_field(&mut buf, b"piste-reuse/1");
    write_field(&mut buf, k.executor.as_bytes());
    let spec = serde_json::to_vec(k.spec).map_err(|e| e.to_string())?;
    write_field(&mut buf, &spec);
    write_field(&mut buf, b"variables");
    for (name, value) in k.variables.iter().filter(|(name, _)| !PER_RUN.contains(&name.as_str())) {
        write_field(&mut buf, name.as_bytes());
        write_field(&mut buf, value.as_bytes());
    }
    write_field(&mut buf, b"artifacts");
    for (dep, digest) in &k.artifacts {
        write_field(&mut buf, dep.as_bytes());
        write_field(&mut buf, digest.map(|d| d.hex()).unwrap_or_default().as_bytes());
    }
    write_field(&mut buf, b"tree");
    write_field(&mut buf, &k.tree);
    Ok(Digest::of(&buf))
}

fn write_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// `.piste/reuse/`: one JSON record per key that succeeded.
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(data_dir: &Path) -> Records {
        Records { dir: data_dir.join("reuse") }
    }

    /// The record of `key`, when its blobs are still in `cas`.
    pub fn get(&self, key: &Digest, cas: &Store) -> Option<Record> {
        let bytes = std::fs::read(self.dir.join(format!("{}.json", key.hex()))).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        let present = |hex: &str| hex.parse::<Digest>().is_ok_and(|d| cas.contains(&d));
        (present(&record.log) && record.artifacts.as_deref().is_none_or(present)).then_some(record)
    }

    /// Stores `record` under `key`, replacing any earlier one atomically.
    pub fn put(&self, key: &Digest, record: &Record) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.{}.tmp", key.hex(), std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(format!("{}.json", key.hex())))
    }
}

/// The project's switch in `.piste/config.toml`: `reuse = true`.
pub fn project_setting(data_dir: &Path) -> Result<bool, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        reuse: bool,
    }
    let path = data_dir.join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<Config>(&text).map(|c| c.reuse).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "name": "build", "stage": "build", "image": null, "script": ["make"], "variables": [],
            "timeout_s": 3600, "artifacts": null, "node_index": null, "manual": false
        }))
        .unwrap()
    }

    fn key_of(vars: &[(&str, &str)], tree: &[u8]) -> Digest {
        let spec = spec();
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        key(&KeyInputs { spec: &spec, executor: "shell".into(), variables: &vars, artifacts: vec![], tree: tree.to_vec() }).unwrap()
    }

    #[test]
    fn per_run_values_do_not_change_the_key_and_the_others_do() {
        let base = key_of(&[("CI_JOB_NAME", "build"), ("A", "1")], b"t");
        for name in PER_RUN {
            assert_eq!(key_of(&[("CI_JOB_NAME", "build"), ("A", "1"), (name, "42")], b"t"), base, "{name} changed the key");
        }
        assert_ne!(key_of(&[("CI_JOB_NAME", "build"), ("A", "2")], b"t"), base);
        assert_ne!(key_of(&[("CI_JOB_NAME", "build"), ("A", "1"), ("CI_COMMIT_REF_NAME", "main")], b"t"), base);
        assert_ne!(key_of(&[("CI_JOB_NAME", "build"), ("A", "1")], b"u"), base);
        // Length prefixes: moving bytes from a name to its value is another key.
        assert_ne!(key_of(&[("AB", "C")], b"t"), key_of(&[("A", "BC")], b"t"));
    }

    #[test]
    fn the_per_run_list_holds_the_ids_tokens_and_timestamps() {
        for name in ["CI_PIPELINE_ID", "CI_PIPELINE_IID", "CI_JOB_ID", "CI_JOB_STARTED_AT", "CI_PIPELINE_CREATED_AT", "CI_JOB_TOKEN"] {
            assert!(PER_RUN.contains(&name), "{name}");
        }
        assert!(!PER_RUN.contains(&"CI_JOB_NAME") && !PER_RUN.contains(&"CI_COMMIT_REF_NAME"));
    }

    #[test]
    fn opting_in_and_out() {
        let s = spec();
        let job = None;
        assert_eq!(ineligible(&s, job, Mode::Off, &[], false), Some("--no-reuse"));
        let on = [(VARIABLE.to_string(), "true".to_string())];
        let off = [(VARIABLE.to_string(), "false".to_string())];
        assert_eq!(ineligible(&s, job, Mode::PerJob, &[], false), Some("not opted in"));
        assert_eq!(ineligible(&s, job, Mode::Project, &off, false), Some("PISTE_REUSE is false"));
        // Past the switches, a job that is not in the file (nothing known of it) is not reused.
        assert_eq!(ineligible(&s, job, Mode::PerJob, &on, false), Some("not a job of the pipeline file"));
    }
}
