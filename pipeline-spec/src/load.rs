//! The loader: entry file text → [`Pipeline`] plus every diagnostic found on the way.

use crate::diag::Diagnostic;
use crate::include::{IncludeLimits, IncludeResolver, Includer};
use crate::model::Pipeline;
use crate::parse::build_pipeline;
use crate::resolve::{expand_extends, resolve_references};
use crate::source::SourceMap;
use crate::yaml::{self, Value};

/// Options for [`load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub yaml_limits: yaml::Limits,
    pub include_limits: IncludeLimits,
    /// Variables visible to `include` (paths and `include:rules`): predefined and project
    /// variables, as in GitLab. Variables defined in the YAML are not visible there.
    pub variables: Vec<(String, String)>,
    /// The most `needs` one job may list: GitLab's `ci_max_needs` instance limit, 50 by default.
    /// The binary sets it from `--max-needs`.
    pub max_needs: usize,
    /// A child pipeline is loaded (`trigger:include`): `include:artifact` reads the parent's
    /// artifacts through [`IncludeResolver::artifact`].
    pub child: bool,
    /// Whoever runs the pipeline issues `id_tokens` (a piste server does); when not (`piste
    /// run`, `piste lint`), each `id_tokens:` is a warning saying how to give the values.
    pub id_tokens_issued: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            yaml_limits: yaml::Limits::default(),
            include_limits: IncludeLimits::default(),
            variables: Vec::new(),
            max_needs: crate::parse::MAX_NEEDS,
            child: false,
            id_tokens_issued: false,
        }
    }
}

/// The result of loading: what could be built, what was found wrong, and the files read.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `None` only when the entry file itself could not be read as YAML.
    pub pipeline: Option<Pipeline>,
    pub diagnostics: Vec<Diagnostic>,
    pub sources: SourceMap,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// Errors that make the pipeline invalid, leaving out includes unavailable here and what
    /// only follows from them.
    pub fn invalid(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_invalid())
    }

    /// Includes that could not be read here (remote, template, component, another project):
    /// the pipeline could not be checked in full.
    pub fn unavailable(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_unavailable())
    }
}

struct VarList<'a>(&'a [(String, String)]);

impl crate::expand::Lookup for VarList<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Loads a pipeline from the text of its entry file. `display` is the name used in
/// diagnostics; `path` is the file's path inside the project (for relative includes).
pub fn load(display: &str, path: &str, text: &str, resolver: &dyn IncludeResolver, options: &LoadOptions) -> Loaded {
    let vars = VarList(&options.variables);
    let mut includer = Includer::new(resolver, &vars, options.yaml_limits, options.include_limits);
    includer.child = options.child;
    let root = includer.load_entry(display, path, text);
    let mut diagnostics = std::mem::take(&mut includer.diags);
    let sources = std::mem::take(&mut includer.sources);
    let Some(root) = root else {
        return Loaded { pipeline: None, diagnostics, sources };
    };
    let span = root.span;
    let Value::Map(mut top) = root.value else {
        return Loaded { pipeline: None, diagnostics, sources };
    };
    let incomplete = includer.incomplete;
    let unavailable = includer.unavailable;
    let sites = crate::use_sites::UseSites::record(&top);
    let mut extends_failed = expand_extends(&mut top, &mut diagnostics);
    let own_extends_failed = extends_failed.clone();
    resolve_references(&mut top, &mut diagnostics);
    // With an unresolved include, any job may get its `script` from the missing file.
    if incomplete {
        extends_failed.extend(top.keys().cloned());
    }
    let built_from = diagnostics.len();
    let pipeline = build_pipeline(*top, span, &extends_failed, options, &mut diagnostics);
    sites.annotate(&mut diagnostics[built_from..]);
    if incomplete {
        for d in diagnostics.iter_mut().filter(|d| d.is_invalid() && follows_from_missing_include(d, &own_extends_failed)) {
            d.help = Some("an `include` above could not be resolved; it may define what is missing here".into());
            // Only an include that is unavailable here makes this "not checked"; one that is
            // missing from the project is an error of its own, and so may this be.
            if unavailable {
                d.kind = crate::diag::Kind::FollowsFromUnavailable;
            }
        }
    }
    diagnostics.sort_by_key(|d| (d.span.file, d.span.line, d.span.col));
    diagnostics.dedup();
    Loaded { pipeline: Some(pipeline), diagnostics, sources }
}

/// Whether an error may only be a consequence of an include that could not be read: a name
/// that is not defined (`extends`, `!reference`, `needs`, `dependencies`, `on_stop`), a key a
/// template lacks, or the stage of a job whose `extends` failed (its `stage:` may be in the
/// missing template).
fn follows_from_missing_include(d: &Diagnostic, extends_failed: &std::collections::HashSet<String>) -> bool {
    let m = d.message.as_str();
    m.ends_with("which is not defined")
        || m.starts_with("`!reference`: ") && m.contains(" has no key ")
        || d.job.as_ref().is_some_and(|j| extends_failed.contains(j))
            && (m.contains("in the later stage") || m.contains("is not declared in `stages`"))
}

/// A resolver over an in-memory set of files: `(project, path, ref) → text`, tags, GitLab
/// templates and remote URLs. Handy for tests and for callers that already hold the files.
#[derive(Debug, Clone, Default)]
pub struct MemoryResolver {
    /// `(project, path, ref, text)`; a file without a ref is there at every ref.
    files: Vec<(Option<String>, String, Option<String>, String)>,
    tags: Vec<(Option<String>, String)>,
    templates: Vec<(String, String)>,
    remotes: Vec<(String, String)>,
}

impl MemoryResolver {
    pub fn new() -> Self {
        MemoryResolver::default()
    }

    pub fn with(mut self, project: Option<&str>, path: &str, text: &str) -> Self {
        self.add(project, path, text);
        self
    }

    pub fn add(&mut self, project: Option<&str>, path: &str, text: &str) {
        self.files.push((project.map(str::to_string), path.trim_start_matches('/').to_string(), None, text.to_string()));
    }

    /// A file that exists at `git_ref` only (a branch or tag name, or a commit).
    pub fn add_at(&mut self, project: Option<&str>, path: &str, git_ref: &str, text: &str) {
        self.files.push((project.map(str::to_string), path.trim_start_matches('/').to_string(), Some(git_ref.into()), text.to_string()));
    }

    pub fn add_tag(&mut self, project: Option<&str>, tag: &str) {
        self.tags.push((project.map(str::to_string), tag.to_string()));
    }

    pub fn add_template(&mut self, name: &str, text: &str) {
        self.templates.push((name.to_string(), text.to_string()));
    }

    pub fn add_remote(&mut self, url: &str, text: &str) {
        self.remotes.push((url.to_string(), text.to_string()));
    }

    fn knows(&self, project: Option<&str>) -> bool {
        project.is_none() || self.files.iter().any(|(p, ..)| p.as_deref() == project)
    }
}

/// Whether a requested ref (`main`, `refs/tags/v1`, a commit) names a file's ref.
fn same_ref(requested: Option<&str>, file: Option<&str>) -> bool {
    match (file, requested) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(f), Some(r)) => r == f || r.strip_prefix("refs/tags/").or_else(|| r.strip_prefix("refs/heads/")) == Some(f),
    }
}

impl IncludeResolver for MemoryResolver {
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, crate::include::ResolveError> {
        if !self.knows(project) {
            return Err(crate::include::ResolveError::UnknownProject);
        }
        self.files
            .iter()
            .rev()
            .find(|(p, f, r, _)| p.as_deref() == project && f == path && same_ref(git_ref, r.as_deref()))
            .map(|(.., t)| t.clone())
            .ok_or(crate::include::ResolveError::NotFound)
    }

    fn glob(&self, project: Option<&str>, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, crate::include::ResolveError> {
        let Some(g) = crate::glob::Glob::new(pattern) else {
            return Err(crate::include::ResolveError::Other(format!("invalid glob `{pattern}`")));
        };
        let mut out: Vec<String> = self
            .files
            .iter()
            .filter(|(p, f, r, _)| p.as_deref() == project && same_ref(git_ref, r.as_deref()) && g.matches(f))
            .map(|(_, f, ..)| f.clone())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, crate::include::ResolveError> {
        if !self.knows(project) {
            return Err(crate::include::ResolveError::UnknownProject);
        }
        Ok(self.tags.iter().filter(|(p, _)| p.as_deref() == project).map(|(_, t)| t.clone()).collect())
    }

    fn template(&self, name: &str) -> Result<String, crate::include::ResolveError> {
        self.templates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| crate::include::ResolveError::Unavailable("GitLab's templates are not available offline".into()))
    }

    fn remote(&self, request: &crate::include::RemoteRequest<'_>) -> Result<String, crate::include::ResolveError> {
        self.remotes
            .iter()
            .find(|(u, _)| u == request.url)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| crate::include::ResolveError::Unavailable("remote includes cannot be fetched offline".into()))
    }
}
