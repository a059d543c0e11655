//! A server runner's side of reuse of job results: for a job whose payload carries a
//! [`ReuseOffer`](scheduler::protocol::ReuseOffer), the job's key is computed here with the
//! one key function ([`crate::reuse::key`], the same as `piste run`'s) before anything of the
//! job is logged or run, and the server is asked. On a hit the server has recorded the job as
//! passed with the earlier job's artifacts, dotenv and log, and the runner reports nothing
//! more; on a miss the server keeps the key and records it if the job succeeds.
//!
//! The inputs: the executor (as [`crate::reuse::executor_input`] says), the job's final
//! variables (the ones the script would see, without [`crate::reuse::PER_RUN`]), the digests of
//! the dependencies' artifacts as the server announces them (the download is checked against
//! the same digests), and the commit's tree in the runner's cache of the project (fetched into
//! it first if needed) — or only the entries matching the job's `rules:changes`.

use scheduler::protocol::{JobPayload, ReusedFrom};

use super::api::CallError;
use super::checkout::{CheckoutError, CheckoutRequest};
use super::job::{Shared, Signals};
use crate::cas::Digest;
use crate::reuse::{self, Mode};
use crate::workspace::GitStrategy;

/// What the check decided.
#[derive(Debug)]
pub(crate) enum Check {
    /// Run the job (not offered, not eligible, inputs unknown, no earlier success, or the
    /// server could not answer).
    Run,
    /// The server recorded the job as reused: it is over.
    Reused(ReusedFrom),
    /// The job is not ours any more.
    Lost,
}

/// Computes the job's key and asks the server, when the server offered reuse.
pub(crate) async fn check(shared: &Shared, payload: &JobPayload, runner_vars: &[(String, String)], signals: &Signals) -> Check {
    let Some(offer) = &payload.reuse else { return Check::Run };
    let job = payload.job_id;
    let key = match key(shared, payload, runner_vars, offer, signals).await {
        Ok(key) => key,
        Err(why) => {
            tracing::debug!(job, why = %why, "not reusable");
            return Check::Run;
        }
    };
    // One try: a server that cannot answer now costs a run, never a wait.
    match shared.api.reuse(job, &payload.token, &key).await {
        Ok(Some(from)) => Check::Reused(from),
        Ok(None) => {
            tracing::debug!(job, key = %key, "no earlier success with this key");
            Check::Run
        }
        Err(CallError::Lost(_)) => {
            signals.mark_lost();
            Check::Lost
        }
        Err(e) => {
            tracing::warn!(job, error = %e, "the reuse check failed; running the job");
            Check::Run
        }
    }
}

async fn key(
    shared: &Shared,
    payload: &JobPayload,
    runner_vars: &[(String, String)],
    offer: &scheduler::protocol::ReuseOffer,
    signals: &Signals,
) -> Result<Digest, String> {
    let spec = &payload.job;
    let predefined = [payload.predefined.as_slice(), runner_vars].concat();
    let vars: Vec<(String, String)> = spec.variables(&predefined, &payload.dotenv).into_iter().map(|v| (v.key, v.value)).collect();
    let mode = if offer.project { Mode::Project } else { Mode::PerJob };
    if let Some(why) = reuse::ineligible(spec, mode, &vars) {
        return Err(why.to_string());
    }
    let executor = reuse::executor_input(spec, &vars, shared.containers, shared.executor.name(), None)
        .await
        .ok_or("the executor's images are not known here yet")?;
    let mut artifacts = Vec::with_capacity(spec.dependencies.len());
    for name in &spec.dependencies {
        let digest = match payload.dependencies.iter().find(|d| &d.name == name) {
            None => None,
            Some(d) => {
                let announced = d.digest.as_deref().ok_or_else(|| format!("the server did not say which artifacts `{name}` has"))?;
                Some(announced.parse::<Digest>().map_err(|e| e.to_string())?)
            }
        };
        artifacts.push((name.clone(), digest));
    }
    let patterns = reuse::expand_patterns(&offer.changes, &vars);
    let req = CheckoutRequest {
        project: payload.project.clone(),
        url: format!("{}{}", shared.api.base(), payload.git.path),
        token: payload.token.clone(),
        sha: payload.git.sha.clone(),
        git_ref: payload.git.git_ref.clone(),
        strategy: GitStrategy::Fetch,
        clean_flags: None,
        checkout: true,
        // The tree is the commit's: its depth and submodules do not matter (a submodule's
        // commit is an entry of the tree).
        depth: None,
        submodules: Default::default(),
        slot: 0,
    };
    let tree = match shared.checkouts.tree_input(req, patterns, signals.script.clone()).await {
        Ok(tree) => tree,
        Err(CheckoutError::Job(m) | CheckoutError::System(m)) => return Err(format!("the commit's tree is unknown: {m}")),
        Err(CheckoutError::Canceled) => return Err("canceled".into()),
    };
    reuse::key(&reuse::KeyInputs { spec, executor, variables: &vars, artifacts, tree })
}
