//! The job page in a real browser (headless chromium over the DevTools protocol): sections fold
//! and unfold (mouse and keyboard) with their durations, the section a failed script stopped in
//! is open, line numbers have no gap, lines show when they arrived on demand, search finds a
//! line on the page and, for a log bigger than the page, on the server; the raw log downloads
//! as stored (masked); the artifacts list their files with sizes and the browser opens one,
//! served safely.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::browser::{Page, chromium};
use crate::support::{Http, RunnerProc, SECRET, Server, gitlab_push};

const SECTIONS: &str = r#"unit:
  script:
    - echo "token $DEPLOY_TOKEN"
    - printf '\033[0Ksection_start:%s:setup[collapsed=true]\r\033[0KSetting up\n' "$(date +%s)"
    - echo needle-in-$((2 + 3))
    - sleep 1.2
    - printf '\033[0Ksection_end:%s:setup\r\033[0K\n' "$(date +%s)"
    - mkdir -p out/sub && printf 'hello report\n' > out/report.txt && head -c 3000 /dev/zero > out/sub/data.bin
    - echo '<script>alert(1)</script>' > out/page.html
    - printf '\033[0Ksection_start:%s:tests[collapsed=true]\r\033[0KRunning tests\n' "$(date +%s)"
    - echo test-one-ok
    - exit 3
    - printf '\033[0Ksection_end:%s:tests\r\033[0K\n' "$(date +%s)"
  artifacts:
    when: always
    paths: [out/]
"#;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A public project (the browser reads without logging in), a shell runner, one pipeline:
/// `(server, http, runner, pipeline id, first job's id)` once that job is `done`.
async fn run(pipeline: &str, done: &[&str]) -> (Server, Http, RunnerProc, i64, i64) {
    let forge = crate::support::Forge::new(pipeline);
    let (before, after) = forge.push("main", "first");
    let server = Server::start_full(&forge, 5000, "", "visibility = \"public\"", None, Vec::new());
    let http = Http::new(&server);
    let runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "job-page-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, done, 90).await;
    let job = p["jobs"][0]["id"].as_i64().unwrap();
    // Keep the forge's daemon for the runner's fetches until here.
    drop(forge);
    (server, http, runner, id, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sections_times_search_download_and_artifacts_on_a_failed_jobs_page() {
    let started = now_ms();
    let (_server, http, _runner, _id, job) = run(SECTIONS, &["failed"]).await;
    let browser = chromium();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("{}/jobs/{job}", http.base)).await;

    // Sections: collapsed as asked, with their durations; the one the script stopped in is
    // open and marked, on a failed job's page.
    let section = |name: &str, what: &str| {
        format!("(() => {{ const d = document.querySelector('details.section[data-name={name}]'); return {what}; }})()")
    };
    assert_eq!(page.eval(&section("setup", "d.open")).await, Value::Bool(false), "collapsed=true");
    let duration = page.eval(&section("setup", "d.querySelector(':scope > summary .duration').textContent")).await;
    let duration = duration.as_str().unwrap_or_default().to_string();
    assert!(duration.ends_with('s') && duration.trim_end_matches('s').parse::<u64>().is_ok_and(|s| s >= 1), "{duration:?}");
    assert_eq!(page.eval(&section("setup", "d.querySelector(':scope > summary .duration').checkVisibility()")).await, Value::Bool(true));
    let step_script =
        page.eval(&section("step_script", "d.open && /^\\d+s$/.test(d.querySelector(':scope > summary .duration').textContent)")).await;
    assert_eq!(step_script, Value::Bool(true), "the runner's sections show their durations too");
    assert_eq!(
        page.eval(&section("tests", "d.open && d.classList.contains('stopped')")).await,
        Value::Bool(true),
        "the failed section is open"
    );
    assert_eq!(page.eval("document.getElementById('log').classList.contains('failed')").await, Value::Bool(true));
    // Fold and unfold: with the mouse, then with the keyboard.
    page.eval(&section("setup", "d.querySelector(':scope > summary').click()")).await;
    assert_eq!(page.eval(&section("setup", "d.open")).await, Value::Bool(true), "a click opens it");
    assert_eq!(page.eval(&section("setup", "d.textContent.includes('needle-in-5')")).await, Value::Bool(true));
    page.eval(&section("setup", "d.querySelector(':scope > summary').click()")).await;
    assert_eq!(page.eval(&section("setup", "d.open")).await, Value::Bool(false), "and closes it");
    page.eval(&section("setup", "d.querySelector(':scope > summary').focus()")).await;
    page.press("Enter", false).await;
    assert_eq!(page.eval(&section("setup", "d.open")).await, Value::Bool(true), "Enter on the focused header opens it");
    page.press("Enter", false).await;
    assert_eq!(page.eval(&section("setup", "d.open")).await, Value::Bool(false));

    // Line numbers: 1, 2, 3... with no gap where sections start or end.
    let numbers = page.eval("[...document.querySelectorAll('#log .line[id]')].map(l => Number(l.id.slice(1)))").await;
    let numbers: Vec<u64> = numbers.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert!(numbers.len() > 10, "{numbers:?}");
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>(), "contiguous line numbers");
    let shown = page.eval("[...document.querySelectorAll('#log .line[id] > .ln')].every((a, i) => a.textContent === String(i + 1))").await;
    assert_eq!(shown, Value::Bool(true), "the numbers shown are the anchors'");

    // Times, on demand: hidden, then one per numbered line, then hidden again.
    assert_eq!(page.eval("document.querySelectorAll('#log .ts').length").await, Value::from(0));
    let first_time = page.eval("Number(document.querySelector('#log [data-t]').dataset.t)").await.as_i64().unwrap_or(0);
    assert!(first_time >= started - 60_000 && first_time <= now_ms(), "a time the server received lines: {first_time}");
    page.eval("document.getElementById('timestamps').click()").await;
    let times = page.eval("[...document.querySelectorAll('#log .line[id] .ts')].map(t => t.textContent)").await;
    let times: Vec<String> = times.as_array().unwrap().iter().map(|t| t.as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(times.len(), numbers.len(), "a time on every numbered line");
    assert!(times.iter().all(|t| t.len() == 8 && t.as_bytes()[2] == b':' && t.as_bytes()[5] == b':'), "HH:MM:SS: {times:?}");
    assert_eq!(page.eval("document.querySelector('#log .line[id] .ts').checkVisibility()").await, Value::Bool(true));
    assert_eq!(page.eval("document.getElementById('timestamps').getAttribute('aria-pressed')").await, Value::String("true".into()));
    page.eval("document.getElementById('timestamps').click()").await;
    assert_eq!(page.eval("document.querySelector('#log .line[id] .ts').checkVisibility()").await, Value::Bool(false), "hidden again");

    // Search on the page (the output, not the command's echo): typed, Enter; the line inside
    // the collapsed section is found, its
    // section opened, the text highlighted. The whole log is on the page: no server search.
    assert_eq!(page.eval("document.getElementById('search-server').hidden").await, Value::Bool(true));
    page.eval("document.getElementById('log-search').focus()").await;
    page.type_text("Needle-In-5").await;
    page.press("Enter", false).await;
    page.wait_for(
        "document.getElementById('search-count').textContent === '1 of 1'",
        10,
        "document.getElementById('search-count').textContent",
    )
    .await;
    let current = page.eval("document.querySelector('#log .line.current').textContent").await;
    assert!(current.as_str().is_some_and(|t| t.contains("needle-in-5")), "{current}");
    assert_eq!(page.eval(&section("setup", "d.open")).await, Value::Bool(true), "the match's section opened");
    assert_eq!(page.eval("document.querySelector('#log mark.hit').textContent").await, Value::String("needle-in-5".into()));
    page.press("Escape", false).await;
    assert_eq!(page.eval("document.querySelectorAll('#log mark.hit, #log .line.match').length").await, Value::from(0), "Escape clears");

    // The raw log downloads as stored: masked, markers and all, as a file.
    let raw = page
        .eval_async(
            "(async () => { const a = document.querySelector('a[href$=\"log?download=1\"]'); const r = await fetch(a.href); \
             return { cd: r.headers.get('content-disposition'), type: r.headers.get('content-type'), body: await r.text() }; })()",
        )
        .await;
    assert_eq!(raw["cd"], Value::String(format!("attachment; filename=\"unit-{job}.1.log\"")));
    assert_eq!(raw["type"], Value::String("text/plain; charset=utf-8".into()));
    let body = raw["body"].as_str().unwrap_or_default();
    assert!(body.contains("token [MASKED]") && !body.contains("tok-123456-secret"), "{body}");
    assert!(body.contains("section_start:") && body.contains("needle-in-5"), "{body}");

    // Artifacts: listed on the job page with their sizes.
    let listed = page.eval("document.getElementById('artifacts').innerText").await;
    let listed = listed.as_str().unwrap_or_default().to_string();
    for (file, size) in [("out/report.txt", "13 B"), ("out/sub/data.bin", "2.9 KiB"), ("out/page.html", "26 B")] {
        assert!(listed.lines().any(|l| l.contains(file) && l.contains(size)), "{file} ({size}) in {listed}");
    }
    // The browser: folders, then a folder's files with their sizes, then one file.
    page.eval("window.__old = true; document.querySelector('#artifacts a[href$=\"/artifacts\"]').click()").await;
    page.wait_navigation("__old").await;
    let rows =
        page.eval("[...document.querySelectorAll('#artifact-files tbody tr')].map(r => r.innerText.replace(/\\s+/g, ' ').trim())").await;
    assert_eq!(rows, serde_json::json!(["▸ out/ 3 files, 3.0 KiB"]), "one folder at the top");
    page.eval("window.__old = true; document.querySelector('#artifact-files a').click()").await;
    page.wait_navigation("__old").await;
    let rows =
        page.eval("[...document.querySelectorAll('#artifact-files tbody tr')].map(r => r.innerText.replace(/\\s+/g, ' ').trim())").await;
    assert_eq!(rows, serde_json::json!(["↰ ..", "▸ sub/ 1 file, 2.9 KiB", "page.html ⬇ 26 B", "report.txt ⬇ 13 B"]));
    page.eval("window.__old = true; [...document.querySelectorAll('#artifact-files a')].find(a => a.textContent === 'report.txt').click()")
        .await;
    page.wait_navigation("__old").await;
    assert_eq!(page.eval("document.getElementById('file-text').textContent").await, Value::String("hello report\n".into()));
    let served = |path: &str| {
        format!(
            "(async () => {{ const r = await fetch('/api/v1/jobs/{job}/artifacts/file?path={path}'); \
             return [r.status, r.headers.get('content-type'), r.headers.get('x-content-type-options'), \
             r.headers.get('content-security-policy'), r.headers.get('content-disposition'), await r.text()]; }})()"
        )
    };
    let report = page.eval_async(&served("out%2Freport.txt")).await;
    assert_eq!(report[0], 200);
    assert_eq!(report[1], "text/plain; charset=utf-8");
    assert_eq!(report[2], "nosniff");
    assert!(report[3].as_str().is_some_and(|c| c.contains("sandbox") && c.contains("default-src 'none'")), "{report}");
    assert_eq!(report[5], "hello report\n");
    let html = page.eval_async(&served("out/page.html")).await;
    assert_eq!(
        (&html[1], &html[5]),
        (&Value::from("text/plain; charset=utf-8"), &Value::from("<script>alert(1)</script>\n")),
        "never HTML"
    );
    let bin = page.eval_async(&served("out/sub/data.bin")).await;
    assert_eq!((&bin[1], &bin[4]), (&Value::from("application/octet-stream"), &Value::from("attachment; filename=\"data.bin\"")));
    // Paths that try to leave the archive are refused; a missing file is not found.
    for bad in ["..%2F..%2Fetc%2Fpasswd", "out%2F..%2Fout%2Freport.txt", "%2Fetc%2Fpasswd"] {
        assert_eq!(page.eval_async(&served(bad)).await[0], 400, "{bad}");
    }
    assert_eq!(page.eval_async(&served("out%2Fnothing")).await[0], 404);
    let page_status = page.eval_async(&format!("fetch('/jobs/{job}/artifacts/..%2F..%2Fetc%2Fpasswd').then(r => r.status)")).await;
    assert_eq!(page_status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_bigger_than_the_page_is_searched_on_the_server() {
    // The needle only in the output, not in the command's echo.
    let pipeline = "big:\n  script:\n    - echo needle-early-$((6 * 7))\n    - seq 1 90000\n";
    let (_server, http, _runner, _id, job) = run(pipeline, &["success"]).await;
    let browser = chromium();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("{}/jobs/{job}", http.base)).await;
    // The page shows the log's end: the needle is not on it.
    assert_eq!(page.eval("!!document.querySelector('.more a[href*=\"before=\"]')").await, Value::Bool(true), "an earlier part to load");
    assert_eq!(page.eval("document.getElementById('search-server').hidden").await, Value::Bool(false));
    page.eval("document.getElementById('log-search').focus()").await;
    page.type_text("needle-early-4").await;
    page.press("Enter", false).await;
    page.wait_for(
        "document.getElementById('search-count').textContent === 'No match on this page'",
        10,
        "document.getElementById('search-count').textContent",
    )
    .await;
    // The whole log, on the server: one line, linked to the page that shows it.
    page.eval("document.getElementById('search-server').click()").await;
    page.wait_for(
        "document.querySelector('#search-results p').textContent.startsWith('1 line holds')",
        30,
        "document.getElementById('search-results').innerText",
    )
    .await;
    let found = page.eval("[...document.querySelectorAll('#search-results li')].map(li => li.innerText)").await;
    let found = found.as_array().unwrap().iter().map(|f| f.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("line ") && found[0].ends_with("needle-early-42"), "{found:?}");
    let line = found[0].trim_start_matches("line ").split(' ').next().unwrap().to_string();
    page.eval("window.__old = true; document.querySelector('#search-results li a').click()").await;
    page.wait_navigation("__old").await;
    assert_eq!(page.eval("location.hash").await, Value::String(format!("#L{line}")));
    let target = page.eval(&format!("document.getElementById('L{line}').textContent")).await;
    assert!(target.as_str().is_some_and(|t| t.ends_with("needle-early-42")), "line {line} on the page it links to: {target}");
    assert_eq!(page.eval("!!document.querySelector('.more a')").await, Value::Bool(true), "that page links on to the rest");
    // The API answers the same, as JSON Lines; a query it cannot take is a 400.
    let lines = http.client.get(format!("{}/api/v1/jobs/{job}/log/search?q=89999", http.base)).send().await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["text"], "89999");
    assert_eq!(lines[1]["done"], true);
    assert_eq!(lines[1]["matches"], 1);
    let empty = http.client.get(format!("{}/api/v1/jobs/{job}/log/search?q=", http.base)).send().await.unwrap();
    assert_eq!(empty.status(), 400);
}
