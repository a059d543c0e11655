//! Variable lookup and `$VAR` expansion, with GitLab's and GitLab Runner's exact rules.
//!
//! Two grammars exist in GitLab and both are reproduced here, because pipelines rely on the
//! difference:
//!
//! * [`expand`] is what GitLab Runner does to job variables, `image:`, `services:` and the other
//!   fields it expands: Go's `os.Expand` with the runner's lookup (`common/spec/variables.go`).
//!   `$NAME` (ASCII letters, digits, `_`) and `${anything}` are looked up, an unknown name
//!   expands to nothing, `$$` is a literal `$`, the shell specials `$1`, `$*`, `$#`, `$@`, `$!`,
//!   `$?`, `$-` expand to nothing, `${}` and an unterminated `${` are dropped, and a `$` followed
//!   by anything else (or nothing) stays as written.
//! * [`expand_keep_unknown`] is GitLab's server-side `ExpandVariables.expand_existing`
//!   (`lib/expand_variables.rb`), used for `rules:changes` / `rules:exists` paths: `$NAME`,
//!   `${NAME}` and `%NAME%` with `NAME` = `[A-Za-z_][A-Za-z0-9_]*`; a known name is replaced, an
//!   unknown one stays verbatim, and `$$` is *not* special there.
//!
//! [`expand_all`] resolves a whole variable set before a job runs, as GitLab does in two steps:
//! the server (`Collection#sort_and_expand_all`) expands variables in dependency order, so
//! references are followed to any depth, and the runner (`Variables#Expand`) then expands every
//! value once more, which turns the remaining unknown references into `""` and `$$` into `$`.
//!
//! Every output is bounded: one expanded value is cut at [`MAX_EXPANDED_LEN`] bytes and a whole
//! [`expand_all`] at [`MAX_TOTAL_EXPANDED_LEN`], so `A: $B$B`, `B: $C$C`, … cannot grow
//! exponentially. Nothing that was cut could have run anyway: Linux refuses a single
//! environment string longer than 128 KiB (`MAX_ARG_STRLEN`).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use indexmap::IndexMap;

/// Longest value [`expand`] and [`expand_all`] produce, in bytes (1 MiB); longer ones are cut at
/// a character boundary.
pub const MAX_EXPANDED_LEN: usize = 1 << 20;

/// Total bytes each of the two steps of one [`expand_all`] call may produce (64 MiB); values
/// past the budget are cut.
pub const MAX_TOTAL_EXPANDED_LEN: usize = 64 << 20;

/// Something that knows variable values by name.
pub trait Lookup {
    /// The value of `name`, or `None` when it is not defined (which differs from defined-empty).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<T: Lookup + ?Sized> Lookup for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

impl<K, V, S> Lookup for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(AsRef::as_ref)
    }
}

impl<K: Borrow<str> + Ord, V: AsRef<str>> Lookup for BTreeMap<K, V> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(AsRef::as_ref)
    }
}

impl<K, V, S> Lookup for IndexMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(AsRef::as_ref)
    }
}

/// Pairs in precedence order: the **last** pair with a name wins, like GitLab's variable
/// collections (`Collection#[]` returns the last item appended with that key).
impl<K: AsRef<str>, V: AsRef<str>> Lookup for [(K, V)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k.as_ref() == name).map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Lookup for Vec<(K, V)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Lookup for [(K, V); N] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// Precedence levels stacked without copying: the **first** layer that defines a name wins, so
/// list the strongest level first (e.g. pipeline variables, then job, then global, then
/// predefined).
pub struct Layered<'a>(pub Vec<&'a dyn Lookup>);

impl Lookup for Layered<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|layer| layer.lookup(name))
    }
}

/// One piece of a string in the runner's (`os.Expand`) grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    /// Text copied as is.
    Text(&'a str),
    /// `$NAME` or `${NAME}`: looked up.
    Ref(&'a str),
    /// Contributes nothing: `$$` gives `Text("$")`, while `$1`, `$*`, `${}` or a bad `${` give this.
    Nothing,
}

/// Shell special parameters; `os.Expand` takes each as a one-character name.
fn is_shell_special(b: u8) -> bool {
    matches!(b, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9')
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Splits `input` the way Go's `os.Expand` reads it, calling `f` for each piece in order.
/// `f` returns `false` to stop early (used when the output is full).
fn for_each_piece<'a>(input: &'a str, mut f: impl FnMut(Piece<'a>) -> bool) {
    let bytes = input.as_bytes();
    let mut literal_start = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] != b'$' || j + 1 >= bytes.len() {
            j += 1;
            continue;
        }
        if literal_start < j && !f(Piece::Text(&input[literal_start..j])) {
            return;
        }
        let rest = &input[j + 1..];
        let (piece, consumed) = shell_name(rest);
        if !f(piece) {
            return;
        }
        j += 1 + consumed;
        literal_start = j;
    }
    if literal_start < input.len() {
        f(Piece::Text(&input[literal_start..]));
    }
}

/// What follows a `$` (never empty): the piece and how many bytes after the `$` it used.
fn shell_name(rest: &str) -> (Piece<'_>, usize) {
    let b = rest.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_shell_special(b[1]) && b[2] == b'}' {
            return (special(&rest[1..2]), 3);
        }
        return match rest.find('}') {
            Some(1) => (Piece::Nothing, 2), // `${}`: os.Expand drops it
            Some(end) => (Piece::Ref(&rest[1..end]), end + 1),
            None => (Piece::Nothing, 1), // unterminated `${`: the `${` is dropped
        };
    }
    if is_shell_special(b[0]) {
        return (special(&rest[..1]), 1);
    }
    let len = b.iter().take_while(|&&c| is_name_byte(c)).count();
    if len == 0 {
        (Piece::Text("$"), 0) // not a name: the `$` stays
    } else {
        (Piece::Ref(&rest[..len]), len)
    }
}

/// `$$` is a literal `$` (the runner's lookup answers `$` for it); other specials are empty.
fn special(name: &str) -> Piece<'_> {
    if name == "$" { Piece::Text("$") } else { Piece::Nothing }
}

/// Appends up to `limit` total bytes, cutting at a character boundary. Returns `false` when full.
fn push_bounded(out: &mut String, s: &str, limit: usize) -> bool {
    let room = limit.saturating_sub(out.len());
    if s.len() <= room {
        out.push_str(s);
        return true;
    }
    let mut cut = room;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&s[..cut]);
    false
}

/// Expands `$VAR`, `${VAR}` and `$$` like GitLab Runner: unknown names become `""`.
///
/// The result is at most [`MAX_EXPANDED_LEN`] bytes.
pub fn expand(input: &str, vars: &dyn Lookup) -> String {
    expand_limited(input, |name| vars.lookup(name), MAX_EXPANDED_LEN).0
}

/// Expands with `resolve`; returns the text and whether it was cut at `limit`.
fn expand_limited<'v>(input: &str, mut resolve: impl FnMut(&str) -> Option<&'v str>, limit: usize) -> (String, bool) {
    let mut out = String::with_capacity(input.len().min(limit));
    let mut complete = true;
    for_each_piece(input, |piece| {
        complete = match piece {
            Piece::Text(t) => push_bounded(&mut out, t, limit),
            Piece::Ref(name) => push_bounded(&mut out, resolve(name).unwrap_or(""), limit),
            Piece::Nothing => true,
        };
        complete
    });
    (out, !complete)
}

/// Expands `$NAME`, `${NAME}` and `%NAME%` like GitLab's `expand_existing`: known names are
/// replaced, unknown references stay exactly as written, `$$` and `$1` are left alone.
///
/// Used where a half-expanded value is more useful than a silently shortened one: the globs of
/// `rules:changes` / `rules:exists`, and text shown to people. At most [`MAX_EXPANDED_LEN`] bytes.
pub fn expand_keep_unknown(input: &str, vars: &dyn Lookup) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len().min(MAX_EXPANDED_LEN));
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let Some((name, len)) = ruby_reference(input, i) else {
            i += 1;
            continue;
        };
        let whole = &input[i..i + len];
        let replacement = vars.lookup(name).unwrap_or(whole);
        if !push_bounded(&mut out, &input[literal_start..i], MAX_EXPANDED_LEN) || !push_bounded(&mut out, replacement, MAX_EXPANDED_LEN) {
            return out;
        }
        i += len;
        literal_start = i;
    }
    push_bounded(&mut out, &input[literal_start..], MAX_EXPANDED_LEN);
    out
}

/// GitLab's `\$(NAME)|\${NAME}|%NAME%` at byte `at` of `input`: the name and the matched
/// length. Only an ASCII `$` or `%` can start one, so `at` may be any byte offset.
fn ruby_reference(input: &str, at: usize) -> Option<(&str, usize)> {
    if !matches!(input.as_bytes().get(at), Some(b'$' | b'%')) {
        return None;
    }
    let s = &input[at..];
    let b = s.as_bytes();
    let name_at = |start: usize| {
        let first_ok = b.get(start).is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
        let len = if first_ok { b[start..].iter().take_while(|&&c| is_name_byte(c)).count() } else { 0 };
        (len > 0).then(|| &s[start..start + len])
    };
    match b.first()? {
        b'$' if b.get(1) == Some(&b'{') => {
            let name = name_at(2)?;
            (b.get(2 + name.len()) == Some(&b'}')).then_some((name, name.len() + 3))
        }
        b'$' => name_at(1).map(|name| (name, name.len() + 1)),
        b'%' => {
            let name = name_at(1)?;
            (b.get(1 + name.len()) == Some(&b'%')).then_some((name, name.len() + 2))
        }
        _ => None,
    }
}

/// The names [`expand`] would look up in `input`, in order of first use, each once.
///
/// `$$` and the shell specials (`$1`, `$*`, …) are not references. A braced reference is given
/// as written, so `${A:-x}` reports `A:-x` (the runner looks that whole text up, and finds
/// nothing).
pub fn references(input: &str) -> Vec<&str> {
    // A set, not `Vec::contains`: a long value with many distinct names must stay linear.
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<&str> = Vec::new();
    for_each_piece(input, |piece| {
        if let Piece::Ref(name) = piece
            && seen.insert(name)
        {
            names.push(name);
        }
        true
    });
    names
}

/// One variable definition, as it stands in a `variables:` block or a precedence level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    pub value: String,
    /// `expand: false`: the value is used exactly as written, never expanded.
    pub raw: bool,
}

impl Var {
    /// A variable whose value is expanded.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Var { name: name.into(), value: value.into(), raw: false }
    }

    /// A variable with `expand: false`.
    pub fn raw(name: impl Into<String>, value: impl Into<String>) -> Self {
        Var { name: name.into(), value: value.into(), raw: true }
    }
}

/// What [`expand_all_report`] found besides the values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpandReport {
    /// Final value of every name, in order of the name's first definition.
    pub values: IndexMap<String, String>,
    /// Groups of names that reference each other in a loop, each group in definition order.
    /// GitLab refuses such a pipeline ("circular variable reference detected"); their values
    /// here are left exactly as written.
    pub cycles: Vec<Vec<String>>,
    /// Names whose value was cut at [`MAX_EXPANDED_LEN`] or by the [`MAX_TOTAL_EXPANDED_LEN`]
    /// budget.
    pub truncated: Vec<String>,
}

/// Expands a whole variable set the way a job finally sees it. See [`expand_all_report`].
pub fn expand_all(vars: &[Var]) -> IndexMap<String, String> {
    expand_all_report(vars).values
}

/// Expands a whole variable set exactly as GitLab's two steps do.
///
/// `vars` is in precedence order: a later entry with the same name overrides an earlier one
/// (callers pass predefined < global < job < pipeline/trigger variables).
///
/// 1. **Server** (`Collection#sort_and_expand_all(keep_undefined: true, expand_raw_refs:
///    false)`): variables are sorted by their references and expanded in that order, so chains
///    resolve to any depth (`IMAGE: $REGISTRY/$TAG` with `TAG: $CI_COMMIT_REF_SLUG` works in
///    any order). Grammar: `$NAME`, `${NAME}`, `%NAME%` with `NAME` = `[A-Za-z_][A-Za-z0-9_]*`.
///    A reference means the final definition of that name, except that a variable mentioning
///    its own name gets the definition it overrides (a job's `OPTS: "$OPTS -b"` extends the
///    global `OPTS`). Unknown names, references to raw variables, `$$` and `%%` are kept as
///    written.
/// 2. **Runner** (`Variables#Expand`): every non-raw value is expanded **once** with Go's
///    `os.Expand` (see [`expand`]) against the step-1 values, the last definition winning:
///    unknown names become `""`, `$$` becomes `$`, and a reference to a raw variable receives
///    its value unexpanded. Text substituted here is not expanded again.
///
/// A raw variable (`expand: false`) is never expanded in either step.
///
/// Variables in a reference loop (`A: $B`, `B: $A`) are left exactly as written and listed in
/// [`ExpandReport::cycles`]; GitLab rejects that pipeline with "circular variable reference
/// detected", so the caller should report it. (A variable that only mentions itself is not a
/// loop, as in GitLab: `X: "x$X"` with no earlier `X` gives `xx$X` after both steps.) The work
/// is linear in the input: no recursion and no repeated expansion. Each value is cut at
/// [`MAX_EXPANDED_LEN`] bytes and all values of one call together at
/// [`MAX_TOTAL_EXPANDED_LEN`] (see [`ExpandReport::truncated`]).
///
/// Not reproduced: file-type variables (the runner substitutes a file path) and GitLab's
/// stricter loop check that also counts references to *overridden* definitions.
pub fn expand_all_report(vars: &[Var]) -> ExpandReport {
    let graph = Graph::new(vars);
    let mut report = ExpandReport::default();
    let mut budget = MAX_TOTAL_EXPANDED_LEN;
    let mut in_cycle = vec![false; vars.len()];

    // Step 1, server: dependency order, unknown and raw references kept.
    let mut server: Vec<Option<String>> = vec![None; vars.len()];
    for component in graph.components_in_dependency_order() {
        if component.len() > 1 {
            let mut ids = component.clone();
            ids.sort_unstable();
            report.cycles.push(ids.iter().map(|&i| vars[i].name.clone()).collect());
        }
        for &i in &component {
            let var = &vars[i];
            in_cycle[i] = component.len() > 1;
            let limit = MAX_EXPANDED_LEN.min(budget);
            let (text, cut) = if var.raw || in_cycle[i] {
                copy_limited(&var.value, limit)
            } else {
                server_expand(&var.value, limit, |name| {
                    let t = graph.target(i, name)?;
                    if vars[t].raw { None } else { server[t].as_deref() }
                })
            };
            if cut {
                report.truncated.push(var.name.clone());
            }
            budget -= text.len();
            server[i] = Some(text);
        }
    }

    // Step 2, runner: one `os.Expand` pass over each final value, with a fresh budget.
    let mut budget = MAX_TOTAL_EXPANDED_LEN;
    let step1 = |name: &str| graph.last.get(name).map(|&t| server[t].as_deref().unwrap_or(""));
    for (i, var) in vars.iter().enumerate() {
        if graph.last[var.name.as_str()] != i {
            report.values.entry(var.name.clone()).or_default();
            continue;
        }
        let own = server[i].as_deref().unwrap_or("");
        let limit = MAX_EXPANDED_LEN.min(budget);
        let (text, cut) = if var.raw || in_cycle[i] { copy_limited(own, limit) } else { expand_limited(own, step1, limit) };
        if cut && !report.truncated.contains(&var.name) {
            report.truncated.push(var.name.clone());
        }
        budget -= text.len();
        report.values.insert(var.name.clone(), text);
    }
    report
}

fn copy_limited(s: &str, limit: usize) -> (String, bool) {
    let mut out = String::new();
    let complete = push_bounded(&mut out, s, limit);
    (out, !complete)
}

/// GitLab's server-side grammar: `$NAME`, `${NAME}`, `%NAME%` replaced when `resolve` knows
/// the name, everything else (including `$$` and `%%`) kept as written.
fn server_expand<'v>(input: &str, limit: usize, mut resolve: impl FnMut(&str) -> Option<&'v str>) -> (String, bool) {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len().min(limit));
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if matches!(&bytes[i..], [b'$', b'$', ..] | [b'%', b'%', ..]) {
            i += 2;
            continue;
        }
        let Some((name, len)) = ruby_reference(input, i) else {
            i += 1;
            continue;
        };
        if let Some(value) = resolve(name) {
            if !push_bounded(&mut out, &input[literal_start..i], limit) || !push_bounded(&mut out, value, limit) {
                return (out, true);
            }
            literal_start = i + len;
        }
        i += len;
    }
    let complete = push_bounded(&mut out, &input[literal_start..], limit);
    (out, !complete)
}

/// Names a value refers to in GitLab's server-side grammar (what its variable sort follows).
fn server_references(input: &str) -> Vec<&str> {
    let bytes = input.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if matches!(&bytes[i..], [b'$', b'$', ..] | [b'%', b'%', ..]) {
            i += 2;
        } else if let Some((name, len)) = ruby_reference(input, i) {
            names.push(name);
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// Which definition each reference points to, and the dependency order.
struct Graph<'v> {
    vars: &'v [Var],
    /// Index of the final definition of each name.
    last: HashMap<&'v str, usize>,
    /// For each entry, the previous definition of the same name (what a self-reference means).
    previous: Vec<Option<usize>>,
    /// Direct dependencies of each entry (deduplicated).
    deps: Vec<Vec<usize>>,
}

impl<'v> Graph<'v> {
    fn new(vars: &'v [Var]) -> Self {
        let mut last = HashMap::new();
        let mut previous = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            previous.push(last.insert(var.name.as_str(), i));
        }
        let mut graph = Graph { vars, last, previous, deps: Vec::with_capacity(vars.len()) };
        for (i, var) in vars.iter().enumerate() {
            let mut deps = Vec::new();
            if !var.raw {
                deps.extend(server_references(&var.value).into_iter().filter_map(|name| graph.target(i, name)));
                deps.retain(|&t| !vars[t].raw);
                deps.sort_unstable();
                deps.dedup();
            }
            graph.deps.push(deps);
        }
        graph
    }

    /// The definition a reference to `name` inside entry `from` means.
    fn target(&self, from: usize, name: &str) -> Option<usize> {
        if self.vars[from].name == name { self.previous[from] } else { self.last.get(name).copied() }
    }

    /// Strongly connected components reachable from the final definitions, dependencies first
    /// (Tarjan's algorithm with an explicit stack, so a long chain cannot overflow the stack).
    fn components_in_dependency_order(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.vars.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut components = Vec::new();
        let mut next_index = 0;
        let mut roots: Vec<usize> = self.last.values().copied().collect();
        roots.sort_unstable();

        for root in roots {
            if index[root] != UNSEEN {
                continue;
            }
            // Each frame: node and how many of its dependencies were already visited.
            let mut frames = vec![(root, 0usize)];
            index[root] = next_index;
            low[root] = next_index;
            next_index += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&mut (node, ref mut child)) = frames.last_mut() {
                if let Some(&dep) = self.deps[node].get(*child) {
                    *child += 1;
                    if index[dep] == UNSEEN {
                        index[dep] = next_index;
                        low[dep] = next_index;
                        next_index += 1;
                        stack.push(dep);
                        on_stack[dep] = true;
                        frames.push((dep, 0));
                    } else if on_stack[dep] {
                        low[node] = low[node].min(index[dep]);
                    }
                    continue;
                }
                frames.pop();
                if let Some(&(parent, _)) = frames.last() {
                    low[parent] = low[parent].min(low[node]);
                }
                if low[node] == index[node] {
                    let mut component = Vec::new();
                    while let Some(member) = stack.pop() {
                        on_stack[member] = false;
                        component.push(member);
                        if member == node {
                            break;
                        }
                    }
                    components.push(component);
                }
            }
        }
        components
    }
}

#[cfg(test)]
mod tests;
