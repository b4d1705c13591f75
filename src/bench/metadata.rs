//! `dlog bench metadata`: the metadata store's two figures, each against a baseline measured in
//! the same run, in alternating rounds (so both see the same disk and CPU weather).
//!
//! - CAS update of a segment's metadata: `--keys` real segments, created with
//!   `SegmentMetadataStore::create` and updated with `SegmentMetadataStore::update(id, &meta,
//!   version)` (the typed accessor: encode, validate, `put_if`), each update an ensemble change
//!   (metadata_workload.rs says which, and how the values' size stays bounded: they cycle
//!   through `ENSEMBLES_MAX` encoded sizes, `segment_value_bytes` on average). `--inflight`
//!   clients, each owning every `inflight`-th segment, update their segments in turn, keeping
//!   the version each update returned (no `get` before a write). Latency is one `update` call,
//!   answered once durable (the embedded store's fdatasync, etcd's raft commit); throughput is
//!   updates per second over all clients.
//! - Watch latency: one watcher on `segments/`, running during the CAS rounds. Each value
//!   carries, in its `created_ms` field (abused as a stamp), the monotonic time taken just before
//!   its update was called; the watcher decodes each event (`SegmentMetadata::decode`) and
//!   records its arrival time minus that (same process, same clock). A marker segment updated
//!   before and after each round delimits the round's events, and every update must be seen
//!   exactly once.
//!
//! Baselines: the embedded store (`local`) against the disk's raw 4 KiB O_DIRECT write +
//! fdatasync, one at a time, in the same directory (`baseline::write_flush_loop`); etcd against
//! a plain etcd-client put (no txn, no compare) of raw values of the same byte lengths as the
//! encoded segment metadata, from the same number of clients, seen through a plain etcd-client
//! watch. Ratios are ours / baseline: for latency lower is better, for throughput higher. For
//! the embedded store the watch ratio is also taken against the raw write + fdatasync: an event
//! cannot be seen before it is durable.
//!
//! A second comparison per backend says how much of the gap is dlog's own: for the embedded
//! store, buffered appends of a log record's size (`segment_value_bytes` + framing) to a growing
//! file + fdatasync (the disk pattern of its log); for etcd, the very txn `EtcdStore::put_if`
//! sends, sent by hand.
//!
//! The etcd backend needs the `etcd` feature. Without `--metadata etcd://...` it runs a
//! throwaway single-member etcd (`EtcdServer::start_in`: free 127.0.0.1 ports, its data in a
//! temporary directory under `--dir`, on the disk under test, removed afterwards).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dlog_metadata::LocalStore;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::bench::baseline::{ScratchFile, WriteLoop, write_flush_loop};
use crate::bench::metadata_workload::{Load, SegmentTarget, run_namespace, segment_value_sizes};
use crate::bench::stats::{Latency, histogram, latency};

/// p99 targets of the issue, us: both figures, per backend.
pub const LOCAL_P99_TARGET_US: f64 = 1_000.0;
/// p99 target on a local etcd, us.
pub const ETCD_P99_TARGET_US: f64 = 5_000.0;
/// Size of the scratch file the raw write + fdatasync baseline overwrites (it wraps around).
const SCRATCH_BYTES: u64 = 64 << 20;
/// Bytes the raw baseline writes per fdatasync.
const BASELINE_WRITE_BYTES: usize = 4096;
/// Bytes the append context writes per fdatasync beyond the value (about a log record's
/// framing and key).
const APPEND_OVERHEAD_BYTES: usize = 64;

/// `dlog bench metadata` flags.
#[derive(clap::Args, Debug)]
pub struct MetadataArgs {
    /// Stores to measure: local (the embedded store), etcd, or both (default: both when built
    /// with the `etcd` feature, else local).
    #[arg(long, value_parser = ["local", "etcd", "both"])]
    backend: Option<String>,
    /// An existing store to measure instead of a fresh one: etcd://host:port[,...]/scope or
    /// local://<directory> (`local:///abs` or `local://rel`). The segments the benchmark creates
    /// (owned by namespace bench-<pid>) and its keys under bench/ are deleted afterwards; the id
    /// generator's idgen/ keys advance.
    #[arg(long, value_name = "URI")]
    metadata: Option<String>,
    /// Directory of the embedded store, of the raw baseline's scratch file and of a started
    /// etcd's data (on the disk under test; all removed afterwards). Default: a fresh directory
    /// under the current one (a tmpfs /tmp would make every fdatasync free and refuse O_DIRECT).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Measured time per side (ours, baseline), split over the rounds, e.g. "10s", "500ms".
    #[arg(long, default_value = "5s", value_parser = crate::bench::parse_duration)]
    duration: Duration,
    /// Unmeasured load per side before the rounds ("0s": none).
    #[arg(long, default_value = "1s", value_parser = crate::bench::parse_duration)]
    warmup: Duration,
    /// Clients with one update in flight each.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Segments updated; each client owns keys/inflight of them.
    #[arg(long, default_value_t = 64)]
    keys: usize,
    /// Rounds of (ours, baseline); more rounds average out a noisy machine.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The load every backend gets.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Keys updated.
    pub keys: usize,
    /// Clients, one update in flight each.
    pub inflight: usize,
    /// Mean bytes of a segment's encoded metadata over the cycle of updates (what the
    /// baselines write per update on average).
    pub segment_value_bytes: usize,
    /// Encoded bytes of a segment's metadata with 1, 2, ... ensembles: the cycle every segment
    /// goes through (the etcd baselines' values follow it).
    pub segment_value_sizes: Vec<usize>,
    /// Measured time per side, s.
    pub duration_s: f64,
    /// Unmeasured time per side, s.
    pub warmup_s: f64,
    /// Rounds of (ours, baseline).
    pub rounds: u32,
}

impl Settings {
    fn round(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s / f64::from(self.rounds))
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }
}

/// Writes measured on one side: count, rate, latency.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Writes {
    /// Writes completed in the measured rounds.
    pub ops: u64,
    /// Writes per second.
    pub ops_per_s: f64,
    /// One write call until answered, us.
    pub latency_us: Latency,
}

/// Events seen by a watcher in the measured rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Watched {
    /// Events seen (equal to the writes: each is seen once).
    pub events: u64,
    /// Just before the write call until the event arrived, us.
    pub latency_us: Latency,
}

/// Ours / baseline.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    /// CAS update p50 / baseline write p50.
    pub cas_p50: f64,
    /// CAS update p99 / baseline write p99.
    pub cas_p99: f64,
    /// CAS updates/s / baseline writes/s.
    pub ops_per_s: f64,
    /// Watch p50 / baseline watch p50 (local: / raw write + fdatasync p50).
    pub watch_p50: f64,
    /// Watch p99 / baseline watch p99 (local: / raw write + fdatasync p99).
    pub watch_p99: f64,
}

/// A second comparison, for context: how much of the gap to the baseline is the backend's own.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// What it measures (local: appends to a growing file; etcd: raw etcd-client CAS txns).
    pub what: String,
    /// Its writes.
    pub writes: Writes,
    /// CAS update p50 / its p50.
    pub cas_p50: f64,
    /// CAS update p99 / its p99.
    pub cas_p99: f64,
}

impl Comparison {
    fn new(what: &str, writes: Writes, cas: &Writes) -> Comparison {
        let cas_p50 = ratio(cas.latency_us.p50, writes.latency_us.p50);
        let cas_p99 = ratio(cas.latency_us.p99, writes.latency_us.p99);
        Comparison { what: what.into(), writes, cas_p50, cas_p99 }
    }
}

/// One backend's results.
#[derive(Clone, Debug, Serialize)]
pub struct BackendReport {
    /// "local" or "etcd".
    pub backend: String,
    /// The store measured (`local:///path`, `etcd://.../scope`).
    pub store: String,
    /// Whether the store was started by the benchmark (else `--metadata`).
    pub started: bool,
    /// What the baseline writes are (see the module doc).
    pub baseline: String,
    /// CAS updates.
    pub cas: Writes,
    /// The watcher on the CAS keys.
    pub watch: Watched,
    /// Baseline writes.
    pub baseline_writes: Writes,
    /// Baseline watcher (etcd only: a plain etcd-client watch).
    pub baseline_watch: Option<Watched>,
    /// Local: buffered appends of a log record's size to a growing file, each followed by
    /// fdatasync, one at a time (the disk pattern of the store's log). etcd: the CAS txn
    /// `EtcdStore` sends (compare mod_revision, put, else get) sent raw through etcd-client.
    pub context: Comparison,
    /// Ours / baseline.
    pub ratios: Ratios,
    /// The p99 target for both figures, us.
    pub target_p99_us: f64,
    /// CAS p99 under the target.
    pub cas_pass: bool,
    /// Watch p99 under the target.
    pub watch_pass: bool,
}

/// The whole run (the JSON written by `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The load.
    pub settings: Settings,
    /// One report per backend measured.
    pub backends: Vec<BackendReport>,
}

#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Runs `dlog bench metadata`.
pub fn main(args: MetadataArgs) -> Result<()> {
    ensure!(args.inflight >= 1 && args.rounds >= 1, "--inflight and --rounds must be at least 1");
    ensure!(args.keys >= args.inflight, "--keys must be at least --inflight (each client owns keys)");
    ensure!(!args.duration.is_zero(), "--duration must be more than 0");
    let backends = backends(args.backend.as_deref())?;
    // The backend `--metadata` names, checked before anything runs.
    let given = args.metadata.as_deref().map(|uri| (uri.split_once("://").map_or("", |(s, _)| s), uri));
    if let Some((scheme, uri)) = given {
        let why = "expected etcd://host:port/scope or local://<directory>, of a backend --backend asks for";
        ensure!(
            ["local", "etcd"].contains(&scheme) && backends.contains(&scheme),
            "--metadata {uri:?}: {why}"
        );
    }
    let sizes = segment_value_sizes(&run_namespace())?;
    let settings = Settings {
        keys: args.keys,
        inflight: args.inflight,
        segment_value_bytes: (sizes.iter().sum::<usize>() as f64 / sizes.len() as f64).round() as usize,
        segment_value_sizes: sizes,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        rounds: args.rounds,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let mut reports = Vec::new();
    for backend in &backends {
        eprintln!(
            "running metadata/{backend} ({} segments, {} in flight, {:?} per side) ...",
            settings.keys, settings.inflight, args.duration
        );
        let uri = given.filter(|(scheme, _)| scheme == backend).map(|(_, uri)| uri);
        let report = match *backend {
            "local" => bench_local(&runtime, &settings, args.dir.as_deref(), uri),
            _ => bench_etcd(&runtime, &settings, args.dir.as_deref(), uri),
        }
        .with_context(|| format!("metadata/{backend}"))?;
        reports.push(report);
    }
    let report = Report { settings, backends: reports };
    print_table(&report);
    if let Some(path) = &args.json {
        let dir = args.dir.as_deref().unwrap_or(std::path::Path::new("."));
        let report = crate::bench::report::envelope("metadata", dir, serde_json::to_value(&report)?);
        crate::bench::report::write_json(path, &report)?;
    }
    Ok(())
}

/// The backends `--backend` asks for, refusing etcd when it was not built in.
fn backends(asked: Option<&str>) -> Result<Vec<&'static str>> {
    let etcd_built = cfg!(feature = "etcd");
    match asked {
        None if etcd_built => Ok(vec!["local", "etcd"]),
        None | Some("local") => Ok(vec!["local"]),
        Some("etcd" | "both") if !etcd_built => bail!(
            "this dlog was built without the `etcd` feature, so only --backend local is available; \
             rebuild with `cargo build --release --features etcd` (needs protoc) to measure etcd"
        ),
        Some("etcd") => Ok(vec!["etcd"]),
        Some("both") => Ok(vec!["local", "etcd"]),
        Some(other) => bail!("unknown backend {other:?} (local, etcd, both)"),
    }
}

/// Ours / baseline, guarding against an empty baseline.
fn ratio(ours: f64, baseline: f64) -> f64 {
    if baseline > 0.0 { ours / baseline } else { f64::NAN }
}

fn ratios(cas: &Writes, watch: &Watched, base: &Writes, base_watch: &Latency) -> Ratios {
    Ratios {
        cas_p50: ratio(cas.latency_us.p50, base.latency_us.p50),
        cas_p99: ratio(cas.latency_us.p99, base.latency_us.p99),
        ops_per_s: ratio(cas.ops_per_s, base.ops_per_s),
        watch_p50: ratio(watch.latency_us.p50, base_watch.p50),
        watch_p99: ratio(watch.latency_us.p99, base_watch.p99),
    }
}

// ---- The embedded store against the raw disk. ----

/// The directory on the disk under test: `--dir` (created if missing, kept), else a fresh one
/// under the current directory (removed when the returned guard drops).
fn work_dir(dir: Option<&Path>) -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            Ok((None, dir.to_path_buf()))
        }
        None => {
            let temp = tempfile::Builder::new().prefix(".dlog-bench-metadata-").tempdir_in(".")?;
            let path = temp.path().to_path_buf();
            Ok((Some(temp), path))
        }
    }
}

fn bench_local(rt: &Runtime, s: &Settings, dir: Option<&Path>, uri: Option<&str>) -> Result<BackendReport> {
    // Where the store lives and who removes what afterwards.
    let (_temp, store_dir, scratch_dir, started) = match uri {
        Some(uri) => {
            let path = uri.strip_prefix("local://").filter(|p| !p.is_empty());
            let path = PathBuf::from(path.with_context(|| format!("{uri:?}: expected local://<directory>"))?);
            (None, path.clone(), path, false)
        }
        None => {
            let (temp, dir) = work_dir(dir)?;
            let store_dir = dir.join("metadata-store");
            let _ = std::fs::remove_dir_all(&store_dir);
            (temp, store_dir, dir, true)
        }
    };
    let scratch_path = scratch_dir.join("metadata-baseline.scratch");
    let scratch = ScratchFile::create(&scratch_path, SCRATCH_BYTES)
        .with_context(|| format!("baseline scratch file in {} (needs O_DIRECT)", scratch_dir.display()))?;
    let store =
        Arc::new(LocalStore::open(&store_dir).with_context(|| format!("open {}", store_dir.display()))?);
    let target = SegmentTarget::new(store.clone());
    let base = now();
    let mut ours = rt.block_on(Load::start(target, s, base))?;
    let raw =
        |d: Duration| write_flush_loop(&scratch, BASELINE_WRITE_BYTES, d).context("raw write + fdatasync");
    let append_path = scratch_dir.join("metadata-append.scratch");
    // Created durable in its directory, as the store creates its log.
    let append_file = std::fs::File::create(&append_path).and_then(|f| f.sync_all().map(|()| f))?;
    std::fs::File::open(&scratch_dir)?.sync_all()?;
    let record = vec![0x5A; s.segment_value_bytes + APPEND_OVERHEAD_BYTES];
    let append = |d: Duration| append_flush_loop(&append_file, &record, d);
    if !s.warmup().is_zero() {
        rt.block_on(ours.round(s.warmup(), false))?;
        raw(s.warmup())?;
        append(s.warmup())?;
    }
    let (mut raw_total, mut append_total) = (Tally::new(), Tally::new());
    for _ in 0..s.rounds {
        rt.block_on(ours.round(s.round(), true))?;
        raw_total.add(raw(s.round())?);
        append_total.add(append(s.round())?);
    }
    drop(append_file);
    let _ = std::fs::remove_file(&append_path);
    let (cas, watch) = (ours.writes(), ours.watched());
    if started {
        drop(ours);
    } else {
        rt.block_on(ours.clear())?;
    }
    drop(store); // the last handle: stops the store's thread
    drop(scratch);
    if started {
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    let (baseline_writes, append_writes) = (raw_total.writes(), append_total.writes());
    let ratios = ratios(&cas, &watch, &baseline_writes, &baseline_writes.latency_us);
    let context = Comparison::new("append + fdatasync, growing file", append_writes, &cas);
    Ok(BackendReport {
        backend: "local".into(),
        store: format!("local://{}", std::path::absolute(&store_dir)?.display()),
        started,
        baseline: format!("raw {} KiB O_DIRECT write + fdatasync", BASELINE_WRITE_BYTES >> 10),
        cas_pass: cas.latency_us.p99 < LOCAL_P99_TARGET_US,
        watch_pass: watch.latency_us.p99 < LOCAL_P99_TARGET_US,
        cas,
        watch,
        baseline_writes,
        baseline_watch: None,
        context,
        ratios,
        target_p99_us: LOCAL_P99_TARGET_US,
    })
}

/// The rounds of a synchronous write loop, summed.
struct Tally(Histogram<u64>, u64, Duration);

impl Tally {
    fn new() -> Tally {
        Tally(histogram(), 0, Duration::ZERO)
    }

    fn add(&mut self, w: WriteLoop) {
        self.0.add(&w.histogram).ok();
        self.1 += w.writes;
        self.2 += w.elapsed;
    }

    fn writes(&self) -> Writes {
        Writes { ops: self.1, ops_per_s: self.1 as f64 / self.2.as_secs_f64(), latency_us: latency(&self.0) }
    }
}

/// Appends `record` to `file` then fdatasyncs, one at a time, for `duration`. The file is only
/// ever appended to, across rounds, as the store's log grows between rewrites.
fn append_flush_loop(mut file: &std::fs::File, record: &[u8], duration: Duration) -> Result<WriteLoop> {
    use std::io::Write;
    let (mut h, mut writes, started) = (histogram(), 0u64, now());
    while now() - started < duration {
        let t = now();
        file.write_all(record).and_then(|()| file.sync_data()).context("append + fdatasync")?;
        h.record((now() - t).as_nanos() as u64).ok();
        writes += 1;
    }
    Ok(WriteLoop { write_bytes: record.len(), writes, elapsed: now() - started, histogram: h })
}

// ---- etcd: EtcdStore against plain etcd-client puts. ----

#[cfg(not(feature = "etcd"))]
fn bench_etcd(_: &Runtime, _: &Settings, _: Option<&Path>, _: Option<&str>) -> Result<BackendReport> {
    bail!("built without the `etcd` feature")
}

#[cfg(feature = "etcd")]
fn bench_etcd(rt: &Runtime, s: &Settings, dir: Option<&Path>, uri: Option<&str>) -> Result<BackendReport> {
    use crate::bench::metadata_workload::{PlainEtcd, run_prefix};
    use dlog_metadata::EtcdStore;
    use dlog_metadata::etcd_server::EtcdServer;
    use dlog_metadata::etcd_store::EtcdUri;

    // A started etcd keeps its data on the disk under test, in a directory of its own under
    // `--dir`, removed afterwards (declared before the server: dropped after it is killed).
    let (_temp, etcd_dir) = match uri {
        Some(_) => (None, None),
        None => {
            let (temp, root) = work_dir(dir)?;
            let etcd_dir = tempfile::Builder::new().prefix("etcd-").tempdir_in(&root)?;
            (temp, Some(etcd_dir))
        }
    };
    let server = match &etcd_dir {
        None => None,
        Some(d) => Some(EtcdServer::start_in(d.path()).map_err(|e| anyhow::anyhow!("start etcd: {e}"))?),
    };
    let uri = server.as_ref().map_or_else(|| uri.unwrap_or_default().to_string(), |e| e.uri("dlog-bench"));
    let parsed = EtcdUri::parse(&uri)?;
    let started = server.is_some();
    if let Some(server) = &server {
        eprintln!("  started etcd at {} (data in {})", server.endpoint(), server.data_dir().display());
    }
    let (cas, watch, baseline_writes, baseline_watch, txn_writes) = rt.block_on(async {
        let store = EtcdStore::connect(&uri).await?;
        // The same connection settings as the store (TLS and user from the URI).
        let client =
            dlog_metadata::etcd_store::connect_client(&parsed).await.context("etcd-client connect")?;
        let base = now();
        let ours = SegmentTarget::new(Arc::new(store));
        let plain = |side: &str, txn: bool| {
            let prefix = format!("/{}/{}", parsed.scope, run_prefix(side));
            PlainEtcd { client: client.clone(), prefix, txn, sizes: s.segment_value_sizes.clone() }
        };
        let mut ours = Load::start(ours, s, base).await?;
        let mut put = Load::start(plain("plain", false), s, base).await?;
        let mut txn = Load::start(plain("ptxn", true), s, base).await?;
        for (duration, measured) in
            std::iter::once((s.warmup(), false)).chain(vec![(s.round(), true); s.rounds as usize])
        {
            if !duration.is_zero() {
                ours.round(duration, measured).await?;
                put.round(duration, measured).await?;
                txn.round(duration, measured).await?;
            }
        }
        let figures = (ours.writes(), ours.watched(), put.writes(), put.watched(), txn.writes());
        ours.clear().await?;
        put.clear().await?;
        txn.clear().await?;
        anyhow::Ok(figures)
    })?;
    drop(server);
    drop(etcd_dir);
    let ratios = ratios(&cas, &watch, &baseline_writes, &baseline_watch.latency_us);
    let context = Comparison::new("raw etcd-client CAS txn", txn_writes, &cas);
    Ok(BackendReport {
        backend: "etcd".into(),
        store: uri,
        started,
        baseline: "plain etcd-client put, no txn".into(),
        cas_pass: cas.latency_us.p99 < ETCD_P99_TARGET_US,
        watch_pass: watch.latency_us.p99 < ETCD_P99_TARGET_US,
        cas,
        watch,
        baseline_writes,
        baseline_watch: Some(baseline_watch),
        context,
        ratios,
        target_p99_us: ETCD_P99_TARGET_US,
    })
}

// ---- Output. ----

/// Prints the results as one table: a row per measurement, then each backend's ratios and targets.
fn print_table(report: &Report) {
    let s = &report.settings;
    crate::out!(
        "== dlog bench metadata: {} segments, {} in flight, {:.1} s per side in {} rounds ==",
        s.keys,
        s.inflight,
        s.duration_s,
        s.rounds
    );
    crate::out!(
        "  segment metadata: {} B encoded on average (cycle of {:?} B: 1..{} ensembles); baselines write as \
         much",
        s.segment_value_bytes,
        s.segment_value_sizes,
        s.segment_value_sizes.len()
    );
    crate::out!(
        "  {:<6} {:<52} {:>8} {:>9} {:>9} {:>9}",
        "store",
        "measure",
        "ops/s",
        "p50 us",
        "p99 us",
        "p99.9 us"
    );
    for r in &report.backends {
        let row = |what: &str, ops_per_s: Option<f64>, l: &Latency| {
            let ops = ops_per_s.map_or("-".to_string(), |x| format!("{x:.0}"));
            crate::out!(
                "  {:<6} {what:<52} {ops:>8} {:>9.1} {:>9.1} {:>9.1}",
                r.backend,
                l.p50,
                l.p99,
                l.p999
            );
        };
        row("cas update (SegmentMetadataStore::update, durable)", Some(r.cas.ops_per_s), &r.cas.latency_us);
        row("watch (just before the update -> decoded event)", None, &r.watch.latency_us);
        let baseline = format!("baseline: {}", r.baseline);
        row(&baseline, Some(r.baseline_writes.ops_per_s), &r.baseline_writes.latency_us);
        if let Some(w) = &r.baseline_watch {
            row("baseline: plain etcd-client watch", None, &w.latency_us);
        }
        let c = &r.context;
        row(&format!("context: {}", c.what), Some(c.writes.ops_per_s), &c.writes.latency_us);
        let (x, b) = (&r.ratios, r.backend.as_str());
        crate::out!(
            "  {b:<6} ours/baseline: cas p50 {:.2}x p99 {:.2}x ops/s {:.2}x | watch p50 {:.2}x p99 {:.2}x | \
             cas/context p50 {:.2}x p99 {:.2}x",
            x.cas_p50,
            x.cas_p99,
            x.ops_per_s,
            x.watch_p50,
            x.watch_p99,
            c.cas_p50,
            c.cas_p99
        );
        let [cas, watch] = [r.cas_pass, r.watch_pass].map(|p| if p { "PASS" } else { "MISS" });
        crate::out!("  {b:<6} p99 target < {:.0} us: cas {cas}, watch {watch}", r.target_p99_us);
    }
}
