//! Segment storage through the bookie API: flushes into entry logs, reads from the write cache
//! and from entry logs, journal reclaim after flushes, restart from the manifest, index rebuild
//! without it, damage answered as `Corrupt` (including runs whose seq is repeated or past the
//! limit, and a manifest's next run seq past it), and write-cache backpressure. Every test runs
//! on both backends.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{BACKENDS, add, config, payload};
use dlog_engine::journal::record::{self, RecordHeader};
use dlog_engine::storage::manifest::{Manifest, ManifestRun};
use dlog_engine::storage::run::RUN_SEQ_LIMIT;
use dlog_engine::{Backend, Bookie, BookieConfig, EntryId, Error, LogSeq, SegmentId, ShardId};

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
        let (reads_before, hits_before) = (stats.log_reads, stats.read_cache_hits);
        check_all(&bookie, &entries, "from entry logs");
        let stats = bookie.stats(ShardId(0)).unwrap();
        let from_disk = stats.log_reads - reads_before + stats.read_cache_hits - hits_before;
        assert_eq!(from_disk, entries.len() as u64, "{backend:?}: all from logs or the read cache");
        // Read again: the read cache answers what it kept (64 MiB holds all of it).
        check_all(&bookie, &entries, "from the read cache");
        let again = bookie.stats(ShardId(0)).unwrap();
        assert_eq!(again.log_reads, stats.log_reads, "{backend:?}: no disk read the second time");
        assert_eq!(again.read_cache_hits - stats.read_cache_hits, entries.len() as u64);
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

/// Writes `entries`, flushes, closes: the first entry log's path and bytes.
fn flushed_log(config: &BookieConfig, dir: &Path, entries: &[(u64, u64, usize)]) -> (PathBuf, Vec<u8>) {
    let bookie = Bookie::open(config.clone()).unwrap();
    write(&bookie, entries);
    bookie.flush().unwrap();
    bookie.close();
    let log = log_files(dir)[0].clone();
    let bytes = fs::read(&log).unwrap();
    (log, bytes)
}

#[test]
fn a_corrupted_entry_log_byte_answers_corrupt() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let entries: Vec<_> = (0..50).map(|e| (5, e, 1000)).collect();
        let (log, mut bytes) = flushed_log(&config, dir.path(), &entries);
        let log = &log;
        // Flip one byte inside entry 17's payload (found by its bytes).
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
        // A range read stops before the damaged entry; asked from it, it answers Corrupt.
        let first = bookie.read_range(SegmentId(5), EntryId(0), EntryId(49), 1 << 20).wait().unwrap();
        assert_eq!(first.len(), 17, "{backend:?}: the range stops at the damaged entry");
        match bookie.read_range(SegmentId(5), EntryId(17), EntryId(49), 1 << 20).wait() {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("{backend:?}: expected Corrupt from read_range, got {other:?}"),
        }
        let rest = bookie.read_range(SegmentId(5), EntryId(18), EntryId(49), 1 << 20).wait().unwrap();
        assert_eq!(rest.len(), 32, "{backend:?}");
        bookie.close();
    }
}

#[test]
fn a_damaged_run_footer_makes_missing_entries_corrupt_not_absent() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let entries: Vec<_> = (0..20).map(|e| (6, e, 300)).collect();
        let (log, mut bytes) = flushed_log(&config, dir.path(), &entries);
        let log = &log;
        // Zero the sector that holds the run's footer.
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
        // The damaged log is never deleted or compacted away, whatever happens next (G3).
        bookie.add_entry(common::add(7, 0, 100)).wait().unwrap();
        bookie.flush().unwrap();
        std::thread::park_timeout(std::time::Duration::from_millis(200));
        bookie.close();
        assert!(log.exists(), "{backend:?}: the damaged entry log was deleted");
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
        std::thread::park_timeout(std::time::Duration::from_millis(1));
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

/// Reads `segment`'s entries `from..=to` with `read_range` calls of at most `max_bytes`.
fn read_all_ranges(
    bookie: &Bookie,
    segment: u64,
    from: u64,
    to: u64,
    max_bytes: usize,
) -> (Vec<(u64, bytes::Bytes)>, usize) {
    let mut out = Vec::new();
    let mut calls = 0;
    let mut next = from;
    while next <= to {
        let batch = bookie.read_range(SegmentId(segment), EntryId(next), EntryId(to), max_bytes).wait();
        let batch = batch.unwrap_or_else(|e| panic!("read_range {segment} from {next}: {e}"));
        assert!(!batch.is_empty(), "read_range returned nothing from {next}");
        calls += 1;
        for (id, payload) in batch {
            assert_eq!(id.0, next, "entries come in order without gaps");
            out.push((id.0, payload));
            next += 1;
        }
    }
    (out, calls)
}

#[test]
fn read_range_reads_runs_and_cache_in_order() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let bookie = Bookie::open(config.clone()).unwrap();
        let entries = workload();
        write(&bookie, &entries);
        bookie.flush().unwrap();
        // Newer entries stay in the write cache: a range crosses from runs into it.
        write(&bookie, &(300..350).map(|e| (1, e, 100)).collect::<Vec<_>>());
        let (got, calls) = read_all_ranges(&bookie, 1, 0, 349, 1000);
        assert_eq!(got.len(), 350);
        for (id, payload) in &got {
            assert!(*payload == payload_of(1, *id, 100), "{backend:?}: entry {id}");
        }
        assert!(calls >= 35, "{backend:?}: max_bytes bounds each call ({calls} calls)");
        // One large call per run section at most.
        let (got, calls) = read_all_ranges(&bookie, 2, 0, 299, 64 << 20);
        assert_eq!(got.len(), 300);
        for (id, payload) in &got {
            assert!(*payload == payload_of(2, *id, (*id as usize * 37) % 9000), "{backend:?}: entry {id}");
        }
        assert!(calls <= 12, "{backend:?}: {calls} calls for 300 entries in a few runs");
        // The first entry missing answers NoSuchEntry; a range past the end stops at it.
        let missing = bookie.read_range(SegmentId(1), EntryId(350), EntryId(400), 1 << 20).wait();
        assert!(matches!(missing, Err(Error::NoSuchEntry(..))), "{missing:?}");
        let tail = bookie.read_range(SegmentId(1), EntryId(340), EntryId(400), 1 << 20).wait().unwrap();
        assert_eq!(tail.len(), 10);
        let empty = bookie.read_range(SegmentId(1), EntryId(5), EntryId(4), 1 << 20).wait();
        assert!(matches!(empty, Err(Error::InvalidRequest(_))), "{empty:?}");
        bookie.close();
    }
}

fn payload_of(segment: u64, entry: u64, len: usize) -> bytes::Bytes {
    payload(segment, entry, len)
}

#[test]
fn wait_for_last_add_confirmed_answers_when_it_moves_or_times_out() {
    use std::time::Duration;
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let bookie = Bookie::open(config).unwrap();
        let s = SegmentId(11);
        // Nothing yet: a short wait times out with no LAC.
        let none = bookie.wait_for_last_add_confirmed(s, None, Duration::from_millis(20)).wait().unwrap();
        assert_eq!(none, None);
        write(&bookie, &(0..10).map(|e| (11, e, 100)).collect::<Vec<_>>());
        assert_eq!(bookie.read_last_add_confirmed(s).wait().unwrap(), Some(EntryId(8)));
        // Already past: answered at once.
        let now = bookie.wait_for_last_add_confirmed(s, Some(EntryId(5)), Duration::from_secs(60));
        assert_eq!(wait_bounded(now, "already past").unwrap(), Some(EntryId(8)));
        // Not yet past: answered by the next add carrying a higher LAC.
        let waiting = bookie.wait_for_last_add_confirmed(s, Some(EntryId(8)), Duration::from_secs(60));
        let other = bookie.wait_for_last_add_confirmed(s, Some(EntryId(9)), Duration::from_secs(60));
        bookie.add_entry(add(11, 10, 100)).wait().unwrap(); // Carries LAC 9.
        assert_eq!(wait_bounded(waiting, "moved").unwrap(), Some(EntryId(9)));
        // The explicit LAC write moves it further.
        bookie.write_last_add_confirmed(s, common::key(), EntryId(10)).wait().unwrap();
        assert_eq!(wait_bounded(other, "explicit LAC").unwrap(), Some(EntryId(10)));
        // Not past and nothing happens: answered at the timeout with the LAC as it is.
        let timed_out = bookie.wait_for_last_add_confirmed(s, Some(EntryId(10)), Duration::from_millis(30));
        assert_eq!(wait_bounded(timed_out, "timeout").unwrap(), Some(EntryId(10)));
        // Waits open when the bookie closes are answered (ShardStopped), not left hanging.
        let open = bookie.wait_for_last_add_confirmed(s, Some(EntryId(10)), Duration::from_secs(600));
        bookie.close();
        assert!(matches!(wait_bounded(open, "close"), Err(Error::ShardStopped(_))));
    }
}

/// The storage manifest of shard 0.
fn manifest_of(dir: &Path) -> Manifest {
    Manifest::decode(&fs::read(dir.join("storage-0/manifest")).unwrap()).unwrap()
}

fn write_manifest(dir: &Path, manifest: &Manifest) {
    fs::write(dir.join("storage-0/manifest"), manifest.encode()).unwrap();
}

/// Makes the run at (`log`, `offset`) claim run seq `seq` in its header and footer, CRCs
/// valid: what a damaged disk (or a bug) could leave, and a checksum does not catch.
fn forge_run_seq(dir: &Path, log: LogSeq, offset: u64, seq: u64) {
    let path = dir.join(format!("storage-0/entrylog-{:016x}.log", log.0));
    let mut bytes = fs::read(&path).unwrap();
    let run = &mut bytes[offset as usize..];
    let header = dlog_engine::storage::run::decode_header(run, log.0).unwrap();
    // The header record keeps the seq in `entry_id`, the footer record in `segment_id`.
    let set_header: fn(&mut RecordHeader, u64) = |h, seq| h.entry_id = seq;
    let set_footer: fn(&mut RecordHeader, u64) = |h, seq| h.segment_id = seq;
    for (at, set) in [(0, set_header), (header.footer_at as usize, set_footer)] {
        let (mut h, payload) = record::decode(&run[at..], log.0).unwrap();
        let payload = payload.to_vec();
        set(&mut h, seq);
        record::encode(&mut run[at..at + record::record_bytes(payload.len())], log.0, &h, &payload);
    }
    fs::write(&path, &bytes).unwrap();
}

/// Segment 1's entries flushed as one run, then segment 2's as another: the two runs, as the
/// manifest lists them.
fn two_runs(config: &BookieConfig, dir: &Path) -> [ManifestRun; 2] {
    let bookie = Bookie::open(config.clone()).unwrap();
    write(&bookie, &(0..20).map(|e| (1, e, 300)).collect::<Vec<_>>());
    bookie.flush().unwrap();
    write(&bookie, &(0..20).map(|e| (2, e, 300)).collect::<Vec<_>>());
    bookie.flush().unwrap();
    bookie.close();
    let runs = manifest_of(dir).runs;
    assert_eq!(runs.len(), 2, "one run per flush: {runs:?}");
    [runs[0], runs[1]]
}

/// Ten entries of segment 3 added and flushed after the damaged open; returns them.
fn write_more_and_flush(bookie: &Bookie) -> Vec<(u64, u64, usize)> {
    let more: Vec<_> = (0..10).map(|e| (3, e, 300)).collect();
    write(bookie, &more);
    wait_bounded(bookie.flush_shard(ShardId(0)), "flush").unwrap();
    more
}

/// Without the manifest, the rebuild scan finds the refused run the same way: entry 3 of
/// segment 2 still answers `Corrupt`, and `more` reads back.
fn rebuild_keeps_the_damage(config: &BookieConfig, dir: &Path, more: &[(u64, u64, usize)]) {
    fs::remove_file(dir.join("storage-0/manifest")).unwrap();
    let bookie = Bookie::open(config.clone()).unwrap();
    expect_corrupt(&bookie, 2, 3, "after a rebuild");
    check_all(&bookie, more, "after a rebuild");
    bookie.close();
}

fn expect_corrupt(bookie: &Bookie, segment: u64, entry: u64, what: &str) {
    match bookie.read_entry(SegmentId(segment), EntryId(entry)).wait() {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("{what}: segment {segment} entry {entry}: expected Corrupt, got {other:?}"),
    }
}

/// Regression (a fuzz finding, `entry_log_decode`): two runs claiming one seq, CRCs valid. The run
/// index let the second take the first's place, so the first's entries were read at the
/// second's offsets (answering `Corrupt` for intact entries), and dropping one run's spans
/// panicked the shard. Now the second is damage (RI3): the first answers, the second's
/// entries answer `Corrupt`, never `NoSuchEntry`, and its log is kept (G3).
#[test]
fn two_runs_under_one_seq_are_damage_not_a_panic() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let [first, second] = two_runs(&config, dir.path());
        forge_run_seq(dir.path(), second.log, second.offset, first.seq);
        let mut manifest = manifest_of(dir.path());
        manifest.runs[1].seq = first.seq;
        write_manifest(dir.path(), &manifest);
        let bookie = Bookie::open(config.clone()).unwrap();
        check_all(&bookie, &(0..20).map(|e| (1, e, 300)).collect::<Vec<_>>(), "the first run");
        expect_corrupt(&bookie, 2, 3, "the refused run");
        expect_corrupt(&bookie, 9, 0, "damage is known");
        // Dropping the first run's spans leaves the index whole.
        wait_bounded(bookie.delete_segment(SegmentId(1)), "delete").unwrap();
        expect_corrupt(&bookie, 2, 3, "after the deletion");
        let more = write_more_and_flush(&bookie);
        check_all(&bookie, &more, "written after open");
        bookie.close();
        assert!(dir.path().join(format!("storage-0/entrylog-{:016x}.log", second.log.0)).exists());
        // The rebuild scan finds the two runs the same way.
        rebuild_keeps_the_damage(&config, dir.path(), &more);
    }
}

/// Regression (a fuzz finding, `entry_log_decode`): a run claiming seq `u64::MAX`, CRCs valid and
/// listed so in the manifest, overflowed the next run seq at open. Now it is damage (RN4).
#[test]
fn a_run_seq_past_the_limit_is_damage_not_a_panic() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let [_, second] = two_runs(&config, dir.path());
        forge_run_seq(dir.path(), second.log, second.offset, u64::MAX);
        let mut manifest = manifest_of(dir.path());
        manifest.runs[1].seq = u64::MAX;
        write_manifest(dir.path(), &manifest);
        let bookie = Bookie::open(config.clone()).unwrap();
        check_all(&bookie, &(0..20).map(|e| (1, e, 300)).collect::<Vec<_>>(), "the other run");
        expect_corrupt(&bookie, 2, 3, "the refused run");
        let more = write_more_and_flush(&bookie);
        bookie.close();
        let next_run = manifest_of(dir.path()).next_run;
        assert!(next_run < RUN_SEQ_LIMIT, "{backend:?}: next run seq {next_run}");
        rebuild_keeps_the_damage(&config, dir.path(), &more);
    }
}

/// Regression (a fuzz finding): a manifest's `next_run` of `u64::MAX` made the
/// first flush after open overflow it. Now it is damage, and seqs continue after the highest
/// indexed run (F4).
#[test]
fn a_manifest_next_run_past_the_limit_is_damage_not_a_panic() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        let [_, second] = two_runs(&config, dir.path());
        let mut manifest = manifest_of(dir.path());
        manifest.next_run = u64::MAX;
        write_manifest(dir.path(), &manifest);
        let bookie = Bookie::open(config.clone()).unwrap();
        let more = write_more_and_flush(&bookie);
        expect_corrupt(&bookie, 9, 0, "damage is known");
        bookie.close();
        let manifest = manifest_of(dir.path());
        assert_eq!(manifest.next_run, second.seq + 2, "{backend:?}: one run since open");
        let bookie = Bookie::open(config.clone()).unwrap();
        check_all(&bookie, &(0..20).map(|e| (2, e, 300)).collect::<Vec<_>>(), "after restart");
        check_all(&bookie, &more, "after restart");
        bookie.close();
    }
}

/// F4: with every run seq below 2^63 used, a flush fails (and is retried) rather than write a
/// run no open could read; the journal keeps its entries.
#[test]
fn no_run_seq_left_fails_flushes_and_loses_nothing() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_config(dir.path(), backend);
        two_runs(&config, dir.path());
        let mut manifest = manifest_of(dir.path());
        manifest.next_run = RUN_SEQ_LIMIT;
        write_manifest(dir.path(), &manifest);
        let bookie = Bookie::open(config.clone()).unwrap();
        let more: Vec<_> = (0..10).map(|e| (3, e, 300)).collect();
        write(&bookie, &more);
        let _flush = bookie.flush_shard(ShardId(0));
        #[expect(clippy::disallowed_methods, reason = "a test's own time bound")]
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while bookie.stats(ShardId(0)).unwrap().run_write_failures == 0 {
            #[expect(clippy::disallowed_methods, reason = "a test's own time bound")]
            let now = std::time::Instant::now();
            assert!(now < deadline, "{backend:?}: the flush did not fail");
            std::thread::park_timeout(std::time::Duration::from_millis(5));
        }
        check_all(&bookie, &more, "from the write cache");
        bookie.close();
        let bookie = Bookie::open(config.clone()).unwrap();
        check_all(&bookie, &more, "replayed from the journal");
        check_all(&bookie, &(0..20).map(|e| (1, e, 300)).collect::<Vec<_>>(), "from entry logs");
        bookie.close();
    }
}
