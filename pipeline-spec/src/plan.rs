//! Planning: which jobs a given trigger creates, and in which order they may run.
//!
//! Steps, in GitLab's order: `workflow:rules` decide whether there is a pipeline at all (and may
//! set variables); `parallel` jobs are expanded into their instances; each instance's
//! `rules` (or `only`/`except`) decide whether it exists and with which `when`/`allow_failure`;
//! `needs` are then resolved against the jobs that exist; finally the DAG is checked for cycles.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use serde::Serialize;

use crate::diag::{Diagnostic, suggest};
use crate::expand::{Lookup, expand_keep_unknown};
use crate::glob::Glob;
use crate::model::{AllowFailure, CrossNeed, Job, Need, Parallel, Pipeline, Policy, Rule, When};
use crate::source::Span;

/// What planning needs to know about the trigger, beyond the predefined variables.
#[derive(Default)]
pub struct PlanContext<'a> {
    /// Predefined `CI_*` variables of the pipeline (lowest precedence).
    pub predefined: Vec<(String, String)>,
    /// Variables given for this pipeline (`--var`, trigger or project variables): highest precedence.
    pub pipeline_vars: Vec<(String, String)>,
    /// Files changed by the push or merge request; `None` when unknown, and then
    /// `changes` is true, as GitLab does for pipelines without push information.
    pub changed_files: Option<Vec<String>>,
    /// Answers `rules:exists`: does a file matching this glob exist in the repository?
    pub exists: Option<&'a (dyn Fn(&Glob) -> bool + Sync)>,
    /// Answers `rules:changes:compare_to`: the files changed between the merge base of this ref
    /// (a branch, a tag or a commit) and the pipeline's commit, as GitLab computes them
    /// (`Ci::Pipeline#modified_paths_since`). `None`: the changes are unknown and match, as
    /// without push information.
    pub compare: Option<&'a CompareTo<'a>>,
}

/// What answers `rules:changes:compare_to` (see [`PlanContext::compare`]).
pub type CompareTo<'a> = dyn Fn(&str) -> Compared + Sync + 'a;

/// The answer for one `compare_to` ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// The paths changed since the merge base.
    Changes(Vec<String>),
    /// Not known (too many changes, unrelated histories): `changes` match.
    Unknown,
    /// No branch, tag or commit of that name: an error, as in GitLab ("rules:changes:compare_to
    /// is not a valid ref").
    NotARef,
}

impl PlanContext<'_> {
    fn predefined(&self, name: &str) -> Option<&str> {
        self.predefined.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedNeed {
    pub job: String,
    pub artifacts: bool,
    pub optional: bool,
}

/// One job instance that will exist in the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedJob {
    /// Unique name: `test`, `test 2/3`, `build: [aws, eu]`.
    pub name: String,
    /// The job key it comes from in the configuration.
    pub base: String,
    pub stage: String,
    pub stage_index: usize,
    pub when: When,
    pub start_in: Option<u64>,
    pub allow_failure: AllowFailure,
    /// `None`: stage ordering; `Some(vec![])`: starts at once.
    pub needs: Option<Vec<PlannedNeed>>,
    pub dependencies: Option<Vec<String>>,
    /// Variables this instance adds on top of the job's: matrix values, `rules:variables`.
    pub variables: Vec<(String, String)>,
    /// `CI_NODE_INDEX` / `CI_NODE_TOTAL` for parallel jobs.
    pub node: Option<(u32, u32)>,
    pub interruptible: bool,
    /// `resource_group:` with the job's variables expanded (GitLab expands the key), if set.
    pub resource_group: Option<String>,
    /// `needs:pipeline:job` and `needs:project`: jobs of other pipelines whose artifacts and
    /// dotenv variables it receives after its own dependencies' (GitLab's
    /// `Ci::BuildDependencies#all`: local, then cross-pipeline, then cross-project).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cross_needs: Vec<CrossNeed>,
}

/// The plan: stages that have jobs, and the jobs in definition order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: Option<String>,
    pub stages: Vec<String>,
    pub jobs: Vec<PlannedJob>,
    /// Variables set by the matching `workflow:rules` entry.
    pub variables: Vec<(String, String)>,
    /// `workflow:auto_cancel`, overridden key by key by the matching rule's `auto_cancel`.
    pub auto_cancel: PlanAutoCancel,
}

/// The pipeline's auto-cancel settings, GitLab's defaults filled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PlanAutoCancel {
    pub on_new_commit: crate::model::OnNewCommit,
    pub on_job_failure: crate::model::OnJobFailure,
}

/// Why there is no plan.
#[derive(Debug, Clone)]
pub enum PlanError {
    /// `workflow:rules` did not create a pipeline for this trigger (not an error in GitLab terms).
    Filtered { span: Span },
    /// Problems with the configuration for this trigger.
    Invalid(Vec<Diagnostic>),
}

/// Precedence layers, highest first, looked up without copying any variable.
struct Vars<'a> {
    layers: Vec<&'a dyn Lookup>,
}

impl Lookup for Vars<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.layers.iter().find_map(|l| l.lookup(name))
    }
}

/// A job's own `variables:`.
struct JobVars<'a>(&'a [crate::model::Variable]);

impl Lookup for JobVars<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|v| v.name == name).map(|v| v.value.as_str())
    }
}

/// What `rules` see of the job itself: `CI_JOB_NAME`, `CI_JOB_STAGE`, `CI_NODE_*` (GitLab makes
/// these available to `rules:if`; job-only values such as `CI_JOB_ID` are not).
struct JobMeta<'a> {
    name: &'a str,
    stage: &'a str,
    node: Option<(String, String)>,
    /// `CI_ENVIRONMENT_NAME/ACTION/TIER/URL` of a job with `environment:` (GitLab's
    /// `Variables::Builder#predefined_variables(job, environment)`; the slug is job-only).
    environment: Vec<(String, String)>,
}

impl Lookup for JobMeta<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        match name {
            "CI_JOB_NAME" => Some(self.name),
            "CI_JOB_STAGE" => Some(self.stage),
            "CI_NODE_INDEX" => self.node.as_ref().map(|(i, _)| i.as_str()),
            "CI_NODE_TOTAL" => Some(self.node.as_ref().map_or("1", |(_, t)| t.as_str())),
            _ => self.environment.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()),
        }
    }
}

/// Global variables as a job sees them through `inherit:variables`.
struct Inherited<'a> {
    globals: &'a [(String, String)],
    only: Option<&'a [String]>,
}

impl Lookup for Inherited<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        if self.only.is_some_and(|l| !l.iter().any(|n| n == name)) {
            return None;
        }
        self.globals.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

pub fn plan(p: &Pipeline, ctx: &PlanContext) -> Result<Plan, PlanError> {
    let mut diags = Vec::new();
    let rule_errors = RuleErrors::default();
    let globals: Vec<(String, String)> = p.variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect();

    // workflow:rules
    let mut workflow_vars: Vec<(String, String)> = Vec::new();
    let own = p.workflow.as_ref().map(|w| w.auto_cancel).unwrap_or_default();
    let mut auto_cancel =
        PlanAutoCancel { on_new_commit: own.on_new_commit.unwrap_or_default(), on_job_failure: own.on_job_failure.unwrap_or_default() };
    if let Some(rules) = p.workflow.as_ref().and_then(|w| w.rules.as_ref()) {
        let vars = Vars { layers: vec![&ctx.pipeline_vars, &globals, &ctx.predefined] };
        let matched = first_match(rules, &vars, ctx, &rule_errors);
        if !rule_errors.borrow().is_empty() {
            return Err(PlanError::Invalid(rule_errors.take()));
        }
        match matched {
            Some(rule) if rule.when != Some(When::Never) => {
                workflow_vars = rule.variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
                // `workflow:rules:auto_cancel` overrides `workflow:auto_cancel` (GitLab 16.8+).
                if let Some(v) = rule.auto_cancel.on_new_commit {
                    auto_cancel.on_new_commit = v;
                }
                if let Some(v) = rule.auto_cancel.on_job_failure {
                    auto_cancel.on_job_failure = v;
                }
            }
            Some(rule) => return Err(PlanError::Filtered { span: rule.span }),
            None => return Err(PlanError::Filtered { span: p.workflow.as_ref().map_or_else(Span::default, |w| w.span) }),
        }
    }

    let stage_pos: HashMap<&str, usize> = p.stages.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let mut jobs: Vec<PlannedJob> = Vec::new();
    // Instances of each base job that exist, for `needs` resolution.
    let mut instances: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut all_instance_names: HashMap<&str, Vec<InstanceVars>> = HashMap::new();
    // Each instance's needs, with its matrix values for `$[[ matrix.KEY ]]`.
    let mut raw_needs: Vec<(Option<Vec<Need>>, InstanceMatrix)> = Vec::new();
    for job in p.jobs.values() {
        let expanded = expand_parallel(job);
        all_instance_names.insert(job.name.as_str(), expanded.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect());
        for (name, matrix_vars, node) in expanded {
            let job_vars = JobVars(&job.variables);
            let inherited = Inherited { globals: &globals, only: job.inherit_variables.as_deref() };
            let mut meta = JobMeta {
                name: &name,
                stage: &job.stage,
                node: node.map(|(i, t)| (i.to_string(), t.to_string())),
                environment: Vec::new(),
            };
            if let Some(env) = &job.environment {
                // The name and URL expanded with what the job sees, as GitLab's `Seed::Environment`.
                let vars =
                    Vars { layers: vec![&ctx.pipeline_vars, &matrix_vars, &job_vars, &workflow_vars, &inherited, &meta, &ctx.predefined] };
                let env_name = crate::expand::expand(&env.name, &vars);
                let url = env.url.as_ref().map(|u| crate::expand::expand(u, &vars));
                let all = crate::predefined::environment_variables(
                    &env_name,
                    url.as_deref(),
                    env.action.as_deref(),
                    env.deployment_tier.as_deref(),
                );
                meta.environment = all.into_iter().filter(|(k, _)| k != "CI_ENVIRONMENT_SLUG").collect();
            }
            let vars =
                Vars { layers: vec![&ctx.pipeline_vars, &matrix_vars, &job_vars, &workflow_vars, &inherited, &meta, &ctx.predefined] };
            let Some(outcome) = evaluate_job(job, &vars, ctx, &rule_errors) else { continue };
            let mut variables = matrix_vars.clone();
            variables.extend(outcome.variables);
            // GitLab expands the key with the job's variables (`Ci::Processable#resource_group_key`
            // through `ExpandVariables`); rule variables count, as they are the job's.
            let resource_group = job.resource_group.as_ref().map(|rg| {
                let own = &variables;
                let vars = Vars { layers: vec![&ctx.pipeline_vars, own, &job_vars, &workflow_vars, &inherited, &meta, &ctx.predefined] };
                crate::expand::expand(rg, &vars)
            });
            let idx = jobs.len();
            instances.entry(job.name.as_str()).or_default().push(idx);
            jobs.push(PlannedJob {
                name,
                base: job.name.clone(),
                stage: job.stage.clone(),
                stage_index: stage_pos.get(job.stage.as_str()).copied().unwrap_or(0),
                when: outcome.when,
                start_in: outcome.start_in,
                allow_failure: outcome.allow_failure,
                needs: None,
                dependencies: None,
                variables,
                node,
                interruptible: outcome.interruptible,
                resource_group,
                cross_needs: Vec::new(),
            });
            // needs are resolved below, once every job's existence is known.
            raw_needs.push((outcome.needs, matrix_vars));
        }
    }

    for (i, (needs, own_matrix)) in raw_needs.into_iter().enumerate() {
        let Some(needs) = needs else { continue };
        let mut resolved = Vec::new();
        for need in needs {
            if let Some(from) = need.cross {
                jobs[i].cross_needs.push(CrossNeed { job: need.job, from, artifacts: need.artifacts });
                continue;
            }
            // A need may name one instance of a parallel job: keep only that instance.
            let (base, instance) = match instances.contains_key(need.job.as_str()) || p.jobs.contains_key(&need.job) {
                true => (need.job.as_str(), None),
                false => match instance_of(&p.jobs, &need.job) {
                    Some(j) => (j.name.as_str(), Some(need.job.as_str())),
                    None => (need.job.as_str(), None),
                },
            };
            let Some(idxs) = instances.get(base).filter(|idxs| instance.is_none_or(|n| idxs.iter().any(|&j| jobs[j].name == n))) else {
                if !need.optional {
                    diags.push(
                        Diagnostic::error(
                            need.span,
                            format!("`needs` refers to `{}`, which is not in the pipeline for this trigger", need.job),
                        )
                        .job(jobs[i].name.clone())
                        .key("needs")
                        .help("its `rules`/`only`/`except` excluded it: add `optional: true` to the need, or align the rules"),
                    );
                }
                continue;
            };
            let wanted: Option<HashSet<String>> = need.matrix.as_ref().map(|mx| {
                let (mx, unknown) = with_own_matrix(mx, &own_matrix);
                for key in unknown {
                    diags.push(
                        Diagnostic::error(
                            need.span,
                            format!("`$[[ matrix.{key} ]]`: `{key}` is not a variable of this job's `parallel:matrix`"),
                        )
                        .job(jobs[i].name.clone())
                        .key("needs:parallel:matrix")
                        .help("a matrix expression names one of the needing job's own matrix variables"),
                    );
                }
                matrix_instance_names(&mx, &all_instance_names[base])
            });
            let mut found = false;
            for &j in idxs {
                if wanted.as_ref().is_none_or(|w| w.contains(&jobs[j].name)) && instance.is_none_or(|n| jobs[j].name == n) {
                    resolved.push(PlannedNeed { job: jobs[j].name.clone(), artifacts: need.artifacts, optional: need.optional });
                    found = true;
                }
            }
            if !found && !need.optional {
                diags.push(
                    Diagnostic::error(need.span, format!("`needs:parallel:matrix` of `{}` selects no existing instance", need.job))
                        .job(jobs[i].name.clone())
                        .key("needs"),
                );
            }
        }
        jobs[i].needs = Some(resolved);
    }
    let planned = &jobs;
    let deps: Vec<Option<Vec<String>>> = jobs
        .iter()
        .map(|pj| {
            p.jobs[pj.base.as_str()].dependencies.as_ref().map(|deps| {
                deps.iter()
                    .flat_map(|(d, _)| {
                        let (base, instance) = match instance_of(&p.jobs, d) {
                            Some(j) if !p.jobs.contains_key(d) => (j.name.as_str(), Some(d.as_str())),
                            _ => (d.as_str(), None),
                        };
                        instances.get(base).into_iter().flatten().filter(move |&&j| instance.is_none_or(|n| planned[j].name == n))
                    })
                    .map(|&j| planned[j].name.clone())
                    .collect()
            })
        })
        .collect();
    for (pj, d) in jobs.iter_mut().zip(deps) {
        pj.dependencies = d;
    }

    if let Some(cycle) = find_cycle(&jobs) {
        let first = &jobs[cycle[0]];
        let span = p.jobs[first.base.as_str()].span;
        let chain: Vec<&str> = cycle.iter().map(|&i| jobs[i].name.as_str()).chain([first.name.as_str()]).collect();
        diags.push(Diagnostic::error(span, format!("`needs` form a cycle: {}", chain.join(" → "))).job(first.name.clone()).key("needs"));
    }

    diags.extend(rule_errors.take());
    if diags.iter().any(Diagnostic::is_error) {
        return Err(PlanError::Invalid(diags));
    }

    // Keep only stages that have jobs, and renumber.
    let used: HashSet<usize> = jobs.iter().map(|j| j.stage_index).collect();
    let mut remap = vec![usize::MAX; p.stages.len()];
    let mut stages = Vec::new();
    for (i, s) in p.stages.iter().enumerate() {
        if used.contains(&i) {
            remap[i] = stages.len();
            stages.push(s.clone());
        }
    }
    for j in &mut jobs {
        j.stage_index = remap[j.stage_index];
    }
    let name = p.workflow.as_ref().and_then(|w| w.name.as_ref()).map(|n| {
        let vars = Vars { layers: vec![&ctx.pipeline_vars, &workflow_vars, &globals, &ctx.predefined] };
        crate::expand::expand(n, &vars)
    });
    Ok(Plan { name, stages, jobs, variables: workflow_vars, auto_cancel })
}

struct Outcome {
    when: When,
    start_in: Option<u64>,
    allow_failure: AllowFailure,
    variables: Vec<(String, String)>,
    needs: Option<Vec<Need>>,
    interruptible: bool,
}

fn evaluate_job(job: &Job, vars: &dyn Lookup, ctx: &PlanContext, errors: &RuleErrors) -> Option<Outcome> {
    if let Some(rules) = &job.rules {
        let rule = first_match(rules, vars, ctx, errors)?;
        let when = rule.when.unwrap_or(job.when);
        if when == When::Never {
            return None;
        }
        let allow_failure =
            rule.allow_failure.clone().or_else(|| job.allow_failure.clone()).unwrap_or(AllowFailure::Bool(job.when == When::Manual));
        return Some(Outcome {
            when,
            start_in: rule.start_in.or(job.start_in),
            allow_failure,
            variables: rule.variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect(),
            needs: rule.needs.clone().or_else(|| job.needs.clone()),
            interruptible: rule.interruptible.unwrap_or(job.interruptible),
        });
    }
    let only_default = Policy { refs: Some(vec!["branches".into(), "tags".into()]), ..Policy::default() };
    let only = job.only.as_ref().unwrap_or(&only_default);
    if !policy_matches(only, vars, ctx) {
        return None;
    }
    if let Some(except) = &job.except {
        if policy_excludes(except, vars, ctx) {
            return None;
        }
    }
    if job.when == When::Never {
        return None;
    }
    Some(Outcome {
        when: job.when,
        start_in: job.start_in,
        allow_failure: job.effective_allow_failure(),
        variables: Vec::new(),
        needs: job.needs.clone(),
        interruptible: job.interruptible,
    })
}

/// Errors found while evaluating rules (a `compare_to` that names nothing).
type RuleErrors = std::cell::RefCell<Vec<Diagnostic>>;

fn first_match<'r>(rules: &'r [Rule], vars: &dyn Lookup, ctx: &PlanContext, errors: &RuleErrors) -> Option<&'r Rule> {
    rules.iter().find(|r| rule_matches(r, vars, ctx, errors))
}

fn rule_matches(rule: &Rule, vars: &dyn Lookup, ctx: &PlanContext, errors: &RuleErrors) -> bool {
    if let Some(cond) = &rule.if_ {
        if !cond.expr.eval(vars) {
            return false;
        }
    }
    if let Some(changes) = &rule.changes {
        let matched = match (&rule.compare_to, ctx.compare) {
            (Some(to), Some(compare)) => {
                let to = expand_keep_unknown(to, vars);
                match compare(&to) {
                    Compared::Changes(changed) => files_match(changes, vars, Some(&changed)),
                    Compared::Unknown => true,
                    Compared::NotARef => {
                        errors.borrow_mut().push(
                            Diagnostic::error(rule.span, format!("`rules:changes:compare_to` `{to}` is not a valid ref"))
                                .key("rules")
                                .help("name a branch, a tag or a commit of the repository (fetch it if this clone lacks it)"),
                        );
                        false
                    }
                }
            }
            _ => changes_match(changes, vars, ctx),
        };
        if !matched {
            return false;
        }
    }
    if let Some(exists) = &rule.exists {
        let Some(check) = ctx.exists else { return false };
        let any = exists.iter().any(|p| Glob::new(&expand_keep_unknown(p, vars)).is_some_and(|g| check(&g)));
        if !any {
            return false;
        }
    }
    true
}

fn changes_match(patterns: &[String], vars: &dyn Lookup, ctx: &PlanContext) -> bool {
    files_match(patterns, vars, ctx.changed_files.as_deref())
}

/// Whether a changed file matches a pattern; unknown changes (`None`) match.
fn files_match(patterns: &[String], vars: &dyn Lookup, changed: Option<&[String]>) -> bool {
    let Some(changed) = changed else { return true };
    let globs: Vec<Glob> = patterns.iter().filter_map(|p| Glob::new(&expand_keep_unknown(p, vars))).collect();
    changed.iter().any(|f| globs.iter().any(|g| g.matches(f)))
}

/// Which of a policy's keys (`refs`, `variables`, `changes`) hold for this pipeline; keys the
/// policy does not give are `None`. GitLab builds one specification per key given.
fn policy_specs(p: &Policy, vars: &dyn Lookup, ctx: &PlanContext) -> [Option<bool>; 3] {
    [
        p.refs.as_ref().map(|refs| refs.iter().any(|r| ref_matches(r, ctx))),
        (!p.variables.is_empty()).then(|| p.variables.iter().any(|c| c.expr.eval(vars))),
        (!p.changes.is_empty()).then(|| changes_match(&p.changes, vars, ctx)),
    ]
}

/// `only`: every key given must hold (GitLab's `all_of_only?`).
fn policy_matches(p: &Policy, vars: &dyn Lookup, ctx: &PlanContext) -> bool {
    policy_specs(p, vars, ctx).iter().all(|s| s.is_none_or(|ok| ok))
}

/// `except`: the job is excluded as soon as one key given holds (GitLab's `none_of_except?`),
/// so `except: {refs: [tags], variables: [...]}` excludes tags *and* matching variables.
fn policy_excludes(p: &Policy, vars: &dyn Lookup, ctx: &PlanContext) -> bool {
    policy_specs(p, vars, ctx).contains(&Some(true))
}

fn ref_matches(pattern: &str, ctx: &PlanContext) -> bool {
    let source = ctx.predefined("CI_PIPELINE_SOURCE").unwrap_or("push");
    let branch = ctx.predefined("CI_COMMIT_BRANCH");
    let tag = ctx.predefined("CI_COMMIT_TAG");
    let ref_name = ctx.predefined("CI_COMMIT_REF_NAME").unwrap_or("");
    let (pattern, project) = match pattern.rsplit_once('@') {
        Some((p, proj)) if !p.starts_with('/') || p.ends_with('/') => (p, Some(proj)),
        _ => (pattern, None),
    };
    if let Some(proj) = project {
        if ctx.predefined("CI_PROJECT_PATH") != Some(proj) {
            return false;
        }
    }
    let is_mr = source == "merge_request_event";
    match pattern {
        "branches" => branch.is_some() && !is_mr,
        "tags" => tag.is_some(),
        "api" => source == "api",
        "external" => source == "external",
        "pipelines" => source == "pipeline" || source == "parent_pipeline",
        "pushes" => source == "push",
        "schedules" => source == "schedule",
        "triggers" => source == "trigger",
        "web" => source == "web",
        "merge_requests" => is_mr,
        "external_pull_requests" => source == "external_pull_request_event",
        "chat" => source == "chat",
        _ => {
            if is_mr {
                return false;
            }
            if pattern.len() > 2 && pattern.starts_with('/') && pattern.rfind('/').is_some_and(|i| i > 0) {
                let end = pattern.rfind('/').unwrap_or(0);
                let flags = &pattern[end + 1..];
                let body = &pattern[1..end];
                let src = if flags.contains('i') { format!("(?i){body}") } else { body.to_string() };
                return regex::RegexBuilder::new(&src).size_limit(1 << 20).build().is_ok_and(|re| re.is_match(ref_name));
            }
            pattern == ref_name
        }
    }
}

/// One instance of a job: `(name, matrix variables, (CI_NODE_INDEX, CI_NODE_TOTAL))`.
pub type Instance = (String, Vec<(String, String)>, Option<(u32, u32)>);

/// Instances of a job, expanded from `parallel` as GitLab names them.
pub fn expand_parallel(job: &Job) -> Vec<Instance> {
    match &job.parallel {
        None => vec![(job.name.clone(), Vec::new(), None)],
        Some(Parallel::Count(n)) => (1..=*n).map(|i| (format!("{} {i}/{n}", job.name), Vec::new(), Some((i, *n)))).collect(),
        Some(Parallel::Matrix(entries)) => {
            let mut combos: Vec<Vec<(String, String)>> = Vec::new();
            for entry in entries {
                let mut acc: Vec<Vec<(String, String)>> = vec![Vec::new()];
                for (k, values) in entry {
                    let mut next = Vec::with_capacity(acc.len() * values.len());
                    for prefix in &acc {
                        for v in values {
                            let mut p = prefix.clone();
                            p.push((k.clone(), v.clone()));
                            next.push(p);
                        }
                    }
                    acc = next;
                }
                combos.extend(acc);
            }
            let total = u32::try_from(combos.len()).unwrap_or(u32::MAX);
            combos
                .into_iter()
                .enumerate()
                .map(|(i, vars)| {
                    let values: Vec<&str> = vars.iter().map(|(_, v)| v.as_str()).collect();
                    (format!("{}: [{}]", job.name, values.join(", ")), vars, Some((i as u32 + 1, total)))
                })
                .collect()
        }
    }
}

/// The job whose `parallel` instance is called `name` (`build: [aws, eu]`, `test 2/3`): GitLab
/// lets `needs` and `dependencies` name one instance of a parallel job.
pub fn instance_of<'p>(jobs: &'p IndexMap<String, Job>, name: &str) -> Option<&'p Job> {
    let mut bases: Vec<&str> = name.match_indices(": [").map(|(i, _)| &name[..i]).collect();
    if let Some((base, _)) = name.rsplit_once(' ') {
        bases.push(base);
    }
    bases.into_iter().filter_map(|b| jobs.get(b)).find(|j| j.parallel.is_some() && expand_parallel(j).iter().any(|(n, _, _)| n == name))
}

/// An instance's matrix variables, in the order of its `parallel:matrix` entry.
type InstanceMatrix = Vec<(String, String)>;

/// An instance's name and its matrix variables.
type InstanceVars = (String, InstanceMatrix);

/// The instances a `needs:parallel:matrix` selects. An entry may name only some of the
/// matrix's keys: GitLab then needs every instance with those values, whatever the others.
fn matrix_instance_names(mx: &[IndexMap<String, Vec<String>>], all: &[InstanceVars]) -> HashSet<String> {
    let mut out = HashSet::new();
    for entry in mx {
        for (name, vars) in all {
            if entry.iter().all(|(k, vals)| vars.iter().any(|(vk, vv)| vk == k && vals.contains(vv))) {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// `$[[ matrix.KEY ]]` in `needs:parallel:matrix` values is the needing instance's own value
/// of `KEY`, wherever it stands in the value (GitLab's `MatrixInterpolator`). A key the instance
/// does not have is an error ("'KEY' does not exist in matrix configuration"): returned, and
/// the text left as written.
fn with_own_matrix(mx: &[IndexMap<String, Vec<String>>], own: &[(String, String)]) -> (Vec<IndexMap<String, Vec<String>>>, Vec<String>) {
    let mut unknown = Vec::new();
    let mut substitute = |v: &String| -> String {
        let mut out = String::with_capacity(v.len());
        let mut rest = v.as_str();
        while let Some(open) = rest.find("$[[") {
            let Some(close) = rest[open..].find("]]").map(|c| open + c) else { break };
            let inner = rest[open + 3..close].trim();
            let key = inner
                .strip_prefix("matrix.")
                .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            out.push_str(&rest[..open]);
            match key.map(|k| (k, own.iter().find(|(name, _)| name == k))) {
                Some((_, Some((_, value)))) => out.push_str(value),
                Some((k, None)) => {
                    unknown.push(k.to_string());
                    out.push_str(&rest[open..close + 2]);
                }
                None => out.push_str(&rest[open..close + 2]),
            }
            rest = &rest[close + 2..];
        }
        out.push_str(rest);
        out
    };
    let mx =
        mx.iter().map(|entry| entry.iter().map(|(k, vals)| (k.clone(), vals.iter().map(&mut substitute).collect())).collect()).collect();
    (mx, unknown)
}

/// Finds a cycle through `needs` and returns the job indices on it.
fn find_cycle(jobs: &[PlannedJob]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), i)).collect();
    let edges: Vec<Vec<usize>> =
        jobs.iter().map(|j| j.needs.iter().flatten().filter_map(|n| index.get(n.job.as_str()).copied()).collect()).collect();
    // 0 = unvisited, 1 = on stack, 2 = done. Iterative DFS: no recursion on user input.
    let mut color = vec![0u8; jobs.len()];
    for start in 0..jobs.len() {
        if color[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < edges[node].len() {
                let to = edges[node][*next];
                *next += 1;
                match color[to] {
                    0 => {
                        color[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        return Some(stack[pos..].iter().map(|(n, _)| *n).collect());
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

impl Plan {
    pub fn job(&self, name: &str) -> Option<&PlannedJob> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Jobs whose artifacts (and dotenv variables) job `i` receives, as GitLab's
    /// `Ci::BuildDependencies#local` decides: `dependencies: []` gives none; otherwise the
    /// candidates are the `needs` with `artifacts: true` when the job has `needs` (even
    /// `needs: []`: GitLab schedules it as a DAG job), else every job of the earlier stages
    /// (not the same stage); and `dependencies`, when given, keeps only the candidates it
    /// names. So `needs: []` with `dependencies: [build]` starts at once and receives nothing,
    /// and `needs: [{job: X, artifacts: false}]` receives nothing from X whatever
    /// `dependencies` says.
    pub fn artifact_sources(&self, i: usize) -> Vec<String> {
        let job = &self.jobs[i];
        if job.dependencies.as_ref().is_some_and(Vec::is_empty) {
            return Vec::new();
        }
        let candidates: Vec<String> = match &job.needs {
            Some(needs) => needs.iter().filter(|n| n.artifacts).map(|n| n.job.clone()).collect(),
            None => self.jobs.iter().filter(|j| j.stage_index < job.stage_index).map(|j| j.name.clone()).collect(),
        };
        match &job.dependencies {
            Some(deps) => candidates.into_iter().filter(|c| deps.contains(c)).collect(),
            None => candidates,
        }
    }

    /// Jobs that must finish before job `i` may start: its needs, or every job of earlier stages.
    pub fn predecessors(&self, i: usize) -> Vec<usize> {
        let job = &self.jobs[i];
        match &job.needs {
            Some(needs) => needs.iter().filter_map(|n| self.jobs.iter().position(|j| j.name == n.job)).collect(),
            None => self.jobs.iter().enumerate().filter(|(_, j)| j.stage_index < job.stage_index).map(|(k, _)| k).collect(),
        }
    }

    /// The longest chain of jobs, weighting each job by `weight(i)` (1 for a count of jobs,
    /// or a duration). Runs in O(jobs + needs): stage edges use a running maximum per stage.
    pub fn critical_path(&self, weight: impl Fn(usize) -> u64) -> (u64, Vec<usize>) {
        let n = self.jobs.len();
        if n == 0 {
            return (0, Vec::new());
        }
        let index: HashMap<&str, usize> = self.jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), i)).collect();
        let mut dist = vec![0u64; n];
        let mut prev: Vec<Option<usize>> = vec![None; n];
        let stages = self.stages.len().max(1);
        // best[s] = (distance, job) of the longest chain ending in a stage < s.
        let mut best_before: Vec<Option<(u64, usize)>> = vec![None; stages + 1];
        let mut by_stage: Vec<Vec<usize>> = vec![Vec::new(); stages];
        for (i, j) in self.jobs.iter().enumerate() {
            by_stage[j.stage_index.min(stages - 1)].push(i);
        }
        let mut running: Option<(u64, usize)> = None;
        for (s, members) in by_stage.iter().enumerate() {
            best_before[s] = running;
            // Within a stage, needs may point at siblings: order the stage topologically.
            let order = topo_within(members, &self.jobs, &index);
            for i in order {
                let (base, from) = match &self.jobs[i].needs {
                    None => running.map_or((0, None), |(d, j)| (d, Some(j))),
                    Some(needs) => needs
                        .iter()
                        .filter_map(|nd| index.get(nd.job.as_str()).copied())
                        .map(|k| (dist[k], Some(k)))
                        .max_by_key(|(d, _)| *d)
                        .unwrap_or((0, None)),
                };
                dist[i] = base + weight(i);
                prev[i] = from;
            }
            for &i in members {
                if running.is_none_or(|(d, _)| dist[i] > d) {
                    running = Some((dist[i], i));
                }
            }
        }
        let (end, total) = dist.iter().enumerate().max_by_key(|(_, d)| **d).map(|(i, d)| (i, *d)).unwrap_or((0, 0));
        let mut path = vec![end];
        let mut cur = end;
        while let Some(p) = prev[cur] {
            path.push(p);
            cur = p;
            if path.len() > n {
                break;
            }
        }
        path.reverse();
        (total, path)
    }
}

fn topo_within(members: &[usize], jobs: &[PlannedJob], index: &HashMap<&str, usize>) -> Vec<usize> {
    let set: HashSet<usize> = members.iter().copied().collect();
    let mut done: HashSet<usize> = HashSet::new();
    let mut out = Vec::with_capacity(members.len());
    let mut remaining: Vec<usize> = members.to_vec();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|&i| {
            let ready =
                jobs[i].needs.iter().flatten().filter_map(|n| index.get(n.job.as_str())).all(|k| !set.contains(k) || done.contains(k));
            if ready {
                done.insert(i);
                out.push(i);
            }
            !ready
        });
        if remaining.len() == before {
            // A cycle (already reported): keep definition order.
            out.append(&mut remaining);
        }
    }
    out
}

/// Names of jobs in `plan` for `piste run JOB...` suggestions.
pub fn suggest_job(plan: &Plan, name: &str) -> Option<String> {
    suggest(name, plan.jobs.iter().map(|j| j.name.as_str()))
}
