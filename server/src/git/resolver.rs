//! Includes read from mirrors: the pipeline's own files at its commit, other projects' files
//! at a ref.

use std::collections::HashMap;

use pipeline_spec::glob::Glob;
use pipeline_spec::include::{IncludeResolver, ResolveError};

use super::{GitError, Mirror};

/// [`IncludeResolver`] over mirrors (see [`Mirror::resolver`]). Local includes (and their
/// wildcards) read the pipeline's commit; `include:project` reads the named project's mirror
/// at `ref` (a branch, tag, full ref or commit id), or at its default branch's head when no
/// `ref` is given. `include:remote` is refused (the server fetches nothing it was not
/// configured with).
#[derive(Debug, Clone)]
pub struct TreeResolver {
    main: Mirror,
    sha: String,
    /// The pipeline's own project name, so that `include:project` naming it reads `main`.
    name: Option<String>,
    others: HashMap<String, Mirror>,
}

impl TreeResolver {
    pub fn new(main: Mirror, sha: String, others: HashMap<String, Mirror>) -> TreeResolver {
        TreeResolver { main, sha, name: None, others }
    }

    /// Names the pipeline's own project, for `include: project: <itself>` (common with
    /// `$CI_PROJECT_PATH`): it then reads the main mirror at `ref` or the default branch.
    pub fn named(mut self, name: impl Into<String>) -> TreeResolver {
        self.name = Some(name.into());
        self
    }

    /// The mirror and commit an include reads from.
    fn target(&self, project: Option<&str>, git_ref: Option<&str>) -> Result<(&Mirror, String), ResolveError> {
        let mirror = match project {
            None => {
                return match git_ref {
                    None => Ok((&self.main, self.sha.clone())),
                    Some(r) => Ok((&self.main, at_ref(&self.main, "this project", r)?)),
                };
            }
            Some(p) if self.name.as_deref() == Some(p) && !self.others.contains_key(p) => &self.main,
            Some(p) => self.others.get(p).ok_or(ResolveError::UnknownProject)?,
        };
        let project = project.unwrap_or_default();
        let sha = match git_ref {
            Some(r) => at_ref(mirror, project, r)?,
            None => mirror
                .default_head()
                .map_err(other)?
                .ok_or_else(|| ResolveError::Other(format!("project `{project}` has no default branch yet: is it fetched?")))?,
        };
        Ok((mirror, sha))
    }
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
}
