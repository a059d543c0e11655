//! What only the docker executor does: images and pull policies, entrypoints, services,
//! confinement, and cleanup of everything it creates.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, TagImageOptionsBuilder};
use runner::executor::{
    DockerExecutor, Executor, FailureReason, ImageSpec, LeftoverFilter, Outcome, PullPolicy, ServiceSpec, cleanup_leftovers, labels,
};
use tokio_util::sync::CancellationToken;

use crate::support::{ENTRYPOINT_IMAGE, IMAGE, Job, WEB_IMAGE, WEB_PAGE, assert_no_leftovers, docker_executor, eventually, leftovers, run};

fn job(name: &str, script: &[&str]) -> Job {
    let mut job = Job::new(name, script);
    job.req.image = Some(ImageSpec::new(IMAGE));
    job
}

fn system_failure(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed { exit_code: None, reason: FailureReason::RunnerSystemFailure(msg) } => msg,
        other => panic!("expected a runner system failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_reachable_by_alias_and_derived_names() {
    let exec = docker_executor().await;
    let mut job = job(
        "services",
        &[
            // The web service declares its port: the executor waited for it, no retry needed.
            "wget -q -O - http://web:8080/index.html",
            "wget -q -O - http://piste-test__busybox-web:8080/",
            "wget -q -O - http://piste-test-busybox-web:8080/",
            "for i in $(seq 100); do wget -q -O - http://echo:8081/ 2>/dev/null && break; sleep 0.1; done",
        ],
    );
    let mut web = ServiceSpec::new(WEB_IMAGE);
    web.alias = Some("web".into());
    let mut echo = ServiceSpec::new(IMAGE);
    echo.alias = Some("echo,other".into());
    echo.command =
        Some(vec!["sh".into(), "-c".into(), "echo \"$JOB_VAR $SVC_VAR\" > /www/index.html && exec httpd -f -p 8081 -h /www".into()]);
    echo.variables = vec![("SVC_VAR".into(), "from-service".into())];
    job.req.services = vec![web, echo];
    job.req.env = vec![("JOB_VAR".into(), "from-job".into())];
    let run = run(&exec, job.req.clone()).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", run.output);
    assert_eq!(run.output.matches(&format!("{WEB_PAGE}\n")).count(), 3, "{}", run.output);
    assert!(run.output.contains("from-job from-service\n"), "{}", run.output);
    assert!(run.output.contains(&format!("Starting service {WEB_IMAGE} ...")));
    assert_no_leftovers(exec.docker(), &job.req.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_entrypoint_is_honoured_overridden_or_cleared() {
    let exec = docker_executor().await;
    let script = ["echo \"entrypoint=${FROM_ENTRYPOINT:-none} override=${FROM_OVERRIDE:-none}\""];
    let cases = [
        (None, "entrypoint=yes override=none"),
        (Some(vec![String::new()]), "entrypoint=none override=none"),
        (Some(vec!["env".into(), "FROM_OVERRIDE=1".into()]), "entrypoint=none override=1"),
    ];
    for (entrypoint, expected) in cases {
        let mut job = Job::new("entrypoint", &script);
        job.req.image = Some(ImageSpec { name: ENTRYPOINT_IMAGE.into(), entrypoint: entrypoint.clone(), pull_policy: vec![] });
        let run = run(&exec, job.req.clone()).await;
        assert_eq!(run.report.outcome, Outcome::Success, "{entrypoint:?}: {}", run.output);
        assert!(run.output.contains(&format!("\n{expected}\n")), "{entrypoint:?}: {}", run.output);
        assert_no_leftovers(exec.docker(), &job.req.id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_with_pull_policy_never_is_a_clear_failure() {
    let exec = docker_executor().await;
    let mut job = job("never", &["touch ran"]);
    job.req.image = Some(ImageSpec { name: "piste-test/missing:1".into(), entrypoint: None, pull_policy: vec![PullPolicy::Never] });
    job.req.after_script = vec!["touch after-ran".into()];
    let run = run(&exec, job.req.clone()).await;
    let msg = system_failure(&run.report.outcome);
    assert_eq!(msg, "image `piste-test/missing:1` is not present locally and the pull policy is `never`");
    assert!(run.output.contains(msg), "{}", run.output);
    assert_eq!(run.report.after_script_exit, None, "after_script must not run when the job never started");
    assert!(!job.workspace().join("ran").exists() && !job.workspace().join("after-ran").exists());
    assert_no_leftovers(exec.docker(), &job.req.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_that_cannot_be_pulled_is_a_clear_failure() {
    let exec = docker_executor().await;
    // Nothing listens on port 1: the pull fails at once, as it does offline.
    let mut job = job("unpullable", &["true"]);
    job.req.image = Some(ImageSpec::new("127.0.0.1:1/piste-test/missing:1"));
    let run = run(&exec, job.req.clone()).await;
    let msg = system_failure(&run.report.outcome);
    assert!(msg.starts_with("image `127.0.0.1:1/piste-test/missing:1` is not present locally and could not be pulled: "), "{msg}");
    assert_no_leftovers(exec.docker(), &job.req.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policy_always_falls_back_to_the_next_policy() {
    let exec = docker_executor().await;
    let local_name = "127.0.0.1:1/piste-test/busybox";
    let tag = TagImageOptionsBuilder::default().repo(local_name).tag("1").build();
    exec.docker().tag_image(IMAGE, Some(tag)).await.unwrap();
    let image = format!("{local_name}:1");
    // The name goes when the test ends, passed or not (the image keeps its own name).
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker").args(["rmi", &self.0]).output();
        }
    }
    let _untag = Untag(image.clone());

    let mut job = job("always", &["echo ran"]);
    job.req.image = Some(ImageSpec { name: image.clone(), entrypoint: None, pull_policy: vec![PullPolicy::Always] });
    let run1 = run(&exec, job.req.clone()).await;
    let msg = system_failure(&run1.report.outcome);
    assert!(msg.starts_with(&format!("image `{image}` could not be pulled (pull policy `always`): ")), "{msg}");

    job.req.image = Some(ImageSpec { name: image, entrypoint: None, pull_policy: vec![PullPolicy::Always, PullPolicy::IfNotPresent] });
    let run2 = run(&exec, job.req.clone()).await;
    assert_eq!(run2.report.outcome, Outcome::Success, "{}", run2.output);
    assert_no_leftovers(exec.docker(), &job.req.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_container_is_confined() {
    let exec = docker_executor().await;
    let job = job("confined", &["test ! -e /var/run/docker.sock", "grep CapEff /proc/self/status", "id -u"]);
    let run = run(&exec, job.req.clone()).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", run.output);
    let cap_line = run.output.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let caps = u64::from_str_radix(cap_line.trim_start_matches("CapEff:").trim(), 16).unwrap();
    // CAP_SYS_ADMIN (bit 21) is what privileged mode would add.
    assert_eq!(caps & (1 << 21), 0, "the job container is privileged: {cap_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_image_needs_a_default_image() {
    let exec = docker_executor().await;
    let job = Job::new("no-image", &["echo ran"]);
    let run1 = run(&exec, job.req.clone()).await;
    assert_eq!(system_failure(&run1.report.outcome), "the job has no `image` and the docker executor has no default image");
    let exec = exec.with_default_image(ImageSpec::new(IMAGE));
    let run2 = run(&exec, job.req.clone()).await;
    assert_eq!(run2.report.outcome, Outcome::Success, "{}", run2.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_job_future_removes_its_containers_and_network() {
    let exec = docker_executor().await;
    let docker = exec.docker().clone();
    let mut job = job("dropped", &["echo \"ready-$((1 + 1))\"", "sleep 1000"]);
    job.req.services = vec![ServiceSpec::new(IMAGE)];
    job.req.services[0].command = Some(vec!["sleep".into(), "1000".into()]);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let req = job.req.clone();
    let task = tokio::spawn(async move { exec.run(req, tx, CancellationToken::new()).await });
    let mut seen = String::new();
    while !seen.contains("ready-2\n") {
        let chunk = rx.recv().await.expect("the job ended before printing its marker");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(leftovers(&docker, &job.req.id).await.len() >= 3, "job, service and network should exist while the job runs");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let id = job.req.id.clone();
    let gone = eventually(Duration::from_secs(20), async || leftovers(&docker, &id).await.is_empty()).await;
    assert!(gone, "left behind: {:?}", leftovers(&docker, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_leftovers_removes_labelled_objects_of_a_run() {
    let docker: Docker = crate::support::docker().await;
    let prefix = format!("leftover{}-", std::process::id());
    let job_id = format!("{prefix}j1");
    let labels = HashMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::JOB.to_owned(), job_id.clone()),
        (labels::CREATED.to_owned(), "0".to_owned()),
    ]);
    let body = ContainerCreateBody { image: Some(IMAGE.into()), labels: Some(labels.clone()), ..Default::default() };
    let name = format!("piste-{job_id}-crashed");
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body).await.unwrap();
    let network = bollard::models::NetworkCreateRequest { name: format!("piste-{job_id}-net"), labels: Some(labels), ..Default::default() };
    docker.create_network(network).await.unwrap();
    assert_eq!(leftovers(&docker, &job_id).await.len(), 2);

    let other_run = LeftoverFilter { job_id_prefix: Some("no-such-run-".into()), older_than: None };
    assert_eq!(cleanup_leftovers(&docker, &other_run).await.unwrap(), 0);
    let too_young = LeftoverFilter { job_id_prefix: Some(prefix.clone()), older_than: Some(Duration::from_secs(u32::MAX.into())) };
    assert_eq!(cleanup_leftovers(&docker, &too_young).await.unwrap(), 0);
    let this_run = LeftoverFilter { job_id_prefix: Some(prefix), older_than: Some(Duration::from_secs(60)) };
    assert_eq!(cleanup_leftovers(&docker, &this_run).await.unwrap(), 2);
    assert_no_leftovers(&docker, &job_id).await;
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_reported_at_connect() {
    // A socket file nobody listens on any more.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let dead = Docker::connect_with_unix(socket.to_str().unwrap(), 2, bollard::API_DEFAULT_VERSION).unwrap();
    let err = DockerExecutor::with_client(dead).await.unwrap_err();
    assert!(err.to_string().starts_with("the Docker Engine does not answer"), "{err}");
}
