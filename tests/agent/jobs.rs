//! Jobs end to end: checkout at the sha, logs, artifacts both ways, masking, slots.

use std::time::{Duration, Instant};

use pipeline_spec::model::ArtifactsWhen;
use scheduler::protocol::{ArtifactsSpec, Dependency};
use scheduler::{FailureReason, Outcome};

use crate::support::{PROJECT, World, archive_files, make_archive, reason_of, var};

const LIMIT: Duration = Duration::from_secs(30);

fn artifacts(paths: &[&str], when: ArtifactsWhen) -> Option<ArtifactsSpec> {
    Some(ArtifactsSpec {
        paths: paths.iter().map(|p| p.to_string()).collect(),
        exclude: vec!["out/*.tmp".into()],
        untracked: false,
        when,
        dotenv: vec!["build.env".into()],
        junit: vec![],
        other_reports: vec![],
    })
}

#[tokio::test]
async fn a_job_runs_end_to_end() {
    let w = World::new().await;
    let first = w.repo.commit("main", &[("file.txt", "content of the first commit\n")], "one");
    w.repo.commit("main", &[("file.txt", "content of the second commit\n")], "two");
    let agent = w.shell_agent(1);

    // The job is at the first commit while the branch has moved on.
    let mut p = w.fake.state.payload(
        PROJECT,
        &first,
        &[
            "cat file.txt",
            "for i in $(seq 1 200); do echo \"step $i\"; done",
            "mkdir -p out && echo report > out/report.txt && echo scratch > out/x.tmp",
            "echo VERSION=1.2.3 > build.env",
            "echo \"dir=$CI_PROJECT_DIR\"",
        ],
    );
    p.job.artifacts = artifacts(&["out/"], ArtifactsWhen::OnSuccess);
    let job = w.fake.state.enqueue(p);
    let rec = w.fake.state.finished(job, LIMIT).await;
    let log = rec.log_text();

    let finish = rec.finish.clone().unwrap();
    assert_eq!(finish.outcome, Outcome::Success, "{log}");
    assert_eq!(finish.exit_code, Some(0));
    assert_eq!(finish.log_bytes, rec.log.len() as u64, "the finish report counts exactly the stored log");
    assert!(rec.mismatches.is_empty(), "{:?}", rec.mismatches);
    assert!(log.contains("content of the first commit"), "{log}");
    assert!(!log.contains("second commit"), "{log}");
    // In order, each once.
    let positions: Vec<usize> = (1..=200).map(|i| log.find(&format!("step {i}\n")).expect("every step is logged")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "steps arrive in order");
    assert_eq!(log.matches("step 17\n").count(), 1);
    assert!(log.contains("Job succeeded"), "{log}");
    // Batched: far fewer requests than lines.
    assert!(rec.log_requests.len() < 20, "{} log requests for a short job", rec.log_requests.len());
    let mut offset = 0;
    for r in &rec.log_requests {
        assert_eq!(r.offset, offset, "chunks are appended in order, without gaps");
        offset += r.body.len() as u64;
    }
    // The shell executor runs in the slot's checkout.
    let dir = log.lines().find_map(|l| l.strip_prefix("dir=")).expect("CI_PROJECT_DIR is printed");
    assert!(dir.starts_with(w.work_dir().to_str().unwrap()) && dir.ends_with("/0/app"), "{dir}");

    // Artifacts: the digest matches, the content is what the job wrote.
    let (digest, archive) = rec.artifacts.clone().expect("artifacts uploaded");
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    let files = archive_files(&archive);
    assert_eq!(files.get("out/report.txt").map(String::as_str), Some("report\n"));
    // GitLab keeps reports apart from the archive later jobs download: the dotenv report's
    // variables travel in the finish report, its file is not an artifact (`paths` does not list it).
    assert!(!files.contains_key("build.env"), "{files:?}");
    assert_eq!(finish.dotenv, [("VERSION".to_string(), "1.2.3".to_string())]);
    assert!(!files.contains_key("out/x.tmp"), "exclude applies");
    assert!(!files.contains_key("file.txt"));

    // A second job at the same commit fetches nothing.
    let fetches = w.fake.state.git_requests();
    assert!(fetches > 0);
    let job2 = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &first, &["test ! -e out/report.txt", "cat file.txt"]));
    let rec2 = w.fake.state.finished(job2, LIMIT).await;
    assert_eq!(rec2.finish.clone().unwrap().outcome, Outcome::Success, "the slot was cleaned: {}", rec2.log_text());
    assert!(rec2.log_text().contains("already on this runner"), "{}", rec2.log_text());
    assert_eq!(w.fake.state.git_requests(), fetches, "no git request for a cached commit");

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn a_failing_job_reports_its_exit_code_and_uploads_on_failure() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    let mut p = w.fake.state.payload(PROJECT, &sha, &["mkdir -p out", "echo partial > out/trace.txt", "exit 3"]);
    p.job.artifacts = artifacts(&["out/"], ArtifactsWhen::OnFailure);
    let job = w.fake.state.enqueue(p);
    let rec = w.fake.state.finished(job, LIMIT).await;
    let finish = rec.finish.clone().unwrap();
    assert_eq!(
        (finish.outcome, finish.exit_code),
        (Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some(3) }, Some(3)),
        "{}",
        rec.log_text()
    );
    assert!(rec.log_text().contains("ERROR: Job failed: exit code 3"));
    let files = archive_files(&rec.artifacts.expect("on_failure uploads for a failed job").1);
    assert_eq!(files.get("out/trace.txt").map(String::as_str), Some("partial\n"));

    // `on_success` uploads nothing for a failed job; an unknown strategy fails without running.
    let mut p = w.fake.state.payload(PROJECT, &sha, &["mkdir -p out && echo a > out/a", "false"]);
    p.job.artifacts = artifacts(&["out/"], ArtifactsWhen::OnSuccess);
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    assert!(rec.artifacts.is_none());
    let mut p = w.fake.state.payload(PROJECT, &sha, &["echo must-not-run"]);
    p.job.variables.push(var("GIT_STRATEGY", "shallow", false));
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    assert_eq!(reason_of(&rec.finish.clone().unwrap().outcome), Some(FailureReason::ScriptFailure));
    assert!(rec.log_text().contains("unknown GIT_STRATEGY `shallow`") && !rec.log_text().contains("must-not-run\n"), "{}", rec.log_text());

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn dependencies_artifacts_are_downloaded() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    w.fake.state.set_dependency_artifacts(100, make_archive(&[("dist/app.txt", "built by the build job\n")]));
    let agent = w.shell_agent(1);

    let mut p = w.fake.state.payload(PROJECT, &sha, &["cat dist/app.txt"]);
    p.dependencies =
        vec![Dependency { job_id: 100, name: "build".into(), digest: None }, Dependency { job_id: 101, name: "lint".into(), digest: None }];
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    let log = rec.log_text();
    assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Success, "{log}");
    assert!(log.contains("built by the build job"), "{log}");
    assert!(log.contains("Downloaded artifacts for build"), "{log}");
    assert!(log.contains("lint (101) has no artifacts"), "{log}");

    // A corrupt archive fails the job before its script.
    w.fake.state.set_dependency_artifacts(102, b"not a tar.gz".to_vec());
    let mut p = w.fake.state.payload(PROJECT, &sha, &["echo must-not-run"]);
    p.dependencies = vec![Dependency { job_id: 102, name: "broken".into(), digest: None }];
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    let finish = rec.finish.clone().unwrap();
    assert_eq!(reason_of(&finish.outcome), Some(FailureReason::RunnerSystemFailure));
    assert!(finish.reason.unwrap().contains("artifacts of `broken`"));
    assert!(!rec.log_text().contains("must-not-run\n"));

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn masked_values_never_reach_the_server() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    let secret = "hunter2-S3cr3t-value";
    let mut p = w.fake.state.payload(
        PROJECT,
        &sha,
        &[
            "echo \"plain: $SECRET\"",
            // Printed in two halves with a pause longer than the batching delay in between.
            "printf '%s' \"${SECRET:0:9}\"; sleep 0.5; printf '%s\\n' \"${SECRET:9}\"",
            "echo \"$SECRET\" > leaked.txt; cat leaked.txt",
            "echo \"visible: $NOT_SECRET\"",
        ],
    );
    p.job.variables = vec![var("SECRET", secret, true), var("NOT_SECRET", "just-a-value", false)];
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    let log = rec.log_text();
    assert_eq!(rec.finish.as_ref().unwrap().outcome, Outcome::Success, "{log}");
    assert!(!log.contains(secret) && !log.contains("hunter2"), "{log}");
    for r in &rec.log_requests {
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains("hunter2") && !body.contains("S3cr3t-value"), "a request carried part of the secret: {body:?}");
    }
    assert!(log.contains("plain: [MASKED]"), "{log}");
    assert_eq!(log.matches("[MASKED]").count(), 3, "{log}");
    assert!(log.contains("visible: just-a-value"));
    // Neither token appears either.
    let token = rec.token.unwrap();
    assert!(!log.contains(&token));

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn a_commit_not_on_the_jobs_ref_is_fetched_by_id() {
    let w = World::new().await;
    w.repo.commit("main", &[("file.txt", "main\n")], "main");
    let side = w.repo.commit("side", &[("file.txt", "only on the side branch\n")], "side");
    let agent = w.shell_agent(1);

    let p = w.fake.state.payload(PROJECT, &side, &["cat file.txt"]);
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Success, "{}", rec.log_text());
    assert!(rec.log_text().contains("only on the side branch"));

    // A commit the server does not have is a clear failure.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let rec = w.fake.state.finished(w.fake.state.enqueue(w.fake.state.payload(PROJECT, missing, &["true"])), LIMIT).await;
    let finish = rec.finish.clone().unwrap();
    assert_eq!(reason_of(&finish.outcome), Some(FailureReason::RunnerSystemFailure), "{}", rec.log_text());
    assert!(rec.log_text().contains(missing), "{}", rec.log_text());

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn concurrent_jobs_run_in_separate_slots() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(2);

    let script = ["echo \"dir=$CI_PROJECT_DIR\"", "echo mine > owner.txt", "sleep 1", "test \"$(cat owner.txt)\" = mine"];
    let a = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &script));
    let b = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &script));
    let (ra, rb) = (w.fake.state.finished(a, LIMIT).await, w.fake.state.finished(b, LIMIT).await);
    for r in [&ra, &rb] {
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Success, "{}", r.log_text());
    }
    let dir = |r: &crate::fake::JobRecord| r.log_text().lines().find_map(|l| l.strip_prefix("dir=").map(str::to_owned)).unwrap();
    assert_ne!(dir(&ra), dir(&rb), "each running job has its own slot");
    let overlap = ra.dispatched_at.unwrap() < rb.finished_at.unwrap() && rb.dispatched_at.unwrap() < ra.finished_at.unwrap();
    assert!(overlap, "both jobs ran at the same time");

    agent.stop(LIMIT).await.unwrap();
}

/// A job gives its slot back once it is over: with one slot, the next job runs while the
/// server has not yet answered the last one's finish report (object storage can make that
/// answer slow). One report waits so at most: the second job's report waits for the first.
#[tokio::test]
async fn the_next_job_runs_while_the_last_finish_report_waits() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    w.fake.state.hold_finishes(true);
    let agent = w.shell_agent(1);
    let a = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["echo first ran"]));
    let b = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["echo second ran"]));
    let c = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["echo third ran"]));
    let deadline = Instant::now() + LIMIT;
    while !w.fake.state.job(b).log_text().contains("second ran") {
        assert!(Instant::now() < deadline, "the second job did not run while the first one's report waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(w.fake.state.job(a).finish.is_none(), "the first job's report is still unanswered");
    w.fake.state.hold_finishes(false);
    let mut records = Vec::new();
    for id in [a, b, c] {
        let r = w.fake.state.finished(id, LIMIT).await;
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Success, "{}", r.log_text());
        records.push(r);
    }
    // Two reports would have waited: the second job kept the slot, the third was taken
    // only once the first report had its answer.
    assert!(records[2].dispatched_at.unwrap() > records[0].finished_at.unwrap(), "the third job waited for a report's answer");
    agent.stop(LIMIT).await.unwrap();
}

/// The project's cache repository stays open from one job to the next (issue 12: opening it
/// per job was a good part of a trivial job's CPU): a later commit is fetched into the open
/// repository, and a cache removed by hand between jobs is created and fetched again.
#[tokio::test]
async fn the_open_project_cache_fetches_later_commits_and_survives_its_removal() {
    let w = World::new().await;
    let agent = w.shell_agent(1);
    for (round, remove_cache) in [(1, false), (2, false), (3, true)] {
        if remove_cache {
            std::fs::remove_dir_all(w.work_dir().join("repos")).unwrap();
        }
        let content = format!("content {round}\n");
        let sha = w.repo.commit("main", &[("file.txt", content.as_str())], &format!("round {round}"));
        let job = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["cat file.txt", "echo \"head=$(git rev-parse HEAD)\""]));
        let rec = w.fake.state.finished(job, LIMIT).await;
        let log = rec.log_text();
        assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Success, "round {round}: {log}");
        assert!(log.contains(&content) && log.contains(&format!("head={sha}\n")), "round {round}: {log}");
    }
    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn git_strategy_none_runs_without_a_checkout() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    let mut p = w.fake.state.payload(PROJECT, &sha, &["test ! -e file.txt", "echo none-ran"]);
    p.job.variables.push(var("GIT_STRATEGY", "none", false));
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Success, "{}", rec.log_text());
    assert!(rec.log_text().contains("Skipping Git repository setup"));

    // GIT_CHECKOUT=false: the slot is ready, nothing is checked out.
    let mut p = w.fake.state.payload(PROJECT, &sha, &["test ! -e file.txt"]);
    p.job.variables = vec![var("GIT_CHECKOUT", "false", false)];
    let rec = w.fake.state.finished(w.fake.state.enqueue(p), LIMIT).await;
    assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Success, "{}", rec.log_text());

    agent.stop(LIMIT).await.unwrap();
}
