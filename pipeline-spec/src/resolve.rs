//! `extends` and `!reference`, applied to the merged configuration in GitLab's order:
//! includes are merged first, then `extends` is expanded, then `!reference` tags are replaced
//! (so a reference sees a job's inherited keys).

use std::collections::HashSet;

use crate::diag::{Diagnostic, suggest};
use crate::merge::merge_under;
use crate::yaml::{Map, Node, Value};

/// GitLab: `extends` supports up to 11 levels of inheritance (a job and 10 ancestors).
pub const MAX_EXTENDS_DEPTH: usize = 11;
/// GitLab: `!reference` tags can be nested up to 10 levels.
pub const MAX_REFERENCE_DEPTH: usize = 10;
/// Upper bound on nodes copied by `!reference`, so a reference bomb cannot exhaust memory.
pub const MAX_REFERENCE_NODES: usize = 2_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    InProgress,
    Done,
    Failed,
}

/// Expands `extends` of every top-level entry that has one. Returns the entries whose
/// `extends` could not be fully resolved, so later checks do not pile errors on them.
pub fn expand_extends(top: &mut Map, diags: &mut Vec<Diagnostic>) -> HashSet<String> {
    let mut state: Vec<Option<State>> = vec![None; top.len()];
    let mut levels: Vec<usize> = vec![0; top.len()];
    let mut failed = HashSet::new();
    let mut chain = Vec::new();
    for i in 0..top.len() {
        // Only entries with `extends` need work; skip the rest without touching their names.
        if top[i].value.get("extends").is_none() {
            continue;
        }
        let name = top.get_index(i).map(|(k, _)| k.clone()).unwrap_or_default();
        chain.clear();
        if !extend_one(top, &name, &mut state, &mut levels, &mut chain, diags) {
            failed.insert(name);
        }
    }
    failed
}

fn extend_one(
    top: &mut Map,
    name: &str,
    state: &mut [Option<State>],
    levels: &mut [usize],
    chain: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let Some(idx) = top.get_index_of(name) else { return false };
    match state[idx] {
        Some(State::Done) => return true,
        Some(State::Failed) => return false,
        Some(State::InProgress) => {
            let start = chain.iter().position(|c| c == name).unwrap_or(0);
            let cycle: Vec<&str> = chain[start..].iter().map(String::as_str).chain([name]).collect();
            let span = top.get(name).map_or_else(Default::default, |e| e.key_span);
            diags
                .push(Diagnostic::error(span, format!("circular dependency in `extends`: {}", cycle.join(" → "))).job(name).key("extends"));
            return false;
        }
        None => {}
    }
    let Some(entry) = top.get(name) else { return false };
    let Some(map) = entry.value.as_map() else {
        state[idx] = Some(State::Done);
        return true;
    };
    let Some(ext) = map.get("extends") else {
        state[idx] = Some(State::Done);
        return true;
    };
    let parents: Vec<(String, crate::source::Span)> = match &ext.value.value {
        Value::Str(s) => vec![(s.clone(), ext.value.span)],
        Value::Seq(items) => {
            let mut out = Vec::new();
            for it in items {
                match it.as_str() {
                    Some(s) => out.push((s.to_string(), it.span)),
                    None => diags.push(
                        Diagnostic::error(it.span, format!("`extends` names jobs or templates, found {}", it.kind()))
                            .job(name)
                            .key("extends"),
                    ),
                }
            }
            out
        }
        Value::Null => Vec::new(),
        _ => {
            diags.push(
                Diagnostic::error(ext.value.span, format!("`extends` must be a name or a list of names, found {}", ext.value.kind()))
                    .job(name)
                    .key("extends"),
            );
            Vec::new()
        }
    };
    if chain.len() >= MAX_EXTENDS_DEPTH {
        diags.push(
            Diagnostic::error(
                ext.key_span,
                format!("`extends` is nested more than {MAX_EXTENDS_DEPTH} levels deep: {}", chain.join(" → ")),
            )
            .job(name)
            .key("extends"),
        );
        return false;
    }
    let ext_span = ext.key_span;
    state[idx] = Some(State::InProgress);
    chain.push(name.to_string());
    let mut resolved_parents: Vec<usize> = Vec::with_capacity(parents.len());
    let mut ok = true;
    for (parent, span) in &parents {
        if !top.contains_key(parent.as_str()) {
            let candidates = top.keys().filter(|k| k.as_str() != name).map(String::as_str);
            diags.push(
                Diagnostic::error(*span, format!("`extends` refers to `{parent}`, which is not defined"))
                    .job(name)
                    .key("extends")
                    .suggest(suggest(parent, candidates))
                    .help("define it in this file or in an included one (is an `include` missing?)"),
            );
            ok = false;
            continue;
        }
        if !extend_one(top, parent, state, levels, chain, diags) {
            ok = false;
            continue;
        }
        let parent_idx = top.get_index_of(parent.as_str()).unwrap_or(idx);
        levels[idx] = levels[idx].max(levels[parent_idx] + 1);
        let parent_node = &top[parent_idx].value;
        if parent_node.as_map().is_none() {
            diags.push(
                Diagnostic::error(
                    *span,
                    format!("`extends` refers to `{parent}`, which is {} and not a job or template", parent_node.kind()),
                )
                .job(name)
                .key("extends"),
            );
            ok = false;
            continue;
        }
        resolved_parents.push(parent_idx);
    }
    chain.pop();
    if ok && levels[idx] >= MAX_EXTENDS_DEPTH {
        diags.push(
            Diagnostic::error(
                ext_span,
                format!("`extends` is nested more than {MAX_EXTENDS_DEPTH} levels deep ({} ancestors)", levels[idx]),
            )
            .job(name)
            .key("extends")
            .help("GitLab allows a job and up to 10 ancestors; flatten the template chain"),
        );
        ok = false;
    }
    state[idx] = Some(if ok { State::Done } else { State::Failed });
    // Later parents win over earlier ones, and the job over all: fill the job from the last
    // parent first, then from earlier ones, each only where nothing is set yet.
    let span = top[idx].value.span;
    let mut merged = std::mem::replace(&mut top[idx].value, Node::null(span));
    for &p in resolved_parents.iter().rev() {
        merge_under(&mut merged, &top[p].value);
    }
    if let Some(m) = merged.as_map_mut() {
        m.shift_remove("extends");
    }
    top[idx].value = merged;
    ok
}

/// Replaces every `!reference [a, b, ...]` with a copy of the value it points at.
pub fn resolve_references(top: &mut Map, diags: &mut Vec<Diagnostic>) {
    if !contains_reference_map(top) {
        return;
    }
    let snapshot = top.clone();
    let mut budget = MAX_REFERENCE_NODES;
    for (name, entry) in top.iter_mut() {
        resolve_node(&mut entry.value, &snapshot, name, 0, &mut budget, diags);
    }
}

fn contains_reference_map(m: &Map) -> bool {
    m.values().any(|e| contains_reference(&e.value))
}

fn contains_reference(n: &Node) -> bool {
    match &n.value {
        Value::Reference(_) => true,
        Value::Seq(items) => items.iter().any(contains_reference),
        Value::Map(m) => contains_reference_map(m),
        _ => false,
    }
}

fn resolve_node(node: &mut Node, top: &Map, job: &str, depth: usize, budget: &mut usize, diags: &mut Vec<Diagnostic>) {
    match &mut node.value {
        Value::Reference(path) => {
            let path: Vec<String> = path.iter().filter_map(|p| p.as_str().map(str::to_string)).collect();
            let span = node.span;
            if depth >= MAX_REFERENCE_DEPTH {
                diags.push(
                    Diagnostic::error(span, format!("`!reference` tags are nested more than {MAX_REFERENCE_DEPTH} levels deep")).job(job),
                );
                *node = Node::null(span);
                return;
            }
            match lookup(top, &path, span) {
                Ok(found) => {
                    let size = found.size();
                    if size > *budget {
                        diags.push(
                            Diagnostic::error(span, "`!reference` tags copy too much data (more than 2,000,000 nodes in all)").job(job),
                        );
                        *node = Node::null(span);
                        return;
                    }
                    *budget -= size;
                    let mut copy = found.clone();
                    resolve_node(&mut copy, top, job, depth + 1, budget, diags);
                    *node = copy;
                }
                Err(msg) => {
                    diags.push(msg.job(job));
                    *node = Node::null(span);
                }
            }
        }
        Value::Seq(items) => {
            let mut failed = Vec::new();
            for (i, it) in items.iter_mut().enumerate() {
                let was_reference = matches!(it.value, Value::Reference(_));
                resolve_node(it, top, job, depth, budget, diags);
                if was_reference && it.is_null() {
                    failed.push(i);
                }
            }
            // A list item whose `!reference` failed has its error already; leaving a null in
            // the list would only add "expected a string, found null" for the same cause.
            for i in failed.into_iter().rev() {
                items.remove(i);
            }
        }
        Value::Map(m) => {
            for e in m.values_mut() {
                resolve_node(&mut e.value, top, job, depth, budget, diags);
            }
        }
        _ => {}
    }
}

fn lookup<'a>(top: &'a Map, path: &[String], no_span: crate::source::Span) -> Result<&'a Node, Diagnostic> {
    let Some((first, rest)) = path.split_first() else {
        return Err(Diagnostic::error(no_span, "`!reference` needs at least a job or template name"));
    };
    let Some(mut cur) = top.get(first.as_str()).map(|e| &e.value) else {
        return Err(Diagnostic::error(no_span, format!("`!reference` points at `{first}`, which is not defined"))
            .suggest(suggest(first, top.keys().map(String::as_str))));
    };
    let mut walked = vec![first.as_str()];
    for key in rest {
        let Some(m) = cur.as_map() else {
            return Err(Diagnostic::error(
                no_span,
                format!("`!reference`: `{}` is {}, it has no key `{key}`", walked.join("."), cur.kind()),
            ));
        };
        let Some(next) = m.get(key.as_str()) else {
            return Err(Diagnostic::error(no_span, format!("`!reference`: `{}` has no key `{key}`", walked.join(".")))
                .suggest(suggest(key, m.keys().map(String::as_str))));
        };
        walked.push(key);
        cur = &next.value;
    }
    Ok(cur)
}
