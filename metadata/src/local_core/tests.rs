//! Tests of `LocalCore`: conditions (every combination), limits, listing, history and its
//! trimming boundary, leases and their ttls, replay of corrupt records, and property tests
//! that the history and the log (with images) rebuild the state exactly (LC1, LC3, LL1).

use std::collections::BTreeSet;

use super::*;
use crate::local_log::{self, LogEnd};

/// The tests' fixed starting instant: the core only compares instants it is given.
#[expect(clippy::disallowed_methods, reason = "a test's starting point; the core takes time as input")]
fn start() -> Instant {
    Instant::now()
}

fn put(key: &str, value: &str, cond: Cond) -> Op {
    Op::Put { key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()), cond, lease: None }
}

fn delete(key: &str, cond: Cond) -> Op {
    Op::Delete { key: key.into(), cond }
}

fn leased(key: &str, lease: LeaseId) -> Op {
    Op::Put { key: key.into(), value: Bytes::from_static(b"l"), cond: Cond::Any, lease: Some(lease) }
}

#[test]
fn compare_and_set_has_one_winner_and_typed_errors() {
    let now = start();
    let mut core = LocalCore::new(100);
    let v1 = core.txn(vec![put("a", "1", Cond::Absent)], now).unwrap();
    assert_eq!(core.txn(vec![put("a", "x", Cond::Absent)], now), Err(MetaError::AlreadyExists("a".into())));
    // Two writers read v1; the first CAS wins, the second gets the actual version.
    let v2 = core.txn(vec![put("a", "2", Cond::Version(v1))], now).unwrap();
    assert_eq!(
        core.txn(vec![put("a", "3", Cond::Version(v1))], now),
        Err(MetaError::VersionConflict { key: "a".into(), expected: Some(v1), actual: Some(v2) })
    );
    let got = core.get("a").unwrap();
    assert_eq!((got.value, got.version, got.created), (Bytes::from_static(b"2"), v2, v1));
}

/// L3: every (op, condition, present or missing) combination of the module doc's table.
#[test]
fn every_condition_on_present_and_missing_keys() {
    let now = start();
    let conflict =
        |actual| MetaError::VersionConflict { key: "k".into(), expected: Some(Version(1)), actual };
    let cases: Vec<(Op, bool, Result<(), MetaError>)> = vec![
        (put("k", "x", Cond::Any), true, Ok(())),
        (put("k", "x", Cond::Any), false, Ok(())),
        (put("k", "x", Cond::Absent), true, Err(MetaError::AlreadyExists("k".into()))),
        (put("k", "x", Cond::Absent), false, Ok(())),
        (put("k", "x", Cond::Version(Version(1))), true, Ok(())),
        (put("k", "x", Cond::Version(Version(1))), false, Err(conflict(None))),
        (delete("k", Cond::Any), true, Ok(())),
        (delete("k", Cond::Any), false, Err(MetaError::NotFound("k".into()))),
        (delete("k", Cond::Version(Version(1))), true, Ok(())),
        (delete("k", Cond::Version(Version(1))), false, Err(MetaError::NotFound("k".into()))),
    ];
    for (op, present, want) in cases {
        let mut core = LocalCore::new(100);
        if present {
            assert_eq!(core.txn(vec![put("k", "v", Cond::Absent)], now), Ok(Version(1)));
        }
        let got = core.txn(vec![op.clone()], now).map(|_| ());
        assert_eq!(got, want, "{op:?} on a {} key", if present { "present" } else { "missing" });
        assert_eq!(core.revision().0, u64::from(present) + u64::from(got.is_ok()), "{op:?}");
    }
    // A version that does not match, on a present key.
    for op in [put("k", "x", Cond::Version(Version(1))), delete("k", Cond::Version(Version(1)))] {
        let mut core = LocalCore::new(100);
        core.txn(vec![put("k", "v", Cond::Absent)], now).unwrap();
        core.txn(vec![put("k", "w", Cond::Any)], now).unwrap();
        assert_eq!(core.txn(vec![op], now), Err(conflict(Some(Version(2)))));
    }
    // A delete on Absent is malformed, present or not.
    for present in [true, false] {
        let mut core = LocalCore::new(100);
        if present {
            core.txn(vec![put("k", "v", Cond::Absent)], now).unwrap();
        }
        assert!(matches!(core.txn(vec![delete("k", Cond::Absent)], now), Err(MetaError::Invalid(_))));
    }
}

#[test]
fn transactions_are_all_or_nothing() {
    let now = start();
    let mut core = LocalCore::new(100);
    let v = core.txn(vec![put("a", "1", Cond::Absent), put("b", "1", Cond::Absent)], now).unwrap();
    assert_eq!(core.get("a").unwrap().version, core.get("b").unwrap().version);
    let bad = vec![put("a", "2", Cond::Version(v)), put("b", "2", Cond::Version(Version(99)))];
    assert!(matches!(core.txn(bad, now), Err(MetaError::VersionConflict { .. })));
    assert_eq!(core.get("a").unwrap().version, v, "nothing applied");
    assert_eq!(core.revision(), v);
    assert!(matches!(
        core.txn(vec![put("a", "1", Cond::Any), put("a", "2", Cond::Any)], now),
        Err(MetaError::Invalid(_))
    ));
    // Malformed before any condition: the conflict on "a" is not what answers.
    let ops = vec![put("a", "3", Cond::Version(Version(99))), delete("b", Cond::Absent)];
    assert!(matches!(core.txn(ops, now), Err(MetaError::Invalid(_))));
    // The first failing operation names the error.
    let ops = vec![delete("zz", Cond::Any), put("a", "3", Cond::Absent)];
    assert_eq!(core.txn(ops, now), Err(MetaError::NotFound("zz".into())));
    assert_eq!(core.revision(), v);
}

/// H1: requests beyond the limits are refused, so every record fits a frame.
#[test]
fn requests_beyond_the_limits_are_invalid() {
    let now = start();
    let mut core = LocalCore::new(100);
    let key = "k".repeat(KEY_BYTES_MAX);
    let value = Bytes::from(vec![1u8; VALUE_BYTES_MAX]);
    let big = |key: &str, value: &Bytes| Op::Put {
        key: key.into(),
        value: value.clone(),
        cond: Cond::Any,
        lease: None,
    };
    core.txn(vec![big(&key, &value)], now).unwrap();
    let too_long = format!("{key}k");
    let too_big = Bytes::from(vec![1u8; VALUE_BYTES_MAX + 1]);
    let bad = [
        vec![big(&too_long, &Bytes::new())],
        vec![delete(&too_long, Cond::Any)],
        vec![big("v", &too_big)],
        vec![put("", "x", Cond::Any)],
        (0..=TXN_OPS_MAX).map(|i| put(&format!("o/{i}"), "", Cond::Any)).collect(),
        (0..2).map(|i| big(&format!("b/{i}"), &value)).collect(),
    ];
    for ops in bad {
        let n = ops.len();
        assert!(matches!(core.txn(ops, now), Err(MetaError::Invalid(_))), "{n} ops");
    }
    let most: Vec<Op> = (0..TXN_OPS_MAX).map(|i| put(&format!("o/{i}"), "", Cond::Any)).collect();
    core.txn(most, now).unwrap();
    // Every record the core logged fits a frame (local_log.rs LL2).
    for record in core.take_log() {
        let mut bytes = Vec::new();
        local_log::encode(&record, &mut bytes);
        assert!(bytes.len() <= local_log::RECORD_BODY_MAX);
    }
}

#[test]
fn list_pages_through_a_prefix() {
    let now = start();
    let mut core = LocalCore::new(100);
    for i in 0..25 {
        core.txn(vec![put(&format!("logs/{i:03}"), "x", Cond::Absent)], now).unwrap();
    }
    core.txn(vec![put("logz", "x", Cond::Absent)], now).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = core.list("logs/", after.as_deref(), 10);
        seen.extend(page.items.iter().map(|(k, _)| k.clone()));
        after = page.items.last().map(|(k, _)| k.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

/// M4, M5: an `after` before the prefix starts at the prefix; limit 0 is no limit.
#[test]
fn list_starts_at_the_prefix_and_zero_is_no_limit() {
    let now = start();
    let mut core = LocalCore::new(100);
    for key in ["a", "ab", "b/1", "b/2", "c"] {
        core.txn(vec![put(key, "x", Cond::Absent)], now).unwrap();
    }
    let keys = |page: Page| page.items.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(core.list("b/", Some("a"), 10)), ["b/1", "b/2"]);
    assert_eq!(keys(core.list("b/", Some("b/1"), 10)), ["b/2"]);
    assert_eq!(keys(core.list("b/", Some("b/2"), 10)), Vec::<String>::new());
    assert_eq!(keys(core.list("b/", Some("c"), 10)), Vec::<String>::new());
    let page = core.list("", None, 0);
    assert!(!page.more);
    assert_eq!(keys(page), ["a", "ab", "b/1", "b/2", "c"]);
    let page = core.list("", None, 1);
    assert!(page.more);
    assert_eq!(keys(page), ["a"]);
}

#[test]
fn watches_resume_without_gaps_or_repeats_and_compaction_is_reported() {
    let now = start();
    let mut core = LocalCore::new(8);
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(core.txn(vec![put("k", &i.to_string(), Cond::Any)], now).unwrap());
    }
    let from = versions[2];
    let events = core.events_since("k", from).unwrap();
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), versions[2..]);
    // Resume from the last seen + 1: nothing repeated.
    let next = Version(events.last().unwrap().version.0 + 1);
    assert!(core.events_since("k", next).unwrap().is_empty());
    // M6: from 0 is live events only: no history.
    assert!(core.events_since("k", Version(0)).unwrap().is_empty());
    for i in 0..20 {
        core.txn(vec![put("k", &i.to_string(), Cond::Any)], now).unwrap();
    }
    assert!(matches!(core.events_since("k", from), Err(MetaError::Compacted { .. })));
    assert!(core.events_since("k", Version(0)).unwrap().is_empty(), "never Compacted");
}

/// LC3 at the boundary: from the oldest kept version works (all events of that revision),
/// from one below answers `Compacted` naming it; a revision leaves the history whole.
#[test]
fn history_trims_at_a_revision_boundary() {
    let now = start();
    let mut core = LocalCore::new(4);
    core.txn(vec![put("a", "1", Cond::Any)], now).unwrap();
    core.txn(vec![put("a", "2", Cond::Any), put("b", "2", Cond::Any)], now).unwrap();
    core.txn(vec![put("a", "3", Cond::Any)], now).unwrap();
    core.txn(vec![put("a", "4", Cond::Any)], now).unwrap();
    // Five events, four kept: revision 1 is gone.
    let versions =
        |from| core.events_since("", Version(from)).map(|e| e.iter().map(|e| e.version.0).collect());
    assert_eq!(versions(2), Ok(vec![2, 2, 3, 4]));
    assert_eq!(versions(1), Err(MetaError::Compacted { requested: Version(1), oldest: Version(2) }));
    // Revision 5 pushes out one event of revision 2: both leave.
    core.txn(vec![put("a", "5", Cond::Any)], now).unwrap();
    let versions =
        |from| core.events_since("", Version(from)).map(|e| e.iter().map(|e| e.version.0).collect());
    assert_eq!(versions(3), Ok(vec![3, 4, 5]));
    assert_eq!(versions(2), Err(MetaError::Compacted { requested: Version(2), oldest: Version(3) }));
    assert_eq!(versions(6), Ok(vec![]));
}

#[test]
fn leases_delete_their_keys_when_they_expire_or_are_revoked() {
    let now = start();
    let mut core = LocalCore::new(100);
    let lease = core.grant(Duration::from_secs(10), now).unwrap();
    core.txn(vec![leased("bookies/1", lease)], now).unwrap();
    core.keep_alive(lease, now + Duration::from_secs(8)).unwrap();
    assert!(core.expire(now + Duration::from_secs(12)).is_empty(), "kept alive");
    let before = core.revision();
    assert_eq!(core.expire(now + Duration::from_secs(19)), vec![lease]);
    assert!(core.get("bookies/1").is_none());
    let events = core.events_since("bookies/", Version(before.0 + 1)).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(core.keep_alive(lease, now + Duration::from_secs(20)), Err(MetaError::LeaseExpired(lease)));
    assert_eq!(core.txn(vec![leased("x", lease)], now), Err(MetaError::LeaseExpired(lease)));
    let other = core.grant(Duration::from_secs(10), now).unwrap();
    core.txn(vec![leased("y", other)], now).unwrap();
    core.revoke(other).unwrap();
    assert!(core.get("y").is_none());
}

/// M2: ttls are whole milliseconds rounded up (never 0 in the log), a zero ttl is invalid.
#[test]
fn lease_ttls_round_up_and_zero_is_invalid() {
    let now = start();
    let mut core = LocalCore::new(100);
    assert!(matches!(core.grant(Duration::ZERO, now), Err(MetaError::Invalid(_))));
    assert!(matches!(core.grant(LEASE_TTL_MAX + Duration::from_nanos(1), now), Err(MetaError::Invalid(_))));
    assert!(core.take_log().is_empty(), "nothing granted");
    let lease = core.grant(Duration::from_micros(300), now).unwrap();
    assert_eq!(lease, LeaseId(1), "refused grants take no id");
    core.grant(Duration::from_micros(1500), now).unwrap();
    core.txn(vec![leased("k", lease)], now).unwrap();
    assert_eq!(
        core.image().leases,
        [(LeaseId(1), Duration::from_millis(1)), (LeaseId(2), Duration::from_millis(2))]
    );
    let mut bytes = Vec::new();
    for record in core.take_log() {
        local_log::encode(&record, &mut bytes);
    }
    let mut replayed = LocalCore::new(100);
    for record in local_log::decode_log(&bytes).0 {
        replayed.replay(record, now).unwrap();
    }
    assert_eq!(replayed.image(), core.image());
    assert!(replayed.expire(now + Duration::from_micros(999)).is_empty());
    assert_eq!(replayed.expire(now + Duration::from_millis(1)), vec![lease]);
}

/// The largest offset from `base` the clock can represent, in whole seconds.
fn clock_range(base: Instant) -> u64 {
    let (mut fits, mut over) = (0u64, u64::MAX);
    while over - fits > 1 {
        let mid = fits + (over - fits) / 2;
        match base.checked_add(Duration::from_secs(mid)) {
            Some(_) => fits = mid,
            None => over = mid,
        }
    }
    fits
}

/// M3: a deadline past the clock's range answers `Invalid`, never panics.
#[test]
fn deadlines_past_the_clock_are_invalid() {
    let now = start();
    let range = clock_range(now);
    let ttl = LEASE_TTL_MAX;
    let Some(late) = now.checked_add(Duration::from_secs(range - ttl.as_secs())) else {
        return; // A clock without that range: nothing can overflow.
    };
    let mut core = LocalCore::new(100);
    let lease = core.grant(ttl, late).unwrap();
    let later = late + ttl / 2;
    assert!(matches!(core.keep_alive(lease, later), Err(MetaError::Invalid(_))));
    assert!(matches!(core.grant(ttl, later), Err(MetaError::Invalid(_))));
    assert!(matches!(core.grant(Duration::MAX, now), Err(MetaError::Invalid(_))));
    // Restoring an image whose deadlines cannot be represented is refused too.
    let mut restored = LocalCore::new(100);
    let image = core.image();
    assert!(matches!(restored.replay(LogRecord::State(Box::new(image)), later), Err(MetaError::Corrupt(_))));
}

/// Leases that expire together beyond `END_LEASES_MAX` end in several records.
#[test]
fn many_expiring_leases_end_in_bounded_records() {
    let now = start();
    let mut core = LocalCore::new(100);
    for _ in 0..END_LEASES_MAX + 3 {
        core.grant(Duration::from_millis(5), now).unwrap();
    }
    core.take_log();
    assert_eq!(core.expire(now + Duration::from_secs(1)).len(), END_LEASES_MAX + 3);
    let ends: Vec<usize> = core
        .take_log()
        .into_iter()
        .map(|r| match r {
            LogRecord::End(ids) => ids.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ends, [END_LEASES_MAX, 3]);
}

/// M2: a record that does not apply is corruption, reported as `Corrupt`, never ignored.
#[test]
fn records_that_do_not_apply_are_corruption() {
    let now = start();
    let image = |revision, keys, leases| {
        LogRecord::State(Box::new(StateImage { revision: Version(revision), lease_next: 3, keys, leases }))
    };
    let key = |lease| ("k".to_string(), Bytes::new(), Version(2), Version(1), lease);
    let bad = [
        vec![LogRecord::Txn(vec![delete("a", Cond::Any)])],
        vec![LogRecord::Txn(vec![put("a", "", Cond::Any), put("a", "", Cond::Any)])],
        vec![LogRecord::End(vec![LeaseId(5)])],
        vec![LogRecord::Grant { id: LeaseId(1), ttl: Duration::ZERO }],
        vec![
            LogRecord::Grant { id: LeaseId(1), ttl: Duration::from_secs(1) },
            LogRecord::Grant { id: LeaseId(1), ttl: Duration::from_secs(1) },
        ],
        vec![LogRecord::Txn(vec![put("a", "", Cond::Any)]), image(5, vec![], vec![])],
        vec![image(5, vec![key(Some(LeaseId(1)))], vec![])],
        vec![image(1, vec![key(None)], vec![])],
        vec![image(5, vec![key(None), key(None)], vec![])],
        vec![image(5, vec![], vec![(LeaseId(3), Duration::from_secs(1))])],
        vec![image(5, vec![], vec![(LeaseId(1), Duration::from_micros(10))])],
    ];
    for records in bad {
        let mut core = LocalCore::new(100);
        let last = records.len() - 1;
        for (i, record) in records.iter().enumerate() {
            let got = core.replay(record.clone(), now);
            if i < last {
                got.unwrap();
            } else {
                assert!(
                    matches!(&got, Err(MetaError::Corrupt(m)) if m.starts_with("metadata log")),
                    "{records:?}: {got:?}"
                );
            }
        }
    }
}

/// Runs a random mix of puts, deletes, transactions, leased puts (some with sub-millisecond
/// ttls), keep-alives, revocations and lease expiries.
fn drive(core: &mut LocalCore, ops: &[(u8, u8, u8)]) -> Vec<Version> {
    let mut now = start();
    let mut revisions = Vec::new();
    for (what, k, cond) in ops {
        let (what, k) = (*what, *k);
        let key = format!("k/{k}");
        let current = core.get(&key).map(|v| v.version);
        let cond = match cond {
            0 => Cond::Any,
            1 => Cond::Absent,
            _ => Cond::Version(current.unwrap_or(Version(7))),
        };
        let _ = match what {
            0 | 1 => core.txn(vec![put(&key, &format!("{k}{what}"), cond)], now).map(|_| ()),
            2 => core.txn(vec![Op::Delete { key, cond }], now).map(|_| ()),
            3 => {
                let other = format!("k/{}", (k + 1) % 6);
                core.txn(vec![put(&key, "t", cond), put(&other, "t", Cond::Any)], now).map(|_| ())
            }
            4 => {
                let ttl = match k % 2 {
                    0 => Duration::from_secs(u64::from(k) + 1),
                    _ => Duration::from_micros(u64::from(k) * 150 + 1),
                };
                let lease = core.grant(ttl, now).unwrap();
                let op = Op::Put { key, value: Bytes::from_static(b"l"), cond, lease: Some(lease) };
                core.txn(vec![op], now).map(|_| ())
            }
            5 => core.revoke(LeaseId(u64::from(k) + 1)).map(|_| ()),
            6 => core.keep_alive(LeaseId(u64::from(k) + 1), now),
            _ => {
                now += Duration::from_secs(u64::from(k));
                core.expire(now);
                Ok(())
            }
        };
        revisions.push(core.revision());
    }
    revisions
}

fn state(core: &LocalCore) -> BTreeMap<String, (Bytes, Version)> {
    core.list("", None, 0).items.into_iter().map(|(k, v)| (k, (v.value, v.version))).collect()
}

/// Everything replay must rebuild: keys with values, versions, created versions and leases,
/// the revision, the next lease id, each lease's ttl and the keys bound to it.
fn everything(core: &LocalCore) -> (StateImage, BTreeMap<LeaseId, BTreeSet<String>>) {
    let bound = core.leases.iter().map(|(id, l)| (*id, l.keys.iter().cloned().collect())).collect();
    (core.image(), bound)
}

fn replayed(bytes: &[u8]) -> LocalCore {
    let (records, end) = local_log::decode_log(bytes);
    assert_eq!(end, LogEnd::Clean { end: bytes.len() });
    // One instant for the whole replay, as a shell opening the log does.
    let now = start();
    let mut core = LocalCore::new(100_000);
    for record in records {
        core.replay(record, now).unwrap();
    }
    assert!(core.take_log().is_empty());
    core
}

proptest::proptest! {
    /// LC1 and LC3: replaying the history from the start rebuilds exactly the key map, and
    /// revisions only grow, whatever mix of operations ran.
    #[test]
    fn history_replays_to_the_state(ops in proptest::collection::vec((0u8..8, 0u8..6, 0u8..3), 1..120)) {
        let mut core = LocalCore::new(100_000);
        let revisions = drive(&mut core, &ops);
        proptest::prop_assert!(revisions.windows(2).all(|w| w[0] <= w[1]));
        let mut rebuilt = BTreeMap::new();
        for e in core.events_since("", Version(1)).unwrap() {
            match e.kind {
                EventKind::Put => {
                    rebuilt.insert(e.key, (e.value, e.version));
                }
                EventKind::Delete => {
                    rebuilt.remove(&e.key);
                }
            }
        }
        proptest::prop_assert_eq!(rebuilt, state(&core));
    }

    /// LL1: the log a core produced, encoded, decoded and replayed into an empty core, gives
    /// the same keys (versions, created versions, leases), revision and lease table; so does
    /// the image a rewritten log starts with, and records appended after it.
    #[test]
    fn the_log_replays_to_the_state(
        ops in proptest::collection::vec((0u8..8, 0u8..6, 0u8..3), 1..120),
        more in proptest::collection::vec((0u8..8, 0u8..6, 0u8..3), 0..40),
    ) {
        let mut core = LocalCore::new(100_000);
        drive(&mut core, &ops);
        let mut bytes = Vec::new();
        for record in core.take_log() {
            local_log::encode(&record, &mut bytes);
        }
        proptest::prop_assert_eq!(everything(&replayed(&bytes)), everything(&core));
        // A rewritten log: the image, then what came after.
        let mut rewritten = Vec::new();
        local_log::encode(&LogRecord::State(Box::new(core.image())), &mut rewritten);
        proptest::prop_assert_eq!(everything(&replayed(&rewritten)), everything(&core));
        drive(&mut core, &more);
        for record in core.take_log() {
            local_log::encode(&record, &mut rewritten);
        }
        proptest::prop_assert_eq!(everything(&replayed(&rewritten)), everything(&core));
    }
}

/// A transaction durable under other limits (an older build's) replays: replay checks the
/// structure of a logged transaction, not today's request limits.
#[test]
fn replay_does_not_apply_request_limits() {
    let now = start();
    let ops: Vec<Op> =
        (0..100).map(|i| put(&format!("{i:04}{}", "k".repeat(4000)), "v", Cond::Any)).collect();
    let mut live = LocalCore::new(100);
    assert!(matches!(live.txn(ops.clone(), now), Err(MetaError::Invalid(_))), "over today's limit");
    let mut replayed = LocalCore::new(100);
    replayed.replay(LogRecord::Txn(ops), now).unwrap();
    assert_eq!(replayed.revision(), Version(1));
    let twice = vec![put("a", "1", Cond::Any), put("a", "2", Cond::Any)];
    assert!(matches!(replayed.replay(LogRecord::Txn(twice), now), Err(MetaError::Corrupt(_))));
}
