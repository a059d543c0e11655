//! Reuse of job results for `piste run`: which jobs take part (the shared rule of
//! [`crate::reuse`], plus what only the pipeline file and the run tell) and the records, one
//! JSON file per key under `.piste/reuse/`, whose artifacts and log are blobs of the local
//! content-addressed store. The key itself is [`crate::reuse::key`], the same as on server
//! runners.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use pipeline_spec::model::Job;
use scheduler::job::JobSpec;
use serde::{Deserialize, Serialize};

pub use crate::reuse::{KeyInputs, Mode, PER_RUN, ReusedFrom, VARIABLE, key, tree_input};

use crate::cas::{Digest, Store};

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

/// Why a job's result is never reused (`None`: it may be): [`crate::reuse::ineligible`], then
/// [`scheduler::job::never_reused`], then `--worktree`.
pub fn ineligible(spec: &JobSpec, job: Option<&Job>, mode: Mode, vars: &[(String, String)], worktree: bool) -> Option<&'static str> {
    if let Some(why) = crate::reuse::ineligible(spec, mode, vars) {
        return Some(why);
    }
    let Some(job) = job else { return Some("not a job of the pipeline file") };
    if let Some(why) = scheduler::job::never_reused(job) {
        return Some(why);
    }
    if worktree {
        return Some("--worktree: uncommitted changes are not in the key");
    }
    None
}

/// `rules:changes` and `only:changes` patterns of a job, expanded with its variables.
pub fn change_patterns(job: &Job, vars: &[(String, String)]) -> Vec<String> {
    crate::reuse::expand_patterns(&scheduler::job::change_patterns(job), vars)
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

    #[test]
    fn a_job_not_in_the_file_is_not_reused() {
        let s: JobSpec = serde_json::from_value(serde_json::json!({
            "name": "build", "stage": "build", "image": null, "script": ["make"], "variables": [],
            "timeout_s": 3600, "artifacts": null, "node_index": null, "manual": false
        }))
        .unwrap();
        let on = [(VARIABLE.to_string(), "true".to_string())];
        assert_eq!(ineligible(&s, None, Mode::Off, &[], false), Some("--no-reuse"));
        // Past the switches, a job that is not in the file (nothing known of it) is not reused.
        assert_eq!(ineligible(&s, None, Mode::PerJob, &on, false), Some("not a job of the pipeline file"));
    }
}
