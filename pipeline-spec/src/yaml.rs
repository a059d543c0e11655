//! YAML text → a tree of [`Node`]s that remember their source position.
//!
//! We read events from `saphyr-parser` and build our own tree rather than use a generic value
//! type, because GitLab CI needs four things a generic tree does not give together:
//! a line:col on every node (for diagnostics), the `!reference` tag kept as data, `<<` merge
//! keys (YAML 1.1, merged in Psych's order, which GitLab inherits), and hard limits checked while building
//! so that an alias bomb or a deeply nested document stops early with an error instead of
//! exhausting memory or the stack.
//!
//! Plain scalars are resolved the way Ruby's Psych (YAML 1.1) resolves them, because that is what
//! GitLab sees: `yes`/`on`/`off` are booleans, `0755` is octal, `1_000` and `1,000` are integers,
//! `1.10` is the float 1.1. Quoted scalars are always strings.

use std::collections::HashMap;
use std::fmt;

use indexmap::IndexMap;
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

/// Bounds applied while reading one file. Defaults follow GitLab's instance defaults.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted file, in bytes (GitLab: `max_yaml_size_bytes`, 2 MB).
    pub max_bytes: usize,
    /// Deepest accepted nesting of sequences and maps (GitLab: `max_yaml_depth`, 100).
    pub max_depth: usize,
    /// Most nodes a file may expand to once aliases are copied (guards against alias bombs).
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 2 * 1024 * 1024, max_depth: 100, max_nodes: 1_000_000 }
    }
}

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// An integer, with the text it was written as.
    Int(i64, Box<str>),
    /// A float, with the text it was written as.
    Float(f64, Box<str>),
    Str(String),
    Seq(Vec<Node>),
    /// Boxed: most nodes are scalars, and a map is four times their size.
    Map(Box<Map>),
    /// `!reference [.job, key, ...]`: a path to copy from elsewhere in the configuration.
    Reference(Vec<Node>),
}

/// A mapping with string keys, in source order. foldhash is several times faster than SipHash on
/// short keys and still seeded per process, so crafted files cannot force collisions.
pub type Map = IndexMap<String, Entry, foldhash::fast::RandomState>;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key_span: Span,
    pub value: Node,
}

impl Node {
    pub fn new(value: Value, span: Span) -> Node {
        Node { value, span }
    }

    pub fn null(span: Span) -> Node {
        Node { value: Value::Null, span }
    }

    pub fn str(s: impl Into<String>, span: Span) -> Node {
        Node { value: Value::Str(s.into()), span }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The text GitLab would use for a scalar in a string context (Ruby's `to_s`).
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i, _) => Some(i.to_string()),
            Value::Float(f, _) => Some(ruby_float(*f)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// How this value is named in "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(..) => "an integer",
            Value::Float(..) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
            Value::Reference(_) => "a `!reference`",
        }
    }

    /// Looks up a key of a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map().and_then(|m| m.get(key)).map(|e| &e.value)
    }

    /// Number of nodes in this subtree (used to bound alias and reference expansion).
    pub fn size(&self) -> usize {
        match &self.value {
            Value::Seq(items) | Value::Reference(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(m) => 1 + m.values().map(|e| e.value.size()).sum::<usize>(),
            _ => 1,
        }
    }
}

/// Ruby's `Float#to_s`, which GitLab applies to numeric variable values.
pub fn ruby_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Ruby switches to scientific notation: 1.0e+20, 1.5e-05.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') { mant.to_string() } else { format!("{mant}.0") };
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(_, raw) | Value::Float(_, raw) => f.write_str(raw),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Seq(items) => {
                f.write_str("[")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{it}")?;
                }
                f.write_str("]")
            }
            Value::Reference(items) => {
                f.write_str("!reference [")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{it}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, e)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {}", e.value)?;
                }
                f.write_str("}")
            }
        }
    }
}

/// The result of reading one file: the configuration document, plus the optional `spec:`
/// header document that precedes it in CI/CD component and input-enabled files.
#[derive(Debug, Clone)]
pub struct Document {
    pub root: Node,
    pub header: Option<Node>,
}

/// Parses YAML text. Warnings (duplicate keys) go to `warnings`; the first hard error stops.
pub fn parse(text: &str, file: FileId, limits: &Limits, warnings: &mut Vec<Diagnostic>) -> Result<Document, Diagnostic> {
    let start = Span::new(file, 1, 1);
    if text.len() > limits.max_bytes {
        return Err(Diagnostic::error(start, format!("file is {} bytes, more than the limit of {} bytes", text.len(), limits.max_bytes))
            .help("split the pipeline into smaller files with `include:local`"));
    }
    if let Some(pos) = text.find('\0') {
        let line = text[..pos].matches('\n').count() + 1;
        return Err(Diagnostic::error(Span::new(file, line as u32, 1), "file contains a NUL byte: this is not a YAML text file"));
    }
    let mut builder = Builder { limits, nodes: 0, anchors: HashMap::default(), stack: Vec::new(), docs: Vec::new(), warnings };
    let parser = Parser::new_from_str(text);
    for item in parser {
        let (event, span) = item.map_err(|e| scan_error(file, &e))?;
        let at = Span::new(file, span.start.line() as u32, span.start.col() as u32 + 1);
        builder.event(event, at)?;
        if builder.docs.len() > 2 {
            break;
        }
    }
    let mut docs = std::mem::take(&mut builder.docs);
    match docs.len() {
        0 => Ok(Document { root: Node::null(start), header: None }),
        1 => Ok(Document { root: docs.remove(0), header: None }),
        _ => {
            let first = docs.remove(0);
            let is_header = first.as_map().is_some_and(|m| m.len() == 1 && m.contains_key("spec"));
            if is_header && docs.len() == 1 {
                Ok(Document { root: docs.remove(0), header: Some(first) })
            } else {
                Err(Diagnostic::error(docs[0].span, "a second YAML document starts here")
                    .help("a CI file holds one document; only a `spec:` header may come before a `---` separator"))
            }
        }
    }
}

fn scan_error(file: FileId, e: &ScanError) -> Diagnostic {
    let m = e.marker();
    if e.info().contains("unknown anchor") {
        return Diagnostic::error(
            Span::new(file, m.line() as u32, m.col() as u32 + 1),
            "alias refers to an anchor that is not defined in this file",
        )
        .help("anchors do not cross files; to reuse a definition from an included file use `extends` or `!reference`");
    }
    if e.info().contains("recursion limit") {
        return Diagnostic::error(Span::new(file, m.line() as u32, m.col() as u32 + 1), "nesting is deeper than the limit of 100 levels");
    }
    Diagnostic::error(Span::new(file, m.line() as u32, m.col() as u32 + 1), format!("invalid YAML: {}", e.info()))
}

enum Frame {
    Seq {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
        reference: bool,
    },
    /// `merged`: keys that came from a `<<` merge; writing one again overrides it, which is
    /// what `<<` is for, not a duplicate.
    Map {
        map: Map,
        key: Option<(String, Span)>,
        span: Span,
        anchor: usize,
        merged: std::collections::HashSet<String>,
    },
}

struct Builder<'a> {
    limits: &'a Limits,
    nodes: usize,
    anchors: HashMap<usize, (Node, usize)>,
    stack: Vec<Frame>,
    docs: Vec<Node>,
    warnings: &'a mut Vec<Diagnostic>,
}

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, at: Span) -> Result<(), Diagnostic> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd => Ok(()),
            Event::Alias(id) => {
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    return Err(Diagnostic::error(at, "alias refers to an anchor that is not defined before it (or to itself)"));
                };
                self.count(size, at)?;
                let mut node = self.anchors[&id].0.clone();
                // Keep the anchor's own positions: diagnostics then point at the real definition.
                if matches!(node.value, Value::Str(_) | Value::Int(..) | Value::Float(..) | Value::Bool(_) | Value::Null) {
                    node.span = at;
                }
                self.push_value(node, at)
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, at)?;
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let value = scalar_value(&text, style, tag.as_deref(), at)?;
                let node = Node::new(value, at);
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.push_value(node, at)
            }
            Event::SequenceStart(anchor, tag) => {
                self.count(1, at)?;
                let reference = match tag.as_deref() {
                    None => false,
                    Some(t) if t.handle == "!" && t.suffix == "reference" => true,
                    Some(t) if t.handle == "tag:yaml.org,2002:" && t.suffix == "seq" => false,
                    Some(t) => return Err(unknown_tag(&format!("{}{}", t.handle, t.suffix), at)),
                };
                self.open(Frame::Seq { items: Vec::new(), span: at, anchor, reference }, at)
            }
            Event::MappingStart(anchor, tag) => {
                self.count(1, at)?;
                match tag.as_deref() {
                    None => {}
                    Some(t) if t.handle == "tag:yaml.org,2002:" && t.suffix == "map" => {}
                    Some(t) if t.handle == "!" && t.suffix == "reference" => {
                        return Err(Diagnostic::error(at, "`!reference` must be followed by a list such as `[.job, script]`"));
                    }
                    Some(t) => return Err(unknown_tag(&format!("{}{}", t.handle, t.suffix), at)),
                }
                self.open(Frame::Map { map: Map::default(), key: None, span: at, anchor, merged: Default::default() }, at)
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq { items, span, anchor, reference }) = self.stack.pop() else {
                    return Err(Diagnostic::error(at, "internal: unbalanced sequence end"));
                };
                let node = if reference {
                    if items.is_empty() || items.iter().any(|n| n.as_str().is_none()) {
                        return Err(Diagnostic::error(span, "`!reference` takes a list of names, like `!reference [.setup, script]`"));
                    }
                    Node::new(Value::Reference(items), span)
                } else {
                    Node::new(Value::Seq(items), span)
                };
                self.close(node, anchor, at)
            }
            Event::MappingEnd => {
                let Some(Frame::Map { map, span, anchor, .. }) = self.stack.pop() else {
                    return Err(Diagnostic::error(at, "internal: unbalanced mapping end"));
                };
                self.close(Node::new(Value::Map(Box::new(map)), span), anchor, at)
            }
        }
    }

    fn count(&mut self, n: usize, at: Span) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(Diagnostic::error(
                at,
                format!("document expands to more than {} nodes (aliases copied repeatedly?)", self.limits.max_nodes),
            )
            .help("reduce repeated `*alias` use; this limit protects the server from alias bombs"));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, at: Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(Diagnostic::error(at, format!("nesting is deeper than the limit of {} levels", self.limits.max_depth)));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self, node: Node, anchor: usize, at: Span) -> Result<(), Diagnostic> {
        if anchor != 0 {
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        self.push_value(node, at)
    }

    fn push_value(&mut self, node: Node, at: Span) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => {
                self.docs.push(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map { map, key, merged, .. }) => match key.take() {
                None => {
                    let span = node.span;
                    let kind = node.kind();
                    let name = match node.value {
                        Value::Str(s) => s,
                        Value::Int(_, raw) | Value::Float(_, raw) => raw.into_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => String::new(),
                        _ => return Err(Diagnostic::error(at, format!("a map key must be a plain value, found {kind}"))),
                    };
                    *key = Some((name, span));
                    Ok(())
                }
                Some((name, key_span)) => {
                    if name == "<<" {
                        // Psych's order, which GitLab inherits: each `<<` merges when it is read,
                        // so keys written after it win and keys written before it are replaced;
                        // within `<<: [*a, *b]` the earlier source wins.
                        let sources: Vec<Node> = match node.value {
                            Value::Map(_) => vec![node],
                            Value::Seq(items) => {
                                for it in &items {
                                    if it.as_map().is_none() {
                                        return Err(Diagnostic::error(it.span, format!("`<<` merges maps, found {}", it.kind())));
                                    }
                                }
                                items.into_iter().rev().collect()
                            }
                            _ => {
                                return Err(Diagnostic::error(
                                    node.span,
                                    format!("`<<` merges a map or a list of maps, found {}", node.kind()),
                                ));
                            }
                        };
                        for source in sources {
                            if let Value::Map(src) = source.value {
                                for (k, e) in *src {
                                    merged.insert(k.clone());
                                    map.insert(k, e);
                                }
                            }
                        }
                        return Ok(());
                    }
                    // One hash lookup; a repeated key keeps its first position, as in Ruby.
                    let overrides_merge = merged.remove(&name);
                    let (idx, old) = map.insert_full(name, Entry { key_span, value: node });
                    if let Some(old) = old.filter(|_| !overrides_merge) {
                        let name = map.get_index(idx).map_or("", |(k, _)| k.as_str());
                        self.warnings.push(
                            Diagnostic::warning(
                                key_span,
                                format!("duplicate key `{name}`: this value replaces the one at line {}", old.key_span.line),
                            )
                            .help("GitLab keeps the last value too; remove one of them"),
                        );
                    }
                    Ok(())
                }
            },
        }
    }
}

fn unknown_tag(tag: &str, at: Span) -> Diagnostic {
    let shown = tag.strip_prefix("tag:yaml.org,2002:").map_or_else(|| tag.to_string(), |s| format!("!!{s}"));
    Diagnostic::error(at, format!("unknown YAML tag `{shown}`"))
        .help("GitLab CI understands only `!reference` and the standard `!!str`, `!!int`, ... tags")
}

fn scalar_value(text: &str, style: ScalarStyle, tag: Option<&str>, at: Span) -> Result<Value, Diagnostic> {
    if let Some(tag) = tag {
        return match tag {
            "tag:yaml.org,2002:str" => Ok(Value::Str(text.to_string())),
            "tag:yaml.org,2002:null" => Ok(Value::Null),
            "tag:yaml.org,2002:bool" | "tag:yaml.org,2002:int" | "tag:yaml.org,2002:float" => match resolve_plain(text) {
                v @ (Value::Bool(_) | Value::Int(..) | Value::Float(..)) => Ok(v),
                _ => Err(Diagnostic::error(at, format!("`{text}` is not a valid value for tag `!!{}`", &tag[18..]))),
            },
            "!reference" => Err(Diagnostic::error(at, "`!reference` must be followed by a list such as `[.job, script]`")),
            other => Err(unknown_tag(other, at)),
        };
    }
    Ok(match style {
        ScalarStyle::Plain => resolve_plain(text),
        _ => Value::Str(text.to_string()),
    })
}

/// YAML 1.1 resolution of a plain scalar, as Ruby's Psych does it.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        _ => {}
    }
    // Most plain scalars are ordinary words: only short ones can be booleans or special floats.
    if text.len() <= 5 {
        let is = |w: &str| text.eq_ignore_ascii_case(w);
        if is("yes") || is("true") || is("on") {
            return Value::Bool(true);
        }
        if is("no") || is("false") || is("off") {
            return Value::Bool(false);
        }
        if is(".inf") || is("+.inf") {
            return Value::Float(f64::INFINITY, text.into());
        }
        if is("-.inf") {
            return Value::Float(f64::NEG_INFINITY, text.into());
        }
        if is(".nan") {
            return Value::Float(f64::NAN, text.into());
        }
    }
    if !text.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.')) {
        return Value::Str(text.to_string());
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i, text.into());
    }
    if let Some(f) = parse_float(text) {
        return Value::Float(f, text.into());
    }
    Value::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() {
        return None;
    }
    let clean = |s: &str, ok: fn(char) -> bool| -> Option<String> {
        if s.is_empty() || !s.chars().all(|c| ok(c) || c == '_' || c == ',') {
            return None;
        }
        Some(s.chars().filter(|c| *c != '_' && *c != ',').collect())
    };
    let magnitude: i64 = if let Some(b) = body.strip_prefix("0b") {
        i64::from_str_radix(&clean(b, |c| c == '0' || c == '1')?, 2).ok()?
    } else if let Some(h) = body.strip_prefix("0x") {
        i64::from_str_radix(&clean(h, |c| c.is_ascii_hexdigit())?, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&clean(&body[1..], |c| ('0'..='7').contains(&c))?, 8).ok()?
    } else if body.contains(':') {
        // Sexagesimal (base 60), e.g. `1:30` = 90.
        let mut parts = body.split(':');
        let first = parts.next()?;
        if first.is_empty() || !first.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return None;
        }
        let mut acc: i64 = first.replace('_', "").parse().ok()?;
        for p in parts {
            if p.is_empty() || p.len() > 2 || !p.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let v: i64 = p.parse().ok()?;
            if v > 59 {
                return None;
            }
            acc = acc.checked_mul(60)?.checked_add(v)?;
        }
        acc
    } else {
        let first = body.chars().next()?;
        if !first.is_ascii_digit() {
            return None;
        }
        // Psych accepts `_` and `,` only between digits.
        let bytes = body.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if (*b == b'_' || *b == b',') && (i + 1 >= bytes.len() || !bytes[i + 1].is_ascii_digit()) {
                return None;
            }
        }
        clean(body, |c| c.is_ascii_digit())?.parse().ok()?
    };
    Some(if neg { -magnitude } else { magnitude })
}

fn parse_float(text: &str) -> Option<f64> {
    // Psych: [-+]?([0-9][0-9_,]*)?\.[0-9]*([eE][-+][0-9]+)?
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int_part, rest) = body.split_once('.')?;
    if !int_part.is_empty()
        && (!int_part.starts_with(|c: char| c.is_ascii_digit()) || !int_part.chars().all(|c| c.is_ascii_digit() || c == '_' || c == ','))
    {
        return None;
    }
    let (frac, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if let Some(exp) = exp {
        let digits = exp.strip_prefix(['-', '+'])?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    if int_part.is_empty() && frac.is_empty() {
        return None;
    }
    let cleaned: String = text.chars().filter(|c| *c != '_' && *c != ',').collect();
    let cleaned = if cleaned.ends_with('.') { format!("{cleaned}0") } else { cleaned };
    let cleaned = cleaned.replace(".e", ".0e").replace(".E", ".0E");
    cleaned.parse().ok()
}

#[cfg(test)]
mod tests;
