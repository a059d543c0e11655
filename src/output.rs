//! Everything `piste` prints for lint, graph and jobs. Colour only on a terminal without `NO_COLOR`.

use std::io::IsTerminal;
use std::process::ExitCode;

use pipeline_spec::diag::{Diagnostic, Severity};
use pipeline_spec::plan::{Plan, PlanError};
use pipeline_spec::render;
use pipeline_spec::source::SourceMap;
use runner::local::{LocalOptions, LocalPipeline, open};
use serde_json::json;

use crate::GraphFormat;

pub const RED: &str = "\x1b[1;31m";
pub const YELLOW: &str = "\x1b[1;33m";
pub const GREEN: &str = "\x1b[1;32m";

fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

pub fn paint(text: &str, color: &str) -> String {
    if color_enabled() { format!("{color}{text}\x1b[0m") } else { text.to_string() }
}

pub fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap) {
    for d in diags {
        let rendered = d.display(sources).to_string();
        let label = d.severity.to_string();
        let color = if d.severity == Severity::Error { RED } else { YELLOW };
        // Colour only the severity word, so the line reads the same without colour.
        let rendered = rendered.replacen(&format!(": {label}: "), &format!(": {}: ", paint(&label, color)), 1);
        eprintln!("{rendered}");
    }
}

fn diag_json(d: &Diagnostic, sources: &SourceMap) -> serde_json::Value {
    json!({
        "file": sources.display(d.span.file),
        "line": d.span.line,
        "col": d.span.col,
        "severity": d.severity,
        "job": d.job,
        "key": d.key,
        "message": d.message,
        "suggestion": d.suggestion,
        "help": d.help,
    })
}

fn trigger_text(p: &LocalPipeline) -> String {
    let c = &p.context;
    let what = match (&c.tag, &c.branch) {
        (Some(t), _) => format!("tag `{t}`"),
        (None, Some(b)) => format!("branch `{b}`"),
        (None, None) => "this commit".to_string(),
    };
    format!("{what} ({})", c.source.as_str())
}

/// Plan problems (rules excluding a needed job, needs cycles) are errors too.
fn plan_diagnostics(p: &LocalPipeline) -> Vec<Diagnostic> {
    match &p.plan {
        Some(Err(PlanError::Invalid(d))) => d.clone(),
        _ => Vec::new(),
    }
}

pub fn lint(opts: &LocalOptions, as_json: bool) -> anyhow::Result<ExitCode> {
    let p = open(opts)?;
    let mut diags = p.loaded.diagnostics.clone();
    diags.extend(plan_diagnostics(&p));
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let valid = errors == 0;
    let jobs = match &p.plan {
        Some(Ok(plan)) => Some(plan.jobs.len()),
        _ => None,
    };
    if as_json {
        let out = json!({
            "file": p.file.to_string_lossy(),
            "valid": valid,
            "errors": errors,
            "warnings": warnings,
            "jobs": jobs,
            "files_read": p.loaded.sources.files().len(),
            "diagnostics": diags.iter().map(|d| diag_json(d, &p.loaded.sources)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_diagnostics(&diags, &p.loaded.sources);
        let file = p.loaded.sources.files().first().map_or_else(|| p.file.to_string_lossy().into_owned(), |f| f.display.clone());
        let files = p.loaded.sources.files().len();
        let read = if files > 1 { format!(", {files} files read") } else { String::new() };
        if valid {
            match &p.plan {
                Some(Ok(plan)) if plan.jobs.is_empty() => {
                    println!("{}: `{file}` is valid; no job runs for {}{read}", paint("ok", GREEN), trigger_text(&p))
                }
                Some(Ok(plan)) => println!(
                    "{}: `{file}` is valid: {} job{} in {} stage{} for {}{read}",
                    paint("ok", GREEN),
                    plan.jobs.len(),
                    if plan.jobs.len() == 1 { "" } else { "s" },
                    plan.stages.len(),
                    if plan.stages.len() == 1 { "" } else { "s" },
                    trigger_text(&p)
                ),
                Some(Err(PlanError::Filtered { .. })) => {
                    println!(
                        "{}: `{file}` is valid; `workflow:rules` create no pipeline for {}{read}",
                        paint("ok", GREEN),
                        trigger_text(&p)
                    )
                }
                _ => println!("{}: `{file}` is valid{read}", paint("ok", GREEN)),
            }
        } else {
            let w = if warnings > 0 { format!(" and {warnings} warning{}", if warnings == 1 { "" } else { "s" }) } else { String::new() };
            eprintln!("`{file}`: {errors} error{}{w}", if errors == 1 { "" } else { "s" });
        }
    }
    Ok(if valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Loads and plans, printing diagnostics; `Ok(None)` means "nothing to show" with that exit code.
fn planned(opts: &LocalOptions) -> anyhow::Result<Result<(LocalPipeline, Plan), ExitCode>> {
    let mut p = open(opts)?;
    let mut diags = p.loaded.diagnostics.clone();
    diags.extend(plan_diagnostics(&p));
    if diags.iter().any(Diagnostic::is_error) {
        print_diagnostics(&diags, &p.loaded.sources);
        return Ok(Err(ExitCode::from(1)));
    }
    print_diagnostics(&diags, &p.loaded.sources);
    match p.plan.take() {
        Some(Ok(plan)) => Ok(Ok((p, plan))),
        Some(Err(PlanError::Filtered { .. })) => {
            eprintln!("`workflow:rules` create no pipeline for {}", trigger_text(&p));
            Ok(Err(ExitCode::SUCCESS))
        }
        _ => Ok(Err(ExitCode::from(1))),
    }
}

pub fn graph(opts: &LocalOptions, format: GraphFormat) -> anyhow::Result<ExitCode> {
    let (_, plan) = match planned(opts)? {
        Ok(x) => x,
        // Nothing runs (`workflow:rules`): scripts reading JSON still get a document.
        Err(code) if code == ExitCode::SUCCESS && matches!(format, GraphFormat::Json) => {
            println!("{}", render::json_empty());
            return Ok(ExitCode::SUCCESS);
        }
        Err(code) => return Ok(code),
    };
    let out = match format {
        GraphFormat::Text => render::text(&plan),
        GraphFormat::Dot => render::dot(&plan),
        GraphFormat::Mermaid => render::mermaid(&plan),
        GraphFormat::Json => render::json(&plan) + "\n",
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn jobs(opts: &LocalOptions) -> anyhow::Result<ExitCode> {
    let (_, plan) = match planned(opts)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    print!("{}", render::jobs_table(&plan));
    Ok(ExitCode::SUCCESS)
}
