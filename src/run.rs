//! `piste run`: wiring (executor, Ctrl-C, `--watch`) and rendering of run events.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline_spec::plan::PlanError;
use runner::local::{LocalOptions, open};
use runner::run::{ExecutorKind, JobResult, RunConfig, RunEvent, RunSummary, choose_executor, reuse, run_pipeline};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::output::{self, GREEN, RED, YELLOW, paint};

pub struct RunArgs {
    pub spec: LocalOptions,
    pub jobs: Vec<String>,
    pub executor: ExecutorKind,
    pub concurrency: usize,
    pub worktree: bool,
    pub secrets: Vec<(String, String)>,
    pub json: bool,
    pub watch: bool,
    pub quiet: bool,
    pub image: Option<String>,
    /// `--sign-key`'s PEM.
    pub signing_key: Option<String>,
    /// `--reuse` (`Some(true)`), `--no-reuse` (`Some(false)`), or `.piste/config.toml` decides.
    pub reuse: Option<bool>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        spawn_ctrl_c(cancel.clone());
        if !args.watch {
            return run_once(&args, cancel).await;
        }
        watch(&args, cancel).await
    })
}

fn spawn_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncanceling: `after_script` runs, containers are removed (Ctrl-C again to quit at once)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}

async fn run_once(args: &RunArgs, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
    let mut local = open(&args.spec)?;
    let mut diags = local.loaded.diagnostics.clone();
    if let Some(Err(PlanError::Invalid(d))) = &local.plan {
        diags.extend(d.iter().cloned());
    }
    output::print_diagnostics(&diags, &local.loaded.sources);
    if diags.iter().any(|d| d.is_error()) {
        return Ok(ExitCode::from(2));
    }
    let plan = match local.plan.take() {
        Some(Ok(p)) => p,
        Some(Err(PlanError::Filtered { .. })) => {
            eprintln!("`workflow:rules` create no pipeline for this trigger: nothing to run");
            return Ok(ExitCode::SUCCESS);
        }
        _ => return Ok(ExitCode::from(2)),
    };
    if !local.is_git {
        anyhow::bail!(
            "`piste run` needs a git repository: jobs start from a clean checkout of the commit; run `git init && git add -A && git commit -m init` first"
        );
    }
    let (executor, containers, reason) = choose_executor(args.executor).await?;
    if args.json {
        eprintln!("executor: {reason}");
    } else {
        eprintln!("{} {reason}", paint("executor:", GREEN));
    }
    let data_dir = local.root.join(".piste");
    let reuse = match args.reuse {
        Some(false) => reuse::Mode::Off,
        Some(true) => reuse::Mode::Project,
        None if reuse::project_setting(&data_dir).map_err(|e| anyhow::anyhow!("{e} (expected `reuse = true` or `false`)"))? => {
            reuse::Mode::Project
        }
        None => reuse::Mode::PerJob,
    };
    let pipeline = Arc::new(local.loaded.pipeline.take().expect("a plan implies a pipeline"));
    let config = RunConfig {
        reuse,
        executor,
        containers,
        concurrency: args.concurrency,
        data_dir,
        source_repo: local.root.clone(),
        worktree: args.worktree,
        secrets: args.secrets.clone(),
        pipeline_vars: args.spec.vars.clone(),
        only: args.jobs.clone(),
        default_image: args.image.clone(),
        stream_logs: !args.quiet,
        signing_key: args.signing_key.clone(),
        downstream: Some(local.downstream(&args.spec)),
        slots: None,
    };
    let (tx, mut rx) = mpsc::channel::<RunEvent>(256);
    let names: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    let runner = tokio::spawn(run_pipeline(pipeline, Arc::new(plan), local.context.clone(), config, tx, cancel));
    let mut view = View::new(&names, args.json);
    while let Some(ev) = rx.recv().await {
        view.event(&ev);
    }
    view.clear_progress();
    let summary = runner.await??;
    if !args.json {
        print_summary(&summary);
    }
    Ok(exit_code(&summary))
}

/// `0` passed, `1` failed or canceled, `4` blocked: a manual job that does not allow failure
/// waits to be played (GitLab's `manual` pipeline status), so the run stopped there.
pub const EXIT_BLOCKED: u8 = 4;

fn exit_code(summary: &RunSummary) -> ExitCode {
    if summary.passed {
        ExitCode::SUCCESS
    } else if !summary.blocked_by.is_empty() {
        ExitCode::from(EXIT_BLOCKED)
    } else {
        ExitCode::from(1)
    }
}

async fn watch(args: &RunArgs, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
    use notify::{RecursiveMode, Watcher};
    let root = open(&args.spec)?.root;
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads (`Access`) are not changes: the run itself opens the project's files.
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        for p in ev.paths {
            let _ = tx.send(p);
        }
    })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    let ignored = |p: &PathBuf| {
        p.strip_prefix(&root).ok().and_then(|r| r.components().next()).is_some_and(|c| c.as_os_str() == ".piste" || c.as_os_str() == ".git")
    };
    let mut last = ExitCode::SUCCESS;
    loop {
        let this_run = cancel.child_token();
        let mut run = Box::pin(run_once(args, this_run.clone()));
        // Run, but restart on a change (debounced: changes within 300 ms count as one).
        let changed = loop {
            tokio::select! {
                r = &mut run => { last = r.unwrap_or_else(|e| { eprintln!("{}: {e:#}", paint("error", RED)); ExitCode::from(2) }); break false; }
                Some(p) = rx.recv() => if !ignored(&p) { this_run.cancel(); break true; },
                _ = cancel.cancelled() => { let _ = run.await; return Ok(ExitCode::from(1)); }
            }
        };
        if changed {
            let _ = run.await;
        }
        eprintln!("{}", paint("watching for changes (Ctrl-C to stop)…", YELLOW));
        loop {
            tokio::select! {
                Some(p) = rx.recv() => if !ignored(&p) { break },
                _ = cancel.cancelled() => return Ok(last),
            }
        }
        let deadline = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                Some(_) = rx.recv() => {}
            }
        }
    }
}

/// Renders events: prefixed, coloured log lines and a progress line on a terminal, or JSON Lines.
struct View {
    json: bool,
    tty: bool,
    color: bool,
    width: usize,
    colors: HashMap<String, &'static str>,
    running: Vec<String>,
    done: usize,
    total: usize,
    started: Instant,
    sections: HashMap<(String, String), u64>,
}

const JOB_COLORS: [&str; 6] = ["\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[32m", "\x1b[96m"];

impl View {
    fn new(names: &[String], json: bool) -> View {
        let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let color = !json && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal();
        let colors = names.iter().enumerate().map(|(i, n)| (n.clone(), JOB_COLORS[i % JOB_COLORS.len()])).collect();
        View {
            json,
            tty: tty && !json,
            color,
            width: names.iter().map(|n| n.chars().count()).max().unwrap_or(0).min(32),
            colors,
            running: Vec::new(),
            done: 0,
            total: names.len(),
            started: Instant::now(),
            sections: HashMap::new(),
        }
    }

    fn prefix(&self, job: &str) -> String {
        // A downstream job (`deploy ▸ unit`) keeps its trigger job's colour, and more room.
        let top = job.split(" ▸ ").next().unwrap_or(job);
        let name: String = job.chars().take(if top == job { 32 } else { 64 }).collect();
        let padded = format!("{name:<w$}", w = self.width);
        match (self.color, self.colors.get(job).or_else(|| self.colors.get(top))) {
            (true, Some(c)) => format!("{c}{padded}\x1b[0m │"),
            _ => format!("{padded} │"),
        }
    }

    fn clear_progress(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }

    fn draw_progress(&self) {
        if !self.tty || self.running.is_empty() {
            return;
        }
        let names = self.running.join(", ");
        let names: String = names.chars().take(60).collect();
        eprint!(
            "\r\x1b[2K{} {}/{} done · running: {names}",
            paint(&format!("[{:>5.1}s]", self.started.elapsed().as_secs_f64()), YELLOW),
            self.done,
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn event(&mut self, ev: &RunEvent) {
        if self.json {
            json_event(ev);
            return;
        }
        self.clear_progress();
        let mut out = std::io::stdout().lock();
        match ev {
            RunEvent::ExecutorChosen { .. } => {}
            RunEvent::JobStarted { job, attempt, .. } => {
                self.running.push(job.clone());
                let again = if *attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                let _ = writeln!(out, "{} {}{again}", self.prefix(job), paint("▶ started", GREEN));
            }
            RunEvent::Log { job, lines } => {
                for line in lines {
                    // Job colours pass through on a colour terminal and are stripped otherwise.
                    let stripped;
                    let line = if self.color {
                        line.as_str()
                    } else {
                        stripped = strip_ansi(line);
                        stripped.as_str()
                    };
                    match section(line) {
                        Some(Section::Start { name, time, header }) => {
                            self.sections.insert((job.clone(), name.to_string()), time);
                            let _ = writeln!(out, "{} ▸ {header}", self.prefix(job));
                        }
                        Some(Section::End { name, time }) => {
                            if let Some(t0) = self.sections.remove(&(job.clone(), name.to_string())) {
                                let _ = writeln!(out, "{} ▾ {name} took {}s", self.prefix(job), time.saturating_sub(t0));
                            }
                        }
                        None => {
                            let _ = writeln!(out, "{} {line}", self.prefix(job));
                        }
                    }
                }
            }
            RunEvent::JobFinished { job, status, allow_failure, exit_code, duration_ms, reason, reused_from, coverage, .. } => {
                self.running.retain(|j| j != job);
                self.done += 1;
                let secs = *duration_ms as f64 / 1000.0;
                let text = match status {
                    JobResult::Success if reused_from.is_some() => {
                        paint(&format!("✔ passed: {}", reused_from.as_ref().map(ToString::to_string).unwrap_or_default()), GREEN)
                    }
                    JobResult::Success => paint(&format!("✔ passed in {secs:.1}s"), GREEN),
                    JobResult::Failed if *allow_failure => {
                        paint(&format!("⚠ failed (allowed) in {secs:.1}s, exit code {}", code(*exit_code)), YELLOW)
                    }
                    JobResult::Failed => paint(&format!("✘ failed in {secs:.1}s, exit code {}", code(*exit_code)), RED),
                    JobResult::Canceled => paint("■ canceled", YELLOW),
                    JobResult::Skipped => "○ skipped".to_string(),
                    JobResult::Manual => "◇ manual: not run (name it: `piste run JOB`)".to_string(),
                };
                let text = match coverage {
                    Some(c) => format!("{text} · coverage {}", percent(*c)),
                    None => text,
                };
                let _ = writeln!(out, "{} {text}", self.prefix(job));
                // A trigger job's note on success (not run locally) is already in its log.
                if let (Some(r), false) = (reason, *status == JobResult::Success) {
                    let _ = writeln!(out, "{} {}", self.prefix(job), paint(r, RED));
                }
            }
            RunEvent::PipelineFinished { .. } | RunEvent::PipelineStarted { .. } => {}
            RunEvent::Downstream { pipeline_id, trigger, inner } => {
                let path = trigger.join(" ▸ ");
                let scoped = |job: &str| format!("{path} ▸ {job}");
                let inner = match inner.as_ref() {
                    RunEvent::PipelineStarted { source, .. } => {
                        let _ = writeln!(
                            out,
                            "{} {}",
                            self.prefix(&path),
                            paint(&format!("↳ pipeline #{pipeline_id} ({source}) started"), GREEN)
                        );
                        None
                    }
                    RunEvent::PipelineFinished { status, duration_ms, .. } => {
                        let color = if status == "success" { GREEN } else { YELLOW };
                        let text = format!("↳ pipeline #{pipeline_id} {status} in {:.1}s", *duration_ms as f64 / 1000.0);
                        let _ = writeln!(out, "{} {}", self.prefix(&path), paint(&text, color));
                        None
                    }
                    RunEvent::JobStarted { job, stage, attempt, time } => {
                        Some(RunEvent::JobStarted { job: scoped(job), stage: stage.clone(), attempt: *attempt, time: time.clone() })
                    }
                    RunEvent::Log { job, lines } => Some(RunEvent::Log { job: scoped(job), lines: lines.clone() }),
                    RunEvent::JobFinished { job, .. } => {
                        self.total += 1;
                        let mut e = inner.as_ref().clone();
                        if let RunEvent::JobFinished { job: j, .. } = &mut e {
                            *j = scoped(job);
                        }
                        Some(e)
                    }
                    RunEvent::ExecutorChosen { .. } | RunEvent::Downstream { .. } => None,
                };
                drop(out);
                if let Some(e) = inner {
                    self.event(&e);
                    return;
                }
                self.draw_progress();
                return;
            }
        }
        drop(out);
        self.draw_progress();
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`, and two-byte
/// escapes). GitLab's section markers survive: they are plain text around `\r`.
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A `coverage:` value as GitLab shows it: up to two decimals, `%`.
fn percent(c: f64) -> String {
    let text = format!("{c:.2}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

fn code(c: Option<i32>) -> String {
    c.map_or_else(|| "-".into(), |c| c.to_string())
}

enum Section<'a> {
    Start { name: &'a str, time: u64, header: &'a str },
    End { name: &'a str, time: u64 },
}

/// GitLab's `section_start:<unix>:<name>[opts]\r\e[0K<header>` and `section_end:<unix>:<name>\r\e[0K`.
fn section(line: &str) -> Option<Section<'_>> {
    let line = line.trim_start_matches("\x1b[0K");
    let (kind, rest) =
        if let Some(r) = line.strip_prefix("section_start:") { (true, r) } else { (false, line.strip_prefix("section_end:")?) };
    let (time, rest) = rest.split_once(':')?;
    let time: u64 = time.parse().ok()?;
    let (name, header) = match rest.split_once('\r') {
        Some((n, h)) => (n, h.trim_start_matches("\x1b[0K")),
        None => (rest, ""),
    };
    let name = name.split('[').next().unwrap_or(name);
    Some(if kind { Section::Start { name, time, header } } else { Section::End { name, time } })
}

fn json_event(ev: &RunEvent) {
    let mut out = std::io::stdout().lock();
    match ev {
        RunEvent::Log { job, lines } => {
            for line in lines {
                let _ = writeln!(out, "{}", json!({"event": "log", "job": job, "line": line}));
            }
        }
        RunEvent::ExecutorChosen { .. } => {}
        // Flattened: the downstream event's own fields, plus which pipeline and trigger path.
        RunEvent::Downstream { pipeline_id, trigger, inner } => match inner.as_ref() {
            RunEvent::Log { job, lines } => {
                for line in lines {
                    let _ = writeln!(
                        out,
                        "{}",
                        json!({"event": "log", "job": job, "line": line, "pipeline_id": pipeline_id, "trigger": trigger})
                    );
                }
            }
            inner => {
                if let Ok(serde_json::Value::Object(mut m)) = serde_json::to_value(inner) {
                    m.insert("pipeline_id".into(), json!(pipeline_id));
                    m.insert("trigger".into(), json!(trigger));
                    let _ = writeln!(out, "{}", serde_json::Value::Object(m));
                }
            }
        },
        other => {
            if let Ok(s) = serde_json::to_string(other) {
                let _ = writeln!(out, "{s}");
            }
        }
    }
}

fn print_summary(s: &RunSummary) {
    let mut out = std::io::stdout().lock();
    write_summary(&mut out, s, "");
    let verdict = if s.passed {
        paint(&format!("pipeline {}", s.status), GREEN)
    } else if !s.blocked_by.is_empty() {
        paint(&format!("pipeline {} (blocked)", s.status), YELLOW)
    } else {
        paint(&format!("pipeline {}", s.status), RED)
    };
    let _ = writeln!(out, "{verdict} in {:.2}s · logs in {}", s.duration_ms as f64 / 1000.0, s.log_dir.display());
    if !s.blocked_by.is_empty() {
        let names: Vec<String> = s.blocked_by.iter().map(|j| format!("`{j}`")).collect();
        let _ = writeln!(
            out,
            "waiting for the manual job{} {} (`allow_failure: false`): `piste run {}` plays it and runs what it needs",
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            s.blocked_by.first().map(String::as_str).unwrap_or_default()
        );
    }
}

/// The job table of one pipeline, then its downstream pipelines' tables indented under it.
fn write_summary(out: &mut impl Write, s: &RunSummary, indent: &str) {
    let w = s.jobs.iter().map(|j| j.job.chars().count()).max().unwrap_or(3).max(3);
    let _ = writeln!(out, "\n{indent}{:<w$}  {:<10}  {:<9}  {:>9}  attempt", "job", "stage", "status", "duration");
    for j in &s.jobs {
        let status = match (j.status, j.allow_failure) {
            (JobResult::Failed, true) => "failed*".to_string(),
            (st, _) => st.as_str().to_string(),
        };
        let dur = j.duration_ms.map_or_else(|| "-".into(), |d| format!("{:.2}s", d as f64 / 1000.0));
        let crit = if s.critical_path.contains(&j.job) { " ◆" } else { "" };
        let cov = j.coverage.map(|c| format!("  coverage {}", percent(c))).unwrap_or_default();
        let _ = writeln!(out, "{indent}{:<w$}  {:<10}  {:<9}  {:>9}  {}{crit}{cov}", j.job, j.stage, status, dur, j.attempt);
        if let Some(from) = &j.reused_from {
            let _ = writeln!(out, "{indent}{:<w$}  ↺ {from}", "");
        }
    }
    let reused = s.jobs.iter().filter(|j| j.reused_from.is_some()).count();
    if reused > 0 {
        let _ = writeln!(out, "{indent}↺ {reused} of {} jobs reused: nothing they read changed (`--no-reuse` runs them)", s.jobs.len());
    }
    if s.jobs.iter().any(|j| j.status == JobResult::Failed && j.allow_failure) {
        let _ = writeln!(out, "{indent}* allowed to fail");
    }
    if !s.critical_path.is_empty() {
        let _ = writeln!(out, "{indent}critical path (◆): {}", s.critical_path.join(" → "));
    }
    for d in &s.downstream {
        let what = if d.kind == "child" { "child pipeline".to_string() } else { format!("pipeline of `{}`", d.kind) };
        let id = d.summary.as_ref().map(|x| format!(" #{}", x.pipeline_id)).unwrap_or_default();
        let _ = writeln!(out, "\n{indent}↳ {what}{id} of trigger job `{}`: {}", d.job, d.status);
        if let Some(note) = &d.note {
            let _ = writeln!(out, "{indent}  {note}");
        }
        if let Some(sub) = &d.summary {
            write_summary(out, sub, &format!("{indent}    "));
        }
    }
}
