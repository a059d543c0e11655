//! Downstream pipelines: what a `trigger:` job creates (GitLab's `Ci::Bridge` and
//! `Ci::CreateDownstreamPipelineService`, docs.gitlab.com `ci/pipelines/downstream_pipelines`).
//!
//! A child pipeline's configuration is `include: <trigger:include>`, loaded by the same loader
//! as any pipeline ([`load_child`]), with `include:artifact` served by the host from the parent's
//! artifacts ([`WithArtifacts`]). Pure: the host (`piste run`, the server) reads the files.

use crate::include::{IncludeResolver, RemoteRequest, ResolveError};
use crate::load::{LoadOptions, Loaded, load};
use crate::model::Trigger;
use crate::predefined::{Context, PipelineSource};

/// GitLab's `MAX_DESCENDANTS_DEPTH`: a parent pipeline, its children and their children; a
/// third level of child pipelines is refused.
pub const MAX_CHILD_DEPTH: usize = 2;

/// GitLab's limit on an artifact read as a child's configuration
/// (`Gitlab::Ci::ArtifactFileReader::MAX_ARCHIVE_SIZE`): 5 MB.
pub const MAX_ARTIFACT_CONFIG_BYTES: u64 = 5 * 1024 * 1024;

/// Why a downstream pipeline is not created. The trigger job fails with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownstreamError {
    /// GitLab: "reached maximum depth of child pipelines".
    #[error(
        "reached the maximum depth of child pipelines ({MAX_CHILD_DEPTH}): this pipeline is a child at depth {depth}, so its `trigger:include` jobs cannot start another level"
    )]
    TooDeep { depth: usize },
}

/// Checks that a pipeline at `depth` (0: the top, 1: a child, ...) may create a child.
pub fn check_depth(depth: usize) -> Result<(), DownstreamError> {
    if depth >= MAX_CHILD_DEPTH { Err(DownstreamError::TooDeep { depth }) } else { Ok(()) }
}

/// Loads the configuration of the child pipeline `trigger` creates. `display` names the
/// generated entry in diagnostics (say "`trigger:include` of job `deploy`"); the files it
/// includes keep their own names and positions.
pub fn load_child(display: &str, trigger: &Trigger, resolver: &dyn IncludeResolver, options: &LoadOptions) -> Loaded {
    let options = LoadOptions { child: true, ..options.clone() };
    load(display, ".gitlab-ci-child.yml", &trigger.child_config(), resolver, &options)
}

/// The context of a child pipeline of `parent`: same project, commit and ref (and merge
/// request), `CI_PIPELINE_SOURCE=parent_pipeline`, its own pipeline id.
pub fn child_context(parent: &Context, pipeline_id: u64) -> Context {
    Context { source: PipelineSource::ParentPipeline, pipeline_id, pipeline_name: None, ..parent.clone() }
}

/// A resolver that also reads files from the parent's artifacts (`include:artifact`).
pub struct WithArtifacts<'a, F> {
    pub base: &'a dyn IncludeResolver,
    /// `(job, path)` → the file's text.
    pub artifact: F,
}

impl<F> IncludeResolver for WithArtifacts<'_, F>
where
    F: Fn(&str, &str) -> Result<String, ResolveError>,
{
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        self.base.read(project, path, git_ref)
    }

    fn glob(&self, project: Option<&str>, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        self.base.glob(project, pattern, git_ref)
    }

    fn remote(&self, request: &RemoteRequest<'_>) -> Result<String, ResolveError> {
        self.base.remote(request)
    }

    fn template(&self, name: &str) -> Result<String, ResolveError> {
        self.base.template(name)
    }

    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, ResolveError> {
        self.base.tags(project)
    }

    fn commit(&self, project: Option<&str>, git_ref: &str) -> Result<String, ResolveError> {
        self.base.commit(project, git_ref)
    }

    fn artifact(&self, job: &str, path: &str) -> Result<String, ResolveError> {
        (self.artifact)(job, path)
    }

    fn component_host(&self, host: &str) -> bool {
        self.base.component_host(host)
    }
}
