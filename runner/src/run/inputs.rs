//! Where `piste run` takes a job's inputs from: the slot workspaces (checkouts borrowing the
//! source repository's objects) and the cache folder. Blocking code, called through
//! `spawn_blocking`.

use std::path::{Path, PathBuf};

use crate::cache::CacheStore;
use crate::job::GitSettings;
use crate::workspace::{CheckoutSpec, GitStrategy, Workspaces};

pub struct Inputs {
    workspaces: Workspaces,
    pub cache: CacheStore,
    /// What built-in steps keep between jobs (cached deployment clones): `.piste/steps`.
    pub steps_dir: PathBuf,
    sha: String,
    worktree: bool,
}

impl Inputs {
    pub fn new(source_repo: &Path, data_dir: &Path, sha: &str, worktree: bool) -> Result<Inputs, String> {
        let workspaces = Workspaces::new(source_repo, &data_dir.join("builds")).map_err(|e| e.to_string())?;
        let cache = CacheStore::new(data_dir.join("cache")).map_err(|e| e.to_string())?;
        Ok(Inputs { workspaces, cache, steps_dir: data_dir.join("steps"), sha: sha.to_string(), worktree })
    }

    /// Slot `slot`'s workspace at the run's commit, as `git` asks. `Err(true, m)`: the job's own
    /// settings are wrong; `Err(false, m)`: the workspace could not be prepared.
    pub fn checkout(&self, slot: usize, git: &GitSettings) -> Result<PathBuf, (bool, String)> {
        let strategy = GitStrategy::parse(git.strategy.as_deref().unwrap_or("")).map_err(|e| (true, e.to_string()))?;
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
        self.workspaces.prepare(slot, &spec).map_err(|e| {
            let config =
                matches!(e, crate::workspace::WorkspaceError::CleanFlags { .. } | crate::workspace::WorkspaceError::UnknownStrategy { .. });
            (config, e.to_string())
        })
    }
}
