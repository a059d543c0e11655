//! The commit statuses last sent to forges: what was tried, what was accepted, and what is
//! left to post after a restart.

use std::sync::Arc;

use scheduler::PipelineStatus;
use server::store::{ForgePost, JobReport, Recorded, Store, Unposted};

use crate::support::{Db, new_job, new_pipeline};

async fn recorded(s: &Db, project: &str, n: i64) -> i64 {
    match s.record_pipeline(&format!("{project}-{n}"), &new_pipeline(project, n)).await.unwrap() {
        Recorded::Created(id) => id,
        Recorded::Duplicate(id) => panic!("recorded twice: {id}"),
    }
}

store_tests!(
    a_failed_try_keeps_the_last_accepted_state,
    unposted_pipelines_are_the_ones_the_forge_lacks,
    job_reports_keep_tests_and_coverage_apart
);

async fn a_failed_try_keeps_the_last_accepted_state(s: Arc<Db>) {
    let id = recorded(&s, "web", 1).await;
    assert_eq!(s.forge_post(id).await.unwrap(), None);
    s.record_forge_post(id, "pending", None, 10).await.unwrap();
    s.record_forge_post(id, "running", Some("the forge answered 500"), 20).await.unwrap();
    let post = s.forge_post(id).await.unwrap().unwrap();
    assert_eq!(
        post,
        ForgePost {
            pipeline_id: id,
            state: "running".into(),
            posted: Some("pending".into()),
            error: Some("the forge answered 500".into()),
            at: 20
        }
    );
    s.record_forge_post(id, "running", None, 30).await.unwrap();
    let post = s.forge_post(id).await.unwrap().unwrap();
    assert_eq!((post.posted.as_deref(), post.error), (Some("running"), None));
}

async fn unposted_pipelines_are_the_ones_the_forge_lacks(s: Arc<Db>) {
    let never = recorded(&s, "web", 1).await;
    let done = recorded(&s, "web", 2).await;
    let behind = recorded(&s, "web", 3).await;
    let Recorded::Created(other) = s.record_pipeline("other-1", &new_pipeline("api", 4)).await.unwrap() else { panic!() };
    s.record_forge_post(done, "created", None, 5).await.unwrap();
    s.record_forge_post(behind, "created", Some("unreachable"), 5).await.unwrap();
    s.record_forge_post(other, "pending", None, 5).await.unwrap();
    let rows = s.forge_unposted(&["web".to_string()], 10).await.unwrap();
    let created = PipelineStatus::Created;
    assert_eq!(
        rows,
        [Unposted { pipeline_id: behind, status: created, posted: None }, Unposted { pipeline_id: never, status: created, posted: None },],
        "newest first, only the project asked for"
    );
    assert_eq!(s.forge_unposted(&["web".to_string()], 1).await.unwrap().len(), 1);
    assert!(s.forge_unposted(&[], 10).await.unwrap().is_empty());
}

async fn job_reports_keep_tests_and_coverage_apart(s: Arc<Db>) {
    let id = recorded(&s, "web", 1).await;
    let jobs = s.save_plan(id, &[new_job("a", &[]), new_job("b", &[])], PipelineStatus::Pending, 2).await.unwrap();
    assert!(s.job_reports(id).await.unwrap().is_empty());
    s.set_test_report(jobs[1], id, Some("{\"total\":1}")).await.unwrap();
    s.set_coverage(jobs[1], id, Some(81.5)).await.unwrap();
    s.set_coverage(jobs[0], id, None).await.unwrap();
    let want = [
        JobReport { job_id: jobs[0], tests: None, coverage: None },
        JobReport { job_id: jobs[1], tests: Some("{\"total\":1}".into()), coverage: Some(81.5) },
    ];
    assert_eq!(s.job_reports(id).await.unwrap(), want);
    s.set_test_report(jobs[1], id, None).await.unwrap();
    assert_eq!(s.job_reports(id).await.unwrap()[1].coverage, Some(81.5), "clearing the tests keeps the coverage");
}
