//! OCI images: build, push, copy, sign — in the runner process, without a daemon when the
//! Dockerfile has no `RUN`.
//!
//! # API (what the `piste/image-build@v1` and `piste/image-copy@v1` steps call)
//!
//! - [`build::build_and_push`]`(&`[`BuildRequest`]`, &LogWriter) -> Result<`[`BuildOutput`]`, `[`OciError`]`>`:
//!   parses the Dockerfile ([`dockerfile`]), assembles the image natively when it has no `RUN`
//!   ([`build`]: base fetched by digest, new layers as reproducible tar+gzip) or has the Docker
//!   Engine build it and exports it ([`engine`]), runs the leak gate ([`leak`]: nothing is sent
//!   when a masked value is in the configuration or a new layer), pushes ([`push`]) to every
//!   destination (blobs once per repository, manifest tagged per destination), then attaches
//!   the SLSA provenance and cosign signature ([`sign`]) when a key is given. The output holds
//!   the manifest digest, the references pushed and `repo@sha256:…` (`IMAGE_DIGEST`,
//!   `IMAGE_REF`).
//! - [`copy::copy`]`(&`[`CopyRequest`]`, &LogWriter) -> Result<`[`CopyOutput`]`, OciError>`:
//!   copies an image (or index) by digest to other references, mounting blobs inside a
//!   registry and streaming them between registries.
//! - [`RegistryOptions`] (credentials from a docker `config.json` such as
//!   `DOCKER_AUTH_CONFIG` and/or a user and password, a CA bundle, insecure registries) is
//!   shared by both.
//!
//! The log receives one line per blob (`uploaded`, `skipped (present)`, `mounted from …`),
//! retries, the manifest digest and each tag; never a credential.
//!
//! # Decisions
//!
//! - **Reproducible layers**: entries sorted by path, mtime = `SOURCE_DATE_EPOCH`, uid/gid 0
//!   or `--chown`, modes normalised (`0644`, or `0755` when any execute bit is set; directories
//!   `0755`; `--chmod` wins), no user or group names, gzip level 1 with a zero header mtime.
//!   The configuration's `created` and history dates are `SOURCE_DATE_EPOCH` too.
//! - **One pass per layer**: files are read once, through the leak scanner, into tar, then a
//!   SHA-256 of the tar (`diff_id`), gzip, a SHA-256 of the gzip (the digest), onto disk.
//! - **Plain HTTP** only for loopback registries and those listed as insecure, and for those
//!   only when https does not answer (as the Docker Engine does).
//! - **Auth is checked before the first byte**: every destination's session is authorized
//!   (Basic checked on `/v2/`, Bearer token fetched) before any blob is uploaded, so a wrong
//!   password fails once, clearly, and creates no tag.

pub mod auth;
pub mod build;
pub mod copy;
pub mod dockerfile;
pub mod engine;
pub mod ignore;
pub mod image;
pub mod layer;
pub mod leak;
pub mod push;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod sign;

use std::path::PathBuf;

pub use auth::{Credentials, Login};
pub use build::{BuildOutput, BuildRequest, Provenance};
pub use copy::{CopyOutput, CopyRequest};
pub use reference::Reference;
pub use registry::RegistryOptions;

/// Where the builder writes its lines.
pub type Log = crate::joblog::LogWriter;

/// Why a build, push or copy failed. Messages never hold a credential or a masked value.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("image reference `{reference}` is not valid: {reason}")]
    Reference { reference: String, reason: String },
    #[error("registry credentials: {0}")]
    Credentials(String),
    #[error(
        "registry `{registry}` refused the credentials{}: {detail}; check the user and password (or robot account) given for `{registry}`",
        user.as_ref().map(|u| format!(" of `{u}`")).unwrap_or_default()
    )]
    Unauthorized { registry: String, user: Option<String>, detail: String },
    #[error("registry `{registry}` could not {what}: HTTP {status}: {detail}")]
    Registry { registry: String, what: String, status: u16, detail: String },
    #[error("registry `{registry}`: could not {what}")]
    Http {
        registry: String,
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}", path = path.display())]
    Dockerfile { path: PathBuf, line: usize, col: usize, message: String },
    #[error("{0}")]
    Build(String),
    #[error("{0}")]
    Engine(String),
    #[error("{what}: digest mismatch: expected `{expected}`, got `{actual}`")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("the push was stopped before sending anything: {} masked value(s) found in the image: {}", findings.len(), findings.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
    Leak { findings: Vec<leak::Finding>, sarif: serde_json::Value },
    #[error("signing: {0}")]
    Sign(String),
}

/// Runs blocking work (tar, gzip, file walks) off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, OciError> + Send + 'static) -> Result<T, OciError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| OciError::Build(format!("a build task failed: {e}")))?
}
