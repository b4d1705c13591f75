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
//!
//! Reproduce a run with `DLOG_CRASH_SEED=<seed printed by the test>`.
#![allow(clippy::disallowed_methods, reason = "a crash test needs wall-clock time and sleeps")]

mod common;
use common::Rng;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
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
/// Segments each child writes, from its base id.
const SEGMENTS: u64 = 6;
/// Add requests the child keeps unresolved at once (more when flushing: more bytes a second).
const CHILD_IN_FLIGHT: usize = 8;
const CHILD_IN_FLIGHT_FLUSHING: usize = 16;
/// How often a flushing child reports its flush counters.
const CHILD_STATS_EVERY: Duration = Duration::from_millis(10);

/// What the child's bookie is set up to exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The journal: the default 256 MiB write cache never fills, and never flushes by time.
    Journal,
    /// Flushes: a 4 MiB write cache (a flush per 2 MiB), 2 MiB entry logs, and this flush
    /// interval in milliseconds (1: flushes back to back, small runs, many to a log; 20: runs of
    /// a few hundred KB; 1000: flushes started by size, 2 MiB runs, a new log for each).
    Flush(u64),
}

impl Mode {
    fn parse(name: &str) -> Mode {
        match name {
            "Journal" => Mode::Journal,
            other => match other.strip_prefix("Flush(").and_then(|ms| ms.strip_suffix(')')) {
                Some(ms) => Mode::Flush(ms.parse().unwrap()),
                None => panic!("unknown mode {other}"),
            },
        }
    }

    /// Two shards, 2 MiB journal files (the child rotates through several), four batches in
    /// flight; in `Flush` mode small storage as well.
    fn config(self, dir: &Path, backend: Backend) -> BookieConfig {
        let mut config = common::config(dir, backend);
        config.shard_count = 2;
        config.batch_bytes_max = 64 << 10;
        config.entry_bytes_max = 64 << 10;
        config.journal_file_bytes = 2 << 20;
        config.writes_in_flight_max = 4;
        if let Mode::Flush(interval_ms) = self {
            config.write_cache_bytes_max = 4 << 20;
            config.entry_log_bytes = 2 << 20;
            config.flush_interval_ms = interval_ms;
        }
        config
    }

    /// `Journal`: mostly small entries, some up to 40 KB. `Flush`: larger ones (about 13 KB on
    /// average, up to 64 000 bytes) so the cache fills fast.
    fn entry_len(self, rng: &mut Rng) -> usize {
        (match (self, rng.below(20)) {
            (_, 0) => 0,
            (Mode::Journal, 1..=8) => rng.below(200),
            (Mode::Journal, 9..=16) => 200 + rng.below(1800),
            (Mode::Journal, 17..=18) => 2000 + rng.below(6000),
            (Mode::Journal, _) => 8000 + rng.below(32_000),
            (Mode::Flush(_), 1..=3) => rng.below(2000),
            (Mode::Flush(_), 4..=15) => 2000 + rng.below(14_000),
            (Mode::Flush(_), _) => 16_000 + rng.below(48_001),
        }) as usize
    }
}

/// (segment, entry, payload length).
type Ack = (u64, u64, usize);

enum Op {
    One(Pending<Result<(), Error>>),
    Many(Pending<Result<(), Vec<(usize, Error)>>>),
}

/// The child: appends until killed. Not a test on its own (returns at once without its
/// environment); the parent runs it in a process of its own.
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
    let mut out = std::io::stdout().lock();
    out.write_all(b"ready\n").unwrap();
    out.flush().unwrap();
    let mut next = [0u64; SEGMENTS as usize];
    let mut pending: VecDeque<(Op, Vec<Ack>)> = VecDeque::new();
    let mut reported = Instant::now();
    loop {
        let count = if rng.below(3) == 0 { 2 + rng.below(10) as usize } else { 1 };
        let mut adds = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let s = rng.below(SEGMENTS) as usize;
            let (segment, entry, len) = (base + s as u64, next[s], mode.entry_len(&mut rng));
            next[s] += 1;
            adds.push(add(segment, entry, len));
            ids.push((segment, entry, len));
        }
        let op = if count == 1 {
            Op::One(bookie.add_entry(adds.pop().unwrap()))
        } else {
            Op::Many(bookie.add_entries(adds))
        };
        pending.push_back((op, ids));
        let in_flight = if mode == Mode::Journal { CHILD_IN_FLIGHT } else { CHILD_IN_FLIGHT_FLUSHING };
        while pending.len() >= in_flight {
            let (op, ids) = pending.pop_front().unwrap();
            match op {
                Op::One(p) => p.wait().unwrap(),
                Op::Many(p) => p.wait().unwrap(),
            }
            // Acknowledged: say so, in one write, before anything else happens.
            let mut lines = String::new();
            for (segment, entry, len) in ids {
                lines.push_str(&format!("ack {segment} {entry} {len} .\n"));
            }
            if mode != Mode::Journal && reported.elapsed() >= CHILD_STATS_EVERY {
                reported = Instant::now();
                let (mut flushes, mut bytes, mut throttled) = (0, 0, 0);
                for shard in 0..bookie.shard_count() {
                    let stats = bookie.stats(ShardId(shard)).unwrap();
                    flushes += stats.flushes;
                    bytes += stats.flushed_bytes;
                    throttled += stats.adds_throttled;
                }
                lines.push_str(&format!("flushes {flushes} {bytes} {throttled} .\n"));
            }
            out.write_all(lines.as_bytes()).unwrap();
            out.flush().unwrap();
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
    /// The child's last report of its flushes, flushed bytes and throttled adds (all shards).
    flushes: u64,
    flushed_bytes: u64,
    throttled: u64,
    /// When the kill came, after the child was ready.
    killed_after: Duration,
}

impl ChildRun {
    /// Takes one line. Only whole lines count: the last one may have been cut by the kill.
    fn take(&mut self, line: &str) -> Option<()> {
        let line = line.strip_suffix('\n')?;
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["ack", segment, entry, len, "."] => {
                self.acks.push((segment.parse().ok()?, entry.parse().ok()?, len.parse().ok()?));
            }
            ["flushes", flushes, bytes, throttled, "."] => {
                self.flushes = flushes.parse().ok()?;
                self.flushed_bytes = bytes.parse().ok()?;
                self.throttled = throttled.parse().ok()?;
            }
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
}

/// Reads every entry, many at a time, and checks its bytes.
fn check_entries(bookie: &Bookie, acked: &Acked, what: &str) {
    for (chunk, payloads) in acked.entries.chunks(256).zip(acked.payloads.chunks(256)) {
        let reads: Vec<_> =
            chunk.iter().map(|(s, e, _)| bookie.read_entry(SegmentId(*s), EntryId(*e))).collect();
        for (((segment, entry, len), expected), read) in chunk.iter().zip(payloads).zip(reads) {
            // Iteration `i` writes segments from 1000 * (i + 1).
            let from = segment / 1000 - 1;
            match read.wait() {
                Ok(bytes) => assert!(
                    bytes == expected,
                    "{what}: acknowledged segment {segment} entry {entry} (written in iteration {from}) has \
                     wrong bytes ({} bytes, {len} expected)",
                    bytes.len()
                ),
                Err(e) => panic!(
                    "{what}: acknowledged segment {segment} entry {entry} (written in iteration {from}, \
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

/// `iterations` kills per backend, each after a random time in `run_ms` once the child is ready,
/// all on the same directory: kill, reopen and check, close, the next child writes more, kill.
/// Iteration `i` runs its child in `modes[i % modes.len()]`.
fn crash_rounds(test: &str, modes: &[Mode], iterations: usize, run_ms: RangeInclusive<u64>) {
    let seed = seed(test);
    let mut rng = Rng(seed);
    let flushing = modes.iter().any(|m| matches!(m, Mode::Flush(_)));
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        // The parent's reopen flushes nothing by time: reads from entry logs are the children's runs.
        let reopen = BookieConfig { flush_interval_ms: 3_600_000, ..modes[0].config(dir.path(), backend) };
        let mut acked = Acked::default();
        let mut log_reads = 0;
        for iteration in 0..iterations {
            let mode = modes[iteration % modes.len()];
            let run = Duration::from_millis(run_ms.start() + rng.below(run_ms.end() - run_ms.start() + 1));
            let child_seed = rng.next_u64();
            let base = 1000 * (iteration as u64 + 1);
            let what = format!(
                "{test} seed {seed} {backend:?} iteration {iteration} ({mode:?}, kill after {run:?})"
            );
            let got = run_child(dir.path(), backend, mode, base, child_seed, run);
            assert!(!got.acks.is_empty(), "{what}: nothing was acknowledged in {:?}", got.killed_after);
            let mut sorted = got.acks.clone();
            sorted.sort_unstable();
            sorted.dedup_by_key(|(s, e, _)| (*s, *e));
            assert_eq!(sorted.len(), got.acks.len(), "{what}: an entry was acknowledged twice");
            acked.extend(&got.acks);
            let logs = entry_logs(dir.path(), reopen.shard_count);
            if flushing {
                // At 1000 ms only a full cache half starts a flush: a short run may see none.
                let by_time = matches!(mode, Mode::Flush(ms) if ms <= 20);
                assert!(!by_time || got.flushes > 0, "{what}: the child reported no flush before the kill");
                assert!(logs > 0, "{what}: no entry log on disk");
            }

            let bookie = Bookie::open(reopen.clone()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let mut cut = Vec::new();
            for report in bookie.replay_reports() {
                assert!(report.damage.is_empty(), "{what}: a kill left damage: {:?}", report.damage);
                cut.extend(report.torn_tail.iter().map(|t| t.bytes));
            }
            let reads_before = total_log_reads(&bookie);
            check_entries(&bookie, &acked, &what);
            let reads = total_log_reads(&bookie) - reads_before;
            log_reads += reads;
            let flushed = if flushing {
                format!(
                    "; the child reported {} flushes ({} bytes, adds throttled {} times); {logs} entry logs; \
                     {reads} of {} reads from entry logs",
                    got.flushes,
                    got.flushed_bytes,
                    got.throttled,
                    acked.entries.len()
                )
            } else {
                String::new()
            };
            println!(
                "{what}: killed after {:?}, {} entries acknowledged, torn tails cut: {cut:?}{flushed}",
                got.killed_after,
                got.acks.len()
            );
            // Four flushes mean two of one shard: the first one's manifest and checkpoint were
            // persisted, so its entries (acknowledged long before the kill) are read from its run.
            assert!(!flushing || got.flushes < 4 || reads > 0, "{what}: no read came from an entry log");
            check_no_damage(&bookie, &what);
            // Each entry carries LAC = its id - 1, so a durable entry e makes the LAC at least e - 1.
            for s in base..base + SEGMENTS {
                let Some(max) = got.acks.iter().filter(|(seg, _, _)| *seg == s).map(|(_, e, _)| *e).max()
                else {
                    continue;
                };
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
