//! `piste logs`: read or follow a job's log from a server (Server-Sent Events, resumed by offset
//! after a dropped connection), and the job's final status.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use scheduler::{JobStatus, PipelineStatus};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot reach `{url}`: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("`{url}` answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("`{url}` sent an event stream line longer than {MAX_LINE} bytes")]
    LineTooLong { url: String },
    #[error("`{url}` ended the log with the unknown status `{status}`")]
    UnknownStatus { url: String, status: String },
    #[error("{0}")]
    Setup(String),
}

/// Longest event-stream line kept while waiting for its end (the server's are < 1 MiB).
const MAX_LINE: usize = 8 << 20;

#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub attempt: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PipelineInfo {
    pub id: i64,
    pub status: PipelineStatus,
    pub jobs: Vec<JobInfo2>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo2 {
    pub id: i64,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
}

/// A server, as `piste logs` reaches it.
#[derive(Clone)]
pub struct Server {
    base: String,
    http: reqwest::Client,
}

impl Server {
    /// The server at `base`, sent `token` (a personal access token) as `Authorization: Bearer`,
    /// trusting the certificate authorities of `ca_file` (a PEM bundle) besides the usual ones.
    pub fn new(base: &str, token: Option<&str>, ca_file: Option<&Path>) -> Result<Server, FollowError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).default_headers(headers);
        if let Some(path) = ca_file {
            for cert in crate::agent::read_ca_file(path).map_err(FollowError::Setup)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| FollowError::Setup(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Server { base: base.trim_end_matches('/').to_owned(), http })
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(server: &Server, url: String) -> Result<T, FollowError> {
    let r = server.http.get(&url).send().await.map_err(|source| FollowError::Http { url: url.clone(), source })?;
    if !r.status().is_success() {
        let status = r.status().as_u16();
        return Err(FollowError::Status { url, status, body: r.text().await.unwrap_or_default() });
    }
    r.json().await.map_err(|source| FollowError::Http { url, source })
}

pub async fn job(server: &Server, id: i64) -> Result<JobInfo, FollowError> {
    get_json(server, format!("{}/api/v1/jobs/{id}", server.base)).await
}

pub async fn pipeline(server: &Server, id: i64) -> Result<PipelineInfo, FollowError> {
    get_json(server, format!("{}/api/v1/pipelines/{id}", server.base)).await
}

/// Prints (through `out`) the log of job `id` as stored, or follows it until the job ends when
/// `follow`. Returns the job's final status.
pub async fn log(server: &Server, id: i64, follow: bool, mut out: impl FnMut(&str)) -> Result<JobStatus, FollowError> {
    let base = server.base.as_str();
    if !follow {
        let url = format!("{base}/api/v1/jobs/{id}/log");
        let r = server.http.get(&url).send().await.map_err(|source| FollowError::Http { url: url.clone(), source })?;
        if !r.status().is_success() {
            let status = r.status().as_u16();
            return Err(FollowError::Status { url, status, body: r.text().await.unwrap_or_default() });
        }
        let mut body = r.bytes_stream();
        let mut text = Utf8Pieces::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| FollowError::Http { url: url.clone(), source })?;
            out(&text.push(&chunk));
        }
        out(&text.finish());
        return Ok(job(server, id).await?.status);
    }
    let mut offset: u64 = 0;
    let mut failures = 0u32;
    loop {
        let url = format!("{base}/api/v1/jobs/{id}/log/stream?offset={offset}");
        let resp = match server.http.get(&url).header("Accept", "text/event-stream").send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status().as_u16();
                return Err(FollowError::Status { url, status, body: r.text().await.unwrap_or_default() });
            }
            Err(source) => {
                failures += 1;
                if failures > 30 {
                    return Err(FollowError::Http { url, source });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        failures = 0;
        let mut body = resp.bytes_stream();
        let mut events = EventStream::default();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            let Some(received) = events.push(&chunk) else { return Err(FollowError::LineTooLong { url }) };
            for (event, data) in received {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else { continue };
                if event == "end" {
                    let status = v["status"].as_str().unwrap_or_default();
                    return JobStatus::parse(status).ok_or_else(|| FollowError::UnknownStatus { url, status: status.to_string() });
                }
                if let Some(text) = v["text"].as_str() {
                    out(text);
                }
                if let Some(next) = v["offset"].as_u64() {
                    offset = next;
                }
            }
        }
        // The connection dropped: resume from the last offset received.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Server-Sent Events from a byte stream. Lines are cut on bytes and decoded whole, so a UTF-8
/// character split across two reads arrives intact; an unfinished line waits for the next read.
#[derive(Debug, Default)]
struct EventStream {
    line: Vec<u8>,
    event: String,
    data: String,
}

impl EventStream {
    /// The `(event, data)` pairs completed by `chunk`; `None` when a line exceeds `MAX_LINE`.
    fn push(&mut self, chunk: &[u8]) -> Option<Vec<(String, String)>> {
        self.line.extend_from_slice(chunk);
        let mut done = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.line[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.line[start..start + nl]).into_owned();
            start += nl + 1;
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                done.push((std::mem::take(&mut self.event), std::mem::take(&mut self.data)));
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event = v.trim().to_string();
            }
        }
        self.line.drain(..start);
        (self.line.len() <= MAX_LINE && self.data.len() <= MAX_LINE).then_some(done)
    }
}

/// UTF-8 arriving in pieces: an incomplete character at the end of a piece is kept for the
/// next one instead of becoming U+FFFD.
#[derive(Debug, Default)]
struct Utf8Pieces {
    rest: Vec<u8>,
}

impl Utf8Pieces {
    fn push(&mut self, piece: &[u8]) -> String {
        self.rest.extend_from_slice(piece);
        let keep = incomplete_tail(&self.rest);
        let text = String::from_utf8_lossy(&self.rest[..self.rest.len() - keep]).into_owned();
        self.rest.drain(..self.rest.len() - keep);
        text
    }

    /// What is left at the end (an incomplete character: U+FFFD).
    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.rest).into_owned();
        self.rest.clear();
        text
    }
}

/// How many bytes at the end of `bytes` start a character that needs more bytes.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let needs = match b {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if needs > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_reads_of_the_event_stream_arrives_whole() {
        let stream = "event: log\ndata: {\"text\":\"caf\u{e9} \u{1f680}\"}\n\nevent: end\ndata: {\"status\":\"success\"}\n\n".as_bytes();
        // Every split point, including inside `é` (2 bytes) and the rocket (4 bytes).
        for cut in 0..=stream.len() {
            let mut events = EventStream::default();
            let mut got = events.push(&stream[..cut]).unwrap();
            got.extend(events.push(&stream[cut..]).unwrap());
            assert_eq!(
                got,
                [("log".to_string(), "{\"text\":\"caf\u{e9} \u{1f680}\"}".to_string()), ("end".into(), "{\"status\":\"success\"}".into())],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn event_stream_lines_are_bounded() {
        let mut events = EventStream::default();
        assert!(events.push(&vec![b'x'; MAX_LINE + 1]).is_none());
    }

    #[test]
    fn plain_log_pieces_keep_incomplete_characters_for_the_next_piece() {
        let text = "a\u{e9}\u{20ac}\u{1f680}z";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            for cut2 in cut..=bytes.len() {
                let mut d = Utf8Pieces::default();
                let out = d.push(&bytes[..cut]) + &d.push(&bytes[cut..cut2]) + &d.push(&bytes[cut2..]) + &d.finish();
                assert_eq!(out, text, "cuts at {cut}, {cut2}");
            }
        }
        // Invalid bytes stay visible; a truncated last character too, at the end.
        let mut d = Utf8Pieces::default();
        assert_eq!(d.push(b"a\xffb\xe2\x82") + &d.finish(), "a\u{fffd}b\u{fffd}");
    }
}
