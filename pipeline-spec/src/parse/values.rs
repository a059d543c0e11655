//! Typed readers for keyword values, each reporting what it expected at the value's position.

use std::collections::HashMap;

use indexmap::IndexMap;

use crate::diag::{Diagnostic, suggest};
use crate::duration;
use crate::expr::Expr;
use crate::model::{
    AllowFailure, AutoCancel, Condition, CrossSource, Need, OnJobFailure, OnNewCommit, Policy, Retry, Rule, Variable, When,
};
use crate::source::Span;
use crate::yaml::{Map, Node, Value};

/// GitLab's default limit of `needs` per job (`ci_max_needs`, "one job can only need 50 others").
pub const MAX_NEEDS: usize = 50;
/// GitLab flattens nested lists in `script` and `rules` up to 10 levels.
const MAX_LIST_NESTING: usize = 10;

/// `retry:when` reasons: GitLab 18.x's `retry:when` reference (every job failure reason that can
/// be retried, plus `always`), and `runner_interrupted`. The finer stuck/timeout reasons GitLab
/// 19.0 introduces (`stuck_pending_with_matching_runners`, `no_updates_running`, …) are not here
/// yet. The one table of names: the scheduler maps them to its enum (`from_plan::retry_when`).
pub const RETRY_WHEN: &[&str] = &[
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "runner_interrupted",
];

/// Parsing context: where diagnostics go and which job is being read.
pub(crate) struct Cx<'a> {
    diags: &'a mut Vec<Diagnostic>,
    pub job: Option<String>,
    /// The most `needs` one job may list (GitLab's `ci_max_needs`, 50 by default).
    pub max_needs: usize,
    /// Whoever runs the pipeline signs `id_tokens` (a piste server); otherwise they are warned
    /// about where written.
    pub id_tokens_issued: bool,
    /// The warning about a `default:` `id_tokens` was given (once, not per job).
    pub default_id_tokens_warned: bool,
    /// Parsed `if:` expressions by source text: templates repeat the same rules across hundreds
    /// of jobs, and compiling their regexes once is most of the cost of parsing them.
    exprs: HashMap<String, Result<Expr, crate::expr::ExprError>>,
}

impl<'a> Cx<'a> {
    pub fn new(diags: &'a mut Vec<Diagnostic>) -> Self {
        Cx { diags, job: None, max_needs: MAX_NEEDS, id_tokens_issued: false, default_id_tokens_warned: false, exprs: HashMap::new() }
    }

    pub fn push(&mut self, mut d: Diagnostic) {
        if d.job.is_none() {
            d.job = self.job.clone();
        }
        self.diags.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    pub fn err(&mut self, span: Span, key: &str, message: impl Into<String>) {
        self.push(Diagnostic::error(span, message).key(key));
    }

    fn expected(&mut self, node: &Node, key: &str, what: &str) {
        self.err(node.span, key, format!("expected {what}, found {}", node.kind()));
    }

    pub fn map<'n>(&mut self, node: &'n Node, key: &str) -> Option<&'n Map> {
        match &node.value {
            Value::Map(m) => Some(m),
            _ => {
                self.expected(node, key, "a map");
                None
            }
        }
    }

    /// Reports keys of `m` that are not in `allowed`, with the closest allowed word.
    pub fn check_keys(&mut self, m: &Map, allowed: &[&str], key: &str) {
        for (k, e) in m {
            if !allowed.contains(&k.as_str()) {
                let d = Diagnostic::error(e.key_span, format!("unknown key `{k}` in `{key}`"))
                    .key(key)
                    .suggest(suggest(k, allowed.iter().copied()));
                self.push(d);
            }
        }
    }

    /// A string; numbers are accepted and converted as GitLab does.
    pub fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(..) | Value::Float(..) => node.scalar_string(),
            _ => {
                self.expected(node, key, "a string");
                None
            }
        }
    }

    pub fn string_list(&mut self, node: &Node, key: &str) -> Vec<String> {
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(|it| self.string(it, key)).collect(),
            Value::Null => Vec::new(),
            _ => self.string(node, key).into_iter().collect(),
        }
    }

    /// A value GitLab validates as `array_of_strings`: a list, never a lone string.
    pub fn strict_string_list(&mut self, node: &Node, key: &str) -> Vec<String> {
        match &node.value {
            Value::Seq(_) | Value::Null => self.string_list(node, key),
            _ => {
                let shown = node.scalar_string().unwrap_or_default();
                let mut d = Diagnostic::error(node.span, format!("expected a list of strings, found {}", node.kind())).key(key);
                if !shown.is_empty() {
                    d = d.help(format!("write it as a list: `[{shown}]`"));
                }
                self.push(d);
                Vec::new()
            }
        }
    }

    /// A value GitLab validates as `array_of_strings_or_string`: strings only, no numbers.
    pub fn only_strings(&mut self, node: &Node, key: &str) -> Vec<String> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![node],
        };
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match &it.value {
                Value::Str(s) => out.push(s.clone()),
                Value::Int(..) | Value::Float(..) | Value::Bool(_) => self.push(
                    Diagnostic::error(it.span, format!("expected a path (a string), found {} `{it}`", it.kind()))
                        .key(key)
                        .help(format!("quote it: `\"{it}\"`")),
                ),
                _ => self.expected(it, key, "a path (a string)"),
            }
        }
        out
    }

    pub fn bool(&mut self, node: &Node, key: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.expected(node, key, "`true` or `false`");
                None
            }
        }
    }

    pub fn int(&mut self, node: &Node, key: &str) -> Option<i64> {
        match node.value {
            Value::Int(i, _) => Some(i),
            _ => {
                self.expected(node, key, "an integer");
                None
            }
        }
    }

    pub fn int_list(&mut self, node: &Node, key: &str) -> Vec<i32> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        items.into_iter().filter_map(|n| self.int(n, key)).filter_map(|i| i32::try_from(i).ok()).collect()
    }

    pub fn duration(&mut self, node: &Node, key: &str) -> Option<u64> {
        let text = match &node.value {
            Value::Int(i, _) => return u64::try_from(*i).ok(),
            _ => self.string(node, key)?,
        };
        match duration::parse_seconds(&text) {
            Some(s) => Some(s),
            None => {
                self.push(
                    Diagnostic::error(node.span, format!("`{text}` is not a duration"))
                        .key(key)
                        .help("write it like `30 minutes`, `1h 30m` or `3600` (seconds)"),
                );
                None
            }
        }
    }

    pub fn when(&mut self, node: &Node, key: &str) -> Option<When> {
        let s = self.string(node, key)?;
        match When::parse(&s) {
            Some(w) => Some(w),
            None => {
                self.push(
                    Diagnostic::error(node.span, format!("unknown `when` value `{s}`; expected one of {}", When::NAMES.join(", ")))
                        .key(key)
                        .suggest(suggest(&s, When::NAMES.iter().copied())),
                );
                None
            }
        }
    }

    /// `script`-like values: a string, or a list of strings nested up to 10 levels (flattened).
    pub fn script(&mut self, node: &Node, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.script_into(node, key, 0, &mut out);
        out
    }

    fn script_into(&mut self, node: &Node, key: &str, depth: usize, out: &mut Vec<String>) {
        match &node.value {
            Value::Str(s) => out.push(s.clone()),
            Value::Null if depth == 0 => {}
            Value::Seq(items) if depth <= MAX_LIST_NESTING => {
                for it in items {
                    self.script_into(it, key, depth + 1, out);
                }
            }
            Value::Seq(_) => self.err(node.span, key, "script lists are nested more than 10 levels deep"),
            Value::Map(m) => {
                let mut d = Diagnostic::error(node.span, "expected a script line (a string), found a map").key(key);
                if m.len() == 1 {
                    let (k, _) = m.iter().next().expect("one entry");
                    d = d.help(format!("YAML reads `{k}: ...` as a map because of the `: `; quote the whole line"));
                }
                self.push(d);
            }
            Value::Int(..) | Value::Float(..) | Value::Bool(_) => {
                let shown = node.to_string();
                self.push(
                    Diagnostic::error(node.span, format!("expected a script line (a string), found {} `{shown}`", node.kind()))
                        .key(key)
                        .help(format!("quote it: `\"{shown}\"`")),
                );
            }
            _ => self.expected(node, key, "a string or a list of strings"),
        }
    }

    /// `variables:` maps: `NAME: value` or `NAME: {value, description, options, expand}`.
    pub fn variables(&mut self, node: &Node, key: &str) -> Vec<Variable> {
        let Some(m) = (match &node.value {
            Value::Null => return Vec::new(),
            _ => self.map(node, key),
        }) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(m.len());
        for (name, e) in m {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.err(e.key_span, key, format!("invalid variable name `{name}`: use letters, digits and `_` only"));
                continue;
            }
            let v = &e.value;
            let mut var = Variable {
                name: name.clone(),
                value: String::new(),
                description: None,
                options: Vec::new(),
                expand: true,
                span: e.key_span,
            };
            match &v.value {
                Value::Map(vm) => {
                    self.check_keys(vm, &["value", "description", "options", "expand"], &format!("{key}:{name}"));
                    if let Some(val) = vm.get("value") {
                        var.value = self.variable_value(&val.value, key, name).unwrap_or_default();
                    }
                    var.description = vm.get("description").and_then(|d| self.string(&d.value, key));
                    if let Some(o) = vm.get("options") {
                        var.options = self.string_list(&o.value, key);
                        if !var.options.is_empty() && !var.options.contains(&var.value) {
                            self.err(
                                o.value.span,
                                key,
                                format!("variable `{name}`: the value `{}` is not one of its `options`", var.value),
                            );
                        }
                    }
                    if let Some(x) = vm.get("expand") {
                        var.expand = self.bool(&x.value, key).unwrap_or(true);
                    }
                }
                _ => match self.variable_value(v, key, name) {
                    Some(s) => var.value = s,
                    None => continue,
                },
            }
            out.push(var);
        }
        out
    }

    fn variable_value(&mut self, v: &Node, key: &str, name: &str) -> Option<String> {
        match &v.value {
            Value::Str(s) => Some(s.clone()),
            Value::Null => Some(String::new()),
            Value::Int(_, raw) | Value::Float(_, raw) => {
                let s = v.scalar_string()?;
                if s != raw.as_ref() {
                    self.push(
                        Diagnostic::warning(
                            v.span,
                            format!("variable `{name}` is read as the number `{s}`, not `{raw}` (YAML 1.1, as GitLab reads it)"),
                        )
                        .key(key)
                        .help(format!("quote it to keep it as written: `{name}: \"{raw}\"`")),
                    );
                }
                Some(s)
            }
            // GitLab accepts booleans and stores Ruby's `to_s` of them: `FF_TIMESTAMPS: true` is "true".
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.err(v.span, key, format!("variable `{name}` must be a string, a number or a map with `value:`, found {}", v.kind()));
                None
            }
        }
    }

    pub fn condition(&mut self, node: &Node, key: &str) -> Option<Condition> {
        let src = self.string(node, key)?;
        let parsed = match self.exprs.get(&src) {
            Some(p) => p.clone(),
            None => {
                let p = Expr::parse(&src);
                self.exprs.insert(src.clone(), p.clone());
                p
            }
        };
        match parsed {
            Ok(expr) => Some(Condition { source: src, expr, span: node.span }),
            Err(e) => {
                // Point inside the expression when it sits on one line after the key.
                let col = node.span.col + u32::try_from(e.offset).unwrap_or(0) + u32::from(!matches!(node.value, Value::Str(_)));
                let span = Span { col, ..node.span };
                self.push(Diagnostic::error(span, format!("invalid expression `{src}`: {e}")).key(key));
                None
            }
        }
    }

    /// `rules:` lists. Nested lists (from `!reference`) are flattened as GitLab does.
    pub fn rules(&mut self, node: &Node, key: &str, workflow: bool) -> Vec<Rule> {
        let mut flat = Vec::new();
        flatten(node, 0, &mut flat);
        if !matches!(node.value, Value::Seq(_)) {
            self.expected(node, key, "a list of rules");
            return Vec::new();
        }
        // GitLab's `Entry::Rules` validates `presence`: "rules config can't be blank".
        if flat.is_empty() {
            self.push(
                Diagnostic::error(node.span, "`rules` is empty; GitLab rejects an empty rules list")
                    .key(key)
                    .help("remove `rules:` or add a rule such as `- when: on_success`"),
            );
            return Vec::new();
        }
        let allowed: &[&str] = if workflow {
            &["if", "changes", "exists", "when", "variables", "auto_cancel"]
        } else {
            &["if", "changes", "exists", "when", "start_in", "allow_failure", "variables", "needs", "interruptible"]
        };
        let mut out = Vec::new();
        for r in flat {
            let Some(m) = r.as_map() else {
                let mut d =
                    Diagnostic::error(r.span, format!("a rule must be a map such as `- if: $CI_COMMIT_BRANCH`, found {}", r.kind()))
                        .key(key);
                if let Some(s) = r.as_str() {
                    d = d.help(format!("write `- if: '{s}'`"));
                }
                self.push(d);
                continue;
            };
            self.check_keys(m, allowed, key);
            let mut rule = Rule {
                span: r.span,
                if_: None,
                changes: None,
                compare_to: None,
                exists: None,
                when: None,
                start_in: None,
                allow_failure: None,
                variables: Vec::new(),
                needs: None,
                interruptible: None,
                auto_cancel: AutoCancel::default(),
            };
            if let Some(e) = m.get("if") {
                rule.if_ = self.condition(&e.value, &format!("{key}:if"));
                if rule.if_.is_none() {
                    // An invalid condition must never match by accident.
                    continue;
                }
            }
            if let Some(e) = m.get("changes") {
                match &e.value.value {
                    Value::Map(cm) => {
                        self.check_keys(cm, &["paths", "compare_to"], &format!("{key}:changes"));
                        rule.changes = Some(cm.get("paths").map(|p| self.string_list(&p.value, key)).unwrap_or_default());
                        rule.compare_to = cm.get("compare_to").and_then(|c| self.string(&c.value, key));
                    }
                    _ => rule.changes = Some(self.string_list(&e.value, &format!("{key}:changes"))),
                }
            }
            if let Some(e) = m.get("exists") {
                match &e.value.value {
                    Value::Map(em) => {
                        self.check_keys(em, &["paths", "project", "ref"], &format!("{key}:exists"));
                        // GitLab reads the files of another project (or another ref); piste's
                        // resolver has the pipeline's own commit only, so it says what it checks.
                        if let Some(other) = em.get("project").or_else(|| em.get("ref")) {
                            self.push(
                                Diagnostic::warning(
                                    other.key_span,
                                    "piste checks `rules:exists` in the pipeline's own repository at its commit: `exists:project` and `exists:ref` are ignored",
                                )
                                .key(format!("{key}:exists"))
                                .help("keep the files this rule looks for in this repository, or decide with `rules:if` on a variable"),
                            );
                        }
                        rule.exists = Some(em.get("paths").map(|p| self.string_list(&p.value, key)).unwrap_or_default());
                    }
                    _ => rule.exists = Some(self.string_list(&e.value, &format!("{key}:exists"))),
                }
            }
            if let Some(e) = m.get("when") {
                rule.when = self.when(&e.value, &format!("{key}:when"));
                if workflow && matches!(rule.when, Some(w) if !matches!(w, When::Always | When::Never)) {
                    self.err(e.value.span, key, "`workflow:rules:when` can only be `always` or `never`");
                }
            }
            if let Some(e) = m.get("start_in") {
                rule.start_in = self.duration(&e.value, &format!("{key}:start_in"));
            }
            if let Some(e) = m.get("allow_failure") {
                rule.allow_failure = self.allow_failure(&e.value, &format!("{key}:allow_failure"));
            }
            if let Some(e) = m.get("variables") {
                rule.variables = self.variables(&e.value, &format!("{key}:variables"));
            }
            if let Some(e) = m.get("needs") {
                rule.needs = Some(self.needs(&e.value, &format!("{key}:needs")));
            }
            if let Some(e) = m.get("interruptible") {
                rule.interruptible = self.bool(&e.value, key);
            }
            if let Some(e) = m.get("auto_cancel") {
                rule.auto_cancel = self.auto_cancel(&e.value, &format!("{key}:auto_cancel"));
            }
            out.push(rule);
        }
        out
    }

    /// `auto_cancel: {on_new_commit, on_job_failure}` (GitLab's `Entry::AutoCancel`).
    pub fn auto_cancel(&mut self, node: &Node, key: &str) -> AutoCancel {
        let mut out = AutoCancel::default();
        let Some(m) = self.map(node, key) else { return out };
        self.check_keys(m, &["on_new_commit", "on_job_failure"], key);
        if let Some(e) = m.get("on_new_commit") {
            let k = format!("{key}:on_new_commit");
            if let Some(s) = self.string(&e.value, &k) {
                out.on_new_commit = OnNewCommit::parse(&s);
                if out.on_new_commit.is_none() {
                    self.err(e.value.span, &k, format!("`{s}` is not one of {}", OnNewCommit::NAMES.join(", ")));
                }
            }
        }
        if let Some(e) = m.get("on_job_failure") {
            let k = format!("{key}:on_job_failure");
            if let Some(s) = self.string(&e.value, &k) {
                out.on_job_failure = OnJobFailure::parse(&s);
                if out.on_job_failure.is_none() {
                    self.err(e.value.span, &k, format!("`{s}` is not one of {}", OnJobFailure::NAMES.join(", ")));
                }
            }
        }
        out
    }

    pub fn allow_failure(&mut self, node: &Node, key: &str) -> Option<AllowFailure> {
        match &node.value {
            Value::Bool(b) => Some(AllowFailure::Bool(*b)),
            Value::Map(m) => {
                self.check_keys(m, &["exit_codes"], key);
                let codes = m.get("exit_codes").map(|e| self.int_list(&e.value, key)).unwrap_or_default();
                Some(AllowFailure::ExitCodes(codes))
            }
            _ => {
                self.expected(node, key, "`true`, `false` or `{exit_codes: [...]}`");
                None
            }
        }
    }

    pub fn retry(&mut self, node: &Node, key: &str) -> Retry {
        let mut r = Retry::default();
        let check_max = |cx: &mut Cx, n: &Node| -> u8 {
            match cx.int(n, key) {
                Some(i @ 0..=2) => i as u8,
                Some(i) => {
                    cx.err(n.span, key, format!("`retry` is {i}; GitLab allows 0, 1 or 2 retries"));
                    0
                }
                None => 0,
            }
        };
        match &node.value {
            Value::Int(..) => r.max = check_max(self, node),
            Value::Map(m) => {
                self.check_keys(m, &["max", "when", "exit_codes"], key);
                if let Some(e) = m.get("max") {
                    r.max = check_max(self, &e.value);
                }
                if let Some(e) = m.get("when") {
                    for w in self.string_list(&e.value, key) {
                        if RETRY_WHEN.contains(&w.as_str()) {
                            r.when.push(w);
                        } else {
                            self.push(
                                Diagnostic::error(e.value.span, format!("unknown `retry:when` reason `{w}`"))
                                    .key(key)
                                    .suggest(suggest(&w, RETRY_WHEN.iter().copied())),
                            );
                        }
                    }
                }
                if let Some(e) = m.get("exit_codes") {
                    r.exit_codes = self.int_list(&e.value, key);
                }
            }
            Value::Null => {}
            _ => self.expected(node, key, "an integer or a map with `max`"),
        }
        r
    }

    pub fn needs(&mut self, node: &Node, key: &str) -> Vec<Need> {
        let items = match &node.value {
            Value::Seq(items) => flatten_once(items),
            Value::Null => return Vec::new(),
            _ => {
                self.expected(node, key, "a list of job names");
                return Vec::new();
            }
        };
        if items.len() > self.max_needs {
            let max = self.max_needs;
            self.push(Diagnostic::error(node.span, format!("{} needs; at most {max} are allowed per job", items.len())).key(key).help(
                format!(
                    "GitLab's default is 50 (`ci_max_needs`); if your instance allows more, raise the limit with `--max-needs {}`",
                    items.len()
                ),
            ));
        }
        let mut out = Vec::new();
        for it in items {
            match &it.value {
                Value::Str(s) => {
                    out.push(Need { job: s.clone(), span: it.span, artifacts: true, optional: false, matrix: None, cross: None })
                }
                Value::Map(m) => {
                    if let Some(need) = self.need_map(m, it.span, key) {
                        out.push(need);
                    }
                }
                _ => self.expected(it, key, "a job name or a map with `job:`"),
            }
        }
        out
    }

    /// One `needs` entry written as a map, sorted as GitLab's `Entry::Need` strategies sort it:
    /// `project` or `ref` make it `needs:project` (keys `project`, `ref`, `job`, `artifacts`,
    /// the first three required), `pipeline` with `job` makes it `needs:pipeline:job` (keys
    /// `pipeline`, `job`, `artifacts`), `pipeline` alone is the deprecated form of a trigger job
    /// mirroring an upstream pipeline (not run), anything else a need of this pipeline.
    fn need_map(&mut self, m: &Map, span: Span, key: &str) -> Option<Need> {
        let project_need = m.contains_key("project") || m.contains_key("ref");
        let pipeline_need = !project_need && m.contains_key("pipeline");
        if pipeline_need && !m.contains_key("job") {
            self.check_keys(m, &["pipeline"], key);
            self.push(
                Diagnostic::warning(
                    span,
                    "piste does not run `needs:pipeline` without `job:`: the job neither waits for that pipeline nor mirrors its status",
                )
                .key(key)
                .help("to receive a job's artifacts from the parent pipeline, write `needs: [{pipeline: $PARENT_PIPELINE_ID, job: NAME}]`"),
            );
            return None;
        }
        let allowed: &[&str] = match (project_need, pipeline_need) {
            (true, _) => &["project", "ref", "job", "artifacts"],
            (_, true) => &["pipeline", "job", "artifacts"],
            _ => &["job", "artifacts", "optional", "parallel"],
        };
        self.check_keys(m, allowed, key);
        let required = |cx: &mut Self, name: &str, what: &str| -> Option<String> {
            match m.get(name).map(|e| (e, cx.string(&e.value, key))) {
                Some((_, Some(v))) if !v.trim().is_empty() => Some(v),
                Some((e, Some(_))) => {
                    cx.err(e.value.span, key, format!("`{name}` of a `needs` entry is empty: {what}"));
                    None
                }
                Some((_, None)) => None,
                None => {
                    cx.err(span, key, format!("this `needs` entry needs `{name}:`: {what}"));
                    None
                }
            }
        };
        let job = required(self, "job", "the name of the job whose artifacts this job receives");
        let cross = if project_need {
            let project = required(self, "project", "the path of the project, as `group/name`");
            let git_ref = required(self, "ref", "the branch or tag whose latest successful job is used");
            Some(CrossSource::Project { project: project?, git_ref: git_ref? })
        } else if pipeline_need {
            let pipeline = required(self, "pipeline", "the id of the parent pipeline, say `$PARENT_PIPELINE_ID`");
            Some(CrossSource::Pipeline { pipeline: pipeline? })
        } else {
            None
        };
        let job = job?;
        let artifacts = m.get("artifacts").and_then(|e| self.bool(&e.value, key)).unwrap_or(true);
        let optional = m.get("optional").and_then(|e| self.bool(&e.value, key)).unwrap_or(false);
        let matrix = m.get("parallel").and_then(|p| {
            let pm = self.map(&p.value, key)?;
            pm.get("matrix").map(|mx| self.matrix(&mx.value, key))
        });
        Some(Need { job, span, artifacts, optional, matrix, cross })
    }

    /// `parallel:matrix` entries: each a map of variable → value or list of values.
    pub fn matrix(&mut self, node: &Node, key: &str) -> Vec<IndexMap<String, Vec<String>>> {
        let Some(items) = node.as_seq() else {
            self.expected(node, key, "a list of variable maps");
            return Vec::new();
        };
        let mut out = Vec::new();
        for it in items {
            let Some(m) = self.map(it, key) else { continue };
            let mut entry = IndexMap::new();
            for (k, e) in m {
                let values = match &e.value.value {
                    Value::Seq(vs) => vs.iter().filter_map(|v| self.string(v, key)).collect(),
                    _ => self.string(&e.value, key).into_iter().collect(),
                };
                entry.insert(k.clone(), values);
            }
            out.push(entry);
        }
        out
    }

    pub fn policy(&mut self, node: &Node, key: &str) -> Option<Policy> {
        let mut p = Policy { span: node.span, ..Policy::default() };
        match &node.value {
            Value::Seq(_) => p.refs = Some(self.string_list(node, key)),
            Value::Str(s) => p.refs = Some(vec![s.clone()]),
            Value::Map(m) => {
                self.check_keys(m, &["refs", "variables", "changes", "kubernetes"], key);
                if let Some(e) = m.get("refs") {
                    p.refs = Some(self.string_list(&e.value, key));
                }
                if let Some(e) = m.get("variables") {
                    let srcs = self.string_list(&e.value, key);
                    for (i, src) in srcs.into_iter().enumerate() {
                        let span = e.value.as_seq().and_then(|s| s.get(i)).map_or(e.value.span, |n| n.span);
                        let n = Node::str(src, span);
                        if let Some(c) = self.condition(&n, &format!("{key}:variables")) {
                            p.variables.push(c);
                        }
                    }
                }
                if let Some(e) = m.get("changes") {
                    p.changes = match &e.value.value {
                        Value::Map(cm) => cm.get("paths").map(|x| self.string_list(&x.value, key)).unwrap_or_default(),
                        _ => self.string_list(&e.value, key),
                    };
                }
            }
            Value::Null => return None,
            _ => {
                self.expected(node, key, "a list of refs or a map with `refs`, `variables`, `changes`");
                return None;
            }
        }
        Some(p)
    }
}

/// GitLab flattens one level of nested lists in `needs`, `cache` and `services` (its entries call
/// `flatten(1)`), so `- *anchor` of a list or `- !reference [.x, needs]` splices the list in.
pub(crate) fn flatten_once(items: &[Node]) -> Vec<&Node> {
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        match &it.value {
            Value::Seq(inner) => out.extend(inner.iter()),
            _ => out.push(it),
        }
    }
    out
}

fn flatten<'n>(node: &'n Node, depth: usize, out: &mut Vec<&'n Node>) {
    match &node.value {
        Value::Seq(items) if depth <= MAX_LIST_NESTING => {
            for it in items {
                if depth < MAX_LIST_NESTING && matches!(it.value, Value::Seq(_)) {
                    flatten(it, depth + 1, out);
                } else {
                    out.push(it);
                }
            }
        }
        _ => {}
    }
}
