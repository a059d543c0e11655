//! The HTTP calls of the runner protocol ([`scheduler::protocol`]), each answer sorted into
//! what the caller does next: use it, retry it later, drop the job, or give up.
//!
//! Tokens travel only in `Authorization` headers; no URL, error or log field carries one.

use std::path::Path;
use std::time::Duration;

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use scheduler::protocol::{
    self, ApiError, FinishRequest, Heartbeat, JobRequestBody, LogAck, LogGap, RegisterRequest, RegisterResponse, ReuseAnswer, ReuseRequest,
    ReusedFrom, paths,
};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::cas::Digest;

/// How long a job request may wait: more than the server's long poll (about 20 s).
pub(crate) const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Every other call except artifact transfers.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Artifact uploads and downloads (they stream; this only bounds a stuck transfer).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest error body read from the server, for messages.
const MAX_ERROR_BODY: usize = 4096;

/// Why a call did not give its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// Network error, timeout, 5xx, 408 or 429: the same call may succeed later.
    Transient(String),
    /// 401, 404 or 410 on a job call: the job is not ours any more (its lease expired and it
    /// was handed to another runner, or it was deleted). Stop it and report nothing.
    Lost(u16),
    /// Any other refusal; retrying the same call cannot help.
    Rejected { status: u16, message: String },
    /// A local file could not be read or written.
    Local(String),
    /// The caller stopped retrying (the job was dropped or the runner is stopping).
    Stopped,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transient(m) => write!(f, "{m}"),
            CallError::Lost(status) => write!(f, "the server no longer knows this job (HTTP {status})"),
            CallError::Rejected { status, message } => write!(f, "the server refused it (HTTP {status}): {message}"),
            CallError::Local(m) => write!(f, "{m}"),
            CallError::Stopped => write!(f, "stopped"),
        }
    }
}

/// An answer to a log chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogReply {
    /// Stored: the server's log now ends at this offset.
    Ack(u64),
    /// 409: the server's log ends at this offset; send from there.
    Gap(u64),
}

/// The certificates of a PEM bundle, with an error naming the file when there is none.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file `{}`: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("the CA file `{}` is not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the CA file `{}` holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The server at one base URL.
#[derive(Clone)]
pub(crate) struct Api {
    http: Client,
    base: String,
}

impl Api {
    /// A client of the server at `base`, trusting the certificate authorities of `ca_file`
    /// (a PEM bundle) besides the usual ones.
    pub(crate) fn new(base: &str, ca_file: Option<&Path>) -> Result<Api, String> {
        let mut builder = Client::builder()
            .user_agent(concat!("piste-runner/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Duration::from_secs(30));
        if let Some(path) = ca_file {
            for cert in read_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(Api { http, base: base.trim_end_matches('/').to_owned() })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /api/v1/runners`: one attempt (registration is interactive).
    pub(crate) async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, CallError> {
        let resp = send(self.http.post(self.url(paths::REGISTER)).timeout(CALL_TIMEOUT).json(req)).await?;
        match resp.status() {
            s if s.is_success() => json(resp).await,
            _ => Err(refusal(resp, false).await),
        }
    }

    /// `POST /api/v1/jobs/request`: a job, or `None` when the long poll ended without one.
    /// The payload is returned as raw bytes so that an unreadable one can still be reported.
    pub(crate) async fn request_job(&self, runner_token: &str, free_slots: u32) -> Result<Option<Vec<u8>>, CallError> {
        let body = JobRequestBody { free_slots };
        let req = self.http.post(self.url(paths::REQUEST_JOB)).timeout(POLL_TIMEOUT).bearer_auth(runner_token).json(&body);
        let resp = send(req).await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => Ok(Some(resp.bytes().await.map_err(transient)?.to_vec())),
            _ => Err(refusal(resp, false).await),
        }
    }

    /// `POST /api/v1/jobs/{id}/heartbeat`.
    pub(crate) async fn heartbeat(&self, job: i64, token: &str, timeout: Duration) -> Result<Heartbeat, CallError> {
        let resp = send(self.http.post(self.url(&paths::heartbeat(job))).timeout(timeout).bearer_auth(token)).await?;
        match resp.status() {
            s if s.is_success() => json(resp).await,
            _ => Err(refusal(resp, true).await),
        }
    }

    /// `PUT /api/v1/jobs/{id}/log?offset=N`.
    pub(crate) async fn put_log(&self, job: i64, token: &str, offset: u64, bytes: Vec<u8>) -> Result<LogReply, CallError> {
        let req = self
            .http
            .put(self.url(&paths::log(job, offset)))
            .timeout(CALL_TIMEOUT)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        let resp = send(req).await?;
        match resp.status() {
            s if s.is_success() => Ok(LogReply::Ack(json::<LogAck>(resp).await?.next_offset)),
            StatusCode::CONFLICT => {
                let body = resp.bytes().await.map_err(transient)?;
                match serde_json::from_slice::<LogGap>(&body) {
                    Ok(gap) => Ok(LogReply::Gap(gap.expected_offset)),
                    Err(_) => Err(CallError::Rejected { status: 409, message: text(&body) }),
                }
            }
            _ => Err(refusal(resp, true).await),
        }
    }

    /// `POST /api/v1/jobs/{id}/artifacts` with the digest only: `Ok(true)` when the server
    /// already holds this archive for the project and recorded it for the job, so there is
    /// nothing to upload; `Ok(false)` when it must be uploaded (404, or 405 from a server that
    /// predates the call).
    pub(crate) async fn link_artifacts(&self, job: i64, token: &str, digest: &Digest) -> Result<bool, CallError> {
        let req = self
            .http
            .post(self.url(&paths::artifacts(job)))
            .timeout(CALL_TIMEOUT)
            .bearer_auth(token)
            .header(protocol::SHA256_HEADER, digest.to_string())
            .header(reqwest::header::CONTENT_LENGTH, 0);
        let resp = send(req).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Ok(false),
            _ => Err(refusal(resp, true).await),
        }
    }

    /// `PUT /api/v1/jobs/{id}/artifacts`, streaming the archive at `archive`.
    pub(crate) async fn put_artifacts(&self, job: i64, token: &str, archive: &Path, digest: &Digest) -> Result<(), CallError> {
        let local = |e: std::io::Error| CallError::Local(format!("cannot read `{}`: {e}", archive.display()));
        let file = tokio::fs::File::open(archive).await.map_err(local)?;
        let len = file.metadata().await.map_err(local)?.len();
        let req = self
            .http
            .put(self.url(&paths::artifacts(job)))
            .timeout(TRANSFER_TIMEOUT)
            .bearer_auth(token)
            .header(protocol::SHA256_HEADER, digest.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/zstd")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::from(file));
        let resp = send(req).await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            _ => Err(refusal(resp, true).await),
        }
    }

    /// `GET /api/v1/jobs/{id}/artifacts/{dep}` into `dest` (truncated first). `Ok(false)`: the
    /// dependency has no artifacts (404). When the server sends the archive's digest, the bytes
    /// are checked against it.
    pub(crate) async fn get_dependency(&self, job: i64, token: &str, dep: i64, dest: &Path, max_bytes: u64) -> Result<bool, CallError> {
        let req = self.http.get(self.url(&paths::dependency_artifacts(job, dep))).timeout(TRANSFER_TIMEOUT).bearer_auth(token);
        let mut resp = send(req).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            s if s.is_success() => {}
            // 404 means "no artifacts" here, so only 401 and 410 say the job is gone.
            StatusCode::UNAUTHORIZED | StatusCode::GONE => return Err(CallError::Lost(resp.status().as_u16())),
            _ => return Err(refusal(resp, false).await),
        }
        let announced = resp.headers().get(protocol::SHA256_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let local = |e: std::io::Error| CallError::Local(format!("cannot write `{}`: {e}", dest.display()));
        let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(transient)? {
            total += chunk.len() as u64;
            if total > max_bytes {
                return Err(CallError::Local(format!("the archive is larger than {max_bytes} bytes")));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        if let Some(announced) = announced {
            let actual = Digest::from_bytes(hasher.finalize().into()).to_string();
            if announced != actual {
                // A transfer cut short by a proxy looks like this: worth another try.
                return Err(CallError::Transient(format!("the archive received hashes to `{actual}`, the server announced `{announced}`")));
            }
        }
        Ok(true)
    }

    /// `POST /api/v1/jobs/{id}/reuse`: `Some` when the server recorded the job as reused from
    /// an earlier one (the job is over), `None` when it must run.
    pub(crate) async fn reuse(&self, job: i64, token: &str, key: &Digest) -> Result<Option<ReusedFrom>, CallError> {
        let body = ReuseRequest { key: key.to_string() };
        // A hit copies the earlier log on the server before answering: as long as a transfer.
        let resp = send(self.http.post(self.url(&paths::reuse(job))).timeout(TRANSFER_TIMEOUT).bearer_auth(token).json(&body)).await?;
        match resp.status() {
            s if s.is_success() => Ok(json::<ReuseAnswer>(resp).await?.reused_from),
            _ => Err(refusal(resp, true).await),
        }
    }

    /// `POST /api/v1/jobs/{id}/finish`.
    pub(crate) async fn finish(&self, job: i64, token: &str, req: &FinishRequest) -> Result<(), CallError> {
        let resp = send(self.http.post(self.url(&paths::finish(job))).timeout(CALL_TIMEOUT).bearer_auth(token).json(req)).await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            _ => Err(refusal(resp, true).await),
        }
    }
}

async fn send(req: RequestBuilder) -> Result<Response, CallError> {
    req.send().await.map_err(transient)
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T, CallError> {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(transient)?;
    serde_json::from_slice(&body).map_err(|e| CallError::Rejected { status, message: format!("unreadable answer: {e}") })
}

/// A network-level failure, described without its URL's query (which holds nothing secret,
/// but keeps messages short) and never with a header.
fn transient(e: reqwest::Error) -> CallError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection broken while reading the answer"
    } else {
        "request failed"
    };
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    CallError::Transient(msg)
}

/// Sorts a non-success answer. `job_call`: 401/404/410 mean the job is gone.
async fn refusal(resp: Response, job_call: bool) -> CallError {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let message = match serde_json::from_slice::<ApiError>(&body) {
        Ok(e) => format!("{}: {}", e.code, e.message),
        Err(_) => text(&body),
    };
    match status {
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS => {
            CallError::Transient(format!("HTTP {}: {message}", s.as_u16()))
        }
        StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND | StatusCode::GONE if job_call => CallError::Lost(status.as_u16()),
        s => CallError::Rejected { status: s.as_u16(), message },
    }
}

/// The start of a body, as printable text.
fn text(body: &[u8]) -> String {
    let cut = &body[..body.len().min(MAX_ERROR_BODY)];
    let s = String::from_utf8_lossy(cut);
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.trim().is_empty() { "(no details)".to_owned() } else { s.trim().to_owned() }
}

/// Exponential backoff with jitter: 100 ms doubling up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) const START: Duration = Duration::from_millis(100);

    pub(crate) fn new(max: Duration) -> Backoff {
        Backoff { next: Self::START, max }
    }

    /// The next delay, between 75 % and 125 % of the nominal one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let spread = getrandom::u32().unwrap_or(u32::MAX / 2) % 501;
        nominal.mul_f64(0.75 + f64::from(spread) / 1000.0)
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::START;
    }
}

/// Retries `call` while it fails transiently, with backoff, until `stop` is cancelled (then
/// [`CallError::Stopped`]). The first failure of a series is logged at WARN, later ones at DEBUG.
pub(crate) async fn retrying<T, F, Fut>(stop: &CancellationToken, what: &str, job: i64, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut backoff = Backoff::new(Duration::from_secs(5));
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(CallError::Stopped),
            r = call() => r,
        };
        match result {
            Err(CallError::Transient(msg)) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(job, error = %msg, "{what} failed; retrying");
                } else {
                    tracing::debug!(job, failures, error = %msg, "{what} failed again; retrying");
                }
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Err(CallError::Stopped),
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
            other => {
                if failures > 0 && other.is_ok() {
                    tracing::info!(job, failures, "{what} succeeded after retrying");
                }
                return other;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(75) && delays[0] <= Duration::from_millis(125), "{delays:?}");
        assert!(delays[7] >= Duration::from_millis(750) && delays[7] <= Duration::from_millis(1250), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn error_bodies_are_short_and_printable() {
        assert_eq!(text(b""), "(no details)");
        assert_eq!(text(b"bad\nthing\x1b[31m"), "bad thing [31m");
        assert_eq!(text(&[b'x'; 10_000]).len(), MAX_ERROR_BODY);
    }
}
