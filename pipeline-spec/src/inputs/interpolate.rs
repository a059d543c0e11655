//! `$[[ inputs.NAME | function | ... ]]` blocks, replaced in a parsed file.
//!
//! This is GitLab's default path (`Yaml::Loader#legacy_load`, `Interpolation::Template`): the
//! text interpolation behind the `ci_text_interpolation` feature flag would insert `"3.11"`
//! unquoted, read it back as a number and refuse it for a `string` input, which real pipelines
//! (gwpy's `compatibility.yml` include) rely on not happening. One difference, on purpose:
//! GitLab's `Template` replaces only the first distinct block of a string (gitlab-org/gitlab
//! work item 442327, a bug); piste replaces them all.
//!
//! GitLab (`Interpolation::Template`, `Block`, `FunctionsStack`): a block is `$[[`, optional
//! spaces, an access such as `inputs.name`, up to three functions separated by `|`, optional
//! spaces, `]]`, on one line. Keys and values are interpolated, values inserted are not read
//! again. A scalar that is exactly one block becomes the input's value with its type; elsewhere
//! the value's text is inserted (Ruby's `to_s`: an array reads `["a", "b"]`). Functions:
//! `expand_vars` (variables known when the pipeline is created, one level, unknown names kept),
//! `truncate(offset,length)` and `posix_escape` (Ruby's `Shellwords.escape`), on string values.
//! Blocks of other accesses (`$[[ matrix.KEY ]]` in `needs:parallel:matrix`) stay as written.

use super::{ComponentValues, InputValues};
use crate::diag::{Diagnostic, suggest};
use crate::expand::{Lookup, MAX_EXPANDED_LEN, expand_keep_unknown};
use crate::source::Span;
use crate::yaml::{Map, Node, Value, ruby_float};

/// GitLab's `FunctionsStack::MAX_FUNCTIONS`.
const MAX_FUNCTIONS: usize = 3;
/// GitLab's `Block::MAX_BLOCK_SIZE`: what a block holds between its brackets.
const MAX_BLOCK_BYTES: usize = 1024;

/// Bounds on what interpolation may build in one file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InterpolationLimits {
    /// Most blocks replaced in one file (GitLab's `Template::MAX_BLOCKS`, 10,000).
    pub max_blocks: usize,
    /// Most nodes copied in by typed (array) values, like the YAML layer's alias bound.
    pub max_nodes: usize,
    /// Most bytes added to one file's strings.
    pub max_bytes: usize,
}

impl InterpolationLimits {
    pub(crate) fn for_file(yaml: &crate::yaml::Limits) -> Self {
        InterpolationLimits { max_blocks: 10_000, max_nodes: yaml.max_nodes, max_bytes: yaml.max_bytes.saturating_mul(4) }
    }
}

/// Replaces every `$[[ inputs.… ]]` block under `root`. Errors are reported where the block
/// is written; a block in error is left as written.
pub(crate) fn interpolate(
    root: &mut Node,
    values: &InputValues,
    component: Option<&ComponentValues>,
    vars: &dyn Lookup,
    limits: InterpolationLimits,
    file: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut it = Interpolator { values, component, vars, limits, file, blocks: 0, nodes: 0, bytes: 0, stopped: false, diags };
    it.walk(root);
}

struct Interpolator<'a> {
    values: &'a InputValues,
    component: Option<&'a ComponentValues>,
    vars: &'a dyn Lookup,
    limits: InterpolationLimits,
    file: &'a str,
    blocks: usize,
    nodes: usize,
    bytes: usize,
    /// Set once a limit is reached: the rest of the file is left as written.
    stopped: bool,
    diags: &'a mut Vec<Diagnostic>,
}

/// A piece of a string: literal text, or a block (`raw` as written, `data` inside the brackets).
#[derive(Debug, PartialEq)]
pub(super) enum Piece<'s> {
    Text(&'s str),
    Block { raw: &'s str, data: &'s str },
}

/// Splits a string into text and blocks as GitLab's `Block::PATTERN` finds them.
pub(super) fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut pos = 0;
    while let Some(found) = s[pos..].find("$[[") {
        let open = pos + found;
        let Some(close) = s[open + 3..].find("]]").map(|c| open + 3 + c) else { break };
        let data = s[open + 3..close].trim_matches(|c: char| c == ' ' || c == '\t');
        if s[open..close].contains('\n') || data.chars().count() < 2 {
            pos = open + 3;
            continue;
        }
        if open > text_start {
            out.push(Piece::Text(&s[text_start..open]));
        }
        out.push(Piece::Block { raw: &s[open..close + 2], data });
        pos = close + 2;
        text_start = pos;
    }
    if text_start < s.len() {
        out.push(Piece::Text(&s[text_start..]));
    }
    out
}

impl Interpolator<'_> {
    fn walk(&mut self, node: &mut Node) {
        if self.stopped {
            return;
        }
        match &mut node.value {
            Value::Str(s) if s.contains("$[[") => {
                if let Some(v) = self.string(s, node.span, true) {
                    *node = v;
                }
            }
            Value::Seq(items) | Value::Reference(items) => items.iter_mut().for_each(|n| self.walk(n)),
            Value::Map(m) => {
                m.values_mut().for_each(|e| self.walk(&mut e.value));
                if m.keys().any(|k| k.contains("$[[")) {
                    let old = std::mem::take(&mut **m);
                    let mut new = Map::with_capacity_and_hasher(old.len(), Default::default());
                    for (k, e) in old {
                        let k = match self.string(&k, e.key_span, false) {
                            Some(n) => n.scalar_string().unwrap_or_else(|| to_text(&n)),
                            None => k,
                        };
                        new.insert(k, e);
                    }
                    **m = new;
                }
            }
            _ => {}
        }
    }

    /// The interpolated node for a string, `None` when nothing changes.
    fn string(&mut self, s: &str, span: Span, typed: bool) -> Option<Node> {
        let pieces = pieces(s);
        if let ([Piece::Block { raw, data }], true) = (pieces.as_slice(), typed) {
            if *raw == s {
                let v = self.block(data, span)?;
                let copied = count_nodes(&v);
                self.nodes = self.nodes.saturating_add(copied);
                if self.nodes > self.limits.max_nodes {
                    return self.stop(span, format!("interpolated values copy more than {} nodes into this file", self.limits.max_nodes));
                }
                return Some(Node { value: v.value, span });
            }
        }
        let mut out = String::with_capacity(s.len());
        let mut changed = false;
        for piece in &pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Block { raw, data } => match self.block(data, span) {
                    Some(v) => {
                        out.push_str(&to_text(&v));
                        changed = true;
                    }
                    None => out.push_str(raw),
                },
            }
            if out.len() > MAX_EXPANDED_LEN {
                return self.stop(span, format!("interpolation makes a value longer than {MAX_EXPANDED_LEN} bytes"));
            }
        }
        self.bytes = self.bytes.saturating_add(out.len().saturating_sub(s.len()));
        if self.bytes > self.limits.max_bytes {
            return self.stop(span, format!("interpolation adds more than {} bytes to this file", self.limits.max_bytes));
        }
        changed.then(|| Node::str(out, span))
    }

    fn stop(&mut self, span: Span, message: String) -> Option<Node> {
        self.stopped = true;
        self.diags.push(
            Diagnostic::error(span, message).key("spec:inputs").help("inputs this large are not a CI configuration; pass smaller values"),
        );
        None
    }

    /// The value of one block, or `None` (left as written) for another access or an error.
    fn block(&mut self, data: &str, span: Span) -> Option<Node> {
        let mut parts = data.split('|');
        let access = parts.next().unwrap_or_default().trim();
        // GitLab's `Block::SKIP_INTERPOLATION_CONTEXTS`: `matrix` blocks are read later.
        if access.split('.').next() == Some("matrix") {
            return None;
        }
        self.blocks += 1;
        if self.blocks > self.limits.max_blocks {
            return self.stop(span, format!("more than {} `$[[ ]]` blocks in this file", self.limits.max_blocks));
        }
        // GitLab: "The string inside an interpolation block must not exceed 1 KB".
        if data.len() > MAX_BLOCK_BYTES {
            self.diags.push(
                Diagnostic::error(span, format!("a `$[[ ]]` block holds {} bytes; GitLab allows at most {MAX_BLOCK_BYTES}", data.len()))
                    .key("spec:inputs"),
            );
            return None;
        }
        if let Some(key) = access.strip_prefix("component.") {
            return self.component_block(key, data, span);
        }
        let Some(name) = access.strip_prefix("inputs.") else {
            let known = if self.component.is_some() { "`inputs.NAME` and `component.NAME`" } else { "only `inputs.NAME`" };
            self.diags.push(
                Diagnostic::error(span, format!("unknown interpolation key `{access}` in `$[[ {data} ]]`: {known} is known here"))
                    .key("spec:inputs"),
            );
            return None;
        };
        let Some(value) = self.values.get(name) else {
            if !self.values.failed(name) {
                self.diags.push(
                    Diagnostic::error(
                        span,
                        format!("unknown input `{name}` in `$[[ {data} ]]`: `{}` does not declare it in `spec:inputs`", self.file),
                    )
                    .key("spec:inputs")
                    .suggest(suggest(name, self.values.names())),
                );
            }
            return None;
        };
        let functions: Vec<&str> = parts.map(str::trim).collect();
        if functions.len() > MAX_FUNCTIONS {
            self.diags.push(
                Diagnostic::error(
                    span,
                    format!("`$[[ {data} ]]` applies {} functions; GitLab allows at most {MAX_FUNCTIONS}", functions.len()),
                )
                .key("spec:inputs"),
            );
            return None;
        }
        let mut value = value.clone();
        for f in functions {
            match self.apply(f, &value) {
                Ok(s) => value = Node::str(s, value.span),
                Err(message) => {
                    self.diags.push(Diagnostic::error(span, format!("in `$[[ {data} ]]`: {message}")).key("spec:inputs"));
                    return None;
                }
            }
        }
        Some(value)
    }

    /// `$[[ component.KEY ]]` (GitLab's `spec:component` context: `name`, `sha`, `version`,
    /// `reference`), available when the file is a component whose header lists `KEY`.
    fn component_block(&mut self, key: &str, data: &str, span: Span) -> Option<Node> {
        let Some(values) = self.component else {
            self.diags.push(
                Diagnostic::error(span, format!("`$[[ {data} ]]`: `{}` does not list `{key}` in `spec:component`", self.file))
                    .key("spec:component")
                    .help("declare it in the header: `spec: {component: [name, sha, version, reference]}`"),
            );
            return None;
        };
        match values.get(key) {
            Some(Some(v)) => Some(Node::str(v.clone(), span)),
            Some(None) if key == "version" => Some(Node::null(span)),
            Some(None) => {
                self.diags.push(
                    Diagnostic::error(span, format!("`$[[ {data} ]]`: the component's `{key}` is not known here"))
                        .key("spec:component")
                        .unavailable(),
                );
                None
            }
            None => {
                self.diags.push(
                    Diagnostic::error(span, format!("`$[[ {data} ]]`: `{}` does not list `{key}` in `spec:component`", self.file))
                        .key("spec:component")
                        .suggest(suggest(key, values.keys().map(String::as_str))),
                );
                None
            }
        }
    }

    fn apply(&self, function: &str, value: &Node) -> Result<String, String> {
        let (name, args) = match function.split_once('(') {
            Some((n, rest)) => (n.trim(), Some(rest.strip_suffix(')').ok_or_else(|| format!("`{function}` lacks its closing `)`"))?)),
            None => (function, None),
        };
        let known = ["expand_vars", "truncate", "posix_escape"];
        if !known.contains(&name) {
            return Err(format!(
                "no function `{function}`; the functions are `expand_vars`, `truncate(offset,length)` and `posix_escape`{}",
                suggest(name, known).map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
            ));
        }
        let Some(s) = value.as_str() else {
            return Err(format!("`{name}` applies to string inputs, found {}", value.kind()));
        };
        match (name, args) {
            ("expand_vars", None) => Ok(expand_keep_unknown(s, self.vars)),
            ("posix_escape", None) => Ok(posix_escape(s)),
            ("truncate", Some(args)) => {
                let nums: Vec<Option<usize>> = args.split(',').map(|a| a.trim().parse().ok()).collect();
                match nums[..] {
                    [Some(offset), Some(len)] => Ok(s.chars().skip(offset).take(len).collect()),
                    _ => Err(format!("`truncate({args})` takes two whole numbers: `truncate(offset,length)`")),
                }
            }
            ("truncate", None) => Err("`truncate` takes two numbers: `truncate(offset,length)`".into()),
            (_, Some(_)) => Err(format!("`{name}` takes no arguments")),
            _ => Err(format!("no function `{function}`")),
        }
    }
}

fn count_nodes(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) | Value::Reference(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(m) => 1 + m.values().map(|e| count_nodes(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

/// A value as Ruby's `to_s` writes it inside a string.
pub(super) fn to_text(n: &Node) -> String {
    match &n.value {
        Value::Null => String::new(),
        Value::Str(s) => s.clone(),
        _ => inspect(n),
    }
}

/// Ruby's `inspect`, which `Array#to_s` uses for its items.
fn inspect(n: &Node) -> String {
    match &n.value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i, _) => i.to_string(),
        Value::Float(f, _) => ruby_float(*f),
        Value::Str(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")),
        Value::Seq(items) | Value::Reference(items) => format!("[{}]", items.iter().map(inspect).collect::<Vec<_>>().join(", ")),
        Value::Map(m) => {
            let items: Vec<String> = m.iter().map(|(k, e)| format!("\"{k}\" => {}", inspect(&e.value))).collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Ruby's `Shellwords.escape`: a backslash before every character but `A-Za-z0-9_-.,:+/@`,
/// newlines quoted as `'\n'`, and `''` for the empty string.
fn posix_escape(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("'\n'"),
            c if c.is_ascii_alphanumeric() || "_-.,:+/@".contains(c) => out.push(c),
            c => {
                out.push('\\');
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_as_gitlab_finds_them() {
        assert_eq!(pieces("$[[ inputs.a ]]"), [Piece::Block { raw: "$[[ inputs.a ]]", data: "inputs.a" }]);
        assert_eq!(
            pieces("x-$[[inputs.a]]-$[[ inputs.b | truncate(0,1) ]]"),
            [
                Piece::Text("x-"),
                Piece::Block { raw: "$[[inputs.a]]", data: "inputs.a" },
                Piece::Text("-"),
                Piece::Block { raw: "$[[ inputs.b | truncate(0,1) ]]", data: "inputs.b | truncate(0,1)" },
            ]
        );
        // Not a block: unterminated, spanning lines, or too short.
        assert_eq!(pieces("$[[ inputs.a"), [Piece::Text("$[[ inputs.a")]);
        assert_eq!(pieces("$[[ a\n ]]"), [Piece::Text("$[[ a\n ]]")]);
        assert_eq!(pieces("$[[ ]]"), [Piece::Text("$[[ ]]")]);
    }

    /// `posix_escape` is Ruby's `Shellwords.escape` (GitLab's `Functions::PosixEscape`).
    #[test]
    fn posix_escape_is_shellwords_escape() {
        assert_eq!(posix_escape(""), "''");
        assert_eq!(posix_escape("a b;c"), "a\\ b\\;c");
        assert_eq!(posix_escape("v1.2-rc+3:x/y@z,w"), "v1.2-rc+3:x/y@z,w");
        assert_eq!(posix_escape("a\nb"), "a'\n'b");
        assert_eq!(posix_escape("é$"), "\\é\\$");
    }

    #[test]
    fn arrays_read_as_ruby_writes_them() {
        let span = Span::default();
        let n = Node::new(Value::Seq(vec![Node::str("a", span), Node::new(Value::Int(1, "1".into()), span)]), span);
        assert_eq!(to_text(&n), "[\"a\", 1]");
    }
}
