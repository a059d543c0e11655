//! `run:` steps through a server runner: the built-in `piste/gitops-bump@v1` pushes to a
//! deployment repository served by `git daemon --enable=receive-pack`, its outputs reach the
//! next job as dotenv variables, and `GET /api/v1/jobs/{id}` shows the deploy commit; then the
//! whole delivery — image build, push, signature with the server's key, gitops commit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::registry::{Registry, signing_key};
use crate::support::{Forge, Http, RunnerProc, SECRET, Server, free_port, git, git_daemon_program, gitlab_push, job_id, wait_port};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// `fixtures/delivery/deploy` as a bare repository served with pushes enabled.
struct DeployRepo {
    dir: tempfile::TempDir,
    url: String,
    daemon: Child,
}

impl DeployRepo {
    fn new() -> DeployRepo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("envs/prod")).unwrap();
        for f in ["values.yaml", "kustomization.yaml"] {
            std::fs::copy(fixture(&format!("delivery/deploy/envs/prod/{f}")), work.join("envs/prod").join(f)).unwrap();
        }
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial"]);
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        git(dir.path(), &["clone", "-q", "--bare", "work", "repos/deploy.git"]);
        let port = free_port();
        let daemon = Command::new(git_daemon_program())
            .args(["--export-all", "--reuseaddr", "--enable=receive-pack", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", dir.path().join("repos").display()))
            .arg(dir.path().join("repos"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (Debian's git package)");
        wait_port(port);
        DeployRepo { dir, url: format!("git://127.0.0.1:{port}/deploy.git"), daemon }
    }

    fn bare(&self) -> PathBuf {
        self.dir.path().join("repos/deploy.git")
    }
}

impl Drop for DeployRepo {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pipeline_bumps_the_deploy_repo_through_a_server_runner_and_the_api_shows_the_commit() {
    let deploy = DeployRepo::new();
    let pipeline = std::fs::read_to_string(fixture("delivery/.gitlab-ci.yml")).unwrap();
    let forge = Forge::new(&format!("variables:\n  DEPLOY_REPO: {}\n{pipeline}", deploy.url));
    let server = Server::start(&forge, 10_000, "");
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);

    let (before, after) = forge.push("main", "deliver");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "deliver"), Some(SECRET), "steps-1").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 120).await;
    let deploy_job = job_id(&p, "deploy");
    let log = http.log(deploy_job).await;
    assert_eq!(p["status"], "success", "{p:#}\n{log}");

    let commit = git(&deploy.bare(), &["rev-parse", "main"]);
    assert_eq!(git(&deploy.bare(), &["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/values.yaml");
    let message = git(&deploy.bare(), &["log", "-1", "--format=%B", "main"]);
    assert!(message.contains(&format!("Piste-Pipeline: {id}")) && message.contains("Piste-Project: app"), "{message}");
    assert!(log.contains(&format!("deployed in {commit} (changed=true)")), "{log}");
    assert!(log.contains(":step_deploy\r"), "a collapsible section per step: {log}");
    assert!(log.contains("after_script sees success"), "{log}");
    let verify = http.log(job_id(&p, "verify")).await;
    assert!(verify.contains(&format!("verify sees DEPLOY_COMMIT={commit}")), "{verify}");

    let job: Value = http.client.get(format!("{}/api/v1/jobs/{deploy_job}", http.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(job["deploy_commit"], commit.as_str(), "{job:#}");
    assert_eq!(job["deploys"], serde_json::json!([{"step": "deploy", "commit": commit, "changed": true}]));
    let page = http.client.get(format!("{}/jobs/{deploy_job}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Deploy commit") && page.contains(&commit), "the job page shows the deploy commit");
    let build: Value =
        http.client.get(format!("{}/api/v1/jobs/{}", http.base, job_id(&p, "build"))).send().await.unwrap().json().await.unwrap();
    assert!(build.get("deploy_commit").is_none(), "{build:#}");
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files(&p)),
            Ok(t) if t.is_file() => out.push((p.display().to_string(), std::fs::read(&p).unwrap_or_default())),
            _ => {}
        }
    }
    out
}

/// `fixtures/delivery/package.gitlab-ci.yml` through `piste serve` and a shell runner: the image
/// is built and pushed to Debian's docker-registry on loopback, signed with the server's
/// `[signing]` key (which the job cannot see), verified with `openssl`, and the deployment is
/// pinned to its digest; the API and the job page (in chromium) list the image. A branch that is
/// not protected gets no key: its image is unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_built_signed_and_pinned_through_a_server_runner_and_the_job_page_lists_it() {
    let reg = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(keys.path());
    let deploy = DeployRepo::new();
    let pipeline = std::fs::read_to_string(fixture("delivery/package.gitlab-ci.yml")).unwrap();
    let forge = Forge::new(&format!("variables:\n  REGISTRY: \"{}\"\n  DEPLOY_REPO: {}\n{pipeline}", reg.host, deploy.url));
    std::fs::create_dir_all(forge.work().join("app")).unwrap();
    for f in ["Dockerfile", "index.html"] {
        std::fs::copy(fixture(&format!("delivery/app/{f}")), forge.work().join("app").join(f)).unwrap();
    }
    let signing = format!("[signing]\nkey_file = \"{}\"\n", key.display());
    let server = Server::start_full(&forge, 10_000, &signing, "visibility = \"public\"", None, Vec::new());
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);

    let (before, after) = forge.push("main", "deliver");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "deliver"), Some(SECRET), "image-1").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 180).await;
    let package = job_id(&p, "package");
    let log = http.log(package).await;
    assert_eq!(p["status"], "success", "{p:#}\n{log}\n{}", http.log(job_id(&p, "deploy")).await);

    // Pushed once, tagged twice; signed with the server's key; the provenance names the job.
    let digest = reg.inspect("app/web:main", false)["Digest"].as_str().unwrap().to_string();
    assert_eq!(reg.inspect(&format!("app/web:{}", &after[..8]), false)["Digest"], digest.as_str());
    assert_eq!(reg.raw("app/web:main")["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let statement = reg.verify_attached("app/web", &digest, &public);
    assert_eq!(statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"], after.as_str());
    assert_eq!(statement["predicate"]["buildDefinition"]["internalParameters"]["runner"], "node-shell", "{statement:#}");
    assert_eq!(statement["predicate"]["runDetails"]["metadata"]["invocationId"], format!("{id}/{package}"));
    assert!(log.contains("(signed=true); no key in the job's environment or files"), "{log}");
    // The key is in no log and nowhere in the server's data.
    let pem = std::fs::read_to_string(&key).unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(!log.contains(body) && !server.log().contains(body));
    for (path, bytes) in files(&server.data) {
        assert!(!bytes.windows(body.len()).any(|w| w == body.as_bytes()), "the signing key is in `{path}`");
    }

    // The deployment is pinned to the digest in a one-line commit.
    assert_eq!(git(&deploy.bare(), &["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/kustomization.yaml");
    let commit = git(&deploy.bare(), &["rev-parse", "main"]);

    // The API lists the image and the deploy commit.
    let get = |job: i64| {
        let (client, base) = (http.client.clone(), http.base.clone());
        async move { client.get(format!("{base}/api/v1/jobs/{job}")).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let image_ref = format!("{}/app/web@{digest}", reg.host);
    let tags = [format!("{}/app/web:{}", reg.host, &after[..8]), format!("{}/app/web:main", reg.host)];
    let job = get(package).await;
    assert_eq!(
        job["images"],
        serde_json::json!([{"step": "image", "digest": digest, "ref": image_ref, "tags": tags, "signed": true}]),
        "{job:#}"
    );
    assert_eq!(get(job_id(&p, "deploy")).await["deploy_commit"], commit.as_str());

    // The same commit again (another delivery): the same digest, nothing uploaded, no new
    // deployment commit.
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "deliver"), Some(SECRET), "image-1-again").await;
    let again = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p2 = http.wait_status(again, &["success", "failed", "canceled"], 180).await;
    assert_eq!(p2["status"], "success", "{p2:#}");
    let log2 = http.log(job_id(&p2, "package")).await;
    assert!(
        log2.contains(&format!("IMAGE_DIGEST={digest}")) && log2.contains("skipped (present)") && !log2.contains(": uploaded"),
        "{log2}"
    );
    assert_eq!(git(&deploy.bare(), &["rev-parse", "main"]), commit, "no new deployment commit");
    assert_eq!(get(job_id(&p2, "deploy")).await["deploys"][0]["changed"], false, "the value was there already");

    // The job page, in a real browser (CSP and all), lists the image and its tags.
    let browser = crate::browser::chromium();
    let mut page = crate::browser::Page::open(&browser).await;
    page.goto(&format!("{}/jobs/{package}", http.base)).await;
    let shown = page
        .eval("[...document.querySelectorAll('dd.image')].map(dd => [dd.querySelector('code').textContent, dd.textContent.includes('signed'), [...dd.querySelectorAll('li')].map(li => li.textContent)])")
        .await;
    assert_eq!(shown, serde_json::json!([[image_ref, true, tags]]));

    // A branch that is not protected gets no key: its image is pushed unsigned, and says so.
    forge.push("feature", "try");
    let feature = git(&forge.work(), &["rev-parse", "HEAD"]);
    let r = http.gitlab_hook(gitlab_push("feature", &after, &feature, "try"), Some(SECRET), "image-2").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 180).await;
    let log = http.log(job_id(&p, "package")).await;
    assert!(log.contains("the image is not signed") && log.contains("(signed=false)"), "{p:#}\n{log}");
    assert_eq!(get(job_id(&p, "package")).await["images"][0]["signed"], false);
}

/// A project secret passed as a build argument that lands in the image stops the push on a
/// server runner too: the job fails naming where, the value shown nowhere, nothing pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_build_arg_stops_the_push_through_a_server_runner() {
    let reg = Registry::start();
    let forge = Forge::new(&format!(
        "package:\n  run:\n    - name: image\n      step: piste/image-build@v1\n      inputs:\n        destinations: [\"{}/app/leaky:1\"]\n        build_args: [\"TOKEN=$DEPLOY_TOKEN\"]\n",
        reg.host
    ));
    std::fs::write(forge.work().join("Dockerfile"), "FROM scratch\nARG TOKEN\nENV API_TOKEN=$TOKEN\n").unwrap();
    let server = Server::start(&forge, 10_000, "");
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);
    let (before, after) = forge.push("main", "leak");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "leak"), Some(SECRET), "leak-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 120).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    let job: Value =
        http.client.get(format!("{}/api/v1/jobs/{}", http.base, job_id(&p, "package"))).send().await.unwrap().json().await.unwrap();
    let reason = job["failure_reason"].as_str().unwrap_or_default().to_string();
    let log = http.log(job_id(&p, "package")).await;
    assert!(log.contains("masked value(s) found in the image") && log.contains("config.config.Env[0]"), "{job:#}\n{log}");
    for shown in [reason.as_str(), log.as_str(), &server.log()] {
        assert!(!shown.contains("tok-123456-secret"), "the secret is shown: {shown}");
    }
    let tags = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false", &format!("docker://{}/app/leaky", reg.host)])
        .output()
        .unwrap();
    assert!(!tags.status.success() || !String::from_utf8_lossy(&tags.stdout).contains("\"1\""), "nothing was pushed");
}
