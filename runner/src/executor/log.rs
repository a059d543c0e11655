//! The job's output stream as the executor writes it: raw job output plus GitLab-style lines.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::Sender;

/// Largest chunk an executor sends on the output channel.
pub const CHUNK_SIZE: usize = 64 * 1024;

pub(crate) const ANSI_RESET: &str = "\x1b[0;m";
pub(crate) const ANSI_BOLD_GREEN: &str = "\x1b[32;1m";
const ANSI_BOLD_CYAN: &str = "\x1b[36;1m";
const ANSI_YELLOW: &str = "\x1b[0;33m";
const ANSI_BOLD_RED: &str = "\x1b[31;1m";
/// Erase to end of line: what GitLab puts after a section marker so terminals hide it.
const ANSI_CLEAR: &str = "\x1b[0K";

/// Writes into a job's output channel. A consumer that went away is not an error: the job goes
/// on and its output is dropped.
pub(crate) struct JobLog {
    tx: Sender<Vec<u8>>,
    /// Whether the last byte sent was a newline (or nothing was sent), so that the executor's
    /// own lines always start on a line of their own.
    at_line_start: AtomicBool,
    /// Sections started and not yet ended, innermost last.
    open_sections: Mutex<Vec<String>>,
}

impl JobLog {
    pub(crate) fn new(tx: Sender<Vec<u8>>) -> Self {
        Self { tx, at_line_start: AtomicBool::new(true), open_sections: Mutex::new(Vec::new()) }
    }

    /// Sends job output, cut into chunks of at most [`CHUNK_SIZE`] bytes.
    pub(crate) async fn output(&self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else { return };
        for chunk in bytes.chunks(CHUNK_SIZE) {
            let _ = self.tx.send(chunk.to_vec()).await;
        }
        self.at_line_start.store(last == b'\n', Ordering::Relaxed);
    }

    /// Sends one line of the executor's own, starting a new line first if needed.
    async fn line(&self, text: &str) {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        if !self.at_line_start.load(Ordering::Relaxed) {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        self.output(&bytes).await;
    }

    pub(crate) async fn info(&self, text: &str) {
        self.line(&format!("{ANSI_RESET}{text}")).await;
    }

    pub(crate) async fn warning(&self, text: &str) {
        self.line(&format!("{ANSI_YELLOW}WARNING: {text}{ANSI_RESET}")).await;
    }

    pub(crate) async fn error(&self, text: &str) {
        self.line(&format!("{ANSI_BOLD_RED}ERROR: {text}{ANSI_RESET}")).await;
    }

    /// `section_start:<unix>:<name>\r\e[0K` followed by a header, as GitLab's log viewer folds.
    pub(crate) async fn section_start(&self, name: &str, header: &str) {
        self.open_sections.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_owned());
        self.line(&format!("section_start:{}:{name}\r{ANSI_CLEAR}{ANSI_BOLD_CYAN}{header}{ANSI_RESET}", unix_now())).await;
    }

    pub(crate) async fn section_end(&self, name: &str) {
        self.open_sections.lock().unwrap_or_else(|e| e.into_inner()).retain(|open| open != name);
        self.line(&format!("section_end:{}:{name}\r{ANSI_CLEAR}", unix_now())).await;
    }
}

impl JobLog {
    /// Ends the sections still open (innermost first), e.g. after a step was cut short.
    pub(crate) async fn end_open_sections(&self) {
        let open = std::mem::take(&mut *self.open_sections.lock().unwrap_or_else(|e| e.into_inner()));
        for name in open.iter().rev() {
            self.section_end(name).await;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Seconds as GitLab prints durations in messages (`3s`, `1m30s`, `1h0m0s`).
pub(crate) fn human(d: std::time::Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) if d.subsec_millis() > 0 && total < 10 => format!("{:.1}s", d.as_secs_f64()),
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn collect(f: impl AsyncFnOnce(&JobLog)) -> Vec<u8> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let log = JobLog::new(tx);
        f(&log).await;
        drop(log);
        let mut all = Vec::new();
        while let Some(c) = rx.recv().await {
            assert!(c.len() <= CHUNK_SIZE);
            all.extend(c);
        }
        all
    }

    #[tokio::test]
    async fn executor_lines_start_on_their_own_line() {
        let got = collect(async |log| {
            log.output(b"partial").await;
            log.warning("w").await;
            log.output(b"full\n").await;
            log.section_end("step_script").await;
        })
        .await;
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("partial\n\x1b[0;33mWARNING: w\x1b[0;m\nfull\nsection_end:"), "{text:?}");
        assert!(text.ends_with(":step_script\r\x1b[0K\n"), "{text:?}");
    }

    #[tokio::test]
    async fn large_output_is_cut_into_chunks() {
        let got = collect(async |log| log.output(&vec![b'x'; 3 * CHUNK_SIZE + 1]).await).await;
        assert_eq!(got.len(), 3 * CHUNK_SIZE + 1);
    }

    #[test]
    fn durations_read_like_gitlab() {
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(3)), "3s");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(3600)), "1h0m0s");
    }
}
