//! `dlog bench bookie`: ADDs over TCP against the same bookie's embedded API, in one run.
//!
//! Owns: the two figures of the bookie server (issue 5): ADD throughput of 1 KiB entries over
//! TCP as a ratio of the embedded throughput, and the p50 of one ADD in flight over TCP minus
//! the embedded durable add p50. Rounds alternate embedded and TCP on one engine, so a noisy
//! disk moves both.
//!
//! The server runs in this process on 127.0.0.1 over the same `Bookie` the embedded rounds
//! use; the client is `dlog_replication::transport::Connection` on compio threads of its own
//! (real TCP over loopback: the kernel, the codec, the server's threads and batching are all
//! on the path). With `--target ADDR` only the TCP rounds run, against that bookie.
//!
//! TLS (issue 9): `--tls on` runs the TCP rounds over TLS; `--tls compare` runs the same ADD
//! workload over plaintext and over TLS in alternating rounds, on one engine, and reports
//! `tls_add_ratio` (TLS throughput / plaintext throughput, the median of the rounds' ratios;
//! target at least 0.85). The
//! certificates are made for the run (a throwaway CA and a bookie certificate for 127.0.0.1).
//! Client and bookie share this machine, so both ends' encryption is on its CPUs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use dlog_engine::{Bookie, BookieConfig, SegmentId};
use dlog_protocol::{Request, Response};
use dlog_replication::transport::security::crypto_provider;
use dlog_replication::transport::{ClientConfig, ClientSecurity, ClientTls, Connection};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::bench::load::{self, LoadSpec, Segments};
use crate::bench::stats::{histogram, latency};
use crate::bookie::{BookieServer, ServerLimits, ServerOptions};

/// `dlog bench bookie` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BookieBenchArgs {
    /// Directory for the bookie under test (on the disk under test; emptied afterwards).
    #[arg(long, default_value = "dlog-bench-data")]
    pub dir: PathBuf,
    /// Benchmark a running bookie at ADDR over TCP only (no embedded baseline).
    #[arg(long, value_name = "ADDR")]
    pub target: Option<SocketAddr>,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 1024)]
    pub entry_size: usize,
    /// Entries in flight in the throughput rounds (embedded and TCP alike).
    #[arg(long, default_value_t = 4096)]
    pub concurrency: usize,
    /// TCP connections the throughput rounds spread their entries over.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Client threads (each a compio runtime) the connections are spread over (default: half
    /// the CPUs, at least one).
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Entries per embedded `add_entries` call (the server batches what one read brings).
    #[arg(long, default_value_t = 256)]
    pub embedded_batch: usize,
    /// Load time per round and side, e.g. "5s".
    #[arg(long, default_value = "3s", value_parser = crate::bench::parse_duration)]
    pub duration: Duration,
    /// Rounds of (embedded, TCP) per figure; the figures are medians over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Storage shards (default: half the CPUs, at least one: the client runs on this machine
    /// too, on the other half; a bookie with a machine to itself runs one shard per CPU).
    #[arg(long)]
    pub shards: Option<u32>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// TLS between the client and the bookie: off, on (the TCP rounds over TLS), or compare
    /// (plaintext and TLS ADD rounds alternating; reports tls_add_ratio). Not with --target.
    #[arg(long, value_enum, default_value = "off")]
    pub tls: TlsMode,
}

/// `--tls`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext.
    #[default]
    Off,
    /// The TCP rounds over TLS.
    On,
    /// Plaintext and TLS rounds alternating, and their ratio.
    Compare,
}

/// The smallest `tls_add_ratio` the issue accepts: TLS costs at most 15 % of ADD throughput.
const TLS_RATIO_MIN: f64 = 0.85;

#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
fn now() -> Instant {
    Instant::now()
}

/// The default share of the bookie's shards and of the client's threads: half the CPUs each,
/// at least one, since both run on this machine.
fn half_the_cpus() -> usize {
    (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) / 2).max(1)
}

/// One throughput measurement.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rate {
    pub(crate) entries_per_s: f64,
    pub(crate) mb_per_s: f64,
}

fn rate(entries: u64, entry_bytes: usize, elapsed: Duration) -> Rate {
    let s = elapsed.as_secs_f64().max(1e-9);
    Rate { entries_per_s: entries as f64 / s, mb_per_s: (entries * entry_bytes as u64) as f64 / s / 1e6 }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn main(args: BookieBenchArgs) -> Result<()> {
    if args.concurrency == 0 || args.connections == 0 || args.rounds == 0 || args.embedded_batch == 0 {
        bail!("--concurrency, --connections, --rounds and --embedded-batch must be at least 1");
    }
    if args.entry_size == 0 {
        bail!("--entry-size must be at least 1");
    }
    let base = segment_base();
    let report = match (args.target, args.tls) {
        (Some(_), TlsMode::On | TlsMode::Compare) => {
            bail!(
                "--tls is for the bookie this benchmark runs (its certificate is made for the run), \
                 not --target"
            )
        }
        (Some(target), TlsMode::Off) => remote(&args, target, base)?,
        (None, TlsMode::Compare) => tls_compare(&args, base)?,
        (None, _) => local(&args, base)?,
    };
    let report = crate::bench::report::envelope("bookie", &args.dir, report);
    crate::bench::report::print(&(serde_json::to_string_pretty(&report)? + "\n"));
    if let Some(path) = &args.json {
        crate::bench::report::write_json(path, &report)?;
    }
    Ok(())
}

/// Segment ids for this run: from the clock, so runs against a live bookie do not collide.
fn segment_base() -> u64 {
    #[expect(clippy::disallowed_methods, reason = "a run's segment ids come from the wall clock")]
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (since.as_secs() % 1_000_000) * 1_000_000
}

fn remote(args: &BookieBenchArgs, target: SocketAddr, base: u64) -> Result<serde_json::Value> {
    let mut rates = Vec::new();
    let mut next = base;
    for _ in 0..args.rounds {
        rates.push(tcp_throughput(target, args, &ClientSecurity::default(), &mut next)?);
    }
    let (tcp_latency, _) = tcp_one_in_flight(target, args, next + 1_000_000)?;
    let l = latency(&tcp_latency);
    Ok(json!({
        "target": target.to_string(),
        "entry_bytes": args.entry_size,
        "tcp": {
            "entries_per_s": median(rates.iter().map(|r| r.entries_per_s).collect()),
            "mb_per_s": median(rates.iter().map(|r| r.mb_per_s).collect()),
            "one_in_flight_us": {"p50": l.p50, "p99": l.p99},
        },
        "baseline": "none: run without --target to compare with the embedded engine",
    }))
}

fn local(args: &BookieBenchArgs, base: u64) -> Result<serde_json::Value> {
    let bookie = open_bookie(args)?;
    let tls = (args.tls == TlsMode::On).then(throwaway_tls).transpose()?;
    let (server_tls, security) = tls.map_or((None, ClientSecurity::default()), |(s, c)| (Some(s), c));
    let server = start_server(&bookie, server_tls)?;
    let addr = server.local_addr();
    let shards = bookie.shard_count();
    let transport = if security.tls.is_some() { "tls" } else { "tcp" };
    eprintln!("bookie: {shards} shards, backend {}, server {addr} ({transport})", bookie.backend());

    let per_shard = 32;
    let mut segments = Segments::new(&bookie, per_shard, base, args.entry_size);
    let spec = LoadSpec {
        entry_bytes: args.entry_size,
        concurrency: args.concurrency,
        batch: args.embedded_batch,
        duration: args.duration,
        spin: false,
    };
    let (mut embedded, mut tcp) = (Vec::new(), Vec::new());
    let mut next = base + 1_000_000;
    for round in 0..args.rounds {
        let s0 = journal_totals(&bookie);
        let e = load::run(&bookie, &mut segments, &spec, None)?;
        let e = rate(e.entries, args.entry_size, e.elapsed);
        let s1 = journal_totals(&bookie);
        let t = tcp_throughput(addr, args, &security, &mut next)?;
        let s2 = journal_totals(&bookie);
        eprintln!(
            "round {round}: embedded {:.0} entries/s ({:.0} MB/s; {}), tcp {:.0} entries/s ({:.0} MB/s; {}): {:.2}x",
            e.entries_per_s,
            e.mb_per_s,
            s1.since(&s0),
            t.entries_per_s,
            t.mb_per_s,
            s2.since(&s1),
            t.entries_per_s / e.entries_per_s
        );
        embedded.push(e);
        tcp.push(t);
    }

    // One in flight: the embedded appender on its shard's CPU (as the journal benchmark), the
    // TCP client on a thread of its own.
    let (mut embedded_p50, mut tcp_p50) = (Vec::new(), Vec::new());
    let (mut embedded_hist, mut tcp_hist) = (histogram(), histogram());
    let one = LoadSpec { concurrency: 1, batch: 1, ..spec.clone() };
    let shard0 = bookie.shard_of(SegmentId(base));
    let cpu = bookie.shard_cpu(shard0);
    for round in 0..args.rounds {
        let mut single =
            Segments::on_shards(&bookie, 1, base + 5_000_000 + u64::from(round) * 1000, args.entry_size, 1);
        let e = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<load::LoadResult> {
                    if let Some(cpu) = cpu {
                        load::pin_to(cpu)?;
                    }
                    load::run(&bookie, &mut single, &one, None)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("embedded latency thread panicked"))?
        })?;
        let (t, _) = one_in_flight_with(&security, addr, args.duration, args.entry_size, next)?;
        next += 1;
        let (el, tl) = (latency(&e.histogram), latency(&t));
        eprintln!("round {round}: one in flight p50 embedded {:.1} us, tcp {:.1} us", el.p50, tl.p50);
        embedded_p50.push(el.p50);
        tcp_p50.push(tl.p50);
        embedded_hist.add(&e.histogram).ok();
        tcp_hist.add(&t).ok();
    }
    server.shutdown(Duration::from_secs(5));
    drop(segments);
    close_bookie(bookie, args)?;

    let ratios: Vec<f64> =
        tcp.iter().zip(&embedded).map(|(t, e)| t.entries_per_s / e.entries_per_s).collect();
    let (el, tl) = (latency(&embedded_hist), latency(&tcp_hist));
    let added_p50 = median(tcp_p50.clone()) - median(embedded_p50.clone());
    Ok(json!({
        "entry_bytes": args.entry_size,
        "transport": transport,
        "shards": shards,
        "client_threads": args.client_threads.unwrap_or(half_the_cpus()),
        "concurrency": args.concurrency,
        "connections": args.connections,
        "rounds": args.rounds,
        "throughput": {
            "embedded_entries_per_s": median(embedded.iter().map(|r| r.entries_per_s).collect()),
            "embedded_mb_per_s": median(embedded.iter().map(|r| r.mb_per_s).collect()),
            "tcp_entries_per_s": median(tcp.iter().map(|r| r.entries_per_s).collect()),
            "tcp_mb_per_s": median(tcp.iter().map(|r| r.mb_per_s).collect()),
            "ratio_per_round": ratios,
            "ratio_median": median(ratios.clone()),
            "target_ratio_min": 0.7,
        },
        "one_in_flight": {
            "embedded_us": {"p50": el.p50, "p99": el.p99, "p50_per_round": embedded_p50},
            "tcp_us": {"p50": tl.p50, "p99": tl.p99, "p50_per_round": tcp_p50},
            "tcp_minus_embedded_p50_us": added_p50,
            "target_added_p50_us_max": 60,
        },
    }))
}

/// Journal counters summed over the shards.
#[derive(Clone, Copy, Default)]
struct JournalTotals {
    batches: u64,
    entries: u64,
    sync_ns: u64,
}

impl JournalTotals {
    /// Entries per journal batch and mean write+flush time between two samples.
    fn since(&self, before: &JournalTotals) -> String {
        let batches = (self.batches - before.batches).max(1);
        let entries = self.entries - before.entries;
        let sync_us = (self.sync_ns - before.sync_ns) as f64 / batches as f64 / 1000.0;
        format!("{:.0} entries/batch, {sync_us:.0} us/batch", entries as f64 / batches as f64)
    }
}

fn journal_totals(bookie: &Bookie) -> JournalTotals {
    let mut totals = JournalTotals::default();
    for shard in 0..bookie.shard_count() {
        if let Ok(stats) = bookie.stats(dlog_engine::ShardId(shard)) {
            totals.batches += stats.batches;
            totals.entries += stats.entries;
            totals.sync_ns += stats.journal_sync_ns;
        }
    }
    totals
}

fn master_key() -> Bytes {
    Bytes::from_static(b"dlog-bench-master-key")
}

/// A payload whose clones cost no atomic operation (static bytes, leaked once per call: the
/// benchmark makes a handful).
pub(crate) fn payload(entry_bytes: usize) -> Bytes {
    let bytes: Vec<u8> = (0..entry_bytes).map(|i| (i * 31 + 7) as u8).collect();
    Bytes::from_static(Box::leak(bytes.into_boxed_slice()))
}

/// Runs `work` on a fresh compio runtime thread and returns its result.
pub(crate) fn on_compio_thread<T: Send + 'static>(
    work: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>>>> + Send + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name("dlog-bench-client".into())
        .spawn(move || compio::runtime::Runtime::new().context("client runtime")?.block_on(work()))
        .context("client thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// `concurrency` entries in flight over `connections` connections for `duration`; each task
/// keeps one ADD in flight on its own segment's next entry.
fn tcp_throughput(
    addr: SocketAddr,
    args: &BookieBenchArgs,
    security: &ClientSecurity,
    next_segment: &mut u64,
) -> Result<Rate> {
    let threads = args.client_threads.unwrap_or(half_the_cpus()).clamp(1, args.connections);
    let results: Vec<Result<Rate>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let connections = args.connections / threads + usize::from(t < args.connections % threads);
                let concurrency = args.concurrency / threads;
                let first = *next_segment + t as u64 * 100_000;
                let (duration, entry_bytes) = (args.duration, args.entry_size);
                let security = security.clone();
                scope.spawn(move || {
                    client_load_with(security, addr, connections, concurrency, duration, entry_bytes, first)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("client thread panicked"))).collect()
    });
    *next_segment += threads as u64 * 100_000;
    let mut entries = 0.0;
    for result in results {
        entries += result?.entries_per_s;
    }
    Ok(Rate { entries_per_s: entries, mb_per_s: entries * args.entry_size as f64 / 1e6 })
}

/// One client thread's share of the throughput load: `concurrency` ADDs in flight over
/// `connections` connections, each driven by one task through `Connection::submit` and
/// `Connection::completions` (the interface the replication cores' shell uses: no task or
/// channel per request).
pub(crate) fn client_load(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    duration: Duration,
    entry_bytes: usize,
    first: u64,
) -> Result<Rate> {
    client_load_with(ClientSecurity::default(), addr, connections, concurrency, duration, entry_bytes, first)
}

/// `client_load`, with `security` (TLS) on its connections.
fn client_load_with(
    security: ClientSecurity,
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    duration: Duration,
    entry_bytes: usize,
    first: u64,
) -> Result<Rate> {
    let per_connection = (concurrency / connections.max(1)).max(1);
    on_compio_thread(move || {
        Box::pin(async move {
            let config = ClientConfig { in_flight_max: per_connection, security, ..ClientConfig::default() };
            let payload = payload(entry_bytes);
            let started = now();
            let deadline = started + duration;
            let mut tasks = Vec::new();
            for c in 0..connections {
                let conn = Connection::connect(addr, &config).await?;
                let payload = payload.clone();
                let segments: Vec<u64> = (0..16).map(|s| first + c as u64 * 16 + s).collect();
                tasks.push(compio::runtime::spawn(async move {
                    let mut next = vec![0u64; segments.len()];
                    let (mut in_flight, mut acked, mut turn) = (0usize, 0u64, 0usize);
                    loop {
                        let open = now() < deadline;
                        while open && in_flight < per_connection {
                            let slot = turn % segments.len();
                            turn += 1;
                            let add = Request::Add {
                                segment: segments[slot],
                                entry: next[slot],
                                last_add_confirmed: None,
                                master_key: master_key(),
                                payload: payload.clone(),
                                recovery: false,
                            };
                            next[slot] += 1;
                            conn.submit(0, add)?;
                            in_flight += 1;
                        }
                        if in_flight == 0 {
                            return Ok::<u64, anyhow::Error>(acked);
                        }
                        for (_, result) in conn.completions().await? {
                            in_flight -= 1;
                            match result? {
                                Response::Add { .. } => acked += 1,
                                other => bail!("ADD refused: {other:?}"),
                            }
                        }
                    }
                }));
            }
            let mut acked = 0;
            for task in tasks {
                acked += task.await.map_err(|_| anyhow::anyhow!("client task panicked"))??;
            }
            Ok(rate(acked, entry_bytes, now() - started))
        })
    })
}

/// One connection, one ADD in flight, for `duration`: per-ADD latency in ns.
fn tcp_one_in_flight(
    addr: SocketAddr,
    args: &BookieBenchArgs,
    segment: u64,
) -> Result<(Histogram<u64>, u64)> {
    one_in_flight(addr, args.duration, args.entry_size, segment)
}

/// One connection to `addr`, one ADD of `entry_bytes` in flight on `segment`, for `duration`:
/// per-ADD latency in ns, and the entries added.
pub(crate) fn one_in_flight(
    addr: SocketAddr,
    duration: Duration,
    entry_bytes: usize,
    segment: u64,
) -> Result<(Histogram<u64>, u64)> {
    one_in_flight_with(&ClientSecurity::default(), addr, duration, entry_bytes, segment)
}

/// `one_in_flight`, with `security` (TLS) on its connection.
fn one_in_flight_with(
    security: &ClientSecurity,
    addr: SocketAddr,
    duration: Duration,
    entry_bytes: usize,
    segment: u64,
) -> Result<(Histogram<u64>, u64)> {
    let config = ClientConfig { security: security.clone(), ..ClientConfig::default() };
    on_compio_thread(move || {
        Box::pin(async move {
            let conn = Connection::connect(addr, &config).await?;
            let payload = payload(entry_bytes);
            let mut hist = histogram();
            let deadline = now() + duration;
            let mut entry = 0u64;
            while now() < deadline {
                let add = Request::Add {
                    segment,
                    entry,
                    last_add_confirmed: entry.checked_sub(1),
                    master_key: master_key(),
                    payload: payload.clone(),
                    recovery: false,
                };
                let sent = now();
                match conn.request(add).await? {
                    Response::Add { .. } => {}
                    other => bail!("ADD refused: {other:?}"),
                }
                hist.record((now() - sent).as_nanos() as u64).ok();
                entry += 1;
            }
            Ok((hist, entry))
        })
    })
}

/// The bookie under test, in `args.dir` (emptied first).
fn open_bookie(args: &BookieBenchArgs) -> Result<Arc<Bookie>> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("emptying {}", args.dir.display()))?;
    }
    let mut config = BookieConfig::new(args.dir.join("journal"));
    config.shard_count = args.shards.unwrap_or(half_the_cpus() as u32);
    Ok(Arc::new(Bookie::open(config).context("opening the bookie")?))
}

/// A server on 127.0.0.1 over `bookie`, with TLS when `tls` is given.
fn start_server(bookie: &Arc<Bookie>, tls: Option<Arc<rustls::ServerConfig>>) -> Result<BookieServer> {
    let mut options =
        ServerOptions::new("127.0.0.1:0".parse().expect("a literal address"), ServerLimits::default());
    options.tls = tls;
    Ok(BookieServer::start(bookie.clone(), options)?)
}

/// Closes the engine and removes the benchmark's directory.
fn close_bookie(bookie: Arc<Bookie>, args: &BookieBenchArgs) -> Result<()> {
    match Arc::try_unwrap(bookie) {
        Ok(bookie) => bookie.close(),
        Err(_) => bail!("bookie still referenced"),
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}

/// TLS for this run: a throwaway CA, a bookie certificate for 127.0.0.1 it signed (the
/// server's config), and a client that trusts the CA.
fn throwaway_tls() -> Result<(Arc<rustls::ServerConfig>, ClientSecurity)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "dlog bench CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "dlog bench bookie");
    params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let cert = params.signed_by(&key, &issuer)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let client = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let security = ClientSecurity { tls: Some(ClientTls::from_config(Arc::new(client))), token: None };
    Ok((Arc::new(server), security))
}

/// `--tls compare`: the same ADD throughput rounds over plaintext and over TLS, alternating
/// (which goes first alternates too, so a drifting disk moves both alike), on one engine
/// through two servers; the median of the rounds' ratios is `tls_add_ratio`.
fn tls_compare(args: &BookieBenchArgs, base: u64) -> Result<serde_json::Value> {
    let bookie = open_bookie(args)?;
    let (server_tls, security) = throwaway_tls()?;
    let plain_server = start_server(&bookie, None)?;
    let tls_server = start_server(&bookie, Some(server_tls))?;
    let (plain_addr, tls_addr) = (plain_server.local_addr(), tls_server.local_addr());
    let shards = bookie.shard_count();
    eprintln!(
        "bookie: {shards} shards, backend {}, plaintext {plain_addr}, tls {tls_addr}",
        bookie.backend()
    );
    let plaintext = ClientSecurity::default();
    let (mut plain_rates, mut tls_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut plain_cpu, mut tls_cpu) = (Vec::new(), Vec::new());
    let mut next = base + 1_000_000;
    for round in 0..args.rounds {
        let ((p, p_cpu), (t, t_cpu)) = if round % 2 == 0 {
            let p = measured(|| tcp_throughput(plain_addr, args, &plaintext, &mut next))?;
            (p, measured(|| tcp_throughput(tls_addr, args, &security, &mut next))?)
        } else {
            let t = measured(|| tcp_throughput(tls_addr, args, &security, &mut next))?;
            (measured(|| tcp_throughput(plain_addr, args, &plaintext, &mut next))?, t)
        };
        let ratio = t.entries_per_s / p.entries_per_s.max(1e-9);
        eprintln!(
            "round {round}: plaintext {:.0} entries/s ({:.0} MB/s), tls {:.0} entries/s \
             ({:.0} MB/s): {ratio:.3}; bookie cpu per add {:.2} / {:.2} us",
            p.entries_per_s,
            p.mb_per_s,
            t.entries_per_s,
            t.mb_per_s,
            p_cpu.bookie_us(),
            t_cpu.bookie_us()
        );
        plain_rates.push(p.entries_per_s);
        tls_rates.push(t.entries_per_s);
        ratios.push(ratio);
        plain_cpu.push(p_cpu);
        tls_cpu.push(t_cpu);
    }
    let (plain_cpu, tls_cpu) = (CpuPerAdd::median(&plain_cpu), CpuPerAdd::median(&tls_cpu));
    plain_server.shutdown(Duration::from_secs(5));
    tls_server.shutdown(Duration::from_secs(5));
    close_bookie(bookie, args)?;
    let (plain, tls) = (median(plain_rates.clone()), median(tls_rates.clone()));
    // Each round's two runs are adjacent in time: their ratio is the paired comparison, and its
    // median over rounds the figure (robust to a machine whose load drifts between rounds).
    let ratio = median(ratios.clone());
    Ok(json!({
        "entry_bytes": args.entry_size,
        "shards": shards,
        "client_threads": args.client_threads.unwrap_or(half_the_cpus()),
        "concurrency": args.concurrency,
        "connections": args.connections,
        "rounds": args.rounds,
        "tls": {
            "plaintext_entries_per_s": plain,
            "tls_entries_per_s": tls,
            "plaintext_mb_per_s": plain * args.entry_size as f64 / 1e6,
            "tls_mb_per_s": tls * args.entry_size as f64 / 1e6,
            "plaintext_entries_per_s_per_round": plain_rates,
            "tls_entries_per_s_per_round": tls_rates,
            "ratio_per_round": ratios,
            "ratio_of_medians": tls / plain.max(1e-9),
            "tls_add_ratio": ratio,
            "target_ratio_min": TLS_RATIO_MIN,
            "met": ratio >= TLS_RATIO_MIN,
            // CPU per acknowledged ADD (medians over rounds): the whole process (client and
            // bookie share this machine), the bookie's network threads, its shards.
            "cpu_us_per_add": {"plaintext": plain_cpu.json(), "tls": tls_cpu.json()},
            // The bookie's own CPU per ADD without TLS over with it: the throughput ratio TLS
            // leaves a CPU-bound bookie whose clients run elsewhere (its network threads
            // decrypt and copy; the client's encryption is not its cost).
            "bookie_cpu_ratio": plain_cpu.bookie_us() / tls_cpu.bookie_us().max(1e-9),
            "provider": "rustls + ring, TLS 1.3, both ends on this machine",
        },
    }))
}

/// CPU time per acknowledged ADD in one round, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
struct CpuPerAdd {
    process: f64,
    network: f64,
    shards: f64,
}

impl CpuPerAdd {
    fn bookie_us(&self) -> f64 {
        self.network + self.shards
    }

    fn median(rounds: &[CpuPerAdd]) -> CpuPerAdd {
        CpuPerAdd {
            process: median(rounds.iter().map(|c| c.process).collect()),
            network: median(rounds.iter().map(|c| c.network).collect()),
            shards: median(rounds.iter().map(|c| c.shards).collect()),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"process": self.process, "bookie_network": self.network, "bookie_shards": self.shards})
    }
}

/// Runs a throughput round and measures the CPU it took, per ADD: of the whole process, of the
/// bookie's network threads (`dlog-net-*`, both servers': the idle one adds nothing) and of its
/// shards (`dlog-shard-*`).
fn measured(round: impl FnOnce() -> Result<Rate>) -> Result<(Rate, CpuPerAdd)> {
    let before = (process_cpu_s(), threads_cpu_s("dlog-net-"), threads_cpu_s("dlog-shard-"));
    let started = now();
    let rate = round()?;
    let elapsed = (now() - started).as_secs_f64();
    let after = (process_cpu_s(), threads_cpu_s("dlog-net-"), threads_cpu_s("dlog-shard-"));
    let adds = (rate.entries_per_s * elapsed).max(1.0);
    let per_add = |from: f64, to: f64| (to - from).max(0.0) * 1e6 / adds;
    let cpu = CpuPerAdd {
        process: per_add(before.0, after.0),
        network: per_add(before.1, after.1),
        shards: per_add(before.2, after.2),
    };
    Ok((rate, cpu))
}

/// The kernel's clock ticks per second in /proc's CPU times (USER_HZ: 100 on the ABIs dlog
/// builds for).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds in a /proc `stat` line (fields 14 and 15, after the command in
/// parentheses, which may hold spaces), and the command.
fn stat_cpu_s(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let command = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((command, (utime + stime) / USER_HZ))
}

/// CPU seconds of this process so far (every thread, ended ones included).
fn process_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu_s(&s).map(|(_, cpu)| cpu))
        .unwrap_or(0.0)
}

/// CPU seconds so far of this process's live threads named `prefix*`.
fn threads_cpu_s(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            stat_cpu_s(&stat).filter(|(command, _)| command.starts_with(prefix)).map(|(_, cpu)| cpu)
        })
        .sum()
}
