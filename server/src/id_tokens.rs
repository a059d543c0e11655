//! The server as an OpenID Connect issuer of jobs' ID tokens (`id_tokens:`), as GitLab is:
//! `/.well-known/openid-configuration` names `external_url` as the issuer and
//! `/oauth/discovery/keys` (GitLab's path) as the JWKS; when a job with `id_tokens` is leased,
//! [`job_tokens`] signs one JWT per entry with GitLab's claims, and each becomes a masked
//! variable of the job, beside the project's secrets.
//!
//! The key is ES256 (ECDSA P-256, which `ring` can generate; it cannot generate RSA keys):
//! made by the first server that needs it and stored in the database (`id_token_keys`,
//! migration `0015`) by an insert that keeps the first row, so every server sharing the
//! database signs with the same key. An operator may give an RSA key instead (`[id_tokens]
//! key_file`: RS256, GitLab's algorithm). `kid` is the RFC 7638 thumbprint. The key is never
//! logged: [`SigningKey`]'s `Debug` redacts it. (Web login, where the server is an OpenID
//! *client*, is `oidc.rs`.)

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pipeline_spec::model::Audience;
use pipeline_spec::predefined::Context;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::store::{Store, StoreError, StoredKey};

/// GitLab's JWKS path, which Vault's `jwks_url` and other relying parties are told.
pub const JWKS_PATH: &str = "/oauth/discovery/keys";
/// The stored key's row name and its JWS algorithm.
const KEY_NAME: &str = "jobs-es256";
const ALG: &str = "ES256";
/// The algorithm of an operator's RSA key (GitLab's).
const RS256: &str = "RS256";
/// GitLab's `nbf`: five seconds before the token is issued, for relying parties' clock skew.
const NOT_BEFORE_SKEW_S: i64 = 5;

/// Why no token could be signed.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("reading or storing the ID token signing key")]
    Store(#[from] StoreError),
    #[error("the stored ID token signing key (`{alg}`) is not a usable key")]
    BadKey { alg: String },
    #[error("generating an ID token signing key")]
    Generate,
    #[error("signing an ID token")]
    Sign,
    #[error(
        "the stored ID token signing key is encrypted and this server has no `secret_key_file`: give it the file of the servers that share its database"
    )]
    NoSecret,
    #[error(
        "the stored ID token signing key does not open with this server's `secret_key_file`: every server sharing a database needs the same file"
    )]
    WrongSecret,
}

/// The signing key, loaded (or created) on first use.
#[derive(Default)]
pub struct Issuer {
    key: tokio::sync::OnceCell<Arc<SigningKey>>,
}

/// The private key and its public JWK.
pub struct SigningKey {
    pair: Pair,
    /// The public key as a JWK, `kid` included.
    jwk: Value,
    kid: String,
}

enum Pair {
    Es256(EcdsaKeyPair),
    /// The operator's key (`[id_tokens] key_file`).
    Rs256(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    fn from_stored(stored: &StoredKey) -> Result<SigningKey, IssuerError> {
        let bad = || IssuerError::BadKey { alg: stored.alg.clone() };
        if stored.alg != ALG {
            return Err(bad());
        }
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &stored.pkcs8, &SystemRandom::new()).map_err(|_| bad())?;
        // An uncompressed P-256 point: 0x04, then x and y (32 bytes each).
        let point = pair.public_key().as_ref();
        let (x, y) = match point {
            [4, rest @ ..] if rest.len() == 64 => (URL_SAFE_NO_PAD.encode(&rest[..32]), URL_SAFE_NO_PAD.encode(&rest[32..])),
            _ => return Err(bad()),
        };
        let kid = thumbprint(&format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": ALG});
        Ok(SigningKey { pair: Pair::Es256(pair), jwk, kid })
    }

    /// The operator's RSA key (PKCS#8 DER, checked when `piste.toml` was loaded).
    fn from_rsa(der: &[u8]) -> Result<SigningKey, IssuerError> {
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| IssuerError::BadKey { alg: RS256.into() })?;
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let (n, e) = (URL_SAFE_NO_PAD.encode(&public.n), URL_SAFE_NO_PAD.encode(&public.e));
        let kid = thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
        let jwk = json!({"kty": "RSA", "n": n, "e": e, "kid": kid, "use": "sig", "alg": RS256});
        Ok(SigningKey { pair: Pair::Rs256(pair), jwk, kid })
    }

    fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => ALG,
            Pair::Rs256(_) => RS256,
        }
    }

    /// `header.claims.signature`, JWS compact serialisation.
    pub fn sign(&self, claims: &Value) -> Result<String, IssuerError> {
        let header = json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"});
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match &self.pair {
            // `FIXED` signatures are `r || s`, which is what JWS wants for ES256 (RFC 7518 3.4).
            Pair::Es256(pair) => pair.sign(&rng, input.as_bytes()).map_err(|_| IssuerError::Sign)?.as_ref().to_vec(),
            Pair::Rs256(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).map_err(|_| IssuerError::Sign)?;
                sig
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// How a stored key encrypted with the server's secret key (`secret_key_file`) starts; then
/// a 12-byte nonce, then the AES-256-GCM ciphertext of the PKCS#8 document and its tag. The
/// row's name and algorithm are the associated data: a ciphertext does not open in another row.
const SEALED: &[u8] = b"piste-sealed-v1\0";
const NONCE_LEN: usize = 12;

/// The AES-256-GCM key for `name`'s row, derived from the secret key with HKDF-SHA256.
fn sealing_key(secret: &[u8], name: &str) -> ring::aead::LessSafeKey {
    use ring::{aead, hkdf};
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"piste secret_key_file v1").extract(secret);
    let info = [name.as_bytes()];
    let okm = prk.expand(&info, &aead::AES_256_GCM).expect("an AES-256 key is a valid HKDF output length");
    aead::LessSafeKey::new(aead::UnboundKey::from(okm))
}

fn associated(name: &str, alg: &str) -> ring::aead::Aad<Vec<u8>> {
    ring::aead::Aad::from(format!("{name}\0{alg}").into_bytes())
}

/// `plain` encrypted for the row `name` (algorithm `alg`) with the secret key.
fn seal(secret: &[u8], name: &str, alg: &str, plain: &[u8]) -> Result<Vec<u8>, IssuerError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| IssuerError::Generate)?;
    let mut sealed = plain.to_vec();
    sealing_key(secret, name)
        .seal_in_place_append_tag(ring::aead::Nonce::assume_unique_for_key(nonce), associated(name, alg), &mut sealed)
        .map_err(|_| IssuerError::Generate)?;
    Ok([SEALED, &nonce, &sealed].concat())
}

/// The plain key of a row [`seal`] wrote; [`IssuerError::WrongSecret`] when it does not open
/// (another secret key, another row, altered bytes).
fn open(secret: &[u8], name: &str, alg: &str, stored: &[u8]) -> Result<Vec<u8>, IssuerError> {
    let rest = stored.strip_prefix(SEALED).ok_or(IssuerError::WrongSecret)?;
    if rest.len() < NONCE_LEN {
        return Err(IssuerError::WrongSecret);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| IssuerError::WrongSecret)?;
    let mut buf = sealed.to_vec();
    let plain = sealing_key(secret, name).open_in_place(nonce, associated(name, alg), &mut buf).map_err(|_| IssuerError::WrongSecret)?;
    Ok(plain.to_vec())
}

/// RFC 7638: SHA-256 over the key's required members, in lexicographic order without
/// whitespace (`canonical`).
fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The algorithm tokens are signed with: the operator's RSA key's, else the generated key's.
fn configured_alg(state: &AppState) -> &'static str {
    if state.config.id_tokens.is_some() { RS256 } else { ALG }
}

impl Issuer {
    /// The signing key: the operator's RSA key when `[id_tokens] key_file` names one; else the
    /// shared stored one, or one generated now and stored unless another server stored one
    /// first (then theirs).
    pub async fn key(&self, state: &AppState) -> Result<Arc<SigningKey>, IssuerError> {
        self.key
            .get_or_try_init(|| async {
                if let Some(ids) = &state.config.id_tokens {
                    return Ok(Arc::new(SigningKey::from_rsa(&ids.key_der)?));
                }
                let secret = state.config.secret_key.as_ref().map(|k| k.0.as_slice());
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| IssuerError::Generate)?;
                let pkcs8 = match secret {
                    Some(secret) => seal(secret, KEY_NAME, ALG, pkcs8.as_ref())?,
                    None => pkcs8.as_ref().to_vec(),
                };
                let candidate = StoredKey { alg: ALG.into(), pkcs8 };
                let stored = state.store.id_token_key(KEY_NAME, &candidate, state.now_ms()).await?;
                let pkcs8 = match (stored.pkcs8.starts_with(SEALED), secret) {
                    (true, Some(secret)) => open(secret, KEY_NAME, &stored.alg, &stored.pkcs8)?,
                    (true, None) => return Err(IssuerError::NoSecret),
                    (false, Some(_)) => {
                        tracing::warn!(
                            "the ID token signing key was stored unencrypted (by a server without `secret_key_file`); delete the `{KEY_NAME}` row of `id_token_keys` to have an encrypted one made (tokens already issued then stop verifying)"
                        );
                        stored.pkcs8
                    }
                    (false, None) => {
                        tracing::warn!("the ID token signing key is stored unencrypted in the database: set `secret_key_file` in piste.toml");
                        stored.pkcs8
                    }
                };
                Ok(Arc::new(SigningKey::from_stored(&StoredKey { alg: stored.alg, pkcs8 })?))
            })
            .await
            .cloned()
    }
}

/// `GET /.well-known/openid-configuration`: what a relying party (Vault's
/// `oidc_discovery_url`, a cloud's identity federation) needs to check job tokens.
pub async fn discovery(State(state): State<Arc<AppState>>) -> Response {
    let issuer = state.external_url();
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [configured_alg(&state)],
        "claims_supported": CLAIMS,
    });
    cached(Json(doc))
}

/// `GET /oauth/discovery/keys`: the public key (creating the key if no server has yet).
pub async fn jwks(State(state): State<Arc<AppState>>) -> crate::error::ApiResult<Response> {
    let key = state.id_tokens.key(&state).await.map_err(|e| crate::error::Error::Internal(e.into()))?;
    Ok(cached(Json(json!({"keys": [key.jwk]}))))
}

fn cached(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "max-age=300, public")], body).into_response()
}

/// The claims tokens may carry (GitLab's names; those piste cannot know are never set).
const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "namespace_path",
    "project_path",
    "project_visibility",
    "user_id",
    "user_login",
    "user_email",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "ref",
    "ref_type",
    "ref_path",
    "ref_protected",
    "environment",
    "environment_protected",
    "deployment_tier",
    "environment_action",
    "runner_id",
    "runner_environment",
    "sha",
];

/// What a token says about its job, besides the pipeline's [`Context`].
pub struct JobFacts<'a> {
    pub issuer: &'a str,
    pub job_id: i64,
    pub runner_id: i64,
    pub timeout_s: u64,
    /// The job's final variables before its tokens (for `aud` and `CI_ENVIRONMENT_*`).
    pub variables: &'a [(String, String)],
    /// Whether the pipeline's ref counts as protected (never for a fork's merge request).
    pub ref_protected: bool,
    pub now_s: i64,
}

/// GitLab's ID token claims (`Gitlab::Ci::JwtV2`) for one token of a job, with `aud` expanded
/// with the job's variables as GitLab's `expanded_id_token_aud`. Values are strings, as
/// GitLab's, but `runner_id` and the times. Claims piste does not know (numeric project and
/// namespace ids, the user's access level and identities) are left out rather than invented.
pub fn claims(ctx: &Context, job: &JobFacts<'_>, aud: &Audience, jti: &str) -> Value {
    let expand = |s: &str| pipeline_spec::expand::expand(s, &job.variables);
    let aud = match aud {
        Audience::One(a) => Value::String(expand(a)),
        Audience::Many(list) => Value::Array(list.iter().map(|a| Value::String(expand(a))).collect()),
    };
    let var = |name: &str| job.variables.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let ref_name = ctx.ref_name();
    let (ref_type, ref_path) =
        if ctx.is_tag() { ("tag", format!("refs/tags/{ref_name}")) } else { ("branch", format!("refs/heads/{ref_name}")) };
    let mut c = json!({
        "iss": job.issuer,
        "sub": format!("project_path:{}:ref_type:{ref_type}:ref:{ref_name}", ctx.project_path),
        "aud": aud,
        "iat": job.now_s,
        "nbf": job.now_s - NOT_BEFORE_SKEW_S,
        "exp": job.now_s + i64::try_from(job.timeout_s).unwrap_or(i64::MAX / 2),
        "jti": jti,
        "project_path": ctx.project_path,
        "project_visibility": ctx.project_visibility,
        "pipeline_id": ctx.pipeline_id.to_string(),
        "pipeline_source": ctx.source.as_str(),
        "job_id": job.job_id.to_string(),
        "ref": ref_name,
        "ref_type": ref_type,
        "ref_path": ref_path,
        "ref_protected": job.ref_protected.to_string(),
        "runner_id": job.runner_id,
        "runner_environment": "self-hosted",
        "sha": ctx.commit_sha,
    });
    let mut set = |k: &str, v: Value| c[k] = v;
    if !ctx.project_namespace().is_empty() {
        set("namespace_path", ctx.project_namespace().into());
    }
    if let Some(user) = &ctx.user {
        if user.id != 0 {
            set("user_id", user.id.to_string().into());
        }
        set("user_login", user.login.clone().into());
        if !user.email.is_empty() {
            set("user_email", user.email.clone().into());
        }
    }
    if let Some(env) = var("CI_ENVIRONMENT_NAME") {
        set("environment", env.into());
        // piste has no protected environments.
        set("environment_protected", "false".into());
        if let Some(tier) = var("CI_ENVIRONMENT_TIER") {
            set("deployment_tier", tier.into());
        }
        if let Some(action) = var("CI_ENVIRONMENT_ACTION") {
            set("environment_action", action.into());
        }
    }
    c
}

/// A random UUID (version 4) for `jti`.
fn uuid_v4() -> Result<String, IssuerError> {
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).map_err(|_| IssuerError::Sign)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// The signed tokens of a job, `(variable name, token)`, in the order written.
pub async fn job_tokens(
    state: &AppState,
    ctx: &Context,
    tokens: &[pipeline_spec::model::IdToken],
    job: &JobFacts<'_>,
) -> Result<Vec<(String, String)>, IssuerError> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let key = state.id_tokens.key(state).await?;
    tokens.iter().map(|t| Ok((t.name.clone(), key.sign(&claims(ctx, job, &t.aud, &uuid_v4()?))?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key sealed with the secret key opens with it only, in its own row, unaltered; the
    /// sealed bytes do not hold the plain ones.
    #[test]
    fn a_sealed_key_opens_with_its_secret_and_row_only() {
        let plain = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap().as_ref().to_vec();
        let secret = [7u8; 32];
        let sealed = seal(&secret, KEY_NAME, ALG, &plain).unwrap();
        assert!(sealed.starts_with(SEALED));
        assert!(!sealed.windows(32).any(|w| plain.windows(32).any(|p| p == w)), "no 32 bytes of the plain key in the sealed one");
        assert_eq!(open(&secret, KEY_NAME, ALG, &sealed).unwrap(), plain);
        assert_ne!(seal(&secret, KEY_NAME, ALG, &plain).unwrap(), sealed, "a fresh nonce each time");
        assert!(matches!(open(&[8u8; 32], KEY_NAME, ALG, &sealed), Err(IssuerError::WrongSecret)));
        assert!(matches!(open(&secret, "another-row", ALG, &sealed), Err(IssuerError::WrongSecret)));
        assert!(matches!(open(&secret, KEY_NAME, RS256, &sealed), Err(IssuerError::WrongSecret)));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(open(&secret, KEY_NAME, ALG, &altered), Err(IssuerError::WrongSecret)));
        assert!(matches!(open(&secret, KEY_NAME, ALG, &sealed[..SEALED.len() + 5]), Err(IssuerError::WrongSecret)));
        let key = SigningKey::from_stored(&StoredKey { alg: ALG.into(), pkcs8: open(&secret, KEY_NAME, ALG, &sealed).unwrap() });
        assert!(key.is_ok());
    }

    fn key() -> SigningKey {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        SigningKey::from_stored(&StoredKey { alg: ALG.into(), pkcs8: pkcs8.as_ref().to_vec() }).unwrap()
    }

    /// RFC 7638 section 3.1's example is RSA; this checks the EC member order and that the
    /// signature verifies against the JWK's point, and that `Debug` shows no key.
    #[test]
    fn tokens_verify_against_the_published_key() {
        let k = key();
        let x = k.jwk["x"].as_str().unwrap();
        let y = k.jwk["y"].as_str().unwrap();
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"{x}\",\"y\":\"{y}\"}}")));
        assert_eq!(k.kid, expected);
        let token = k.sign(&json!({"sub": "s"})).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(x).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(y).unwrap());
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
        public.verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        assert!(public.verify(b"other", &URL_SAFE_NO_PAD.decode(sig).unwrap()).is_err());
        assert!(!format!("{k:?}").contains(x), "{k:?}");
        let bad = SigningKey::from_stored(&StoredKey { alg: "RS256".into(), pkcs8: vec![1, 2] });
        assert!(matches!(bad, Err(IssuerError::BadKey { .. })));
    }

    /// An operator's RSA key (`[id_tokens] key_file`, made by `openssl`) signs RS256 tokens
    /// that verify against its JWK's `n` and `e`; `kid` is RFC 7638's RSA thumbprint.
    #[test]
    fn an_operators_rsa_key_signs_rs256() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.path().join("ids.pem"), &out.stdout).unwrap();
        let file = dir.path().join("piste.toml");
        std::fs::write(&file, "[id_tokens]\nkey_file = \"ids.pem\"\n").unwrap();
        let config = crate::config::Config::load(&file).unwrap();
        let k = SigningKey::from_rsa(&config.id_tokens.as_ref().unwrap().key_der).unwrap();
        assert_eq!((k.alg(), &k.jwk["kty"], &k.jwk["alg"]), (RS256, &json!("RSA"), &json!("RS256")));
        let (n, e) = (k.jwk["n"].as_str().unwrap(), k.jwk["e"].as_str().unwrap());
        assert_eq!(k.kid, URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{\"e\":\"{e}\",\"kty\":\"RSA\",\"n\":\"{n}\"}}"))));
        let token = k.sign(&json!({"sub": "s"})).unwrap();
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!((&header["alg"], &header["kid"]), (&json!("RS256"), &json!(k.kid)));
        let (input, sig) = token.rsplit_once('.').unwrap();
        let public =
            ring::signature::RsaPublicKeyComponents { n: URL_SAFE_NO_PAD.decode(n).unwrap(), e: URL_SAFE_NO_PAD.decode(e).unwrap() };
        public.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        assert!(!format!("{config:?}").contains(&n[..40]), "the configuration's Debug shows no key");

        // An EC key is refused at load, saying what is wanted.
        let ec = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .output()
            .unwrap();
        std::fs::write(dir.path().join("ids.pem"), &ec.stdout).unwrap();
        let err = crate::config::Config::load(&file).unwrap_err().to_string();
        assert!(err.contains("`[id_tokens] key_file`") && err.contains("not an RSA key"), "{err}");
    }

    /// GitLab's `sub` and `ref_*` for a branch, a tag and a merge request (its source branch);
    /// `aud` expanded, kept a list when written as one.
    #[test]
    fn claims_follow_gitlab() {
        let vars = vec![("VAULT_SERVER_URL".to_string(), "https://vault.example.test".to_string())];
        let facts = JobFacts {
            issuer: "https://ci.example",
            job_id: 7,
            runner_id: 3,
            timeout_s: 600,
            variables: &vars,
            ref_protected: true,
            now_s: 1_000,
        };
        let ctx = Context { project_path: "group/app".into(), branch: Some("main".into()), pipeline_id: 42, ..Context::default() };
        let c = claims(&ctx, &facts, &Audience::One("$VAULT_SERVER_URL".into()), "j");
        assert_eq!(c["sub"], "project_path:group/app:ref_type:branch:ref:main");
        assert_eq!(
            (&c["aud"], &c["ref_path"], &c["ref_protected"]),
            (&json!("https://vault.example.test"), &json!("refs/heads/main"), &json!("true"))
        );
        assert_eq!((&c["iat"], &c["nbf"], &c["exp"]), (&json!(1_000), &json!(995), &json!(1_600)));
        assert_eq!(
            (&c["pipeline_id"], &c["job_id"], &c["runner_id"], &c["namespace_path"]),
            (&json!("42"), &json!("7"), &json!(3), &json!("group"))
        );
        assert!(c.get("project_id").is_none() && c.get("namespace_id").is_none() && c.get("environment").is_none(), "{c}");
        let tag = Context { tag: Some("v1".into()), ..ctx.clone() };
        let c = claims(&tag, &facts, &Audience::Many(vec!["a".into(), "$VAULT_SERVER_URL".into()]), "j");
        assert_eq!(c["sub"], "project_path:group/app:ref_type:tag:ref:v1");
        assert_eq!(c["aud"], json!(["a", "https://vault.example.test"]));
        assert_eq!(c["ref_path"], "refs/tags/v1");
        let u = uuid_v4().unwrap();
        assert_eq!((u.len(), &u[14..15]), (36, "4"));
    }
}
