//! Keywords the README's table says run on a server, each pinned end to end through a real
//! server and a shell-executor runner against the rule docs.gitlab.com (ci/yaml) states:
//! `parallel` and `parallel:matrix`, `timeout`, a push's `rules:changes`,
//! `rules:changes:compare_to`, and `workflow:rules` that create no pipeline.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, git, gitlab_push, job_id};

/// Pushes `branch` and sends its webhook; the pipeline's id.
async fn push(forge: &Forge, http: &Http, branch: &str, delivery: &str) -> i64 {
    let (before, after) = forge.push(branch, delivery);
    let r = http.gitlab_hook(gitlab_push(branch, &before, &after, delivery), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201, "webhook accepted");
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

fn names(p: &Value) -> Vec<String> {
    let mut names: Vec<String> = p["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// The lines `SAW …` of a job's log, without the prefix.
async fn saw(http: &Http, p: &Value, job: &str) -> Vec<String> {
    http.log(job_id(p, job)).await.lines().filter_map(|l| l.trim_end_matches('\r').strip_prefix("SAW ").map(str::to_owned)).collect()
}

/// GitLab (ci/yaml `parallel`, `parallel:matrix`): `parallel: N` makes jobs `name i/N` with
/// `CI_NODE_INDEX`/`CI_NODE_TOTAL`; a matrix makes one job per combination, named
/// `name: [v1, v2]`, each with its variables; `needs: [name]` waits for every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_and_matrix_instances_run_with_gitlabs_names_and_variables_on_a_server_runner() {
    let forge = Forge::new(
        r#"
shard:
  parallel: 3
  script: ['echo "SAW node=$CI_NODE_INDEX/$CI_NODE_TOTAL name=$CI_JOB_NAME"']
deploy:
  parallel:
    matrix:
      - PROVIDER: aws
        STACK: [monitoring, app]
      - PROVIDER: gcp
        STACK: data
  script: ['echo "SAW provider=$PROVIDER stack=$STACK node=$CI_NODE_INDEX/$CI_NODE_TOTAL"']
report:
  needs: [shard]
  script: ['echo "SAW after the shards"']
"#,
    );
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let id = push(&forge, &http, "main", "parallel-1").await;
    let p = http.wait_status(id, &["success", "failed", "canceled"], 90).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert_eq!(
        names(&p),
        ["deploy: [aws, app]", "deploy: [aws, monitoring]", "deploy: [gcp, data]", "report", "shard 1/3", "shard 2/3", "shard 3/3"]
    );
    for i in 1..=3 {
        let job = format!("shard {i}/3");
        assert_eq!(saw(&http, &p, &job).await, [format!("node={i}/3 name={job}")]);
    }
    let mut matrix = Vec::new();
    for job in ["deploy: [aws, monitoring]", "deploy: [aws, app]", "deploy: [gcp, data]"] {
        matrix.extend(saw(&http, &p, job).await);
    }
    assert_eq!(matrix, ["provider=aws stack=monitoring node=1/3", "provider=aws stack=app node=2/3", "provider=gcp stack=data node=3/3"]);
    // `report` needs all three shards: it started after each of them finished.
    let attempt = |name: String| {
        let id = job_id(&p, &name);
        let http = &http;
        async move {
            let detail: Value = http.client.get(format!("{}/api/v1/jobs/{id}", http.base)).send().await.unwrap().json().await.unwrap();
            detail["attempts"].as_array().and_then(|a| a.last().cloned()).unwrap_or_else(|| panic!("{name}: {detail:#}"))
        }
    };
    let report = attempt("report".into()).await;
    for i in 1..=3 {
        let shard = attempt(format!("shard {i}/3")).await;
        let (started, finished) = (report["started_at"].as_i64(), shard["finished_at"].as_i64());
        assert!(started.is_some() && finished.is_some() && started >= finished, "report before shard {i}:\n{report:#}\n{shard:#}");
    }
}

/// Processes whose command line contains `pattern`, as `pgrep -f` sees them.
fn processes(pattern: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep").args(["-f", pattern]).output().expect("pgrep (procps)");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// GitLab (ci/yaml `timeout`): a job running past its timeout is stopped and fails with the
/// reason `job_execution_timeout`; the runner kills the job's whole process tree, and
/// `after_script` still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_job_on_the_runner_and_the_job_fails_saying_why() {
    let marker = format!("piste-server-timeout-{}", std::process::id());
    let forge = Forge::new(&format!(
        "slow:\n  timeout: 3 seconds\n  script:\n    - (exec -a {marker} sleep 300) &\n    - echo started\n    - sleep 300\n  after_script:\n    - echo \"SAW after status=$CI_JOB_STATUS\"\n"
    ));
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let runner = RunnerProc::start(&server, "node", "shell");
    let id = push(&forge, &http, "main", "timeout-1").await;
    let p = http.wait_status(id, &["success", "failed", "canceled"], 120).await;
    let slow = p["jobs"][0].clone();
    assert_eq!((slow["status"].as_str(), p["status"].as_str()), (Some("failed"), Some("failed")), "{p:#}\n{}", runner.log());
    assert!(slow["failure_reason"].as_str().unwrap_or("").contains("the job ran longer than its timeout"), "{slow:#}");
    let log = http.log(slow["id"].as_i64().unwrap()).await;
    assert!(log.contains("started"), "{log}");
    assert!(saw(&http, &p, "slow").await.contains(&"after status=failed".to_string()), "{log}");
    // The background process died with the job; the runner has nothing left to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes(&marker).is_empty() {
        assert!(std::time::Instant::now() < deadline, "a process of the timed-out job survived: {:?}", processes(&marker));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CHANGES: &str = r#"
docs:
  rules:
    - changes: [docs/**]
  script: [echo docs]
app:
  rules:
    - changes:
        paths: [src/**]
  script: [echo app]
since-main:
  rules:
    - changes:
        paths: [docs/**]
        compare_to: refs/heads/main
  script: [echo since-main]
"#;

fn write(forge: &Forge, path: &str, text: &str) {
    let file = forge.work().join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

/// GitLab (ci/jobs/job_rules `rules:changes`): a push pipeline's changes are the files of the
/// pushed range (`before`..`after` of the webhook); a new branch's push has no range, and every
/// `changes` is true. `rules:changes:compare_to` compares with the merge base of that ref
/// instead; a ref that does not exist makes the configuration invalid ("is not a valid ref").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushs_changes_are_the_pushed_range_and_compare_to_measures_from_that_ref() {
    let forge = Forge::new(CHANGES);
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");

    // A new branch: no range, every `changes` is true (compared with main itself: nothing).
    let first = http.wait_status(push(&forge, &http, "main", "changes-1").await, &["success", "failed"], 60).await;
    assert_eq!(names(&first), ["app", "docs"], "{first:#}");

    write(&forge, "src/main.rs", "fn main() {}\n");
    let src = http.wait_status(push(&forge, &http, "main", "changes-2").await, &["success", "failed"], 60).await;
    assert_eq!(names(&src), ["app"], "only src/ changed in the pushed range: {src:#}");

    // A feature branch: docs first, then src. The second push's range holds src/ only; since
    // main, docs/ changed too.
    git(&forge.work(), &["checkout", "-q", "-b", "feature"]);
    write(&forge, "docs/guide.md", "guide\n");
    let (_, docs_commit) = forge.push("feature", "docs on feature");
    write(&forge, "src/lib.rs", "pub fn f() {}\n");
    let (before, after) = forge.push("feature", "src on feature");
    assert_eq!(before, docs_commit);
    let r = http.gitlab_hook(gitlab_push("feature", &before, &after, "src on feature"), Some(SECRET), "changes-3").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let feature = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(names(&feature), ["app", "since-main"], "{feature:#}");

    write(&forge, ".gitlab-ci.yml", &CHANGES.replace("refs/heads/main", "refs/heads/nowhere"));
    let bad = http.wait_status(push(&forge, &http, "feature", "changes-4").await, &["failed", "success"], 60).await;
    assert_eq!(bad["status"], "failed", "{bad:#}");
    assert!(bad["error"].as_str().unwrap_or("").contains("`rules:changes:compare_to` `refs/heads/nowhere` is not a valid ref"), "{bad:#}");
    assert!(bad["jobs"].as_array().unwrap().is_empty(), "{bad:#}");
}

/// GitLab (ci/yaml `workflow:rules`): when no rule matches, or a `when: never` rule does, no
/// pipeline runs. GitLab records none; the server records a `skipped` pipeline with no jobs
/// (the webhook's answer names it), and the next push that matches runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_rules_that_create_no_pipeline_leave_a_skipped_pipeline_with_no_jobs() {
    let forge = Forge::new(
        "workflow:\n  rules:\n    - if: $CI_COMMIT_MESSAGE =~ /wip/\n      when: never\n    - if: $CI_COMMIT_BRANCH == \"main\"\njob:\n  script: [echo ran]\n",
    );
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");

    let other = http.wait_status(push(&forge, &http, "topic", "topic-work").await, &["skipped", "success", "failed"], 60).await;
    assert_eq!(other["status"], "skipped", "no rule matches a push to `topic`: {other:#}");
    assert!(other["jobs"].as_array().unwrap().is_empty(), "{other:#}");
    assert!(other.get("error").is_none(), "not an error: {other:#}");

    git(&forge.work(), &["checkout", "-q", "-B", "main"]);
    let wip = http.wait_status(push(&forge, &http, "main", "wip-half-done").await, &["skipped", "success", "failed"], 60).await;
    assert_eq!(wip["status"], "skipped", "`when: never` matched: {wip:#}");
    assert!(wip["jobs"].as_array().unwrap().is_empty(), "{wip:#}");

    let done = http.wait_status(push(&forge, &http, "main", "done").await, &["skipped", "success", "failed"], 60).await;
    assert_eq!(done["status"], "success", "{done:#}");
    assert_eq!(names(&done), ["job"]);
}
