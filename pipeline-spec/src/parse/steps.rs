//! `run:`: a job's steps (GitLab's CI/CD Steps form), checked against the built-in catalogue.

use crate::diag::{Diagnostic, suggest};
use crate::model::{Step, StepAction, StepInput};
use crate::steps;
use crate::yaml::{Node, Value};

use super::Cx;

/// The most steps one job may list.
pub const MAX_STEPS: usize = 100;

pub(super) fn parse_run(cx: &mut Cx, n: &Node) -> Vec<Step> {
    let Value::Seq(items) = &n.value else {
        cx.push(
            Diagnostic::error(n.span, format!("expected a list of steps, found {}", n.kind()))
                .key("run")
                .help("write `run:` as a list of `- name: ...` entries, each with `step:` and `inputs:`, or `script:`"),
        );
        return Vec::new();
    };
    if items.is_empty() {
        cx.push(Diagnostic::error(n.span, "`run` is empty").key("run").help("list at least one step"));
    }
    if items.len() > MAX_STEPS {
        cx.push(Diagnostic::error(n.span, format!("{} steps; a job may list at most {MAX_STEPS}", items.len())).key("run"));
        return Vec::new();
    }
    let mut out: Vec<Step> = Vec::with_capacity(items.len());
    for it in items {
        if let Some(step) = parse_step(cx, it) {
            if let Some(first) = out.iter().find(|s| s.name == step.name) {
                cx.push(
                    Diagnostic::error(step.span, format!("two steps are called `{}`", step.name))
                        .key("run")
                        .help(format!("the first is at line {}; step names must be unique in a job", first.span.line)),
                );
                continue;
            }
            out.push(step);
        }
    }
    out
}

fn parse_step(cx: &mut Cx, n: &Node) -> Option<Step> {
    let m = cx.map(n, "run")?;
    cx.check_keys(m, &["name", "step", "inputs", "script"], "run");
    let name = match m.get("name") {
        Some(e) => {
            let name = cx.string(&e.value, "run:name")?;
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                cx.push(
                    Diagnostic::error(e.value.span, format!("invalid step name `{name}`"))
                        .key("run:name")
                        .help("use letters, digits and `_`, not starting with a digit: outputs become variables `NAME_KEY`"),
                );
                return None;
            }
            name
        }
        None => {
            cx.push(Diagnostic::error(n.span, "a step needs a `name:`").key("run"));
            return None;
        }
    };
    let key = format!("run:{name}");
    match (m.get("step"), m.get("script")) {
        (Some(_), Some(s)) => {
            cx.push(Diagnostic::error(s.key_span, "a step has `step:` or `script:`, not both").key(key));
            None
        }
        (None, None) => {
            cx.push(
                Diagnostic::error(n.span, format!("step `{name}` needs `step:` (a built-in step) or `script:`"))
                    .key(key)
                    .help(format!("built-in steps: {}", steps::names().collect::<Vec<_>>().join(", "))),
            );
            None
        }
        (None, Some(s)) => {
            if let Some(i) = m.get("inputs") {
                cx.push(Diagnostic::error(i.key_span, "`inputs` is for `step:` entries; a `script:` step takes none").key(key.clone()));
            }
            let script = cx.script(&s.value, &format!("{key}:script")).join("\n");
            if script.trim().is_empty() {
                cx.push(Diagnostic::error(s.value.span, "`script` is empty").key(key));
                return None;
            }
            Some(Step { name, action: StepAction::Script(script), span: n.span })
        }
        (Some(s), None) => {
            let step = cx.string(&s.value, &format!("{key}:step"))?;
            let inputs = parse_inputs(cx, m.get("inputs").map(|e| &e.value), &key);
            let Some(def) = steps::find(&step) else {
                cx.push(
                    Diagnostic::error(s.value.span, format!("unknown built-in step `{step}`"))
                        .key(format!("{key}:step"))
                        .suggest(suggest(&step, steps::names()))
                        .help(format!("built-in steps: {}", steps::names().collect::<Vec<_>>().join(", "))),
                );
                return Some(Step {
                    name,
                    action: StepAction::Builtin { step, inputs: inputs.into_iter().map(|(k, v, _)| (k, v)).collect() },
                    span: n.span,
                });
            };
            let known = || def.input_names().collect::<Vec<_>>().join(", ");
            for (k, _, span) in &inputs {
                if def.input(k).is_none() {
                    cx.push(
                        Diagnostic::error(*span, format!("`{}` has no input `{k}`", def.name))
                            .key(format!("{key}:inputs"))
                            .suggest(suggest(k, def.input_names()))
                            .help(format!("its inputs: {}", known())),
                    );
                }
            }
            let at = m.get("inputs").map_or(n.span, |e| e.key_span);
            for input in def.inputs.iter().filter(|i| i.required) {
                if !inputs.iter().any(|(k, _, _)| k == input.name) {
                    cx.push(
                        Diagnostic::error(at, format!("`{}` needs the input `{}`: {}", def.name, input.name, input.description))
                            .key(format!("{key}:inputs"))
                            .help(format!("its inputs: {}", known())),
                    );
                }
            }
            for group in def.one_of {
                let given: Vec<&str> = group.iter().copied().filter(|g| inputs.iter().any(|(k, _, _)| k == g)).collect();
                if given.len() != 1 {
                    let what = if given.is_empty() { "none is given".to_string() } else { format!("{} are given", given.join(" and ")) };
                    cx.push(
                        Diagnostic::error(at, format!("`{}` takes exactly one of {}: {what}", def.name, group.join(", ")))
                            .key(format!("{key}:inputs")),
                    );
                }
            }
            Some(Step {
                name,
                action: StepAction::Builtin { step, inputs: inputs.into_iter().map(|(k, v, _)| (k, v)).collect() },
                span: n.span,
            })
        }
    }
}

fn parse_inputs(cx: &mut Cx, n: Option<&Node>, key: &str) -> Vec<(String, StepInput, crate::source::Span)> {
    let Some(n) = n else { return Vec::new() };
    if n.is_null() {
        return Vec::new();
    }
    let Some(m) = cx.map(n, &format!("{key}:inputs")) else { return Vec::new() };
    let mut out = Vec::with_capacity(m.len());
    for (k, e) in m {
        let what = format!("{key}:inputs:{k}");
        let value = match &e.value.value {
            Value::Seq(items) => StepInput::List(items.iter().filter_map(|it| scalar(cx, it, &what)).collect()),
            _ => match scalar(cx, &e.value, &what) {
                Some(s) => StepInput::Text(s),
                None => continue,
            },
        };
        out.push((k.clone(), value, e.key_span));
    }
    out
}

fn scalar(cx: &mut Cx, n: &Node, key: &str) -> Option<String> {
    match &n.value {
        Value::Bool(b) => Some(b.to_string()),
        Value::Str(_) | Value::Int(..) | Value::Float(..) => cx.string(n, key),
        _ => {
            cx.push(Diagnostic::error(n.span, format!("expected a string or a list of strings, found {}", n.kind())).key(key.to_string()));
            None
        }
    }
}
