//! One job path: the same pipeline run by `piste run` and by a server with a runner must show
//! every job the same things — artifacts with `exclude`, the dotenv report (its variables, not
//! its file), the junit report, a cache restored on the second run, an image name expanded from
//! a variable (the Docker executor on both sides: a wrong name would fail the job), GitLab's
//! artifact sources (`needs: [{job, artifacts: false}]` and `needs: []` with `dependencies`
//! receive nothing), the run-time predefined variables (`CI_JOB_STATUS`, `CI_PIPELINE_IID`
//! counting per project, `CI_ENVIRONMENT_*`, the shape of `CI_JOB_STARTED_AT` and
//! `CI_PIPELINE_CREATED_AT`) and the `coverage:` value read from the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

const PIPELINE: &str = r#"
variables:
  IMAGE_TAG: "1"
stages: [build, test]
build:
  stage: build
  image: piste-demo/busybox:$IMAGE_TAG
  cache:
    key: deps-$IMAGE_TAG
    paths: [cache/]
  script:
    - echo "SAW cache=$(cat cache/stamp 2>/dev/null || echo none)"
    - mkdir -p cache out && echo warm > cache/stamp
    - echo built > out/app.txt && echo junk > out/skip.tmp
    - echo "VERSION=1.2.3" > build.env
    - echo '<testsuite name="t" tests="1"><testcase name="c"/></testsuite>' > report.xml
  artifacts:
    paths: [out/]
    exclude: [out/*.tmp]
    reports:
      dotenv: build.env
      junit: report.xml
test:
  stage: test
  image: piste-demo/busybox:$IMAGE_TAG
  script:
    - echo "SAW app=$(cat out/app.txt)"
    - echo "SAW tmp=$(test -f out/skip.tmp && echo present || echo absent)"
    - echo "SAW junit=$(test -f report.xml && echo present || echo absent)"
    - echo "SAW version=$VERSION job=$CI_JOB_NAME stage=$CI_JOB_STAGE"
    - echo "SAW cache=$(test -d cache && echo present || echo absent)"
    - echo "SAW dotenv-file=$(test -f build.env && echo present || echo absent)"
no_artifacts:
  stage: test
  image: piste-demo/busybox:$IMAGE_TAG
  needs: [{job: build, artifacts: false}]
  script:
    - echo "SAW app=$(test -f out/app.txt && echo present || echo absent) version=${VERSION:-unset}"
early:
  stage: test
  image: piste-demo/busybox:$IMAGE_TAG
  needs: []
  dependencies: [build]
  script:
    - echo "SAW app=$(test -f out/app.txt && echo present || echo absent) version=${VERSION:-unset}"
deploy:
  stage: test
  image: piste-demo/busybox:$IMAGE_TAG
  environment:
    name: review/$CI_COMMIT_REF_NAME
    url: https://$CI_COMMIT_REF_SLUG.example.test
  coverage: '/^Coverage: (\d+\.\d+)%$/'
  script:
    - echo "SAW status=$CI_JOB_STATUS iid=$CI_PIPELINE_IID disposable=$CI_DISPOSABLE_ENVIRONMENT"
    - echo "SAW env=$CI_ENVIRONMENT_NAME slug=$CI_ENVIRONMENT_SLUG url=$CI_ENVIRONMENT_URL action=$CI_ENVIRONMENT_ACTION tier=$CI_ENVIRONMENT_TIER"
    - case "$CI_JOB_STARTED_AT $CI_PIPELINE_CREATED_AT" in 20??-??-??T??:??:??Z\ 20??-??-??T??:??:??Z) echo "SAW times=iso8601";; *) echo "SAW times=$CI_JOB_STARTED_AT $CI_PIPELINE_CREATED_AT";; esac
    - echo "USER id=$GITLAB_USER_ID login=$GITLAB_USER_LOGIN name=$GITLAB_USER_NAME email=$GITLAB_USER_EMAIL"
    - 'echo "Coverage: 12.5%"'
    - 'echo "Coverage: 64.25%"'
  after_script:
    - echo "SAW after=$CI_JOB_STATUS"
"#;

const JOBS: [&str; 5] = ["build", "test", "no_artifacts", "early", "deploy"];

/// Builds the busybox image of the demo (from busybox-static; nothing is pulled).
pub(crate) fn image() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/demo-image.sh");
    let out = Command::new("bash").arg(script).output().expect("bash");
    assert!(out.status.success(), "building the test image needs Docker: {}", String::from_utf8_lossy(&out.stderr));
}

/// What each job printed on its `SAW ` lines.
type Seen = BTreeMap<String, Vec<String>>;

fn saw(lines: impl Iterator<Item = String>) -> Vec<String> {
    lines.filter_map(|l| l.trim_end_matches('\r').strip_prefix("SAW ").map(str::to_owned)).collect()
}

fn run_locally(dir: &Path) -> Seen {
    let out = Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["run", "--executor", "docker", "--format", "json"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("piste run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "piste run: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut seen: Seen = JOBS
        .iter()
        .map(|job| {
            let lines =
                events.iter().filter(|e| e["event"] == "log" && e["job"] == *job).map(|e| e["line"].as_str().unwrap_or("").to_owned());
            (job.to_string(), saw(lines))
        })
        .collect();
    let coverage = events.iter().find(|e| e["event"] == "job_finished" && e["job"] == "deploy").map(|e| e["coverage"].to_string());
    seen.insert("coverage of deploy".into(), coverage.into_iter().collect());
    seen
}

async fn run_on_server(forge: &Forge, http: &Http, message: &str, delivery: &str) -> Seen {
    let (before, after) = forge.push("main", message);
    // The author's name is data from the payload: never expanded.
    let mut payload: Value = serde_json::from_slice(&gitlab_push("main", &before, &after, message)).unwrap();
    payload["user_name"] = Value::String("Jo $HOME Smith".into());
    let r = http.gitlab_hook(serde_json::to_vec(&payload).unwrap(), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 120).await;
    let mut seen = Seen::new();
    for job in JOBS {
        let log = http.log(job_id(&p, job)).await;
        assert_eq!(p["status"], "success", "{p:#}\n{job}: {log}");
        seen.insert(job.to_string(), saw(log.lines().map(str::to_owned)));
        if job == "deploy" {
            // GitLab's `GITLAB_USER_*`: who pushed, from the webhook (the server only).
            let user = log.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix("USER ")).unwrap_or_default();
            assert_eq!(user, "id=4 login=jsmith name=Jo $HOME Smith email=john@example.com", "{log}");
        }
    }
    let url = format!("{}/api/v1/jobs/{}", http.base, job_id(&p, "deploy"));
    let job: Value = http.client.get(url).send().await.unwrap().json().await.unwrap();
    seen.insert("coverage of deploy".into(), vec![job["coverage"].to_string()]);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_sees_the_same_things_under_piste_run_and_on_a_server_runner() {
    image();
    let forge = Forge::new(PIPELINE);
    std::fs::write(forge.work().join(".gitignore"), ".piste/\n").unwrap();
    let server = Server::start(&forge, 10_000, "");
    let _runner = RunnerProc::start(&server, "node-docker", "docker");
    let http = Http::new(&server);

    let first_server = run_on_server(&forge, &http, "first", "both-1").await;
    let first_local = run_locally(&forge.work());
    let second_server = run_on_server(&forge, &http, "second", "both-2").await;
    let second_local = run_locally(&forge.work());

    let expected_test = |cache: &str| {
        vec![
            "app=built".to_string(),
            "tmp=absent".into(),
            "junit=present".into(),
            "version=1.2.3 job=test stage=test".into(),
            format!("cache={cache}"),
            "dotenv-file=absent".into(),
        ]
    };
    // Written out once, so that a drift on both sides at once still fails.
    assert_eq!(first_local["build"], ["cache=none"], "{first_local:#?}");
    assert_eq!(second_local["build"], ["cache=warm"], "the cache is restored on the second run: {second_local:#?}");
    assert_eq!(first_local["test"], expected_test("absent"), "a cache is not an artifact: {first_local:#?}");
    assert_eq!(first_local["no_artifacts"], ["app=absent version=unset"], "{first_local:#?}");
    assert_eq!(first_local["early"], ["app=absent version=unset"], "{first_local:#?}");
    let slug = pipeline_spec::predefined::environment_slug("review/main");
    let deploy = |iid: u32| {
        vec![
            format!("status=running iid={iid} disposable=true"),
            format!("env=review/main slug={slug} url=https://main.example.test action=start tier=development"),
            "times=iso8601".to_string(),
            "after=success".to_string(),
        ]
    };
    assert_eq!(first_local["deploy"], deploy(1), "{first_local:#?}");
    assert_eq!(second_local["deploy"], deploy(2), "`CI_PIPELINE_IID` counts the project's pipelines: {second_local:#?}");
    assert_eq!(first_local["coverage of deploy"], ["64.25"], "the last matching line");
    assert_eq!(first_server, first_local, "first run: server runner vs piste run");
    assert_eq!(second_server, second_local, "second run: server runner vs piste run");
}

/// GitLab: a manual job from `rules:` (`allow_failure: false`) blocks what comes after it and the
/// pipeline is `manual` ("blocked"), on a server as under `piste run` (which returns with exit
/// code 4); a job-level `when: manual` allows failure and blocks nothing: `success` on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_manual_job_leaves_the_pipeline_manual_on_both_paths() {
    const BLOCKING: &str = "stages: [build, deploy, verify]\nbuild:\n  stage: build\n  script: [echo b]\ndeploy:\n  stage: deploy\n  script: [echo d]\n  rules:\n    - when: manual\nverify:\n  stage: verify\n  script: [echo v]\n";
    let forge = Forge::new(BLOCKING);
    std::fs::write(forge.work().join(".gitignore"), ".piste/\n").unwrap();
    let server = Server::start(&forge, 10_000, "");
    let _runner = RunnerProc::start(&server, "node", "shell");
    let http = Http::new(&server);
    let local = |dir: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["run", "--executor", "shell", "--format", "json"])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .output()
            .expect("piste run");
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let status = events.iter().find(|e| e["event"] == "pipeline_finished").map(|e| e["status"].clone()).unwrap_or_default();
        (out.status.code(), status)
    };
    let on_server = |message: &'static str, delivery: &'static str, want: &'static [&'static str]| {
        let (forge, http) = (&forge, &http);
        async move {
            let (before, after) = forge.push("main", message);
            let r = http.gitlab_hook(gitlab_push("main", &before, &after, message), Some(SECRET), delivery).await;
            let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
            http.wait_status(id, want, 60).await
        }
    };

    let p = on_server("blocking", "manual-1", &["manual", "success", "failed"]).await;
    assert_eq!(p["status"], "manual", "{p:#}");
    let status = |job: &str| p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == job).map(|j| j["status"].clone()).unwrap();
    assert_eq!((status("build"), status("deploy"), status("verify")), ("success".into(), "manual".into(), "created".into()), "{p:#}");
    assert_eq!(local(&forge.work()), (Some(4), Value::from("manual")));

    std::fs::write(forge.work().join(".gitlab-ci.yml"), BLOCKING.replace("  rules:\n    - when: manual\n", "  when: manual\n")).unwrap();
    let p = on_server("not blocking", "manual-2", &["success", "manual", "failed"]).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert_eq!(local(&forge.work()), (Some(0), Value::from("success")));
}
