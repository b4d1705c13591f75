//! The `dlog` binary: `dlog bench journal` today; the bookie server, local cluster and CLI
//! arrive with the replication and metadata layers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dlog::bench::journal::{EngineSettings, Report, Workload, run_workload, suite};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "dlog", version, about = "dlog: a replicated log on BookKeeper-style storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks, each against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// The bookie journal through the embedded API. Without --entry-size, runs the suite of
    /// four workloads behind the engine's figures (100 B throughput, 64 KiB bandwidth, 4 KiB
    /// latency at one in flight, replay); with it, runs that one workload.
    Journal(JournalArgs),
}

#[derive(Args, Debug)]
struct JournalArgs {
    /// Directory to benchmark in (on the disk under test; emptied afterwards).
    #[arg(long, default_value = "dlog-bench-data")]
    dir: PathBuf,
    /// Payload bytes per entry (runs a single workload).
    #[arg(long)]
    entry_size: Option<usize>,
    /// Entries in flight.
    #[arg(long, default_value_t = 65536)]
    concurrency: usize,
    /// Entries per submission call (default: 1024 for entries up to 1 KiB, else 1).
    #[arg(long)]
    batch: Option<usize>,
    /// Load time per workload, e.g. "10s", "500ms".
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    duration: Duration,
    /// Shards (default: number of CPUs).
    #[arg(long)]
    shards: Option<u32>,
    /// Rounds of (dlog, baseline) per workload; more rounds average out a noisy disk.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// MiB of journal to write and replay in a single workload (0: skip).
    #[arg(long, default_value_t = 0)]
    replay_mib: u64,
    /// I/O backend: auto, io-uring, portable.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Flush mechanism: fdatasync or dsync.
    #[arg(long, default_value = "fdatasync")]
    sync: String,
    /// Journal writes in flight per shard.
    #[arg(long, default_value_t = 4)]
    writes_in_flight: usize,
    /// Batch byte bound.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes_max: usize,
    /// How long an idle shard polls before sleeping, us.
    #[arg(long, default_value_t = 50)]
    idle_spin_us: u64,
    /// Segment storage of the single workload: entry-logs, journal-only, or both (entry logs
    /// measured against journal only in the same rounds). The suite picks per workload.
    #[arg(long, default_value = "both")]
    storage: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) =
        s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = number.parse().map_err(|_| format!("bad duration {s:?}: expected e.g. 10s or 500ms"))?;
    let secs = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s or m")),
    };
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!("duration {s:?} must be within (0, 1h]"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Bench { bench: Bench::Journal(args) } => bench_journal(args),
    }
}

fn bench_journal(args: JournalArgs) -> Result<()> {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let shards = args.shards.unwrap_or(cpus);
    if shards == 0 || args.rounds == 0 || args.concurrency == 0 {
        bail!("--shards, --rounds and --concurrency must be at least 1");
    }
    let engine = EngineSettings {
        backend: args.backend.clone(),
        sync: args.sync.clone(),
        writes_in_flight: args.writes_in_flight,
        batch_bytes_max: args.batch_bytes_max,
        idle_spin_us: args.idle_spin_us,
    };
    let workloads = match args.entry_size {
        Some(entry_size) => vec![Workload {
            name: "custom".into(),
            entry_size,
            concurrency: args.concurrency,
            batch: args.batch.unwrap_or(if entry_size <= 1024 { 1024 } else { 1 }).min(args.concurrency),
            shards,
            duration: args.duration,
            rounds: args.rounds,
            replay_mib: args.replay_mib,
            storage: args.storage.clone(),
        }],
        None => suite(shards, args.duration, args.rounds),
    };
    let mut reports = Vec::new();
    for w in &workloads {
        eprintln!(
            "running {} ({} B entries, {} in flight, {} shards) ...",
            w.name, w.entry_size, w.concurrency, w.shards
        );
        let report = run_workload(&args.dir, w, &engine).with_context(|| format!("workload {}", w.name))?;
        print_report(&report);
        reports.push(report);
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    if args.entry_size.is_none() {
        print_figures(&reports);
    }
    if let Some(path) = &args.json {
        let value = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            json!({ "workloads": reports, "figures": figures(&reports) })
        };
        std::fs::write(path, serde_json::to_string_pretty(&value)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!("== {} ({}, direct_io {}, storage {}) ==", r.workload.name, r.backend, r.direct_io, r.storage);
    println!(
        "  dlog      {:>12.0} entries/s {:>9.1} MB/s payload {:>9.1} MB/s journal",
        r.entries_per_s, r.mb_per_s, r.journal_mb_per_s
    );
    println!("            avg batch {:>9.0} B  {:>7.0} batches/s", r.avg_batch_bytes, r.batches_per_s);
    println!(
        "  latency   p50 {:>9.1} us  p99 {:>9.1} us  p99.9 {:>9.1} us  max {:>9.1} us",
        r.latency_us.p50, r.latency_us.p99, r.latency_us.p999, r.latency_us.max
    );
    println!(
        "  baseline  {:>9.1} MB/s at {} B write+fdatasync;  4 KiB write+fdatasync p50 {:.1} us p99 {:.1} us",
        r.baseline.mb_per_s, r.baseline.write_bytes, r.baseline.latency_us.p50, r.baseline.latency_us.p99
    );
    println!(
        "  ratios    MB/s {:.2}x   latency p50 {:.2}x   p99 {:.2}x",
        r.ratio_mb_per_s, r.ratio_latency_p50, r.ratio_latency_p99
    );
    if let Some(jo) = &r.journal_only {
        println!(
            "  journal-only {:>9.0} entries/s {:>9.1} MB/s payload, p99 {:.1} us;  entry logs / journal only {:.2}x \
             ({} flushes, adds throttled {} times)",
            jo.entries_per_s, jo.mb_per_s, jo.latency_us.p99, jo.ratio, jo.flushes, jo.adds_throttled
        );
    }
    if let Some(replay) = &r.replay {
        println!(
            "  replay    {:.1} MB/s ({} entries, {} B) vs raw read {:.1} MB/s: {:.2}x",
            replay.mb_per_s, replay.entries, replay.bytes, replay.raw_read_mb_per_s, replay.ratio
        );
    }
}

fn figures(reports: &[Report]) -> serde_json::Value {
    let by = |name: &str| reports.iter().find(|r| r.workload.name == name);
    let mut out = serde_json::Map::new();
    if let Some(r) = by("entries_100b") {
        out.insert(
            "entries_100b_per_s".into(),
            json!({"value": r.entries_per_s, "target": 1_000_000.0, "pass": r.entries_per_s >= 1e6}),
        );
    }
    for (name, figure) in [("entries_100b", "flush_ratio_100b"), ("bandwidth_64k", "flush_ratio_64k")] {
        if let Some(jo) = by(name).and_then(|r| r.journal_only.as_ref()) {
            out.insert(figure.into(), json!({"value": jo.ratio, "target": 0.8, "pass": jo.ratio >= 0.8}));
        }
    }
    if let Some(r) = by("bandwidth_64k") {
        out.insert(
            "bandwidth_64k_ratio".into(),
            json!({"value": r.ratio_mb_per_s, "target": 0.9, "pass": r.ratio_mb_per_s >= 0.9}),
        );
    }
    if let Some(r) = by("latency_4k_qd1") {
        out.insert(
            "latency_4k_p50_ratio".into(),
            json!({"value": r.ratio_latency_p50, "target": 1.3, "pass": r.ratio_latency_p50 <= 1.3}),
        );
        out.insert(
            "latency_4k_p99_ratio".into(),
            json!({"value": r.ratio_latency_p99, "target": 2.0, "pass": r.ratio_latency_p99 <= 2.0}),
        );
    }
    if let Some(replay) = by("replay_100b").and_then(|r| r.replay.as_ref()) {
        out.insert(
            "replay_ratio".into(),
            json!({"value": replay.ratio, "target": 0.8, "pass": replay.ratio >= 0.8}),
        );
    }
    serde_json::Value::Object(out)
}

fn print_figures(reports: &[Report]) {
    println!("== figures ==");
    if let serde_json::Value::Object(map) = figures(reports) {
        for (name, v) in map {
            let pass = if v["pass"].as_bool() == Some(true) { "PASS" } else { "MISS" };
            println!(
                "  {name:<24} {:>12.3}  target {:>10}  {pass}",
                v["value"].as_f64().unwrap_or(0.0),
                v["target"]
            );
        }
    }
}
