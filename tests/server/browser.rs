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

    pub(crate) async fn eval(&mut self, js: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true})).await["result"]["value"].clone()
    }

    /// Runs JavaScript whose value is a promise, and returns what it resolves to.
    pub(crate) async fn eval_async(&mut self, js: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true, "awaitPromise": true})).await["result"]["value"]
            .clone()
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
