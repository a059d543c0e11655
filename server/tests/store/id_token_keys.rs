//! The key that signs jobs' ID tokens is one per database: servers that start together each
//! offer a key they generated, and all of them get the same stored one (the first insert).

use std::sync::Arc;

use server::store::{Backend, Store, StoredKey};

use crate::support::Db;

store_tests!(servers_sharing_a_database_get_one_signing_key);

async fn servers_sharing_a_database_get_one_signing_key(s: Arc<Db>) {
    // A second server on the same database.
    let other = Arc::new(Backend::open(&s.database, s.data_dir()).await.unwrap());
    let candidate = |i: u8| StoredKey { alg: "ES256".into(), pkcs8: vec![i; 40] };
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let (a, b) = (s.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 { a.id_token_key("jobs", &candidate(i), 10).await } else { b.id_token_key("jobs", &candidate(i), 10).await }
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    let first = got[0].clone();
    assert!((0..16).any(|i| candidate(i) == first), "one of the offered keys");
    assert!(got.iter().all(|k| *k == first), "every server got the same key: {got:?}");
    // Later calls keep it; another name is another key.
    assert_eq!(s.id_token_key("jobs", &candidate(99), 20).await.unwrap(), first);
    assert_eq!(other.id_token_key("jobs", &candidate(98), 20).await.unwrap(), first);
    assert_eq!(s.id_token_key("other", &candidate(97), 20).await.unwrap(), candidate(97));
    assert!(!format!("{first:?}").contains(&format!("{:?}", first.pkcs8)), "Debug redacts the key");
    other.close().await;
}
