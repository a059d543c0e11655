//! Include resolution from directories on disk: the project being run, and other projects
//! (`include:project`) mapped to local checkouts with `--project-dir NAME=DIR`.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use pipeline_spec::glob::Glob;
use pipeline_spec::include::{IncludeResolver, ResolveError};

/// Most files listed when expanding a wildcard include, so a huge tree cannot stall a lint.
const MAX_LISTED: usize = 100_000;
/// Largest included file read; the YAML layer refuses larger ones with a clear message anyway.
const MAX_READ: u64 = 64 * 1024 * 1024;

/// Reads includes from directories. Paths never leave their project directory.
#[derive(Debug, Clone)]
pub struct DirResolver {
    root: PathBuf,
    projects: HashMap<String, PathBuf>,
}

impl DirResolver {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirResolver { root: root.into(), projects: HashMap::new() }
    }

    pub fn project(mut self, name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        self.projects.insert(name.into(), dir.into());
        self
    }

    fn dir(&self, project: Option<&str>) -> Result<&Path, ResolveError> {
        match project {
            None => Ok(&self.root),
            Some(p) => self.projects.get(p).map(PathBuf::as_path).ok_or(ResolveError::UnknownProject),
        }
    }
}

/// Joins a project-relative path, refusing anything that would escape the project directory.
fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, ResolveError> {
    let rel = Path::new(rel.trim_start_matches('/'));
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(ResolveError::Other("the path leaves the project directory".into())),
        }
    }
    let full = dir.join(rel);
    // Symlinks inside the project must not lead outside it either.
    if let (Ok(real), Ok(base)) = (full.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&base) {
            return Err(ResolveError::Other("the path is a link that leaves the project directory".into()));
        }
    }
    Ok(full)
}

impl IncludeResolver for DirResolver {
    fn read(&self, project: Option<&str>, path: &str, _git_ref: Option<&str>) -> Result<String, ResolveError> {
        let dir = self.dir(project)?;
        let full = safe_join(dir, path)?;
        let meta = match fs::metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ResolveError::NotFound),
            Err(e) => return Err(ResolveError::Other(e.to_string())),
        };
        if !meta.is_file() {
            return Err(ResolveError::Other(format!("`{path}` is not a regular file")));
        }
        if meta.len() > MAX_READ {
            return Err(ResolveError::Other(format!("`{path}` is {} bytes, too large to be a CI file", meta.len())));
        }
        let bytes = fs::read(&full).map_err(|e| ResolveError::Other(e.to_string()))?;
        String::from_utf8(bytes).map_err(|_| ResolveError::Other(format!("`{path}` is not UTF-8 text")))
    }

    fn glob(&self, project: Option<&str>, pattern: &str, _git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let dir = self.dir(project)?;
        let glob = Glob::new(pattern).ok_or_else(|| ResolveError::Other(format!("invalid pattern `{pattern}`")))?;
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        let mut seen = 0usize;
        while let Some(rel) = stack.pop() {
            let Ok(entries) = fs::read_dir(dir.join(&rel)) else { continue };
            for entry in entries.flatten() {
                seen += 1;
                if seen > MAX_LISTED {
                    return Err(ResolveError::Other(format!("more than {MAX_LISTED} files under the project; narrow the pattern")));
                }
                let name = entry.file_name();
                if name == ".git" {
                    continue;
                }
                let child = rel.join(&name);
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(child);
                } else if ft.is_file() {
                    let s = child.to_string_lossy().replace('\\', "/");
                    if glob.matches(&s) {
                        out.push(s);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let proj = tmp.path().join("proj");
        fs::create_dir_all(proj.join("ci")).unwrap();
        fs::write(proj.join("ci/a.yml"), "a: 1").unwrap();
        fs::write(tmp.path().join("secret.yml"), "s: 1").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret.yml"), proj.join("ci/link.yml")).unwrap();
        let r = DirResolver::new(&proj);
        assert_eq!(r.read(None, "ci/a.yml", None).unwrap(), "a: 1");
        assert_eq!(r.read(None, "/ci/a.yml", None).unwrap(), "a: 1");
        assert!(matches!(r.read(None, "../secret.yml", None), Err(ResolveError::Other(_))));
        assert!(matches!(r.read(None, "ci/link.yml", None), Err(ResolveError::Other(_))));
        assert_eq!(r.read(None, "ci/none.yml", None), Err(ResolveError::NotFound));
        assert_eq!(r.read(Some("other/proj"), "x.yml", None), Err(ResolveError::UnknownProject));
        // Symlinks are not listed by wildcards (and refused when they leave the project).
        assert_eq!(r.glob(None, "ci/*.yml", None).unwrap(), vec!["ci/a.yml".to_string()]);
    }

    /// The resolver lists by fnmatch glob; the loader narrows to GitLab's `include:local`
    /// wildcard rules (`configs/**/*.yml`: subfolders of `configs/` only).
    #[test]
    fn wildcard_includes_from_disk_follow_gitlab() {
        use pipeline_spec::load::{LoadOptions, load};
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("configs/sub")).unwrap();
        fs::write(tmp.path().join("configs/top.yml"), "top:\n  script: [x]\n").unwrap();
        fs::write(tmp.path().join("configs/sub/low.yml"), "low:\n  script: [x]\n").unwrap();
        let r = DirResolver::new(tmp.path());
        let jobs = |pattern: &str| {
            let main = format!("include:\n  - local: '{pattern}'\n");
            let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", &main, &r, &LoadOptions::default());
            assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
            loaded.pipeline.unwrap().jobs.keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(jobs("configs/*.yml"), ["top"]);
        assert_eq!(jobs("configs/**.yml"), ["low", "top"]);
        assert_eq!(jobs("configs/**/*.yml"), ["low"]);
    }
}
