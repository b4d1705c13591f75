//! Segment deletion and entry-log compaction through the bookie API: tombstones survive
//! restarts, the deletion check guards every drop, compaction moves live entries and deletes
//! emptied logs, and a seeded property test runs adds, deletes, flushes and restarts against a
//! model while compaction runs.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Rng, add, config, payload};
use dlog_engine::{
    Backend, Bookie, BookieConfig, CoreStats, DeletionCheck, DeletionHook, EntryId, Error, SegmentId, ShardId,
};

fn gc_config(dir: &Path, backend: Backend) -> BookieConfig {
    let mut config = config(dir, backend);
    config.shard_count = 1;
    config.pin_shards = false;
    config.write_cache_bytes_max = 4 << 20;
    config.entry_log_bytes = 2 << 20;
    config.compaction_live_fraction = 0.6;
    config.compaction_bytes_per_s = 1 << 30;
    config
}

fn log_count(dir: &Path) -> usize {
    fs::read_dir(dir.join("storage-0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("entrylog-"))
        .count()
}

fn stats(bookie: &Bookie) -> CoreStats {
    bookie.stats(ShardId(0)).unwrap()
}

/// Polls until `done` holds (the shard compacts on its own timers), at most 30 s.
fn eventually(bookie: &Bookie, what: &str, done: impl Fn(&CoreStats) -> bool) -> CoreStats {
    for _ in 0..3000 {
        let s = stats(bookie);
        if done(&s) {
            return s;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
    panic!("{what}: not reached in 30 s: {:?}", stats(bookie));
}

/// Writes `count` entries of `len` bytes to each segment in turn, one flushable batch each.
fn write_interleaved(bookie: &Bookie, segments: &[u64], from: u64, count: u64, len: usize) {
    for e in from..from + count {
        let adds = segments.iter().map(|s| add(*s, e, len)).collect();
        bookie.add_entries(adds).wait().unwrap();
    }
}

fn check(bookie: &Bookie, segment: u64, count: u64, len: usize, what: &str) {
    for e in 0..count {
        let got = bookie.read_entry(SegmentId(segment), EntryId(e)).wait();
        let got = got.unwrap_or_else(|err| panic!("{what}: segment {segment} entry {e}: {err}"));
        assert!(got == payload(segment, e, len), "{what}: segment {segment} entry {e}: wrong bytes");
    }
}

#[test]
fn deleted_segments_stay_deleted_and_their_logs_are_reclaimed() {
    for backend in common::BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = gc_config(dir.path(), backend);
        let bookie = Bookie::open(config.clone()).unwrap();
        // Segment 1 takes three quarters of every run, segment 2 one quarter.
        write_interleaved(&bookie, &[1, 1, 1, 2], 0, 1, 10);
        for round in 0..6 {
            for e in 0..40 {
                let id = 1 + round * 40 + e;
                let adds = vec![
                    add(1, 3 * id, 8000),
                    add(1, 3 * id + 1, 8000),
                    add(1, 3 * id + 2, 8000),
                    add(2, id, 8000),
                ];
                bookie.add_entries(adds).wait().unwrap();
            }
            bookie.flush().unwrap();
        }
        let logs_before = log_count(dir.path());
        assert!(logs_before >= 4, "{backend:?}: {logs_before} logs");
        bookie.delete_segment(SegmentId(1)).wait().unwrap();
        assert!(matches!(bookie.add_entry(add(1, 10_000, 10)).wait(), Err(Error::Deleted(_))));
        assert!(matches!(bookie.read_entry(SegmentId(1), EntryId(5)).wait(), Err(Error::NoSuchSegment(_))));
        let s = eventually(&bookie, "compaction", |s| s.entry_logs_deleted >= 2 && s.compactions >= 1);
        assert!(s.deleted_bytes > 0, "{backend:?}: {s:?}");
        let after = |e: u64| if e == 0 { 10 } else { 8000 };
        for e in 0..241 {
            let got = bookie.read_entry(SegmentId(2), EntryId(e)).wait().unwrap();
            assert!(got == payload(2, e, after(e)), "{backend:?}: segment 2 entry {e}");
        }
        assert!(log_count(dir.path()) < logs_before, "{backend:?}: logs were deleted");
        bookie.close();
        let bookie = Bookie::open(config).unwrap();
        assert!(matches!(bookie.add_entry(add(1, 10_001, 10)).wait(), Err(Error::Deleted(_))), "tombstone");
        assert!(matches!(bookie.read_entry(SegmentId(1), EntryId(5)).wait(), Err(Error::NoSuchSegment(_))));
        for e in 0..241 {
            let got = bookie.read_entry(SegmentId(2), EntryId(e)).wait().unwrap();
            assert!(got == payload(2, e, after(e)), "{backend:?}: after restart, segment 2 entry {e}");
        }
        bookie.close();
    }
}

struct Refuse(AtomicBool);

impl DeletionCheck for Refuse {
    fn confirm_deleted(&self, _segment: SegmentId) -> bool {
        !self.0.load(Ordering::Relaxed)
    }
}

#[test]
fn an_unconfirmed_deletion_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = gc_config(dir.path(), Backend::Portable);
    let refuse = Arc::new(Refuse(AtomicBool::new(true)));
    config.deletion_check = Some(DeletionHook(refuse.clone()));
    let bookie = Bookie::open(config.clone()).unwrap();
    write_interleaved(&bookie, &[3, 4], 0, 200, 4000);
    bookie.flush().unwrap();
    bookie.delete_segment(SegmentId(3)).wait().unwrap();
    bookie.flush().unwrap();
    std::thread::park_timeout(Duration::from_millis(200));
    let s = stats(&bookie);
    assert_eq!((s.deleted_bytes, s.compactions, s.entry_logs_deleted), (0, 0, 0), "{s:?}");
    bookie.close();
    // Confirmed at the next open: the deletion check is asked again.
    refuse.0.store(false, Ordering::Relaxed);
    let bookie = Bookie::open(config).unwrap();
    eventually(&bookie, "confirmed at open", |s| s.deleted_bytes > 0);
    check(&bookie, 4, 200, 4000, "segment 4");
    bookie.close();
}

/// Seeded random adds (submitted without waiting, so they race with compaction), deletes,
/// flushes and restarts, checked against a model after every step that waits.
#[test]
fn compaction_under_concurrent_adds_and_deletes_matches_a_model() {
    let seeds: u64 = std::env::var("DLOG_GC_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let (mut compactions, mut logs_deleted) = (0, 0);
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        let backend = if seed % 2 == 0 { Backend::IoUring } else { Backend::Portable };
        let config = gc_config(dir.path(), backend);
        let mut rng = Rng(seed);
        let mut model: BTreeMap<u64, Option<Vec<usize>>> = BTreeMap::new(); // None: deleted.
        let mut bookie = Bookie::open(config.clone()).unwrap();
        for step in 0..120 {
            let what = format!("seed {seed} step {step}");
            match rng.below(20) {
                0 => {
                    // Delete a live segment.
                    let live: Vec<u64> = model.iter().filter(|(_, v)| v.is_some()).map(|(s, _)| *s).collect();
                    if let Some(s) = live.get(rng.below(live.len().max(1) as u64) as usize) {
                        bookie.delete_segment(SegmentId(*s)).wait().unwrap();
                        model.insert(*s, None);
                    }
                }
                1 => bookie.flush().unwrap(),
                2 => {
                    compactions += stats(&bookie).compactions;
                    logs_deleted += stats(&bookie).entry_logs_deleted;
                    bookie.close();
                    bookie = Bookie::open(config.clone()).unwrap();
                }
                _ => {
                    // A burst of adds to a few segments, all in flight at once.
                    let mut pending = Vec::new();
                    for _ in 0..8 {
                        let s = rng.below(6);
                        let Some(sizes) = model.entry(s).or_insert_with(|| Some(Vec::new())) else {
                            continue;
                        };
                        let len = 1 + rng.below(12_000) as usize;
                        let e = sizes.len() as u64;
                        sizes.push(len);
                        pending.push((s, e, bookie.add_entry(add(s, e, len))));
                    }
                    for (s, e, p) in pending {
                        p.wait().unwrap_or_else(|err| panic!("{what}: add {s}/{e}: {err}"));
                    }
                }
            }
            if step % 15 == 14 {
                verify(&bookie, &model, &what);
            }
        }
        // Let compaction finish what it started, then check everything once more.
        bookie.flush().unwrap();
        std::thread::park_timeout(Duration::from_millis(100));
        verify(&bookie, &model, &format!("seed {seed} end"));
        compactions += stats(&bookie).compactions;
        logs_deleted += stats(&bookie).entry_logs_deleted;
        bookie.close();
        let bookie = Bookie::open(config).unwrap();
        verify(&bookie, &model, &format!("seed {seed} reopened"));
        bookie.close();
    }
    assert!(
        compactions > 0 && logs_deleted > 0,
        "the model test never compacted ({compactions}, {logs_deleted})"
    );
}

fn verify(bookie: &Bookie, model: &BTreeMap<u64, Option<Vec<usize>>>, what: &str) {
    for (s, state) in model {
        match state {
            Some(sizes) => {
                for (e, len) in sizes.iter().enumerate() {
                    let got = bookie.read_entry(SegmentId(*s), EntryId(e as u64)).wait();
                    let got = got.unwrap_or_else(|err| panic!("{what}: segment {s} entry {e}: {err}"));
                    assert!(got == payload(*s, e as u64, *len), "{what}: segment {s} entry {e}: wrong bytes");
                }
            }
            None => {
                let got = bookie.read_entry(SegmentId(*s), EntryId(0)).wait();
                assert!(matches!(got, Err(Error::NoSuchSegment(_))), "{what}: deleted segment {s}: {got:?}");
            }
        }
    }
}
