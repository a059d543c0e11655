//! Native assembly (no `RUN`): what skopeo sees, reproducibility, re-push, the Engine runs it,
//! and the leak gate.

use std::path::Path;
use std::time::{Duration, SystemTime};

use runner::oci::{OciError, build::build_and_push};

use super::support::{Auth, Collected, Registry, docker_cli, request, write_files};

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE
FROM ${BASE} AS base

FROM scratch AS assets
COPY --chmod=0755 tools/hello.sh /opt/tools/
COPY static /static

FROM base
ARG GREETING=hello
ENV GREETING=$GREETING \
    APP_HOME=/app
LABEL com.example.team="delivery" version="1.0"
WORKDIR $APP_HOME
# the application's files, owned by the user it runs as
COPY --chown=1000:1000 app/ ./
COPY --from=assets /opt/tools/hello.sh /usr/local/bin/hello
COPY --from=assets /static /srv/static
USER 1000
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/message.txt; ls -ln /app; /usr/local/bin/hello; ls /srv/static"]
"#;

/// The same project twice: files written in another order, other modes (umask), other mtimes.
fn context(dir: &Path, variant: u32) {
    let mut files = vec![
        ("Dockerfile", DOCKERFILE, 0o644),
        (".dockerignore", "**/*.log\napp/secret.txt\n", 0o644),
        ("app/message.txt", "message from the context\n", if variant == 0 { 0o600 } else { 0o664 }),
        ("app/debug.log", "ignored\n", 0o644),
        ("app/secret.txt", "ignored too\n", 0o644),
        ("static/index.html", "<h1>static</h1>\n", if variant == 0 { 0o644 } else { 0o666 }),
        ("tools/hello.sh", "#!/bin/sh\necho \"$GREETING from hello.sh\"\n", if variant == 0 { 0o700 } else { 0o775 }),
    ];
    if variant == 1 {
        files.reverse();
    }
    write_files(dir, &files);
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + u64::from(variant) * 12_345);
    for (path, _, _) in &files {
        std::fs::File::options().write(true).open(dir.join(path)).unwrap().set_modified(when).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_build_is_reproducible_pushes_once_and_runs_in_the_engine() {
    let reg = Registry::start(Auth::None).await;
    let base = reg.push_base().await;
    let root = tempfile::tempdir().unwrap();
    let (one, two) = (root.path().join("one"), root.path().join("two"));
    context(&one, 0);
    context(&two, 1);
    let args = vec![("BASE".to_owned(), format!("{}/base/busybox:1", reg.host)), ("GREETING".to_owned(), "bonjour".to_owned())];

    let log = Collected::new();
    let mut req = request(&reg, &one, &["app/web:1", "app/web:main"]);
    req.build_args = args.clone();
    let first = build_and_push(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let log1 = log.text().await;
    assert!(first.native);
    assert_eq!(first.image_ref, format!("{}/app/web@{}", reg.host, first.digest));
    assert_eq!(first.base_images, vec![format!("{}/base/busybox@{base}", reg.host)]);
    assert!(log1.contains("mounted from"), "the base layer is mounted from base/busybox:\n{log1}");
    let uploads_after_first = reg.requests("PATCH", "/blobs/uploads/") + reg.requests("PUT", "/blobs/uploads/");

    // What an independent client sees.
    assert_eq!(reg.digest_of("app/web:1"), first.digest);
    assert_eq!(reg.digest_of("app/web:main"), first.digest);
    let manifest = reg.raw("app/web:1");
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4, "the base layer and three COPY layers: {manifest}");
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"));
    let config = reg.inspect("app/web:1", true);
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.source"], "https://forge.example/group/app");
    assert_eq!(labels["org.opencontainers.image.revision"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(labels["org.opencontainers.image.base.digest"], base.as_str());
    assert_eq!(labels["com.example.team"], "delivery");
    let env: Vec<&str> = config["config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(env, ["PATH=/bin", "GREETING=bonjour", "APP_HOME=/app"]);
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["config"]["User"], "1000");
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);

    // The same inputs from another checkout: the same digest, and nothing uploaded.
    let log = Collected::new();
    let mut req = request(&reg, &two, &["app/web:again"]);
    req.build_args = args;
    let second = build_and_push(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let log2 = log.text().await;
    assert_eq!(second.digest, first.digest, "same inputs, other mtimes/modes/order → same digest");
    assert_eq!(log2.matches("skipped (present)").count(), 5, "4 layers and the config:\n{log2}");
    assert!(!log2.contains("uploaded"), "{log2}");
    let uploads_after_second = reg.requests("PATCH", "/blobs/uploads/") + reg.requests("PUT", "/blobs/uploads/");
    assert_eq!(uploads_after_second, uploads_after_first, "the registry saw no upload on re-push");

    // umoci, another independent reader, unpacks the layers: files, modes and owners.
    let layout = root.path().join("layout");
    super::support::skopeo(&[
        "copy".into(),
        "--quiet".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{}/app/web:1", reg.host),
        format!("oci:{}:web", layout.display()),
    ]);
    let bundle = root.path().join("bundle");
    let unpack = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:web", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci (Debian package `umoci`)");
    assert!(unpack.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&unpack.stderr));
    {
        use std::os::unix::fs::MetadataExt;
        let rootfs = bundle.join("rootfs");
        let message = std::fs::metadata(rootfs.join("app/message.txt")).unwrap();
        assert_eq!((message.mode() & 0o7777, message.uid(), message.gid()), (0o644, 1000, 1000));
        let hello = std::fs::metadata(rootfs.join("usr/local/bin/hello")).unwrap();
        assert_eq!((hello.mode() & 0o7777, hello.uid()), (0o755, 0));
        assert_eq!(std::fs::read_to_string(rootfs.join("srv/static/index.html")).unwrap(), "<h1>static</h1>\n");
        assert!(!rootfs.join("app/debug.log").exists() && !rootfs.join("app/secret.txt").exists());
        assert!(rootfs.join("bin/busybox").exists(), "the base layer is there");
    }

    // The Docker Engine pulls it from 127.0.0.1 and runs it.
    let image = format!("{}/app/web@{}", reg.host, first.digest);
    let run = docker_cli(&["run", "--rm", &image]);
    let _ = docker_cli(&["rmi", &image]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "docker run failed: {}", String::from_utf8_lossy(&run.stderr));
    assert!(out.contains("message from the context"), "{out}");
    assert!(out.contains("bonjour from hello.sh"), "{out}");
    assert!(out.contains("index.html"), "{out}");
    let owner = out.lines().find(|l| l.contains("message.txt")).unwrap();
    assert!(owner.starts_with("-rw-r--r--") && owner.contains(" 1000 "), "owned by 1000, mode 0644: {owner}");
    assert!(!out.contains("debug.log") && !out.contains("secret.txt"), ".dockerignore is honoured: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_value_in_the_image_stops_the_push_before_any_byte() {
    let reg = Registry::start(Auth::None).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = root.path().join("ctx");
    let secret = "s3cr3t-deploy-token-42";
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
    write_files(
        &ctx,
        &[
            ("Dockerfile", "FROM scratch\nARG TOKEN\nENV API_TOKEN=$TOKEN\nCOPY conf /etc/app/\n", 0o644),
            ("conf/settings.ini", &format!("[auth]\ntoken = {encoded}\n"), 0o644),
        ],
    );
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &["app/web:1"]);
    req.build_args = vec![("TOKEN".into(), secret.into())];
    req.masked = vec![secret.into()];
    let err = build_and_push(&req, &log.writer).await.unwrap_err();
    let text = log.text().await;
    let OciError::Leak { findings, sarif } = &err else { panic!("expected a leak error, got {err}") };
    let wheres: Vec<&str> = findings.iter().map(|f| f.location.as_str()).collect();
    assert!(wheres.iter().any(|w| w.contains("config.config.Env[0]")), "{wheres:?}");
    assert!(wheres.iter().any(|w| w.contains("layer 1") && w.contains("/etc/app/settings.ini")), "{wheres:?}");
    assert!(findings.iter().any(|f| f.form == "base64"));
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), findings.len());
    let message = err.to_string();
    for shown in [message.as_str(), text.as_str(), &sarif.to_string()] {
        assert!(!shown.contains(secret) && !shown.contains(&encoded), "the secret is never shown: {shown}");
    }
    assert!(reg.tags("app/web").is_empty());
    assert_eq!(reg.requests("POST", "app/web") + reg.requests("HEAD", "app/web") + reg.requests("PUT", "app/web"), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_errors_name_the_line_and_column() {
    let reg = Registry::start(Auth::None).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = root.path().join("ctx");
    write_files(
        &ctx,
        &[("Dockerfile", "FROM scratch\nCOPY missing.txt /x\n", 0o644), ("build/Dockerfile.bad", "FROM scratch\n  CPY a /b\n", 0o644)],
    );
    let log = Collected::new();
    let req = request(&reg, &ctx, &["app/web:1"]);
    let err = build_and_push(&req, &log.writer).await.unwrap_err().to_string();
    assert!(
        err.ends_with("Dockerfile:2:1: `missing.txt`: `missing.txt` is not in the build context (No such file or directory (os error 2))"),
        "{err}"
    );
    let mut req = request(&reg, &ctx, &["app/web:1"]);
    req.dockerfile = "build/Dockerfile.bad".into();
    let err = build_and_push(&req, &log.writer).await.unwrap_err().to_string();
    assert!(err.ends_with("build/Dockerfile.bad:2:3: unknown instruction `CPY`; did you mean `COPY`?"), "{err}");
    drop(log);
    assert!(reg.tags("app/web").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_during_an_upload_is_retried_and_the_push_completes() {
    use super::support::FlakyProxy;
    let reg = Registry::start(Auth::None).await;
    let proxy = FlakyProxy::start(&reg.host, 2);
    let root = tempfile::tempdir().unwrap();
    let ctx = root.path().join("ctx");
    let big: String = (0..200_000).map(|i| format!("{i:08}\n")).collect();
    write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY data.txt /\n", 0o644), ("data.txt", &big, 0o644)]);
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &[]);
    req.destinations = vec![format!("{}/app/flaky:1", proxy.host)];
    let out = build_and_push(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let text = log.text().await;
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(text.matches("upload a chunk: the registry answered 503, retrying").count(), 2, "{text}");
    assert!(text.contains("uploaded, 2 retries"), "{text}");
    assert_eq!(reg.digest_of("app/flaky:1"), out.digest, "the registry has the image, digest checked");
}

/// `COPY --from=<image>` reads that image's layers, and `COPY --from=<stage>` finds what the
/// stage's base image holds; the result runs in the Docker Engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_an_image_and_from_a_stages_base_image_reads_their_layers() {
    let reg = Registry::start(Auth::None).await;
    let base_digest = reg.push_base().await;
    let base = format!("{}/base/busybox:1", reg.host);
    let root = tempfile::tempdir().unwrap();
    let ctx = root.path().join("ctx");
    let dockerfile = format!(
        "FROM {base} AS builder\nCOPY greeting.txt /work/\n\n\
         FROM scratch\nCOPY --from={base} /bin /bin\nCOPY --from=builder /etc/passwd /etc/passwd\n\
         COPY --from=builder /work/greeting.txt /greeting.txt\nCMD [\"/bin/sh\", \"-c\", \"cat /greeting.txt; head -1 /etc/passwd; ls -l /bin/cat\"]\n"
    );
    write_files(&ctx, &[("Dockerfile", &dockerfile, 0o644), ("greeting.txt", "hello from the context\n", 0o644)]);
    let log = Collected::new();
    let req = request(&reg, &ctx, &["app/copied:1"]);
    let out = build_and_push(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let text = log.text().await;
    assert!(out.native, "no `RUN`: assembled natively");
    assert_eq!(out.base_images, [format!("{}/base/busybox@{base_digest}", reg.host)], "the image copied from is recorded");
    assert_eq!(text.matches("fetched layer").count(), 1, "the base layer is fetched once for both copies:\n{text}");

    let image = format!("{}/app/copied@{}", reg.host, out.digest);
    let run = docker_cli(&["run", "--rm", &image]);
    let _ = docker_cli(&["rmi", &image]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "docker run failed: {}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("hello from the context") && stdout.contains("root:x:0:0:root"), "{stdout}");
    assert!(stdout.contains("/bin/cat -> busybox"), "links are copied as links: {stdout}");

    // A path the image does not have: the line, the path and the image.
    write_files(&ctx, &[("Dockerfile", &format!("FROM scratch\nCOPY --from={base} /usr/bin/env /env\n"), 0o644)]);
    let log = Collected::new();
    let err = build_and_push(&request(&reg, &ctx, &["app/copied:2"]), &log.writer).await.unwrap_err().to_string();
    drop(log);
    assert!(err.ends_with(&format!("Dockerfile:2:1: `/usr/bin/env` is not in the image `{base}`")), "{err}");
}
