//! Payload fields are data: odd but valid values pass through unchanged, invalid ones are
//! `Malformed`, and no body panics the parser, even when correctly signed.

use proptest::prelude::*;
use serde_json::{Value, json};
use server::webhook::{TriggerKind, WebhookError};

use crate::{SECRET, fixture_json, gitea, github, gitlab, receive, to_bytes, trigger};

const PWNED: &str = "$(touch /tmp/pwned)";

fn malformed(result: Result<Option<server::webhook::Trigger>, WebhookError>) -> String {
    match result {
        Err(e @ WebhookError::Malformed(_)) => {
            assert_eq!(e.status(), 400);
            e.to_string()
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn a_branch_named_like_a_command_is_plain_data() {
    let mut v = fixture_json("github/push.json");
    v["ref"] = format!("refs/heads/{PWNED}").into();
    v["head_commit"]["message"] = "`rm -rf /`; $(reboot) && echo \"pwned\" > /etc/passwd".into();
    v["commits"][2]["message"] = v["head_commit"]["message"].clone();
    let body = to_bytes(&v);
    let t = trigger(&github("push", &body, SECRET), &body);
    assert_eq!(t.kind, TriggerKind::Push { branch: PWNED.into() });
    assert_eq!(t.git_ref, format!("refs/heads/{PWNED}"));
    assert_eq!(t.commit_message, "`rm -rf /`; $(reboot) && echo \"pwned\" > /etc/passwd");
    let vars = t.context(&Default::default()).pipeline_variables();
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("CI_COMMIT_BRANCH"), Some(PWNED));
    assert_eq!(get("CI_COMMIT_REF_NAME"), Some(PWNED));
    assert_eq!(get("CI_COMMIT_REF_SLUG"), Some("touch--tmp-pwned"));
}

#[test]
fn hostile_merge_request_fields_are_plain_data() {
    let mut v = fixture_json("gitlab/merge_request.json");
    v["object_attributes"]["source_branch"] = PWNED.into();
    v["object_attributes"]["title"] = "'; DROP TABLE pipelines; --".into();
    v["object_attributes"]["labels"][0]["title"] = "${IFS}".into();
    let body = to_bytes(&v);
    let t = trigger(&gitlab("Merge Request Hook", SECRET), &body);
    let TriggerKind::MergeRequest(mr) = t.kind else { panic!() };
    assert_eq!(mr.source_branch, PWNED);
    assert_eq!(mr.title, "'; DROP TABLE pipelines; --");
    assert_eq!(mr.labels, vec!["${IFS}".to_string()]);
}

#[test]
fn malformed_json_is_a_bad_request() {
    for body in [&b""[..], b"{", b"null", b"[]", b"\"push\"", b"{\"ref\": 1}", b"\xff\xfe"] {
        malformed(receive(&github("push", body, SECRET), body));
        malformed(receive(&gitlab("Push Hook", SECRET), body));
        malformed(receive(&gitea("push", body, SECRET), body));
    }
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    malformed(receive(&github("push", &body, SECRET), &body));
    // Deep nesting in a field that is not read: skipped without recursion, or refused.
    let body = format!(
        r#"{{"ref":"refs/heads/main","before":"{z}","after":"{a}","x":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000),
        z = "0".repeat(40),
        a = "a".repeat(40)
    )
    .into_bytes();
    match receive(&github("push", &body, SECRET), &body) {
        Ok(Some(t)) => assert_eq!(t.sha, "a".repeat(40)),
        other => assert!(matches!(other, Err(WebhookError::Malformed(_))), "{other:?}"),
    }
}

#[test]
fn wrong_types_are_malformed() {
    let mut v = fixture_json("github/push.json");
    v["after"] = 42.into();
    let body = to_bytes(&v);
    assert!(malformed(receive(&github("push", &body, SECRET), &body)).contains("GitHub `push` payload"));
    let mut v = fixture_json("gitlab/merge_request.json");
    v["object_attributes"]["iid"] = "one".into();
    let body = to_bytes(&v);
    malformed(receive(&gitlab("Merge Request Hook", SECRET), &body));
    let mut v = fixture_json("gitlab/merge_request.json");
    v["object_attributes"]["iid"] = (-1).into();
    let body = to_bytes(&v);
    malformed(receive(&gitlab("Merge Request Hook", SECRET), &body));
}

/// Sends the GitHub push fixture with one field replaced.
fn github_push_with(path: &[&str], value: Value) -> Result<Option<server::webhook::Trigger>, WebhookError> {
    let mut v = fixture_json("github/push.json");
    let mut at = &mut v;
    for p in &path[..path.len() - 1] {
        at = match p.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*p],
        };
    }
    at[path[path.len() - 1]] = value;
    let body = to_bytes(&v);
    receive(&github("push", &body, SECRET), &body)
}

#[test]
fn invalid_shas_are_refused() {
    for bad in [
        "",
        "abc",
        "1481a2de7b2a7d02428ad93446ab166be7793fb",
        "1481a2de7b2a7d02428ad93446ab166be7793fbbb",
        "g481a2de7b2a7d02428ad93446ab166be7793fbb",
        "HEAD",
    ] {
        let e = malformed(github_push_with(&["after"], bad.into()));
        assert!(e.contains("`after`"), "{e}");
        malformed(github_push_with(&["before"], if bad.is_empty() { "x".into() } else { bad.into() }));
    }
    let mut v = fixture_json("github/pull_request-opened.json");
    v["pull_request"]["head"]["sha"] = "--upload-pack=touch /tmp/pwned".into();
    let body = to_bytes(&v);
    malformed(receive(&github("pull_request", &body, SECRET), &body));
}

#[test]
fn invalid_refs_are_refused() {
    for bad in [
        "refs/heads/a..b",
        "refs/heads/-x",
        "refs/heads/--upload-pack=evil",
        "refs/heads/a\0b",
        "refs/heads/a\nb",
        "refs/heads/a\u{7f}b",
        "refs/heads/",
        "refs/heads//x",
        "main",
        "-refs/heads/x",
        "../refs/heads/x",
    ] {
        malformed(github_push_with(&["ref"], bad.into()));
    }
    let long = format!("refs/heads/{}", "a".repeat(2000));
    assert!(malformed(github_push_with(&["ref"], long.into())).contains("more than 1024"));
    // A ref that is neither a branch nor a tag starts nothing.
    assert_eq!(github_push_with(&["ref"], "refs/notes/commits".into()), Ok(None));
    for (field, bad) in [("source_branch", "a..b"), ("target_branch", "-main"), ("source_branch", "")] {
        let mut v = fixture_json("gitlab/merge_request.json");
        v["object_attributes"][field] = bad.into();
        let body = to_bytes(&v);
        malformed(receive(&gitlab("Merge Request Hook", SECRET), &body));
    }
}

#[test]
fn huge_or_binary_fields_are_refused() {
    let e = malformed(github_push_with(&["commits", "2", "message"], "x".repeat(1024 * 1024 + 1).into()));
    assert!(e.contains("commit message"), "{e}");
    malformed(github_push_with(&["commits", "2", "message"], "nul\0byte".into()));
    malformed(github_push_with(&["commits", "2", "author", "name"], "two\nlines".into()));
    malformed(github_push_with(&["commits", "0", "modified"], json!(["a\0b"])));
    malformed(github_push_with(&["commits", "0", "modified"], json!([""])));
    malformed(github_push_with(&["commits", "0", "modified"], json!(["x".repeat(5000)])));
    let mut v = fixture_json("gitlab/merge_request.json");
    v["object_attributes"]["labels"] = (0..1001).map(|i| json!({ "title": format!("l{i}") })).collect();
    let body = to_bytes(&v);
    assert!(malformed(receive(&gitlab("Merge Request Hook", SECRET), &body)).contains("labels"));
}

#[test]
fn too_many_changed_files_make_changes_unknown() {
    let files: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
    let t = github_push_with(&["commits", "0", "added"], json!(files)).unwrap().unwrap();
    assert_eq!(t.changed_files, None);
}

#[test]
fn unreadable_event_names_are_bad_requests() {
    let body = b"{}";
    let mut h = github("push", body, SECRET);
    h.insert("x-github-event", axum::http::HeaderValue::from_static("push\tnow"));
    let err = receive(&h, body).unwrap_err();
    assert!(matches!(err, WebhookError::UnknownEvent { .. }), "{err:?}");
    assert_eq!(err.status(), 400);
    let mut h = github("push", body, SECRET);
    h.insert("x-github-delivery", axum::http::HeaderValue::from_str(&"d".repeat(200)).unwrap());
    malformed(receive(&h, body));
}

#[test]
fn gitlab_object_kind_must_match_the_header() {
    let body = to_bytes(&fixture_json("gitlab/push.json"));
    let e = malformed(receive(&gitlab("Tag Push Hook", SECRET), &body));
    assert!(e.contains("object_kind"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any correctly signed body: an answer, never a panic; a trigger is always well-formed.
    #[test]
    fn signed_arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), which in 0usize..7) {
        let headers = match which {
            0 => github("push", &body, SECRET),
            1 => github("pull_request", &body, SECRET),
            2 => gitlab("Push Hook", SECRET),
            3 => gitlab("Tag Push Hook", SECRET),
            4 => gitlab("Merge Request Hook", SECRET),
            5 => gitea("push", &body, SECRET),
            _ => gitea("pull_request", &body, SECRET),
        };
        if let Ok(Some(t)) = receive(&headers, &body) {
            prop_assert!(t.git_ref.starts_with("refs/"));
            prop_assert_eq!(t.sha.len(), 40);
        }
    }

    /// Arbitrary text in the fields that become branch names, messages and files.
    #[test]
    fn arbitrary_field_values_never_panic(branch in ".{0,64}", message in "(?s).{0,256}", file in ".{0,64}", sha in "[0-9a-fA-Fg]{38,42}") {
        let mut v = fixture_json("github/push.json");
        v["ref"] = format!("refs/heads/{branch}").into();
        v["commits"][2]["message"] = message.clone().into();
        v["commits"][2]["added"] = json!([file]);
        v["after"] = sha.clone().into();
        v["commits"][2]["id"] = sha.clone().into();
        let body = to_bytes(&v);
        match receive(&github("push", &body, SECRET), &body) {
            Ok(Some(t)) => {
                prop_assert_eq!(t.kind, TriggerKind::Push { branch: branch.clone() });
                prop_assert_eq!(t.commit_message, message);
                prop_assert_eq!(t.sha, sha.to_ascii_lowercase());
            }
            Ok(None) => prop_assert!(sha.chars().all(|c| c == '0')),
            Err(e) => prop_assert!(matches!(e, WebhookError::Malformed(_)), "{:?}", e),
        }
    }
}
