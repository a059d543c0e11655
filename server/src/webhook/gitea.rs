//! Gitea's and Forgejo's `push` and `pull_request` events. Their payloads follow GitHub's
//! shape with Gitea's own words (`synchronized`, `total_commits`, `full_name`).

use serde::Deserialize;

use super::github::{Account, Commit};
use super::payload::{self, PushData, UserData, nullable};
use super::{Forge, Trigger, WebhookError};

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<Commit>,
    #[serde(default)]
    head_commit: Option<Commit>,
    /// Gitea lists only the last few commits (`FEED_MAX_COMMIT_NUM`); this is the real count.
    #[serde(default)]
    total_commits: Option<u64>,
    #[serde(default)]
    pusher: Option<Account>,
    #[serde(default)]
    sender: Option<Account>,
}

pub(super) fn parse(event: &str, delivery_id: String, body: &[u8]) -> Result<Option<Trigger>, WebhookError> {
    let forge = Forge::Gitea;
    match event {
        "push" => {
            let p: Push = payload::json(forge, event, body)?;
            let complete = p.total_commits.is_some_and(|n| n == p.commits.len() as u64);
            let who = p.pusher.or(p.sender);
            let user = who.map(|u| UserData { login: u.login, name: u.full_name, email: u.email, id: u.id }).unwrap_or_default();
            let data = PushData {
                git_ref: p.git_ref,
                before: p.before,
                after: p.after,
                deleted: false,
                commits: p.commits.into_iter().map(Commit::data).collect(),
                head_commit: p.head_commit.map(Commit::data),
                complete,
                tag_message: None,
                user,
                ref_protected: false,
            };
            payload::push(forge, delivery_id, data)
        }
        // Review events arrive under other names (`pull_request_approved`, …) with the action
        // `synchronized`: only `pull_request` itself is read.
        "pull_request" => super::github::pull_request(forge, event, delivery_id, body, &["opened", "reopened", "synchronized"]),
        _ => Err(WebhookError::Unsupported { forge, event: event.to_string() }),
    }
}
