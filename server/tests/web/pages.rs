//! Pages with fixed data, snapshotted; hostile names must come out escaped.

use insta::assert_snapshot;
use scheduler::{JobStatus, PipelineStatus};
use server::reports::{PipelineFailure, PipelineTests, Totals};
use server::web::pages::{
    ArtifactFile, ArtifactsListing, ArtifactsSummary, AttemptLine, Bar, ForgeLine, JobBox, JobDetail, LogTail, PipelineDetail,
    PipelineSummary, PushedImage, Timeline, job_page, pipeline_page, pipelines_page,
};
use server::web::pages::{BranchSummary, ProjectDetail};
use server::web::render;

/// The page without the shared stylesheet and script, which would repeat in every snapshot.
fn body(page: String) -> String {
    let cut = |page: &str, open: &str, close: &str| match (page.find(open), page.find(close)) {
        (Some(a), Some(b)) => format!("{}{}…{}", &page[..a], open, &page[b..]),
        _ => page.to_owned(),
    };
    let page = cut(&page, "<style>", "</style>");
    cut(&page, "<script>", "</script>").replace("><", ">\n<")
}

#[test]
fn pipelines() {
    let pipelines = [
        PipelineSummary {
            id: 7,
            git_ref: "main".into(),
            commit: "0123456789abcdef".into(),
            status: PipelineStatus::Success,
            duration_s: Some(75),
            trigger: "push".into(),
            created: "2024-05-01 10:00".into(),
        },
        PipelineSummary {
            id: 8,
            git_ref: "<script>alert(1)</script>".into(),
            commit: "abc".into(),
            status: PipelineStatus::Running,
            duration_s: None,
            trigger: "web".into(),
            created: "2024-05-01 11:00".into(),
        },
    ];
    let branches = vec![BranchSummary {
        git_ref: "refs/heads/main".into(),
        latest: PipelineSummary { ..pipelines[0].clone() },
        history: vec![
            (5, PipelineStatus::Failed, Some(30)),
            (6, PipelineStatus::Success, Some(60)),
            (7, PipelineStatus::Success, Some(75)),
        ],
    }];
    let detail = |pipelines: Vec<PipelineSummary>, branches| ProjectDetail {
        name: "acme/app".into(),
        badge_url: "https://ci.example/projects/acme/app/badge.svg?ref=main".into(),
        branches,
        pipelines,
    };
    let page = pipelines_page(&detail(pipelines.to_vec(), branches));
    assert!(!page.contains("<script>alert"));
    assert_snapshot!(body(page));
    assert!(pipelines_page(&detail(Vec::new(), Vec::new())).contains("No pipelines yet."));
}

#[test]
fn pipeline() {
    let job = |id, name: &str, stage: &str, status: JobStatus, needs: &[&str]| JobBox {
        id,
        name: name.into(),
        stage: stage.into(),
        status,
        needs: needs.iter().map(|n| n.to_string()).collect(),
        duration_s: Some(id * 10),
        coverage: (id == 1).then_some(87.456),
        reused_from: None,
    };
    let pipeline = PipelineDetail {
        id: 7,
        project: "acme/app".into(),
        git_ref: "main".into(),
        commit: "0123456789abcdef".into(),
        status: PipelineStatus::Running,
        duration_s: Some(42),
        stages: vec!["build".into(), "test".into()],
        jobs: vec![
            job(1, "compile", "build", JobStatus::Success, &[]),
            job(2, "unit", "test", JobStatus::Running, &["compile"]),
            job(3, "lint <b>", "test", JobStatus::Failed, &[]),
            job(4, "deploy", "test", JobStatus::Manual, &[]),
        ],
        permission: server::web::pages::Permission { allowed: true, csrf: "c5rf\"<".into() },
        approval: None,
        upstream: None,
        downstream: Vec::new(),
        forge: Some(ForgeLine {
            state: "running".into(),
            error: Some("the forge answered 500 <html>".into()),
            at: "2026-12-05 12:00:00 UTC".into(),
        }),
        tests: Some(PipelineTests {
            totals: Totals { total: 12, failed: 1, skipped: 2, errors: 0 },
            failures: vec![PipelineFailure {
                job_id: 3,
                job: "lint <b>".into(),
                name: "rejects <script>".into(),
                classname: "lint.Rules".into(),
                message: "expected an error".into(),
                output: "at rules.rs:3".into(),
                new: true,
            }],
        }),
        coverage: Some(87.456),
        timeline: Some(Timeline {
            now: 70_000,
            bars: vec![
                Bar {
                    job_id: 1,
                    name: "compile".into(),
                    status: JobStatus::Success,
                    queued: Some(0),
                    started: Some(5_000),
                    finished: Some(15_000),
                    critical: true,
                },
                Bar {
                    job_id: 2,
                    name: "unit".into(),
                    status: JobStatus::Running,
                    queued: Some(15_000),
                    started: Some(16_000),
                    finished: None,
                    critical: false,
                },
                Bar {
                    job_id: 3,
                    name: "lint <b>".into(),
                    status: JobStatus::Failed,
                    queued: Some(0),
                    started: Some(1_000),
                    finished: Some(31_000),
                    critical: false,
                },
            ],
        }),
    };
    assert_snapshot!(body(pipeline_page(&pipeline)));
    // A caller who may not act sees no button at all.
    let mut read_only = pipeline;
    read_only.permission = server::web::pages::Permission::default();
    let page = pipeline_page(&read_only);
    assert!(!page.contains("<form") && !page.contains("<button"), "{page}");
}

/// A fork's pipeline waiting for its approval: the notice for everyone, the button (with the
/// CSRF token) for a maintainer only, no job button for anyone; once approved, who did it.
#[test]
fn a_forks_pipeline_shows_its_approval() {
    use server::web::pages::{ApprovalLine, Permission};
    let job = || JobBox {
        id: 1,
        name: "show".into(),
        stage: "test".into(),
        status: JobStatus::Created,
        needs: vec![],
        duration_s: None,
        coverage: None,
        reused_from: None,
    };
    let waiting = |may_approve: bool| PipelineDetail {
        id: 7,
        project: "acme/app".into(),
        git_ref: "refs/merge-requests/3/head".into(),
        commit: "0123456789abcdef".into(),
        status: PipelineStatus::Manual,
        duration_s: None,
        stages: vec!["test".into()],
        jobs: vec![job()],
        permission: Permission { allowed: true, csrf: "tok\"en".into() },
        forge: None,
        tests: None,
        coverage: None,
        timeline: None,
        approval: Some(ApprovalLine { approved: None, source: "evil/<app>".into(), may_approve, csrf: "tok\"en".into() }),
        upstream: None,
        downstream: Vec::new(),
    };
    let page = pipeline_page(&waiting(true));
    assert!(page.contains("comes from a fork (<code>evil/&lt;app&gt;</code>)"), "{page}");
    assert!(page.contains("<form id=\"approve\" method=\"post\" action=\"/api/v1/pipelines/7/approve\">"), "{page}");
    assert!(page.contains("value=\"tok&quot;en\""), "{page}");
    assert!(!page.contains("/api/v1/jobs/1/"), "no job action while it waits: {page}");
    let page = pipeline_page(&waiting(false));
    assert!(page.contains("wait for a maintainer") && !page.contains("/approve"), "{page}");
    let mut approved = waiting(false);
    approved.status = PipelineStatus::Running;
    approved.approval = Some(ApprovalLine {
        approved: Some(("m<a>int".into(), "2026-12-05 12:00:00 UTC".into())),
        source: String::new(),
        may_approve: false,
        csrf: String::new(),
    });
    let page = pipeline_page(&approved);
    assert!(page.contains("approved by <strong>m&lt;a&gt;int</strong> (2026-12-05 12:00:00 UTC)"), "{page}");
    assert!(page.contains("/api/v1/jobs/1/cancel"), "its jobs act as any pipeline's: {page}");
}

fn job(running: bool) -> JobDetail {
    JobDetail {
        id: 42,
        pipeline_id: 7,
        project: "acme/app".into(),
        name: "unit".into(),
        stage: "test".into(),
        status: if running { JobStatus::Running } else { JobStatus::Failed },
        runner: Some("runner-1".into()),
        image: Some("rust:1.85".into()),
        duration_s: Some(61),
        attempt: 2,
        exit_code: (!running).then_some(101),
        coverage: (!running).then_some(80.25),
        artifacts: (!running).then(|| ArtifactsSummary {
            archive_bytes: 2048,
            listing: Some(ArtifactsListing {
                files: 2,
                bytes: 1536,
                shown: vec![
                    ArtifactFile { path: "out/report <1>.txt".into(), size: 1536, link: None },
                    ArtifactFile { path: "out/latest".into(), size: 0, link: Some("report <1>.txt".into()) },
                ],
                truncated: false,
            }),
        }),
        deploys: if running { Vec::new() } else { vec![("deploy".into(), "c0ffee".repeat(6) + "c0ff", true)] },
        images: Vec::new(),
        running,
        attempts: Vec::new(),
        reused_from: None,
        run_anyway: None,
    }
}

/// A reused job: marked `↺` with where its result comes from, and, for a caller who may act,
/// a "run anyway" form (with the CSRF token) on the job page.
#[test]
fn a_reused_job_says_where_its_result_comes_from() {
    let from = scheduler::protocol::ReusedFrom { pipeline: 3, job_id: 17, job: "unit <a>".into() };
    let mut j = job(false);
    j.status = JobStatus::Success;
    j.reused_from = Some(from.clone());
    let page = job_page(&j, &LogTail { html: String::new(), start: 0, end: 0, total: 0 });
    assert!(page.contains("Reused ↺") && page.contains("href=\"/jobs/17\"") && page.contains("href=\"/pipelines/3\""), "{page}");
    assert!(page.contains("unit &lt;a&gt;") && !page.contains("unit <a>"), "escaped");
    assert!(!page.contains("retry?reuse=false"), "no button without the right to act");
    j.run_anyway = Some("tok\"en".into());
    let page = job_page(&j, &LogTail { html: String::new(), start: 0, end: 0, total: 0 });
    assert!(page.contains("action=\"/api/v1/jobs/42/retry?reuse=false\"") && page.contains("value=\"tok&quot;en\""), "{page}");
}

/// GitLab shows a job's `coverage:` value on the job page.
#[test]
fn the_job_page_shows_the_coverage() {
    let page = job_page(&job(false), &LogTail { html: String::new(), start: 0, end: 0, total: 0 });
    assert!(page.contains(r#"<dd id="coverage">80.25%</dd>"#), "{page}");
    let page = job_page(&job(true), &LogTail { html: String::new(), start: 0, end: 0, total: 0 });
    assert!(!page.contains("Coverage"), "no value, no line");
}

/// Each attempt keeps its own result; a reason is text from a runner, escaped.
#[test]
fn attempts_are_listed_with_their_own_reasons() {
    let mut j = job(false);
    j.attempts = vec![
        AttemptLine {
            attempt: 1,
            status: JobStatus::Failed,
            exit_code: None,
            failure_reason: Some("runner_system_failure: <lost>".into()),
        },
        AttemptLine { attempt: 2, status: JobStatus::Failed, exit_code: Some(101), failure_reason: Some("script_failure".into()) },
    ];
    let page = job_page(&j, &LogTail { html: String::new(), start: 0, end: 0, total: 0 });
    assert!(page.contains("/api/v1/jobs/42/log?attempt=1") && page.contains("/api/v1/jobs/42/log?attempt=2"), "{page}");
    assert!(page.contains("runner_system_failure: &lt;lost&gt;") && page.contains("exit code 101 · script_failure"), "{page}");
}

#[test]
fn running_job_follows_its_log() {
    let tail = LogTail { html: render(b"\x1b[32mok\x1b[0m <tag>\n", 10).html, start: 1000, end: 1020, total: 1020 };
    let page = job_page(&job(true), &tail);
    assert!(page.contains("new EventSource"));
    assert_snapshot!(body(page));
}

#[test]
fn finished_job_does_not_follow() {
    let tail = LogTail { html: render(b"done\n", 1).html, start: 0, end: 5, total: 5 };
    let page = job_page(&job(false), &tail);
    assert!(!page.contains("new EventSource") && !page.contains("id=\"follow\""));
    assert!(page.contains("href=\"/jobs/42/artifacts/out/report%20%3C1%3E.txt\""), "a file's link, encoded: {page}");
    assert!(page.contains("report &lt;1&gt;.txt") && !page.contains("report <1>"), "names escaped: {page}");
    assert!(page.contains("href=\"/api/v1/jobs/42/log?download=1\""), "raw download: {page}");
    assert!(page.contains("data-total=\"5\" hidden>"), "the whole log is on the page: no server search");
    assert_snapshot!(body(page));
}

/// The images a job pushed: the pinned reference, whether it is signed, every tag, escaped
/// (the values come from the job's own dotenv report).
#[test]
fn pushed_images_are_listed_with_their_tags() {
    let mut j = job(false);
    let digest = format!("sha256:{}", "ab".repeat(32));
    j.images = vec![
        PushedImage {
            step: "image".into(),
            reference: format!("registry.local/app/web@{digest}"),
            tags: vec!["registry.local/app/web:1.4".into(), "registry.local/app/web:<b>main".into()],
            signed: Some(true),
        },
        PushedImage { step: "promote".into(), reference: format!("registry.local/release/web@{digest}"), tags: vec![], signed: None },
    ];
    let page = job_page(&j, &LogTail { html: String::new(), start: 0, end: 0, total: 0 });
    assert!(page.contains(&format!("<code>registry.local/app/web@{digest}</code> (step <code>image</code>, signed)")), "{page}");
    assert!(page.contains("<li><code>registry.local/app/web:1.4</code></li>") && page.contains("web:&lt;b&gt;main"), "{page}");
    assert!(page.contains(&format!("<code>registry.local/release/web@{digest}</code> (step <code>promote</code>)")), "{page}");
    assert!(!page.contains("<b>main"), "{page}");
}

#[test]
fn home_lists_projects_escaped() {
    let page = server::web::pages::home_page(["acme/app", "x\"><script>"].into_iter(), &Default::default());
    assert!(page.contains("<a href=\"/projects/acme/app\">acme/app</a>"), "{page}");
    assert!(page.contains("x&quot;&gt;&lt;script&gt;"), "{page}");
    assert!(!page.contains("x\"><script>"), "{page}");
}

#[test]
fn home_shows_the_account() {
    use server::web::pages::{Account, home_page};
    let anonymous = home_page(std::iter::empty(), &Account { can_log_in: true, ..Default::default() });
    assert!(anonymous.contains("href=\"/login\""), "{anonymous}");
    let user = home_page(std::iter::empty(), &Account { user: Some("alice<".into()), csrf: "tok".into(), can_log_in: true });
    assert!(user.contains("alice&lt;") && user.contains("action=\"/logout\"") && user.contains("value=\"tok\""), "{user}");
    assert!(!user.contains("href=\"/login\""), "{user}");
}

/// The Content-Security-Policy allows the pages' inline scripts by hash: each script the pages
/// insert must be one of `INLINE_SCRIPTS`, byte for byte.
#[test]
fn every_inline_script_is_allowed_by_the_policy() {
    let running = PipelineDetail {
        id: 1,
        project: "p".into(),
        git_ref: "main".into(),
        commit: "0".into(),
        status: PipelineStatus::Running,
        duration_s: None,
        stages: vec![],
        jobs: vec![],
        permission: Default::default(),
        approval: None,
        upstream: None,
        downstream: Vec::new(),
        forge: None,
        tests: None,
        coverage: None,
        timeline: None,
    };
    let tail = LogTail { html: String::new(), start: 0, end: 0, total: 0 };
    for page in [pipeline_page(&running), job_page(&job(true), &tail)] {
        for script in page.split("<script>").skip(1) {
            let code = script.split("</script>").next().unwrap();
            assert!(server::web::pages::INLINE_SCRIPTS.contains(&code), "not in INLINE_SCRIPTS: {code}");
        }
    }
}

/// Actions show only where they apply: no Cancel on a finished job or pipeline, no Retry on a
/// skipped or running one, Play on a manual job only.
#[test]
fn actions_apply_only_where_they_can() {
    use server::web::pages::{job_actions, pipeline_actions};
    let job = |s| {
        let a = job_actions(s);
        (a.retry, a.cancel, a.play)
    };
    assert_eq!(job(JobStatus::Success), (true, false, false));
    assert_eq!(job(JobStatus::Failed), (true, false, false));
    assert_eq!(job(JobStatus::Canceled), (true, false, false));
    assert_eq!(job(JobStatus::Skipped), (false, false, false));
    assert_eq!(job(JobStatus::Running), (false, true, false));
    assert_eq!(job(JobStatus::Pending), (false, true, false));
    assert_eq!(job(JobStatus::Canceling), (false, false, false));
    assert_eq!(job(JobStatus::Manual), (false, false, true));
    let pipeline = |s| {
        let a = pipeline_actions(s);
        (a.retry, a.cancel)
    };
    assert_eq!(pipeline(PipelineStatus::Success), (false, false));
    assert_eq!(pipeline(PipelineStatus::Failed), (true, false));
    assert_eq!(pipeline(PipelineStatus::Running), (false, true));
    assert_eq!(pipeline(PipelineStatus::Skipped), (false, false));
}
