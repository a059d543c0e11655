//! Live pages: the pipeline page and a project's pipeline list follow status changes over
//! Server-Sent Events, without reloading.
//!
//! Every change this server stores (a transition, a plan, a planning failure, a new pipeline)
//! is announced on a broadcast channel ([`Changes`]): only the pipeline id and its project,
//! never a payload to trust. A stream woken by a change of its pipeline (or project) reads a
//! snapshot from the store and sends it when it differs from the last one sent; it also looks
//! every [`RESCAN`] for changes another server stored, and after a lagging receiver missed
//! some. So events are idempotent snapshots: a missed or repeated one does no harm.
//!
//! - `GET /api/v1/pipelines/{id}/events`: `data: PipelineSnapshot` (the pipeline's status, its
//!   jobs' statuses, durations and the actions that apply); `event: end` once it finished.
//! - `GET /api/v1/events?project=NAME`: `data: [PipelineRowSnapshot]`, the newest pipelines.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, Error};
use crate::store::{JobRow, PipelineRow, Store};
use crate::web::pages::{Actions, duration_text, job_actions, pipeline_actions, status_label};

/// How often a stream looks at the store without a change announced here.
const RESCAN: Duration = Duration::from_secs(2);
/// Changes buffered per receiver; a slower one skips ahead (and reads the store anyway).
const CAPACITY: usize = 1024;
/// Pipelines in a list's snapshot.
const LIST: i64 = 100;

/// A pipeline changed: its id and project.
#[derive(Debug, Clone)]
pub struct Change {
    pub pipeline: i64,
    pub project: Arc<str>,
}

/// The broadcast of changes (a sender no one listens to drops them).
pub struct Changes(broadcast::Sender<Change>);

impl Default for Changes {
    fn default() -> Changes {
        Changes(broadcast::channel(CAPACITY).0)
    }
}

impl Changes {
    pub fn send(&self, pipeline: i64, project: &str) {
        let _ = self.0.send(Change { pipeline, project: project.into() });
    }
}

/// One job as the pipeline page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSnapshot {
    pub id: i64,
    pub status: scheduler::JobStatus,
    /// The status with its icon (`✓ success`).
    pub label: String,
    pub duration: String,
    pub actions: Actions,
    /// A reused job: whose result it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<scheduler::protocol::ReusedFrom>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSnapshot {
    pub id: i64,
    pub status: scheduler::PipelineStatus,
    pub label: String,
    pub duration: String,
    pub actions: Actions,
    pub jobs: Vec<JobSnapshot>,
}

/// A row of a project's pipeline list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineRowSnapshot {
    pub id: i64,
    pub status: scheduler::PipelineStatus,
    pub label: String,
    pub git_ref: String,
    pub commit: String,
    pub trigger: String,
    pub duration: String,
    pub created: String,
}

pub fn pipeline_duration(p: &PipelineRow) -> Option<u64> {
    (p.status.is_complete() && p.updated_at >= p.created_at).then(|| ((p.updated_at - p.created_at) / 1000) as u64)
}

pub fn job_duration(j: &JobRow) -> Option<u64> {
    match (j.started_at, j.finished_at) {
        (Some(a), Some(b)) if b >= a => Some(((b - a) / 1000) as u64),
        _ => None,
    }
}

async fn pipeline_snapshot(state: &AppState, id: i64) -> Option<PipelineSnapshot> {
    let p = state.store.pipeline(id).await.ok()??;
    let jobs = state.store.jobs(id).await.ok()?;
    Some(PipelineSnapshot {
        id,
        status: p.status,
        label: status_label(p.status.as_str()),
        duration: duration_text(pipeline_duration(&p)),
        actions: pipeline_actions(p.status),
        jobs: jobs
            .iter()
            .map(|j| JobSnapshot {
                id: j.id,
                status: j.status,
                label: status_label(j.status.as_str()),
                duration: duration_text(job_duration(j)),
                actions: job_actions(j.status).unless(p.awaiting_approval()),
                reused_from: crate::api::reused_from(j),
            })
            .collect(),
    })
}

async fn list_snapshot(state: &AppState, project: &str) -> Option<Vec<PipelineRowSnapshot>> {
    let rows = state.store.pipelines(Some(project), LIST).await.ok()?;
    Some(
        rows.iter()
            .map(|p| PipelineRowSnapshot {
                id: p.id,
                status: p.status,
                label: status_label(p.status.as_str()),
                git_ref: p.git_ref.clone(),
                commit: p.sha.chars().take(8).collect(),
                trigger: p.source.clone(),
                duration: duration_text(pipeline_duration(p)),
                created: crate::pipelines::iso_time(p.created_at),
            })
            .collect(),
    )
}

/// Waits for a change that `wanted` accepts, a lag, or the rescan period.
async fn next_change(rx: &mut broadcast::Receiver<Change>, wanted: impl Fn(&Change) -> bool) {
    let _ = tokio::time::timeout(RESCAN, async {
        loop {
            match rx.recv().await {
                Ok(c) if wanted(&c) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

pub async fn pipeline_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    crate::auth::pipeline(&state, &caller, id, false).await?;
    let rx = state.changes.0.subscribe();
    let stream =
        futures_util::stream::unfold((state, rx, None::<PipelineSnapshot>, false), move |(state, mut rx, last, done)| async move {
            if done {
                return None;
            }
            let mut last = last;
            loop {
                if last.is_some() {
                    next_change(&mut rx, |c| c.pipeline == id).await;
                }
                let Some(snap) = pipeline_snapshot(&state, id).await else {
                    tokio::time::sleep(RESCAN).await;
                    continue;
                };
                if last.as_ref() == Some(&snap) {
                    continue;
                }
                let data = serde_json::to_string(&snap).unwrap_or_default();
                // Over when the pipeline and every job are: a retry starts a new page view.
                let over = snap.status.is_complete()
                    && snap.jobs.iter().all(|j| j.status.is_complete() || j.status == scheduler::JobStatus::Manual);
                let event = if over { Event::default().event("end").data(data) } else { Event::default().data(data) };
                last = Some(snap);
                return Some((Ok(event), (state, rx, last, over)));
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Deserialize)]
pub struct ListQuery {
    project: String,
}

pub async fn list_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    crate::auth::check(&state.config, &caller, &q.project, crate::auth::Need::Read).map_err(|d| d.api("project"))?;
    state.config.project(&q.project).ok_or(Error::NotFound("project"))?;
    let rx = state.changes.0.subscribe();
    let project = q.project;
    let stream = futures_util::stream::unfold((state, rx, None::<Vec<PipelineRowSnapshot>>), move |(state, mut rx, last)| {
        let project = project.clone();
        async move {
            let mut last = last;
            loop {
                if last.is_some() {
                    next_change(&mut rx, |c| *c.project == *project).await;
                }
                let Some(snap) = list_snapshot(&state, &project).await else {
                    tokio::time::sleep(RESCAN).await;
                    continue;
                };
                if last.as_ref() == Some(&snap) {
                    continue;
                }
                let data = serde_json::to_string(&snap).unwrap_or_default();
                last = Some(snap);
                return Some((Ok(Event::default().data(data)), (state, rx, last)));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
