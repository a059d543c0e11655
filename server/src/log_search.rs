//! `GET /api/v1/jobs/{id}/log/search?q=TEXT[&attempt=N]`: the lines of a whole log that hold
//! `TEXT` (ignoring case), for logs bigger than the job page shows.
//!
//! The answer is JSON Lines streamed while the log is read: one `{"line", "offset", "text"}`
//! per matching line (numbered as the job page numbers them, `offset` its first byte, `text`
//! the visible text around the match), then `{"done": true, "matches", "truncated", "bytes"}`.
//! The log goes through the renderer's lines mode in blocks on a blocking thread: memory is
//! one block and one line, whatever the log's size; at most [`MAX_MATCHES`] lines are sent,
//! and searches share the archive reads' limit (`artifacts::READS`; a client that stops reading
//! for 30 s ends its search). Same access as the log.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{self, Caller};
use crate::error::{ApiResult, Error};
use crate::web::ansi::{LogLine, Renderer};

/// Longest query, in characters.
pub const MAX_QUERY: usize = 256;
/// Most matching lines sent.
pub const MAX_MATCHES: usize = 1000;
/// Characters of a line sent around its match.
const SNIPPET: usize = 240;
/// Bytes read at once.
const BLOCK: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
    attempt: Option<i64>,
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Response> {
    let (job, _) = auth::job(&state, &caller, id, false).await?;
    let needle = q.q.to_lowercase();
    if needle.trim().is_empty() || needle.chars().count() > MAX_QUERY {
        return Err(Error::BadRequest(format!("`q` must be 1 to {MAX_QUERY} characters (the text to find)")));
    }
    let attempt = q.attempt.unwrap_or(job.attempt.max(1));
    if attempt < 1 || attempt > job.attempt.max(1) {
        return Err(Error::NotFound("attempt"));
    }
    let json = [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
    let Some(log) = state.logs.view(id, attempt).await? else {
        let done = serde_json::json!({"done": true, "matches": 0, "truncated": false, "bytes": 0}).to_string() + "\n";
        return Ok((json, done).into_response());
    };
    let total = log.total();
    let permit = crate::artifacts::READS.acquire().await.map_err(|e| Error::Internal(e.into()))?;
    let stream = log.stream(0..total).await?;
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other))));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let send = |line: String| crate::artifacts::send_blocking(&tx, Bytes::from(line + "\n"));
        match scan(reader, &needle, |l| send(l.to_string())) {
            Ok((matches, truncated)) => {
                send(serde_json::json!({"done": true, "matches": matches, "truncated": truncated, "bytes": total}).to_string());
            }
            Err(e) => {
                tracing::warn!(job = id, error = %e, "log search stopped");
                send(serde_json::json!({"done": true, "error": "the log could not be read to the end"}).to_string());
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, std::io::Error>))));
    Ok((json, body).into_response())
}

/// Reads a log and hands each matching line (as a JSON object) to `found`, until it returns
/// `false` or [`MAX_MATCHES`] were found: `(matches, truncated)`. `needle` is lowercase.
pub fn scan(mut log: impl Read, needle: &str, mut found: impl FnMut(&serde_json::Value) -> bool) -> std::io::Result<(usize, bool)> {
    let mut renderer = Renderer::lines(1);
    let mut buf = vec![0u8; BLOCK];
    let mut matches = 0;
    let mut last_number = 0;
    let mut check = |lines: Vec<LogLine>, matches: &mut usize| -> Option<bool> {
        for l in lines {
            if l.number == last_number {
                continue;
            }
            let lower = l.text.to_lowercase();
            let Some(at) = lower.find(needle) else { continue };
            last_number = l.number;
            if *matches == MAX_MATCHES {
                return Some(true);
            }
            *matches += 1;
            let value = serde_json::json!({"line": l.number, "offset": l.offset, "text": snippet(&l.text, lower[..at].chars().count())});
            if !found(&value) {
                return Some(false);
            }
        }
        None
    };
    loop {
        let n = log.read(&mut buf)?;
        if n == 0 {
            renderer.finish();
            return Ok(match check(renderer.take_lines(), &mut matches) {
                Some(truncated) => (matches, truncated),
                None => (matches, false),
            });
        }
        renderer.push(&buf[..n]);
        if let Some(truncated) = check(renderer.take_lines(), &mut matches) {
            return Ok((matches, truncated));
        }
    }
}

/// At most [`SNIPPET`] characters of `text` around the character `at`.
fn snippet(text: &str, at: usize) -> String {
    let count = text.chars().count();
    if count <= SNIPPET {
        return text.to_string();
    }
    let start = at.saturating_sub(SNIPPET / 3).min(count - SNIPPET);
    let mut out: String = text.chars().skip(start).take(SNIPPET).collect();
    if start > 0 {
        out.insert(0, '…');
    }
    if start + SNIPPET < count {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(log: &[u8], needle: &str) -> (Vec<serde_json::Value>, usize, bool) {
        let mut hits = Vec::new();
        let (n, truncated) = scan(log, needle, |v| {
            hits.push(v.clone());
            true
        })
        .unwrap();
        (hits, n, truncated)
    }

    #[test]
    fn matches_are_numbered_as_the_page_numbers_them() {
        let log = b"one\n\x1b[0Ksection_start:1:s\r\x1b[0KHeader\nsection_end:2:s\r\x1b[0K\nTwo \x1b[31mNEEDLE\x1b[0m here\nlast needle";
        let (hits, n, truncated) = found(log, "needle");
        assert_eq!((n, truncated), (2, false));
        assert_eq!(hits[0], serde_json::json!({"line": 3, "offset": 58, "text": "Two NEEDLE here"}));
        assert_eq!(hits[1]["line"], 4, "the end marker's line has no number; the unterminated last line counts");
        assert_eq!(found(b"section_end:1:x\r\x1b[0K\n", "section").1, 0, "markers are not text");
    }

    #[test]
    fn matches_stop_at_the_limit() {
        let log = "x\n".repeat(MAX_MATCHES + 5);
        let (hits, n, truncated) = found(log.as_bytes(), "x");
        assert_eq!((hits.len(), n, truncated), (MAX_MATCHES, MAX_MATCHES, true));
    }

    #[test]
    fn long_lines_give_a_snippet_around_the_match() {
        let line = format!("{}needle{}", "a".repeat(5000), "b".repeat(5000));
        let s = snippet(&line, 5000);
        assert!(s.contains("needle") && s.starts_with('…') && s.ends_with('…') && s.chars().count() <= SNIPPET + 2, "{s}");
    }
}
