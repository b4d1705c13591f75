//! The report of a run (`Summary`): what the JSON holds and what the table shows.
//!
//! - Throughput comes from the first measured phase (the peak, in the default `auto` mode) and
//!   latency from the last (half the peak): latency is never reported at saturation unless
//!   asked for (`--rate max`).
//! - The disk baseline is measured in the same run, on the same directory, before the load and
//!   after it; the better bandwidth and the better latency are the baseline.
//! - `errors` counts every record sent and not acknowledged, and every record a reader saw out
//!   of order, twice or never; `sent == acked + write_errors` always holds.

use serde::Serialize;

use super::load::{CatchUp, LoadOutcome};
use super::progress::SeriesPoint;
use super::workload::{PhasePlan, Rate, RunConfig};
use crate::bench::cpu::CpuUse;
use crate::bench::machine::Machine;
use crate::bench::stats::Latency;

/// Target: publish p99 at half the peak, us.
const TARGET_PUBLISH_P99_US: f64 = 1000.0;
/// Target: peak payload MB/s over (disk write+flush MB/s / write quorum).
const TARGET_DISK_SHARE: f64 = 0.6;
/// Target: the default run's wall time, s.
const TARGET_WALL_S: f64 = 45.0;

/// The disk's own durable write rate and latency, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Baseline {
    /// What was measured.
    pub(crate) what: String,
    /// Sequential O_DIRECT writes of `write_bytes`, each followed by fdatasync: MB/s.
    pub(crate) mb_per_s: f64,
    /// Bytes per write of the bandwidth measurement.
    pub(crate) write_bytes: usize,
    /// 4 KiB O_DIRECT write + fdatasync, one at a time: latency, us.
    pub(crate) latency_us: Latency,
    /// Each measurement (before the load and after it); the figures above are the better of
    /// them (the disk's capability: this machine's disk is shared and has slow spells).
    pub(crate) runs: Vec<BaselineRun>,
}

/// One measurement of the disk.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct BaselineRun {
    /// When: "before" or "after" the load.
    pub(crate) when: String,
    /// Write + fdatasync bandwidth, MB/s.
    pub(crate) mb_per_s: f64,
    /// 4 KiB write + fdatasync latency, us.
    pub(crate) latency_us: Latency,
}

impl Baseline {
    /// The better of `runs`.
    pub(crate) fn of(what: String, write_bytes: usize, runs: Vec<BaselineRun>) -> Baseline {
        let mb_per_s = runs.iter().map(|r| r.mb_per_s).fold(0.0, f64::max);
        let latency_us =
            runs.iter().map(|r| r.latency_us).min_by(|a, b| a.p99.total_cmp(&b.p99)).unwrap_or_default();
        Baseline { what, mb_per_s, write_bytes, latency_us, runs }
    }
}

/// The run against the baseline.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Ratios {
    /// Payload MB/s of the throughput phase over the disk's write+flush MB/s divided by the
    /// write quorum (each replica is written to the one disk of the embedded cluster).
    pub(crate) throughput_vs_disk_per_replica: f64,
    /// Publish p99 over the disk's 4 KiB write+flush p99.
    pub(crate) publish_p99_vs_disk_p99: Option<f64>,
}

/// A figure the issue sets, as this run measured it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Target {
    /// The figure.
    pub(crate) figure: String,
    /// Its target.
    pub(crate) target: String,
    /// Measured.
    pub(crate) measured: f64,
    /// Met.
    pub(crate) pass: bool,
}

/// One phase.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PhaseReport {
    /// Its name.
    pub(crate) name: String,
    /// Measured (not the warm-up, not the settle).
    pub(crate) measured: bool,
    /// "closed" (loop), "open" (loop) or "idle" (nothing sent: the settle).
    pub(crate) mode: String,
    /// Open loop at this many records/s, or closed loop (`None`).
    pub(crate) offered_records_per_s: Option<f64>,
    /// Its length, s.
    pub(crate) seconds: f64,
    /// Records sent in it.
    pub(crate) sent: u64,
    /// ... acknowledged.
    pub(crate) acked: u64,
    /// ... not.
    pub(crate) write_errors: u64,
    /// Records read out of order, twice or never.
    pub(crate) read_errors: u64,
    /// Open loop: records due in it and not sent by its end (the offered rate was not met).
    pub(crate) missed: u64,
    /// Acknowledgements in its time window per second.
    pub(crate) records_per_s: f64,
    /// ... payload MB/s.
    pub(crate) mb_per_s: f64,
    /// Publish latency of its records, us.
    pub(crate) publish_latency_us: Option<Latency>,
    /// End-to-end latency of its records to tailing readers, us.
    pub(crate) e2e_latency_us: Option<Latency>,
    /// Records the tailing readers read of it.
    pub(crate) records_read: u64,
}

/// The catching-up readers.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CatchUpReport {
    /// Readers that caught up / readers.
    pub(crate) caught_up: usize,
    /// Readers.
    pub(crate) readers: usize,
    /// Slowest reader's payload MB/s while catching up.
    pub(crate) mb_per_s_min: f64,
    /// Median reader's.
    pub(crate) mb_per_s_median: f64,
    /// Records the slowest reader caught up over.
    pub(crate) records: u64,
    /// Slowest reader's time to catch up, s.
    pub(crate) seconds_max: f64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Summary {
    /// "harness" (the other benchmarks' reports name themselves: "journal", "bookie", ...).
    pub(crate) bench: String,
    /// dlog's version.
    pub(crate) version: String,
    /// Start, Unix seconds.
    pub(crate) started_unix_s: u64,
    /// The command line.
    pub(crate) command: String,
    /// The configuration.
    pub(crate) config: RunConfig,
    /// The machine.
    pub(crate) machine: Machine,
    /// Durable records/s of the throughput phase.
    pub(crate) records_per_s: f64,
    /// ... payload MB/s.
    pub(crate) mb_per_s: f64,
    /// Which phase that is.
    pub(crate) throughput_phase: String,
    /// Write errors plus read errors, all phases.
    pub(crate) errors: u64,
    /// Records sent and not acknowledged.
    pub(crate) write_errors: u64,
    /// Records read out of order, twice or never.
    pub(crate) read_errors: u64,
    /// Open-loop records due and not sent (all phases): the offered rate was not met.
    pub(crate) missed: u64,
    /// Acknowledged records the readers had not read when the run stopped them (lag, not loss).
    pub(crate) unread: u64,
    /// The settle ended with the peak's queues drained (false: it timed out, and the latency
    /// phase started on a busy system).
    pub(crate) settled: bool,
    /// Records sent, all phases.
    pub(crate) sent: u64,
    /// ... acknowledged.
    pub(crate) acked: u64,
    /// Publish latency of the latency phase, us.
    pub(crate) publish_latency_us: Option<Latency>,
    /// End-to-end latency of the latency phase, us (`None`: no tailing reader).
    pub(crate) e2e_latency_us: Option<Latency>,
    /// Which phase that is.
    pub(crate) latency_phase: String,
    /// Its offered rate, records/s (`None`: closed loop, latency at saturation).
    pub(crate) latency_at_records_per_s: Option<f64>,
    /// The disk baseline.
    pub(crate) baseline: Baseline,
    /// The run against it.
    pub(crate) ratios: Ratios,
    /// The figures this run can say something about.
    pub(crate) targets: Vec<Target>,
    /// Catching-up readers, when there were some.
    pub(crate) catchup: Option<CatchUpReport>,
    /// Each phase.
    pub(crate) phases: Vec<PhaseReport>,
    /// Each second.
    pub(crate) series: Vec<SeriesPoint>,
    /// CPU and disks while the load ran (warm-up, settle and drain included).
    pub(crate) cpu: Option<CpuUse>,
    /// The whole run, start to end (cluster start, baseline, load, drain), s.
    pub(crate) wall_s: f64,
}

/// What goes into a summary besides the load.
pub(crate) struct Context {
    pub(crate) command: String,
    pub(crate) started_unix_s: u64,
    pub(crate) machine: Machine,
    pub(crate) baseline: Baseline,
    pub(crate) cpu: Option<CpuUse>,
    pub(crate) wall_s: f64,
    pub(crate) default_run: bool,
}

impl Summary {
    pub(crate) fn new(
        config: RunConfig,
        plans: &[PhasePlan],
        (outcome, series): (LoadOutcome, Vec<SeriesPoint>),
        ctx: Context,
    ) -> Summary {
        let phases: Vec<PhaseReport> = plans
            .iter()
            .zip(&outcome.phases)
            .zip(&outcome.offered)
            .zip(&outcome.seconds)
            .enumerate()
            .map(|(i, (((plan, s), offered), seconds))| {
                let seconds = seconds.max(1e-9);
                PhaseReport {
                    name: plan.name.to_owned(),
                    measured: plan.measured,
                    mode: plan.mode().to_owned(),
                    offered_records_per_s: *offered,
                    seconds,
                    sent: s.sent,
                    acked: s.acked,
                    write_errors: s.write_errors,
                    read_errors: s.read_errors,
                    missed: outcome.missed.get(i).copied().unwrap_or(0),
                    // The settle sends nothing: what it acknowledges is the peak's tail.
                    records_per_s: if plan.idle { 0.0 } else { s.acked_in_window as f64 / seconds },
                    mb_per_s: if plan.idle { 0.0 } else { s.acked_bytes_in_window as f64 / seconds / 1e6 },
                    publish_latency_us: Latency::of(&s.publish),
                    e2e_latency_us: Latency::of(&s.e2e),
                    records_read: s.read,
                }
            })
            .collect();
        let first = phases.iter().find(|p| p.measured);
        let last = super::workload::latency_phase(plans).map(|i| &phases[i]);
        let sum = |f: fn(&PhaseReport) -> u64| phases.iter().map(f).sum::<u64>();
        let (write_errors, read_errors) = (sum(|p| p.write_errors), sum(|p| p.read_errors));
        let records_per_s = first.map_or(0.0, |p| p.records_per_s);
        let mb_per_s = first.map_or(0.0, |p| p.mb_per_s);
        let publish = last.and_then(|p| p.publish_latency_us);
        let per_replica = ctx.baseline.mb_per_s / config.write_quorum_size as f64;
        let ratios = Ratios {
            throughput_vs_disk_per_replica: if per_replica > 0.0 { mb_per_s / per_replica } else { 0.0 },
            publish_p99_vs_disk_p99: publish
                .filter(|_| ctx.baseline.latency_us.p99 > 0.0)
                .map(|p| p.p99 / ctx.baseline.latency_us.p99),
        };
        let mut targets = Vec::new();
        if let (Rate::Auto { fraction }, Some(p)) = (config.rate, publish)
            && (fraction - 0.5).abs() < 1e-9
        {
            targets.push(Target {
                figure: "publish p99 at 50% of the peak, us".into(),
                target: format!("< {TARGET_PUBLISH_P99_US:.0}"),
                measured: p.p99,
                pass: p.p99 < TARGET_PUBLISH_P99_US,
            });
        }
        if config.metadata.is_none()
            && config.record_size == 1024
            && first.is_some_and(|p| p.offered_records_per_s.is_none())
        {
            targets.push(Target {
                figure: format!(
                    "peak MB/s of {} B records / (disk write+flush MB/s / {})",
                    config.record_size, config.write_quorum_size
                ),
                target: format!(">= {TARGET_DISK_SHARE}"),
                measured: ratios.throughput_vs_disk_per_replica,
                pass: ratios.throughput_vs_disk_per_replica >= TARGET_DISK_SHARE,
            });
        }
        if ctx.default_run {
            targets.push(Target {
                figure: "default run's wall time, s".into(),
                target: format!("< {TARGET_WALL_S:.0}"),
                measured: ctx.wall_s,
                pass: ctx.wall_s < TARGET_WALL_S,
            });
        }
        let catchup = config.catchup.then(|| catch_up_report(&outcome.catch_ups));
        Summary {
            bench: super::compare::HARNESS.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_unix_s: ctx.started_unix_s,
            command: ctx.command,
            machine: ctx.machine,
            records_per_s,
            mb_per_s,
            throughput_phase: first.map_or_else(String::new, |p| p.name.clone()),
            errors: write_errors + read_errors,
            write_errors,
            read_errors,
            sent: sum(|p| p.sent),
            missed: sum(|p| p.missed),
            unread: outcome.unread,
            settled: outcome.settled,
            acked: sum(|p| p.acked),
            publish_latency_us: publish,
            e2e_latency_us: last.and_then(|p| p.e2e_latency_us),
            latency_phase: last.map_or_else(String::new, |p| p.name.clone()),
            latency_at_records_per_s: last.and_then(|p| p.offered_records_per_s),
            baseline: ctx.baseline,
            ratios,
            targets,
            catchup,
            phases,
            series,
            cpu: ctx.cpu,
            wall_s: ctx.wall_s,
            config,
        }
    }

    /// The table, for people.
    pub(crate) fn table(&self) -> String {
        use std::fmt::Write;
        let c = &self.config;
        let mut t = String::new();
        let cluster = c.metadata.as_deref().map_or_else(
            || format!("embedded local cluster of {} bookies", c.bookies),
            |m| format!("cluster at {m}"),
        );
        let _ = writeln!(
            t,
            "dlog bench --workload {}: {} writer(s) on {} log(s), {} reader(s) per log{}, {} B records, \
             E={} Qw={} Qa={}, {cluster}",
            serde_json::to_value(c.workload)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            c.writers,
            c.logs,
            c.readers,
            if c.catchup { " (catching up from the head)" } else { "" },
            c.record_size,
            c.ensemble_size,
            c.write_quorum_size,
            c.ack_quorum_size
        );
        let _ = writeln!(t, "machine: {}", self.machine.line());
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<8} {:>6} {:>12} {:>12} {:>9}  {:>36}  {:>36}  {:>6}",
            "phase",
            "s",
            "offered/s",
            "records/s",
            "MB/s",
            "publish p50/p90/p99/p99.9/max us",
            "e2e p50/p90/p99/p99.9/max us",
            "errors"
        );
        for p in &self.phases {
            let offered = p.offered_records_per_s.map_or_else(|| p.mode.clone(), |r| format!("{r:.0}"));
            let _ = writeln!(
                t,
                "{:<8} {:>6.1} {:>12} {:>12.0} {:>9.1}  {:>36}  {:>36}  {:>6}",
                p.name,
                p.seconds,
                offered,
                p.records_per_s,
                p.mb_per_s,
                percentiles(p.publish_latency_us),
                percentiles(p.e2e_latency_us),
                p.write_errors + p.read_errors
            );
        }
        if self.phases.iter().any(|p| p.measured && p.mode == "closed") {
            let _ = writeln!(
                t,
                "(closed-loop latency is the queue of {} records in flight per writer, not the system's latency; \
                 tailing readers may lag at the peak)",
                c.in_flight
            );
        }
        let _ = writeln!(t);
        let rate = self
            .latency_at_records_per_s
            .map_or_else(|| "closed loop".to_owned(), |r| format!("{r:.0} records/s"));
        let rows: Vec<(String, String)> = vec![
            (
                format!("throughput ({})", self.throughput_phase),
                format!("{:.0} records/s, {:.1} MB/s", self.records_per_s, self.mb_per_s),
            ),
            (
                format!("publish latency ({}, {rate})", self.latency_phase),
                percentiles_long(self.publish_latency_us),
            ),
            (format!("end-to-end latency ({})", self.latency_phase), percentiles_long(self.e2e_latency_us)),
            (
                "errors".into(),
                format!(
                    "{} (sent {}, acknowledged {}, write errors {}, read errors {})",
                    self.errors, self.sent, self.acked, self.write_errors, self.read_errors
                ),
            ),
            (
                "not errors, but read them".into(),
                format!(
                    "open-loop records due and not sent {}; acknowledged records unread when the readers \
                     stopped {}; settle {}",
                    self.missed,
                    self.unread,
                    if self.settled {
                        "drained the peak's queues"
                    } else {
                        "TIMED OUT: latency measured on a busy system"
                    }
                ),
            ),
            (
                "disk baseline (same run)".into(),
                format!(
                    "{:.0} MB/s ({} KiB write + fdatasync); 4 KiB write + fdatasync p50 {:.0} us, p99 {:.0} us",
                    self.baseline.mb_per_s,
                    self.baseline.write_bytes >> 10,
                    self.baseline.latency_us.p50,
                    self.baseline.latency_us.p99
                ),
            ),
            (
                "ratios".into(),
                format!(
                    "throughput {:.2}x the disk's bandwidth / {} replicas; publish p99 {}",
                    self.ratios.throughput_vs_disk_per_replica,
                    c.write_quorum_size,
                    self.ratios
                        .publish_p99_vs_disk_p99
                        .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}x the disk's write+flush p99"))
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(t, "{k:<44} {v}");
        }
        if let Some(cu) = &self.catchup {
            let _ = writeln!(
                t,
                "{:<44} {} of {} caught up; slowest {:.1} MB/s ({} records in {:.1} s), median {:.1} MB/s",
                "catch-up from the head",
                cu.caught_up,
                cu.readers,
                cu.mb_per_s_min,
                cu.records,
                cu.seconds_max,
                cu.mb_per_s_median
            );
        }
        if let Some(cpu) = &self.cpu {
            let _ = writeln!(t, "{:<44} {}", "CPU and disks (the whole load)", cpu.summary());
        }
        if !self.targets.is_empty() {
            let _ = writeln!(t);
            for target in &self.targets {
                let verdict = if target.pass { "PASS" } else { "MISS" };
                let _ = writeln!(
                    t,
                    "target: {:<60} {:>10.2} {:<8} {verdict}",
                    target.figure, target.measured, target.target
                );
            }
        }
        t
    }
}

fn percentiles(p: Option<Latency>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |p| format!("{:.0}/{:.0}/{:.0}/{:.0}/{:.0}", p.p50, p.p90, p.p99, p.p999, p.max),
    )
}

fn percentiles_long(p: Option<Latency>) -> String {
    p.map_or_else(
        || "- (not measured)".to_owned(),
        |p| {
            format!(
                "p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
                p.p50, p.p90, p.p99, p.p999, p.max
            )
        },
    )
}

fn catch_up_report(catch_ups: &[Option<CatchUp>]) -> CatchUpReport {
    let done: Vec<&CatchUp> = catch_ups.iter().flatten().collect();
    let mut rates: Vec<f64> = done.iter().map(|c| c.bytes as f64 / c.seconds.max(1e-9) / 1e6).collect();
    rates.sort_by(f64::total_cmp);
    let slowest = done.iter().max_by(|a, b| a.seconds.total_cmp(&b.seconds));
    CatchUpReport {
        caught_up: done.len(),
        readers: catch_ups.len(),
        mb_per_s_min: rates.first().copied().unwrap_or(0.0),
        mb_per_s_median: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        records: slowest.map_or(0, |c| c.records),
        seconds_max: slowest.map_or(0.0, |c| c.seconds),
    }
}
