//! Limits before work: the connection loop (a connection cap, header and body read timeouts,
//! idle keep-alive) and bounded body reads for the routes that take more than a small JSON body.
//!
//! `axum::serve` has no knob for any of this, so connections are driven here with hyper's
//! HTTP/1 connection builder: a semaphore caps open connections (one over the cap is answered
//! `503` and closed at once), hyper's `header_read_timeout` closes a connection whose request
//! head does not arrive in time — the first request's or the next one's, so it is also the idle
//! keep-alive timeout — and every request body is wrapped in [`TimeoutBody`], which fails the
//! read when no data arrives for `body_timeout_ms` (nginx's `client_body_timeout`).
//!
//! Bodies: JSON routes are capped by `DefaultBodyLimit` (`limits.json_bytes`), enforced while
//! reading. Routes that take more (`webhook`, log chunks, artifacts, git) take the raw body
//! and authenticate from headers *before* reading it; [`read_limited`] then stops at the limit
//! instead of buffering the rest. An unread body is not drained: hyper gives up on it and closes
//! the connection after the answer.
//!
//! Memory: a connection buffers at most [`CONNECTION_BUFFER_BYTES`], so slow clients pin at
//! most that times `max_connections` (64 MiB at the defaults); bodies are bounded per route,
//! and at most [`WEBHOOK_READS`] webhook bodies (the one unauthenticated route that reads
//! one) are read at once, each whole within `body_timeout_ms`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::Error;

/// `[limits]` in piste.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most open connections; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long a request head (line and headers) may take to arrive, counted from when the
    /// connection waits for it: also how long an idle keep-alive connection stays open (ms).
    pub header_timeout_ms: u64,
    /// Longest wait for the next piece of a request body (ms).
    pub body_timeout_ms: u64,
    /// Largest webhook body (bytes); forges send far less (GitHub caps at 25 MB).
    pub webhook_bytes: u64,
    /// Largest JSON body of every other API route (bytes).
    pub json_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 1024, header_timeout_ms: 30_000, body_timeout_ms: 60_000, webhook_bytes: 1 << 20, json_bytes: 256 << 10 }
    }
}

impl Limits {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.header_timeout_ms == 0 || self.body_timeout_ms == 0 {
            return Err("`[limits]`: `max_connections`, `header_timeout_ms` and `body_timeout_ms` must be above 0".into());
        }
        if self.webhook_bytes < 1024 || self.json_bytes < 1024 {
            return Err("`[limits]`: `webhook_bytes` and `json_bytes` must be at least 1024".into());
        }
        if self.webhook_bytes > crate::webhook::MAX_BODY_BYTES as u64 {
            return Err(format!(
                "`[limits]`: `webhook_bytes` may be at most {} (what forges send at most)",
                crate::webhook::MAX_BODY_BYTES
            ));
        }
        Ok(())
    }
}

/// Most bytes a connection buffers (a request head must fit: nginx allows 32 KiB).
pub const CONNECTION_BUFFER_BYTES: usize = 64 << 10;

/// Webhook bodies read at once (each at most `webhook_bytes`): anonymous senders cannot make
/// the server hold more than this many of them, whatever the connection count.
pub const WEBHOOK_READS: usize = 32;
static WEBHOOK_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(WEBHOOK_READS);

/// Reads a webhook body within `limit`, one of at most [`WEBHOOK_READS`] at once, and whole
/// within `deadline` (a slow sender does not keep its turn).
pub async fn read_webhook(headers: &HeaderMap, body: Body, limit: u64, deadline: Duration) -> Result<Bytes, Error> {
    let _turn = WEBHOOK_PERMITS.acquire().await.map_err(|_| Error::Internal("the webhook semaphore is closed".into()))?;
    match tokio::time::timeout(deadline, read_limited(headers, body, limit, "webhook bodies")).await {
        Ok(read) => read,
        Err(_) => Err(Error::BadRequest(format!("the webhook body did not arrive within {deadline:?}"))),
    }
}

/// Largest log chunk a runner may send (its shipper sends ≤ 64 KiB).
pub const LOG_CHUNK_BYTES: u64 = 8 << 20;
/// Largest git smart-HTTP request body (a fetch's negotiation: `want` and `have` lines).
pub const GIT_REQUEST_BYTES: u64 = 16 << 20;

/// The body whole, refusing it with 413 as soon as it passes `limit` bytes (a declared
/// `Content-Length` over the limit is refused before reading anything).
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: u64, what: &str) -> Result<Bytes, Error> {
    let too_large = || Error::PayloadTooLarge(format!("{what} are limited to {limit} bytes"));
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX)).await {
        Ok(bytes) => Ok(bytes),
        Err(e) if is_length_limit(&e) => Err(too_large()),
        Err(e) => Err(Error::BadRequest(format!("cannot read the request body: {e}"))),
    }
}

/// The request's `Content-Length`, when it declares one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A request body that fails when no frame arrives for `timeout` (reset by each frame).
pub struct TimeoutBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimeoutBody {
    pub fn new(inner: Incoming, timeout: Duration) -> TimeoutBody {
        TimeoutBody { inner, timeout, sleep: None }
    }
}

/// The body of a request stopped arriving.
#[derive(Debug, thiserror::Error)]
#[error("no request body data for {0:?}")]
pub struct BodyTimeout(Duration);

impl hyper::body::Body for TimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` is cancelled; then stops
/// accepting, lets every open connection finish its requests, and returns.
pub async fn serve_connections(listener: TcpListener, app: Router, limits: &Limits, shutdown: CancellationToken) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let tasks = tokio_util::task::TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .keep_alive(true)
        // What one connection may buffer (hyper's default is ~400 KiB): a request head, or a
        // piece of body not yet read. Times `max_connections`, the most slow clients can pin.
        .max_buf_size(CONNECTION_BUFFER_BYTES);
    let body_timeout = Duration::from_millis(limits.body_timeout_ms);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // See [`QuickAck`]: answers leave at once, whole.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                    }
                    QuickAck(stream)
                }
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the cap: say so without waiting on the client, and close.
            let _ = stream.0.try_write(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
            tracing::debug!("connection refused: `limits.max_connections` reached");
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let req = req.map(|b| Body::new(TimeoutBody::new(b, body_timeout)));
            app.clone().oneshot(req)
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Connection errors concern one client; others (too many open files) are the server's: wait
/// a second for descriptors to come back instead of spinning.
/// A client connection that asks for an immediate acknowledgement of what it received
/// whenever it waits to read more, and sends without Nagle's delay (`TCP_NODELAY`, set at accept).
///
/// Why: a runner's checkout (libgit2's HTTP client, which sets neither option) writes each
/// `git-upload-pack` request in two parts, the head then the body; with Nagle's algorithm
/// the body waits until the head is acknowledged, and Linux delays that acknowledgement by
/// 40 ms while the server waits for the body. The server's answers in two parts (a head, then
/// a streamed body: `info/refs`, `git-upload-pack`) waited the same way on the client's
/// delayed acknowledgement. Together they were 90 of the 155 ms from a webhook to a job's first
/// line (`cargo bench --bench serve -- first-line`, `strace` of the runner). `TCP_QUICKACK` is
/// not a lasting option (Linux leaves quick-ack mode by itself), so it is asked again whenever
/// a read finds nothing yet (waiting is when a client may be holding data back for our
/// acknowledgement); asked while an acknowledgement is pending, it sends it at once. Best effort: a
/// socket that refuses it is served as it is.
struct QuickAck(TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let stream = &mut self.get_mut().0;
        let read = Pin::new(&mut *stream).poll_read(cx, buf);
        if read.is_pending() {
            // Waiting for more: the client may be holding it until we acknowledge.
            let _ = socket2::SockRef::from(&*stream).set_tcp_quickack(true);
        }
        read
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
