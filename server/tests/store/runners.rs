//! Runner registration and lookup by token hash.

use std::sync::Arc;

use server::store::{Store, StoreError};

use crate::support::{Db, tags};

store_tests!(register_and_look_up, last_seen_is_throttled, token_hashes_are_unique);

async fn register_and_look_up(s: Arc<Db>) {
    let a = s.register_runner("builder-1", &tags(&["docker", "linux"]), &Default::default(), "hash-a", 1_000).await.unwrap();
    let b = s.register_runner("builder-2", &[], &Default::default(), "hash-b", 1_100).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!((a.name.as_str(), a.tags.clone(), a.created_at, a.last_seen_at), ("builder-1", tags(&["docker", "linux"]), 1_000, 1_000));

    let found = s.runner_by_token("hash-a", 1_000).await.unwrap().expect("runner a");
    assert_eq!(found, a);
    let found = s.runner_by_token("hash-b", 1_100).await.unwrap().expect("runner b");
    assert_eq!(found, b);
    assert_eq!(s.runner_by_token("hash-c", 1_100).await.unwrap(), None);
    assert_eq!(s.runner_by_token("", 1_100).await.unwrap(), None);
    assert_eq!(s.counts().await.unwrap().runners, 2);
    assert_eq!(s.runners(10).await.unwrap(), [a.clone(), b], "all of them, oldest first");
    assert_eq!(s.runners(1).await.unwrap(), [a]);
}

async fn last_seen_is_throttled(s: Arc<Db>) {
    let r = s.register_runner("r", &[], &Default::default(), "hash", 10_000).await.unwrap();
    // Within a second of the last write: not written again.
    assert_eq!(s.runner_by_token("hash", 10_500).await.unwrap().unwrap().last_seen_at, 10_000);
    // Later: written, and returned as such.
    assert_eq!(s.runner_by_token("hash", 12_000).await.unwrap().unwrap().last_seen_at, 12_000);
    assert_eq!(s.runner_by_token("hash", 12_001).await.unwrap().unwrap().last_seen_at, 12_000);
    // A late request never moves it back.
    assert_eq!(s.runner_by_token("hash", 5_000).await.unwrap().unwrap().last_seen_at, 12_000);
    assert_eq!(s.runner_by_token("hash", 13_000).await.unwrap().unwrap().created_at, r.created_at);
}

async fn token_hashes_are_unique(s: Arc<Db>) {
    s.register_runner("one", &[], &Default::default(), "same", 1).await.unwrap();
    let second = s.register_runner("two", &[], &Default::default(), "same", 2).await;
    assert!(matches!(second, Err(StoreError::Database(_))), "{second:?}");
    assert_eq!(s.runner_by_token("same", 3).await.unwrap().unwrap().name, "one");
}
