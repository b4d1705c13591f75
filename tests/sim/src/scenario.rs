//! `Scenario`: everything one seed decides before the run starts: the cluster's shape, the
//! workload, the cores' settings and the fault mix.
//!
//! Invariants:
//! - SC1: a scenario is a pure function of its seed (its own ChaCha stream), so a seed names a
//!   run exactly, whatever the run then draws from the world's stream.
//! - SC2: every fault has a window: faults are injected only before `faults_end`; after it the
//!   world heals (partitions and clogs lifted, every bookie up) so the checkers can require
//!   progress (every recovery closes, every reader reaches the end).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A bug planted on purpose, to show the checkers find it (`--mutation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mutation {
    /// No bug: the real system.
    #[default]
    None,
    /// Bookies serve fencing READ_LAC and READ without fencing the segment.
    SkipFence,
    /// At a crash a bookie's disk also loses the last write it had reported durable.
    LoseDurable,
}

/// The fault mix of one seed: which faults happen, and how often. Probabilities are per event
/// (per message, per disk operation, per metadata call).
#[derive(Clone, Debug)]
pub struct FaultMix {
    /// Network delay: each message takes `delay_min..=delay_max`.
    pub net_delay_min: Duration,
    /// Longest ordinary network delay.
    pub net_delay_max: Duration,
    /// A message is lost (its connection resets).
    pub p_drop: f64,
    /// A request is delivered twice.
    pub p_duplicate: f64,
    /// An answer already delivered reaches the core again later (a stale duplicate).
    pub p_stale_answer: f64,
    /// Messages of one connection keep their order (TCP); `false`: any order.
    pub fifo: bool,
    /// Partitions between clients and bookies happen.
    pub partitions: bool,
    /// Swizzle-clogging: bookies clogged one by one, then unclogged in another order.
    pub clogging: bool,
    /// Bookie crashes (SIGKILL-like: in-flight writes lost or torn) in the fault window.
    pub crashes: u32,
    /// A journal write+flush fails with EIO (the shard poisons; a supervisor restarts it).
    pub p_eio_write: f64,
    /// A journal read fails with EIO.
    pub p_eio_read: f64,
    /// Preparing a journal file fails with ENOSPC.
    pub p_enospc: f64,
    /// A write+flush is slow (up to `slow_fsync_max`).
    pub p_slow_fsync: f64,
    /// The slowest flush.
    pub slow_fsync_max: Duration,
    /// Writes in flight at a crash may land torn (some sectors only); otherwise each lands
    /// whole or not at all.
    pub torn_writes: bool,
    /// Metadata calls take up to this long.
    pub meta_delay_max: Duration,
    /// A metadata call fails before it is applied (`Unavailable`).
    pub p_meta_fail: f64,
}

/// What one seed runs.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// Bookies in the cluster (the ensemble plus spares).
    pub bookies: usize,
    /// `ensemble_size`, `write_quorum_size`, `ack_quorum_size`.
    pub quorum: (usize, usize, usize),
    /// Entries the writer adds.
    pub entries: u64,
    /// Largest payload.
    pub payload_bytes_max: usize,
    /// Mean gap between adds.
    pub add_gap_mean: Duration,
    /// The writer's window (entries).
    pub window_entries: usize,
    /// The writer loses its lease during the fault window and recoverers take over.
    pub takeover: bool,
    /// Recoverers started (racing) once the writer's lease is lost.
    pub recoverers: usize,
    /// Tailing readers.
    pub readers: usize,
    /// Shard: batch byte bound.
    pub batch_bytes_max: usize,
    /// Shard: batch delay bound.
    pub batch_delay_max: Duration,
    /// Shard: close a batch when the queue runs dry.
    pub batch_when_idle: bool,
    /// Shard: batches in flight.
    pub writes_in_flight_max: usize,
    /// Shard: journal file size.
    pub journal_file_bytes: u64,
    /// Clients: a request without an answer fails after this long.
    pub request_timeout: Duration,
    /// Faults are injected before this time only (SC2).
    pub faults_end: Duration,
    /// The fault mix.
    pub faults: FaultMix,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn maybe(rng: &mut ChaCha8Rng, p_on: f64, value: f64) -> f64 {
    if rng.random_bool(p_on) { value } else { 0.0 }
}

impl Scenario {
    /// The scenario of `seed` (SC1).
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ce7_a210);
        let quorum = match rng.random_range(0..6) {
            0 => (3, 2, 2),
            1 => (4, 3, 2),
            2 => (5, 3, 2),
            3 => (4, 2, 2),
            4 => (5, 5, 3),
            _ => (3, 3, 2),
        };
        let bookies = quorum.0 + rng.random_range(1..=2);
        let calm = rng.random_bool(0.1);
        let p = |rng: &mut ChaCha8Rng, on: f64, hi: f64| {
            if calm {
                0.0
            } else {
                let value = rng.random_range(0.0..hi);
                maybe(rng, on, value)
            }
        };
        let faults = FaultMix {
            net_delay_min: Duration::from_micros(rng.random_range(20..200)),
            net_delay_max: Duration::from_micros(rng.random_range(200..20_000)),
            p_drop: p(&mut rng, 0.5, 0.01),
            p_duplicate: p(&mut rng, 0.4, 0.05),
            p_stale_answer: p(&mut rng, 0.4, 0.05),
            fifo: rng.random_bool(0.5),
            partitions: !calm && rng.random_bool(0.4),
            clogging: !calm && rng.random_bool(0.3),
            crashes: if calm { 0 } else { [0, 0, 1, 2, 3, 5][rng.random_range(0..6)] },
            p_eio_write: p(&mut rng, 0.25, 0.002),
            p_eio_read: p(&mut rng, 0.25, 0.01),
            p_enospc: p(&mut rng, 0.2, 0.3),
            p_slow_fsync: p(&mut rng, 0.4, 0.05),
            slow_fsync_max: ms(rng.random_range(5..500)),
            torn_writes: rng.random_bool(0.7),
            meta_delay_max: ms(rng.random_range(1..200)),
            p_meta_fail: p(&mut rng, 0.4, 0.2),
        };
        let recoverers = rng.random_range(1..=3);
        Scenario {
            seed,
            bookies,
            quorum,
            entries: rng.random_range(10..=400),
            payload_bytes_max: [16, 200, 1000, 5000][rng.random_range(0..4)],
            add_gap_mean: Duration::from_micros(rng.random_range(10..5000)),
            window_entries: [2, 8, 32, 128][rng.random_range(0..4)],
            takeover: rng.random_bool(0.5),
            recoverers,
            readers: rng.random_range(0..=2),
            batch_bytes_max: [8 << 10, 16 << 10, 64 << 10][rng.random_range(0..3)],
            batch_delay_max: Duration::from_micros(rng.random_range(0..2000)),
            batch_when_idle: rng.random_bool(0.7),
            writes_in_flight_max: rng.random_range(1..=4),
            journal_file_bytes: [128 << 10, 256 << 10, 1 << 20][rng.random_range(0..3)],
            request_timeout: ms(rng.random_range(200..3000)),
            faults_end: ms(rng.random_range(2_000..15_000)),
            faults,
        }
    }
}
