//! Web login with OpenID Connect: the authorization code flow with PKCE, `state` and `nonce`,
//! written against the specification with `reqwest` (already in the graph for S3) and `ring`
//! (rustls's crypto provider) for the RS256 signature; no OAuth framework.
//!
//! - `GET /login?next=/path`: discovery (`<issuer>/.well-known/openid-configuration`, cached),
//!   then a redirect to the provider. `state`, `nonce` and the PKCE verifier travel in a
//!   short-lived `HttpOnly`, `SameSite=Lax` cookie scoped to `/auth`: nothing is stored before
//!   the login succeeds, and any server sharing the database can take the callback.
//! - `GET /auth/callback?code&state`: `state` must equal the cookie's; the code is exchanged
//!   (with the verifier and the client secret; a provider's `400`/`401` there, e.g. a verifier
//!   that does not match the challenge, refuses the login); the ID token's RS256 signature is checked
//!   against the provider's JWKS (fetched again once for an unknown `kid`: key rotation), then
//!   `iss`, `aud` (and `azp` when several audiences), `exp`, `iat` and `nonce`. The user is the
//!   `username_claim`, their groups the `groups_claim`. A session is created: a random 256-bit
//!   token in an `HttpOnly`, `SameSite=Lax` cookie (`Secure` when `external_url` is https), its
//!   SHA-256 in the store. Server-side sessions rather than signed cookies: logout and expiry
//!   really end them, and there is no signing key to manage or share between servers.
//! - `POST /logout` (with the CSRF token): deletes the session and the cookie.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{self, Caller};
use crate::config::{Config, OidcConfig};
use crate::store::{Session, Store};
use crate::{AppState, hash_token, new_token, tokens_equal};

/// The login cookie: `state.nonce.verifier.next` for one login attempt.
const LOGIN_COOKIE: &str = "piste_login";
/// How long a login attempt may take at the provider.
const LOGIN_TTL_S: u64 = 600;
/// Largest provider answer read (discovery, JWKS, token).
const MAX_ANSWER: usize = 1 << 20;
/// Clock skew allowed on `exp` and `iat`.
const LEEWAY_S: i64 = 60;

/// What discovery says, and the provider's keys.
#[derive(Debug, Clone)]
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    keys: Vec<Value>,
}

/// The provider's metadata and keys, fetched when first needed.
pub struct Oidc {
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Provider>>,
}

impl Oidc {
    /// A client of the provider trusting `roots` (the top-level `ca_file`) besides webpki's.
    pub fn new(roots: &[reqwest::Certificate]) -> Oidc {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(15)).redirect(reqwest::redirect::Policy::none());
        for cert in roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        Oidc { http, provider: tokio::sync::Mutex::new(None) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider could not be reached or answered badly: {0}")]
    Provider(String),
    #[error("the login was refused: {0}")]
    Refused(String),
}

impl LoginError {
    fn into_page(self) -> Response {
        let status = match self {
            LoginError::Provider(_) => StatusCode::BAD_GATEWAY,
            LoginError::Refused(_) => StatusCode::UNAUTHORIZED,
        };
        tracing::warn!(reason = ?self.to_string(), "login failed");
        (status, format!("{self}\n\nTry again from the home page.\n")).into_response()
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, LoginError> {
    let resp = http.get(url).send().await.map_err(|e| LoginError::Provider(format!("GET {url}: {e}")))?;
    read_json(resp, url).await
}

async fn read_json(resp: reqwest::Response, url: &str) -> Result<Value, LoginError> {
    let status = resp.status();
    let body = read_bounded(resp, url).await?;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(LoginError::Provider(format!("{url}: {status}: {text}")));
    }
    serde_json::from_slice(&body).map_err(|e| LoginError::Provider(format!("{url}: not JSON: {e}")))
}

/// A provider's answer, at most [`MAX_ANSWER`] bytes.
async fn read_bounded(resp: reqwest::Response, url: &str) -> Result<Vec<u8>, LoginError> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| LoginError::Provider(format!("{url}: {e}")))?;
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(LoginError::Provider(format!("{url}: answer over {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Oidc {
    async fn provider(&self, cfg: &OidcConfig, refresh_keys: bool) -> Result<Provider, LoginError> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = cached.as_mut() {
            if refresh_keys {
                p.keys = keys(&get_json(&self.http, &p.jwks_uri).await?)?;
            }
            return Ok(p.clone());
        }
        let issuer = cfg.issuer.trim_end_matches('/');
        let meta = get_json(&self.http, &format!("{issuer}/.well-known/openid-configuration")).await?;
        if meta["issuer"].as_str().map(|i| i.trim_end_matches('/')) != Some(issuer) {
            return Err(LoginError::Provider(format!("discovery names issuer {}, not `{issuer}`", meta["issuer"])));
        }
        let field =
            |name: &str| meta[name].as_str().map(str::to_owned).ok_or_else(|| LoginError::Provider(format!("discovery lacks `{name}`")));
        let jwks_uri = field("jwks_uri")?;
        let p = Provider {
            authorization_endpoint: field("authorization_endpoint")?,
            token_endpoint: field("token_endpoint")?,
            keys: keys(&get_json(&self.http, &jwks_uri).await?)?,
            jwks_uri,
        };
        *cached = Some(p.clone());
        Ok(p)
    }
}

fn keys(jwks: &Value) -> Result<Vec<Value>, LoginError> {
    jwks["keys"].as_array().cloned().ok_or_else(|| LoginError::Provider("the JWKS has no `keys`".into()))
}

fn redirect_uri(config: &Config) -> String {
    format!("{}/auth/callback", config.external_url())
}

/// Only local paths are followed after a login (no open redirect).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && n.len() <= 2048 => n.to_string(),
        _ => "/".into(),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login(State(state): State<Arc<AppState>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(cfg) = &state.config.oidc else {
        return (StatusCode::NOT_FOUND, "This server has no login configured (`[oidc]` in piste.toml).\n").into_response();
    };
    let provider = match state.oidc.provider(cfg, false).await {
        Ok(p) => p,
        Err(e) => return e.into_page(),
    };
    let (login_state, nonce, verifier) = (new_token(), new_token(), new_token());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let next = URL_SAFE_NO_PAD.encode(local_path(q.next.as_deref()));
    let scope = cfg.scopes.join(" ");
    let url = reqwest::Url::parse_with_params(
        &provider.authorization_endpoint,
        [
            ("response_type", "code"),
            ("client_id", cfg.client_id.as_str()),
            ("redirect_uri", redirect_uri(&state.config).as_str()),
            ("scope", scope.as_str()),
            ("state", login_state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    );
    let Ok(url) = url else {
        return LoginError::Provider(format!("bad authorization endpoint `{}`", provider.authorization_endpoint)).into_page();
    };
    let cookie = auth::set_cookie(&state.config, LOGIN_COOKIE, &format!("{login_state}.{nonce}.{verifier}.{next}"), "/auth", LOGIN_TTL_S);
    ([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response()
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(State(state): State<Arc<AppState>>, Query(q): Query<CallbackQuery>, headers: HeaderMap) -> Response {
    match finish_login(&state, q, &headers).await {
        Ok(resp) => resp,
        Err(e) => e.into_page(),
    }
}

async fn finish_login(state: &AppState, q: CallbackQuery, headers: &HeaderMap) -> Result<Response, LoginError> {
    let Some(cfg) = &state.config.oidc else { return Err(LoginError::Refused("no login is configured".into())) };
    if let Some(err) = q.error {
        let why = q.error_description.unwrap_or_default();
        return Err(LoginError::Refused(format!("the provider said `{err}` {why}").chars().take(300).collect()));
    }
    let cookie = auth::cookie(headers, LOGIN_COOKIE).ok_or_else(|| LoginError::Refused("no login in progress (cookie missing)".into()))?;
    let parts: Vec<&str> = cookie.split('.').collect();
    let [expected_state, nonce, verifier, next] = parts[..] else {
        return Err(LoginError::Refused("malformed login cookie".into()));
    };
    // RFC 7636: a verifier is 43 to 128 characters; ours are 64 hex digits.
    if !(43..=128).contains(&verifier.len()) {
        return Err(LoginError::Refused("malformed login cookie (no PKCE verifier)".into()));
    }
    if !q.state.as_deref().is_some_and(|s| tokens_equal(s, expected_state)) {
        return Err(LoginError::Refused("`state` does not match this browser's login".into()));
    }
    let code = q.code.ok_or_else(|| LoginError::Refused("no `code` in the callback".into()))?;
    let provider = state.oidc.provider(cfg, false).await?;
    let redirect = redirect_uri(&state.config);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", verifier),
        ("client_id", cfg.client_id.as_str()),
    ];
    let resp = state
        .oidc
        .http
        .post(&provider.token_endpoint)
        .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
        .form(&form)
        .send()
        .await
        .map_err(|e| LoginError::Provider(format!("token endpoint: {e}")))?;
    if resp.status() == StatusCode::BAD_REQUEST || resp.status() == StatusCode::UNAUTHORIZED {
        // RFC 6749 §5.2: a refused code (used, expired, or whose PKCE verifier does not match
        // its challenge) is the login's failure, not the provider's.
        let answer: Value = serde_json::from_slice(&read_bounded(resp, &provider.token_endpoint).await?).unwrap_or_default();
        let error = answer["error"].as_str().unwrap_or("(no error code)");
        let why = answer["error_description"].as_str().unwrap_or_default();
        return Err(LoginError::Refused(format!("the provider refused the code: `{error}` {why}").chars().take(300).collect()));
    }
    let tokens = read_json(resp, &provider.token_endpoint).await?;
    let id_token = tokens["id_token"].as_str().ok_or_else(|| LoginError::Provider("the token answer has no `id_token`".into()))?;
    let claims = match verify_id_token(id_token, &provider.keys, cfg, nonce, state.now_ms() / 1000) {
        Err(IdTokenError::UnknownKey) => {
            let provider = state.oidc.provider(cfg, true).await?;
            verify_id_token(id_token, &provider.keys, cfg, nonce, state.now_ms() / 1000)
        }
        other => other,
    }
    .map_err(|e| LoginError::Refused(format!("ID token: {e}")))?;
    let user = claims[cfg.username_claim.as_str()]
        .as_str()
        .filter(|u| crate::config::valid_user_name(u))
        .ok_or_else(|| LoginError::Refused(format!("the ID token has no usable `{}` claim", cfg.username_claim)))?
        .to_string();
    let groups: Vec<String> = claims[cfg.groups_claim.as_str()]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g.as_str()).filter(|g| g.len() <= 255).take(256).map(str::to_owned).collect())
        .unwrap_or_default();
    let token = new_token();
    let now = state.now_ms();
    let ttl_s = cfg.session_hours.clamp(1, 24 * 30) * 3600;
    let session = Session { user: user.clone(), groups, created_at: now, expires_at: now + (ttl_s * 1000) as i64 };
    state.store.create_session(&hash_token(&token), &session).await.map_err(|e| {
        tracing::error!(error = %crate::error::chain(&e), "cannot store a session");
        LoginError::Provider("the server cannot store the session (see its log)".into())
    })?;
    tracing::info!(%user, "logged in");
    let next = URL_SAFE_NO_PAD.decode(next).ok().and_then(|b| String::from_utf8(b).ok());
    let mut resp = Redirect::to(&local_path(next.as_deref())).into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, auth::session_cookie(&state.config, &token, ttl_s));
    h.append(header::SET_COOKIE, auth::set_cookie(&state.config, LOGIN_COOKIE, "", "/auth", 0));
    Ok(resp)
}

pub async fn logout(State(state): State<Arc<AppState>>, caller: Caller, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(e) = auth::check_unsafe(&state.config, &caller, &headers, &body) {
        return e.into_response();
    }
    if let Some(auth::Via::Session { token_hash }) = caller.user().map(|u| &u.via) {
        if let Err(e) = state.store.delete_session(token_hash).await {
            return crate::error::Error::from(e).into_response();
        }
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().append(header::SET_COOKIE, auth::session_cookie(&state.config, "", 0));
    resp
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("not a signed JWT")]
    Malformed,
    #[error("signed with `{0}`; RS256 is required")]
    Algorithm(String),
    #[error("signed with a key the provider does not publish")]
    UnknownKey,
    #[error("the signature does not verify")]
    Signature,
    #[error("`{0}` is wrong")]
    Claim(&'static str),
    #[error("expired")]
    Expired,
}

/// Verifies an ID token (RS256 against `keys`, a JWKS's `keys`) and its claims; returns them.
pub fn verify_id_token(token: &str, keys: &[Value], cfg: &OidcConfig, nonce: &str, now_s: i64) -> Result<Value, IdTokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(IdTokenError::Malformed);
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| IdTokenError::Malformed);
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| IdTokenError::Malformed)?;
    let alg = header["alg"].as_str().unwrap_or("");
    if alg != "RS256" {
        return Err(IdTokenError::Algorithm(alg.chars().take(20).collect()));
    }
    let kid = header["kid"].as_str();
    let key = keys
        .iter()
        .filter(|k| k["kty"] == "RSA" && k["use"].as_str().is_none_or(|u| u == "sig"))
        .find(|k| kid.is_none() || k["kid"].as_str() == kid)
        .ok_or(IdTokenError::UnknownKey)?;
    let (Some(n), Some(e)) = (key["n"].as_str(), key["e"].as_str()) else { return Err(IdTokenError::UnknownKey) };
    let public = ring::signature::RsaPublicKeyComponents { n: decode(n)?, e: decode(e)? };
    let signed = &token[..h.len() + 1 + c.len()];
    public.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &decode(s)?).map_err(|_| IdTokenError::Signature)?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|_| IdTokenError::Malformed)?;
    if claims["iss"].as_str().map(|i| i.trim_end_matches('/')) != Some(cfg.issuer.trim_end_matches('/')) {
        return Err(IdTokenError::Claim("iss"));
    }
    let audiences: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&cfg.client_id.as_str()) {
        return Err(IdTokenError::Claim("aud"));
    }
    if audiences.len() > 1 && claims["azp"].as_str() != Some(cfg.client_id.as_str()) {
        return Err(IdTokenError::Claim("azp"));
    }
    match claims["exp"].as_i64() {
        Some(exp) if exp + LEEWAY_S > now_s => {}
        Some(_) => return Err(IdTokenError::Expired),
        None => return Err(IdTokenError::Claim("exp")),
    }
    if claims["iat"].as_i64().is_some_and(|iat| iat > now_s + LEEWAY_S) {
        return Err(IdTokenError::Claim("iat"));
    }
    if !claims["nonce"].as_str().is_some_and(|n| tokens_equal(n, nonce)) {
        return Err(IdTokenError::Claim("nonce"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_after_login() {
        assert_eq!(local_path(Some("/pipelines/3")), "/pipelines/3");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    fn cfg() -> OidcConfig {
        toml::from_str("issuer = \"http://127.0.0.1:9/\"\nclient_id = \"piste\"\n").unwrap()
    }

    /// Tokens that are not RS256-signed by a published key never get to the claims.
    #[test]
    fn unsigned_and_foreign_tokens_are_refused() {
        let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = part(serde_json::json!({"iss": "http://127.0.0.1:9", "aud": "piste", "exp": 2_000_000_000, "nonce": "n"}));
        let none = format!("{}.{claims}.", part(serde_json::json!({"alg": "none"})));
        assert_eq!(verify_id_token(&none, &[], &cfg(), "n", 0), Err(IdTokenError::Algorithm("none".into())));
        let hs = format!("{}.{claims}.c2ln", part(serde_json::json!({"alg": "HS256"})));
        assert_eq!(verify_id_token(&hs, &[], &cfg(), "n", 0), Err(IdTokenError::Algorithm("HS256".into())));
        let rs = format!("{}.{claims}.c2ln", part(serde_json::json!({"alg": "RS256", "kid": "k"})));
        let other = serde_json::json!({"kty": "RSA", "kid": "other", "n": "AQAB", "e": "AQAB"});
        assert_eq!(verify_id_token(&rs, &[other], &cfg(), "n", 0), Err(IdTokenError::UnknownKey));
        assert_eq!(verify_id_token("a.b", &[], &cfg(), "n", 0), Err(IdTokenError::Malformed));
    }

    /// A provider's key made by `openssl`, its JWK, and RS256 tokens signed with it.
    struct Signer {
        key: ring::signature::RsaKeyPair,
        jwk: Value,
    }

    impl Signer {
        fn new() -> Signer {
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-outform", "DER"])
                .output()
                .expect("openssl (Debian's openssl package)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            // OpenSSL 3 writes an RSA key in DER as PKCS#1 (`RSAPrivateKey`).
            let key = ring::signature::RsaKeyPair::from_der(&out.stdout).unwrap();
            let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
            let jwk = serde_json::json!({
                "kty": "RSA", "kid": "k1", "use": "sig",
                "n": URL_SAFE_NO_PAD.encode(&public.n),
                "e": URL_SAFE_NO_PAD.encode(&public.e),
            });
            Signer { key, jwk }
        }

        fn token(&self, claims: Value) -> String {
            let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
            let input = format!("{}.{}", part(serde_json::json!({"alg": "RS256", "kid": "k1"})), part(claims));
            let mut sig = vec![0; self.key.public().modulus_len()];
            self.key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }

    /// Every claim the login relies on is checked, and a signature over other bytes fails.
    #[test]
    fn id_token_signature_and_claims() {
        let signer = Signer::new();
        let keys = [signer.jwk.clone()];
        let good = serde_json::json!({"iss": "http://127.0.0.1:9", "aud": "piste", "exp": 1_000, "iat": 900, "nonce": "n-1", "preferred_username": "vera"});
        let check = |claims: &Value, nonce: &str, now: i64| verify_id_token(&signer.token(claims.clone()), &keys, &cfg(), nonce, now);
        assert_eq!(check(&good, "n-1", 950).unwrap()["preferred_username"], "vera");
        let with = |key: &str, value: Value| {
            let mut c = good.clone();
            c[key] = value;
            c
        };
        assert_eq!(check(&with("iss", "http://evil.example".into()), "n-1", 950), Err(IdTokenError::Claim("iss")));
        assert_eq!(check(&with("aud", "other-client".into()), "n-1", 950), Err(IdTokenError::Claim("aud")));
        assert_eq!(check(&with("aud", serde_json::json!(["piste", "other"])), "n-1", 950), Err(IdTokenError::Claim("azp")));
        assert!(check(&with("aud", serde_json::json!(["other", "piste"])).clone(), "n-1", 950).is_err());
        assert_eq!(check(&good, "n-1", 1_000 + LEEWAY_S), Err(IdTokenError::Expired));
        assert_eq!(check(&with("iat", 5_000.into()), "n-1", 950), Err(IdTokenError::Claim("iat")));
        assert_eq!(check(&good, "another-login", 950), Err(IdTokenError::Claim("nonce")));
        assert_eq!(check(&with("nonce", Value::Null), "n-1", 950), Err(IdTokenError::Claim("nonce")));
        // The same signature over changed claims.
        let token = signer.token(good.clone());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with("preferred_username", "root".into()).to_string());
        assert_eq!(verify_id_token(&parts.join("."), &keys, &cfg(), "n-1", 950), Err(IdTokenError::Signature));
    }

    #[test]
    fn cookies_are_secure_behind_https() {
        let mut config = Config::default();
        assert!(!auth::session_cookie(&config, "v", 60).to_str().unwrap().contains("Secure"));
        config.external_url = Some("https://ci.example".into());
        let cookie = auth::session_cookie(&config, "v", 60);
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    }
}
