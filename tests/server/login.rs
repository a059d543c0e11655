//! Web login with OpenID Connect, end to end: headless chromium, `piste serve`, and a real
//! OpenID provider (`oidc-provider-mock` from PyPI, nonces required) on loopback. A user whose
//! groups claim maps to viewer sees the pipeline without a play button and is refused the
//! action; a developer plays the job with the page's button; a form posted from another origin
//! is refused though the browser sends the session cookie.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::{Page, chromium};
use crate::support::{Forge, Http, RunnerProc, SECRET, Server, free_port, gitlab_push, job_id, wait_port};

pub(crate) struct Provider {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `oidc-provider-mock` with two predefined users: `vera` in `/app-viewers`, `dave` in `/app-devs`.
pub(crate) fn provider() -> Provider {
    let port = free_port();
    let users = [
        r#"{"sub":"vera","preferred_username":"vera","groups":["/app-viewers"]}"#,
        r#"{"sub":"dave","preferred_username":"dave","groups":["/app-devs"]}"#,
    ];
    let mut cmd = Command::new("oidc-provider-mock");
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--require-nonce", "true"]);
    for u in users {
        cmd.args(["--user-claims", u]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("`oidc-provider-mock` (PyPI; scripts/deps.sh installs it) is needed for the login test");
    wait_port(port);
    Provider { child, url: format!("http://127.0.0.1:{port}") }
}

/// Waits until the page's location starts with `prefix` and it has loaded.
async fn wait_location(page: &mut Page, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let here = page.eval("document.readyState === 'complete' ? location.href : ''").await;
        let here = here.as_str().unwrap_or_default().to_string();
        if here.starts_with(prefix) {
            return here;
        }
        assert!(Instant::now() < deadline, "the browser did not reach {prefix} (at {here:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// From a piste page that needs a login: the provider's form, then `user`'s button, then back.
async fn log_in(page: &mut Page, server: &Server, provider: &Provider, path: &str, user: &str) {
    page.goto(&format!("{}{path}", server.url)).await;
    wait_location(page, &format!("{}/oauth2/authorize", provider.url)).await;
    let clicked = page
        .eval(&format!("(() => {{ const b = document.querySelector('button[value=\"{user}\"]'); if (b) b.click(); return !!b; }})()"))
        .await;
    assert_eq!(clicked, Value::Bool(true), "the provider offers {user}");
    wait_location(page, &format!("{}{path}", server.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_login_maps_groups_to_roles_in_a_real_browser() {
    let provider = provider();
    let forge = Forge::new(
        "build:\n  script: [echo built]\ndeploy:\n  when: manual\n  script: [echo deployed]\nstaging:\n  when: manual\n  script: [echo staged]\n",
    );
    forge.push("main", "first");
    let extra = format!(
        "external_url = \"http://127.0.0.1:{{PORT}}\"\n[oidc]\nissuer = \"{}\"\nclient_id = \"piste\"\nclient_secret = \"client-secret-for-tests\"\n",
        provider.url
    );
    let members = "members = { \"group:/app-viewers\" = \"viewer\", \"group:/app-devs\" = \"developer\" }";
    let server = Server::start_full(&forge, 10_000, &extra, members, None, Vec::new());
    let _runner = RunnerProc::start(&server, "node", "shell");
    let admin = Http::new(&server);
    let (before, after) = forge.push("feature", "feature");
    let r = admin.gitlab_hook(gitlab_push("feature", &before, &after, "feature"), Some(SECRET), "login-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = admin.wait_job_status(id, "build", &["success"], 60).await;
    assert_eq!(p["status"], "success");
    let pipeline: Value = admin.client.get(format!("{}/api/v1/pipelines/{id}", admin.base)).send().await.unwrap().json().await.unwrap();
    let (deploy, staging) = (job_id(&pipeline, "deploy"), job_id(&pipeline, "staging"));
    let path = format!("/pipelines/{id}");

    let browser = chromium();
    let mut page = Page::open(&browser).await;
    // vera (viewer): the login brings her back to the pipeline, which shows no play button.
    log_in(&mut page, &server, &provider, &path, "vera").await;
    let shown = page.eval("document.querySelectorAll('.job').length").await;
    assert_eq!(shown, Value::from(3), "the pipeline's jobs");
    assert_eq!(page.eval("document.querySelectorAll('form').length").await, Value::from(0), "no button for a viewer");
    // Her session cookie is HttpOnly: scripts do not see it.
    assert_eq!(page.eval("document.cookie.includes('piste_session')").await, Value::Bool(false));
    // Even with her session's CSRF token (from the logout form), the play is refused.
    let status = page
        .eval_async(&format!(
            "(async () => {{ const home = await (await fetch('/')).text(); \
             const csrf = new DOMParser().parseFromString(home, 'text/html').querySelector('input[name=csrf]').value; \
             const r = await fetch('/api/v1/jobs/{deploy}/play', {{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, body: 'csrf=' + csrf}}); \
             return r.status; }})()"
        ))
        .await;
    assert_eq!(status, Value::from(403), "a viewer's play is refused");
    admin.wait_job_status(id, "deploy", &["manual"], 5).await;
    // Log out: the session is gone, the pipeline needs a login again.
    page.goto(&format!("{}/", server.url)).await;
    assert!(page.eval("document.body.textContent").await.as_str().unwrap().contains("vera"));
    page.eval("document.querySelector('form[action=\"/logout\"] button').click()").await;
    wait_location(&mut page, &format!("{}/", server.url)).await;
    let anonymous = page.eval_async(&format!("(async () => (await fetch('/api/v1/pipelines/{id}')).status)()")).await;
    assert_eq!(anonymous, Value::from(401), "logged out");

    // dave (developer): the play button is there and works.
    log_in(&mut page, &server, &provider, &path, "dave").await;
    let play = format!("form[action=\"/api/v1/jobs/{deploy}/play\"] button");
    assert_eq!(page.eval(&format!("!!document.querySelector('{play}')")).await, Value::Bool(true), "a play button for a developer");
    page.eval(&format!("document.querySelector('{play}').click()")).await;
    admin.wait_job_status(id, "deploy", &["success"], 60).await;

    // A page of another origin (the provider's) posts the play form to piste, with dave's
    // cookie and even his CSRF token: refused by origin.
    page.goto(&format!("{}{path}", server.url)).await;
    let csrf = page.eval("document.querySelector('input[name=csrf]').value").await;
    let csrf = csrf.as_str().expect("a CSRF token in the page's forms").to_string();
    page.goto(&format!("{}/", provider.url)).await;
    page.eval(&format!(
        "(() => {{ const f = document.createElement('form'); f.method = 'post'; f.action = '{}/api/v1/jobs/{staging}/play'; \
         const i = document.createElement('input'); i.name = 'csrf'; i.value = '{csrf}'; f.appendChild(i); \
         document.body.appendChild(f); f.submit(); }})()",
        server.url
    ))
    .await;
    let landed = wait_location(&mut page, &format!("{}/api/v1/jobs/{staging}/play", server.url)).await;
    let text = page.eval("document.body.textContent").await;
    assert!(text.as_str().unwrap_or_default().contains("forbidden"), "refused at {landed}: {text}");
    admin.wait_job_status(id, "staging", &["manual"], 5).await;
}
