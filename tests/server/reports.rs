//! JUnit reports and `coverage:` through a real server and runner: totals and failures per
//! job and per pipeline in the API and on the pipeline page, failures new since the previous
//! pipeline of the branch marked, coverage from the job's log.

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push};

/// A pipeline whose `test` job writes a JUnit report with the given failing test names and
/// prints a coverage line.
pub fn pipeline(failing: &[&str], coverage: &str) -> String {
    let mut cases = String::from(
        "<testcase classname=\"suite.Ok\" name=\"passes\"/><testcase classname=\"suite.Skip\" name=\"later\"><skipped/></testcase>",
    );
    for name in failing {
        cases.push_str(&format!(
            "<testcase classname=\"suite.Math\" name=\"{name}\"><failure message=\"{name} expected 2, got 3\">at math.rs:7</failure></testcase>"
        ));
    }
    format!(
        "test:\n  script:\n    - mkdir -p out\n    - echo '<testsuites><testsuite name=\"s\">{cases}</testsuite></testsuites>' > out/junit.xml\n    - echo 'Total coverage={coverage}% of lines'\n    - exit 1\n  coverage: '/Total coverage=\\d+\\.\\d+/'\n  artifacts:\n    when: always\n    reports:\n      junit: out/*.xml\n"
    )
}

async fn run(http: &Http, forge: &Forge, n: u32) -> Value {
    let (before, after) = forge.push("main", &format!("push {n}"));
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "p"), Some(SECRET), &format!("reports-{n}")).await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(id, &["failed"], 90).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_failures_and_coverage_reach_the_api_and_the_page() {
    let forge = Forge::new(&pipeline(&["adds"], "71.5"));
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let first = run(&http, &forge, 1).await;
    let tests = &first["tests"];
    assert_eq!((tests["total"].as_u64(), tests["failed"].as_u64(), tests["skipped"].as_u64()), (Some(3), Some(1), Some(1)), "{first:#}");
    let f = &tests["failures"][0];
    assert_eq!(f["name"], "adds");
    assert_eq!(f["classname"], "suite.Math");
    assert_eq!(f["message"], "adds expected 2, got 3");
    assert_eq!(f["output"], "at math.rs:7");
    assert_eq!(f["job"], "test");
    assert_eq!(f["new"], false, "no previous pipeline: nothing to compare with");
    assert_eq!(first["coverage"].as_f64(), Some(71.5));
    assert_eq!(first["jobs"][0]["coverage"].as_f64(), Some(71.5));
    assert_eq!(first["jobs"][0]["tests"]["total"].as_u64(), Some(3));

    // The next pipeline of the branch fails one more test: only that one is new.
    std::fs::write(forge.work().join(".gitlab-ci.yml"), pipeline(&["adds", "divides"], "80.0")).unwrap();
    let second = run(&http, &forge, 2).await;
    let failures = second["tests"]["failures"].as_array().unwrap();
    let new: Vec<(&str, bool)> = failures.iter().map(|f| (f["name"].as_str().unwrap(), f["new"].as_bool().unwrap())).collect();
    assert_eq!(new, [("adds", false), ("divides", true)]);
    let id = second["id"].as_i64().unwrap();
    let page = http.client.get(format!("{}/pipelines/{id}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("4 tests, 2 failed, 1 skipped"), "{page}");
    assert!(page.contains("divides expected 2, got 3") && page.contains("class=\"new\""), "{page}");
    let job = second["jobs"][0]["id"].as_i64().unwrap();
    assert!(page.contains(&format!("href=\"/jobs/{job}\"")), "a link to the job");
    assert!(page.contains("Coverage 80%"), "{page}");
}
