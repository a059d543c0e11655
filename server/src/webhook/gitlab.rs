//! GitLab's `Push Hook`, `Tag Push Hook` and `Merge Request Hook` (and the same payloads sent
//! as `System Hook`, told apart by `object_kind`).

use serde::Deserialize;

use super::payload::{self, CommitData, MergeRequestData, PushData, UserData, nullable};
use super::{Forge, Trigger, WebhookError};

#[derive(Deserialize)]
struct Kind {
    #[serde(default)]
    object_kind: Option<String>,
}

#[derive(Deserialize)]
struct Push {
    object_kind: String,
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    /// The commit the ref points to; for an annotated tag `after` is the tag object. `null`
    /// when the ref was deleted.
    #[serde(default)]
    checkout_sha: Option<String>,
    /// The tag's annotation.
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    ref_protected: bool,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    user_username: Option<String>,
    #[serde(default)]
    user_email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<Commit>,
    #[serde(default)]
    total_commits_count: Option<u64>,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    message: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    author: Option<Author>,
    #[serde(default)]
    added: Option<Vec<String>>,
    #[serde(default)]
    modified: Option<Vec<String>>,
    #[serde(default)]
    removed: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Author {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    email: String,
}

impl Commit {
    fn data(self) -> CommitData {
        let files = match (self.added, self.modified, self.removed) {
            (Some(a), Some(m), Some(r)) => Some(a.into_iter().chain(m).chain(r).collect()),
            _ => None,
        };
        let (author_name, author_email) = self.author.map(|a| (a.name, a.email)).unwrap_or_default();
        CommitData { id: self.id, message: self.message, timestamp: self.timestamp, author_name, author_email, files }
    }
}

pub(super) fn parse(event: &str, delivery_id: String, body: &[u8]) -> Result<Option<Trigger>, WebhookError> {
    let forge = Forge::GitLab;
    let expected = match event {
        "Push Hook" => "push",
        "Tag Push Hook" => "tag_push",
        "Merge Request Hook" => "merge_request",
        "System Hook" => {
            let kind: Kind = payload::json(forge, event, body)?;
            match kind.object_kind.as_deref() {
                Some("push") => "push",
                Some("tag_push") => "tag_push",
                Some("merge_request") => "merge_request",
                _ => return Ok(None),
            }
        }
        _ => return Err(WebhookError::Unsupported { forge, event: event.to_string() }),
    };
    if expected == "merge_request" { merge_request(event, delivery_id, body) } else { push(event, expected, delivery_id, body) }
}

fn push(event: &str, expected: &str, delivery_id: String, body: &[u8]) -> Result<Option<Trigger>, WebhookError> {
    let p: Push = payload::json(Forge::GitLab, event, body)?;
    if p.object_kind != expected {
        return Err(WebhookError::Malformed(format!("`{event}` with `object_kind` `{}`", super::validate::shorten(&p.object_kind))));
    }
    // GitLab lists at most 20 commits; `total_commits_count` tells whether some are missing.
    let complete = p.total_commits_count.is_some_and(|n| n == p.commits.len() as u64);
    let after = p.checkout_sha.filter(|s| !s.is_empty()).unwrap_or(p.after);
    let data = PushData {
        git_ref: p.git_ref,
        before: p.before,
        after,
        deleted: false,
        commits: p.commits.into_iter().map(Commit::data).collect(),
        head_commit: None,
        complete,
        tag_message: p.message,
        user: UserData { login: p.user_username, name: p.user_name, email: p.user_email, id: p.user_id },
        ref_protected: p.ref_protected,
    };
    payload::push(Forge::GitLab, delivery_id, data)
}

#[derive(Deserialize)]
struct MergeRequestEvent {
    #[serde(default)]
    user: Option<User>,
    object_attributes: Attributes,
    #[serde(default, deserialize_with = "nullable")]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct Attributes {
    #[serde(default)]
    id: Option<u64>,
    iid: u64,
    source_branch: String,
    target_branch: String,
    #[serde(default)]
    source_project_id: Option<u64>,
    #[serde(default)]
    target_project_id: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    title: String,
    #[serde(default, deserialize_with = "nullable")]
    description: String,
    #[serde(default)]
    action: Option<String>,
    /// The previous head of the source branch: present only when commits were added.
    #[serde(default)]
    oldrev: Option<String>,
    #[serde(default)]
    last_commit: Option<Commit>,
    #[serde(default, deserialize_with = "nullable")]
    labels: Vec<Label>,
    #[serde(default)]
    source: Option<Project>,
}

#[derive(Deserialize)]
struct Label {
    title: String,
}

#[derive(Deserialize)]
struct Project {
    #[serde(default)]
    path_with_namespace: Option<String>,
}

fn merge_request(event: &str, delivery_id: String, body: &[u8]) -> Result<Option<Trigger>, WebhookError> {
    let e: MergeRequestEvent = payload::json(Forge::GitLab, event, body)?;
    let a = e.object_attributes;
    let action = a.action.unwrap_or_default();
    // GitLab runs merge request pipelines when one is opened or reopened, and when commits are
    // pushed to its source branch (`update` with `oldrev`); not for edits, approvals, closing.
    let runs = match action.as_str() {
        "open" | "reopen" => true,
        "update" => a.oldrev.as_deref().is_some_and(|r| !r.is_empty()),
        _ => false,
    };
    if !runs {
        return Ok(None);
    }
    let Some(last_commit) = a.last_commit else {
        return Err(WebhookError::Malformed("merge request without `object_attributes.last_commit`".into()));
    };
    let fork = matches!((a.source_project_id, a.target_project_id), (Some(s), Some(t)) if s != t);
    let labels = if a.labels.is_empty() { e.labels } else { a.labels };
    let user = e.user.map(|u| UserData { login: u.username, name: u.name, email: u.email, id: u.id }).unwrap_or_default();
    let commit = last_commit.data();
    let data = MergeRequestData {
        iid: a.iid,
        id: a.id,
        git_ref: format!("refs/merge-requests/{}/head", a.iid),
        source_branch: a.source_branch,
        target_branch: a.target_branch,
        title: a.title,
        description: a.description,
        labels: labels.into_iter().map(|l| l.title).collect(),
        action,
        source_sha: commit.id.clone(),
        target_sha: None,
        // A fork is a fork even when the payload omits the source project's path.
        source_project_path: fork.then(|| {
            a.source.and_then(|s| s.path_with_namespace).unwrap_or_else(|| format!("project {}", a.source_project_id.unwrap_or(0)))
        }),
        commit: Some(commit),
        user,
    };
    payload::merge_request(Forge::GitLab, delivery_id, data)
}
