//! Each documented payload, signed as its forge signs it, gives the right trigger.

use server::webhook::{Forge, MergeRequestTrigger, TriggerKind, WebhookError};

use crate::{DELIVERY, SECRET, fixture, fixture_json, forgejo, gitea, github, gitlab, receive, to_bytes, trigger};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn github_push_to_a_branch() {
    let body = fixture("github/push.json");
    let t = trigger(&github("push", &body, SECRET), &body);
    assert_eq!(t.forge, Forge::GitHub);
    assert_eq!(t.delivery_id, DELIVERY);
    assert_eq!(t.kind, TriggerKind::Push { branch: "master".into() });
    assert_eq!(t.git_ref, "refs/heads/master");
    assert_eq!(t.sha, "1481a2de7b2a7d02428ad93446ab166be7793fbb");
    assert_eq!(t.before_sha.as_deref(), Some("17c497ccc7cca9c2f735aa07e9e3813060ce9a6a"));
    assert_eq!(t.commit_message, "Rename madame-bovary.txt to words/madame-bovary.txt");
    assert_eq!(t.commit_title, t.commit_message);
    assert_eq!(t.commit_timestamp.as_deref(), Some("2013-03-12T08:14:29-07:00"));
    assert_eq!((t.author_name.as_str(), t.author_email.as_str()), ("Garen Torikian", "lolwut@noway.biz"));
    assert_eq!(t.user_login.as_deref(), Some("none"), "no `sender` in this old example: the pusher's name");
    // The three commits' files; the rename counts as its two paths.
    assert_eq!(t.changed_files, Some(strings(&["README.md", "madame-bovary.txt", "words/madame-bovary.txt"])));
    assert_eq!(t.source(), "push");
    assert_eq!(t.fetch_refspec(), "+refs/heads/master:refs/heads/master");
}

#[test]
fn github_push_of_a_new_branch_has_no_before_nor_changes() {
    let body = fixture("github/push-new-branch.json");
    let t = trigger(&github("push", &body, SECRET), &body);
    assert_eq!(t.kind, TriggerKind::Push { branch: "master".into() });
    assert_eq!(t.sha, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(t.before_sha, None);
    // GitLab: `rules:changes` is true for a new branch; unknown changes give that.
    assert_eq!(t.changed_files, None);
    assert_eq!(t.commit_message, "Initial commit");
    assert_eq!(t.user_login.as_deref(), Some("Codertocat"));
    assert_eq!(t.user_id, Some(21031067));
}

#[test]
fn github_deleted_tag_is_acknowledged_and_ignored() {
    let body = fixture("github/push-tag-deleted.json");
    assert_eq!(receive(&github("push", &body, SECRET), &body), Ok(None));
}

#[test]
fn github_tag_push() {
    let mut v = fixture_json("github/push-new-branch.json");
    v["ref"] = "refs/tags/v1.2.0".into();
    let body = to_bytes(&v);
    let t = trigger(&github("push", &body, SECRET), &body);
    assert_eq!(t.kind, TriggerKind::Tag { tag: "v1.2.0".into(), message: None });
    assert_eq!(t.before_sha, None);
    assert_eq!(t.changed_files, None, "tags have no change information (GitLab: `changes` is true)");
}

#[test]
fn github_pull_request_opened() {
    let body = fixture("github/pull_request-opened.json");
    let t = trigger(&github("pull_request", &body, SECRET), &body);
    assert_eq!(
        t.kind,
        TriggerKind::MergeRequest(MergeRequestTrigger {
            iid: 2,
            id: Some(279147437),
            source_branch: "changes".into(),
            target_branch: "master".into(),
            title: "Update the README with new information.".into(),
            description: "This is a pretty simple change that we need to pull into master.".into(),
            labels: strings(&["bug"]),
            action: "opened".into(),
            source_sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
            target_sha: Some("f95f852bd8fca8fcc58a9a2d6c842781e32a215e".into()),
            source_project_path: None,
        })
    );
    assert_eq!(t.git_ref, "refs/pull/2/head");
    assert_eq!(t.sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(t.before_sha, None);
    assert_eq!(t.source(), "merge_request_event");
    assert_eq!(t.user_login.as_deref(), Some("Codertocat"));
    assert_eq!(t.commit_message, "", "not in the payload: the server reads it from the mirror");
}

#[test]
fn github_pull_request_actions() {
    for (action, runs) in [("synchronize", true), ("reopened", true), ("closed", false), ("labeled", false), ("edited", false)] {
        let mut v = fixture_json("github/pull_request-opened.json");
        v["action"] = action.into();
        let body = to_bytes(&v);
        let got = receive(&github("pull_request", &body, SECRET), &body).unwrap();
        assert_eq!(got.is_some(), runs, "{action}");
    }
}

#[test]
fn github_pull_request_from_a_fork_names_it() {
    let mut v = fixture_json("github/pull_request-opened.json");
    v["pull_request"]["head"]["repo"]["full_name"] = "contributor/Hello-World".into();
    let body = to_bytes(&v);
    let t = trigger(&github("pull_request", &body, SECRET), &body);
    let TriggerKind::MergeRequest(mr) = t.kind else { panic!() };
    assert_eq!(mr.source_project_path.as_deref(), Some("contributor/Hello-World"));
}

#[test]
fn github_ping_is_acknowledged() {
    let body = fixture("github/ping.json");
    assert_eq!(receive(&github("ping", &body, SECRET), &body), Ok(None));
}

#[test]
fn gitlab_push() {
    let body = fixture("gitlab/push.json");
    let t = trigger(&gitlab("Push Hook", SECRET), &body);
    assert_eq!(t.forge, Forge::GitLab);
    assert_eq!(t.delivery_id, "f5e5f430-f57b-4e6e-9fac-d9128cd7232f", "the Idempotency-Key, kept across retries");
    assert_eq!(t.kind, TriggerKind::Push { branch: "master".into() });
    assert_eq!(t.sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(t.before_sha.as_deref(), Some("95790bf891e76fee5e1747ab589903a6a1f80f22"));
    assert_eq!(t.commit_message, "fixed readme");
    assert_eq!(t.author_name, "GitLab dev user");
    assert_eq!(t.commit_timestamp.as_deref(), Some("2012-01-03T23:36:29+02:00"));
    assert_eq!(t.user_login.as_deref(), Some("jsmith"));
    assert_eq!(t.user_name.as_deref(), Some("John Smith"));
    assert_eq!(t.user_email.as_deref(), Some("john@example.com"));
    assert_eq!(t.user_id, Some(4));
    assert!(t.ref_protected);
    // Two commits listed out of `total_commits_count: 4`: the list is incomplete.
    assert_eq!(t.changed_files, None);
}

#[test]
fn gitlab_push_with_every_commit_listed_gives_its_files() {
    let mut v = fixture_json("gitlab/push.json");
    v["total_commits_count"] = 2.into();
    let body = to_bytes(&v);
    let t = trigger(&gitlab("Push Hook", SECRET), &body);
    assert_eq!(t.changed_files, Some(strings(&["CHANGELOG", "app/controller/application.rb"])));
}

#[test]
fn gitlab_tag_push() {
    let body = fixture("gitlab/tag_push.json");
    let t = trigger(&gitlab("Tag Push Hook", SECRET), &body);
    assert_eq!(t.kind, TriggerKind::Tag { tag: "v1.0.0".into(), message: None });
    assert_eq!(t.git_ref, "refs/tags/v1.0.0");
    assert_eq!(t.sha, "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7");
    assert_eq!(t.before_sha, None);
    assert_eq!(t.changed_files, None);
    assert_eq!(t.user_login, None, "this example has no `user_username`");
    assert_eq!(t.user_name.as_deref(), Some("John Smith"));
}

#[test]
fn gitlab_annotated_tag_builds_the_commit_not_the_tag_object() {
    let mut v = fixture_json("gitlab/tag_push.json");
    v["after"] = "1111111111111111111111111111111111111111".into();
    v["message"] = "Release 1.0.0\n\nNotes".into();
    let body = to_bytes(&v);
    let t = trigger(&gitlab("Tag Push Hook", SECRET), &body);
    assert_eq!(t.sha, "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", "checkout_sha");
    assert_eq!(t.kind, TriggerKind::Tag { tag: "v1.0.0".into(), message: Some("Release 1.0.0\n\nNotes".into()) });
}

#[test]
fn gitlab_branch_deletion_is_ignored() {
    let mut v = fixture_json("gitlab/push.json");
    v["after"] = "0000000000000000000000000000000000000000".into();
    v["checkout_sha"] = serde_json::Value::Null;
    v["commits"] = serde_json::json!([]);
    let body = to_bytes(&v);
    assert_eq!(receive(&gitlab("Push Hook", SECRET), &body), Ok(None));
}

#[test]
fn gitlab_merge_request_opened() {
    let body = fixture("gitlab/merge_request.json");
    let t = trigger(&gitlab("Merge Request Hook", SECRET), &body);
    assert_eq!(
        t.kind,
        TriggerKind::MergeRequest(MergeRequestTrigger {
            iid: 1,
            id: Some(99),
            source_branch: "ms-viewport".into(),
            target_branch: "master".into(),
            title: "MS-Viewport".into(),
            description: String::new(),
            labels: strings(&["API"]),
            action: "open".into(),
            source_sha: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
            target_sha: None,
            source_project_path: None,
        })
    );
    assert_eq!(t.git_ref, "refs/merge-requests/1/head");
    assert_eq!(t.sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(t.commit_message, "fixed readme");
    assert_eq!(t.author_email, "gitlabdev@dv6700.(none)");
    assert_eq!(t.user_login.as_deref(), Some("root"));
    assert_eq!(t.source(), "merge_request_event");
}

#[test]
fn gitlab_merge_request_actions() {
    let cases: [(&str, Option<&str>, bool); 7] = [
        ("reopen", None, true),
        ("update", Some("95790bf891e76fee5e1747ab589903a6a1f80f22"), true),
        ("update", None, false),
        ("close", None, false),
        ("merge", None, false),
        ("approved", None, false),
        ("unapproval", None, false),
    ];
    for (action, oldrev, runs) in cases {
        let mut v = fixture_json("gitlab/merge_request.json");
        v["object_attributes"]["action"] = action.into();
        if let Some(rev) = oldrev {
            v["object_attributes"]["oldrev"] = rev.into();
        }
        let body = to_bytes(&v);
        assert_eq!(receive(&gitlab("Merge Request Hook", SECRET), &body).unwrap().is_some(), runs, "{action} {oldrev:?}");
    }
}

#[test]
fn gitlab_merge_request_from_a_fork_names_it() {
    let mut v = fixture_json("gitlab/merge_request.json");
    v["object_attributes"]["source_project_id"] = 77.into();
    let body = to_bytes(&v);
    let t = trigger(&gitlab("Merge Request Hook", SECRET), &body);
    let TriggerKind::MergeRequest(mr) = t.kind else { panic!() };
    assert_eq!(mr.source_project_path.as_deref(), Some("awesome_space/awesome_project"));
}

#[test]
fn gitlab_system_hooks_are_read_by_object_kind() {
    let body = fixture("gitlab/push.json");
    let t = trigger(&gitlab("System Hook", SECRET), &body);
    assert_eq!(t.kind, TriggerKind::Push { branch: "master".into() });
    let other = br#"{"object_kind":"repository_update","event_name":"repository_update"}"#;
    assert_eq!(receive(&gitlab("System Hook", SECRET), other), Ok(None));
}

#[test]
fn gitea_push() {
    let body = fixture("gitea/push.json");
    let t = trigger(&gitea("push", &body, SECRET), &body);
    assert_eq!(t.forge, Forge::Gitea);
    assert_eq!(t.delivery_id, DELIVERY);
    assert_eq!(t.kind, TriggerKind::Push { branch: "develop".into() });
    assert_eq!(t.sha, "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(t.before_sha.as_deref(), Some("28e1879d029cb852e4844d9c718537df08844e03"));
    assert_eq!(t.commit_message, "Webhooks Yay!");
    assert_eq!((t.author_name.as_str(), t.author_email.as_str()), ("Gitea", "someone@gitea.io"));
    assert_eq!(t.user_login.as_deref(), Some("gitea"));
    assert_eq!(t.user_name.as_deref(), Some("Gitea"));
    // Gitea's example lists no files and no `total_commits`: changes are unknown.
    assert_eq!(t.changed_files, None);
}

#[test]
fn gitea_push_with_complete_file_lists() {
    let mut v = fixture_json("gitea/push.json");
    v["total_commits"] = 1.into();
    v["commits"][0]["added"] = serde_json::json!(["docs/hooks.md"]);
    v["commits"][0]["removed"] = serde_json::Value::Null;
    v["commits"][0]["modified"] = serde_json::json!([".gitlab-ci.yml"]);
    let body = to_bytes(&v);
    let t = trigger(&gitea("push", &body, SECRET), &body);
    assert_eq!(t.changed_files, None, "Gitea sends `null` for an empty list; a list it did not send is unknown");
    v["commits"][0]["removed"] = serde_json::json!([]);
    let body = to_bytes(&v);
    let t = trigger(&gitea("push", &body, SECRET), &body);
    assert_eq!(t.changed_files, Some(strings(&[".gitlab-ci.yml", "docs/hooks.md"])));
}

#[test]
fn forgejo_push_uses_forgejo_headers() {
    let body = fixture("gitea/push.json");
    let t = trigger(&forgejo("push", &body, SECRET), &body);
    assert_eq!(t.forge, Forge::Gitea);
    assert_eq!(t.delivery_id, "f6266f16-1bf3-46a5-9ea4-602e06ead473");
}

#[test]
fn gitea_pull_request_synchronized() {
    let body = fixture("gitea/pull_request-synchronized.json");
    let t = trigger(&gitea("pull_request", &body, SECRET), &body);
    let TriggerKind::MergeRequest(mr) = &t.kind else { panic!("{t:?}") };
    assert_eq!((mr.iid, mr.source_branch.as_str(), mr.target_branch.as_str()), (3, "feature/hooks", "main"));
    assert_eq!(mr.labels, strings(&["ci"]));
    assert_eq!(mr.action, "synchronized");
    assert_eq!(mr.target_sha.as_deref(), Some("28e1879d029cb852e4844d9c718537df08844e03"));
    assert_eq!(t.git_ref, "refs/pull/3/head");
    assert_eq!(t.sha, "bffeb74224043ba2feb48d137756c8a9331c449a");
    for (action, runs) in [("opened", true), ("reopened", true), ("closed", false), ("label_updated", false), ("edited", false)] {
        let mut v = fixture_json("gitea/pull_request-synchronized.json");
        v["action"] = action.into();
        let body = to_bytes(&v);
        assert_eq!(receive(&gitea("pull_request", &body, SECRET), &body).unwrap().is_some(), runs, "{action}");
    }
}

#[test]
fn other_events_are_acknowledged_as_unsupported() {
    let body = br#"{"action":"opened"}"#;
    let cases = [
        (github("issues", body, SECRET), Forge::GitHub, "issues"),
        (gitlab("Issue Hook", SECRET), Forge::GitLab, "Issue Hook"),
        (gitlab("Pipeline Hook", SECRET), Forge::GitLab, "Pipeline Hook"),
        (gitea("create", body, SECRET), Forge::Gitea, "create"),
        (gitea("pull_request_approved", body, SECRET), Forge::Gitea, "pull_request_approved"),
    ];
    for (headers, forge, event) in cases {
        let err = receive(&headers, body).unwrap_err();
        assert_eq!(err, WebhookError::Unsupported { forge, event: event.into() });
        assert_eq!(err.status(), 202);
        assert_eq!(err.code(), "webhook_event_ignored");
    }
}

#[test]
fn delivery_ids_without_a_header_hash_the_body() {
    let body = fixture("gitlab/push.json");
    let mut h = gitlab("Push Hook", SECRET);
    h.remove("idempotency-key");
    assert_eq!(trigger(&h, &body).delivery_id, "13792a34-cac6-4fda-95a8-c58e00a3954e", "X-Gitlab-Event-UUID next");
    h.remove("x-gitlab-event-uuid");
    let first = trigger(&h, &body).delivery_id;
    assert!(first.starts_with("sha256:") && first.len() == 7 + 64, "{first}");
    assert_eq!(trigger(&h, &body).delivery_id, first, "a replay is recognised");
    let mut v = fixture_json("gitlab/push.json");
    v["user_name"] = "Someone Else".into();
    assert_ne!(trigger(&h, &to_bytes(&v)).delivery_id, first);
}
