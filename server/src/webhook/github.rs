//! GitHub's `push` and `pull_request` events (and `ping`). Gitea's pull requests share the
//! pull request shape and are read here too.

use serde::Deserialize;

use super::payload::{self, CommitData, MergeRequestData, PushData, UserData, nullable};
use super::{Forge, Trigger, WebhookError};

/// The source project of a pull request whose fork was deleted (GitHub sends no head repo).
pub(crate) const DELETED_FORK: &str = "(deleted fork)";

/// GitHub caps the `commits` array of a push at 2048 entries: a full array may be truncated.
const MAX_PUSH_COMMITS: usize = 2048;

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<Commit>,
    #[serde(default)]
    head_commit: Option<Commit>,
    #[serde(default)]
    pusher: Option<Pusher>,
    #[serde(default)]
    sender: Option<Account>,
}

#[derive(Deserialize)]
pub(super) struct Commit {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    message: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    author: Option<Person>,
    #[serde(default)]
    added: Option<Vec<String>>,
    #[serde(default)]
    removed: Option<Vec<String>>,
    #[serde(default)]
    modified: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub(super) struct Person {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    email: String,
}

#[derive(Deserialize)]
struct Pusher {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// A user account (`sender`, pull request `user`); Gitea also fills `username`, `full_name`
/// and `email`.
#[derive(Deserialize)]
pub(super) struct Account {
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

impl Commit {
    pub(super) fn data(self) -> CommitData {
        let files = match (self.added, self.removed, self.modified) {
            (Some(a), Some(r), Some(m)) => Some(a.into_iter().chain(r).chain(m).collect()),
            _ => None,
        };
        let (author_name, author_email) = self.author.map(|a| (a.name, a.email)).unwrap_or_default();
        CommitData { id: self.id, message: self.message, timestamp: self.timestamp, author_name, author_email, files }
    }
}

pub(super) fn parse(event: &str, delivery_id: String, body: &[u8]) -> Result<Option<Trigger>, WebhookError> {
    let forge = Forge::GitHub;
    match event {
        "push" => {
            let p: Push = payload::json(forge, event, body)?;
            let complete = p.commits.len() < MAX_PUSH_COMMITS;
            let user = UserData {
                login: p.sender.as_ref().and_then(|s| s.login.clone()).or_else(|| p.pusher.as_ref().and_then(|p| p.name.clone())),
                name: p.pusher.as_ref().and_then(|p| p.name.clone()),
                email: p.pusher.as_ref().and_then(|p| p.email.clone()),
                id: p.sender.as_ref().and_then(|s| s.id),
            };
            let data = PushData {
                git_ref: p.git_ref,
                before: p.before,
                after: p.after,
                deleted: p.deleted,
                commits: p.commits.into_iter().map(Commit::data).collect(),
                head_commit: p.head_commit.map(Commit::data),
                complete,
                tag_message: None,
                user,
                ref_protected: false,
            };
            payload::push(forge, delivery_id, data)
        }
        "pull_request" => pull_request(forge, event, delivery_id, body, &["opened", "reopened", "synchronize"]),
        "ping" => Ok(None),
        _ => Err(WebhookError::Unsupported { forge, event: event.to_string() }),
    }
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: u64,
    pull_request: PullRequest,
    #[serde(default)]
    sender: Option<Account>,
}

#[derive(Deserialize)]
struct PullRequest {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    title: String,
    #[serde(default, deserialize_with = "nullable")]
    body: String,
    #[serde(default, deserialize_with = "nullable")]
    labels: Vec<Label>,
    head: Branch,
    base: Branch,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    #[serde(default)]
    repo: Option<Repo>,
}

#[derive(Deserialize)]
struct Repo {
    #[serde(default)]
    full_name: Option<String>,
}

/// A GitHub or Gitea pull request event; `actions` are those that ask for a pipeline.
pub(super) fn pull_request(
    forge: Forge,
    event: &str,
    delivery_id: String,
    body: &[u8],
    actions: &[&str],
) -> Result<Option<Trigger>, WebhookError> {
    let e: PullRequestEvent = payload::json(forge, event, body)?;
    if !actions.contains(&e.action.as_str()) {
        return Ok(None);
    }
    let pr = e.pull_request;
    let head_repo = pr.head.repo.and_then(|r| r.full_name);
    let base_repo = pr.base.repo.and_then(|r| r.full_name);
    // A fork when the head repository differs from the base one. A deleted fork has a null
    // `head.repo`: it is still someone else's code, so it counts as a fork (no secrets).
    let source_project_path = match (head_repo, base_repo) {
        (Some(h), Some(b)) if h == b => None,
        (Some(h), _) => Some(h),
        (None, _) => Some(DELETED_FORK.to_owned()),
    };
    let user = e.sender.map(|s| UserData { login: s.login, name: s.full_name, email: s.email, id: s.id }).unwrap_or_default();
    let data = MergeRequestData {
        iid: e.number,
        id: pr.id,
        git_ref: format!("refs/pull/{}/head", e.number),
        source_branch: pr.head.git_ref,
        target_branch: pr.base.git_ref,
        title: pr.title,
        description: pr.body,
        labels: pr.labels.into_iter().map(|l| l.name).collect(),
        action: e.action,
        source_sha: pr.head.sha,
        target_sha: Some(pr.base.sha),
        source_project_path,
        commit: None,
        user,
    };
    payload::merge_request(forge, delivery_id, data)
}
