//! Plans rendered for people and machines: text, Graphviz dot, Mermaid, JSON and a job table.
//! Pure functions returning strings; the binary decides where they go.

use std::fmt::Write;

use serde::Serialize;

use crate::plan::Plan;

#[derive(Serialize)]
struct JsonPlan<'a> {
    stages: &'a [String],
    jobs: Vec<JsonJob<'a>>,
}

#[derive(Serialize)]
struct JsonJob<'a> {
    name: &'a str,
    stage: &'a str,
    needs: Option<Vec<&'a str>>,
    when: &'a str,
    allow_failure: bool,
}

/// What `graph --format json` prints when no pipeline is created (`workflow:rules` filtered it):
/// the same document with nothing in it, so scripts always read valid JSON.
pub fn json_empty() -> String {
    json(&Plan { name: None, stages: Vec::new(), jobs: Vec::new(), variables: Vec::new(), auto_cancel: Default::default() })
}

/// `{"stages": [...], "jobs": [{"name", "stage", "needs", "when", "allow_failure"}]}`;
/// `needs` is `null` for stage-ordered jobs.
pub fn json(plan: &Plan) -> String {
    let doc = JsonPlan {
        stages: &plan.stages,
        jobs: plan
            .jobs
            .iter()
            .map(|j| JsonJob {
                name: &j.name,
                stage: &j.stage,
                needs: j.needs.as_ref().map(|n| n.iter().map(|x| x.job.as_str()).collect()),
                when: j.when.as_str(),
                allow_failure: j.allow_failure.any(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}

/// Stages in order with their jobs; a job's needs after an arrow.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let (_, critical) = plan.critical_path(|_| 1);
    for (si, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(out, "{stage}");
        for (i, j) in plan.jobs.iter().enumerate().filter(|(_, j)| j.stage_index == si) {
            let mark = if critical.contains(&i) { "*" } else { " " };
            let mut line = format!("  {mark} {}", j.name);
            if j.when != crate::model::When::OnSuccess {
                let _ = write!(line, " [{}]", j.when.as_str());
            }
            if j.allow_failure.any() {
                line.push_str(" (allowed to fail)");
            }
            match &j.needs {
                Some(n) if n.is_empty() => line.push_str(" ← (no needs: starts at once)"),
                Some(n) => {
                    let names: Vec<&str> = n.iter().map(|x| x.job.as_str()).collect();
                    let _ = write!(line, " ← {}", names.join(", "));
                }
                None => {}
            }
            let _ = writeln!(out, "{line}");
        }
    }
    if !critical.is_empty() {
        let names: Vec<&str> = critical.iter().map(|&i| plan.jobs[i].name.as_str()).collect();
        let _ = writeln!(out, "\ncritical path (*): {}", names.join(" → "));
    }
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz: one cluster per stage, an edge per dependency (stage edges from the previous stage).
pub fn dot(plan: &Plan) -> String {
    let mut out = String::from("digraph pipeline {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (si, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(out, "  subgraph \"cluster_{si}\" {{\n    label=\"{}\";", dot_escape(stage));
        for (i, j) in plan.jobs.iter().enumerate().filter(|(_, j)| j.stage_index == si) {
            let style = if j.when == crate::model::When::Manual { ", style=\"rounded,dashed\"" } else { "" };
            let _ = writeln!(out, "    j{i} [label=\"{}\"{style}];", dot_escape(&j.name));
        }
        out.push_str("  }\n");
    }
    for (i, e) in edges(plan) {
        let _ = writeln!(out, "  j{e} -> j{i};");
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// Mermaid flowchart, stages as subgraphs.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for (si, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(out, "  subgraph s{si}[\"{}\"]", mermaid_escape(stage));
        for (i, j) in plan.jobs.iter().enumerate().filter(|(_, j)| j.stage_index == si) {
            let _ = writeln!(out, "    j{i}[\"{}\"]", mermaid_escape(&j.name));
        }
        out.push_str("  end\n");
    }
    for (i, e) in edges(plan) {
        let _ = writeln!(out, "  j{e} --> j{i}");
    }
    out
}

/// Drawn edges: needs as they are; stage ordering only from the nearest earlier stage with
/// jobs (the full transitive set would be unreadable).
fn edges(plan: &Plan) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, j) in plan.jobs.iter().enumerate() {
        match &j.needs {
            Some(needs) => {
                for n in needs {
                    if let Some(k) = plan.jobs.iter().position(|x| x.name == n.job) {
                        out.push((i, k));
                    }
                }
            }
            None if j.stage_index > 0 => {
                let prev = (0..j.stage_index).rev().find(|s| plan.jobs.iter().any(|x| x.stage_index == *s));
                if let Some(s) = prev {
                    out.extend(plan.jobs.iter().enumerate().filter(|(_, x)| x.stage_index == s).map(|(k, _)| (i, k)));
                }
            }
            None => {}
        }
    }
    out
}

/// A table like `gitlab-ci-local --list`: name, stage, when, allow_failure, needs.
pub fn jobs_table(plan: &Plan) -> String {
    let rows: Vec<[String; 5]> = plan
        .jobs
        .iter()
        .map(|j| {
            [
                j.name.clone(),
                j.stage.clone(),
                j.when.as_str().to_string(),
                j.allow_failure.any().to_string(),
                match &j.needs {
                    None => String::new(),
                    Some(n) => format!("[{}]", n.iter().map(|x| x.job.as_str()).collect::<Vec<_>>().join(",")),
                },
            ]
        })
        .collect();
    let header = ["name", "stage", "when", "allow_failure", "needs"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let cells: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}
