//! The typed accessors over the schema (segments, logs, segment lists, writer locks), each case
//! on the embedded store in memory and, with the `etcd` feature, on a real etcd.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::schema::{
    self, DigestType, Dlsn, LogSegment, LogSegmentState, SegmentMetadata, SegmentOwner, SegmentState,
};
use dlog_metadata::{LocalStore, LogMetadataStore, MetaError, MetadataStore, SegmentMetadataStore, Version};

struct Backend<S> {
    store: Arc<S>,
    _guard: Box<dyn Any + Send>,
}

fn segment() -> SegmentMetadata {
    SegmentMetadata {
        ensemble_size: 3,
        write_quorum_size: 2,
        ack_quorum_size: 2,
        digest_type: DigestType::Crc32c,
        master_key: Bytes::from_static(b"key"),
        state: SegmentState::Open,
        ensembles: BTreeMap::from([(0, vec!["b1".into(), "b2".into(), "b3".into()])]),
        created_ms: 1,
        owner: Some(SegmentOwner { namespace: "ns".into(), log: "l".into(), seq: 0 }),
    }
}

/// Epoch 1: the first writer lock's.
fn log_segment(seq: u64, segment_id: u64) -> LogSegment {
    LogSegment {
        seq,
        segment_id,
        first_txid: seq * 100,
        epoch: 1,
        created_ms: 1,
        state: LogSegmentState::InProgress,
    }
}

mod cases {
    use super::*;

    pub(crate) async fn segments_get_unique_ids_and_cas_updates<S: MetadataStore + 'static>(store: Arc<S>) {
        let segments = Arc::new(SegmentMetadataStore::new(store.clone()));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let segments = segments.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..15 {
                        ids.push(segments.create(&segment()).await.unwrap().0);
                    }
                    ids
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        for t in tasks {
            for id in t.await.unwrap() {
                assert!(ids.insert(id), "id {id} drawn twice");
            }
        }
        assert_eq!(ids.len(), 90);
        let id = *ids.first().unwrap();
        let (meta, v) = segments.get(id).await.unwrap().unwrap();
        assert_eq!(meta, segment());
        let mut closed = meta.clone();
        closed.state = SegmentState::Closed { last_entry_id: Some(9), length: 100 };
        let v2 = segments.update(id, &closed, v).await.unwrap();
        assert!(matches!(segments.update(id, &meta, v).await, Err(MetaError::VersionConflict { .. })));
        assert_eq!(segments.get(id).await.unwrap().unwrap(), (closed, v2));
        // Concurrent read-modify-writes all land (each bumps created_ms once).
        let id = *ids.last().unwrap();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let segments = segments.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        segments
                            .modify(id, |m| {
                                Ok(Some(SegmentMetadata { created_ms: m.created_ms + 1, ..m.clone() }))
                            })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(segments.get(id).await.unwrap().unwrap().0.created_ms, 26);
        // Invalid metadata is never written.
        let mut bad = segment();
        bad.ack_quorum_size = 5;
        assert!(matches!(segments.create(&bad).await, Err(MetaError::Invalid(_))));
        // Listing pages in id order; deletion is confirmed only once the key is gone.
        let (first, more) = segments.list(None, 50).await.unwrap();
        assert!(more);
        let (rest, more) = segments.list(Some(first.last().unwrap().0), 0).await.unwrap();
        assert!(!more);
        let listed: Vec<u64> = first.iter().chain(&rest).map(|(id, _, _)| *id).collect();
        assert_eq!(listed, ids.iter().copied().collect::<Vec<_>>());
        let (_, v) = segments.get(id).await.unwrap().unwrap();
        assert!(!segments.confirm_deleted(id).await.unwrap());
        segments.delete(id, v).await.unwrap();
        assert!(segments.confirm_deleted(id).await.unwrap());
        assert!(matches!(segments.modify(id, |_| Ok(None)).await, Err(MetaError::NotFound(_))));
        // A value someone else broke is reported with its key, not skipped.
        store.put(&schema::segment_key(7), Bytes::from_static(b"\x01\xff\xff")).await.unwrap();
        match segments.get(7).await {
            Err(MetaError::Corrupt(m)) => assert!(m.contains(&schema::segment_key(7)), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(segments.list(None, 0).await, Err(MetaError::Corrupt(_))));
    }

    pub(crate) async fn namespaces_hold_logs_and_delete_only_when_empty<S: MetadataStore + 'static>(
        store: Arc<S>,
    ) {
        let logs = LogMetadataStore::new(store.clone());
        assert!(matches!(logs.create_log("ns", "a").await, Err(MetaError::NotFound(_))));
        logs.create_namespace("ns").await.unwrap();
        assert!(matches!(logs.create_namespace("ns").await, Err(MetaError::AlreadyExists(_))));
        assert!(matches!(logs.create_namespace("a/b").await, Err(MetaError::Invalid(_))));
        logs.create_log("ns", "a").await.unwrap();
        logs.create_log("ns", "b").await.unwrap();
        assert!(matches!(logs.create_log("ns", "a").await, Err(MetaError::AlreadyExists(_))));
        let names: Vec<_> = logs.logs("ns").await.unwrap().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(matches!(logs.delete_namespace("ns").await, Err(MetaError::Invalid(_))));
        for name in ["a", "b"] {
            let (_, v) = logs.log("ns", name).await.unwrap().unwrap();
            logs.delete_log("ns", name, v).await.unwrap();
        }
        logs.delete_namespace("ns").await.unwrap();
        assert_eq!(logs.namespaces().await.unwrap(), Vec::<String>::new());
        // A namespace delete racing a log creation: never a log without its namespace (LM1).
        for round in 0..10 {
            let ns = format!("race{round}");
            logs.create_namespace(&ns).await.unwrap();
            let (l1, l2) = (logs.clone(), logs.clone());
            let (n1, n2) = (ns.clone(), ns.clone());
            let create = tokio::spawn(async move { l1.create_log(&n1, "x").await });
            let delete = tokio::spawn(async move { l2.delete_namespace(&n2).await });
            let (created, deleted) = (create.await.unwrap(), delete.await.unwrap());
            assert!(
                !(created.is_ok() && deleted.is_ok()),
                "round {round}: both a log creation and the delete won"
            );
            let has_log = logs.log(&ns, "x").await.unwrap().is_some();
            let has_ns = logs.namespace(&ns).await.unwrap().is_some();
            assert!(!has_log || has_ns, "round {round}: a log outlived its namespace");
        }
    }

    pub(crate) async fn segment_lists_grow_in_order_under_cas<S: MetadataStore + 'static>(store: Arc<S>) {
        let logs = LogMetadataStore::new(store.clone());
        logs.create_namespace("ns").await.unwrap();
        logs.create_log("ns", "l").await.unwrap();
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        let mut lock = logs.acquire_writer_lock("ns", "l", "w", lease).await.unwrap();
        let (meta, v) = logs.log("ns", "l").await.unwrap().unwrap();
        assert!(matches!(
            logs.add_segment(&mut lock, &log_segment(1, 10), &meta, v).await,
            Err(MetaError::Invalid(_))
        ));
        let mut watch = logs.watch_segments("ns", "l", Version(0)).await.unwrap();
        let (meta, v) = logs.add_segment(&mut lock, &log_segment(0, 10), &meta, v).await.unwrap();
        assert_eq!(meta.next_segment_seq, 1);
        // Two adds of seq 1 from the same read (one lock, two tasks): one wins.
        let (a, b) = (logs.clone(), logs.clone());
        let (ma, mb) = (meta.clone(), meta.clone());
        let (mut la, mut lb) = (lock.clone(), lock.clone());
        let first =
            tokio::spawn(async move { (a.add_segment(&mut la, &log_segment(1, 11), &ma, v).await, la) });
        let second =
            tokio::spawn(async move { (b.add_segment(&mut lb, &log_segment(1, 12), &mb, v).await, lb) });
        let results = [first.await.unwrap(), second.await.unwrap()];
        assert_eq!(results.iter().filter(|(r, _)| r.is_ok()).count(), 1, "{results:?}");
        let mut lock = results.into_iter().find(|(r, _)| r.is_ok()).unwrap().1;
        let (meta, v) = logs.log("ns", "l").await.unwrap().unwrap();
        let (meta, _) = logs.add_segment(&mut lock, &log_segment(2, 13), &meta, v).await.unwrap();
        let segments = logs.segments("ns", "l").await.unwrap();
        assert_eq!(segments.iter().map(|(s, _)| s.seq).collect::<Vec<_>>(), [0, 1, 2]);
        // Complete seq 0 and move the log's next txid in one transaction.
        let (mut seg0, seg_v) = segments[0].clone();
        seg0.state = LogSegmentState::Completed {
            last_txid: 4,
            record_count: 5,
            last_dlsn: Some(Dlsn { segment_seq: 0, entry_id: 1, slot: 2 }),
            completed_ms: 2,
        };
        let (_, log_v) = logs.log("ns", "l").await.unwrap().unwrap();
        let next = schema::LogMetadata { next_txid: 5, ..meta };
        logs.update_segment_and_log(&mut lock, (&seg0, seg_v), (&next, log_v)).await.unwrap();
        let stale = logs.update_segment_and_log(&mut lock, (&seg0, seg_v), (&next, log_v)).await;
        assert!(matches!(stale, Err(MetaError::VersionConflict { .. })));
        assert_eq!(logs.log("ns", "l").await.unwrap().unwrap().0.next_txid, 5);
        // The watch saw each change of the list, in order: added 0, 1, 2, then 0 completed.
        let mut seen = Vec::new();
        for _ in 0..4 {
            let e = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
            seen.push(LogSegment::decode(&e.key, &e.value).unwrap());
        }
        assert_eq!(seen.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2, 0]);
        assert!(matches!(seen[3].state, LogSegmentState::Completed { record_count: 5, .. }));
        // A log with segments cannot be deleted.
        let (_, log_v) = logs.log("ns", "l").await.unwrap().unwrap();
        assert!(matches!(logs.delete_log("ns", "l", log_v).await, Err(MetaError::Invalid(_))));
        logs.release_writer_lock(&lock).await.unwrap();
        for (s, v) in logs.segments("ns", "l").await.unwrap() {
            logs.remove_segment("ns", "l", s.seq, v).await.unwrap();
        }
        logs.delete_log("ns", "l", log_v).await.unwrap();
    }

    pub(crate) async fn writer_locks_have_one_holder_and_rising_epochs<S: MetadataStore + 'static>(
        store: Arc<S>,
    ) {
        let logs = LogMetadataStore::new(store.clone());
        logs.create_namespace("ns").await.unwrap();
        logs.create_log("ns", "l").await.unwrap();
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let logs = logs.clone();
                tokio::spawn(
                    async move { logs.acquire_writer_lock("ns", "l", &format!("w{i}"), lease).await },
                )
            })
            .collect();
        let mut held = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(lock) => held.push(lock),
                Err(MetaError::AlreadyExists(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(held.len(), 1, "one holder");
        let mut first = held.pop().unwrap();
        assert_eq!(first.epoch, 1);
        let (cached, _) = logs.log("ns", "l").await.unwrap().unwrap();
        logs.check_writer_lock(&first).await.unwrap();
        // The holder's lease ends: the lock goes with it, and the next holder's epoch is higher.
        store.revoke(lease).await.unwrap();
        assert!(matches!(logs.check_writer_lock(&first).await, Err(MetaError::LeaseExpired(_))));
        let lease2 = store.grant(Duration::from_secs(60)).await.unwrap();
        let mut second = logs.acquire_writer_lock("ns", "l", "w9", lease2).await.unwrap();
        assert_eq!(second.epoch, 2);
        assert_eq!(logs.log("ns", "l").await.unwrap().unwrap().0.writer_epoch, 2);
        let holder = logs.writer_lock("ns", "l").await.unwrap().unwrap();
        assert_eq!((holder.lock.owner.as_str(), holder.lock.epoch, holder.lease), ("w9", 2, Some(lease2)));
        // The old holder cannot release the new holder's lock.
        assert!(logs.release_writer_lock(&first).await.is_err());
        logs.check_writer_lock(&second).await.unwrap();
        // The deposed writer re-reads the log and tries to add or complete a segment: fenced.
        let (meta, v) = logs.log("ns", "l").await.unwrap().unwrap();
        let stale = LogSegment { epoch: first.epoch, ..log_segment(0, 5) };
        let fenced = logs.add_segment(&mut first, &stale, &meta, v).await;
        assert!(matches!(fenced, Err(MetaError::Fenced { epoch: 1, current: 2, .. })), "{fenced:?}");
        // Nor with its cached metadata (its own epoch) at the log's newest version: the lock
        // fences the write, and the log's epoch never goes back.
        let fenced = logs.add_segment(&mut first, &stale, &cached, v).await;
        assert!(matches!(fenced, Err(MetaError::Fenced { epoch: 1, current: 2, .. })), "{fenced:?}");
        assert_eq!(logs.log("ns", "l").await.unwrap().unwrap().0.writer_epoch, 2);
        let mine = LogSegment { epoch: second.epoch, ..log_segment(0, 5) };
        let (meta, v) = logs.add_segment(&mut second, &mine, &meta, v).await.unwrap();
        logs.check_writer_lock(&second).await.unwrap();
        let (seg, seg_v) = logs.segments("ns", "l").await.unwrap().remove(0);
        let fenced = logs.update_segment_and_log(&mut first, (&seg, seg_v), (&meta, v)).await;
        assert!(matches!(fenced, Err(MetaError::Fenced { .. })), "{fenced:?}");
        logs.update_segment_and_log(&mut second, (&seg, seg_v), (&meta, v)).await.unwrap();
        logs.release_writer_lock(&second).await.unwrap();
        assert!(logs.writer_lock("ns", "l").await.unwrap().is_none());
        assert_eq!(logs.acquire_writer_lock("ns", "l", "w10", lease2).await.unwrap().epoch, 3);
        // Many logs created at once in one namespace: all succeed (each rewrites the namespace).
        let creators: Vec<_> = (0..8)
            .map(|i| {
                let logs = logs.clone();
                tokio::spawn(async move { logs.create_log("ns", &format!("c{i}")).await })
            })
            .collect();
        for c in creators {
            c.await.unwrap().unwrap();
        }
    }
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn segments_get_unique_ids_and_cas_updates() {
                let b = $make.await;
                cases::segments_get_unique_ids_and_cas_updates(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn namespaces_hold_logs_and_delete_only_when_empty() {
                let b = $make.await;
                cases::namespaces_hold_logs_and_delete_only_when_empty(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn segment_lists_grow_in_order_under_cas() {
                let b = $make.await;
                cases::segment_lists_grow_in_order_under_cas(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn writer_locks_have_one_holder_and_rising_epochs() {
                let b = $make.await;
                cases::writer_locks_have_one_holder_and_rising_epochs(b.store.clone()).await;
            }
        }
    };
}

async fn memory() -> Backend<LocalStore> {
    Backend { store: Arc::new(LocalStore::in_memory().unwrap()), _guard: Box::new(()) }
}

suite!(memory, memory());

#[cfg(feature = "etcd")]
async fn etcd() -> Backend<dlog_metadata::EtcdStore> {
    let server = dlog_metadata::etcd_server::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = dlog_metadata::EtcdStore::connect(&server.uri("accessors")).await.unwrap();
    Backend { store: Arc::new(store), _guard: Box::new(server) }
}

#[cfg(feature = "etcd")]
suite!(etcd, etcd());
