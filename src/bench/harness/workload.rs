//! The harness's workloads, named after the users they stand for, and the run's configuration
//! resolved from a workload and the flags that override it (`RunConfig`, written whole into
//! the JSON report), with the phases it runs (`PhasePlan`).
//!
//! Invariants: a resolved `RunConfig` is valid (one writer per log, quorums that fit, a record
//! large enough for its stamp); its phases cover exactly `warmup + duration`, plus a settle
//! (at most `SETTLE_MAX`, ending once the queues drained) before a phase offered a share of a
//! peak.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Bytes of a record's stamp: log sequence number, send time, phase (see `load.rs`).
pub(crate) const STAMP_BYTES: usize = 17;

/// Who the run stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Writers and tailing readers on several logs, 1 KiB records: peak throughput, then
    /// latency at half of it.
    Mixed,
    /// Database journaling: one writer, one follower reading, 100-byte records: latency first
    /// (peak, then latency at half of it).
    Journal,
    /// Many writers, no readers, 1 KiB records: throughput (closed loop for the whole run).
    Ingest,
    /// One writer, many tailing readers, 1 KiB records.
    Fanout,
    /// One writer builds a backlog; then readers start from the head and catch up while it
    /// goes on writing at half its peak.
    Catchup,
}

/// How records are offered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(crate) enum Rate {
    /// Closed loop: each writer keeps `in_flight` records unacknowledged.
    Max,
    /// A third of the run at the peak (closed loop), the rest open loop at `fraction` of it.
    Auto {
        /// Of the peak, in (0, 1].
        fraction: f64,
    },
    /// Open loop at this many records/s in total, the whole run.
    Fixed {
        /// Records per second over all writers.
        records_per_s: f64,
    },
}

/// The open-loop rates `--rate` takes, records/s.
const RATE_MIN: f64 = 0.001;
const RATE_MAX: f64 = 1e8;

/// `--rate`: a number of records/s, `max` or `auto`.
pub(crate) fn parse_rate(s: &str) -> Result<RateFlag, String> {
    match s {
        "max" => Ok(RateFlag::Max),
        "auto" => Ok(RateFlag::Auto),
        _ => match s.replace('_', "").parse::<f64>() {
            Ok(r) if (RATE_MIN..=RATE_MAX).contains(&r) => Ok(RateFlag::Fixed(r)),
            _ => {
                Err(format!("bad rate {s:?}: expected records/s in [{RATE_MIN}, {RATE_MAX:e}], max or auto"))
            }
        },
    }
}

/// `--rate` as given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RateFlag {
    /// `max`.
    Max,
    /// `auto`.
    Auto,
    /// Records/s.
    Fixed(f64),
}

/// What one phase does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct PhasePlan {
    /// "warmup", "peak", "rated", "max", "fixed", "backlog", "catchup".
    pub(crate) name: &'static str,
    /// Measured (the warm-up is not).
    pub(crate) measured: bool,
    /// Open loop at this many records/s over all writers, or (`None`) closed loop.
    #[serde(skip)]
    pub(crate) open: Option<OpenRate>,
    /// Its length.
    #[serde(skip)]
    pub(crate) length: Duration,
    /// Readers start reading (from the head when catching up) at this phase's start.
    pub(crate) readers_start: bool,
    /// Nothing is sent (the settle between a peak and the phase at a share of it).
    pub(crate) idle: bool,
}

impl PhasePlan {
    pub(crate) fn new(
        name: &'static str,
        measured: bool,
        open: Option<OpenRate>,
        length: Duration,
        readers_start: bool,
    ) -> PhasePlan {
        PhasePlan { name, measured, open, length, readers_start, idle: false }
    }

    /// "closed", "open" or "idle".
    pub(crate) fn mode(&self) -> &'static str {
        match (self.idle, self.open) {
            (true, _) => "idle",
            (false, None) => "closed",
            (false, Some(_)) => "open",
        }
    }
}

/// The phase latency is reported from: the last measured one (throughput comes from the
/// first).
pub(crate) fn latency_phase(plans: &[PhasePlan]) -> Option<usize> {
    plans.iter().rposition(|p| p.measured)
}

/// Between a closed-loop peak and the open loop at a share of it, nothing is sent until the
/// peak's queues have drained (every record acknowledged, every tailing reader caught up), at
/// most this long: latency is measured from a settled system.
pub(crate) const SETTLE_MAX: Duration = Duration::from_secs(5);

/// An open-loop phase's rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum OpenRate {
    /// Records/s.
    Fixed(f64),
    /// This fraction of the peak measured in the last closed-loop phase before.
    OfPeak(f64),
}

/// The whole configuration of a run (in the JSON report as `config`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunConfig {
    /// The workload the defaults came from.
    pub(crate) workload: Workload,
    /// The cluster: `None` for the embedded local cluster in a temp directory.
    pub(crate) metadata: Option<String>,
    /// Bookies of the embedded cluster.
    pub(crate) bookies: usize,
    /// Writers, one per log at a time (a writer with several logs writes them in turn).
    pub(crate) writers: usize,
    /// Logs.
    pub(crate) logs: usize,
    /// Readers per log.
    pub(crate) readers: usize,
    /// Readers start from the head after the first measured phase, not from the tail at once.
    pub(crate) catchup: bool,
    /// Payload bytes per record.
    pub(crate) record_size: usize,
    /// How records are offered.
    pub(crate) rate: Rate,
    /// Closed loop: records written and not yet acknowledged, per writer.
    pub(crate) in_flight: usize,
    /// Measured time, s.
    pub(crate) duration_s: f64,
    /// Unmeasured time before, s.
    pub(crate) warmup_s: f64,
    /// Bookies a segment is striped over.
    pub(crate) ensemble_size: usize,
    /// Bookies each entry is written to.
    pub(crate) write_quorum_size: usize,
    /// Acknowledgements an entry needs.
    pub(crate) ack_quorum_size: usize,
    /// The writer's transmit bound: records gather into an entry at most this long, us (`None`:
    /// the writer's default).
    pub(crate) flush_delay_us: Option<u64>,
    /// `--set` settings changes, KEY=VALUE.
    pub(crate) set: Vec<String>,
}

/// Flags that override a workload's defaults (`None`: the workload's).
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    pub(crate) metadata: Option<String>,
    pub(crate) writers: Option<usize>,
    pub(crate) logs: Option<usize>,
    pub(crate) readers: Option<usize>,
    pub(crate) catchup: bool,
    pub(crate) record_size: Option<usize>,
    pub(crate) rate: Option<RateFlag>,
    pub(crate) load_fraction: f64,
    pub(crate) in_flight_bytes: Option<u64>,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) ensemble_size: usize,
    pub(crate) write_quorum_size: usize,
    pub(crate) ack_quorum_size: usize,
    pub(crate) flush_delay: Option<Duration>,
    pub(crate) set: Vec<String>,
}

impl RunConfig {
    /// The workload's defaults with the flags applied; checked.
    pub(crate) fn resolve(workload: Workload, o: &Overrides) -> Result<RunConfig> {
        // (writers, logs, readers per log, record size, rate, MiB in flight per writer)
        let (writers, logs, readers, record_size, rate, in_flight_mib) = match workload {
            Workload::Mixed => (4, 4, 1, 1024, RateFlag::Auto, 16),
            // 4 MiB: 42k records of 100 B are enough to fill entries; more only cost the
            // writer and the load generator (1.08 M records/s at 16 MiB, 1.3 M at 4 MiB).
            Workload::Journal => (1, 1, 1, 100, RateFlag::Auto, 4),
            Workload::Ingest => (8, 8, 0, 1024, RateFlag::Max, 16),
            Workload::Fanout => (1, 1, 8, 1024, RateFlag::Auto, 16),
            Workload::Catchup => (1, 1, 2, 1024, RateFlag::Auto, 16),
        };
        let writers = o.writers.unwrap_or(writers);
        let logs = o.logs.unwrap_or(if o.writers.is_some() { writers.max(logs) } else { logs });
        let record_size = o.record_size.unwrap_or(record_size);
        let rate = match o.rate.unwrap_or(rate) {
            RateFlag::Max => Rate::Max,
            RateFlag::Auto => Rate::Auto { fraction: o.load_fraction },
            RateFlag::Fixed(records_per_s) => Rate::Fixed { records_per_s },
        };
        let in_flight_bytes = o.in_flight_bytes.unwrap_or(in_flight_mib << 20);
        let config = RunConfig {
            workload,
            metadata: o.metadata.clone(),
            bookies: if o.metadata.is_some() { 0 } else { o.ensemble_size.max(3) },
            writers,
            logs,
            readers: o.readers.unwrap_or(readers),
            catchup: o.catchup || workload == Workload::Catchup,
            record_size,
            rate,
            in_flight: (in_flight_bytes / record_size.max(1) as u64).clamp(1, 1 << 20) as usize,
            duration_s: o.duration.as_secs_f64(),
            warmup_s: o.warmup.as_secs_f64(),
            ensemble_size: o.ensemble_size,
            write_quorum_size: o.write_quorum_size,
            ack_quorum_size: o.ack_quorum_size,
            // A delay under a microsecond is one, not zero ("no bound").
            flush_delay_us: o.flush_delay.map(|d| if d.is_zero() { 0 } else { d.as_micros().max(1) as u64 }),
            set: o.set.clone(),
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.writers == 0 || self.logs == 0 {
            bail!("--writers and --logs must be at least 1");
        }
        if self.writers > self.logs {
            bail!(
                "{} writers for {} logs: a log has one writer (give --logs at least --writers)",
                self.writers,
                self.logs
            );
        }
        if self.writers > 256 || self.logs > 1024 || self.logs * self.readers > 1024 {
            bail!("at most 256 writers, 1024 logs, and 1024 readers in all (--logs x --readers)");
        }
        if self.metadata.is_none() && self.ensemble_size > crate::local_cluster::BOOKIES_MAX {
            bail!(
                "the embedded cluster runs at most {} bookies (--ensemble)",
                crate::local_cluster::BOOKIES_MAX
            );
        }
        if self.record_size < STAMP_BYTES {
            bail!(
                "--record-size must be at least {STAMP_BYTES} (records carry a sequence number and a timestamp)"
            );
        }
        if self.record_size > (1 << 20) - (4 << 10) {
            bail!("--record-size must be at most 1 MiB - 4 KiB (a record fits an entry)");
        }
        let (e, w, a) = (self.ensemble_size, self.write_quorum_size, self.ack_quorum_size);
        if !(a >= 1 && a <= w && w <= e) {
            bail!("quorums must satisfy 1 <= --ack-quorum <= --write-quorum <= --ensemble (got {e}/{w}/{a})");
        }
        if self.duration_s < 1.0 {
            bail!("--duration must be at least 1s");
        }
        if let Rate::Auto { fraction } = self.rate
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            bail!("--load-fraction must be in (0, 1]");
        }
        if self.catchup && self.readers == 0 {
            bail!("--catchup needs readers (--readers at least 1)");
        }
        Ok(())
    }

    /// The phases, in order.
    pub(crate) fn phases(&self) -> Vec<PhasePlan> {
        let secs = Duration::from_secs_f64;
        let (duration, warmup) = (secs(self.duration_s), secs(self.warmup_s));
        let tail_readers = !self.catchup;
        let mut phases = Vec::new();
        let first_open = match self.rate {
            Rate::Fixed { records_per_s } => Some(OpenRate::Fixed(records_per_s)),
            Rate::Max | Rate::Auto { .. } => None,
        };
        if !warmup.is_zero() {
            phases.push(PhasePlan::new("warmup", false, first_open, warmup, tail_readers));
        }
        // Tailing readers start with the first phase.
        let readers_now = |phases: &Vec<PhasePlan>| tail_readers && phases.is_empty();
        match self.rate {
            Rate::Max | Rate::Fixed { .. } if self.catchup => {
                let name = if first_open.is_some() { "fixed" } else { "max" };
                let half = duration / 2;
                phases.push(PhasePlan::new("backlog", true, first_open, half, false));
                phases.push(PhasePlan::new(name, true, first_open, duration - half, true));
            }
            Rate::Max => {
                let readers_start = readers_now(&phases);
                phases.push(PhasePlan::new("max", true, None, duration, readers_start));
            }
            Rate::Fixed { .. } => {
                let readers_start = readers_now(&phases);
                phases.push(PhasePlan::new("fixed", true, first_open, duration, readers_start));
            }
            Rate::Auto { fraction } => {
                let peak = if self.catchup { duration / 2 } else { duration / 3 };
                let readers_start = readers_now(&phases);
                let name = if self.catchup { "backlog" } else { "peak" };
                phases.push(PhasePlan::new(name, true, None, peak, readers_start));
                phases.push(PhasePlan {
                    idle: true,
                    ..PhasePlan::new("settle", false, None, SETTLE_MAX, false)
                });
                let open = Some(OpenRate::OfPeak(fraction));
                let name = if self.catchup { "catchup" } else { "rated" };
                phases.push(PhasePlan::new(name, true, open, duration - peak, self.catchup));
            }
        }
        phases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides() -> Overrides {
        Overrides {
            load_fraction: 0.5,
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(2),
            ensemble_size: 3,
            write_quorum_size: 3,
            ack_quorum_size: 2,
            ..Overrides::default()
        }
    }

    #[test]
    fn default_is_peak_then_half_of_it() {
        let c = RunConfig::resolve(Workload::Mixed, &overrides()).unwrap();
        let phases = c.phases();
        let names: Vec<&str> = phases.iter().map(|p| p.name).collect();
        assert_eq!(names, ["warmup", "peak", "settle", "rated"]);
        let total: Duration = phases.iter().map(|p| p.length).sum();
        assert_eq!(total, Duration::from_secs(37));
        assert_eq!(phases[3].open, Some(OpenRate::OfPeak(0.5)));
        assert!(phases[2].idle && !phases[2].measured && phases[2].mode() == "idle");
        assert!(phases[0].readers_start && !phases[1].readers_start);
        assert_eq!(c.in_flight, 16 << 10);
    }

    #[test]
    fn catchup_readers_start_at_the_second_phase() {
        let c = RunConfig::resolve(Workload::Catchup, &overrides()).unwrap();
        let phases = c.phases();
        let starts: Vec<(&str, bool)> = phases.iter().map(|p| (p.name, p.readers_start)).collect();
        assert_eq!(starts, [("warmup", false), ("backlog", false), ("settle", false), ("catchup", true)]);
        let mut o = overrides();
        o.rate = Some(RateFlag::Fixed(1000.0));
        o.warmup = Duration::ZERO;
        let c = RunConfig::resolve(Workload::Catchup, &o).unwrap();
        let starts: Vec<(&str, bool)> = c.phases().iter().map(|p| (p.name, p.readers_start)).collect();
        assert_eq!(starts, [("backlog", false), ("fixed", true)]);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |f: &dyn Fn(&mut Overrides)| {
            let mut o = overrides();
            f(&mut o);
            RunConfig::resolve(Workload::Mixed, &o).unwrap_err().to_string()
        };
        assert!(bad(&|o| o.logs = Some(2)).contains("one writer"));
        assert!(bad(&|o| o.record_size = Some(8)).contains("at least 17"));
        assert!(bad(&|o| o.ack_quorum_size = 4).contains("quorums"));
        assert!(bad(&|o| o.duration = Duration::from_millis(500)).contains("--duration"));
        assert!(bad(&|o| o.writers = Some(300)).contains("at most 256 writers"));
        assert!(parse_rate("1e300").is_err() && parse_rate("1e-9").is_err());
        assert!(bad(&|o| o.load_fraction = 1.5).contains("--load-fraction"));
        assert!(parse_rate("0").is_err() && parse_rate("x").is_err());
        assert_eq!(parse_rate("50_000"), Ok(RateFlag::Fixed(50_000.0)));
    }
}
