//! Git on the server: project mirrors, files at a commit, changed paths, smart HTTP for runners.
//!
//! * [`Mirror`]: one bare repository per project under `<data_dir>/mirrors/`, fetched with
//!   git2 from the project's configured URL only (never one from a payload). Everything here
//!   is blocking: the server calls it from `spawn_blocking`.
//! * [`TreeResolver`]: the pipeline loader's [`IncludeResolver`](pipeline_spec::include::IncludeResolver),
//!   reading local includes at the pipeline's commit and `include:project` files from the
//!   other projects' mirrors.
//! * [`http`]: the CGI bridge to `git http-backend` through which runners clone, read-only.
//!
//! Every read is bounded: file size ([`MAX_FILE_BYTES`]), changed paths
//! ([`MAX_CHANGED_FILES`]), files listed for a wildcard ([`MAX_LISTED`]).
//!
//! Transports: mirrors are fetched by the `git` program ([`Remote`]), so every transport git
//! speaks works — local paths, `file://`, `git://`, `http(s)://` (credentials, a private CA)
//! and `ssh://` or `user@host:path` (a key, strict known hosts) — except `git://` and local
//! paths without credentials, which libgit2 fetches in-process (`Remote::in_process`), over
//! its socket stream of `tcp` for `git://`. libgit2 is built without TLS or ssh.

pub mod http;
mod mirror;
pub mod remote;
mod resolver;
mod tcp;

pub use mirror::Mirror;
pub use remote::Remote;
pub use resolver::TreeResolver;

/// Largest file read from a tree (pipeline files and includes; the YAML layer refuses files
/// above 2 MiB with its own message).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most changed paths between two commits before [`Mirror::changed_files`] gives up.
pub const MAX_CHANGED_FILES: usize = 50_000;
/// Most tree entries walked to expand one wildcard include or `exists` pattern.
pub const MAX_LISTED: usize = 100_000;

/// Why a git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`{0}` is not a full commit id (40 hexadecimal digits)")]
    InvalidSha(String),
    #[error("invalid path `{path}`: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("invalid ref `{0}`")]
    InvalidRef(String),
    #[error("commit {0} is not in the mirror: fetch first")]
    MissingCommit(String),
    #[error("`{path}` is {size} bytes, more than the {limit} read")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("`{0}` is not UTF-8 text")]
    NotText(String),
    #[error("`{path}` is not a regular file ({what})")]
    NotAFile { path: String, what: &'static str },
    #[error("more than {limit} files changed")]
    TooManyChanges { limit: usize },
    #[error("more than {limit} files in the tree; narrow the pattern")]
    TooManyEntries { limit: usize },
    /// `url` is redacted (no credentials); `message` is git's, redacted too.
    #[error("fetching `{url}`: {message}")]
    Fetch { url: String, message: String },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("git http-backend: {0}")]
    Backend(String),
}

/// A commit as the server shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// Author time in ISO 8601 with its offset, e.g. `2024-05-01T12:00:00+02:00`.
    pub timestamp: String,
}

/// `seconds` since the epoch at UTC offset `offset_minutes`, as ISO 8601.
pub(crate) fn iso8601(seconds: i64, offset_minutes: i32) -> String {
    let local = seconds + i64::from(offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let off = offset_minutes.unsigned_abs();
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        off / 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601() {
        assert_eq!(super::iso8601(0, 0), "1970-01-01T00:00:00+00:00");
        assert_eq!(super::iso8601(1_643_647_675, 0), "2022-01-31T16:47:55+00:00");
        assert_eq!(super::iso8601(1_643_647_675, 120), "2022-01-31T18:47:55+02:00");
        assert_eq!(super::iso8601(1_643_647_675, -330), "2022-01-31T11:17:55-05:30");
        assert_eq!(super::iso8601(951_782_400, 0), "2000-02-29T00:00:00+00:00");
    }
}
