//! `include:remote`: what the loader asks a resolver for, and `integrity:` checks.
//!
//! GitLab (CI YAML reference `include:remote`, `include:integrity`, `include:cache`;
//! `External::File::Remote`): the file is fetched with a GET; `integrity: sha256-<base64>`
//! is the SHA-256 of the body in Subresource Integrity form and a body that does not match is
//! an error ("failed integrity check"); `cache: true` keeps a fetched body for an hour, and
//! `cache: <duration>` for that long, by URL. Without `cache:` every pipeline fetches again.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// GitLab's `include:cache: true` time to live.
pub const DEFAULT_CACHE_SECS: u64 = 3600;

/// What the loader asks [`IncludeResolver::remote`](super::IncludeResolver::remote) for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRequest<'a> {
    /// The URL, variables expanded.
    pub url: &'a str,
    /// The body's expected digest, when the entry gives `integrity:`. The loader checks it
    /// again on whatever the resolver returns; a resolver may use it to pick a cached copy.
    pub integrity: Option<&'a Integrity>,
    /// `include:cache`: how long a fetched body may be reused, in seconds (`None`: fetch).
    pub cache_secs: Option<u64>,
}

/// `sha256-<base64>`: a SHA-256 digest in Subresource Integrity form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    digest: [u8; 32],
}

impl Integrity {
    /// Reads `sha256-<base64 of 32 bytes>`; `None` when it is anything else.
    pub fn parse(s: &str) -> Option<Integrity> {
        let b64 = s.trim().strip_prefix("sha256-")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        Some(Integrity { digest: bytes.try_into().ok()? })
    }

    /// The integrity string of `bytes`.
    pub fn of(bytes: &[u8]) -> Integrity {
        Integrity { digest: Sha256::digest(bytes).into() }
    }

    pub fn matches(&self, bytes: &[u8]) -> bool {
        Sha256::digest(bytes).as_slice() == self.digest
    }
}

impl std::fmt::Display for Integrity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256-{}", base64::engine::general_purpose::STANDARD.encode(self.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitLab compares the base64 of the body's SHA-256 with what follows `sha256-`.
    #[test]
    fn integrity_is_sri_sha256() {
        // `printf 'job: {}' | openssl dgst -sha256 -binary | base64`
        let i = Integrity::of(b"job: {}");
        let text = i.to_string();
        assert!(text.starts_with("sha256-") && text.len() == 7 + 44, "{text}");
        assert_eq!(Integrity::parse(&text), Some(i.clone()));
        assert!(i.matches(b"job: {}"));
        assert!(!i.matches(b"job: {} "));
        for bad in ["sha512-abc", "sha256-", "sha256-not base64", "sha256-YWJj", "md5-x"] {
            assert_eq!(Integrity::parse(bad), None, "{bad}");
        }
    }
}
