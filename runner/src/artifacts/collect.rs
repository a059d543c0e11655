//! Choosing the files of `artifacts:paths`, `exclude` and `untracked`, GitLab's way.
//!
//! As in gitlab-runner: each path is a doublestar glob relative to the project directory;
//! every match is walked recursively (a directory brings everything under it); `exclude` is
//! matched against each path found and is not recursive; a path outside the project directory
//! is skipped with a warning; a path that matches nothing gives "`x`: no matching files";
//! `.` and `./` match nothing. Unlike gitlab-runner, nothing is ever looked up *through* a
//! symlink: a path whose literal prefix goes through one is skipped with a warning.
//!
//! Collection only lists names. The guarantee that no byte is read from outside the workspace
//! is enforced again, race-free, when [`write_archive`](super::write_archive) opens each path.

use std::collections::BTreeSet;
use std::fs::{self, FileType};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use super::{ArtifactError, ArtifactSpec, Collected, check_symlink_target};

/// Lists what `spec` selects in `workspace`. Problems with individual paths become warnings;
/// only an unreadable workspace is an error.
pub fn collect(workspace: &Path, spec: &ArtifactSpec) -> Result<Collected, ArtifactError> {
    let meta = fs::metadata(workspace).map_err(|source| ArtifactError::Io { op: "read workspace", path: workspace.to_owned(), source })?;
    if !meta.is_dir() {
        return Err(ArtifactError::Io {
            op: "read workspace",
            path: workspace.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut warnings = Vec::new();
    let exclude = Excluder::new(workspace, &spec.exclude, &mut warnings);
    let mut c = Collector { ws: workspace, exclude, files: BTreeSet::new(), warnings };

    for raw in &spec.paths {
        let found = match split_pattern(workspace, raw) {
            Ok(Pattern { literal, glob: None }) if literal.as_os_str().is_empty() => 0,
            Ok(Pattern { literal, glob: None }) => c.literal(raw, &literal),
            Ok(Pattern { literal, glob: Some(glob) }) => c.glob(raw, &literal, &glob),
            Err(reason) => {
                c.warn(format!("`{raw}`: {reason}; skipped"));
                continue;
            }
        };
        if found == 0 {
            c.warn(format!("`{raw}`: no matching files"));
        }
    }

    if !spec.untracked.is_empty() {
        let mut found = 0;
        for path in &spec.untracked {
            let mut inside = true;
            let clean: PathBuf = path
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    Component::CurDir => None,
                    _ => {
                        inside = false;
                        None
                    }
                })
                .collect();
            if inside && !clean.as_os_str().is_empty() {
                found += c.literal(&clean.display().to_string(), &clean);
            } else {
                let shown = path.display();
                c.warn(format!("untracked `{shown}`: outside the project directory; skipped"));
            }
        }
        if found == 0 {
            c.warn("untracked: no files".to_owned());
        }
    }

    Ok(Collected { files: c.files.into_iter().collect(), warnings: c.warnings })
}

/// A path pattern split into the literal directories before its first wildcard and the rest.
struct Pattern {
    literal: PathBuf,
    glob: Option<String>,
}

fn is_glob(component: &str) -> bool {
    component.contains(['*', '?', '[', '{', '\\'])
}

/// Makes `raw` relative to the workspace and splits it; `Err` says why it is refused.
fn split_pattern(ws: &Path, raw: &str) -> Result<Pattern, &'static str> {
    let rel = match raw.strip_prefix('/') {
        None => raw,
        Some(_) => {
            // An absolute path is accepted only inside the workspace, as gitlab-runner does.
            let ws = ws.to_str().ok_or("outside the project directory")?.trim_end_matches('/');
            match raw.strip_prefix(ws) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                _ => return Err("outside the project directory"),
            }
        }
    };
    let mut literal: Vec<&str> = Vec::new();
    let mut glob: Vec<&str> = Vec::new();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." if !glob.is_empty() => return Err("`..` after a wildcard is not supported"),
            ".." => {
                literal.pop().ok_or("outside the project directory")?;
            }
            c if glob.is_empty() && !is_glob(c) => literal.push(c),
            c => glob.push(c),
        }
    }
    Ok(Pattern { literal: literal.iter().collect(), glob: (!glob.is_empty()).then(|| glob.join("/")) })
}

fn compile(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build()
}

/// `artifacts:exclude`, matched against workspace-relative paths.
struct Excluder {
    set: GlobSet,
}

impl Excluder {
    fn new(ws: &Path, patterns: &[String], warnings: &mut Vec<String>) -> Excluder {
        let mut builder = GlobSetBuilder::new();
        for raw in patterns {
            let pattern = match split_pattern(ws, raw) {
                Ok(Pattern { literal, glob }) => {
                    let mut p = literal.to_string_lossy().into_owned();
                    if let Some(g) = glob {
                        p = if p.is_empty() { g } else { format!("{p}/{g}") };
                    }
                    p
                }
                Err(reason) => {
                    warnings.push(format!("exclude `{raw}`: {reason}; ignored"));
                    continue;
                }
            };
            // doublestar's `dir/**` also matches `dir` itself; globset's does not.
            let extra = pattern.strip_suffix("/**").map(str::to_owned);
            for p in std::iter::once(pattern).chain(extra) {
                match compile(&p) {
                    Ok(g) => {
                        builder.add(g);
                    }
                    Err(e) => warnings.push(format!("exclude `{raw}`: {e}; ignored")),
                }
            }
        }
        let set = builder.build().unwrap_or_else(|e| {
            warnings.push(format!("exclude patterns ignored: {e}"));
            GlobSet::empty()
        });
        Excluder { set }
    }

    fn matches(&self, rel: &Path) -> bool {
        self.set.is_match(rel)
    }
}

struct Collector<'a> {
    ws: &'a Path,
    exclude: Excluder,
    files: BTreeSet<PathBuf>,
    warnings: Vec<String>,
}

impl Collector<'_> {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// Checks that every directory of `rel` but the last is a real directory (not a symlink)
    /// and returns the type of the last component; `None` when it does not exist.
    fn lstat_inside(&mut self, raw: &str, rel: &Path) -> Option<FileType> {
        let mut at = self.ws.to_path_buf();
        let count = rel.components().count();
        for (i, comp) in rel.components().enumerate() {
            at.push(comp);
            let ft = match fs::symlink_metadata(&at) {
                Ok(m) => m.file_type(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
                Err(e) => {
                    self.warn(format!("`{raw}`: {e}"));
                    return None;
                }
            };
            if i + 1 == count {
                return Some(ft);
            }
            if ft.is_symlink() {
                let prefix: PathBuf = rel.components().take(i + 1).collect();
                self.warn(format!("`{raw}`: `{}` is a symlink; paths through it are not followed", prefix.display()));
                return None;
            }
            if !ft.is_dir() {
                return None;
            }
        }
        None
    }

    /// A path without wildcards.
    fn literal(&mut self, raw: &str, rel: &Path) -> usize {
        match self.lstat_inside(raw, rel) {
            Some(ft) => self.add_tree(rel, ft),
            None => 0,
        }
    }

    /// `literal/glob`: walks `literal` (which must be a real directory) and adds every match.
    fn glob(&mut self, raw: &str, literal: &Path, glob: &str) -> usize {
        let full = if literal.as_os_str().is_empty() { glob.to_owned() } else { format!("{}/{glob}", literal.to_string_lossy()) };
        let matcher: GlobMatcher = match compile(&full) {
            Ok(g) => g.compile_matcher(),
            Err(e) => {
                self.warn(format!("`{raw}`: {e}; skipped"));
                return 0;
            }
        };
        if !literal.as_os_str().is_empty() {
            match self.lstat_inside(raw, literal) {
                Some(ft) if ft.is_dir() => {}
                Some(ft) if ft.is_symlink() => {
                    self.warn(format!("`{raw}`: `{}` is a symlink; paths through it are not followed", literal.display()));
                    return 0;
                }
                _ => return 0,
            }
        }
        // Without `**`, matches sit exactly this many levels below `literal`.
        let depth = (!glob.contains("**")).then(|| glob.split('/').count());
        let mut found = 0;
        let mut stack = vec![(literal.to_path_buf(), 0usize)];
        while let Some((dir, level)) = stack.pop() {
            for (rel, ft) in self.read_dir(&dir) {
                if matcher.is_match(&rel) {
                    found += self.add_tree(&rel, ft);
                } else if ft.is_dir() && depth.is_none_or(|d| level + 1 < d) {
                    stack.push((rel, level + 1));
                }
            }
        }
        found
    }

    /// Adds `rel` and, for a directory, everything under it. Returns how many paths it added.
    fn add_tree(&mut self, rel: &Path, ft: FileType) -> usize {
        if !ft.is_dir() {
            return self.add_leaf(rel, ft);
        }
        let mut found = 0;
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            // An excluded directory is not added, but what is under it still is (GitLab).
            if !self.exclude.matches(&dir) {
                self.files.insert(dir.clone());
                found += 1;
            }
            for (child, ft) in self.read_dir(&dir) {
                if ft.is_dir() {
                    stack.push(child);
                } else {
                    found += self.add_leaf(&child, ft);
                }
            }
        }
        found
    }

    fn add_leaf(&mut self, rel: &Path, ft: FileType) -> usize {
        if self.exclude.matches(rel) {
            return 0;
        }
        let kind = if ft.is_file() {
            None
        } else if ft.is_symlink() {
            match fs::read_link(self.ws.join(rel)) {
                Ok(target) => {
                    let depth = rel.components().count();
                    match check_symlink_target(depth, target.as_os_str().as_bytes()) {
                        Ok(()) => None,
                        Err(reason) => Some(format!("{reason} (`{}`)", target.display())),
                    }
                }
                Err(e) => Some(format!("unreadable symlink: {e}")),
            }
        } else if ft.is_fifo() {
            Some("a fifo".to_owned())
        } else if ft.is_socket() {
            Some("a socket".to_owned())
        } else if ft.is_block_device() || ft.is_char_device() {
            Some("a device file".to_owned())
        } else {
            Some("not a regular file, directory or symlink".to_owned())
        };
        match kind {
            None => {
                self.files.insert(rel.to_path_buf());
                1
            }
            Some(why) => {
                self.warn(format!("`{}`: {why}; skipped", rel.display()));
                0
            }
        }
    }

    /// Entries of a workspace directory, with their own (not followed) types, sorted by name.
    fn read_dir(&mut self, rel: &Path) -> Vec<(PathBuf, FileType)> {
        let dir = self.ws.join(rel);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.warn(format!("`{}`: cannot list directory: {e}", rel.display()));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            match entry.and_then(|e| Ok((rel.join(e.file_name()), e.file_type()?))) {
                Ok(item) => out.push(item),
                Err(e) => self.warn(format!("`{}`: cannot list directory: {e}", rel.display())),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(raw: &str) -> Result<(String, Option<String>), &'static str> {
        split_pattern(Path::new("/builds/proj"), raw).map(|p| (p.literal.display().to_string(), p.glob))
    }

    #[test]
    fn splits_literal_prefix_from_glob() {
        assert_eq!(split("dist/"), Ok(("dist".into(), None)));
        assert_eq!(split("./a/./b"), Ok(("a/b".into(), None)));
        assert_eq!(split("out/**/*.apk"), Ok(("out".into(), Some("**/*.apk".into()))));
        assert_eq!(split("*.txt"), Ok(("".into(), Some("*.txt".into()))));
        assert_eq!(split("a/b/../c/*"), Ok(("a/c".into(), Some("*".into()))));
        assert_eq!(split("/builds/proj/bin"), Ok(("bin".into(), None)));
        assert_eq!(split("."), Ok(("".into(), None)));
    }

    #[test]
    fn refuses_paths_outside() {
        assert_eq!(split("../x"), Err("outside the project directory"));
        assert_eq!(split("a/../../x"), Err("outside the project directory"));
        assert_eq!(split("/etc/passwd"), Err("outside the project directory"));
        assert_eq!(split("/builds/project2/x"), Err("outside the project directory"));
        assert_eq!(split("*/../../x"), Err("`..` after a wildcard is not supported"));
    }
}
