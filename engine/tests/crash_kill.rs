//! Crash safety with a real process kill, on both backends: a child process (this test binary,
//! re-executed) appends entries in a loop and prints one line per entry once its add resolved;
//! the parent kills it with SIGKILL at a random moment, reopens the journal and checks that every
//! acknowledged entry is there with exact bytes, and that recovery found no damage.
//!
//! Reproduce a run with `DLOG_CRASH_SEED=<seed printed by the test>`.
#![allow(clippy::disallowed_methods, reason = "a crash test needs wall-clock time and sleeps")]

mod common;
use common::Rng;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BACKENDS, add, payload};
use dlog_engine::{Backend, Bookie, BookieConfig, EntryId, Error, Pending, SegmentId};

const CHILD_DIR: &str = "DLOG_CRASH_CHILD";
const CHILD_BACKEND: &str = "DLOG_CRASH_BACKEND";
const CHILD_BASE: &str = "DLOG_CRASH_BASE";
const CHILD_SEED: &str = "DLOG_CRASH_CHILD_SEED";
const CHILD_TEST: &str = "crash_child_process";
/// Segments each child writes, from its base id.
const SEGMENTS: u64 = 6;
/// Add requests the child keeps unresolved at once.
const CHILD_IN_FLIGHT: usize = 8;
const ROUNDS: usize = 3;

/// Two shards, 2 MiB journal files (the child rotates through several), four batches in flight.
fn crash_config(dir: &Path, backend: Backend) -> BookieConfig {
    let mut config = common::config(dir, backend);
    config.shard_count = 2;
    config.batch_bytes_max = 64 << 10;
    config.entry_bytes_max = 64 << 10;
    config.journal_file_bytes = 2 << 20;
    config.writes_in_flight_max = 4;
    config
}

/// Mostly small entries, some up to 40 KB.
fn entry_len(rng: &mut Rng) -> usize {
    (match rng.below(20) {
        0 => 0,
        1..=8 => rng.below(200),
        9..=16 => 200 + rng.below(1800),
        17..=18 => 2000 + rng.below(6000),
        _ => 8000 + rng.below(32_000),
    }) as usize
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
    let base: u64 = std::env::var(CHILD_BASE).unwrap().parse().unwrap();
    let mut rng = Rng(std::env::var(CHILD_SEED).unwrap().parse().unwrap());
    let bookie = Bookie::open(crash_config(Path::new(&dir), backend)).unwrap();
    let mut out = std::io::stdout().lock();
    out.write_all(b"ready\n").unwrap();
    out.flush().unwrap();
    let mut next = [0u64; SEGMENTS as usize];
    let mut pending: VecDeque<(Op, Vec<Ack>)> = VecDeque::new();
    loop {
        let count = if rng.below(3) == 0 { 2 + rng.below(10) as usize } else { 1 };
        let mut adds = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let s = rng.below(SEGMENTS) as usize;
            let (segment, entry, len) = (base + s as u64, next[s], entry_len(&mut rng));
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
        while pending.len() >= CHILD_IN_FLIGHT {
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

fn parse_ack(line: &str) -> Option<(u64, u64, usize)> {
    // Only whole lines count: the last one may have been cut by the kill.
    let line = line.strip_suffix('\n')?;
    let mut parts = line.split(' ');
    if parts.next()? != "ack" {
        return None;
    }
    let segment = parts.next()?.parse().ok()?;
    let entry = parts.next()?.parse().ok()?;
    let len = parts.next()?.parse().ok()?;
    (parts.next()? == "." && parts.next().is_none()).then_some((segment, entry, len))
}

/// Runs one child until `run` after it is ready, kills it, returns the entries it acknowledged.
fn run_child(dir: &Path, backend: Backend, base: u64, seed: u64, run: Duration) -> Vec<(u64, u64, usize)> {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_BACKEND, format!("{backend:?}"))
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
    std::thread::sleep(run);
    assert!(child.0.try_wait().unwrap().is_none(), "the child stopped before it was killed");
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    reader.join().unwrap();
    rx.try_iter().filter_map(|line| parse_ack(&line)).collect()
}

/// Reads every entry, many at a time, and checks its bytes.
fn check_entries(bookie: &Bookie, entries: &[(u64, u64, usize)], what: &str) {
    for chunk in entries.chunks(256) {
        let reads: Vec<_> =
            chunk.iter().map(|(s, e, _)| bookie.read_entry(SegmentId(*s), EntryId(*e))).collect();
        for ((segment, entry, len), read) in chunk.iter().zip(reads) {
            match read.wait() {
                Ok(bytes) => assert!(
                    bytes == payload(*segment, *entry, *len),
                    "{what}: acknowledged entry {segment}/{entry} has wrong bytes ({} bytes, {len} expected)",
                    bytes.len()
                ),
                Err(e) => panic!("{what}: acknowledged entry {segment}/{entry} ({len} bytes) lost: {e}"),
            }
        }
    }
}

/// A few rounds per backend on the same directory, so each recovery also starts from a journal
/// that earlier kills and recoveries left behind.
#[test]
fn crash_kill_keeps_acknowledged_entries() {
    let seed = match std::env::var("DLOG_CRASH_SEED") {
        Ok(s) => s.parse().expect("DLOG_CRASH_SEED is a u64"),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }
    };
    println!("crash_kill seed: DLOG_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = crash_config(dir.path(), backend);
        let mut acked: Vec<(u64, u64, usize)> = Vec::new();
        for round in 0..ROUNDS {
            let run = Duration::from_millis(50 + rng.below(351));
            let child_seed = rng.next_u64();
            let base = 1000 * (round as u64 + 1);
            let what = format!("{backend:?} round {round} (kill after {run:?}, seed {seed})");
            let got = run_child(dir.path(), backend, base, child_seed, run);
            assert!(!got.is_empty(), "{what}: nothing was acknowledged");
            let mut sorted = got.clone();
            sorted.sort_unstable();
            sorted.dedup_by_key(|(s, e, _)| (*s, *e));
            assert_eq!(sorted.len(), got.len(), "{what}: an entry was acknowledged twice");
            acked.extend(got.iter().copied());

            let bookie = Bookie::open(config.clone()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let mut cut = Vec::new();
            for report in bookie.replay_reports() {
                assert!(report.damage.is_empty(), "{what}: a kill left damage: {:?}", report.damage);
                cut.extend(report.torn_tail.iter().map(|t| t.bytes));
            }
            println!("{what}: {} entries acknowledged, torn tails cut: {cut:?}", got.len());
            check_entries(&bookie, &acked, &what);
            // Each entry carries LAC = its id - 1, so a durable entry e makes the LAC at least e - 1.
            for s in base..base + SEGMENTS {
                let Some(max) = got.iter().filter(|(seg, _, _)| *seg == s).map(|(_, e, _)| *e).max() else {
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
    }
}
