//! The etcd backend across an etcd restart (SIGKILL, then start on the same data and port):
//! calls fail with `Unavailable` while it is down and work again after, a watch resumes from
//! the last delivered revision (no event missed or repeated), a `LeaseKeeper` keeps its lease
//! through a short outage and reports it lost after one longer than the ttl. Also a quiet
//! watch across compaction and a restart, and a three-member cluster losing one member at a
//! time (nothing lost) and then its quorum (writes `Unavailable`, never successful).
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

/// A watch on a quiet prefix keeps its position up with the store (etcd's periodic progress
/// notifications, every second in the test harness), so after compaction and an etcd restart
/// it resumes instead of failing with `Compacted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_survives_compaction_and_a_restart() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = EtcdStore::connect(&etcd.uri("quiet")).await.unwrap();
    let mut watch = store.watch("quiet/", Version(0)).await.unwrap();
    let mut last = Version(0);
    for i in 0..20 {
        last = store.put(&format!("busy/{i}"), Bytes::from_static(b"x")).await.unwrap();
    }
    // Past a progress notification: the watch has heard that everything up to `last` was sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    raw.compact(last.0 as i64, None).await.unwrap();
    etcd.restart().unwrap();
    let mut written = None;
    for _ in 0..100 {
        match store.put("quiet/x", Bytes::from_static(b"1")).await {
            Ok(v) => {
                written = Some(v);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let e = next(&mut watch).await;
    assert_eq!((e.key.as_str(), Some(e.version)), ("quiet/x", written));
}

/// Retries `put` until etcd answers (a member just died: the client moves to another).
async fn put_retrying(store: &EtcdStore, key: &str) -> Version {
    for _ in 0..100 {
        match store.put(key, Bytes::from_static(b"1")).await {
            Ok(v) => return v,
            Err(MetaError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{key}: {e}"),
        }
    }
    panic!("{key}: no answer within about 10 s");
}

/// A three-member etcd cluster through a URI naming all three: losing any one member loses
/// nothing (writes go on through the others, the watch continues without gaps or repeats, the
/// lease stays alive); losing two (no quorum) makes writes `Unavailable`, never successful;
/// once they rejoin, everything works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_survives_losing_a_member_and_refuses_writes_without_quorum() {
    let mut cluster = dlog_metadata::etcd_server::EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(EtcdStore::connect(&cluster.uri("failover")).await.unwrap());
    let mut watch = store.watch("f/", Version(0)).await.unwrap();
    let keeper = LeaseKeeper::grant(store.clone(), Duration::from_secs(6)).await.unwrap();
    for i in 0..3 {
        cluster.member(i).kill();
        let key = format!("f/{i}");
        let v = put_retrying(&store, &key).await;
        let e = next(&mut watch).await;
        assert_eq!((e.key.as_str(), e.version), (key.as_str(), v), "member {i} down");
        cluster.member(i).restart().unwrap();
    }
    assert!(keeper.is_alive(), "one member at a time never lost the lease");
    cluster.member(0).kill();
    cluster.member(1).kill();
    let r = store.put("f/no-quorum", Bytes::from_static(b"1")).await;
    assert!(matches!(r, Err(MetaError::Unavailable(_))), "{r:?}");
    cluster.rejoin(0).unwrap();
    cluster.rejoin(1).unwrap();
    let v = put_retrying(&store, "f/back").await;
    let e = next(&mut watch).await;
    if e.key == "f/no-quorum" {
        // The write timed out at the client but was committed once the quorum was back: its
        // outcome was unknown (Unavailable says so), and the watch shows it once.
        assert_eq!(next(&mut watch).await.version, v);
    } else {
        assert_eq!((e.key.as_str(), e.version), ("f/back", v));
    }
}
