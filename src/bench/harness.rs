//! `dlog bench` with no subcommand: the benchmark harness. It starts the embedded local cluster
//! in a temp directory (or uses `--metadata URI`'s cluster), measures the disk's own durable
//! write rate and latency in the same directory, then runs a workload through the log API
//! (writers and tailing readers, phases in `workload.rs`), shows a live progress line, and ends
//! with a summary table; `--json`, `--plot`, `--hgrm` write the same run for machines, eyes and
//! HdrHistogram's tools; `--compare A.json B.json` puts two runs side by side.
//!
//! Submodules: `workload` (what runs), `recorder` (statistics), `load` (the writers and
//! readers), `progress` (the live line and the series), `summary` (the report), `machine`,
//! `plot`, `hgrm`, `compare`.

mod compare;
mod hgrm;
mod load;
mod plot;
mod progress;
mod recorder;
mod summary;
mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlog_metadata::metadata_uri::redacted;

pub use workload::{RateFlag, Workload};

use self::summary::{Baseline, BaselineRun, Summary};
use self::workload::{Overrides, RunConfig};
use crate::bench::baseline::{ScratchFile, write_flush_loop};
use crate::bench::log::Phase;
use crate::bench::machine::Machine;
use crate::bench::stats::Latency;
use crate::log::{LogWriter, Namespace, NamespaceConfig, TransmitPolicy, WriterConfig};

/// Bytes per write of the disk bandwidth baseline.
const BASELINE_WRITE_BYTES: usize = 256 << 10;
/// Time of each disk baseline.
const BASELINE_TIME: Duration = Duration::from_secs(1);
/// The baseline's scratch file (overwritten in a loop).
const BASELINE_FILE_BYTES: u64 = 64 << 20;

/// `dlog bench` flags (without a subcommand).
#[derive(clap::Args, Debug, Clone)]
pub struct HarnessArgs {
    /// The workload, whose defaults the flags below override: mixed (4 writers and tailing
    /// readers, 1 KiB), journal (1 writer, 1 follower, 100 B, latency), ingest (8 writers, no
    /// readers, throughput), fanout (1 writer, 8 readers), catchup (readers from the head).
    #[arg(long, value_enum, default_value = "mixed")]
    pub workload: Workload,
    /// Benchmark the cluster at this metadata URI (dlog://, etcd://) instead of starting one.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Writers (each writes its own logs).
    #[arg(long)]
    pub writers: Option<usize>,
    /// Logs (at least --writers).
    #[arg(long)]
    pub logs: Option<usize>,
    /// Tailing readers per log.
    #[arg(long)]
    pub readers: Option<usize>,
    /// Payload bytes per record.
    #[arg(long)]
    pub record_size: Option<usize>,
    /// Records/s over all writers, open loop (latency from each record's intended send time;
    /// records a writer could not send in time are reported as missed); `max`: closed loop;
    /// `auto`: a third of the run (half with --catchup) at the peak, a settle until its queues
    /// drain (at most 5 s), then open loop at --load-fraction of it.
    #[arg(long, value_parser = workload::parse_rate)]
    pub rate: Option<RateFlag>,
    /// With --rate auto (the default of most workloads): the share of the peak the latency phase
    /// offers.
    #[arg(long, default_value_t = 0.5)]
    pub load_fraction: f64,
    /// Closed loop: MiB of records in flight per writer (default 16; journal 4), at most 1 M
    /// records; beyond the writer's own bound (256 MiB pending) the writer pushes back.
    #[arg(long)]
    pub in_flight_mib: Option<u64>,
    /// Measured time ("30s", "2m").
    #[arg(long, default_value = "30s", value_parser = crate::bench::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = crate::bench::parse_duration)]
    pub warmup: Duration,
    /// The segments' quorum sizes.
    #[command(flatten)]
    pub quorum: crate::bench::QuorumArgs,
    /// The writer's transmit bound: records gather into an entry at most this long while one
    /// is in flight ("1ms"; "0s": no bound). Default: the writer's (1 ms).
    #[arg(long, value_parser = crate::bench::parse_duration)]
    pub flush_delay: Option<Duration>,
    /// Readers start from the head at the second measured phase (after the settle, with --rate
    /// auto) and catch up while the writers go on.
    #[arg(long)]
    pub catchup: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the latency percentile curves and throughput over time here (.svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the latency phase's publish latency as an HdrHistogram percentile distribution
    /// (values in ms) here, and its end-to-end latency next to it (`<stem>.e2e.hgrm`).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Print two JSON reports of one benchmark (this one, `bench journal`, `bench bookie`, ...)
    /// side by side with ratios, and exit.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Where the temp directory of the embedded cluster and the disk baseline goes (on the
    /// disk under test).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// A settings change to try, KEY=VALUE (repeatable), as `dlog bench log --set`:
    /// `transmit.max_bytes`, `transmit.eager_in_flight`, `transmit.max_delay_us`,
    /// `reader.read_ahead_entries`, `reader.read_ahead_mib`, `writer.lac_flush_delay_us`,
    /// `writer.window_entries_max`, `local.write_cache_mib`, `local.read_cache_mib`,
    /// `local.journal_file_mib`, `local.entry_log_mib`, `local.shards_per_bookie`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Runs `dlog bench`.
pub fn main(args: HarnessArgs) -> Result<()> {
    let started = crate::bench::log::now();
    if let Some(files) = &args.compare {
        let [a, b] = files.as_slice() else { bail!("--compare takes two files") };
        crate::bench::report::print(&compare::compare(a, b)?);
        return Ok(());
    }
    let overrides = Overrides {
        metadata: args.metadata.clone(),
        writers: args.writers,
        logs: args.logs,
        readers: args.readers,
        catchup: args.catchup,
        record_size: args.record_size,
        rate: args.rate,
        load_fraction: args.load_fraction,
        in_flight_bytes: match args.in_flight_mib {
            Some(m) if m == 0 || m > 1024 => bail!("--in-flight-mib must be in 1..=1024"),
            m => m.map(|m| m << 20),
        },
        duration: args.duration,
        warmup: args.warmup,
        ensemble_size: args.quorum.ensemble,
        write_quorum_size: args.quorum.write_quorum,
        ack_quorum_size: args.quorum.ack_quorum,
        flush_delay: args.flush_delay,
        set: args.set.clone(),
    };
    let config = RunConfig::resolve(args.workload, &overrides)?;
    let ns_config = crate::bench::log::configured(namespace_config(&config), &config.set, Phase::Default)?;
    if let Some(plot) = &args.plot {
        plot::check_path(plot)?;
    }
    // A mistyped output path fails now, not after the run.
    for (flag, path) in [("--json", &args.json), ("--plot", &args.plot), ("--hgrm", &args.hgrm)] {
        if let Some(path) = path {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !parent.is_dir() {
                bail!("{flag} {}: no directory {}", path.display(), parent.display());
            }
        }
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let temp = tempfile::Builder::new()
        .prefix("dlog-bench-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("a temp directory in {}", args.dir.display()))?;
    let machine = Machine::describe(temp.path());
    if config.metadata.is_none() {
        warn_if_short_of_space(temp.path(), &config);
    }
    let started_unix_s = crate::bench::report::unix_now_s();
    eprintln!("dlog bench: measuring the disk under {} ...", temp.path().display());
    let before = disk_baseline(temp.path(), "before")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dlog-bench")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let plans = config.phases();
    let uri = match &config.metadata {
        Some(uri) => uri.clone(),
        None => format!("local://{}", temp.path().join("cluster").display()),
    };
    let ns = runtime
        .block_on(Namespace::open_with(&uri, ns_config.clone()))
        .with_context(|| format!("opening {}", redacted(&uri)))?;
    let prefix = match &config.metadata {
        None => "bench".to_owned(),
        Some(_) => format!("bench-{started_unix_s}-{}", std::process::id()),
    };
    let logs: Vec<String> = (0..config.logs).map(|i| format!("{prefix}-{i}")).collect();
    let outcome = (|| -> Result<_> {
        let mut writers: Vec<LogWriter> = Vec::new();
        for log in &logs {
            runtime.block_on(ns.create_log(log)).with_context(|| format!("creating log {log}"))?;
            let writer = runtime
                .block_on(ns.open_writer_with(log, ns_config.writer.clone()))
                .with_context(|| format!("opening the writer of {log}"))?;
            writers.push(writer);
        }
        eprintln!("{} on {uri}: {}", config_line(&config), phases_line(&plans));
        let before = crate::bench::cpu::sample();
        let result = load::run(&runtime, &ns, &config, (&logs, writers), plans.clone(), !args.quiet)?;
        Ok((result, crate::bench::cpu::since(&before)))
    })();
    if config.metadata.is_some() {
        for log in &logs {
            if let Err(e) = runtime.block_on(ns.delete_log(log)) {
                eprintln!("warning: log {log} was not deleted: {e}");
            }
        }
    }
    runtime.block_on(ns.shutdown());
    let ((outcome, series), cpu) = outcome?;
    let after = disk_baseline(temp.path(), "after")?;
    let what = format!(
        "O_DIRECT writes overwriting a zeroed file, each followed by fdatasync, one at a time, in {}; the better \
         of a measurement before the load and one after it",
        temp.path().display()
    );
    let baseline = Baseline::of(what, BASELINE_WRITE_BYTES, vec![before, after]);
    let last = workload::latency_phase(&plans).unwrap_or(0);
    let (publish_h, e2e_h) = (outcome.phases[last].publish.clone(), outcome.phases[last].e2e.clone());
    let ctx = summary::Context {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix_s,
        machine,
        baseline,
        cpu: Some(cpu),
        wall_s: (crate::bench::log::now() - started).as_secs_f64(),
        default_run: std::env::args().skip_while(|a| a != "bench").nth(1).is_none(),
    };
    let summary = Summary::new(config, &plans, (outcome, series), ctx);
    drop(temp);
    crate::bench::report::print(&summary.table());
    if let Some(path) = &args.json {
        crate::bench::report::write_json(path, &serde_json::to_value(&summary)?)?;
    }
    if let Some(path) = &args.hgrm {
        write_hgrm(path, &publish_h, &e2e_h)?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "dlog bench --workload {:?}: latency at {}",
            summary.config.workload, summary.latency_phase
        );
        plot::write_svg(
            path,
            &title.to_lowercase(),
            &[("publish", &publish_h), ("end to end", &e2e_h)],
            &summary.series,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn write_hgrm(
    path: &Path,
    publish: &hdrhistogram::Histogram<u64>,
    e2e: &hdrhistogram::Histogram<u64>,
) -> Result<()> {
    std::fs::write(path, hgrm::percentile_distribution(publish))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    if !e2e.is_empty() {
        let e2e_path = path.with_extension("e2e.hgrm");
        std::fs::write(&e2e_path, hgrm::percentile_distribution(e2e))
            .with_context(|| format!("writing {}", e2e_path.display()))?;
        eprintln!("wrote {}", e2e_path.display());
    }
    Ok(())
}

/// The embedded cluster keeps every record (entry logs, one copy per replica): warns when the
/// run may fill the disk (bookies turn read-only near full, and writes then fail).
fn warn_if_short_of_space(dir: &Path, config: &RunConfig) {
    // A generous rate for this kind of machine: 400 MB/s of payload at the peak.
    let need = (config.duration_s + config.warmup_s) * 400e6 * config.write_quorum_size as f64;
    let Ok(fs) = rustix::fs::statvfs(dir) else { return };
    let free = fs.f_bavail.saturating_mul(fs.f_frsize) as f64;
    if free < need {
        eprintln!(
            "warning: {:.0} GB free under {}; this run may write up to about {:.0} GB there (every record is \
             kept, {} copies); a full disk turns the bookies read-only and writes fail",
            free / 1e9,
            dir.display(),
            need / 1e9,
            config.write_quorum_size
        );
    }
}

/// The disk's durable write bandwidth and latency in `dir`.
fn disk_baseline(dir: &Path, when: &str) -> Result<BaselineRun> {
    let file = ScratchFile::create(&dir.join("baseline"), BASELINE_FILE_BYTES)?;
    let bandwidth = write_flush_loop(&file, BASELINE_WRITE_BYTES, BASELINE_TIME).context("disk baseline")?;
    let small = write_flush_loop(&file, 4096, BASELINE_TIME).context("disk baseline")?;
    let run = BaselineRun {
        when: when.to_owned(),
        mb_per_s: bandwidth.mb_per_s(),
        latency_us: Latency::of(&small.histogram).unwrap_or_default(),
    };
    eprintln!(
        "disk ({when} the load): {:.0} MB/s of {} KiB write + fdatasync; 4 KiB write + fdatasync p50 {:.0} us \
         p99 {:.0} us",
        run.mb_per_s,
        BASELINE_WRITE_BYTES >> 10,
        run.latency_us.p50,
        run.latency_us.p99
    );
    Ok(run)
}

/// The namespace's settings for `config`.
fn namespace_config(config: &RunConfig) -> NamespaceConfig {
    let mut ns = NamespaceConfig::default();
    ns.local.bookies = config.bookies;
    let mut transmit = TransmitPolicy::default();
    if let Some(us) = config.flush_delay_us {
        transmit.max_delay = (us > 0).then(|| Duration::from_micros(us));
    }
    ns.writer = WriterConfig {
        ensemble_size: config.ensemble_size,
        write_quorum_size: config.write_quorum_size,
        ack_quorum_size: config.ack_quorum_size,
        transmit,
        owner: format!("dlog-bench:{}", std::process::id()),
        ..WriterConfig::default()
    };
    ns
}

fn config_line(c: &RunConfig) -> String {
    format!(
        "{}: {} writer(s), {} log(s), {} reader(s) per log, {} B records, E={} Qw={} Qa={}",
        format!("{:?}", c.workload).to_lowercase(),
        c.writers,
        c.logs,
        c.readers,
        c.record_size,
        c.ensemble_size,
        c.write_quorum_size,
        c.ack_quorum_size
    )
}

fn phases_line(plans: &[workload::PhasePlan]) -> String {
    let parts: Vec<String> = plans
        .iter()
        .map(|p| {
            let how = match p.open {
                None if p.idle => "idle until the queues drain, at most".to_owned(),
                None => "closed loop".to_owned(),
                Some(workload::OpenRate::Fixed(r)) => format!("{r:.0}/s"),
                Some(workload::OpenRate::OfPeak(f)) => format!("{:.0}% of the peak", f * 100.0),
            };
            format!("{} {:.1} s ({how})", p.name, p.length.as_secs_f64())
        })
        .collect();
    parts.join(", ")
}
