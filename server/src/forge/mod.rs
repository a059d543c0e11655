//! Commit statuses on the forge: each pipeline's state posted to the project's forge
//! (`[project.forge]`), with a link to its page.
//!
//! Posting never blocks a pipeline: whoever changes a pipeline's status calls
//! [`Poster::changed`], which only marks the pipeline; a worker task posts. One task per
//! pipeline at a time, and each try reads the pipeline's status from the store *then*, so the
//! latest state wins: states that came and went while a post was in flight are skipped
//! (coalesced), and an older state is never posted after a newer one. A refused or failed post
//! is retried with exponential backoff ([`FIRST_RETRY`], doubling, [`TRIES`] tries); the next
//! change of the pipeline, or the next start of the server, tries again after that.
//!
//! What remains to post survives a restart without a queue of its own: the pipeline's status
//! is in the store (committed with the transition that changed it), and so is the last state
//! the forge accepted (`forge_statuses`, migration 0005). At start, [`resume`] posts for the
//! newest pipelines where the two differ. That is one source of truth (the status) instead of
//! a second record that a crash between two writes could leave behind.

pub mod request;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::store::Store;
use request::{State, Subject, status_request};

/// The first retry's delay; each next one doubles, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(8);
/// Tries per state before giving up until the pipeline changes again or the server restarts.
pub const TRIES: u32 = 6;
/// Posts in flight at once (all forges together).
const CONCURRENT: usize = 8;
/// Pipelines looked at when the server starts.
const RESUME_LIMIT: i64 = 1000;
/// How much of a forge's error answer is kept.
const ERROR_BODY: usize = 300;

/// The pipelines whose state may need posting, and the ones being posted.
pub struct Poster {
    client: reqwest::Client,
    /// Changed since the worker last looked.
    dirty: Mutex<BTreeSet<i64>>,
    wake: tokio::sync::Notify,
    /// Pipelines with a posting task: `true` when they changed again meanwhile.
    inflight: Mutex<HashMap<i64, bool>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Poster {
    /// A poster whose client trusts `roots` (the top-level `ca_file`) besides webpki's.
    pub fn new(roots: &[reqwest::Certificate]) -> Poster {
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(15)).user_agent(concat!("piste/", env!("CARGO_PKG_VERSION")));
        for cert in roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        Poster {
            client: builder.build().unwrap_or_default(),
            dirty: Mutex::new(BTreeSet::new()),
            wake: tokio::sync::Notify::new(),
            inflight: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(CONCURRENT)),
        }
    }
}

impl Poster {
    /// The pipeline's status changed (or may have): its state will be posted. Never waits.
    pub fn changed(&self, pipeline_id: i64) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).insert(pipeline_id);
        self.wake.notify_one();
    }

    /// How many pipelines wait for a post or are being posted (bounded by the live ones).
    pub fn in_memory(&self) -> usize {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).len() + self.inflight.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Starts a posting task for each changed pipeline (one per pipeline at a time), until shutdown.
pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    loop {
        let batch = std::mem::take(&mut *state.forge.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        for id in batch {
            let start = {
                let mut inflight = state.forge.inflight.lock().unwrap_or_else(|e| e.into_inner());
                match inflight.get_mut(&id) {
                    Some(again) => {
                        *again = true;
                        false
                    }
                    None => {
                        inflight.insert(id, false);
                        true
                    }
                }
            };
            if start {
                tokio::spawn(post_pipeline(state.clone(), id));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.forge.wake.notified() => {}
        }
    }
}

/// At start: the newest pipelines of projects with a forge whose state the forge has not
/// accepted yet are posted again.
pub async fn resume(state: &AppState) {
    let projects: Vec<String> = state.config.projects.iter().filter(|p| p.forge.is_some()).map(|p| p.name.clone()).collect();
    if projects.is_empty() {
        return;
    }
    match state.store.forge_unposted(&projects, RESUME_LIMIT).await {
        Ok(rows) => {
            for row in rows {
                if State::of(row.status).map(State::as_str) != row.posted.as_deref() && State::of(row.status).is_some() {
                    state.forge.changed(row.pipeline_id);
                }
            }
        }
        Err(e) => tracing::warn!(error = %crate::error::chain(&e), "cannot list the commit statuses left to post"),
    }
}

async fn post_pipeline(state: Arc<AppState>, id: i64) {
    let slots = state.forge.slots.clone();
    let _slot = slots.acquire_owned().await;
    loop {
        post_latest(&state, id).await;
        let mut inflight = state.forge.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight.get(&id) == Some(&true) {
            inflight.insert(id, false);
            continue;
        }
        inflight.remove(&id);
        return;
    }
}

/// Posts the pipeline's current state until the forge has it (or the tries run out).
async fn post_latest(state: &AppState, id: i64) {
    let mut failures = 0u32;
    loop {
        let (row, posted) = match (state.store.pipeline(id).await, state.store.forge_post(id).await) {
            (Ok(Some(row)), Ok(posted)) => (row, posted),
            (Ok(None), _) => return,
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(pipeline = id, error = %crate::error::chain(&e), "cannot read the pipeline to post its commit status");
                return;
            }
        };
        let Some(forge) = state.config.project(&row.project).and_then(|p| p.forge.as_ref()) else { return };
        let Some(want) = State::of(row.status) else { return };
        if posted.as_ref().and_then(|p| p.posted.as_deref()) == Some(want.as_str()) {
            return;
        }
        let ctx: Option<pipeline_spec::predefined::Context> = serde_json::from_str(&row.trigger).ok();
        let ref_name = row
            .git_ref
            .strip_prefix("refs/heads/")
            .or_else(|| row.git_ref.strip_prefix("refs/tags/"))
            .map(str::to_string)
            .or_else(|| ctx.and_then(|c| c.merge_request).map(|m| m.source_branch));
        let subject = Subject {
            project: &row.project,
            sha: &row.sha,
            ref_name: ref_name.as_deref(),
            target_url: format!("{}/pipelines/{id}", state.external_url()),
        };
        let req = status_request(forge, &subject, want);
        let result = send(&state.forge.client, &req).await.map_err(|e| e.replace(forge.token(), "[MASKED]"));
        let at = state.now_ms();
        if let Err(e) = state.store.record_forge_post(id, want.as_str(), result.as_ref().err().map(String::as_str), at).await {
            tracing::warn!(pipeline = id, error = %crate::error::chain(&e), "cannot record a commit status post");
        }
        match result {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                // Debug-quoted: the forge's answer must not forge log lines.
                tracing::warn!(project = %row.project, pipeline = id, forge = forge.kind.as_str(), state = want.as_str(), attempt = failures, error = ?error, "commit status not posted");
                if failures >= TRIES {
                    return;
                }
                let delay = FIRST_RETRY.saturating_mul(1 << (failures - 1).min(16)).min(MAX_RETRY);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sends one request; the error says what the forge answered (or why nothing answered).
async fn send(client: &reqwest::Client, req: &request::StatusRequest) -> Result<(), String> {
    let mut builder = client.post(&req.url);
    for (name, value) in &req.headers {
        builder = builder.header(*name, value);
    }
    let response = builder.body(req.body.to_string()).send().await.map_err(|e| crate::error::chain(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(ERROR_BODY).collect();
    Err(format!("the forge answered {status}: {}", body.trim()))
}
