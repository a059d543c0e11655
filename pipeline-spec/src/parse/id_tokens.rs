//! `id_tokens:` as GitLab's `Entry::IdTokens` and `Entry::IdToken` read it: a map from a
//! variable name to `{aud: <string or list of strings>}`, `aud` required, no other key.

use crate::diag::Diagnostic;
use crate::model::{Audience, IdToken};
use crate::yaml::{Node, Value};

use super::Cx;

/// The most ID tokens one job may ask for. GitLab sets no number; each token is a signature
/// made while the job is leased, so piste bounds them (a real job asks for one or two).
pub const MAX_ID_TOKENS: usize = 20;

/// The job's `id_tokens:`. When nobody issues them (`piste run`, `piste lint`: not
/// `Cx::id_tokens_issued`, which a piste server sets), a warning at `key_span` (the job's key,
/// or `default:`'s once) says how to give the values instead.
pub(super) fn parse_id_tokens(cx: &mut Cx, node: &Node, key_span: Option<crate::source::Span>) -> Vec<IdToken> {
    if node.is_null() {
        return Vec::new();
    }
    let Some(m) = cx.map(node, "id_tokens") else { return Vec::new() };
    if m.len() > MAX_ID_TOKENS {
        cx.push(
            Diagnostic::error(node.span, format!("`id_tokens` names {} tokens; at most {MAX_ID_TOKENS} are allowed", m.len()))
                .key("id_tokens")
                .help("ask for one token per audience the job talks to; a token may name several audiences (`aud: [a, b]`)"),
        );
    }
    let mut out = Vec::with_capacity(m.len().min(MAX_ID_TOKENS));
    for (name, e) in m.iter().take(MAX_ID_TOKENS) {
        if name.is_empty() || name.len() > 255 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            cx.push(
                Diagnostic::error(e.key_span, format!("invalid ID token name `{name}`: it names the variable the job receives"))
                    .key("id_tokens")
                    .help("use letters, digits and `_` only (at most 255), e.g. `VAULT_ID_TOKEN`"),
            );
            continue;
        }
        let at = format!("id_tokens:{name}");
        let Some(entry) = cx.map(&e.value, &at) else { continue };
        cx.check_keys(entry, &["aud"], &at);
        let Some(aud) = entry.get("aud") else {
            cx.push(
                Diagnostic::error(e.key_span, format!("ID token `{name}` needs `aud:`"))
                    .key("id_tokens")
                    .help("give the audience the receiving service expects, e.g. `aud: https://vault.example.com`"),
            );
            continue;
        };
        if let Some(aud) = audience(cx, &aud.value, &at) {
            out.push(IdToken { name: name.clone(), aud });
        }
    }
    if let Some(span) = key_span.filter(|_| !cx.id_tokens_issued && !out.is_empty()) {
        let names: Vec<String> = out.iter().map(|t| format!("`${}`", t.name)).collect();
        cx.push(
            Diagnostic::warning(
                span,
                format!("no ID token is issued here, so {} {} unset", names.join(", "), if names.len() == 1 { "stays" } else { "stay" }),
            )
            .key("id_tokens")
            .help(format!(
                "a piste server issues them; locally, give each value with `piste run --secret {}=…`",
                out.first().map_or("NAME", |t| t.name.as_str())
            )),
        );
    }
    out
}

/// GitLab's `array_of_strings_or_string`, not empty (`presence`).
fn audience(cx: &mut Cx, node: &Node, key: &str) -> Option<Audience> {
    let key = format!("{key}:aud");
    let string = |cx: &mut Cx, n: &Node| match &n.value {
        Value::Str(s) if !s.is_empty() => Some(s.clone()),
        Value::Str(_) => {
            cx.push(Diagnostic::error(n.span, "`aud` is empty").key(key.as_str()).help("give the audience the receiving service expects"));
            None
        }
        _ => {
            cx.push(
                Diagnostic::error(n.span, format!("expected an audience (a string), found {}", n.kind()))
                    .key(key.as_str())
                    .help("write `aud: https://service.example` or a list of such strings"),
            );
            None
        }
    };
    match &node.value {
        Value::Seq(items) if items.is_empty() => {
            cx.push(Diagnostic::error(node.span, "`aud` is an empty list").key(key.as_str()).help("name at least one audience"));
            None
        }
        Value::Seq(items) => {
            let list: Vec<Option<String>> = items.iter().map(|it| string(cx, it)).collect();
            list.into_iter().collect::<Option<Vec<String>>>().map(Audience::Many)
        }
        _ => string(cx, node).map(Audience::One),
    }
}
