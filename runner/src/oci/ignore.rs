//! `.dockerignore`: patterns matched against paths relative to the context (Go's
//! `filepath.Match` per component plus `**`), the last matching pattern deciding, `!`
//! re-including; a path whose parent is excluded is excluded too, as Docker does.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use super::OciError;

#[derive(Default)]
pub struct Ignore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl Ignore {
    /// Reads `<context>/.dockerignore` (none: nothing is ignored).
    pub fn load(context: &Path) -> Result<Ignore, OciError> {
        let path = context.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ignore::parse(&text).map_err(|(line, message)| OciError::Dockerfile { path, line, col: 1, message }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignore::default()),
            Err(e) => Err(OciError::Io { what: format!("cannot read `{}`", path.display()), source: e }),
        }
    }

    /// Parses the patterns of a `.dockerignore`; errors carry the line.
    pub fn parse(text: &str) -> Result<Ignore, (usize, String)> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| (i + 1, format!("`.dockerignore` pattern `{line}` is not valid: {e}")))?;
            rules.push((glob.compile_matcher(), negate));
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (a `/`-separated path relative to the context) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let mut excluded = false;
        for (glob, negate) in &self.rules {
            // The pattern matches the path or one of its parents.
            let mut matched = glob.is_match(rel);
            if !matched {
                let mut prefix = rel;
                while let Some((parent, _)) = prefix.rsplit_once('/') {
                    if glob.is_match(parent) {
                        matched = true;
                        break;
                    }
                    prefix = parent;
                }
            }
            if matched {
                excluded = !negate;
            }
        }
        excluded
    }

    /// Whether a pattern could re-include something under the excluded directory `rel`
    /// (then the walk must go in).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, negate)| *negate)
    }
}

/// `./a//b/` → `a/b`; a leading `/` is the context's root.
fn clean(pattern: &str) -> String {
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let ig = Ignore::parse("# comment\n*.log\n/target\n**/node_modules\nsecret*\n!secret.keep\ndocs/*.md\n").unwrap();
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("sub/a.log"), "`*` does not cross `/`");
        assert!(ig.excluded("target/debug/x"));
        assert!(ig.excluded("a/b/node_modules/x.js"));
        assert!(ig.excluded("secret.txt"));
        assert!(!ig.excluded("secret.keep"));
        assert!(ig.excluded("docs/a.md"));
        assert!(!ig.excluded("docs/a.txt"));
        assert!(!ig.excluded("src/main.rs"));
        assert!(Ignore::parse("[z-a\n").is_err());
    }
}
