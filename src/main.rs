//! The `dlog` binary: a bookie (`dlog bookie`), a whole cluster for development (`dlog local`),
//! the log commands (`dlog write`, `dlog read`, src/cli/), `dlog admin`, and the benchmarks
//! (`dlog bench`). Errors are one line on stderr and a non-zero exit (2 for a bad command line).

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
#[expect(clippy::large_enum_variant, reason = "parsed once per process")]
enum Command {
    /// Run a bookie: serve the bookie protocol over TCP, registered in the metadata store.
    Bookie(BookieCommand),
    /// Run a whole cluster in this process for development: the metadata store, served over
    /// TCP, and bookies on 127.0.0.1, all in one directory. Prints the endpoints, then "ready";
    /// runs until Ctrl-C or SIGTERM.
    Local(dlog::local_cluster::LocalArgs),
    /// Write stdin's lines as records of a log (created if missing), pipelined; with
    /// --print-dlsn, print each record's `<dlsn> <txid>` once durable.
    Write(dlog::cli::WriteArgs),
    /// Print a log's records, one a line, from the head, the tail, a DLSN or a transaction id;
    /// up to the tail, or with --follow as they come.
    Read(dlog::cli::ReadArgs),
    /// Read the cluster metadata (bookies, logs, a log's segments, one segment); truncate a
    /// log, recover a segment, delete a log.
    Admin(dlog::admin::AdminArgs),
    /// Benchmarks, each against a baseline measured in the same run. Without a subcommand: the
    /// harness (the embedded local cluster, a 30 s workload, live progress, a summary table).
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        bench: Option<Bench>,
        #[command(flatten)]
        harness: dlog::bench::harness::HarnessArgs,
    },
}

#[derive(Args, Debug)]
struct BookieCommand {
    #[command(flatten)]
    args: dlog::bookie::BookieArgs,
    /// Print the resolved configuration as a TOML file and exit, without starting.
    #[arg(long)]
    check_config: bool,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// The bookie journal through the embedded API. Without --entry-size or --read, runs the
    /// suite of six workloads behind the engine's figures (100 B throughput, 64 KiB bandwidth,
    /// 4 KiB latency at one in flight, replay, tail reads, catch-up reads); with either, runs
    /// that one workload.
    Journal(JournalArgs),
    /// The metadata store: CAS updates of segment-like keys and watch latency, on the embedded
    /// store (against a raw 4 KiB write + fdatasync) and on etcd (against plain etcd-client
    /// puts; needs the `etcd` feature).
    Metadata(dlog::bench::metadata::MetadataArgs),
    /// The bookie server: ADD throughput of 1 KiB entries over TCP against the same bookie's
    /// embedded API, and one ADD in flight over TCP against the embedded durable add, rounds
    /// alternating in one run (server in process on 127.0.0.1); with --target, TCP only
    /// against a running bookie.
    Bookie(dlog::bench::bookie::BookieBenchArgs),
    /// A replicated segment over bookie processes on 127.0.0.1 against one bookie alone,
    /// alternating in one run: one add in flight (p50, p99) and pipelined throughput.
    Replication(dlog::bench::replication::ReplicationBenchArgs),
    /// The log API on a local cluster (3 bookies, E=3 Qw=3 Qa=2): pipelined throughput, open-loop
    /// end-to-end latency to a tailing reader, and catch-up from the head, each against a baseline.
    Log(dlog::bench::log::LogBenchArgs),
}

#[derive(Args, Debug)]
struct JournalArgs {
    /// Directory to benchmark in (on the disk under test; emptied afterwards).
    #[arg(long, default_value = "dlog-bench-data")]
    dir: PathBuf,
    /// Payload bytes per entry (runs a single workload; with --read, the read workload's entry
    /// size, by default 1 KiB for tail and 64 KiB for catch-up).
    #[arg(long)]
    entry_size: Option<usize>,
    /// Runs one read workload: "tail" (append an entry, wait until durable, time reading it back
    /// from the write cache; baseline 4 KiB O_DIRECT pread) or "catch-up" (write
    /// --catch-up-mib, flush, reopen cold, read it all back with 4 MiB read_range calls, two in
    /// flight; baseline a sequential O_DIRECT read of the entry logs' used bytes).
    #[arg(long, value_name = "MODE", value_parser = ["tail", "catch-up"])]
    read: Option<String>,
    /// MiB of entries the catch-up workload writes and reads back (in the suite too).
    #[arg(long, default_value_t = 1024)]
    catch_up_mib: u64,
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
    /// Rounds of (dlog, baseline) per workload; more rounds average out a noisy disk. Replay
    /// and catch-up always alternate two raw reads with two of theirs.
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
    /// Run the compaction workload: writes (4 KiB, 16 in flight by default) while compaction
    /// moves a backlog, against the same writes on a bookie without compaction.
    #[arg(long)]
    compaction: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A duration flag that must not be zero ("10s", "500ms", "1m").
fn parse_duration(s: &str) -> Result<Duration, String> {
    match dlog::bench::parse_duration(s)? {
        d if d.is_zero() => Err(format!("duration {s:?} must be within (0, 1h]")),
        d => Ok(d),
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    // Errors are for people: the message and its causes, no backtrace.
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A command line clap refused, on one line (its first: clap's usage and hints follow it) and
/// exit 2; help and version as clap prints them.
fn usage(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.to_string();
    // One line: clap's first, joined with the lines that complete it ("...not provided:" is
    // followed by the arguments' names), up to the usage.
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines.next().unwrap_or("error: bad arguments").to_owned();
    if line.ends_with(':') {
        let rest: Vec<&str> =
            lines.take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:")).collect();
        line = format!("{line} {}", rest.join(", "));
    }
    eprintln!("{line} (see --help)");
    std::process::ExitCode::from(2)
}

/// The error and its causes on one line, each cause once: many errors already print their
/// source in their own message, and `{:#}` would repeat it.
fn message(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !message.contains(&cause) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&cause);
        }
    }
    message
}

fn run(cli: Cli) -> Result<()> {
    // The client commands report their failure as their error line; a warning of the same
    // failure before it would only repeat it (RUST_LOG still shows everything).
    let client = matches!(cli.command, Command::Write(_) | Command::Read(_) | Command::Admin(_));
    let default_filter = if client { "error" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not escape codes in a log file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Bookie(command) if command.check_config => {
            print!("{}", dlog::bookie::check_config(command.args)?);
            Ok(())
        }
        Command::Bookie(command) => Ok(dlog::bookie::run::run(command.args)?),
        Command::Local(args) => Ok(dlog::local_cluster::run(args)?),
        Command::Write(args) => dlog::cli::write::main(args),
        Command::Read(args) => dlog::cli::read::main(args),
        Command::Admin(args) => dlog::admin::main(args),
        Command::Bench { bench: None, harness } => dlog::bench::harness::main(harness),
        Command::Bench { bench: Some(Bench::Journal(args)), .. } => bench_journal(args),
        Command::Bench { bench: Some(Bench::Metadata(args)), .. } => dlog::bench::metadata::main(args),
        Command::Bench { bench: Some(Bench::Bookie(args)), .. } => dlog::bench::bookie::main(args),
        Command::Bench { bench: Some(Bench::Replication(args)), .. } => dlog::bench::replication::main(args),
        Command::Bench { bench: Some(Bench::Log(args)), .. } => dlog::bench::log::main(args),
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
    let workloads = match (&args.read, args.entry_size) {
        _ if args.compaction => vec![Workload {
            name: "compaction_writes".into(),
            entry_size: args.entry_size.unwrap_or(4096),
            concurrency: args.concurrency.min(16),
            batch: 1,
            shards,
            duration: args.duration,
            rounds: args.rounds,
            replay_mib: 0,
            storage: "entry-logs".into(),
            read: None,
            catch_up_mib: 0,
            compaction: true,
        }],
        (Some(mode), entry_size) => {
            let catch_up = mode == "catch-up";
            vec![Workload {
                name: if catch_up { "catch_up".into() } else { "tail_read".into() },
                entry_size: entry_size.unwrap_or(if catch_up { 65536 } else { 1024 }),
                concurrency: if catch_up { 64 } else { 1 },
                batch: 1,
                shards,
                duration: args.duration,
                rounds: args.rounds,
                replay_mib: 0,
                storage: "entry-logs".into(),
                read: Some(mode.clone()),
                catch_up_mib: if catch_up { args.catch_up_mib } else { 0 },
                compaction: false,
            }]
        }
        (None, Some(entry_size)) => vec![Workload {
            name: "custom".into(),
            entry_size,
            concurrency: args.concurrency,
            batch: args.batch.unwrap_or(if entry_size <= 1024 { 1024 } else { 1 }).min(args.concurrency),
            shards,
            duration: args.duration,
            rounds: args.rounds,
            replay_mib: args.replay_mib,
            storage: args.storage.clone(),
            read: None,
            catch_up_mib: 0,
            compaction: false,
        }],
        (None, None) => suite(shards, args.duration, args.rounds, args.catch_up_mib),
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
    if args.entry_size.is_none() || args.read.is_some() {
        print_figures(&reports);
    }
    if let Some(path) = &args.json {
        let value = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            json!({ "workloads": reports, "figures": figures(&reports) })
        };
        dlog::bench::report::write_json(path, &dlog::bench::report::envelope("journal", &args.dir, value))?;
    }
    Ok(())
}

fn print_report(r: &Report) {
    dlog::out!("== {} ({}, direct_io {}, storage {}) ==", r.workload.name, r.backend, r.direct_io, r.storage);
    if let Some(c) = &r.compaction {
        dlog::out!(
            "  with compaction     {:>9.0} entries/s  p50 {:>9.1} us  p99 {:>9.1} us  ({} passes, {} B moved)",
            c.entries_per_s.0,
            c.with_us.p50,
            c.with_us.p99,
            c.compactions,
            c.compacted_bytes
        );
        dlog::out!(
            "  without compaction  {:>9.0} entries/s  p50 {:>9.1} us  p99 {:>9.1} us;  p99 ratio {:.2}x",
            c.entries_per_s.1,
            c.without_us.p50,
            c.without_us.p99,
            c.ratio_p99
        );
        return;
    }
    if let Some(t) = &r.tail_read {
        dlog::out!(
            "  appends   {:>9.0} entries/s, one in flight: add p50 {:.1} us p99 {:.1} us",
            r.entries_per_s,
            r.latency_us.p50,
            r.latency_us.p99
        );
        dlog::out!(
            "  read      p50 {:>9.1} us  p99 {:>9.1} us  p99.9 {:>9.1} us  max {:>9.1} us  ({} reads, {}; \
             {} from cache, {} from logs)",
            t.latency_us.p50,
            t.latency_us.p99,
            t.latency_us.p999,
            t.latency_us.max,
            t.reads,
            t.wait,
            t.cache_reads,
            t.log_reads
        );
        dlog::out!(
            "  baseline  4 KiB O_DIRECT pread p50 {:.1} us p99 {:.1} us (a read from the disk, for context)",
            t.baseline_pread_4k_us.p50,
            t.baseline_pread_4k_us.p99
        );
        return;
    }
    if let Some(c) = &r.catch_up {
        dlog::out!(
            "  write     {:.1} MB/s payload ({} entries over {} segments, {} flushes)",
            r.mb_per_s,
            c.entries,
            c.segments,
            c.flushes
        );
        dlog::out!(
            "  catch-up  {:>9.1} MB/s payload ({} B, {} read_range calls of {} B, {} in flight; {} from logs, \
             {} from the write cache, {} from the read cache; reopen {:.0} ms)",
            c.mb_per_s,
            c.payload_bytes,
            c.calls,
            c.read_bytes,
            c.in_flight,
            c.log_reads,
            c.cache_reads,
            c.read_cache_hits,
            c.open_ms
        );
        dlog::out!(
            "  baseline  {:>9.1} MB/s sequential 4 MiB O_DIRECT read of {} B in {} entry logs",
            c.raw_mb_per_s,
            c.raw_bytes,
            c.entry_logs
        );
        dlog::out!(
            "  ratio     {:.2}x  (passes: catch-up {:.0?} MB/s, raw {:.0?} MB/s)",
            c.ratio,
            c.passes_mb_per_s,
            c.raw_passes_mb_per_s
        );
        return;
    }
    dlog::out!(
        "  dlog      {:>12.0} entries/s {:>9.1} MB/s payload {:>9.1} MB/s journal",
        r.entries_per_s,
        r.mb_per_s,
        r.journal_mb_per_s
    );
    dlog::out!("            avg batch {:>9.0} B  {:>7.0} batches/s", r.avg_batch_bytes, r.batches_per_s);
    dlog::out!(
        "  latency   p50 {:>9.1} us  p99 {:>9.1} us  p99.9 {:>9.1} us  max {:>9.1} us",
        r.latency_us.p50,
        r.latency_us.p99,
        r.latency_us.p999,
        r.latency_us.max
    );
    dlog::out!(
        "  baseline  {:>9.1} MB/s at {} B write+fdatasync;  4 KiB write+fdatasync p50 {:.1} us p99 {:.1} us",
        r.baseline.mb_per_s,
        r.baseline.write_bytes,
        r.baseline.latency_us.p50,
        r.baseline.latency_us.p99
    );
    dlog::out!(
        "  ratios    MB/s {:.2}x   latency p50 {:.2}x   p99 {:.2}x",
        r.ratio_mb_per_s,
        r.ratio_latency_p50,
        r.ratio_latency_p99
    );
    if let Some(jo) = &r.journal_only {
        dlog::out!(
            "  journal-only {:>9.0} entries/s {:>9.1} MB/s payload {:>9.1} MB/s journal ({:.2}x baseline), \
             p99 {:.1} us",
            jo.entries_per_s,
            jo.mb_per_s,
            jo.journal_mb_per_s,
            jo.ratio_mb_per_s,
            jo.latency_us.p99
        );
        dlog::out!(
            "  flushes      entry logs / journal only {:.2}x ({} flushes, adds throttled {} times)",
            jo.ratio,
            jo.flushes,
            jo.adds_throttled
        );
    }
    if let Some(replay) = &r.replay {
        dlog::out!(
            "  replay    {:.1} MB/s ({} entries, {} B) vs raw read {:.1} MB/s: {:.2}x",
            replay.mb_per_s,
            replay.entries,
            replay.bytes,
            replay.raw_read_mb_per_s,
            replay.ratio
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
        // The journal's own figure: the journal-only bookie when both were measured.
        let v = r.journal_only.as_ref().map_or(r.ratio_mb_per_s, |jo| jo.ratio_mb_per_s);
        out.insert("bandwidth_64k_ratio".into(), json!({"value": v, "target": 0.9, "pass": v >= 0.9}));
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
    if let Some(tail) = reports.iter().find_map(|r| r.tail_read.as_ref()) {
        let p99 = tail.latency_us.p99;
        out.insert("tail_read_p99_us".into(), json!({"value": p99, "target": 50.0, "pass": p99 < 50.0}));
    }
    if let Some(c) = reports.iter().find_map(|r| r.catch_up.as_ref()) {
        out.insert("catch_up_ratio".into(), json!({"value": c.ratio, "target": 0.8, "pass": c.ratio >= 0.8}));
    }
    if let Some(c) = reports.iter().find_map(|r| r.compaction.as_ref()) {
        let v = c.ratio_p99;
        out.insert("compaction_write_p99_ratio".into(), json!({"value": v, "target": 1.5, "pass": v <= 1.5}));
    }
    serde_json::Value::Object(out)
}

fn print_figures(reports: &[Report]) {
    dlog::out!("== figures ==");
    if let serde_json::Value::Object(map) = figures(reports) {
        for (name, v) in map {
            let pass = if v["pass"].as_bool() == Some(true) { "PASS" } else { "MISS" };
            dlog::out!(
                "  {name:<24} {:>12.3}  target {:>10}  {pass}",
                v["value"].as_f64().unwrap_or(0.0),
                v["target"]
            );
        }
    }
}
