//! The embedded store's own promises, through the `MetadataStore` API (the shared ones are in
//! conformance.rs): durability across reopen, watches that resume without gaps or repeats (also across a
//! reopen), lease expiry (also after a reopen), a torn log tail cut (also a group commit that
//! lost an earlier page and kept later ones) and damage refused.

use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::local_log::{self, LogRecord};
use dlog_metadata::{Cond, EventKind, LocalStore, MetaError, MetadataStore, Op, Version, Watch};

fn put(key: &str, value: &str, cond: Cond) -> Op {
    Op::Put { key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()), cond, lease: None }
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn next(events: &mut Watch) -> dlog_metadata::Event {
    tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("an event within 5 s").unwrap()
}

async fn nothing_more(events: &mut Watch) -> bool {
    !matches!(tokio::time::timeout(Duration::from_millis(100), events.next()).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_reopen_with_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let v1 = store.txn(vec![put("a", "1", Cond::Absent), put("b", "1", Cond::Absent)]).await.unwrap();
    let v2 = store.txn(vec![put("a", "2", Cond::Version(v1))]).await.unwrap();
    store.txn(vec![Op::Delete { key: "b".into(), cond: Cond::Any }]).await.unwrap();
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!((a.value, a.version, a.created), (Bytes::from_static(b"2"), v2, v1));
    assert!(store.get("b").await.unwrap().is_none());
    let next = store.txn(vec![put("c", "1", Cond::Any)]).await.unwrap();
    assert_eq!(next, Version(v2.0 + 2), "revisions continue after the reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_without_gaps_or_repeats_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let first = store.txn(vec![put("logs/a", "1", Cond::Any)]).await.unwrap();
    store.txn(vec![put("other", "x", Cond::Any)]).await.unwrap();
    let mut events = store.watch("logs/", first).await.unwrap();
    store.txn(vec![put("logs/b", "1", Cond::Any)]).await.unwrap();
    store.txn(vec![Op::Delete { key: "logs/a".into(), cond: Cond::Any }]).await.unwrap();
    let seen: Vec<_> = vec![next(&mut events).await, next(&mut events).await, next(&mut events).await];
    assert_eq!(seen.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["logs/a", "logs/b", "logs/a"]);
    assert_eq!(seen[2].kind, EventKind::Delete);
    assert!(seen.windows(2).all(|w| w[0].version < w[1].version));
    let last = seen[2].version;
    store.close();
    assert!(nothing_more(&mut events).await, "no event after the last");
    let store = LocalStore::open(dir.path()).unwrap();
    store.txn(vec![put("logs/c", "1", Cond::Any)]).await.unwrap();
    let mut events = store.watch("logs/", Version(last.0 + 1)).await.unwrap();
    let next = next(&mut events).await;
    assert_eq!(next.key, "logs/c");
    assert!(nothing_more(&mut events).await, "nothing repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_keys_vanish_when_the_lease_expires_also_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let lease = store.grant(Duration::from_millis(300)).await.unwrap();
    let op = Op::Put { key: "bookies/1".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
    store.txn(vec![op]).await.unwrap();
    let mut events =
        store.watch("bookies/", store.get("bookies/1").await.unwrap().unwrap().version).await.unwrap();
    assert_eq!(next(&mut events).await.kind, EventKind::Put);
    store.keep_alive(lease).await.unwrap();
    let gone = next(&mut events).await;
    assert_eq!((gone.kind, gone.key.as_str()), (EventKind::Delete, "bookies/1"));
    assert!(store.get("bookies/1").await.unwrap().is_none());
    assert!(matches!(store.keep_alive(lease).await, Err(MetaError::LeaseExpired(_))));
    // A lease alive at a close restarts its time to live at the reopen, then expires.
    let lease = store.grant(Duration::from_millis(300)).await.unwrap();
    let op = Op::Put { key: "bookies/2".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
    store.txn(vec![op]).await.unwrap();
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get("bookies/2").await.unwrap().is_some());
    pause(700).await;
    assert!(store.get("bookies/2").await.unwrap().is_none(), "expired after the reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_damage_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    store.txn(vec![put("a", "1", Cond::Any)]).await.unwrap();
    store.txn(vec![put("b", "1", Cond::Any)]).await.unwrap();
    store.close();
    let log = dir.path().join("metadata.log");
    let good = std::fs::read(&log).unwrap();
    // An append a crash interrupted: half a record.
    let mut torn = good.clone();
    torn.extend_from_slice(&good[..good.len() / 3]);
    std::fs::write(&log, &torn).unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get("b").await.unwrap().is_some());
    store.txn(vec![put("c", "1", Cond::Any)]).await.unwrap();
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get("c").await.unwrap().is_some(), "writes after a cut tail replay");
    store.close();
    // A flipped byte in the first record, valid records after it: refused.
    let mut bad = std::fs::read(&log).unwrap();
    bad[12] ^= 0x10;
    std::fs::write(&log, &bad).unwrap();
    assert!(matches!(LocalStore::open(dir.path()), Err(MetaError::Corrupt(_))));
}

/// A power loss during a group commit's write (before its fdatasync, so nothing in it was
/// answered) may keep a later page of it and lose an earlier one: the store cuts the whole
/// batch (local_log.rs LL4), opens with what was committed, and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_missing_an_earlier_page_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let lease = store.grant(Duration::from_secs(60)).await.unwrap();
    let v1 = store.txn(vec![put("a", "1", Cond::Absent), put("b", "1", Cond::Absent)]).await.unwrap();
    let v2 = store.txn(vec![put("a", "2", Cond::Version(v1))]).await.unwrap();
    store.close();
    // A group commit of 8 transactions, 24 KiB, as the shell frames it; its first page lost.
    let value = "x".repeat(3000);
    let lost: Vec<LogRecord> =
        (0..8).map(|i| LogRecord::Txn(vec![put(&format!("lost/{i}"), &value, Cond::Any)])).collect();
    let frames = local_log::encode_batches(&lost);
    assert_eq!(frames.len(), 1, "one frame");
    let mut batch = frames.into_iter().next().unwrap();
    assert!(batch.len() > 5 * 4096);
    batch[..4096].fill(0);
    let path = dir.path().join("metadata.log");
    let committed = std::fs::read(&path).unwrap();
    std::fs::write(&path, [committed.as_slice(), &batch].concat()).unwrap();
    let store = LocalStore::open(dir.path()).expect("a torn group commit is cut, not damage");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), committed.len() as u64, "cut where it starts");
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!((a.value, a.version), (Bytes::from_static(b"2"), v2));
    assert!(store.get("b").await.unwrap().is_some());
    assert!(store.list("lost/", None, 10).await.unwrap().items.is_empty());
    store.keep_alive(lease).await.unwrap();
    let v3 = store.txn(vec![put("c", "1", Cond::Absent)]).await.unwrap();
    assert_eq!(v3, Version(v2.0 + 1), "revisions continue after the committed ones");
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.get("c").await.unwrap().unwrap().version, v3, "writes after the cut replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_rewritten_as_an_image_and_replays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let options = dlog_metadata::LocalOptions { rewrite_bytes: 4096 };
    let store = LocalStore::open_with(dir.path(), options.clone()).unwrap();
    let lease = store.grant(Duration::from_secs(60)).await.unwrap();
    let op = Op::Put { key: "leased".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
    store.txn(vec![op]).await.unwrap();
    for i in 0..500 {
        store.txn(vec![put(&format!("k/{:02}", i % 20), &i.to_string(), Cond::Any)]).await.unwrap();
    }
    let log_len = std::fs::metadata(dir.path().join("metadata.log")).unwrap().len();
    assert!(log_len < 16 << 10, "500 updates of 20 keys left a {log_len}-byte log: not rewritten");
    let before = store.list("", None, 1000).await.unwrap();
    store.close();
    let store = LocalStore::open_with(dir.path(), options).unwrap();
    let after = store.list("", None, 1000).await.unwrap();
    assert_eq!(after.items, before.items, "keys, values and versions replay the same");
    assert_eq!(after.revision, before.revision);
    assert!(store.get("leased").await.unwrap().unwrap().lease == Some(lease));
    store.keep_alive(lease).await.unwrap();
    assert!(matches!(store.watch("k/", Version(1)).await, Err(MetaError::Compacted { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    store.txn(vec![put("a", "1", Cond::Any)]).await.unwrap();
    assert!(
        matches!(LocalStore::open(dir.path()), Err(MetaError::Unavailable(_))),
        "a second opener is refused"
    );
    assert!(store.get("a").await.unwrap().is_some(), "and the first is undisturbed");
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get("a").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_snapshot_reads_a_store_another_opener_owns() {
    let dir = tempfile::tempdir().unwrap();
    let owner = LocalStore::open(dir.path()).unwrap();
    let lease = owner.grant(Duration::from_millis(200)).await.unwrap();
    let leased =
        Op::Put { key: "leased".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
    let v = owner.txn(vec![put("a", "1", Cond::Any), leased]).await.unwrap();
    // An interrupted rewrite's tmp file belongs to the owner: the snapshot must leave it.
    std::fs::write(dir.path().join("metadata.log.tmp"), b"owner's").unwrap();
    let log_before = std::fs::read(dir.path().join("metadata.log")).unwrap();

    let snapshot = LocalStore::open_read_only(dir.path()).unwrap();
    let a = snapshot.get("a").await.unwrap().unwrap();
    assert_eq!((a.value, a.version), (Bytes::from_static(b"1"), v));
    assert!(matches!(snapshot.put("b", Bytes::new()).await, Err(MetaError::Invalid(_))));
    assert!(matches!(snapshot.grant(Duration::from_secs(1)).await, Err(MetaError::Invalid(_))));
    assert!(matches!(snapshot.revoke(lease).await, Err(MetaError::Invalid(_))));
    // A snapshot: the owner's later writes are not in it, and its leases do not expire.
    owner.txn(vec![put("a", "2", Cond::Any)]).await.unwrap();
    pause(400).await;
    assert_eq!(snapshot.get("a").await.unwrap().unwrap().value, Bytes::from_static(b"1"));
    assert!(snapshot.get("leased").await.unwrap().is_some(), "no expiry in a snapshot");
    assert!(owner.get("leased").await.unwrap().is_none(), "the owner expired it");
    drop(snapshot);
    // Nothing on disk changed but for the owner's own write; the owner still holds the lock.
    assert!(std::fs::read(dir.path().join("metadata.log")).unwrap().starts_with(&log_before));
    assert_eq!(std::fs::read(dir.path().join("metadata.log.tmp")).unwrap(), b"owner's");
    assert!(matches!(LocalStore::open(dir.path()), Err(MetaError::Unavailable(_))));
    owner.close();
    assert!(matches!(LocalStore::open_read_only(&dir.path().join("none")), Err(MetaError::Unavailable(_))));
}
