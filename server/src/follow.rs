//! Live logs: `GET /api/v1/jobs/{id}/log/stream?offset=N` as Server-Sent Events.
//!
//! Each event carries the bytes from `offset` on (`data: {"offset": <next offset>, "text": "..."}`,
//! or with `format=html` the rendered lines, numbered and dated as the job page does them)
//! and its `id:` is the next offset, so a browser's `EventSource` (or `piste logs`) that
//! reconnects resumes exactly where it stopped (`Last-Event-ID`). Followers are woken as soon as
//! a chunk is stored (no polling interval adds latency); an `end` event with the job's status
//! closes the stream once the job is finished and everything was sent. Memory per follower is one
//! read buffer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiResult;
use crate::store::Store;
use scheduler::JobStatus;

/// Most bytes sent in one event.
const EVENT_BYTES: usize = 64 * 1024;
/// How often a follower looks at the store when no chunk arrived here (another server may
/// have stored one, or finished the job).
const REMOTE_POLL: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
pub struct StreamQuery {
    offset: Option<u64>,
    attempt: Option<i64>,
    /// `html`: events carry rendered lines (`{"offset", "html"}`) for the job page.
    format: Option<String>,
}

fn finished(status: JobStatus) -> bool {
    status.is_complete() || status == JobStatus::Manual
}

pub async fn stream(
    State(state): State<Arc<AppState>>,
    caller: crate::auth::Caller,
    Path(id): Path<i64>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let (job, _) = crate::auth::job(&state, &caller, id, false).await?;
    let attempt = q.attempt.unwrap_or(job.attempt.max(1));
    // `Last-Event-ID` (a reconnecting EventSource) wins over `?offset=`.
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let start = resume.or(q.offset).unwrap_or(0);
    let renderer = match q.format.as_deref() {
        Some("html") => {
            let mut r = crate::web::ansi::Renderer::new(first_line(&state, id, attempt, start).await).starting_at(start);
            // The log's first bytes date from the attempt's start (file logs keep no mark for them).
            r.add_times(job.started_at.filter(|_| attempt == job.attempt.max(1)).map(|t| (0, t)));
            Some(r)
        }
        _ => None,
    };
    let stream = futures_util::stream::unfold((state, start, false, renderer), move |(state, mut offset, done, mut renderer)| {
        async move {
            if done {
                return None;
            }
            loop {
                let watcher = state.log_watcher(id);
                let notified = watcher.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // Anything new?
                if let Ok(Some(log)) = state.logs.view(id, attempt).await {
                    let len = log.total();
                    if len > offset {
                        let want = ((len - offset) as usize).min(EVENT_BYTES);
                        if let Ok(mut buf) =
                            log.read_at(offset, want).await.map_err(|e| tracing::debug!(job = id, error = %e, "log follower cannot read"))
                        {
                            // Never split a UTF-8 character between events.
                            let cut = match std::str::from_utf8(&buf) {
                                Ok(_) => buf.len(),
                                Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
                                Err(_) => buf.len(),
                            };
                            buf.truncate(cut);
                            let from = offset;
                            offset += buf.len() as u64;
                            let event = match renderer.as_mut() {
                                Some(r) => {
                                    // When these bytes arrived, for the lines' times.
                                    match log.times(from..offset).await {
                                        Ok(marks) => r.add_times(marks),
                                        Err(e) => tracing::debug!(job = id, error = %e, "log follower cannot read times"),
                                    }
                                    // Resume after what was rendered: a partial last line is held back.
                                    let html = r.push(&buf);
                                    let resume = offset - r.pending() as u64;
                                    let data = serde_json::json!({"offset": resume, "html": html}).to_string();
                                    Event::default().id(resume.to_string()).data(data)
                                }
                                None => {
                                    let text = String::from_utf8_lossy(&buf).into_owned();
                                    let data = serde_json::json!({"offset": offset, "text": text}).to_string();
                                    Event::default().id(offset.to_string()).data(data)
                                }
                            };
                            return Some((Ok(event), (state, offset, false, renderer)));
                        }
                    }
                }
                // Nothing new: is the job over?
                let status = state.store.job(id).await.ok().flatten().map(|j| (j.status, j.attempt));
                if let Some((status, current)) = &status {
                    if finished(*status) || *current != attempt {
                        let tail = renderer.as_mut().map(|r| r.finish()).unwrap_or_default();
                        let data = serde_json::json!({"status": status, "offset": offset, "html": tail}).to_string();
                        return Some((Ok(Event::default().event("end").data(data)), (state, offset, true, renderer)));
                    }
                }
                // Wait for a chunk stored here, or look again after `REMOTE_POLL`: chunks and
                // finishes may arrive at another server.
                let _ = tokio::time::timeout(REMOTE_POLL, notified).await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Line number of byte `offset` of the log; 1 when the log is not there yet.
async fn first_line(state: &AppState, id: i64, attempt: i64, offset: u64) -> usize {
    match state.logs.view(id, attempt).await {
        Ok(Some(log)) => log.line_at(offset).await.unwrap_or(1),
        _ => 1,
    }
}
