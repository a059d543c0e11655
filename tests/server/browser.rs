//! The job page in a real browser (Debian's chromium, headless, driven over the DevTools
//! protocol): new log lines appear without a reload, a collapsed section is collapsed, and a
//! line anchor targets its line.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, free_port, gitlab_push};

pub(crate) struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn chromium() -> Browser {
    let bin =
        ["chromium", "chromium-browser"].into_iter().find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let bin = bin.expect("Debian's `chromium` is needed for the browser test (scripts/deps.sh installs it)");
    let profile = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--remote-debugging-port={port}"))
        .arg("--remote-debugging-address=127.0.0.1")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::support::wait_port(port);
    Browser { child, _profile: profile, port }
}

/// One page over the DevTools protocol: `eval` runs JavaScript and returns its value.
pub(crate) struct Page {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next: u64,
}

impl Page {
    pub(crate) async fn open(b: &Browser) -> Page {
        let list: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{}/json/list", b.port)).await.unwrap().json().await.unwrap();
        let url =
            list.iter().find(|t| t["type"] == "page").and_then(|t| t["webSocketDebuggerUrl"].as_str()).expect("a page target").to_string();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Page { ws, next: 1 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.ws.send(Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into())).await.unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.ws.next()).await.expect("DevTools answered").unwrap().unwrap();
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    return v["result"].clone();
                }
            }
        }
    }

    /// Every request of the page (navigations, scripts' `fetch` and `EventSource`) sends
    /// `Authorization: Bearer <token>`: the page acts as that token's user, without a login.
    pub(crate) async fn authorize(&mut self, token: &str) {
        self.call("Network.enable", json!({})).await;
        self.call("Network.setExtraHTTPHeaders", json!({"headers": {"Authorization": format!("Bearer {token}")}})).await;
    }

    pub(crate) async fn eval(&mut self, js: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true})).await["result"]["value"].clone()
    }

    /// Runs JavaScript whose value is a promise, and returns what it resolves to.
    pub(crate) async fn eval_async(&mut self, js: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true, "awaitPromise": true})).await["result"]["value"]
            .clone()
    }

    /// Types `text` where the focus is, as a keyboard would.
    pub(crate) async fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Presses and releases a key (`Enter`, `Escape`), with `Shift` when asked.
    pub(crate) async fn press(&mut self, key: &str, shift: bool) {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Escape" => (27, ""),
            "Tab" => (9, ""),
            _ => (0, ""),
        };
        let modifiers = if shift { 8 } else { 0 };
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code, "modifiers": modifiers});
            if kind == "keyDown" && !text.is_empty() {
                event["text"] = json!(text);
            }
            self.call("Input.dispatchKeyEvent", event).await;
        }
    }

    /// Waits until `js` is `true` (or fails after `secs`, showing `show`'s value).
    pub(crate) async fn wait_for(&mut self, js: &str, secs: u64, show: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.eval(js).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "`{js}` never held: {}", self.eval(show).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Navigates and waits until the new document has loaded (a link's click, a form's post).
    pub(crate) async fn wait_navigation(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(&format!("window.{marker} === true || document.readyState !== 'complete'")).await != Value::Bool(false) {
            assert!(Instant::now() < deadline, "no new page was loaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval("document.readyState").await != "complete" {
            assert!(Instant::now() < deadline, "the page did not load");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_jobs_page_grows_live_folds_sections_and_follows_anchors() {
    let forge = Forge::new(concat!(
        "live:\n  script:\n",
        "    - printf '\\033[0Ksection_start:%s:deps[collapsed=true]\\r\\033[0KInstalling\\n' \"$(date +%s)\"\n",
        "    - echo inside-the-section\n",
        "    - printf '\\033[0Ksection_end:%s:deps\\r\\033[0K\\n' \"$(date +%s)\"\n",
        "    - for i in $(seq 1 30); do echo \"tick $i\"; sleep 0.2; done\n",
        "after:\n  needs: [live]\n  script: [echo done]\n",
    ));
    let (before, after) = forge.push("main", "first");
    // Public: the browser reads it without logging in (the login has its own test).
    let server = Server::start_full(&forge, 5000, "", "visibility = \"public\"", None, Vec::new());
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "browser-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = http.wait_job_status(id, "live", &["running"], 60).await["id"].as_i64().unwrap();
    // Wait until the section has been written, then open the page while the job still runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.log(job).await.contains("tick 2") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let browser = chromium();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("{}/jobs/{job}", http.base)).await;
    let count = "document.querySelectorAll('#log .line').length";
    let first = page.eval(count).await.as_u64().unwrap_or(0);
    assert!(first > 0, "the page shows the log so far");
    // New lines arrive over the live stream, without a reload.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = page.eval(count).await.as_u64().unwrap_or(0);
        if now > first + 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no new line appeared live (still {now})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The collapsed section is a closed <details> holding its line.
    let collapsed = page
        .eval(
            "(() => { const d = [...document.querySelectorAll('details')].find(d => d.querySelector(':scope > summary') && \
             d.querySelector(':scope > summary').textContent.includes('Installing')); \
             return d ? !d.open && d.textContent.includes('inside-the-section') : document.getElementById('log').innerHTML.slice(0, 3000) })()",
        )
        .await;
    assert_eq!(collapsed, Value::Bool(true), "a collapsed section");
    // A line anchor targets its line.
    page.goto(&format!("{}/jobs/{job}#L2", http.base)).await;
    let target = page.eval("document.querySelector(':target') && document.querySelector(':target').id").await;
    assert_eq!(target, Value::String("L2".into()));
    let shown = page.eval("document.getElementById('L2') !== null").await;
    assert_eq!(shown, Value::Bool(true));
    // The pipeline page draws `after`'s need on `live` as an edge.
    page.goto(&format!("{}/pipelines/{id}", http.base)).await;
    let edges = page.eval("document.querySelectorAll('#needs-edges path').length").await;
    assert_eq!(edges, Value::from(1), "one needs edge");
}

/// The pipeline page follows a running pipeline without reloading: a job's card changes
/// status live, a finished job offers Retry and no Cancel, and after the end the failing
/// JUnit test shows with its message. The job page jumps to its first error line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pipelines_page_updates_live_and_offers_only_actions_that_apply() {
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let forge = Forge::new(&format!(
        concat!(
            "gate:\n  script:\n",
            "    - for i in $(seq 1 1200); do if [ -e '{}' ]; then break; fi; sleep 0.05; done\n",
            "    - mkdir -p out\n",
            "    - echo '<testsuite><testcase classname=\"calc.Sum\" name=\"adds_two\"><failure message=\"expected 4 but was 5\"/></testcase><testcase classname=\"calc.Sum\" name=\"ok\"/></testsuite>' > out/junit.xml\n",
            "  artifacts:\n    reports:\n      junit: out/junit.xml\n",
            "side:\n  script: [echo side]\n",
            "after:\n  needs: [gate]\n  script:\n    - echo compiling\n    - printf 'error\\072 something broke\\n'\n    - echo still going\n",
        ),
        go.display()
    ));
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "live-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let gate_job = http.wait_job_status(id, "gate", &["running"], 60).await["id"].as_i64().unwrap();
    let browser = chromium();
    let mut page = Page::open(&browser).await;
    // A maintainer (the server's admin, by token): the buttons show.
    page.authorize(&server.token).await;
    page.goto(&format!("{}/pipelines/{id}", http.base)).await;
    let card = |what: &str| format!("(() => {{ const c = document.getElementById('job-{gate_job}'); return {what}; }})()");
    assert_eq!(page.eval(&card("c.classList.contains('running')")).await, Value::Bool(true));
    assert_eq!(page.eval(&card("!!c.querySelector('form[data-action=cancel]')")).await, Value::Bool(true), "a running job can be canceled");
    assert_eq!(page.eval(&card("!!c.querySelector('form[data-action=retry]')")).await, Value::Bool(false), "not retried");
    // The runners page: the runner is online and runs `gate`.
    page.goto(&format!("{}/runners", http.base)).await;
    let row = page.eval("document.querySelector('#runners tbody tr').innerText").await;
    let row = row.as_str().unwrap_or_default().to_string();
    assert!(row.contains("node") && row.contains("online") && row.contains("gate"), "{row}");
    page.goto(&format!("{}/pipelines/{id}", http.base)).await;
    page.eval("window.__same_page = true").await;
    std::fs::write(&go, "").unwrap();
    // The card turns `success` through the live stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while page.eval(&card("c.classList.contains('success')")).await != Value::Bool(true) {
        assert!(Instant::now() < deadline, "the job's card did not change: {}", page.eval(&card("c.outerHTML")).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(page.eval("window.__same_page === true").await, Value::Bool(true), "no reload");
    assert_eq!(page.eval(&card("c.querySelector('.state').textContent.includes('✓ success')")).await, Value::Bool(true));
    assert_eq!(
        page.eval(&card("!!c.querySelector('form[data-action=cancel]')")).await,
        Value::Bool(false),
        "a finished job offers no Cancel"
    );
    assert_eq!(page.eval(&card("!!c.querySelector('form[data-action=retry]')")).await, Value::Bool(true), "a finished job can be retried");
    // The pipeline ends: its status too, live.
    http.wait_status(id, &["success"], 60).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while page.eval("document.getElementById('pipeline-status').textContent").await != Value::String("✓ success".into()) {
        assert!(Instant::now() < deadline, "the pipeline's status did not change");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(page.eval("!!document.querySelector('#pipeline-actions form[data-action=cancel]')").await, Value::Bool(false));
    // The failing test, named, with its message.
    page.goto(&format!("{}/pipelines/{id}", http.base)).await;
    let tests = page.eval("document.getElementById('tests') && document.getElementById('tests').innerText").await;
    let tests = tests.as_str().unwrap_or_default();
    assert!(tests.contains("2 tests, 1 failed, 0 skipped"), "{tests}");
    assert!(tests.contains("adds_two") && tests.contains("calc.Sum") && tests.contains("expected 4 but was 5"), "{tests}");
    // The timeline: one bar per job, the critical path (gate, then after) marked.
    let bars = page
        .eval(
            "[...document.querySelectorAll('#timeline svg g.bar')].map(g => g.dataset.job + (g.classList.contains('critical') ? '*' : ''))",
        )
        .await;
    assert_eq!(bars, serde_json::json!(["gate*", "side", "after*"]), "one bar per job, the critical path marked");
    let waits = page.eval("document.querySelectorAll('#timeline g.bar rect.wait').length").await;
    assert_eq!(waits, Value::from(3), "each job's queue wait is drawn");
    // The job page jumps to the first error line.
    let after_job = crate::support::job_id(&http.wait_status(id, &["success"], 10).await, "after");
    page.goto(&format!("{}/jobs/{after_job}", http.base)).await;
    page.eval("document.getElementById('first-error').click()").await;
    let target = page.eval("location.hash && document.getElementById(location.hash.slice(1)).textContent").await;
    assert!(target.as_str().is_some_and(|t| t.contains("error: something broke")), "{target}");
}

/// A project's pipeline list follows its pipelines without reloading: a row's status changes
/// and a new pipeline's row appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_list_updates_live() {
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let forge = Forge::new(&format!(
        "wait:\n  script:\n    - for i in $(seq 1 1200); do if [ -e '{}' ]; then break; fi; sleep 0.05; done\n",
        go.display()
    ));
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "list-1").await;
    let first = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_job_status(first, "wait", &["running"], 60).await;
    let browser = chromium();
    let mut page = Page::open(&browser).await;
    page.authorize(&server.token).await;
    page.goto(&format!("{}/projects/app", http.base)).await;
    let status = |id: i64| format!("(document.querySelector('#pipeline-{id} .status') || {{}}).textContent");
    assert_eq!(page.eval(&status(first)).await, Value::String("▶ running".into()));
    page.eval("window.__same_page = true").await;
    // A second pipeline: its row appears at the top.
    let (before2, after2) = forge.push("main", "second");
    let r = http.gitlab_hook(gitlab_push("main", &before2, &after2, "second"), Some(SECRET), "list-2").await;
    let second = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while page.eval(&format!("!!document.getElementById('pipeline-{second}')")).await != Value::Bool(true) {
        assert!(Instant::now() < deadline, "no row for the new pipeline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let top = page.eval("document.querySelector('#pipelines tbody tr').id").await;
    assert_eq!(top, Value::String(format!("pipeline-{second}")), "newest first");
    std::fs::write(&go, "").unwrap();
    for id in [first, second] {
        http.wait_status(id, &["success"], 60).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while page.eval(&status(id)).await != Value::String("✓ success".into()) {
            assert!(Instant::now() < deadline, "pipeline {id}'s row did not change: {}", page.eval(&status(id)).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(page.eval("window.__same_page === true").await, Value::Bool(true), "no reload");
}
