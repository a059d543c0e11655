//! What an operator reads: one structured line per lifecycle step of a pipeline, with the
//! project, pipeline and job ids as fields (the server runs with `PISTE_LOG=info`).

use std::time::Duration;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

/// The server's log lines, without colour codes.
fn lines(server: &Server) -> Vec<String> {
    let text = server.log();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.lines().map(str::to_string).collect()
}

/// The one line at `level` saying `message` with these `key=value` fields (values as logged).
fn line<'a>(lines: &'a [String], level: &str, message: &str, fields: &[(&str, String)]) -> Option<&'a String> {
    let found: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!(" {level} ")) && l.contains(message))
        .filter(|l| fields.iter().all(|(k, v)| l.split_whitespace().any(|w| w == format!("{k}={v}"))))
        .collect();
    assert!(found.len() <= 1, "one `{message}` line expected: {found:#?}");
    found.first().copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_step_of_a_pipelines_life() {
    let forge = Forge::new("ok:\n  script: [echo fine]\nbad:\n  script: [exit 3]\n");
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 10_000, "");
    let http = Http::new(&server);

    let refused = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some("wrong-token"), "refused-1").await;
    assert_eq!(refused.status(), 401);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "life-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    let (ok, bad) = (job_id(&p, "ok").to_string(), job_id(&p, "bad").to_string());

    // The last line is written just after the pipeline's status is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while line(&lines(&server), "INFO", "pipeline finished", &[("pipeline", id.to_string())]).is_none() {
        assert!(std::time::Instant::now() < deadline, "no `pipeline finished` line:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = lines(&server);
    let (project, pipeline) = (("project", "app".to_string()), ("pipeline", id.to_string()));
    let expect = |level: &str, message: &str, fields: &[(&str, String)]| {
        line(&lines, level, message, fields).unwrap_or_else(|| panic!("no {level} `{message}` with {fields:?} in:\n{}", lines.join("\n")));
    };
    expect("WARN", "webhook refused", std::slice::from_ref(&project));
    expect("INFO", "webhook received", &[project.clone(), pipeline.clone()]);
    expect("INFO", "pipeline created", &[project.clone(), pipeline.clone(), ("jobs", "2".into())]);
    for job in [&ok, &bad] {
        expect("INFO", "job leased", &[project.clone(), pipeline.clone(), ("job", job.clone())]);
    }
    expect("INFO", "job finished", &[project.clone(), pipeline.clone(), ("job", ok.clone()), ("status", "success".into())]);
    let failed = line(&lines, "WARN", "job failed", &[project.clone(), pipeline.clone(), ("job", bad.clone())]);
    assert!(failed.is_some_and(|l| l.contains("script_failure")), "the reason is given: {failed:?}");
    expect("INFO", "pipeline finished", &[project, pipeline, ("status", "failed".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_cannot_be_planned_is_one_warning_with_its_first_error() {
    let forge = Forge::new("build:\n  scirpt: [make]\n");
    let (before, after) = forge.push("main", "typo");
    let server = Server::start(&forge, 10_000, "");
    let http = Http::new(&server);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "typo"), Some(SECRET), "typo-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["failed"], 60).await;
    assert!(p["error"].as_str().is_some_and(|e| e.contains("scirpt")), "{p:#}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let fields = [("project", "app".to_string()), ("pipeline", id.to_string())];
    let warning = loop {
        if let Some(l) = line(&lines(&server), "WARN", "pipeline failed to plan", &fields) {
            break l.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no `pipeline failed to plan` line:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(warning.contains("error=\"") && warning.contains("scirpt"), "the first error, quoted: {warning}");
    assert!(line(&lines(&server), "INFO", "pipeline created", &fields).is_none(), "{}", server.log());
}
