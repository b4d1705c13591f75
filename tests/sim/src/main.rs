//! `dlog-sim`: runs seeds of the deterministic simulation (see lib.rs).
//!
//! `dlog-sim --seed N` runs one seed and prints what happened; `dlog-sim --seeds K [--from S]`
//! runs K seeds from S (a random S when not given), on `--jobs` threads, stopping early at
//! `--time-limit`. Every failing seed is printed with its violations and the command that
//! replays it; the exit status is 1 when any seed failed.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

/// Deterministic simulation of dlog's cores under seeded faults.
#[derive(Parser, Debug)]
#[command(name = "dlog-sim")]
struct Args {
    /// Run this one seed and describe it.
    #[arg(long, conflicts_with_all = ["seeds", "from"])]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of `--seeds` (default: random).
    #[arg(long)]
    from: Option<u64>,
    /// Threads running seeds.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Stop starting seeds after this many seconds.
    #[arg(long)]
    time_limit: Option<u64>,
    /// Plant a bug, to see the checkers catch it (failing seeds are then expected).
    #[arg(long, value_enum, default_value_t = dlog_sim::Mutation::None)]
    mutation: dlog_sim::Mutation,
}

fn describe(report: &dlog_sim::Report) {
    let s = &report.scenario;
    let f = &s.faults;
    println!(
        "seed {}: {} bookies, E/Qw/Qa {:?}, {} entries (<= {} B), window {}, takeover {} ({} recoverers), {} readers",
        s.seed,
        s.bookies,
        s.quorum,
        s.entries,
        s.payload_bytes_max,
        s.window_entries,
        s.takeover,
        s.recoverers,
        s.readers
    );
    println!(
        "  faults until {:?}: drop {:.4} dup {:.3} stale {:.3} fifo {} partitions {} clogging {} crashes {} \
         eio w {:.4} r {:.4} enospc {:.2} slow fsync {:.3} (<= {:?}) torn {} meta fail {:.2} (<= {:?})",
        s.faults_end,
        f.p_drop,
        f.p_duplicate,
        f.p_stale_answer,
        f.fifo,
        f.partitions,
        f.clogging,
        f.crashes,
        f.p_eio_write,
        f.p_eio_read,
        f.p_enospc,
        f.p_slow_fsync,
        f.slow_fsync_max,
        f.torn_writes,
        f.p_meta_fail,
        f.meta_delay_max
    );
    println!(
        "  added {} acked {} closed at {:?}; readers delivered {}; {} bookie restarts; virtual {:?}",
        report.added, report.acked, report.last_entry, report.delivered, report.restarts, report.virtual_time
    );
    println!("  {:?}", report.stats);
    println!("  {:?}", report.net);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        let report = dlog_sim::run_mutated(seed, args.mutation);
        describe(&report);
        if report.violations.is_empty() {
            println!("seed {seed}: ok");
            return Ok(());
        }
        for v in &report.violations {
            println!("  VIOLATION {v}");
        }
        std::process::exit(1);
    }
    anyhow::ensure!(args.jobs > 0, "--jobs must be at least 1");
    let from = args.from.unwrap_or_else(rand::random);
    #[expect(clippy::disallowed_methods, reason = "wall time of the batch, for the report")]
    let started = Instant::now();
    let limit = args.time_limit.map(Duration::from_secs);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failed = Mutex::new(Vec::new());
    let passed = AtomicU64::new(0);
    let totals = Mutex::new((dlog_sim::Stats::default(), dlog_sim::NetStats::default()));
    println!("dlog-sim: {} seeds from {from} on {} threads", args.seeds, args.jobs);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.seeds || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if limit.is_some_and(|l| started.elapsed() > l) {
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    let seed = from.wrapping_add(i);
                    let report = dlog_sim::run_mutated(seed, args.mutation);
                    {
                        let mut totals = totals.lock().expect("not poisoned");
                        totals.0.add(&report.stats);
                        totals.1.add(&report.net);
                    }
                    if report.violations.is_empty() {
                        passed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "seed {seed} FAILED: {}", report.violations[0]);
                        let _ = writeln!(out, "  replay: cargo run --release -p dlog-sim -- --seed {seed}");
                        failed.lock().expect("not poisoned").push(seed);
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().expect("not poisoned");
    let passed = passed.load(Ordering::Relaxed);
    let (stats, net) = totals.into_inner().expect("not poisoned");
    println!(
        "dlog-sim: {passed} seeds passed, {} failed, in {:.1} s ({} events){}",
        failed.len(),
        started.elapsed().as_secs_f64(),
        stats.events,
        if stop.load(Ordering::Relaxed) { " (time limit reached)" } else { "" }
    );
    println!("  totals: {stats:?}");
    println!("  network: {net:?}");
    if !failed.is_empty() {
        println!("failed seeds: {failed:?}");
        std::process::exit(1);
    }
    Ok(())
}
