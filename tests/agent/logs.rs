//! The log under faults: lost requests, lost answers, a broken connection, a 409, a server
//! refusing logs for a while; and its latency and batching.

use std::time::{Duration, UNIX_EPOCH};

use scheduler::Outcome;

use crate::fake::LogFault;
use crate::support::{PROJECT, World, normalized};

const LIMIT: Duration = Duration::from_secs(60);

/// Prints 300 numbered lines in bursts, then 300 KiB at once.
const CHATTY: &[&str] = &[
    "for i in $(seq 1 300); do echo \"line $i\"; if [ $((i % 30)) -eq 0 ]; then sleep 0.15; fi; done",
    "head -c 300000 /dev/zero | tr '\\0' 'x'; echo",
    "echo the-end",
];

#[tokio::test]
async fn the_log_survives_lost_requests_and_a_gap_byte_for_byte() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    // Warm the cache, then a reference run without faults.
    w.fake.state.finished(w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["true"])), LIMIT).await;
    let clean = w.fake.state.finished(w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, CHATTY)), LIMIT).await;
    assert_eq!(clean.finish.as_ref().unwrap().outcome, Outcome::Success, "{}", clean.log_text());

    // The same job with a fault on most of its log requests.
    w.fake.state.push_log_faults(&[
        LogFault::Fail500,
        LogFault::StoreThen500,
        LogFault::StoreThenReset,
        LogFault::Gap409,
        LogFault::StoreThen500,
        LogFault::Gap409,
        LogFault::StoreThenReset,
    ]);
    let job = w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, CHATTY));
    let rec = w.fake.state.finished(job, LIMIT).await;
    assert_eq!(w.fake.state.log_faults_left(), 0, "every fault was hit");
    assert_eq!(rec.finish.as_ref().unwrap().outcome, Outcome::Success, "{}", rec.log_text());
    assert!(rec.mismatches.is_empty(), "a resent chunk differed from what was stored: {:?}", rec.mismatches);
    assert_eq!(rec.finish.as_ref().unwrap().log_bytes, rec.log.len() as u64);
    assert_eq!(normalized(&rec.log_text()), normalized(&clean.log_text()), "the log is the same as without faults");
    let log = rec.log_text();
    for i in 1..=300 {
        assert_eq!(log.matches(&format!("line {i}\n")).count(), 1, "line {i} exactly once");
    }
    assert!(rec.log_requests.iter().any(|r| r.body.len() > 64 * 1024), "large output goes in large requests");

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn a_line_reaches_the_server_quickly_and_lines_are_batched() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    let p = w.fake.state.payload(
        PROJECT,
        &sha,
        &["echo \"printed-at=$(date +%s%3N)\"", "sleep 2", "for i in $(seq 1 2000); do echo \"burst line $i\"; done"],
    );
    let job = w.fake.state.enqueue(p);
    // The output line (the echoed command also holds the text, not at a line start).
    let rec = w.fake.state.log_contains(job, "\nprinted-at=", LIMIT).await;
    assert!(rec.finish.is_none(), "visible while the job still runs");
    let printed_line = |r: &crate::fake::LogRequest| {
        String::from_utf8_lossy(&r.body).lines().find_map(|l| l.strip_prefix("printed-at=").map(|t| t.trim().parse::<u128>().unwrap()))
    };
    let (request, printed) = rec.log_requests.iter().find_map(|r| printed_line(r).map(|p| (r, p))).unwrap();
    let arrived = request.at.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let latency = arrived.saturating_sub(printed);
    eprintln!("a line reached the server {latency} ms after it was printed");
    assert!(latency < 500, "a line took {latency} ms to reach the server (batching waits at most 100 ms)");

    let rec = w.fake.state.finished(job, LIMIT).await;
    assert_eq!(rec.finish.as_ref().unwrap().outcome, Outcome::Success);
    let burst: Vec<_> = rec.log_requests.iter().filter(|r| String::from_utf8_lossy(&r.body).contains("burst line")).collect();
    assert!(burst.len() <= 5, "2000 lines printed at once went in {} requests", burst.len());

    agent.stop(LIMIT).await.unwrap();
}

#[tokio::test]
async fn a_server_refusing_logs_slows_the_job_down_without_losing_bytes() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");
    let agent = w.shell_agent(1);

    w.fake.state.refuse_logs_for(Duration::from_secs(3));
    let size = 24 << 20;
    let p = w.fake.state.payload(PROJECT, &sha, &[&format!("head -c {size} /dev/zero | tr '\\0' 'y'"), "echo; touch printed"]);
    let job = w.fake.state.enqueue(p);

    // While the server refuses, the job cannot get its 24 MiB out: the agent holds at most
    // 8 MiB and the output pipe blocks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let printed = w.work_dir().join("builds").read_dir().unwrap().next().unwrap().unwrap().path().join("0/app/printed");
    assert!(!printed.exists(), "the job printed everything although nothing was acknowledged");

    let rec = w.fake.state.finished(job, LIMIT).await;
    assert_eq!(rec.finish.as_ref().unwrap().outcome, Outcome::Success, "{}", &rec.log_text()[..2000.min(rec.log.len())]);
    assert!(rec.mismatches.is_empty(), "{:?}", rec.mismatches);
    let log = rec.log_text();
    let ys = "y".repeat(size);
    assert_eq!(log.matches(&ys).count(), 1, "every byte arrived");
    assert!(!log.contains(&format!("{ys}y")), "no byte arrived twice");
    assert_eq!(rec.finish.unwrap().log_bytes, rec.log.len() as u64);
    assert!(rec.log_requests.iter().all(|r| r.body.len() <= scheduler::protocol::MAX_LOG_CHUNK));

    agent.stop(LIMIT).await.unwrap();
}

/// A short job's log goes whole in the finish report when the server offers it: no log request
/// at all, masked like any append; a job that runs longer than the log interval ships its log
/// as appends and its report carries none; a server that does not offer it gets appends.
#[tokio::test]
async fn a_short_jobs_whole_log_rides_in_the_finish_report_when_offered() {
    let w = World::new().await;
    let sha = w.repo.commit("main", &[("file.txt", "x\n")], "one");

    // A minute between sends: however slow the machine, this job ends before any is due.
    let agent = w.shell_agent_configured(1, |c| c.log_interval_ms = Some(60_000));
    let secret = "whole-log-S3cr3t";
    let mut short = w.fake.state.payload(PROJECT, &sha, &["echo \"short job says $SECRET\""]);
    short.log_in_finish = true;
    short.job.variables = vec![crate::support::var("SECRET", secret, true)];
    let rec = w.fake.state.finished(w.fake.state.enqueue(short), LIMIT).await;
    let finish = rec.finish.as_ref().unwrap();
    assert_eq!(finish.outcome, Outcome::Success, "{}", rec.log_text());
    assert!(rec.log_requests.is_empty(), "no log request: {}", rec.log_requests.len());
    let whole = finish.log.as_ref().expect("the whole log in the report");
    assert_eq!(finish.log_bytes, whole.0.len() as u64);
    let text = String::from_utf8_lossy(&whole.0);
    assert!(text.contains("short job says [MASKED]"), "{text}");
    assert!(!text.contains("S3cr3t"), "{text}");
    agent.stop(LIMIT).await.unwrap();

    // The default interval (100 ms) and a job of 400 ms: appends, no log in the report.
    let agent = w.shell_agent(1);
    let mut long = w.fake.state.payload(PROJECT, &sha, &["echo first", "sleep 0.4", "echo last"]);
    long.log_in_finish = true;
    let rec = w.fake.state.finished(w.fake.state.enqueue(long), LIMIT).await;
    let finish = rec.finish.as_ref().unwrap();
    assert!(finish.log.is_none(), "a log shipped in part is never sent whole");
    assert!(!rec.log_requests.is_empty());
    assert_eq!(finish.log_bytes, rec.log.len() as u64);
    assert!(rec.log_text().contains("last"), "{}", rec.log_text());

    // Not offered (an older server): appends only.
    let rec = w.fake.state.finished(w.fake.state.enqueue(w.fake.state.payload(PROJECT, &sha, &["echo hi"])), LIMIT).await;
    assert!(rec.finish.as_ref().unwrap().log.is_none());
    assert!(!rec.log_requests.is_empty());
    agent.stop(LIMIT).await.unwrap();
}
