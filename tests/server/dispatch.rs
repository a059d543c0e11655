//! Many finish reports of one pipeline at once: the server stores those that arrive while
//! the pipeline's last transition is being committed together (`pipelines::process`, group
//! commit). Each job keeps its own result, and each report gets its own answer.

use reqwest::StatusCode;
use scheduler::protocol::{FinishLog, FinishRequest, JobPayload, paths};
use scheduler::{FailureReason, Outcome};
use serde_json::Value;

use crate::support::{Forge, Http, REGISTRATION, SECRET, Server, gitlab_push, postgres_database};

const JOBS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_arriving_together_each_record_their_job_on_sqlite() {
    finishes_arriving_together(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_arriving_together_each_record_their_job_on_postgres() {
    finishes_arriving_together(Some(postgres_database())).await;
}

async fn finishes_arriving_together(database: Option<String>) {
    // Odd jobs fail (allowed), each with its own reason: results must not be mixed up.
    let yml: String =
        (0..JOBS).map(|i| format!("j{i}:\n  script: [\"true\"]\n{}", if i % 2 == 1 { "  allow_failure: true\n" } else { "" })).collect();
    let forge = Forge::new(&yml);
    let (before, after) = forge.push("main", "first");
    let extra = database.map(|db| format!("database = \"{db}\"")).unwrap_or_default();
    let server = Server::start(&forge, 60_000, &extra);
    let http = Http::new(&server);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "together-1").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let pipeline = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();

    let client = reqwest::Client::new();
    let body = serde_json::json!({"registration_token": REGISTRATION, "name": "together"});
    let r = client.post(format!("{}{}", http.base, paths::REGISTER)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let runner = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let mut leased: Vec<JobPayload> = Vec::new();
    while leased.len() < JOBS {
        let r = client
            .post(format!("{}{}", http.base, paths::REQUEST_JOB))
            .bearer_auth(&runner)
            .json(&serde_json::json!({"free_slots": JOBS}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "every job is queued: {}", server.log());
        leased.push(r.json().await.unwrap());
    }

    // Every report at once.
    let reports = leased.iter().map(|job| {
        let index: i32 = job.job.name[1..].parse().unwrap();
        let line = format!("{} ran\n", job.job.name);
        let (outcome, exit_code) = if index % 2 == 1 {
            (Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some(index) }, Some(index))
        } else {
            (Outcome::Success, Some(0))
        };
        let finish = FinishRequest {
            outcome,
            exit_code,
            reason: (index % 2 == 1).then(|| format!("exit {index}")),
            log_bytes: line.len() as u64,
            log: Some(FinishLog(line.into_bytes())),
            dotenv: Vec::new(),
            coverage: None,
        };
        let request = client.post(format!("{}{}", http.base, paths::finish(job.job_id))).bearer_auth(&job.token).json(&finish);
        async move { request.send().await.unwrap().status() }
    });
    let answers = futures_util::future::join_all(reports).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}\n{}", server.log());

    let p = http.wait_status(pipeline, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "failures are allowed: {p:#}");
    let jobs = p["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), JOBS);
    for j in jobs {
        let name = j["name"].as_str().unwrap();
        let index: i64 = name[1..].parse().unwrap();
        let want = if index % 2 == 1 { "failed" } else { "success" };
        assert_eq!(j["status"], want, "{j:#}");
        let reason = (index % 2 == 1).then(|| format!("script_failure: exit {index}"));
        assert_eq!(j["failure_reason"].as_str(), reason.as_deref(), "{j:#}");
        assert_eq!(j["attempt"], 1, "{j:#}");
        assert_eq!(http.log(j["id"].as_i64().unwrap()).await, format!("{name} ran\n"));
    }
}
