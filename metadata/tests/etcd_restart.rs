//! The etcd backend across an etcd restart (SIGKILL, then start on the same data and port):
//! calls fail with `Unavailable` while it is down and work again after, a watch resumes from
//! the last delivered revision (no event missed or repeated), a `LeaseKeeper` keeps its lease
//! through a short outage and reports it lost after one longer than the ttl.
#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::etcd_server::EtcdServer;
use dlog_metadata::{Cond, EtcdStore, EventKind, LeaseKeeper, MetaError, MetadataStore, Op, Version};

async fn next(watch: &mut dlog_metadata::Watch) -> dlog_metadata::Event {
    tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("an event within 20 s").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_is_survived() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(EtcdStore::connect(&etcd.uri("restart")).await.unwrap());
    let first = store.put("w/a", Bytes::from_static(b"1")).await.unwrap();
    let mut watch = store.watch("w/", first).await.unwrap();
    assert_eq!(next(&mut watch).await.key, "w/a");
    let keeper = LeaseKeeper::grant(store.clone(), Duration::from_secs(4)).await.unwrap();
    let leased =
        Op::Put { key: "bookie".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(keeper.id()) };
    store.txn(vec![leased]).await.unwrap();

    // Down: calls say Unavailable (retryable), within the request timeout.
    etcd.kill();
    let r = store.get("w/a").await;
    assert!(matches!(r, Err(MetaError::Unavailable(_))), "{r:?}");
    etcd.restart().unwrap();

    // Up again: the same client works, the watch resumes exactly after `w/a`.
    let mut value = None;
    for _ in 0..100 {
        match store.get("w/a").await {
            Ok(v) => {
                value = v;
                break;
            }
            Err(MetaError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(value.unwrap().version, first);
    let b = store.put("w/b", Bytes::from_static(b"1")).await.unwrap();
    let e = next(&mut watch).await;
    assert_eq!(
        (e.kind, e.key.as_str(), e.version),
        (EventKind::Put, "w/b", b),
        "resumed without repeating w/a"
    );
    assert!(keeper.is_alive(), "a short outage does not lose the lease");
    assert!(store.get("bookie").await.unwrap().is_some());

    // Down for longer than the ttl: the keeper says the lease may be lost.
    let mut keeper = keeper;
    etcd.kill();
    let lost =
        tokio::time::timeout(Duration::from_secs(10), keeper.lost()).await.expect("reported within 10 s");
    assert!(matches!(lost, MetaError::Unavailable(_)), "{lost:?}");
    etcd.restart().unwrap();
    // etcd renews every lease at a restart; with no keep-alive it then expires, key and all.
    let mut gone = false;
    for _ in 0..100 {
        match store.get("bookie").await {
            Ok(None) => {
                gone = true;
                break;
            }
            Ok(Some(_)) | Err(MetaError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(gone, "the lost lease's key expired");
    assert!(store.watch("w/", Version(b.0 + 1)).await.is_ok());
}
