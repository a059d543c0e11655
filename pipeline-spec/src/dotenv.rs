//! `artifacts:reports:dotenv`: the variables a job hands to later jobs, parsed as GitLab does.
//!
//! GitLab's rules (`Ci::ParseDotenvArtifactService` plus the variable model's validation), which
//! piste follows so that a report accepted here is accepted by GitLab:
//!
//! - Every line is `KEY=VALUE`, split at the **first** `=`; the value may contain more `=`.
//! - Key and value are stripped of surrounding whitespace (space, tab, CR, LF, VT, FF, NUL),
//!   so `KEY = value` and CRLF line endings work.
//! - Keys contain only ASCII letters, digits and `_` (a leading digit is accepted, as GitLab
//!   does) and are at most 255 characters.
//! - Quotes are **kept**: `A="x y"` gives the value `"x y"` with its quotes. No escapes, no
//!   `$VAR` expansion, no multi-line values.
//! - Empty lines, `#` comments and an `export ` prefix are **errors**, as on GitLab (which
//!   answers "Invalid Format" or "Key can contain only letters, digits and '_'.").
//! - The same key twice: the last value wins and the key counts once.
//! - Limits, from a self-managed GitLab's defaults (`plan_limits.dotenv_size` and
//!   `dotenv_variables`): the file must be smaller than 5 KiB and define at most 20
//!   variables. GitLab.com plans allow more variables (50 on Free); see [`DotenvLimits`].
//!   GitLab measures the gzip-compressed upload; piste measures the file itself, which is never
//!   more lenient for text files of this size.
//! - A UTF-8 byte order mark is dropped; [`parse_bytes`] also reads UTF-16 files with a byte
//!   order mark (PowerShell's `>` writes them) and replaces invalid UTF-8, as GitLab does.
//!
//! A value containing a NUL byte is refused: it cannot be passed to a process environment.

use std::fmt;

/// Bounds on a dotenv report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DotenvLimits {
    /// The file must be strictly smaller than this many bytes; default 5120.
    pub max_bytes: usize,
    /// Distinct variables allowed; default 20.
    pub max_variables: usize,
}

impl Default for DotenvLimits {
    fn default() -> DotenvLimits {
        DotenvLimits { max_bytes: 5 * 1024, max_variables: 20 }
    }
}

/// The longest key GitLab stores.
pub const MAX_KEY_LEN: usize = 255;

/// Why a dotenv report was refused. Line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvError {
    /// The file reaches [`DotenvLimits::max_bytes`].
    #[error("the dotenv report is {bytes} bytes; it must be smaller than {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    /// More distinct variables than [`DotenvLimits::max_variables`].
    #[error("line {line}: more than {limit} variables in the dotenv report; GitLab refuses the whole report")]
    TooManyVariables { line: usize, limit: usize },
    /// A line that is not a valid `KEY=VALUE`.
    #[error("line {line}: {problem}")]
    Line { line: usize, problem: LineProblem },
}

/// What is wrong with one line of a dotenv report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// A line without any character (GitLab does not skip empty lines).
    Empty,
    /// A line starting with `#` (GitLab does not support comments).
    Comment,
    /// No `=` on the line.
    MissingEquals,
    /// Nothing before the `=`.
    EmptyKey,
    /// `export KEY=VALUE`.
    ExportPrefix,
    /// A key with characters other than ASCII letters, digits and `_`.
    InvalidKey(String),
    /// A key longer than [`MAX_KEY_LEN`].
    KeyTooLong(usize),
    /// A NUL byte in the value.
    NulInValue,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::Empty => f.write_str("empty lines are not allowed in a dotenv report; remove it"),
            LineProblem::Comment => f.write_str("comments are not allowed in a dotenv report; remove the line"),
            LineProblem::MissingEquals => f.write_str("expected `KEY=VALUE`"),
            LineProblem::EmptyKey => f.write_str("missing variable name before `=`"),
            LineProblem::ExportPrefix => f.write_str("`export` is not allowed in a dotenv report; write `KEY=VALUE`"),
            LineProblem::InvalidKey(key) => {
                let shown: String = key.chars().take(64).collect();
                write!(f, "invalid variable name `{shown}`: use only ASCII letters, digits and `_`")
            }
            LineProblem::KeyTooLong(len) => write!(f, "variable name of {len} characters; at most {MAX_KEY_LEN} are allowed"),
            LineProblem::NulInValue => f.write_str("NUL byte in the value"),
        }
    }
}

/// Parses a dotenv report with the default [`DotenvLimits`].
pub fn parse(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    parse_with(text, &DotenvLimits::default())
}

/// Parses a dotenv report. Variables keep the order of their first appearance.
pub fn parse_with(text: &str, limits: &DotenvLimits) -> Result<Vec<(String, String)>, DotenvError> {
    if text.len() >= limits.max_bytes {
        return Err(DotenvError::TooLarge { bytes: text.len(), limit: limits.max_bytes });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut vars: Vec<(String, String)> = Vec::new();
    if text.is_empty() {
        return Ok(vars);
    }
    for (i, raw) in body.split('\n').enumerate() {
        let line = i + 1;
        let fail = |problem| DotenvError::Line { line, problem };
        let Some((key, value)) = raw.split_once('=') else {
            return Err(fail(match strip(raw) {
                "" => LineProblem::Empty,
                s if s.starts_with('#') => LineProblem::Comment,
                _ => LineProblem::MissingEquals,
            }));
        };
        let (key, value) = (strip(key), strip(value));
        check_key(key).map_err(fail)?;
        if value.contains('\0') {
            return Err(fail(LineProblem::NulInValue));
        }
        if let Some(existing) = vars.iter_mut().find(|(k, _)| k == key) {
            existing.1 = value.to_owned();
        } else if vars.len() == limits.max_variables {
            return Err(DotenvError::TooManyVariables { line, limit: limits.max_variables });
        } else {
            vars.push((key.to_owned(), value.to_owned()));
        }
    }
    Ok(vars)
}

/// Parses a dotenv report given as bytes: UTF-16 with a byte order mark is decoded, invalid
/// UTF-8 is replaced with U+FFFD. The size limit applies to the bytes as given.
pub fn parse_bytes(bytes: &[u8], limits: &DotenvLimits) -> Result<Vec<(String, String)>, DotenvError> {
    if bytes.len() >= limits.max_bytes {
        return Err(DotenvError::TooLarge { bytes: bytes.len(), limit: limits.max_bytes });
    }
    let decode16 = |rest: &[u8], from: fn([u8; 2]) -> u16| {
        let units = rest.chunks(2).map(|c| from([c[0], c.get(1).copied().unwrap_or(0)]));
        char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect::<String>()
    };
    let text = match bytes {
        [0xff, 0xfe, rest @ ..] => decode16(rest, u16::from_le_bytes),
        [0xfe, 0xff, rest @ ..] => decode16(rest, u16::from_be_bytes),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    // The decoded text can be longer than the bytes (U+FFFD is 3 bytes): the byte limit above
    // is the one that counts.
    parse_with(&text, &DotenvLimits { max_bytes: usize::MAX, ..*limits })
}

/// Checks variables another process read from `reports` dotenv reports (a runner's finish
/// request), with the rules and limits of [`parse`] applied to them as one report per
/// `reports`: valid keys, no NUL, no line break, at most 20 variables and 5 KiB per report.
pub fn check_received(vars: &[(String, String)], reports: usize) -> Result<(), DotenvError> {
    let reports = reports.max(1);
    let limits = DotenvLimits { max_bytes: reports * DotenvLimits::default().max_bytes, max_variables: usize::MAX };
    let mut text = String::new();
    for (k, v) in vars {
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('\n');
    }
    let parsed = parse_with(&text, &limits)?;
    let max = reports * DotenvLimits::default().max_variables;
    if parsed.len() > max {
        return Err(DotenvError::TooManyVariables { line: max + 1, limit: max });
    }
    Ok(())
}

/// Ruby's `String#strip`.
fn strip(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\0'))
}

fn check_key(key: &str) -> Result<(), LineProblem> {
    if key.is_empty() {
        return Err(LineProblem::EmptyKey);
    }
    if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return match key.len() {
            len if len > MAX_KEY_LEN => Err(LineProblem::KeyTooLong(len)),
            _ => Ok(()),
        };
    }
    if let Some(rest) = key.strip_prefix("export") {
        if rest.starts_with([' ', '\t']) {
            return Err(LineProblem::ExportPrefix);
        }
    }
    if key.starts_with('#') {
        return Err(LineProblem::Comment);
    }
    Err(LineProblem::InvalidKey(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_received_follow_the_report_rules() {
        let ok = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "x=y".to_string())];
        assert!(check_received(&ok, 1).is_ok());
        assert!(check_received(&[("A B".into(), "1".into())], 1).is_err(), "an invalid key");
        assert!(check_received(&[("A".into(), "1\nno equals".into())], 1).is_err());
        let many: Vec<(String, String)> = (0..21).map(|i| (format!("V{i}"), "x".into())).collect();
        assert!(check_received(&many, 1).is_err(), "21 variables from one report");
        assert!(check_received(&many, 2).is_ok(), "two reports may hold 40");
        assert!(check_received(&[("A".into(), "x".repeat(6000))], 1).is_err(), "5 KiB per report");
    }

    #[test]
    fn strip_matches_ruby() {
        assert_eq!(strip(" \t\r\x0b\x0c\0a b\0\r\n"), "a b");
        assert_eq!(strip(""), "");
    }

    #[test]
    fn key_rules() {
        assert_eq!(check_key("A_1"), Ok(()));
        assert_eq!(check_key("1A"), Ok(()));
        assert_eq!(check_key(""), Err(LineProblem::EmptyKey));
        assert_eq!(check_key("export A"), Err(LineProblem::ExportPrefix));
        assert_eq!(check_key("exported"), Ok(()));
        assert_eq!(check_key("#A"), Err(LineProblem::Comment));
        assert_eq!(check_key("A-B"), Err(LineProblem::InvalidKey("A-B".into())));
        assert_eq!(check_key("ÜBER"), Err(LineProblem::InvalidKey("ÜBER".into())));
        assert_eq!(check_key(&"K".repeat(256)), Err(LineProblem::KeyTooLong(256)));
        assert_eq!(check_key(&"K".repeat(255)), Ok(()));
    }
}
