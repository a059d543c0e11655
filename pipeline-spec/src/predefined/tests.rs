use super::*;
use crate::expand::{Lookup, Var, expand_all};
use crate::expr::Expr;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn push_to_main() -> Context {
    Context {
        server_url: "https://gitlab.example.com/".to_string(),
        project_path: "Group/Sub/My.App".to_string(),
        project_id: 42,
        commit_sha: SHA.to_string(),
        before_sha: Some("f".repeat(40)),
        branch: Some("main".to_string()),
        ref_protected: true,
        commit_message: "Fix the thing\n\nLonger explanation.\n".to_string(),
        commit_author_name: "Ada".to_string(),
        commit_author_email: "ada@example.com".to_string(),
        commit_timestamp: "2024-05-01T10:00:00+00:00".to_string(),
        pipeline_id: 1000,
        pipeline_iid: 7,
        pipeline_created_at: "2024-05-01T10:01:00Z".to_string(),
        registry: Some("registry.example.com:5000".to_string()),
        user: Some(User { id: 3, login: "ada".into(), name: "Ada L".into(), email: "ada@example.com".into() }),
        ..Context::default()
    }
}

fn merge_request() -> Context {
    Context {
        source: PipelineSource::MergeRequestEvent,
        branch: Some("feature/Login".to_string()),
        merge_request: Some(MergeRequest {
            iid: 12,
            title: "Add login".to_string(),
            description: "Closes #3".to_string(),
            labels: vec!["backend".to_string(), "needs review".to_string()],
            source_branch: "feature/Login".to_string(),
            target_branch: "main".to_string(),
            diff_base_sha: Some("b".repeat(40)),
            ..MergeRequest::default()
        }),
        ..push_to_main()
    }
}

/// Asserts each `(name, value)`; `None` means the variable must not be set. Also checks that no
/// name appears twice.
fn check(vars: &[(String, String)], expected: &[(&str, Option<&str>)]) {
    let mut names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a variable is set twice");
    for &(name, want) in expected {
        assert_eq!(vars.lookup(name), want, "{name}");
    }
}

#[test]
fn branch_pipeline() {
    let vars = push_to_main().pipeline_variables();
    check(
        &vars,
        &[
            ("CI", Some("true")),
            ("GITLAB_CI", Some("true")),
            ("CI_SERVER_URL", Some("https://gitlab.example.com")),
            ("CI_SERVER_HOST", Some("gitlab.example.com")),
            ("CI_SERVER_PORT", Some("443")),
            ("CI_SERVER_PROTOCOL", Some("https")),
            ("CI_SERVER_FQDN", Some("gitlab.example.com")),
            ("CI_API_V4_URL", Some("https://gitlab.example.com/api/v4")),
            ("CI_PROJECT_PATH", Some("Group/Sub/My.App")),
            ("CI_PROJECT_NAME", Some("My.App")),
            ("CI_PROJECT_TITLE", Some("My.App")),
            ("CI_PROJECT_NAMESPACE", Some("Group/Sub")),
            ("CI_PROJECT_ROOT_NAMESPACE", Some("Group")),
            ("CI_PROJECT_PATH_SLUG", Some("group-sub-my-app")),
            ("CI_PROJECT_URL", Some("https://gitlab.example.com/Group/Sub/My.App")),
            ("CI_PROJECT_ID", Some("42")),
            ("CI_DEFAULT_BRANCH", Some("main")),
            ("CI_CONFIG_PATH", Some(".gitlab-ci.yml")),
            ("CI_REGISTRY", Some("registry.example.com:5000")),
            ("CI_REGISTRY_IMAGE", Some("registry.example.com:5000/group/sub/my.app")),
            ("CI_PIPELINE_SOURCE", Some("push")),
            ("CI_PIPELINE_IID", Some("7")),
            ("CI_PIPELINE_CREATED_AT", Some("2024-05-01T10:01:00Z")),
            ("CI_COMMIT_SHA", Some(SHA)),
            ("CI_COMMIT_SHORT_SHA", Some("01234567")),
            ("CI_COMMIT_BEFORE_SHA", Some("ffffffffffffffffffffffffffffffffffffffff")),
            ("CI_COMMIT_REF_NAME", Some("main")),
            ("CI_COMMIT_REF_SLUG", Some("main")),
            ("CI_COMMIT_BRANCH", Some("main")),
            ("CI_COMMIT_TAG", None),
            ("CI_COMMIT_MESSAGE", Some("Fix the thing\n\nLonger explanation.\n")),
            ("CI_COMMIT_TITLE", Some("Fix the thing")),
            ("CI_COMMIT_DESCRIPTION", Some("\nLonger explanation.")),
            ("CI_COMMIT_MESSAGE_IS_TRUNCATED", Some("false")),
            ("CI_COMMIT_REF_PROTECTED", Some("true")),
            ("CI_COMMIT_AUTHOR", Some("Ada <ada@example.com>")),
            ("CI_COMMIT_TIMESTAMP", Some("2024-05-01T10:00:00+00:00")),
            ("GITLAB_USER_LOGIN", Some("ada")),
            ("GITLAB_USER_ID", Some("3")),
            ("CI_MERGE_REQUEST_IID", None),
            ("CI_OPEN_MERGE_REQUESTS", None),
            ("CI_PIPELINE_ID", None),
            ("CI_JOB_NAME", None),
            ("CI_PROJECT_DIR", None),
        ],
    );
}

#[test]
fn tag_pipeline() {
    let ctx = Context { tag: Some("v1.2.0".into()), tag_message: "Release 1.2".into(), before_sha: None, ..push_to_main() };
    check(
        &ctx.pipeline_variables(),
        &[
            ("CI_COMMIT_TAG", Some("v1.2.0")),
            ("CI_COMMIT_TAG_MESSAGE", Some("Release 1.2")),
            ("CI_COMMIT_REF_NAME", Some("v1.2.0")),
            ("CI_COMMIT_REF_SLUG", Some("v1-2-0")),
            ("CI_COMMIT_BRANCH", None),
            ("CI_COMMIT_BEFORE_SHA", Some(BLANK_SHA)),
        ],
    );
}

#[test]
fn merge_request_pipeline() {
    check(
        &merge_request().pipeline_variables(),
        &[
            ("CI_PIPELINE_SOURCE", Some("merge_request_event")),
            ("CI_COMMIT_BRANCH", None),
            ("CI_COMMIT_REF_NAME", Some("feature/Login")),
            ("CI_COMMIT_REF_SLUG", Some("feature-login")),
            ("CI_COMMIT_BEFORE_SHA", Some(BLANK_SHA)),
            ("CI_COMMIT_REF_PROTECTED", Some("false")),
            ("CI_MERGE_REQUEST_IID", Some("12")),
            ("CI_MERGE_REQUEST_ID", Some("12")),
            ("CI_MERGE_REQUEST_REF_PATH", Some("refs/merge-requests/12/head")),
            ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", Some("feature/Login")),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", Some("main")),
            ("CI_MERGE_REQUEST_TITLE", Some("Add login")),
            ("CI_MERGE_REQUEST_DESCRIPTION", Some("Closes #3")),
            ("CI_MERGE_REQUEST_DESCRIPTION_IS_TRUNCATED", Some("false")),
            ("CI_MERGE_REQUEST_LABELS", Some("backend,needs review")),
            ("CI_MERGE_REQUEST_MILESTONE", None),
            ("CI_MERGE_REQUEST_EVENT_TYPE", Some("detached")),
            ("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", Some("")),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_SHA", Some("")),
            ("CI_MERGE_REQUEST_DIFF_BASE_SHA", Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")),
            ("CI_MERGE_REQUEST_PROJECT_PATH", Some("Group/Sub/My.App")),
            ("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", Some("Group/Sub/My.App")),
            ("CI_MERGE_REQUEST_SOURCE_PROJECT_URL", Some("https://gitlab.example.com/Group/Sub/My.App")),
        ],
    );
}

#[test]
fn merge_request_description_is_cut_like_activesupport() {
    let mut ctx = merge_request();
    ctx.merge_request.as_mut().unwrap().description = "é".repeat(3000);
    let vars = ctx.pipeline_variables();
    let description = vars.lookup("CI_MERGE_REQUEST_DESCRIPTION").unwrap();
    assert_eq!(description.chars().count(), 2700);
    assert!(description.ends_with("é..."));
    assert_eq!(vars.lookup("CI_MERGE_REQUEST_DESCRIPTION_IS_TRUNCATED"), Some("true"));
}

#[test]
fn rules_and_job_phases() {
    let ctx = push_to_main();
    let job = JobContext {
        name: "rspec 2/4",
        stage: "test",
        job_id: 555,
        node_index: Some(2),
        node_total: 4,
        manual: true,
        image: Some("ruby:3.3"),
        environment: Some(EnvironmentContext {
            name: "review/x",
            url: Some("https://x.example"),
            slug: Some("review-x-abc123"),
            ..Default::default()
        }),
        timeout_secs: Some(3600),
        started_at: Some("2024-05-01T10:02:00Z"),
    };
    check(
        &ctx.rules_variables(&job),
        &[
            ("CI_JOB_NAME", Some("rspec 2/4")),
            ("CI_JOB_NAME_SLUG", Some("rspec-2-4")),
            ("CI_JOB_GROUP_NAME", Some("rspec")),
            ("CI_JOB_STAGE", Some("test")),
            ("CI_JOB_MANUAL", Some("true")),
            ("CI_NODE_INDEX", Some("2")),
            ("CI_NODE_TOTAL", Some("4")),
            ("CI_ENVIRONMENT_NAME", Some("review/x")),
            ("CI_ENVIRONMENT_ACTION", Some("start")),
            ("CI_ENVIRONMENT_URL", Some("https://x.example")),
            ("CI_ENVIRONMENT_TIER", None),
            ("CI_COMMIT_BRANCH", Some("main")),
            ("CI_JOB_ID", None),
            ("CI_PIPELINE_ID", None),
            ("CI_PROJECT_DIR", None),
            ("CI_ENVIRONMENT_SLUG", None),
        ],
    );
    check(
        &ctx.job_variables(&job),
        &[
            ("CI_JOB_NAME", Some("rspec 2/4")),
            ("CI_JOB_ID", Some("555")),
            ("CI_JOB_URL", Some("https://gitlab.example.com/Group/Sub/My.App/-/jobs/555")),
            ("CI_JOB_IMAGE", Some("ruby:3.3")),
            ("CI_JOB_TIMEOUT", Some("3600")),
            ("CI_JOB_STARTED_AT", Some("2024-05-01T10:02:00Z")),
            ("CI_PIPELINE_ID", Some("1000")),
            ("CI_PIPELINE_URL", Some("https://gitlab.example.com/Group/Sub/My.App/-/pipelines/1000")),
            ("CI_BUILDS_DIR", Some("/builds")),
            ("CI_PROJECT_DIR", Some("/builds/Group/Sub/My.App")),
            ("CI_SERVER", Some("yes")),
            ("CI_ENVIRONMENT_SLUG", Some("review-x-abc123")),
        ],
    );
    let plain = JobContext { name: "build", stage: "build", ..Default::default() };
    check(
        &ctx.rules_variables(&plain),
        &[("CI_NODE_TOTAL", Some("1")), ("CI_NODE_INDEX", None), ("CI_JOB_MANUAL", None), ("CI_ENVIRONMENT_NAME", None)],
    );
    let triggered = Context { source: PipelineSource::Trigger, ..ctx };
    check(&triggered.rules_variables(&plain), &[("CI_PIPELINE_TRIGGERED", Some("true"))]);
}

#[test]
fn optional_parts_stay_unset() {
    let ctx = Context::default();
    check(
        &ctx.pipeline_variables(),
        &[
            ("CI_SERVER_URL", Some("http://localhost")),
            ("CI_SERVER_PORT", Some("80")),
            ("CI_PROJECT_NAMESPACE", Some("local")),
            ("CI_REGISTRY", None),
            ("CI_REGISTRY_IMAGE", None),
            ("CI_COMMIT_SHA", None),
            ("CI_COMMIT_REF_NAME", None),
            ("CI_PIPELINE_CREATED_AT", None),
            ("CI_PIPELINE_NAME", None),
            ("GITLAB_USER_LOGIN", None),
        ],
    );
    let scheduled = Context {
        source: PipelineSource::Schedule,
        schedule_description: Some("nightly".into()),
        pipeline_name: Some("Nightly build".into()),
        open_merge_requests: vec!["g/p!1".into(), "g/p!2".into()],
        ..ctx
    };
    check(
        &scheduled.pipeline_variables(),
        &[
            ("CI_PIPELINE_SCHEDULE_DESCRIPTION", Some("nightly")),
            ("CI_PIPELINE_NAME", Some("Nightly build")),
            ("CI_OPEN_MERGE_REQUESTS", Some("g/p!1,g/p!2")),
        ],
    );
}

/// A piste server's context links to its own pages, under its `external_url`.
#[test]
fn piste_pages() {
    let ctx = Context { server_url: "https://ci.example:8443/".into(), pages: Pages::Piste, ..push_to_main() };
    let job = JobContext { name: "build", stage: "build", job_id: 555, ..Default::default() };
    check(
        &ctx.job_variables(&job),
        &[
            ("CI_SERVER_URL", Some("https://ci.example:8443")),
            ("CI_SERVER_FQDN", Some("ci.example:8443")),
            ("CI_PROJECT_URL", Some("https://ci.example:8443/projects/Group/Sub/My.App")),
            ("CI_PIPELINE_URL", Some("https://ci.example:8443/pipelines/1000")),
            ("CI_JOB_URL", Some("https://ci.example:8443/jobs/555")),
        ],
    );
}

#[test]
fn server_urls() {
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("https://gitlab.example.com", "https", "gitlab.example.com", "443", "gitlab.example.com"),
        ("http://localhost:8080/", "http", "localhost", "8080", "localhost:8080"),
        ("https://git.corp:443/gitlab", "https", "git.corp", "443", "git.corp"),
        ("http://[::1]:3000", "http", "[::1]", "3000", "[::1]:3000"),
        ("http://[::1]", "http", "[::1]", "80", "[::1]"),
    ];
    for &(url, protocol, host, port, fqdn) in cases {
        let ctx = Context { server_url: url.to_string(), ..Context::default() };
        check(
            &ctx.pipeline_variables(),
            &[
                ("CI_SERVER_PROTOCOL", Some(protocol)),
                ("CI_SERVER_HOST", Some(host)),
                ("CI_SERVER_PORT", Some(port)),
                ("CI_SERVER_FQDN", Some(fqdn)),
                ("CI_SERVER_URL", Some(url.trim_end_matches('/'))),
            ],
        );
    }
}

#[test]
fn commit_titles_and_descriptions() {
    let long_line = "x".repeat(120);
    let cases: &[(&str, &str, &str)] = &[
        ("one line", "one line", ""),
        ("title\nbody", "title", "body"),
        ("title\r\n\r\nbody\r\n", "title\r", "\r\nbody"),
        ("   ", "No commit message", ""),
        (&long_line, &long_line, &format!("…{}", "x".repeat(40))),
    ];
    for &(message, title, description) in cases {
        let ctx = Context { commit_message: message.to_string(), ..push_to_main() };
        let vars = ctx.pipeline_variables();
        assert_eq!(vars.lookup("CI_COMMIT_TITLE"), Some(title), "{message:?}");
        assert_eq!(vars.lookup("CI_COMMIT_DESCRIPTION"), Some(description), "{message:?}");
    }
    let huge = Context { commit_message: "é".repeat(60_000), ..push_to_main() };
    let vars = huge.pipeline_variables();
    assert_eq!(vars.lookup("CI_COMMIT_MESSAGE").unwrap().len(), 100_000);
    assert_eq!(vars.lookup("CI_COMMIT_MESSAGE_IS_TRUNCATED"), Some("true"));
}

#[test]
fn slugify_like_gitlab() {
    let long = "a".repeat(70);
    let cases: &[(&str, &str)] = &[
        ("main", "main"),
        ("feature/Login-UI", "feature-login-ui"),
        ("v1.2.0", "v1-2-0"),
        ("--lead--and--trail--", "lead--and--trail"),
        ("/leading/slash/", "leading-slash"),
        ("ÉTÉ été", "t---t"),
        ("日本語", ""),
        ("\u{212A}elvin", "kelvin"), // KELVIN SIGN lowercases to an ASCII `k`
        ("İstanbul", "i-stanbul"),   // lowercases to `i` + combining dot
        ("", ""),
        ("---", ""),
        (&long, &long[..63]),
        (&format!("{}-b", "a".repeat(62)), &"a".repeat(62)),
        (&format!("-{}", "b".repeat(70)), &"b".repeat(62)),
    ];
    for &(input, want) in cases {
        assert_eq!(slugify(input), want, "{input:?}");
    }
}

#[test]
fn job_group_names() {
    let cases: &[(&str, &str)] = &[
        ("build", "build"),
        ("rspec 1/3", "rspec"),
        ("rspec 10/10", "rspec"),
        ("test: [ruby, 3.2]", "test"),
        ("deploy: [eu, prod] 1/2", "deploy"),
        ("job 1:2", "job"),
        ("no-suffix 1", "no-suffix 1"),
        (" spaced  ", "spaced"),
    ];
    for &(name, want) in cases {
        assert_eq!(job_group_name(name), want, "{name:?}");
    }
}

#[test]
fn pipeline_sources_round_trip() {
    for source in PipelineSource::ALL {
        assert_eq!(source.as_str().parse::<PipelineSource>(), Ok(source));
        assert_eq!(source.to_string(), source.as_str());
    }
    let err = "merge_request".parse::<PipelineSource>().unwrap_err();
    assert!(err.to_string().contains("unknown pipeline source `merge_request`"), "{err}");
    assert!(err.to_string().contains("`merge_request_event`"), "{err}");
}

#[test]
fn rules_work_on_these_variables() {
    let cases: &[(&str, bool, bool)] = &[
        // (expression, on a push to main, in a merge request pipeline)
        ("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", true, false),
        ("$CI_PIPELINE_SOURCE == \"merge_request_event\"", false, true),
        ("$CI_MERGE_REQUEST_IID", false, true),
        ("$CI_COMMIT_TAG", false, false),
        ("$CI_MERGE_REQUEST_LABELS =~ /needs review/", false, true),
        ("$CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS", false, false),
        ("$CI_COMMIT_REF_NAME =~ /^feature\\//", false, true),
    ];
    let (push, mr) = (push_to_main().pipeline_variables(), merge_request().pipeline_variables());
    for &(src, on_push, on_mr) in cases {
        let expr = Expr::parse(src).unwrap();
        assert_eq!(expr.eval(&push), on_push, "{src} on push");
        assert_eq!(expr.eval(&mr), on_mr, "{src} on merge request");
    }
}

#[test]
fn feed_expand_all() {
    let mut vars: Vec<Var> = push_to_main().pipeline_variables().into_iter().map(|(k, v)| Var::new(k, v)).collect();
    vars.push(Var::new("IMAGE", "$CI_REGISTRY_IMAGE:$CI_COMMIT_REF_SLUG-$CI_COMMIT_SHORT_SHA"));
    assert_eq!(expand_all(&vars)["IMAGE"], "registry.example.com:5000/group/sub/my.app:main-01234567");
}

/// GitLab's `spec/lib/gitlab/slug/environment_spec.rb` table; its suffix is stubbed there
/// (`('a' * 64).to_i(16).to_s(36).last(6)` is `q517sa`), here it is each name's own.
#[test]
fn environment_slugs_follow_gitlab() {
    assert_eq!(super::base36_last6(&[0xaa; 32]), "q517sa");
    let cases: &[(&str, &str, bool)] = &[
        ("staging-12345678901234567", "staging-123456789", true),
        ("9-staging-123456789012345", "env-9-staging-123", true),
        ("staging-1234567890123456", "staging-1234567890123456", false),
        ("staging-1234567890123456-", "staging-123456789", true),
        ("production", "production", false),
        ("PRODUCTION", "production", true),
        ("review/1-foo", "review-1-foo", true),
        ("1-foo", "env-1-foo", true),
        ("1/foo", "env-1-foo", true),
        ("foo-", "foo", false),
        ("foo--bar", "foo-bar", true),
        ("foo**bar", "foo-bar", true),
        ("*-foo", "env-foo", true),
        ("staging-12345678-", "staging-12345678", false),
        ("staging-12345678-01234567", "staging-12345678", true),
        ("", "env", true),
    ];
    for &(name, base, suffixed) in cases {
        let expected = if suffixed { format!("{base}-{}", super::base36_suffix(name)) } else { base.to_string() };
        assert_eq!(environment_slug(name), expected, "{name:?}");
        assert!(environment_slug(name).len() <= 24);
    }
}

/// GitLab's `Environment#guess_tier` when `deployment_tier` is not set.
#[test]
fn environment_tiers_are_guessed_as_gitlab_does() {
    for (name, tier) in [
        ("review/feature-x", "development"),
        ("QA", "testing"),
        ("staging", "staging"),
        ("production", "production"),
        ("prd-eu", "production"),
        ("sandbox", "other"),
    ] {
        assert_eq!(guess_environment_tier(name), tier, "{name}");
    }
    let vars = environment_variables("review/x", Some("https://x.example"), None, None);
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("CI_ENVIRONMENT_ACTION"), Some("start"));
    assert_eq!(get("CI_ENVIRONMENT_TIER"), Some("development"));
    assert_eq!(get("CI_ENVIRONMENT_URL"), Some("https://x.example"));
    let vars = environment_variables("prod", None, Some("stop"), Some("staging"));
    assert!(!vars.iter().any(|(k, _)| k == "CI_ENVIRONMENT_URL"));
    assert!(
        vars.contains(&("CI_ENVIRONMENT_TIER".into(), "staging".into())) && vars.contains(&("CI_ENVIRONMENT_ACTION".into(), "stop".into()))
    );
}
