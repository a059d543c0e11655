//! Step 1: which forge sent this, and is it really from there. Only headers and the raw bytes
//! of the body are looked at; the body is not parsed here.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Forge, MAX_BODY_BYTES, WebhookError};

const GITHUB_EVENT: &str = "x-github-event";
const GITLAB_EVENT: &str = "x-gitlab-event";
const GITEA_EVENT: &str = "x-gitea-event";
const FORGEJO_EVENT: &str = "x-forgejo-event";

/// Tells the forge apart by its event header. Gitea and Forgejo also send `X-GitHub-Event`
/// for compatibility, so their own headers are looked at first.
pub fn detect(headers: &HeaderMap) -> Result<Forge, WebhookError> {
    if headers.contains_key(FORGEJO_EVENT) || headers.contains_key(GITEA_EVENT) {
        Ok(Forge::Gitea)
    } else if headers.contains_key(GITLAB_EVENT) {
        Ok(Forge::GitLab)
    } else if headers.contains_key(GITHUB_EVENT) {
        Ok(Forge::GitHub)
    } else {
        Err(WebhookError::UnknownForge)
    }
}

/// What can be checked before the body is read: the forge, a secret to check against, and
/// the signature header's presence — or, for GitLab, whose token does not depend on the body,
/// the token itself (in constant time). The webhook route calls it before reading any byte of
/// the body; [`verify`] calls it again.
pub fn precheck(headers: &HeaderMap, secret: &str) -> Result<Forge, WebhookError> {
    let forge = detect(headers)?;
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let header = signature_header(forge, headers);
    let value = required(headers, forge, header)?;
    if forge == Forge::GitLab {
        let given = Sha256::digest(value.as_bytes());
        let expected = Sha256::digest(secret.as_bytes());
        if !bool::from(given.ct_eq(&expected)) {
            return Err(WebhookError::BadSignature { forge, header });
        }
    }
    Ok(forge)
}

/// The header holding the forge's signature or token.
fn signature_header(forge: Forge, headers: &HeaderMap) -> &'static str {
    match forge {
        // `X-Hub-Signature` (SHA-1) is deliberately not accepted.
        Forge::GitHub => "x-hub-signature-256",
        // When Forgejo's own header is there it is the one checked: a bad one is not rescued
        // by a good Gitea-compatible one.
        Forge::Gitea if headers.contains_key("x-forgejo-signature") => "x-forgejo-signature",
        Forge::Gitea => "x-gitea-signature",
        Forge::GitLab => "x-gitlab-token",
    }
}

/// Identifies the forge and checks the body's signature (GitHub, Gitea/Forgejo) or token
/// (GitLab) against `secret`, in constant time, before anything is parsed. An empty secret
/// verifies nothing. Signatures are compared as HMAC outputs (`verify_slice`); GitLab tokens
/// are compared through their SHA-256 digests so that not even their length leaks.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<Forge, WebhookError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WebhookError::TooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    let forge = precheck(headers, secret)?;
    let header = signature_header(forge, headers);
    let value = required(headers, forge, header)?;
    let valid = match forge {
        Forge::GitHub => value.strip_prefix("sha256=").is_some_and(|hex_sig| check_hmac(secret, body, hex_sig)),
        Forge::Gitea => check_hmac(secret, body, value),
        Forge::GitLab => true, // the token was checked by `precheck`
    };
    valid.then_some(forge).ok_or(WebhookError::BadSignature { forge, header })
}

fn required<'h>(headers: &'h HeaderMap, forge: Forge, header: &'static str) -> Result<&'h str, WebhookError> {
    let value = headers.get(header).ok_or(WebhookError::MissingSignature { forge, header })?;
    // A value that is not visible ASCII cannot be a hex signature nor a token GitLab sends.
    let value = value.to_str().map_err(|_| WebhookError::BadSignature { forge, header })?;
    if value.is_empty() {
        return Err(WebhookError::MissingSignature { forge, header });
    }
    Ok(value.trim())
}

/// Whether `hex_sig` is the HMAC-SHA256 of `body` under `secret`.
fn check_hmac(secret: &str, body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The HMAC-SHA256 of `body` under `secret` as lowercase hex: what GitHub (after `sha256=`),
/// Gitea and Forgejo put in their signature headers. For tests and tools replaying deliveries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The event name, from the forge's own header.
pub(super) fn event_name(forge: Forge, headers: &HeaderMap) -> Result<String, WebhookError> {
    let names: &[&str] = match forge {
        Forge::GitHub => &[GITHUB_EVENT],
        Forge::GitLab => &[GITLAB_EVENT],
        Forge::Gitea => &[FORGEJO_EVENT, GITEA_EVENT],
    };
    let Some(value) = names.iter().find_map(|n| headers.get(*n)) else {
        return Err(WebhookError::UnknownForge);
    };
    let shown = String::from_utf8_lossy(value.as_bytes());
    let event = value.to_str().ok().map(str::trim).filter(|e| {
        !e.is_empty() && e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'-' | b'.'))
    });
    event.map(str::to_string).ok_or_else(|| WebhookError::UnknownEvent { forge, event: super::validate::shorten(&shown) })
}

/// The delivery id (see the module documentation for which header), or `sha256:<hex>` of the
/// body when the forge sent none.
pub(super) fn delivery_id(forge: Forge, headers: &HeaderMap, body: &[u8]) -> Result<String, WebhookError> {
    let names: &[&str] = match forge {
        Forge::GitHub => &["x-github-delivery"],
        Forge::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
        Forge::Gitea => &["x-forgejo-delivery", "x-gitea-delivery"],
    };
    for name in names {
        let Some(value) = headers.get(*name) else { continue };
        let id = value.to_str().unwrap_or("").trim();
        if id.is_empty() {
            continue;
        }
        if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WebhookError::Malformed(format!("`{name}` is not a delivery id: `{}`", super::validate::shorten(id))));
        }
        return Ok(id.to_string());
    }
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_test_vector() {
        // From GitHub's "Validating webhook deliveries".
        assert_eq!(
            sign("It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn gitea_headers_win_over_their_github_compatible_copies() {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", "push".parse().unwrap());
        h.insert("x-gitea-event", "push".parse().unwrap());
        assert_eq!(detect(&h), Ok(Forge::Gitea));
    }

    #[test]
    fn non_hex_and_short_signatures_fail() {
        assert!(!check_hmac("s", b"x", "zz"));
        assert!(!check_hmac("s", b"x", ""));
        assert!(!check_hmac("s", b"x", &sign("s", b"x")[..62]));
        assert!(check_hmac("s", b"x", &sign("s", b"x")));
    }
}
