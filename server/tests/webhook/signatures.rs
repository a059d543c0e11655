//! Nothing unauthenticated gets through, and nothing is parsed before it is authenticated.

use axum::http::{HeaderMap, HeaderValue};
use server::webhook::{self, Forge, MAX_BODY_BYTES, WebhookError};

use crate::{SECRET, fixture, forgejo, gitea, github, gitlab, receive};

/// Every documented payload with the headers its forge sends, signed with `secret`.
fn deliveries(secret: &str) -> Vec<(&'static str, HeaderMap, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, event) in [
        ("github/push.json", "push"),
        ("github/push-new-branch.json", "push"),
        ("github/push-tag-deleted.json", "push"),
        ("github/pull_request-opened.json", "pull_request"),
        ("github/ping.json", "ping"),
    ] {
        let body = fixture(name);
        out.push((name, github(event, &body, secret), body));
    }
    for (name, event) in
        [("gitlab/push.json", "Push Hook"), ("gitlab/tag_push.json", "Tag Push Hook"), ("gitlab/merge_request.json", "Merge Request Hook")]
    {
        out.push((name, gitlab(event, secret), fixture(name)));
    }
    for (name, event) in [("gitea/push.json", "push"), ("gitea/pull_request-synchronized.json", "pull_request")] {
        let body = fixture(name);
        out.push((name, gitea(event, &body, secret), body.clone()));
        out.push((name, forgejo(event, &body, secret), body));
    }
    out
}

#[test]
fn every_fixture_verifies_with_the_right_secret() {
    for (name, headers, body) in deliveries(SECRET) {
        assert!(webhook::verify(&headers, &body, SECRET).is_ok(), "{name}");
        assert!(receive(&headers, &body).is_ok(), "{name}");
    }
}

#[test]
fn a_forged_signature_or_wrong_token_is_refused() {
    for (name, headers, body) in deliveries("not the secret") {
        let err = webhook::verify(&headers, &body, SECRET).unwrap_err();
        assert!(matches!(err, WebhookError::BadSignature { .. }), "{name}: {err:?}");
        assert_eq!(err.status(), 401, "{name}");
        assert_eq!(err.code(), "webhook_bad_signature");
    }
}

#[test]
fn a_body_altered_by_one_byte_is_refused() {
    for (name, headers, body) in deliveries(SECRET) {
        if name.starts_with("gitlab/") {
            continue; // GitLab's token does not cover the body.
        }
        for at in [0, body.len() / 2, body.len() - 1] {
            let mut altered = body.clone();
            altered[at] ^= 0x01;
            let err = webhook::verify(&headers, &altered, SECRET).unwrap_err();
            assert!(matches!(err, WebhookError::BadSignature { .. }), "{name} byte {at}: {err:?}");
        }
        let mut longer = body.clone();
        longer.push(b' ');
        assert!(webhook::verify(&headers, &longer, SECRET).is_err(), "{name}: trailing byte");
    }
}

#[test]
fn a_missing_signature_or_token_is_refused() {
    for (name, mut headers, body) in deliveries(SECRET) {
        for h in ["x-hub-signature-256", "x-gitea-signature", "x-forgejo-signature", "x-gitlab-token"] {
            headers.remove(h);
        }
        let err = webhook::verify(&headers, &body, SECRET).unwrap_err();
        assert!(matches!(err, WebhookError::MissingSignature { .. }), "{name}: {err:?}");
        assert_eq!(err.status(), 401);
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

#[test]
fn githubs_sha1_signature_alone_is_not_enough() {
    let body = fixture("github/push.json");
    let mut h = github("push", &body, SECRET);
    h.remove("x-hub-signature-256");
    h.insert("x-hub-signature", HeaderValue::from_static("sha1=0000000000000000000000000000000000000000"));
    assert_eq!(
        webhook::verify(&h, &body, SECRET),
        Err(WebhookError::MissingSignature { forge: Forge::GitHub, header: "x-hub-signature-256" })
    );
}

#[test]
fn malformed_signature_headers_are_refused() {
    let body = fixture("github/push.json");
    let good = webhook::sign(SECRET, &body);
    for bad in [good.clone(), format!("sha1={good}"), "sha256=".into(), "sha256=zz".into(), format!("sha256={}", &good[..63])] {
        let mut h = github("push", &body, SECRET);
        h.insert("x-hub-signature-256", HeaderValue::from_str(&bad).unwrap());
        assert!(matches!(webhook::verify(&h, &body, SECRET), Err(WebhookError::BadSignature { .. })), "{bad}");
    }
    let mut h = github("push", &body, SECRET);
    h.insert("x-hub-signature-256", HeaderValue::from_bytes(b"sha256=\xff").unwrap());
    assert!(matches!(webhook::verify(&h, &body, SECRET), Err(WebhookError::BadSignature { .. })));
}

#[test]
fn forgejos_own_signature_is_the_one_checked() {
    let body = fixture("gitea/push.json");
    let mut h = forgejo("push", &body, SECRET);
    h.insert("x-forgejo-signature", HeaderValue::from_str(&webhook::sign("other", &body)).unwrap());
    assert_eq!(webhook::verify(&h, &body, SECRET), Err(WebhookError::BadSignature { forge: Forge::Gitea, header: "x-forgejo-signature" }));
}

#[test]
fn gitlab_tokens_must_match_exactly() {
    let body = fixture("gitlab/push.json");
    for wrong in ["", "It's a Secret to Everybod", "It's a Secret to Everybody!", "it's a secret to everybody"] {
        let h = gitlab("Push Hook", wrong);
        assert!(webhook::verify(&h, &body, SECRET).is_err(), "{wrong:?}");
    }
}

#[test]
fn an_empty_secret_verifies_nothing() {
    let body = fixture("gitlab/push.json");
    let h = gitlab("Push Hook", "");
    assert_eq!(webhook::verify(&h, &body, ""), Err(WebhookError::NoSecret));
    let h = github("push", &body, "");
    assert_eq!(webhook::verify(&h, &body, ""), Err(WebhookError::NoSecret));
}

#[test]
fn requests_without_forge_headers_are_bad_requests() {
    let body = fixture("github/push.json");
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-hub-signature-256", HeaderValue::from_str(&format!("sha256={}", webhook::sign(SECRET, &body))).unwrap());
    let err = webhook::verify(&h, &body, SECRET).unwrap_err();
    assert_eq!(err, WebhookError::UnknownForge);
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("X-GitHub-Event"), "{err}");
}

#[test]
fn oversized_bodies_are_refused_before_any_hmac() {
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let h = github("push", b"{}", SECRET);
    let err = webhook::verify(&h, &body, SECRET).unwrap_err();
    assert_eq!(err, WebhookError::TooLarge { size: MAX_BODY_BYTES + 1, limit: MAX_BODY_BYTES });
    assert_eq!(err.status(), 413);
}

#[test]
fn verification_comes_before_parsing() {
    // Garbage that is not signed is an authentication error, not a parse error.
    let garbage = b"{ this is not json";
    let mut h = github("push", b"something else", SECRET);
    assert!(matches!(webhook::verify(&h, garbage, SECRET), Err(WebhookError::BadSignature { .. })));
    h.remove("x-hub-signature-256");
    assert!(matches!(webhook::verify(&h, garbage, SECRET), Err(WebhookError::MissingSignature { .. })));
    // Signed garbage passes verification, then parsing refuses it.
    let h = github("push", garbage, SECRET);
    assert_eq!(webhook::verify(&h, garbage, SECRET), Ok(Forge::GitHub));
    assert!(matches!(receive(&h, garbage), Err(WebhookError::Malformed(_))));
}
