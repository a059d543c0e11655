//! A pipeline on this machine: find the file, read the git context, load and plan it.
//! Shared by `piste lint`, `piste graph`, `piste jobs` and `piste run`.

use std::path::{Path, PathBuf};

use pipeline_spec::glob::Glob;
use pipeline_spec::include::IncludeResolver;
use pipeline_spec::load::{LoadOptions, Loaded, load};
use pipeline_spec::plan::{Compared, Plan, PlanContext, PlanError, plan};
use pipeline_spec::predefined::{Context, MergeRequest, PipelineSource};

use crate::gitinfo::local_context;
use crate::includes::{LocalResolver, RemoteFetcher, RemoteOptions};

/// File names tried, in order, when no `-f` is given.
pub const DEFAULT_FILES: &[&str] = &[".gitlab-ci.yml", ".gitlab-ci-dso.yml"];

#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// The pipeline file; default: the first of [`DEFAULT_FILES`] in `dir`.
    pub file: Option<PathBuf>,
    /// Where to look for the file and the repository (the current directory).
    pub dir: PathBuf,
    /// Root of the project for `include:local` and `rules:exists`; default: the git work
    /// tree containing the file, else the file's directory.
    pub root: Option<PathBuf>,
    /// `--var K=V`: pipeline variables, highest precedence.
    pub vars: Vec<(String, String)>,
    /// `--project-dir PROJECT=DIR`: where `include:project` finds other projects.
    pub project_dirs: Vec<(String, PathBuf)>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub source: Option<PipelineSource>,
    /// Files changed by the pipeline's push, for `rules:changes` (`None`: every `changes` matches).
    pub changed_files: Option<Vec<String>>,
    /// `--target-branch BRANCH`: plan a merge request pipeline from the current branch into
    /// BRANCH; `rules:changes` then compares with the merge base, as GitLab does.
    pub target_branch: Option<String>,
    /// `--max-needs N`: the most `needs` one job may list (GitLab's `ci_max_needs`, default 50).
    pub max_needs: Option<usize>,
    /// `--templates-dir DIR`: where `include:template` finds GitLab's templates.
    pub templates_dir: Option<PathBuf>,
    /// `--allow-remote`: fetch `include:remote` over https.
    pub allow_remote: bool,
    /// `--ca-file FILE`: extra certificate authorities for `include:remote`.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("no pipeline file: looked for {} in `{}`; pass one with `-f FILE`", .tried.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" and "), .dir.display())]
    NoPipelineFile { dir: PathBuf, tried: Vec<String> },
    #[error("cannot read `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{}` is not UTF-8 text: save it as UTF-8", .path.display())]
    NotText { path: PathBuf },
    #[error("{}:{line}: expected `NAME=VALUE` (letters, digits and `_` in the name)", .path.display())]
    BadSecret { path: PathBuf, line: usize },
    #[error("{0}")]
    Remote(String),
    #[error(
        "`--target-branch {target}`: no branch, `origin` branch, tag or commit of that name in this repository; fetch it first (`git fetch origin {target}`)"
    )]
    UnknownTargetBranch { target: String },
}

/// The outcome of loading and planning a local pipeline.
pub struct LocalPipeline {
    pub file: PathBuf,
    pub root: PathBuf,
    pub loaded: Loaded,
    pub context: Context,
    pub is_git: bool,
    /// `None` when loading found errors (nothing to plan).
    pub plan: Option<Result<Plan, PlanError>>,
    resolver: LocalResolver,
}

impl LocalPipeline {
    pub fn resolver(&self) -> &dyn IncludeResolver {
        &self.resolver
    }

    /// The resolver as a shared value: child pipelines read their includes through it.
    pub fn shared_resolver(&self) -> std::sync::Arc<dyn IncludeResolver + Send + Sync> {
        std::sync::Arc::new(self.resolver.clone())
    }

    /// What a run of this pipeline needs to create downstream pipelines (`trigger:`), opened
    /// with `opts`.
    pub fn downstream(&self, opts: &LocalOptions) -> crate::run::trigger::Downstream {
        let mut load = LoadOptions::default();
        if let Some(n) = opts.max_needs {
            load.max_needs = n;
        }
        crate::run::trigger::Downstream {
            resolver: self.shared_resolver(),
            load,
            changed_files: opts.changed_files.clone(),
            local: opts.clone(),
            depth: 0,
            path: Vec::new(),
            ancestors: Vec::new(),
        }
    }
}

/// Finds, loads and plans the pipeline described by `opts`.
pub fn open(opts: &LocalOptions) -> Result<LocalPipeline, LocalError> {
    let file = match &opts.file {
        Some(f) => opts.dir.join(f),
        None => DEFAULT_FILES.iter().map(|f| opts.dir.join(f)).find(|p| p.is_file()).ok_or_else(|| LocalError::NoPipelineFile {
            dir: opts.dir.clone(),
            tried: DEFAULT_FILES.iter().map(|s| s.to_string()).collect(),
        })?,
    };
    let bytes = std::fs::read(&file).map_err(|source| LocalError::Read { path: file.clone(), source })?;
    let text = String::from_utf8(bytes).map_err(|_| LocalError::NotText { path: file.clone() })?;
    let file_dir = file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let repo = local_context(if file_dir.as_os_str().is_empty() { Path::new(".") } else { &file_dir });
    let root = opts.root.clone().or_else(|| repo.root.clone()).unwrap_or_else(|| file_dir.clone());
    let mut context = repo.context;
    if let Some(tag) = &opts.tag {
        context.tag = Some(tag.clone());
        context.branch = None;
    }
    if let Some(branch) = &opts.branch {
        context.branch = Some(branch.clone());
        context.tag = None;
    }
    if let Some(source) = opts.source {
        context.source = source;
    }
    // A merge request pipeline: its changes are those since the merge base with the target
    // branch (GitLab's rule for merge_request_event pipelines), unless `--changed` lists them.
    let mut changed_files = opts.changed_files.clone();
    if let Some(target) = &opts.target_branch {
        let Some(target_sha) = crate::gitinfo::resolve_local_ref(&root, target) else {
            return Err(LocalError::UnknownTargetBranch { target: target.clone() });
        };
        let head = if context.commit_sha.is_empty() { "HEAD".to_owned() } else { context.commit_sha.clone() };
        let since = crate::gitinfo::changes_since_merge_base(&root, &target_sha, &head);
        context.merge_request = Some(MergeRequest {
            iid: 1,
            title: context.commit_message.lines().next().unwrap_or_default().to_owned(),
            source_branch: context.branch.clone().unwrap_or_else(|| "HEAD".into()),
            target_branch: target.clone(),
            diff_base_sha: since.as_ref().map(|(base, _)| base.clone()),
            ..MergeRequest::default()
        });
        if opts.source.is_none() {
            context.source = PipelineSource::MergeRequestEvent;
        }
        if changed_files.is_none() {
            changed_files = since.map(|(_, files)| files);
        }
    }
    if context.commit_sha.is_empty() {
        // Outside git (or before the first commit) GitLab would have no commit; a fixed fake
        // one keeps `CI_COMMIT_*` variables defined for rules and scripts.
        context.commit_sha = "0000000000000000000000000000000000000000".into();
    }
    let rel_path = file.strip_prefix(&root).map_or_else(|_| file.to_string_lossy().into_owned(), |p| p.to_string_lossy().into_owned());
    context.config_path = rel_path.clone();

    let mut resolver = LocalResolver::new(&root).named(context.project_path.clone());
    for (name, dir) in &opts.project_dirs {
        resolver = resolver.project(name.clone(), dir.clone());
    }
    if let Some(dir) = &opts.templates_dir {
        resolver = resolver.templates(dir.clone());
    }
    if opts.allow_remote {
        let remote = RemoteOptions {
            ca_file: opts.ca_file.clone(),
            cache_dir: Some(root.join(".piste/cache/remote-includes")),
            ..RemoteOptions::default()
        };
        resolver = resolver.allow_remote(RemoteFetcher::new(remote).map_err(LocalError::Remote)?);
    }
    let predefined = context.pipeline_variables();
    let mut include_vars = predefined.clone();
    include_vars.extend(opts.vars.iter().cloned());
    let mut load_opts = LoadOptions { variables: include_vars, ..LoadOptions::default() };
    if let Some(n) = opts.max_needs {
        load_opts.max_needs = n;
    }
    // Diagnostics name the file as the user wrote it (relative to where they stand).
    let display = file.strip_prefix(&opts.dir).unwrap_or(&file).to_string_lossy().trim_start_matches("./").to_string();
    let loaded = load(&display, &rel_path, &text, &resolver, &load_opts);

    let plan = if loaded.has_errors() {
        None
    } else {
        loaded.pipeline.as_ref().map(|p| {
            let exists_root = resolver.clone();
            let exists = move |g: &Glob| exists_root.glob(None, g.as_str(), None).is_ok_and(|m| !m.is_empty());
            // `rules:changes:compare_to`: from the merge base of that ref and the commit.
            let (dir, head) = (root.clone(), context.commit_sha.clone());
            let compare = move |to: &str| {
                let Some(base) = crate::gitinfo::resolve_local_ref(&dir, to) else { return Compared::NotARef };
                match crate::gitinfo::changes_since_merge_base(&dir, &base, &head) {
                    Some((_, files)) => Compared::Changes(files),
                    None => Compared::Unknown,
                }
            };
            let ctx = PlanContext {
                predefined,
                pipeline_vars: opts.vars.clone(),
                changed_files,
                exists: Some(&exists),
                // Outside git there is no ref to compare with: changes are unknown.
                compare: if repo.is_git { Some(&compare) } else { None },
            };
            plan(p, &ctx)
        })
    };
    Ok(LocalPipeline { file, root, loaded, context, is_git: repo.is_git, plan, resolver })
}

/// Parses `K=V` (for `--var`, `--project-dir`).
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected `NAME=VALUE`, got `{s}`")),
    }
}

/// Reads a secrets file: one `NAME=VALUE` per line, `#` comments and blank lines ignored,
/// surrounding quotes of a value removed. Errors name the line, never the value.
pub fn read_secrets_file(path: &Path) -> Result<Vec<(String, String)>, LocalError> {
    let text = std::fs::read_to_string(path).map_err(|source| LocalError::Read { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(LocalError::BadSecret { path: path.to_path_buf(), line: i + 1 });
        };
        let k = k.trim().trim_start_matches("export ").trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(LocalError::BadSecret { path: path.to_path_buf(), line: i + 1 });
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}
