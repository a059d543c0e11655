//! `coverage:`: the regular expression a job's log is searched with, and the search, as GitLab
//! does it (`Gitlab::Ci::Trace::Stream#extract_coverage`):
//!
//! - the keyword is written `/…/` (`Entry::Coverage` validates it as a regular expression and
//!   keeps what is between the slashes); flags are written inline (`/(?i)total.*/`);
//! - each line is scanned for every match; the fragment kept is the **last** capture of the
//!   **last** match on the line (Ruby's `line.scan(regex).flatten.last`: the match itself when
//!   the expression has no group);
//! - the coverage is the **first** number (`\d+(\.\d+)?`) of that fragment; a line whose
//!   fragment holds no number does not count;
//! - the **last** line that gives a number wins (GitLab reads the log backwards and stops at
//!   the first).
//!
//! Regular expressions run on the `regex` crate (linear time, as GitLab's RE2), with a size
//! limit; lines are cut at [`MAX_LINE`] bytes and ANSI escape sequences are removed before
//! matching, so `/^TOTAL.+ (\d+%)$/` matches a coloured line too.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// Compiled program size allowed for a `coverage:` expression.
const SIZE_LIMIT: usize = 1 << 20;
/// A longer line is searched in pieces of this many bytes (a log is untrusted input).
pub const MAX_LINE: usize = 64 * 1024;

/// A `coverage:` value that is not a usable regular expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverageError {
    #[error("`coverage` must be a regular expression between slashes, such as `/Coverage: (\\d+\\.\\d+)%/`")]
    NotSlashed,
    #[error("`coverage` is not a valid regular expression: {0}")]
    Invalid(String),
}

/// The expression between the slashes of a `coverage:` value.
pub fn pattern(written: &str) -> Result<&str, CoverageError> {
    match written.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
        Some(p) if written.len() >= 2 => Ok(p),
        _ => Err(CoverageError::NotSlashed),
    }
}

/// Compiles a `coverage:` value as written (`/…/`).
pub fn compile(written: &str) -> Result<Regex, CoverageError> {
    let pattern = pattern(written)?;
    RegexBuilder::new(pattern)
        // Ruby's `^` and `$` are line anchors; each line is searched alone.
        .multi_line(true)
        .size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| CoverageError::Invalid(first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    // The regex crate's messages draw the pattern over several lines; the last one says why.
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim().trim_start_matches("error: ").to_string()
}

/// The number one line gives, if any (see the module's rules).
pub fn in_line(regex: &Regex, line: &str) -> Option<f64> {
    static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]+(?:\.[0-9]+)?").expect("static regex"));
    let last = regex.captures_iter(line).last()?;
    // `scan(...).flatten.last`: the last group that took part, else the whole match.
    let fragment = if last.len() > 1 { last.iter().skip(1).flatten().last()?.as_str() } else { last.get(0)?.as_str() };
    NUMBER.find(fragment)?.as_str().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Searches a log as it streams: feed it bytes in any pieces, then ask [`Self::value`].
/// Memory is bounded by [`MAX_LINE`].
#[derive(Debug, Clone)]
pub struct Scanner {
    regex: Regex,
    partial: Vec<u8>,
    last: Option<f64>,
}

impl Scanner {
    pub fn new(regex: Regex) -> Scanner {
        Scanner { regex, partial: Vec::new(), last: None }
    }

    /// Feeds log bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = memchr(b'\n', bytes) {
            let room = MAX_LINE.saturating_sub(self.partial.len());
            self.partial.extend_from_slice(&bytes[..end.min(room)]);
            self.line();
            bytes = &bytes[end + 1..];
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let take = rest.len().min(room);
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() == MAX_LINE {
                self.line();
            }
        }
    }

    /// The coverage of what was fed so far (a last line without newline included).
    pub fn value(&mut self) -> Option<f64> {
        if !self.partial.is_empty() {
            self.line();
        }
        self.last
    }

    fn line(&mut self) {
        let text = String::from_utf8_lossy(&self.partial);
        let text = strip_ansi(text.trim_end_matches('\r'));
        if let Some(n) = in_line(&self.regex, &text) {
            self.last = Some(n);
        }
        self.partial.clear();
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Removes ANSI escape sequences (CSI and OSC) and the `\r`-separated prefixes GitLab's section
/// markers and progress bars leave: what a person sees of the line.
fn strip_ansi(s: &str) -> String {
    // A carriage return inside a line overwrites it: what follows the last one shows.
    let s = s.rsplit('\r').next().unwrap_or(s);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(written: &str, log: &str) -> Option<f64> {
        let mut s = Scanner::new(compile(written).unwrap());
        s.push(log.as_bytes());
        s.value()
    }

    /// GitLab's docs: "If there is more than one matched line in the job output, the last line
    /// is used"; "If there are multiple coverage numbers found in the matched fragment, the
    /// first number is used".
    #[test]
    fn the_last_matching_line_gives_the_first_number_of_its_fragment() {
        let log = "\x1b[32mCoverage: 12.5%\x1b[0m\nnoise 99\nLines covered: 80.25% (of 100)\n";
        assert_eq!(scan(r"/covered: \d+\.\d+%/", log), Some(80.25));
        assert_eq!(scan(r"/Coverage: \d+\.\d+/", log), Some(12.5));
        assert_eq!(scan(r"/nothing: \d+/", log), None);
        assert_eq!(scan(r"/Lines \w+: (\d+\.\d+)% \(of (\d+)\)/", log), Some(100.0), "the last capture: Ruby's scan.flatten.last");
        assert_eq!(scan(r"/a(\d+)/", "a1 a2 a3\n"), Some(3.0), "the last match of the line");
        assert_eq!(scan(r"/^TOTAL.+ (\d+%)$/", "TOTAL    120   12   90%\r\n"), Some(90.0), "`$` ends the line, CRLF too");
        assert_eq!(scan(r"/(?i)total: (\d+)/", "Total: 7"), Some(7.0), "inline flags; a last line without newline");
        assert_eq!(scan(r"/x: (\d*)/", "x: 5\nx: \n"), Some(5.0), "a fragment without a number does not count");
    }

    #[test]
    fn lines_are_bounded_and_pieces_join() {
        let mut s = Scanner::new(compile(r"/cov (\d+)/").unwrap());
        for piece in ["co", "v 4", "2\nco", "v 7"] {
            s.push(piece.as_bytes());
        }
        assert_eq!(s.value(), Some(7.0));
        let mut s = Scanner::new(compile(r"/cov (\d+)/").unwrap());
        s.push(&vec![b'x'; 3 * MAX_LINE]);
        s.push(b"\ncov 3\n");
        assert_eq!(s.value(), Some(3.0));
        assert!(s.partial.capacity() <= 2 * MAX_LINE);
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        assert_eq!(compile("Coverage: (\\d+)").unwrap_err(), CoverageError::NotSlashed);
        assert_eq!(compile("/").unwrap_err(), CoverageError::NotSlashed);
        let e = compile("/(unclosed/").unwrap_err().to_string();
        assert!(e.contains("not a valid regular expression") && e.contains("unclosed"), "{e}");
        let e = compile(r"/\w{1000}{1000}/").unwrap_err().to_string();
        assert!(e.contains("size limit") || e.contains("exceeds"), "{e}");
    }
}
