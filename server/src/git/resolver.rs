//! Includes read from mirrors: the pipeline's own files at its commit, other projects' files
//! (`include:project`, `include:component`) at a ref.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use pipeline_spec::glob::Glob;
use pipeline_spec::include::{IncludeResolver, ResolveError};

use super::{GitError, Mirror, Remote};

/// [`IncludeResolver`] over mirrors (see [`Mirror::resolver`]). Local includes (and their
/// wildcards) read the pipeline's commit; `include:project` reads the named project's mirror
/// at `ref` (a full commit id, a tag, a branch, a full ref, an abbreviated commit id), or at
/// its default branch's head when no `ref` is given; components list its tags. Project names
/// match whatever their case, as GitLab's paths do. A mirror that lacks the ref asked for (or
/// is empty) is fetched once from its configured remote, when one is given
/// ([`TreeResolver::fetching`]). Templates and remote files are not in mirrors: see
/// `includes.rs`.
#[derive(Debug)]
pub struct TreeResolver {
    main: Mirror,
    sha: String,
    /// The pipeline's own project name, so that `include:project` naming it reads `main`.
    name: Option<String>,
    others: HashMap<String, Mirror>,
    remotes: HashMap<String, Remote>,
    /// Projects fetched during this load (each at most once).
    fetched: Mutex<HashSet<String>>,
}

impl TreeResolver {
    pub fn new(main: Mirror, sha: String, others: HashMap<String, Mirror>) -> TreeResolver {
        TreeResolver { main, sha, name: None, others, remotes: HashMap::new(), fetched: Mutex::default() }
    }

    /// Names the pipeline's own project, for `include: project: <itself>` (common with
    /// `$CI_PROJECT_PATH`): it then reads the main mirror at `ref` or the default branch.
    pub fn named(mut self, name: impl Into<String>) -> TreeResolver {
        self.name = Some(name.into());
        self
    }

    /// Where other projects' mirrors are fetched from when a ref is missing (their configured
    /// remotes; never a URL from a pipeline).
    pub fn fetching(mut self, remotes: HashMap<String, Remote>) -> TreeResolver {
        self.remotes = remotes;
        self
    }

    /// The mirror of `project` and its configured name.
    fn mirror(&self, project: Option<&str>) -> Result<(&Mirror, String), ResolveError> {
        let Some(p) = project else { return Ok((&self.main, "this project".into())) };
        if let Some((name, m)) = self.others.iter().find(|(n, _)| n.eq_ignore_ascii_case(p)) {
            return Ok((m, name.clone()));
        }
        match &self.name {
            Some(own) if own.eq_ignore_ascii_case(p) => Ok((&self.main, own.clone())),
            _ => Err(ResolveError::UnknownProject),
        }
    }

    /// Fetches another project's mirror once (`true` when it did).
    fn refresh(&self, mirror: &Mirror, name: &str) -> Result<bool, ResolveError> {
        let Some(remote) = self.remotes.get(name) else { return Ok(false) };
        if !self.fetched.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string()) {
            return Ok(false);
        }
        mirror.fetch_from(remote).map_err(other)?;
        Ok(true)
    }

    /// The mirror and commit an include reads from.
    fn target(&self, project: Option<&str>, git_ref: Option<&str>) -> Result<(&Mirror, String), ResolveError> {
        if project.is_none() {
            return match git_ref {
                None => Ok((&self.main, self.sha.clone())),
                Some(r) => Ok((&self.main, at_ref(&self.main, "this project", r)?)),
            };
        }
        let (mirror, name) = self.mirror(project)?;
        let sha = match git_ref {
            Some(r) => match mirror.resolve_ref(r).map_err(other)? {
                Some(sha) => sha,
                None if self.refresh(mirror, &name)? => at_ref(mirror, &name, r)?,
                None => return Err(ResolveError::Other(format!("ref `{r}` is not in {name}"))),
            },
            None => match mirror.default_head().map_err(other)? {
                Some(sha) => sha,
                None if self.refresh(mirror, &name)? => mirror.default_head().map_err(other)?.ok_or_else(|| no_branch(&name))?,
                None => return Err(no_branch(&name)),
            },
        };
        Ok((mirror, sha))
    }
}

fn no_branch(project: &str) -> ResolveError {
    ResolveError::Other(format!("project `{project}` has no default branch yet: is it fetched?"))
}

fn at_ref(mirror: &Mirror, project: &str, r: &str) -> Result<String, ResolveError> {
    mirror.resolve_ref(r).map_err(other)?.ok_or_else(|| ResolveError::Other(format!("ref `{r}` is not in {project}")))
}

fn other(e: GitError) -> ResolveError {
    ResolveError::Other(e.to_string())
}

impl IncludeResolver for TreeResolver {
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        let (mirror, sha) = self.target(project, git_ref)?;
        match mirror.read_file(&sha, path) {
            Ok(Some(text)) => Ok(text),
            Ok(None) => Err(ResolveError::NotFound),
            Err(e) => Err(other(e)),
        }
    }

    fn glob(&self, project: Option<&str>, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let glob = Glob::new(pattern).ok_or_else(|| ResolveError::Other(format!("invalid pattern `{pattern}`")))?;
        let (mirror, sha) = self.target(project, git_ref)?;
        mirror.list_files(&sha, &glob).map_err(other)
    }

    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let (mirror, name) = self.mirror(project)?;
        let tags = mirror.tags().map_err(other)?;
        if tags.is_empty() && project.is_some() && self.refresh(mirror, &name)? {
            return mirror.tags().map_err(other);
        }
        Ok(tags)
    }

    fn commit(&self, project: Option<&str>, git_ref: &str) -> Result<String, ResolveError> {
        Ok(self.target(project, Some(git_ref))?.1)
    }
}
