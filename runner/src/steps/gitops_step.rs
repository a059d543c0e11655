//! `piste/gitops-bump@v1` as a built-in step: inputs → [`gitops::Bump`], outputs `commit` and
//! `changed`.

use pipeline_spec::steps::{GITOPS_BUMP, StepDef};

use super::gitops::{self, Auth, Bump, BumpError, Origin, Target};
use super::{BuiltinStep, StepContext, StepError, StepFuture};

pub struct GitopsBump;

impl BuiltinStep for GitopsBump {
    fn def(&self) -> &'static StepDef {
        &GITOPS_BUMP
    }

    fn run<'a>(&'a self, cx: StepContext<'a>) -> StepFuture<'a> {
        Box::pin(async move {
            let bump = bump_of(&cx)?;
            let repo = git_remote::redact(&bump.repo);
            cx.log.line(format!("Bumping {} in `{}` of `{repo}` to `{}`", describe(&bump.target), bump.file, bump.value)).await;
            let task = tokio::task::spawn_blocking(move || gitops::bump(&bump));
            let done = tokio::select! {
                done = task => done.map_err(|e| StepError::System(format!("the bump stopped: {e}")))?,
                // The blocking bump finishes on its own (bounded attempts); the job stops now.
                () = cx.cancel.cancelled() => return Err(StepError::Canceled),
            };
            match done {
                Ok(b) => {
                    for note in &b.notes {
                        cx.log.line(note.clone()).await;
                    }
                    Ok(vec![("commit".to_string(), b.commit), ("changed".to_string(), b.changed.to_string())])
                }
                Err(BumpError::Input(m)) => Err(StepError::Input(m)),
                Err(e @ (BumpError::Refused { .. } | BumpError::TooManyAttempts(_))) => Err(StepError::Failed(e.to_string())),
                Err(e @ BumpError::Git { .. }) => Err(StepError::Failed(crate::job::error_chain(&e))),
                Err(e @ BumpError::Remote { .. }) => Err(StepError::Failed(e.to_string())),
                Err(BumpError::Io(m)) => Err(StepError::System(m)),
            }
        })
    }
}

fn describe(t: &Target) -> String {
    match t {
        Target::Key(k) => format!("`{k}`"),
        Target::KustomizeImage(n) => format!("the kustomize image `{n}`"),
        Target::ImagePolicy(p) => format!("the Flux marker `{p}`"),
    }
}

fn bump_of(cx: &StepContext<'_>) -> Result<Bump, StepError> {
    let i = &cx.inputs;
    let targets: Vec<Target> = [
        i.text("key").map(|k| Target::Key(k.to_string())),
        i.text("kustomize_image").map(|k| Target::KustomizeImage(k.to_string())),
        i.text("imagepolicy").map(|k| Target::ImagePolicy(k.to_string())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [target] = <[Target; 1]>::try_from(targets)
        .map_err(|t| StepError::Input(format!("give exactly one of `key`, `kustomize_image`, `imagepolicy` ({} given)", t.len())))?;
    let secret = |input: &str| -> Result<Option<String>, StepError> {
        match i.text(input) {
            None => Ok(None),
            Some(name) => cx
                .var(name)
                .filter(|v| !v.is_empty())
                .map(|v| Some(v.to_string()))
                .ok_or_else(|| StepError::Input(format!("`{input}: {name}`: the job has no variable `{name}` (or it is empty)"))),
        }
    };
    let auth = match (secret("credentials_variable")?, secret("ssh_key_variable")?) {
        (Some(_), Some(_)) => return Err(StepError::Input("give `credentials_variable` or `ssh_key_variable`, not both".into())),
        (Some(token), None) => match token.split_once(':') {
            Some((user, token)) => Auth::Token { user: user.to_string(), token: token.to_string() },
            None => Auth::Token { user: "oauth2".into(), token },
        },
        (None, Some(key)) => Auth::SshKey(key),
        (None, None) => Auth::None,
    };
    let origin = Origin {
        project: cx.var("CI_PROJECT_PATH").unwrap_or("local").to_string(),
        pipeline: cx.var("CI_PIPELINE_ID").and_then(|p| p.parse().ok()).unwrap_or(0),
        job: cx.var("CI_JOB_ID").map_or_else(|| cx.var("CI_JOB_NAME").unwrap_or_default().to_string(), str::to_string),
    };
    Ok(Bump {
        repo: i.required("repo")?.to_string(),
        branch: i.text("branch").map(str::to_string),
        file: i.required("file")?.to_string(),
        target,
        value: i.required("value")?.to_string(),
        auth,
        // Relative to the checkout, or absolute (a bundle of the runner's host).
        ca_file: i.text("ca_file").map(|f| cx.workspace.join(f)),
        known_hosts: secret("known_hosts_variable")?,
        author: i.text("author").map(str::to_string),
        message: i.text("message").map(str::to_string),
        origin,
        cache_dir: cx.state_dir.to_path_buf(),
    })
}
