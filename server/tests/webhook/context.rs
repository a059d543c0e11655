//! From a trigger to the predefined variables rules see.

use server::git::CommitInfo;
use server::webhook::{ProjectInfo, Trigger};

use crate::{SECRET, fixture, github, gitlab, trigger};

fn project() -> ProjectInfo {
    ProjectInfo {
        path: "group/app".into(),
        id: 7,
        server_url: "http://piste.test:8080".into(),
        default_branch: "master".into(),
        ..ProjectInfo::default()
    }
}

fn vars(t: &Trigger) -> Vec<(String, String)> {
    t.context(&project()).pipeline_variables()
}

fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn a_branch_push_sets_the_branch_variables() {
    let body = fixture("gitlab/push.json");
    let v = vars(&trigger(&gitlab("Push Hook", SECRET), &body));
    assert_eq!(get(&v, "CI_PIPELINE_SOURCE"), Some("push"));
    assert_eq!(get(&v, "CI_COMMIT_BRANCH"), Some("master"));
    assert_eq!(get(&v, "CI_COMMIT_REF_NAME"), Some("master"));
    assert_eq!(get(&v, "CI_COMMIT_SHA"), Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"));
    assert_eq!(get(&v, "CI_COMMIT_BEFORE_SHA"), Some("95790bf891e76fee5e1747ab589903a6a1f80f22"));
    assert_eq!(get(&v, "CI_COMMIT_MESSAGE"), Some("fixed readme"));
    assert_eq!(get(&v, "CI_COMMIT_AUTHOR"), Some("GitLab dev user <gitlabdev@dv6700.(none)>"));
    assert_eq!(get(&v, "CI_COMMIT_REF_PROTECTED"), Some("true"));
    assert_eq!(get(&v, "CI_COMMIT_TAG"), None);
    assert_eq!(get(&v, "CI_PROJECT_PATH"), Some("group/app"));
    assert_eq!(get(&v, "CI_DEFAULT_BRANCH"), Some("master"));
    assert_eq!(get(&v, "GITLAB_USER_LOGIN"), Some("jsmith"));
    assert_eq!(get(&v, "GITLAB_USER_ID"), Some("4"));
    assert_eq!(get(&v, "GITLAB_USER_EMAIL"), Some("john@example.com"));
}

#[test]
fn a_tag_push_sets_the_tag_not_the_branch() {
    let body = fixture("gitlab/tag_push.json");
    let v = vars(&trigger(&gitlab("Tag Push Hook", SECRET), &body));
    assert_eq!(get(&v, "CI_COMMIT_TAG"), Some("v1.0.0"));
    assert_eq!(get(&v, "CI_COMMIT_BRANCH"), None);
    assert_eq!(get(&v, "CI_COMMIT_BEFORE_SHA"), Some("0000000000000000000000000000000000000000"));
}

#[test]
fn a_merge_request_sets_the_merge_request_variables() {
    let body = fixture("github/pull_request-opened.json");
    let t = trigger(&github("pull_request", &body, SECRET), &body);
    let v = vars(&t);
    assert_eq!(get(&v, "CI_PIPELINE_SOURCE"), Some("merge_request_event"));
    assert_eq!(get(&v, "CI_MERGE_REQUEST_IID"), Some("2"));
    assert_eq!(get(&v, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"), Some("changes"));
    assert_eq!(get(&v, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"), Some("master"));
    assert_eq!(get(&v, "CI_MERGE_REQUEST_TITLE"), Some("Update the README with new information."));
    assert_eq!(get(&v, "CI_MERGE_REQUEST_LABELS"), Some("bug"));
    assert_eq!(get(&v, "CI_COMMIT_REF_NAME"), Some("changes"));
    assert_eq!(get(&v, "CI_COMMIT_BRANCH"), None, "merge request pipelines have no CI_COMMIT_BRANCH");
    assert_eq!(get(&v, "CI_COMMIT_SHA"), Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821"));
}

#[test]
fn missing_commit_details_come_from_the_mirror() {
    let body = fixture("github/pull_request-opened.json");
    let mut t = trigger(&github("pull_request", &body, SECRET), &body);
    t.complete_commit(&CommitInfo {
        id: t.sha.clone(),
        message: "Update README.md\n\nMore words.".into(),
        author_name: "Codertocat".into(),
        author_email: "21031067+Codertocat@users.noreply.github.com".into(),
        timestamp: "2019-05-15T15:20:30+00:00".into(),
    });
    assert_eq!(t.commit_title, "Update README.md");
    let v = vars(&t);
    assert_eq!(get(&v, "CI_COMMIT_TITLE"), Some("Update README.md"));
    assert_eq!(get(&v, "CI_COMMIT_TIMESTAMP"), Some("2019-05-15T15:20:30+00:00"));
    // What the payload had is kept.
    let body = fixture("gitlab/push.json");
    let mut t = trigger(&gitlab("Push Hook", SECRET), &body);
    t.complete_commit(&CommitInfo {
        id: t.sha.clone(),
        message: "other".into(),
        author_name: "x".into(),
        author_email: "y".into(),
        timestamp: "z".into(),
    });
    assert_eq!(t.commit_message, "fixed readme");
}

#[test]
fn triggers_round_trip_through_json() {
    for (headers, body) in [
        (gitlab("Merge Request Hook", SECRET), fixture("gitlab/merge_request.json")),
        (gitlab("Tag Push Hook", SECRET), fixture("gitlab/tag_push.json")),
        (github("push", &fixture("github/push.json"), SECRET), fixture("github/push.json")),
    ] {
        let t = trigger(&headers, &body);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Trigger>(&json).unwrap(), t);
    }
    let t = trigger(&gitlab("Tag Push Hook", SECRET), &fixture("gitlab/tag_push.json"));
    let json: serde_json::Value = serde_json::to_value(&t).unwrap();
    assert_eq!(json["kind"], serde_json::json!({"type": "tag", "tag": "v1.0.0", "message": null}));
    assert_eq!(json["forge"], "gitlab");
}
