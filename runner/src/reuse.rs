//! Reuse of job results, the part both job paths share: a job whose inputs did not change
//! since a run where it succeeded is recorded as passed with that run's artifacts, dotenv and
//! log. `piste run` keeps its records under `.piste/reuse/` ([`crate::run::reuse`]); a server
//! runner asks its server, which keeps them per project (`crate::agent`).
//!
//! The key is a SHA-256 over a length-prefixed encoding of what the job reads: the executor
//! (`shell`, or the Docker image ids of its image and services), the job's specification
//! (scripts, `after_script`, artifacts, cache, timeout, …), its final variables without the
//! per-run ones ([`PER_RUN`]), the digests of the artifacts it downloads, and the git tree of
//! its commit — or only the tree entries matching its `rules:changes`/`only:changes` when it
//! declares them. Only successes are recorded.

use std::collections::HashMap;
use std::path::Path;

use pipeline_spec::expand::{expand, expand_keep_unknown};
use pipeline_spec::glob::Glob;
use scheduler::job::JobSpec;

pub use scheduler::protocol::ReusedFrom;

use crate::cas::Digest;

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

/// Why a job's result is not reused by its switches and specification (`None`: it may be, as
/// far as these tell): the run's or project's switch and `PISTE_REUSE` in its final variables,
/// then manual and delayed jobs and jobs with `run:` steps (delivery steps act on the world).
pub fn ineligible(spec: &JobSpec, mode: Mode, vars: &[(String, String)]) -> Option<&'static str> {
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
    None
}

/// `rules:changes`/`only:changes` patterns ([`scheduler::job::change_patterns`]) expanded with
/// the job's variables, sorted, without repeats.
pub fn expand_patterns(patterns: &[String], vars: &[(String, String)]) -> Vec<String> {
    let map: HashMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out: Vec<String> = patterns.iter().map(|p| expand_keep_unknown(p, &map)).collect();
    out.sort();
    out.dedup();
    out
}

/// The executor part of a key: `shell` (the executor's name), or `docker` with the Engine's
/// image id of the job's image and of each service. `None` when it cannot be known: a
/// container job without an image, no Engine, or an image the Engine does not hold yet (the
/// job runs, and pulls it).
pub async fn executor_input(
    spec: &JobSpec,
    vars: &[(String, String)],
    containers: bool,
    executor_name: &str,
    default_image: Option<&str>,
) -> Option<String> {
    if !containers {
        return Some(executor_name.to_string());
    }
    let map: HashMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let image = match &spec.image {
        Some(i) => expand(&i.name, &map),
        None => default_image?.to_string(),
    };
    let names = std::iter::once(image).chain(spec.services.iter().map(|s| expand(&s.name, &map)));
    let docker = bollard::Docker::connect_with_local_defaults().ok()?;
    let mut out = String::from("docker");
    for name in names {
        let id = docker.inspect_image(&name).await.ok()?.id?;
        out.push_str(&format!(" {name}={id}"));
    }
    Some(out)
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
        assert_eq!(ineligible(&s, Mode::Off, &[]), Some("--no-reuse"));
        let on = [(VARIABLE.to_string(), "true".to_string())];
        let off = [(VARIABLE.to_string(), "false".to_string())];
        assert_eq!(ineligible(&s, Mode::PerJob, &[]), Some("not opted in"));
        assert_eq!(ineligible(&s, Mode::Project, &off), Some("PISTE_REUSE is false"));
        assert_eq!(ineligible(&s, Mode::PerJob, &on), None);
        assert_eq!(ineligible(&s, Mode::Project, &[]), None);
        let manual = JobSpec { manual: true, ..spec() };
        assert_eq!(ineligible(&manual, Mode::Project, &on), Some("a manual or delayed job"));
    }

    #[test]
    fn change_patterns_are_expanded_with_the_job_variables() {
        let vars = [("DIR".to_string(), "api".to_string())];
        let patterns = ["$DIR/**/*".to_string(), "docs/*".to_string(), "$DIR/**/*".to_string(), "$UNSET/x".to_string()];
        assert_eq!(expand_patterns(&patterns, &vars), ["$UNSET/x", "api/**/*", "docs/*"]);
    }
}
