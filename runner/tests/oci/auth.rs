//! Registries that ask for a login: htpasswd (Basic) and a token service (Bearer).

use runner::oci::copy::{CopyRequest, copy};
use runner::oci::{OciError, build::build_and_push};

use super::support::{Auth, Collected, PASSWORD, Registry, request, write_files};

fn context(root: &std::path::Path, from: &str) -> std::path::PathBuf {
    let ctx = root.join("ctx");
    write_files(
        &ctx,
        &[("Dockerfile", &format!("FROM {from}\nCOPY index.html /www/\nCMD [\"httpd\", \"-f\"]\n"), 0o644), ("index.html", "hi\n", 0o644)],
    );
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_wrong_password_fails_once_and_creates_no_tag() {
    let reg = Registry::start(Auth::Basic).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = context(root.path(), "scratch");
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &["app/web:1", "app/web:2"]);
    req.registry = reg.options("not-the-password");
    let err = build_and_push(&req, &log.writer).await.unwrap_err();
    let text = log.text().await;
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    let message = err.to_string();
    assert_eq!(
        message,
        format!(
            "registry `{0}` refused the credentials of `ci-robot`: the registry refused the login (401); check the user and password (or robot account) given for `{0}`",
            reg.host
        )
    );
    assert!(!message.contains("not-the-password") && !text.contains("not-the-password"));
    assert!(reg.tags("app/web").is_empty(), "no tag was created");
    assert_eq!(reg.requests("POST", "/blobs/uploads/"), 0, "no upload was started");

    let log = Collected::new();
    let out = build_and_push(&request(&reg, &ctx, &["app/web:1", "app/web:2"]), &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    drop(log);
    let mut tags = reg.tags("app/web");
    tags.sort();
    assert_eq!(tags, ["1", "2"]);
    assert_eq!(reg.digest_of("app/web:2"), out.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_pushes_and_copies_with_a_mount() {
    let reg = Registry::start(Auth::Token).await;
    let base = reg.push_base().await;
    let root = tempfile::tempdir().unwrap();
    let ctx = context(root.path(), &format!("{}/base/busybox@{base}", reg.host));
    let log = Collected::new();
    let out = build_and_push(&request(&reg, &ctx, &["app/web:1"]), &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let text = log.text().await;
    assert!(text.contains(&format!("mounted from {}/base/busybox", reg.host)), "{text}");
    assert_eq!(reg.digest_of("app/web:1"), out.digest);

    // Promote by digest to another repository of the same registry: every blob mounted.
    let log = Collected::new();
    let req = CopyRequest {
        source: out.image_ref.clone(),
        destinations: vec![format!("{}/prod/web:stable", reg.host)],
        registry: reg.options(PASSWORD),
    };
    let copied = copy(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let text = log.text().await;
    assert_eq!(copied.digest, out.digest);
    assert_eq!(copied.image_ref, format!("{}/prod/web@{}", reg.host, out.digest));
    assert_eq!(text.matches("mounted from").count(), 3, "two layers and the config:\n{text}");
    assert!(!text.contains("uploaded"), "{text}");
    assert_eq!(reg.digest_of("prod/web:stable"), out.digest);

    // A wrong password: the token service refuses, nothing is tagged.
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &["app/other:1"]);
    req.registry = reg.options("wrong");
    let err = build_and_push(&req, &log.writer).await.unwrap_err();
    drop(log);
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("the token service"), "{err}");
    assert!(reg.tags("app/other").is_empty());
}
