//! Files of a folder for the corpus tests' include resolvers (each test binary includes this
//! module with `#[path]`).

use std::path::{Path, PathBuf};

use pipeline_spec::include::ResolveError;

/// Every file under `dir` whose path relative to it matches `pattern`, sorted.
pub fn glob(dir: &Path, pattern: &str) -> Result<Vec<String>, ResolveError> {
    let g = pipeline_spec::glob::Glob::new(pattern).ok_or(ResolveError::NotFound)?;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(dir.join(&rel)) else { continue };
        for e in rd.flatten() {
            let child = rel.join(e.file_name());
            if e.path().is_dir() {
                stack.push(child);
            } else if g.matches(&child.to_string_lossy()) {
                out.push(child.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}
