//! The runner protocol: HTTP + JSON between `piste serve` and `piste runner run`, shaped after
//! what GitLab Runner proved. Both sides use these types; the paths are in [`paths`].
//!
//! ```text
//! POST /api/v1/runners                     RegisterRequest → RegisterResponse (registration token in the body)
//! POST /api/v1/jobs/request                JobRequestBody → 200 JobPayload | 204 (long poll; Bearer runner token)
//! POST /api/v1/jobs/{id}/heartbeat         → Heartbeat (Bearer job token): extends the lease, says `cancel`
//! PUT  /api/v1/jobs/{id}/log?offset=N      raw bytes → LogAck | 409 LogGap (Bearer job token)
//! POST /api/v1/jobs/{id}/artifacts         no body, header `X-Sha256` → 201 when the project already has that
//!                                          archive (recorded for the job, nothing to upload) | 404: PUT it
//! PUT  /api/v1/jobs/{id}/artifacts         tar.zst, header `X-Sha256: sha256:<hex>` → 201 (Bearer job token)
//! GET  /api/v1/jobs/{id}/artifacts/{dep}   a dependency's artifacts archive (Bearer job token of `id`)
//!
//! Archives are tar streams in zstd frames (`application/zstd`); servers may also hold
//! tar.gz archives uploaded by older runners, and readers tell the two apart by magic bytes.
//! POST /api/v1/jobs/{id}/finish            FinishRequest → 200 (Bearer job token)
//! POST /api/v1/jobs/{id}/reuse             ReuseRequest → ReuseAnswer (Bearer job token; only for a job whose
//!                                          payload has `reuse`): a hit finishes the job as reused, a miss
//!                                          keeps the key, recorded if the job then succeeds
//! GIT  /api/v1/jobs/{id}/git/...          smart HTTP, Basic `piste-ci-token:<job token>` (read-only)
//! ```
//!
//! Tokens: the runner token and job tokens are random 256-bit values, sent as bearer tokens and
//! stored only as SHA-256 hashes. A job token is valid while its job runs, for that job only.

use serde::{Deserialize, Serialize};

pub use crate::Outcome;
pub use crate::job::{ArtifactsSpec, JobSpec};
pub use pipeline_spec::model::{Image, Service};

/// Header carrying an artifact archive's digest (`sha256:<hex>`), verified by the server.
pub const SHA256_HEADER: &str = "x-sha256";
/// The user name runners use with a job token for git over HTTP (GitLab uses `gitlab-ci-token`).
pub const GIT_USER: &str = "piste-ci-token";
/// The most bytes a runner sends in one log request; the server accepts bodies of this size.
pub const MAX_LOG_CHUNK: usize = 1 << 20;

pub mod paths {
    pub const REGISTER: &str = "/api/v1/runners";
    pub const REQUEST_JOB: &str = "/api/v1/jobs/request";
    pub fn heartbeat(job: i64) -> String {
        format!("/api/v1/jobs/{job}/heartbeat")
    }
    pub fn log(job: i64, offset: u64) -> String {
        format!("/api/v1/jobs/{job}/log?offset={offset}")
    }
    pub fn artifacts(job: i64) -> String {
        format!("/api/v1/jobs/{job}/artifacts")
    }
    pub fn dependency_artifacts(job: i64, dep: i64) -> String {
        format!("/api/v1/jobs/{job}/artifacts/{dep}")
    }
    pub fn finish(job: i64) -> String {
        format!("/api/v1/jobs/{job}/finish")
    }
    pub fn reuse(job: i64) -> String {
        format!("/api/v1/jobs/{job}/reuse")
    }
    /// The job's repository over git smart HTTP (read-only, Basic auth with the job token).
    pub fn git(job: i64) -> String {
        format!("/api/v1/jobs/{job}/git")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterRequest {
    pub registration_token: String,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// A runner with tags takes jobs without tags too.
    #[serde(default)]
    pub run_untagged: bool,
    /// Only jobs of pipelines of protected refs.
    #[serde(default)]
    pub protected: bool,
    /// Only these projects' jobs (empty: every project).
    #[serde(default)]
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterResponse {
    pub id: i64,
    /// Shown once; the server keeps only its hash.
    pub token: String,
}

/// The body of a job request (long poll).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct JobRequestBody {
    /// Jobs this runner can start now (it asks for one at a time).
    pub free_slots: u32,
}

/// Everything a runner needs to run one attempt of one job: the job's one specification
/// (the same value `piste run` runs), plus what only the server knows at lease time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobPayload {
    pub job_id: i64,
    pub pipeline_id: i64,
    pub project: String,
    pub attempt: u32,
    /// Job-scoped secret for every call about this job (log, artifacts, git, finish).
    pub token: String,
    /// The runner must heartbeat before this many milliseconds pass.
    pub lease_ms: u64,
    pub git: GitSource,
    pub job: JobSpec,
    /// Job-level predefined variables (`CI_JOB_ID`, `CI_PIPELINE_*`, ...), lowest precedence.
    pub predefined: Vec<(String, String)>,
    /// Variables from the dependencies' dotenv reports, in order.
    #[serde(default)]
    pub dotenv: Vec<(String, String)>,
    /// Artifacts to download before the script, in order.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// The server's image signing key (`[signing] key_file`), for the job's
    /// `piste/image-build@v1` steps only: never a variable, never in the job's environment or
    /// files, masked in its log. Sent only to jobs that build images on protected refs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKey>,
    /// The server takes a short job's whole log in the finish report ([`FinishRequest::log`]);
    /// a runner sends it there only when this says so.
    #[serde(default)]
    pub log_in_finish: bool,
    /// The server takes part in reuse of job results for this job: the runner computes the
    /// job's key and asks (`POST /jobs/{id}/reuse`) before the script. `None`: run the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<ReuseOffer>,
}

/// What the server says about reuse when it hands out a job it may reuse (the project opted
/// in, or lets jobs opt in; no `environment`, not manual, no `run:` steps, not a fork's pipeline).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReuseOffer {
    /// The project opted in (`reuse = true` in `piste.toml`): every eligible job takes part,
    /// unless `PISTE_REUSE: "false"`. Otherwise only jobs with `PISTE_REUSE: "true"`.
    pub project: bool,
    /// The job's `rules:changes`/`only:changes` patterns as written (expanded by the runner
    /// with the job's variables): only the files they match are in the key.
    #[serde(default)]
    pub changes: Vec<String>,
}

/// The body of `POST /jobs/{id}/reuse`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReuseRequest {
    /// The job's key (`sha256:<hex>`), computed by the runner from what the job reads.
    pub key: String,
}

/// The answer to a [`ReuseRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReuseAnswer {
    /// `Some`: the job was recorded as passed with that job's artifacts, dotenv and log; the
    /// runner stops here and reports nothing more. `None`: run the job.
    pub reused_from: Option<ReusedFrom>,
}

/// Which earlier job a reused result comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReusedFrom {
    pub pipeline: u64,
    pub job_id: u64,
    pub job: String,
}

impl std::fmt::Display for ReusedFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reused from pipeline {}, job {} ({})", self.pipeline, self.job_id, self.job)
    }
}

/// A PEM private key (PKCS#8, ECDSA P-256) that images are signed with. Its `Debug` shows
/// nothing of it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SigningKey(pub String);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

impl SigningKey {
    /// What a log must never show of the key: the PEM as a whole and each of its base64 lines.
    pub fn mask_values(&self) -> Vec<String> {
        let mut out = vec![self.0.trim().to_string()];
        out.extend(self.0.lines().map(str::trim).filter(|l| l.len() >= 16 && !l.starts_with("-----")).map(str::to_string));
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GitSource {
    /// Path of the server's git endpoint for this project (see [`paths::git`]); the runner
    /// prefixes its server URL. Never a URL from a webhook payload.
    pub path: String,
    pub sha: String,
    /// `refs/heads/main`, `refs/tags/v1`, ...
    pub git_ref: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Variable {
    pub key: String,
    pub value: String,
    /// Masked: the runner masks it in the log before sending; the server masks again.
    #[serde(default)]
    pub masked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dependency {
    pub job_id: i64,
    pub name: String,
    /// `sha256:<hex>` of its artifacts archive (what the download is checked against), for
    /// the reuse key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Heartbeat answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    /// The job was canceled on the server: stop it (after_script still runs).
    pub cancel: bool,
    pub lease_ms: u64,
}

/// A log chunk was stored (or already was: repeated chunks are idempotent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogAck {
    pub next_offset: u64,
}

/// 409 answer: the chunk does not start where the log ends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogGap {
    pub code: String,
    pub message: String,
    pub expected_offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FinishRequest {
    /// How the attempt ended: the engine's own type, one for both job paths.
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// For people: why it failed.
    pub reason: Option<String>,
    /// Bytes of log the runner sent in all (the tail included); the server checks it has them.
    pub log_bytes: u64,
    /// The variables of the job's dotenv reports, read by the runner with GitLab's rules: a
    /// report is not a file of the artifacts archive (unless `paths` lists it too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dotenv: Vec<(String, String)>,
    /// The job's `coverage:` value, found in its log by the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// The whole log of an attempt that had shipped none of it when it ended (a short job),
    /// sent here instead of in an append of its own, to servers that offer it
    /// ([`JobPayload::log_in_finish`]): one request fewer per job, and on object storage the
    /// log goes straight to its final object, never through the store's chunk rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<FinishLog>,
}

/// A log sent whole with the finish report, at most [`MAX_FINISH_LOG`] bytes.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FinishLog(#[serde(with = "base64_bytes")] pub Vec<u8>);

impl std::fmt::Debug for FinishLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FinishLog({} bytes)", self.0.len())
    }
}

/// The largest log a finish report carries (a runner ships a longer one as appends anyway).
pub const MAX_FINISH_LOG: usize = 64 * 1024;

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text.len() > super::MAX_FINISH_LOG.div_ceil(3) * 4 {
            return Err(serde::de::Error::custom(format!("a finish report's log is at most {} bytes", super::MAX_FINISH_LOG)));
        }
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Every API error body: a stable machine-readable `code` and a sentence for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}
