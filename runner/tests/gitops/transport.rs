//! Bumps over the transports the `git` program carries: `git http-backend` behind Debian's
//! nginx over HTTPS (a CA made here, Basic authentication) and Debian's sshd (a user key, a
//! host key checked strictly), both on 127.0.0.1 and stopped after. Credentials never show in
//! a message, a log or a file the runner keeps.

use std::path::Path;

use pipeline_spec::model::StepInput;
use runner::joblog::{Input, LogWriter};
use runner::steps::gitops::{Auth, Bump, BumpError, bump};
use runner::steps::{self, Inputs, StepContext, StepError};
use tokio_util::sync::CancellationToken;

use crate::https_forge::{HttpsForge, PASSWORD, USER};
use crate::ssh_forge::SshForge;
use crate::{Remote, key};

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&p));
        } else if e.file_type().unwrap().is_file() {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn assert_nowhere(dir: &Path, secret: &str) {
    for (path, bytes) in files(dir) {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is in `{path}`");
    }
}

/// Runs the `piste/gitops-bump@v1` step as a job would, returning its outputs and its log.
async fn step(
    inputs: &[(&str, &str)],
    vars: &[(&str, &str)],
    workspace: &Path,
    state: &Path,
) -> (Result<steps::Outputs, StepError>, String) {
    let (writer, mut rx) = LogWriter::channel(64);
    let collect = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(i) = rx.recv().await {
            if let Input::Line(l) = i {
                text.push_str(&l);
                text.push('\n');
            }
        }
        text
    });
    let inputs = Inputs(inputs.iter().map(|(k, v)| (k.to_string(), StepInput::Text(v.to_string()))).collect());
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let masked: Vec<(String, String)> = vars.iter().filter(|(k, _)| k.ends_with("TOKEN") || k.ends_with("KEY")).cloned().collect();
    let cancel = CancellationToken::new();
    let cx = StepContext {
        name: "deploy",
        inputs,
        vars: &vars,
        masked: &masked,
        workspace,
        state_dir: state,
        signing_key: None,
        log: &writer,
        cancel: &cancel,
    };
    let out = steps::find("piste/gitops-bump@v1").unwrap().run(cx).await;
    drop(writer);
    (out, collect.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_over_https_with_a_token_variable_and_a_private_ca() {
    let remote = Remote::new();
    let forge = HttpsForge::serve(&remote.home().join("served"), &remote.home().join("nginx"));
    let url = format!("{}deploy.git", forge.base);
    // The job's checkout holds the CA bundle (`ca_file` is relative to it).
    let ws = remote.home().join("workspace");
    std::fs::create_dir_all(ws.join("certs")).unwrap();
    std::fs::copy(&forge.ca.cert, ws.join("certs/ca.pem")).unwrap();
    let state = remote.home().join("runner-state");
    let token = format!("{USER}:{PASSWORD}");
    let inputs = [
        ("repo", url.as_str()),
        ("branch", "main"),
        ("file", "envs/prod/values.yaml"),
        ("key", "image.tag"),
        ("value", "2.0.0"),
        ("credentials_variable", "DEPLOY_TOKEN"),
        ("ca_file", "certs/ca.pem"),
    ];
    let vars = [("DEPLOY_TOKEN", token.as_str()), ("CI_PROJECT_PATH", "group/app"), ("CI_PIPELINE_ID", "5"), ("CI_JOB_ID", "9")];
    let (out, log) = step(&inputs, &vars, &ws, &state).await;
    let out = out.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let commit = remote.git(&["rev-parse", "main"]);
    assert_eq!(out, [("commit".to_string(), commit.clone()), ("changed".to_string(), "true".to_string())]);
    assert_eq!(remote.git(&["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/values.yaml");
    assert!(log.contains(&format!("Pushed {} to `main` of `{url}`", &commit[..12])), "{log}");
    // The same bump again: nothing to commit.
    let (again, log) = step(&inputs, &vars, &ws, &state).await;
    assert_eq!(again.unwrap()[1].1, "false", "{log}");
    assert_eq!(remote.commits(), 2);
    // Neither the token nor its Basic form in the log or in what the runner keeps.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(&token);
    assert!(!log.contains(PASSWORD) && !log.contains(&basic), "{log}");
    assert_nowhere(&state, PASSWORD);
    assert_nowhere(&state, &basic);

    // A token written in the URL works too and is shown redacted.
    let in_url = url.replace("https://", &format!("https://{USER}:{PASSWORD}@"));
    let (out, log) = step(
        &[("repo", &in_url), ("file", "envs/prod/values.yaml"), ("key", "image.tag"), ("value", "2.0.1"), ("ca_file", "certs/ca.pem")],
        &vars,
        &ws,
        &state,
    )
    .await;
    out.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(!log.contains(PASSWORD) && log.contains("The remote's default branch is `main`"), "{log}");

    // Failures are clear and hold no credential.
    let b = |auth: Auth, ca: bool| Bump {
        repo: url.clone(),
        auth,
        ca_file: ca.then(|| forge.ca.cert.clone()),
        ..remote.bump(key("image.tag"), "3.0.0", 6)
    };
    let token = || Auth::Token { user: USER.into(), token: PASSWORD.into() };
    let no_ca = bump(&b(token(), false)).unwrap_err().to_string();
    assert!(no_ca.contains(&url) && no_ca.to_lowercase().contains("certificate"), "{no_ca}");
    let wrong = bump(&b(Auth::Token { user: USER.into(), token: "wrong-token-value".into() }, true)).unwrap_err().to_string();
    assert!(wrong.contains("the remote refused the credentials") && !wrong.contains("wrong-token-value"), "{wrong}");
    let none = bump(&b(Auth::None, true)).unwrap_err().to_string();
    assert!(none.contains("give `credentials_variable`"), "{none}");
    for text in [&no_ca, &wrong, &none] {
        assert!(!text.contains(PASSWORD), "{text}");
    }

    // A push refused by a hook: the hook's words; a commit that raced in: absorbed by the retry.
    let foreign = remote.commit_aside("README", "deploy repository\n");
    remote.hook("pre-receive", "#!/bin/sh\necho 'deploys are frozen (OPS-12)' >&2\nexit 1\n");
    let refused = bump(&b(token(), true)).unwrap_err();
    assert!(matches!(refused, BumpError::Refused { .. }) && refused.to_string().contains("deploys are frozen (OPS-12)"), "{refused}");
    remote.hook(
        "pre-receive",
        &format!(
            "#!/bin/sh\nif [ ! -e raced ]; then touch raced; env -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES git update-ref refs/heads/main {foreign}; fi\nexit 0\n"
        ),
    );
    let done = bump(&b(token(), true)).unwrap();
    assert!(done.changed && done.notes.iter().any(|n| n.contains("rejected") && n.contains("trying again")), "{:?}", done.notes);
    assert_eq!(remote.git(&["rev-parse", "main~1"]), foreign);
    assert_eq!(remote.git(&["rev-list", "--merges", "main"]), "", "linear history");
}

#[test]
fn a_bump_over_ssh_with_a_key_and_known_hosts_given_as_text() {
    let remote = Remote::new();
    let forge = SshForge::serve(&remote.home().join("sshd"));
    let url = forge.url(&remote.bare());
    let key_text = std::fs::read_to_string(&forge.key).unwrap();
    let hosts = std::fs::read_to_string(&forge.known_hosts).unwrap();
    let b = |auth: Auth, known: Option<&str>| Bump {
        repo: url.clone(),
        auth,
        known_hosts: known.map(str::to_string),
        ..remote.bump(key("image.tag"), "4.0.0", 8)
    };
    // The key as a CI variable often arrives without its final newline.
    let done = bump(&b(Auth::SshKey(key_text.trim_end().to_string()), Some(&hosts))).unwrap();
    assert!(done.changed);
    assert_eq!(remote.git(&["rev-parse", "main"]), done.commit);
    assert_eq!(remote.git(&["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/values.yaml");
    let again = bump(&b(Auth::SshKey(key_text.clone()), Some(&hosts))).unwrap();
    assert!(!again.changed && again.commit == done.commit);
    let body: String = key_text.lines().nth(1).unwrap().to_string();
    assert_nowhere(&remote.home().join("runner-cache"), &body);

    // A host whose key is not known: refused (host keys are checked strictly).
    let other_host = hosts.replace("[127.0.0.1]", "[127.0.0.2]");
    let unknown = bump(&b(Auth::SshKey(key_text.clone()), Some(&other_host))).unwrap_err().to_string();
    assert!(unknown.contains("Host key verification failed") && unknown.contains("known_hosts_variable"), "{unknown}");
    // Another key: refused.
    let other = remote.home().join("other_key");
    let out = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other).output().unwrap();
    assert!(out.status.success());
    let wrong = bump(&b(Auth::SshKey(std::fs::read_to_string(&other).unwrap()), Some(&hosts))).unwrap_err().to_string();
    assert!(wrong.contains("Permission denied"), "{wrong}");
    assert_eq!(remote.commits(), 2);
}
