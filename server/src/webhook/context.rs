//! From a [`Trigger`] to the predefined-variable [`Context`] a pipeline is planned with.

use pipeline_spec::predefined::{Context, MergeRequest, MergeRequestEventType, User};

use super::{Trigger, TriggerKind};

/// What the server knows of a configured project, for the `CI_PROJECT_*` and server variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInfo {
    /// `CI_PROJECT_PATH`, e.g. `group/app`.
    pub path: String,
    pub id: u64,
    /// Base URL of the piste server (`CI_SERVER_URL`).
    pub server_url: String,
    pub default_branch: String,
    /// The pipeline file, `.gitlab-ci.yml` by default.
    pub config_path: String,
    /// `private`, `internal` or `public`.
    pub visibility: String,
    /// Container registry `host[:port]`, when there is one.
    pub registry: Option<String>,
}

impl Default for ProjectInfo {
    fn default() -> Self {
        let c = Context::default();
        ProjectInfo {
            path: c.project_path,
            id: c.project_id,
            server_url: c.server_url,
            default_branch: c.default_branch,
            config_path: c.config_path,
            visibility: c.project_visibility,
            registry: None,
        }
    }
}

impl Trigger {
    /// The context of a pipeline for this trigger: project, commit, branch or tag or merge
    /// request, user. Pipeline ids, creation time and the builds directory keep
    /// [`Context::default`]'s values for the caller to set.
    pub fn context(&self, project: &ProjectInfo) -> Context {
        let mut c = Context {
            server_url: project.server_url.clone(),
            project_path: project.path.clone(),
            project_id: project.id,
            project_visibility: project.visibility.clone(),
            default_branch: project.default_branch.clone(),
            config_path: project.config_path.clone(),
            registry: project.registry.clone(),
            commit_sha: self.sha.clone(),
            before_sha: self.before_sha.clone(),
            ref_protected: self.ref_protected,
            commit_message: self.commit_message.clone(),
            commit_author_name: self.author_name.clone(),
            commit_author_email: self.author_email.clone(),
            commit_timestamp: self.commit_timestamp.clone().unwrap_or_default(),
            source: self.pipeline_source(),
            ..Context::default()
        };
        match &self.kind {
            TriggerKind::Push { branch } => c.branch = Some(branch.clone()),
            TriggerKind::Tag { tag, message } => {
                c.tag = Some(tag.clone());
                c.tag_message = message.clone().unwrap_or_default();
            }
            TriggerKind::MergeRequest(mr) => {
                c.merge_request = Some(MergeRequest {
                    iid: mr.iid,
                    id: mr.id,
                    title: mr.title.clone(),
                    description: mr.description.clone(),
                    labels: mr.labels.clone(),
                    milestone: None,
                    source_branch: mr.source_branch.clone(),
                    target_branch: mr.target_branch.clone(),
                    source_project_path: mr.source_project_path.clone(),
                    source_project_id: None,
                    // GitLab sets these two only for merged results and merge trains.
                    source_branch_sha: None,
                    target_branch_sha: None,
                    diff_base_sha: None,
                    event_type: MergeRequestEventType::Detached,
                    source_branch_protected: false,
                    target_branch_protected: false,
                    squash_on_merge: false,
                });
            }
        }
        if let Some(login) = &self.user_login {
            c.user = Some(User {
                id: self.user_id.unwrap_or(0),
                login: login.clone(),
                name: self.user_name.clone().unwrap_or_else(|| login.clone()),
                email: self.user_email.clone().unwrap_or_default(),
            });
        }
        c
    }
}
