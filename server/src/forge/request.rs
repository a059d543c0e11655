//! One commit-status request per forge, as each documents it. Pure: the poster sends what
//! [`status_request`] builds.
//!
//! - GitHub: `POST {api}/repos/{owner}/{repo}/statuses/{sha}`, JSON `state` (`pending`,
//!   `success`, `failure`, `error`), `target_url`, `description`, `context`; headers
//!   `Authorization: Bearer`, `Accept: application/vnd.github+json`, `X-GitHub-Api-Version`.
//! - GitLab: `POST {api}/projects/{id or url-encoded path}/statuses/{sha}`, JSON `state`
//!   (`pending`, `running`, `success`, `failed`, `canceled`, `skipped`), `ref`, `name`,
//!   `target_url`, `description`; header `PRIVATE-TOKEN`.
//! - Gitea / Forgejo: `POST {api}/repos/{owner}/{repo}/statuses/{sha}`, JSON `state`
//!   (`pending`, `success`, `error`, `failure`, `warning`), `target_url`, `description`,
//!   `context`; header `Authorization: token …`.

use scheduler::PipelineStatus;
use serde_json::{Value, json};

use crate::config::{ForgeConfig, ForgeKind};

/// The GitHub REST API version the requests follow.
pub const GITHUB_API_VERSION: &str = "2022-11-28";

/// What piste tells a forge about a pipeline (GitLab's commit-status names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    Skipped,
}

impl State {
    /// The state a pipeline in `status` shows on its forge; `None` for `canceling` (the
    /// `canceled` that follows is posted instead).
    pub fn of(status: PipelineStatus) -> Option<State> {
        Some(match status {
            PipelineStatus::Created
            | PipelineStatus::Pending
            | PipelineStatus::Manual
            | PipelineStatus::Scheduled
            | PipelineStatus::WaitingForResource => State::Pending,
            PipelineStatus::Running => State::Running,
            PipelineStatus::Success => State::Success,
            PipelineStatus::Failed => State::Failed,
            PipelineStatus::Canceled => State::Canceled,
            PipelineStatus::Skipped => State::Skipped,
            PipelineStatus::Canceling => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Success => "success",
            State::Failed => "failed",
            State::Canceled => "canceled",
            State::Skipped => "skipped",
        }
    }

    /// The state's name in `kind`'s API (GitHub and Gitea have no running, canceled or
    /// skipped: running is pending, canceled an error, skipped a success, said in the
    /// description).
    pub fn for_forge(self, kind: ForgeKind) -> &'static str {
        match (kind, self) {
            (ForgeKind::Gitlab, s) => s.as_str(),
            (_, State::Pending | State::Running) => "pending",
            (_, State::Success | State::Skipped) => "success",
            (_, State::Failed) => "failure",
            (_, State::Canceled) => "error",
        }
    }

    fn description(self) -> &'static str {
        match self {
            State::Pending => "The pipeline is pending",
            State::Running => "The pipeline is running",
            State::Success => "The pipeline passed",
            State::Failed => "The pipeline failed",
            State::Canceled => "The pipeline was canceled",
            State::Skipped => "The pipeline was skipped: no job to run",
        }
    }
}

/// The pipeline a status is about.
pub struct Subject<'a> {
    pub project: &'a str,
    pub sha: &'a str,
    /// The branch or tag name (GitLab's `ref`), when there is one.
    pub ref_name: Option<&'a str>,
    /// The pipeline page: `{external_url}/pipelines/{id}`.
    pub target_url: String,
}

/// A request to send: method is always POST, the body JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRequest {
    pub url: String,
    /// Header name and value; the token's header is among them (never log these).
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// The request that posts `state` for `subject` to `forge`.
pub fn status_request(forge: &ForgeConfig, subject: &Subject<'_>, state: State) -> StatusRequest {
    let api = forge.api_url.trim_end_matches('/');
    let context = forge.context.clone().unwrap_or_else(|| format!("piste/{}", subject.project));
    let state_name = state.for_forge(forge.kind);
    let json = ("Content-Type", "application/json".to_string());
    match forge.kind {
        ForgeKind::Github => StatusRequest {
            url: format!("{api}/repos/{}/statuses/{}", forge.repo, subject.sha),
            headers: vec![
                ("Authorization", format!("Bearer {}", forge.token())),
                ("Accept", "application/vnd.github+json".into()),
                ("X-GitHub-Api-Version", GITHUB_API_VERSION.into()),
                json,
            ],
            body: json!({"state": state_name, "target_url": subject.target_url, "description": state.description(), "context": context}),
        },
        ForgeKind::Gitea => StatusRequest {
            url: format!("{api}/repos/{}/statuses/{}", forge.repo, subject.sha),
            headers: vec![("Authorization", format!("token {}", forge.token())), ("Accept", "application/json".into()), json],
            body: json!({"state": state_name, "target_url": subject.target_url, "description": state.description(), "context": context}),
        },
        ForgeKind::Gitlab => {
            let mut body =
                json!({"state": state_name, "name": context, "target_url": subject.target_url, "description": state.description()});
            if let Some(r) = subject.ref_name {
                body["ref"] = Value::String(r.to_string());
            }
            StatusRequest {
                // A path's slashes are encoded: GitLab reads `group%2Fapp` as one project id.
                url: format!("{api}/projects/{}/statuses/{}", forge.repo.replace('/', "%2F"), subject.sha),
                headers: vec![("PRIVATE-TOKEN", forge.token().to_string()), json],
                body,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge(kind: &str, repo: &str) -> ForgeConfig {
        toml::from_str(&format!(
            "kind = \"{kind}\"\napi_url = \"https://forge.example/api/\"\nrepo = \"{repo}\"\ntoken = \"t0ken-value\"\n"
        ))
        .unwrap()
    }

    fn subject() -> Subject<'static> {
        Subject { project: "app", sha: "abc123", ref_name: Some("main"), target_url: "https://ci.example/pipelines/7".into() }
    }

    #[test]
    fn each_forge_gets_its_own_shape() {
        let r = status_request(&forge("github", "o/app"), &subject(), State::Running);
        assert_eq!(r.url, "https://forge.example/api/repos/o/app/statuses/abc123");
        assert_eq!(
            r.body,
            json!({"state": "pending", "target_url": "https://ci.example/pipelines/7", "description": "The pipeline is running", "context": "piste/app"})
        );
        assert!(r.headers.contains(&("Authorization", "Bearer t0ken-value".into())));
        let r = status_request(&forge("gitlab", "group/sub/app"), &subject(), State::Canceled);
        assert_eq!(r.url, "https://forge.example/api/projects/group%2Fsub%2Fapp/statuses/abc123");
        assert_eq!(r.body["state"], "canceled");
        assert_eq!(r.body["ref"], "main");
        assert_eq!(r.body["name"], "piste/app");
        assert!(r.headers.contains(&("PRIVATE-TOKEN", "t0ken-value".into())));
        let r = status_request(&forge("forgejo", "o/app"), &subject(), State::Failed);
        assert_eq!(r.body["state"], "failure");
        assert!(r.headers.contains(&("Authorization", "token t0ken-value".into())));
    }

    #[test]
    fn statuses_map_to_states() {
        assert_eq!(State::of(PipelineStatus::Created), Some(State::Pending));
        assert_eq!(State::of(PipelineStatus::Manual), Some(State::Pending));
        assert_eq!(State::of(PipelineStatus::Canceling), None);
        assert_eq!(State::Skipped.for_forge(ForgeKind::Github), "success");
        assert_eq!(State::Canceled.for_forge(ForgeKind::Gitea), "error");
        assert_eq!(State::Failed.for_forge(ForgeKind::Gitlab), "failed");
    }

    #[test]
    fn the_token_is_not_in_the_configs_debug_text() {
        let text = format!("{:?}", forge("github", "o/app"));
        assert!(!text.contains("t0ken-value"), "{text}");
    }
}
