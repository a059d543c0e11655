//! Who is asking, and what they may do: callers (a personal access token, a browser session, or
//! nobody), their role in a project, the checks every people-facing route makes, CSRF for page
//! forms, and the security headers of every response.
//!
//! Roles (`config::Role`): a project's `members` name users and `group:<name>` groups; `admins`
//! are maintainers everywhere; a public project gives everyone, anonymous callers included,
//! the viewer role. Acting on a pipeline (retry, cancel, play) needs developer on an
//! unprotected ref and maintainer on a protected one (the pipeline's `ref_protected`, the same
//! flag that decided its secrets). Approving a fork's pipeline (`fork_pipelines = "approval"`)
//! needs maintainer: it hands the fork's code the project's unprotected secrets.
//!
//! Refusals: reading without a role is `401` for an anonymous caller (pages redirect to the
//! login) and `404` for a known one (the project's data stays hidden); acting without the
//! role is `403` once reading is allowed (`401` for anonymous visitors of a public project).
//! Nothing of the project is in any refusal.
//!
//! Runner routes (runner and job tokens), webhooks (signatures), `/healthz` and `/metrics`
//! (aggregate counts only) keep their own rules and do not look at callers.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::config::{Config, ProjectConfig, Role, Visibility};
use crate::error::Error;
use crate::store::{JobRow, PipelineRow, Store};
use crate::{AppState, hash_token, tokens_equal};

/// The session cookie: a random 256-bit token; the store keeps its SHA-256 only.
pub const SESSION_COOKIE: &str = "piste_session";
/// The form field (or `X-CSRF-Token` header) carrying a session's CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// Creates a personal access token for `user` (expiring after `expires_days` when given):
/// the token (shown once) and its row. Only its SHA-256 is stored.
pub async fn create_access_token(
    store: &impl Store,
    user: &str,
    label: &str,
    expires_days: Option<u32>,
    now: i64,
) -> Result<(String, crate::store::AccessToken), crate::store::StoreError> {
    let token = format!("{TOKEN_PREFIX}{}", crate::new_token());
    let expires_at = expires_days.map(|d| now + i64::from(d) * 86_400_000);
    let row = store.create_access_token(user, label, &hash_token(&token), now, expires_at).await?;
    Ok((token, row))
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    User(User),
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// Groups as the provider names them (`/app-devs`).
    pub groups: Vec<String>,
    pub via: Via,
}

/// How a user proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    /// `Authorization: Bearer` with a personal access token: no cookie, so no CSRF.
    Token,
    /// The session cookie (the hash of its token): unsafe requests must carry the CSRF token.
    Session { token_hash: String },
}

impl Caller {
    pub fn user(&self) -> Option<&User> {
        match self {
            Caller::Anonymous => None,
            Caller::User(u) => Some(u),
        }
    }

    /// The CSRF token page forms carry: derived from the session, so it needs no storage and
    /// dies with the session. Empty for callers without a session.
    pub fn csrf(&self) -> String {
        match self.user().map(|u| &u.via) {
            Some(Via::Session { token_hash }) => csrf_for(token_hash),
            _ => String::new(),
        }
    }
}

fn csrf_for(session_hash: &str) -> String {
    hex::encode(Sha256::digest(format!("piste-csrf:{session_hash}").as_bytes()))
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Prefix of personal access tokens, so that secret scanners and people recognise them.
pub const TOKEN_PREFIX: &str = "piste_pat_";

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, Response> {
        caller(state, &parts.headers).await.map_err(IntoResponse::into_response)
    }
}

/// The caller of a request: a bearer token must be valid (a wrong one is refused, not taken
/// for anonymous, so a script learns its token expired); a stale session cookie is ignored.
pub async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, Error> {
    let now = state.now_ms();
    if let Some(token) = bearer(headers) {
        if token.len() > 512 {
            return Err(Error::Unauthorized("invalid, expired or revoked access token"));
        }
        let Some(t) = state.store.access_token(&hash_token(token), now).await? else {
            return Err(Error::Unauthorized("invalid, expired or revoked access token"));
        };
        let groups = state.config.user_groups(&t.user);
        return Ok(Caller::User(User { name: t.user, groups, via: Via::Token }));
    }
    if let Some(token) = cookie(headers, SESSION_COOKIE).filter(|t| t.len() <= 512) {
        let token_hash = hash_token(token);
        if let Some(s) = state.store.session(&token_hash, now).await? {
            return Ok(Caller::User(User { name: s.user, groups: s.groups, via: Via::Session { token_hash } }));
        }
    }
    Ok(Caller::Anonymous)
}

/// Whether `key` (a user name or `group:<name>`) designates this caller.
fn designates(key: &str, user: &User) -> bool {
    match key.strip_prefix("group:") {
        Some(group) => user.groups.iter().any(|g| g == group),
        None => key == user.name,
    }
}

pub fn is_admin(config: &Config, caller: &Caller) -> bool {
    caller.user().is_some_and(|u| config.admins.iter().any(|a| designates(a, u)))
}

/// The caller's role in `project`, if any.
pub fn role(config: &Config, project: &ProjectConfig, caller: &Caller) -> Option<Role> {
    if is_admin(config, caller) {
        return Some(Role::Maintainer);
    }
    let member = caller.user().and_then(|u| project.members.iter().filter(|(k, _)| designates(k, u)).map(|(_, r)| *r).max());
    let public = (project.visibility == Visibility::Public).then_some(Role::Viewer);
    member.max(public)
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    /// Retry, cancel, play: developer, or maintainer when the ref is protected.
    Act {
        protected: bool,
    },
    /// Approve a fork's merge-request pipeline: maintainer.
    Approve,
}

impl Need {
    fn role(self) -> Role {
        match self {
            Need::Read => Role::Viewer,
            Need::Act { protected: false } => Role::Developer,
            Need::Act { protected: true } | Need::Approve => Role::Maintainer,
        }
    }
}

/// A refusal, before it becomes an API error or a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Anonymous and not readable: log in.
    Login,
    /// Known caller who may not read: the thing is hidden.
    Hidden,
    /// May read, may not do this.
    Forbidden,
}

impl Denied {
    pub fn api(self, what: &'static str) -> Error {
        match self {
            Denied::Login => Error::Unauthorized(
                "log in: send `Authorization: Bearer <token>` with a token from `piste token create` (`piste logs` reads `PISTE_TOKEN`)",
            ),
            Denied::Hidden => Error::NotFound(what),
            Denied::Forbidden => Error::Forbidden("your role in this project does not allow this"),
        }
    }
}

/// Checks `need` on the project named `project` (an unknown project is hidden like a private
/// one: it may be gone from the configuration while its pipelines stay).
pub fn check(config: &Config, caller: &Caller, project: &str, need: Need) -> Result<Role, Denied> {
    let role = config.project(project).and_then(|p| role(config, p, caller));
    let role = role.or_else(|| is_admin(config, caller).then_some(Role::Maintainer));
    match role {
        None if caller.user().is_none() => Err(Denied::Login),
        None => Err(Denied::Hidden),
        Some(r) if r >= need.role() => Ok(r),
        // An anonymous visitor of a public project may read; to act, they log in first.
        Some(_) if caller.user().is_none() => Err(Denied::Login),
        Some(_) => Err(Denied::Forbidden),
    }
}

/// Whether a pipeline is of a protected ref: its trigger's `ref_protected`, as computed from
/// the configuration when the webhook arrived (and which decided its secrets). A trigger that
/// does not decode counts as protected.
pub fn pipeline_protected(p: &PipelineRow) -> bool {
    serde_json::from_str::<serde_json::Value>(&p.trigger).map_or(true, |v| v["ref_protected"] != serde_json::Value::Bool(false))
}

fn need_for(p: &PipelineRow, act: bool) -> Need {
    if act { Need::Act { protected: pipeline_protected(p) } } else { Need::Read }
}

/// The pipeline `id` if the caller may read it (`act`: act on it), as an API error otherwise.
pub async fn pipeline(state: &AppState, caller: &Caller, id: i64, act: bool) -> Result<PipelineRow, Error> {
    let p = state.store.pipeline(id).await?.ok_or(Error::NotFound("pipeline"))?;
    check(&state.config, caller, &p.project, need_for(&p, act)).map_err(|d| d.api("pipeline"))?;
    Ok(p)
}

/// The job `id` and its pipeline if the caller may read it (`act`: act on it).
pub async fn job(state: &AppState, caller: &Caller, id: i64, act: bool) -> Result<(JobRow, PipelineRow), Error> {
    let j = state.store.job(id).await?.ok_or(Error::NotFound("job"))?;
    let p = state.store.pipeline(j.pipeline_id).await?.ok_or(Error::NotFound("job"))?;
    check(&state.config, caller, &p.project, need_for(&p, act)).map_err(|d| d.api("job"))?;
    Ok((j, p))
}

/// Whether the caller may act on the pipeline (buttons are shown only then).
pub fn may_act(config: &Config, caller: &Caller, p: &PipelineRow) -> bool {
    check(config, caller, &p.project, need_for(p, true)).is_ok()
}

/// Whether the caller may approve the pipeline (a maintainer; the button is shown only then).
pub fn may_approve(config: &Config, caller: &Caller, p: &PipelineRow) -> bool {
    check(config, caller, &p.project, Need::Approve).is_ok()
}

/// A page refusal: the login for anonymous visitors (when OpenID Connect is configured), a
/// plain 404 or 403 otherwise. `path` is where the login comes back to.
pub fn page_refusal(config: &Config, denied: Denied, path: &str) -> Response {
    match denied {
        Denied::Login if config.oidc.is_some() => {
            let next: String = url_encode(path);
            Redirect::to(&format!("/login?next={next}")).into_response()
        }
        Denied::Login => {
            (StatusCode::UNAUTHORIZED, "This project is private and this server has no login configured (`[oidc]`).\n").into_response()
        }
        Denied::Hidden => (StatusCode::NOT_FOUND, "Not found.\n").into_response(),
        Denied::Forbidden => (StatusCode::FORBIDDEN, "Your role in this project does not allow this.\n").into_response(),
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The cross-site request checks for an unsafe request (a POST) before it acts:
/// - a browser's `Sec-Fetch-Site` must be `same-origin` (or `none`: typed by the user);
/// - an `Origin` header must be this server's (`external_url`, else the request's `Host`);
/// - a request authenticated by the session cookie must carry the session's CSRF token, in the
///   form's `csrf` field or the `X-CSRF-Token` header.
///
/// Bearer-token requests carry no cookie a third-party page could make a browser send, so the
/// token alone suffices for them.
pub fn check_unsafe(config: &Config, caller: &Caller, headers: &HeaderMap, body: &[u8]) -> Result<(), Error> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(Error::Forbidden("cross-site requests are refused"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = match &config.external_url {
            Some(_) => origin == config.external_url(),
            None => {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
                origin.split_once("://").is_some_and(|(_, h)| !host.is_empty() && h == host)
            }
        };
        if !same {
            return Err(Error::Forbidden("requests from another origin are refused"));
        }
    }
    if let Some(Via::Session { token_hash }) = caller.user().map(|u| &u.via) {
        let expected = csrf_for(token_hash);
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| form_field(body, CSRF_FIELD));
        if !sent.is_some_and(|s| tokens_equal(&s, &expected)) {
            return Err(Error::Forbidden("missing or wrong CSRF token: reload the page and try again"));
        }
    }
    Ok(())
}

/// A field of an `application/x-www-form-urlencoded` body (values here are hex: no decoding).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body.get(..body.len().min(64 * 1024))?).ok()?;
    text.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

/// `Set-Cookie` for the session (or its removal when `value` is empty).
pub fn session_cookie(config: &Config, value: &str, max_age_s: u64) -> HeaderValue {
    set_cookie(config, SESSION_COOKIE, value, "/", max_age_s)
}

pub fn set_cookie(config: &Config, name: &str, value: &str, path: &str, max_age_s: u64) -> HeaderValue {
    let secure = if config.external_url().starts_with("https://") { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The `Content-Security-Policy` of every response: scripts only the pages' own (by hash),
/// styles inline (log colours are `style` attributes with validated values), no framing, no
/// plugins, forms and connections to this server only.
pub fn content_security_policy() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        let hashes: Vec<String> = crate::web::pages::INLINE_SCRIPTS
            .iter()
            .map(|s| format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))))
            .collect();
        format!(
            "default-src 'none'; script-src {}; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hashes.join(" ")
        )
    })
}

/// Adds the security headers to every response (a layer over the whole router). A response
/// that set a stricter policy of its own (an artifact's file, sandboxed) keeps it.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(content_security_policy()));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "admins = [\"root\", \"group:/ops\"]\n[[project]]\nname = \"app\"\nrepo = \"/srv/app.git\"\nwebhook_secret = \"0123456789\"\n{extra}"
        );
        let c: Config = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        c
    }

    fn user(name: &str, groups: &[&str]) -> Caller {
        Caller::User(User { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), via: Via::Token })
    }

    #[test]
    fn roles_from_members_groups_admins_and_visibility() {
        let c = config("members = { alice = \"maintainer\", bob = \"viewer\", \"group:/app-devs\" = \"developer\" }\n");
        let p = &c.projects[0];
        assert_eq!(role(&c, p, &user("alice", &[])), Some(Role::Maintainer));
        assert_eq!(role(&c, p, &user("bob", &[])), Some(Role::Viewer));
        assert_eq!(role(&c, p, &user("bob", &["/app-devs"])), Some(Role::Developer), "the best of name and groups");
        assert_eq!(role(&c, p, &user("carol", &["/other"])), None);
        assert_eq!(role(&c, p, &Caller::Anonymous), None);
        assert_eq!(role(&c, p, &user("root", &[])), Some(Role::Maintainer));
        assert_eq!(role(&c, p, &user("dan", &["/ops"])), Some(Role::Maintainer));
        let c = config("visibility = \"public\"\n");
        assert_eq!(role(&c, &c.projects[0], &Caller::Anonymous), Some(Role::Viewer));
        assert_eq!(check(&c, &Caller::Anonymous, "app", Need::Read), Ok(Role::Viewer));
        assert_eq!(check(&c, &Caller::Anonymous, "app", Need::Act { protected: false }), Err(Denied::Login));
        assert_eq!(check(&c, &user("someone", &[]), "app", Need::Act { protected: false }), Err(Denied::Forbidden));
    }

    #[test]
    fn refusals() {
        let c = config("members = { dev = \"developer\", view = \"viewer\" }\n");
        assert_eq!(check(&c, &Caller::Anonymous, "app", Need::Read), Err(Denied::Login));
        assert_eq!(check(&c, &user("stranger", &[]), "app", Need::Read), Err(Denied::Hidden));
        assert_eq!(check(&c, &user("view", &[]), "app", Need::Act { protected: false }), Err(Denied::Forbidden));
        assert_eq!(check(&c, &user("dev", &[]), "app", Need::Act { protected: false }), Ok(Role::Developer));
        assert_eq!(check(&c, &user("dev", &[]), "app", Need::Act { protected: true }), Err(Denied::Forbidden));
        assert_eq!(check(&c, &user("root", &[]), "gone", Need::Act { protected: true }), Ok(Role::Maintainer));
        assert_eq!(check(&c, &user("dev", &[]), "gone", Need::Read), Err(Denied::Hidden));
        assert_eq!(check(&c, &user("dev", &[]), "app", Need::Approve), Err(Denied::Forbidden), "approving is a maintainer's");
        assert_eq!(check(&c, &user("root", &[]), "app", Need::Approve), Ok(Role::Maintainer));
        assert_eq!(check(&c, &Caller::Anonymous, "app", Need::Approve), Err(Denied::Login));
    }

    #[test]
    fn cross_site_posts_and_csrf_tokens() {
        let c = config("");
        let session = Caller::User(User { name: "a".into(), groups: vec![], via: Via::Session { token_hash: "h".into() } });
        let token = session.csrf();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let body = format!("csrf={token}");
        assert!(check_unsafe(&c, &session, &h, body.as_bytes()).is_ok());
        assert!(check_unsafe(&c, &session, &h, b"csrf=0000").is_err(), "a wrong token");
        assert!(check_unsafe(&c, &session, &h, b"").is_err(), "no token");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(check_unsafe(&c, &session, &h, body.as_bytes()).is_err(), "another origin");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check_unsafe(&c, &session, &h, body.as_bytes()).is_ok());
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_unsafe(&c, &session, &h, body.as_bytes()).is_err(), "Sec-Fetch-Site");
        // A bearer token needs no CSRF token.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_unsafe(&c, &user("a", &[]), &h, b"").is_ok());
    }

    #[test]
    fn cookies_and_protected_triggers() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; piste_session=abc ; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        let row = |trigger: &str| PipelineRow {
            id: 1,
            project: "app".into(),
            git_ref: "refs/heads/x".into(),
            sha: "0".repeat(40),
            before_sha: None,
            source: "push".into(),
            trigger: trigger.into(),
            status: scheduler::PipelineStatus::Created,
            error: None,
            version: 0,
            created_at: 0,
            updated_at: 0,
            iid: None,
            approval: None,
            upstream: None,
        };
        assert!(!pipeline_protected(&row("{\"ref_protected\": false}")));
        assert!(pipeline_protected(&row("{\"ref_protected\": true}")));
        assert!(pipeline_protected(&row("not json")), "undecodable counts as protected");
        assert_eq!(url_encode("/jobs/1?before=2"), "/jobs/1%3Fbefore%3D2");
    }
}
