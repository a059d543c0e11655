//! Opening a store: the backend chosen from `--database`, migrations run once and again.

use std::sync::Arc;

use server::store::{Backend, Recorded, Store};

use crate::support::{Db, Kind, new_pipeline};

store_tests!(backend_follows_the_database, reopen_keeps_data, concurrent_opens_migrate_once);

async fn backend_follows_the_database(s: Arc<Db>) {
    match (s.kind, &s.store) {
        (Kind::Sqlite, Backend::Sqlite(_)) => assert!(s.data_dir().join("piste.db").is_file(), "the default file"),
        (Kind::Postgres, Backend::Postgres(_)) => {}
        (kind, store) => panic!("{kind:?} opened {store:?}"),
    }
}

async fn reopen_keeps_data(s: Arc<Db>) {
    let Recorded::Created(id) = s.record_pipeline("d", &new_pipeline("web", 5)).await.unwrap() else { panic!() };
    let again = Backend::open(&s.database, s.data_dir()).await.unwrap();
    assert_eq!(again.pipeline(id).await.unwrap().unwrap().created_at, 5);
    assert_eq!(again.record_pipeline("d", &new_pipeline("web", 6)).await.unwrap(), Recorded::Duplicate(id));
    again.close().await;
}

async fn concurrent_opens_migrate_once(s: Arc<Db>) {
    // Servers starting together on a new database.
    let database = s.fresh_database().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let database = database.clone();
            let dir = s.data_dir().to_path_buf();
            tokio::spawn(async move { Backend::open(&database, &dir).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap_or_else(|e| panic!("opening `{database}`: {e:?}")));
    }
    let Recorded::Created(id) = stores[0].record_pipeline("d", &new_pipeline("web", 1)).await.unwrap() else { panic!() };
    for store in &stores {
        assert_eq!(store.pipeline(id).await.unwrap().unwrap().id, id);
        store.close().await;
    }
}
