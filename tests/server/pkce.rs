//! The OpenID Connect login's PKCE, `state` and `nonce`, proven against a real provider.
//!
//! `oidc-provider-mock` issues codes without checking PKCE, so the test puts a front in
//! between that does what Keycloak does (RFC 7636 §4.6): it remembers each authorization
//! request's `code_challenge`, and at the token endpoint answers `400 invalid_grant` unless the
//! request's `code_verifier` hashes (S256) to the challenge of its code; everything else goes
//! through to the provider, whose issuer and endpoints are then the front's address. The login
//! is driven over plain HTTP so each part of the callback can be tampered with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::login::provider;
use crate::support::{Forge, Server};

/// What the front saw.
#[derive(Default)]
struct Seen {
    /// `state` → `code_challenge` of each authorization request.
    challenges: HashMap<String, String>,
    /// `code` → its authorization request's challenge.
    codes: HashMap<String, String>,
    /// `(code, code_verifier sent, whether it matched)` of each token request.
    exchanges: Vec<(String, Option<String>, bool)>,
}

#[derive(Clone)]
struct Front {
    upstream: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Seen>>,
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query().map(url_decode_pairs).unwrap_or_default()
}

fn url_decode_pairs(text: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{text}")).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

async fn front(State(f): State<Front>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    if path == "/oauth2/authorize" {
        let q = query(&uri);
        if let (Some(state), Some(challenge)) = (q.get("state"), q.get("code_challenge")) {
            assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"), "piste asks for S256");
            f.seen.lock().unwrap().challenges.insert(state.clone(), challenge.clone());
        }
    }
    if path == "/oauth2/token" {
        let form = url_decode_pairs(std::str::from_utf8(&body).unwrap());
        let code = form.get("code").cloned().unwrap_or_default();
        let verifier = form.get("code_verifier").cloned();
        let mut seen = f.seen.lock().unwrap();
        let expected = seen.codes.get(&code).cloned();
        let ok = match (&verifier, &expected) {
            (Some(v), Some(challenge)) => URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == *challenge,
            _ => false,
        };
        seen.exchanges.push((code, verifier, ok));
        if !ok {
            let answer = serde_json::json!({"error": "invalid_grant", "error_description": "PKCE verification failed"});
            return (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response();
        }
    }
    let mut req = f.http.request(method, format!("{}{}", f.upstream, uri.path_and_query().map_or("/", |p| p.as_str())));
    for (name, value) in &headers {
        if name != "content-length" && name != "connection" {
            req = req.header(name, value);
        }
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status();
    let mut out = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !["content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
            out.append(name, value.clone());
        }
    }
    // The provider's redirect back to piste carries the code: remember its challenge.
    if let Some(location) = out.get("location").and_then(|l| l.to_str().ok()) {
        if let Ok(url) = reqwest::Url::parse(location) {
            let q: HashMap<String, String> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            if let (Some(code), Some(state)) = (q.get("code"), q.get("state")) {
                let mut seen = f.seen.lock().unwrap();
                if let Some(challenge) = seen.challenges.get(state).cloned() {
                    seen.codes.insert(code.clone(), challenge);
                }
            }
        }
    }
    (status, out, resp.bytes().await.unwrap()).into_response()
}

/// One login begun at piste and finished at the provider, up to the callback (not sent).
struct Login {
    /// The `piste_login` cookie's value: `state.nonce.verifier.next`.
    cookie: String,
    /// Where the provider sends the browser back: piste's callback with `code` and `state`.
    callback: String,
    challenge: String,
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.trim().strip_prefix(&format!("{name}=")).map(str::to_owned))
        .next()
}

async fn begin(http: &reqwest::Client, server: &Server, user: &str) -> Login {
    let r = http.get(format!("{}/login?next=/runners", server.url)).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let cookie = set_cookie(&r, "piste_login").expect("the login cookie");
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    let q: HashMap<String, String> =
        reqwest::Url::parse(&authorize).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let challenge = q["code_challenge"].clone();
    assert_eq!(challenge.len(), 43, "a SHA-256 in base64url");
    let parts: Vec<&str> = cookie.split('.').collect();
    assert_eq!(parts.len(), 4, "{cookie}");
    assert!(!authorize.contains(parts[2]), "the verifier never leaves the browser's cookie: {authorize}");
    assert_eq!(q["state"], parts[0]);
    let form = http.get(&authorize).send().await.unwrap();
    assert_eq!(form.status(), 200, "the provider's form");
    let r = http.post(&authorize).form(&[("sub", user)]).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}: {}", r.status(), r.text().await.unwrap());
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    assert!(callback.starts_with(&format!("{}/auth/callback?", server.url)), "{callback}");
    Login { cookie, callback, challenge }
}

/// The callback with this login cookie: `(status, body, session cookie set)`.
async fn finish(http: &reqwest::Client, callback: &str, cookie: &str) -> (StatusCode, String, Option<String>) {
    let r = http.get(callback).header("Cookie", format!("piste_login={cookie}")).send().await.unwrap();
    let status = r.status();
    let session = set_cookie(&r, "piste_session").filter(|v| !v.is_empty());
    (status, r.text().await.unwrap(), session)
}

/// The cookie with part `i` (0 state, 1 nonce, 2 verifier) replaced.
fn with_part(cookie: &str, i: usize, value: &str) -> String {
    let mut parts: Vec<&str> = cookie.split('.').collect();
    parts[i] = value;
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_state_and_nonce_are_checked_end_to_end() {
    let provider = provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = Front {
        upstream: provider.url.clone(),
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        seen: seen.clone(),
    };
    let app = axum::Router::new().fallback(front).with_state(state);
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    let forge = Forge::new("build:\n  script: [echo built]\n");
    forge.push("main", "first");
    let extra = format!(
        "external_url = \"http://127.0.0.1:{{PORT}}\"\n[oidc]\nissuer = \"{front_url}\"\nclient_id = \"piste\"\nclient_secret = \"client-secret-for-tests\"\n"
    );
    let server = Server::start_full(&forge, 10_000, &extra, "members = { \"group:/app-viewers\" = \"viewer\" }", None, Vec::new());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // The login as a browser does it: the verifier reaches the token endpoint and hashes to
    // the challenge the authorization request carried; a session follows.
    let login = begin(&http, &server, "vera").await;
    let (status, body, session) = finish(&http, &login.callback, &login.cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert!(session.is_some(), "logged in");
    {
        let seen = seen.lock().unwrap();
        let (_, verifier, ok) = seen.exchanges.last().expect("a token request");
        assert!(ok, "the verifier matches the challenge");
        assert_eq!(verifier.as_deref(), login.cookie.split('.').nth(2), "the cookie's verifier was sent");
        assert_eq!(URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_deref().unwrap().as_bytes())), login.challenge);
    }
    // The same callback again: the provider has spent that code.
    let (status, body, session) = finish(&http, &login.callback, &login.cookie).await;
    assert_eq!((status, session), (StatusCode::UNAUTHORIZED, None), "{body}");

    // A callback whose verifier is not the one the challenge was made from (an attacker who
    // intercepted the code, in their own browser): the provider refuses the code, so does piste.
    let login = begin(&http, &server, "vera").await;
    let forged = with_part(&login.cookie, 2, &"ab".repeat(32));
    let (status, body, session) = finish(&http, &login.callback, &forged).await;
    assert_eq!((status, session), (StatusCode::UNAUTHORIZED, None), "{body}");
    assert!(body.contains("refused the code") && body.contains("invalid_grant"), "{body}");
    assert!(!seen.lock().unwrap().exchanges.last().unwrap().2, "refused for its verifier");

    // No verifier at all: refused before the code is even exchanged.
    let login = begin(&http, &server, "vera").await;
    let before = seen.lock().unwrap().exchanges.len();
    let (status, body, session) = finish(&http, &login.callback, &with_part(&login.cookie, 2, "")).await;
    assert_eq!((status, session), (StatusCode::UNAUTHORIZED, None), "{body}");
    assert!(body.contains("PKCE verifier"), "{body}");
    assert_eq!(seen.lock().unwrap().exchanges.len(), before, "no token request");

    // A `state` that is not this browser's login: refused, nothing exchanged.
    let (status, body, session) = finish(&http, &login.callback.replace("state=", "state=x"), &login.cookie).await;
    assert_eq!((status, session), (StatusCode::UNAUTHORIZED, None), "{body}");
    assert!(body.contains("`state` does not match"), "{body}");
    assert_eq!(seen.lock().unwrap().exchanges.len(), before, "no token request");

    // A nonce that is not the ID token's: the code is exchanged (verifier right), the token refused.
    let (status, body, session) = finish(&http, &login.callback, &with_part(&login.cookie, 1, &"cd".repeat(32))).await;
    assert_eq!((status, session), (StatusCode::UNAUTHORIZED, None), "{body}");
    assert!(body.contains("`nonce` is wrong"), "{body}");
    assert!(seen.lock().unwrap().exchanges.last().unwrap().2, "the code itself was fine");

    // The operator's log says why each login failed.
    let log = server.log();
    assert!(log.contains("invalid_grant") && log.contains("`state` does not match") && log.contains("`nonce` is wrong"), "{log}");
    served.abort();
}
