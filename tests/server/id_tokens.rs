//! Jobs' ID tokens (`id_tokens:`), as GitLab issues them ("OpenID Connect (OIDC)
//! Authentication Using ID Tokens"): the server publishes its discovery document and JWKS,
//! signs one token per entry when the job is leased, and the job receives it as a masked
//! variable. An independent implementation (Python's PyJWT, see `scripts/deps.sh`) checks the
//! signature against the published keys, and the claims Vault's JWT auth binds.

use std::process::Command;

use serde_json::Value;

use crate::secrets::fork_merge_request_iid;
use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

/// The target users' catalogue logs in to Vault this way (`cpin-catalog/vault-ci.yml`); the job
/// writes its tokens into an artifact, not the log, for the test to read.
const PIPELINE: &str = r#"
variables:
  VAULT_SERVER_URL: https://vault.example.test
vault:
  rules: [{when: always}]
  environment: production
  id_tokens:
    VAULT_ID_TOKEN:
      aud: $VAULT_SERVER_URL
    MULTI:
      aud: [https://a.example.test, "$VAULT_SERVER_URL/b"]
  script:
    - echo "token=[$VAULT_ID_TOKEN] set=${VAULT_ID_TOKEN:+yes}"
    # A masked value as written never leaves in artifacts (the runner's leak check): the
    # token's three parts go on three lines instead.
    - printf '%s' "$VAULT_ID_TOKEN" | tr . '\n' > vault.jwt
    - printf '%s' "$MULTI" | tr . '\n' > multi.jwt
  artifacts:
    paths: [vault.jwt, multi.jwt]
"#;

/// Fetches the discovery document and the JWKS it names, verifies `token` (ES256 or whatever
/// the document lists) for `aud` and the document's issuer, checks that a changed payload
/// fails, and prints the header, claims and document as JSON.
const VERIFY: &str = r#"
import json, sys, urllib.request
import jwt
discovery_url, token, aud = sys.argv[1:4]
doc = json.load(urllib.request.urlopen(discovery_url))
key = jwt.PyJWKClient(doc["jwks_uri"]).get_signing_key_from_jwt(token)
algs = doc["id_token_signing_alg_values_supported"]
required = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]
claims = jwt.decode(token, key, algorithms=algs, audience=aud, issuer=doc["issuer"], options={"require": required})
h, c, s = token.split(".")
forged = jwt.utils.base64url_encode(json.dumps(dict(claims, ref="main", project_path="evil/app")).encode()).decode()
try:
    jwt.decode(".".join([h, forged, s]), key, algorithms=algs, audience=aud, issuer=doc["issuer"])
    sys.exit("a changed payload verified")
except jwt.InvalidSignatureError:
    pass
print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims, "discovery": doc}))
"#;

fn verify(server: &Server, token: &str, aud: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("verify.py");
    std::fs::write(&script, VERIFY).unwrap();
    let discovery = format!("{}/.well-known/openid-configuration", server.url);
    let out = Command::new("python3")
        .arg(&script)
        .args([discovery.as_str(), token, aud])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("python3 with PyJWT (scripts/deps.sh installs it)");
    assert!(out.status.success(), "PyJWT refused the token: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A token the job wrote as three lines, joined again.
async fn token_in(http: &Http, job: i64, path: &str) -> String {
    let r = http.client.get(format!("{}/api/v1/jobs/{job}/artifacts/file?path={path}", http.base)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap().lines().collect::<Vec<_>>().join(".")
}

async fn finished(http: &Http, r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_get_signed_id_tokens_that_verify_against_the_published_keys() {
    let forge = Forge::new(PIPELINE);
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 10_000, "external_url = \"http://127.0.0.1:{PORT}\"");
    let _runner = RunnerProc::start(&server, "node", "shell");
    let http = Http::new(&server);

    let p = finished(&http, http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "t-1").await).await;
    let job = job_id(&p, "vault");
    let token = token_in(&http, job, "vault.jwt").await;
    assert_eq!(token.split('.').count(), 3, "a JWS: {token}");

    // The log shows that the job had it, never the token.
    let log = http.log(job).await;
    assert!(log.contains("token=[[MASKED]] set=yes"), "{log}");
    assert!(!log.contains(&token), "{log}");

    let v = verify(&server, &token, "https://vault.example.test");
    let (doc, header, c) = (&v["discovery"], &v["header"], &v["claims"]);
    assert_eq!(doc["issuer"], server.url.as_str());
    assert_eq!(doc["jwks_uri"], format!("{}/oauth/discovery/keys", server.url));
    assert_eq!(header["alg"], "ES256");
    // GitLab's claims (`Gitlab::Ci::JwtV2`), values as strings where GitLab's are.
    assert_eq!(c["iss"], server.url.as_str());
    assert_eq!(c["aud"], "https://vault.example.test", "`$VAULT_SERVER_URL` expanded");
    assert_eq!(c["sub"], "project_path:app:ref_type:branch:ref:main");
    assert_eq!(c["project_path"], "app");
    assert_eq!(
        (&c["ref"], &c["ref_type"], &c["ref_path"], &c["ref_protected"]),
        (&"main".into(), &"branch".into(), &"refs/heads/main".into(), &"true".into())
    );
    assert_eq!(c["pipeline_id"], p["id"].as_i64().unwrap().to_string());
    assert_eq!(c["job_id"], job.to_string());
    assert_eq!(c["sha"], after.as_str());
    assert_eq!(c["pipeline_source"], "push");
    assert_eq!(
        (&c["environment"], &c["environment_protected"], &c["deployment_tier"]),
        (&"production".into(), &"false".into(), &"production".into())
    );
    assert!(c["runner_id"].as_i64().is_some_and(|id| id > 0), "{c}");
    // `exp`: the job's timeout (GitLab's default one hour) after issue; `nbf` five seconds before.
    let iat = c["iat"].as_i64().unwrap();
    assert_eq!(c["exp"].as_i64().unwrap() - iat, 3600);
    assert_eq!(c["nbf"].as_i64().unwrap(), iat - 5);
    assert!(c.get("project_id").is_none() && c.get("namespace_id").is_none(), "ids piste does not have are not made up: {c}");

    // A list `aud` stays a list, each entry expanded.
    let multi = token_in(&http, job, "multi.jwt").await;
    let m = verify(&server, &multi, "https://vault.example.test/b");
    assert_eq!(m["claims"]["aud"], serde_json::json!(["https://a.example.test", "https://vault.example.test/b"]));
    assert_ne!(m["claims"]["jti"], c["jti"]);

    // The JWKS is served as GitLab serves it, and one key signs every token of this database.
    let jwks: Value = reqwest::get(format!("{}/oauth/discovery/keys", server.url)).await.unwrap().json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((&keys[0]["kty"], &keys[0]["crv"], &keys[0]["kid"]), (&"EC".into(), &"P-256".into(), &header["kid"]));
    assert!(keys[0].get("d").is_none(), "never the private part");

    // A fork's merge request gets no token (as it gets no secret), even claiming `main`.
    let push =
        Command::new("git").args(["push", "-q", "origin", "HEAD:refs/merge-requests/7/head"]).current_dir(forge.work()).output().unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Merge Request Hook")
        .header("X-Gitlab-Event-UUID", "t-2")
        .header("X-Gitlab-Token", SECRET)
        .body(fork_merge_request_iid(&after, 7))
        .send()
        .await
        .unwrap();
    let fork = finished(&http, r).await;
    let fork_job = job_id(&fork, "vault");
    assert!(http.log(fork_job).await.contains("token=[] set="), "no token for a fork");
    assert_eq!(token_in(&http, fork_job, "vault.jwt").await, "");
}

/// With `[id_tokens] key_file` (an operator's RSA key, which every server of a database is
/// given), tokens are RS256 as GitLab's, and the discovery document and JWKS say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_rsa_key_signs_rs256_tokens() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id-tokens.pem");
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let forge = Forge::new(PIPELINE);
    let (before, after) = forge.push("main", "first");
    let extra = format!("external_url = \"http://127.0.0.1:{{PORT}}\"\n[id_tokens]\nkey_file = {:?}", key.display().to_string());
    let server = Server::start(&forge, 10_000, &extra);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let http = Http::new(&server);

    let p = finished(&http, http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "r-1").await).await;
    let token = token_in(&http, job_id(&p, "vault"), "vault.jwt").await;
    let v = verify(&server, &token, "https://vault.example.test");
    assert_eq!(v["header"]["alg"], "RS256");
    assert_eq!(v["discovery"]["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    assert_eq!(v["claims"]["sub"], "project_path:app:ref_type:branch:ref:main");
    let jwks: Value = reqwest::get(format!("{}/oauth/discovery/keys", server.url)).await.unwrap().json().await.unwrap();
    assert_eq!((&jwks["keys"][0]["kty"], &jwks["keys"][0]["kid"]), (&"RSA".into(), &v["header"]["kid"]));
    assert!(jwks["keys"][0].get("d").is_none(), "never the private part");
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
            found.push(path);
        }
    }
    found
}

/// The published key, and its public point (`04 || x || y`), which its PKCS#8 document holds.
async fn published(server: &Server) -> (Value, Vec<u8>) {
    use base64::Engine as _;
    let r = reqwest::get(format!("{}/oauth/discovery/keys", server.url)).await.unwrap();
    assert_eq!(r.status(), 200, "{}", server.log());
    let jwk = r.json::<Value>().await.unwrap()["keys"][0].clone();
    let coordinate = |c: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap();
    let point = [vec![4u8], coordinate("x"), coordinate("y")].concat();
    (jwk, point)
}

/// With `secret_key_file`, the generated signing key is kept encrypted in the database (no
/// file of the data directory holds it; without the file, the plain key is there to find),
/// and opens only with the same file: another one, or none, is refused with a line saying
/// what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_key_is_kept_encrypted_with_the_secret_key() {
    let forge = Forge::new("a:\n  script: [\"true\"]\n");
    let keys = tempfile::tempdir().unwrap();
    let secret = |name: &str, byte: u8| {
        let path = keys.path().join(name);
        std::fs::write(&path, [byte; 32]).unwrap();
        format!("secret_key_file = {:?}", path.display().to_string())
    };
    let (one, two) = (secret("one.key", 1), secret("two.key", 2));

    // Without it (as before): the key is stored as it is.
    let plain = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(&forge, 10_000, "", Some(plain.path()));
    let (_, point) = published(&server).await;
    server.kill();
    assert!(!files_holding(plain.path(), &point).is_empty(), "a plain key is found in the data directory");
    assert!(server.log().contains("stored unencrypted in the database: set `secret_key_file`"), "{}", server.log());

    let data = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(&forge, 10_000, &one, Some(data.path()));
    let (jwk, point) = published(&first).await;
    first.kill();
    assert_eq!(files_holding(data.path(), &point), Vec::<std::path::PathBuf>::new(), "the key is encrypted");
    let mut again = Server::start_in(&forge, 10_000, &one, Some(data.path()));
    assert_eq!(published(&again).await.0["kid"], jwk["kid"], "the same file opens it");
    again.kill();
    for (extra, said) in [
        (two.as_str(), "does not open with this server's `secret_key_file`"),
        ("", "is encrypted and this server has no `secret_key_file`"),
    ] {
        let mut other = Server::start_in(&forge, 10_000, extra, Some(data.path()));
        let r = reqwest::get(format!("{}/oauth/discovery/keys", other.url)).await.unwrap();
        assert_eq!(r.status(), 500);
        assert!(!r.text().await.unwrap().contains("secret_key_file"), "the reason is for the operator's log only");
        other.kill();
        assert!(other.log().contains(said), "{said}: {}", other.log());
    }
}
