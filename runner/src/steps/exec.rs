//! A job's `run:` list, run in order by the one job runner ([`crate::job::run`]): `script:`
//! steps through the executor, as a job's script runs; built-in steps in this process. Then
//! `after_script`, whatever happened, through the executor (it sees `CI_JOB_STATUS`).

use std::path::Path;
use std::time::Instant;

use pipeline_spec::model::{Step, StepAction, StepInput};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Inputs, Outputs, StepContext, StepError, check_inputs, expand_input, find, output_variable};
use crate::executor::{Executor, FailureReason, JobRequest, Outcome};
use crate::job::{AttemptEnv, GREEN, RESET, error, section_end, section_start};
use crate::joblog::LogWriter;

/// How the steps ended.
pub(crate) struct StepsRun {
    pub outcome: Outcome,
    /// Why, for people, when a built-in step failed.
    pub reason: Option<String>,
    /// Each built-in step's outputs, by step name, in order.
    pub outputs: Vec<(String, Outputs)>,
}

/// Runs `steps`; `base` is the executor request the job's script would have had. `None`: the
/// job was taken away (`lost`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_steps(
    steps: &[Step],
    base: &JobRequest,
    masked: &[(String, String)],
    workspace: &Path,
    env: &AttemptEnv<'_>,
    executor: &dyn Executor,
    log: &LogWriter,
    cancel: &CancellationToken,
    lost: &CancellationToken,
) -> Option<StepsRun> {
    let deadline = Instant::now() + base.timeout;
    let mut outputs: Vec<(String, Outputs)> = Vec::new();
    let mut outcome = Outcome::Success;
    let mut reason = None;
    for (i, step) in steps.iter().enumerate() {
        if cancel.is_cancelled() {
            outcome = Outcome::Canceled;
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            outcome = Outcome::Failed { exit_code: None, reason: FailureReason::JobTimeout };
            break;
        }
        let section = format!("step_{}", step.name);
        match &step.action {
            StepAction::Script(script) => {
                section_start(log, &section, &format!("Step `{}`: script", step.name)).await;
                let mut req = base.clone();
                req.id = format!("{}-s{i}", base.id);
                req.script = vec![script.clone()];
                req.after_script = Vec::new();
                req.timeout = remaining;
                // Earlier steps' outputs, as later jobs will see them.
                req.env.extend(outputs.iter().flat_map(|(s, o)| o.iter().map(move |(k, v)| (output_variable(s, k), v.clone()))));
                let (tx, rx) = mpsc::channel(16);
                log.stream(rx).await;
                let report = tokio::select! {
                    report = executor.run(req, tx, cancel.clone()) => report,
                    () = lost.cancelled() => return None,
                };
                section_end(log, &section).await;
                if report.outcome != Outcome::Success {
                    outcome = report.outcome;
                    break;
                }
            }
            StepAction::Builtin { step: name, inputs } => {
                section_start(log, &section, &format!("Step `{}`: {name}", step.name)).await;
                let ran = async {
                    let builtin = find(name).ok_or_else(|| StepError::Input(format!("this runner has no built-in step `{name}`")))?;
                    // Earlier steps' outputs are variables too (`$NAME_KEY`), as in script steps.
                    let mut vars = base.env.clone();
                    vars.extend(outputs.iter().flat_map(|(s, o)| o.iter().map(move |(k, v)| (output_variable(s, k), v.clone()))));
                    let inputs = expand_inputs(inputs, &vars, &outputs)?;
                    check_inputs(builtin.def(), &inputs)?;
                    let cx = StepContext {
                        name: &step.name,
                        inputs,
                        vars: &base.env,
                        masked,
                        workspace,
                        state_dir: env.state_dir,
                        signing_key: env.signing_key,
                        log,
                        cancel,
                    };
                    match tokio::time::timeout(remaining, builtin.run(cx)).await {
                        Ok(r) => r,
                        Err(_) => Err(StepError::Failed("the job's timeout was reached".into())),
                    }
                };
                let ran = tokio::select! {
                    ran = ran => ran,
                    () = lost.cancelled() => return None,
                };
                match ran {
                    Ok(outs) => {
                        let shown: Vec<String> = outs.iter().map(|(k, v)| format!("{}={v}", output_variable(&step.name, k))).collect();
                        log.line(format!("{GREEN}Step `{}` done: {}{RESET}", step.name, shown.join(" "))).await;
                        outputs.push((step.name.clone(), outs));
                        section_end(log, &section).await;
                    }
                    Err(e) => {
                        let message = format!("step `{}` ({name}) failed: {e}", step.name);
                        error(log, &message).await;
                        section_end(log, &section).await;
                        outcome = match e {
                            StepError::Canceled => Outcome::Canceled,
                            StepError::System(m) => Outcome::Failed { exit_code: None, reason: FailureReason::RunnerSystemFailure(m) },
                            StepError::Input(_) | StepError::Failed(_) => {
                                Outcome::Failed { exit_code: None, reason: FailureReason::ScriptFailure }
                            }
                        };
                        reason = Some(message);
                        break;
                    }
                }
            }
        }
    }
    if !base.after_script.is_empty() {
        let mut req = base.clone();
        req.id = format!("{}-after", base.id);
        req.script = Vec::new();
        req.script_outcome = Some(outcome.clone());
        let (tx, rx) = mpsc::channel(16);
        log.stream(rx).await;
        tokio::select! {
            _ = executor.run(req, tx, CancellationToken::new()) => {}
            () = lost.cancelled() => return None,
        }
    }
    Some(StepsRun { outcome, reason, outputs })
}

fn expand_inputs(inputs: &[(String, StepInput)], vars: &[(String, String)], outputs: &[(String, Outputs)]) -> Result<Inputs, StepError> {
    let mut out = Vec::with_capacity(inputs.len());
    for (k, v) in inputs {
        let v = match v {
            StepInput::Text(t) => StepInput::Text(expand_input(t, vars, outputs)?),
            StepInput::List(l) => StepInput::List(l.iter().map(|t| expand_input(t, vars, outputs)).collect::<Result<_, _>>()?),
        };
        out.push((k.clone(), v));
    }
    Ok(Inputs(out))
}

/// The steps dotenv report: one `NAME_KEY=value` line per output (values on one line).
pub(crate) fn dotenv_text(outputs: &[(String, Outputs)]) -> String {
    let mut text = String::new();
    for (step, outs) in outputs {
        for (k, v) in outs {
            let v: String = v.chars().filter(|c| *c != '\n' && *c != '\r').collect();
            text.push_str(&format!("{}={v}\n", output_variable(step, k)));
        }
    }
    text
}
