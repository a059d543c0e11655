//! Node tree → typed [`Pipeline`], with every problem reported at its source position.
//!
//! Parsing never stops at the first problem: each keyword is checked on its own and the job is
//! built from what was valid, so one run of `piste lint` lists every error.

mod id_tokens;
mod job;
mod steps;
mod values;

use std::collections::HashSet;

use indexmap::IndexMap;

use crate::diag::{Diagnostic, suggest};
use crate::model::{Pipeline, Workflow};
use crate::source::Span;
use crate::yaml::{Map, Node, Value};

pub use id_tokens::MAX_ID_TOKENS;
pub use steps::MAX_STEPS;
pub(crate) use values::Cx;
pub use values::{MAX_NEEDS, RETRY_WHEN};

/// Top-level keywords; any other key is a job (or a hidden `.template`).
pub const TOP_KEYWORDS: &[&str] = &[
    "after_script",
    "before_script",
    "cache",
    "default",
    "image",
    "include",
    "services",
    "spec",
    "stages",
    "types",
    "variables",
    "workflow",
];

/// Keys a job may use (GitLab's job entry).
pub const JOB_KEYS: &[&str] = &[
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dast_configuration",
    "dependencies",
    "environment",
    "except",
    "extends",
    "hooks",
    "id_tokens",
    "identity",
    "image",
    "inherit",
    "interruptible",
    "manual_confirmation",
    "needs",
    "only",
    "pages",
    "parallel",
    "publish",
    "release",
    "resource_group",
    "retry",
    "rules",
    "run",
    "script",
    "secrets",
    "services",
    "stage",
    "start_in",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
];

/// Keys `default:` may set for every job.
pub const DEFAULT_KEYS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "identity",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

/// Top-level keys that act as defaults (deprecated globals GitLab still honours).
const GLOBAL_DEFAULTS: &[&str] = &["after_script", "before_script", "cache", "image", "services"];

pub(crate) fn build_pipeline(
    top: Map,
    span: Span,
    partial: &HashSet<String>,
    options: &crate::load::LoadOptions,
    diags: &mut Vec<Diagnostic>,
) -> Pipeline {
    let mut cx = Cx::new(diags);
    cx.max_needs = options.max_needs;
    cx.id_tokens_issued = options.id_tokens_issued;

    let stages = match top.get("stages").or_else(|| top.get("types")) {
        Some(e) => {
            // GitLab validates `stages` as an array of strings: `stages: build` is an error.
            let mut list = cx.strict_string_list(&e.value, "stages");
            // After that error, still read `stages: build` as `[build]` so jobs are not also
            // told their stage is undeclared.
            if let Value::Str(one) = &e.value.value {
                list.push(one.clone());
            }
            list.retain(|s| s != ".pre" && s != ".post");
            let mut out = vec![".pre".to_string()];
            for s in list {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            out.push(".post".into());
            out
        }
        None => [".pre", "build", "test", "deploy", ".post"].map(String::from).to_vec(),
    };

    let variables = top.get("variables").map(|e| cx.variables(&e.value, "variables")).unwrap_or_default();

    let workflow = top.get("workflow").and_then(|e| parse_workflow(&mut cx, &e.value));

    // `default:` plus the deprecated top-level globals it replaces.
    let mut defaults = Map::default();
    if let Some(e) = top.get("default") {
        match &e.value.value {
            Value::Map(m) => {
                for (k, v) in m.iter() {
                    if DEFAULT_KEYS.contains(&k.as_str()) {
                        defaults.insert(k.clone(), v.clone());
                    } else {
                        let hint = if JOB_KEYS.contains(&k.as_str()) {
                            Some(format!("`{k}` cannot be set in `default`; set it in each job or a template job"))
                        } else {
                            None
                        };
                        let mut d = Diagnostic::error(v.key_span, format!("unknown key `{k}` in `default`"))
                            .key("default")
                            .suggest(suggest(k, DEFAULT_KEYS.iter().copied()));
                        if let Some(h) = hint {
                            d = d.help(h);
                        }
                        cx.push(d);
                    }
                }
            }
            Value::Null => {}
            _ => cx.push(Diagnostic::error(e.value.span, format!("`default` must be a map, found {}", e.value.kind())).key("default")),
        }
    }
    for k in GLOBAL_DEFAULTS {
        if let Some(e) = top.get(*k) {
            if !defaults.contains_key(*k) {
                defaults.insert((*k).to_string(), e.clone());
            }
        }
    }

    let mut jobs = IndexMap::default();
    for (name, entry) in &top {
        if TOP_KEYWORDS.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        match &entry.value.value {
            Value::Map(m) => {
                if let Some(job) = job::parse_job(&mut cx, name, entry.key_span, m, &defaults, &stages, partial.contains(name)) {
                    jobs.insert(name.clone(), job);
                }
            }
            _ => {
                let kw = suggest(name, TOP_KEYWORDS.iter().copied());
                let mut d = Diagnostic::error(
                    entry.key_span,
                    format!("`{name}` is not a keyword, and a job must be a map, found {}", entry.value.kind()),
                );
                d = match kw {
                    Some(k) => d.suggest(Some(k)),
                    None => d.help("to define a job, give it a `script:`; to keep a value for reuse, name the key with a leading `.`"),
                };
                cx.push(d);
            }
        }
    }

    let pipeline = Pipeline { stages, variables, workflow, jobs };
    job::check_cross_job(&mut cx, &pipeline);
    if pipeline.jobs.is_empty() && !cx.has_errors() {
        cx.push(
            Diagnostic::error(span, "the pipeline defines no jobs")
                .help("add a job with a `script:`; keys starting with `.` are hidden templates and do not run"),
        );
    }
    pipeline
}

fn parse_workflow(cx: &mut Cx, node: &Node) -> Option<Workflow> {
    let m = cx.map(node, "workflow")?;
    cx.check_keys(m, &["rules", "name", "auto_cancel"], "workflow");
    let rules = m.get("rules").map(|e| cx.rules(&e.value, "workflow:rules", true));
    let name = m.get("name").and_then(|e| cx.string(&e.value, "workflow:name"));
    let auto_cancel = m.get("auto_cancel").map(|e| cx.auto_cancel(&e.value, "workflow:auto_cancel")).unwrap_or_default();
    Some(Workflow { name, rules, auto_cancel, span: node.span })
}
