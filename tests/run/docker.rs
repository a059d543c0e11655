//! The docker executor through `piste run`: images, artifacts between containers, the demo.

use crate::{Project, image, leftover_containers};

#[test]
fn the_demo_pipeline_passes_in_containers() {
    image();
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo/.gitlab-ci.yml")).unwrap();
    let p = Project::new(&demo);
    let r = p.run(&["--executor", "docker"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    for job in ["build", "secret-scan", "unit-tests", "package"] {
        assert_eq!(r.status(job), "success", "{job}: {}", r.debug());
    }
    assert_eq!(r.status("lint-docs"), "failed");
    assert_eq!(r.finished("lint-docs")[0]["allow_failure"], true);
    assert!(r.log("unit-tests").iter().any(|l| l.starts_with("built by ")), "dotenv from build: {:?}", r.log("unit-tests"));
    assert!(leftover_containers("unit-tests").is_empty());
}

#[test]
fn jobs_see_the_gitlab_project_dir_in_containers() {
    let img = image();
    let p = Project::new(&format!(
        "where:\n  image: {img}\n  script:\n    - pwd\n    - echo \"$CI_PROJECT_DIR\"\n    - test -f .gitlab-ci.yml\n"
    ));
    let r = p.run(&["--executor", "docker"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let log = r.log("where");
    assert!(log.iter().filter(|l| l.starts_with("/builds/")).count() >= 2, "{log:?}");
}

#[test]
fn a_missing_image_is_a_clear_failure() {
    let p = Project::new("j:\n  image:\n    name: piste-test/does-not-exist:1\n    pull_policy: never\n  script: [\"true\"]\n");
    let r = p.run(&["--executor", "docker"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    let reason = r.finished("j")[0]["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.contains("piste-test/does-not-exist:1") && reason.contains("not present locally"), "{reason}");
}

#[test]
fn run_steps_in_containers_with_a_built_in_step_on_the_runner_and_after_script() {
    let img = image();
    let deploy = tempfile::tempdir().unwrap();
    let bare = crate::steps::deploy_repo(deploy.path());
    let p = Project::new(&format!(
        "steps:\n  image: {img}\n  run:\n    - name: build\n      script: echo built in $CI_PROJECT_DIR\n    - name: deploy\n      step: piste/gitops-bump@v1\n      inputs: {{repo: $DEPLOY_REPO, file: envs/prod/values.yaml, key: image.tag, value: '2.0.0'}}\n    - name: after\n      script: echo commit=$DEPLOY_COMMIT\n  after_script: ['echo after=$CI_JOB_STATUS']\n"
    ));
    let r = p.run(&["--executor", "docker", "--var", &format!("DEPLOY_REPO={}", bare.display())]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let log = r.log("steps");
    assert!(log.iter().any(|l| l.starts_with("built in /builds/")), "script steps run in the container: {log:?}");
    let commit =
        String::from_utf8(std::process::Command::new("git").args(["rev-parse", "main"]).current_dir(&bare).output().unwrap().stdout)
            .unwrap();
    assert!(
        log.contains(&format!("commit={}", commit.trim())),
        "the bump ran on the runner (the container has no access to the repository path): {log:?}"
    );
    assert!(log.iter().any(|l| l == "after=success"), "{log:?}");
    assert!(leftover_containers("steps").is_empty());
}

#[test]
fn a_job_in_a_container_is_reused_through_its_image_id() {
    let img = image();
    let p = Project::new(&format!(
        "made:\n  image: {img}\n  script:\n    - mkdir -p out && echo built > out/file.txt\n  artifacts:\n    paths: [out/]\nread:\n  image: {img}\n  needs: [made]\n  environment: review\n  script:\n    - cat out/file.txt\n"
    ));
    let first = p.run(&["--executor", "docker", "--reuse"]);
    assert_eq!(first.code, Some(0), "{}", first.debug());
    let second = p.run(&["--executor", "docker", "--reuse"]);
    assert_eq!(second.code, Some(0), "{}", second.debug());
    let from = &second.finished("made")[0]["reused_from"];
    assert_eq!(from["pipeline"], 1, "{}", second.debug());
    // The job with an environment ran, in a container, with the reused job's artifacts.
    assert!(second.finished("read")[0].get("reused_from").is_none());
    assert!(second.log("read").contains(&"built".to_string()), "{:?}", second.log("read"));
    assert!(leftover_containers("made").is_empty() && leftover_containers("read").is_empty());
}

/// Shared with the server test (tests/server/services.rs).
const SERVICES: &str = include_str!("../common/services.yml");

/// GitLab (ci/yaml `services:entrypoint`, `services:pull_policy`): the service's entrypoint
/// replaces its image's, it runs with its own variables on the job's network under its alias,
/// and `pull_policy: never` with a missing image fails the job before its script, naming both.
#[test]
fn a_services_entrypoint_runs_and_its_pull_policy_is_honoured() {
    let img = image();
    let p = Project::new(&SERVICES.replace("{img}", img));
    let r = p.run(&["--executor", "docker", "--no-reuse"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert_eq!(r.status("served"), "success", "{}", r.debug());
    assert!(r.log("served").iter().any(|l| l == "SAW served by the-entrypoint"), "{:?}", r.log("served"));
    assert_eq!(r.status("missing"), "failed");
    let reason = r.finished("missing")[0]["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.contains("service image `piste-test/not-here:1` is not present locally and the pull policy is `never`"), "{reason}");
    assert!(!r.log("missing").iter().any(|l| l == "never-runs"), "{:?}", r.log("missing"));
    assert!(leftover_containers("served").is_empty() && leftover_containers("missing").is_empty());
}
