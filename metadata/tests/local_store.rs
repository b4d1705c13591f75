//! The embedded metadata store through its blocking API: durability across reopen, one winner
//! per compare-and-set race, watches that resume without gaps or repeats (also across a
//! reopen), lease expiry (also after a reopen), a torn log tail cut and damage refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::{Cond, EventKind, LocalStore, MetaError, Op, Version};

fn put(key: &str, value: &str, cond: Cond) -> Op {
    Op::Put { key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()), cond, lease: None }
}

fn pause(ms: u64) {
    std::thread::park_timeout(Duration::from_millis(ms));
}

#[test]
fn writes_survive_a_reopen_with_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let v1 = store.txn(vec![put("a", "1", Cond::Absent), put("b", "1", Cond::Absent)]).unwrap();
    let v2 = store.txn(vec![put("a", "2", Cond::Version(v1))]).unwrap();
    store.txn(vec![Op::Delete { key: "b".into(), cond: Cond::Any }]).unwrap();
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    let a = store.get("a").unwrap().unwrap();
    assert_eq!((a.value, a.version, a.created), (Bytes::from_static(b"2"), v2, v1));
    assert!(store.get("b").unwrap().is_none());
    let next = store.txn(vec![put("c", "1", Cond::Any)]).unwrap();
    assert_eq!(next, Version(v2.0 + 2), "revisions continue after the reopen");
}

#[test]
fn concurrent_compare_and_set_has_exactly_one_winner_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    store.txn(vec![put("counter", "0", Cond::Absent)]).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for _ in 0..50 {
                    let current = store.get("counter").unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
                    match store.txn(vec![put(
                        "counter",
                        &(n + 1).to_string(),
                        Cond::Version(current.version),
                    )]) {
                        Ok(v) => wins.push((current.version, v)),
                        Err(MetaError::VersionConflict { .. }) => {}
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                wins
            })
        })
        .collect();
    let mut wins: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let total = wins.len() as u64;
    let final_value = store.get("counter").unwrap().unwrap().value;
    assert_eq!(std::str::from_utf8(&final_value).unwrap(), total.to_string(), "every win counted once");
    wins.sort();
    assert!(wins.windows(2).all(|w| w[0].0 != w[1].0), "two winners for one version");
}

#[test]
fn watches_resume_without_gaps_or_repeats_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let first = store.txn(vec![put("logs/a", "1", Cond::Any)]).unwrap();
    store.txn(vec![put("other", "x", Cond::Any)]).unwrap();
    let events = store.watch("logs/", first).unwrap();
    store.txn(vec![put("logs/b", "1", Cond::Any)]).unwrap();
    store.txn(vec![Op::Delete { key: "logs/a".into(), cond: Cond::Any }]).unwrap();
    let seen: Vec<_> =
        (0..3).map(|_| events.recv_timeout(Duration::from_secs(5)).unwrap().unwrap()).collect();
    assert_eq!(seen.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["logs/a", "logs/b", "logs/a"]);
    assert_eq!(seen[2].kind, EventKind::Delete);
    assert!(seen.windows(2).all(|w| w[0].version < w[1].version));
    let last = seen[2].version;
    store.close();
    assert!(events.recv_timeout(Duration::from_millis(100)).is_err(), "no event after the last");
    let store = LocalStore::open(dir.path()).unwrap();
    store.txn(vec![put("logs/c", "1", Cond::Any)]).unwrap();
    let events = store.watch("logs/", Version(last.0 + 1)).unwrap();
    let next = events.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(next.key, "logs/c");
    assert!(events.recv_timeout(Duration::from_millis(100)).is_err(), "nothing repeated");
}

#[test]
fn leased_keys_vanish_when_the_lease_expires_also_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let lease = store.grant(Duration::from_millis(300)).unwrap();
    let op = Op::Put { key: "bookies/1".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
    store.txn(vec![op]).unwrap();
    let events = store.watch("bookies/", store.get("bookies/1").unwrap().unwrap().version).unwrap();
    assert_eq!(events.recv_timeout(Duration::from_secs(5)).unwrap().unwrap().kind, EventKind::Put);
    store.keep_alive(lease).unwrap();
    let gone = events.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((gone.kind, gone.key.as_str()), (EventKind::Delete, "bookies/1"));
    assert!(store.get("bookies/1").unwrap().is_none());
    assert!(matches!(store.keep_alive(lease), Err(MetaError::LeaseExpired(_))));
    // A lease alive at a close restarts its time to live at the reopen, then expires.
    let lease = store.grant(Duration::from_millis(300)).unwrap();
    let op = Op::Put { key: "bookies/2".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
    store.txn(vec![op]).unwrap();
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get("bookies/2").unwrap().is_some());
    pause(700);
    assert!(store.get("bookies/2").unwrap().is_none(), "expired after the reopen");
}

#[test]
fn a_torn_tail_is_cut_and_damage_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    store.txn(vec![put("a", "1", Cond::Any)]).unwrap();
    store.txn(vec![put("b", "1", Cond::Any)]).unwrap();
    store.close();
    let log = dir.path().join("metadata.log");
    let good = std::fs::read(&log).unwrap();
    // An append a crash interrupted: half a record.
    let mut torn = good.clone();
    torn.extend_from_slice(&good[..good.len() / 3]);
    std::fs::write(&log, &torn).unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get("b").unwrap().is_some());
    store.txn(vec![put("c", "1", Cond::Any)]).unwrap();
    store.close();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get("c").unwrap().is_some(), "writes after a cut tail replay");
    store.close();
    // A flipped byte in the first record, valid records after it: refused.
    let mut bad = std::fs::read(&log).unwrap();
    bad[12] ^= 0x10;
    std::fs::write(&log, &bad).unwrap();
    assert!(matches!(LocalStore::open(dir.path()), Err(MetaError::Invalid(_))));
}

#[test]
fn the_log_is_rewritten_as_an_image_and_replays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let options = dlog_metadata::LocalOptions { rewrite_bytes: 4096 };
    let store = LocalStore::open_with(dir.path(), options.clone()).unwrap();
    let lease = store.grant(Duration::from_secs(60)).unwrap();
    let op = Op::Put { key: "leased".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
    store.txn(vec![op]).unwrap();
    for i in 0..500 {
        store.txn(vec![put(&format!("k/{:02}", i % 20), &i.to_string(), Cond::Any)]).unwrap();
    }
    let log_len = std::fs::metadata(dir.path().join("metadata.log")).unwrap().len();
    assert!(log_len < 16 << 10, "500 updates of 20 keys left a {log_len}-byte log: not rewritten");
    let before = store.list("", None, 1000).unwrap();
    store.close();
    let store = LocalStore::open_with(dir.path(), options).unwrap();
    let after = store.list("", None, 1000).unwrap();
    assert_eq!(after.items, before.items, "keys, values and versions replay the same");
    assert_eq!(after.revision, before.revision);
    assert!(store.get("leased").unwrap().unwrap().lease == Some(lease));
    store.keep_alive(lease).unwrap();
    assert!(matches!(store.watch("k/", Version(1)), Err(MetaError::Compacted { .. })));
}
