//! Server-rendered pages, from plain data the server maps its store rows to. maud escapes
//! every interpolated string; the only raw HTML inserted is the log rendered by
//! [`super::ansi`], which escapes the log itself.
//!
//! Page links assume `/projects/{project}`, `/pipelines/{id}` and `/jobs/{id}` (with
//! `?before={byte}` for the part of a log before a byte offset); actions post to `/api/v1`.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use scheduler::{JobStatus, PipelineStatus};

use super::ansi::format_duration;
pub use super::job::{
    ArtifactFile, ArtifactsListing, ArtifactsSummary, AttemptLine, BrowseDir, FilePreview, JobDetail, JobRef, LogTail, PushedImage,
    SHOWN_FILES, artifact_file_page, artifacts_page, job_page,
};

#[derive(Clone, Debug)]
pub struct PipelineSummary {
    pub id: u64,
    pub git_ref: String,
    pub commit: String,
    pub status: PipelineStatus,
    pub duration_s: Option<u64>,
    pub trigger: String,
    pub created: String,
}

pub struct PipelineDetail {
    pub id: u64,
    pub project: String,
    pub git_ref: String,
    pub commit: String,
    pub status: PipelineStatus,
    pub duration_s: Option<u64>,
    /// In pipeline order; jobs are shown under the stage they name.
    pub stages: Vec<String>,
    pub jobs: Vec<JobBox>,
    /// The last commit status sent to the forge, when the project has one.
    pub forge: Option<ForgeLine>,
    /// The jobs' JUnit reports, summed.
    pub tests: Option<crate::reports::PipelineTests>,
    /// The mean of the jobs' coverage values.
    pub coverage: Option<f64>,
    pub timeline: Option<Timeline>,
    /// The buttons, for callers allowed to use them.
    pub permission: Permission,
    /// A fork's merge request under `fork_pipelines = "approval"`.
    pub approval: Option<ApprovalLine>,
    /// The pipeline and trigger job that created this one (`id`, job name).
    pub upstream: Option<(u64, String)>,
    /// Pipelines this one's trigger jobs created: id, trigger job name, status.
    pub downstream: Vec<(u64, String, PipelineStatus)>,
}

/// Where a pipeline that needs a maintainer's approval stands, and whether this caller may give
/// it (a maintainer: the button, with the session's CSRF token).
pub struct ApprovalLine {
    /// `None` while it waits.
    pub approved: Option<(String, String)>,
    /// The fork it comes from (`owner/name`).
    pub source: String,
    pub may_approve: bool,
    pub csrf: String,
}

/// Whether the page shows action buttons, and the CSRF token their forms carry.
#[derive(Debug, Clone, Default)]
pub struct Permission {
    pub allowed: bool,
    pub csrf: String,
}

/// Who is looking at `/`: a user (with a logout button), or a login link when there is one.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub user: Option<String>,
    pub csrf: String,
    pub can_log_in: bool,
}

/// Where a pipeline's time went: one bar per job.
pub struct Timeline {
    /// The engine's time now (ms): the end of bars still running.
    pub now: u64,
    pub bars: Vec<Bar>,
}

/// A job's bar: waiting from `queued` to `started` (the lighter part), running to `finished`.
pub struct Bar {
    pub job_id: u64,
    pub name: String,
    pub status: JobStatus,
    pub queued: Option<u64>,
    pub started: Option<u64>,
    pub finished: Option<u64>,
    /// On the critical path (the chain of jobs with the longest total time).
    pub critical: bool,
}

/// The last try to post the pipeline's state to its forge.
pub struct ForgeLine {
    pub state: String,
    /// `None`: the forge accepted it; else why not.
    pub error: Option<String>,
    pub at: String,
}

pub struct JobBox {
    pub id: u64,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub needs: Vec<String>,
    pub duration_s: Option<u64>,
    pub coverage: Option<f64>,
    /// A reused job: whose result it has (marked `↺`, with a "run anyway" button).
    pub reused_from: Option<scheduler::protocol::ReusedFrom>,
}

const CSS: &str = include_str!("assets/style.css");
pub(super) const FOLLOW_JS: &str = include_str!("assets/follow.js");
const LIVE_JS: &str = include_str!("assets/live.js");
pub(super) const LOG_TOOLS_JS: &str = include_str!("assets/logtools.js");
const LIST_JS: &str = include_str!("assets/list.js");

/// Every inline script of the pages, exactly as inserted: the Content-Security-Policy allows
/// these by hash and nothing else. A new inline script must be listed here.
pub const INLINE_SCRIPTS: [&str; 5] = [FOLLOW_JS, EDGES_JS, LIVE_JS, LOG_TOOLS_JS, LIST_JS];

pub(super) fn layout(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · piste" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header { a href="/" { "piste" } " " a.nav href="/runners" { "Runners" } }
                main { (body) }
            }
        }
    }
    .into_string()
}

pub(super) fn duration(seconds: Option<u64>) -> String {
    seconds.map(format_duration).unwrap_or_default()
}

/// A duration as pages show it (empty when unknown).
pub fn duration_text(seconds: Option<u64>) -> String {
    duration(seconds)
}

/// A status with its icon, so it reads without colour: `✓ success`.
pub fn status_label(status: &str) -> String {
    let icon = match status {
        "success" => "✓",
        "failed" => "✗",
        "running" => "▶",
        "pending" | "created" | "scheduled" | "waiting_for_resource" => "◷",
        "canceling" | "canceled" => "⊘",
        "skipped" => "»",
        "manual" => "⏵",
        _ => "•",
    };
    format!("{icon} {status}")
}

/// The actions that apply to a job or a pipeline in its status (who may use them is
/// another question, answered elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Actions {
    pub retry: bool,
    pub cancel: bool,
    pub play: bool,
}

/// Retry a finished job that ran (not a skipped one), cancel one that may still run, play a
/// manual one.
pub fn job_actions(status: JobStatus) -> Actions {
    use JobStatus::*;
    Actions {
        retry: matches!(status, Success | Failed | Canceled),
        cancel: matches!(status, Created | Pending | Running | Scheduled),
        play: status == Manual,
    }
}

impl Actions {
    /// No action while `held` (a fork's pipeline waiting for its approval: its jobs neither
    /// start, nor are played, retried or canceled one by one).
    pub fn unless(self, held: bool) -> Actions {
        if held { Actions::default() } else { self }
    }
}

/// Retry a pipeline that failed or was canceled; cancel one still going.
pub fn pipeline_actions(status: PipelineStatus) -> Actions {
    use PipelineStatus::*;
    Actions {
        retry: matches!(status, Failed | Canceled),
        cancel: matches!(status, Created | Pending | Running | Manual | Scheduled),
        play: false,
    }
}

/// The forms of the actions that apply (`base`: `/api/v1/jobs/7` or `/api/v1/pipelines/3`).
/// A button posting to `action` with the session's CSRF token.
fn action_button(action: &str, label: &str, csrf: &str) -> Markup {
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            button { (label) }
        }
    }
}

/// "Run anyway": a reused job's next attempt runs whatever its key
/// (`POST /api/v1/jobs/{id}/retry?reuse=false`).
pub(crate) fn run_anyway_form(job: u64, csrf: &str) -> Markup {
    html! {
        form.run-anyway method="post" action={ "/api/v1/jobs/" (job) "/retry?reuse=false" } {
            input type="hidden" name="csrf" value=(csrf);
            button title="Run this job instead of reusing an earlier result" { "↻ Run anyway" }
        }
    }
}

/// The buttons of the actions that apply, for a caller allowed to use them, each form carrying
/// the session's CSRF token.
fn action_forms(base: &str, a: Actions, retry_label: &str, permission: &Permission) -> Markup {
    let form = |action: &str, label: String| {
        html! {
            form method="post" action={ (base) "/" (action) } data-action=(action) {
                input type="hidden" name="csrf" value=(permission.csrf);
                button { (label) }
            }
        }
    };
    html! {
        @if permission.allowed {
            @if a.play { (form("play", "⏵ Play".into())) }
            @if a.retry { (form("retry", format!("↻ {retry_label}"))) }
            @if a.cancel { (form("cancel", "⊘ Cancel".into())) }
        }
    }
}

impl Permission {
    /// The CSRF token for pages' scripts to put in the forms they build, when buttons show.
    pub fn csrf_if_allowed(&self) -> Option<&str> {
        self.allowed.then_some(self.csrf.as_str())
    }
}

fn short(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

/// A branch (or tag) on the project page: its latest pipeline and the ones before.
pub struct BranchSummary {
    /// As stored: `refs/heads/main`.
    pub git_ref: String,
    pub latest: PipelineSummary,
    /// `(pipeline, status, duration)` of its last pipelines, oldest first.
    pub history: Vec<(u64, PipelineStatus, Option<u64>)>,
}

/// The project page: the badge, each branch's latest pipeline with its durations over time,
/// then every pipeline (live).
pub struct ProjectDetail {
    pub name: String,
    /// The badge's address as a README would embed it.
    pub badge_url: String,
    pub branches: Vec<BranchSummary>,
    pub pipelines: Vec<PipelineSummary>,
}

/// `refs/heads/main` → `main`, `refs/tags/v1` → `v1`.
pub fn short_ref(git_ref: &str) -> &str {
    git_ref.strip_prefix("refs/heads/").or_else(|| git_ref.strip_prefix("refs/tags/")).unwrap_or(git_ref)
}

pub fn pipelines_page(p: &ProjectDetail) -> String {
    let project = p.name.as_str();
    let pipelines = &p.pipelines;
    layout(
        project,
        html! {
            div.title {
                h1 { (project) }
                img.badge src={ "/projects/" (project) "/badge.svg" } alt="pipeline status of the default branch";
            }
            p.badge-line { "Badge for a README: " code { "![pipeline](" (p.badge_url) ")" } }
            @if !p.branches.is_empty() {
                h2 { "Branches" }
                div.branches #branches {
                    @for b in &p.branches {
                        div class={ "branch " (b.latest.status) } {
                            h3 { (short_ref(&b.git_ref)) }
                            div {
                                span class={ "status " (b.latest.status) } { (status_label(b.latest.status.as_str())) }
                                " " a href={ "/pipelines/" (b.latest.id) } { "#" (b.latest.id) }
                                " · " code { (short(&b.latest.commit)) }
                                @if b.latest.duration_s.is_some() { " · " (duration(b.latest.duration_s)) }
                            }
                            div.meta { (b.latest.created) }
                            (sparkline(&b.history))
                        }
                    }
                }
            }
            h2 { "Pipelines" }
            div.table-wrap {
                table.pipelines #pipelines data-events={ "/api/v1/events?project=" (project) } {
                    thead { tr { th { "Pipeline" } th { "Status" } th { "Ref" } th { "Commit" } th { "Trigger" } th { "Duration" } th { "Created" } } }
                    tbody {
                        @for p in pipelines {
                            tr #{ "pipeline-" (p.id) } {
                                td { a href={ "/pipelines/" (p.id) } { "#" (p.id) } }
                                td { span class={ "status " (p.status) } { (status_label(p.status.as_str())) } }
                                td { code { (p.git_ref) } }
                                td { code title=(p.commit) { (short(&p.commit)) } }
                                td { (p.trigger) }
                                td.duration { (duration(p.duration_s)) }
                                td { (p.created) }
                            }
                        }
                    }
                }
            }
            @if pipelines.is_empty() { p.empty #no-pipelines { "No pipelines yet." } }
            script { (PreEscaped(LIST_JS)) }
        },
    )
}

/// The approval notice of a fork's pipeline: waiting (with the button for a maintainer), or
/// who approved it. A plain form: the answer reloads the page, which then shows the approval.
fn approval_section(id: u64, a: &ApprovalLine) -> Markup {
    html! {
        @match &a.approved {
            None => section.approval.waiting #approval {
                p {
                    "⏸ This merge request comes from a fork (" code { (a.source) } "). Its jobs wait for a maintainer's approval; "
                    "once approved they run with the project's unprotected secrets only."
                }
                @if a.may_approve {
                    form method="post" action={ "/api/v1/pipelines/" (id) "/approve" } #approve {
                        input type="hidden" name="csrf" value=(a.csrf);
                        button { "✓ Approve and run" }
                    }
                }
            }
            Some((by, at)) => section.approval.approved #approval {
                p { "✓ Fork pipeline approved by " strong { (by) } " (" (at) ")." }
            }
        }
    }
}

/// The durations of a branch's last pipelines as bars (oldest left), coloured by status, each
/// a link with its number, status and duration as its title.
fn sparkline(history: &[(u64, PipelineStatus, Option<u64>)]) -> Markup {
    const W: f64 = 240.0;
    const H: f64 = 36.0;
    let longest = history.iter().filter_map(|h| h.2).max().unwrap_or(0).max(1) as f64;
    let slot = W / history.len().max(12) as f64;
    html! {
        svg.spark xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } preserveAspectRatio="none" role="img"
            aria-label={ "Durations of the last " (history.len()) " pipelines" } {
            @for (i, (id, status, secs)) in history.iter().enumerate() {
                @let h = secs.map_or(3.0, |s| (3.0 + (H - 4.0) * s as f64 / longest).round());
                a href={ "/pipelines/" (id) } {
                    rect class=(status) x=(((i as f64 * slot) * 10.0).round() / 10.0) y=(H - h) width=(((slot - 2.0).max(1.0) * 10.0).round() / 10.0) height=(h) {
                        title { "#" (id) " " (status) @if secs.is_some() { ", " (duration(*secs)) } }
                    }
                }
            }
        }
    }
}

pub fn pipeline_page(pipeline: &PipelineDetail) -> String {
    let title = format!("Pipeline #{}", pipeline.id);
    let waiting = pipeline.approval.as_ref().is_some_and(|a| a.approved.is_none());
    layout(
        &title,
        html! {
            nav.crumbs aria-label="Breadcrumb" { a href={ "/projects/" (pipeline.project) } { (pipeline.project) } " / " span { (title) } }
            h1 { (title) " " span #pipeline-status class={ "status " (pipeline.status) } { (status_label(pipeline.status.as_str())) } }
            p.meta {
                "on " code { (short_ref(&pipeline.git_ref)) } " · commit " code title=(pipeline.commit) { (short(&pipeline.commit)) }
                " · " span #pipeline-duration { (duration(pipeline.duration_s)) }
            }
            @if let Some(c) = pipeline.coverage { p.coverage #coverage { "Coverage " (percent(c)) } }
            @if let Some(f) = &pipeline.forge {
                @match &f.error {
                    None => p #forge-status .forge.ok { "✓ Forge status " code { (f.state) } " posted " (f.at) }
                    Some(e) => p #forge-status .forge.error { "✗ Forge status " code { (f.state) } " not posted (" (f.at) "): " (e) }
                }
            }
            @if let Some(a) = &pipeline.approval { (approval_section(pipeline.id, a)) }
            @if let Some((id, job)) = &pipeline.upstream {
                p.upstream #upstream { "Child pipeline of " a href={ "/pipelines/" (id) } { "#" (id) } ", created by its trigger job " code { (job) } }
            }
            @if !pipeline.downstream.is_empty() {
                section.downstream #downstream {
                    h2 { "Downstream pipelines" }
                    ul {
                        @for (id, job, status) in &pipeline.downstream {
                            li { a href={ "/pipelines/" (id) } { "#" (id) } " from " code { (job) } " " span class={ "status " (status) } { (status_label(status.as_str())) } }
                        }
                    }
                }
            }
            div.actions #pipeline-actions data-base={ "/api/v1/pipelines/" (pipeline.id) } data-csrf=[pipeline.permission.csrf_if_allowed()] {
                (action_forms(&format!("/api/v1/pipelines/{}", pipeline.id), pipeline_actions(pipeline.status), "Retry failed", &pipeline.permission))
            }
            div.stages {
                @for stage in &pipeline.stages {
                    section.stage {
                        h2 { (stage) }
                        @for job in pipeline.jobs.iter().filter(|j| &j.stage == stage) {
                            div class={ "job status " (job.status) } id={ "job-" (job.id) } data-name=(job.name) data-needs=(job.needs.join("\n")) {
                                a href={ "/jobs/" (job.id) } { (job.name) }
                                @if let Some(from) = &job.reused_from {
                                    a.reused href={ "/jobs/" (from.job_id) } title=(from.to_string()) { "↺" }
                                }
                                span.state { (status_label(job.status.as_str())) " " span.duration { (duration(job.duration_s)) } }
                                @if let Some(c) = job.coverage { span.coverage { "coverage " (percent(c)) } }
                                @if !job.needs.is_empty() {
                                    ul.needs { @for need in &job.needs { li { "needs " (need) } } }
                                }
                                div.job-actions data-base={ "/api/v1/jobs/" (job.id) } data-csrf=[pipeline.permission.csrf_if_allowed()] {
                                    (action_forms(&format!("/api/v1/jobs/{}", job.id), job_actions(job.status).unless(waiting), "Retry", &pipeline.permission))
                                    @if job.reused_from.is_some() && job.status.is_complete() && !waiting {
                                        @if let Some(csrf) = pipeline.permission.csrf_if_allowed() { (run_anyway_form(job.id, csrf)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // Needs drawn as edges: an SVG layer over the stage columns, from each needed job's
            // right edge to the needing job's left edge (redrawn on resize).
            script { (PreEscaped(EDGES_JS)) }
            @if let Some(t) = &pipeline.tests { (tests_section(t)) }
            @if let Some(t) = &pipeline.timeline { (timeline_svg(t)) }
            @if !pipeline.status.is_complete() || pipeline.jobs.iter().any(|j| !j.status.is_complete()) {
                div #live hidden data-events={ "/api/v1/pipelines/" (pipeline.id) "/events" } {}
            }
            script { (PreEscaped(LIVE_JS)) }
        },
    )
}

/// The timeline as SVG: a row per job, its name, a light bar while it waited in the queue and
/// a solid one while it ran; the critical path's bars are outlined and marked in their title.
fn timeline_svg(t: &Timeline) -> Markup {
    const LABEL: f64 = 170.0;
    const WIDTH: f64 = 820.0;
    const ROW: f64 = 20.0;
    let begin = t.bars.iter().filter_map(|b| b.queued.or(b.started)).min();
    let Some(begin) = begin else { return html! {} };
    let end = t.bars.iter().filter_map(|b| b.finished.or(b.started.map(|_| t.now))).max().unwrap_or(begin).max(begin + 1);
    let scale = (WIDTH - LABEL - 10.0) / (end - begin) as f64;
    let x = |ms: u64| ((LABEL + (ms.saturating_sub(begin)) as f64 * scale) * 10.0).round() / 10.0;
    let height = ROW * t.bars.len() as f64 + 24.0;
    let secs = |ms: u64| format_duration(ms / 1000);
    html! {
        section.timeline #timeline {
            h2 { "Timeline" }
            p.legend { span.key.wait {} " waiting in the queue · " span.key.run {} " running · " span.key.crit {} " critical path (" (secs(end - begin)) " in all)" }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (height) } width="100%" role="img" aria-label="Timeline of the jobs" {
                @for (i, b) in t.bars.iter().enumerate() {
                    @let y = i as f64 * ROW + 4.0;
                    @let run_end = b.finished.or(b.started.map(|_| t.now));
                    g class={ "bar " (b.status) @if b.critical { " critical" } } data-job=(b.name) {
                        title {
                            (b.name) ": " (b.status)
                            @if let (Some(q), Some(s)) = (b.queued, b.started) { ", waited " (secs(s.saturating_sub(q))) }
                            @if let (Some(s), Some(e)) = (b.started, run_end) { ", ran " (secs(e.saturating_sub(s))) }
                            @if b.critical { " (critical path)" }
                        }
                        a href={ "/jobs/" (b.job_id) } { text x="4" y={ (y + 13.0) } class="name" { @if b.critical { "★ " } (b.name) } }
                        @if let Some(q) = b.queued {
                            @let s = b.started.unwrap_or(t.now).max(q);
                            rect.wait x=(x(q)) y=(y + 3.0) width=(((x(s) - x(q)) * 10.0).round().max(10.0) / 10.0) height="12" {}
                        }
                        @if let (Some(s), Some(e)) = (b.started, run_end) {
                            rect.run x=(x(s)) y=(y + 1.0) width=(((x(e.max(s)) - x(s)) * 10.0).round().max(20.0) / 10.0) height="16" {}
                        }
                    }
                }
                text x=(LABEL) y=(height - 4.0) class="axis" { "0s" }
                text x=(WIDTH - 10.0) y=(height - 4.0) class="axis" text-anchor="end" { (secs(end - begin)) }
            }
        }
    }
}

pub(crate) fn percent(value: f64) -> String {
    format!("{}%", (value * 100.0).round() / 100.0)
}

/// "N tests, F failed, S skipped", then each failure with its job.
fn tests_section(t: &crate::reports::PipelineTests) -> Markup {
    let failed = t.totals.failed + t.totals.errors;
    html! {
        section #tests .tests {
            h2 { "Tests" }
            p.summary {
                @if failed > 0 { "✗ " } @else { "✓ " }
                (t.totals.total) " tests, " (failed) " failed, " (t.totals.skipped) " skipped"
                @if t.totals.errors > 0 { " (" (t.totals.errors) " errors)" }
            }
            @if !t.failures.is_empty() {
                ul.failures {
                    @for f in &t.failures {
                        li.failure {
                            @if f.new { span.new { "new" } " " }
                            strong.name { (f.name) }
                            " " span.classname { (f.classname) }
                            " in " a href={ "/jobs/" (f.job_id) } { (f.job) }
                            @if !f.message.is_empty() { div.message { (f.message) } }
                            @if !f.output.is_empty() { details { summary { "output" } pre.output { (f.output) } } }
                        }
                    }
                }
            }
        }
    }
}

const EDGES_JS: &str = r#"(function () {
  var stages = document.querySelector('.stages');
  if (!stages) return;
  var ns = 'http://www.w3.org/2000/svg';
  function draw() {
    var old = document.getElementById('needs-edges');
    if (old) old.remove();
    var svg = document.createElementNS(ns, 'svg');
    svg.id = 'needs-edges';
    svg.setAttribute('class', 'edges');
    var box = stages.getBoundingClientRect();
    svg.setAttribute('width', stages.scrollWidth);
    svg.setAttribute('height', stages.scrollHeight);
    var byName = {};
    stages.querySelectorAll('.job').forEach(function (j) { byName[j.dataset.name] = j; });
    stages.querySelectorAll('.job').forEach(function (j) {
      (j.dataset.needs || '').split('\n').filter(Boolean).forEach(function (n) {
        var from = byName[n];
        if (!from) return;
        var a = from.getBoundingClientRect(), b = j.getBoundingClientRect();
        var x1 = a.right - box.left, y1 = a.top + a.height / 2 - box.top;
        var x2 = b.left - box.left, y2 = b.top + b.height / 2 - box.top;
        var path = document.createElementNS(ns, 'path');
        var mx = (x1 + x2) / 2;
        path.setAttribute('d', 'M' + x1 + ',' + y1 + ' C' + mx + ',' + y1 + ' ' + mx + ',' + y2 + ' ' + x2 + ',' + y2);
        path.setAttribute('class', 'edge');
        svg.appendChild(path);
      });
    });
    stages.appendChild(svg);
  }
  draw();
  window.addEventListener('resize', draw);
})();"#;

/// `/`: the projects the visitor may see, and who they are.
pub fn home_page<'a>(projects: impl Iterator<Item = &'a str>, account: &Account) -> String {
    layout(
        "piste",
        html! {
            div.account {
                @if let Some(user) = &account.user {
                    "Signed in as " strong.user { (user) } " "
                    (action_button("/logout", "Log out", &account.csrf))
                } @else if account.can_log_in {
                    a.login href="/login" { "Log in" }
                }
            }
            h1 { "Projects" }
            ul { @for name in projects { li { a href={ "/projects/" (name) } { (name) } } } }
        },
    )
}

/// A status badge (shields-like SVG, no external font or asset): `label` on grey, the status
/// on its colour, both as text.
pub fn badge_svg(label: &str, status: &str) -> String {
    let colour = match status {
        "success" => "#1a7f37",
        "failed" => "#cf222e",
        "running" => "#0969da",
        "pending" | "created" | "scheduled" | "waiting_for_resource" | "manual" => "#9a6700",
        _ => "#6e7781",
    };
    // Verdana 11px averages about 7px a character; 10px of padding each side.
    let width = |text: &str| text.chars().count() as u32 * 7 + 10;
    let (lw, sw) = (width(label), width(status));
    let total = lw + sw;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(total) height="20" role="img" aria-label={ (label) ": " (status) } {
            title { (label) ": " (status) }
            rect width=(lw) height="20" fill="#555" {}
            rect x=(lw) width=(sw) height="20" fill=(colour) {}
            g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" {
                text x=(lw / 2) y="14" { (label) }
                text x=(lw + sw / 2) y="14" { (status) }
            }
        }
    }
    .into_string()
}

/// A registered runner as the runners page shows it.
pub struct RunnerLine {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub online: bool,
    pub last_contact: String,
    /// `(job id, job name, pipeline id)` of the jobs it runs now.
    pub jobs: Vec<(u64, String, u64)>,
}

/// `/runners`: who is online, when each runner was last heard from, its tags and jobs.
pub fn runners_page(runners: &[RunnerLine]) -> String {
    layout(
        "Runners",
        html! {
            h1 { "Runners" }
            table.runners #runners {
                thead { tr { th { "Runner" } th { "State" } th { "Last contact" } th { "Tags" } th { "Running" } } }
                tbody {
                    @for r in runners {
                        tr #{ "runner-" (r.id) } {
                            td { (r.name) " " span.meta { "#" (r.id) } }
                            td { @if r.online { span.status.success { "● online" } } @else { span.status.canceled { "○ offline" } } }
                            td { (r.last_contact) }
                            td { @for t in &r.tags { code.tag { (t) } " " } @if r.tags.is_empty() { "–" } }
                            td {
                                @for (job, name, pipeline) in &r.jobs {
                                    a href={ "/jobs/" (job) } { (name) } " (pipeline " a href={ "/pipelines/" (pipeline) } { "#" (pipeline) } ") "
                                }
                                @if r.jobs.is_empty() { "idle" }
                            }
                        }
                    }
                }
            }
            @if runners.is_empty() { p.empty { "No runner registered yet." } }
        },
    )
}
