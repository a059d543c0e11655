//! One job through the docker executor: the checkout is mounted at `/builds/<project>`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pipeline_spec::model::ArtifactsWhen;
use runner::executor::DockerExecutor;
use scheduler::Outcome;
use scheduler::protocol::{ArtifactsSpec, Image};

use crate::support::{PROJECT, World, archive_files};

const IMAGE: &str = "piste-demo/busybox:1";

/// Builds the demo image once per machine (a lock: several test processes may race).
fn demo_image() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/demo-image.sh");
    let out = Command::new("flock").args(["/tmp/piste-demo-image.lock", "bash"]).arg(&script).output().expect("run flock and bash");
    assert!(out.status.success(), "building {IMAGE} failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_job_runs_in_a_container() {
    tokio::task::spawn_blocking(demo_image).await.unwrap();
    let docker = DockerExecutor::connect().await.expect("the Docker Engine answers (these tests need it)");
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "from the repository\n")], "one");
    let agent = w.agent(Arc::new(docker), true, 1, |a| a);

    let mut p = w.fake.state.payload(
        PROJECT,
        &sha,
        &["pwd", "echo \"dir=$CI_PROJECT_DIR\"", "cat file.txt", "echo built-in-a-container > out.txt"],
    );
    p.job.image = Some(Image { name: IMAGE.into(), entrypoint: None, pull_policy: vec!["never".into()] });
    p.job.artifacts = Some(ArtifactsSpec {
        paths: vec!["out.txt".into()],
        exclude: vec![],
        untracked: false,
        when: ArtifactsWhen::OnSuccess,
        dotenv: vec![],
        junit: vec![],
        other_reports: vec![],
    });
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), Duration::from_secs(120)).await;
    let log = rec.log_text();
    assert_eq!(rec.finish.as_ref().unwrap().outcome, Outcome::Success, "{log}");
    assert!(log.contains("\n/builds/group/app\n"), "{log}");
    assert!(log.contains("dir=/builds/group/app"), "{log}");
    assert!(log.contains("from the repository"), "{log}");
    let files = archive_files(&rec.artifacts.unwrap().1);
    assert_eq!(files.get("out.txt").map(String::as_str), Some("built-in-a-container\n"));

    agent.stop(Duration::from_secs(30)).await.unwrap();
}
