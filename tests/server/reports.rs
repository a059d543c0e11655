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
    // GitLab shows a job's coverage in its API view and on its page.
    let view: Value = http.client.get(format!("{}/api/v1/jobs/{job}", http.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["coverage"].as_f64(), Some(80.0), "{view:#}");
    let job_page = http.client.get(format!("{}/jobs/{job}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(job_page.contains(r#"<dd id="coverage">80%</dd>"#), "{job_page}");
    // The project page: the branch's latest pipeline, and its durations as one bar a pipeline
    // (each a link to it), beside the badge and its Markdown.
    let project = http.client.get(format!("{}/projects/app", http.base)).send().await.unwrap().text().await.unwrap();
    let branch = project.split("<div class=\"branch failed\">").nth(1).unwrap_or_else(|| panic!("a branch card: {project}"));
    let branch = &branch[..branch.find("</svg>").expect("its chart")];
    assert!(branch.contains("<h3>main</h3>") && branch.contains(&format!("href=\"/pipelines/{id}\"")), "{branch}");
    assert_eq!(branch.matches("<rect").count(), 2, "a bar for each of the branch's pipelines: {branch}");
    assert!(project.contains("<img class=\"badge\" src=\"/projects/app/badge.svg\"") && project.contains("![pipeline]("), "{project}");
}

/// The text of an SVG document's `<text>` elements, checking it is well-formed XML whose root
/// is `<svg>` in the SVG namespace.
pub fn svg_texts(svg: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let (mut texts, mut in_text, mut root) = (Vec::new(), false, None);
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("not well-formed XML ({e}): {svg}")) {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if root.is_none() {
                    let ns = e.try_get_attribute("xmlns").unwrap().map(|a| a.unescape_value().unwrap().into_owned());
                    assert_eq!(ns.as_deref(), Some("http://www.w3.org/2000/svg"), "{svg}");
                    root = Some(name.clone());
                }
                in_text = name == "text";
            }
            Event::Text(t) if in_text => texts.push(t.xml_content().unwrap().into_owned()),
            Event::End(_) => in_text = false,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(root.as_deref(), Some("svg"), "{svg}");
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_badge_is_svg_with_the_refs_latest_status() {
    let forge = Forge::new("ok:\n  script: [echo ok]\n");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let badge = |q: &'static str| {
        let url = format!("{}/projects/app/badge.svg{q}", http.base);
        let client = http.client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("image/svg+xml"));
            svg_texts(&r.text().await.unwrap())
        }
    };
    assert_eq!(badge("").await, ["pipeline", "unknown"], "no pipeline yet");
    let _runner = RunnerProc::start(&server, "node", "shell");
    let (before, after) = forge.push("main", "first");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "p"), Some(SECRET), "badge-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(id, &["success"], 60).await;
    assert_eq!(badge("?ref=main").await, ["pipeline", "success"]);
    assert_eq!(badge("").await, ["pipeline", "success"], "the default branch");
    assert_eq!(badge("?ref=other").await, ["pipeline", "unknown"]);
    let page = http.client.get(format!("{}/projects/app", http.base)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains(&format!("pipeline-{id}")), "the project page is still there");
}
