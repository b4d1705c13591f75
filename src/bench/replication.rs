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
use dlog_protocol::{Request, Response};
use dlog_replication::client::{ReplicationClient, ReplicationConfig};
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_writer::WriterSettings;
use dlog_replication::transport::{ClientConfig, Connection};
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
    /// The segments' quorum sizes.
    #[command(flatten)]
    pub quorum: crate::bench::QuorumArgs,
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
    /// Writer takeovers to time (fence + recover + close with 1,000 adds in flight).
    #[arg(long, default_value_t = 20)]
    pub takeovers: u32,
    /// Skip the last phase: SIGKILL one bookie of a segment being written and time the pause
    /// until the writer goes on (a spare bookie process is started for it).
    #[arg(long)]
    pub no_kill: bool,
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

/// Starts `count` bookie processes.
fn start_bookies(
    args: &ReplicationBenchArgs,
    dir: &Path,
    count: usize,
) -> Result<(Processes, Vec<SocketAddr>)> {
    let exe = std::env::current_exe().context("locating the dlog binary")?;
    let mut processes = Processes { children: Vec::new() };
    let mut addrs = Vec::new();
    for i in 0..count {
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

/// The machine's floor for a replicated add: the same ADD sent raw to `addrs` (one connection
/// each, from one compio thread, no replication client), timed until `ack_quorum` answered;
/// one at a time for `duration`. Latencies in ns.
fn raw_fan_out(
    addrs: Vec<SocketAddr>,
    ack_quorum: usize,
    duration: Duration,
    entry_bytes: usize,
    segment: u64,
) -> Result<Histogram<u64>> {
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;
    crate::bench::bookie::on_compio_thread(move || {
        Box::pin(async move {
            let mut connections = Vec::new();
            for addr in &addrs {
                connections
                    .push(std::rc::Rc::new(Connection::connect(*addr, &ClientConfig::default()).await?));
            }
            let payload = payload(entry_bytes);
            let mut hist = histogram();
            let deadline = now() + duration;
            let mut entry = 0u64;
            // Answers beyond the ack quorum are drained in the background, as a writer does.
            let mut late = FuturesUnordered::new();
            while now() < deadline {
                let sent = now();
                let mut answers: FuturesUnordered<_> = connections
                    .iter()
                    .map(|conn| {
                        let conn = conn.clone();
                        let add = Request::Add {
                            segment,
                            entry,
                            last_add_confirmed: entry.checked_sub(1),
                            master_key: master_key(),
                            payload: payload.clone(),
                            recovery: false,
                        };
                        async move { conn.request(add).await }
                    })
                    .collect();
                let mut acked = 0;
                while acked < ack_quorum {
                    match answers.next().await {
                        Some(Ok(Response::Add { .. })) => acked += 1,
                        Some(other) => bail!("ADD failed: {other:?}"),
                        None => bail!("fewer answers than the ack quorum"),
                    }
                }
                hist.record((now() - sent).as_nanos() as u64).ok();
                late.push(answers.collect::<Vec<_>>());
                while late.len() > 4 {
                    late.next().await;
                }
                entry += 1;
            }
            while late.next().await.is_some() {}
            Ok(hist)
        })
    })
}

/// The machine's floor for replicated throughput: every bookie of `addrs` loaded at once
/// with the full stream a write quorum gives it (`bench bookie`'s raw client, one thread and
/// one connection per bookie, `in_flight` ADDs in flight each, no replication client); the
/// `ack_quorum`-th fastest bookie's rate (an entry is acknowledged once that many hold it).
fn raw_fan_out_throughput(
    addrs: &[SocketAddr],
    ack_quorum: usize,
    duration: Duration,
    in_flight: usize,
    entry_bytes: usize,
    first_segment: u64,
) -> Result<Rate> {
    let rates: Vec<Result<Rate>> = std::thread::scope(|scope| {
        let loads: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let first = first_segment + i as u64 * 1000;
                scope.spawn(move || client_load(*addr, 1, in_flight, duration, entry_bytes, first))
            })
            .collect();
        loads.into_iter().map(|l| l.join().unwrap_or_else(|_| bail!("load thread panicked"))).collect()
    });
    let mut rates = rates.into_iter().collect::<Result<Vec<Rate>>>()?;
    rates.sort_by(|a, b| b.entries_per_s.total_cmp(&a.entries_per_s));
    rates.get(ack_quorum - 1).copied().context("fewer bookies than the ack quorum")
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

/// Adds of one writer with `in_flight` adds in flight while another client recovers the
/// segment: the recovery's time (fence, recover, close), and how the adds ended.
async fn takeover(
    writer: &ReplicationClient<AnyStore>,
    recoverer: &ReplicationClient<AnyStore>,
    quorum: QuorumSizes,
    in_flight: usize,
    payload: Bytes,
) -> Result<(Duration, u64, u64)> {
    let segment = writer.create_segment(quorum, master_key(), None).await?;
    segment.add(payload.clone()).await?;
    let adds: Vec<_> = (0..in_flight).map(|_| segment.add(payload.clone())).collect();
    let started = now();
    let end = recoverer.recover_segment(segment.id(), master_key()).await?;
    let took = now() - started;
    let (mut acknowledged, mut fenced) = (0, 0);
    for add in adds {
        match add.await {
            Ok(entry) if end.last_entry.is_some_and(|last| entry <= last) => acknowledged += 1,
            Ok(entry) => bail!("entry {entry} acknowledged past the recovered end {:?}", end.last_entry),
            Err(dlog_replication::segment_writer::WriterError::Fenced) => fenced += 1,
            Err(other) => bail!("an add failed with {other} instead of Fenced"),
        }
    }
    Ok((took, acknowledged, fenced))
}

/// Writes with `in_flight` adds in flight for `duration`, SIGKILLs one member of the
/// segment's ensemble a third of the way in, and returns the longest time without a
/// completion after the kill, the entries acknowledged, and whether the ensemble changed.
async fn bookie_loss(
    client: &ReplicationClient<AnyStore>,
    quorum: QuorumSizes,
    duration: Duration,
    in_flight: usize,
    payload: Bytes,
    processes: &mut Processes,
) -> Result<(Duration, u64, bool)> {
    let segment = client.create_segment(quorum, master_key(), None).await?;
    let before = client.segment(segment.id()).await?;
    let victim = before.current_ensemble()[0].clone();
    let index: usize = victim.trim_start_matches("bookie-").parse().context("a bench bookie id")?;
    let started = now();
    let (kill_at, deadline) = (started + duration / 3, started + duration);
    let mut window = VecDeque::with_capacity(in_flight);
    let (mut acked, mut killed_at, mut last, mut pause) = (0u64, None, started, Duration::ZERO);
    loop {
        let at = now();
        if killed_at.is_none() && at >= kill_at {
            processes.children[index].kill().context("killing a bookie")?;
            killed_at = Some(at);
            last = at;
        }
        while at < deadline && window.len() < in_flight {
            window.push_back(segment.add(payload.clone()));
        }
        let Some(add) = window.pop_front() else { break };
        add.await?;
        acked += 1;
        let done = now();
        if killed_at.is_some() {
            pause = pause.max(done - last);
        }
        last = done;
    }
    segment.close().await?;
    let after = client.segment(segment.id()).await?;
    Ok((pause, acked, !after.current_ensemble().contains(&victim)))
}

fn master_key() -> Bytes {
    Bytes::from_static(b"dlog-bench-master-key")
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn main(args: ReplicationBenchArgs) -> Result<()> {
    let quorum = QuorumSizes::new(args.quorum.ensemble, args.quorum.write_quorum, args.quorum.ack_quorum)
        .map_err(|e| anyhow::anyhow!("quorum sizes: {e}"))?;
    if args.bookies < args.quorum.ensemble
        || args.rounds == 0
        || args.concurrency == 0
        || args.entry_size == 0
    {
        bail!("--bookies must be at least --ensemble; --rounds, --concurrency, --entry-size at least 1");
    }
    let dir = args.dir.join(format!("replication-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run(&args, quorum, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    let report = crate::bench::report::envelope("replication", &args.dir, report);
    crate::bench::report::print(&(serde_json::to_string_pretty(&report)? + "\n"));
    if let Some(path) = &args.json {
        crate::bench::report::write_json(path, &report)?;
    }
    Ok(())
}

fn run(args: &ReplicationBenchArgs, quorum: QuorumSizes, dir: &Path) -> Result<serde_json::Value> {
    let spares = usize::from(!args.no_kill);
    let (mut processes, mut addrs) = start_bookies(args, dir, args.bookies + spares)?;
    let spare_addrs = addrs.split_off(args.bookies);
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
    // The request timeout that detects a silent bookie (a killed one is detected sooner: its
    // connections reset).
    let transport = ClientConfig { request_timeout: Duration::from_secs(1), ..ClientConfig::default() };
    let config = ReplicationConfig { writer, transport, ..ReplicationConfig::default() };
    let client = ReplicationClient::new(store.clone(), runtime.handle().clone(), config.clone())?;
    let recoverer = ReplicationClient::new(store.clone(), runtime.handle().clone(), config)?;
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
    let (mut floor_p50, mut floor_p99, mut floor_tput) = (Vec::new(), Vec::new(), Vec::new());
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let (base_hist, _) = one_in_flight(target, args.duration, args.entry_size, segment)?;
        segment += 1;
        let (repl_hist, _) =
            runtime.block_on(replicated_one_in_flight(&client, quorum, args.duration, payload.clone()))?;
        let fan_out = addrs[..quorum.write_quorum_size()].to_vec();
        let floor_hist =
            raw_fan_out(fan_out, quorum.ack_quorum_size(), args.duration, args.entry_size, segment)?;
        segment += 1;
        let base_rate = client_load(target, 1, args.concurrency, args.duration, args.entry_size, segment)?;
        segment += 100;
        let floor_rate = raw_fan_out_throughput(
            &addrs[..quorum.write_quorum_size()],
            quorum.ack_quorum_size(),
            args.duration,
            args.concurrency,
            args.entry_size,
            segment,
        )?;
        segment += 10_000;
        let repl_rate = runtime.block_on(replicated_throughput(
            &client,
            quorum,
            args.duration,
            args.concurrency,
            payload.clone(),
        ))?;
        let (base, repl, floor) = (latency(&base_hist), latency(&repl_hist), latency(&floor_hist));
        eprintln!(
            "round {round}: one in flight p50 {:.0} / {:.0} us, p99 {:.0} / {:.0} us (raw fan-out floor p50 {:.0}, \
             p99 {:.0}); throughput {:.0} / {:.0} entries/s (replicated / one bookie; raw fan-out floor {:.0})",
            repl.p50,
            base.p50,
            repl.p99,
            base.p99,
            floor.p50,
            floor.p99,
            repl_rate.entries_per_s,
            base_rate.entries_per_s,
            floor_rate.entries_per_s
        );
        floor_tput.push(repl_rate.entries_per_s / floor_rate.entries_per_s);
        floor_p50.push(repl.p50 / floor.p50);
        floor_p99.push(repl.p99 / floor.p99);
        p50.push(repl.p50 / base.p50);
        p99.push(repl.p99 / base.p99);
        tput.push(repl_rate.entries_per_s / base_rate.entries_per_s);
        rounds.push(json!({
            "baseline": {"latency_us": base, "entries_per_s": base_rate.entries_per_s, "mb_per_s": base_rate.mb_per_s},
            "replicated": {
                "latency_us": repl, "entries_per_s": repl_rate.entries_per_s, "mb_per_s": repl_rate.mb_per_s,
            },
            "raw_fan_out_latency_us": floor,
            "raw_fan_out_entries_per_s": floor_rate.entries_per_s,
        }));
    }
    let mut takeovers = histogram();
    for _ in 0..args.takeovers {
        let (took, acknowledged, fenced) =
            runtime.block_on(takeover(&client, &recoverer, quorum, 1000, payload.clone()))?;
        eprintln!(
            "takeover: {:.1} ms ({acknowledged} in-flight adds kept, {fenced} fenced)",
            took.as_secs_f64() * 1e3
        );
        takeovers.record(took.as_nanos() as u64).ok();
    }
    let mut loss = serde_json::Value::Null;
    if let Some(spare) = spare_addrs.first() {
        let cookies = vec![dir.join("cookie-spare")];
        let id = format!("bookie-{}", args.bookies);
        let config = RegistrationConfig {
            lease_ttl: Duration::from_secs(600),
            ..RegistrationConfig::new(id, spare.to_string(), cookies.clone(), cookies)
        };
        registrations.push(runtime.block_on(Registration::start(store.clone(), config))?);
        let (pause, acked, replaced) = runtime.block_on(bookie_loss(
            &client,
            quorum,
            args.duration,
            args.concurrency,
            payload.clone(),
            &mut processes,
        ))?;
        eprintln!(
            "bookie loss: longest pause {:.1} ms after SIGKILL, {acked} entries acknowledged, replaced: {replaced}",
            pause.as_secs_f64() * 1e3
        );
        loss = json!({"pause_ms": pause.as_secs_f64() * 1e3, "entries": acked, "replaced": replaced,
            "target_pause_ms_max": 1000.0});
    }
    drop(client);
    drop(recoverer);
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
        "p50_ratio_to_raw_fan_out": median(floor_p50),
        "p99_ratio_to_raw_fan_out": median(floor_p99),
        "throughput_ratio_to_raw_fan_out": median(floor_tput),
        "takeover_us": latency(&takeovers),
        "bookie_loss": loss,
        "targets": {
            "p50_ratio_max": 1.5, "p99_ratio_max": 2.0, "throughput_ratio_min": 0.8, "takeover_p99_ms_max": 100.0,
        },
    }))
}
