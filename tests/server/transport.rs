//! HTTPS with private CAs, end to end. A real `piste serve` whose project lives behind HTTPS
//! (nginx + `git http-backend`, a CA made by the test, Basic authentication): with `ca_file`
//! and the token the pipeline is fetched, planned and run; without the CA the pipeline fails to
//! plan with an error naming the URL, and the token appears nowhere. And a `piste serve` that is
//! itself behind an nginx TLS proxy: a runner registered with `--ca-file` takes jobs and checks
//! out through it, and the jobs' `CI_SERVER_*` and page URLs are the `external_url`'s.

use serde_json::Value;

use crate::https_forge::{HttpsForge, PASSWORD, USER};
use crate::support::{Forge, Http, REGISTRATION, RunnerProc, SECRET, Server, free_port, gitlab_push, job_id};
use crate::tls_proxy::TlsProxy;

async fn push_to(http: &Http, project: &str, body: Vec<u8>) -> i64 {
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/{project}", http.base))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_behind_https_with_a_private_ca() {
    let forge = Forge::new("build:\n  script: [echo fetched-over-https]\n");
    let (before, after) = forge.push("main", "first");
    let nginx_dir = tempfile::tempdir().unwrap();
    let https = HttpsForge::serve(&forge.dir.path().join("repos"), nginx_dir.path());
    let url = format!("{}app.git", https.base);
    let project = |name: &str| {
        format!(
            "[[project]]\nname = \"{name}\"\nrepo = \"{url}\"\nwebhook_secret = \"{SECRET}\"\nrepo_username = \"{USER}\"\nrepo_token = \"{PASSWORD}\"\n"
        )
    };

    let trusted = format!("ca_file = \"{}\"\n{}", https.ca.cert.display(), project("secure"));
    let server = Server::start(&forge, 10_000, &trusted);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let http = Http::new(&server);
    let id = push_to(&http, "secure", gitlab_push("main", &before, &after, "first")).await;
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert!(http.log(job_id(&p, "build")).await.contains("fetched-over-https"));

    // Without the CA: the pipeline fails to plan, saying which URL and why.
    let untrusted = Server::start(&forge, 10_000, &project("secure"));
    let http = Http::new(&untrusted);
    let id = push_to(&http, "secure", gitlab_push("main", &before, &after, "first")).await;
    let p = http.wait_status(id, &["failed"], 60).await;
    let error = p["error"].as_str().unwrap_or_default();
    assert!(error.contains(&url) && error.to_lowercase().contains("certificate"), "{p:#}");
    for text in [p.to_string(), untrusted.log(), server.log()] {
        assert!(!text.contains(PASSWORD), "the token in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_checks_out_from_a_server_behind_https() {
    let forge = Forge::new(concat!(
        "show:\n  script:\n",
        "    - cat checked-out.txt\n",
        "    - echo \"server=$CI_SERVER_URL host=$CI_SERVER_HOST port=$CI_SERVER_PORT protocol=$CI_SERVER_PROTOCOL fqdn=$CI_SERVER_FQDN\"\n",
        "    - echo \"job=$CI_JOB_URL\"\n",
        "    - echo \"pipeline=$CI_PIPELINE_URL\"\n",
        "    - echo \"project=$CI_PROJECT_URL\"\n",
    ));
    std::fs::write(forge.work().join("checked-out.txt"), "from-the-commit-over-https\n").unwrap();
    let (before, after) = forge.push("main", "first");
    let port = free_port();
    let external = format!("https://127.0.0.1:{port}");
    let server = Server::start(&forge, 10_000, &format!("external_url = \"{external}\"\n"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = TlsProxy::serve(port, server.port, dir.path());
    let ca = proxy.ca.cert.to_str().unwrap();

    // Without the CA, registration through the proxy fails and says why.
    let config = dir.path().join("untrusting.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["runner", "register", "--url", &proxy.url, "--token", REGISTRATION, "--name", "x", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success() && err.contains("certificate"), "{err}");
    assert!(!config.exists(), "nothing written");

    // With `--ca-file`: registered, jobs taken and checked out through the proxy.
    let runner = RunnerProc::start_at(&proxy.url, "node", "shell", &["--ca-file", ca]);
    let http = Http::new(&server);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "tls-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    let show = job_id(&p, "show");
    let log = http.log(show).await;
    assert_eq!(p["status"], "success", "{p:#}\n{log}\n{}", runner.log());
    assert!(log.contains("from-the-commit-over-https"), "{log}");
    assert!(
        log.contains(&format!("server={external} host=127.0.0.1 port={port} protocol=https fqdn=127.0.0.1:{port}")),
        "CI_SERVER_* from `external_url`: {log}"
    );
    let (job_url, pipeline_url) = (format!("{external}/jobs/{show}"), format!("{external}/pipelines/{id}"));
    assert!(log.contains(&format!("job={job_url}\n")) && log.contains(&format!("pipeline={pipeline_url}\n")), "{log}");
    assert!(log.contains(&format!("project={external}/projects/app\n")), "{log}");

    // `piste logs` reads it through the proxy with the CA (and not without).
    let logs = |ca: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_piste"));
        cmd.args(["logs", "--url", &proxy.url, &show.to_string()]).env("PISTE_TOKEN", &server.token).env_remove("PISTE_CA_FILE");
        if let Some(ca) = ca {
            cmd.args(["--ca-file", ca]);
        }
        cmd.output().unwrap()
    };
    let out = logs(Some(ca));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-the-commit-over-https"));
    let out = logs(None);
    assert!(!out.status.success(), "a server whose CA is not trusted");

    // Those links open the pages, through the proxy, for someone who trusts its CA.
    let pem = std::fs::read(&proxy.ca.cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .default_headers([(reqwest::header::AUTHORIZATION, format!("Bearer {}", server.token).parse().unwrap())].into_iter().collect())
        .build()
        .unwrap();
    for url in [&job_url, &pipeline_url] {
        let page = client.get(url).send().await.unwrap();
        assert_eq!(page.status(), 200, "{url}");
        assert!(page.text().await.unwrap().contains("show"), "{url}");
    }
}
