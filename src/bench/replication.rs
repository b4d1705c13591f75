//! `dlog bench replication`: a replicated segment over bookie processes against one bookie
//! alone, in one run (issue 6's figures).
//!
//! Owns: starting `--bookies` `dlog bookie` processes on 127.0.0.1 (this binary, unpinned so
//! they share the CPUs, each with its own directory), registering them in the benchmark's own
//! embedded metadata store, and alternating rounds of:
//! - baseline: ADDs straight to the first bookie over one connection (`bench bookie`'s TCP
//!   client: one in flight for latency, `--concurrency` in flight for throughput);
//! - replicated: a segment at `--ensemble/--write-quorum/--ack-quorum` written through
//!   `ReplicationClient` (one add in flight, then `--concurrency` in flight).
//!
//! The figures are medians over rounds of replicated / baseline: p50 and p99 of one add in
//! flight, and throughput. The processes are killed when the benchmark ends, however it ends.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use dlog_metadata::AnyStore;
use dlog_replication::client::{ReplicationClient, ReplicationConfig};
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_writer::WriterSettings;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::bench::bookie::{Rate, client_load, median, one_in_flight, payload};
use crate::bench::stats::{histogram, latency};
use crate::bookie::registration::{Registration, RegistrationConfig};

/// `dlog bench replication` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplicationBenchArgs {
    /// Directory for the bookies' data (on the disk under test; emptied afterwards).
    #[arg(long, default_value = "dlog-bench-data")]
    pub dir: PathBuf,
    /// Bookie processes to start.
    #[arg(long, default_value_t = 3)]
    pub bookies: usize,
    /// Storage shards per bookie.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// E: bookies each segment is striped over.
    #[arg(long, default_value_t = 3)]
    pub ensemble: usize,
    /// Qw: bookies each entry is written to.
    #[arg(long, default_value_t = 3)]
    pub write_quorum: usize,
    /// Qa: acks an entry needs.
    #[arg(long, default_value_t = 2)]
    pub ack_quorum: usize,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 1024)]
    pub entry_size: usize,
    /// Entries in flight in the throughput rounds (baseline and replicated alike).
    #[arg(long, default_value_t = 1024)]
    pub concurrency: usize,
    /// Load time per round and side, e.g. "3s".
    #[arg(long, default_value = "3s", value_parser = crate::bench::parse_duration)]
    pub duration: Duration,
    /// Rounds of (baseline, replicated) per figure; the figures are medians over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[expect(clippy::disallowed_methods, reason = "the benchmark measures wall time")]
fn now() -> Instant {
    Instant::now()
}

/// The bookie processes; killed on drop.
struct Processes {
    children: Vec<Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

#[expect(clippy::disallowed_methods, reason = "polls for a child process to listen")]
fn wait_listening(addr: SocketAddr, child: &mut Child) -> Result<()> {
    let deadline = now() + Duration::from_secs(20);
    while now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("bookie on {addr} exited with {status} before listening");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("bookie on {addr} did not listen within 20 s")
}

fn start_bookies(args: &ReplicationBenchArgs, dir: &Path) -> Result<(Processes, Vec<SocketAddr>)> {
    let exe = std::env::current_exe().context("locating the dlog binary")?;
    let mut processes = Processes { children: Vec::new() };
    let mut addrs = Vec::new();
    for i in 0..args.bookies {
        let addr = free_port()?;
        let home = dir.join(format!("bookie-{i}"));
        let child = Command::new(&exe)
            .args([
                "bookie",
                "--listen",
                &addr.to_string(),
                "--metadata",
                "memory://",
                "--pin-shards",
                "false",
            ])
            .arg("--journal-dir")
            .arg(home.join("journal"))
            .args(["--shards", &args.shards.to_string(), "--bookie-id", &format!("bookie-{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a bookie process")?;
        processes.children.push(child);
        addrs.push(addr);
    }
    for (addr, child) in addrs.iter().zip(&mut processes.children) {
        wait_listening(*addr, child)?;
    }
    Ok((processes, addrs))
}

/// One add in flight through the replication client for `duration`: latencies in ns.
async fn replicated_one_in_flight(
    client: &ReplicationClient<AnyStore>,
    quorum: QuorumSizes,
    duration: Duration,
    payload: Bytes,
) -> Result<(Histogram<u64>, u64)> {
    let segment = client.create_segment(quorum, master_key(), None).await?;
    let mut hist = histogram();
    let deadline = now() + duration;
    let mut entries = 0;
    while now() < deadline {
        let sent = now();
        segment.add(payload.clone()).await?;
        hist.record((now() - sent).as_nanos() as u64).ok();
        entries += 1;
    }
    segment.close().await?;
    Ok((hist, entries))
}

/// `in_flight` adds in flight through the replication client for `duration`.
async fn replicated_throughput(
    client: &ReplicationClient<AnyStore>,
    quorum: QuorumSizes,
    duration: Duration,
    in_flight: usize,
    payload: Bytes,
) -> Result<Rate> {
    let segment = client.create_segment(quorum, master_key(), None).await?;
    let started = now();
    let deadline = started + duration;
    let mut window = VecDeque::with_capacity(in_flight);
    let mut acked = 0u64;
    loop {
        let open = now() < deadline;
        while open && window.len() < in_flight {
            window.push_back(segment.add(payload.clone()));
        }
        let Some(add) = window.pop_front() else { break };
        add.await?;
        acked += 1;
    }
    let elapsed = (now() - started).as_secs_f64();
    segment.close().await?;
    let entries_per_s = acked as f64 / elapsed;
    Ok(Rate { entries_per_s, mb_per_s: entries_per_s * payload.len() as f64 / 1e6 })
}

fn master_key() -> Bytes {
    Bytes::from_static(b"dlog-bench-master-key")
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn main(args: ReplicationBenchArgs) -> Result<()> {
    let quorum = QuorumSizes::new(args.ensemble, args.write_quorum, args.ack_quorum)
        .map_err(|e| anyhow::anyhow!("quorum sizes: {e}"))?;
    if args.bookies < args.ensemble || args.rounds == 0 || args.concurrency == 0 || args.entry_size == 0 {
        bail!("--bookies must be at least --ensemble; --rounds, --concurrency, --entry-size at least 1");
    }
    let dir = args.dir.join(format!("replication-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run(&args, quorum, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run(args: &ReplicationBenchArgs, quorum: QuorumSizes, dir: &Path) -> Result<serde_json::Value> {
    let (processes, addrs) = start_bookies(args, dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let store = Arc::new(runtime.block_on(AnyStore::open("memory://"))?);
    // The bookies registered in their own stores; the benchmark registers them in its own.
    let mut registrations = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let cookies = vec![dir.join(format!("cookie-{i}"))];
        let config = RegistrationConfig {
            lease_ttl: Duration::from_secs(600),
            ..RegistrationConfig::new(format!("bookie-{i}"), addr.to_string(), cookies.clone(), cookies)
        };
        registrations.push(runtime.block_on(Registration::start(store.clone(), config))?);
    }
    let writer = WriterSettings { window_entries_max: args.concurrency.max(1), ..WriterSettings::default() };
    let config = ReplicationConfig { writer, ..ReplicationConfig::default() };
    let client = ReplicationClient::new(store, runtime.handle().clone(), config)?;
    let payload = payload(args.entry_size);
    let target = addrs[0];
    eprintln!(
        "replication: {} bookie processes ({} shard each), E={} Qw={} Qa={}, {} B entries, baseline {target}",
        args.bookies,
        args.shards,
        quorum.ensemble_size(),
        quorum.write_quorum_size(),
        quorum.ack_quorum_size(),
        args.entry_size
    );
    let mut segment = 1u64 << 40;
    let (mut p50, mut p99, mut tput) = (Vec::new(), Vec::new(), Vec::new());
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let (base_hist, _) = one_in_flight(target, args.duration, args.entry_size, segment)?;
        segment += 1;
        let (repl_hist, _) =
            runtime.block_on(replicated_one_in_flight(&client, quorum, args.duration, payload.clone()))?;
        let base_rate = client_load(target, 1, args.concurrency, args.duration, args.entry_size, segment)?;
        segment += 100;
        let repl_rate = runtime.block_on(replicated_throughput(
            &client,
            quorum,
            args.duration,
            args.concurrency,
            payload.clone(),
        ))?;
        let (base, repl) = (latency(&base_hist), latency(&repl_hist));
        eprintln!(
            "round {round}: one in flight p50 {:.0} / {:.0} us, p99 {:.0} / {:.0} us; \
             throughput {:.0} / {:.0} entries/s (replicated / one bookie)",
            repl.p50, base.p50, repl.p99, base.p99, repl_rate.entries_per_s, base_rate.entries_per_s
        );
        p50.push(repl.p50 / base.p50);
        p99.push(repl.p99 / base.p99);
        tput.push(repl_rate.entries_per_s / base_rate.entries_per_s);
        rounds.push(json!({
            "baseline": {"latency_us": base, "entries_per_s": base_rate.entries_per_s, "mb_per_s": base_rate.mb_per_s},
            "replicated": {"latency_us": repl, "entries_per_s": repl_rate.entries_per_s, "mb_per_s": repl_rate.mb_per_s},
        }));
    }
    drop(client);
    for registration in registrations {
        let _ = runtime.block_on(registration.deregister());
    }
    drop(processes);
    Ok(json!({
        "bench": "replication",
        "bookies": args.bookies,
        "shards_per_bookie": args.shards,
        "ensemble_size": quorum.ensemble_size(),
        "write_quorum_size": quorum.write_quorum_size(),
        "ack_quorum_size": quorum.ack_quorum_size(),
        "entry_bytes": args.entry_size,
        "concurrency": args.concurrency,
        "round_s": args.duration.as_secs_f64(),
        "rounds": rounds,
        "p50_ratio": median(p50),
        "p99_ratio": median(p99),
        "throughput_ratio": median(tput),
        "targets": {"p50_ratio_max": 1.5, "p99_ratio_max": 2.0, "throughput_ratio_min": 0.8},
    }))
}
