//! The flags: those of the workload, shared by every peer (`LoadArgs`), and each peer's own.
//! `LoadArgs::plan` checks them and turns them into a `load::Plan`; `config` echoes them
//! into the report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::load::Plan;

/// The largest record accepted: the journal workload is about small records.
const RECORD_SIZE_MAX: usize = 1 << 20;
/// The most records in flight in the peak phase.
const IN_FLIGHT_MAX: usize = 1 << 16;

/// The workload's flags, the same for every peer.
#[derive(Args, Debug, Clone)]
pub(crate) struct LoadArgs {
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    pub(crate) record_size: usize,
    /// Records in flight in the peak phase (closed loop). Default: 256 for NATS, 64 for etcd.
    #[arg(long)]
    pub(crate) in_flight: Option<usize>,
    /// Seconds of peak load before the peak phase's measurement starts.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup_secs: f64,
    /// Seconds measured in the peak phase.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration_secs: f64,
    /// The rated phase offers this fraction of the measured peak.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) rated_fraction: f64,
    /// The rated phase offers exactly this many records/s (instead of a fraction of the peak).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Seconds of the rated phase (open loop).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rated_duration_secs: f64,
    /// A record not acknowledged within this many seconds is an error.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) op_timeout_secs: f64,
    /// Seconds to keep retrying the first connection while the server starts.
    #[arg(long, default_value_t = 15.0)]
    pub(crate) connect_timeout_secs: f64,
    /// Write the JSON report here (it is always printed on stdout too).
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// What nats-server was configured to do with JetStream writes; the client cannot see it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerSync {
    /// No per-message sync: nats-server 2.9 (no `sync_interval`), or 2.10+ left at default.
    None,
    /// `sync_interval: always` (nats-server 2.10+): fsync before each publish-ack.
    Always,
}

/// `dlog-peers nats`.
#[derive(Args, Debug, Clone)]
pub(crate) struct NatsArgs {
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    /// The server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub(crate) url: String,
    /// The stream, deleted and created fresh (file storage) each run.
    #[arg(long, default_value = "BENCH")]
    pub(crate) stream: String,
    /// The subject every record is published on.
    #[arg(long, default_value = "BENCH.journal")]
    pub(crate) subject: String,
    /// How the server was configured to sync JetStream writes (for the durability note).
    #[arg(long, value_enum, default_value_t = ServerSync::None)]
    pub(crate) server_sync: ServerSync,
}

/// `dlog-peers etcd`.
#[derive(Args, Debug, Clone)]
pub(crate) struct EtcdArgs {
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    /// The client endpoint.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub(crate) endpoint: String,
    /// Keys are `<prefix><n>`.
    #[arg(long, default_value = "bench/")]
    pub(crate) key_prefix: String,
}

impl LoadArgs {
    /// The checked plan, with `default_in_flight` when `--in-flight` was not given.
    pub(crate) fn plan(&self, default_in_flight: usize) -> anyhow::Result<Plan> {
        if self.record_size == 0 || self.record_size > RECORD_SIZE_MAX {
            bail!("--record-size must be 1..={RECORD_SIZE_MAX}, not {}", self.record_size);
        }
        let in_flight = self.in_flight.unwrap_or(default_in_flight);
        if in_flight == 0 || in_flight > IN_FLIGHT_MAX {
            bail!("--in-flight must be 1..={IN_FLIGHT_MAX}, not {in_flight}");
        }
        if !(self.rated_fraction > 0.0 && self.rated_fraction <= 1.0) {
            bail!("--rated-fraction must be in (0, 1], not {}", self.rated_fraction);
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            bail!("--rate must be a positive number of records/s, not {rate}");
        }
        Ok(Plan {
            in_flight,
            warmup: seconds("--warmup-secs", self.warmup_secs, true)?,
            duration: seconds("--duration-secs", self.duration_secs, false)?,
            rated_fraction: self.rated_fraction,
            rate: self.rate,
            rated_duration: seconds("--rated-duration-secs", self.rated_duration_secs, false)?,
            op_timeout: seconds("--op-timeout-secs", self.op_timeout_secs, false)?,
        })
    }

    /// The first-connection deadline.
    pub(crate) fn connect_timeout(&self) -> anyhow::Result<Duration> {
        seconds("--connect-timeout-secs", self.connect_timeout_secs, false)
    }

    /// The flags as given, for the report's `config`.
    pub(crate) fn config(&self, plan: &Plan) -> Value {
        json!({
            "record_size": self.record_size,
            "in_flight": plan.in_flight,
            "warmup_secs": self.warmup_secs,
            "duration_secs": self.duration_secs,
            "rated_fraction": self.rated_fraction,
            "rate": self.rate,
            "rated_duration_secs": self.rated_duration_secs,
            "op_timeout_secs": self.op_timeout_secs,
        })
    }
}

/// A flag in seconds as a `Duration`: finite, at most a day, and positive unless `zero_ok`.
fn seconds(flag: &str, value: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    let ok = value.is_finite() && value <= 86_400.0 && (value > 0.0 || (zero_ok && value == 0.0));
    if !ok {
        let low = if zero_ok { "at least 0" } else { "more than 0" };
        bail!("{flag} must be a number of seconds, {low} and at most 86400, not {value}");
    }
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value}"))
}
