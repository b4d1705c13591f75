//! Crash safety with a real process kill, on both backends: a child process (this test binary,
//! re-executed) appends entries in a loop and prints one line per entry once its add resolved;
//! the parent kills it with SIGKILL at a random moment, reopens the bookie and checks that every
//! acknowledged entry is there with exact bytes, and that recovery found no damage. Each test
//! runs several rounds on one directory, so every recovery also starts from what earlier kills
//! and recoveries left behind.
//!
//! - `crash_kill_keeps_acknowledged_entries`: the journal under kills (the write cache is large
//!   and never flushes).
//! - `crash_kill_during_flush_keeps_acknowledged_entries`: a 4 MiB write cache, 2 MiB entry logs
//!   and a flush interval of 1, 20 or 1000 ms by turns, so flushes, entry log rotations, manifest
//!   writes and journal reclaims run many times a second and kills land in the middle of them.
//!   The child also reports its flush counters; the parent reopens with flushes by time off, so
//!   the reads it answers from entry logs are of runs the children wrote.
//! - `crash_kill_during_compaction_keeps_acknowledged_entries`: as the flush test, with 1 MiB
//!   entry logs and eager compaction, and the child deletes a segment now and then (reporting it
//!   once the deletion resolved), so compaction passes, manifest writes and entry log deletions
//!   run all the time and move entries of every earlier round. Segments reported deleted must
//!   stay deleted; one whose deletion was asked but not reported may be either, and if it is
//!   still there, all its entries are.
//!
//! Reproduce a run with `DLOG_CRASH_SEED=<seed printed by the test>`.
#![allow(clippy::disallowed_methods, reason = "a crash test needs wall-clock time and sleeps")]

mod common;
use common::Rng;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, StdoutLock, Write};
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::{BACKENDS, add, payload};
use dlog_engine::{Backend, Bookie, BookieConfig, EntryId, Error, Pending, SegmentId, ShardId};

const CHILD_DIR: &str = "DLOG_CRASH_CHILD";
const CHILD_BACKEND: &str = "DLOG_CRASH_BACKEND";
const CHILD_BASE: &str = "DLOG_CRASH_BASE";
const CHILD_SEED: &str = "DLOG_CRASH_CHILD_SEED";
const CHILD_MODE: &str = "DLOG_CRASH_MODE";
const CHILD_TEST: &str = "crash_child_process";
/// Segments each child writes at once, from its base id (a deleted one is replaced by a new id).
const SEGMENTS: u64 = 6;
/// Add requests the child keeps unresolved at once (more when flushing: more bytes a second).
const CHILD_IN_FLIGHT: usize = 8;
const CHILD_IN_FLIGHT_FLUSHING: usize = 16;
/// How often a flushing child reports its counters.
const CHILD_STATS_EVERY: Duration = Duration::from_millis(10);
/// A compacting child deletes a segment about once in this many requests.
const CHILD_DELETE_ONE_IN: u64 = 25;
/// Entries a segment has at least before a compacting child deletes it.
const CHILD_DELETE_AFTER: u64 = 4;

/// What the child's bookie is set up to exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The journal: the default 256 MiB write cache never fills, and never flushes by time.
    Journal,
    /// Flushes: a 4 MiB write cache (a flush per 2 MiB), 2 MiB entry logs, and this flush
    /// interval in milliseconds (1: flushes back to back, small runs, many to a log; 20: runs of
    /// a few hundred KB; 1000: flushes started by size, 2 MiB runs, a new log for each).
    Flush(u64),
    /// Compaction: as `Flush`, with 1 MiB entry logs, compaction of every log under 90 % live at
    /// 1 GiB/s, and the child deleting a segment now and then.
    Compact(u64),
}

impl Mode {
    fn parse(name: &str) -> Mode {
        let interval = |prefix: &str| {
            let ms = name.strip_prefix(prefix)?.strip_suffix(')')?;
            Some(ms.parse().unwrap())
        };
        if name == "Journal" {
            Mode::Journal
        } else if let Some(ms) = interval("Flush(") {
            Mode::Flush(ms)
        } else if let Some(ms) = interval("Compact(") {
            Mode::Compact(ms)
        } else {
            panic!("unknown mode {name}")
        }
    }

    fn flushing(self) -> bool {
        self != Mode::Journal
    }

    /// Two shards, 2 MiB journal files (the child rotates through several), four batches in
    /// flight; when flushing small storage as well.
    fn config(self, dir: &Path, backend: Backend) -> BookieConfig {
        let mut config = common::config(dir, backend);
        config.shard_count = 2;
        config.batch_bytes_max = 64 << 10;
        config.entry_bytes_max = 64 << 10;
        config.journal_file_bytes = 2 << 20;
        config.writes_in_flight_max = 4;
        if let Mode::Flush(interval_ms) | Mode::Compact(interval_ms) = self {
            config.write_cache_bytes_max = 4 << 20;
            config.entry_log_bytes = 2 << 20;
            config.flush_interval_ms = interval_ms;
        }
        if let Mode::Compact(_) = self {
            config.entry_log_bytes = 1 << 20;
            config.compaction_live_fraction = 0.9;
            config.compaction_bytes_per_s = 1 << 30;
        }
        config
    }

    /// `Journal`: mostly small entries, some up to 40 KB. Flushing: larger ones (about 13 KB on
    /// average, up to 64 000 bytes) so the cache fills fast.
    fn entry_len(self, rng: &mut Rng) -> usize {
        (match (self, rng.below(20)) {
            (_, 0) => 0,
            (Mode::Journal, 1..=8) => rng.below(200),
            (Mode::Journal, 9..=16) => 200 + rng.below(1800),
            (Mode::Journal, 17..=18) => 2000 + rng.below(6000),
            (Mode::Journal, _) => 8000 + rng.below(32_000),
            (_, 1..=3) => rng.below(2000),
            (_, 4..=15) => 2000 + rng.below(14_000),
            (_, _) => 16_000 + rng.below(48_001),
        }) as usize
    }
}

/// (segment, entry, payload length).
type Ack = (u64, u64, usize);

enum Op {
    One(Pending<Result<(), Error>>),
    Many(Pending<Result<(), Vec<(usize, Error)>>>),
    Delete(u64, Pending<Result<(), Error>>),
}

/// Counters of a child's bookie, all shards.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    flushes: u64,
    flushed_bytes: u64,
    throttled: u64,
    compactions: u64,
    compacted_bytes: u64,
    logs_deleted: u64,
    deleted_bytes: u64,
}

impl Counters {
    fn of(bookie: &Bookie) -> Counters {
        let mut c = Counters::default();
        for shard in 0..bookie.shard_count() {
            let s = bookie.stats(ShardId(shard)).unwrap();
            c.flushes += s.flushes;
            c.flushed_bytes += s.flushed_bytes;
            c.throttled += s.adds_throttled;
            c.compactions += s.compactions;
            c.compacted_bytes += s.compacted_bytes;
            c.logs_deleted += s.entry_logs_deleted;
            c.deleted_bytes += s.deleted_bytes;
        }
        c
    }

    fn line(&self) -> String {
        let c = self;
        let (f, fb, t) = (c.flushes, c.flushed_bytes, c.throttled);
        let (cs, cb, ld, db) = (c.compactions, c.compacted_bytes, c.logs_deleted, c.deleted_bytes);
        format!("stats {f} {fb} {t} {cs} {cb} {ld} {db} .\n")
    }

    fn parse(numbers: &[&str]) -> Option<Counters> {
        let n: Vec<u64> = numbers.iter().map(|n| n.parse().ok()).collect::<Option<_>>()?;
        let [flushes, flushed_bytes, throttled, compactions, compacted_bytes, logs_deleted, deleted_bytes] =
            n[..]
        else {
            return None;
        };
        Some(Counters {
            flushes,
            flushed_bytes,
            throttled,
            compactions,
            compacted_bytes,
            logs_deleted,
            deleted_bytes,
        })
    }

    fn add(&mut self, other: &Counters) {
        self.flushes += other.flushes;
        self.flushed_bytes += other.flushed_bytes;
        self.throttled += other.throttled;
        self.compactions += other.compactions;
        self.compacted_bytes += other.compacted_bytes;
        self.logs_deleted += other.logs_deleted;
        self.deleted_bytes += other.deleted_bytes;
    }
}

/// The child's side: its bookie and what it tells the parent.
struct Writer {
    bookie: Bookie,
    mode: Mode,
    out: StdoutLock<'static>,
    reported: Instant,
}

impl Writer {
    /// Writes `lines` at once: a report is made before anything else happens.
    fn say(&mut self, lines: &str) {
        self.out.write_all(lines.as_bytes()).unwrap();
        self.out.flush().unwrap();
    }

    /// Waits for a request and reports its entries acknowledged or its segment deleted (and the
    /// counters, now and then).
    fn settle(&mut self, op: Op, ids: Vec<Ack>) {
        let mut lines = String::new();
        match op {
            Op::One(p) => p.wait().unwrap(),
            Op::Many(p) => p.wait().unwrap(),
            Op::Delete(segment, p) => {
                p.wait().unwrap();
                lines.push_str(&format!("deleted {segment} .\n"));
            }
        }
        for (segment, entry, len) in ids {
            lines.push_str(&format!("ack {segment} {entry} {len} .\n"));
        }
        if self.mode.flushing() && self.reported.elapsed() >= CHILD_STATS_EVERY {
            self.reported = Instant::now();
            lines.push_str(&Counters::of(&self.bookie).line());
        }
        self.say(&lines);
    }
}

/// The child: appends (and in `Compact` mode deletes) until killed. Not a test on its own
/// (returns at once without its environment); the parent runs it in a process of its own.
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let backend = match std::env::var(CHILD_BACKEND).unwrap().as_str() {
        "IoUring" => Backend::IoUring,
        "Portable" => Backend::Portable,
        other => panic!("unknown backend {other}"),
    };
    let mode = Mode::parse(&std::env::var(CHILD_MODE).unwrap());
    let base: u64 = std::env::var(CHILD_BASE).unwrap().parse().unwrap();
    let mut rng = Rng(std::env::var(CHILD_SEED).unwrap().parse().unwrap());
    let bookie = Bookie::open(mode.config(Path::new(&dir), backend)).unwrap();
    let mut w = Writer { bookie, mode, out: std::io::stdout().lock(), reported: Instant::now() };
    w.say("ready\n");
    let mut segments: Vec<u64> = (base..base + SEGMENTS).collect();
    let mut new_segment = base + SEGMENTS;
    let mut next = [0u64; SEGMENTS as usize];
    let mut pending: VecDeque<(Op, Vec<Ack>)> = VecDeque::new();
    let in_flight = if mode.flushing() { CHILD_IN_FLIGHT_FLUSHING } else { CHILD_IN_FLIGHT };
    loop {
        let delete = matches!(mode, Mode::Compact(_)) && rng.below(CHILD_DELETE_ONE_IN) == 0;
        let s = rng.below(SEGMENTS) as usize;
        if delete && next[s] >= CHILD_DELETE_AFTER {
            // Every add of the segment resolved and reported first (the parent knows all of its
            // entries), and the request said before it is made.
            while let Some((op, ids)) = pending.pop_front() {
                w.settle(op, ids);
            }
            // Reported once it resolved, in turn with the adds made after it.
            let segment = segments[s];
            w.say(&format!("deleting {segment} .\n"));
            pending.push_back((Op::Delete(segment, w.bookie.delete_segment(SegmentId(segment))), Vec::new()));
            assert!(new_segment < base + 1000, "segment ids of the next round");
            (segments[s], next[s]) = (new_segment, 0);
            new_segment += 1;
        }
        let count = if rng.below(3) == 0 { 2 + rng.below(10) as usize } else { 1 };
        let mut adds = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let s = rng.below(SEGMENTS) as usize;
            let (segment, entry, len) = (segments[s], next[s], mode.entry_len(&mut rng));
            next[s] += 1;
            adds.push(add(segment, entry, len));
            ids.push((segment, entry, len));
        }
        let op = if count == 1 {
            Op::One(w.bookie.add_entry(adds.pop().unwrap()))
        } else {
            Op::Many(w.bookie.add_entries(adds))
        };
        pending.push_back((op, ids));
        while pending.len() >= in_flight {
            let (op, ids) = pending.pop_front().unwrap();
            w.settle(op, ids);
        }
    }
}

/// Kills the child if the parent fails before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the parent saw of one child before the kill.
#[derive(Default)]
struct ChildRun {
    acks: Vec<Ack>,
    /// Segments the child asked to delete (said before the request was made).
    deleting: Vec<u64>,
    /// Segments whose deletion resolved Ok.
    deleted: Vec<u64>,
    /// The child's last report of its counters.
    stats: Counters,
    /// When the kill came, after the child was ready.
    killed_after: Duration,
}

impl ChildRun {
    /// Takes one line. Only whole lines count: the last one may have been cut by the kill.
    fn take(&mut self, line: &str) -> Option<()> {
        let line = line.strip_suffix('\n')?;
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ack", segment, entry, len, "."] => {
                self.acks.push((segment.parse().ok()?, entry.parse().ok()?, len.parse().ok()?));
            }
            ["deleting", segment, "."] => self.deleting.push(segment.parse().ok()?),
            ["deleted", segment, "."] => self.deleted.push(segment.parse().ok()?),
            ["stats", numbers @ .., "."] => self.stats = Counters::parse(numbers)?,
            _ => return None,
        }
        Some(())
    }
}

/// Runs one child until `run` after it is ready, kills it, returns what it acknowledged.
fn run_child(dir: &Path, backend: Backend, mode: Mode, base: u64, seed: u64, run: Duration) -> ChildRun {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_BACKEND, format!("{backend:?}"))
        .env(CHILD_MODE, format!("{mode:?}"))
        .env(CHILD_BASE, base.to_string())
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let started = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30).saturating_sub(started.elapsed()))
            .expect("the child did not get ready");
        // The harness prints "test crash_child_process ... " without a newline before it runs.
        if line.ends_with(" ready\n") || line == "ready\n" {
            break;
        }
    }
    // The kill comes `run` after ready or, if nothing was acknowledged by then (a loaded machine
    // can delay the first batch), right after the first acknowledgement.
    let ready = Instant::now();
    let (due, give_up) = (ready + run, ready + run + Duration::from_secs(30));
    let mut got = ChildRun::default();
    loop {
        let now = Instant::now();
        if (now >= due && !got.acks.is_empty()) || now >= give_up {
            break;
        }
        match rx.recv_timeout(if now < due { due - now } else { give_up - now }) {
            Ok(line) => {
                let _ = got.take(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    got.killed_after = ready.elapsed();
    assert!(child.0.try_wait().unwrap().is_none(), "the child stopped before it was killed");
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    reader.join().unwrap();
    for line in rx.try_iter() {
        let _ = got.take(&line);
    }
    got
}

/// Entries acknowledged so far and their payloads, made once each: every restart reads them all
/// again, and making payloads is most of the time a check takes in a debug build.
#[derive(Default)]
struct Acked {
    entries: Vec<Ack>,
    payloads: Vec<Bytes>,
}

impl Acked {
    fn extend(&mut self, acks: &[Ack]) {
        self.entries.extend_from_slice(acks);
        self.payloads.extend(acks.iter().map(|(s, e, len)| payload(*s, *e, *len)));
    }

    /// Forgets the entries of deleted `segments`; returns the entry after the last of each.
    fn forget(&mut self, segments: &[u64]) -> BTreeMap<u64, u64> {
        let mut next: BTreeMap<u64, u64> = segments.iter().map(|s| (*s, 0)).collect();
        let entries = std::mem::take(&mut self.entries);
        let payloads = std::mem::take(&mut self.payloads);
        for (ack, bytes) in entries.into_iter().zip(payloads) {
            match next.get_mut(&ack.0) {
                Some(n) => *n = (*n).max(ack.1 + 1),
                None => {
                    self.entries.push(ack);
                    self.payloads.push(bytes);
                }
            }
        }
        next
    }
}

/// Reads every entry, many at a time, and checks its bytes.
fn check_entries(bookie: &Bookie, acked: &Acked, what: &str) {
    for (chunk, payloads) in acked.entries.chunks(256).zip(acked.payloads.chunks(256)) {
        let reads: Vec<_> =
            chunk.iter().map(|(s, e, _)| bookie.read_entry(SegmentId(*s), EntryId(*e))).collect();
        for (((segment, entry, len), expected), read) in chunk.iter().zip(payloads).zip(reads) {
            // Round `i` writes segments from 1000 * (i + 1).
            let from = segment / 1000 - 1;
            match read.wait() {
                Ok(bytes) => assert!(
                    bytes == expected,
                    "{what}: acknowledged segment {segment} entry {entry} (written in round {from}) has \
                     wrong bytes ({} bytes, {len} expected)",
                    bytes.len()
                ),
                Err(e) => panic!(
                    "{what}: acknowledged segment {segment} entry {entry} (written in round {from}, \
                     {len} bytes) lost: {e}"
                ),
            }
        }
    }
}

/// Entry logs in the storage directories of all shards.
fn entry_logs(dir: &Path, shards: u32) -> usize {
    (0..shards)
        .filter_map(|s| std::fs::read_dir(dir.join(format!("storage-{s}"))).ok())
        .flatten()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("entrylog-"))
        .count()
}

/// A read of a segment never written answers `NoSuchEntry` on every shard: `Corrupt` would mean
/// recovery found damage (in the journal or the entry logs) that may have held it.
fn check_no_damage(bookie: &Bookie, what: &str) {
    for shard in 0..bookie.shard_count() {
        let segment = (900_000..).map(SegmentId).find(|s| bookie.shard_of(*s) == ShardId(shard)).unwrap();
        match bookie.read_entry(segment, EntryId(0)).wait() {
            Err(Error::NoSuchEntry(..)) => {}
            other => panic!("{what}: shard {shard}, never-written segment {}: {other:?}", segment.0),
        }
    }
}

/// Reads answered from entry logs, all shards.
fn total_log_reads(bookie: &Bookie) -> u64 {
    (0..bookie.shard_count()).map(|s| bookie.stats(ShardId(s)).unwrap().log_reads).sum()
}

fn seed(test: &str) -> u64 {
    let seed = match std::env::var("DLOG_CRASH_SEED") {
        Ok(s) => s.parse().expect("DLOG_CRASH_SEED is a u64"),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }
    };
    println!("{test} seed: DLOG_CRASH_SEED={seed}");
    seed
}

/// Deleted segments stay deleted: reads answer `NoSuchSegment` (the first and the last entry
/// acknowledged), and a new add `Deleted`.
fn check_deleted(bookie: &Bookie, deleted: &BTreeMap<u64, u64>, what: &str) {
    let reads: Vec<_> = deleted
        .iter()
        .flat_map(|(s, next)| [0, next.saturating_sub(1)].map(|e| (*s, e)))
        .map(|(s, e)| (s, e, bookie.read_entry(SegmentId(s), EntryId(e))))
        .collect();
    for (segment, entry, read) in reads {
        match read.wait() {
            Err(Error::NoSuchSegment(_)) => {}
            other => panic!(
                "{what}: deleted segment {segment}: a read of entry {entry} answered {:?} (bytes), not NoSuchSegment",
                other.map(|b| b.len())
            ),
        }
    }
    for (segment, entry) in deleted {
        match bookie.add_entry(add(*segment, *entry, 100)).wait() {
            Err(Error::Deleted(_)) => {}
            other => panic!(
                "{what}: deleted segment {segment}: an add of entry {entry} answered {other:?}, not Deleted"
            ),
        }
    }
}

/// `rounds` kills per backend, each after a random time in `run_ms` once the child is ready, all
/// on the same directory: kill, reopen and check, close, the next child writes more, kill.
/// Round `i` runs its child in `modes[i % modes.len()]`.
fn crash_rounds(test: &str, modes: &[Mode], rounds: usize, run_ms: RangeInclusive<u64>) {
    let seed = seed(test);
    let mut rng = Rng(seed);
    let flushing = modes.iter().any(|m| m.flushing());
    let compacting = modes.iter().any(|m| matches!(m, Mode::Compact(_)));
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        // The parent's reopen flushes nothing by time: reads from entry logs are the children's runs.
        let reopen = BookieConfig { flush_interval_ms: 3_600_000, ..modes[0].config(dir.path(), backend) };
        let mut acked = Acked::default();
        // Deleted segments, and the entry a new add to each would be.
        let mut deleted: BTreeMap<u64, u64> = BTreeMap::new();
        let mut log_reads = 0;
        let mut total = Counters::default();
        for round in 0..rounds {
            let mode = modes[round % modes.len()];
            let run = Duration::from_millis(run_ms.start() + rng.below(run_ms.end() - run_ms.start() + 1));
            let child_seed = rng.next_u64();
            let base = 1000 * (round as u64 + 1);
            let what = format!("{test} seed {seed} {backend:?} round {round} ({mode:?}, kill after {run:?})");
            let got = run_child(dir.path(), backend, mode, base, child_seed, run);
            assert!(!got.acks.is_empty(), "{what}: nothing was acknowledged in {:?}", got.killed_after);
            let mut sorted = got.acks.clone();
            sorted.sort_unstable();
            sorted.dedup_by_key(|(s, e, _)| (*s, *e));
            assert_eq!(sorted.len(), got.acks.len(), "{what}: an entry was acknowledged twice");
            acked.extend(&got.acks);
            deleted.extend(acked.forget(&got.deleted));
            total.add(&got.stats);
            let logs = entry_logs(dir.path(), reopen.shard_count);
            let stats = got.stats;
            if flushing {
                // At 1000 ms only a full cache half starts a flush: a short run may see none.
                let by_time = matches!(mode, Mode::Flush(ms) | Mode::Compact(ms) if ms <= 20);
                assert!(!by_time || stats.flushes > 0, "{what}: the child reported no flush before the kill");
                assert!(logs > 0, "{what}: no entry log on disk");
            }

            let bookie = Bookie::open(reopen.clone()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let mut cut = Vec::new();
            for report in bookie.replay_reports() {
                assert!(report.damage.is_empty(), "{what}: a kill left damage: {:?}", report.damage);
                cut.extend(report.torn_tail.iter().map(|t| t.bytes));
            }
            // A deletion asked for but not reported may have happened or not: the bookie says which
            // (if not, check_entries reads all of the segment's entries).
            let mut doubt = Vec::new();
            for &s in got.deleting.iter().filter(|s| !got.deleted.contains(s)) {
                let gone = matches!(
                    bookie.read_entry(SegmentId(s), EntryId(0)).wait(),
                    Err(Error::NoSuchSegment(_))
                );
                if gone {
                    deleted.extend(acked.forget(&[s]));
                }
                doubt.push(format!("segment {s} {}", if gone { "deleted" } else { "kept" }));
            }
            let reads_before = total_log_reads(&bookie);
            check_entries(&bookie, &acked, &what);
            check_deleted(&bookie, &deleted, &what);
            let reads = total_log_reads(&bookie) - reads_before;
            log_reads += reads;
            let mut flushed = String::new();
            if flushing {
                flushed = format!(
                    "; the child reported {} flushes ({} bytes, adds throttled {} times); {logs} entry logs; \
                     {reads} of {} reads from entry logs",
                    stats.flushes,
                    stats.flushed_bytes,
                    stats.throttled,
                    acked.entries.len()
                );
            }
            if compacting {
                flushed.push_str(&format!(
                    "; {} segments deleted (unreported: {doubt:?}), the child reported {} compactions ({} bytes), \
                     {} entry logs deleted, {} bytes of deleted segments dropped",
                    got.deleted.len(),
                    stats.compactions,
                    stats.compacted_bytes,
                    stats.logs_deleted,
                    stats.deleted_bytes
                ));
            }
            println!(
                "{what}: killed after {:?}, {} entries acknowledged, torn tails cut: {cut:?}{flushed}",
                got.killed_after,
                got.acks.len()
            );
            // Four flushes mean two of one shard: the first one's manifest and checkpoint were
            // persisted, so its entries (acknowledged long before the kill) are read from its run
            // (unless deleted: not checked when compacting).
            let flush_only = matches!(mode, Mode::Flush(_));
            assert!(!flush_only || stats.flushes < 4 || reads > 0, "{what}: no read came from an entry log");
            check_no_damage(&bookie, &what);
            // Each entry carries LAC = its id - 1, so a durable entry e makes the LAC at least e - 1.
            let mut max_acked: BTreeMap<u64, u64> = BTreeMap::new();
            for (s, e, _) in got.acks.iter().filter(|(s, _, _)| !deleted.contains_key(s)) {
                let max = max_acked.entry(*s).or_default();
                *max = (*max).max(*e);
            }
            for (s, max) in max_acked {
                let lac = bookie.read_last_add_confirmed(SegmentId(s)).wait();
                match lac {
                    Ok(lac) if max == 0 || lac.is_some_and(|l| l.0 + 1 >= max) => {}
                    other => panic!("{what}: segment {s} acknowledged up to {max}, LAC {other:?}"),
                }
            }
            bookie.close();
        }
        if flushing {
            // Each child flushed many times, each flush but the last with its manifest persisted.
            assert!(
                log_reads > 0,
                "{test} seed {seed} {backend:?}: no read after a restart came from an entry log"
            );
        }
        if compacting {
            // Without these the test would go on passing without exercising compaction.
            assert!(
                total.compactions > 0 && total.logs_deleted > 0 && !deleted.is_empty(),
                "{test} seed {seed} {backend:?}: compaction was not exercised: {} segments deleted, the \
                 children reported {total:?}",
                deleted.len()
            );
        }
    }
}

/// The journal alone under kills.
#[test]
fn crash_kill_keeps_acknowledged_entries() {
    crash_rounds("crash_kill_keeps_acknowledged_entries", &[Mode::Journal], 3, 50..=400);
}

/// Kills while flushes, entry log rotations, manifest writes and journal reclaims run many times
/// a second: flushes back to back (1 ms interval), every 20 ms, and every 2 MiB (1000 ms).
#[test]
fn crash_kill_during_flush_keeps_acknowledged_entries() {
    let test = "crash_kill_during_flush_keeps_acknowledged_entries";
    crash_rounds(test, &[Mode::Flush(1), Mode::Flush(20), Mode::Flush(1000)], 6, 100..=350);
}

/// Kills while segments are deleted and compaction passes, manifest writes and entry log
/// deletions run all the time, moving entries of earlier rounds: flushes every 5 ms and 50 ms.
#[test]
fn crash_kill_during_compaction_keeps_acknowledged_entries() {
    let test = "crash_kill_during_compaction_keeps_acknowledged_entries";
    crash_rounds(test, &[Mode::Compact(5), Mode::Compact(50)], 4, 150..=400);
}
