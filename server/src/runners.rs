//! The runner protocol's server side (see [`scheduler::protocol`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use pipeline_spec::predefined::Context;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::blob::{BlobStore, BlobWriter, artifact_key};
use crate::error::{ApiResult, Error};
use crate::pipelines::{self, JobTemplate};
use crate::store::{JobRow, JobUpdate, RunnerScope, Store};
use crate::{AppState, hash_token, new_token, tokens_equal};
use scheduler::protocol::{
    self, Dependency, FinishRequest, Heartbeat, JobPayload, JobRequestBody, LogAck, LogGap, RegisterRequest, RegisterResponse,
};
use scheduler::{Event, Outcome};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

pub async fn register(
    State(state): State<Arc<AppState>>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let expected = &state.config.runner_registration_token;
    if expected.is_empty() || !tokens_equal(expected, &req.registration_token) {
        return Err(Error::Unauthorized("invalid registration token"));
    }
    if req.name.is_empty() || req.name.len() > 255 || req.tags.iter().any(|t| t.is_empty() || t.len() > 255) || req.tags.len() > 64 {
        return Err(Error::BadRequest("a runner needs a name (≤ 255 characters) and at most 64 non-empty tags".into()));
    }
    if let Some(unknown) = req.projects.iter().find(|p| state.config.project(p).is_none()) {
        return Err(Error::BadRequest(format!("`--projects` names `{unknown}`, which this server does not serve")));
    }
    let scope = RunnerScope {
        run_untagged: req.run_untagged,
        protected_only: req.protected,
        projects: (!req.projects.is_empty()).then(|| req.projects.clone()),
    };
    let token = new_token();
    let runner = state.store.register_runner(&req.name, &req.tags, &scope, &hash_token(&token), state.now_ms()).await?;
    tracing::info!(runner = runner.id, name = %runner.name, tags = ?runner.tags, run_untagged = scope.run_untagged, protected = scope.protected_only, projects = ?scope.projects, "runner registered");
    Ok((StatusCode::CREATED, Json(RegisterResponse { id: runner.id, token })))
}

/// Long poll: a pending job this runner may run (its tags and scope, see `Store::claim_job`),
/// or 204 after `poll_ms`. Secrets join the job here, so they reach only such a runner.
pub async fn request_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Option<Json<JobRequestBody>>,
) -> ApiResult<Response> {
    let _ = body;
    let token = bearer(&headers).ok_or(Error::Unauthorized("missing runner token"))?;
    let runner = state.runner(&hash_token(token)).await?.ok_or(Error::Unauthorized("unknown runner token"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(state.config.poll_ms);
    loop {
        // Register interest before looking, so a job queued in between wakes us.
        let notified = state.queued.notified();
        let job_token = new_token();
        let now = state.now_ms();
        let lease_until = now + state.config.lease_ms as i64;
        if let Some(claimed) = state.store.claim_job(&runner, &hash_token(&job_token), now, lease_until).await? {
            state.observe_dispatch(claimed.job.id);
            let payload = match payload(&state, &claimed.job, runner.id, job_token).await? {
                Ok(p) => p,
                Err(why) => {
                    crate::cross_needs::refuse(&state, &claimed.job, why).await?;
                    continue;
                }
            };
            let job = &claimed.job;
            tracing::info!(project = %payload.project, pipeline = job.pipeline_id, job = job.id, name = %job.name, attempt = job.attempt, runner = runner.id, "job leased");
            let event = Event::JobStarted { job: job.name.clone(), attempt: job.attempt as u32, now: now as u64 };
            pipelines::job_started_later(state.clone(), job.pipeline_id, event).await;
            return Ok(Json(payload).into_response());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

/// The job's payload, or why it cannot start (a `needs:pipeline`/`needs:project` job not found).
async fn payload(
    state: &AppState,
    job: &JobRow,
    runner_id: i64,
    token: String,
) -> ApiResult<Result<JobPayload, crate::cross_needs::Missing>> {
    let mut template: JobTemplate = serde_json::from_str(&job.spec)
        .map_err(|e| Error::Internal(crate::store::StoreError::corrupt(format!("the spec of job {}", job.id), e).into()))?;
    let pipeline = state.running_pipeline(job.pipeline_id).await?.ok_or(Error::NotFound("pipeline"))?;
    let mut ctx = pipelines::context_of(&pipeline).map_err(|e| Error::Internal(e.into()))?;
    if let Some(project) = state.config.project(&pipeline.project) {
        template.job.add_outer(pipelines::secret_vars(project, &pipeline, &ctx));
    }
    let tokens = id_token_vars(state, &template.job, &pipeline, &ctx, job.id, runner_id).await?;
    template.job.add_outer(tokens);
    if let Some(mr) = &mut ctx.merge_request {
        mr.diff_base_sha.clone_from(&template.diff_base_sha);
    }
    let siblings = if template.job.dependencies.is_empty() { Vec::new() } else { state.store.jobs(job.pipeline_id).await? };
    let mut dependencies = Vec::new();
    let mut dotenv: Vec<(String, String)> = Vec::new();
    for name in &template.job.dependencies {
        if let Some(dep) = siblings.iter().find(|j| &j.name == name) {
            if dep.artifacts.is_some() {
                dependencies.push(Dependency { job_id: dep.id, name: dep.name.clone(), digest: dep.artifacts.clone() });
            }
            if let Some(d) = &dep.dotenv {
                dotenv.extend(serde_json::from_str::<Vec<(String, String)>>(d).unwrap_or_default());
            }
        }
    }
    let predefined = template.job.predefined(&ctx, u64::try_from(job.id).unwrap_or(0));
    match crate::cross_needs::resolve(state, &pipeline, &template.job, &predefined).await? {
        Ok(found) => {
            dependencies.extend(found.dependencies);
            dotenv.extend(found.dotenv);
        }
        Err(why) => return Ok(Err(why)),
    }
    let signing_key = signing_key_for(&state.config, &template.job, &ctx);
    let mut git = template.git.clone();
    git.path = protocol::paths::git(job.id);
    let reuse = state.config.project(&pipeline.project).and_then(|p| crate::reuse::offer(p, &template, &ctx));
    Ok(Ok(JobPayload {
        job_id: job.id,
        pipeline_id: job.pipeline_id,
        project: pipeline.project.clone(),
        attempt: job.attempt as u32,
        token,
        lease_ms: state.config.lease_ms,
        git,
        job: template.job,
        predefined,
        dotenv,
        dependencies,
        signing_key,
        log_in_finish: true,
        reuse,
    }))
}

/// The job's ID tokens (`id_tokens:`), signed now, as masked variables beside the project's
/// secrets ([`Layer::Project`](scheduler::job::Layer)). The rule secrets follow decides who
/// gets them (`pipelines::trust`): a fork's merge request nobody approved gets none; an
/// approved one gets tokens that say its ref is not protected.
async fn id_token_vars(
    state: &AppState,
    spec: &protocol::JobSpec,
    pipeline: &crate::store::PipelineRow,
    ctx: &Context,
    job_id: i64,
    runner_id: i64,
) -> ApiResult<Vec<scheduler::job::SpecVar>> {
    use crate::config::Source;
    let source = pipelines::trust(pipeline, ctx);
    if spec.id_tokens.is_empty() || source == Source::Fork {
        return Ok(Vec::new());
    }
    // `aud` sees the job's variables (secrets included, not its dependencies' dotenv), as
    // GitLab's `expanded_id_token_aud`.
    let predefined = spec.predefined(ctx, u64::try_from(job_id).unwrap_or(0));
    let variables: Vec<(String, String)> = spec.variables(&predefined, &[]).into_iter().map(|v| (v.key, v.value)).collect();
    let issuer = state.external_url();
    let facts = crate::id_tokens::JobFacts {
        issuer: &issuer,
        job_id,
        runner_id,
        timeout_s: spec.timeout_s,
        variables: &variables,
        ref_protected: ctx.ref_protected && source == Source::Project,
        now_s: state.now_ms().div_euclid(1000),
    };
    let tokens = crate::id_tokens::job_tokens(state, ctx, &spec.id_tokens, &facts).await.map_err(|e| Error::Internal(e.into()))?;
    Ok(tokens
        .into_iter()
        .map(|(key, value)| scheduler::job::SpecVar { key, value, raw: true, masked: true, layer: scheduler::job::Layer::Project })
        .collect())
}

/// The signing key a job receives: the server's `[signing]` key, for a job with a
/// `piste/image-build@v1` step, of a protected ref (any ref with `unprotected = true`), never of
/// a fork's merge request. Other jobs never receive it.
fn signing_key_for(config: &crate::config::Config, job: &protocol::JobSpec, ctx: &Context) -> Option<protocol::SigningKey> {
    let signing = config.signing.as_ref()?;
    let builds = job.steps.iter().any(|s| s.builtin() == Some(pipeline_spec::steps::IMAGE_BUILD.name));
    // The rule secrets follow (`ProjectConfig::secrets_for`): protected refs, never a fork.
    let trusted = !ctx.from_fork() && (ctx.ref_protected || signing.unprotected);
    (builds && trusted).then(|| protocol::SigningKey(signing.key_pem.clone()))
}

/// The running job `id` whose token the request carries.
pub(crate) async fn job_for(state: &AppState, id: i64, headers: &HeaderMap) -> ApiResult<JobRow> {
    let token = bearer(headers).ok_or(Error::Unauthorized("missing job token"))?;
    state.store.job_by_token(id, &hash_token(token)).await?.ok_or(Error::Unauthorized("invalid or expired job token"))
}

pub async fn heartbeat(State(state): State<Arc<AppState>>, Path(id): Path<i64>, headers: HeaderMap) -> ApiResult<Json<Heartbeat>> {
    job_for(&state, id, &headers).await?;
    let cancel = state.store.extend_lease(id, state.now_ms() + state.config.lease_ms as i64).await?;
    Ok(Json(Heartbeat { cancel, lease_ms: state.config.lease_ms }))
}

#[derive(Deserialize)]
pub struct OffsetQuery {
    offset: u64,
}

pub async fn append_log(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<OffsetQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let job = job_for(&state, id, &headers).await?;
    let body = crate::limits::read_limited(&headers, body, crate::limits::LOG_CHUNK_BYTES, "log chunks").await?;
    let secrets = state.project_secrets(job.pipeline_id).await?;
    let lock = state.log_lock(id).await;
    let _guard = lock.lock().await;
    let appended = state.logs.append(id, job.attempt, q.offset, body, secrets, state.now_ms()).await?;
    state.log_appended(id);
    Ok(match appended {
        crate::logs::Append::Ok { next_offset } => (StatusCode::ACCEPTED, Json(LogAck { next_offset })).into_response(),
        crate::logs::Append::Gap { expected_offset } => (
            StatusCode::CONFLICT,
            Json(LogGap {
                code: "log_gap".into(),
                message: format!("this chunk starts at {}, but the log ends at {expected_offset}", q.offset),
                expected_offset,
            }),
        )
            .into_response(),
        crate::logs::Append::Sealed { length } => {
            return Err(Error::Conflict(format!("this attempt's log is closed at {length} bytes: its job has finished")));
        }
    })
}

/// Receives the artifacts archive, verifying its SHA-256 while it streams to the blob store;
/// the blob appears under its digest only once the digest matched.
pub async fn upload_artifacts(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let job = job_for(&state, id, &headers).await?;
    let expected = digest_header(&headers)?;
    if crate::limits::declared_length(&headers).is_some_and(|n| n > state.config.max_artifacts_bytes) {
        return Err(Error::PayloadTooLarge(format!("artifacts are limited to {} bytes", state.config.max_artifacts_bytes)));
    }
    let key = artifact_key(&expected);
    let mut writer = state.blobs.create(&key).await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(Error::BadRequest(format!("upload interrupted: {e}")));
            }
        };
        size += chunk.len() as u64;
        if size > state.config.max_artifacts_bytes {
            let _ = writer.abort().await;
            return Err(Error::PayloadTooLarge(format!("artifacts are limited to {} bytes", state.config.max_artifacts_bytes)));
        }
        hasher.update(&chunk);
        if let Err(e) = writer.write(chunk).await {
            let _ = writer.abort().await;
            return Err(e.into());
        }
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        let _ = writer.abort().await;
        return Err(Error::BadRequest(format!("artifacts digest mismatch: header says sha256:{expected}, body is sha256:{actual}")));
    }
    writer.commit().await?;
    record_artifacts(&state, &job, &actual).await
}

/// The `X-Sha256` header's hex digest, checked.
fn digest_header(headers: &HeaderMap) -> ApiResult<String> {
    Ok(headers
        .get(protocol::SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256:"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .ok_or_else(|| Error::BadRequest(format!("the `{}` header must be `sha256:<64 lowercase hex digits>`", protocol::SHA256_HEADER)))?
        .to_string())
}

/// `POST /api/v1/jobs/{id}/artifacts` (no body): records the archive named by `X-Sha256` for
/// this job without an upload, when a job of the same project already uploaded it and the blob
/// is still stored (201). Otherwise 404, and the runner uploads it with `PUT`. Another
/// project's archives are never matched, so the answer tells nothing about them.
pub async fn link_artifacts(State(state): State<Arc<AppState>>, Path(id): Path<i64>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let job = job_for(&state, id, &headers).await?;
    let digest = digest_header(&headers)?;
    let pipeline = state.store.pipeline(job.pipeline_id).await?.ok_or(Error::NotFound("pipeline"))?;
    let known = state.store.project_has_artifacts(&pipeline.project, &format!("sha256:{digest}")).await?;
    if !known || state.blobs.head(&artifact_key(&digest)).await?.is_none() {
        return Err(Error::NotFound("artifacts"));
    }
    state.metrics.artifacts_deduplicated.inc();
    tracing::debug!(job = id, digest = %digest, "artifacts already stored: upload skipped");
    record_artifacts(&state, &job, &digest).await
}

/// Records a stored archive as the job's artifacts and reads its test report. (Dotenv
/// reports are not in the archive: the runner sends their variables with `finish`.)
pub(crate) async fn record_artifacts(state: &AppState, job: &JobRow, actual: &str) -> ApiResult<StatusCode> {
    let (id, key) = (job.id, artifact_key(actual));
    state.store.set_artifacts(id, &format!("sha256:{actual}")).await?;
    let template: JobTemplate = serde_json::from_str(&job.spec).map_err(|e| Error::Internal(e.into()))?;
    if let Some(a) = template.job.artifacts.as_ref().filter(|a| !a.junit.is_empty()) {
        store_test_report(state, job, &key, a.junit.clone()).await?;
    }
    Ok(StatusCode::CREATED)
}

/// Reads the JUnit reports in the uploaded archive into the job's test report (cleared when
/// no file matched; a report that cannot be read is logged and ignored).
async fn store_test_report(state: &AppState, job: &JobRow, key: &str, patterns: Vec<String>) -> ApiResult<()> {
    let blob = state.blobs.get(key, None).await?.ok_or(Error::NotFound("artifacts"))?;
    let reader = tokio_util::io::StreamReader::new(blob.stream.map(|r| r.map_err(std::io::Error::other)));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let read = tokio::task::spawn_blocking(move || crate::reports::read_junit(bridge, &patterns, crate::reports::Limits::default()))
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    let json = match read {
        Ok(report) => report.map(|r| serde_json::to_string(&r).unwrap_or_default()),
        Err(e) => {
            tracing::warn!(pipeline = job.pipeline_id, job = job.id, error = ?crate::error::chain(&e), "test report ignored");
            None
        }
    };
    state.store.set_test_report(job.id, job.pipeline_id, json.as_deref()).await?;
    Ok(())
}

/// zstd or gzip (archives uploaded before runners wrote zstd), told by the magic bytes.
pub(crate) fn archive_decoder<'a>(archive: impl std::io::Read + 'a) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
    use std::io::BufRead;
    let mut input = std::io::BufReader::new(archive);
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::GzDecoder::new(input)))
    } else {
        let mut d = zstd::stream::read::Decoder::with_buffer(input)?;
        d.window_log_max(27)?;
        Ok(Box::new(d))
    }
}

/// Peeks at the first chunk of an archive blob: its format's media type and file extension,
/// and the stream with that chunk put back.
pub(crate) async fn archive_stream(
    blob: crate::blob::Blob,
) -> ApiResult<(&'static str, &'static str, impl futures_util::Stream<Item = Result<Bytes, crate::blob::BlobError>>)> {
    let mut stream = blob.stream;
    let first = match stream.next().await {
        Some(chunk) => chunk?,
        None => Bytes::new(),
    };
    let (media, ext) = if first.starts_with(&[0x1f, 0x8b]) { ("application/gzip", "tar.gz") } else { ("application/zstd", "tar.zst") };
    Ok((media, ext, futures_util::stream::iter([Ok(first)]).chain(stream)))
}

/// A dependency's artifacts, for a job that receives them.
pub async fn download_artifacts(
    State(state): State<Arc<AppState>>,
    Path((id, dep)): Path<(i64, i64)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = job_for(&state, id, &headers).await?;
    let template: JobTemplate = serde_json::from_str(&job.spec).map_err(|e| Error::Internal(e.into()))?;
    let dep_row = state.store.job(dep).await?.ok_or(Error::NotFound("job"))?;
    let local = dep_row.pipeline_id == job.pipeline_id && template.job.dependencies.contains(&dep_row.name);
    if !local && !crate::cross_needs::may_download(&state, &job, &template, &dep_row).await? {
        return Err(Error::Forbidden("a job token only reaches the artifacts of that job's dependencies"));
    }
    let Some(digest) = dep_row.artifacts.as_deref().and_then(|d| d.strip_prefix("sha256:")) else {
        return Err(Error::NotFound("artifacts"));
    };
    let blob = state.blobs.get(&artifact_key(digest), None).await?.ok_or(Error::NotFound("artifacts"))?;
    let (media, _, stream) = archive_stream(blob).await?;
    Ok(([(header::CONTENT_TYPE, media)], Body::from_stream(stream)).into_response())
}

pub async fn finish(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(mut req): Json<FinishRequest>,
) -> ApiResult<StatusCode> {
    let job = match job_for(&state, id, &headers).await {
        Ok(job) => job,
        Err(e) => {
            // A retried finish after the first was applied: the token is gone, the job done.
            if let Some(j) = state.store.job(id).await? {
                if j.finished_at.is_some() && bearer(&headers).is_some() {
                    return Ok(StatusCode::OK);
                }
            }
            return Err(e);
        }
    };
    let outcome = req.outcome;
    let reason = match outcome {
        Outcome::Success => None,
        Outcome::Canceled => Some("canceled".to_string()),
        Outcome::Failed { reason, .. } => {
            Some(serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{reason:?}")))
        }
    };
    let secrets = state.project_secrets(job.pipeline_id).await?;
    // A short job's whole log comes with its finish report (the runner shipped none of it).
    let whole = match req.log.take() {
        Some(log) => {
            let lock = state.log_lock(id).await;
            let _guard = lock.lock().await;
            let whole = state.logs.store_whole(id, job.attempt, Bytes::from(log.0), secrets.clone(), state.now_ms()).await?;
            state.log_appended(id);
            Some(whole)
        }
        None => None,
    };
    let stored = match whole {
        Some(w) => w.length(),
        None => state.logs.len(id, job.attempt).await?,
    };
    if stored < req.log_bytes {
        tracing::warn!(job = id, stored, sent = req.log_bytes, "finish before the whole log arrived");
    }
    let reason_text = match (reason, &req.reason) {
        (Some(r), Some(why)) => Some(format!("{r}: {}", why.chars().take(500).collect::<String>())),
        (Some(r), None) => Some(r),
        (None, _) => None,
    };
    // The runner's words may quote a secret (a failing command's output): masked like the log,
    // before the reason reaches the store, the API, the pages or the operator log.
    let reason_text = reason_text.map(|text| mask_text(text, &secrets));
    // The runner read the dotenv reports and searched the log for `coverage:` (the one job
    // runner, as under `piste run`): stored before the job's end lets later jobs start.
    let template = serde_json::from_str::<JobTemplate>(&job.spec).ok();
    let reports = template.as_ref().and_then(|t| t.job.artifacts.as_ref()).map_or(0, |a| a.dotenv.len());
    if reports > 0 {
        let dotenv = match pipeline_spec::dotenv::check_received(&req.dotenv, reports) {
            Ok(()) => req.dotenv.clone(),
            Err(e) => {
                tracing::warn!(pipeline = job.pipeline_id, job = id, error = %e, "dotenv report ignored");
                Vec::new()
            }
        };
        state.store.set_dotenv(id, &serde_json::to_string(&dotenv).unwrap_or_default()).await?;
    }
    if template.as_ref().is_some_and(|t| t.coverage.is_some() || t.job.coverage.is_some()) {
        let value = req.coverage.filter(|c| c.is_finite() && *c >= 0.0);
        state.store.set_coverage(id, job.pipeline_id, value).await?;
    }
    let final_log = matches!(whole, Some(crate::logs::Whole::Final { .. }));
    conclude(&state, &job, outcome, req.exit_code, reason_text, final_log, template.as_ref()).await?;
    crate::reuse::after_finish(&state, &job, outcome).await;
    Ok(StatusCode::OK)
}

/// Ends the job's current attempt with `outcome`: its log sealed (unless `final_log`: stored
/// whole as its final object already), the engine told (with the result for the job row),
/// followers woken. `template` is the job's, when the caller decoded it already.
pub(crate) async fn conclude(
    state: &Arc<AppState>,
    job: &JobRow,
    outcome: Outcome,
    exit_code: Option<i32>,
    reason_text: Option<String>,
    final_log: bool,
    template: Option<&JobTemplate>,
) -> ApiResult<()> {
    let id = job.id;
    // The attempt's log is complete: one blob from now on (and earlier attempts', whose
    // runners died before finishing) — sealed off the request, the chunks stay readable.
    // A log stored whole as its final object has nothing to seal.
    for attempt in 1..=job.attempt {
        if attempt < job.attempt || !final_log {
            state.seal_later(id, attempt);
        }
    }
    // The job's template, when the caller has not decoded it already.
    let decoded;
    let template = match template {
        Some(t) => Some(t),
        None => {
            decoded = serde_json::from_str::<JobTemplate>(&job.spec).ok();
            decoded.as_ref()
        }
    };
    // An attempt that uploaded no artifacts has no test report: an earlier attempt's goes.
    let has_junit = template.and_then(|t| t.job.artifacts.as_ref()).is_some_and(|a| !a.junit.is_empty());
    if has_junit && job.artifacts.is_none() && job.attempt > 1 {
        state.store.set_test_report(id, job.pipeline_id, None).await?;
    }
    let now = state.now_ms();
    let event = Event::JobFinished { job: job.name.clone(), attempt: job.attempt as u32, outcome, now: now as u64 };
    let update = JobUpdate::Result { job_id: id, exit_code, failure_reason: reason_text, at: now };
    pipelines::process(state, job.pipeline_id, vec![event], vec![update]).await?;
    state.wake_followers(id);
    Ok(())
}

/// `text` with every form of every secret (as written, base64, percent-encoded:
/// [`scheduler::job::mask_forms`]) replaced by `[MASKED]`, longest first.
pub(crate) fn mask_text(mut text: String, secrets: &[String]) -> String {
    let mut forms: Vec<String> = secrets.iter().filter(|s| !s.is_empty()).flat_map(|s| scheduler::job::mask_forms(s)).collect();
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    for form in forms.iter().filter(|f| !f.is_empty()) {
        if text.contains(form.as_str()) {
            text = text.replace(form.as_str(), "[MASKED]");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_are_masked_in_every_form() {
        let secrets = vec!["tok-123456-secret".to_string()];
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode("tok-123456-secret")
        };
        let text = format!("failed: tok-123456-secret, {b64}, tok-123456-secret%21");
        let masked = super::mask_text(text, &secrets);
        assert_eq!(masked, "failed: [MASKED], [MASKED], [MASKED]%21");
    }

    /// The signing key goes to image-build jobs of protected refs (of any ref with
    /// `unprotected`), never to a fork's merge request, never to other jobs.
    #[test]
    fn the_signing_key_goes_only_to_trusted_image_builds() {
        use pipeline_spec::model::{Step, StepAction};
        use pipeline_spec::predefined::{Context, MergeRequest};
        let mut config = crate::config::Config::default();
        config.signing = Some(crate::config::SigningConfig {
            key_file: "k.pem".into(),
            unprotected: false,
            key_pem: "-----BEGIN PRIVATE KEY-----\n...".into(),
        });
        let step = |name: &str| Step {
            name: "s".into(),
            action: StepAction::Builtin { step: name.into(), inputs: Vec::new() },
            span: Default::default(),
        };
        let job = |steps: Vec<Step>| scheduler::protocol::JobSpec {
            steps,
            ..serde_json::from_str(r#"{"name":"j","stage":"s","script":[],"variables":[],"timeout_s":1,"manual":false}"#).unwrap()
        };
        let build = job(vec![step("piste/gitops-bump@v1"), step("piste/image-build@v1")]);
        let bump_only = job(vec![step("piste/gitops-bump@v1")]);
        let protected = Context { ref_protected: true, ..Context::default() };
        let fork = Context {
            ref_protected: true,
            merge_request: Some(MergeRequest { source_project_path: Some("someone/fork".into()), ..MergeRequest::default() }),
            ..Context::default()
        };
        let key = |config: &crate::config::Config, job: &scheduler::protocol::JobSpec, ctx: &Context| {
            super::signing_key_for(config, job, ctx).is_some()
        };
        assert!(key(&config, &build, &protected));
        assert!(!key(&config, &bump_only, &protected), "only jobs that build images");
        assert!(!key(&config, &build, &Context::default()), "not an unprotected ref");
        assert!(!key(&config, &build, &fork), "never a fork");
        config.signing.as_mut().unwrap().unprotected = true;
        assert!(key(&config, &build, &Context::default()));
        assert!(!key(&config, &build, &fork), "never a fork, even with `unprotected`");
        assert!(!key(&crate::config::Config::default(), &build, &protected), "no `[signing]`, no key");
    }
}
