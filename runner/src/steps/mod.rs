//! Built-in steps: what a job's `run:` entries with `step: piste/NAME@v1` do. They run in the
//! runner process on the job's workspace — never in the job's container: nothing to pull, and
//! the credentials they use (named by inputs, read from the job's variables) never reach the
//! job's filesystem.
//!
//! The catalogue (names, inputs, which are required) is data in `pipeline_spec::steps`, so that
//! `piste lint` checks `run:` without a runner. Each entry is implemented here by one
//! [`BuiltinStep`], listed in [`registry`]. Adding a step is: its `StepDef` in
//! `pipeline_spec::steps::CATALOGUE`, one file here with a type implementing [`BuiltinStep`],
//! and one line in [`registry`] (`registry_matches_the_catalogue` checks the two lists agree).
//!
//! The job runner ([`crate::job`]) expands each step's inputs (`$VAR` with the job's final
//! variables, `${{ steps.NAME.outputs.KEY }}` with earlier steps' outputs), opens a collapsible
//! log section, calls [`BuiltinStep::run`], and writes the outputs to the job's steps dotenv
//! report (`NAME_KEY`), which later jobs receive like any dotenv report.

pub(crate) mod exec;
pub mod gitops;
mod gitops_step;
mod image_step;
pub mod kaniko_args;
pub mod yaml_edit;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use pipeline_spec::model::StepInput;
use pipeline_spec::steps::StepDef;
use tokio_util::sync::CancellationToken;

use crate::joblog::LogWriter;

/// A step's expanded inputs, as written in `inputs:`.
#[derive(Debug, Clone, Default)]
pub struct Inputs(pub Vec<(String, StepInput)>);

impl Inputs {
    /// A text input; `None` when absent or empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| match v {
            StepInput::Text(t) => Some(t.as_str()).filter(|t| !t.is_empty()),
            StepInput::List(_) => None,
        })
    }

    /// A required text input.
    pub fn required(&self, name: &str) -> Result<&str, StepError> {
        self.text(name).ok_or_else(|| StepError::Input(format!("the input `{name}` is missing or empty")))
    }

    /// A list input (a lone string is a list of one).
    pub fn list(&self, name: &str) -> Vec<&str> {
        match self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v) {
            Some(StepInput::List(l)) => l.iter().map(String::as_str).collect(),
            Some(StepInput::Text(t)) => vec![t.as_str()],
            None => Vec::new(),
        }
    }
}

/// What a built-in step gets to work with.
pub struct StepContext<'a> {
    /// The step's `name:` in the job.
    pub name: &'a str,
    pub inputs: Inputs,
    /// The job's final variables (credentials are read from them by the name an input gives).
    pub vars: &'a [(String, String)],
    /// The job's masked variables, `(name, value)`: what a leak gate looks for before anything
    /// leaves the runner (`crate::leaks::Needles::new`).
    pub masked: &'a [(String, String)],
    /// The job's checkout, on the runner's disk.
    pub workspace: &'a Path,
    /// A directory of the runner that outlives jobs (cached clones, ...), never inside a job's
    /// workspace.
    pub state_dir: &'a Path,
    /// The runner's image signing key (the server's `[signing]` key or `piste run
    /// --sign-key`), PEM; never one of the job's variables.
    pub signing_key: Option<&'a str>,
    /// The job's log: say what the step sent, skipped, retried and produced.
    pub log: &'a LogWriter,
    pub cancel: &'a CancellationToken,
}

impl StepContext<'_> {
    /// The value of the job variable `name`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A step's outputs: `(KEY, value)`, readable as `${{ steps.NAME.outputs.KEY }}` and by later
/// jobs as `NAME_KEY`.
pub type Outputs = Vec<(String, String)>;

/// Why a built-in step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Its inputs are wrong (the job's to fix): the job fails with `script_failure`.
    #[error("{0}")]
    Input(String),
    /// It did its work and the other side said no, or it could not finish: `script_failure`.
    #[error("{0}")]
    Failed(String),
    /// The runner could not do its part (disk, ...): `runner_system_failure`.
    #[error("{0}")]
    System(String),
    #[error("canceled")]
    Canceled,
}

/// The future a step's run returns.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Outputs, StepError>> + Send + 'a>>;

/// One built-in step. Blocking work (git2, tar, hashing) goes through `spawn_blocking`.
pub trait BuiltinStep: Send + Sync {
    /// Its catalogue entry (name and inputs).
    fn def(&self) -> &'static StepDef;

    /// Runs the step. The caller has checked required and unknown inputs against [`Self::def`].
    fn run<'a>(&'a self, cx: StepContext<'a>) -> StepFuture<'a>;
}

/// Every built-in step this runner has.
pub fn registry() -> &'static [&'static dyn BuiltinStep] {
    &[&gitops_step::GitopsBump, &image_step::ImageBuild, &image_step::ImageCopy]
}

/// The step called `name` (`piste/gitops-bump@v1`).
pub fn find(name: &str) -> Option<&'static dyn BuiltinStep> {
    registry().iter().copied().find(|s| s.def().name == name)
}

/// Checks `inputs` against the step's catalogue entry (the runner repeats what `piste lint`
/// checks, since a job specification may come from elsewhere).
pub fn check_inputs(def: &StepDef, inputs: &Inputs) -> Result<(), StepError> {
    let known = || def.input_names().collect::<Vec<_>>().join(", ");
    for (k, _) in &inputs.0 {
        if def.input(k).is_none() {
            return Err(StepError::Input(format!("`{}` has no input `{k}` (its inputs: {})", def.name, known())));
        }
    }
    for i in def.inputs.iter().filter(|i| i.required) {
        if !inputs.0.iter().any(|(k, _)| k == i.name) {
            return Err(StepError::Input(format!("`{}` needs the input `{}`: {}", def.name, i.name, i.description)));
        }
    }
    Ok(())
}

/// The text of an input with `$VAR`s expanded from `vars` and `${{ steps.NAME.outputs.KEY }}`
/// replaced by `outputs` (by step). Output values are inserted as they are, never expanded.
pub fn expand_input(text: &str, vars: &[(String, String)], outputs: &[(String, Outputs)]) -> Result<String, StepError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${{") {
        out.push_str(&pipeline_spec::expand::expand(&rest[..at], &vars));
        let after = &rest[at + 3..];
        let end = after.find("}}").ok_or_else(|| StepError::Input(format!("`${{{{` without `}}}}` in `{text}`")))?;
        let expr = after[..end].trim();
        let parts: Vec<&str> = expr.split('.').collect();
        let [steps, step, outputs_kw, key] = parts[..] else {
            return Err(StepError::Input(format!("`${{{{ {expr} }}}}`: expected `${{{{ steps.NAME.outputs.KEY }}}}`")));
        };
        if steps != "steps" || outputs_kw != "outputs" {
            return Err(StepError::Input(format!("`${{{{ {expr} }}}}`: expected `${{{{ steps.NAME.outputs.KEY }}}}`")));
        }
        let (_, outs) = outputs
            .iter()
            .find(|(name, _)| name == step)
            .ok_or_else(|| StepError::Input(format!("`${{{{ {expr} }}}}`: no earlier step of this job is called `{step}`")))?;
        let value = outs.iter().find(|(k, _)| k == key).map(|(_, v)| v).ok_or_else(|| {
            let have: Vec<&str> = outs.iter().map(|(k, _)| k.as_str()).collect();
            StepError::Input(format!("`${{{{ {expr} }}}}`: step `{step}` has no output `{key}` (its outputs: {})", have.join(", ")))
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(&pipeline_spec::expand::expand(rest, &vars));
    Ok(out)
}

/// The variable later jobs see an output as: `NAME_KEY`, upper case.
pub fn output_variable(step: &str, key: &str) -> String {
    format!("{step}_{key}").to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_matches_the_catalogue() {
        let mut ours: Vec<&str> = registry().iter().map(|s| s.def().name).collect();
        let mut listed: Vec<&str> = pipeline_spec::steps::names().collect();
        ours.sort();
        listed.sort();
        assert_eq!(ours, listed, "every catalogue entry has an implementation and the reverse");
        for s in registry() {
            assert_eq!(pipeline_spec::steps::find(s.def().name), Some(s.def()));
        }
    }

    #[test]
    fn inputs_expand_variables_and_earlier_outputs_without_reexpanding_them() {
        let vars = vec![("REGISTRY".to_string(), "127.0.0.1:5000".to_string()), ("X".to_string(), "nope".to_string())];
        let outputs = vec![("image".to_string(), vec![("digest".to_string(), "sha256:$X".to_string())])];
        let got = expand_input("$REGISTRY/web@${{ steps.image.outputs.digest }}", &vars, &outputs).unwrap();
        assert_eq!(got, "127.0.0.1:5000/web@sha256:$X");
        let err = expand_input("${{ steps.image.outputs.ref }}", &vars, &outputs).unwrap_err();
        assert!(err.to_string().contains("its outputs: digest"), "{err}");
        assert!(expand_input("${{ steps.build.outputs.ref }}", &vars, &outputs).unwrap_err().to_string().contains("`build`"));
        assert_eq!(output_variable("deploy", "commit"), "DEPLOY_COMMIT");
    }
}
