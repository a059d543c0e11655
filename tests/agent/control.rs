//! Cancel, jobs taken away, shutdown, and the server going away and coming back.

use std::time::{Duration, Instant};

use scheduler::{FailureReason, Outcome};

use crate::support::{PROJECT, World, reason_of};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_heartbeat_cancel_stops_a_long_job_and_after_script_runs() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    w.fake.state.set_lease_ms(600);
    let agent = w.shell_agent(1);

    let mut p = w.fake.state.payload(PROJECT, &sha, &["echo started", "sleep 120", "echo never-printed"]);
    p.job.after_script = vec!["echo \"after-script-ran status=$CI_JOB_STATUS\"".into()];
    let job = w.fake.state.enqueue(p);
    w.fake.state.log_contains(job, "started\n", LIMIT).await;
    // Let a few heartbeat periods (lease/3 = 200 ms) pass before the cancel, so the count below
    // says heartbeats repeat, whatever the scheduling of this shared machine.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let canceled_at = Instant::now();
    w.fake.state.cancel(job);

    let rec = w.fake.state.finished(job, LIMIT).await;
    assert!(canceled_at.elapsed() < Duration::from_secs(5), "the cancel took {:?}", canceled_at.elapsed());
    let log = rec.log_text();
    assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Canceled, "{log}");
    assert!(log.contains("after-script-ran status=canceled"), "{log}");
    assert!(!log.contains("never-printed\n"), "{log}");
    assert!(rec.heartbeats >= 2, "heartbeats every lease/3: {}", rec.heartbeats);

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn a_job_taken_away_is_stopped_and_not_reported() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    w.fake.state.set_lease_ms(600);
    let agent = w.shell_agent(1);

    let mut p = w.fake.state.payload(PROJECT, &sha, &["echo started", "sleep 120"]);
    p.job.after_script = vec!["echo after-script-must-not-run".into()];
    let job = w.fake.state.enqueue(p);
    w.fake.state.log_contains(job, "started\n", LIMIT).await;
    w.fake.state.set_heartbeat_status(job, 410);

    // The slot is free again: the next job runs on this one-slot runner.
    let next = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["echo next"]));
    let rec = w.fake.state.finished(next, LIMIT).await;
    assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Success);
    let taken = w.fake.state.job(job);
    assert!(taken.finish.is_none() && taken.finishes == 0, "a job taken away is not reported");
    assert!(!taken.log_text().contains("after-script-must-not-run"));

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn the_agent_survives_server_restarts() {
    let mut w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    // While the agent polls: stop the server, let it find the port closed, start it again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.fake.restart_after(Duration::from_millis(1500)).await;
    let job = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["echo after-restart"]));
    let rec = w.fake.state.finished(job, LIMIT).await;
    assert_eq!(rec.finish.clone().unwrap().outcome, Outcome::Success, "{}", rec.log_text());

    // While a job runs: its log, heartbeats and finish report wait for the server.
    let p =
        w.fake.state.payload(PROJECT, &sha, &["echo before", "sleep 2", "for i in $(seq 1 50); do echo \"during $i\"; done", "echo after"]);
    let job = w.fake.state.enqueue(p);
    w.fake.state.log_contains(job, "before\n", LIMIT).await;
    w.fake.restart_after(Duration::from_secs(3)).await;
    let rec = w.fake.state.finished(job, LIMIT).await;
    let log = rec.log_text();
    assert_eq!(rec.finish.as_ref().unwrap().outcome, Outcome::Success, "{log}");
    assert!(rec.mismatches.is_empty());
    for i in 1..=50 {
        assert_eq!(log.matches(&format!("during {i}\n")).count(), 1, "{log}");
    }
    assert_eq!(rec.finish.unwrap().log_bytes, rec.log.len() as u64);

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_a_running_job_finish() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    let job = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["echo started", "sleep 1", "echo finished-normally"]));
    w.fake.state.log_contains(job, "started\n", LIMIT).await;
    agent.stop(LIMIT).await.unwrap();
    let rec = w.fake.state.job(job);
    assert_eq!(rec.finish.as_ref().map(|f| f.outcome), Some(Outcome::Success), "{}", rec.log_text());
    assert!(rec.log_text().contains("finished-normally"));

    // A stopped agent asks for nothing more.
    let queued = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["true"]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.fake.state.job(queued).token.is_none(), "a stopped runner took a job");
}

#[tokio::test]
async fn after_the_shutdown_grace_running_jobs_are_canceled_and_reported() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.agent(std::sync::Arc::new(runner::executor::ShellExecutor::new()), false, 1, |a| {
        a.with_shutdown_grace(Duration::from_millis(500))
    });

    let mut p = w.fake.state.payload(PROJECT, &sha, &["echo started", "sleep 120"]);
    p.job.after_script = vec!["echo \"after-script status=$CI_JOB_STATUS\"".into()];
    let job = w.fake.state.enqueue(p);
    w.fake.state.log_contains(job, "started\n", LIMIT).await;
    let stopping = Instant::now();
    agent.stop(LIMIT).await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(5), "stopping took {:?}", stopping.elapsed());
    let rec = w.fake.state.job(job);
    let finish = rec.finish.clone().expect("the canceled job is reported");
    assert_eq!(reason_of(&finish.outcome), Some(FailureReason::RunnerSystemFailure), "retry rules may run it again");
    assert!(finish.reason.unwrap().contains("shut down"));
    assert!(rec.log_text().contains("after-script status=canceled"), "{}", rec.log_text());
}

#[tokio::test]
async fn a_refused_runner_token_stops_the_agent() {
    let w = World::new().await;
    let mut config = w.config();
    config.token = "not-registered".into();
    let agent = runner::agent::Agent::new(config, std::sync::Arc::new(runner::executor::ShellExecutor::new()), false, 1, w.work_dir());
    let err = tokio::time::timeout(LIMIT, agent.run(tokio_util::sync::CancellationToken::new())).await.expect("run returns").unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}
