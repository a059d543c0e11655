//! The log pump: executor output → secret masking → the job's log file and line events.
//! Streams: memory is bounded by the channel, one partial line (capped) and the masker's tail.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use tokio::sync::mpsc::{Receiver, Sender};

use crate::joblog::{Input, LineStart};
use crate::mask::Masker;
use crate::run::events::RunEvent;

/// Longest line kept whole; longer output is cut into several lines (a log is untrusted input).
const MAX_LINE: usize = 64 * 1024;
/// Lines sent per event, so that a chatty job does not cost one channel message per line.
const LINES_PER_EVENT: usize = 256;

/// What the pump saw, for the job summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogStats {
    pub bytes: u64,
    pub lines: u64,
}

/// Consumes `rx` until every writer is gone. `events` may be `None` (nobody watches lines).
pub async fn pump(
    job: String,
    mut rx: Receiver<Input>,
    secrets: Vec<String>,
    log_path: &Path,
    events: Option<Sender<RunEvent>>,
) -> std::io::Result<LogStats> {
    let mut out = Out {
        file: BufWriter::with_capacity(256 * 1024, File::create(log_path)?),
        masker: Masker::new(secrets.iter().map(String::as_bytes)),
        masked: Vec::with_capacity(128 * 1024),
        partial: Vec::new(),
        batch: Vec::new(),
        stats: LogStats::default(),
        line_start: LineStart::default(),
        events,
        job,
    };
    while let Some(input) = rx.recv().await {
        match input {
            Input::Bytes(chunk) => out.write(&chunk, rx.is_empty()).await?,
            Input::Line(text) => {
                let bytes = out.line_start.line(&text);
                out.write(&bytes, rx.is_empty()).await?;
            }
            Input::Stream(mut output) => {
                while let Some(chunk) = output.recv().await {
                    out.write(&chunk, output.is_empty()).await?;
                }
            }
        }
    }
    out.finish().await
}

/// The pump's state between inputs.
struct Out {
    file: BufWriter<File>,
    masker: Masker,
    masked: Vec<u8>,
    partial: Vec<u8>,
    batch: Vec<String>,
    stats: LogStats,
    line_start: LineStart,
    events: Option<Sender<RunEvent>>,
    job: String,
}

impl Out {
    /// Masks and writes one chunk; `quiet`: nothing else waits, so lines go out now.
    async fn write(&mut self, chunk: &[u8], quiet: bool) -> std::io::Result<()> {
        self.line_start.saw(chunk);
        self.masked.clear();
        self.masker.push(chunk, &mut self.masked);
        // Blocking write of at most a chunk: cheap next to the job's own work, and keeps order.
        self.file.write_all(&self.masked)?;
        self.stats.bytes += self.masked.len() as u64;
        if self.events.is_some() {
            split_lines(&self.masked, &mut self.partial, &mut self.batch, &mut self.stats);
            if self.batch.len() >= LINES_PER_EVENT {
                send(&self.events, &self.job, &mut self.batch).await;
            }
        }
        // Do not hold lines back while the job is quiet.
        if quiet {
            send(&self.events, &self.job, &mut self.batch).await;
        }
        Ok(())
    }

    async fn finish(mut self) -> std::io::Result<LogStats> {
        self.masked.clear();
        self.masker.finish(&mut self.masked);
        self.file.write_all(&self.masked)?;
        self.stats.bytes += self.masked.len() as u64;
        if self.events.is_some() {
            split_lines(&self.masked, &mut self.partial, &mut self.batch, &mut self.stats);
            if !self.partial.is_empty() {
                self.batch.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.stats.lines += 1;
            }
            send(&self.events, &self.job, &mut self.batch).await;
        }
        self.file.flush()?;
        Ok(self.stats)
    }
}

async fn send(events: &Option<Sender<RunEvent>>, job: &str, batch: &mut Vec<String>) {
    if batch.is_empty() {
        return;
    }
    if let Some(tx) = events {
        let lines = std::mem::take(batch);
        let _ = tx.send(RunEvent::Log { job: job.to_string(), lines }).await;
    } else {
        batch.clear();
    }
}

fn split_lines(data: &[u8], partial: &mut Vec<u8>, batch: &mut Vec<String>, stats: &mut LogStats) {
    let mut rest = data;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        partial.extend_from_slice(&rest[..pos]);
        let line = partial.strip_suffix(b"\r").unwrap_or(partial);
        batch.push(String::from_utf8_lossy(line).into_owned());
        stats.lines += 1;
        partial.clear();
        rest = &rest[pos + 1..];
    }
    partial.extend_from_slice(rest);
    while partial.len() > MAX_LINE {
        let tail = partial.split_off(MAX_LINE);
        batch.push(String::from_utf8_lossy(partial).into_owned());
        stats.lines += 1;
        *partial = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn masks_across_chunks_and_splits_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.log");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (etx, mut erx) = tokio::sync::mpsc::channel(16);
        let pump = tokio::spawn({
            let path = path.clone();
            async move { pump("j".into(), rx, vec!["hunter2-secret".into()], &path, Some(etx)).await }
        });
        for chunk in ["token=hun", "ter2-se", "cret\nsecond line\r\nno newline"] {
            tx.send(Input::Bytes(chunk.as_bytes().to_vec())).await.unwrap();
        }
        drop(tx);
        let stats = pump.await.unwrap().unwrap();
        let mut lines = Vec::new();
        while let Ok(RunEvent::Log { lines: l, .. }) = erx.try_recv() {
            lines.extend(l);
        }
        assert_eq!(lines, ["token=[MASKED]", "second line", "no newline"]);
        assert_eq!(stats.lines, 3);
        let stored = std::fs::read_to_string(&path).unwrap();
        assert_eq!(stored, "token=[MASKED]\nsecond line\r\nno newline");
        assert!(!stored.contains("hunter2"));
    }
}
