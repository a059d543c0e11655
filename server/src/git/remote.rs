//! Where a mirror is fetched from, and how: the `git` program over any transport it speaks,
//! through the `git-remote` crate (shared with the runner's gitops step; see there for how
//! secrets are kept off command lines and out of messages).

pub use git_remote::{Remote, RemoteError, redact};

impl From<RemoteError> for super::GitError {
    fn from(e: RemoteError) -> super::GitError {
        super::GitError::Fetch { url: e.url, message: e.message }
    }
}
