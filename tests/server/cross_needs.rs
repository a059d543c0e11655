//! Needs of other pipelines on the server (GitLab's `needs:pipeline:job` and `needs:project`,
//! `Ci::BuildDependencies#cross_pipeline` / `#cross_project`): artifacts and dotenv variables
//! of a job of the parent pipeline, or of another project's latest passed job on a ref when
//! that project's `job_token_allowlist` lets this one in; anything not found fails the job
//! `missing_dependency_failure` before a runner gets it ("could not retrieve the needed
//! artifacts").

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

/// Pushes `forge`'s `main` and posts the push to project `project`'s webhook; the pipeline id.
async fn push_to(forge: &Forge, http: &Http, project: &str, delivery: &str) -> i64 {
    let (before, after) = forge.push("main", delivery);
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/{project}", http.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Event-UUID", delivery)
        .header("X-Gitlab-Token", SECRET)
        .body(gitlab_push("main", &before, &after, delivery))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "webhook of `{project}` accepted");
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

fn job(p: &Value, name: &str) -> Value {
    p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap_or_else(|| panic!("no job {name}: {p:#}")).clone()
}

const PARENT: &str = r#"
stages: [build, child]
build:
  stage: build
  script:
    - mkdir -p out && echo from-parent > out/file.txt
    - echo BUILD_VERSION=1.2.3 > build.env
  artifacts:
    paths: [out/]
    reports:
      dotenv: build.env
child:
  stage: child
  variables:
    PARENT_PIPELINE_ID: $CI_PIPELINE_ID
  trigger:
    include: ci/child.yml
    strategy: depend
wrong:
  stage: child
  trigger:
    include: ci/wrong.yml
    strategy: depend
"#;

/// GitLab's `needs:pipeline:job` ("Use `needs:pipeline:job` to fetch artifacts from an upstream
/// pipeline"): a child job gets the parent job's artifacts and dotenv variables; the child's
/// own id (GitLab refuses the current pipeline) gives no dependency, and that job fails
/// `missing_dependency_failure` without reaching a runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_job_receives_the_parent_jobs_artifacts_through_needs_pipeline_job() {
    let forge = Forge::new(PARENT);
    std::fs::create_dir_all(forge.work().join("ci")).unwrap();
    std::fs::write(
        forge.work().join("ci/child.yml"),
        "use:\n  needs:\n    - pipeline: $PARENT_PIPELINE_ID\n      job: build\n  script:\n    - echo \"got=$(cat out/file.txt) version=$BUILD_VERSION\"\n",
    )
    .unwrap();
    std::fs::write(
        forge.work().join("ci/wrong.yml"),
        "own:\n  needs:\n    - pipeline: $CI_PIPELINE_ID\n      job: build\n  script: [echo never]\n",
    )
    .unwrap();
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let parent = push_to(&forge, &http, "app", "x-1").await;
    let p = http.wait_status(parent, &["success", "failed", "canceled"], 90).await;
    assert_eq!(job(&p, "child")["status"], "success", "{p:#}\n{}", server.log());
    assert_eq!(job(&p, "wrong")["status"], "failed", "{p:#}");
    let down = p["downstream"].as_array().unwrap().clone();
    let child_of = |trigger: &str| down.iter().find(|d| d["job_id"] == job_id(&p, trigger)).unwrap()["id"].as_i64().unwrap();
    let child = http.wait_status(child_of("child"), &["success"], 30).await;
    let log = http.log(job_id(&child, "use")).await;
    assert!(log.contains("got=from-parent version=1.2.3"), "{log}");
    assert!(log.contains(&format!("build (pipeline #{parent})")), "the download names the parent's job: {log}");

    let wrong = http.wait_status(child_of("wrong"), &["failed"], 30).await;
    let own = job(&wrong, "own");
    let reason = own["failure_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("missing_dependency_failure") && reason.contains("is this pipeline"), "{own:#}");
    let log = http.log(own["id"].as_i64().unwrap()).await;
    assert!(log.contains("could not retrieve the needed artifacts") && !log.contains("never"), "{log}");
}

/// GitLab's `needs:project`: the newest passed job of that name on that ref of another project,
/// if that project's CI/CD job token allowlist lets this one in (piste: `job_token_allowlist`
/// or `public`, the rule submodules follow). A project that does not, or a ref without such a
/// job, fails the job `missing_dependency_failure` saying which and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn needs_project_reads_an_allowed_projects_latest_passed_job_and_refuses_the_others() {
    let producer = "package:\n  script:\n    - mkdir -p dist && echo \"lib-$CI_PROJECT_PATH\" > dist/lib.txt\n    - echo LIB_VERSION=7 > lib.env\n  artifacts:\n    paths: [dist/]\n    reports:\n      dotenv: lib.env\n";
    let lib = Forge::new(producer);
    let closed = Forge::new(producer);
    let app = Forge::new(
        "use-lib:\n  needs:\n    - project: lib\n      job: package\n      ref: main\n  script:\n    - echo \"lib=$(cat dist/lib.txt) version=$LIB_VERSION\"\n\
         use-closed:\n  needs:\n    - project: closed\n      job: package\n      ref: main\n  script: [echo never]\n\
         use-other-ref:\n  needs:\n    - {project: lib, job: package, ref: release}\n  script: [echo never]\n",
    );
    let extra = format!(
        "[[project]]\nname = \"lib\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\njob_token_allowlist = [\"app\"]\n\n\
         [[project]]\nname = \"closed\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\n",
        lib.url, closed.url
    );
    let server = Server::start(&app, 5000, &extra);
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    for (forge, project) in [(&lib, "lib"), (&closed, "closed")] {
        let id = push_to(forge, &http, project, &format!("{project}-1")).await;
        let v = http.wait_status(id, &["success", "failed"], 90).await;
        assert_eq!(v["status"], "success", "{v:#}\n{}", server.log());
    }
    let id = push_to(&app, &http, "app", "app-1").await;
    let p = http.wait_status(id, &["success", "failed", "canceled"], 90).await;
    let used = job(&p, "use-lib");
    assert_eq!(used["status"], "success", "{p:#}");
    let log = http.log(used["id"].as_i64().unwrap()).await;
    assert!(log.contains("lib=lib-lib version=7"), "{log}");
    let refused = job(&p, "use-closed");
    let reason = refused["failure_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("missing_dependency_failure") && reason.contains("job_token_allowlist = [\"app\"]"), "{refused:#}");
    let other = job(&p, "use-other-ref");
    let reason = other["failure_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no job `package` passed on `release`"), "{other:#}");
    assert_eq!(p["status"], "failed", "{p:#}");
}
