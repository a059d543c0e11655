//! Where `piste run` takes a job's inputs from: the slot workspaces (checkouts borrowing the
//! source repository's objects) and the cache folder. Blocking code, called through
//! `spawn_blocking`.

use std::path::{Path, PathBuf};

use crate::cache::CacheStore;
use crate::job::GitSettings;
use tokio_util::sync::CancellationToken;

use crate::workspace::{CheckoutSpec, GitStrategy, SubmoduleSource, Workspaces, submodules};

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

    /// Slot `slot`'s workspace at the run's commit, as `git` asks, with its submodules; git's
    /// output about them is the second value. `Err(true, m)`: the job's own settings are wrong
    /// (or a submodule cannot be cloned); `Err(false, m)`: the workspace could not be prepared.
    pub fn checkout(&self, slot: usize, git: &GitSettings, cancel: &CancellationToken) -> Result<(PathBuf, String), (bool, String)> {
        let strategy = GitStrategy::parse(git.strategy.as_deref().unwrap_or("")).map_err(|e| (true, e.to_string()))?;
        let submodules = git.submodules().map_err(|m| (true, m))?;
        // With --worktree the checkout is HEAD plus the work tree's changes.
        let sha = if self.worktree { String::new() } else { self.sha.clone() };
        let spec = CheckoutSpec {
            sha,
            strategy,
            depth: git.depth().map_err(|m| (true, m))?,
            clean_flags: git.clean_flags.clone(),
            checkout: git.checkout,
            worktree: self.worktree,
        };
        let dir = self.workspaces.prepare(slot, &spec).map_err(|e| {
            let config =
                matches!(e, crate::workspace::WorkspaceError::CleanFlags { .. } | crate::workspace::WorkspaceError::UnknownStrategy { .. });
            (config, e.to_string())
        })?;
        if !git.checkout || !matches!(strategy, GitStrategy::Fetch | GitStrategy::Clone) {
            return Ok((dir, String::new()));
        }
        // GitLab resolves relative submodule URLs against the project's URL: here, the source's
        // `origin`, else (as git does without a remote) the source repository itself.
        let source = SubmoduleSource {
            base_url: Some(self.origin_url().unwrap_or_else(|| self.workspaces.source().to_string_lossy().into_owned())),
            allow_file: true,
            ..SubmoduleSource::default()
        };
        match submodules::update(&dir, &submodules, &source, cancel) {
            Ok(output) => Ok((dir, output)),
            Err(crate::workspace::WorkspaceError::Canceled) => Err((false, "canceled".into())),
            Err(e) => Err((true, e.to_string())),
        }
    }

    fn origin_url(&self) -> Option<String> {
        let repo = git2::Repository::open(self.workspaces.source()).ok()?;
        let remote = repo.find_remote("origin").ok()?;
        remote.url().ok().map(str::to_owned)
    }
}
