//! A log of tests/chaos.rs written by real writer processes: `dlog write LOG --print-dlsn`, fed
//! its records on stdin (one per line, `payload(log, generation, seq)`) by a thread, its
//! acknowledgements read from stdout (the k-th `<dlsn> <txid>` line is the k-th record's, in
//! input order). Each process is a writer generation; the scheduler SIGKILLs one (the next
//! starts a moment later and recovers what it left), SIGSTOPs it a while, or starts the next
//! while it runs, paused or not (a takeover: a paused one wakes up a zombie, fenced).
//!
//! Driven from the scheduler's thread (`poll` between faults); reports to the `History`.
//!
//! Invariants:
//! - CW1: `T`, the moment a generation's successor is known to have opened the log, is its
//!   first acknowledgement (it opens before it writes). Lines fed to a generation after its
//!   successor's `T` (`fenced_from` on) are never acknowledged (H4), and a generation alive at
//!   `T` ends with a `fenced` error.
//! - CW2: the feeder marks a line fed (`Feed::fed`) before it writes it, so a line at or past
//!   `fenced_from` was written to the pipe after `T`.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use dlog::log::{Appended, Dlsn};

use crate::chaos_history::{History, kind, payload};
use crate::process::{Running, now, pause};

/// Lines fed per tick, and the tick: the in-process writers' rate.
const PER_TICK: u64 = 3;
const TICK: Duration = Duration::from_millis(10);
/// Lines fed to a superseded generation after its successor's `T`.
const AFTER_FENCE_LINES: u64 = 20;
/// Records a process keeps unacknowledged at most (`--in-flight`).
const IN_FLIGHT: u32 = 256;
/// Pause before the next generation when one failed on its own.
const RESTART_PAUSE: Duration = Duration::from_millis(200);
/// Longest a stop may take (a process draining and closing, or reopening to close).
const STOP_WAIT: Duration = Duration::from_secs(60);

/// What a feeder thread and the slot share.
#[derive(Default)]
struct Feed {
    /// Lines marked fed (CW2).
    fed: AtomicU64,
    /// Feed no line from this one on (then close stdin).
    limit: AtomicU64,
    /// Close stdin now.
    stop: AtomicBool,
}

/// One writer process.
struct Generation {
    generation: u64,
    running: Running,
    feed: Arc<Feed>,
    /// Acknowledgements read so far (the next one is this sequence's).
    acked: u64,
    last: Option<Appended>,
    /// Lines from here on were fed after the successor's `T` (CW1).
    fenced_from: Option<u64>,
    paused: bool,
}

impl Generation {
    fn pid(&self) -> u32 {
        self.running.pid()
    }
}

/// The log's writer processes (see the module doc).
pub(crate) struct CliSlot {
    pub(crate) log: String,
    metadata: String,
    binary: PathBuf,
    dir: tempfile::TempDir,
    history: Arc<History>,
    next_generation: u64,
    current: Option<Generation>,
    /// Superseded generations until they end.
    superseded: Vec<Generation>,
    /// The next generation starts then (after a crash or a failure).
    restart_at: Option<Instant>,
    /// A takeover waits for its new generation's first acknowledgement (`T`).
    takeover: bool,
    /// Processes started, killed, paused.
    pub(crate) started: u64,
    pub(crate) killed: u64,
    pub(crate) paused: u64,
    /// Superseded processes that ended with a `fenced` error.
    pub(crate) ended_fenced: u64,
}

impl CliSlot {
    /// The slot of `log` in the namespace `metadata` names, its processes running `binary`;
    /// its first generation starts at once.
    pub(crate) fn start(binary: PathBuf, metadata: &str, log: &str, history: Arc<History>) -> CliSlot {
        let mut slot = CliSlot {
            log: log.to_owned(),
            metadata: metadata.to_owned(),
            binary,
            dir: {
                let mut dir = tempfile::tempdir().unwrap();
                if std::env::var_os("DLOG_CHAOS_KEEP").is_some() {
                    dir.disable_cleanup(true);
                    println!("chaos: {log}'s writer processes log to {}", dir.path().display());
                }
                dir
            },
            history,
            next_generation: 0,
            current: None,
            superseded: Vec::new(),
            restart_at: None,
            takeover: false,
            started: 0,
            killed: 0,
            paused: 0,
            ended_fenced: 0,
        };
        slot.current = Some(slot.spawn(true));
        slot
    }

    /// Whether a fault may target it now: its writer has the log (it acknowledged a record),
    /// is not paused, and no takeover waits for its `T`.
    pub(crate) fn idle(&self) -> bool {
        !self.takeover && self.current.as_ref().is_some_and(|g| !g.paused && g.acked > 0)
    }

    /// Starts the next generation's process and, if `feed`, its feeder.
    fn spawn(&mut self, feed: bool) -> Generation {
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut command = Command::new(&self.binary);
        command
            .args(["write", &self.log, "--print-dlsn", "--in-flight", &IN_FLIGHT.to_string()])
            .args(["--metadata", &self.metadata]);
        let stderr = self.dir.path().join(format!("writer-{generation}.log"));
        let mut running = Running::spawn(command, Stdio::piped(), stderr);
        let stdin = running.child.0.stdin.take().expect("piped");
        let feed =
            Arc::new(Feed { limit: AtomicU64::new(if feed { u64::MAX } else { 0 }), ..Feed::default() });
        let (log, history, shared) = (self.log.clone(), self.history.clone(), feed.clone());
        std::thread::spawn(move || feeder(&log, generation, stdin, &shared, &history));
        self.started += 1;
        self.history.count(|c| c.generations += 1);
        Generation { generation, running, feed, acked: 0, last: None, fenced_from: None, paused: false }
    }

    /// A new generation takes the log over while the current one runs (paused or not).
    pub(crate) fn take_over(&mut self) {
        let Some(old) = self.current.take() else { return };
        self.superseded.push(old);
        self.current = Some(self.spawn(true));
        self.takeover = true;
        self.history.count(|c| c.fenced_writers += 1);
    }

    /// SIGKILL of the current generation; the next starts `after` later.
    pub(crate) fn kill(&mut self, after: Duration) {
        let Some(mut old) = self.current.take() else { return };
        old.feed.stop.store(true, Ordering::Release);
        old.running.child.0.kill().unwrap();
        let _ = old.running.child.0.wait();
        drain_to_end(&self.log, &mut old, &self.history);
        self.killed += 1;
        self.restart_at = Some(now() + after);
    }

    /// SIGSTOP of the current generation (until `resume`).
    pub(crate) fn pause_writer(&mut self) {
        let Some(current) = self.current.as_mut() else { return };
        crate::process::signal(current.pid(), "STOP");
        current.paused = true;
        self.paused += 1;
    }

    /// SIGCONT of every paused generation (current or superseded).
    pub(crate) fn resume(&mut self) {
        for g in self.current.iter_mut().chain(self.superseded.iter_mut()).filter(|g| g.paused) {
            crate::process::signal(g.pid(), "CONT");
            g.paused = false;
        }
    }

    /// Reads acknowledgements and exits, starts the next generation when one is due.
    pub(crate) fn poll(&mut self) {
        if let Some(current) = self.current.as_mut() {
            let before = current.acked;
            drain(&self.log, current, &self.history);
            // CW1: the current generation's first acknowledgement is `T` for every one before
            // it (they had the log before it was started, and it opened after).
            if before == 0 && current.acked > 0 {
                self.takeover = false;
                for old in &mut self.superseded {
                    if old.fenced_from.is_none() {
                        let fed = old.feed.fed.load(Ordering::Acquire);
                        old.fenced_from = Some(fed);
                        old.feed.limit.store(fed + AFTER_FENCE_LINES, Ordering::Release);
                    }
                }
            }
            if let Some(status) = current.running.child.0.try_wait().unwrap() {
                let mut ended = self.current.take().expect("current");
                drain_to_end(&self.log, &mut ended, &self.history);
                let error = error_line(&ended.running.log());
                let what = if ended.acked == 0 { "start" } else { "writer" };
                self.history.count(|c| {
                    *c.writer_failures
                        .entry(format!("cli {what} ({status}): {}", kind(&error)))
                        .or_default() += 1;
                });
                self.takeover = false;
                self.restart_at = Some(now() + RESTART_PAUSE);
            }
        }
        self.reap_superseded();
        if self.current.is_none() && self.restart_at.is_some_and(|at| now() >= at) {
            self.restart_at = None;
            self.current = Some(self.spawn(true));
        }
    }

    /// Reads what superseded generations print; checks how those that ended ended (CW1).
    fn reap_superseded(&mut self) {
        let mut i = 0;
        while i < self.superseded.len() {
            let old = &mut self.superseded[i];
            drain(&self.log, old, &self.history);
            if old.paused || old.running.child.0.try_wait().unwrap().is_none() {
                i += 1;
                continue;
            }
            let mut old = self.superseded.remove(i);
            drain_to_end(&self.log, &mut old, &self.history);
            let error = error_line(&old.running.log());
            self.ended_fenced += u64::from(error.contains("fenced"));
            if old.fenced_from.is_some() && !error.contains("fenced") {
                self.history.violation(format!(
                    "H4 {} generation {} (a process): ended after its successor opened, not fenced: {error}",
                    self.log, old.generation
                ));
            }
        }
    }

    /// Closes the log: paused processes resumed, superseded ones ended, then the current
    /// one's stdin closed until a process exits cleanly (a new one, fed nothing, when the
    /// current one failed: it opens the log, recovering what was left, and closes it). Panics
    /// past `STOP_WAIT`.
    pub(crate) fn stop(&mut self) {
        self.resume();
        let deadline = now() + STOP_WAIT;
        for old in &self.superseded {
            old.feed.stop.store(true, Ordering::Release);
        }
        let mut closed = false;
        while !(closed && self.superseded.is_empty()) {
            assert!(now() < deadline, "{}: the writer processes did not end within {STOP_WAIT:?}", self.log);
            self.reap_superseded();
            if closed {
                pause(Duration::from_millis(10));
                continue;
            }
            let Some(current) = self.current.as_mut() else {
                self.current = Some(self.spawn(false));
                continue;
            };
            current.feed.stop.store(true, Ordering::Release);
            drain(&self.log, current, &self.history);
            if let Some(status) = current.running.child.0.try_wait().unwrap() {
                let mut ended = self.current.take().expect("current");
                drain_to_end(&self.log, &mut ended, &self.history);
                if status.success() {
                    closed = true;
                } else {
                    let error = error_line(&ended.running.log());
                    self.history.count(|c| {
                        *c.writer_failures.entry(format!("cli close: {}", kind(&error))).or_default() += 1;
                    });
                }
            }
            pause(Duration::from_millis(10));
        }
    }
}

/// The error line a process left on stderr (its last line), or what it says there.
fn error_line(log: &str) -> String {
    log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing on stderr)").to_owned()
}

/// Takes the acknowledgements `g` printed so far.
fn drain(log: &str, g: &mut Generation, history: &History) {
    loop {
        match g.running.lines.try_recv() {
            Ok(line) => ack(log, g, &line, history),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
        }
    }
}

/// Takes every acknowledgement an ended process printed (its stdout reader ends with it).
fn drain_to_end(log: &str, g: &mut Generation, history: &History) {
    let deadline = now() + Duration::from_secs(10);
    loop {
        match g.running.lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => ack(log, g, &line, history),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if now() < deadline => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                history.violation(format!("{log}: writer process {}'s stdout did not close", g.generation));
                return;
            }
        }
    }
}

/// The acknowledgement line `line` of generation `g`: the next record's (H4 checked).
fn ack(log: &str, g: &mut Generation, line: &str, history: &History) {
    let seq = g.acked;
    g.acked += 1;
    let parsed =
        line.split_once(' ').and_then(|(dlsn, txid)| Some((Dlsn::from_str(dlsn).ok()?, txid.parse().ok()?)));
    let Some((dlsn, txid)) = parsed else {
        history.violation(format!("{log}: writer process {} printed {line:?}", g.generation));
        return;
    };
    let at = Appended { dlsn, txid };
    let violation = |what: String| {
        history.violation(format!("H4 {log} generation {} (a process): {what}", g.generation));
    };
    if g.fenced_from.is_some_and(|from| seq >= from) {
        violation(format!("record {seq}, fed after the successor opened, acknowledged at {dlsn}"));
    }
    if g.last.is_some_and(|l| at.dlsn <= l.dlsn || at.txid <= l.txid) {
        violation(format!("record {seq} acknowledged at {at:?} after {:?}", g.last));
    }
    g.last = Some(at);
    history.acked(log, g.generation, seq, at);
}

/// Feeds generation `generation`'s records to its process, `PER_TICK` per `TICK`, until its
/// limit, a stop, or the pipe closes; then closes stdin (EOF: the process drains and closes).
fn feeder(log: &str, generation: u64, mut stdin: std::process::ChildStdin, feed: &Feed, history: &History) {
    let mut seq = 0u64;
    while !feed.stop.load(Ordering::Acquire) {
        for _ in 0..PER_TICK {
            if seq >= feed.limit.load(Ordering::Acquire) {
                return;
            }
            // CW2: marked before it is written.
            feed.fed.store(seq + 1, Ordering::Release);
            history.written(log, generation, seq);
            let mut line = payload(log, generation, seq).to_vec();
            line.push(b'\n');
            if stdin.write_all(&line).is_err() {
                return;
            }
            seq += 1;
        }
        pause(TICK);
    }
}
