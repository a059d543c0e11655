//! `piste/image-build@v1` and `piste/image-copy@v1` as built-in steps: inputs → [`crate::oci`]
//! requests, outputs `digest`, `ref` (`repo@sha256:…`), `tags` (the references pushed, space
//! separated) and, for a build, `signed` (`true`/`false`), so a step named `image` gives later
//! jobs `IMAGE_DIGEST`, `IMAGE_REF`, `IMAGE_TAGS` and `IMAGE_SIGNED`. Registry credentials are read from the job's variables
//! named by inputs (or `DOCKER_AUTH_CONFIG` / `DOCKER_AUTH`), in this process: they never reach
//! the job's container or files.

use pipeline_spec::steps::{IMAGE_BUILD, IMAGE_COPY, StepDef};

use super::kaniko_args::ExtraArgs;
use super::{BuiltinStep, Inputs, StepContext, StepError, StepFuture};
use crate::oci::{self, BuildRequest, CopyRequest, Credentials, Login, OciError, Provenance, RegistryOptions};

pub struct ImageBuild;
pub struct ImageCopy;

impl BuiltinStep for ImageBuild {
    fn def(&self) -> &'static StepDef {
        &IMAGE_BUILD
    }

    fn run<'a>(&'a self, cx: StepContext<'a>) -> StepFuture<'a> {
        Box::pin(async move {
            let extra =
                ExtraArgs::parse(&cx.inputs.list("extra_args").join(" "), |k| cx.var(k).map(str::to_string)).map_err(StepError::Input)?;
            if !extra.ignored.is_empty() {
                cx.log.line(format!("extra_args: ignored (kaniko's own machinery): {}", extra.ignored.join(" "))).await;
            }
            let req = build_request(&cx, &extra)?;
            if cx.signing_key.is_some() {
                let ignored = if cx.inputs.text("signing_key_variable").is_some() { " (`signing_key_variable` is ignored)" } else { "" };
                cx.log.line(format!("Signing with the runner's key{ignored}")).await;
            }
            let log = cx.log.clone();
            let sarif_path = cx.workspace.join(crate::leaks::SARIF_FILE);
            let out = on_own_thread(cx.cancel, "image build", move || async move {
                let built = oci::build::build_and_push(&req, &log).await;
                // The leak gate's findings, as for artifacts: SARIF in the job's workspace.
                if let Err(OciError::Leak { sarif, .. }) = &built {
                    let text = serde_json::to_vec_pretty(sarif).unwrap_or_default();
                    match tokio::fs::write(&sarif_path, text).await {
                        Ok(()) => log.line(format!("leak gate: findings written to `{}` (SARIF 2.1.0)", crate::leaks::SARIF_FILE)).await,
                        Err(e) => log.line(format!("leak gate: `{}` could not be written: {e}", crate::leaks::SARIF_FILE)).await,
                    }
                }
                built
            })
            .await?;
            cx.log.line(format!("Pushed {} ({})", out.image_ref, out.references.join(", "))).await;
            Ok(vec![
                ("digest".into(), out.digest),
                ("ref".into(), out.image_ref),
                ("tags".into(), out.references.join(" ")),
                ("signed".into(), out.signed.to_string()),
            ])
        })
    }
}

impl BuiltinStep for ImageCopy {
    fn def(&self) -> &'static StepDef {
        &IMAGE_COPY
    }

    fn run<'a>(&'a self, cx: StepContext<'a>) -> StepFuture<'a> {
        Box::pin(async move {
            let destinations = destinations(&cx.inputs)?;
            let source = cx.inputs.required("source")?.to_string();
            let hosts: Vec<String> = destinations.iter().cloned().chain(std::iter::once(source.clone())).collect();
            let req = CopyRequest { source, destinations, registry: registry(&cx, &hosts, &[])? };
            let log = cx.log.clone();
            let out = on_own_thread(cx.cancel, "image copy", move || async move { oci::copy::copy(&req, &log).await }).await?;
            Ok(vec![("digest".into(), out.digest), ("ref".into(), out.image_ref), ("tags".into(), out.references.join(" "))])
        })
    }
}

/// Runs `work` on a thread of its own with a single-threaded runtime, stopped when `cancel`
/// fires. The builder's futures borrow across awaits in ways the compiler cannot prove `Send`
/// for every lifetime, so they cannot be spawned on the job's runtime; a thread of their own
/// needs no `Send` future (only its inputs move there).
async fn on_own_thread<T: Send + 'static, F: std::future::Future<Output = Result<T, OciError>>>(
    cancel: &tokio_util::sync::CancellationToken,
    what: &'static str,
    work: impl FnOnce() -> F + Send + 'static,
) -> Result<T, StepError> {
    let stop = cancel.clone();
    let task = tokio::task::spawn_blocking(move || {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| StepError::System(format!("{what}: {e}")))?;
        rt.block_on(async move {
            tokio::select! {
                done = work() => done.map_err(failure),
                () = stop.cancelled() => Err(StepError::Canceled),
            }
        })
    });
    task.await.map_err(|e| StepError::System(format!("the {what} stopped: {e}")))?
}

/// A refused push or a bad Dockerfile is the job's to fix; an engine or disk problem is the
/// runner's.
fn failure(e: OciError) -> StepError {
    match e {
        OciError::Io { .. } | OciError::Engine(_) => StepError::System(crate::job::error_chain(&e)),
        OciError::Dockerfile { .. } | OciError::Reference { .. } | OciError::Credentials(_) => StepError::Input(e.to_string()),
        other => StepError::Failed(crate::job::error_chain(&other)),
    }
}

/// `destinations`, or `names` under `repository` (the Cloud Pi Native kaniko template's
/// `IMAGE_NAMES` and `IMAGE_REPOSITORY`: space-separated `name:tag`, `/` becoming `-`).
fn build_destinations(i: &Inputs) -> Result<Vec<String>, StepError> {
    let names: Vec<&str> = i.list("names").into_iter().flat_map(str::split_whitespace).collect();
    if i.list("names").is_empty() {
        return destinations(i);
    }
    if !i.list("destinations").is_empty() {
        return Err(StepError::Input("give `destinations` or `names`, not both".into()));
    }
    let repository =
        i.required("repository").map_err(|_| StepError::Input("`names` needs `repository` (e.g. `harbor.example/project`)".into()))?;
    if names.is_empty() {
        return Err(StepError::Input("`names` is empty: give at least one `name:tag`".into()));
    }
    Ok(names.into_iter().map(|n| format!("{}/{}", repository.trim_end_matches('/'), n.replace('/', "-"))).collect())
}

fn destinations(i: &Inputs) -> Result<Vec<String>, StepError> {
    let d: Vec<String> = i.list("destinations").into_iter().filter(|d| !d.is_empty()).map(str::to_string).collect();
    if d.is_empty() {
        return Err(StepError::Input("`destinations` is empty: give at least one `registry/repository:tag`".into()));
    }
    Ok(d)
}

/// `NAME=value` pairs of a list input.
fn pairs(i: &Inputs, input: &str) -> Result<Vec<(String, String)>, StepError> {
    i.list(input)
        .into_iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| StepError::Input(format!("`{input}`: `{p}` is not `NAME=value`")))
        })
        .collect()
}

/// The value of the job variable an input names (`None` when the input is absent).
fn named_var<'c>(cx: &'c StepContext<'_>, input: &str) -> Result<Option<&'c str>, StepError> {
    match cx.inputs.text(input) {
        None => Ok(None),
        Some(name) => cx
            .var(name)
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| StepError::Input(format!("`{input}: {name}`: the job has no variable `{name}` (or it is empty)"))),
    }
}

/// Registry options; `references` are the images the step reaches (their registries get the
/// user and password inputs), `insecure` more plain-HTTP registries.
fn registry(cx: &StepContext<'_>, references: &[String], insecure: &[String]) -> Result<RegistryOptions, StepError> {
    let config = match named_var(cx, "auth_config_variable")? {
        Some(json) => Some(json),
        None => cx.var("DOCKER_AUTH_CONFIG").or_else(|| cx.var("DOCKER_AUTH")).filter(|v| !v.is_empty()),
    };
    let mut credentials = match config {
        Some(json) => Credentials::from_docker_config(json).map_err(|e| StepError::Input(e.to_string()))?,
        None => Credentials::default(),
    };
    match (named_var(cx, "username_variable")?, named_var(cx, "password_variable")?) {
        (Some(username), Some(password)) => {
            for reference in references {
                let r = oci::Reference::parse(reference).map_err(|e| StepError::Input(e.to_string()))?;
                credentials.insert(&r.registry, Login { username: username.to_string(), password: password.to_string() });
            }
        }
        (None, None) => {}
        _ => return Err(StepError::Input("give both `username_variable` and `password_variable`, or neither".into())),
    }
    let ca_bundle = cx.inputs.text("ca_file").map(|f| cx.workspace.join(f));
    let mut all_insecure: Vec<String> = cx.inputs.list("insecure_registries").into_iter().map(str::to_string).collect();
    all_insecure.extend(insecure.iter().cloned());
    Ok(RegistryOptions { credentials, ca_bundle, insecure: all_insecure })
}

fn build_request(cx: &StepContext<'_>, extra: &ExtraArgs) -> Result<BuildRequest, StepError> {
    let i = &cx.inputs;
    let mut destinations = build_destinations(i)?;
    destinations.extend(extra.destinations.iter().cloned());
    let mut insecure = extra.insecure.clone();
    if extra.insecure_destinations {
        for d in &destinations {
            insecure.push(oci::Reference::parse(d).map_err(|e| StepError::Input(e.to_string()))?.registry);
        }
    }
    let target = match (i.text("target"), &extra.target) {
        (Some(a), Some(b)) if a != b => {
            return Err(StepError::Input(format!("`target: {a}` and `extra_args`' `--target {b}` disagree: give one")));
        }
        (Some(a), _) => Some(a.to_string()),
        (None, b) => b.clone(),
    };
    let mut build_args = pairs(i, "build_args")?;
    build_args.extend(extra.build_args.iter().cloned());
    let mut labels = pairs(i, "labels")?;
    labels.extend(extra.labels.iter().cloned());
    let context = cx.workspace.join(i.text("context").unwrap_or("."));
    if !context.starts_with(cx.workspace) || i.text("context").is_some_and(|c| c.split('/').any(|p| p == "..")) {
        return Err(StepError::Input("`context` must stay inside the checkout".into()));
    }
    let var = |k: &str| cx.var(k).map(str::to_string);
    let masked: Vec<String> = cx.masked.iter().map(|(_, v)| v.clone()).collect();
    // What the provenance records of the step: its inputs, masked values blanked.
    let inputs = serde_json::Value::Object(
        i.0.iter()
            .map(|(k, v)| {
                let text = match v {
                    pipeline_spec::model::StepInput::Text(t) => serde_json::Value::String(blank(t, &masked)),
                    pipeline_spec::model::StepInput::List(l) => l.iter().map(|t| serde_json::Value::String(blank(t, &masked))).collect(),
                };
                (k.clone(), text)
            })
            .collect(),
    );
    let pipeline_file = var("CI_CONFIG_PATH").and_then(|f| {
        let bytes = std::fs::read(cx.workspace.join(&f)).ok()?;
        Some((f, hex_sha256(&bytes)))
    });
    Ok(BuildRequest {
        context,
        dockerfile: i.text("dockerfile").unwrap_or("Dockerfile").into(),
        registry: registry(cx, &destinations, &insecure)?,
        destinations,
        build_args,
        target,
        source_date_epoch: source_date_epoch(cx)?,
        labels,
        registry_mirrors: extra.mirrors.clone(),
        source: var("CI_PROJECT_URL"),
        revision: var("CI_COMMIT_SHA"),
        masked,
        // The runner's key (the server's, or `piste run --sign-key`) wins over a job's own.
        signing_key: match cx.signing_key {
            Some(key) => Some(key.to_string()),
            None => named_var(cx, "signing_key_variable")?.map(str::to_string),
        },
        provenance: Provenance {
            builder_id: format!("https://piste.dev/runner/{}", var("CI_RUNNER_DESCRIPTION").unwrap_or_else(|| "local".into())),
            invocation_id: format!("{}/{}", var("CI_PIPELINE_ID").unwrap_or_default(), var("CI_JOB_ID").unwrap_or_default()),
            job: var("CI_JOB_NAME").unwrap_or_default(),
            runner: var("CI_RUNNER_DESCRIPTION").unwrap_or_default(),
            pipeline_file,
            inputs,
            started_on: var("CI_JOB_STARTED_AT"),
        },
        docker_host: None,
        scratch: cx.state_dir.join("image-scratch"),
    })
}

fn blank(text: &str, masked: &[String]) -> String {
    masked.iter().filter(|m| !m.is_empty()).fold(text.to_string(), |t, m| t.replace(m.as_str(), "[MASKED]"))
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `SOURCE_DATE_EPOCH` when the job sets it, else the checked-out commit's time: the same
/// commit builds the same image whenever it is built.
fn source_date_epoch(cx: &StepContext<'_>) -> Result<u64, StepError> {
    if let Some(v) = cx.var("SOURCE_DATE_EPOCH").filter(|v| !v.is_empty()) {
        return v.parse().map_err(|_| StepError::Input(format!("`SOURCE_DATE_EPOCH` is `{v}`: seconds since 1970 expected")));
    }
    let time = git2::Repository::open(cx.workspace).ok().and_then(|r| r.head().ok()?.peel_to_commit().ok().map(|c| c.time().seconds()));
    Ok(time.map_or(0, |t| t.max(0) as u64))
}
