//! `include:` — reading other files through a caller-provided resolver and merging them.
//!
//! GitLab merges included files in order, then the including file on top, with a deep merge
//! (maps merge key by key, everything else is replaced). Anchors stay inside one file because
//! each file is parsed on its own; `!reference` tags cross files because they are resolved
//! after the merge.
//!
//! Every kind of include goes through [`IncludeResolver`]: `local` and `project` files
//! (`read`, `glob`), `component` (`tags` to pick a version, then `read` of its template at that
//! ref; see [`component`]), `template` (`template`) and `remote` (`remote`, see [`remote`]). What
//! a resolver cannot serve here is "unavailable" (`piste lint` exits 3), not invalid.

pub mod component;
pub mod remote;

use std::fmt;

use crate::diag::{Diagnostic, suggest};
use crate::expand::{Lookup, expand};
use crate::expr::Expr;
use crate::inputs::{ComponentContext, InputSpec, InterpolationLimits, interpolate};
use crate::merge::deep_merge;
use crate::source::{FileId, SourceFile, SourceMap, Span};
use crate::yaml::{self, Map, Node, Value};
pub use remote::{Integrity, RemoteRequest};

/// Why an include could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The file does not exist in that project (at that ref).
    NotFound,
    /// The resolver does not know the project.
    UnknownProject,
    /// This kind of include cannot be served (e.g. `remote` while offline).
    Unavailable(String),
    /// Anything else (I/O, permissions), with a message for the user.
    Other(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound => f.write_str("file not found"),
            ResolveError::UnknownProject => f.write_str("project is unknown here"),
            ResolveError::Unavailable(why) | ResolveError::Other(why) => f.write_str(why),
        }
    }
}

/// Gives the loader the text of included files. The loader itself never touches a filesystem.
pub trait IncludeResolver {
    /// Reads `path` (relative to the project root, no leading `/`) from `project`
    /// (`None`: the project whose pipeline is being loaded) at `git_ref` (`None`: the default).
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError>;

    /// Lists the files of a project that match a glob such as `ci/*.yml` (for wildcard locals).
    fn glob(&self, project: Option<&str>, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let _ = (project, pattern, git_ref);
        Err(ResolveError::Unavailable("this resolver cannot list files for wildcard includes".into()))
    }

    /// Fetches `include:remote`. Offline resolvers keep the default.
    fn remote(&self, request: &RemoteRequest<'_>) -> Result<String, ResolveError> {
        let _ = request;
        Err(ResolveError::Unavailable("remote includes cannot be fetched offline".into()))
    }

    /// Reads GitLab CI template `name` (`Jobs/Build.gitlab-ci.yml`) for `include:template`.
    /// The loader has checked the name (a relative path ending in `.gitlab-ci.yml`).
    fn template(&self, name: &str) -> Result<String, ResolveError> {
        let _ = name;
        Err(ResolveError::Unavailable("GitLab's templates are not available offline".into()))
    }

    /// The tag names of `project`, for `include:component` versions (`~latest`, `1.2`, a tag
    /// that is also a branch).
    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let _ = project;
        Err(ResolveError::Unavailable("this resolver cannot list tags".into()))
    }

    /// The commit `git_ref` names in `project` (for `$[[ component.sha ]]`).
    fn commit(&self, project: Option<&str>, git_ref: &str) -> Result<String, ResolveError> {
        let _ = (project, git_ref);
        Err(ResolveError::Unavailable("this resolver cannot resolve commits".into()))
    }

    /// Reads `path` from the artifacts of job `job` of the parent pipeline, for a child
    /// pipeline's `trigger:include:artifact` (dynamic child pipelines).
    fn artifact(&self, job: &str, path: &str) -> Result<String, ResolveError> {
        let _ = (job, path);
        Err(ResolveError::Unavailable("artifacts exist only while the parent pipeline runs".into()))
    }

    /// Whether `host`, in a component address, names this instance besides `$CI_SERVER_FQDN`
    /// (GitLab reads components from its own instance only).
    fn component_host(&self, host: &str) -> bool {
        let _ = host;
        false
    }
}

/// Limits on includes (GitLab defaults: 150 files, nesting of 100).
#[derive(Debug, Clone, Copy)]
pub struct IncludeLimits {
    pub max_files: usize,
    pub max_nesting: usize,
}

impl Default for IncludeLimits {
    fn default() -> Self {
        IncludeLimits { max_files: 150, max_nesting: 100 }
    }
}

/// Where a loaded file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// A project's repository (`local`, `project`, `component`).
    Repo,
    /// A GitLab template; its own `local` includes read the pipeline's project, as GitLab's.
    Template,
    /// A remote URL (`path`); its own `local` includes read the pipeline's project too.
    Remote,
    /// A file of a parent job's artifacts (`git_ref` holds the job); its own `local` includes
    /// read the pipeline's project.
    Artifact,
}

/// Identity of a loaded file, to detect cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileKey {
    kind: FileKind,
    project: Option<String>,
    path: String,
    git_ref: Option<String>,
}

impl FileKey {
    fn repo(project: Option<String>, path: String, git_ref: Option<String>) -> FileKey {
        FileKey { kind: FileKind::Repo, project, path, git_ref }
    }

    /// The project and ref that a `local` include inside this file reads.
    fn local_base(&self) -> (Option<String>, Option<String>) {
        match self.kind {
            FileKind::Repo => (self.project.clone(), self.git_ref.clone()),
            FileKind::Template | FileKind::Remote | FileKind::Artifact => (None, None),
        }
    }

    fn same_file(&self, other: &FileKey) -> bool {
        self.kind == other.kind && self.project == other.project && self.path == other.path
    }
}

/// The `inputs:` an `include` entry gives the file it reads, and where that entry is.
#[derive(Clone, Copy)]
struct GivenInputs<'n> {
    given: Option<&'n Node>,
    at: Span,
    /// For a component: what `$[[ component.* ]]` gives.
    component: Option<&'n ComponentContext>,
}

impl<'n> GivenInputs<'n> {
    fn new(given: Option<&'n Node>, at: Span) -> Self {
        GivenInputs { given, at, component: None }
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.project) {
            (FileKind::Template, _) => write!(f, "template:{}", self.path),
            (FileKind::Remote, _) | (FileKind::Repo, None) => f.write_str(&self.path),
            (FileKind::Artifact, _) => write!(f, "artifact:{}", self.path),
            (FileKind::Repo, Some(p)) => write!(f, "{p}:{}", self.path),
        }
    }
}

pub(crate) struct Includer<'a> {
    pub resolver: &'a dyn IncludeResolver,
    pub vars: &'a dyn Lookup,
    pub yaml_limits: yaml::Limits,
    pub limits: IncludeLimits,
    pub sources: SourceMap,
    pub diags: Vec<Diagnostic>,
    loaded: usize,
    stack: Vec<FileKey>,
    /// Set when an include could not be read: later "not defined" errors may stem from it.
    pub incomplete: bool,
    /// Set when an include is not available here (see [`crate::diag::Kind::Unavailable`]).
    pub unavailable: bool,
    /// A child pipeline is being loaded: `include:artifact` may read the parent's artifacts.
    pub child: bool,
}

const INCLUDE_KEYS: &[&str] =
    &["local", "project", "file", "ref", "remote", "template", "component", "artifact", "job", "rules", "inputs", "integrity", "cache"];

impl<'a> Includer<'a> {
    pub fn new(resolver: &'a dyn IncludeResolver, vars: &'a dyn Lookup, yaml_limits: yaml::Limits, limits: IncludeLimits) -> Self {
        Includer {
            resolver,
            vars,
            yaml_limits,
            limits,
            sources: SourceMap::default(),
            diags: Vec::new(),
            loaded: 0,
            stack: Vec::new(),
            incomplete: false,
            unavailable: false,
            child: false,
        }
    }

    /// Loads the entry file from its text and returns the merged top-level map.
    pub fn load_entry(&mut self, display: &str, path: &str, text: &str) -> Option<Node> {
        let key = FileKey::repo(None, path.to_string(), None);
        let file = self.sources.add(SourceFile { display: display.to_string(), project: None, path: path.to_string() });
        self.load_text(key, file, text, None)
    }

    /// `inputs` is `None` for the pipeline's own file (its inputs take their defaults).
    fn load_text(&mut self, key: FileKey, file: FileId, text: &str, inputs: Option<GivenInputs<'_>>) -> Option<Node> {
        let doc = match yaml::parse(text, file, &self.yaml_limits, &mut self.diags) {
            Ok(doc) => doc,
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        let mut root = doc.root;
        let display = self.sources.display(file).to_string();
        match (&doc.header, inputs.and_then(|i| i.given)) {
            (Some(header), given) => {
                let before = self.diags.len();
                let spec = InputSpec::parse(header, &mut self.diags);
                let values = spec.values(given, inputs.map(|i| i.at), &display, &mut self.diags);
                let component = spec.component_values(inputs.and_then(|i| i.component), &display, &mut self.diags);
                let limits = InterpolationLimits::for_file(&self.yaml_limits);
                interpolate(&mut root, &values, component.as_ref(), self.vars, limits, &display, &mut self.diags);
                // GitLab: a file whose inputs are in error is not read at all, so its
                // half-interpolated text cannot add errors of its own.
                if self.diags[before..].iter().any(Diagnostic::is_error) {
                    return None;
                }
            }
            // GitLab: "Given inputs not defined in the `spec` section of the included file".
            (None, Some(given)) if !given.is_null() => self.diags.push(
                Diagnostic::error(given.span, format!("`{display}` takes no inputs: it has no `spec:inputs` header"))
                    .key("include:inputs")
                    .help("remove `inputs:` from this `include`, or declare them in a `spec:inputs` header followed by `---`"),
            ),
            _ => {}
        }
        let mut map = match root.value {
            Value::Map(m) => *m,
            Value::Null => Map::default(),
            _ => {
                self.diags.push(Diagnostic::error(
                    root.span,
                    format!("the configuration must be a map of keywords and jobs, found {}", root.kind()),
                ));
                return None;
            }
        };
        let Some(include) = map.shift_remove("include") else {
            return Some(Node::new(Value::Map(Box::new(map)), root.span));
        };
        self.stack.push(key);
        let mut merged = Node::new(Value::Map(Box::default()), root.span);
        let include = normalize_include(include.value);
        for item in include_items(&include.value) {
            let before = self.diags.iter().filter(|d| d.is_error()).count();
            if let Some(included) = self.include_one(item) {
                merged = deep_merge(merged, included);
            }
            if self.diags.iter().filter(|d| d.is_error()).count() > before {
                self.incomplete = true;
            }
        }
        self.stack.pop();
        Some(deep_merge(merged, Node::new(Value::Map(Box::new(map)), root.span)))
    }

    fn include_one(&mut self, item: &Node) -> Option<Node> {
        let (cur_project, cur_ref) = self.stack.last().map(FileKey::local_base).unwrap_or_default();
        match &item.value {
            Value::Str(s) => {
                let s = expand(s, self.vars);
                if s.starts_with("http://") || s.starts_with("https://") {
                    return self.fetch_remote(&s, item.span, GivenInputs::new(None, item.span), None, None);
                }
                self.include_local(cur_project.as_deref(), &s, cur_ref.as_deref(), item.span, None)
            }
            Value::Map(m) => {
                for (k, e) in m.iter() {
                    if !INCLUDE_KEYS.contains(&k.as_str()) {
                        self.diags.push(
                            Diagnostic::error(e.key_span, format!("unknown `include` key `{k}`"))
                                .key("include")
                                .suggest(suggest(k, INCLUDE_KEYS.iter().copied())),
                        );
                        return None;
                    }
                }
                if let Some(rules) = m.get("rules") {
                    if !self.include_rules_match(&rules.value.value) {
                        return None;
                    }
                }
                let text_of = |k: &str| m.get(k).and_then(|e| e.value.scalar_string());
                let given = m.get("inputs").map(|e| &e.value);
                let is_remote = m.contains_key("remote");
                // GitLab (`Entry::Concerns::BaseInclude`): "integrity can only be specified for
                // remote includes". `cache` only means something for a remote file too.
                if let (Some(e), false) = (m.get("integrity"), is_remote) {
                    self.diags
                        .push(Diagnostic::error(e.key_span, "`integrity` can only be given for `include:remote`").key("include:integrity"));
                    return None;
                }
                if let (Some(e), false) = (m.get("cache"), is_remote) {
                    self.diags.push(
                        Diagnostic::warning(e.key_span, "`cache` applies to `include:remote` only; it is ignored here")
                            .key("include:cache"),
                    );
                }
                if let Some(artifact) = text_of("artifact") {
                    return self.include_artifact(&artifact, text_of("job"), item.span, given);
                }
                if let Some(local) = text_of("local") {
                    let path = expand(&local, self.vars);
                    return self.include_local(cur_project.as_deref(), &path, cur_ref.as_deref(), item.span, given);
                }
                if let Some(project) = m.get("project") {
                    return self.include_project(m, &project.value, item.span);
                }
                if let Some(remote) = text_of("remote") {
                    let url = expand(&remote, self.vars);
                    if url.trim().is_empty() {
                        let mut d = Diagnostic::error(item.span, format!("`include:remote` `{remote}` expands to an empty URL"))
                            .key("include:remote");
                        if let Some(var) = crate::expand::references(&remote).first() {
                            d = d.help(format!("variable `{var}` is not defined: pass it with `--var {var}=URL`"));
                        }
                        self.push_unavailable(d);
                        return None;
                    }
                    let integrity = m.get("integrity").map(|e| &e.value);
                    let cache = m.get("cache").map(|e| &e.value);
                    return self.fetch_remote(&url, item.span, GivenInputs::new(given, item.span), integrity, cache);
                }
                if let Some(t) = text_of("template") {
                    return self.include_template(&t, item.span, given);
                }
                if let Some(c) = m.get("component") {
                    return self.include_component(&c.value, item.span, given);
                }
                self.diags.push(
                    Diagnostic::error(item.span, "an `include` entry needs one of `local`, `project`, `remote`, `template`, `component` or (in `trigger:include`) `artifact`")
                        .key("include"),
                );
                None
            }
            _ => {
                self.diags.push(
                    Diagnostic::error(item.span, format!("an `include` entry is a path or a map, found {}", item.kind())).key("include"),
                );
                None
            }
        }
    }

    fn include_rules_match(&mut self, rules: &Value) -> bool {
        let Value::Seq(rules) = rules else { return true };
        for rule in rules {
            let Some(m) = rule.as_map() else { continue };
            let mut matched = true;
            if let Some(cond) = m.get("if") {
                let src = cond.value.scalar_string().unwrap_or_default();
                match Expr::parse(&src) {
                    Ok(e) => matched &= e.eval(self.vars),
                    Err(err) => {
                        self.diags
                            .push(Diagnostic::error(cond.value.span, format!("invalid `if` expression: {err}")).key("include:rules:if"));
                        return false;
                    }
                }
            }
            if let Some(exists) = m.get("exists") {
                let paths: Vec<String> = match &exists.value.value {
                    Value::Seq(s) => s.iter().filter_map(Node::scalar_string).collect(),
                    _ => exists.value.scalar_string().into_iter().collect(),
                };
                let (cur, cur_ref) = self.stack.last().map(FileKey::local_base).unwrap_or_default();
                matched &= paths
                    .iter()
                    .any(|p| self.resolver.glob(cur.as_deref(), &expand(p, self.vars), cur_ref.as_deref()).is_ok_and(|v| !v.is_empty()));
            }
            if matched {
                return m.get("when").and_then(|w| w.value.as_str()) != Some("never");
            }
        }
        false
    }

    fn include_project(&mut self, m: &Map, project: &Node, span: Span) -> Option<Node> {
        let given = m.get("inputs").map(|e| &e.value);
        let Some(raw) = project.scalar_string() else {
            self.diags.push(
                Diagnostic::error(project.span, "`include:project` must be a project path such as `group/project`").key("include:project"),
            );
            return None;
        };
        let name = expand(&raw, self.vars);
        if name.trim().is_empty() {
            let missing: Vec<&str> = crate::expand::references(&raw);
            let mut d = Diagnostic::error(project.span, format!("`include:project` `{raw}` expands to an empty project path"))
                .key("include:project");
            if let Some(var) = missing.first() {
                d = d.help(format!("variable `{var}` is not defined: pass it with `--var {var}=group/project`"));
            }
            self.push_unavailable(d);
            return None;
        }
        let git_ref = m.get("ref").and_then(|e| e.value.scalar_string()).map(|r| expand(&r, self.vars));
        let Some(files) = m.get("file") else {
            self.diags.push(Diagnostic::error(span, "`include:project` needs `file:` naming the file(s) to include").key("include"));
            return None;
        };
        let files: Vec<&Node> = match &files.value.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![&files.value],
        };
        let mut merged: Option<Node> = None;
        for f in files {
            let Some(path) = f.scalar_string() else {
                self.diags.push(Diagnostic::error(f.span, "`include:file` entries are paths").key("include:file"));
                continue;
            };
            let path = expand(&path, self.vars);
            let path = path.trim_start_matches('/').to_string();
            let key = FileKey::repo(Some(name.clone()), path.clone(), git_ref.clone());
            if let Some(node) = self.read_and_load(key, f.span, GivenInputs::new(given, span)) {
                merged = Some(match merged {
                    Some(m) => deep_merge(m, node),
                    None => node,
                });
            }
        }
        merged
    }

    /// `include:artifact` + `job`: GitLab's `External::File::Artifact`, valid only when a child
    /// pipeline is created, from a job of its parent.
    fn include_artifact(&mut self, artifact: &str, job: Option<String>, span: Span, given: Option<&Node>) -> Option<Node> {
        if !self.child {
            self.diags.push(
                Diagnostic::error(span, "`include:artifact` is only allowed when triggering a child pipeline")
                    .key("include:artifact")
                    .help("use it in `trigger:include` of a job of the parent pipeline"),
            );
            return None;
        }
        let Some(job) = job else {
            self.diags
                .push(Diagnostic::error(span, "`include:artifact` needs `job:`, the job whose artifacts hold the file").key("include"));
            return None;
        };
        let path = expand(artifact, self.vars).trim_start_matches("./").to_string();
        let key = FileKey { kind: FileKind::Artifact, project: None, path: path.clone(), git_ref: Some(job.clone()) };
        self.guard(span)?;
        self.check_cycle(&key, span)?;
        let text = match self.resolver.artifact(&job, &path) {
            Ok(t) => t,
            Err(e) => {
                let d =
                    Diagnostic::error(span, format!("cannot read `{path}` from the artifacts of job `{job}`: {e}")).key("include:artifact");
                self.push_resolve_error(d, &e);
                return None;
            }
        };
        self.loaded += 1;
        let file = self.sources.add(SourceFile { display: path.clone(), project: None, path });
        self.load_text(key, file, &text, Some(GivenInputs::new(given, span)))
    }

    fn include_local(
        &mut self,
        project: Option<&str>,
        path: &str,
        git_ref: Option<&str>,
        span: Span,
        given: Option<&Node>,
    ) -> Option<Node> {
        let inputs = GivenInputs::new(given, span);
        let clean = path.trim_start_matches("./").trim_start_matches('/').to_string();
        if clean.contains('*') {
            // GitLab's wildcard rules differ from fnmatch (`**/` needs one folder at least):
            // ask the resolver for a glob that finds every candidate, then keep GitLab's.
            let Some(wildcard) = crate::glob::Wildcard::new(&clean) else {
                self.diags.push(Diagnostic::error(span, format!("wildcard include `{path}` is too long")).key("include:local"));
                return None;
            };
            let matches = match self.resolver.glob(project, &crate::glob::Wildcard::as_glob_superset(&clean), git_ref) {
                Ok(m) => m.into_iter().filter(|p| wildcard.matches(p)).collect::<Vec<_>>(),
                Err(e) => {
                    let d = Diagnostic::error(span, format!("cannot expand wildcard include `{path}`: {e}")).key("include:local");
                    self.push_resolve_error(d, &e);
                    return None;
                }
            };
            let mut merged: Option<Node> = None;
            for p in matches {
                let key = FileKey::repo(project.map(str::to_string), p, git_ref.map(str::to_string));
                if let Some(node) = self.read_and_load(key, span, inputs) {
                    merged = Some(match merged {
                        Some(m) => deep_merge(m, node),
                        None => node,
                    });
                }
            }
            return merged;
        }
        if !(clean.ends_with(".yml") || clean.ends_with(".yaml")) {
            self.diags.push(
                Diagnostic::error(span, format!("included file `{path}` does not have a `.yml` or `.yaml` extension")).key("include:local"),
            );
            return None;
        }
        let key = FileKey::repo(project.map(str::to_string), clean, git_ref.map(str::to_string));
        self.read_and_load(key, span, inputs)
    }

    fn fetch_remote(
        &mut self,
        url: &str,
        span: Span,
        inputs: GivenInputs<'_>,
        integrity: Option<&Node>,
        cache: Option<&Node>,
    ) -> Option<Node> {
        let integrity = match integrity {
            None => None,
            Some(n) => match n.as_str().and_then(Integrity::parse) {
                Some(i) => Some(i),
                None => {
                    self.diags.push(
                        Diagnostic::error(n.span, "`integrity` must be `sha256-` followed by the base64 of the file's SHA-256 digest")
                            .key("include:integrity")
                            .help("compute it with `openssl dgst -sha256 -binary FILE | base64`"),
                    );
                    return None;
                }
            },
        };
        let cache_secs = match cache.map(|n| &n.value) {
            None | Some(Value::Null | Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(remote::DEFAULT_CACHE_SECS),
            Some(_) => match cache.and_then(Node::as_str).and_then(crate::duration::parse_seconds) {
                Some(secs) => Some(secs),
                None => {
                    let n = cache.expect("matched Some");
                    self.diags.push(
                        Diagnostic::error(n.span, format!("`cache` must be `true` or a duration such as `30m`, found {}", n.kind()))
                            .key("include:cache"),
                    );
                    return None;
                }
            },
        };
        let key = FileKey { kind: FileKind::Remote, project: None, path: url.to_string(), git_ref: None };
        self.guard(span)?;
        self.check_cycle(&key, span)?;
        let request = RemoteRequest { url, integrity: integrity.as_ref(), cache_secs };
        let text = match self.resolver.remote(&request) {
            Ok(text) => text,
            Err(e) => {
                let d = Diagnostic::error(span, format!("cannot resolve `include:remote` `{url}`: {e}"))
                    .key("include:remote")
                    .help("vendor the file into the repository and use `include:local`");
                self.push_resolve_error(d, &e);
                return None;
            }
        };
        if let Some(expected) = &integrity {
            if !expected.matches(text.as_bytes()) {
                self.diags.push(
                    Diagnostic::error(
                        span,
                        format!(
                            "`include:remote` `{url}` failed its integrity check: its content is `{}`, `integrity` says `{expected}`",
                            Integrity::of(text.as_bytes())
                        ),
                    )
                    .key("include:integrity")
                    .help("the file changed since `integrity` was written: check the change, then update `integrity`"),
                );
                return None;
            }
        }
        let file = self.sources.add(SourceFile { display: url.to_string(), project: None, path: url.to_string() });
        self.loaded += 1;
        self.load_text(key, file, &text, Some(inputs))
    }

    /// `include:template`: a GitLab CI template by name, from the resolver's templates.
    fn include_template(&mut self, name: &str, span: Span, given: Option<&Node>) -> Option<Node> {
        let name = expand(name, self.vars);
        // GitLab (`External::File::Template`): the name must end with `.gitlab-ci.yml`.
        if !name.ends_with(".gitlab-ci.yml") {
            self.diags.push(
                Diagnostic::error(span, format!("template `{name}` is not a valid location: template names end with `.gitlab-ci.yml`"))
                    .key("include:template")
                    .help("name a template as GitLab does, such as `Jobs/Build.gitlab-ci.yml`"),
            );
            return None;
        }
        let traversal =
            name.starts_with('/') || name.contains(['\\', '\0']) || name.split('/').any(|p| p.is_empty() || p == "." || p == "..");
        if traversal {
            self.diags.push(
                Diagnostic::error(
                    span,
                    format!("template `{name}` is refused: a template name is a relative path without `.` or `..` parts"),
                )
                .key("include:template")
                .help("name a template as GitLab does, such as `Security/SAST.gitlab-ci.yml`"),
            );
            return None;
        }
        let key = FileKey { kind: FileKind::Template, project: None, path: name.clone(), git_ref: None };
        self.guard(span)?;
        self.check_cycle(&key, span)?;
        let text = match self.resolver.template(&name) {
            Ok(t) => t,
            Err(e) => {
                let d = Diagnostic::error(span, format!("cannot resolve `include:template` `{name}`: {e}"))
                    .key("include:template")
                    .help("point piste at a folder of GitLab's templates (`--templates-dir`, `templates_dir`), or copy the template into the repository and use `include:local`");
                self.push_resolve_error(d, &e);
                return None;
            }
        };
        let file = self.sources.add(SourceFile { display: key.to_string(), project: None, path: name.clone() });
        self.loaded += 1;
        self.load_text(key, file, &text, Some(GivenInputs::new(given, span)))
    }

    /// `include:component`: see [`component`] for GitLab's rules.
    fn include_component(&mut self, node: &Node, span: Span, given: Option<&Node>) -> Option<Node> {
        use component::{Address, VersionQuery, is_full_sha, select_release};
        let Some(raw) = node.scalar_string() else {
            self.diags.push(
                Diagnostic::error(node.span, "`include:component` must be an address such as `$CI_SERVER_FQDN/group/project/name@1.0.0`")
                    .key("include:component"),
            );
            return None;
        };
        let address = expand(&raw, self.vars);
        let addr = match Address::parse(&address) {
            Ok(a) => a,
            Err(e) => {
                let mut d = Diagnostic::error(node.span, format!("`include:component` `{address}` is not a component address: {e}"))
                    .key("include:component")
                    .help("write `$CI_SERVER_FQDN/GROUP/PROJECT/NAME@VERSION`");
                if let Some(var) = crate::expand::references(&raw).iter().find(|v| self.vars.lookup(v).is_none()) {
                    d = d.help(format!("variable `{var}` is not defined: pass it with `--var {var}=VALUE`"));
                    self.push_unavailable(d);
                } else {
                    self.diags.push(d);
                }
                return None;
            }
        };
        let fqdn = self.vars.lookup("CI_SERVER_FQDN");
        if !(fqdn.is_some_and(|f| f.eq_ignore_ascii_case(addr.host)) || self.resolver.component_host(addr.host)) {
            let this = fqdn.map_or_else(|| "not set".to_string(), |f| format!("`{f}`"));
            self.push_unavailable(
                Diagnostic::error(
                    node.span,
                    format!("cannot resolve `include:component` `{address}`: `{}` is not this instance (`$CI_SERVER_FQDN` is {this}), and components are read from the pipeline's own instance", addr.host),
                )
                .key("include:component")
                .help("on a piste server, list the host in `[includes] component_hosts` of `piste.toml` when it names the server"),
            );
            return None;
        }
        let project = addr.project.to_string();
        let query = VersionQuery::parse(addr.version);
        let tags = self.resolver.tags(Some(&project));
        if let Err(ResolveError::UnknownProject) = &tags {
            self.report_component_error(&address, &project, node.span, &ResolveError::UnknownProject);
            return None;
        }
        // GitLab: a full SHA first, then a released version or tag, then a branch or commit.
        let (git_ref, version) = match (&query, &tags) {
            (VersionQuery::Ref(v), _) if is_full_sha(v) => (v.to_string(), None),
            (VersionQuery::Ref(v), Ok(tags)) if tags.iter().any(|t| t == v) => {
                (format!("refs/tags/{v}"), component::SemVer::parse(v).map(|_| v.to_string()))
            }
            (VersionQuery::Ref(v), _) => (v.to_string(), None),
            (_, Ok(tags)) => match select_release(&query, tags) {
                Some(tag) => (format!("refs/tags/{tag}"), Some(tag.to_string())),
                // A partial version no release matches may still be a tag or branch name.
                None if matches!(query, VersionQuery::Partial { .. }) && tags.iter().any(|t| t == addr.version) => {
                    (format!("refs/tags/{}", addr.version), None)
                }
                None if matches!(query, VersionQuery::Partial { .. }) => (addr.version.to_string(), None),
                None => {
                    self.diags.push(
                        Diagnostic::error(
                            node.span,
                            format!("`include:component` `{address}`: `{project}` has no released version for `~latest` (no tag is a semantic version such as `1.2.3`; pre-releases do not count)"),
                        )
                        .key("include:component")
                        .help("tag a release of the component project, or name a version, tag, branch or commit"),
                    );
                    return None;
                }
            },
            (_, Err(e)) => {
                self.report_component_error(&address, &project, node.span, e);
                return None;
            }
        };
        let context = ComponentContext {
            name: addr.name.to_string(),
            reference: addr.version.to_string(),
            version,
            sha: self.resolver.commit(Some(&project), &git_ref).ok(),
        };
        self.guard(span)?;
        let mut tried = Vec::new();
        for path in addr.candidates() {
            let key = FileKey::repo(Some(project.clone()), path.clone(), Some(git_ref.clone()));
            self.check_cycle(&key, span)?;
            match self.resolver.read(Some(&project), &path, Some(&git_ref)) {
                Ok(text) => {
                    let display = format!("{project}:{path}@{}", addr.version);
                    let file = self.sources.add(SourceFile { display, project: Some(project.clone()), path });
                    self.loaded += 1;
                    let inputs = GivenInputs { given, at: span, component: Some(&context) };
                    return self.load_text(key, file, &text, Some(inputs));
                }
                Err(ResolveError::NotFound) => tried.push(path),
                Err(e) => {
                    self.report_component_error(&address, &project, node.span, &e);
                    return None;
                }
            }
        }
        self.diags.push(
            Diagnostic::error(
                node.span,
                format!(
                    "`include:component` `{address}`: component `{}` not found in `{project}` at `{}` (looked for `{}` and `{}`)",
                    addr.name, addr.version, tried[0], tried[1]
                ),
            )
            .key("include:component"),
        );
        None
    }

    fn report_component_error(&mut self, address: &str, project: &str, span: Span, e: &ResolveError) {
        let mut d = Diagnostic::error(span, format!("cannot resolve `include:component` `{address}`: {e}")).key("include:component");
        if *e == ResolveError::UnknownProject {
            d = d.help(format!("map the project to a directory with `--project-dir {project}=DIR`"));
        }
        self.push_resolve_error(d, e);
    }

    /// An include that cannot be read here: the pipeline could not be checked, not invalid.
    fn push_unavailable(&mut self, d: Diagnostic) {
        self.diags.push(d.unavailable());
        self.incomplete = true;
        self.unavailable = true;
    }

    /// A resolver's refusal: "unavailable" when it cannot serve that kind of include or does
    /// not know the project, "invalid" when the file is missing or unreadable.
    fn push_resolve_error(&mut self, d: Diagnostic, e: &ResolveError) {
        match e {
            ResolveError::Unavailable(_) | ResolveError::UnknownProject => self.push_unavailable(d),
            ResolveError::NotFound | ResolveError::Other(_) => self.diags.push(d),
        }
    }

    fn guard(&mut self, span: Span) -> Option<()> {
        if self.loaded >= self.limits.max_files {
            self.diags.push(Diagnostic::error(span, format!("more than {} included files", self.limits.max_files)).key("include"));
            return None;
        }
        if self.stack.len() > self.limits.max_nesting {
            self.diags.push(
                Diagnostic::error(span, format!("includes are nested more than {} levels deep", self.limits.max_nesting)).key("include"),
            );
            return None;
        }
        Some(())
    }

    fn check_cycle(&mut self, key: &FileKey, span: Span) -> Option<()> {
        if let Some(pos) = self.stack.iter().position(|k| k.same_file(key)) {
            let chain: Vec<String> = self.stack[pos..].iter().map(ToString::to_string).chain([key.to_string()]).collect();
            self.diags.push(Diagnostic::error(span, format!("include cycle: {}", chain.join(" → "))).key("include"));
            return None;
        }
        Some(())
    }

    fn read_and_load(&mut self, key: FileKey, span: Span, inputs: GivenInputs<'_>) -> Option<Node> {
        self.guard(span)?;
        self.check_cycle(&key, span)?;
        let text = match self.resolver.read(key.project.as_deref(), &key.path, key.git_ref.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                let what = match &key.project {
                    Some(p) => format!("`{}` from project `{p}`", key.path),
                    None => format!("local file `{}`", key.path),
                };
                let mut d = Diagnostic::error(span, format!("cannot resolve include of {what}: {e}")).key("include");
                if e == ResolveError::UnknownProject {
                    if let Some(p) = &key.project {
                        d = d.help(format!("map the project to a directory with `--project-dir {p}=DIR`"));
                    }
                }
                self.push_resolve_error(d, &e);
                return None;
            }
        };
        self.loaded += 1;
        let display = match &key.project {
            Some(p) => format!("{p}:{}", key.path),
            None => key.path.clone(),
        };
        let file = self.sources.add(SourceFile { display, project: key.project.clone(), path: key.path.clone() });
        self.load_text(key, file, &text, Some(inputs))
    }
}

fn include_items(v: &Value) -> Vec<&Node> {
    match v {
        Value::Seq(items) => items.iter().collect(),
        _ => Vec::new(),
    }
}

/// `include: x` and `include: {local: x}` are single entries; normalise to a list.
fn normalize_include(node: Node) -> Node {
    match node.value {
        Value::Seq(_) => node,
        _ => {
            let span = node.span;
            Node::new(Value::Seq(vec![node]), span)
        }
    }
}
