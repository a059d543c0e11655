//! Reuse of job results through `piste serve` and real `piste runner` processes (shell
//! executor): the runner computes each job's key with the function `piste run` uses and asks
//! the server, which keeps the project's successes. Every job appends a line to `$RUNS/<job>`
//! (a folder outside the runner), so "ran" and "reused" are counted from what processes did.
//!
//! GitLab has no such feature; where its rules meet it, they are followed: `rules:changes`
//! is true for a branch pushed anew (before = 0000…), as GitLab documents for new branches,
//! and a job with an `environment` (a deployment) or `when: manual` always runs.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Forge, Http, REGISTRATION, RunnerProc, SECRET, Server, gitlab_push, job_id, postgres_database};

const ZERO: &str = "0000000000000000000000000000000000000000";
const DONE: [&str; 4] = ["success", "failed", "canceled", "manual"];

struct Counter {
    dir: tempfile::TempDir,
}

impl Counter {
    fn new() -> Counter {
        Counter { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// How many times `job` ran.
    fn runs(&self, job: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(job)).map_or(0, |s| s.lines().count())
    }
}

const COUNT: &str = "echo ran >> \"$RUNS/$CI_JOB_NAME\"";

fn pipeline(runs: &Path) -> String {
    format!(
        "variables:
  RUNS: {runs}
stages: [build, test, deploy]
build:
  stage: build
  script:
    - '{COUNT}'
    - mkdir -p dist && cat src.txt > dist/app.txt
    - echo VERSION=1.$(wc -c < src.txt) > build.env
  artifacts:
    paths: [dist/]
    reports:
      dotenv: build.env
test:
  stage: test
  script:
    - '{COUNT}'
    - test \"$(cat dist/app.txt)\" = hello
broken:
  stage: test
  allow_failure: true
  script:
    - '{COUNT}'
    - exit 3
optout:
  stage: test
  variables:
    PISTE_REUSE: 'false'
  script: ['{COUNT}']
manual:
  stage: test
  when: manual
  script: ['{COUNT}']
deploy:
  stage: deploy
  environment: production
  script:
    - '{COUNT}'
    - echo \"got $(cat dist/app.txt) version $VERSION\"
",
        runs = runs.display()
    )
}

/// A push of `after` on `main` (GitLab's push hook) as a new pipeline; waits for it to end.
async fn pipeline_for(http: &Http, before: &str, after: &str, delivery: &str) -> Value {
    let r = http.gitlab_hook(gitlab_push("main", before, after, "change"), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(id, &DONE, 120).await
}

async fn get(http: &Http, path: &str) -> reqwest::Response {
    http.client.get(format!("{}{path}", http.base)).send().await.unwrap()
}

async fn job(http: &Http, id: i64) -> Value {
    get(http, &format!("/api/v1/jobs/{id}")).await.json().await.unwrap()
}

/// Plays a manual job and waits for it to end.
async fn play(http: &Http, p: &Value, name: &str) {
    let id = job_id(p, name);
    let r = http.client.post(format!("{}/api/v1/jobs/{id}/play", http.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    http.wait_job_status(p["id"].as_i64().unwrap(), name, &["success", "failed"], 60).await;
}

async fn second_pipeline_reuses_every_eligible_job(database: Option<String>) {
    let c = Counter::new();
    let forge = Forge::new(&pipeline(c.path()));
    std::fs::write(forge.work().join("src.txt"), "hello").unwrap();
    let extra = database.map(|d| format!("database = \"{d}\"")).unwrap_or_default();
    let server = Server::start_full(&forge, 10_000, &extra, "reuse = true", None, Vec::new());
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);
    let (before, after) = forge.push("main", "first");

    let p1 = pipeline_for(&http, &before, &after, "reuse-1").await;
    assert_eq!(p1["status"], "success", "{p1:#}");
    play(&http, &p1, "manual").await;
    for name in ["build", "test", "broken", "optout", "deploy", "manual"] {
        assert_eq!(c.runs(name), 1, "{name}: {p1:#}");
    }

    // The same commit again (another delivery): what can be reused is, the rest runs.
    let p2 = pipeline_for(&http, &before, &after, "reuse-2").await;
    assert_eq!(p2["status"], "success", "{p2:#}");
    play(&http, &p2, "manual").await;
    let (p1_id, p2_id) = (p1["id"].as_i64().unwrap(), p2["id"].as_i64().unwrap());
    for name in ["build", "test"] {
        assert_eq!(c.runs(name), 1, "{name} ran again: {p2:#}");
        let earlier = job_id(&p1, name);
        let j = job(&http, job_id(&p2, name)).await;
        assert_eq!(j["status"], "success");
        assert_eq!(j["reused_from"], json!({"pipeline": p1_id, "job_id": earlier, "job": name}), "{j:#}");
        let log = http.log(job_id(&p2, name)).await;
        let first = log.lines().next().unwrap_or_default();
        assert!(first.contains(&format!("reused from pipeline {p1_id}, job {earlier} ({name})")), "{log}");
        assert!(log.ends_with(&http.log(earlier).await), "the earlier log follows: {log}");
    }
    // The pipeline's view marks them too.
    let listed = p2["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "build").unwrap().clone();
    assert_eq!(listed["reused_from"]["pipeline"], p1_id, "{listed:#}");
    // A failure is never reused; opted-out jobs, deployments and manual jobs always run.
    for name in ["broken", "optout", "deploy", "manual"] {
        assert_eq!(c.runs(name), 2, "{name}: {p2:#}");
        assert!(job(&http, job_id(&p2, name)).await.get("reused_from").is_none(), "{name}");
    }
    assert_eq!(job(&http, job_id(&p2, "broken")).await["status"], "failed");
    // The reused build's artifacts (the same archive) and dotenv reach the job that runs after it.
    let build2 = job_id(&p2, "build");
    let archive = |id: i64| {
        let (client, base) = (http.client.clone(), http.base.clone());
        async move { client.get(format!("{base}/api/v1/jobs/{id}/artifacts")).send().await.unwrap().bytes().await.unwrap() }
    };
    assert_eq!(archive(build2).await, archive(job_id(&p1, "build")).await);
    let deploy = http.log(job_id(&p2, "deploy")).await;
    assert!(deploy.lines().any(|l| l == "got hello version 1.5"), "{deploy}");

    // The pages say so, with a "run anyway" button.
    let page = get(&http, &format!("/pipelines/{p2_id}")).await.text().await.unwrap();
    assert!(page.contains("↺") && page.contains(&format!("/api/v1/jobs/{build2}/retry?reuse=false")), "{page}");
    let page = get(&http, &format!("/jobs/{build2}")).await.text().await.unwrap();
    assert!(page.contains("Reused ↺") && page.contains(&format!("href=\"/jobs/{}\"", job_id(&p1, "build"))), "{page}");

    // Run anyway: the job runs (a plain retry would be reused again).
    let r = http.client.post(format!("{}/api/v1/jobs/{build2}/retry?reuse=false", http.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let j = http.wait_job_status(p2_id, "build", &["success", "failed"], 60).await;
    assert_eq!((j["status"].as_str(), j["attempt"].as_i64()), (Some("success"), Some(2)), "{j:#}");
    assert_eq!(c.runs("build"), 2);
    let j = job(&http, build2).await;
    assert!(j.get("reused_from").is_none(), "{j:#}");
    // Its success is now the one a plain retry reuses (attempt 2 of the same job).
    let r = http.client.post(format!("{}/api/v1/jobs/{build2}/retry", http.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let j = http.wait_job_status(p2_id, "build", &["success", "failed"], 60).await;
    assert_eq!(j["attempt"], 3, "{j:#}");
    assert_eq!(c.runs("build"), 2, "a plain retry reuses");
    assert_eq!(job(&http, build2).await["reused_from"], json!({"pipeline": p2_id, "job_id": build2, "job": "build"}));
    let log = http.log(build2).await;
    assert!(log.lines().next().unwrap_or_default().contains(&format!("job {build2} (build)")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pipeline_on_the_same_commit_reuses_every_eligible_job_sqlite() {
    second_pipeline_reuses_every_eligible_job(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pipeline_on_the_same_commit_reuses_every_eligible_job_postgres() {
    second_pipeline_reuses_every_eligible_job(Some(postgres_database())).await;
}

/// A failure is never recorded, and forgets the success recorded under the same key: the job
/// fails while `ok` is absent from a folder outside the repository (the tree does not change),
/// so after a failing "run anyway" a plain retry runs it again instead of reusing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_never_reused_and_forgets_the_success_under_its_key() {
    let c = Counter::new();
    let yaml = format!("variables:\n  RUNS: {}\ncheck:\n  script:\n    - '{COUNT}'\n    - test -e \"$RUNS/ok\"\n", c.path().display());
    let forge = Forge::new(&yaml);
    let server = Server::start_full(&forge, 10_000, "", "reuse = true", None, Vec::new());
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);
    let (before, after) = forge.push("main", "first");

    // Failures: each pipeline runs it.
    for delivery in ["f-1", "f-2"] {
        assert_eq!(pipeline_for(&http, &before, &after, delivery).await["status"], "failed");
    }
    assert_eq!(c.runs("check"), 2);
    // A success, then reused.
    std::fs::write(c.path().join("ok"), "").unwrap();
    assert_eq!(pipeline_for(&http, &before, &after, "f-3").await["status"], "success");
    let p = pipeline_for(&http, &before, &after, "f-4").await;
    assert_eq!((p["status"].as_str(), c.runs("check")), (Some("success"), 3));
    let check = job_id(&p, "check");
    assert!(job(&http, check).await.get("reused_from").is_some());

    // Run anyway, and it fails: the success is forgotten, a plain retry runs.
    std::fs::remove_file(c.path().join("ok")).unwrap();
    let pid = p["id"].as_i64().unwrap();
    let r = http.client.post(format!("{}/api/v1/jobs/{check}/retry?reuse=false", http.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let j = http.wait_job_status(pid, "check", &["failed"], 60).await;
    assert_eq!((j["attempt"].as_i64(), c.runs("check")), (Some(2), 4));
    std::fs::write(c.path().join("ok"), "").unwrap();
    let r = http.client.post(format!("{}/api/v1/jobs/{check}/retry", http.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let j = http.wait_job_status(pid, "check", &["success"], 60).await;
    assert_eq!((j["attempt"].as_i64(), c.runs("check")), (Some(3), 5), "the retry ran");
    assert!(job(&http, check).await.get("reused_from").is_none());
}

/// GitLab: `rules:changes` is true when a branch is pushed anew (no before sha). With reuse,
/// only the jobs whose patterns match a changed file run; `package` reads the whole tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_reruns_exactly_the_jobs_whose_inputs_include_it() {
    let c = Counter::new();
    let mut yaml = format!("variables:\n  RUNS: {}\nstages: [test, package]\n", c.path().display());
    for comp in ["api", "web", "worker"] {
        yaml.push_str(&format!(
            "test-{comp}:\n  stage: test\n  rules:\n    - changes: [{comp}/**/*]\n  script:\n    - '{COUNT}'\n    - cat {comp}/src/main.txt\n  artifacts:\n    paths: [{comp}/src/]\n"
        ));
    }
    yaml.push_str(&format!("package:\n  stage: package\n  script: ['{COUNT}', 'ls api/src web/src worker/src']\n"));
    let forge = Forge::new(&yaml);
    for comp in ["api", "web", "worker"] {
        std::fs::create_dir_all(forge.work().join(comp).join("src")).unwrap();
        std::fs::write(forge.work().join(comp).join("src/main.txt"), comp).unwrap();
    }
    let server = Server::start_full(&forge, 10_000, "", "reuse = true", None, Vec::new());
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);
    let counts = |c: &Counter| ["test-api", "test-web", "test-worker", "package"].map(|j| c.runs(j));

    let (_, first) = forge.push("main", "first");
    let p1 = pipeline_for(&http, ZERO, &first, "mono-1").await;
    assert_eq!(p1["status"], "success", "{p1:#}");
    assert_eq!(counts(&c), [1, 1, 1, 1]);

    std::fs::write(forge.work().join("web/src/main.txt"), "web v2").unwrap();
    let (_, second) = forge.push("main", "web only");
    let p2 = pipeline_for(&http, ZERO, &second, "mono-2").await;
    assert_eq!(p2["status"], "success", "{p2:#}");
    assert_eq!(counts(&c), [1, 2, 1, 2], "{p2:#}");
    for name in ["test-api", "test-worker"] {
        assert_eq!(job(&http, job_id(&p2, name)).await["reused_from"]["pipeline"], p1["id"], "{name}");
    }
    for name in ["test-web", "package"] {
        assert!(job(&http, job_id(&p2, name)).await.get("reused_from").is_none(), "{name}");
    }
    // The reused tests' artifacts reach `package` as if they had run.
    let log = http.log(job_id(&p2, "package")).await;
    assert!(log.contains("main.txt"), "{log}");
}

/// Without `reuse` in the project's configuration, nothing is reused, even jobs that ask with
/// `PISTE_REUSE: "true"`; with `reuse = "per-job"`, only those are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_without_the_opt_in_never_reuses_and_per_job_reuses_only_jobs_that_ask() {
    for (setting, expected) in [("", [2, 2]), ("reuse = \"per-job\"", [1, 2])] {
        let c = Counter::new();
        let yaml = format!(
            "variables:\n  RUNS: {}\nopted:\n  variables: {{PISTE_REUSE: 'true'}}\n  script: ['{COUNT}']\nplain:\n  script: ['{COUNT}']\n",
            c.path().display()
        );
        let forge = Forge::new(&yaml);
        let server = Server::start_full(&forge, 10_000, "", setting, None, Vec::new());
        let _runner = RunnerProc::start(&server, "node-shell", "shell");
        let http = Http::new(&server);
        let (before, after) = forge.push("main", "first");
        for delivery in ["d-1", "d-2"] {
            let p = pipeline_for(&http, &before, &after, delivery).await;
            assert_eq!(p["status"], "success", "{p:#}");
        }
        assert_eq!([c.runs("opted"), c.runs("plain")], expected, "with `{setting}`");
    }
}

/// The protocol, driven by hand: a key that project `app` recorded is found again for `app`,
/// never for project `other` (same repository, same key); a job the server offered no reuse
/// cannot ask; keys are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_of_one_project_is_never_reused_by_another() {
    let forge = Forge::new("job:\n  script: [echo hi]\n");
    let other = format!(
        "[[project]]\nname = \"other\"\nrepo = \"{}\"\nwebhook_secret = \"other-secret\"\nreuse = true\n\n[[project]]\nname = \"plain\"\nrepo = \"{}\"\nwebhook_secret = \"plain-secret\"\n",
        forge.url, forge.url
    );
    let server = Server::start_full(&forge, 10_000, &other, "reuse = true", None, Vec::new());
    let http = Http::new(&server);
    let (before, after) = forge.push("main", "first");
    let client = reqwest::Client::new();
    let r: Value = client
        .post(format!("{}/api/v1/runners", server.url))
        .json(&json!({"registration_token": REGISTRATION, "name": "by-hand"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runner_token = r["token"].as_str().unwrap().to_string();
    let key = format!("sha256:{}", "ab".repeat(32));

    let hook = |project: &'static str, secret: &'static str, delivery: &'static str| {
        let (http, body) = (&http, gitlab_push("main", &before, &after, "x"));
        async move {
            let r = http
                .client
                .post(format!("{}/api/v1/webhooks/{project}", http.base))
                .header("Content-Type", "application/json")
                .header("X-Gitlab-Event", "Push Hook")
                .header("X-Gitlab-Event-UUID", delivery)
                .header("X-Gitlab-Token", secret)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{project}");
        }
    };
    // The next job, as a runner gets it.
    let lease = || {
        let (client, url, token) = (client.clone(), server.url.clone(), runner_token.clone());
        async move {
            for _ in 0..30 {
                let r = client
                    .post(format!("{url}/api/v1/jobs/request"))
                    .bearer_auth(&token)
                    .json(&json!({"free_slots": 1}))
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::OK {
                    return r.json::<Value>().await.unwrap();
                }
            }
            panic!("no job handed out");
        }
    };
    let ask = |job: &Value, key: &str| {
        let (client, url) = (client.clone(), server.url.clone());
        let (id, token, key) = (job["job_id"].as_i64().unwrap(), job["token"].as_str().unwrap().to_string(), key.to_string());
        async move { client.post(format!("{url}/api/v1/jobs/{id}/reuse")).bearer_auth(token).json(&json!({"key": key})).send().await.unwrap() }
    };
    let finish = |job: &Value| {
        let (client, url) = (client.clone(), server.url.clone());
        let (id, token) = (job["job_id"].as_i64().unwrap(), job["token"].as_str().unwrap().to_string());
        async move {
            let r = client.put(format!("{url}/api/v1/jobs/{id}/log?offset=0")).bearer_auth(&token).body("hi\n").send().await.unwrap();
            assert!(r.status().is_success());
            let body = json!({"outcome": {"outcome": "success"}, "exit_code": 0, "reason": null, "log_bytes": 3});
            let r = client.post(format!("{url}/api/v1/jobs/{id}/finish")).bearer_auth(&token).json(&body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    };

    // `app` runs the job with key K and passes: K is recorded for `app`.
    hook("app", SECRET, "app-1").await;
    let first = lease().await;
    assert_eq!(first["project"], "app");
    assert_eq!(first["reuse"], json!({"project": true, "changes": []}));
    assert_eq!(ask(&first, "sha256:abc").await.status(), StatusCode::BAD_REQUEST, "keys are checked");
    let r: Value = ask(&first, &key).await.json().await.unwrap();
    assert_eq!(r["reused_from"], Value::Null);
    finish(&first).await;

    // `other`, with the same key: a miss.
    hook("other", "other-secret", "other-1").await;
    let theirs = lease().await;
    assert_eq!(theirs["project"], "other");
    let r: Value = ask(&theirs, &key).await.json().await.unwrap();
    assert_eq!(r["reused_from"], Value::Null, "another project's result is never reused");
    finish(&theirs).await;

    // `plain` has no `reuse`: its jobs are offered nothing and may not ask.
    hook("plain", "plain-secret", "plain-1").await;
    let plain = lease().await;
    assert!(plain.get("reuse").is_none(), "{plain:#}");
    assert_eq!(ask(&plain, &key).await.status(), StatusCode::CONFLICT);
    finish(&plain).await;

    // `app` again, same key: a hit, finished by the server; the job token is spent.
    hook("app", SECRET, "app-2").await;
    let again = lease().await;
    let r: Value = ask(&again, &key).await.json().await.unwrap();
    assert_eq!(r["reused_from"], json!({"pipeline": first["pipeline_id"], "job_id": first["job_id"], "job": "job"}));
    let p = http.wait_status(again["pipeline_id"].as_i64().unwrap(), &DONE, 30).await;
    assert_eq!(p["status"], "success", "{p:#}");
    let log = http.log(again["job_id"].as_i64().unwrap()).await;
    assert!(log.lines().next().unwrap_or_default().contains("reused from pipeline") && log.ends_with("hi\n"), "{log}");
    assert_eq!(ask(&again, &key).await.status(), StatusCode::UNAUTHORIZED);
    let metrics = get(&http, "/metrics").await.text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "piste_jobs_reused_total 1"), "{metrics}");
}

/// The pipeline page in a real browser, open while the second pipeline runs: the reused job's
/// card gets `↺` and "Run anyway" live; the button runs it (posted in the background, the
/// page stays), and the mark is gone once it has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_page_marks_a_reused_job_live_and_runs_it_anyway() {
    use std::time::{Duration, Instant};
    let c = Counter::new();
    let go = c.path().join("go");
    let yaml = format!(
        "variables:\n  RUNS: {}\nstages: [gate, build]\ngate:\n  stage: gate\n  variables: {{PISTE_REUSE: 'false'}}\n  script:\n    - for i in $(seq 1 1200); do if [ -e '{}' ]; then break; fi; sleep 0.05; done\nbuild:\n  stage: build\n  script: ['{COUNT}']\n",
        c.path().display(),
        go.display()
    );
    let forge = Forge::new(&yaml);
    let server = Server::start_full(&forge, 10_000, "", "reuse = true", None, Vec::new());
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);
    let (before, after) = forge.push("main", "first");
    std::fs::write(&go, "").unwrap();
    assert_eq!(pipeline_for(&http, &before, &after, "live-1").await["status"], "success");
    std::fs::remove_file(&go).unwrap();

    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "again"), Some(SECRET), "live-2").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_job_status(id, "gate", &["running"], 60).await;
    let build = job_id(&http.wait_status(id, &["running"], 30).await, "build");
    let browser = crate::browser::chromium();
    let mut page = crate::browser::Page::open(&browser).await;
    page.authorize(&server.token).await;
    page.goto(&format!("{}/pipelines/{id}", http.base)).await;
    let card = |what: &str| format!("(() => {{ const c = document.getElementById('job-{build}'); return {what}; }})()");
    assert_eq!(page.eval(&card("!!c.querySelector('a.reused')")).await, Value::Bool(false));
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let anyway = "c.querySelector('form[data-action=\"retry?reuse=false\"]')";
    while page.eval(&card(&format!("c.classList.contains('success') && !!c.querySelector('a.reused') && !!{anyway}"))).await
        != Value::Bool(true)
    {
        assert!(Instant::now() < deadline, "the card was not marked: {}", page.eval(&card("c.outerHTML")).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.runs("build"), 1, "reused, not run");
    let title = page.eval(&card("c.querySelector('a.reused').title")).await;
    assert!(title.as_str().is_some_and(|t| t.starts_with("reused from pipeline ")), "{title}");
    page.eval("window.__same_page = true").await;
    page.eval(&card(&format!("{anyway}.querySelector('button').click()"))).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job(&http, build).await;
        if j["attempt"] == 2 && j["status"] == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "not run anyway: {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.runs("build"), 2, "run anyway");
    assert_eq!(page.eval("window.__same_page === true").await, Value::Bool(true), "posted in the background");
    page.goto(&format!("{}/pipelines/{id}", http.base)).await;
    assert_eq!(page.eval(&card("!!c.querySelector('a.reused')")).await, Value::Bool(false), "it ran: no mark");
    assert!(job(&http, build).await.get("reused_from").is_none());
}
