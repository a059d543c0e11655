//! What a job's log receives, on both job paths: raw output, the runner's own lines, and the
//! executor's output channel. `piste run` writes it to a file (`run::logs::pump`); the runner
//! agent ships it to the server (`agent::logs`). Both mask before anything leaves the pump.
//!
//! The job's `coverage:` expression is searched here, in the output streamed through
//! [`LogWriter::stream`] (the script, `after_script`, steps), on both paths alike: the value
//! goes with the attempt's result (`piste run`'s events, the runner's finish request).

use std::sync::{Arc, Mutex, PoisonError};

use pipeline_spec::coverage::Scanner;
use tokio::sync::mpsc::{self, Receiver};
use tokio::task::JoinHandle;

/// What the log receives, in order.
pub enum Input {
    /// Raw output.
    Bytes(Vec<u8>),
    /// A line of the runner's own, started on a new line if the output did not end with one.
    Line(String),
    /// An executor's output channel, read to its end before the next input.
    Stream(Receiver<Vec<u8>>),
}

/// The writing end of a job's log. Dropping every clone ends the log.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Input>,
    coverage: Arc<CoverageTap>,
}

/// The `coverage:` search over the streamed output: the scanner and the tasks feeding it.
#[derive(Default)]
struct CoverageTap {
    scanner: Mutex<Option<Scanner>>,
    feeders: Mutex<Vec<JoinHandle<()>>>,
}

impl LogWriter {
    /// A writer and the receiving end its pump reads (bounded: a slow pump slows the job).
    pub fn channel(capacity: usize) -> (LogWriter, Receiver<Input>) {
        let (tx, rx) = mpsc::channel(capacity);
        (LogWriter { tx, coverage: Arc::default() }, rx)
    }

    /// Adds a line of the runner's own (ignored if the log has already ended).
    pub async fn line(&self, text: impl Into<String>) {
        let _ = self.tx.send(Input::Line(text.into())).await;
    }

    /// Searches the output streamed from now on with a job's `coverage:` expression.
    pub fn scan_coverage(&self, scanner: Scanner) {
        *self.coverage.scanner.lock().unwrap_or_else(PoisonError::into_inner) = Some(scanner);
    }

    /// Hands over an executor's output channel; later inputs come after all of its output.
    pub async fn stream(&self, mut rx: Receiver<Vec<u8>>) {
        if self.coverage.scanner.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
            let _ = self.tx.send(Input::Stream(rx)).await;
            return;
        }
        // The chunks pass through the scanner on their way to the pump (moved, not copied).
        let (fwd, out) = mpsc::channel(16);
        let tap = self.coverage.clone();
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if let Some(s) = tap.scanner.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                    s.push(&chunk);
                }
                if fwd.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        self.coverage.feeders.lock().unwrap_or_else(PoisonError::into_inner).push(feeder);
        let _ = self.tx.send(Input::Stream(out)).await;
    }

    /// The `coverage:` value of the output streamed so far (`None` without an expression or a
    /// match), once the streams handed over have ended.
    pub async fn coverage(&self) -> Option<f64> {
        let feeders = std::mem::take(&mut *self.coverage.feeders.lock().unwrap_or_else(PoisonError::into_inner));
        for f in feeders {
            let _ = f.await;
        }
        self.coverage.scanner.lock().unwrap_or_else(PoisonError::into_inner).as_mut().and_then(Scanner::value)
    }
}

/// Tracks whether the output ended a line, so that the runner's lines start on their own.
#[derive(Debug, Clone, Copy)]
pub struct LineStart(bool);

impl Default for LineStart {
    fn default() -> Self {
        LineStart(true)
    }
}

impl LineStart {
    /// Notes output bytes as they pass.
    pub fn saw(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.0 = last == b'\n';
        }
    }

    /// The bytes for one runner line: a newline first when the output left a line open.
    pub fn line(&mut self, text: &str) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        if !self.0 {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        self.0 = true;
        bytes
    }
}
