//! Byte-preserving edits of one scalar in a YAML file: the targeted value changes, every other
//! byte of the file stays as it was (comments, quoting, indentation, key order, line endings).
//!
//! The file is read with `saphyr-parser` (the project's one YAML parser) only to find where the
//! targeted scalar is; the edit is a splice of the original text at that place, in the scalar's
//! own style (plain, single- or double-quoted). The result is parsed again and checked: the
//! target holds the new value and every other event of the document is unchanged.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// What an edit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The whole new text (equal to the input when nothing changed).
    pub text: String,
    /// The value before the edit.
    pub old: String,
    /// The value after it.
    pub new: String,
}

impl Edit {
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("the file is not valid YAML: {0}")]
    Parse(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unsupported(String),
}

/// A scalar of the document, with where its text is.
#[derive(Debug, Clone)]
struct Scalar {
    value: String,
    style: ScalarStyle,
    /// Byte range of the scalar's text, quotes included.
    start: usize,
    end: usize,
    line: usize,
}

/// The document as a tree of positioned nodes.
#[derive(Debug, Clone)]
enum Tree {
    Scalar(Scalar),
    Map(Vec<(Tree, Tree)>, usize),
    Seq(Vec<Tree>),
    Alias,
}

impl Tree {
    fn get(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Map(entries, _) => entries.iter().rev().find(|(k, _)| matches!(k, Tree::Scalar(s) if s.value == key)).map(|(_, v)| v),
            _ => None,
        }
    }

    fn scalar(&self) -> Option<&Scalar> {
        match self {
            Tree::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

/// Byte offsets of (1-based line, 0-based character column) positions.
struct Offsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Offsets { text, line_starts }
    }

    fn at(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else { return self.text.len() };
        let rest = &self.text[start..];
        rest.char_indices().nth(col).map_or(self.text.len(), |(i, _)| start + i)
    }
}

fn events(text: &str) -> Result<Vec<(Event<'_>, saphyr_parser::Span)>, EditError> {
    let mut out = Vec::new();
    for ev in Parser::new_from_str(text) {
        let (ev, span) =
            ev.map_err(|e| EditError::Parse(format!("line {} column {}: {}", e.marker().line(), e.marker().col() + 1, e.info())))?;
        out.push((ev, span));
    }
    Ok(out)
}

/// Where the scalar starting at byte `start` ends: the parser's end marker is not always right
/// for quoted scalars (it may run past the closing quote), so the text is read again here.
/// `None` for block scalars and multi-line plain scalars (never edited).
fn scalar_end(text: &str, start: usize, style: ScalarStyle, value: &str) -> Option<usize> {
    let rest = text.get(start..)?;
    match style {
        ScalarStyle::Plain => rest.starts_with(value).then_some(start + value.len()),
        ScalarStyle::DoubleQuoted => {
            let mut chars = rest.char_indices().skip(1);
            if !rest.starts_with('"') {
                return None;
            }
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => return Some(start + i + 1),
                    _ => {}
                }
            }
            None
        }
        ScalarStyle::SingleQuoted => {
            if !rest.starts_with('\'') {
                return None;
            }
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return Some(start + i + 1);
                }
                i += 1;
            }
            None
        }
        _ => None,
    }
}

fn parse(text: &str) -> Result<Tree, EditError> {
    let offsets = Offsets::new(text);
    let evs = events(text)?;
    let mut stack: Vec<Tree> = Vec::new();
    let mut pending_keys: Vec<Option<Tree>> = Vec::new();
    let mut root = None;
    let mut docs = 0;
    for (ev, span) in evs {
        let node = match ev {
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(EditError::Unsupported("the file holds several YAML documents; piste edits files of one".into()));
                }
                continue;
            }
            Event::Scalar(value, style, _, _) => {
                let start = offsets.at(span.start.line(), span.start.col());
                let end = scalar_end(text, start, style, &value).unwrap_or_else(|| offsets.at(span.end.line(), span.end.col()));
                Tree::Scalar(Scalar { value: value.into_owned(), style, start, end, line: span.start.line() })
            }
            Event::Alias(_) => Tree::Alias,
            Event::MappingStart(..) => {
                stack.push(Tree::Map(Vec::new(), span.start.col()));
                pending_keys.push(None);
                continue;
            }
            Event::SequenceStart(..) => {
                stack.push(Tree::Seq(Vec::new()));
                pending_keys.push(None);
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                pending_keys.pop();
                stack.pop().ok_or_else(|| EditError::Parse("unbalanced document".into()))?
            }
            _ => continue,
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Tree::Seq(items)) => items.push(node),
            Some(Tree::Map(entries, _)) => {
                let slot = pending_keys.last_mut().expect("a slot per open collection");
                match slot.take() {
                    None => *slot = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
            Some(_) => {}
        }
    }
    root.ok_or_else(|| EditError::NotFound("the file is empty".into()))
}

/// Sets the scalar at the dotted key path `path` (`image.tag`; a number walks into a list).
pub fn set_key_path(text: &str, path: &str, value: &str) -> Result<Edit, EditError> {
    let tree = parse(text)?;
    let mut node = &tree;
    let mut walked = Vec::new();
    for part in path.split('.') {
        if part.is_empty() {
            return Err(EditError::NotFound(format!("`{path}` is not a key path: write it like `image.tag`")));
        }
        let next = match node {
            Tree::Map(..) => node.get(part),
            Tree::Seq(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        walked.push(part);
        node = next.ok_or_else(|| EditError::NotFound(format!("the file has no key `{}`", walked.join("."))))?;
    }
    let s = node.scalar().ok_or_else(|| EditError::Unsupported(format!("`{path}` is not a single value (a map, a list or an alias)")))?;
    replace(text, s, value)
}

/// What a kustomize or Flux edit sets from an image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// `registry/app:tag`, `registry/app@sha256:…`, `registry/app:tag@sha256:…`, or a bare tag or
    /// digest (`v1.2`, `sha256:…`: no name).
    pub fn parse(value: &str) -> ImageRef {
        let (rest, digest) = match value.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None if value.starts_with("sha256:") => ("", Some(value.to_string())),
            None => (value, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (rest[..last_slash + i].to_string(), Some(rest[last_slash + i + 1..].to_string())),
            // No `/` and no `:`: a bare tag.
            None if !rest.contains('/') && digest.is_none() => (String::new(), Some(rest.to_string())),
            None => (rest.to_string(), None),
        };
        ImageRef { name, tag: tag.filter(|t| !t.is_empty()), digest }
    }
}

/// Sets the `images:` entry called `name` of a kustomization: `digest` when the value has one,
/// else `newTag`. A missing field is added on its own line under the entry's `name:`.
pub fn set_kustomize_image(text: &str, name: &str, value: &str) -> Result<Edit, EditError> {
    let tree = parse(text)?;
    let images = tree.get("images").ok_or_else(|| EditError::NotFound("the file has no `images:` list".into()))?;
    let Tree::Seq(items) = images else { return Err(EditError::Unsupported("`images:` is not a list".into())) };
    let entry = items.iter().find(|it| it.get("name").and_then(Tree::scalar).is_some_and(|s| s.value == name)).ok_or_else(|| {
        let names: Vec<&str> = items.iter().filter_map(|it| it.get("name").and_then(Tree::scalar)).map(|s| s.value.as_str()).collect();
        EditError::NotFound(format!("`images:` has no entry named `{name}` (it has: {})", names.join(", ")))
    })?;
    let image = ImageRef::parse(value);
    let (field, new) = match (&image.digest, &image.tag) {
        (Some(d), _) => ("digest", d.clone()),
        (None, Some(t)) => ("newTag", t.clone()),
        (None, None) => return Err(EditError::Unsupported(format!("`{value}` has neither a tag nor a digest"))),
    };
    if let Some(s) = entry.get(field).and_then(Tree::scalar) {
        return replace(text, s, &new);
    }
    // Add `field: value` on a new line, indented as the entry's `name:` key.
    let Tree::Map(entries, col) = entry else { unreachable!("found by key") };
    let name_value = entry.get("name").and_then(Tree::scalar).expect("found by name");
    let key_col = entries.iter().find_map(|(k, _)| k.scalar().filter(|s| s.value == "name")).map_or(*col, |k| column_of(text, k.start));
    if text[..name_value.start].rfind('\n').map_or(0, |i| i + 1) > name_value.start || text[name_value.start..name_value.end].contains('\n')
    {
        return Err(EditError::Unsupported("the entry is not in block style".into()));
    }
    let line_end = text[name_value.end..].find('\n').map_or(text.len(), |i| name_value.end + i);
    if text[..line_end].ends_with('}') || text[..line_end].ends_with(']') {
        return Err(EditError::Unsupported(format!("the `{name}` entry is written in flow style: add `{field}:` to it by hand once")));
    }
    let eol = if text[..line_end].ends_with('\r') { "\r\n" } else { "\n" };
    let insert_at = if eol == "\r\n" { line_end - 1 } else { line_end };
    let rendered = render(&new, ScalarStyle::Plain);
    let mut out = String::with_capacity(text.len() + rendered.len() + key_col + 16);
    out.push_str(&text[..insert_at]);
    out.push_str(eol);
    out.push_str(&" ".repeat(key_col));
    out.push_str(field);
    out.push_str(": ");
    out.push_str(&rendered);
    out.push_str(&text[insert_at..]);
    let edit = Edit { text: out, old: String::new(), new };
    let check = set_kustomize_image_check(&edit.text, name, field)?;
    if check != edit.new {
        return Err(EditError::Unsupported(format!("adding `{field}` did not give the value back (read `{check}`)")));
    }
    Ok(edit)
}

fn set_kustomize_image_check(text: &str, name: &str, field: &str) -> Result<String, EditError> {
    let tree = parse(text)?;
    let Some(Tree::Seq(items)) = tree.get("images") else { return Err(EditError::NotFound("`images:` vanished".into())) };
    items
        .iter()
        .find(|it| it.get("name").and_then(Tree::scalar).is_some_and(|s| s.value == name))
        .and_then(|it| it.get(field))
        .and_then(Tree::scalar)
        .map(|s| s.value.clone())
        .ok_or_else(|| EditError::NotFound(format!("`{field}` vanished")))
}

fn column_of(text: &str, at: usize) -> usize {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..at].chars().count()
}

/// Sets the value marked by a Flux image-automation setter comment,
/// `# {"$imagepolicy": "ns:policy"}` (the whole reference), or with a `:tag`, `:name` or
/// `:digest` suffix (that part of it).
pub fn set_flux_marker(text: &str, policy: &str, value: &str) -> Result<Edit, EditError> {
    let tree = parse(text)?;
    let mut scalars = Vec::new();
    collect_scalars(&tree, &mut scalars);
    let (base, part) = match policy.matches(':').count() {
        1 => (policy, None),
        2 => {
            let (b, p) = policy.rsplit_once(':').expect("two colons");
            (b, Some(p))
        }
        _ => {
            return Err(EditError::NotFound(format!(
                "`{policy}` is not a Flux image policy: write `namespace:name` or `namespace:name:tag`"
            )));
        }
    };
    let marker = format!("\"$imagepolicy\": \"{policy}\"");
    let image = ImageRef::parse(value);
    let new = match part {
        None => value.to_string(),
        Some("tag") => image.tag.clone().ok_or_else(|| EditError::Unsupported(format!("`{value}` has no tag")))?,
        Some("name") => image.name.clone(),
        Some("digest") => image.digest.clone().ok_or_else(|| EditError::Unsupported(format!("`{value}` has no digest")))?,
        Some(other) => return Err(EditError::NotFound(format!("`{base}:{other}`: a Flux marker ends in `:tag`, `:name` or `:digest`"))),
    };
    let mut found = None;
    for (i, line) in text.split('\n').enumerate() {
        if let Some(hash) = line.find('#').filter(|&h| line[h..].contains(&marker)) {
            // The marked value: the last scalar that starts on this line, before the comment.
            let line_no = i + 1;
            let line_start: usize = text.split('\n').take(i).map(|l| l.len() + 1).sum();
            let s = scalars
                .iter()
                .filter(|s| s.line == line_no && s.start < line_start + hash)
                .max_by_key(|s| s.start)
                .ok_or_else(|| EditError::NotFound(format!("line {line_no} has the marker but no value before it")))?;
            if found.is_some() {
                return Err(EditError::Unsupported(format!("the marker `{marker}` appears more than once")));
            }
            found = Some((*s).clone());
        }
    }
    let s = found.ok_or_else(|| EditError::NotFound(format!("no line carries the Flux marker `# {{{marker}}}`")))?;
    replace(text, &s, &new)
}

fn collect_scalars<'t>(t: &'t Tree, out: &mut Vec<&'t Scalar>) {
    match t {
        Tree::Scalar(s) => out.push(s),
        Tree::Map(entries, _) => entries.iter().for_each(|(k, v)| {
            collect_scalars(k, out);
            collect_scalars(v, out);
        }),
        Tree::Seq(items) => items.iter().for_each(|i| collect_scalars(i, out)),
        Tree::Alias => {}
    }
}

/// Replaces scalar `s` with `value` in its own style, then checks the whole document.
/// Whether `file` is an Argo CD parameter override file, `.argocd-source-<app>.yaml` (or the
/// app-less `.argocd-source.yaml`), where `key` and `kustomize_image` mean Argo CD's lists.
pub fn is_argocd_source(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name.starts_with(".argocd-source") && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// In an Argo CD override file, sets the `value` of the `helm.parameters` entry called `name`
/// (what `argocd app set --helm-set` and Argo CD Image Updater write).
pub fn set_argocd_helm_parameter(text: &str, name: &str, value: &str) -> Result<Edit, EditError> {
    let tree = parse(text)?;
    let params = tree
        .get("helm")
        .and_then(|h| h.get("parameters"))
        .ok_or_else(|| EditError::NotFound("the file has no `helm.parameters` list".into()))?;
    let Tree::Seq(items) = params else { return Err(EditError::Unsupported("`helm.parameters` is not a list".into())) };
    let entry = items.iter().find(|it| it.get("name").and_then(Tree::scalar).is_some_and(|s| s.value == name)).ok_or_else(|| {
        let names: Vec<&str> = items.iter().filter_map(|it| it.get("name").and_then(Tree::scalar)).map(|s| s.value.as_str()).collect();
        EditError::NotFound(format!("`helm.parameters` has no parameter named `{name}` (it has: {})", names.join(", ")))
    })?;
    let s = entry
        .get("value")
        .and_then(Tree::scalar)
        .ok_or_else(|| EditError::NotFound(format!("the parameter `{name}` has no single `value`")))?;
    replace(text, s, value)
}

/// In an Argo CD override file, sets the `kustomize.images` item of image `name` — an item
/// `name=…`, or one whose image name is `name` — to `value`, keeping the `name=` form.
pub fn set_argocd_kustomize_image(text: &str, name: &str, value: &str) -> Result<Edit, EditError> {
    let tree = parse(text)?;
    let images = tree
        .get("kustomize")
        .and_then(|k| k.get("images"))
        .ok_or_else(|| EditError::NotFound("the file has no `kustomize.images` list".into()))?;
    let Tree::Seq(items) = images else { return Err(EditError::Unsupported("`kustomize.images` is not a list".into())) };
    let named = |s: &Scalar| match s.value.split_once('=') {
        Some((old, _)) => old == name,
        None => ImageRef::parse(&s.value).name == name,
    };
    let s = items.iter().filter_map(Tree::scalar).find(|s| named(s)).ok_or_else(|| {
        let have: Vec<&str> = items.iter().filter_map(Tree::scalar).map(|s| s.value.as_str()).collect();
        EditError::NotFound(format!("`kustomize.images` has no image `{name}` (it has: {})", have.join(", ")))
    })?;
    let new = if s.value.contains('=') { format!("{name}={value}") } else { value.to_string() };
    replace(text, s, &new)
}

fn replace(text: &str, s: &Scalar, value: &str) -> Result<Edit, EditError> {
    if s.value == value {
        return Ok(Edit { text: text.to_string(), old: s.value.clone(), new: value.to_string() });
    }
    let style = match s.style {
        ScalarStyle::Literal | ScalarStyle::Folded => {
            return Err(EditError::Unsupported("the value is a block scalar (`|` or `>`); piste edits single-line values".into()));
        }
        _ if text[s.start..s.end].contains('\n') => {
            return Err(EditError::Unsupported("the value spans several lines; piste edits single-line values".into()));
        }
        other => other,
    };
    let rendered = render(value, style);
    let mut out = String::with_capacity(text.len() + rendered.len());
    out.push_str(&text[..s.start]);
    out.push_str(&rendered);
    out.push_str(&text[s.end..]);
    verify(text, &out, s, value)?;
    Ok(Edit { text: out, old: s.value.clone(), new: value.to_string() })
}

/// The new document has the same events as the old one, but for the target's value.
fn verify(old: &str, new: &str, target: &Scalar, value: &str) -> Result<(), EditError> {
    let a = events(old)?;
    let b = events(new).map_err(|e| EditError::Unsupported(format!("the edit would break the file ({e}); nothing was changed")))?;
    let same = a.len() == b.len()
        && a.iter().zip(&b).all(|((ea, sa), (eb, _))| match (ea, eb) {
            (Event::Scalar(va, ..), Event::Scalar(vb, ..)) if sa.start.line() == target.line && va == &target.value => {
                vb == value || va == vb
            }
            _ => ea == eb,
        });
    if same { Ok(()) } else { Err(EditError::Unsupported("the edit would change more than the value; nothing was changed".into())) }
}

/// `value` as a scalar of `style`. A plain scalar that YAML (or a Helm chart reading it) would
/// take for something else than a string — a number, a boolean, null, or text with YAML syntax
/// in it — is double-quoted instead.
fn render(value: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::SingleQuoted => format!("'{}'", value.replace('\'', "''")),
        ScalarStyle::Plain if plain_safe(value) => value.to_string(),
        _ => {
            let mut s = String::with_capacity(value.len() + 2);
            s.push('"');
            for c in value.chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    '\t' => s.push_str("\\t"),
                    c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
                    c => s.push(c),
                }
            }
            s.push('"');
            s
        }
    }
}

fn plain_safe(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let typed = ["true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".inf", "-.inf", ".nan"].contains(&lower.as_str())
        || v.parse::<f64>().is_ok()
        || v.replace('_', "").parse::<i64>().is_ok()
        || v.starts_with("0x")
        || v.starts_with("0o");
    !v.is_empty()
        && !typed
        && v.trim() == v
        && !v.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.ends_with(':')
        && !v.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Argo CD's override file, as Argo CD Image Updater writes it: one line changes.
    #[test]
    fn argocd_source_files_have_their_helm_parameters_and_kustomize_images_set() {
        let helm = "helm:\n  parameters:\n  - name: image.name\n    value: registry.local/app/web\n    forcestring: true\n  - name: image.tag\n    value: \"1.0.0\"   # set by CI\n    forcestring: true\n";
        let e = set_argocd_helm_parameter(helm, "image.tag", "1.4.2").unwrap();
        assert_eq!(e.text, helm.replace("value: \"1.0.0\"", "value: \"1.4.2\""));
        assert_eq!(diff_lines(helm, &e.text), 1);
        let err = set_argocd_helm_parameter(helm, "image.digest", "x").unwrap_err().to_string();
        assert!(err.contains("no parameter named `image.digest` (it has: image.name, image.tag)"), "{err}");
        let digest = format!("sha256:{}", "c".repeat(64));
        let kustomize = "kustomize:\n  images:\n  - web=registry.local/app/web:1.0.0\n  - registry.local/app/api:2.0\n";
        let e = set_argocd_kustomize_image(kustomize, "web", &format!("registry.local/app/web@{digest}")).unwrap();
        assert_eq!(e.text, kustomize.replace("web=registry.local/app/web:1.0.0", &format!("web=registry.local/app/web@{digest}")));
        let e = set_argocd_kustomize_image(kustomize, "registry.local/app/api", "registry.local/app/api:2.1").unwrap();
        assert_eq!(diff_lines(kustomize, &e.text), 1);
        assert!(e.text.contains("  - registry.local/app/api:2.1\n"));
        assert!(set_argocd_kustomize_image(helm, "web", "x").unwrap_err().to_string().contains("no `kustomize.images` list"));
        assert!(is_argocd_source("apps/prod/.argocd-source-web.yaml") && is_argocd_source(".argocd-source.yml"));
        assert!(!is_argocd_source("envs/prod/values.yaml"));
    }

    fn diff_lines(a: &str, b: &str) -> usize {
        let (la, lb): (Vec<_>, Vec<_>) = (a.split('\n').collect(), b.split('\n').collect());
        assert_eq!(la.len(), lb.len(), "same number of lines");
        la.iter().zip(&lb).filter(|(x, y)| x != y).count()
    }

    const VALUES: &str = "# Helm values\nreplicaCount: 2\nimage:\n  repository: registry.local/app/web   # the app\n  tag: \"1.0.0\"\n  pullPolicy: IfNotPresent\nother:\n  tag: keep\nlist:\n  - {name: a, tag: x}\n";

    #[test]
    fn a_key_path_changes_one_scalar_and_keeps_its_quotes() {
        let e = set_key_path(VALUES, "image.tag", "1.2.3").unwrap();
        assert_eq!(e.old, "1.0.0");
        assert_eq!(e.text, VALUES.replace("tag: \"1.0.0\"", "tag: \"1.2.3\""));
        let e = set_key_path(VALUES, "image.repository", "registry.local/app/api").unwrap();
        assert_eq!(e.text, VALUES.replace("app/web   #", "app/api   #"));
        let e = set_key_path(VALUES, "list.0.tag", "z").unwrap();
        assert_eq!(diff_lines(VALUES, &e.text), 1);
        assert!(e.text.contains("{name: a, tag: z}"));
    }

    #[test]
    fn plain_values_that_would_change_type_are_quoted() {
        let text = "image:\n  tag: main\n";
        assert_eq!(set_key_path(text, "image.tag", "1.10").unwrap().text, "image:\n  tag: \"1.10\"\n");
        assert_eq!(set_key_path(text, "image.tag", "yes").unwrap().text, "image:\n  tag: \"yes\"\n");
        assert_eq!(set_key_path(text, "image.tag", "v1.10").unwrap().text, "image:\n  tag: v1.10\n");
        let single = "tag: 'a'\n";
        assert_eq!(set_key_path(single, "tag", "it's").unwrap().text, "tag: 'it''s'\n");
    }

    #[test]
    fn the_same_value_is_no_change_and_missing_keys_are_named() {
        let e = set_key_path(VALUES, "image.tag", "1.0.0").unwrap();
        assert!(!e.changed());
        assert_eq!(e.text, VALUES);
        assert_eq!(
            set_key_path(VALUES, "image.digest", "x").unwrap_err(),
            EditError::NotFound("the file has no key `image.digest`".into())
        );
        assert!(matches!(set_key_path(VALUES, "image", "x"), Err(EditError::Unsupported(_))));
        assert!(matches!(set_key_path("a: [1\n", "a", "x"), Err(EditError::Parse(_))));
    }

    #[test]
    fn crlf_and_utf8_survive() {
        let text = "# é\r\nimage:\r\n  tag: old # ü\r\n";
        let e = set_key_path(text, "image.tag", "new").unwrap();
        assert_eq!(e.text, "# é\r\nimage:\r\n  tag: new # ü\r\n");
    }

    #[test]
    fn kustomize_images_take_a_tag_or_a_digest() {
        let k = "resources:\n  - deploy.yaml\nimages:\n  - name: web\n    newName: registry.local/app/web\n    newTag: \"1.0\"\n  - name: api\n    newTag: 2.0.0\n";
        let e = set_kustomize_image(k, "api", "registry.local/app/api:2.1.0").unwrap();
        assert_eq!(e.text, k.replace("newTag: 2.0.0", "newTag: 2.1.0"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let e = set_kustomize_image(k, "web", &format!("registry.local/app/web@{digest}")).unwrap();
        assert_eq!(e.text, k.replace("  - name: web\n", &format!("  - name: web\n    digest: {digest}\n")));
        assert!(set_kustomize_image(k, "db", "x:1").unwrap_err().to_string().contains("it has: web, api"));
    }

    #[test]
    fn flux_markers_set_the_whole_reference_or_a_part() {
        let f = "spec:\n  image: registry.local/app/web:1.0 # {\"$imagepolicy\": \"flux-system:web\"}\n  tag: \"1.0\" # {\"$imagepolicy\": \"flux-system:web:tag\"}\n";
        let e = set_flux_marker(f, "flux-system:web", "registry.local/app/web:1.1").unwrap();
        assert_eq!(e.text, f.replace("web:1.0 #", "web:1.1 #"));
        let e = set_flux_marker(f, "flux-system:web:tag", "registry.local/app/web:1.1").unwrap();
        assert_eq!(e.text, f.replace("tag: \"1.0\"", "tag: \"1.1\""));
        assert!(matches!(set_flux_marker(f, "flux-system:api", "x:1"), Err(EditError::NotFound(_))));
    }

    #[test]
    fn image_references_split_into_name_tag_and_digest() {
        let r = ImageRef::parse("127.0.0.1:5000/app/web:v2@sha256:abc");
        assert_eq!((r.name.as_str(), r.tag.as_deref(), r.digest.as_deref()), ("127.0.0.1:5000/app/web", Some("v2"), Some("sha256:abc")));
        let r = ImageRef::parse("127.0.0.1:5000/app/web");
        assert_eq!((r.name.as_str(), r.tag), ("127.0.0.1:5000/app/web", None));
        assert_eq!(ImageRef::parse("v1.2").tag.as_deref(), Some("v1.2"));
    }
}
