//! The one job runner: one attempt of one [`JobSpec`], the same code under `piste run` and
//! under the runner agent. What differs between the two is behind [`JobHost`] (where the
//! checkout comes from, where dependencies' artifacts come from and where the job's go) and the
//! log's destination (a file, or the server); everything else happens here, in GitLab's order:
//!
//! ```text
//! get_sources ─▶ restore_cache ─▶ download_artifacts ─▶ script (+ after_script)
//!             ─▶ archive_cache ─▶ upload_artifacts (paths, exclude, junit reports; dotenv read apart)
//! ```
//!
//! Variables are computed once per attempt by [`JobSpec::variables`] (the one precedence
//! function); image and service names, artifact paths and excludes, and cache keys and paths
//! are expanded with them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pipeline_spec::expand::expand;
use pipeline_spec::model::{self, CachePolicy};
use scheduler::job::{JobSpec, when_applies};
use scheduler::{FailureReason, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::artifacts::{self, ArtifactSpec};
use crate::cache::{CacheKeySpec, CacheStore};
use crate::cas::Digest;
use crate::executor::{self, Executor, ImageSpec, JobRequest, PullPolicy, ServiceSpec};
use crate::joblog::LogWriter;
use crate::leaks::{Needles, SARIF_FILE};

/// GitLab's default for `after_script`: five minutes.
pub const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) const RESET: &str = "\x1b[0;m";
pub(crate) const GREEN: &str = "\x1b[32;1m";
pub(crate) const YELLOW: &str = "\x1b[0;33m";
pub(crate) const RED: &str = "\x1b[31;1m";
pub(crate) const CYAN: &str = "\x1b[36;1m";

/// `GIT_STRATEGY`, `GIT_DEPTH`, `GIT_CLEAN_FLAGS`, `GIT_CHECKOUT` and `GIT_SUBMODULE_*` as the
/// job's variables set them.
#[derive(Debug, Clone, Default)]
pub struct GitSettings {
    pub strategy: Option<String>,
    /// `GIT_DEPTH`, as written (checked by [`GitSettings::depth`]).
    pub depth: Option<String>,
    pub clean_flags: Option<String>,
    /// `GIT_CHECKOUT: "false"` skips checkout and clean.
    pub checkout: bool,
    pub submodule_strategy: Option<String>,
    pub submodule_paths: Option<String>,
    pub submodule_update_flags: Option<String>,
    pub submodule_force_https: Option<String>,
    pub submodule_depth: Option<String>,
}

impl GitSettings {
    pub fn from_vars(vars: &[(String, String)]) -> GitSettings {
        let get = |k: &str| vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
        GitSettings {
            strategy: get("GIT_STRATEGY"),
            depth: get("GIT_DEPTH"),
            clean_flags: get("GIT_CLEAN_FLAGS"),
            checkout: get("GIT_CHECKOUT").is_none_or(|v| v != "false"),
            submodule_strategy: get("GIT_SUBMODULE_STRATEGY"),
            submodule_paths: get("GIT_SUBMODULE_PATHS"),
            submodule_update_flags: get("GIT_SUBMODULE_UPDATE_FLAGS"),
            submodule_force_https: get("GIT_SUBMODULE_FORCE_HTTPS"),
            submodule_depth: get("GIT_SUBMODULE_DEPTH"),
        }
    }

    /// `GIT_DEPTH`: `None` when unset (full history); an error naming the value otherwise.
    pub fn depth(&self) -> Result<Option<u32>, String> {
        match self.depth.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(d) => d.parse::<u32>().map(Some).map_err(|_| {
                format!("GIT_DEPTH `{}` is not a number of commits (0 for the whole history)", d.chars().take(64).collect::<String>())
            }),
        }
    }

    /// `GIT_SUBMODULE_*`, checked.
    pub fn submodules(&self) -> Result<crate::workspace::SubmoduleSpec, String> {
        crate::workspace::SubmoduleSpec::parse(
            self.submodule_strategy.as_deref(),
            self.submodule_paths.as_deref(),
            self.submodule_update_flags.as_deref(),
            self.submodule_force_https.as_deref(),
            self.submodule_depth.as_deref(),
            self.depth()?,
        )
        .map_err(|e| e.to_string())
    }
}

/// Why a step before or after the script ended the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The job's own configuration is wrong (a bad `GIT_STRATEGY`, ...): `script_failure`.
    Job(String),
    /// The runner could not do its part: `runner_system_failure`.
    System(String),
    /// Stopped by a cancel.
    Canceled,
    /// The job is not ours any more: report nothing.
    Lost,
}

/// What differs between the two job paths.
pub trait JobHost: Sync {
    /// The workspace at the job's commit, as `git` asks.
    fn checkout(
        &self,
        git: &GitSettings,
        log: &LogWriter,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<PathBuf, Failure>> + Send;

    /// Whether any dependency has artifacts to receive.
    fn has_dependencies(&self) -> bool;

    /// Extracts the dependencies' artifacts into `workspace`.
    fn dependencies(
        &self,
        workspace: &Path,
        log: &LogWriter,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Keeps the job's artifacts archive (a file in [`Attempt`]'s temporary folder, removed after
    /// this returns) for the jobs after it.
    fn store_artifacts(&self, archive: &Path, digest: Digest, log: &LogWriter) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// What an attempt knows besides its specification.
pub struct AttemptEnv<'a> {
    /// The first line of the log (`Running with ...`).
    pub header: String,
    /// Job-level predefined variables, lowest precedence.
    pub predefined: Vec<(String, String)>,
    /// Variables from the dependencies' dotenv reports.
    pub dotenv: Vec<(String, String)>,
    /// Variables only the runner knows (`CI_RUNNER_*`), at the predefined level.
    pub runner_vars: Vec<(String, String)>,
    /// The job runs in a container: `CI_PROJECT_DIR` is `container_project_dir` there.
    pub containers: bool,
    pub container_project_dir: String,
    /// `--image`: the image of jobs that name none.
    pub default_image: Option<String>,
    /// The executor's id for this attempt (container names, labels).
    pub request_id: String,
    /// Caches on this node; `None` disables `cache:`.
    pub cache: Option<&'a CacheStore>,
    /// Where archives are built.
    pub tmp_dir: &'a Path,
    /// Where the executor records the processes it starts (see [`JobRequest::ledger`]).
    pub ledger: Option<&'a crate::executor::ProcessLedger>,
    /// What built-in steps keep between jobs (cached clones); the runner's, never a job's.
    pub state_dir: &'a Path,
    /// The key `piste/image-build@v1` signs with (the server's `[signing]` key, or `piste run
    /// --sign-key`): for built-in steps only, never a variable; the log masks it.
    pub signing_key: Option<&'a str>,
}

/// How an attempt ended and what it left for later jobs.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// For people: why it failed.
    pub reason: Option<String>,
    /// The artifacts archive's digest, when artifacts were stored.
    pub artifacts: Option<Digest>,
    /// Variables from its dotenv reports.
    pub dotenv: Vec<(String, String)>,
    /// Its `coverage:` value, from its log.
    pub coverage: Option<f64>,
}

impl Attempt {
    fn ended(failure: Failure) -> Option<Attempt> {
        let (outcome, reason) = match failure {
            Failure::Lost => return None,
            Failure::Canceled => (Outcome::Canceled, None),
            Failure::Job(m) => (Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: None }, Some(m)),
            Failure::System(m) => (Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None }, Some(m)),
        };
        Some(Attempt { outcome, exit_code: None, reason, artifacts: None, dotenv: Vec::new(), coverage: None })
    }

    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Success
    }
}

/// The one mapping from what the executor saw to the engine's outcome.
pub fn outcome_of(report: &executor::Outcome) -> (Outcome, Option<i32>, Option<String>) {
    match report {
        executor::Outcome::Success => (Outcome::Success, Some(0), None),
        executor::Outcome::Failed { exit_code, reason } => {
            let (reason, text) = match reason {
                executor::FailureReason::ScriptFailure => (FailureReason::ScriptFailure, None),
                executor::FailureReason::JobTimeout => {
                    (FailureReason::JobExecutionTimeout, Some("the job ran longer than its timeout".to_string()))
                }
                executor::FailureReason::RunnerSystemFailure(m) => (FailureReason::RunnerSystemFailure, Some(m.clone())),
            };
            (Outcome::Failed { reason, exit_code: *exit_code }, *exit_code, text)
        }
        executor::Outcome::Canceled => (Outcome::Canceled, None, None),
    }
}

/// Runs one attempt of `spec`. `cancel` stops the script (`after_script` still runs); `lost`
/// drops everything and reports nothing (`None`).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    spec: &JobSpec,
    env: &AttemptEnv<'_>,
    host: &impl JobHost,
    executor: &dyn Executor,
    log: &LogWriter,
    cancel: &CancellationToken,
    lost: &CancellationToken,
) -> Option<Attempt> {
    log.line(format!("{RESET}{}", env.header)).await;
    // What only the attempt knows: GitLab Runner's `CI_JOB_STATUS` while the script runs
    // (`after_script` gets the outcome instead), and when the job started.
    // GitLab Runner also says whether the job's environment is made for it alone (a container)
    // or shared with other jobs (the shell executor).
    let environment_kind = if env.containers { "CI_DISPOSABLE_ENVIRONMENT" } else { "CI_SHARED_ENVIRONMENT" };
    let attempt_vars = [
        ("CI_JOB_STATUS".to_string(), "running".to_string()),
        ("CI_JOB_STARTED_AT".to_string(), jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        (environment_kind.to_string(), "true".to_string()),
    ];
    // Checked when the pipeline was loaded; a spec from elsewhere with a bad one has none.
    if let Some(re) = spec.coverage.as_deref().and_then(|c| pipeline_spec::coverage::compile(c).ok()) {
        log.scan_coverage(pipeline_spec::coverage::Scanner::new(re));
    }
    // GIT_* come from the variables; CI_PROJECT_DIR is only known after the checkout.
    let first = pairs(&spec.variables(&[env.predefined.as_slice(), &attempt_vars, env.runner_vars.as_slice()].concat(), &env.dotenv));
    let git = GitSettings::from_vars(&first);

    section_start(log, "get_sources", "Getting source from Git repository").await;
    let workspace = match host.checkout(&git, log, cancel).await {
        Ok(w) => w,
        Err(f) => return fail(log, f).await,
    };
    section_end(log, "get_sources").await;
    if lost.is_cancelled() {
        return None;
    }

    let project_dir = if env.containers { env.container_project_dir.clone() } else { workspace.to_string_lossy().into_owned() };
    let builds_dir = Path::new(&project_dir).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let mut predefined = env.predefined.clone();
    predefined.extend(attempt_vars);
    predefined.push(("CI_PROJECT_DIR".into(), project_dir.clone()));
    predefined.push(("CI_BUILDS_DIR".into(), builds_dir));
    predefined.extend(env.runner_vars.iter().cloned());
    let vars = pairs(&spec.variables(&predefined, &env.dotenv));

    let cache_keys = match env.cache {
        Some(store) if !spec.cache.is_empty() && !cancel.is_cancelled() => restore_caches(store, spec, &workspace, &vars, log).await,
        _ => vec![None; spec.cache.len()],
    };

    if host.has_dependencies() && !cancel.is_cancelled() {
        section_start(log, "download_artifacts", "Downloading artifacts").await;
        if let Err(f) = host.dependencies(&workspace, log, cancel).await {
            return fail(log, f).await;
        }
        section_end(log, "download_artifacts").await;
    }
    if lost.is_cancelled() {
        return None;
    }
    if cancel.is_cancelled() {
        return fail(log, Failure::Canceled).await;
    }

    let request = request(spec, env, &workspace, project_dir, &vars);
    let (outcome, exit_code, reason) = if spec.steps.is_empty() {
        let (tx, rx) = mpsc::channel(16);
        log.stream(rx).await;
        let report = tokio::select! {
            report = executor.run(request, tx, cancel.clone()) => report,
            // Dropping the run stops the job and cleans up (the executor's guard).
            () = lost.cancelled() => return None,
        };
        outcome_of(&report.outcome)
    } else {
        let masked: Vec<(String, String)> =
            spec.variables.iter().filter(|v| v.masked && !v.value.is_empty()).map(|v| (v.key.clone(), v.value.clone())).collect();
        let ran = crate::steps::exec::run_steps(&spec.steps, &request, &masked, &workspace, env, executor, log, cancel, lost).await?;
        if spec.steps.iter().any(|s| s.builtin().is_some()) {
            // The outputs travel as a dotenv report (`STEPS_DOTENV`, listed in the spec's reports).
            let text = crate::steps::exec::dotenv_text(&ran.outputs);
            if let Err(e) = tokio::fs::write(workspace.join(scheduler::job::STEPS_DOTENV), text).await {
                log.line(format!("{YELLOW}WARNING: the steps' outputs could not be written: {e}{RESET}")).await;
            }
        }
        let (outcome, exit_code, reason) = outcome_of(&ran.outcome);
        (outcome, exit_code, ran.reason.or(reason))
    };
    let coverage = log.coverage().await;
    let mut attempt = Attempt { outcome, exit_code, reason, artifacts: None, dotenv: Vec::new(), coverage };
    if attempt.outcome == Outcome::Canceled {
        log.line(final_line(&attempt, spec.timeout_s)).await;
        return Some(attempt);
    }
    let succeeded = attempt.succeeded();

    if let Some(store) = env.cache {
        save_caches(store, spec, &cache_keys, &workspace, &vars, succeeded, log).await;
    }

    if let Some(artifacts) = spec.artifacts.as_ref().filter(|a| a.wanted(succeeded)) {
        let needles = Needles::of(spec);
        match upload_artifacts(artifacts, env, host, &workspace, &vars, &needles, succeeded, log).await {
            Ok(stored) => {
                attempt.artifacts = stored.digest;
                attempt.dotenv = stored.dotenv;
            }
            Err(Failure::Lost) => return None,
            Err(f) => {
                let message = match &f {
                    Failure::Job(m) | Failure::System(m) => m.clone(),
                    _ => "stopped".into(),
                };
                error(log, &message).await;
                // GitLab: a job whose artifacts could not be uploaded fails, if it had succeeded.
                // A refusal by the leak gate is the job's doing (`script_failure`).
                if succeeded {
                    attempt = Attempt::ended(f)?;
                }
            }
        }
    }
    if lost.is_cancelled() {
        return None;
    }
    log.line(final_line(&attempt, spec.timeout_s)).await;
    Some(attempt)
}

async fn fail(log: &LogWriter, failure: Failure) -> Option<Attempt> {
    if let Failure::Job(m) | Failure::System(m) = &failure {
        error(log, m).await;
    }
    let attempt = Attempt::ended(failure)?;
    log.line(final_line(&attempt, 0)).await;
    Some(attempt)
}

fn pairs(vars: &[scheduler::protocol::Variable]) -> Vec<(String, String)> {
    vars.iter().map(|v| (v.key.clone(), v.value.clone())).collect()
}

/// The executor's request: image and service names expanded with the job's variables.
fn request(spec: &JobSpec, env: &AttemptEnv<'_>, workspace: &Path, project_dir: String, vars: &[(String, String)]) -> JobRequest {
    let pull = PullPolicy::parse_list::<String>;
    let image = match &spec.image {
        Some(i) => Some(ImageSpec { name: expand(&i.name, &vars), entrypoint: i.entrypoint.clone(), pull_policy: pull(&i.pull_policy) }),
        None => env.default_image.as_ref().map(|n| ImageSpec::new(n.clone())),
    };
    let services = spec
        .services
        .iter()
        .map(|s| ServiceSpec {
            name: expand(&s.name, &vars),
            alias: s.alias.clone(),
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            variables: s.variables.clone(),
            pull_policy: pull(&s.pull_policy),
        })
        .collect();
    JobRequest {
        id: env.request_id.clone(),
        name: spec.name.clone(),
        image,
        services,
        script: spec.script.clone(),
        after_script: spec.after_script.clone(),
        script_outcome: None,
        env: vars.to_vec(),
        workspace: workspace.to_path_buf(),
        project_dir,
        timeout: Duration::from_secs(if spec.timeout_s == 0 { scheduler::job::DEFAULT_TIMEOUT_S } else { spec.timeout_s }),
        after_script_timeout: AFTER_SCRIPT_TIMEOUT,
        ledger: env.ledger.cloned(),
    }
}

/// Restores each `cache:` entry (key, fallback keys, `CACHE_FALLBACK_KEY`) and returns the keys
/// the job saves under: computed before the script, as GitLab does. A cache problem is a
/// warning: the job runs without it.
async fn restore_caches(
    store: &CacheStore,
    spec: &JobSpec,
    workspace: &Path,
    vars: &[(String, String)],
    log: &LogWriter,
) -> Vec<Option<String>> {
    section_start(log, "restore_cache", "Restoring cache").await;
    let (store, caches, workspace, vars) = (store.clone(), spec.cache.clone(), workspace.to_owned(), vars.to_vec());
    let done = tokio::task::spawn_blocking(move || {
        let mut keys = Vec::with_capacity(caches.len());
        let mut notes = Vec::new();
        for cache in &caches {
            let key = match cache_key(&store, &workspace, cache, &vars) {
                Ok(k) => k,
                Err(e) => {
                    notes.push(format!("{YELLOW}WARNING: cache skipped: {e}{RESET}"));
                    keys.push(None);
                    continue;
                }
            };
            keys.push(Some(key.clone()));
            if cache.policy == CachePolicy::Push {
                continue;
            }
            let mut candidates = vec![key.clone()];
            candidates.extend(cache.fallback_keys.iter().map(|k| expand(k, &vars)));
            if let Some(fallback) = vars.iter().rev().find(|(k, _)| k == "CACHE_FALLBACK_KEY").map(|(_, v)| v.clone()) {
                candidates.push(fallback);
            }
            match store.restore(&workspace, &candidates) {
                Ok(Some(hit)) => {
                    notes.push(format!("{GREEN}Restored cache `{hit}`{RESET}"));
                    if hit == key {
                        // So that an unchanged cache is not archived again after the job.
                        let paths: Vec<String> = cache.paths.iter().map(|p| expand(p, &vars)).collect();
                        let untracked = if cache.untracked { untracked_files(&workspace) } else { Vec::new() };
                        let _ = store.remember(&workspace, &key, &paths, &untracked);
                    }
                }
                Ok(None) => notes.push(format!("{YELLOW}No cache for `{key}` yet{RESET}")),
                Err(e) => notes.push(format!("{YELLOW}WARNING: cache `{key}` not restored: {}{RESET}", error_chain(&e))),
            }
        }
        (keys, notes)
    })
    .await;
    let (keys, notes) =
        done.unwrap_or_else(|e| (vec![None; spec.cache.len()], vec![format!("{YELLOW}WARNING: cache skipped: {e}{RESET}")]));
    for note in notes {
        log.line(note).await;
    }
    section_end(log, "restore_cache").await;
    keys
}

fn cache_key(store: &CacheStore, workspace: &Path, cache: &model::Cache, vars: &[(String, String)]) -> Result<String, String> {
    let spec = match &cache.key {
        model::CacheKey::Literal(k) => CacheKeySpec::Literal(expand(k, &vars)),
        model::CacheKey::Files { files, prefix } => CacheKeySpec::Files {
            files: files.iter().map(|f| expand(f, &vars)).collect(),
            prefix: prefix.as_ref().map(|p| expand(p, &vars)),
        },
    };
    store.key_for(workspace, &spec).map_err(|e| e.to_string())
}

/// Saves each cache whose `when` applies and whose policy pushes, under the key restored.
async fn save_caches(
    store: &CacheStore,
    spec: &JobSpec,
    keys: &[Option<String>],
    workspace: &Path,
    vars: &[(String, String)],
    succeeded: bool,
    log: &LogWriter,
) {
    let wanted: Vec<(model::Cache, String)> = spec
        .cache
        .iter()
        .zip(keys)
        .filter(|(c, _)| when_applies(c.when, succeeded) && c.policy != CachePolicy::Pull)
        .filter_map(|(c, k)| k.clone().map(|k| (c.clone(), k)))
        .collect();
    if wanted.is_empty() {
        return;
    }
    section_start(log, "archive_cache", "Saving cache").await;
    let (store, workspace, vars) = (store.clone(), workspace.to_owned(), vars.to_vec());
    let notes = tokio::task::spawn_blocking(move || {
        let mut notes = Vec::new();
        for (cache, key) in wanted {
            let paths: Vec<String> = cache.paths.iter().map(|p| expand(p, &vars)).collect();
            let untracked = if cache.untracked { untracked_files(&workspace) } else { Vec::new() };
            match store.save(&workspace, &key, &paths, &untracked) {
                Ok(s) if s.up_to_date => notes.push(format!("Cache `{key}` is up to date: not archived again")),
                Ok(s) if !s.saved => notes.push(format!("{YELLOW}WARNING: cache `{key}`: no files to save{RESET}")),
                Ok(_) => notes.push(format!("{GREEN}Saved cache `{key}`{RESET}")),
                Err(e) => notes.push(format!("{YELLOW}WARNING: cache `{key}` not saved: {}{RESET}", error_chain(&e))),
            }
        }
        notes
    })
    .await
    .unwrap_or_else(|e| vec![format!("{YELLOW}WARNING: cache not saved: {e}{RESET}")]);
    for note in notes {
        log.line(note).await;
    }
    section_end(log, "archive_cache").await;
}

/// What `upload_artifacts` stored.
struct Stored {
    digest: Option<Digest>,
    dotenv: Vec<(String, String)>,
}

/// Collects `paths` (expanded), the reports, minus `exclude` (expanded); archives them; passes
/// the archive through the leak gate; hands it to the host; reads the dotenv reports.
#[allow(clippy::too_many_arguments)]
async fn upload_artifacts(
    spec: &scheduler::job::ArtifactsSpec,
    env: &AttemptEnv<'_>,
    host: &impl JobHost,
    workspace: &Path,
    vars: &[(String, String)],
    needles: &Needles,
    succeeded: bool,
    log: &LogWriter,
) -> Result<Stored, Failure> {
    let section = if succeeded { "upload_artifacts_on_success" } else { "upload_artifacts_on_failure" };
    section_start(log, section, if succeeded { "Uploading artifacts for successful job" } else { "Uploading artifacts for failed job" })
        .await;
    let expand_all = |list: &[String]| list.iter().map(|p| expand(p, &vars)).collect::<Vec<_>>();
    // A dotenv report is not a file of the archive (GitLab keeps reports apart from the
    // `archive` artifact that later jobs download) unless `paths` lists it too: its variables
    // travel on their own (`Attempt::dotenv`, the finish request).
    let mut paths = expand_all(&spec.paths);
    let dotenv_files = expand_all(&spec.dotenv);
    paths.extend(expand_all(&spec.junit));
    paths.extend(expand_all(&spec.other_reports));
    let exclude = expand_all(&spec.exclude);
    let archive =
        env.tmp_dir.join(format!("artifacts-{}-{:016x}.tar.zst", safe_name(&env.request_id), getrandom::u64().unwrap_or_default()));
    let (dir, out, untracked) = (workspace.to_owned(), archive.clone(), spec.untracked);
    let built = if paths.is_empty() && !untracked {
        // Only a dotenv report: nothing to archive, and nothing missing.
        Ok((Vec::new(), None))
    } else {
        tokio::task::spawn_blocking(move || build_archive(&dir, paths, exclude, untracked, &out))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(|m| Failure::System(format!("collecting artifacts failed: {m}")))
    };
    let only_reports = spec.paths.is_empty() && !spec.untracked && spec.junit.is_empty() && spec.other_reports.is_empty();
    let result = match built {
        Err(f) => Err(f),
        Ok((warnings, None)) => {
            warn_all(log, &warnings).await;
            if !only_reports {
                log.line(format!("{YELLOW}WARNING: No files to upload{RESET}")).await;
            }
            Ok(None)
        }
        Ok((warnings, Some((digest, files, bytes)))) => {
            warn_all(log, &warnings).await;
            match leak_gate(needles, &archive, workspace, log).await {
                Err(f) => Err(f),
                Ok(()) => {
                    log.line(format!("Uploading artifacts: {files} files, {bytes} bytes ({digest})...")).await;
                    host.store_artifacts(&archive, digest, log).await.map(|()| Some(digest))
                }
            }
        }
    };
    let _ = tokio::fs::remove_file(&archive).await;
    let digest = result?;
    let mut dotenv = Vec::new();
    for report in &dotenv_files {
        match tokio::fs::read_to_string(workspace.join(report)).await {
            Ok(text) => match crate::dotenv::parse(&text) {
                Ok(vars) => dotenv.extend(vars),
                Err(e) => log.line(format!("{YELLOW}WARNING: dotenv report `{report}`: {e}{RESET}")).await,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log.line(format!("{YELLOW}WARNING: dotenv report `{report}`: {e}{RESET}")).await,
        }
    }
    section_end(log, section).await;
    Ok(Stored { digest, dotenv })
}

/// Refuses an archive holding a masked value (see [`crate::leaks`]): the findings go to the log
/// (file and offset, never the value) and to [`SARIF_FILE`] in the workspace.
async fn leak_gate(needles: &Needles, archive: &Path, workspace: &Path, log: &LogWriter) -> Result<(), Failure> {
    if needles.is_empty() {
        return Ok(());
    }
    let (n, path) = (needles.clone(), archive.to_owned());
    let findings = tokio::task::spawn_blocking(move || n.scan_archive(&path))
        .await
        .map_err(|e| Failure::System(format!("the leak gate stopped: {e}")))?
        .map_err(|e| Failure::System(format!("the leak gate could not read the artifacts archive: {e}")))?;
    let Some(first) = findings.first() else { return Ok(()) };
    for f in &findings {
        log.line(format!("{RED}Leak gate: {f}{RESET}")).await;
    }
    let sarif = serde_json::to_vec_pretty(&crate::leaks::sarif(&findings)).unwrap_or_default();
    let written = match tokio::fs::write(workspace.join(SARIF_FILE), sarif).await {
        Ok(()) => format!("findings written to `{SARIF_FILE}` (SARIF 2.1.0)"),
        Err(e) => format!("`{SARIF_FILE}` could not be written: {e}"),
    };
    log.line(written.clone()).await;
    let more = if findings.len() > 1 { format!(" (and {} more)", findings.len() - 1) } else { String::new() };
    Err(Failure::Job(format!("artifacts not uploaded: {first}{more}; {written}")))
}

type Built = (Vec<String>, Option<(Digest, usize, u64)>);

/// Collects the artifacts and writes their archive to `out`; `None` when nothing matched.
fn build_archive(workspace: &Path, paths: Vec<String>, exclude: Vec<String>, untracked: bool, out: &Path) -> Result<Built, String> {
    let untracked = if untracked { untracked_files(workspace) } else { Vec::new() };
    let spec = ArtifactSpec { paths, exclude, untracked };
    let collected = artifacts::collect(workspace, &spec).map_err(|e| error_chain(&e))?;
    let mut warnings = collected.warnings;
    if collected.files.is_empty() {
        return Ok((warnings, None));
    }
    let file = std::fs::File::create(out).map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
    let summary = artifacts::write_archive(workspace, &collected.files, &mut writer).map_err(|e| error_chain(&e))?;
    std::io::Write::flush(&mut writer).map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
    warnings.extend(summary.warnings);
    Ok((warnings, Some((summary.sha256, collected.files.len(), summary.bytes))))
}

/// Files git does not track and does not ignore (`untracked: true`).
pub fn untracked_files(workspace: &Path) -> Vec<PathBuf> {
    let Ok(repo) = git2::Repository::open(workspace) else { return Vec::new() };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    let Ok(statuses) = repo.statuses(Some(&mut opts)) else { return Vec::new() };
    statuses.iter().filter(|s| s.status().is_wt_new()).filter_map(|s| s.path().ok().map(PathBuf::from)).collect()
}

/// The last line of a job's log, as GitLab words it.
pub fn final_line(a: &Attempt, timeout_s: u64) -> String {
    match a.outcome {
        Outcome::Success => format!("{GREEN}Job succeeded{RESET}"),
        Outcome::Canceled => format!("{RED}ERROR: Job failed: canceled{RESET}"),
        Outcome::Failed { reason: FailureReason::JobExecutionTimeout, .. } => {
            let t = if timeout_s == 0 { scheduler::job::DEFAULT_TIMEOUT_S } else { timeout_s };
            format!("{RED}ERROR: Job failed: execution took longer than {t} seconds{RESET}")
        }
        Outcome::Failed { reason: FailureReason::RunnerSystemFailure, .. } => {
            format!("{RED}ERROR: Job failed (system failure): {}{RESET}", a.reason.as_deref().unwrap_or("unknown"))
        }
        Outcome::Failed { .. } => match a.exit_code {
            Some(code) => format!("{RED}ERROR: Job failed: exit code {code}{RESET}"),
            None => format!("{RED}ERROR: Job failed: {}{RESET}", a.reason.as_deref().unwrap_or("script failure")),
        },
    }
}

pub(crate) async fn section_start(log: &LogWriter, name: &str, header: &str) {
    log.line(format!("section_start:{}:{name}\r\x1b[0K{CYAN}{header}{RESET}", unix_now())).await;
}

pub(crate) async fn section_end(log: &LogWriter, name: &str) {
    log.line(format!("section_end:{}:{name}\r\x1b[0K", unix_now())).await;
}

pub(crate) async fn error(log: &LogWriter, message: &str) {
    log.line(format!("{RED}ERROR: {message}{RESET}")).await;
}

async fn warn_all(log: &LogWriter, warnings: &[String]) {
    for w in warnings {
        log.line(format!("{YELLOW}WARNING: {w}{RESET}")).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(64).collect()
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache warning says why (a full disk once read only "cache archive for key `bench`").
    #[test]
    fn error_chains_name_the_cause() {
        let e = crate::cache::CacheError::Io {
            op: "write",
            path: "/cache/bench.tar.zst".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let text = error_chain(&e);
        assert!(text.starts_with("cannot write `/cache/bench.tar.zst`: No space left on device"), "{text}");
    }

    fn attempt(outcome: Outcome, exit_code: Option<i32>, reason: Option<&str>) -> Attempt {
        Attempt { outcome, exit_code, reason: reason.map(str::to_string), artifacts: None, dotenv: Vec::new(), coverage: None }
    }

    #[test]
    fn final_lines_read_like_gitlab() {
        let failed = attempt(Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some(3) }, Some(3), None);
        assert!(final_line(&failed, 0).contains("ERROR: Job failed: exit code 3"));
        assert!(final_line(&attempt(Outcome::Canceled, None, None), 0).contains("canceled"));
        let timeout = attempt(Outcome::Failed { reason: FailureReason::JobExecutionTimeout, exit_code: None }, None, None);
        assert!(final_line(&timeout, 0).contains("longer than 3600 seconds"));
        let system = attempt(Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None }, None, Some("disk full"));
        assert!(final_line(&system, 0).contains("(system failure): disk full"));
    }

    #[test]
    fn executor_outcomes_map_to_the_engines() {
        let timeout = executor::Outcome::Failed { exit_code: None, reason: executor::FailureReason::JobTimeout };
        assert_eq!(outcome_of(&timeout).0, Outcome::Failed { reason: FailureReason::JobExecutionTimeout, exit_code: None });
        let script = executor::Outcome::Failed { exit_code: Some(2), reason: executor::FailureReason::ScriptFailure };
        assert_eq!(outcome_of(&script), (Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some(2) }, Some(2), None));
        assert_eq!(outcome_of(&executor::Outcome::Success).0, Outcome::Success);
    }
}
