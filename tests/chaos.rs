//! Real-process chaos (issue 9): a real etcd and five `dlog bookie` processes on 127.0.0.1,
//! three logs written and tailed through the log API (two by writers in this process, one by
//! `dlog write` processes), and a scheduler that, every 150-600 ms, draws a fault:
//! - SIGKILL a bookie (running or paused), relaunched 0.2-2 s later on the same directories,
//!   port and id;
//! - SIGSTOP a bookie for 0.2-3 s, then SIGCONT;
//! - SIGKILL etcd, restarted 0.2-1.5 s later on the same data and ports, or SIGSTOP it for
//!   0.2-2 s;
//! - a writer takeover: a new writer opens a log while the current one writes (fencing it);
//! - a writer crash: an in-process writer dropped with records in flight (two recoverers then
//!   race the next writer on the segments it left open), or a writer process SIGKILLed;
//! - a writer process SIGSTOPped for 0.2-3 s, half the time taken over meanwhile (it wakes up
//!   a zombie and must be fenced);
//! - a full disk: the last bookie keeps its entry logs on a 128 MiB tmpfs, which a ballast
//!   file fills until the bookie refuses adds (`ReadOnly`), and frees 0.5-3 s later. Where no
//!   tmpfs can be mounted (not root), this fault is skipped, and the output says so.
//!
//! At most two bookies are out of service at once (killed, starting, paused or with a full
//! disk): with E=3 Qw=3 Qa=2 on five bookies, three remain for an ensemble. Faults overlap
//! otherwise (etcd and writer faults at any time).
//!
//! The checker (tests/support/chaos_history.rs, H1-H5) looks at the history as it is made
//! (writers' acknowledgements and failures, what tailing readers deliver) and after the run:
//! every fault healed, every writer closed, each log read from its head by a new reader
//! (every acknowledged record once, in order, with its bytes; tailing readers saw exactly
//! that), every segment closed with the end every recoverer found, and its replicas read from
//! every bookie: they agree byte for byte, and hold exactly the records the log's readers
//! read.
//!
//! Runs (needs the `etcd` feature and an etcd binary, as tests/replication_process.rs):
//! `cargo test --features etcd --test chaos -- --nocapture` is the CI variant: 75 s of
//! faults, at least 50 of them, about 90 s in all. `DLOG_CHAOS_SECS=N` runs N seconds of
//! faults instead (a long run: `DLOG_CHAOS_SECS=600`); `DLOG_CHAOS_SEED=S` replays the
//! schedule of seed `S`, printed first: the same draws of fault, target and timing, though
//! the cluster runs in real time, so a draw may find its target busy and pass.
//! `DLOG_CHAOS_KEEP=1` keeps the bookies' directories and logs for a post-mortem.
//!
//! Every wait has a deadline; every child process is killed and reaped when the test ends,
//! failing or not (the guards in tests/support), and the tmpfs unmounted after.
#![cfg(feature = "etcd")]
#![allow(clippy::disallowed_methods, reason = "a test of real processes runs in real time")]

#[path = "support/chaos_cli_writer.rs"]
mod chaos_cli_writer;
#[path = "support/chaos_clients.rs"]
mod chaos_clients;
#[path = "support/chaos_cluster.rs"]
mod chaos_cluster;
#[path = "support/chaos_history.rs"]
mod chaos_history;
#[path = "support/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chaos_cli_writer::CliSlot;
use chaos_clients::{Slot, SlotCommand, read_all, spawn_reader};
use chaos_cluster::{BookieState, ChaosCluster, DiskFull, check_replicas, disk_full_cycle};
use chaos_history::History;
use dlog::log::Namespace;
use dlog_metadata::schema::{LogSegmentState, SegmentState};
use process::{now, pause};

const BOOKIES: usize = 5;
/// Bookies out of service at once, at most.
const IMPAIRED_MAX: usize = 2;
/// The logs: the first ones written by writers in this process, the last by `dlog write`
/// processes.
const LOGS: [&str; 3] = ["alpha", "beta", "gamma"];
const CLI_LOG: &str = "gamma";
/// Seconds of faults in the CI variant, and the faults it must reach.
const CI_SECS: u64 = 75;
const CI_FAULTS_MIN: u64 = 50;
/// Longest the end of the run may take to heal the cluster, close writers or read a log.
const END_WAIT: Duration = Duration::from_secs(90);

/// splitmix64: the schedule's only source of randomness.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A duration in `lo_ms..=hi_ms` milliseconds.
    fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.below(hi_ms - lo_ms + 1))
    }
}

/// The fault kinds, with their weights in the draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillBookie,
    PauseBookie,
    KillEtcd,
    PauseEtcd,
    Takeover,
    CrashWriter,
    PauseWriter,
    DiskFull,
}

const FAULTS: [(Fault, u64); 8] = [
    (Fault::KillBookie, 6),
    (Fault::PauseBookie, 6),
    (Fault::KillEtcd, 1),
    (Fault::PauseEtcd, 2),
    (Fault::Takeover, 3),
    (Fault::CrashWriter, 3),
    (Fault::PauseWriter, 1),
    (Fault::DiskFull, 2),
];

/// What ends a fault, when due.
#[derive(Debug)]
enum Heal {
    Resume(usize),
    Relaunch(usize),
    Etcd,
    ResumeWriter,
}

/// The scheduler's state: the cluster, the clients, what is pending.
struct Chaos {
    cluster: ChaosCluster,
    runtime: tokio::runtime::Runtime,
    slots: Vec<Slot>,
    cli: CliSlot,
    history: Arc<History>,
    prng: Prng,
    heals: Vec<(Instant, Heal)>,
    /// The disk-full cycle running, if any.
    disk_full: Option<JoinHandle<Result<DiskFull, String>>>,
    disk_fulls: Vec<DiskFull>,
    faults: BTreeMap<Fault, u64>,
    /// Draws that found no admissible target.
    passed: u64,
}

impl Chaos {
    /// Bookies out of service now (the disk-full one included while its cycle runs).
    fn impaired(&self) -> usize {
        let down = self.cluster.nodes.iter().filter(|n| n.state != BookieState::Up).count();
        down + usize::from(self.disk_full.is_some())
    }

    /// Bookies in `states`, not the one whose disk is being filled.
    fn bookies_in(&self, states: &[BookieState]) -> Vec<usize> {
        let filling = self.disk_full.as_ref().and_then(|_| self.cluster.small_disk_bookie());
        (0..self.cluster.nodes.len())
            .filter(|&i| states.contains(&self.cluster.nodes[i].state) && Some(i) != filling)
            .collect()
    }

    /// Draws a fault and injects it if it has a target now; whether it did.
    fn inject(&mut self) -> bool {
        let total: u64 = FAULTS.iter().map(|(_, w)| w).sum();
        let mut draw = self.prng.below(total);
        let mut fault = FAULTS[0].0;
        for (kind, weight) in FAULTS {
            if draw < weight {
                fault = kind;
                break;
            }
            draw -= weight;
        }
        let (target, duration) = (self.prng.next(), self.prng.millis(200, 3000));
        let room = self.impaired() < IMPAIRED_MAX;
        let pick = |from: Vec<usize>| (!from.is_empty()).then(|| from[(target % from.len() as u64) as usize]);
        let at = now();
        match fault {
            Fault::KillBookie => {
                // A paused bookie may be killed too (it is out of service already).
                let paused = self.bookies_in(&[BookieState::Paused]);
                let candidates =
                    if room { self.bookies_in(&[BookieState::Up, BookieState::Paused]) } else { paused };
                let Some(i) = pick(candidates) else { return false };
                self.heals.retain(|(_, h)| !matches!(h, Heal::Resume(j) if *j == i));
                self.cluster.kill(i);
                self.heals.push((at + duration.min(Duration::from_secs(2)), Heal::Relaunch(i)));
            }
            Fault::PauseBookie => {
                let Some(i) = pick(if room { self.bookies_in(&[BookieState::Up]) } else { Vec::new() })
                else {
                    return false;
                };
                self.cluster.pause_bookie(i);
                self.heals.push((at + duration, Heal::Resume(i)));
            }
            Fault::KillEtcd | Fault::PauseEtcd => {
                if self.cluster.etcd_down.is_some() {
                    return false;
                }
                let kill = fault == Fault::KillEtcd;
                self.cluster.etcd_fault(kill);
                let longest = if kill { Duration::from_millis(1500) } else { Duration::from_secs(2) };
                self.heals.push((at + duration.min(longest), Heal::Etcd));
            }
            Fault::Takeover | Fault::CrashWriter => {
                // The slots, then the writer processes' log.
                let mut idle: Vec<usize> = (0..self.slots.len()).filter(|&i| !self.slots[i].busy()).collect();
                if self.cli.idle() {
                    idle.push(self.slots.len());
                }
                let Some(i) = pick(idle) else { return false };
                match (fault, self.slots.get(i)) {
                    (Fault::Takeover, Some(slot)) => slot.send(SlotCommand::Takeover),
                    (_, Some(slot)) => slot.send(SlotCommand::Crash { reopen_after: duration / 3 }),
                    (Fault::Takeover, None) => self.cli.take_over(),
                    (_, None) => self.cli.kill(duration / 3),
                }
            }
            Fault::PauseWriter => {
                if !self.cli.idle() {
                    return false;
                }
                self.cli.pause_writer();
                // Half the time its successor takes over meanwhile: it wakes up a zombie.
                if target % 2 == 0 {
                    self.cli.take_over();
                }
                self.heals.push((at + duration, Heal::ResumeWriter));
            }
            Fault::DiskFull => {
                let bookie = self.cluster.small_disk_bookie();
                let up = bookie.is_some_and(|i| self.cluster.nodes[i].state == BookieState::Up);
                if self.disk_full.is_some() || !room || !up {
                    return false;
                }
                let (disk, addr) = self.cluster.small_disk_target().expect("a small disk");
                let hold = duration.max(Duration::from_millis(500));
                self.disk_full = Some(std::thread::spawn(move || disk_full_cycle(&disk, addr, hold)));
            }
        }
        *self.faults.entry(fault).or_default() += 1;
        true
    }

    /// Carries out the heals that are due, and notes a finished disk-full cycle.
    fn heal_due(&mut self, all: bool) {
        self.cluster.poll();
        self.cli.poll();
        let due = now();
        let (ready, later): (Vec<_>, Vec<_>) = self.heals.drain(..).partition(|(at, _)| all || *at <= due);
        self.heals = later;
        for (_, heal) in ready {
            match heal {
                Heal::Resume(i) => self.cluster.resume_bookie(i),
                Heal::Relaunch(i) => self.cluster.relaunch(i),
                Heal::Etcd => self.cluster.etcd_up(),
                Heal::ResumeWriter => self.cli.resume(),
            }
        }
        if self.disk_full.as_ref().is_some_and(|t| t.is_finished() || all) {
            match self.disk_full.take().expect("running").join().expect("the disk-full thread") {
                Ok(cycle) => self.disk_fulls.push(cycle),
                Err(e) => self.history.violation(format!("disk full: {e}")),
            }
        }
    }
}

fn seed() -> u64 {
    match std::env::var("DLOG_CHAOS_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("DLOG_CHAOS_SEED={s:?}: not a u64")),
        Err(_) => std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8),
    }
}

#[test]
fn chaos() {
    let seed = seed();
    let secs: u64 =
        std::env::var("DLOG_CHAOS_SECS").map_or(CI_SECS, |s| s.trim().parse().expect("DLOG_CHAOS_SECS"));
    println!("chaos: DLOG_CHAOS_SEED={seed} DLOG_CHAOS_SECS={secs}");
    let started = now();
    let cluster = ChaosCluster::start(BOOKIES, "chaos");
    if !cluster.has_small_disk() {
        println!("chaos: cannot mount a tmpfs here: the disk-full fault is skipped");
    }
    let uri = format!("{}?namespace=chaos", cluster.metadata);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let history = Arc::new(History::default());
    let setup = runtime.block_on(async {
        let ns = Namespace::open(&uri).await?;
        for log in LOGS {
            ns.create_log(log).await?;
        }
        ns.shutdown().await;
        Ok::<_, dlog::log::LogError>(())
    });
    setup.unwrap();
    let slots: Vec<Slot> = LOGS
        .iter()
        .filter(|log| **log != CLI_LOG)
        .map(|log| Slot::start(runtime.handle(), &uri, log, history.clone()))
        .collect();
    let cli = CliSlot::start(cluster.binary(), &uri, CLI_LOG, history.clone());
    let (stop_readers, readers_stop) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = LOGS
        .iter()
        .map(|log| spawn_reader(runtime.handle(), &uri, log, history.clone(), readers_stop.clone()))
        .collect();
    let mut chaos = Chaos {
        cluster,
        runtime,
        slots,
        cli,
        history: history.clone(),
        prng: Prng(seed),
        heals: Vec::new(),
        disk_full: None,
        disk_fulls: Vec::new(),
        faults: BTreeMap::new(),
        passed: 0,
    };
    let setup_took = started.elapsed();

    // The faults.
    let faults_from = now();
    let end = faults_from + Duration::from_secs(secs);
    let mut next_fault = faults_from + Duration::from_secs(1);
    let mut etcd_checked = now();
    while now() < end && history.violations().is_empty() {
        chaos.heal_due(false);
        if etcd_checked.elapsed() > Duration::from_secs(1) {
            etcd_checked = now();
            assert!(chaos.cluster.etcd_alive(), "seed {seed}: {}", chaos.cluster.etcd_gone());
        }
        if now() >= next_fault {
            if !chaos.inject() {
                chaos.passed += 1;
            }
            next_fault = now() + chaos.prng.millis(150, 600);
        }
        pause(Duration::from_millis(5));
    }
    let faults_took = faults_from.elapsed();

    // Heal everything, close the writers, read and check.
    let ending = now();
    chaos.heal_due(true);
    chaos.cluster.wait_all_up();
    // A bookie that serves may be unregistered a while yet (its lease lost while etcd was out
    // of service: it waits out the old lease), and readers find bookies by registration.
    let registering = now();
    loop {
        let registered = chaos.runtime.block_on(registered(&uri));
        if registered.as_ref().is_ok_and(|ids| ids.len() == BOOKIES) {
            break;
        }
        assert!(
            registering.elapsed() < END_WAIT,
            "seed {seed}: bookies registered after the run: {registered:?}"
        );
        pause(Duration::from_millis(50));
    }
    println!("chaos: every bookie registered {:.1?} after the heal", ending.elapsed());
    let stops: Vec<_> = chaos
        .slots
        .iter()
        .map(|slot| {
            let (reply, done) = tokio::sync::oneshot::channel();
            slot.send(SlotCommand::Stop(reply));
            done
        })
        .collect();
    chaos.cli.stop();
    for (slot, done) in chaos.slots.iter().zip(stops) {
        let log = &slot.log;
        let closed = chaos.runtime.block_on(async { tokio::time::timeout(END_WAIT, done).await });
        assert!(matches!(closed, Ok(Ok(()))), "{log}: writers not closed within {END_WAIT:?} (seed {seed})");
    }
    let mut totals = (0u64, 0u64, 0u64);
    for log in LOGS {
        let records = match chaos.runtime.block_on(read_all(&uri, log, Duration::from_secs(30))) {
            Ok(records) => records,
            Err(e) => {
                // The replicas' check below says what the bookies hold.
                history.violation(format!("H1 {log}: the final read failed: {e}"));
                diagnose(&chaos, &uri, log);
                check_segments(&chaos, &uri, log, None);
                continue;
            }
        };
        // The tailing reader catches up (or stops moving: H3 then says where it differs).
        let (mut seen, mut moved) = (history.seen_count(log), now());
        while seen < records.len() && moved.elapsed() < Duration::from_secs(15) {
            pause(Duration::from_millis(20));
            if history.seen_count(log) != seen {
                (seen, moved) = (history.seen_count(log), now());
            }
        }
        let checked = history.check_final(log, &records);
        totals.0 += checked.records;
        totals.1 += checked.acked;
        totals.2 += checked.unacknowledged;
        let segments = check_segments(&chaos, &uri, log, Some(&records));
        println!(
            "chaos: {log}: {} records read, {} acknowledged, {} present unacknowledged; {segments:?}",
            checked.records, checked.acked, checked.unacknowledged
        );
    }
    stop_readers.send_replace(true);
    for reader in readers {
        let _ = chaos.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), reader).await });
    }
    let ending_took = ending.elapsed();

    let counts = history.counts();
    let faults: u64 = chaos.faults.values().sum();
    let by_kind: Vec<String> = chaos.faults.iter().map(|(k, n)| format!("{k:?} {n}")).collect();
    println!("chaos: faults by kind: {}; {} draws passed (no target)", by_kind.join(", "), chaos.passed);
    println!("chaos: disk full: {:?}", chaos.disk_fulls);
    println!(
        "chaos: {CLI_LOG}'s writer processes: {} started, {} SIGKILLed, {} SIGSTOPped, {} ended fenced",
        chaos.cli.started, chaos.cli.killed, chaos.cli.paused, chaos.cli.ended_fenced
    );
    let longest = |d: &[Duration]| d.iter().max().copied().unwrap_or_default();
    let mut relaunches: BTreeMap<&str, u64> = BTreeMap::new();
    for (reason, n) in chaos.cluster.nodes.iter().flat_map(|node| &node.relaunches) {
        *relaunches.entry(reason).or_default() += n;
    }
    println!(
        "chaos: {} bookie starts (longest {:.1?}; failed starts relaunched: {relaunches:?}), {} etcd \
         restarts (longest {:.1?})",
        chaos.cluster.starts.len(),
        longest(&chaos.cluster.starts),
        chaos.cluster.etcd_starts.len(),
        longest(&chaos.cluster.etcd_starts)
    );
    println!("chaos: counts: {counts:?}");
    let violations = history.violations();
    println!(
        "chaos summary: seed {seed}, {faults} faults in {faults_took:.1?} ({}), {} records acknowledged, \
         {} read ({} unacknowledged), {} writer generations, {} writers fenced by a takeover, {} segments \
         recovered by racing recoverers ({} recoveries), {} violations; setup {setup_took:.1?}, end \
         {ending_took:.1?}, total {:.1?}",
        by_kind.join(", "),
        totals.1,
        totals.0,
        totals.2,
        counts.generations,
        counts.fenced_writers,
        counts.recovered_segments,
        counts.recoveries,
        violations.len(),
        started.elapsed()
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    let faults_min = if secs >= CI_SECS { CI_FAULTS_MIN } else { CI_FAULTS_MIN * secs / CI_SECS };
    assert!(faults >= faults_min, "seed {seed}: {faults} faults, fewer than {faults_min}");
    assert_eq!(totals.1, counts.acked, "every acknowledgement checked");
    assert!(counts.acked >= 1000 * secs / CI_SECS, "seed {seed}: only {} records acknowledged", counts.acked);
    chaos.runtime.shutdown_timeout(Duration::from_secs(10));
}

/// What the segments of a log hold, for the summary.
#[derive(Debug, Default)]
struct Segments {
    segments: u64,
    ensemble_changes: u64,
    /// The most ensembles one segment had.
    ensembles_max: u64,
    entries: u64,
    /// Copies of the entries read from the bookies.
    copies: u64,
    /// Copies past a segment's end (never acknowledged).
    past_end: u64,
}

/// After the run, for every segment of `log`: completed in the log and closed in its metadata,
/// at the end every recoverer found (H5) and a late recoverer finds again; its replicas agree
/// and hold exactly the records `records` (the log read from its head) has in it.
fn check_segments(chaos: &Chaos, uri: &str, log: &str, records: Option<&[dlog::log::LogRecord]>) -> Segments {
    let mut totals = Segments::default();
    let history = &chaos.history;
    let recovered = history.recovered_ends();
    let (info, metas) = chaos
        .runtime
        .block_on(async {
            let ns = Namespace::open(uri).await?;
            let info = ns.log_info(log).await?;
            let mut metas = Vec::new();
            for segment in &info.segments {
                let meta = ns.replication().segment(segment.segment_id).await?;
                let again =
                    ns.replication().recover_segment(segment.segment_id, meta.master_key.clone()).await?;
                metas.push((meta, again));
            }
            ns.shutdown().await;
            Ok::<_, dlog::log::LogError>((info, metas))
        })
        .unwrap_or_else(|e| panic!("{log}: segments: {e}"));
    for (segment, (meta, again)) in info.segments.iter().zip(metas) {
        let id = segment.segment_id;
        let LogSegmentState::Completed { record_count, .. } = segment.state else {
            history.violation(format!("{log}: segment {} ({id}) not completed after the run", segment.seq));
            continue;
        };
        let SegmentState::Closed { last_entry_id, length } = meta.state else {
            history.violation(format!("{log}: segment {id} not closed: {:?}", meta.state));
            continue;
        };
        for end in recovered.get(&id).into_iter().flatten().chain([&again]) {
            if (end.last_entry, end.length) != (last_entry_id, length) {
                history.violation(format!(
                    "H5 {log}: a recoverer of segment {id} found {end:?}; it is closed at {last_entry_id:?} \
                     length {length}"
                ));
            }
        }
        totals.segments += 1;
        totals.ensemble_changes += meta.ensembles.len() as u64 - 1;
        totals.ensembles_max = totals.ensembles_max.max(meta.ensembles.len() as u64);
        match check_replicas(&chaos.cluster, id, &meta) {
            Ok(replicas) => {
                totals.entries += replicas.entries;
                totals.copies += replicas.copies;
                totals.past_end += replicas.past_end;
                let Some(records) = records else { continue };
                let read: Vec<_> = records
                    .iter()
                    .filter(|r| r.dlsn.segment_seq == segment.seq)
                    .map(|r| (r.dlsn.entry_id, r.dlsn.slot, r.txid, r.payload.clone()))
                    .collect();
                if replicas.records != read || record_count != read.len() as u64 {
                    history.violation(format!(
                        "{log}: segment {id}: replicas hold {} records, the log's count {record_count}, the \
                         reader read {}",
                        replicas.records.len(),
                        read.len()
                    ));
                }
            }
            Err(e) => history.violation(format!("{log}: {e}")),
        }
    }
    totals
}

/// After a failed final read of `log`: which bookies are registered (readers find bookies by
/// registration), and whether reading again works (a transient failure, or data gone).
fn diagnose(chaos: &Chaos, uri: &str, log: &str) {
    println!("diagnose: registered bookies: {:?}", chaos.runtime.block_on(registered(uri)));
    for attempt in 0..3 {
        pause(Duration::from_secs(1));
        let again = chaos.runtime.block_on(read_all(uri, log, Duration::from_secs(30)));
        println!("diagnose: {log} read again ({attempt}): {:?} records", again.map(|r| r.len()));
    }
}

/// The bookies registered now (writable or read-only).
async fn registered(uri: &str) -> Result<Vec<String>, dlog::log::LogError> {
    let ns = Namespace::open(uri).await?;
    let registry = dlog_metadata::BookieRegistry::new(ns.store().clone());
    let listed = async {
        let mut ids = Vec::new();
        for bookie in registry.writable().await?.into_iter().chain(registry.read_only().await?) {
            ids.push(bookie?.id);
        }
        Ok::<_, dlog_metadata::MetaError>(ids)
    }
    .await;
    ns.shutdown().await;
    Ok(listed?)
}
