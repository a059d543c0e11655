//! `spec:inputs`: a file's header declares inputs, the `include` that reads the file gives
//! their values, and `$[[ inputs.NAME ]]` blocks in the rest of the file are replaced by them.
//!
//! GitLab's rules (CI YAML reference `spec:inputs`, "CI/CD inputs" page, and
//! `Gitlab::Ci::Config::Interpolation`): the header is the first YAML document, separated by
//! `---`; inputs are `string` (the default type), `number`, `boolean` or `array`, with optional
//! `default`, `options`, `regex` and `description`. An input without `default` is required.
//! Passing an input the header does not declare, omitting a required one, a value of another
//! type, a value outside `options`, or a string that does not match `regex` are errors, and so
//! is passing inputs to a file that has no header. Defaults are checked the same way.
//!
//! GitLab interpolates the parsed file, node by node (keys and values), before anything else
//! reads it (its own `include:`, `extends`, `!reference`): a scalar that is exactly one block
//! takes the input's value with its type (an array stays an array, a string stays a string),
//! any other string gets the value's text. See [`interpolate`] for why not the text.

mod interpolate;
mod rules;

use indexmap::IndexMap;

pub(crate) use interpolate::{InterpolationLimits, interpolate};

/// `$[[ component.* ]]` values, by name (`None`: not known here).
pub(crate) type ComponentValues = IndexMap<String, Option<String>>;

use crate::diag::{Diagnostic, suggest};
use crate::source::Span;
use crate::yaml::{Map, Node, Value};

/// The declared type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    String,
    Number,
    Boolean,
    Array,
}

impl InputType {
    fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            InputType::String => matches!(v, Value::Str(_)),
            InputType::Number => matches!(v, Value::Int(..) | Value::Float(..)),
            InputType::Boolean => matches!(v, Value::Bool(_)),
            InputType::Array => matches!(v, Value::Seq(_)),
        }
    }
}

/// One declared input.
#[derive(Debug, Clone)]
struct InputDef {
    span: Span,
    ty: InputType,
    default: Option<Node>,
    options: Option<Vec<Node>>,
    regex: Option<(regex::Regex, String)>,
    /// `rules`: `options` and `default` by condition (excludes the two keys above).
    rules: Option<Vec<rules::InputRule>>,
}

/// The inputs a file's header declares, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct InputSpec {
    inputs: IndexMap<String, InputDef>,
    /// Declared inputs whose declaration is in error (already reported).
    invalid: Vec<String>,
    /// `spec:component`: the component context values `$[[ component.* ]]` may use.
    component: Option<(Span, Vec<String>)>,
}

/// What a component include knows about itself (GitLab's `spec:component` context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComponentContext {
    pub name: String,
    /// The version as written after `@`.
    pub reference: String,
    /// The released version it resolved to (`~latest`, `1.2`, or a tag that is one).
    pub version: Option<String>,
    /// The commit read, when the resolver can say.
    pub sha: Option<String>,
}

/// GitLab's `spec:component` values.
const COMPONENT_KEYS: &[&str] = &["name", "sha", "version", "reference"];

const SPEC_KEYS: &[&str] = &["inputs", "component", "include"];
const INPUT_KEYS: &[&str] = &["type", "default", "options", "regex", "description", "rules"];
const TYPES: &[&str] = &["string", "number", "boolean", "array"];
/// Largest `regex` accepted, compiled: enough for any real pattern, bounded for hostile ones.
const MAX_REGEX_SIZE: usize = 1 << 20;

impl InputSpec {
    /// Reads a `spec:` header document. Every problem is reported; bad inputs are left out.
    pub(crate) fn parse(header: &Node, diags: &mut Vec<Diagnostic>) -> InputSpec {
        let mut spec = InputSpec::default();
        let Some(spec_node) = header.as_map().and_then(|m| m.get("spec")) else { return spec };
        let Some(m) = spec_node.value.as_map() else {
            if !spec_node.value.is_null() {
                diags.push(
                    Diagnostic::error(
                        spec_node.value.span,
                        format!("`spec` must be a map such as `inputs:`, found {}", spec_node.value.kind()),
                    )
                    .key("spec"),
                );
            }
            return spec;
        };
        for (k, e) in m.iter() {
            if !SPEC_KEYS.contains(&k.as_str()) {
                diags.push(
                    Diagnostic::error(e.key_span, format!("unknown `spec` key `{k}`"))
                        .key("spec")
                        .suggest(suggest(k, SPEC_KEYS.iter().copied())),
                );
            }
        }
        if let Some(c) = m.get("component") {
            spec.component = parse_component(&c.value, diags).map(|names| (c.key_span, names));
        }
        let Some(inputs) = m.get("inputs") else { return spec };
        let Some(inputs) = inputs.value.as_map() else {
            if !inputs.value.is_null() {
                diags.push(
                    Diagnostic::error(
                        inputs.value.span,
                        format!("`spec:inputs` must be a map of input names, found {}", inputs.value.kind()),
                    )
                    .key("spec:inputs"),
                );
            }
            return spec;
        };
        for (name, e) in inputs.iter() {
            match parse_input(name, e.key_span, &e.value, diags) {
                Some(def) => {
                    spec.inputs.insert(name.clone(), def);
                }
                None => spec.invalid.push(name.clone()),
            }
        }
        // GitLab: a rule's condition may only read inputs the header declares.
        let mut unknown = Vec::new();
        for (name, def) in &spec.inputs {
            for rule in def.rules.iter().flatten() {
                for r in rule.when.iter().flat_map(|c| &c.refs) {
                    if !spec.inputs.contains_key(r) && !spec.invalid.contains(r) {
                        diags.push(
                            Diagnostic::error(
                                rule.span,
                                format!("a rule of input `{name}` reads `inputs.{r}`, which the header does not declare"),
                            )
                            .key(format!("spec:inputs:{name}:rules"))
                            .suggest(suggest(r, spec.inputs.keys().map(String::as_str))),
                        );
                        unknown.push(name.clone());
                    }
                }
            }
        }
        for name in unknown {
            spec.inputs.shift_remove(&name);
            spec.invalid.push(name);
        }
        spec
    }

    /// The value of every input: what `provided` gives, else the default. `provided` is the
    /// `inputs:` map of the `include` entry at `at`; `at` is `None` for the pipeline's own
    /// file, whose inputs take their defaults.
    pub(crate) fn values(&self, provided: Option<&Node>, at: Option<Span>, file: &str, diags: &mut Vec<Diagnostic>) -> InputValues {
        let mut values = InputValues { failed: self.invalid.clone(), ..InputValues::default() };
        let given: Option<&Map> = provided.and_then(Node::as_map);
        if let (Some(p), None) = (provided, given) {
            if !p.is_null() {
                diags.push(
                    Diagnostic::error(p.span, format!("`include:inputs` must be a map of input names to values, found {}", p.kind()))
                        .key("include:inputs"),
                );
            }
        }
        if let Some(given) = given {
            for (name, e) in given.iter() {
                if !self.inputs.contains_key(name) && !self.invalid.contains(name) {
                    let mut d =
                        Diagnostic::error(e.key_span, format!("unknown input `{name}`: `{file}` does not declare it in `spec:inputs`"))
                            .key("include:inputs")
                            .suggest(suggest(name, self.inputs.keys().map(String::as_str)));
                    if self.inputs.is_empty() {
                        d = d.help(format!("`{file}` has no inputs: remove `inputs:` from this `include`"));
                    }
                    diags.push(d);
                }
            }
        }
        // Inputs whose rules read other inputs get their values after them.
        let deps: IndexMap<String, Vec<String>> = self
            .inputs
            .iter()
            .map(|(n, d)| (n.clone(), d.rules.iter().flatten().flat_map(|r| r.when.iter().flat_map(|c| c.refs.clone())).collect()))
            .collect();
        let (order, circle) = rules::order(&deps);
        for name in &circle {
            let def = &self.inputs[*name];
            diags.push(
                Diagnostic::error(
                    def.span,
                    format!("the rules of input `{name}` depend on it through a circle of inputs: {}", circle.join(", ")),
                )
                .key(format!("spec:inputs:{name}:rules")),
            );
            values.failed.push(name.to_string());
        }
        for name in order {
            let Some((name, declared)) = self.inputs.get_key_value(name) else { continue };
            let ruled;
            let def = match &declared.rules {
                None => declared,
                Some(rules) => {
                    if rules.iter().flat_map(|r| r.when.iter().flat_map(|c| &c.refs)).any(|r| values.failed(r)) {
                        values.failed.push(name.clone());
                        continue;
                    }
                    // The first rule that holds gives `options` and `default`; none: no value.
                    let chosen = rules.iter().find(|r| r.when.as_ref().is_none_or(|c| c.holds(&values.values)));
                    ruled = InputDef {
                        options: chosen.and_then(|r| r.options.clone()),
                        default: chosen.map_or_else(|| Some(Node::null(declared.span)), |r| r.default.clone()),
                        ..declared.clone()
                    };
                    &ruled
                }
            };
            // GitLab (`BaseInput#actual_value`): a value given as `null` counts as not given.
            let value = match given.and_then(|g| g.get(name)).filter(|e| !e.value.is_null()) {
                Some(e) => e.value.clone(),
                None => match &def.default {
                    Some(d) => d.clone(),
                    None => {
                        diags.push(
                            Diagnostic::error(at.unwrap_or(def.span), format!("input `{name}` of `{file}` is required and has no value"))
                                .key("include:inputs")
                                .help(format!("pass it in the `include` entry: `inputs: {{{name}: VALUE}}`, or give it a `default`")),
                        );
                        values.failed.push(name.clone());
                        continue;
                    }
                },
            };
            // `default: null`: optional, and without a value (GitLab's CI/CD inputs page).
            if value.is_null() || check_value(name, def, &value, diags) {
                values.values.insert(name.clone(), value);
            } else {
                values.failed.push(name.clone());
            }
        }
        values
    }
}

impl InputSpec {
    /// The `$[[ component.* ]]` values this file may use: those `spec:component` lists, when
    /// the file is read as a component. Using `spec:component` in another file is an error.
    pub(crate) fn component_values(
        &self,
        context: Option<&ComponentContext>,
        file: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<ComponentValues> {
        let (span, names) = self.component.as_ref()?;
        let Some(c) = context else {
            diags.push(
                Diagnostic::error(*span, format!("`spec:component` is for components: `{file}` is not included with `include:component`"))
                    .key("spec:component"),
            );
            return None;
        };
        let value = |n: &str| match n {
            "name" => Some(c.name.clone()),
            "reference" => Some(c.reference.clone()),
            "version" => c.version.clone(),
            _ => c.sha.clone(),
        };
        Some(names.iter().map(|n| (n.clone(), value(n))).collect())
    }
}

fn parse_component(node: &Node, diags: &mut Vec<Diagnostic>) -> Option<Vec<String>> {
    let Some(items) = node.as_seq() else {
        diags.push(
            Diagnostic::error(
                node.span,
                format!("`spec:component` must be a list of `name`, `sha`, `version`, `reference`, found {}", node.kind()),
            )
            .key("spec:component"),
        );
        return None;
    };
    let mut names = Vec::new();
    for item in items {
        match item.as_str() {
            Some(n) if COMPONENT_KEYS.contains(&n) => names.push(n.to_string()),
            other => diags.push(
                Diagnostic::error(
                    item.span,
                    format!(
                        "`spec:component` lists `name`, `sha`, `version` and `reference`, found {}",
                        other.map_or_else(|| item.kind().to_string(), |s| format!("`{s}`"))
                    ),
                )
                .key("spec:component")
                .suggest(other.and_then(|s| suggest(s, COMPONENT_KEYS.iter().copied()))),
            ),
        }
    }
    Some(names)
}

/// Resolved input values, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct InputValues {
    values: IndexMap<String, Node>,
    /// Declared inputs whose value was missing or invalid (already reported).
    failed: Vec<String>,
}

impl InputValues {
    pub(crate) fn get(&self, name: &str) -> Option<&Node> {
        self.values.get(name)
    }

    pub(crate) fn failed(&self, name: &str) -> bool {
        self.failed.iter().any(|n| n == name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str).chain(self.failed.iter().map(String::as_str))
    }
}

fn parse_input(name: &str, span: Span, node: &Node, diags: &mut Vec<Diagnostic>) -> Option<InputDef> {
    let key = format!("spec:inputs:{name}");
    let mut def = InputDef { span, ty: InputType::String, default: None, options: None, regex: None, rules: None };
    let m = match &node.value {
        Value::Null => return Some(def),
        Value::Map(m) => m,
        _ => {
            diags.push(
                Diagnostic::error(
                    node.span,
                    format!("input `{name}` must be a map of `type`, `default`, `options`, `regex`, `description`, found {}", node.kind()),
                )
                .key(key),
            );
            return None;
        }
    };
    let mut ok = true;
    for (k, e) in m.iter() {
        if !INPUT_KEYS.contains(&k.as_str()) {
            diags.push(
                Diagnostic::error(e.key_span, format!("unknown key `{k}` in input `{name}`"))
                    .key(key.clone())
                    .suggest(suggest(k, INPUT_KEYS.iter().copied())),
            );
            ok = false;
        }
    }
    // GitLab's header validates `description` as a string.
    if let Some(d) = m.get("description").filter(|d| d.value.as_str().is_none() && !d.value.is_null()) {
        diags.push(
            Diagnostic::error(d.value.span, format!("`description` of input `{name}` must be a string, found {}", d.value.kind()))
                .key(format!("{key}:description")),
        );
        ok = false;
    }
    if let Some(t) = m.get("type") {
        def.ty = match t.value.as_str() {
            Some("string") => InputType::String,
            Some("number") => InputType::Number,
            Some("boolean") => InputType::Boolean,
            Some("array") => InputType::Array,
            other => {
                let found = other.map_or_else(|| t.value.kind().to_string(), |s| format!("`{s}`"));
                diags.push(
                    Diagnostic::error(t.value.span, format!("input type must be `string`, `number`, `boolean` or `array`, found {found}"))
                        .key(format!("{key}:type"))
                        .suggest(other.and_then(|s| suggest(s, TYPES.iter().copied()))),
                );
                return None;
            }
        };
    }
    if let Some(o) = m.get("options") {
        match o.value.as_seq() {
            Some(items) if matches!(def.ty, InputType::String | InputType::Number) => def.options = Some(items.to_vec()),
            Some(_) => {
                diags.push(
                    Diagnostic::error(
                        o.key_span,
                        format!("`options` applies to `string` and `number` inputs; `{name}` is `{}`", def.ty.name()),
                    )
                    .key(format!("{key}:options")),
                );
                ok = false;
            }
            None => {
                diags.push(
                    Diagnostic::error(o.value.span, format!("`options` must be a list of allowed values, found {}", o.value.kind()))
                        .key(format!("{key}:options")),
                );
                ok = false;
            }
        }
    }
    if let Some(r) = m.get("regex") {
        match (r.value.as_str(), def.ty) {
            (Some(src), InputType::String) => match regex::RegexBuilder::new(src).size_limit(MAX_REGEX_SIZE).build() {
                Ok(re) => def.regex = Some((re, src.to_string())),
                Err(e) => {
                    diags.push(
                        Diagnostic::error(r.value.span, format!("invalid `regex` for input `{name}`: {e}")).key(format!("{key}:regex")),
                    );
                    ok = false;
                }
            },
            (Some(_), ty) => {
                diags.push(
                    Diagnostic::error(r.key_span, format!("`regex` applies to `string` inputs; `{name}` is `{}`", ty.name()))
                        .key(format!("{key}:regex")),
                );
                ok = false;
            }
            (None, _) => {
                diags.push(
                    Diagnostic::error(r.value.span, format!("`regex` must be a string, found {}", r.value.kind()))
                        .key(format!("{key}:regex")),
                );
                ok = false;
            }
        }
    }
    if let Some(d) = m.get("default") {
        // GitLab checks defaults like given values: a bad default is an error in the header.
        if d.value.is_null() || check_value(name, &def, &d.value, diags) {
            def.default = Some(d.value.clone());
        } else {
            ok = false;
        }
    }
    if let Some(r) = m.get("rules") {
        if let Some(k) = ["options", "default"].into_iter().find(|k| m.contains_key(*k)) {
            diags.push(
                Diagnostic::error(r.key_span, format!("input `{name}` has both `rules` and `{k}`: rules give `options` and `default`"))
                    .key(format!("{key}:rules"))
                    .help("move the unconditional value into a last rule without `if`"),
            );
            return None;
        }
        let parsed = rules::parse(name, &r.value, diags)?;
        for rule in &parsed {
            let with_rule = InputDef { options: rule.options.clone(), rules: None, ..def.clone() };
            if rule.options.is_some() && !matches!(def.ty, InputType::String | InputType::Number) {
                diags.push(
                    Diagnostic::error(
                        rule.span,
                        format!("`options` applies to `string` and `number` inputs; `{name}` is `{}`", def.ty.name()),
                    )
                    .key(format!("{key}:rules:options")),
                );
                ok = false;
            }
            if let Some(d) = rule.default.as_ref().filter(|d| !d.is_null()) {
                ok &= check_value(name, &with_rule, d, diags);
            }
        }
        def.rules = Some(parsed);
    }
    ok.then_some(def)
}

/// Checks a value (given or default) against the input's type, `options` and `regex`.
fn check_value(name: &str, def: &InputDef, value: &Node, diags: &mut Vec<Diagnostic>) -> bool {
    let key = format!("inputs:{name}");
    if !def.ty.accepts(&value.value) {
        let mut d = Diagnostic::error(value.span, format!("input `{name}` is a `{}`, found {}", def.ty.name(), value.kind())).key(key);
        d = d.help(match def.ty {
            InputType::String if value.scalar_string().is_some() => "quote the value to pass it as a string",
            InputType::String => "pass a string",
            InputType::Number => "pass a number without quotes, such as `3` or `1.5`",
            InputType::Boolean => "pass `true` or `false` without quotes",
            InputType::Array => "pass a list, such as `[a, b]`",
        });
        diags.push(d);
        return false;
    }
    if let Some(options) = &def.options {
        let text = value.scalar_string();
        if !options.iter().any(|o| o.scalar_string() == text) {
            let allowed: Vec<String> = options.iter().filter_map(Node::scalar_string).map(|s| format!("`{s}`")).collect();
            diags.push(
                Diagnostic::error(
                    value.span,
                    format!("input `{name}`: `{}` is not one of the allowed options {}", text.unwrap_or_default(), allowed.join(", ")),
                )
                .key(key)
                .suggest(value.as_str().and_then(|s| suggest(s, options.iter().filter_map(Node::as_str)))),
            );
            return false;
        }
    }
    if let (Some((re, src)), Some(s)) = (&def.regex, value.as_str()) {
        if !re.is_match(s) {
            diags
                .push(Diagnostic::error(value.span, format!("input `{name}`: `{s}` does not match the required pattern `{src}`")).key(key));
            return false;
        }
    }
    true
}
