//! The one job specification: what one job of a plan runs, built in one place from the plan and
//! read by the one job runner, whether the job runs under `piste run` or is leased to a runner
//! by `piste serve` (it travels inside [`crate::protocol::JobPayload`]).
//!
//! Variables keep their layers until the job starts, because two layers are only known then:
//! the predefined variables of the attempt (job id, runner, project dir) and the dotenv reports
//! of the jobs it depends on. [`JobSpec::variables`] then gives the final set, with GitLab's
//! precedence, in one function for both paths.

use pipeline_spec::expand::{Var, expand_all};
use pipeline_spec::model::{ArtifactsWhen, Cache, CrossNeed, CrossSource, Forward, IdToken, Image, Pipeline, Service, Step, When};
use pipeline_spec::plan::Plan;
use pipeline_spec::predefined::{Context, JobContext};
use serde::{Deserialize, Serialize};

use crate::protocol::Variable;

/// Where the runner writes the outputs of a job's built-in steps, as a dotenv report (`NAME_KEY`
/// per output): listed in the job's `artifacts:reports:dotenv`, so the outputs reach later jobs
/// the way any dotenv report does, under `piste run` and through the server.
pub const STEPS_DOTENV: &str = ".piste-steps.env";

/// How GitLab words a `missing_dependency_failure` (a job whose dependencies' artifacts cannot
/// be had does not start); piste adds which one and why.
pub const MISSING_DEPENDENCY: &str = "This job could not start because it could not retrieve the needed artifacts";

/// GitLab's default job timeout: one hour.
pub const DEFAULT_TIMEOUT_S: u64 = 3600;

/// Everything one job runs, as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The instance name (`test`, `test 2/3`, `build: [aws]`).
    pub name: String,
    pub stage: String,
    /// As written: `$VARS` in the names are expanded when the job starts, with its variables.
    pub image: Option<Image>,
    #[serde(default)]
    pub services: Vec<Service>,
    /// `before_script` + `script`, run as one shell script (empty when the job has `steps`).
    pub script: Vec<String>,
    /// `run:`: the job's steps, run in order instead of `script`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub after_script: Vec<String>,
    /// Every variable below the predefined ones, low to high precedence (later wins).
    pub variables: Vec<SpecVar>,
    pub timeout_s: u64,
    pub artifacts: Option<ArtifactsSpec>,
    #[serde(default)]
    pub cache: Vec<Cache>,
    /// Jobs whose artifacts and dotenv variables this job receives, in order.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// `CI_NODE_INDEX` / `CI_NODE_TOTAL` for `parallel` jobs.
    pub node_index: Option<(u32, u32)>,
    /// `when: manual` (or delayed): `CI_JOB_MANUAL`.
    pub manual: bool,
    /// `coverage:` as written (`/…/`): the runner searches the job's log with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
    /// `environment:`, name and URL as written: expanded with the job's variables when it
    /// starts, giving `CI_ENVIRONMENT_*` ([`JobSpec::variables`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentSpec>,
    /// `needs:pipeline:job` and `needs:project` as written: the host finds those jobs when the
    /// job starts ([`JobSpec::cross_dependencies`]) and gives their artifacts and dotenv after
    /// the local dependencies'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cross_needs: Vec<CrossNeed>,
    /// `id_tokens:` as written: a piste server signs one per entry when the job is leased and
    /// adds it as a masked [`Layer::Project`] variable; `piste run` issues none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_tokens: Vec<IdToken>,
}

/// A job's `environment:` as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    /// `start` (the default), `prepare`, `stop`, `verify`, `access`.
    #[serde(default)]
    pub action: Option<String>,
    /// `deployment_tier`; GitLab guesses one from the name when it is not set.
    #[serde(default)]
    pub tier: Option<String>,
}

/// One variable and the layer it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecVar {
    pub key: String,
    pub value: String,
    /// `expand: false`, or a secret: the value is used as written.
    pub raw: bool,
    /// Masked in every log.
    pub masked: bool,
    pub layer: Layer,
}

/// Where a variable is set, lowest precedence first. Dotenv reports of dependencies sit
/// between [`Layer::Yaml`] and [`Layer::Project`] (GitLab's documented order: predefined <
/// YAML global < YAML job < dotenv < project and group variables < pipeline variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The pipeline file: global, `workflow:rules`, job, then matrix and `rules:variables`.
    Yaml,
    /// The project's variables and secrets (piste.toml, or `--secret` locally).
    Project,
    /// Variables of this pipeline run (`--var`, a manual run's form).
    Pipeline,
}

/// `artifacts:` of a job, as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactsSpec {
    /// Expanded with the job's variables when collected.
    pub paths: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub untracked: bool,
    pub when: ArtifactsWhen,
    /// `artifacts:reports:dotenv`: archived with the artifacts and read into variables.
    #[serde(default)]
    pub dotenv: Vec<String>,
    /// `artifacts:reports:junit`: archived with the artifacts.
    #[serde(default)]
    pub junit: Vec<String>,
    /// Other reports' paths (coverage, sast, ...): archived with the artifacts.
    #[serde(default)]
    pub other_reports: Vec<String>,
}

impl ArtifactsSpec {
    /// Whether artifacts are collected after an attempt that succeeded or not.
    pub fn wanted(&self, succeeded: bool) -> bool {
        when_applies(self.when, succeeded)
    }
}

/// Why a job of the pipeline file never has its result reused, whatever its key (`None`: it
/// may be): a job with an `environment` (a deployment must happen each time it is asked for)
/// or a trigger job (it starts another pipeline). Manual jobs and jobs with `run:` steps are
/// told by their [`JobSpec`]. The one rule for `piste run` and the server.
pub fn never_reused(job: &pipeline_spec::model::Job) -> Option<&'static str> {
    if job.environment.is_some() {
        return Some("a job with an environment");
    }
    if job.trigger.is_some() {
        return Some("a trigger job");
    }
    // What another pipeline left is not part of the key: a reused result could hide it.
    if job.needs.iter().flatten().any(|n| n.cross.is_some() && n.artifacts) {
        return Some("a job with `needs:pipeline` or `needs:project`");
    }
    None
}

/// The job's `rules:changes` and `only:changes` patterns as written, sorted, without repeats:
/// when a job declares some, only the files they match are in its reuse key.
pub fn change_patterns(job: &pipeline_spec::model::Job) -> Vec<String> {
    let rules = job.rules.iter().flatten().filter_map(|r| r.changes.as_ref()).flatten();
    let only = job.only.iter().flat_map(|p| &p.changes);
    let mut out: Vec<String> = rules.chain(only).cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// `artifacts:when` / `cache:when` for an attempt that succeeded or failed.
pub fn when_applies(when: ArtifactsWhen, succeeded: bool) -> bool {
    match when {
        ArtifactsWhen::OnSuccess => succeeded,
        ArtifactsWhen::OnFailure => !succeeded,
        ArtifactsWhen::Always => true,
    }
}

/// Builds the specification of plan job `index`. `outer` are the variables from outside the
/// pipeline file ([`Layer::Project`] and [`Layer::Pipeline`]); `None` when the plan names a job
/// the pipeline does not define (a plan from another pipeline).
pub fn job_spec(plan: &Plan, pipeline: &Pipeline, index: usize, outer: &[SpecVar]) -> Option<JobSpec> {
    let pj = plan.jobs.get(index)?;
    let job = pipeline.jobs.get(&pj.base)?;
    let yaml = |key: &str, value: &str, raw: bool| SpecVar { key: key.into(), value: value.into(), raw, masked: false, layer: Layer::Yaml };
    let inherit = |name: &str| job.inherit_variables.as_ref().is_none_or(|only| only.iter().any(|n| n == name));
    let mut variables: Vec<SpecVar> = Vec::new();
    variables.extend(pipeline.variables.iter().filter(|v| inherit(&v.name)).map(|v| yaml(&v.name, &v.value, !v.expand)));
    variables.extend(plan.variables.iter().map(|(k, v)| yaml(k, v, false)));
    variables.extend(job.variables.iter().map(|v| yaml(&v.name, &v.value, !v.expand)));
    variables.extend(pj.variables.iter().map(|(k, v)| yaml(k, v, false)));
    let mut outer = outer.to_vec();
    outer.sort_by_key(|v| v.layer); // stable: each layer keeps its order
    variables.extend(outer);
    let mut artifacts = job.artifacts.as_ref().map(|a| ArtifactsSpec {
        paths: a.paths.clone(),
        exclude: a.exclude.clone(),
        untracked: a.untracked,
        when: a.when,
        dotenv: a.reports.dotenv.clone(),
        junit: a.reports.junit.clone(),
        other_reports: a.reports.other.iter().flat_map(|(_, paths)| paths.iter().cloned()).collect(),
    });
    // Built-in steps' outputs travel as a dotenv report (see [`STEPS_DOTENV`]).
    if job.steps.iter().any(|s| s.builtin().is_some()) {
        let a = artifacts.get_or_insert_with(|| ArtifactsSpec {
            paths: Vec::new(),
            exclude: Vec::new(),
            untracked: false,
            when: ArtifactsWhen::OnSuccess,
            dotenv: Vec::new(),
            junit: Vec::new(),
            other_reports: Vec::new(),
        });
        a.dotenv.push(STEPS_DOTENV.to_string());
    }
    let script = if job.steps.is_empty() { job.before_script.iter().chain(&job.script).cloned().collect() } else { Vec::new() };
    Some(JobSpec {
        name: pj.name.clone(),
        stage: pj.stage.clone(),
        image: job.image.clone(),
        services: job.services.clone(),
        script,
        steps: job.steps.clone(),
        after_script: job.after_script.clone(),
        variables,
        timeout_s: job.timeout.unwrap_or(DEFAULT_TIMEOUT_S),
        artifacts,
        cache: job.cache.clone(),
        dependencies: plan.artifact_sources(index),
        node_index: pj.node,
        manual: matches!(pj.when, When::Manual),
        coverage: job.coverage.clone(),
        environment: job.environment.as_ref().map(|e| EnvironmentSpec {
            name: e.name.clone(),
            url: e.url.clone(),
            action: e.action.clone(),
            tier: e.deployment_tier.clone(),
        }),
        cross_needs: pj.cross_needs.clone(),
        id_tokens: job.id_tokens.clone(),
    })
}

impl JobSpec {
    /// The job-level predefined variables of attempt `job_id` (`CI_JOB_*`, `CI_NODE_*`, and the
    /// pipeline's `CI_*` from `ctx`).
    pub fn predefined(&self, ctx: &Context, job_id: u64) -> Vec<(String, String)> {
        let jctx = JobContext {
            name: &self.name,
            stage: &self.stage,
            job_id,
            node_index: self.node_index.map(|(i, _)| i),
            node_total: self.node_index.map_or(0, |(_, t)| t),
            manual: self.manual,
            environment: None,
            image: self.image.as_ref().map(|i| i.name.as_str()),
            timeout_secs: Some(self.timeout_s),
            started_at: None,
        };
        ctx.job_variables(&jctx)
    }

    /// The final variables of an attempt, expanded, in GitLab's precedence: `predefined` (with
    /// what only the runner knows, such as `CI_PROJECT_DIR`) < the pipeline file < `dotenv` of
    /// dependencies < project variables and secrets < pipeline variables. The one place where
    /// precedence is decided, for `piste run` and for server runners alike.
    ///
    /// A job with `environment:` gets `CI_ENVIRONMENT_NAME/SLUG/URL/ACTION/TIER` among the
    /// predefined variables, its name and URL expanded with the job's other variables (not the
    /// dependencies' dotenv, which GitLab does not have when it creates the job), as GitLab's
    /// `Seed::Environment` does.
    pub fn variables(&self, predefined: &[(String, String)], dotenv: &[(String, String)]) -> Vec<Variable> {
        let Some(env) = &self.environment else { return self.layered(predefined, dotenv) };
        let first: Vec<(String, String)> = self.layered(predefined, &[]).into_iter().map(|v| (v.key, v.value)).collect();
        let name = pipeline_spec::expand::expand(&env.name, &first);
        let url = env.url.as_ref().map(|u| pipeline_spec::expand::expand(u, &first));
        let mut with_env = predefined.to_vec();
        with_env.extend(pipeline_spec::predefined::environment_variables(
            &name,
            url.as_deref(),
            env.action.as_deref(),
            env.tier.as_deref(),
        ));
        self.layered(&with_env, dotenv)
    }

    fn layered(&self, predefined: &[(String, String)], dotenv: &[(String, String)]) -> Vec<Variable> {
        // Predefined values are data (a commit message, a branch, an author from the payload):
        // kept as written, as GitLab does; YAML variables referring to them still get them.
        let mut list: Vec<Var> = predefined.iter().map(|(k, v)| Var::raw(k, v)).collect();
        let var = |v: &SpecVar| if v.raw { Var::raw(&v.key, &v.value) } else { Var::new(&v.key, &v.value) };
        let (yaml, outer): (Vec<&SpecVar>, Vec<&SpecVar>) = self.variables.iter().partition(|v| v.layer == Layer::Yaml);
        list.extend(yaml.into_iter().map(var));
        list.extend(dotenv.iter().map(|(k, v)| Var::raw(k, v)));
        list.extend(outer.into_iter().map(var));
        let masked: std::collections::HashSet<&str> = self.variables.iter().filter(|v| v.masked).map(|v| v.key.as_str()).collect();
        expand_all(&list).into_iter().map(|(key, value)| Variable { masked: masked.contains(key.as_str()), key, value }).collect()
    }

    /// The variables a trigger job passes to its downstream pipeline, which become that
    /// pipeline's variables (GitLab's `Ci::Bridge#downstream_variables`): with
    /// `forward:yaml_variables` (default) its YAML variables — global ones it inherits and its
    /// own — expanded in this pipeline; with `forward:pipeline_variables` the variables given to
    /// this pipeline ([`Layer::Pipeline`]). Project variables and secrets are not passed.
    pub fn downstream_variables(&self, predefined: &[(String, String)], forward: Forward) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        if forward.yaml_variables {
            let mut list: Vec<Var> = predefined.iter().map(|(k, v)| Var::raw(k, v)).collect();
            let yaml: Vec<&SpecVar> = self.variables.iter().filter(|v| v.layer == Layer::Yaml).collect();
            list.extend(yaml.iter().map(|v| if v.raw { Var::raw(&v.key, &v.value) } else { Var::new(&v.key, &v.value) }));
            let keys: std::collections::HashSet<&str> = yaml.iter().map(|v| v.key.as_str()).collect();
            out.extend(expand_all(&list).into_iter().filter(|(k, _)| keys.contains(k.as_str())));
        }
        if forward.pipeline_variables {
            for v in self.variables.iter().filter(|v| v.layer == Layer::Pipeline) {
                out.retain(|(k, _)| *k != v.key);
                out.push((v.key.clone(), v.value.clone()));
            }
        }
        out
    }

    /// The jobs of other pipelines whose artifacts and dotenv this attempt receives: the
    /// `cross_needs` with `artifacts: true`, `pipeline`, `project`, `ref` and `job` expanded with
    /// the job's variables without the dependencies' dotenv (GitLab's
    /// `simple_variables_without_dependencies`). `artifacts: false` entries require nothing.
    pub fn cross_dependencies(&self, predefined: &[(String, String)]) -> Vec<CrossNeed> {
        if !self.cross_needs.iter().any(|n| n.artifacts) {
            return Vec::new();
        }
        let vars: Vec<(String, String)> = self.variables(predefined, &[]).into_iter().map(|v| (v.key, v.value)).collect();
        let x = |s: &str| pipeline_spec::expand::expand(s, &vars);
        self.cross_needs
            .iter()
            .filter(|n| n.artifacts)
            .map(|n| CrossNeed {
                job: x(&n.job),
                from: match &n.from {
                    CrossSource::Pipeline { pipeline } => CrossSource::Pipeline { pipeline: x(pipeline) },
                    CrossSource::Project { project, git_ref } => CrossSource::Project { project: x(project), git_ref: x(git_ref) },
                },
                artifacts: true,
            })
            .collect()
    }

    /// Adds variables from outside the pipeline file (say secrets, known only when the job is
    /// leased) at their layer's place: after the variables of the same or a lower layer.
    pub fn add_outer(&mut self, vars: impl IntoIterator<Item = SpecVar>) {
        for v in vars {
            let at = self.variables.iter().position(|w| w.layer > v.layer).unwrap_or(self.variables.len());
            self.variables.insert(at, v);
        }
    }

    /// Values to mask in this job's log: its masked variables (secrets), each in the forms a
    /// script most easily prints it in ([`mask_forms`]).
    pub fn masked_values(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.variables.iter().filter(|v| v.masked && !v.value.is_empty()).flat_map(|v| mask_forms(&v.value)).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A secret as written, base64-encoded (standard and URL-safe alphabets, with and without
/// padding: `printf %s "$TOKEN" | base64` once put a token in a log) and percent-encoded (as in
/// a URL or a form body).
pub fn mask_forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = value.as_bytes();
    let mut forms = vec![value.to_owned()];
    forms.extend([STANDARD.encode(bytes), STANDARD_NO_PAD.encode(bytes), URL_SAFE.encode(bytes), URL_SAFE_NO_PAD.encode(bytes)]);
    let percent: String = bytes
        .iter()
        .map(|&b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    forms.push(percent);
    forms.sort();
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use pipeline_spec::load::{LoadOptions, MemoryResolver, load};
    use pipeline_spec::plan::{PlanContext, plan};

    use super::*;

    fn spec_of(yaml: &str, job: &str, outer: &[SpecVar]) -> JobSpec {
        let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", yaml, &MemoryResolver::default(), &LoadOptions::default());
        let pipeline = loaded.pipeline.expect("loads");
        let ctx = PlanContext { predefined: vec![("CI_COMMIT_BRANCH".into(), "main".into())], ..PlanContext::default() };
        let plan = plan(&pipeline, &ctx).expect("plans");
        let index = plan.jobs.iter().position(|j| j.name == job).expect("planned");
        job_spec(&plan, &pipeline, index, outer).expect("spec")
    }

    fn outer(key: &str, value: &str, layer: Layer) -> SpecVar {
        SpecVar { key: key.into(), value: value.into(), raw: layer == Layer::Project, masked: layer == Layer::Project, layer }
    }

    fn get<'a>(vars: &'a [Variable], key: &str) -> Option<&'a str> {
        vars.iter().find(|v| v.key == key).map(|v| v.value.as_str())
    }

    /// GitLab (`trigger:forward`, docs "Pass CI/CD variables to a downstream pipeline"): by
    /// default the trigger job's YAML variables (global ones it inherits and its own, expanded
    /// upstream) pass down, pipeline variables do not; `pipeline_variables: true` adds them;
    /// `yaml_variables: false` drops the YAML ones. Project variables never pass.
    #[test]
    fn trigger_forward_passes_yaml_variables_by_default_and_pipeline_variables_on_request() {
        let yaml = "variables: {G: global, REF: $CI_COMMIT_SHA}
bridge:
  variables: {J: job-$G}
  trigger: {include: c.yml}
";
        let spec = spec_of(yaml, "bridge", &[outer("SECRET", "s3cr3t-value", Layer::Project), outer("RUN", "given", Layer::Pipeline)]);
        let predefined = vec![("CI_COMMIT_SHA".to_string(), "abc123".to_string())];
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            sorted(spec.downstream_variables(&predefined, Forward::default())),
            [pair("G", "global"), pair("J", "job-global"), pair("REF", "abc123")]
        );
        let both = Forward { yaml_variables: true, pipeline_variables: true };
        assert_eq!(
            sorted(spec.downstream_variables(&predefined, both)),
            [pair("G", "global"), pair("J", "job-global"), pair("REF", "abc123"), pair("RUN", "given")]
        );
        let none = Forward { yaml_variables: false, pipeline_variables: false };
        assert!(spec.downstream_variables(&predefined, none).is_empty());
        let inherit_none =
            "variables: {G: global}\nbridge:\n  inherit: {variables: false}\n  variables: {J: j}\n  trigger: {include: c.yml}\n";
        let spec = spec_of(inherit_none, "bridge", &[]);
        assert_eq!(spec.downstream_variables(&[], Forward::default()), [pair("J", "j")], "`inherit:variables: false` keeps globals back");
    }

    /// GitLab's precedence (docs, "CI/CD variable precedence"): pipeline variables > project
    /// variables > dotenv > job YAML > global YAML > predefined.
    #[test]
    fn precedence_is_gitlabs() {
        let yaml = "variables: {A: global, B: global, C: global, D: global, E: global}\n\
                    job:\n  variables: {B: job, C: job, D: job, E: job}\n  script: [make]\n";
        let spec = spec_of(
            yaml,
            "job",
            &[outer("D", "project", Layer::Project), outer("E", "project", Layer::Project), outer("E", "run", Layer::Pipeline)],
        );
        let predefined = vec![("A".to_string(), "predefined".to_string()), ("CI_JOB_NAME".to_string(), "job".to_string())];
        let vars = spec.variables(&predefined, &[("C".into(), "dotenv".into()), ("D".into(), "dotenv".into())]);
        assert_eq!(get(&vars, "A"), Some("global"));
        assert_eq!(get(&vars, "B"), Some("job"));
        assert_eq!(get(&vars, "C"), Some("dotenv"));
        assert_eq!(get(&vars, "D"), Some("project"));
        assert_eq!(get(&vars, "E"), Some("run"));
        assert_eq!(get(&vars, "CI_JOB_NAME"), Some("job"));
        assert!(vars.iter().find(|v| v.key == "D").unwrap().masked, "project secrets stay masked");
    }

    /// Predefined values come from a webhook payload (commit message, branch, author): GitLab
    /// keeps them as written, so a `$NAME` in them is text, never a secret's value.
    #[test]
    fn predefined_values_are_never_expanded() {
        let spec = spec_of("job:\n  script: [make]\n", "job", &[outer("DEPLOY_TOKEN", "tok-123456-secret", Layer::Project)]);
        let message = "fix: print $DEPLOY_TOKEN and ${HOME} %PATH% $$";
        let predefined = vec![("CI_COMMIT_MESSAGE".to_string(), message.to_string())];
        let vars = spec.variables(&predefined, &[]);
        assert_eq!(get(&vars, "CI_COMMIT_MESSAGE"), Some(message));
    }

    #[test]
    fn secrets_are_masked_in_the_forms_scripts_print_them() {
        let forms = mask_forms("s3cr3t/token+x");
        for form in ["s3cr3t/token+x", "czNjcjN0L3Rva2VuK3g=", "czNjcjN0L3Rva2VuK3g", "czNjcjN0L3Rva2VuK3g=", "s3cr3t%2Ftoken%2Bx"] {
            assert!(forms.iter().any(|f| f == form), "{form} in {forms:?}");
        }
    }

    #[test]
    fn yaml_variables_expand_predefined_ones_and_raw_ones_stay_as_written() {
        let yaml = "job:\n  variables:\n    DIR: $CI_PROJECT_DIR/out\n    LITERAL: {value: '$HOME', expand: false}\n  script: [make]\n";
        let spec = spec_of(yaml, "job", &[]);
        let vars = spec.variables(&[("CI_PROJECT_DIR".into(), "/builds/app".into())], &[]);
        assert_eq!(get(&vars, "DIR"), Some("/builds/app/out"));
        assert_eq!(get(&vars, "LITERAL"), Some("$HOME"));
    }

    /// GitLab: `CI_ENVIRONMENT_NAME` is the name with variables expanded, `_SLUG` GitLab's
    /// slug of it, `_URL` the expanded URL, `_ACTION` `start` by default, `_TIER` the
    /// `deployment_tier` or GitLab's guess; YAML variables may use them.
    #[test]
    fn environment_variables_are_expanded_from_the_jobs_variables() {
        let yaml = "deploy:\n  variables:\n    HOST: $CI_ENVIRONMENT_SLUG.example.test\n  environment:\n    name: review/$CI_COMMIT_REF_NAME\n    \
                    url: https://$CI_COMMIT_REF_NAME.example.test\n  script: [make]\nplain:\n  script: [make]\n";
        let spec = spec_of(yaml, "deploy", &[]);
        let vars = spec.variables(&[("CI_COMMIT_REF_NAME".into(), "Feature/X".into())], &[]);
        let slug = pipeline_spec::predefined::environment_slug("review/Feature/X");
        assert_eq!(get(&vars, "CI_ENVIRONMENT_NAME"), Some("review/Feature/X"));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_SLUG"), Some(slug.as_str()));
        assert!(slug.starts_with("review-feature-x-") && slug.len() <= 24, "{slug}");
        assert_eq!(get(&vars, "CI_ENVIRONMENT_URL"), Some("https://Feature/X.example.test"));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_ACTION"), Some("start"));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_TIER"), Some("development"));
        assert_eq!(get(&vars, "HOST"), Some(format!("{slug}.example.test").as_str()));
        let plain = spec_of(yaml, "plain", &[]).variables(&[], &[]);
        assert!(get(&plain, "CI_ENVIRONMENT_NAME").is_none(), "only jobs with `environment:`");
    }

    #[test]
    fn run_steps_travel_in_the_spec_and_their_outputs_are_a_dotenv_report() {
        let yaml = "deploy:\n  run:\n    - name: check\n      script: echo hi\n    - name: deploy\n      step: piste/gitops-bump@v1\n      \
                    inputs: {repo: /r, file: f, key: k, value: v}\n  artifacts: {paths: [out/]}\nplain:\n  run: [{name: s, script: make}]\n";
        let spec = spec_of(yaml, "deploy", &[]);
        assert_eq!(spec.steps.len(), 2);
        assert!(spec.script.is_empty());
        let a = spec.artifacts.as_ref().unwrap();
        assert_eq!((a.paths.as_slice(), a.dotenv.as_slice()), (&["out/".to_string()][..], &[STEPS_DOTENV.to_string()][..]));
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec, "steps survive the wire");
        // Script steps only: nothing to hand on, no report added.
        assert!(spec_of(yaml, "plain", &[]).artifacts.is_none());
    }

    #[test]
    fn the_spec_carries_cache_artifacts_reports_and_unexpanded_images() {
        let yaml = "variables: {TAG: '1'}\njob:\n  image: img:$TAG\n  services: [db:$TAG]\n  cache: {key: k, paths: [c/]}\n  \
                    artifacts:\n    paths: [out/]\n    exclude: [out/*.tmp]\n    reports: {junit: report.xml, dotenv: build.env}\n  script: [make]\n";
        let spec = spec_of(yaml, "job", &[]);
        assert_eq!(spec.image.as_ref().unwrap().name, "img:$TAG");
        assert_eq!(spec.services[0].name, "db:$TAG");
        assert_eq!(spec.cache.len(), 1);
        let a = spec.artifacts.as_ref().unwrap();
        assert_eq!(
            (a.exclude.as_slice(), a.junit.as_slice(), a.dotenv.as_slice()),
            (&["out/*.tmp".to_string()][..], &["report.xml".to_string()][..], &["build.env".to_string()][..])
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec, "the spec survives the wire");
    }
}
