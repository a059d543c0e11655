//! The web pages for people: `/` (projects), `/projects/{name}`, `/pipelines/{id}`, `/jobs/{id}`.
//! Rendering is in [`crate::web`]; here rows become page data.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{self, Caller, Need};
use crate::blob::BlobStore;
use crate::error::{ApiResult, Error};
use crate::pipelines::JobTemplate;
use crate::store::{JobRow, PipelineRow, Store};
use crate::web::ansi::Renderer;
use scheduler::JobStatus;

use crate::web::pages::{
    self, Account, ArtifactFile, ArtifactsListing, ArtifactsSummary, AttemptLine, JobBox, JobDetail, LogTail, Permission, PipelineDetail,
    PipelineSummary,
};

/// The refusal page (login, 404, 403) when the caller may not read `project`.
fn refusal(state: &AppState, caller: &Caller, project: &str, path: &str) -> Option<Response> {
    auth::check(&state.config, caller, project, Need::Read).err().map(|d| auth::page_refusal(&state.config, d, path))
}

/// Bytes of log the job page renders at first (the tail); earlier parts load on demand.
const TAIL_BYTES: u64 = 256 * 1024;

fn secs(a: Option<i64>, b: Option<i64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) if b >= a => Some(((b - a) / 1000) as u64),
        _ => None,
    }
}

fn short(sha: &str) -> String {
    sha.chars().take(8).collect()
}

/// `/`: the projects the caller may read (for an anonymous visitor, the public ones).
pub async fn home(State(state): State<Arc<AppState>>, caller: Caller) -> Html<String> {
    let visible = state.config.projects.iter().filter(|p| auth::check(&state.config, &caller, &p.name, Need::Read).is_ok());
    let account = Account { user: caller.user().map(|u| u.name.clone()), csrf: caller.csrf(), can_log_in: state.config.oidc.is_some() };
    Html(pages::home_page(visible.map(|p| p.name.as_str()), &account))
}

fn summary(p: &PipelineRow) -> PipelineSummary {
    PipelineSummary {
        id: p.id as u64,
        git_ref: p.git_ref.clone(),
        commit: short(&p.sha),
        status: p.status,
        duration_s: secs(Some(p.created_at), Some(p.updated_at)).filter(|_| p.status.is_complete()),
        trigger: p.source.clone(),
        created: crate::pipelines::iso_time(p.created_at),
    }
}

#[derive(Deserialize)]
pub struct ProjectQuery {
    /// For the badge: a branch (`main`) or a full ref (`refs/tags/v1`); default the project's
    /// default branch.
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// `/projects/{name}`, and `/projects/{name}/badge.svg?ref=BRANCH` (for those who may read the
/// project: a public project's badge is anyone's).
pub async fn project(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ProjectQuery>,
) -> Result<Response, Response> {
    if state.config.project(&name).is_none() {
        if let Some(project) = name.strip_suffix("/badge.svg").and_then(|n| state.config.project(n)) {
            if let Some(r) = refusal(&state, &caller, &project.name, &format!("/projects/{name}")) {
                return Err(r);
            }
            return badge(&state, project, q.git_ref).await.map_err(IntoResponse::into_response);
        }
    }
    if let Some(r) = refusal(&state, &caller, &name, &format!("/projects/{name}")) {
        return Err(r);
    }
    project_page(&state, &name).await.map(IntoResponse::into_response).map_err(IntoResponse::into_response)
}
/// The status of the project's latest pipeline of a ref, as an SVG badge.
async fn badge(state: &AppState, project: &crate::config::ProjectConfig, git_ref: Option<String>) -> ApiResult<Response> {
    let branch = git_ref.unwrap_or_else(|| project.default_branch.clone());
    let full = if branch.starts_with("refs/") { branch } else { format!("refs/heads/{branch}") };
    let rows = state.store.pipelines(Some(&project.name), 500).await?;
    let status = rows.iter().find(|p| p.git_ref == full).map_or("unknown", |p| p.status.as_str());
    let svg = pages::badge_svg("pipeline", status);
    Ok(([(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"), (header::CACHE_CONTROL, "no-cache, max-age=0")], svg).into_response())
}

/// Pipelines a branch's chart shows.
const HISTORY: usize = 20;

async fn project_page(state: &AppState, name: &str) -> ApiResult<Html<String>> {
    let name = name.to_string();
    let project = state.config.project(&name).ok_or(Error::NotFound("project"))?;
    let rows = state.store.pipelines(Some(&name), 500).await?;
    // Branches by their latest pipeline, the default branch first.
    let mut branches: Vec<pages::BranchSummary> = Vec::new();
    for p in &rows {
        match branches.iter_mut().find(|b| b.git_ref == p.git_ref) {
            Some(b) if b.history.len() < HISTORY => b.history.push((p.id as u64, p.status, summary(p).duration_s)),
            Some(_) => {}
            None => branches.push(pages::BranchSummary {
                git_ref: p.git_ref.clone(),
                latest: summary(p),
                history: vec![(p.id as u64, p.status, summary(p).duration_s)],
            }),
        }
    }
    for b in &mut branches {
        b.history.reverse();
    }
    let default = format!("refs/heads/{}", project.default_branch);
    branches.sort_by_key(|b| b.git_ref != default);
    branches.truncate(24);
    let base = state.config.external_url.as_deref().unwrap_or("").trim_end_matches('/');
    let detail = pages::ProjectDetail {
        badge_url: format!("{base}/projects/{name}/badge.svg?ref={}", crate::web::job::encode_component(&project.default_branch)),
        branches,
        pipelines: rows.iter().take(100).map(summary).collect(),
        name,
    };
    Ok(Html(pages::pipelines_page(&detail)))
}

fn job_box(j: &JobRow) -> JobBox {
    let needs = serde_json::from_str::<JobTemplate>(&j.spec)
        .ok()
        .and_then(|t| t.node.needs)
        .map(|n| n.into_iter().map(|x| x.job).collect())
        .unwrap_or_default();
    JobBox {
        id: j.id as u64,
        name: j.name.clone(),
        stage: j.stage.clone(),
        status: j.status,
        needs,
        duration_s: secs(j.started_at, j.finished_at),
        coverage: None,
        reused_from: crate::api::reused_from(j),
    }
}

pub async fn pipeline(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<i64>) -> Result<Response, Response> {
    let p =
        state.store.pipeline(id).await.map_err(|e| Error::from(e).into_response())?.ok_or(Error::NotFound("pipeline").into_response())?;
    if let Some(r) = refusal(&state, &caller, &p.project, &format!("/pipelines/{id}")) {
        return Err(r);
    }
    pipeline_page(&state, &caller, p).await.map(IntoResponse::into_response).map_err(IntoResponse::into_response)
}

async fn pipeline_page(state: &AppState, caller: &Caller, p: PipelineRow) -> ApiResult<Html<String>> {
    let id = p.id;
    let jobs = state.store.jobs(id).await?;
    let mut stages: Vec<(i64, String)> = jobs.iter().map(|j| (j.stage_index, j.stage.clone())).collect();
    stages.sort();
    stages.dedup();
    let mut reports = crate::reports::of_pipeline(&state.store, &p, &jobs).await?;
    let mut boxes: Vec<JobBox> = jobs.iter().map(job_box).collect();
    for b in &mut boxes {
        b.coverage = reports.jobs.get(&(b.id as i64)).and_then(|r| r.1);
    }
    let detail = PipelineDetail {
        id: p.id as u64,
        project: p.project.clone(),
        git_ref: p.git_ref.clone(),
        commit: short(&p.sha),
        status: p.status,
        duration_s: summary(&p).duration_s,
        stages: stages.into_iter().map(|(_, s)| s).collect(),
        jobs: boxes,
        tests: reports.tests.take(),
        coverage: reports.coverage,
        timeline: timeline(state, id, &jobs).await?,
        forge: crate::api::forge_status(state, &p).await?.map(|f| pages::ForgeLine {
            state: f.state,
            error: f.error,
            at: crate::pipelines::iso_time(f.at),
        }),
        permission: Permission { allowed: auth::may_act(&state.config, caller, &p), csrf: caller.csrf() },
        approval: p.approval.as_ref().map(|a| pages::ApprovalLine {
            approved: a.by.clone().map(|by| (by, a.at.map(crate::pipelines::iso_time).unwrap_or_default())),
            source: fork_source(&p),
            may_approve: a.by.is_none() && auth::may_approve(&state.config, caller, &p),
            csrf: caller.csrf(),
        }),
        upstream: match p.upstream {
            Some(u) => Some((u.pipeline_id as u64, state.store.job(u.job_id).await?.map(|j| j.name).unwrap_or_default())),
            None => None,
        },
        downstream: {
            let mut out = Vec::new();
            for d in state.store.downstream_pipelines(p.id).await? {
                let job = match d.upstream {
                    Some(u) => jobs.iter().find(|j| j.id == u.job_id).map(|j| j.name.clone()).unwrap_or_default(),
                    None => String::new(),
                };
                out.push((d.id as u64, job, d.status));
            }
            out
        },
    };
    Ok(Html(pages::pipeline_page(&detail)))
}

/// The fork a merge-request pipeline comes from (`owner/name`, as its forge said it).
fn fork_source(p: &PipelineRow) -> String {
    serde_json::from_str::<pipeline_spec::predefined::Context>(&p.trigger)
        .ok()
        .and_then(|c| c.merge_request.and_then(|mr| mr.source_project_path))
        .unwrap_or_else(|| "another repository".into())
}

/// The pipeline's timeline from its engine (times and the critical path).
async fn timeline(state: &AppState, id: i64, jobs: &[JobRow]) -> ApiResult<Option<pages::Timeline>> {
    let Some((snapshot, critical)) = crate::pipelines::timeline(state, id).await? else { return Ok(None) };
    let bars = snapshot
        .jobs
        .iter()
        .filter_map(|j| {
            let row = jobs.iter().find(|r| r.name == j.name)?;
            Some(pages::Bar {
                job_id: row.id as u64,
                name: j.name.clone(),
                status: j.status,
                queued: j.queued_at,
                started: j.started_at,
                finished: j.finished_at,
                critical: critical.contains(&j.name),
            })
        })
        .collect();
    Ok(Some(pages::Timeline { now: snapshot.now, bars }))
}

#[derive(Deserialize)]
pub struct JobPageQuery {
    /// Show the part of the log before this byte offset ("load earlier").
    before: Option<u64>,
}

pub async fn job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<JobPageQuery>,
) -> Result<Response, Response> {
    let found = async {
        let j = state.store.job(id).await?.ok_or(Error::NotFound("job"))?;
        let p = state.store.pipeline(j.pipeline_id).await?.ok_or(Error::NotFound("pipeline"))?;
        ApiResult::Ok((j, p))
    };
    let (j, p) = found.await.map_err(IntoResponse::into_response)?;
    if let Some(r) = refusal(&state, &caller, &p.project, &format!("/jobs/{id}")) {
        return Err(r);
    }
    job_page(&state, &caller, j, p, q).await.map(IntoResponse::into_response).map_err(IntoResponse::into_response)
}

async fn job_page(state: &AppState, caller: &Caller, j: JobRow, p: PipelineRow, q: JobPageQuery) -> ApiResult<Html<String>> {
    let id = j.id;
    let reused_from = crate::api::reused_from(&j);
    let run_anyway =
        (reused_from.is_some() && j.status.is_complete() && !p.awaiting_approval() && auth::may_act(&state.config, caller, &p))
            .then(|| caller.csrf());
    let template: Option<JobTemplate> = serde_json::from_str(&j.spec).ok();
    let running = !j.status.is_complete() && j.status != JobStatus::Manual;
    let tail = match state.logs.view(id, j.attempt.max(1)).await? {
        Some(log) => {
            let total = log.total();
            let upto = q.before.unwrap_or(total).min(total);
            let mut start = upto.saturating_sub(TAIL_BYTES);
            // Start at a line boundary so numbering and sections stay right.
            if start > 0 {
                let probe = log.read_at(start, (upto - start) as usize).await?;
                if let Some(nl) = probe.iter().position(|&b| b == b'\n') {
                    start += nl as u64 + 1;
                }
            }
            let first_line = log.line_at(start).await?;
            let bytes = log.read_at(start, (upto - start) as usize).await?;
            let mut r = Renderer::recording(first_line).starting_at(start);
            // The log's first bytes date from the job's start (file logs keep no mark for them).
            r.add_times(j.started_at.map(|t| (0, t)).into_iter().chain(log.times(start..upto).await?));
            let mut html = r.push(&bytes);
            let live = running && q.before.is_none();
            let end = if live { upto - r.pending() as u64 } else { upto };
            if !live {
                html.push_str(&if upto == total { r.finish() } else { r.finish_range() });
            }
            // Durations of the sections that ended here; a failed job's stopped sections open.
            let html = r.fill(&html, j.status == JobStatus::Failed);
            LogTail { html, start, end, total }
        }
        None => LogTail { html: String::new(), start: 0, end: 0, total: 0 },
    };
    let artifacts = match j.artifacts.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
        Some(digest) => {
            let archive_bytes = state.blobs.head(&crate::blob::artifact_key(digest)).await?.unwrap_or(0);
            let listing = crate::artifacts::listing(state, digest, crate::artifacts::LIST_ON_JOB_PAGE).await.unwrap_or_else(|e| {
                tracing::warn!(job = id, error = %e, "artifacts not listed on the job page");
                None
            });
            Some(ArtifactsSummary {
                archive_bytes,
                listing: listing.map(|l| ArtifactsListing {
                    files: l.files().count(),
                    bytes: l.files().map(|e| e.size).sum(),
                    shown: l
                        .files()
                        .take(pages::SHOWN_FILES)
                        .map(|e| ArtifactFile { path: e.path.clone(), size: e.size, link: e.target.clone() })
                        .collect(),
                    truncated: l.truncated,
                }),
            })
        }
        None => None,
    };
    let detail = JobDetail {
        id: j.id as u64,
        pipeline_id: j.pipeline_id as u64,
        project: p.project,
        name: j.name.clone(),
        stage: j.stage.clone(),
        status: j.status,
        runner: j.runner_id.map(|r| format!("runner #{r}")),
        image: template.as_ref().and_then(|t| t.job.image.as_ref().map(|i| i.name.clone())),
        duration_s: secs(j.started_at, j.finished_at),
        attempt: j.attempt.max(1) as u32,
        exit_code: j.exit_code.map(|c| c as i32),
        coverage: state.store.job_reports(j.pipeline_id).await?.into_iter().find(|r| r.job_id == id).and_then(|r| r.coverage),
        artifacts,
        deploys: crate::api::deploys_of(&j.spec, j.dotenv.as_deref()).into_iter().map(|d| (d.step, d.commit, d.changed)).collect(),
        images: crate::api::images_of(&j.spec, j.dotenv.as_deref())
            .into_iter()
            .map(|i| crate::web::pages::PushedImage { step: i.step, reference: i.reference, tags: i.tags, signed: i.signed })
            .collect(),
        running: running && q.before.is_none(),
        attempts: crate::api::attempts(state, &j)
            .await?
            .into_iter()
            .map(|a| AttemptLine {
                attempt: u32::try_from(a.attempt).unwrap_or(0),
                status: a.status,
                exit_code: a.exit_code.map(|c| c as i32),
                failure_reason: a.failure_reason,
            })
            .collect(),
        reused_from,
        run_anyway,
    };
    Ok(Html(pages::job_page(&detail, &tail)))
}

/// Runners heard from within this long are online (a runner busy on all its slots does not
/// poll, but its jobs' heartbeats keep their leases: holding a live lease counts too).
fn online_window(state: &AppState) -> i64 {
    (state.config.poll_ms + state.config.lease_ms) as i64
}

/// `/runners`: for the server's admins only (runners run every project's jobs).
pub async fn runners(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Html<String>, Response> {
    if !auth::is_admin(&state.config, &caller) {
        let denied = if caller.user().is_none() { auth::Denied::Login } else { auth::Denied::Forbidden };
        return Err(auth::page_refusal(&state.config, denied, "/runners"));
    }
    runners_page(&state).await.map_err(IntoResponse::into_response)
}

async fn runners_page(state: &AppState) -> ApiResult<Html<String>> {
    let now = state.now_ms();
    let runners = state.store.runners(1000).await?;
    // Every job a runner holds (`expired_leases` of the end of time: all held leases).
    let held = state.store.expired_leases(i64::MAX).await?;
    let lines: Vec<pages::RunnerLine> = runners
        .iter()
        .map(|r| {
            let mine: Vec<&JobRow> = held.iter().filter(|j| j.runner_id == Some(r.id)).collect();
            let live_lease = mine.iter().any(|j| j.lease_expires_at.is_some_and(|t| t >= now));
            pages::RunnerLine {
                id: r.id as u64,
                name: r.name.clone(),
                tags: r.tags.clone(),
                online: now - r.last_seen_at <= online_window(state) || live_lease,
                last_contact: crate::pipelines::iso_time(r.last_seen_at),
                jobs: mine.iter().map(|j| (j.id as u64, j.name.clone(), j.pipeline_id as u64)).collect(),
            }
        })
        .collect();
    Ok(Html(pages::runners_page(&lines)))
}
