//! Segment storage through the bookie API: flushes into entry logs, reads from the write cache
//! and from entry logs, journal reclaim after flushes, restart from the manifest, index rebuild
//! without it, damage answered as `Corrupt`, and write-cache backpressure. Every test runs on
//! both backends.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{BACKENDS, add, config, payload};
use dlog_engine::{Backend, Bookie, BookieConfig, EntryId, Error, SegmentId, ShardId};

fn storage_config(dir: &Path, backend: Backend) -> BookieConfig {
    let mut config = config(dir, backend);
    config.shard_count = 1;
    config.pin_shards = false;
    config.write_cache_bytes_max = 4 << 20;
    config.entry_log_bytes = 4 << 20;
    config
}

/// Entries of segments 1..=3 with sizes that cross chunk and sector boundaries.
fn workload() -> Vec<(u64, u64, usize)> {
    let mut out = Vec::new();
    for e in 0..300 {
        out.push((1, e, 100));
        out.push((2, e, (e as usize * 37) % 9000));
        if e % 3 == 0 {
            out.push((3, e / 3, 70_000));
        }
    }
    out
}

fn write(bookie: &Bookie, entries: &[(u64, u64, usize)]) {
    for chunk in entries.chunks(64) {
        let adds = chunk.iter().map(|(s, e, len)| add(*s, *e, *len)).collect();
        bookie.add_entries(adds).wait().unwrap();
    }
}

fn check_all(bookie: &Bookie, entries: &[(u64, u64, usize)], what: &str) {
    for (s, e, len) in entries {
        let got = bookie.read_entry(SegmentId(*s), EntryId(*e)).wait();
        let got = got.unwrap_or_else(|err| panic!("{what}: segment {s} entry {e}: {err}"));
        assert!(got == payload(*s, *e, *len), "{what}: segment {s} entry {e}: wrong bytes");
    }
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir.join("storage-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn flushed_entries_read_back_before_and_after_restart() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let entries = workload();
        let bookie = Bookie::open(config.clone()).unwrap();
        write(&bookie, &entries);
        check_all(&bookie, &entries, "from the cache or logs");
        bookie.flush().unwrap();
        let stats = bookie.stats(ShardId(0)).unwrap();
        assert!(stats.flushes >= 2, "{backend:?}: a 4 MiB cache flushes several times: {stats:?}");
        let reads_before = stats.log_reads;
        check_all(&bookie, &entries, "from entry logs");
        let stats = bookie.stats(ShardId(0)).unwrap();
        assert_eq!(stats.log_reads - reads_before, entries.len() as u64, "{backend:?}: all from logs");
        assert!(log_files(dir.path()).len() >= 2, "{backend:?}: 4 MiB logs rotate");
        // The journal was checkpointed past everything: little is left to replay.
        bookie.close();
        let bookie = Bookie::open(config.clone()).unwrap();
        assert_eq!(bookie.replay_reports()[0].entries, 0, "{backend:?}: nothing to replay after a flush");
        check_all(&bookie, &entries, "after restart");
        assert!(matches!(bookie.read_entry(SegmentId(1), EntryId(300)).wait(), Err(Error::NoSuchEntry(..))));
        assert!(matches!(bookie.read_entry(SegmentId(9), EntryId(0)).wait(), Err(Error::NoSuchEntry(..))));
        // Entries after the last flush come back from the journal.
        let more: Vec<_> = (300..340).map(|e| (1, e, 100)).collect();
        write(&bookie, &more);
        bookie.close();
        let bookie = Bookie::open(config.clone()).unwrap();
        assert_eq!(bookie.replay_reports()[0].entries, 40, "{backend:?}");
        check_all(&bookie, &entries, "second restart");
        check_all(&bookie, &more, "second restart, replayed");
        bookie.close();
    }
}

#[test]
fn index_is_rebuilt_from_entry_logs_without_the_manifest() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let entries = workload();
        let bookie = Bookie::open(config.clone()).unwrap();
        write(&bookie, &entries);
        bookie.flush().unwrap();
        bookie.close();
        fs::remove_file(dir.path().join("storage-0/manifest")).unwrap();
        let bookie = Bookie::open(config.clone()).unwrap();
        check_all(&bookie, &entries, "rebuilt index");
        bookie.close();
        // A damaged manifest is treated the same way.
        fs::write(dir.path().join("storage-0/manifest"), b"not a manifest").unwrap();
        let bookie = Bookie::open(config.clone()).unwrap();
        check_all(&bookie, &entries, "rebuilt index, damaged manifest");
        bookie.close();
    }
}

#[test]
fn a_corrupted_entry_log_byte_answers_corrupt() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let entries: Vec<_> = (0..50).map(|e| (5, e, 1000)).collect();
        let bookie = Bookie::open(config.clone()).unwrap();
        write(&bookie, &entries);
        bookie.flush().unwrap();
        bookie.close();
        // Flip one byte inside entry 17's payload (found by its bytes).
        let log = &log_files(dir.path())[0];
        let mut bytes = fs::read(log).unwrap();
        let needle = payload(5, 17, 1000);
        let at = bytes.windows(64).position(|w| w == &needle[..64]).expect("payload in the log");
        bytes[at + 500] ^= 0x01;
        fs::write(log, &bytes).unwrap();
        let bookie = Bookie::open(config.clone()).unwrap();
        match bookie.read_entry(SegmentId(5), EntryId(17)).wait() {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("{backend:?}: expected Corrupt, got {other:?}"),
        }
        let others: Vec<_> = entries.iter().copied().filter(|(_, e, _)| *e != 17).collect();
        check_all(&bookie, &others, "undamaged entries");
        bookie.close();
    }
}

#[test]
fn a_damaged_run_footer_makes_missing_entries_corrupt_not_absent() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let entries: Vec<_> = (0..20).map(|e| (6, e, 300)).collect();
        let bookie = Bookie::open(config.clone()).unwrap();
        write(&bookie, &entries);
        bookie.flush().unwrap();
        bookie.close();
        // Zero the sector that holds the run's footer.
        let log = &log_files(dir.path())[0];
        let mut bytes = fs::read(log).unwrap();
        let name = log.file_stem().unwrap().to_string_lossy().to_string();
        let epoch = u64::from_str_radix(name.trim_start_matches("entrylog-"), 16).unwrap();
        let header = dlog_engine::storage::run::decode_header(&bytes, epoch).unwrap();
        let footer = header.footer_at as usize / 4096 * 4096;
        bytes[footer..footer + 4096].fill(0);
        fs::write(log, &bytes).unwrap();
        let bookie = Bookie::open(config.clone()).unwrap();
        match bookie.read_entry(SegmentId(6), EntryId(3)).wait() {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("{backend:?}: expected Corrupt, got {other:?}"),
        }
        bookie.close();
        // Without the manifest, the scan finds bytes that are not a whole run: still Corrupt.
        fs::remove_file(dir.path().join("storage-0/manifest")).unwrap();
        let bookie = Bookie::open(config.clone()).unwrap();
        match bookie.read_entry(SegmentId(6), EntryId(3)).wait() {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("{backend:?}: expected Corrupt after a rebuild, got {other:?}"),
        }
        bookie.close();
    }
}

#[test]
fn a_small_write_cache_throttles_adds_and_loses_nothing() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let bookie = Bookie::open(config.clone()).unwrap();
        // 24 MiB through a 4 MiB cache, submitted without waiting: flushes must keep up.
        let pending: Vec<_> = (0..384)
            .map(|e| bookie.add_entries((0..4).map(|i| add(7, e * 4 + i, 16 << 10)).collect()))
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
        let stats = bookie.stats(ShardId(0)).unwrap();
        assert!(stats.flushes >= 6, "{backend:?}: {stats:?}");
        let entries: Vec<_> = (0..1536).map(|e| (7, e, 16 << 10)).collect();
        check_all(&bookie, &entries, "throttled");
        bookie.close();
        let bookie = Bookie::open(config).unwrap();
        check_all(&bookie, &entries, "throttled, after restart");
        bookie.close();
    }
}

#[test]
fn fence_key_and_lac_survive_flushes_and_restarts() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let bookie = Bookie::open(config.clone()).unwrap();
        write(&bookie, &(0..10).map(|e| (8, e, 100)).collect::<Vec<_>>());
        assert_eq!(bookie.fence(SegmentId(8), common::key()).wait().unwrap(), Some(EntryId(8)));
        bookie.flush().unwrap();
        // Fill enough to reclaim the journal files that held the fence.
        let filler: Vec<_> = (0..200).map(|e| (9, e, 60 << 10)).collect();
        write(&bookie, &filler);
        bookie.flush().unwrap();
        bookie.close();
        let bookie = Bookie::open(config).unwrap();
        assert!(matches!(bookie.add_entry(add(8, 10, 100)).wait(), Err(Error::Fenced(_))));
        let mut wrong = add(8, 11, 100);
        wrong.master_key = bytes::Bytes::from_static(b"another key");
        assert!(matches!(bookie.add_entry(wrong).wait(), Err(Error::WrongMasterKey(_) | Error::Fenced(_))));
        assert_eq!(bookie.read_last_add_confirmed(SegmentId(8)).wait().unwrap(), Some(EntryId(8)));
        bookie.close();
    }
}

/// Waits for `pending` at most 30 s: a lost reply fails the test instead of hanging it.
fn wait_bounded<R>(mut pending: dlog_engine::Pending<R>, what: &str) -> R {
    #[expect(clippy::disallowed_methods, reason = "a test's own time bound")]
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(result) = pending.poll_ready() {
            return result;
        }
        #[expect(clippy::disallowed_methods, reason = "a test's own time bound")]
        let now = std::time::Instant::now();
        assert!(now < deadline, "{what}: no reply within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Regression: a flush requested while another runs, with nothing added since, was never
/// answered (and its shard spun on a deadline in the past).
#[test]
fn a_flush_requested_during_a_flush_is_answered() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let bookie = Bookie::open(config).unwrap();
        write(&bookie, &(0..200).map(|e| (4, e, 1000)).collect::<Vec<_>>());
        let first = bookie.flush_shard(ShardId(0));
        let second = bookie.flush_shard(ShardId(0));
        let third = bookie.flush_shard(ShardId(0));
        wait_bounded(first, "first flush").unwrap();
        wait_bounded(second, "second flush").unwrap();
        wait_bounded(third, "third flush").unwrap();
        wait_bounded(bookie.flush_shard(ShardId(0)), "idle flush").unwrap();
        bookie.close();
    }
}
