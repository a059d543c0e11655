//! Include resolution on this machine: the project being run (its folder, or its git
//! repository at a ref), other projects (`include:project`, `include:component`) mapped to
//! local checkouts with `--project-dir NAME=DIR`, GitLab templates from `--templates-dir`, and
//! remote files with `--allow-remote`.
//!
//! Project names match as GitLab's do, whatever their case (`GNOME/citemplates` and
//! `gnome/citemplates` are one project). The pipeline's own project, named by its path
//! (`$CI_PROJECT_PATH`), is the root unless mapped elsewhere. Every host of a component
//! address counts as this instance: the mapped directories say which projects exist.

mod project;
mod remote;

use std::path::PathBuf;

use pipeline_spec::include::{IncludeResolver, RemoteRequest, ResolveError};

pub use project::ProjectDir;
pub use remote::{RemoteFetcher, RemoteOptions};

/// Reads includes on this machine. Paths never leave their project directory.
#[derive(Debug, Clone)]
pub struct LocalResolver {
    root: ProjectDir,
    /// The pipeline's own project path, for `include:project` / components naming it.
    own: Option<String>,
    projects: Vec<(String, ProjectDir)>,
    templates: Option<PathBuf>,
    remote: Option<RemoteFetcher>,
}

impl LocalResolver {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalResolver { root: ProjectDir::new(root), own: None, projects: Vec::new(), templates: None, remote: None }
    }

    /// `--project-dir NAME=DIR`.
    pub fn project(mut self, name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        self.projects.push((name.into(), ProjectDir::new(dir)));
        self
    }

    /// The pipeline's own project path: includes naming it read the root.
    pub fn named(mut self, path: impl Into<String>) -> Self {
        self.own = Some(path.into());
        self
    }

    /// `--templates-dir DIR`: a folder laid out as GitLab's `lib/gitlab/ci/templates`.
    pub fn templates(mut self, dir: impl Into<PathBuf>) -> Self {
        self.templates = Some(dir.into());
        self
    }

    /// `--allow-remote`: fetch `include:remote` with this fetcher.
    pub fn allow_remote(mut self, fetcher: RemoteFetcher) -> Self {
        self.remote = Some(fetcher);
        self
    }

    fn dir(&self, project: Option<&str>) -> Result<&ProjectDir, ResolveError> {
        let Some(p) = project else { return Ok(&self.root) };
        if let Some((_, d)) = self.projects.iter().find(|(n, _)| n.eq_ignore_ascii_case(p)) {
            return Ok(d);
        }
        match &self.own {
            Some(own) if own.eq_ignore_ascii_case(p) => Ok(&self.root),
            _ => Err(ResolveError::UnknownProject),
        }
    }
}

impl IncludeResolver for LocalResolver {
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        self.dir(project)?.read(path, git_ref)
    }

    fn glob(&self, project: Option<&str>, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        self.dir(project)?.glob(pattern, git_ref)
    }

    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, ResolveError> {
        self.dir(project)?.tags()
    }

    fn commit(&self, project: Option<&str>, git_ref: &str) -> Result<String, ResolveError> {
        self.dir(project)?.commit(git_ref)
    }

    fn component_host(&self, _host: &str) -> bool {
        true
    }

    fn template(&self, name: &str) -> Result<String, ResolveError> {
        let Some(dir) = &self.templates else {
            return Err(ResolveError::Unavailable(
                "GitLab's templates are not available here: point `--templates-dir` at a folder of them".into(),
            ));
        };
        match project::read_disk(dir, name) {
            Err(ResolveError::NotFound) => {
                Err(ResolveError::Unavailable(format!("template `{name}` is not in the templates directory `{}`", dir.display())))
            }
            other => other,
        }
    }

    fn remote(&self, request: &RemoteRequest<'_>) -> Result<String, ResolveError> {
        match &self.remote {
            Some(f) => f.fetch(request),
            None => Err(ResolveError::Unavailable("remote includes are fetched only with `--allow-remote`".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn reads_inside_and_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let proj = tmp.path().join("proj");
        fs::create_dir_all(proj.join("ci")).unwrap();
        fs::write(proj.join("ci/a.yml"), "a: 1").unwrap();
        fs::write(tmp.path().join("secret.yml"), "s: 1").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret.yml"), proj.join("ci/link.yml")).unwrap();
        let r = LocalResolver::new(&proj);
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
        let r = LocalResolver::new(tmp.path());
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

    /// A repository at `dir` with one commit per `(message, files)`, returning their ids.
    fn commit_all(dir: &std::path::Path, commits: &[&[(&str, &str)]]) -> (git2::Repository, Vec<git2::Oid>) {
        let repo = git2::Repository::init(dir).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let mut ids = Vec::new();
        for files in commits {
            for (path, text) in *files {
                let p = dir.join(path);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, text).unwrap();
            }
            let mut index = repo.index().unwrap();
            index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let parents: Vec<git2::Commit<'_>> = ids.last().map(|id| repo.find_commit(*id).unwrap()).into_iter().collect();
            let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
            let id = repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &refs).unwrap();
            drop(tree);
            ids.push(id);
        }
        (repo, ids)
    }

    /// A git `--project-dir` answers refs from its commits (git's order: a tag before a
    /// branch of the same name, `origin`'s branches in a clone, abbreviated ids), lists its
    /// tags, and reads the working tree when no ref is asked; a plain folder's files stand
    /// for every ref but it has no tags.
    #[test]
    fn git_project_dirs_read_refs_tags_and_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let comp = tmp.path().join("comp");
        let (repo, ids) = commit_all(&comp, &[&[("templates/lint.yml", "v1")], &[("templates/lint.yml", "v2")]]);
        let first = repo.find_commit(ids[0]).unwrap();
        repo.tag_lightweight("1.0.0", first.as_object(), false).unwrap();
        repo.branch("same", &first, false).unwrap();
        let second = repo.find_commit(ids[1]).unwrap();
        repo.tag_lightweight("same", second.as_object(), false).unwrap();
        repo.reference("refs/remotes/origin/feature", ids[0], false, "t").unwrap();
        fs::write(comp.join("templates/lint.yml"), "uncommitted").unwrap();

        let r = LocalResolver::new(tmp.path()).project("My-Org/Comp", &comp);
        let p = Some("my-org/comp");
        assert_eq!(r.read(p, "templates/lint.yml", None).unwrap(), "uncommitted");
        assert_eq!(r.read(p, "templates/lint.yml", Some("1.0.0")).unwrap(), "v1");
        assert_eq!(r.read(p, "templates/lint.yml", Some("refs/tags/1.0.0")).unwrap(), "v1");
        assert_eq!(r.read(p, "templates/lint.yml", Some("same")).unwrap(), "v2", "the tag wins over the branch");
        assert_eq!(r.read(p, "templates/lint.yml", Some("feature")).unwrap(), "v1", "origin's branch in a clone");
        assert_eq!(r.read(p, "templates/lint.yml", Some(&ids[0].to_string()[..8])).unwrap(), "v1");
        assert_eq!(r.read(p, "templates/lint.yml", Some(&ids[1].to_string())).unwrap(), "v2");
        assert_eq!(r.read(p, "templates/nope.yml", Some("1.0.0")), Err(ResolveError::NotFound));
        assert!(
            matches!(r.read(p, "templates/lint.yml", Some("9.9.9")), Err(ResolveError::Unavailable(m)) if m.contains("fetch it there"))
        );
        assert_eq!(r.glob(p, "templates/*.yml", Some("1.0.0")).unwrap(), ["templates/lint.yml"]);
        let mut tags = r.tags(p).unwrap();
        tags.sort();
        assert_eq!(tags, ["1.0.0", "same"]);
        assert_eq!(r.commit(p, "1.0.0").unwrap(), ids[0].to_string());

        let plain = tmp.path().join("plain");
        fs::create_dir_all(plain.join("templates")).unwrap();
        fs::write(plain.join("templates/lint.yml"), "plain").unwrap();
        let r = LocalResolver::new(tmp.path()).project("g/plain", &plain);
        assert_eq!(r.read(Some("g/plain"), "templates/lint.yml", Some("any-ref")).unwrap(), "plain");
        assert!(matches!(r.tags(Some("g/plain")), Err(ResolveError::Unavailable(m)) if m.contains("is not a git repository")));
    }

    /// The pipeline's own project, named by its path, is the root; templates come from
    /// `--templates-dir` only and never from outside it; remote files need `--allow-remote`.
    #[test]
    fn own_project_templates_and_remote_policy() {
        use pipeline_spec::load::{LoadOptions, load};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        let (_, ids) = commit_all(&root, &[&[("templates/own.yml", "own:\n  script: [x]\n")]]);
        let templates = tmp.path().join("templates");
        fs::create_dir_all(templates.join("Jobs")).unwrap();
        fs::write(templates.join("Jobs/Build.gitlab-ci.yml"), "build:\n  script: [build]\n").unwrap();
        fs::write(tmp.path().join("secret.gitlab-ci.yml"), "leak:\n  script: [x]\n").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret.gitlab-ci.yml"), templates.join("Jobs/Link.gitlab-ci.yml")).unwrap();
        let r = LocalResolver::new(&root).named("group/app").templates(&templates);
        let vars = vec![
            ("CI_SERVER_FQDN".to_string(), "gitlab.example.com".to_string()),
            ("CI_PROJECT_PATH".to_string(), "group/app".to_string()),
            ("CI_COMMIT_SHA".to_string(), ids[0].to_string()),
        ];
        let main = "include:\n  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/own@$CI_COMMIT_SHA\n  - template: Jobs/Build.gitlab-ci.yml\n";
        let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", main, &r, &LoadOptions { variables: vars.clone(), ..LoadOptions::default() });
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.pipeline.unwrap().jobs.keys().collect::<Vec<_>>(), ["own", "build"]);
        assert!(matches!(r.template("Jobs/Link.gitlab-ci.yml"), Err(ResolveError::Other(m)) if m.contains("leaves the project directory")));
        assert!(
            matches!(r.template("Jobs/None.gitlab-ci.yml"), Err(ResolveError::Unavailable(m)) if m.contains("is not in the templates directory"))
        );
        let request = RemoteRequest { url: "https://example.test/ci.yml", integrity: None, cache_secs: None };
        assert!(matches!(r.remote(&request), Err(ResolveError::Unavailable(m)) if m.contains("`--allow-remote`")));
    }
}
