//! The JSON API for people and scripts, webhook intake, git for runners, metrics and health.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Caller};
use crate::blob::BlobStore;
use crate::error::{ApiResult, Error};
use crate::pipelines;
use crate::store::{NewPipeline, Recorded, Store};
use crate::{AppState, hash_token};
use scheduler::{Event, JobStatus, PipelineStatus};

#[derive(Serialize)]
pub struct JobView {
    pub id: i64,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub attempt: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Totals of the job's JUnit reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<crate::reports::Totals>,
    /// The value its `coverage:` regex found in its log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// A reused job: the earlier job whose artifacts, dotenv and log it has (it did not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<scheduler::protocol::ReusedFrom>,
}

/// The `reused_from` of a job row, decoded (a value that does not decode shows as none).
pub(crate) fn reused_from(j: &crate::store::JobRow) -> Option<scheduler::protocol::ReusedFrom> {
    j.reused_from.as_deref().and_then(|r| serde_json::from_str(r).ok())
}

#[derive(Serialize)]
pub struct PipelineView {
    pub id: i64,
    pub project: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub source: String,
    pub status: PipelineStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: i64,
    pub jobs: Vec<JobView>,
    /// The last commit status sent to the project's forge (absent without a forge, or before
    /// the first try).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forge_status: Option<ForgeStatusView>,
    /// The jobs' JUnit reports summed, with the failures (absent: no report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<crate::reports::PipelineTests>,
    /// The mean of the jobs' coverage values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// For a fork's merge request under `fork_pipelines = "approval"`: whether it still waits
    /// for a maintainer, or who approved it and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalView>,
    /// For a downstream pipeline: the pipeline and trigger job that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::store::Upstream>,
    /// The pipelines this one's trigger jobs created, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downstream: Vec<DownstreamView>,
}

/// A pipeline a trigger job created.
#[derive(Serialize)]
pub struct DownstreamView {
    pub id: i64,
    pub project: String,
    pub source: String,
    pub status: PipelineStatus,
    /// The trigger job that created it.
    pub job_id: i64,
}

#[derive(Serialize)]
pub struct ApprovalView {
    /// Nothing runs until a maintainer approves (`POST /api/v1/pipelines/{id}/approve`).
    pub waiting: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<i64>,
}

/// The last try to post a pipeline's state to its forge.
#[derive(Serialize)]
pub struct ForgeStatusView {
    /// The state tried (`pending`, `running`, `success`, `failed`, `canceled`, `skipped`).
    pub state: String,
    /// Whether the forge accepted it.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last state the forge accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posted: Option<String>,
    pub at: i64,
}

/// The pipeline's last commit-status post, when its project has a forge.
pub(crate) async fn forge_status(state: &AppState, row: &crate::store::PipelineRow) -> ApiResult<Option<ForgeStatusView>> {
    if state.config.project(&row.project).and_then(|p| p.forge.as_ref()).is_none() {
        return Ok(None);
    }
    Ok(state.store.forge_post(row.id).await?.map(|f| ForgeStatusView {
        state: f.state,
        ok: f.error.is_none(),
        error: f.error,
        posted: f.posted,
        at: f.at,
    }))
}

async fn view(state: &AppState, row: crate::store::PipelineRow) -> ApiResult<PipelineView> {
    let jobs = state.store.jobs(row.id).await?;
    let forge_status = forge_status(state, &row).await?;
    let mut reports = crate::reports::of_pipeline(&state.store, &row, &jobs).await?;
    let downstream = state
        .store
        .downstream_pipelines(row.id)
        .await?
        .into_iter()
        .map(|d| DownstreamView {
            id: d.id,
            project: d.project,
            source: d.source,
            status: d.status,
            job_id: d.upstream.map_or(0, |u| u.job_id),
        })
        .collect();
    Ok(PipelineView {
        upstream: row.upstream,
        downstream,
        forge_status,
        tests: reports.tests.take(),
        coverage: reports.coverage,
        approval: row.approval.clone().map(|a| ApprovalView { waiting: a.by.is_none(), approved_by: a.by, approved_at: a.at }),
        id: row.id,
        project: row.project,
        git_ref: row.git_ref,
        sha: row.sha,
        source: row.source,
        status: row.status,
        error: row.error,
        created_at: row.created_at,
        jobs: jobs
            .into_iter()
            .map(|j| {
                let (tests, coverage) = reports.jobs.get(&j.id).copied().unwrap_or_default();
                JobView {
                    reused_from: reused_from(&j),
                    id: j.id,
                    name: j.name,
                    stage: j.stage,
                    status: j.status,
                    attempt: j.attempt,
                    exit_code: j.exit_code,
                    failure_reason: j.failure_reason,
                    tests,
                    coverage,
                }
            })
            .collect(),
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    project: Option<String>,
    limit: Option<i64>,
}

/// The newest pipelines of the projects the caller may read (of one project with `?project=`).
pub async fn list_pipelines(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<PipelineView>>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = match q.project.as_deref() {
        Some(project) => {
            auth::check(&state.config, &caller, project, auth::Need::Read).map_err(|d| d.api("project"))?;
            state.store.pipelines(Some(project), limit).await?
        }
        None => readable_pipelines(&state, &caller, limit).await?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(view(&state, r).await?);
    }
    Ok(Json(out))
}

/// The newest `limit` pipelines of every project the caller may read: all of them for a
/// caller who may read every configured project, else merged from each readable project's.
async fn readable_pipelines(state: &AppState, caller: &Caller, limit: i64) -> ApiResult<Vec<crate::store::PipelineRow>> {
    if auth::is_admin(&state.config, caller) {
        return Ok(state.store.pipelines(None, limit).await?);
    }
    let mut rows = Vec::new();
    for p in &state.config.projects {
        if auth::check(&state.config, caller, &p.name, auth::Need::Read).is_ok() {
            rows.extend(state.store.pipelines(Some(&p.name), limit).await?);
        }
    }
    if rows.is_empty() && caller.user().is_none() && !state.config.projects.is_empty() {
        return Err(auth::Denied::Login.api("project"));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.id));
    rows.truncate(limit as usize);
    Ok(rows)
}

pub async fn get_pipeline(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<i64>) -> ApiResult<Json<PipelineView>> {
    let row = auth::pipeline(&state, &caller, id, false).await?;
    Ok(Json(view(&state, row).await?))
}

#[derive(Serialize)]
pub struct JobDetail {
    pub pipeline_id: i64,
    #[serde(flatten)]
    pub job: JobView,
    /// Every attempt, oldest first, each with its own result (the last is the job's own).
    pub attempts: Vec<AttemptView>,
    /// The deployment repository's commit that holds the value a `piste/gitops-bump@v1` step
    /// set (the last such step's), when one ran to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy_commit: Option<String>,
    /// Every gitops bump of the job, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deploys: Vec<DeployView>,
    /// The images the job's `piste/image-build@v1` and `piste/image-copy@v1` steps pushed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageView>,
}

/// What one image step of a job pushed.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct ImageView {
    /// The step's `name:`.
    pub step: String,
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// `registry/repository@sha256:…`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Every reference tagged (`registry/repository:tag`).
    pub tags: Vec<String>,
    /// Whether a signature and a provenance were attached (`None` for a copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<bool>,
}

/// The images a job pushed: its spec names the image steps, their outputs are in the dotenv
/// report (`NAME_DIGEST`, `NAME_REF`, `NAME_TAGS`, `NAME_SIGNED`). The report is the job's
/// file, so values that are not a digest and references of it are dropped.
pub(crate) fn images_of(spec: &str, dotenv: Option<&str>) -> Vec<ImageView> {
    let Ok(template) = serde_json::from_str::<pipelines::JobTemplate>(spec) else { return Vec::new() };
    let vars: Vec<(String, String)> = dotenv.and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
    let get = |k: &str| vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let is_digest = |d: &str| d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let is_reference = |r: &str| !r.is_empty() && r.len() <= 512 && !r.chars().any(|c| c.is_whitespace() || c.is_control());
    let (build, copy) = (pipeline_spec::steps::IMAGE_BUILD.name, pipeline_spec::steps::IMAGE_COPY.name);
    template
        .job
        .steps
        .iter()
        .filter(|s| s.builtin() == Some(build) || s.builtin() == Some(copy))
        .filter_map(|s| {
            let name = s.name.to_ascii_uppercase();
            let digest = get(&format!("{name}_DIGEST")).filter(|d| is_digest(d))?;
            let reference = get(&format!("{name}_REF")).filter(|r| is_reference(r) && r.ends_with(&format!("@{digest}")))?;
            let tags = get(&format!("{name}_TAGS"))
                .unwrap_or_default()
                .split_whitespace()
                .filter(|t| is_reference(t))
                .take(100)
                .map(str::to_string)
                .collect();
            let signed = (s.builtin() == Some(build)).then(|| get(&format!("{name}_SIGNED")).as_deref() == Some("true"));
            Some(ImageView { step: s.name.clone(), digest, reference, tags, signed })
        })
        .collect()
}

/// What one `piste/gitops-bump@v1` step of a job produced.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct DeployView {
    /// The step's `name:`.
    pub step: String,
    pub commit: String,
    /// Whether the step made that commit (`false`: the value was there already, or a newer
    /// pipeline had set it).
    pub changed: bool,
}

/// The gitops bumps of a job: its spec names the steps, and their outputs are in the dotenv
/// report the runner uploaded with the artifacts (`NAME_COMMIT`, `NAME_CHANGED`).
pub(crate) fn deploys_of(spec: &str, dotenv: Option<&str>) -> Vec<DeployView> {
    let Ok(template) = serde_json::from_str::<pipelines::JobTemplate>(spec) else { return Vec::new() };
    let vars: Vec<(String, String)> = dotenv.and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
    let get = |k: &str| vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    template
        .job
        .steps
        .iter()
        .filter(|s| s.builtin() == Some(pipeline_spec::steps::GITOPS_BUMP.name))
        .filter_map(|s| {
            let name = s.name.to_ascii_uppercase();
            let commit = get(&format!("{name}_COMMIT")).filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))?;
            Some(DeployView { step: s.name.clone(), commit, changed: get(&format!("{name}_CHANGED")).as_deref() == Some("true") })
        })
        .collect()
}

#[derive(Serialize)]
pub struct AttemptView {
    pub attempt: i64,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The job's attempts: the earlier ones as they ended, then the current one.
pub(crate) async fn attempts(state: &AppState, j: &crate::store::JobRow) -> ApiResult<Vec<AttemptView>> {
    let mut out: Vec<AttemptView> = state
        .store
        .past_attempts(j.id)
        .await?
        .into_iter()
        .map(|a| AttemptView {
            attempt: a.attempt,
            status: a.status,
            failure_reason: a.failure_reason,
            exit_code: a.exit_code,
            started_at: a.started_at,
            finished_at: a.finished_at,
        })
        .collect();
    out.push(AttemptView {
        attempt: j.attempt,
        status: j.status,
        failure_reason: j.failure_reason.clone(),
        exit_code: j.exit_code,
        started_at: j.started_at,
        finished_at: j.finished_at,
    });
    Ok(out)
}

pub async fn get_job(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<i64>) -> ApiResult<Json<JobDetail>> {
    let (j, _) = auth::job(&state, &caller, id, false).await?;
    let attempts = attempts(&state, &j).await?;
    let deploys = deploys_of(&j.spec, j.dotenv.as_deref());
    let images = images_of(&j.spec, j.dotenv.as_deref());
    let report = state.store.job_reports(j.pipeline_id).await?.into_iter().find(|r| r.job_id == id);
    let tests = report.as_ref().and_then(|r| r.tests.as_deref()).and_then(|t| serde_json::from_str::<crate::reports::TestReport>(t).ok());
    Ok(Json(JobDetail {
        pipeline_id: j.pipeline_id,
        deploy_commit: deploys.last().map(|d| d.commit.clone()),
        deploys,
        images,
        job: JobView {
            reused_from: reused_from(&j),
            id: j.id,
            name: j.name,
            stage: j.stage,
            status: j.status,
            attempt: j.attempt,
            exit_code: j.exit_code,
            failure_reason: j.failure_reason,
            tests: tests.map(|r| crate::reports::Totals { total: r.total, failed: r.failed, skipped: r.skipped, errors: r.errors }),
            coverage: report.and_then(|r| r.coverage),
        },
        attempts,
    }))
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// Which attempt's log (default: the latest).
    attempt: Option<i64>,
    /// Present: as a file to save (`Content-Disposition: attachment`).
    download: Option<String>,
}

pub async fn job_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (job, _) = auth::job(&state, &caller, id, false).await?;
    let attempt = q.attempt.unwrap_or(job.attempt.max(1));
    if attempt < 1 || attempt > job.attempt.max(1) {
        return Err(Error::NotFound("attempt"));
    }
    let Some(log) = state.logs.view(id, attempt).await? else {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::empty()).into_response());
    };
    let total = log.total();
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::ACCEPT_RANGES, "bytes")];
    // `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` (the tail): a viewer fetches a 100 MB log in parts.
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        let mut response = (plain, Body::from_stream(log.stream(0..total).await?)).into_response();
        if q.download.is_some() {
            // The bytes as stored: masked, with their colours and section markers.
            let name: String = job.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
            let value = format!("attachment; filename=\"{name}-{id}.{attempt}.log\"");
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
        }
        return Ok(response);
    };
    let Some((start, end)) = parse_range(range, total) else {
        return Ok((StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{total}"))], "").into_response());
    };
    let body = Body::from_stream(log.stream(start..end + 1).await?);
    Ok((StatusCode::PARTIAL_CONTENT, plain, [(header::CONTENT_RANGE, format!("bytes {start}-{end}/{total}"))], body).into_response())
}

/// One byte range of a `total`-byte file, inclusive; `None` when unsatisfiable or malformed.
fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (total.saturating_sub(n), total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

/// A job's artifacts archive, for people (the job page's download link). Same access as logs.
pub async fn artifacts(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<i64>) -> ApiResult<Response> {
    let (job, _) = auth::job(&state, &caller, id, false).await?;
    let Some(digest) = job.artifacts.as_deref().and_then(|d| d.strip_prefix("sha256:")) else {
        return Err(Error::NotFound("artifacts"));
    };
    let blob = state.blobs.get(&crate::blob::artifact_key(digest), None).await?.ok_or(Error::NotFound("artifacts"))?;
    // Served as stored (`.tar.zst` since runners write zstd; `.tar.gz` before): `tar -xf`
    // (GNU tar with zstd installed, bsdtar, 7-Zip) opens both, and the bytes stay the ones
    // whose digest the job page shows.
    let (media, ext, stream) = crate::runners::archive_stream(blob).await?;
    let name = format!(
        "attachment; filename=\"{}-artifacts.{ext}\"",
        job.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "_")
    );
    Ok(([(header::CONTENT_TYPE, media.to_string()), (header::CONTENT_DISPOSITION, name)], Body::from_stream(stream)).into_response())
}

/// An action on a job: the cross-site checks, then the caller's role on its pipeline's ref.
async fn job_event(
    state: &AppState,
    caller: &Caller,
    id: i64,
    (headers, body): (&HeaderMap, &[u8]),
    make: impl FnOnce(String) -> Event,
) -> ApiResult<StatusCode> {
    auth::check_unsafe(&state.config, caller, headers, body)?;
    let (job, pipeline) = auth::job(state, caller, id, true).await?;
    refuse_unapproved(&pipeline)?;
    let commands = pipelines::process(state, job.pipeline_id, vec![make(job.name)], Vec::new()).await?;
    if commands.is_empty() {
        return Err(Error::Conflict("the job is not in a state that allows this".into()));
    }
    Ok(StatusCode::ACCEPTED)
}

/// The buttons of the web pages are HTML forms: they get a redirect back to the page (`303`),
/// scripts get the JSON API's status. Only our own pages are redirected to (no open redirect).
/// A refusal (who may do what, cross-site) is an error for forms too, never a redirect.
fn answer(headers: &HeaderMap, result: ApiResult<StatusCode>, page: String) -> Response {
    let form =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    match result {
        Err(e @ (Error::Unauthorized(_) | Error::Forbidden(_) | Error::NotFound(_))) => e.into_response(),
        _ if form => (StatusCode::SEE_OTHER, [(header::LOCATION, page)]).into_response(),
        Ok(s) => s.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn job_page_of(state: &AppState, id: i64) -> String {
    match state.store.job(id).await {
        Ok(Some(j)) => format!("/pipelines/{}", j.pipeline_id),
        _ => "/".into(),
    }
}

pub async fn cancel_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = job_event(&state, &caller, id, (&headers, &body), |job| Event::CancelJob { job, now: state.now_ms() as u64 }).await;
    answer(&headers, r, job_page_of(&state, id).await)
}

#[derive(Deserialize)]
pub struct RetryQuery {
    /// `false`: "run anyway" — the new attempt runs even if an earlier result could be reused.
    reuse: Option<bool>,
}

pub async fn retry_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<RetryQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = retry_job_inner(&state, &caller, id, q.reuse != Some(false), (&headers, &body)).await;
    answer(&headers, r, job_page_of(&state, id).await)
}

/// The job's next attempt, queued by the engine; without `reuse`, marked to run whatever its
/// key (kept only if the retry queues that attempt: `pipelines::process`).
async fn retry_job_inner(
    state: &AppState,
    caller: &Caller,
    id: i64,
    reuse: bool,
    (headers, body): (&HeaderMap, &[u8]),
) -> ApiResult<StatusCode> {
    auth::check_unsafe(&state.config, caller, headers, body)?;
    let (job, pipeline) = auth::job(state, caller, id, true).await?;
    refuse_unapproved(&pipeline)?;
    let event = Event::RetryJob { job: job.name.clone(), now: state.now_ms() as u64 };
    let next = u32::try_from(job.attempt + 1).unwrap_or(u32::MAX);
    let extra = if reuse { Vec::new() } else { vec![crate::store::JobUpdate::RunAnyway { job_id: job.id, attempt: next }] };
    let commands = pipelines::process(state, job.pipeline_id, vec![event], extra).await?;
    if commands.is_empty() {
        return Err(Error::Conflict("the job is not in a state that allows this".into()));
    }
    Ok(StatusCode::ACCEPTED)
}

pub async fn play_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = job_event(&state, &caller, id, (&headers, &body), |job| Event::PlayManual { job, now: state.now_ms() as u64 }).await;
    answer(&headers, r, job_page_of(&state, id).await)
}

pub async fn cancel_pipeline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = cancel_pipeline_inner(&state, &caller, id, (&headers, &body)).await;
    answer(&headers, r, format!("/pipelines/{id}"))
}

async fn cancel_pipeline_inner(state: &AppState, caller: &Caller, id: i64, (headers, body): (&HeaderMap, &[u8])) -> ApiResult<StatusCode> {
    auth::check_unsafe(&state.config, caller, headers, body)?;
    auth::pipeline(state, caller, id, true).await?;
    let commands = pipelines::process(state, id, vec![Event::Cancel { now: state.now_ms() as u64 }], Vec::new()).await?;
    if commands.is_empty() {
        return Err(Error::Conflict("the pipeline is already finished".into()));
    }
    Ok(StatusCode::ACCEPTED)
}

/// Retries every failed or canceled job of the pipeline.
pub async fn retry_pipeline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = retry_pipeline_inner(&state, &caller, id, (&headers, &body)).await;
    answer(&headers, r, format!("/pipelines/{id}"))
}

async fn retry_pipeline_inner(state: &AppState, caller: &Caller, id: i64, (headers, body): (&HeaderMap, &[u8])) -> ApiResult<StatusCode> {
    auth::check_unsafe(&state.config, caller, headers, body)?;
    let pipeline = auth::pipeline(state, caller, id, true).await?;
    refuse_unapproved(&pipeline)?;
    let jobs = state.store.jobs(id).await?;
    let events: Vec<Event> = jobs
        .into_iter()
        .filter(|j| matches!(j.status, JobStatus::Failed | JobStatus::Canceled))
        .map(|j| Event::RetryJob { job: j.name, now: state.now_ms() as u64 })
        .collect();
    if events.is_empty() {
        return Err(Error::Conflict("no failed or canceled job to retry".into()));
    }
    pipelines::process(state, id, events, Vec::new()).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Nothing of a pipeline that waits for a maintainer's approval may run: its jobs are neither
/// played nor retried (even after it was canceled unapproved). Canceling it is allowed.
fn refuse_unapproved(p: &crate::store::PipelineRow) -> ApiResult<()> {
    if p.awaiting_approval() {
        return Err(Error::Conflict(
            "this pipeline of a fork's merge request has not been approved: a maintainer approves it first \
             (`POST /api/v1/pipelines/ID/approve`, or the button on its page)"
                .into(),
        ));
    }
    Ok(())
}

/// `POST /api/v1/pipelines/{id}/approve`: a maintainer lets a fork's merge-request pipeline
/// (`fork_pipelines = "approval"`) run, with the project's unprotected secrets.
pub async fn approve_pipeline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = approve_pipeline_inner(&state, &caller, id, (&headers, &body)).await;
    answer(&headers, r, format!("/pipelines/{id}"))
}

async fn approve_pipeline_inner(state: &AppState, caller: &Caller, id: i64, (headers, body): (&HeaderMap, &[u8])) -> ApiResult<StatusCode> {
    auth::check_unsafe(&state.config, caller, headers, body)?;
    let p = state.store.pipeline(id).await?.ok_or(Error::NotFound("pipeline"))?;
    auth::check(&state.config, caller, &p.project, auth::Need::Approve).map_err(|d| d.api("pipeline"))?;
    let user = caller.user().map(|u| u.name.clone()).ok_or(Error::Unauthorized("log in to approve"))?;
    match pipelines::approve(state, id, &user).await {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(e @ pipelines::ApproveError::NotWaiting) => Err(Error::Conflict(e.to_string())),
        Err(pipelines::ApproveError::Store(e)) => Err(e.into()),
    }
}

/// `POST /api/v1/webhooks/{project}`: verify over the raw body, then record, then plan.
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // Before any byte of the body: the project, the signature header (GitLab's token whole),
    // and the size; then the body is read only up to the limit.
    let Some(cfg) = state.config.project(&project) else {
        tracing::warn!(project = ?project, reason = "no such project", "webhook refused");
        return Err(Error::NotFound("project"));
    };
    if let Err(e) = crate::webhook::precheck(&headers, &cfg.webhook_secret) {
        tracing::warn!(%project, reason = ?e.to_string(), "webhook refused");
        return Ok(webhook_error(e));
    }
    let limits = &state.config.limits;
    let body = match crate::limits::read_webhook(&headers, body, limits.webhook_bytes, Duration::from_millis(limits.body_timeout_ms)).await
    {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(%project, reason = ?e.to_string(), "webhook refused");
            return Err(e);
        }
    };
    let forge = match crate::webhook::verify(&headers, &body, &cfg.webhook_secret) {
        Ok(f) => f,
        Err(e) => {
            // Debug-quoted: the reason may quote the request, which must not forge log lines.
            tracing::warn!(%project, reason = ?e.to_string(), "webhook refused");
            return Ok(webhook_error(e));
        }
    };
    let trigger = match crate::webhook::parse(forge, &headers, &body) {
        Ok(Some(t)) => t,
        Ok(None) => {
            tracing::info!(%project, ?forge, reason = "not an event that runs pipelines", "webhook ignored");
            return Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"status": "ignored"}))).into_response());
        }
        Err(e) => {
            tracing::warn!(%project, ?forge, reason = ?e.to_string(), "webhook refused");
            return Ok(webhook_error(e));
        }
    };
    let info = crate::webhook::ProjectInfo {
        path: cfg.name.clone(),
        default_branch: cfg.default_branch.clone(),
        // `CI_SERVER_*` and the page links: the address people reach this server at.
        server_url: state.external_url(),
        config_path: cfg.pipeline_file.clone().unwrap_or_else(|| ".gitlab-ci.yml".into()),
        ..crate::webhook::ProjectInfo::default()
    };
    let mut ctx = trigger.context(&info);
    ctx.pipeline_id = 0;
    ctx.pages = pipeline_spec::predefined::Pages::Piste;
    // Which refs are protected is the server's configuration, never the payload's word.
    let fork = ctx.from_fork();
    ctx.ref_protected = !fork && cfg.is_protected(ctx.branch.as_deref(), ctx.tag.as_deref());
    if let Some(mr) = ctx.merge_request.as_mut() {
        mr.source_branch_protected = !fork && cfg.is_protected(Some(&mr.source_branch), None);
        mr.target_branch_protected = cfg.is_protected(Some(&mr.target_branch), None);
    }
    if fork && cfg.fork_pipelines == crate::config::ForkPipelines::Off {
        tracing::info!(project = %cfg.name, delivery = %trigger.delivery_id, "webhook ignored: pipelines of forks are off for this project");
        return Ok((StatusCode::OK, Json(serde_json::json!({"ignored": "fork_pipelines = \"off\""}))).into_response());
    }
    let new = NewPipeline {
        project: cfg.name.clone(),
        git_ref: trigger.git_ref.clone(),
        sha: trigger.sha.clone(),
        before_sha: trigger.before_sha.clone(),
        source: trigger.source().to_string(),
        trigger: serde_json::to_string(&ctx).map_err(|e| Error::Internal(e.into()))?,
        created_at: state.now_ms(),
        needs_approval: fork && cfg.fork_pipelines == crate::config::ForkPipelines::Approval,
        upstream: None,
    };
    state.metrics.webhook_received();
    let delivery = &trigger.delivery_id;
    match state.store.record_pipeline(delivery, &new).await? {
        Recorded::Duplicate(id) => {
            tracing::info!(project = %cfg.name, pipeline = id, %delivery, "webhook received again: no new pipeline");
            Ok((StatusCode::OK, Json(serde_json::json!({"pipeline": id, "duplicate": true}))).into_response())
        }
        Recorded::Created(id) => {
            tracing::info!(project = %cfg.name, pipeline = id, %delivery, git_ref = %new.git_ref, sha = %new.sha, "webhook received");
            state.pipeline_changed(id, &cfg.name, true);
            tokio::spawn(pipelines::plan_and_start(state.clone(), id));
            Ok((StatusCode::CREATED, Json(serde_json::json!({"pipeline": id}))).into_response())
        }
    }
}

/// Webhook errors keep the module's status table (401 signatures, 400 malformed, 202 ignored).
fn webhook_error(e: crate::webhook::WebhookError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let code = match status.as_u16() {
        401 => "unauthorized",
        413 => "payload_too_large",
        202 => "ignored",
        _ => "bad_request",
    };
    (status, Json(scheduler::protocol::ApiError { code: code.into(), message: e.to_string() })).into_response()
}

/// Git smart HTTP for a job's checkout: Basic auth with the job token, read-only.
pub async fn git(
    State(state): State<Arc<AppState>>,
    Path((id, rest)): Path<(i64, String)>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let unauthorized =
        || (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"piste\"")], "a job token is required").into_response();
    let Some(token) = basic_password(&headers) else { return Ok(unauthorized()) };
    let Some(job) = state.store.job_by_token(id, &hash_token(&token)).await? else { return Ok(unauthorized()) };
    let pipeline = state.store.pipeline(job.pipeline_id).await?.ok_or(Error::NotFound("pipeline"))?;
    // `-/projects/<name>.git/…`: another configured project (a submodule's relative URL).
    let (mirror_dir, path_info) = match rest.strip_prefix("-/projects/") {
        Some(other) => {
            let Some((name, path_info)) = other.split_once(".git/") else { return Err(Error::NotFound("repository")) };
            let Some(project) = state.config.project(name) else { return Err(Error::NotFound("project")) };
            if !project.allows_job_of(&pipeline.project) {
                tracing::info!(project = %pipeline.project, other = %name, job = id, "a job's token was refused for another project's repository");
                return Err(Error::NotFound("project"));
            }
            if method == axum::http::Method::GET {
                refresh_mirror(&state, name).await?;
            }
            (state.mirror_dir(name), format!("/{path_info}"))
        }
        None => {
            ensure_commit(&state, &pipeline).await?;
            (state.mirror_dir(&pipeline.project), format!("/{rest}"))
        }
    };
    let body = crate::limits::read_limited(&headers, body, crate::limits::GIT_REQUEST_BYTES, "git requests").await?;
    let mut req = crate::git::http::GitHttpRequest::new(method.as_str(), &path_info, uri.query().unwrap_or(""), &headers, body.to_vec());
    req.remote_user = Some(format!("job-{id}"));
    let resp = crate::git::http::serve(&mirror_dir, req).await.map_err(|e| Error::Internal(e.into()))?;
    let mut out = Response::builder().status(resp.status);
    for (k, v) in resp.headers {
        out = out.header(k, v);
    }
    out.body(Body::from(resp.body)).map_err(|e| Error::Internal(e.into()))
}

/// Mirrors are a local cache: a server that did not plan the pipeline (another server did, or
/// its data directory is new) fetches the commit before serving it.
async fn ensure_commit(state: &Arc<AppState>, pipeline: &crate::store::PipelineRow) -> ApiResult<()> {
    let Some(project) = state.config.project(&pipeline.project) else { return Err(Error::NotFound("project")) };
    let (state, repo, name, sha, id) =
        (state.clone(), state.config.remote(project), pipeline.project.clone(), pipeline.sha.clone(), pipeline.id);
    let fetched = tokio::task::spawn_blocking(move || -> Result<(), crate::git::GitError> {
        let mirror = state.mirror(&name)?;
        if !mirror.has_commit(&sha) {
            tracing::info!(project = %name, "fetching the mirror for a runner's checkout");
            mirror.fetch_from(&repo)?;
        }
        // The pipeline's ref, as the planning server made it.
        mirror.pin(id, &sha).map(drop)
    })
    .await
    .map_err(|e| Error::Internal(e.into()))?;
    fetched.map_err(|e| {
        tracing::error!(project = %pipeline.project, error = %crate::error::chain(&e), "cannot fetch the mirror for a runner's checkout");
        Error::Internal("the server cannot fetch this project's repository; see its log".into())
    })
}

/// Another project's mirror, fetched before its refs are advertised to a job cloning it as a
/// submodule (the commit the job needs was pushed there, not to the job's project).
async fn refresh_mirror(state: &Arc<AppState>, name: &str) -> ApiResult<()> {
    let Some(project) = state.config.project(name) else { return Err(Error::NotFound("project")) };
    let (st, repo, name) = (state.clone(), state.config.remote(project), name.to_owned());
    let shown = name.clone();
    let fetched =
        tokio::task::spawn_blocking(move || st.mirror(&name)?.fetch_from(&repo).map(drop)).await.map_err(|e| Error::Internal(e.into()))?;
    match fetched {
        Ok(()) => Ok(()),
        // What the mirror already holds is served: the commit may well be there.
        Err(e) if state.mirror_dir(&shown).join("HEAD").is_file() => {
            tracing::warn!(project = %shown, error = %crate::error::chain(&e), "cannot refresh the mirror for a job's submodule; serving it as it is");
            Ok(())
        }
        Err(e) => {
            tracing::error!(project = %shown, error = %crate::error::chain(&e), "cannot fetch the mirror for a job's submodule");
            Err(Error::Internal("the server cannot fetch this project's repository; see its log".into()))
        }
    }
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?.trim();
    if v.len() > 4096 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, pass) = text.split_once(':')?;
    Some(pass.to_string())
}

pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.queue_depth().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "health check: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer (see the server log)\n").into_response()
        }
    }
}

/// OpenMetrics text (Prometheus scrapes it): the store's gauges and this server's counters.
pub async fn metrics(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    type ByStatus = Family<Vec<(&'static str, &'static str)>, Gauge>;

    let counts = state.store.counts().await?;
    let depth = state.store.queue_depth().await?;
    let mut registry = Registry::with_prefix("piste");
    let gauge = |n: i64| {
        let g: Gauge = Gauge::default();
        g.set(n);
        g
    };
    registry.register("queue_depth", "Jobs waiting for a runner", gauge(depth));
    let jobs = ByStatus::default();
    for (status, n) in &counts.jobs_by_status {
        jobs.get_or_create(&vec![("status", status.as_str())]).set(*n);
    }
    registry.register("jobs", "Jobs by status", jobs);
    let pipelines = ByStatus::default();
    for (status, n) in &counts.pipelines_by_status {
        pipelines.get_or_create(&vec![("status", status.as_str())]).set(*n);
    }
    registry.register("pipelines", "Pipelines by status", pipelines);
    registry.register("runners", "Registered runners", gauge(counts.runners));
    // What this server holds in memory: each returns to zero when nothing runs (a count that
    // only grows is a leak an operator can see).
    let held = ByStatus::default();
    for (kind, n) in state.in_memory().await.kinds() {
        held.get_or_create(&vec![("kind", kind)]).set(n as i64);
    }
    registry.register(
        "in_memory",
        "Pipelines' engines, per-job log locks and watchers, queued jobs, and the rows remembered for the runner protocol, held in memory",
        held,
    );
    state.metrics.register(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).map_err(|e| Error::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{basic_password, parse_range};

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-1000", 100), Some((0, 99)));
        assert_eq!(parse_range("bytes=50-5000", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("bytes=0-1,4-5", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }

    #[test]
    fn basic_auth_passwords() {
        let check = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            basic_password(&h)
        };
        assert_eq!(check("Basic cGlzdGUtY2ktdG9rZW46YWJj").as_deref(), Some("abc"));
        assert_eq!(check("Basic  cGlzdGUtY2ktdG9rZW46YWJj ").as_deref(), Some("abc"));
        assert_eq!(check("Basic YTo=").as_deref(), Some(""));
        assert_eq!(check("Basic !!!"), None);
        assert_eq!(check("Basic YQ=="), None, "no colon");
        assert_eq!(check("Bearer cGlzdGUtY2ktdG9rZW46YWJj"), None);
        assert_eq!(check(&format!("Basic {}", "A".repeat(5000))), None);
    }
}
