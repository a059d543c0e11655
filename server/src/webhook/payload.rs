//! What the three forges have in common once their JSON is read: a push (branch or tag) and a
//! merge request, turned into a validated [`Trigger`].

use serde::{Deserialize, Deserializer};

use super::validate::{self, MAX_CHANGED_FILES, MAX_LABELS, MAX_MESSAGE, MAX_NAME};
use super::{Forge, MergeRequestTrigger, Trigger, TriggerKind, WebhookError};

/// Reads `null` as the default value: Go forges (Gitea) send `null` for empty lists.
pub(super) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads a JSON body into `T`; serde's message names the line and column.
pub(super) fn json<'a, T: Deserialize<'a>>(forge: Forge, event: &str, body: &'a [u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(format!("{forge} `{event}` payload: {e}")))
}

/// A commit as listed in a push payload.
#[derive(Debug, Default)]
pub(super) struct CommitData {
    pub id: String,
    pub message: String,
    pub timestamp: Option<String>,
    pub author_name: String,
    pub author_email: String,
    /// `None` when the forge did not list the files (Gitea may not).
    pub files: Option<Vec<String>>,
}

/// A push, in the forge's words.
#[derive(Debug, Default)]
pub(super) struct PushData {
    pub git_ref: String,
    pub before: String,
    /// The new head of the ref (for GitLab tags: the commit, `checkout_sha`, not the tag object).
    pub after: String,
    /// Whether the forge says the ref was deleted (besides `after` being all zeros).
    pub deleted: bool,
    pub commits: Vec<CommitData>,
    pub head_commit: Option<CommitData>,
    /// Whether `commits` lists every pushed commit (forges truncate the list).
    pub complete: bool,
    pub tag_message: Option<String>,
    pub user: UserData,
    pub ref_protected: bool,
}

#[derive(Debug, Default)]
pub(super) struct UserData {
    pub login: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub id: Option<u64>,
}

impl UserData {
    fn validated(self) -> Result<UserData, WebhookError> {
        let opt = |field: &str, v: Option<String>| v.filter(|s| !s.is_empty()).map(|s| validate::line(field, &s)).transpose();
        Ok(UserData {
            login: opt("user login", self.login)?,
            name: opt("user name", self.name)?,
            email: opt("user email", self.email)?,
            id: self.id,
        })
    }
}

/// Turns a push into a trigger; `None` for deletions and refs that are neither branches nor tags.
pub(super) fn push(forge: Forge, delivery_id: String, p: PushData) -> Result<Option<Trigger>, WebhookError> {
    let git_ref = validate::full_ref("ref", &p.git_ref)?;
    if p.deleted || validate::is_zero_sha(&p.after) {
        return Ok(None);
    }
    let mut sha = validate::sha("after", &p.after)?;
    if git_ref.starts_with("refs/tags/") {
        // For an annotated tag `after` may name the tag object; the head commit is what to build.
        if let Some(head) = p.head_commit.as_ref().filter(|h| validate::is_sha(&h.id)) {
            sha = head.id.to_ascii_lowercase();
        }
    }
    let before_sha = if validate::is_zero_sha(&p.before) || p.before.is_empty() { None } else { Some(validate::sha("before", &p.before)?) };
    let kind = if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        TriggerKind::Push { branch: validate::ref_name("branch", branch)? }
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        let message = p.tag_message.filter(|m| !m.is_empty()).map(|m| validate::text("tag message", &m, MAX_MESSAGE)).transpose()?;
        TriggerKind::Tag { tag: validate::ref_name("tag", tag)?, message }
    } else {
        return Ok(None);
    };
    let is_branch = matches!(kind, TriggerKind::Push { .. });
    let changed_files = if is_branch && before_sha.is_some() && p.complete { changed_files(&p.commits)? } else { None };
    let mut commits = p.commits;
    let head = match commits.iter().position(|c| c.id.eq_ignore_ascii_case(&sha)) {
        Some(i) => Some(commits.swap_remove(i)),
        None => p.head_commit.filter(|c| c.id.eq_ignore_ascii_case(&sha)),
    }
    .unwrap_or_default();
    let commit_message = validate::text("commit message", &head.message, MAX_MESSAGE)?;
    let user = p.user.validated()?;
    Ok(Some(Trigger {
        forge,
        delivery_id,
        kind,
        git_ref,
        sha,
        before_sha: if is_branch { before_sha } else { None },
        commit_title: validate::title_of(&commit_message),
        commit_message,
        commit_timestamp: head.timestamp.map(|t| validate::line("commit timestamp", &t)).transpose()?,
        author_name: validate::line("commit author name", &head.author_name)?,
        author_email: validate::line("commit author email", &head.author_email)?,
        user_login: user.login,
        user_name: user.name,
        user_email: user.email,
        user_id: user.id,
        ref_protected: p.ref_protected,
        changed_files,
    }))
}

/// The union of the commits' added, modified and removed paths, sorted; `None` when a commit
/// did not list its files or there are more than [`MAX_CHANGED_FILES`].
fn changed_files(commits: &[CommitData]) -> Result<Option<Vec<String>>, WebhookError> {
    let mut all = std::collections::BTreeSet::new();
    for c in commits {
        let Some(files) = &c.files else { return Ok(None) };
        for f in files {
            all.insert(validate::path("changed file", f)?);
            if all.len() > MAX_CHANGED_FILES {
                return Ok(None);
            }
        }
    }
    Ok(Some(all.into_iter().collect()))
}

/// A merge request, in the forge's words.
#[derive(Debug, Default)]
pub(super) struct MergeRequestData {
    pub iid: u64,
    pub id: Option<u64>,
    /// `refs/merge-requests/<iid>/head` or `refs/pull/<n>/head`.
    pub git_ref: String,
    pub source_branch: String,
    pub target_branch: String,
    pub title: String,
    pub description: String,
    pub labels: Vec<String>,
    pub action: String,
    pub source_sha: String,
    pub target_sha: Option<String>,
    pub source_project_path: Option<String>,
    pub commit: Option<CommitData>,
    pub user: UserData,
}

pub(super) fn merge_request(forge: Forge, delivery_id: String, m: MergeRequestData) -> Result<Option<Trigger>, WebhookError> {
    if m.labels.len() > MAX_LABELS {
        return Err(WebhookError::Malformed(format!("{} labels, more than {MAX_LABELS}", m.labels.len())));
    }
    let sha = validate::sha("source sha", &m.source_sha)?;
    let target_sha =
        m.target_sha.filter(|s| !s.is_empty() && !validate::is_zero_sha(s)).map(|s| validate::sha("target sha", &s)).transpose()?;
    let labels = m.labels.iter().map(|l| validate::line("label", l)).collect::<Result<Vec<_>, _>>()?;
    let commit = m.commit.filter(|c| c.id.eq_ignore_ascii_case(&sha)).unwrap_or_default();
    let commit_message = validate::text("commit message", &commit.message, MAX_MESSAGE)?;
    let user = m.user.validated()?;
    let mr = MergeRequestTrigger {
        iid: m.iid,
        id: m.id,
        source_branch: validate::ref_name("source branch", &m.source_branch)?,
        target_branch: validate::ref_name("target branch", &m.target_branch)?,
        title: validate::text("merge request title", &m.title, MAX_NAME)?,
        description: validate::text("merge request description", &m.description, MAX_MESSAGE)?,
        labels,
        action: validate::line("action", &m.action)?,
        source_sha: sha.clone(),
        target_sha,
        source_project_path: m.source_project_path.map(|p| validate::line("source project", &p)).transpose()?,
    };
    Ok(Some(Trigger {
        forge,
        delivery_id,
        kind: TriggerKind::MergeRequest(mr),
        git_ref: validate::full_ref("merge request ref", &m.git_ref)?,
        sha,
        before_sha: None,
        commit_title: validate::title_of(&commit_message),
        commit_message,
        commit_timestamp: commit.timestamp.map(|t| validate::line("commit timestamp", &t)).transpose()?,
        author_name: validate::line("commit author name", &commit.author_name)?,
        author_email: validate::line("commit author email", &commit.author_email)?,
        user_login: user.login,
        user_name: user.name,
        user_email: user.email,
        user_id: user.id,
        ref_protected: false,
        changed_files: None,
    }))
}
