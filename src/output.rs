//! Everything `piste` prints for lint, graph and jobs. Colour only on a terminal without `NO_COLOR`.

use std::io::IsTerminal;
use std::process::ExitCode;

use pipeline_spec::diag::{Diagnostic, Kind, Severity};
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

/// `piste lint`'s exit code when some includes could not be read here (see README, Commands).
const LINT_UNCHECKED: u8 = 3;

/// How a diagnostic is labelled: `error` and `warning`, and for errors that do not make the
/// pipeline invalid, `unavailable` (an include not readable here) and `unchecked` (an error
/// that may only come from one).
fn label(d: &Diagnostic) -> (&'static str, &'static str) {
    match (d.severity, d.kind) {
        (Severity::Warning, _) => ("warning", YELLOW),
        (Severity::Error, Kind::Invalid) => ("error", RED),
        (Severity::Error, Kind::Unavailable) => ("unavailable", YELLOW),
        (Severity::Error, Kind::FollowsFromUnavailable) => ("unchecked", YELLOW),
    }
}

pub fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap) {
    for d in diags {
        let rendered = d.display(sources).to_string();
        let written = d.severity.to_string();
        let (label, color) = label(d);
        // Colour only the label, so the line reads the same without colour.
        let rendered = rendered.replacen(&format!(": {written}: "), &format!(": {}: ", paint(label, color)), 1);
        eprintln!("{rendered}");
    }
}

fn diag_json(d: &Diagnostic, sources: &SourceMap) -> serde_json::Value {
    json!({
        "file": sources.display(d.span.file),
        "line": d.span.line,
        "col": d.span.col,
        "severity": d.severity,
        "kind": d.kind,
        "job": d.job,
        "key": d.key,
        "message": d.message,
        "suggestion": d.suggestion,
        "help": d.help,
        "related": d.related.iter().map(|r| json!({
            "file": sources.display(r.span.file),
            "line": r.span.line,
            "col": r.span.col,
            "message": r.message,
        })).collect::<Vec<_>>(),
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
    // Only invalid errors count against the pipeline; includes that cannot be read here (and
    // what only follows from them) mean "could not check", exit 3.
    let errors = diags.iter().filter(|d| d.is_invalid()).count();
    let unavailable = diags.iter().filter(|d| d.is_unavailable()).count();
    let unchecked = diags.iter().filter(|d| d.is_error() && d.kind == Kind::FollowsFromUnavailable).count();
    let warnings = diags.iter().filter(|d| !d.is_error()).count();
    let valid = errors == 0 && unavailable == 0;
    let jobs = match &p.plan {
        Some(Ok(plan)) => Some(plan.jobs.len()),
        _ => None,
    };
    if as_json {
        let out = json!({
            "file": p.file.to_string_lossy(),
            "valid": valid,
            "checked": unavailable == 0,
            "errors": errors,
            "unavailable": unavailable,
            "unchecked": unchecked,
            "warnings": warnings,
            "jobs": jobs,
            "files_read": p.loaded.sources.files().len(),
            "diagnostics": diags.iter().map(|d| diag_json(d, &p.loaded.sources)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_diagnostics(&diags, &p.loaded.sources);
        let file = display_file(&p);
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
        } else if errors > 0 {
            let w = if warnings > 0 { format!(" and {warnings} warning{}", if warnings == 1 { "" } else { "s" }) } else { String::new() };
            let u = if unavailable > 0 { format!("; {} unavailable", includes(unavailable)) } else { String::new() };
            eprintln!("`{file}`: {errors} error{}{w}{u}", if errors == 1 { "" } else { "s" });
        } else {
            let follow = match unchecked {
                0 => String::new(),
                1 => "; 1 error above may only follow from them".to_string(),
                n => format!("; {n} errors above may only follow from them"),
            };
            eprintln!("`{file}`: could not check: {} unavailable{follow}", includes(unavailable));
            eprintln!(
                "  map other projects and components with `--project-dir PROJECT=DIR`, templates with `--templates-dir DIR`, fetch remote files with `--allow-remote`, pass variables with `--var`"
            );
        }
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else if unavailable > 0 {
        ExitCode::from(LINT_UNCHECKED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The pipeline file as the user named it.
fn display_file(p: &LocalPipeline) -> String {
    p.loaded.sources.files().first().map_or_else(|| p.file.to_string_lossy().into_owned(), |f| f.display.clone())
}

fn includes(n: usize) -> String {
    format!("{n} include{}", if n == 1 { "" } else { "s" })
}

/// Loads and plans, printing diagnostics; `Ok(None)` means "nothing to show" with that exit code.
fn planned(opts: &LocalOptions) -> anyhow::Result<Result<(LocalPipeline, Plan), ExitCode>> {
    let mut p = open(opts)?;
    let mut diags = p.loaded.diagnostics.clone();
    diags.extend(plan_diagnostics(&p));
    if diags.iter().any(Diagnostic::is_invalid) {
        print_diagnostics(&diags, &p.loaded.sources);
        return Ok(Err(ExitCode::from(1)));
    }
    // Includes unreadable here: the plan would miss their jobs, so none is shown (as `lint`:
    // "could not check", exit 3).
    if diags.iter().any(Diagnostic::is_error) {
        print_diagnostics(&diags, &p.loaded.sources);
        let n = diags.iter().filter(|d| d.is_unavailable()).count();
        eprintln!("`{}`: could not plan: {} unavailable here", display_file(&p), includes(n));
        return Ok(Err(ExitCode::from(LINT_UNCHECKED)));
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
