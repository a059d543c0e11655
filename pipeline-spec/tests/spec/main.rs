//! Behaviour of the loader and planner, one module per topic, all through the public API.

mod components;
mod diagnostics;
mod extends;
mod gitlab_rules;
mod id_tokens;
mod includes;
mod inputs;
mod keywords;
mod limits;
mod needs;
mod rules;
mod trigger;
mod validated;

use pipeline_spec::load::{LoadOptions, Loaded, MemoryResolver, load};
use pipeline_spec::plan::{Plan, PlanContext, PlanError, plan};
use pipeline_spec::predefined::{Context, MergeRequest, PipelineSource};
use pipeline_spec::render;

/// The trigger a test plans for. Default: a push to `main`, the default branch.
#[derive(Clone, Default)]
pub struct Trigger {
    pub branch: Option<&'static str>,
    pub tag: Option<&'static str>,
    pub source: Option<PipelineSource>,
    pub mr: bool,
    pub vars: Vec<(&'static str, &'static str)>,
    pub changed: Option<Vec<&'static str>>,
}

impl Trigger {
    pub fn branch(b: &'static str) -> Trigger {
        Trigger { branch: Some(b), ..Trigger::default() }
    }
    pub fn tag(t: &'static str) -> Trigger {
        Trigger { tag: Some(t), ..Trigger::default() }
    }
    pub fn merge_request() -> Trigger {
        Trigger { mr: true, source: Some(PipelineSource::MergeRequestEvent), ..Trigger::default() }
    }
    pub fn source(s: PipelineSource) -> Trigger {
        Trigger { source: Some(s), ..Trigger::default() }
    }

    pub fn context(&self) -> Context {
        let mut c = Context {
            project_path: "group/app".into(),
            commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
            ..Context::default()
        };
        c.branch = Some(self.branch.unwrap_or("main").to_string());
        if let Some(t) = self.tag {
            c.tag = Some(t.to_string());
            c.branch = None;
        }
        if let Some(s) = self.source {
            c.source = s;
        }
        if self.mr {
            c.merge_request =
                Some(MergeRequest { iid: 7, source_branch: "feature".into(), target_branch: "main".into(), ..MergeRequest::default() });
        }
        c
    }
}

pub fn resolver(files: &[(&str, &str)]) -> MemoryResolver {
    let mut r = MemoryResolver::new();
    for (path, text) in files {
        match path.split_once(':') {
            Some((project, p)) => r.add(Some(project), p, text),
            None => r.add(None, path, text),
        }
    }
    r
}

pub fn load_with(main: &str, files: &[(&str, &str)], vars: &[(&str, &str)]) -> Loaded {
    let opts = LoadOptions { variables: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..LoadOptions::default() };
    load(".gitlab-ci.yml", ".gitlab-ci.yml", main, &resolver(files), &opts)
}

pub fn load_main(main: &str) -> Loaded {
    load_with(main, &[], &[])
}

/// Rendered diagnostics, one per line (`FILE:LINE:COL: severity: ...`).
pub fn diagnostics(loaded: &Loaded) -> String {
    loaded.diagnostics.iter().map(|d| d.display(&loaded.sources).to_string()).collect::<Vec<_>>().join("\n")
}

/// Asserts the file loads without errors and plans for `trigger`.
pub fn plan_for(main: &str, files: &[(&str, &str)], trigger: &Trigger) -> Plan {
    let loaded = load_with(main, files, &[]);
    assert!(!loaded.has_errors(), "unexpected errors:\n{}", diagnostics(&loaded));
    let pipeline = loaded.pipeline.expect("pipeline");
    let exists = |g: &pipeline_spec::glob::Glob| ["Dockerfile", "src/main.rs", "docs/index.md"].iter().any(|f| g.matches(f));
    let ctx = PlanContext {
        predefined: trigger.context().pipeline_variables(),
        pipeline_vars: trigger.vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        changed_files: trigger.changed.as_ref().map(|c| c.iter().map(|s| s.to_string()).collect()),
        exists: Some(&exists),
        compare: None,
    };
    match plan(&pipeline, &ctx) {
        Ok(p) => p,
        Err(PlanError::Filtered { .. }) => {
            Plan { name: None, stages: vec![], jobs: vec![], variables: vec![], auto_cancel: Default::default() }
        }
        Err(PlanError::Invalid(d)) => panic!("plan errors: {d:?}"),
    }
}

/// Plan errors, rendered.
pub fn plan_errors(main: &str, trigger: &Trigger) -> String {
    let loaded = load_main(main);
    assert!(!loaded.has_errors(), "unexpected load errors:\n{}", diagnostics(&loaded));
    let pipeline = loaded.pipeline.as_ref().expect("pipeline");
    let ctx = PlanContext { predefined: trigger.context().pipeline_variables(), ..PlanContext::default() };
    match plan(pipeline, &ctx) {
        Err(PlanError::Invalid(d)) => d.iter().map(|d| d.display(&loaded.sources).to_string()).collect::<Vec<_>>().join("\n"),
        Ok(_) => panic!("expected plan errors"),
        Err(PlanError::Filtered { .. }) => panic!("expected plan errors, got a filtered pipeline"),
    }
}

/// The `piste jobs` table of a plan.
pub fn table(main: &str, trigger: &Trigger) -> String {
    render::jobs_table(&plan_for(main, &[], trigger))
}

/// Job names of a plan, in order.
pub fn names(main: &str, trigger: &Trigger) -> Vec<String> {
    plan_for(main, &[], trigger).jobs.into_iter().map(|j| j.name).collect()
}

/// Asserts that loading reports an error containing `needle` at `line:col`.
#[track_caller]
pub fn assert_error(loaded: &Loaded, line: u32, col: u32, needle: &str) {
    let found =
        loaded.errors().any(|d| d.span.line == line && d.span.col == col && d.display(&loaded.sources).to_string().contains(needle));
    assert!(found, "no error at {line}:{col} containing {needle:?}; got:\n{}", diagnostics(loaded));
}
