//! The simulation in CI: a fixed set of seeds (the same every run) and a random batch (new
//! each run, its first seed printed), at least 200 in all; and the checkers shown to bite: with
//! a bug planted (`Mutation`), some seed must fail, with the violation that bug causes.
//!
//! Any failing seed is printed with the command that replays it exactly:
//! `cargo run --release -p dlog-sim -- --seed N`. `DLOG_SIM_SEEDS=N` sets the random batch's
//! size (default 100), `DLOG_SIM_FROM=S` its first seed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dlog_sim::{Mutation, Report};

/// Seeds `from..from + count` on two threads; the failing ones with their first violation.
fn run_seeds(from: u64, count: u64, mutation: Mutation, stop_at_first: bool) -> Vec<(u64, String)> {
    let next = AtomicU64::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || (stop_at_first && !failed.lock().unwrap().is_empty()) {
                        return;
                    }
                    let seed = from.wrapping_add(i);
                    let report: Report = dlog_sim::run_mutated(seed, mutation);
                    if let Some(first) = report.violations.first() {
                        failed.lock().unwrap().push((seed, first.clone()));
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    failed
}

fn assert_clean(failed: &[(u64, String)]) {
    for (seed, violation) in failed {
        println!("seed {seed} FAILED: {violation}");
        println!("  replay: cargo run --release -p dlog-sim -- --seed {seed}");
    }
    assert!(
        failed.is_empty(),
        "{} seeds failed: {:?}",
        failed.len(),
        failed.iter().map(|f| f.0).collect::<Vec<_>>()
    );
}

#[test]
fn fixed_seeds_run_clean() {
    assert_clean(&run_seeds(0, 150, Mutation::None, false));
}

#[test]
fn a_random_batch_runs_clean() {
    let count = std::env::var("DLOG_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let from = std::env::var("DLOG_SIM_FROM").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!(
        "random batch: {count} seeds from {from} (DLOG_SIM_FROM={from} DLOG_SIM_SEEDS={count} repeats it)"
    );
    assert_clean(&run_seeds(from, count, Mutation::None, false));
}

#[test]
fn a_seed_replays_exactly() {
    // Seeds heavy in faults: crashes, a takeover, failed journal writes, readers.
    let heavy: Vec<u64> = (0..)
        .filter(|s| {
            let scenario = dlog_sim::Scenario::from_seed(*s);
            let f = &scenario.faults;
            f.crashes >= 2 && scenario.takeover && f.p_eio_write > 0.0 && scenario.readers > 0
        })
        .take(3)
        .collect();
    for seed in heavy {
        let (a, b) = (dlog_sim::run(seed), dlog_sim::run(seed));
        assert!(a.stats.crashes > 0 && a.stats.recoveries > 0, "seed {seed} is not heavy: {a:?}");
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed} ran twice differently");
    }
}

/// The checkers find a planted bug, with the violation it should cause.
fn planted(mutation: Mutation, expected: &[&str]) {
    let failed = run_seeds(7000, 400, mutation, true);
    let (seed, violation) = failed.first().unwrap_or_else(|| panic!("no seed of 400 found {mutation:?}"));
    println!("{mutation:?}: seed {seed}: {violation}");
    assert!(
        expected.iter().any(|e| violation.contains(e)),
        "{mutation:?} found as {violation}, expected one of {expected:?}"
    );
}

#[test]
fn a_bookie_that_does_not_fence_is_caught() {
    // Acknowledged entries past the recovered end (H4), or readers shown entries the close
    // then drops (H3).
    planted(Mutation::SkipFence, &["SB1", "H4", "H3"]);
}

#[test]
fn a_disk_that_loses_durable_writes_is_caught() {
    // An acknowledged copy lost (A3), replicas missing (A2), acknowledged entries lost (H4), a
    // LAC moving back (SB2), or a journal that cannot replay.
    planted(Mutation::LoseDurable, &["A3", "A2", "H4", "H3", "SB2", "SB3"]);
}
