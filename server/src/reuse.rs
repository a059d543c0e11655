//! Reuse of job results on the server: a job whose inputs did not change since a job of the
//! same project passed is recorded as passed with that job's artifacts, dotenv and log instead
//! of running.
//!
//! The key is computed by the runner, with the same function as `piste run`
//! (`runner::reuse::key`), and sent to `POST /api/v1/jobs/{id}/reuse` with the job's token
//! before anything of the job runs. The server never trusts a key across scopes: it keeps
//! `HMAC-SHA256(project's webhook secret, project ‖ protection of the ref ‖ key)`, and looks it
//! up only for the project (and protection) of the job whose token came with it, so a runner
//! cannot learn anything about other projects' keys, and a result made on an unprotected ref
//! never stands for a job of a protected one. Records point at the attempt that ran and
//! passed; a reused job is never recorded itself, and failures never are.
//!
//! Who takes part: projects with `reuse = true` (every eligible job) or `"per-job"` (jobs with
//! `PISTE_REUSE: "true"`), and of those, jobs with no `environment` that are not trigger jobs
//! (`JobTemplate::reuse_changes`), not manual, without `run:` steps, not of a fork's pipeline.
//! An attempt asked to "run anyway" (`POST /api/v1/jobs/{id}/retry?reuse=false`) still sends
//! its key, but finds nothing: it runs, and its success becomes the one reused next.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use pipeline_spec::predefined::Context;
use scheduler::protocol::{MAX_LOG_CHUNK, ReuseAnswer, ReuseOffer, ReuseRequest, ReusedFrom};
use scheduler::{JobStatus, Outcome};
use sha2::Sha256;

use crate::AppState;
use crate::blob::BlobStore;
use crate::config::{ProjectConfig, ReuseSetting};
use crate::error::{ApiResult, Error};
use crate::pipelines::JobTemplate;
use crate::store::{JobRow, ReuseRecord, Store};

/// What the runner is told about reuse for a job (`None`: it runs the job without asking).
pub(crate) fn offer(project: &ProjectConfig, template: &JobTemplate, ctx: &Context) -> Option<ReuseOffer> {
    let all = match project.reuse {
        ReuseSetting::Off => return None,
        ReuseSetting::PerJob => false,
        ReuseSetting::All => true,
    };
    let changes = template.reuse_changes.clone()?;
    let excluded = ctx.from_fork() || template.job.manual || !template.job.steps.is_empty();
    (!excluded).then_some(ReuseOffer { project: all, changes })
}

/// The key as stored: scoped to the project and the protection of the ref, keyed with the
/// project's webhook secret (which runners never see).
pub(crate) fn scope_key(project: &ProjectConfig, protected: bool, key: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(project.webhook_secret.as_bytes()).expect("HMAC accepts keys of any length");
    for field in ["piste-reuse/1", project.name.as_str(), if protected { "protected" } else { "unprotected" }, key] {
        mac.update(&(field.len() as u64).to_le_bytes());
        mac.update(field.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// `sha256:<64 lowercase hex digits>`.
fn valid_key(key: &str) -> bool {
    key.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `POST /api/v1/jobs/{id}/reuse`: finishes the job as reused when an earlier attempt of the
/// project passed with the same key (and its artifacts and log are still stored); otherwise
/// keeps the key for the job's own success.
pub async fn reuse_job(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(req): Json<ReuseRequest>,
) -> ApiResult<Json<ReuseAnswer>> {
    let job = crate::runners::job_for(&state, id, &headers).await?;
    if !valid_key(&req.key) {
        return Err(Error::BadRequest("`key` must be `sha256:<64 lowercase hex digits>`".into()));
    }
    let template: JobTemplate = serde_json::from_str(&job.spec).map_err(|e| Error::Internal(e.into()))?;
    let pipeline = state.store.pipeline(job.pipeline_id).await?.ok_or(Error::NotFound("pipeline"))?;
    let ctx: Context = serde_json::from_str(&pipeline.trigger).map_err(|e| Error::Internal(e.into()))?;
    let project = state.config.project(&pipeline.project).ok_or(Error::NotFound("project"))?;
    if offer(project, &template, &ctx).is_none() {
        return Err(Error::Conflict("this job's result is not reused (its payload has no `reuse`): run it".into()));
    }
    let scoped = scope_key(project, ctx.ref_protected, &req.key);
    // "Run anyway": no lookup, but the key is kept, so its success is the one reused next.
    let run_anyway = job.run_anyway == Some(job.attempt);
    if let Some(earlier) = state.store.reuse_record(&scoped, &pipeline.project).await?.filter(|_| !run_anyway) {
        if still_stored(&state, &earlier).await? {
            // Off the request: a runner that goes away mid-way does not leave half a log.
            let task = tokio::spawn({
                let (state, job, earlier) = (state.clone(), job.clone(), earlier.clone());
                async move { replay(&state, &job, &earlier).await }
            });
            let from = task.await.map_err(|e| Error::Internal(e.into()))??;
            state.metrics.jobs_reused.inc();
            tracing::info!(project = %pipeline.project, pipeline = job.pipeline_id, job = id, from_pipeline = earlier.pipeline_id, from_job = earlier.job_id, "job reused");
            return Ok(Json(ReuseAnswer { reused_from: Some(from) }));
        }
        state.store.forget_reuse(&scoped).await?;
    }
    if !state.store.set_reuse_key(id, job.attempt, &scoped).await? {
        return Err(Error::Unauthorized("invalid or expired job token"));
    }
    Ok(Json(ReuseAnswer { reused_from: None }))
}

/// Whether the recorded attempt's log and artifacts are still stored.
async fn still_stored(state: &AppState, earlier: &ReuseRecord) -> ApiResult<bool> {
    if state.logs.view(earlier.job_id, earlier.attempt).await?.is_none() {
        return Ok(false);
    }
    if let Some(digest) = earlier.artifacts.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
        if state.blobs.head(&crate::blob::artifact_key(digest)).await?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Records `job` as passed with `earlier`'s result: the log (a first line saying where it
/// comes from, then the earlier log), the artifacts (the same blob: nothing is copied) and
/// their test report, the dotenv variables and coverage, `reused_from`; then the engine is
/// told, as at a runner's finish.
async fn replay(state: &Arc<AppState>, job: &JobRow, earlier: &ReuseRecord) -> ApiResult<ReusedFrom> {
    let from = ReusedFrom {
        pipeline: u64::try_from(earlier.pipeline_id).unwrap_or(0),
        job_id: u64::try_from(earlier.job_id).unwrap_or(0),
        job: earlier.job_name.clone(),
    };
    {
        let lock = state.log_lock(job.id).await;
        let _guard = lock.lock().await;
        let secrets = state.project_secrets(job.pipeline_id).await?;
        let mut offset = state.logs.len(job.id, job.attempt).await?;
        let line = format!(
            "\x1b[32;1m{from}\x1b[0;m: nothing this job reads changed since that job passed; its artifacts, dotenv and log follow\n"
        );
        offset = append(state, job, offset, Bytes::from(line), &secrets).await?;
        let view = state.logs.view(earlier.job_id, earlier.attempt).await?.ok_or(Error::NotFound("log"))?;
        let mut stream = view.stream(0..view.total()).await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            if buf.len() >= MAX_LOG_CHUNK {
                // A long copy keeps the attempt's lease, as its runner's heartbeats would.
                let _ = state.store.extend_lease(job.id, state.now_ms() + state.config.lease_ms as i64).await;
                let rest = buf.split_off(MAX_LOG_CHUNK);
                offset = append(state, job, offset, Bytes::from(std::mem::replace(&mut buf, rest)), &secrets).await?;
            }
        }
        if !buf.is_empty() {
            append(state, job, offset, Bytes::from(buf), &secrets).await?;
        }
    }
    state.log_appended(job.id);
    if let Some(digest) = earlier.artifacts.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
        crate::runners::record_artifacts(state, job, digest).await?;
    }
    // What the earlier job's runner reported besides its archive.
    if let Some(dotenv) = &earlier.dotenv {
        state.store.set_dotenv(job.id, dotenv).await?;
    }
    if earlier.coverage.is_some() {
        state.store.set_coverage(job.id, job.pipeline_id, earlier.coverage).await?;
    }
    let json = serde_json::to_string(&from).map_err(|e| Error::Internal(e.into()))?;
    state.store.set_reused_from(job.id, job.attempt, &json).await?;
    // As the job is now (its artifacts recorded), for what `conclude` reads of it.
    let now = state.store.job(job.id).await?.ok_or(Error::NotFound("job"))?;
    crate::runners::conclude(state, &now, Outcome::Success, Some(0), None, false, None).await?;
    Ok(from)
}

async fn append(state: &AppState, job: &JobRow, offset: u64, bytes: Bytes, secrets: &[String]) -> ApiResult<u64> {
    match state.logs.append(job.id, job.attempt, offset, bytes, secrets.to_vec(), state.now_ms()).await? {
        crate::logs::Append::Ok { next_offset } => Ok(next_offset),
        crate::logs::Append::Gap { expected_offset } => {
            Err(Error::Conflict(format!("the job's log changed while it was being reused (it ends at {expected_offset})")))
        }
        crate::logs::Append::Sealed { length } => Err(Error::Conflict(format!("this attempt's log is closed at {length} bytes"))),
    }
}

/// After a runner's finish, for an attempt whose runner sent a key: a success is recorded
/// under it (if the engine recorded the attempt as passed); a failure forgets any success
/// recorded under it, so that what just failed with these inputs is not reused by a retry
/// (a reused result never hides a failure). A cancel changes nothing.
pub(crate) async fn after_finish(state: &AppState, job: &JobRow, outcome: Outcome) {
    let Some(key) = job.reuse_key.as_deref() else { return };
    match outcome {
        Outcome::Success => record(state, job, key).await,
        Outcome::Failed { .. } => {
            if let Err(e) = state.store.forget_reuse(key).await {
                tracing::warn!(pipeline = job.pipeline_id, job = job.id, error = ?crate::error::chain(&e), "a reuse record could not be forgotten");
            }
        }
        Outcome::Canceled => {}
    }
}

/// Records the attempt under `key`. Reused jobs are not recorded (the record keeps pointing
/// at the job that ran).
async fn record(state: &AppState, job: &JobRow, key: &str) {
    if job.reused_from.is_some() {
        return;
    }
    let recorded = async {
        // As the engine left it: the attempt passed, with the artifacts it uploaded.
        let Some(row) = state.store.job(job.id).await? else { return Ok(()) };
        if row.attempt != job.attempt || row.status != JobStatus::Success {
            return Ok(());
        }
        let Some(pipeline) = state.store.pipeline(job.pipeline_id).await? else { return Ok(()) };
        let coverage = state.store.job_reports(job.pipeline_id).await?.into_iter().find(|r| r.job_id == job.id).and_then(|r| r.coverage);
        let record = ReuseRecord {
            job_id: job.id,
            attempt: job.attempt,
            pipeline_id: job.pipeline_id,
            job_name: job.name.clone(),
            artifacts: row.artifacts,
            dotenv: row.dotenv,
            coverage,
        };
        state.store.record_reuse(key, &pipeline.project, &record, state.now_ms()).await
    }
    .await;
    if let Err(e) = recorded {
        tracing::warn!(pipeline = job.pipeline_id, job = job.id, error = ?crate::error::chain(&e), "the job's result could not be kept for reuse");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(name: &str, secret: &str) -> ProjectConfig {
        let text = format!("name = \"{name}\"\nrepo = \"https://forge.example/{name}.git\"\nwebhook_secret = \"{secret}\"\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_key_is_scoped_to_its_project_its_protection_and_the_server_secret() {
        let key = format!("sha256:{}", "ab".repeat(32));
        let a = project("a", "secret-one");
        let base = scope_key(&a, true, &key);
        assert_eq!(base, scope_key(&a, true, &key), "deterministic");
        assert_ne!(base, scope_key(&project("b", "secret-one"), true, &key), "another project");
        assert_ne!(base, scope_key(&a, false, &key), "an unprotected ref");
        assert_ne!(base, scope_key(&project("a", "secret-two"), true, &key), "another secret");
        assert!(!base.contains(&key[7..]), "the runner's key is not stored as such");
    }

    /// Who is offered reuse: per the project's setting; never a manual job, one with `run:`
    /// steps, one planned as never reused (an `environment`, a trigger), or a fork's.
    #[test]
    fn reuse_is_offered_to_eligible_jobs_of_projects_that_opted_in() {
        use crate::config::ReuseSetting;
        use pipeline_spec::predefined::MergeRequest;
        let template = |changes: Option<Vec<String>>| -> JobTemplate {
            let mut t: JobTemplate = serde_json::from_str(&crate::tests::spec(scheduler::JobNode::new("build", "build", 0))).unwrap();
            t.reuse_changes = changes;
            t
        };
        let eligible = template(Some(vec!["api/**/*".into()]));
        let ctx = Context::default();
        let with = |setting: ReuseSetting| ProjectConfig { reuse: setting, ..project("a", "s") };
        assert_eq!(offer(&with(ReuseSetting::Off), &eligible, &ctx), None);
        assert_eq!(offer(&with(ReuseSetting::All), &eligible, &ctx), Some(ReuseOffer { project: true, changes: vec!["api/**/*".into()] }));
        assert_eq!(offer(&with(ReuseSetting::PerJob), &eligible, &ctx).map(|o| o.project), Some(false));
        let all = with(ReuseSetting::All);
        assert_eq!(offer(&all, &template(None), &ctx), None, "an environment or a trigger");
        let mut manual = eligible.clone();
        manual.job.manual = true;
        assert_eq!(offer(&all, &manual, &ctx), None);
        let fork = Context {
            merge_request: Some(MergeRequest { source_project_path: Some("someone/fork".into()), ..MergeRequest::default() }),
            ..Context::default()
        };
        assert_eq!(offer(&all, &eligible, &fork), None, "never a fork's job");
    }

    #[test]
    fn keys_are_checked() {
        assert!(valid_key(&format!("sha256:{}", "0f".repeat(32))));
        assert!(!valid_key(&format!("sha256:{}", "0F".repeat(32))));
        assert!(!valid_key(&"0f".repeat(32)));
        assert!(!valid_key("sha256:abc"));
    }
}
