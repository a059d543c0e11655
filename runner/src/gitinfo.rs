//! The predefined-variable [`Context`] of a local run, read from the git repository the
//! pipeline lives in (branch or tag, commit, author, project path from `origin`).

use std::path::Path;

use git2::{BranchType, Repository};
use pipeline_spec::predefined::{Context, PipelineSource};

/// What `piste` found about the working copy, besides the context itself.
#[derive(Debug, Clone)]
pub struct LocalRepo {
    pub context: Context,
    /// Whether a git repository was found at all (outside one, a synthetic context is used).
    pub is_git: bool,
    /// Repository root (the directory containing `.git`), when `is_git`.
    pub root: Option<std::path::PathBuf>,
}

/// Reads branch, tag, commit and project identity from the repository containing `dir`.
/// Outside a repository, returns a context for branch `main` of project `local/<dir name>`.
pub fn local_context(dir: &Path) -> LocalRepo {
    let mut ctx = Context::default();
    let dir_name =
        dir.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "project".into());
    ctx.project_path = format!("local/{dir_name}");
    let Ok(repo) = Repository::discover(dir) else {
        ctx.branch = Some("main".into());
        return LocalRepo { context: ctx, is_git: false, root: None };
    };
    let root = repo.workdir().map(Path::to_path_buf);
    if let Some(path) = repo.find_remote("origin").ok().and_then(|r| r.url().ok().and_then(project_path_from_url)) {
        ctx.project_path = path;
    } else if let Some(name) = root.as_ref().and_then(|r| r.file_name()) {
        ctx.project_path = format!("local/{}", name.to_string_lossy());
    }
    ctx.default_branch = default_branch(&repo);
    ctx.source = PipelineSource::Push;
    if let Ok(head) = repo.head() {
        if head.is_branch() {
            ctx.branch = head.shorthand().ok().map(str::to_string);
        }
        if let Ok(commit) = head.peel_to_commit() {
            ctx.commit_sha = commit.id().to_string();
            ctx.commit_message = commit.message().unwrap_or_default().to_string();
            let author = commit.author();
            ctx.commit_author_name = author.name().unwrap_or_default().to_string();
            ctx.commit_author_email = author.email().unwrap_or_default().to_string();
            ctx.commit_timestamp = iso8601(commit.time().seconds(), commit.time().offset_minutes());
            ctx.before_sha = commit.parent_id(0).ok().map(|id| id.to_string());
            if ctx.branch.is_none() {
                ctx.tag = tag_at(&repo, commit.id());
            }
        }
    } else if let Ok(head_ref) = repo.find_reference("HEAD") {
        // An unborn branch: no commit yet, but the branch name is known.
        ctx.branch = head_ref.symbolic_target().ok().flatten().and_then(|t| t.strip_prefix("refs/heads/")).map(str::to_string);
    }
    if ctx.branch.is_none() && ctx.tag.is_none() {
        // Detached HEAD without a tag: GitLab would not run a pipeline for it; treat it as the
        // default branch so that a local run still plans something sensible.
        ctx.branch = Some(ctx.default_branch.clone());
    }
    LocalRepo { context: ctx, is_git: true, root }
}

/// The most changed paths kept; beyond, the changes are unknown (as on the server).
const MAX_CHANGED: usize = 10_000;

/// Resolves `name` in the repository containing `dir` as GitLab resolves `compare_to` and a
/// merge request's target branch: a local branch, else `origin`'s, else a tag, else anything
/// `git rev-parse` takes (a commit). `None` when nothing matches.
pub fn resolve_local_ref(dir: &Path, name: &str) -> Option<String> {
    let repo = Repository::discover(dir).ok()?;
    let candidates = [format!("refs/heads/{name}"), format!("refs/remotes/origin/{name}"), format!("refs/tags/{name}"), name.to_owned()];
    candidates.iter().find_map(|c| repo.revparse_single(c).ok().and_then(|o| o.peel_to_commit().ok()).map(|c| c.id().to_string()))
}

/// `(merge base of base_ref and head, paths changed from it to head)`, sorted: what GitLab
/// compares a merge request's (or `compare_to`'s) `rules:changes` with. `None` when a commit is
/// missing, the histories are unrelated, or more than 10,000 paths changed.
pub fn changes_since_merge_base(dir: &Path, base_ref: &str, head: &str) -> Option<(String, Vec<String>)> {
    let repo = Repository::discover(dir).ok()?;
    let base = repo.revparse_single(base_ref).ok()?.peel_to_commit().ok()?.id();
    let head = repo.revparse_single(head).ok()?.peel_to_commit().ok()?;
    let merge_base = repo.merge_base(base, head.id()).ok()?;
    let old = repo.find_commit(merge_base).ok()?.tree().ok()?;
    let mut opts = git2::DiffOptions::new();
    opts.include_typechange(true);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&head.tree().ok()?), Some(&mut opts)).ok()?;
    if diff.deltas().len() > MAX_CHANGED {
        return None;
    }
    let mut paths = std::collections::BTreeSet::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path_bytes() {
                paths.insert(String::from_utf8_lossy(p).into_owned());
            }
        }
    }
    Some((merge_base.to_string(), paths.into_iter().collect()))
}

fn tag_at(repo: &Repository, id: git2::Oid) -> Option<String> {
    let names = repo.tag_names(None).ok()?;
    let mut found: Vec<String> = names
        .iter()
        .filter_map(|n| n.ok().flatten())
        .filter(|name| {
            repo.revparse_single(&format!("refs/tags/{name}")).ok().and_then(|o| o.peel_to_commit().ok()).is_some_and(|c| c.id() == id)
        })
        .map(str::to_string)
        .collect();
    found.sort();
    found.pop()
}

fn default_branch(repo: &Repository) -> String {
    if let Ok(r) = repo.find_reference("refs/remotes/origin/HEAD") {
        if let Some(t) = r.symbolic_target().ok().flatten().and_then(|t| t.strip_prefix("refs/remotes/origin/")) {
            return t.to_string();
        }
    }
    for candidate in ["main", "master"] {
        if repo.find_branch(candidate, BranchType::Local).is_ok() {
            return candidate.to_string();
        }
    }
    "main".to_string()
}

/// `git@host:group/sub/name.git`, `https://host/group/name.git`, `ssh://git@host:22/g/n` → `group/.../name`.
pub fn project_path_from_url(url: &str) -> Option<String> {
    let rest = if let Some((_, r)) = url.split_once("://") {
        let r = r.split_once('/')?.1;
        r.to_string()
    } else if let Some((_, r)) = url.split_once(':') {
        r.to_string()
    } else {
        url.to_string()
    };
    let path = rest.trim_matches('/').trim_end_matches(".git").trim_matches('/');
    if path.is_empty() || path.contains("..") {
        return None;
    }
    Some(path.to_string())
}

/// Formats a Unix time with a UTC offset as `YYYY-MM-DDTHH:MM:SS+HH:MM` (an offset jiff
/// refuses counts as UTC; a time outside years -9999..=9999 gives an empty string).
pub fn iso8601(secs: i64, offset_minutes: i32) -> String {
    use jiff::tz::Offset;
    let offset = Offset::from_seconds(offset_minutes.saturating_mul(60)).unwrap_or(Offset::UTC);
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t.display_with_offset(offset).to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_from_remote_urls() {
        assert_eq!(project_path_from_url("git@gitlab.example:group/sub/app.git").as_deref(), Some("group/sub/app"));
        assert_eq!(project_path_from_url("https://gitlab.example/group/app.git").as_deref(), Some("group/app"));
        assert_eq!(project_path_from_url("ssh://git@host:2222/g/n").as_deref(), Some("g/n"));
        assert_eq!(project_path_from_url("https://host/").as_deref(), None);
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0, 0), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso8601(1_643_647_675, 60), "2022-01-31T17:47:55+01:00");
        assert_eq!(iso8601(951_782_400, -330), "2000-02-28T18:30:00-05:30");
        assert_eq!(iso8601(951_868_800, 0), "2000-03-01T00:00:00+00:00");
        assert_eq!(iso8601(-1, 0), "1969-12-31T23:59:59+00:00");
        assert_eq!(iso8601(0, i32::MAX), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso8601(i64::MAX, 0), "");
    }

    #[test]
    fn reads_branch_commit_and_origin() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        repo.remote("origin", "git@forge.example:team/app.git").unwrap();
        std::fs::write(tmp.path().join("f"), "x").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("f")).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::new("Ada", "ada@example.test", &git2::Time::new(1_700_000_000, 0)).unwrap();
        let oid = repo.commit(Some("refs/heads/feature/x"), &sig, &sig, "Add f\n\nbody", &tree, &[]).unwrap();
        repo.set_head("refs/heads/feature/x").unwrap();
        let local = local_context(tmp.path());
        assert!(local.is_git);
        let c = local.context;
        assert_eq!(c.project_path, "team/app");
        assert_eq!(c.branch.as_deref(), Some("feature/x"));
        assert_eq!(c.commit_sha, oid.to_string());
        assert_eq!(c.commit_author_name, "Ada");
        assert_eq!(c.commit_timestamp, "2023-11-14T22:13:20+00:00");
        repo.tag_lightweight("v1.0.0", &repo.find_object(oid, None).unwrap(), false).unwrap();
        repo.set_head_detached(oid).unwrap();
        let c = local_context(tmp.path()).context;
        assert_eq!(c.tag.as_deref(), Some("v1.0.0"));
        assert_eq!(c.branch, None);
    }
}
