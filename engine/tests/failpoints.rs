//! Fault injection through real disks (feature `failpoints`): a journal flush that fails
//! poisons its shard for good, through both backends, and a restart recovers every entry that
//! was acknowledged; an entry log write that fails is retried and poisons nothing (F3).
//!
//! Run: `cargo test -p dlog-engine --features failpoints --test failpoints`.

mod common;

use common::{BACKENDS, add, config, key, payload};
use dlog_engine::{Bookie, EntryId, Error, SegmentId};

#[test]
fn flush_failure_poisons_shard_and_restart_recovers() {
    let scenario = fail::FailScenario::setup();
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), backend);
        config.shard_count = 1;
        let bookie = Bookie::open(config.clone()).unwrap();
        for e in 0..10 {
            bookie.add_entry(add(1, e, 100)).wait().unwrap();
        }
        fail::cfg("dlog-journal-flush-eio", "1*return").unwrap();
        match bookie.add_entry(add(1, 10, 100)).wait() {
            Err(Error::Io { .. }) => {}
            other => panic!("{backend:?}: expected the flush error, got {other:?}"),
        }
        fail::remove("dlog-journal-flush-eio");
        // For good: later writes of any kind are refused, even though the disk works again.
        assert!(matches!(bookie.add_entry(add(1, 11, 100)).wait(), Err(Error::Poisoned(_))));
        assert!(matches!(bookie.add_entry(add(2, 0, 100)).wait(), Err(Error::Poisoned(_))));
        assert!(matches!(bookie.fence(SegmentId(1), key()).wait(), Err(Error::Poisoned(_))));
        // What was durable before the failure is still served.
        assert_eq!(bookie.read_entry(SegmentId(1), EntryId(9)).wait().unwrap(), payload(1, 9, 100));
        // The LAC the failed add carried (9) was seen when it was accepted: a true statement of
        // the writer's, whether or not its record became durable here (S5).
        assert_eq!(bookie.read_last_add_confirmed(SegmentId(1)).wait().unwrap(), Some(EntryId(9)));
        bookie.close();

        let bookie = Bookie::open(config).unwrap();
        for e in 0..10 {
            assert_eq!(bookie.read_entry(SegmentId(1), EntryId(e)).wait().unwrap(), payload(1, e, 100));
        }
        bookie.add_entry(add(1, 11, 100)).wait().unwrap();
        bookie.close();
    }
    scenario.teardown();
}

/// F3: an entry log write that fails (EIO) does not poison the shard and loses nothing: the
/// flush is retried in a new entry log, adds go on, and a restart reads everything back.
#[test]
fn entry_log_write_failure_is_retried_without_poisoning() {
    let scenario = fail::FailScenario::setup();
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), backend);
        config.shard_count = 1;
        config.write_cache_bytes_max = 4 << 20;
        let bookie = Bookie::open(config.clone()).unwrap();
        for e in 0..100 {
            bookie.add_entry(add(1, e, 1000)).wait().unwrap();
        }
        fail::cfg("dlog-entry-log-write-eio", "2*return").unwrap();
        // Two attempts fail; the third (after the retry delays) lands.
        bookie.flush().unwrap();
        fail::remove("dlog-entry-log-write-eio");
        let stats = bookie.stats(dlog_engine::ShardId(0)).unwrap();
        assert_eq!((stats.flushes, stats.run_write_failures), (1, 2), "{backend:?}: {stats:?}");
        // Not poisoned: adds and fences work.
        bookie.add_entry(add(1, 100, 1000)).wait().unwrap();
        for e in 0..101 {
            assert_eq!(bookie.read_entry(SegmentId(1), EntryId(e)).wait().unwrap(), payload(1, e, 1000));
        }
        bookie.close();
        let bookie = Bookie::open(config).unwrap();
        for e in 0..101 {
            assert_eq!(bookie.read_entry(SegmentId(1), EntryId(e)).wait().unwrap(), payload(1, e, 1000));
        }
        bookie.fence(SegmentId(1), key()).wait().unwrap();
        bookie.close();
    }
    scenario.teardown();
}
