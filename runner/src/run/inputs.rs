//! A job's inputs: its checkout, its dependencies' artifacts, its cache. Blocking code, called
//! through `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pipeline_spec::expand::expand;
use pipeline_spec::model::{self, CachePolicy, Job};

use crate::artifacts::{self, Limits};
use crate::cache::{CacheKeySpec, CacheStore};
use crate::cas::Store;
use crate::run::job::JobOutputs;
use crate::workspace::{CheckoutSpec, GitStrategy, Workspaces};

/// `GIT_STRATEGY`, `GIT_DEPTH`, `GIT_CLEAN_FLAGS` as the job's variables set them.
#[derive(Debug, Clone, Default)]
pub struct GitSettings {
    pub strategy: Option<String>,
    pub depth: Option<u32>,
    pub clean_flags: Option<String>,
    /// `GIT_CHECKOUT: "false"` skips checkout and clean.
    pub checkout: bool,
}

impl GitSettings {
    pub fn from_vars(vars: &[(String, String)]) -> GitSettings {
        let get = |k: &str| vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
        GitSettings {
            strategy: get("GIT_STRATEGY"),
            depth: get("GIT_DEPTH").and_then(|d| d.parse().ok()),
            clean_flags: get("GIT_CLEAN_FLAGS"),
            checkout: get("GIT_CHECKOUT").is_none_or(|v| v != "false"),
        }
    }
}

/// What `prepare` made ready.
pub struct Prepared {
    pub workspace: PathBuf,
    /// Each `cache:` entry's key, computed before the script (GitLab saves under the key it
    /// restored, even when the job changes the files a `key:files` hashes).
    pub cache_keys: Vec<Option<String>>,
    /// Lines for the job log (cache hits, artifacts received), shown before the script.
    pub notes: Vec<String>,
}

pub struct Inputs {
    workspaces: Workspaces,
    cache: CacheStore,
    sha: String,
    worktree: bool,
}

impl Inputs {
    pub fn new(source_repo: &Path, data_dir: &Path, sha: &str, worktree: bool) -> Result<Inputs, String> {
        let workspaces = Workspaces::new(source_repo, &data_dir.join("builds")).map_err(|e| e.to_string())?;
        let cache = CacheStore::new(data_dir.join("cache")).map_err(|e| e.to_string())?;
        Ok(Inputs { workspaces, cache, sha: sha.to_string(), worktree })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &self,
        slot: usize,
        git: &GitSettings,
        deps: &[String],
        outputs: &Mutex<HashMap<String, JobOutputs>>,
        cas: &Store,
        job: &Job,
        vars: &[(String, String)],
    ) -> Result<Prepared, String> {
        let strategy = GitStrategy::parse(git.strategy.as_deref().unwrap_or("")).map_err(|e| e.to_string())?;
        // With --worktree the checkout is HEAD plus the work tree's changes.
        let sha = if self.worktree { String::new() } else { self.sha.clone() };
        let spec = CheckoutSpec {
            sha,
            strategy,
            depth: git.depth,
            clean_flags: git.clean_flags.clone(),
            checkout: git.checkout,
            worktree: self.worktree,
        };
        let workspace = self.workspaces.prepare(slot, &spec).map_err(|e| e.to_string())?;
        let mut notes = Vec::new();

        let digests: Vec<(String, crate::cas::Digest)> = {
            let outputs = outputs.lock().unwrap_or_else(|e| e.into_inner());
            deps.iter().filter_map(|d| outputs.get(d).and_then(|o| o.artifacts).map(|a| (d.clone(), a))).collect()
        };
        for (dep, digest) in digests {
            let blob = cas.open_blob(&digest).map_err(|e| format!("artifacts of `{dep}`: {e}"))?;
            let summary = artifacts::extract(std::io::BufReader::new(blob), &workspace, &Limits::default())
                .map_err(|e| format!("artifacts of `{dep}`: {e}"))?;
            notes.push(format!("\x1b[32;1mDownloaded artifacts of `{dep}`\x1b[0;m ({} files)", summary.files));
        }

        let mut cache_keys = Vec::with_capacity(job.cache.len());
        for cache in &job.cache {
            // A cache problem is a warning, as in GitLab: the job runs without it.
            let key = match self.cache_key(&workspace, cache, vars) {
                Ok(k) => k,
                Err(e) => {
                    notes.push(format!("\x1b[0;33mWARNING: cache skipped: {e}\x1b[0;m"));
                    cache_keys.push(None);
                    continue;
                }
            };
            cache_keys.push(Some(key.clone()));
            if cache.policy == CachePolicy::Push {
                continue;
            }
            let mut keys = vec![key.clone()];
            keys.extend(cache.fallback_keys.iter().map(|k| expand(k, &vars)));
            if let Some(fallback) = vars.iter().rev().find(|(k, _)| k == "CACHE_FALLBACK_KEY").map(|(_, v)| v.clone()) {
                keys.push(fallback);
            }
            match self.cache.restore(&workspace, &keys) {
                Ok(Some(hit)) => notes.push(format!("\x1b[32;1mRestored cache `{hit}`\x1b[0;m")),
                Ok(None) => notes.push(format!("\x1b[0;33mNo cache for `{key}` yet\x1b[0;m")),
                Err(e) => notes.push(format!("\x1b[0;33mWARNING: cache `{key}` not restored: {e}\x1b[0;m")),
            }
        }
        Ok(Prepared { workspace, cache_keys, notes })
    }

    fn cache_key(&self, workspace: &Path, cache: &model::Cache, vars: &[(String, String)]) -> Result<String, String> {
        let spec = match &cache.key {
            model::CacheKey::Literal(k) => CacheKeySpec::Literal(expand(k, &vars)),
            model::CacheKey::Files { files, prefix } => CacheKeySpec::Files {
                files: files.iter().map(|f| expand(f, &vars)).collect(),
                prefix: prefix.as_ref().map(|p| expand(p, &vars)),
            },
        };
        self.cache.key_for(workspace, &spec).map_err(|e| e.to_string())
    }

    pub fn save_cache(&self, workspace: &Path, cache: &model::Cache, key: &str, vars: &[(String, String)]) -> Result<(), String> {
        let paths: Vec<String> = cache.paths.iter().map(|p| expand(p, &vars)).collect();
        let untracked = if cache.untracked { untracked_files(workspace) } else { Vec::new() };
        self.cache.save(workspace, key, &paths, &untracked).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Files git does not track and does not ignore in `workspace` (for `untracked: true`).
pub fn untracked_files(workspace: &Path) -> Vec<PathBuf> {
    let Ok(repo) = git2::Repository::open(workspace) else { return Vec::new() };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    let Ok(statuses) = repo.statuses(Some(&mut opts)) else { return Vec::new() };
    statuses.iter().filter(|s| s.status().is_wt_new()).filter_map(|s| s.path().ok().map(PathBuf::from)).collect()
}
