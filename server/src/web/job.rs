//! The job page (its log with sections, line times, search, raw download, artifacts) and the
//! artifacts browser: a folder of the archive, one file's view.
//!
//! Links: `/jobs/{id}?before={byte}` (the part of the log before a byte), the raw log at
//! `/api/v1/jobs/{id}/log` (`?download=1`: as a file), the log search at
//! `/api/v1/jobs/{id}/log/search?q=`, the browser at `/jobs/{id}/artifacts?dir=` and one file
//! at `/jobs/{id}/artifacts/{path}` (its bytes at `/api/v1/jobs/{id}/artifacts/file?path=`).

use maud::{Markup, PreEscaped, html};

use scheduler::JobStatus;

use super::pages::{FOLLOW_JS, LOG_TOOLS_JS, duration, layout, status_label};

pub struct JobDetail {
    pub id: u64,
    pub pipeline_id: u64,
    pub project: String,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub runner: Option<String>,
    pub image: Option<String>,
    pub duration_s: Option<u64>,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    /// Its `coverage:` value, when the job has the keyword and its log matched.
    pub coverage: Option<f64>,
    /// The artifacts archive, when the job has one.
    pub artifacts: Option<ArtifactsSummary>,
    /// What the job's `piste/gitops-bump@v1` steps left: (step, deployment commit, changed).
    pub deploys: Vec<(String, String, bool)>,
    /// What the job's image steps pushed.
    pub images: Vec<PushedImage>,
    /// Whether the log may still grow: the page then follows it live.
    pub running: bool,
    /// Every attempt, oldest first, each with its own result and log.
    pub attempts: Vec<AttemptLine>,
    /// A reused job: whose result it has.
    pub reused_from: Option<scheduler::protocol::ReusedFrom>,
    /// The CSRF token of a caller who may run it anyway (`None`: no button).
    pub run_anyway: Option<String>,
}

/// An image a job's `piste/image-build@v1` or `piste/image-copy@v1` step pushed.
pub struct PushedImage {
    pub step: String,
    /// `registry/repository@sha256:…`.
    pub reference: String,
    /// Every reference tagged.
    pub tags: Vec<String>,
    /// Signed and attested (`None`: a copy, which signs nothing).
    pub signed: Option<bool>,
}

/// One attempt of a job, as the job page lists it.
pub struct AttemptLine {
    pub attempt: u32,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
}

/// The part of a log the job page shows: rendered HTML of bytes `start..end` of `total`.
///
/// For a running job render it with [`super::ansi::Renderer::push`] without `finish`, and set
/// `end` to the bytes pushed minus [`super::ansi::Renderer::pending`]: sections still open are
/// then continued by the live tail.
pub struct LogTail {
    pub html: String,
    pub start: u64,
    pub end: u64,
    /// Bytes of the whole log now.
    pub total: u64,
}

/// The artifacts as the job page shows them: the archive, and its first files.
pub struct ArtifactsSummary {
    /// Size of the archive (compressed, as downloaded).
    pub archive_bytes: u64,
    /// `None` when the archive was not listed for this page (too big to read here: the
    /// browser lists it).
    pub listing: Option<ArtifactsListing>,
}

pub struct ArtifactsListing {
    pub files: usize,
    /// Bytes of the files once extracted.
    pub bytes: u64,
    /// The first files, by path.
    pub shown: Vec<ArtifactFile>,
    /// The archive holds more entries than are listed.
    pub truncated: bool,
}

/// A file (or link) in an artifacts archive.
#[derive(Clone, Debug)]
pub struct ArtifactFile {
    pub path: String,
    pub size: u64,
    /// A symbolic link's target (shown, never followed).
    pub link: Option<String>,
}

/// The job an artifacts page belongs to.
pub struct JobRef {
    pub id: u64,
    pub name: String,
    pub pipeline_id: u64,
    pub project: String,
}

/// One folder of an archive: its subfolders (name, files under it, their bytes) and files.
pub struct BrowseDir {
    /// `""` for the top, else `a/b` (no trailing slash).
    pub dir: String,
    pub dirs: Vec<(String, usize, u64)>,
    pub files: Vec<ArtifactFile>,
    pub archive_bytes: u64,
    pub total_files: usize,
    pub total_bytes: u64,
    pub truncated: bool,
}

/// What the view of one file shows.
pub enum FilePreview {
    /// UTF-8 text, possibly only its beginning.
    Text {
        text: String,
        truncated: bool,
    },
    Image,
    Binary,
}

/// Files the job page lists before pointing at the browser.
pub const SHOWN_FILES: usize = 20;

/// `512 B`, `1.4 KiB`, `3.0 MiB`, `1.2 GiB`.
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Percent-encodes every byte but unreserved ones (for a query value or one path segment).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path in a URL: each segment encoded, the slashes kept.
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode_component).collect::<Vec<_>>().join("/")
}

fn file_url(job: u64, path: &str) -> String {
    format!("/jobs/{job}/artifacts/{}", encode_path(path))
}

fn raw_file_url(job: u64, path: &str) -> String {
    format!("/api/v1/jobs/{job}/artifacts/file?path={}", encode_component(path))
}

fn dir_url(job: u64, dir: &str) -> String {
    if dir.is_empty() { format!("/jobs/{job}/artifacts") } else { format!("/jobs/{job}/artifacts?dir={}", encode_component(dir)) }
}

fn crumbs(project: &str, pipeline: u64, last: Markup) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href={ "/projects/" (project) } { (project) } " / "
            a href={ "/pipelines/" (pipeline) } { "Pipeline #" (pipeline) } " / "
            (last)
        }
    }
}

pub fn job_page(job: &JobDetail, tail: &LogTail) -> String {
    let title = format!("{} #{}", job.name, job.id);
    let stream = format!("/api/v1/jobs/{}/log/stream", job.id);
    let raw = format!("/api/v1/jobs/{}/log", job.id);
    // What the page does not show: before `start`, after `end` (a page of the past).
    let later = (!job.running && tail.end < tail.total).then(|| (tail.end + TAIL_STEP).min(tail.total));
    let partial = tail.start > 0 || later.is_some();
    layout(
        &title,
        html! {
            (crumbs(&job.project, job.pipeline_id, html! { span { (job.name) } }))
            h1 { (job.name) " " span #job-status class={ "status " (job.status) } { (status_label(job.status.as_str())) } }
            div.job-layout {
                aside.job-side {
                    dl.facts {
                        div { dt { "Stage" } dd { (job.stage) } }
                        div { dt { "Duration" } dd { @if job.duration_s.is_some() { (duration(job.duration_s)) } @else { "–" } } }
                        div { dt { "Runner" } dd { (job.runner.as_deref().unwrap_or("–")) } }
                        div { dt { "Image" } dd { code { (job.image.as_deref().unwrap_or("–")) } } }
                        div { dt { "Attempt" } dd { (job.attempt) } }
                        div { dt { "Exit code" } dd { @if let Some(code) = job.exit_code { (code) } @else { "–" } } }
                        @if let Some(c) = job.coverage { div { dt { "Coverage" } dd #coverage { (super::pages::percent(c)) } } }
                        @if let Some(from) = &job.reused_from {
                            div.wide #reused-from {
                                dt { "Reused ↺" }
                                dd {
                                    "from " a href={ "/pipelines/" (from.pipeline) } { "pipeline " (from.pipeline) } ", job "
                                    a href={ "/jobs/" (from.job_id) } { (from.job_id) " (" (from.job) ")" }
                                    ": it did not run, nothing it reads changed"
                                    @if let Some(csrf) = &job.run_anyway { (super::pages::run_anyway_form(job.id, csrf)) }
                                }
                            }
                        }
                        @for image in &job.images {
                            div.wide {
                                dt { "Image pushed" }
                                dd.image {
                                    code { (image.reference) }
                                    " (step " code { (image.step) }
                                    @match image.signed { Some(true) => ", signed", Some(false) => ", unsigned", None => "" }
                                    ")"
                                    @if !image.tags.is_empty() {
                                        ul.tags { @for tag in &image.tags { li { code { (tag) } } } }
                                    }
                                }
                            }
                        }
                        @for (step, commit, changed) in &job.deploys {
                            div.wide { dt { "Deploy commit" } dd { code { (commit) } " (step " code { (step) } @if !*changed { ", already deployed" } ")" } }
                        }
                    }
                    @if job.attempts.len() > 1 || job.attempts.iter().any(|a| a.failure_reason.is_some()) {
                        section.card #attempts {
                        h2 { "Attempts" }
                        ol.attempts {
                            @for a in &job.attempts {
                                li {
                                    a href={ (raw) "?attempt=" (a.attempt) } { "Attempt " (a.attempt) }
                                    " " span class={ "status " (a.status) } { (status_label(a.status.as_str())) }
                                    @if let Some(code) = a.exit_code { " · exit code " (code) }
                                    @if let Some(why) = &a.failure_reason { " · " (why) }
                                }
                            }
                        }
                        }
                    }
                    @if let Some(a) = &job.artifacts { (artifacts_summary(job.id, a)) }
                }
                div.job-main {
                    section.log-panel aria-label="Log" {
                        div.log-tools role="toolbar" aria-label="Log tools" {
                            @if job.running { button #follow type="button" aria-pressed="true" { "⏸ Stop following" } }
                            button #first-error type="button" { "⚠ First error" }
                            button #timestamps type="button" aria-pressed="false" title="Show when the server received each line" { "◷ Timestamps" }
                            span.search role="search" {
                                label for="log-search" { "Search" }
                                input #log-search type="search" placeholder="Search this page" autocomplete="off" spellcheck="false";
                                button #search-prev type="button" aria-label="Previous match" title="Previous match (Shift+Enter)" { "↑" }
                                button #search-next type="button" aria-label="Next match" title="Next match (Enter)" { "↓" }
                                span #search-count aria-live="polite" {}
                            }
                            button #search-server type="button" data-url={ (raw) "/search" } data-job=(job.id) data-total=(tail.total) hidden[!partial && !job.running] {
                                "Search the whole log (" (bytes_text(tail.total)) ")"
                            }
                            span.spacer {}
                            a.button href=(raw) { "Raw" }
                            a.button href={ (raw) "?download=1" } download { "⬇ Download" }
                        }
                        span #first-error-none hidden { "No error line in the part shown." }
                        div #search-results hidden {}
                        @if tail.start > 0 {
                            p.more { a href={ "/jobs/" (job.id) "?before=" (tail.start) } { "↑ Load earlier (" (bytes_text(tail.start)) " before)" } }
                        }
                        div #log class={ "log" @if job.status == JobStatus::Failed { " failed" } } data-stream=(stream) data-offset=(tail.end)
                            data-follow=(job.running) data-autoscroll=(job.running) { (PreEscaped(&tail.html)) }
                        @if let Some(before) = later {
                            p.more { a href={ "/jobs/" (job.id) @if before < tail.total { "?before=" (before) } } { "↓ Load later (" (bytes_text(tail.total - tail.end)) " after)" } }
                        }
                    }
                }
            }
            script { (PreEscaped(LOG_TOOLS_JS)) }
            @if job.running { script { (PreEscaped(FOLLOW_JS)) } }
        },
    )
}

/// How far "Load later" moves: one page of log.
const TAIL_STEP: u64 = 256 * 1024;

fn artifacts_summary(job: u64, a: &ArtifactsSummary) -> Markup {
    html! {
        section #artifacts .card {
            h2 { "Artifacts" }
            p.meta {
                @if let Some(l) = &a.listing {
                    (l.files) @if l.files == 1 { " file, " } @else { " files, " } (bytes_text(l.bytes))
                    @if l.truncated { " (and more)" } " · "
                }
                a href=(dir_url(job, "")) { "Browse" } " · "
                a href={ "/api/v1/jobs/" (job) "/artifacts" } { "⬇ Download the archive (" (bytes_text(a.archive_bytes)) ")" }
            }
            @if let Some(l) = &a.listing {
                @if !l.shown.is_empty() {
                    table.files {
                        thead { tr { th { "File" } th.size { "Size" } } }
                        tbody {
                            @for f in &l.shown {
                                tr { td { (file_link(job, f)) } td.size { (bytes_text(f.size)) } }
                            }
                        }
                    }
                    @if l.files > l.shown.len() { p.meta { a href=(dir_url(job, "")) { "All " (l.files) " files…" } } }
                }
            }
        }
    }
}

fn file_link(job: u64, f: &ArtifactFile) -> Markup {
    html! {
        @match &f.link {
            Some(target) => { span.file { (f.path) } " ↪ " code { (target) } }
            None => a.file href=(file_url(job, &f.path)) { (f.path) }
        }
    }
}

/// `/jobs/{id}/artifacts`: a folder of the archive.
pub fn artifacts_page(job: &JobRef, d: &BrowseDir) -> String {
    let title = format!("Artifacts of {} #{}", job.name, job.id);
    // Each folder on the way, with its path.
    let mut way: Vec<(&str, String)> = Vec::new();
    for part in d.dir.split('/').filter(|p| !p.is_empty()) {
        let path = way.last().map_or_else(|| part.to_string(), |(_, up)| format!("{up}/{part}"));
        way.push((part, path));
    }
    layout(
        &title,
        html! {
            (crumbs(&job.project, job.pipeline_id, html! { a href={ "/jobs/" (job.id) } { (job.name) } " / artifacts" }))
            h1 { "Artifacts of " (job.name) }
            p.meta {
                (d.total_files) " files, " (bytes_text(d.total_bytes)) @if d.truncated { " (the archive holds more than listed)" } " · "
                a href={ "/api/v1/jobs/" (job.id) "/artifacts" } { "⬇ Download the archive (" (bytes_text(d.archive_bytes)) ")" }
            }
            nav.crumbs.dir aria-label="Folder" {
                a href=(dir_url(job.id, "")) { "artifacts" }
                @for (part, path) in &way {
                    " / " a href=(dir_url(job.id, path)) { (part) }
                }
            }
            table.files #artifact-files {
                thead { tr { th { "Name" } th.size { "Size" } } }
                tbody {
                    @if !d.dir.is_empty() {
                        @let parent = d.dir.rsplit_once('/').map_or("", |(p, _)| p);
                        tr { td { a href=(dir_url(job.id, parent)) { "↰ .." } } td.size {} }
                    }
                    @for (name, files, bytes) in &d.dirs {
                        @let full = if d.dir.is_empty() { name.clone() } else { format!("{}/{name}", d.dir) };
                        tr.dir { td { a href=(dir_url(job.id, &full)) { "▸ " (name) "/" } } td.size { (files) @if *files == 1 { " file, " } @else { " files, " } (bytes_text(*bytes)) } }
                    }
                    @for f in &d.files {
                        @let name = f.path.rsplit_once('/').map_or(f.path.as_str(), |(_, n)| n);
                        tr.file {
                            td {
                                @match &f.link {
                                    Some(target) => { (name) " ↪ " code { (target) } }
                                    None => { a href=(file_url(job.id, &f.path)) { (name) } " " a.dl href={ (raw_file_url(job.id, &f.path)) "&download=1" } title="Download" aria-label={ "Download " (name) } { "⬇" } }
                                }
                            }
                            td.size { (bytes_text(f.size)) }
                        }
                    }
                }
            }
            @if d.dirs.is_empty() && d.files.is_empty() { p.empty { "This folder is empty." } }
        },
    )
}

/// `/jobs/{id}/artifacts/{path}`: one file, shown as text or image when it is one.
pub fn artifact_file_page(job: &JobRef, path: &str, size: u64, preview: &FilePreview) -> String {
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let name = path.rsplit_once('/').map_or(path, |(_, n)| n);
    let raw = raw_file_url(job.id, path);
    layout(
        name,
        html! {
            (crumbs(&job.project, job.pipeline_id, html! { a href={ "/jobs/" (job.id) } { (job.name) } " / " a href=(dir_url(job.id, dir)) { "artifacts" @if !dir.is_empty() { "/" (dir) } } }))
            h1 { code { (path) } }
            p.meta {
                (bytes_text(size)) " · "
                a href=(raw) { "Raw" } " · "
                a href={ (raw) "&download=1" } download { "⬇ Download" }
            }
            @match preview {
                FilePreview::Text { text, truncated } => {
                    pre.file-text #file-text { (text) }
                    @if *truncated { p.meta { "The first " (bytes_text(text.len() as u64)) " are shown; download the file for the rest." } }
                }
                FilePreview::Image => { p { img.preview src=(raw) alt=(name); } }
                FilePreview::Binary => { p.empty { "A binary file: download it to open it." } }
            }
        },
    )
}
