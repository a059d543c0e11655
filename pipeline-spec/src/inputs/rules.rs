//! `spec:inputs:NAME:rules`: an input's `options` and `default` chosen by conditions on the
//! values of other inputs.
//!
//! GitLab (CI/CD inputs page, "conditional inputs"; gitlab-org/gitlab!206891, !209496): each
//! rule has an optional `if` written in the rules language with `$[[ inputs.NAME ]]` as
//! operands, and `options` and/or `default`; the first rule whose `if` holds (or that has none)
//! applies. `rules` excludes the input's own `options` and `default`. A condition naming an
//! input the header does not declare, or inputs whose rules depend on each other in a circle,
//! are errors. When no rule applies the input has no value (GitLab gives it `null`).

use indexmap::IndexMap;

use super::interpolate::{Piece, pieces, to_text};
use crate::diag::Diagnostic;
use crate::expand::Lookup;
use crate::expr::Expr;
use crate::source::Span;
use crate::yaml::Node;

/// One rule of an input.
#[derive(Debug, Clone)]
pub(super) struct InputRule {
    pub span: Span,
    pub when: Option<Condition>,
    pub options: Option<Vec<Node>>,
    /// `Some(null)` for an explicit `default: null`.
    pub default: Option<Node>,
}

/// An `if`, with each `$[[ inputs.NAME ]]` replaced by a variable the evaluation supplies.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    expr: Expr,
    /// Input names, in the order of their placeholders (`$PISTE_INPUT_0`, ...).
    pub refs: Vec<String>,
}

const PLACEHOLDER: &str = "PISTE_INPUT_";

impl Condition {
    /// Whether the condition holds for the values known so far.
    pub fn holds(&self, values: &IndexMap<String, Node>) -> bool {
        struct Inputs<'a>(&'a [String], &'a IndexMap<String, String>);
        impl Lookup for Inputs<'_> {
            fn lookup(&self, name: &str) -> Option<&str> {
                let i: usize = name.strip_prefix(PLACEHOLDER)?.parse().ok()?;
                self.1.get(self.0.get(i)?).map(String::as_str)
            }
        }
        let text: IndexMap<String, String> = values.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), to_text(v))).collect();
        self.expr.eval(&Inputs(&self.refs, &text))
    }
}

/// Reads `rules:` of input `name`; `None` after reporting an error.
pub(super) fn parse(name: &str, node: &Node, diags: &mut Vec<Diagnostic>) -> Option<Vec<InputRule>> {
    let key = format!("spec:inputs:{name}:rules");
    let Some(items) = node.as_seq() else {
        diags.push(Diagnostic::error(node.span, format!("`rules` must be a list of rules, found {}", node.kind())).key(key));
        return None;
    };
    let mut rules = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(m) = item.as_map() else {
            diags.push(
                Diagnostic::error(
                    item.span,
                    format!("a rule of input `{name}` is a map of `if`, `options`, `default`, found {}", item.kind()),
                )
                .key(key.clone()),
            );
            ok = false;
            continue;
        };
        let mut rule = InputRule { span: item.span, when: None, options: None, default: None };
        for (k, e) in m.iter() {
            match k.as_str() {
                "if" => match e.value.as_str().map(|src| condition(src, e.value.span)) {
                    Some(Ok(c)) => rule.when = Some(c),
                    Some(Err(d)) => {
                        diags.push(d.key(format!("{key}:if")));
                        ok = false;
                    }
                    None => {
                        diags.push(
                            Diagnostic::error(e.value.span, format!("`if` must be an expression, found {}", e.value.kind()))
                                .key(format!("{key}:if")),
                        );
                        ok = false;
                    }
                },
                "options" => match e.value.as_seq() {
                    Some(o) => rule.options = Some(o.to_vec()),
                    None => {
                        diags.push(
                            Diagnostic::error(
                                e.value.span,
                                format!("`options` must be a list of allowed values, found {}", e.value.kind()),
                            )
                            .key(format!("{key}:options")),
                        );
                        ok = false;
                    }
                },
                "default" => rule.default = Some(e.value.clone()),
                other => {
                    diags.push(
                        Diagnostic::error(
                            e.key_span,
                            format!("unknown key `{other}` in a rule of input `{name}`: a rule has `if`, `options` and `default`"),
                        )
                        .key(key.clone()),
                    );
                    ok = false;
                }
            }
        }
        rules.push(rule);
    }
    ok.then_some(rules)
}

/// Parses an `if`, turning its `$[[ inputs.NAME ]]` operands into placeholder variables.
fn condition(src: &str, span: Span) -> Result<Condition, Diagnostic> {
    let mut text = String::with_capacity(src.len());
    let mut refs: Vec<String> = Vec::new();
    for piece in pieces(src) {
        match piece {
            Piece::Text(t) => text.push_str(t),
            Piece::Block { data, .. } => {
                let Some(name) = data.strip_prefix("inputs.").filter(|n| !n.contains('|')).map(str::trim) else {
                    return Err(Diagnostic::error(
                        span,
                        format!("`$[[ {data} ]]` in an input's rule: only `$[[ inputs.NAME ]]` is known here"),
                    ));
                };
                let i = refs.iter().position(|r| r == name).unwrap_or_else(|| {
                    refs.push(name.to_string());
                    refs.len() - 1
                });
                text.push_str(&format!("${PLACEHOLDER}{i}"));
            }
        }
    }
    let expr = Expr::parse(&text).map_err(|e| Diagnostic::error(span, format!("invalid `if` expression: {e}")))?;
    Ok(Condition { expr, refs })
}

/// The order in which inputs get their values: those without rules first, then each input
/// after the inputs its rules read. Inputs in a circle are returned apart.
pub(super) fn order(deps: &IndexMap<String, Vec<String>>) -> (Vec<&str>, Vec<&str>) {
    let mut done: Vec<&str> = Vec::new();
    let mut left: Vec<&str> = deps.keys().map(String::as_str).collect();
    loop {
        let before = left.len();
        left.retain(|name| {
            let ready = deps[*name].iter().all(|d| done.contains(&d.as_str()) || !deps.contains_key(d));
            if ready {
                done.push(name);
            }
            !ready
        });
        if left.is_empty() || left.len() == before {
            return (done, left);
        }
    }
}
