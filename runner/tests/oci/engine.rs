//! Dockerfiles with `RUN`: built by the Docker Engine, pushed by piste.

use runner::oci::build::build_and_push;

use super::support::{Auth, Collected, Registry, docker_cli, request, write_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_dockerfile_is_built_by_the_engine_and_pushed_by_piste() {
    let reg = Registry::start(Auth::None).await;
    reg.push_base().await;
    let root = tempfile::tempdir().unwrap();
    let ctx = root.path().join("ctx");
    let dockerfile = format!(
        "FROM {}/base/busybox:1\nARG WHO=engine\nCOPY note.txt /note.txt\nRUN echo \"built by the $WHO\" > /built.txt && cat /note.txt >> /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
        reg.host
    );
    write_files(
        &ctx,
        &[
            ("Dockerfile", &dockerfile, 0o644),
            ("note.txt", "with a note\n", 0o644),
            (".dockerignore", "*.tmp\n", 0o644),
            ("x.tmp", "no", 0o644),
        ],
    );
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &["app/ran:1"]);
    req.build_args = vec![("WHO".into(), "Docker Engine".into())];
    let out = build_and_push(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let text = log.text().await;
    assert!(!out.native);
    assert!(text.contains("building with the Docker Engine"), "{text}");
    assert_eq!(reg.digest_of("app/ran:1"), out.digest);
    let manifest = reg.raw("app/ran:1");
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3, "base, COPY, RUN: {manifest}");
    let config = reg.inspect("app/ran:1", true);
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.revision"], "0123456789abcdef0123456789abcdef01234567");
    let image = format!("{}/app/ran@{}", reg.host, out.digest);
    let run = docker_cli(&["run", "--rm", &image]);
    let _ = docker_cli(&["rmi", &image]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "built by the Docker Engine\nwith a note\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_engine_a_run_dockerfile_fails_saying_so() {
    let reg = Registry::start(Auth::None).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = root.path().join("ctx");
    write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY a /a\nRUN [\"/a\"]\n", 0o644), ("a", "x", 0o755)]);
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &["app/ran:1"]);
    req.docker_host = Some(format!("unix://{}", root.path().join("no-docker.sock").display()));
    let err = build_and_push(&req, &log.writer).await.unwrap_err().to_string();
    drop(log);
    assert!(err.contains("Dockerfile:3: this Dockerfile has `RUN`, which needs the Docker Engine, and none answered"), "{err}");
    assert!(reg.tags("app/ran").is_empty());
}
