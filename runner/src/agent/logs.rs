//! A job's log on its way to the server: masked on the node, batched, appended by offset,
//! retried without loss or duplication, bounded in memory.
//!
//! - **Masking** happens first, with [`Masker`], so no masked value leaves the node. Bytes
//!   that might be the start of a secret are held back until the next byte decides (a newline
//!   always does); they are never flushed early, since a secret printed in two halves across
//!   a forced flush would go out unmasked.
//! - **Batching:** masked bytes wait in a buffer; a request goes out when 64 KiB are waiting,
//!   when the oldest waiting byte is 100 ms old, or at the end. One request is in flight at a
//!   time (appends are ordered); bytes that arrive meanwhile go in the next one, so a chatty job
//!   costs a request per ~64 KiB or per round trip, not per line. A request carries at most
//!   [`MAX_LOG_CHUNK`] bytes.
//! - **Retries:** the buffer keeps every byte the server has not acknowledged; every request
//!   starts at the last acknowledged offset. A network error, timeout or 5xx is retried with
//!   backoff (the server ignores the part it already has and answers where its log ends, which
//!   may be past what this request carried); a 409 resends from the server's `expected_offset`.
//!   An acknowledgement or gap behind the acknowledged offset (the server lost acknowledged
//!   bytes) or past what was written cannot be repaired: that ends shipping with an error.
//! - **Backpressure:** when [`MAX_UNACKED`] bytes await acknowledgement (the server is slow or
//!   down), input is no longer read: the executor's bounded channel fills and the job's
//!   output pipe blocks. Memory stays bounded; no byte is dropped.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use scheduler::protocol::{MAX_FINISH_LOG, MAX_LOG_CHUNK};
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::api::{Api, Backoff, CallError, LogReply};
use super::job::Signals;
use crate::joblog::{Input, LogWriter};
use crate::mask::Masker;

/// Send when this many bytes wait.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;
/// Send when the oldest waiting byte is this old (unless `log_interval_ms` says otherwise).
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Stop reading input while this many bytes await acknowledgement.
pub(crate) const MAX_UNACKED: usize = 8 << 20;

/// How shipping ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogEnd {
    /// Every byte written was acknowledged.
    Complete,
    /// The job is not ours any more (or the runner gave up on it).
    Lost,
    /// The server refused the log; the message says why.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogResult {
    /// Bytes the server acknowledged.
    pub bytes: u64,
    pub end: LogEnd,
    /// The whole log, not sent: for the finish report (see [`spawn`]'s `whole_in_finish`).
    pub whole: Option<Vec<u8>>,
}

impl LogResult {
    fn ended(bytes: u64, end: LogEnd) -> LogResult {
        LogResult { bytes, end, whole: None }
    }
}

/// How a log is shipped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shipping {
    /// Send when the oldest waiting byte is this old.
    pub interval: Duration,
    /// The server takes a never-sent log in the finish report.
    pub whole_in_finish: bool,
}

/// Starts shipping job `job`'s log, masked by `masker`. On a lost job the shipper marks
/// `signals` lost; on a refused log it cancels the script. With `whole_in_finish` (the server
/// offers it), a log whose input ended before any of it was sent — a short job's — is not sent
/// but returned, masked, in [`LogResult::whole`] for the finish report (up to
/// [`MAX_FINISH_LOG`] bytes): one request fewer per job. Only a log never sent in part goes
/// there, so no earlier append of it can reach the server afterwards.
pub(crate) fn spawn(
    api: Api,
    job: i64,
    token: String,
    masker: Masker,
    signals: Signals,
    shipping: Shipping,
) -> (LogWriter, JoinHandle<LogResult>) {
    let (writer, rx) = LogWriter::channel(16);
    let state = State::new(masker, shipping.interval);
    let shipper = Shipper { api, job, token, signals, whole_in_finish: shipping.whole_in_finish, sent_any: false, state };
    (writer, tokio::spawn(shipper.run(rx)))
}

/// A log request in flight; it yields the offsets it covered and the answer.
type Request = Pin<Box<dyn Future<Output = (u64, u64, Result<LogReply, CallError>)> + Send>>;

struct Shipper {
    api: Api,
    job: i64,
    token: String,
    signals: Signals,
    /// The server takes a never-sent log in the finish report.
    whole_in_finish: bool,
    /// A request has been started (the log can no longer go whole in the finish report).
    sent_any: bool,
    state: State,
}

/// The buffer and its offsets; no I/O.
struct State {
    masker: Masker,
    at_line_start: bool,
    /// Masked bytes from offset `acked` on: everything not yet acknowledged.
    buf: VecDeque<u8>,
    acked: u64,
    /// When the oldest byte not yet put in a request arrived.
    oldest_unsent: Option<Instant>,
    /// Send again without waiting for the batching thresholds (after a failure or a 409).
    resend: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
    failures: u32,
    /// Send when the oldest waiting byte is this old.
    interval: Duration,
}

impl State {
    fn new(masker: Masker, interval: Duration) -> State {
        State {
            interval,
            masker,
            at_line_start: true,
            buf: VecDeque::new(),
            acked: 0,
            oldest_unsent: None,
            resend: false,
            retry_at: None,
            backoff: Backoff::new(Duration::from_secs(5)),
            failures: 0,
        }
    }

    fn written(&self) -> u64 {
        self.acked + self.buf.len() as u64
    }

    fn input(&mut self, input: &[u8]) {
        let Some(&last) = input.last() else { return };
        self.at_line_start = last == b'\n';
        let mut out = Vec::with_capacity(input.len());
        self.masker.push(input, &mut out);
        self.append(&out);
    }

    fn line(&mut self, text: &str) {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        if !self.at_line_start {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        self.input(&bytes);
    }

    fn end_of_input(&mut self) {
        let mut out = Vec::new();
        self.masker.finish(&mut out);
        self.append(&out);
    }

    fn append(&mut self, masked: &[u8]) {
        if !masked.is_empty() {
            self.buf.extend(masked);
            self.oldest_unsent.get_or_insert_with(Instant::now);
        }
    }

    /// Whether a request should start now (none being in flight).
    fn due(&self, now: Instant, input_done: bool) -> bool {
        if self.buf.is_empty() || self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        input_done || self.resend || self.buf.len() >= FLUSH_BYTES || self.oldest_unsent.is_some_and(|t| now >= t + self.interval)
    }

    /// When [`Self::due`] may become true without new input.
    fn wake_at(&self) -> Option<Instant> {
        if self.buf.is_empty() {
            return None;
        }
        match self.retry_at {
            Some(t) => Some(t),
            None => self.oldest_unsent.map(|t| t + self.interval),
        }
    }

    /// The next request's offset and bytes.
    fn take_request(&mut self) -> (u64, Vec<u8>) {
        let n = self.buf.len().min(MAX_LOG_CHUNK);
        let (a, b) = self.buf.as_slices();
        let mut body = Vec::with_capacity(n);
        body.extend_from_slice(&a[..a.len().min(n)]);
        body.extend_from_slice(&b[..n - body.len()]);
        self.oldest_unsent = None;
        self.resend = false;
        (self.acked, body)
    }

    /// The server's log ends at `to`: drop what it has.
    fn advance(&mut self, to: u64) -> Result<(), String> {
        if to < self.acked {
            return Err(format!("the server lost log bytes it had acknowledged: its log ends at {to}, {} were acknowledged", self.acked));
        }
        if to > self.written() {
            return Err(format!("the server claims {to} bytes of log, the runner wrote {}", self.written()));
        }
        self.buf.drain(..(to - self.acked) as usize);
        self.acked = to;
        Ok(())
    }

    fn succeeded(&mut self, sent_end: u64) {
        self.retry_at = None;
        self.backoff.reset();
        self.failures = 0;
        // A partial acknowledgement: the rest goes again at once.
        if self.acked < sent_end {
            self.resend = true;
        }
    }

    fn failed(&mut self) {
        self.failures += 1;
        self.resend = true;
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }
}

impl Shipper {
    async fn run(mut self, mut inputs: Receiver<Input>) -> LogResult {
        let mut stream: Option<Receiver<Vec<u8>>> = None;
        let mut in_flight: Option<Request> = None;
        let mut input_done = false;
        loop {
            if input_done && self.state.buf.is_empty() && in_flight.is_none() {
                return LogResult::ended(self.state.acked, LogEnd::Complete);
            }
            if input_done && self.whole_in_finish && !self.sent_any && self.state.buf.len() <= MAX_FINISH_LOG {
                let whole = std::mem::take(&mut self.state.buf).into();
                return LogResult { bytes: 0, end: LogEnd::Complete, whole: Some(whole) };
            }
            if in_flight.is_none() && self.state.due(Instant::now(), input_done) {
                in_flight = Some(self.request());
            }
            let can_read = !input_done && self.state.buf.len() < MAX_UNACKED;
            let wake = if in_flight.is_none() { self.state.wake_at() } else { None };
            tokio::select! {
                biased;
                () = self.signals.lost.cancelled() => return LogResult::ended(self.state.acked, LogEnd::Lost),
                (offset, end, reply) = poll_request(&mut in_flight) => {
                    in_flight = None;
                    if let Err(end) = self.on_reply(offset, end, reply) {
                        return LogResult::ended(self.state.acked, end);
                    }
                }
                input = next_input(&mut inputs, &mut stream), if can_read => match input {
                    Some(Input::Bytes(b)) => self.state.input(&b),
                    Some(Input::Line(text)) => self.state.line(&text),
                    Some(Input::Stream(rx)) => stream = Some(rx),
                    None => {
                        input_done = true;
                        self.state.end_of_input();
                    }
                },
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    fn request(&mut self) -> Request {
        self.sent_any = true;
        let (offset, body) = self.state.take_request();
        let end = offset + body.len() as u64;
        let (api, token, job) = (self.api.clone(), self.token.clone(), self.job);
        Box::pin(async move { (offset, end, api.put_log(job, &token, offset, body).await) })
    }

    /// Handles an answer; `Err` ends shipping.
    fn on_reply(&mut self, offset: u64, sent_end: u64, reply: Result<LogReply, CallError>) -> Result<(), LogEnd> {
        let job = self.job;
        match reply {
            Ok(LogReply::Ack(next)) => {
                self.state.advance(next).map_err(|m| self.fail(m))?;
                if self.state.failures > 0 {
                    tracing::info!(job, failures = self.state.failures, "log upload succeeded after retrying");
                }
                self.state.succeeded(sent_end);
            }
            Ok(LogReply::Gap(expected)) => {
                tracing::debug!(job, expected, acked = self.state.acked, "the server expects the log from another offset");
                self.state.advance(expected).map_err(|m| self.fail(m))?;
                if expected == offset {
                    // It refused the very offset it asks for: wait before trying again.
                    self.state.failed();
                } else {
                    self.state.succeeded(u64::MAX);
                }
            }
            Err(CallError::Transient(msg)) => {
                if self.state.failures == 0 {
                    tracing::warn!(job, error = %msg, "log upload failed; retrying");
                }
                self.state.failed();
            }
            Err(CallError::Lost(status)) => {
                tracing::warn!(job, status, "the server no longer accepts this job's log: the job was taken away");
                self.signals.mark_lost();
                return Err(LogEnd::Lost);
            }
            Err(CallError::Stopped) => return Err(LogEnd::Lost),
            Err(e @ (CallError::Rejected { .. } | CallError::Local(_))) => {
                return Err(self.fail(format!("the server refused the log: {e}")));
            }
        }
        Ok(())
    }

    fn fail(&self, message: String) -> LogEnd {
        tracing::error!(job = self.job, error = %message, "the job's log cannot be stored; stopping the job");
        self.signals.script.cancel();
        LogEnd::Failed(message)
    }
}

async fn poll_request(req: &mut Option<Request>) -> (u64, u64, Result<LogReply, CallError>) {
    match req {
        Some(r) => r.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next input: the current stream's output first, then the next message. Cancel-safe.
async fn next_input(inputs: &mut Receiver<Input>, stream: &mut Option<Receiver<Vec<u8>>>) -> Option<Input> {
    loop {
        match stream {
            Some(rx) => match rx.recv().await {
                Some(bytes) => return Some(Input::Bytes(bytes)),
                None => *stream = None,
            },
            None => return inputs.recv().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(secrets: &[&str]) -> State {
        State::new(Masker::new(secrets.iter().map(|s| s.as_bytes())), FLUSH_AFTER)
    }

    #[test]
    fn lines_start_on_their_own_line_and_are_masked() {
        let mut s = state(&["hunter2"]);
        s.input(b"partial hun");
        s.input(b"ter2");
        s.line("runner line");
        s.end_of_input();
        let all: Vec<u8> = s.buf.iter().copied().collect();
        assert_eq!(String::from_utf8(all).unwrap(), "partial [MASKED]\nrunner line\n");
    }

    #[test]
    fn offsets_advance_only_within_what_was_written() {
        let mut s = state(&[]);
        s.input(b"0123456789");
        let (offset, body) = s.take_request();
        assert_eq!((offset, body.as_slice()), (0, &b"0123456789"[..]));
        s.advance(4).unwrap();
        assert_eq!(s.acked, 4);
        s.succeeded(10);
        assert!(s.resend, "a partial acknowledgement resends the rest");
        let (offset, body) = s.take_request();
        assert_eq!((offset, body.as_slice()), (4, &b"456789"[..]));
        assert!(s.advance(3).unwrap_err().contains("lost log bytes"));
        assert!(s.advance(11).unwrap_err().contains("claims 11"));
        s.advance(10).unwrap();
        assert!(s.buf.is_empty());
    }

    #[test]
    fn batching_thresholds() {
        let mut s = state(&[]);
        let t0 = Instant::now();
        assert!(!s.due(t0, false));
        s.input(b"line\n");
        assert!(!s.due(Instant::now(), false), "a fresh line waits for company");
        assert!(s.due(Instant::now() + FLUSH_AFTER, false), "but not longer than FLUSH_AFTER");
        assert!(s.due(Instant::now(), true), "the end flushes at once");
        s.input(&vec![b'x'; FLUSH_BYTES]);
        assert!(s.due(Instant::now(), false), "a full batch goes at once");
        s.failed();
        assert!(!s.due(Instant::now(), false), "a failure waits for its backoff");
        assert!(s.due(Instant::now() + Duration::from_secs(1), false));
    }

    #[test]
    fn requests_are_bounded() {
        let mut s = state(&[]);
        s.input(&vec![b'x'; MAX_LOG_CHUNK + 10]);
        let (_, body) = s.take_request();
        assert_eq!(body.len(), MAX_LOG_CHUNK);
    }
}
