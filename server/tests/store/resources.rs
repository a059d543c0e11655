//! Resource groups: one holder per project and group, granted atomically, released by its holder
//! only; the queue lists the group's jobs that have not run, by pipeline then job.

use std::sync::Arc;

use scheduler::JobStatus;
use scheduler::PipelineStatus;
use server::store::{NewJob, Store};

use crate::support::{Db, new_job, recorded};

store_tests!(one_holder_at_a_time, the_queue_lists_upcoming_jobs_in_pipeline_order, groups_in_use_list_the_held_ones);

async fn one_holder_at_a_time(s: Arc<Db>) {
    assert_eq!(s.resource_holder("demo", "prod").await.unwrap(), None);
    assert!(s.grant_resource("demo", "prod", 1, 1).await.unwrap());
    assert!(!s.grant_resource("demo", "prod", 2, 1).await.unwrap(), "held: refused");
    assert!(s.grant_resource("demo", "staging", 2, 1).await.unwrap(), "another group");
    assert!(s.grant_resource("other", "prod", 3, 1).await.unwrap(), "another project");
    assert_eq!(s.resource_holder("demo", "prod").await.unwrap(), Some((1, 1)));
    assert!(!s.release_resource("demo", "prod", 1, 2).await.unwrap(), "another attempt does not release");
    assert!(s.release_resource("demo", "prod", 1, 1).await.unwrap());
    assert_eq!(s.resource_holder("demo", "prod").await.unwrap(), None);
    assert!(s.grant_resource("demo", "prod", 2, 1).await.unwrap(), "free again");
}

async fn the_queue_lists_upcoming_jobs_in_pipeline_order(s: Arc<Db>) {
    let job = |name: &str, group: Option<&str>| NewJob { resource_group: group.map(str::to_owned), ..new_job(name, &[]) };
    let mut ids = Vec::new();
    for delivery in ["q-1", "q-2"] {
        let p = recorded(&s, delivery).await;
        let jobs = [job("deploy", Some("prod")), job("other", Some("staging")), job("plain", None)];
        ids.push((p, s.save_plan(p, &jobs, PipelineStatus::Pending, 1).await.unwrap()));
    }
    // Unstarted pipelines (no event yet) are not in the queue.
    assert!(s.resource_queue("demo", "prod").await.unwrap().is_empty());
    for (p, _) in &ids {
        crate::support::enqueue(&s, *p, &[], 1).await;
    }
    let queue = s.resource_queue("demo", "prod").await.unwrap();
    let got: Vec<(i64, i64, &str, JobStatus)> = queue.iter().map(|c| (c.pipeline_id, c.job_id, c.name.as_str(), c.status)).collect();
    assert_eq!(got, [(ids[0].0, ids[0].1[0], "deploy", JobStatus::Created), (ids[1].0, ids[1].1[0], "deploy", JobStatus::Created)]);
    assert!(s.resource_queue("other-project", "prod").await.unwrap().is_empty());
}

/// What the server looks at when it starts (`resume_resource_groups`): every held group, once.
async fn groups_in_use_list_the_held_ones(s: Arc<Db>) {
    assert!(s.resource_groups_in_use().await.unwrap().is_empty());
    assert!(s.grant_resource("demo", "prod", 1, 1).await.unwrap());
    assert!(s.grant_resource("other", "prod", 3, 1).await.unwrap());
    assert!(s.grant_resource("demo", "staging", 2, 1).await.unwrap());
    let held = |v: Vec<(String, String)>| v.into_iter().map(|(p, g)| format!("{p}/{g}")).collect::<Vec<_>>();
    assert_eq!(held(s.resource_groups_in_use().await.unwrap()), ["demo/prod", "demo/staging", "other/prod"]);
    assert!(s.release_resource("demo", "staging", 2, 1).await.unwrap());
    assert_eq!(held(s.resource_groups_in_use().await.unwrap()), ["demo/prod", "other/prod"]);
}
