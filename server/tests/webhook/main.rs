//! Webhook intake against the forges' documented payloads (`fixtures/webhooks/`), each signed
//! and sent with the headers its forge uses.

mod context;
mod forges;
mod hostile;
mod signatures;

use std::path::Path;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use server::webhook::{self, Trigger, WebhookError};

pub(crate) const SECRET: &str = "It's a Secret to Everybody";
pub(crate) const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

/// A fixture's bytes, exactly as stored (signatures cover the raw bytes).
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/webhooks").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture as JSON, to change a field before signing.
pub(crate) fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

pub(crate) fn to_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

/// The headers GitHub sends with `body`, signed with `secret`.
pub(crate) fn github(event: &str, body: &[u8], secret: &str) -> HeaderMap {
    let sig = format!("sha256={}", webhook::sign(secret, body));
    headers(&[
        ("User-Agent", "GitHub-Hookshot/044aadd"),
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", DELIVERY),
        ("X-GitHub-Hook-ID", "292430182"),
        ("X-Hub-Signature-256", &sig),
    ])
}

/// The headers GitLab sends: the secret itself as `X-Gitlab-Token`.
pub(crate) fn gitlab(event: &str, token: &str) -> HeaderMap {
    headers(&[
        ("User-Agent", "GitLab/17.5.0"),
        ("Content-Type", "application/json"),
        ("X-Gitlab-Event", event),
        ("X-Gitlab-Instance", "https://gitlab.example.com"),
        ("X-Gitlab-Webhook-UUID", "5ca8a5ae-4e76-4d49-9b3c-6cd9a2f3b3a1"),
        ("X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e"),
        ("Idempotency-Key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"),
        ("X-Gitlab-Token", token),
    ])
}

/// The headers Gitea sends (with its GitHub- and Gogs-compatible copies).
pub(crate) fn gitea(event: &str, body: &[u8], secret: &str) -> HeaderMap {
    let sig = webhook::sign(secret, body);
    headers(&[
        ("Content-Type", "application/json"),
        ("X-GitHub-Delivery", DELIVERY),
        ("X-GitHub-Event", event),
        ("X-Gogs-Delivery", DELIVERY),
        ("X-Gogs-Event", event),
        ("X-Gitea-Delivery", DELIVERY),
        ("X-Gitea-Event", event),
        ("X-Gitea-Signature", &sig),
        ("X-Gogs-Signature", &sig),
        ("X-Hub-Signature-256", &format!("sha256={sig}")),
    ])
}

/// The headers Forgejo sends: its own, plus Gitea's.
pub(crate) fn forgejo(event: &str, body: &[u8], secret: &str) -> HeaderMap {
    let mut h = gitea(event, body, secret);
    let sig = webhook::sign(secret, body);
    for (k, v) in
        [("X-Forgejo-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"), ("X-Forgejo-Event", event), ("X-Forgejo-Signature", &sig)]
    {
        h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

/// What the server does with a delivery: verify, then parse.
pub(crate) fn receive(headers: &HeaderMap, body: &[u8]) -> Result<Option<Trigger>, WebhookError> {
    let forge = webhook::verify(headers, body, SECRET)?;
    webhook::parse(forge, headers, body)
}

/// [`receive`] for a delivery that must start a pipeline.
pub(crate) fn trigger(headers: &HeaderMap, body: &[u8]) -> Trigger {
    match receive(headers, body) {
        Ok(Some(t)) => t,
        other => panic!("expected a trigger, got {other:?}"),
    }
}
