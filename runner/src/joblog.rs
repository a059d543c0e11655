//! What a job's log receives, on both job paths: raw output, the runner's own lines, and the
//! executor's output channel. `piste run` writes it to a file (`run::logs::pump`); the runner
//! agent ships it to the server (`agent::logs`). Both mask before anything leaves the pump.

use tokio::sync::mpsc::{self, Receiver};

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
}

impl LogWriter {
    /// A writer and the receiving end its pump reads (bounded: a slow pump slows the job).
    pub fn channel(capacity: usize) -> (LogWriter, Receiver<Input>) {
        let (tx, rx) = mpsc::channel(capacity);
        (LogWriter { tx }, rx)
    }

    /// Adds a line of the runner's own (ignored if the log has already ended).
    pub async fn line(&self, text: impl Into<String>) {
        let _ = self.tx.send(Input::Line(text.into())).await;
    }

    /// Hands over an executor's output channel; later inputs come after all of its output.
    pub async fn stream(&self, rx: Receiver<Vec<u8>>) {
        let _ = self.tx.send(Input::Stream(rx)).await;
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
