//! `include:` — reading other files through a caller-provided resolver and merging them.
//!
//! GitLab merges included files in order, then the including file on top, with a deep merge
//! (maps merge key by key, everything else is replaced). Anchors stay inside one file because
//! each file is parsed on its own; `!reference` tags cross files because they are resolved
//! after the merge.

use std::fmt;

use crate::diag::{Diagnostic, suggest};
use crate::expand::{Lookup, expand};
use crate::expr::Expr;
use crate::inputs::{InputSpec, InterpolationLimits, interpolate};
use crate::merge::deep_merge;
use crate::source::{FileId, SourceFile, SourceMap, Span};
use crate::yaml::{self, Map, Node, Value};

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
    fn remote(&self, url: &str) -> Result<String, ResolveError> {
        let _ = url;
        Err(ResolveError::Unavailable("remote includes cannot be fetched offline".into()))
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

/// Identity of a loaded file, to detect cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileKey {
    project: Option<String>,
    path: String,
    git_ref: Option<String>,
}

/// The `inputs:` an `include` entry gives the file it reads, and where that entry is.
#[derive(Clone, Copy)]
struct GivenInputs<'n> {
    given: Option<&'n Node>,
    at: Span,
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{p}:{}", self.path),
            None => f.write_str(&self.path),
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
}

const INCLUDE_KEYS: &[&str] =
    &["local", "project", "file", "ref", "remote", "template", "component", "rules", "inputs", "integrity", "cache"];

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
        }
    }

    /// Loads the entry file from its text and returns the merged top-level map.
    pub fn load_entry(&mut self, display: &str, path: &str, text: &str) -> Option<Node> {
        let key = FileKey { project: None, path: path.to_string(), git_ref: None };
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
                let limits = InterpolationLimits::for_file(&self.yaml_limits);
                interpolate(&mut root, &values, self.vars, limits, &display, &mut self.diags);
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
        let current = self.stack.last().cloned();
        let cur_project = current.as_ref().and_then(|k| k.project.clone());
        let cur_ref = current.as_ref().and_then(|k| k.git_ref.clone());
        match &item.value {
            Value::Str(s) => {
                let s = expand(s, self.vars);
                if s.starts_with("http://") || s.starts_with("https://") {
                    return self.fetch_remote(&s, item.span, None);
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
                    return self.fetch_remote(&url, item.span, given);
                }
                if let Some(t) = text_of("template") {
                    self.push_unavailable(
                        Diagnostic::error(
                            item.span,
                            format!("cannot resolve `include:template` `{t}`: GitLab's templates are not available offline"),
                        )
                        .key("include")
                        .help("copy the template into the repository and use `include:local`"),
                    );
                    return None;
                }
                if let Some(c) = text_of("component") {
                    self.push_unavailable(
                        Diagnostic::error(
                            item.span,
                            format!("cannot resolve `include:component` `{c}`: CI/CD components are not available offline"),
                        )
                        .key("include"),
                    );
                    return None;
                }
                self.diags.push(
                    Diagnostic::error(item.span, "an `include` entry needs one of `local`, `project`, `remote`, `template` or `component`")
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
                let cur = self.stack.last().and_then(|k| k.project.clone());
                matched &=
                    paths.iter().any(|p| self.resolver.glob(cur.as_deref(), &expand(p, self.vars), None).is_ok_and(|v| !v.is_empty()));
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
            let key = FileKey { project: Some(name.clone()), path: path.clone(), git_ref: git_ref.clone() };
            if let Some(node) = self.read_and_load(key, f.span, GivenInputs { given, at: span }) {
                merged = Some(match merged {
                    Some(m) => deep_merge(m, node),
                    None => node,
                });
            }
        }
        merged
    }

    fn include_local(
        &mut self,
        project: Option<&str>,
        path: &str,
        git_ref: Option<&str>,
        span: Span,
        given: Option<&Node>,
    ) -> Option<Node> {
        let inputs = GivenInputs { given, at: span };
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
                let key = FileKey { project: project.map(str::to_string), path: p, git_ref: git_ref.map(str::to_string) };
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
        let key = FileKey { project: project.map(str::to_string), path: clean, git_ref: git_ref.map(str::to_string) };
        self.read_and_load(key, span, inputs)
    }

    fn fetch_remote(&mut self, url: &str, span: Span, given: Option<&Node>) -> Option<Node> {
        self.guard(span)?;
        match self.resolver.remote(url) {
            Ok(text) => {
                let file = self.sources.add(SourceFile { display: url.to_string(), project: None, path: url.to_string() });
                let key = FileKey { project: Some(url.to_string()), path: String::new(), git_ref: None };
                self.loaded += 1;
                self.load_text(key, file, &text, Some(GivenInputs { given, at: span }))
            }
            Err(e) => {
                let d = Diagnostic::error(span, format!("cannot resolve `include:remote` `{url}`: {e}"))
                    .key("include:remote")
                    .help("vendor the file into the repository and use `include:local`");
                self.push_resolve_error(d, &e);
                None
            }
        }
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

    fn read_and_load(&mut self, key: FileKey, span: Span, inputs: GivenInputs<'_>) -> Option<Node> {
        self.guard(span)?;
        if let Some(pos) = self.stack.iter().position(|k| k.project == key.project && k.path == key.path) {
            let chain: Vec<String> = self.stack[pos..].iter().map(ToString::to_string).chain([key.to_string()]).collect();
            self.diags.push(Diagnostic::error(span, format!("include cycle: {}", chain.join(" → "))).key("include"));
            return None;
        }
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
