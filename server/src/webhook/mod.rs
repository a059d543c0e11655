//! Webhook intake: signature verification and payload parsing for GitHub, GitLab, Gitea/Forgejo.
//!
//! Two steps, in this order, so that nothing of an unauthenticated body is ever parsed:
//!
//! 1. [`verify`] tells the forge apart by its headers and checks the signature (GitHub's
//!    `X-Hub-Signature-256: sha256=<hex>`, Gitea's and Forgejo's bare-hex `X-Gitea-Signature` /
//!    `X-Forgejo-Signature`, both HMAC-SHA256 of the raw body) or the token (GitLab's
//!    `X-Gitlab-Token`, which must equal the secret) in constant time.
//! 2. [`parse`] reads the body into a forge-independent [`Trigger`], or `None` for an event
//!    that is acknowledged but starts nothing.
//!
//! Which events do what:
//!
//! | forge | event header | trigger | `Ok(None)` (acknowledged, ignored) |
//! |---|---|---|---|
//! | GitHub | `push` | branch or tag pushed | deletion (`after` all zeros), refs other than branches and tags |
//! | GitHub | `pull_request` | `opened`, `reopened`, `synchronize` | every other action (closed, labeled, edited, …) |
//! | GitHub | `ping` | | always |
//! | GitLab | `Push Hook`, `Tag Push Hook` | branch or tag pushed | deletion |
//! | GitLab | `Merge Request Hook` | `open`, `reopen`, `update` with `oldrev` (new commits) | `update` without `oldrev` (title, labels…), close, merge, approvals |
//! | GitLab | `System Hook` | as above, by `object_kind` | other kinds |
//! | Gitea/Forgejo | `push` | branch or tag pushed | deletion |
//! | Gitea/Forgejo | `pull_request` | `opened`, `reopened`, `synchronized` | every other action |
//!
//! Any other well-formed event name is [`WebhookError::Unsupported`] (answer 202: the forge
//! keeps the delivery green, nothing happens). `Ok(None)` should get the same 202.
//!
//! Delivery ids (for de-duplication): GitHub's `X-GitHub-Delivery` (kept across redeliveries),
//! GitLab's `Idempotency-Key` (kept across retries), else its `X-Gitlab-Event-UUID`, Forgejo's
//! `X-Forgejo-Delivery`, else Gitea's `X-Gitea-Delivery`. A forge that sends none gets
//! `sha256:<hex of the body>`, so that an identical replay is still recognised.
//!
//! Payload fields are data, never code: refs and shas are validated (`validate`), every string
//! is capped and refused when it holds a NUL byte (it would end up in an environment variable),
//! and nothing here ever reaches a shell.

mod context;
mod gitea;
mod github;
mod gitlab;
mod payload;
pub(crate) mod validate;
mod verify;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

pub use context::ProjectInfo;
pub use verify::{detect, precheck, sign, verify};

/// Largest body accepted (GitHub caps its payloads at 25 MB); larger ones are
/// [`WebhookError::TooLarge`] before any HMAC is computed.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The forge family that sent a webhook. Forgejo is a Gitea fork and speaks its dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }
}

impl std::fmt::Display for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forge::GitHub => "GitHub",
            Forge::GitLab => "GitLab",
            Forge::Gitea => "Gitea/Forgejo",
        })
    }
}

/// Why a webhook was refused or ignored. [`WebhookError::status`] gives the HTTP answer and
/// [`WebhookError::code`] a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no forge recognised: a webhook needs an `X-GitHub-Event`, `X-Gitlab-Event`, `X-Gitea-Event` or `X-Forgejo-Event` header")]
    UnknownForge,
    /// The project's secret is empty: nothing can be verified, so everything is refused.
    #[error("this project has no webhook secret: set `webhook_secret` in its `[[project]]` table")]
    NoSecret,
    #[error("missing `{header}` header: configure the {forge} webhook with this project's secret")]
    MissingSignature { forge: Forge, header: &'static str },
    #[error("the `{header}` header does not match: wrong secret, or the body was altered on the way")]
    BadSignature { forge: Forge, header: &'static str },
    #[error("the body is {size} bytes, more than the {limit} accepted")]
    TooLarge { size: usize, limit: usize },
    /// The event header is empty or not a plausible event name.
    #[error("unreadable {forge} event name `{event}`")]
    UnknownEvent { forge: Forge, event: String },
    /// A well-formed event that piste does not act on (issues, comments, releases, …).
    #[error("{forge} event `{event}` starts no pipeline; it is acknowledged and ignored")]
    Unsupported { forge: Forge, event: String },
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl WebhookError {
    /// The HTTP status to answer with: 400 for unrecognisable or malformed requests, 401 for
    /// missing or wrong signatures and tokens, 413 for oversized bodies, 202 for events that
    /// are accepted and ignored.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::UnknownForge | WebhookError::UnknownEvent { .. } | WebhookError::Malformed(_) => 400,
            WebhookError::NoSecret | WebhookError::MissingSignature { .. } | WebhookError::BadSignature { .. } => 401,
            WebhookError::TooLarge { .. } => 413,
            WebhookError::Unsupported { .. } => 202,
        }
    }

    /// Stable code for JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::UnknownForge => "webhook_unknown_forge",
            WebhookError::NoSecret => "webhook_secret_unset",
            WebhookError::MissingSignature { .. } => "webhook_missing_signature",
            WebhookError::BadSignature { .. } => "webhook_bad_signature",
            WebhookError::TooLarge { .. } => "webhook_too_large",
            WebhookError::UnknownEvent { .. } => "webhook_unknown_event",
            WebhookError::Unsupported { .. } => "webhook_event_ignored",
            WebhookError::Malformed(_) => "webhook_malformed",
        }
    }
}

/// What started a pipeline, the same for every forge. Serializable: the store keeps it as
/// JSON with the pipeline, for planning and for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub forge: Forge,
    /// The forge's delivery id, or `sha256:<hex of the body>` when it sends none.
    pub delivery_id: String,
    pub kind: TriggerKind,
    /// `refs/heads/x`, `refs/tags/v1`, `refs/merge-requests/<iid>/head` (GitLab) or
    /// `refs/pull/<n>/head` (GitHub, Gitea): the ref to fetch to get [`Trigger::sha`].
    pub git_ref: String,
    /// The commit to build (40 lowercase hex digits).
    pub sha: String,
    /// The branch's previous head; `None` for a new branch, a tag or a merge request.
    pub before_sha: Option<String>,
    /// Empty when the payload does not carry it (tags, pull requests): fill it from the
    /// mirror with [`Trigger::complete_commit`].
    pub commit_message: String,
    /// First line of `commit_message`.
    pub commit_title: String,
    pub commit_timestamp: Option<String>,
    pub author_name: String,
    pub author_email: String,
    /// Who pushed or acted on the merge request.
    pub user_login: Option<String>,
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    pub user_id: Option<u64>,
    /// Whether the forge says the ref is protected (GitLab's `ref_protected`).
    pub ref_protected: bool,
    /// Paths added, modified or removed by the push, from the payload's commit list when it is
    /// complete; `None` otherwise (new branch, tag, merge request, truncated commit list, more
    /// than [`validate::MAX_CHANGED_FILES`] paths): compute them with the mirror then.
    pub changed_files: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerKind {
    Push {
        branch: String,
    },
    Tag {
        tag: String,
        /// Annotation of the tag, when the forge sends it (GitLab).
        message: Option<String>,
    },
    MergeRequest(MergeRequestTrigger),
}

/// A merge request (GitLab) or pull request (GitHub, Gitea) that asks for a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRequestTrigger {
    /// Project-level number (GitLab's `iid`, GitHub's and Gitea's `number`).
    pub iid: u64,
    /// Instance-level id, when the forge sends one.
    pub id: Option<u64>,
    pub source_branch: String,
    pub target_branch: String,
    pub title: String,
    pub description: String,
    pub labels: Vec<String>,
    /// The forge's action word as sent (`open`, `update`, `opened`, `synchronize`, …).
    pub action: String,
    /// Head of the source branch (the commit built).
    pub source_sha: String,
    /// Head of the target branch when the payload has it (GitHub, Gitea; not GitLab).
    pub target_sha: Option<String>,
    /// `owner/name` of the source project when it is a fork.
    pub source_project_path: Option<String>,
}

/// Parses a verified body into a [`Trigger`]. Call [`verify`] first: this function trusts
/// that the body came from the forge, but still validates every field it uses.
pub fn parse(forge: Forge, headers: &HeaderMap, body: &[u8]) -> Result<Option<Trigger>, WebhookError> {
    let event = verify::event_name(forge, headers)?;
    let delivery_id = verify::delivery_id(forge, headers, body)?;
    match forge {
        Forge::GitHub => github::parse(&event, delivery_id, body),
        Forge::GitLab => gitlab::parse(&event, delivery_id, body),
        Forge::Gitea => gitea::parse(&event, delivery_id, body),
    }
}

impl Trigger {
    /// GitLab's `CI_PIPELINE_SOURCE`: `push` (branches and tags) or `merge_request_event`.
    pub fn source(&self) -> &'static str {
        self.pipeline_source().as_str()
    }

    pub fn pipeline_source(&self) -> pipeline_spec::predefined::PipelineSource {
        use pipeline_spec::predefined::PipelineSource;
        match self.kind {
            TriggerKind::MergeRequest(_) => PipelineSource::MergeRequestEvent,
            TriggerKind::Push { .. } | TriggerKind::Tag { .. } => PipelineSource::Push,
        }
    }

    /// The refspec that brings [`Trigger::sha`] into a mirror, e.g.
    /// `+refs/merge-requests/3/head:refs/merge-requests/3/head`.
    pub fn fetch_refspec(&self) -> String {
        format!("+{0}:{0}", self.git_ref)
    }

    /// Fills what the payload lacked (message, author, time) from the commit itself, as read
    /// from the mirror. Fields the payload had are kept.
    pub fn complete_commit(&mut self, commit: &crate::git::CommitInfo) {
        if self.commit_message.is_empty() {
            self.commit_message = commit.message.clone();
            self.commit_title = validate::title_of(&self.commit_message);
        }
        if self.author_name.is_empty() {
            self.author_name = commit.author_name.clone();
        }
        if self.author_email.is_empty() {
            self.author_email = commit.author_email.clone();
        }
        if self.commit_timestamp.is_none() {
            self.commit_timestamp = Some(commit.timestamp.clone());
        }
    }
}
