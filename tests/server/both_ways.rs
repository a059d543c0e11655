//! One job path: the same pipeline run by `piste run` and by a server with a runner must show
//! every job the same things — artifacts with `exclude`, the dotenv report, the junit report,
//! a cache restored on the second run, an image name expanded from a variable (the Docker
//! executor on both sides: a wrong name would fail the job).

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
"#;

fn image() {
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
    ["build", "test"]
        .iter()
        .map(|job| {
            let lines =
                events.iter().filter(|e| e["event"] == "log" && e["job"] == *job).map(|e| e["line"].as_str().unwrap_or("").to_owned());
            (job.to_string(), saw(lines))
        })
        .collect()
}

async fn run_on_server(forge: &Forge, http: &Http, message: &str, delivery: &str) -> Seen {
    let (before, after) = forge.push("main", message);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, message), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 120).await;
    let mut seen = Seen::new();
    for job in ["build", "test"] {
        let log = http.log(job_id(&p, job)).await;
        assert_eq!(p["status"], "success", "{p:#}\n{job}: {log}");
        seen.insert(job.to_string(), saw(log.lines().map(str::to_owned)));
    }
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
        ]
    };
    // Written out once, so that a drift on both sides at once still fails.
    assert_eq!(first_local["build"], ["cache=none"], "{first_local:#?}");
    assert_eq!(second_local["build"], ["cache=warm"], "the cache is restored on the second run: {second_local:#?}");
    assert_eq!(first_local["test"], expected_test("absent"), "a cache is not an artifact: {first_local:#?}");
    assert_eq!(first_server, first_local, "first run: server runner vs piste run");
    assert_eq!(second_server, second_local, "second run: server runner vs piste run");
}
