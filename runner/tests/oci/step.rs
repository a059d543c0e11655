//! The `piste/image-build@v1` and `piste/image-copy@v1` steps as a job runs them: inputs as
//! written in `run:`, credentials read from the job's variables by the names the inputs give,
//! outputs `digest` and `ref`, against a registry with Basic auth.

use pipeline_spec::model::StepInput;
use runner::steps::{self, Inputs, StepContext, StepError};
use tokio_util::sync::CancellationToken;

use super::support::{Auth, Collected, PASSWORD, Registry, USER, write_files};

fn inputs(pairs: &[(&str, StepInput)]) -> Inputs {
    Inputs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn text(s: &str) -> StepInput {
    StepInput::Text(s.into())
}

async fn run(
    step: &str,
    inputs: Inputs,
    vars: &[(String, String)],
    workspace: &std::path::Path,
) -> (Result<steps::Outputs, StepError>, String) {
    let state = tempfile::tempdir().unwrap();
    let log = Collected::new();
    let masked: Vec<(String, String)> = vars.iter().filter(|(k, _)| k == "REGISTRY_PASSWORD").cloned().collect();
    let cancel = CancellationToken::new();
    let step = steps::find(step).expect("a built-in step");
    let cx = StepContext {
        name: "image",
        inputs,
        vars,
        masked: &masked,
        workspace,
        state_dir: state.path(),
        signing_key: None,
        log: &log.writer,
        cancel: &cancel,
    };
    let out = step.run(cx).await;
    (out, log.text().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_steps_build_push_and_copy_with_credentials_from_variables() {
    let reg = Registry::start(Auth::Basic).await;
    let base = format!("{}/base/busybox@{}", reg.host, reg.push_base().await);
    let ws = tempfile::tempdir().unwrap();
    write_files(ws.path(), &[("Dockerfile", &format!("FROM {base}\nCOPY app.txt /app.txt\n"), 0o644), ("app.txt", "hello\n", 0o644)]);
    let vars: Vec<(String, String)> = vec![
        ("REGISTRY_USER".into(), USER.into()),
        ("REGISTRY_PASSWORD".into(), PASSWORD.into()),
        ("SOURCE_DATE_EPOCH".into(), "1700000000".into()),
        ("CI_COMMIT_SHA".into(), "0123456789abcdef0123456789abcdef01234567".into()),
    ];
    let build = |dest: Vec<String>| {
        inputs(&[
            ("destinations", StepInput::List(dest)),
            ("username_variable", text("REGISTRY_USER")),
            ("password_variable", text("REGISTRY_PASSWORD")),
        ])
    };
    let dest = vec![format!("{}/app/web:1", reg.host), format!("{}/app/web:main", reg.host)];
    let (out, log) = run("piste/image-build@v1", build(dest.clone()), &vars, ws.path()).await;
    let out = out.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let digest = get("digest");
    assert!(digest.starts_with("sha256:"), "{out:?}");
    assert_eq!(get("ref"), format!("{}/app/web@{digest}", reg.host));
    assert_eq!(reg.digest_of("app/web:main"), digest, "both tags name the manifest");
    assert!(!log.contains(PASSWORD), "no credential in the log:\n{log}");
    // The same inputs again: the same digest (SOURCE_DATE_EPOCH), nothing uploaded.
    let (again, log) = run("piste/image-build@v1", build(dest), &vars, ws.path()).await;
    assert_eq!(again.unwrap().iter().find(|(k, _)| k == "digest").map(|(_, v)| v.clone()), Some(digest.clone()));
    assert!(log.contains("skipped (present)"), "{log}");

    // Promote by digest to another repository of the registry.
    let copy = inputs(&[
        ("source", text(&format!("{}/app/web@{digest}", reg.host))),
        ("destinations", text(&format!("{}/release/web:1.0", reg.host))),
        ("username_variable", text("REGISTRY_USER")),
        ("password_variable", text("REGISTRY_PASSWORD")),
    ]);
    let (copied, log) = run("piste/image-copy@v1", copy, &vars, ws.path()).await;
    let copied = copied.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(copied.iter().find(|(k, _)| k == "digest").map(|(_, v)| v.as_str()), Some(digest.as_str()));
    assert_eq!(reg.tags("release/web"), ["1.0"]);

    // The catalog template's form: `names` under `repository`, `/` in a name becoming `-`.
    let kaniko_like = inputs(&[
        ("repository", text(&format!("{}/proj/", reg.host))),
        ("names", text("group/web:1.0  group/web:main")),
        ("username_variable", text("REGISTRY_USER")),
        ("password_variable", text("REGISTRY_PASSWORD")),
    ]);
    let (out, log) = run("piste/image-build@v1", kaniko_like, &vars, ws.path()).await;
    let out = out.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(out.iter().find(|(k, _)| k == "digest").map(|(_, v)| v.as_str()), Some(digest.as_str()), "the same image");
    let mut tags = reg.tags("proj/group-web");
    tags.sort();
    assert_eq!(tags, ["1.0", "main"]);
    let both = inputs(&[("names", text("web:1")), ("destinations", text(&format!("{}/x/web:1", reg.host)))]);
    let (err, _) = run("piste/image-build@v1", both, &vars, ws.path()).await;
    assert_eq!(err.unwrap_err(), StepError::Input("give `destinations` or `names`, not both".into()));
    let (err, _) = run("piste/image-build@v1", inputs(&[("names", text("web:1"))]), &vars, ws.path()).await;
    assert_eq!(err.unwrap_err(), StepError::Input("`names` needs `repository` (e.g. `harbor.example/project`)".into()));

    // A variable the inputs name but the job lacks: the job's error, naming it.
    let missing = inputs(&[
        ("destinations", text(&format!("{}/app/web:2", reg.host))),
        ("username_variable", text("NOPE_USER")),
        ("password_variable", text("REGISTRY_PASSWORD")),
    ]);
    let (err, _) = run("piste/image-build@v1", missing, &vars, ws.path()).await;
    assert_eq!(
        err.unwrap_err(),
        StepError::Input("`username_variable: NOPE_USER`: the job has no variable `NOPE_USER` (or it is empty)".into())
    );
    // A wrong password: the registry's refusal, and no tag.
    let mut wrong = vars.clone();
    wrong[1].1 = "wrong-password-123".into();
    let (err, _) = run("piste/image-build@v1", build(vec![format!("{}/app/web:3", reg.host)]), &wrong, ws.path()).await;
    assert!(matches!(&err, Err(StepError::Failed(m)) if m.contains("refused the credentials")), "{err:?}");
    assert!(!reg.tags("app/web").contains(&"3".to_string()));
}

/// The catalog template's `EXTRA_BUILD_ARGS` reach the build: `--target`, `--build-arg`,
/// `--label`, and `--registry-mirror` for a Docker Hub base (served here by the test registry
/// under `mirror/`); kaniko's own flags are ignored and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_args_from_the_kaniko_template_reach_the_build() {
    let reg = Registry::start(Auth::Basic).await;
    reg.push_base().await;
    let mut copy = vec!["copy".to_string(), "--quiet".into(), "--src-tls-verify=false".into(), "--dest-tls-verify=false".into()];
    copy.extend(reg.creds("src-"));
    copy.extend(reg.creds("dest-"));
    copy.extend([format!("docker://{}/base/busybox:1", reg.host), format!("docker://{}/mirror/library/busybox:1", reg.host)]);
    super::support::skopeo(&copy);
    let ws = tempfile::tempdir().unwrap();
    write_files(
        ws.path(),
        &[
            (
                "Dockerfile",
                "FROM busybox:1 AS runtime\nARG FLAVOUR=plain\nLABEL flavour=$FLAVOUR\nCOPY app.txt /\n\nFROM scratch AS other\nCOPY app.txt /other\n",
                0o644,
            ),
            ("app.txt", "hello\n", 0o644),
        ],
    );
    let vars: Vec<(String, String)> = vec![
        ("REGISTRY_USER".into(), USER.into()),
        ("REGISTRY_PASSWORD".into(), PASSWORD.into()),
        ("SOURCE_DATE_EPOCH".into(), "1700000000".into()),
    ];
    let extra =
        format!("--target=runtime --build-arg FLAVOUR=spicy --label team=web --registry-mirror {}/mirror --force --cache=true", reg.host);
    let step_inputs = inputs(&[
        ("destinations", text(&format!("{}/app/extra:1", reg.host))),
        ("username_variable", text("REGISTRY_USER")),
        ("password_variable", text("REGISTRY_PASSWORD")),
        ("extra_args", text(&extra)),
    ]);
    let (out, log) = run("piste/image-build@v1", step_inputs, &vars, ws.path()).await;
    out.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(log.contains("extra_args: ignored (kaniko's own machinery): --force --cache"), "{log}");
    assert!(log.contains(&format!("base `{}/mirror/library/busybox:1`", reg.host)), "the base came from the mirror: {log}");
    let config = reg.inspect("app/extra:1", true);
    assert_eq!(config["config"]["Labels"]["flavour"], "spicy", "{config:#}");
    assert_eq!(config["config"]["Labels"]["team"], "web");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2, "the `runtime` stage: the base layer and app.txt");

    let refused = inputs(&[("destinations", text(&format!("{}/app/extra:2", reg.host))), ("extra_args", text("--skip-tls-verify"))]);
    let (err, _) = run("piste/image-build@v1", refused, &vars, ws.path()).await;
    assert!(matches!(&err, Err(StepError::Input(m)) if m.contains("always verifies")), "{err:?}");
}

/// A masked variable in a build argument that ends up in the image stops the push; the
/// findings are in `.piste-leaks.sarif` in the job's workspace, never the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_build_arg_stops_the_push_and_the_findings_are_sarif_in_the_workspace() {
    let reg = Registry::start(Auth::Basic).await;
    let ws = tempfile::tempdir().unwrap();
    write_files(
        ws.path(),
        &[("Dockerfile", "FROM scratch\nARG TOKEN\nLABEL token=$TOKEN\nCOPY app.txt /\n", 0o644), ("app.txt", "x\n", 0o644)],
    );
    let vars: Vec<(String, String)> = vec![("REGISTRY_USER".into(), USER.into()), ("REGISTRY_PASSWORD".into(), PASSWORD.into())];
    let step_inputs = inputs(&[
        ("destinations", text(&format!("{}/app/leaky:1", reg.host))),
        ("username_variable", text("REGISTRY_USER")),
        ("password_variable", text("REGISTRY_PASSWORD")),
        ("build_args", text(&format!("TOKEN={PASSWORD}"))),
    ]);
    let (err, log) = run("piste/image-build@v1", step_inputs, &vars, ws.path()).await;
    let Err(StepError::Failed(message)) = &err else { panic!("{err:?}\n{log}") };
    assert!(message.contains("masked value(s) found in the image") && message.contains("config.config.Labels"), "{message}");
    assert!(log.contains("leak gate: findings written to `.piste-leaks.sarif`"), "{log}");
    let sarif = std::fs::read_to_string(ws.path().join(".piste-leaks.sarif")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    assert_eq!(parsed["version"], "2.1.0");
    for shown in [message.as_str(), log.as_str(), sarif.as_str()] {
        assert!(!shown.contains(PASSWORD), "the value is never shown: {shown}");
    }
    assert!(reg.tags("app/leaky").is_empty(), "nothing was pushed");
}
