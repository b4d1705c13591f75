//! A full disk: the shard turns read-only under `disk_free_bytes_min` (plain adds answer
//! `NoSpace`; reads, fences, LAC writes and recovery adds still work) and writable again above
//! `disk_free_bytes_resume`; on a real small filesystem (tmpfs, when the test may mount one),
//! filling it loses no acknowledged entry, corrupts nothing, and deleting data brings writes
//! back.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{add, config, payload};
use dlog_engine::{
    AddFlags, Backend, Bookie, BookieConfig, EntryId, Error, FreeSpace, FreeSpaceHook, SegmentId, ShardId,
};

struct Gauge(AtomicU64);

impl FreeSpace for Gauge {
    fn free_bytes(&self, _path: &Path) -> std::io::Result<u64> {
        Ok(self.0.load(Ordering::Relaxed))
    }
}

/// Polls `f` every 10 ms until it returns true, at most 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
    panic!("{what}: not within 10 s");
}

#[test]
fn read_only_below_the_threshold_with_hysteresis() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), Backend::Portable);
    config.shard_count = 1;
    config.pin_shards = false;
    let gauge = Arc::new(Gauge(AtomicU64::new(10 << 30)));
    config.free_space = Some(FreeSpaceHook(gauge.clone()));
    let bookie = Bookie::open(config).unwrap();
    for e in 0..10 {
        bookie.add_entry(add(1, e, 100)).wait().unwrap();
    }
    gauge.0.store(100 << 20, Ordering::Relaxed);
    let mut next = 10;
    eventually("read-only", || {
        let refused = matches!(bookie.add_entry(add(1, next, 100)).wait(), Err(Error::NoSpace(_)));
        if !refused {
            next += 1;
        }
        refused
    });
    assert!(bookie.stats(ShardId(0)).unwrap().read_only);
    // Reads, recovery adds, LAC writes and fences still work.
    for e in 0..next {
        assert_eq!(bookie.read_entry(SegmentId(1), EntryId(e)).wait().unwrap(), payload(1, e, 100));
    }
    let mut recovery = add(1, next, 100);
    recovery.flags = AddFlags::RECOVERY;
    bookie.add_entry(recovery).wait().unwrap();
    bookie.write_last_add_confirmed(SegmentId(1), common::key(), EntryId(next)).wait().unwrap();
    bookie.flush().unwrap();
    // Between the thresholds: still read-only (hysteresis).
    gauge.0.store(1536 << 20, Ordering::Relaxed);
    std::thread::park_timeout(Duration::from_millis(1500));
    assert!(matches!(bookie.add_entry(add(2, 0, 100)).wait(), Err(Error::NoSpace(_))));
    // Above the resume threshold: writable again.
    gauge.0.store(3 << 30, Ordering::Relaxed);
    eventually("writable again", || bookie.add_entry(add(2, 0, 100)).wait().is_ok());
    assert_eq!(bookie.fence(SegmentId(1), common::key()).wait().unwrap(), Some(EntryId(next)));
    bookie.close();
}

/// Mounts a tmpfs of `mib` at `dir`; false where the test may not (not root, no mount).
fn mount_tmpfs(dir: &Path, mib: u64) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// Adds 32 KiB entries to segments 1 and 2 until `refusals_max` adds were refused with
/// `NoSpace` (at least one must be); returns the acknowledged (segment, entry) pairs.
fn fill(bookie: &Bookie, refusals_max: u32, what: &str) -> Vec<(u64, u64)> {
    let mut acked = Vec::new();
    let mut refused = 0;
    for e in 0..4000u64 {
        for s in [1u64, 2] {
            match bookie.add_entry(add(s, e, 32 << 10)).wait() {
                Ok(()) => acked.push((s, e)),
                Err(Error::NoSpace(_)) => {
                    refused += 1;
                    if refused > refusals_max {
                        return acked;
                    }
                    std::thread::park_timeout(Duration::from_millis(20));
                }
                Err(other) => panic!("{what}: add {s}/{e}: unexpected {other}"),
            }
        }
    }
    panic!("{what}: the filesystem never filled");
}

fn small_disk_config(dir: &Path, backend: Backend) -> BookieConfig {
    let mut config = config(dir, backend);
    config.shard_count = 1;
    config.pin_shards = false;
    config.journal_file_bytes = 6 << 20;
    config.journal_files_recycled_max = 1;
    config.entry_bytes_max = 256 << 10;
    config.write_cache_bytes_max = 4 << 20;
    config.entry_log_bytes = 4 << 20;
    config.disk_free_bytes_min = 8 << 20;
    config.disk_free_bytes_resume = 16 << 20;
    // Two interleaved segments: deleting one leaves every log half live.
    config.compaction_live_fraction = 0.6;
    config
}

#[test]
fn filling_a_real_small_filesystem_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    if !mount_tmpfs(dir.path(), 64) {
        eprintln!("skipped: cannot mount a tmpfs here (the free-space hook test covers read-only mode)");
        return;
    }
    let _unmount = Unmount(dir.path());
    for backend in common::BACKENDS {
        let root = dir.path().join(format!("{backend:?}"));
        let config = small_disk_config(&root, backend);
        let bookie = Bookie::open(config.clone()).unwrap();
        // Fill: 32 KiB entries over two segments until adds are refused.
        let acked = fill(&bookie, 20, &format!("{backend:?}"));
        for (s, e) in &acked {
            let got = bookie.read_entry(SegmentId(*s), EntryId(*e)).wait().unwrap();
            assert!(got == payload(*s, *e, 32 << 10), "{backend:?}: {s}/{e}");
        }
        // Read-only leaves room for control records: deleting a segment works, and compaction
        // and log deletion free enough space to make the shard writable again.
        bookie.delete_segment(SegmentId(1)).wait().unwrap();
        let mut next = 10_000;
        eventually("writable after a deletion", || {
            let _ = bookie.flush();
            let ok = bookie.add_entry(add(3, next, 1000)).wait().is_ok();
            if ok {
                next += 1;
            }
            ok
        });
        bookie.close();
        // Nothing is corrupt: the bookie opens and every acknowledged entry of the kept
        // segments is there.
        let bookie = Bookie::open(config.clone()).unwrap();
        for (s, e) in acked.iter().filter(|(s, _)| *s == 2) {
            let got = bookie.read_entry(SegmentId(*s), EntryId(*e)).wait();
            let got = got.unwrap_or_else(|err| panic!("{backend:?}: after reopen {s}/{e}: {err}"));
            assert!(got == payload(*s, *e, 32 << 10), "{backend:?}: after reopen {s}/{e}");
        }
        for e in 10_000..next {
            assert!(bookie.read_entry(SegmentId(3), EntryId(e)).wait().is_ok(), "{backend:?}: 3/{e}");
        }
        assert!(matches!(bookie.read_entry(SegmentId(1), EntryId(0)).wait(), Err(Error::NoSuchSegment(_))));
        bookie.close();
        std::fs::remove_dir_all(&root).unwrap();
    }
}

/// With no free-space threshold, writes go on until the filesystem is really full: journal
/// file preparation and entry log writes meet ENOSPC. Nothing acknowledged is lost, and the
/// bookie opens again on the full disk (its O_DIRECT probe cannot write a scratch sector).
#[test]
fn a_completely_full_filesystem_loses_nothing_and_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    if !mount_tmpfs(dir.path(), 48) {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _unmount = Unmount(dir.path());
    let root = dir.path().join("bookie");
    let mut config = small_disk_config(&root, Backend::IoUring);
    config.disk_free_bytes_min = 0;
    config.disk_free_bytes_resume = 0;
    let bookie = Bookie::open(config.clone()).unwrap();
    // Each refusal may first wait for a flush retry (about a second): stop after a few.
    let acked = fill(&bookie, 3, "completely full");
    bookie.close();
    let bookie = Bookie::open(config).unwrap();
    for (s, e) in &acked {
        let got = bookie.read_entry(SegmentId(*s), EntryId(*e)).wait();
        let got = got.unwrap_or_else(|err| panic!("after reopen on a full disk {s}/{e}: {err}"));
        assert!(got == payload(*s, *e, 32 << 10), "after reopen on a full disk {s}/{e}");
    }
    bookie.close();
}
