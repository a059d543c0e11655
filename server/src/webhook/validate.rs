//! Checks on the untrusted fields of a payload. Everything that leaves a payload goes through
//! one of these: a violation is [`WebhookError::Malformed`] naming the field, never a panic.

use super::WebhookError;

/// Longest ref accepted, in bytes (git itself has no limit; forges stop far below this).
pub const MAX_REF: usize = 1024;
/// Longest name, e-mail, login, label or title, in bytes.
pub const MAX_NAME: usize = 64 * 1024;
/// Longest commit message or merge request description, in bytes.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Most labels on a merge request.
pub const MAX_LABELS: usize = 1000;
/// Longest changed path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Most changed paths kept from a payload; beyond, `changed_files` is `None` (unknown).
pub const MAX_CHANGED_FILES: usize = 10_000;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

fn malformed(field: &str, why: impl std::fmt::Display) -> WebhookError {
    WebhookError::Malformed(format!("`{field}` {why}"))
}

/// Whether `s` is a full commit id: 40 hex digits.
pub fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Git's "no object" id, which forges send as `before` of a new ref and `after` of a deleted one.
pub fn is_zero_sha(s: &str) -> bool {
    s == ZERO_SHA
}

/// A commit id, lowercased.
pub fn sha(field: &str, s: &str) -> Result<String, WebhookError> {
    if is_sha(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(malformed(field, format_args!("is not a 40-digit hexadecimal commit id: `{}`", shorten(s))))
    }
}

/// A branch or tag name: not empty, at most [`MAX_REF`] bytes, no `..`, no control character
/// (NUL included), not starting with `-` (it could read as an option to a git command). Shell
/// metacharacters are fine: the name is data and never reaches a shell.
pub fn ref_name(field: &str, s: &str) -> Result<String, WebhookError> {
    if s.is_empty() {
        return Err(malformed(field, "is empty"));
    }
    if s.len() > MAX_REF {
        return Err(malformed(field, format_args!("is {} bytes long, more than {MAX_REF}", s.len())));
    }
    if s.contains("..") {
        return Err(malformed(field, format_args!("contains `..`: `{}`", shorten(s))));
    }
    if s.chars().any(char::is_control) {
        return Err(malformed(field, "contains a control character"));
    }
    if s.starts_with('-') {
        return Err(malformed(field, format_args!("starts with `-`: `{}`", shorten(s))));
    }
    if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
        return Err(malformed(field, format_args!("has an empty path component: `{}`", shorten(s))));
    }
    Ok(s.to_string())
}

/// A full ref (`refs/...`), checked as [`ref_name`] both whole and after its prefix.
pub fn full_ref(field: &str, s: &str) -> Result<String, WebhookError> {
    let Some(rest) = s.strip_prefix("refs/") else {
        return Err(malformed(field, format_args!("is not a full ref (`refs/...`): `{}`", shorten(s))));
    };
    ref_name(field, rest)?;
    ref_name(field, s)
}

/// Free text (messages, descriptions): at most `max` bytes, no NUL. Newlines and tabs are kept.
pub fn text(field: &str, s: &str, max: usize) -> Result<String, WebhookError> {
    if s.len() > max {
        return Err(malformed(field, format_args!("is {} bytes long, more than {max}", s.len())));
    }
    if s.contains('\0') {
        return Err(malformed(field, "contains a NUL byte"));
    }
    Ok(s.to_string())
}

/// A one-line value (names, e-mails, logins, labels, titles): [`text`] without line breaks.
pub fn line(field: &str, s: &str) -> Result<String, WebhookError> {
    let s = text(field, s, MAX_NAME)?;
    if s.contains(['\n', '\r']) {
        return Err(malformed(field, "contains a line break"));
    }
    Ok(s)
}

/// A repository path from a commit's file lists.
pub fn path(field: &str, s: &str) -> Result<String, WebhookError> {
    let s = text(field, s, MAX_PATH)?;
    if s.is_empty() {
        return Err(malformed(field, "contains an empty path"));
    }
    Ok(s)
}

/// `CI_COMMIT_TITLE`: the first line of the message.
pub fn title_of(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim_end().to_string()
}

/// A value short enough to quote in an error message.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    let clean: String = s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
    if clean.chars().count() <= MAX { clean } else { format!("{}…", clean.chars().take(MAX).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert!(ref_name("b", "feature/x").is_ok());
        assert!(ref_name("b", "$(touch /tmp/pwned)").is_ok());
        assert!(ref_name("b", "a..b").is_err());
        assert!(ref_name("b", "-x").is_err());
        assert!(ref_name("b", "a\0b").is_err());
        assert!(ref_name("b", "a\nb").is_err());
        assert!(ref_name("b", "").is_err());
        assert!(ref_name("b", &"a".repeat(MAX_REF + 1)).is_err());
        assert!(full_ref("r", "refs/heads/main").is_ok());
        assert!(full_ref("r", "refs/heads/-x").is_ok(), "only the whole name may not start with `-`");
        assert!(full_ref("r", "heads/main").is_err());
        assert!(full_ref("r", "refs/").is_err());
    }

    #[test]
    fn shas() {
        assert_eq!(sha("s", &"AB".repeat(20)).unwrap(), "ab".repeat(20));
        assert!(sha("s", "abc").is_err());
        assert!(sha("s", &"g".repeat(40)).is_err());
        assert!(is_zero_sha(ZERO_SHA));
    }

    #[test]
    fn titles() {
        assert_eq!(title_of("fix: x\n\nbody"), "fix: x");
        assert_eq!(title_of(""), "");
        assert_eq!(shorten(&"é".repeat(100)).chars().count(), 81);
    }
}
