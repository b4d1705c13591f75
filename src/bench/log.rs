//! `dlog bench log`: the log API on a `local://` namespace (embedded metadata and three bookies
//! in this process, E=3 Qw=3 Qa=2), issue 7's three figures, each against a baseline measured in
//! the same run:
//!
//! 1. throughput (throughput.rs): 100-byte records from one pipelined writer with the default
//!    transmit policy, durable records/s; against the disk's own durable write rate (256 KiB
//!    write + fdatasync, as records/s if each record cost its bytes and headers three times)
//!    and raw replicated adds of the writer's average entry size through the same
//!    `ReplicationClient`;
//! 2. end-to-end latency (latency.rs): an open-loop writer at `--rate` records/s, latency from
//!    each record's intended send time to a tailing reader in this process receiving it, and
//!    the publish latency (to the durable acknowledgement); against one raw replicated add in
//!    flight;
//! 3. catch-up (catchup.rs): `--catchup-mib` of 1 KiB records read back from the head by a new
//!    reader, cold; against `Bookie::read_range` over the same segments on one bookie's engine.
//!
//! Rounds alternate the log and its baselines; ratios are medians over rounds. Each phase runs
//! in its own directory under `--dir`, removed when the phase ends.

mod catchup;
mod latency;
mod throughput;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::log::{Namespace, NamespaceConfig};

/// `dlog bench log` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LogBenchArgs {
    /// Directory for the cluster's data (on the disk under test; removed afterwards).
    #[arg(long, default_value = "dlog-bench-data")]
    pub dir: PathBuf,
    /// Load time of the log in the throughput phase and in the latency phase (split over the
    /// rounds), e.g. "10s".
    #[arg(long, default_value = "10s", value_parser = crate::bench::parse_duration)]
    pub duration: Duration,
    /// Records/s of the latency phase's open-loop writer.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Payload bytes per record in the throughput and latency phases.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records in flight in the throughput phase (written, not yet acknowledged).
    #[arg(long, default_value_t = 100_000)]
    pub in_flight: usize,
    /// MiB of 1 KiB records the catch-up phase writes and reads back.
    #[arg(long, default_value_t = 1024)]
    pub catchup_mib: u64,
    /// Rounds of (log, baseline) per phase; the ratios are medians over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Run one phase only.
    #[arg(long, value_parser = ["throughput", "latency", "catchup"])]
    pub only: Option<String>,
    /// A settings change to try, KEY=VALUE (repeatable): `transmit.max_bytes`,
    /// `transmit.eager_in_flight`, `transmit.max_delay_us` (0: no bound) for the throughput and
    /// latency writers; `catchup.entry_bytes` for the catch-up writer; `reader.read_ahead_entries`,
    /// `reader.read_ahead_mib`, `reader.range_read_entries_min` (0: never), and the replication
    /// writer's `writer.lac_flush_delay_us` and `writer.window_entries_max`, and the local
    /// cluster's `local.write_cache_mib`, `local.read_cache_mib`, `local.journal_file_mib`,
    /// `local.entry_log_mib` and `local.shards_per_bookie`, everywhere.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Which writer a settings change is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The throughput and latency phases (the default transmit policy).
    Default,
    /// The catch-up phase (its batched policy).
    CatchUp,
}

/// `config` with `--set`'s changes for `phase`.
pub(crate) fn configured(
    mut config: NamespaceConfig,
    sets: &[String],
    phase: Phase,
) -> Result<NamespaceConfig> {
    for set in sets {
        let Some((key, value)) = set.split_once('=') else { bail!("--set {set:?}: expected KEY=VALUE") };
        let n: u64 = value.parse().with_context(|| format!("--set {set:?}: not a number"))?;
        let size = usize::try_from(n)?;
        let us = Duration::from_micros(n);
        let (transmit, reader) = (&mut config.writer.transmit, &mut config.replication.reader);
        match key {
            "transmit.max_bytes" if phase == Phase::Default => transmit.max_bytes = size,
            "transmit.eager_in_flight" if phase == Phase::Default => transmit.eager_in_flight = size,
            "transmit.max_delay_us" if phase == Phase::Default => transmit.max_delay = (n > 0).then_some(us),
            "catchup.entry_bytes" if phase == Phase::CatchUp => transmit.max_bytes = size,
            "transmit.max_bytes"
            | "transmit.eager_in_flight"
            | "transmit.max_delay_us"
            | "catchup.entry_bytes" => {}
            "reader.read_ahead_entries" => reader.read_ahead_entries = size,
            "reader.read_ahead_mib" => reader.read_ahead_bytes = n << 20,
            "reader.range_read_entries_min" => reader.range_read_entries_min = (n > 0).then_some(size),
            "writer.lac_flush_delay_us" => config.replication.writer.lac_flush_delay = us,
            "writer.window_entries_max" => config.replication.writer.window_entries_max = size,
            "local.write_cache_mib" => config.local.write_cache_bytes_max = size << 20,
            "local.read_cache_mib" => config.local.read_cache_bytes_max = size << 20,
            "local.journal_file_mib" => config.local.journal_file_bytes = n << 20,
            "local.entry_log_mib" => config.local.entry_log_bytes = n << 20,
            "local.shards_per_bookie" => config.local.shards_per_bookie = u32::try_from(n)?,
            _ => bail!("--set {set:?}: unknown key (see --help)"),
        }
    }
    Ok(config)
}

/// One line of the table: a figure, its target, and its baseline from the same run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figure {
    /// What is measured.
    pub(crate) figure: String,
    /// The target, as text ("≥ 500000 records/s").
    pub(crate) target: String,
    /// The measured value.
    pub(crate) measured: f64,
    /// The baseline's value.
    pub(crate) baseline: f64,
    /// What the baseline is.
    pub(crate) baseline_is: String,
    /// measured / baseline (median over rounds).
    pub(crate) ratio: f64,
    /// Whether the target is met (`None`: no target, context only).
    pub(crate) pass: Option<bool>,
}

#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Sleeps the calling (non-runtime) thread for `d`.
#[expect(clippy::disallowed_methods, reason = "the open-loop sender paces itself on its own thread")]
pub(crate) fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// The bench's tokio runtime: two workers (the machine's vCPUs), as a service would run.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dlog-bench-log")
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// Opens the `local://` namespace on `dir` (a cluster of three bookies in this process).
pub(crate) async fn open(dir: &Path, config: NamespaceConfig) -> Result<Namespace> {
    let uri = format!("local://{}", dir.display());
    Namespace::open_with(&uri, config).await.with_context(|| format!("opening {uri}"))
}

/// Writes dirty pages and drops the page cache so the next read is cold; skipped silently where
/// not permitted (not root, a container).
pub(crate) fn drop_caches() {
    rustix::fs::sync();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1\n");
}

/// A record payload of `size` bytes: `seq` and `stamp` (ns) in its first 16 bytes, `flag` in
/// the 17th, a fixed pattern after.
pub(crate) fn stamped(size: usize, seq: u64, stamp: u64, flag: u8) -> Bytes {
    let mut payload = vec![0x5Au8; size];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload[8..16].copy_from_slice(&stamp.to_le_bytes());
    payload[16] = flag;
    Bytes::from(payload)
}

/// The `(seq, stamp, flag)` of a `stamped` payload.
pub(crate) fn unstamp(payload: &[u8]) -> Result<(u64, u64, u8)> {
    let Some(head) = payload.get(..17) else { bail!("a record of {} bytes, not stamped", payload.len()) };
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    Ok((word(0), word(8), head[16]))
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn main(args: LogBenchArgs) -> Result<()> {
    if args.rounds == 0 || args.in_flight == 0 || args.rate == 0 || args.catchup_mib == 0 {
        bail!("--rounds, --in-flight, --rate and --catchup-mib must be at least 1");
    }
    if args.record_size < 17 {
        bail!("--record-size must be at least 17 (records carry a sequence number and a timestamp)");
    }
    for phase in [Phase::Default, Phase::CatchUp] {
        configured(NamespaceConfig::default(), &args.set, phase)?;
    }
    let dir = args.dir.join(format!("log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    // The parent too when it is empty (the default ./dlog-bench-data is ours).
    let _ = std::fs::remove_dir(&args.dir);
    let report = result?;
    print_table(&report);
    if let Some(path) = &args.json {
        crate::bench::report::write_json(path, &crate::bench::report::envelope("log", &args.dir, report))?;
    }
    Ok(())
}

fn run(args: &LogBenchArgs, dir: &Path) -> Result<serde_json::Value> {
    let runtime = runtime()?;
    let wanted = |phase: &str| args.only.as_deref().is_none_or(|only| only == phase);
    let mut figures: Vec<Figure> = Vec::new();
    let mut report = serde_json::Map::new();
    report.insert("bench".into(), json!("log"));
    report.insert("ensemble_size".into(), json!(3));
    report.insert("write_quorum_size".into(), json!(3));
    report.insert("ack_quorum_size".into(), json!(2));
    report.insert("rounds".into(), json!(args.rounds));
    report.insert("settings_changed".into(), json!(args.set));
    if wanted("throughput") {
        let phase_dir = dir.join("throughput");
        let result = throughput::run(&runtime, args, &phase_dir);
        let _ = std::fs::remove_dir_all(&phase_dir);
        let t = result.context("throughput phase")?;
        figures.extend(t.figures());
        report.insert("throughput".into(), serde_json::to_value(&t)?);
    }
    if wanted("latency") {
        let phase_dir = dir.join("latency");
        let result = latency::run(&runtime, args, &phase_dir);
        let _ = std::fs::remove_dir_all(&phase_dir);
        let l = result.context("latency phase")?;
        figures.extend(l.figures());
        report.insert("latency".into(), serde_json::to_value(&l)?);
    }
    if wanted("catchup") {
        let phase_dir = dir.join("catchup");
        let result = catchup::run(&runtime, args, &phase_dir);
        let _ = std::fs::remove_dir_all(&phase_dir);
        let c = result.context("catch-up phase")?;
        figures.extend(c.figures());
        report.insert("catchup".into(), serde_json::to_value(&c)?);
    }
    report.insert("figures".into(), serde_json::to_value(&figures)?);
    Ok(serde_json::Value::Object(report))
}

fn print_table(report: &serde_json::Value) {
    let Ok(figures) = serde_json::from_value::<Vec<serde_json::Value>>(report["figures"].clone()) else {
        return;
    };
    crate::out!(
        "{:<34} {:>18} {:>12} {:>12}  {:<34} {:>7}  pass",
        "figure",
        "target",
        "measured",
        "baseline",
        "baseline is",
        "ratio"
    );
    for f in figures {
        let pass = match f["pass"].as_bool() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        };
        crate::out!(
            "{:<34} {:>18} {:>12.1} {:>12.1}  {:<34} {:>7.3}  {pass}",
            f["figure"].as_str().unwrap_or_default(),
            f["target"].as_str().unwrap_or_default(),
            f["measured"].as_f64().unwrap_or(0.0),
            f["baseline"].as_f64().unwrap_or(0.0),
            f["baseline_is"].as_str().unwrap_or_default(),
            f["ratio"].as_f64().unwrap_or(0.0),
        );
    }
}
