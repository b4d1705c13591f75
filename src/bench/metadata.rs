//! `dlog bench metadata`: the metadata store's two figures, each against a baseline measured in
//! the same run, in alternating rounds (so both see the same disk and CPU weather).
//!
//! - CAS update of a segment's metadata: `--keys` keys ("segments") with `--value-size` byte
//!   values shaped like a segment's metadata (JSON). `--inflight` clients, each owning every
//!   `inflight`-th key, update their keys in turn with `put_if(key, value, version)`, keeping
//!   the version each update returned (no `get` before a write). Latency is one `put_if` call,
//!   answered once durable (the embedded store's fdatasync, etcd's raft commit); throughput is
//!   updates per second over all clients.
//! - Watch latency: one watcher on the keys' prefix, running during the CAS rounds. Each value
//!   carries the monotonic time taken just before its write was called; the watcher records its
//!   arrival time minus that (same process, same clock). A marker key written before and after
//!   each round delimits the round's events, and every update must be seen exactly once.
//!
//! Baselines: the embedded store (`local`) against the disk's raw 4 KiB O_DIRECT write +
//! fdatasync, one at a time, in the same directory (`baseline::write_flush_loop`); etcd against
//! a plain etcd-client put (no txn, no compare) of the same values from the same number of
//! clients, seen through a plain etcd-client watch. Ratios are ours / baseline: for latency
//! lower is better, for throughput higher. For the embedded store the watch ratio is also taken
//! against the raw write + fdatasync: an event cannot be seen before it is durable.
//!
//! A second comparison per backend says how much of the gap is dlog's own: for the embedded
//! store, buffered appends of a log record's size to a growing file + fdatasync (the disk
//! pattern of its log); for etcd, the very txn `EtcdStore::put_if` sends, sent by hand.
//!
//! The etcd backend needs the `etcd` feature. Without `--metadata etcd://...` it runs a
//! throwaway single-member etcd (`EtcdServer`: free 127.0.0.1 ports, data in a temporary
//! directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use dlog_metadata::{LocalStore, MetadataStore, Version, Watch};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::bench::baseline::{ScratchFile, WriteLoop, write_flush_loop};
use crate::bench::stats::{Latency, histogram, latency};

/// p99 targets of the issue, us: both figures, per backend.
pub const LOCAL_P99_TARGET_US: f64 = 1_000.0;
/// p99 target on a local etcd, us.
pub const ETCD_P99_TARGET_US: f64 = 5_000.0;
/// Longest a marker may take to come back through the watch before the run fails.
const MARK_TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the scratch file the raw write + fdatasync baseline overwrites (it wraps around).
const SCRATCH_BYTES: u64 = 64 << 20;
/// Bytes the raw baseline writes per fdatasync.
const BASELINE_WRITE_BYTES: usize = 4096;
/// Bytes the append context writes per fdatasync beyond the value (about a log record's
/// framing and key).
const APPEND_OVERHEAD_BYTES: usize = 64;
/// The marker key's name under the prefix.
const MARKER: &str = "marker";
/// Where each value carries its write's start time: `{"t":` then 20 decimal digits.
const STAMP: std::ops::Range<usize> = 5..25;
/// Smallest `--value-size` (the stamp plus a little of the segment record).
pub const VALUE_SIZE_MIN: usize = 64;
/// Largest `--value-size` (the contract's value limit).
pub const VALUE_SIZE_MAX: usize = 1 << 20;

/// `dlog bench metadata` flags.
#[derive(clap::Args, Debug)]
pub struct MetadataArgs {
    /// Stores to measure: local (the embedded store), etcd, or both (default: both when built
    /// with the `etcd` feature, else local).
    #[arg(long, value_parser = ["local", "etcd", "both"])]
    backend: Option<String>,
    /// An existing store to measure instead of a fresh one: etcd://host:port[,...]/scope or
    /// local://<directory> (`local:///abs` or `local://rel`). Its benchmark keys (under bench/)
    /// are deleted afterwards.
    #[arg(long, value_name = "URI")]
    metadata: Option<String>,
    /// Directory of the embedded store and of the raw baseline's scratch file (on the disk under
    /// test; both removed afterwards). Default: a fresh directory under the current one (a tmpfs
    /// /tmp would make every fdatasync free and refuse O_DIRECT).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Measured time per side (ours, baseline), split over the rounds, e.g. "10s", "500ms".
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured load per side before the rounds ("0s": none).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Clients with one update in flight each.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys ("segments") updated; each client owns keys/inflight of them.
    #[arg(long, default_value_t = 64)]
    keys: usize,
    /// Rounds of (ours, baseline); more rounds average out a noisy machine.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A duration such as "10s", "500ms" or "1m"; zero is allowed (checked by the caller).
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
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("duration {s:?} must be within [0, 1h]"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The load every backend gets.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Keys updated.
    pub keys: usize,
    /// Clients, one update in flight each.
    pub inflight: usize,
    /// Bytes per value.
    pub value_size: usize,
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
fn now() -> Instant {
    Instant::now()
}

/// Runs `dlog bench metadata`.
pub fn main(args: MetadataArgs) -> Result<()> {
    ensure!(args.inflight >= 1 && args.rounds >= 1, "--inflight and --rounds must be at least 1");
    ensure!(args.keys >= args.inflight, "--keys must be at least --inflight (each client owns keys)");
    ensure!(!args.duration.is_zero(), "--duration must be more than 0");
    ensure!(
        (VALUE_SIZE_MIN..=VALUE_SIZE_MAX).contains(&args.value_size),
        "--value-size must be within {VALUE_SIZE_MIN}..={VALUE_SIZE_MAX}"
    );
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
    let settings = Settings {
        keys: args.keys,
        inflight: args.inflight,
        value_size: args.value_size,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        rounds: args.rounds,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let mut reports = Vec::new();
    for backend in &backends {
        eprintln!(
            "running metadata/{backend} ({} keys, {} B values, {} in flight, {:?} per side) ...",
            settings.keys, settings.value_size, settings.inflight, args.duration
        );
        let uri = given.filter(|(scheme, _)| scheme == backend).map(|(_, uri)| uri);
        let report = match *backend {
            "local" => bench_local(&runtime, &settings, args.dir.as_deref(), uri),
            _ => bench_etcd(&runtime, &settings, uri),
        }
        .with_context(|| format!("metadata/{backend}"))?;
        reports.push(report);
    }
    let report = Report { settings, backends: reports };
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
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

// ---- Load: clients doing CAS (or plain) updates, and one watcher. ----

/// A key under load and what its owner knows of it.
#[derive(Debug)]
struct Key {
    /// The key, as the target spells it.
    name: String,
    /// The segment its value describes.
    segment: u64,
    /// The version the last write returned (`Version(0)`: not written yet).
    version: Version,
}

/// Something the load writes to and watches: a `MetadataStore`, or plain etcd for the baseline.
trait Target: Send + Sync + 'static {
    /// Writes `value` at `key`: a CAS on the key's last version (a plain put for a first write
    /// or a baseline), recording the new version.
    fn write(&self, key: &mut Key, value: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// The name of key `name` under the load's prefix.
    fn key(&self, name: &str) -> String;
    /// Starts a task feeding every event under the prefix to `recorder`.
    fn watch(&self, recorder: Recorder) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the load's keys (when measuring a store that outlives the run).
    fn clear(&self, keys: Vec<String>) -> impl Future<Output = Result<()>> + Send;
}

/// A `MetadataStore` under load: the CAS updates measured.
struct StoreTarget<S> {
    store: Arc<S>,
    prefix: String,
}

impl<S: MetadataStore + 'static> Target for StoreTarget<S> {
    async fn write(&self, key: &mut Key, value: Bytes) -> Result<()> {
        key.version = match key.version {
            // The key may be left from an earlier run on the same store: take whatever is there.
            Version(0) => self.store.put(&key.name, value).await?,
            version => self.store.put_if(&key.name, value, version).await?,
        };
        Ok(())
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn watch(&self, mut recorder: Recorder) -> Result<()> {
        let mut watch: Watch = self.store.watch(&self.prefix, Version(0)).await?;
        tokio::spawn(async move {
            // Ends when the store closes or the benchmark stops listening.
            while let Ok(event) = watch.next().await {
                if !recorder.arrived(event.key.as_bytes(), &event.value, now()) {
                    return;
                }
            }
        });
        Ok(())
    }

    async fn clear(&self, keys: Vec<String>) -> Result<()> {
        for key in keys {
            self.store.delete(&key).await?;
        }
        Ok(())
    }
}

/// Turns the watcher's arrivals into latencies; hands its histogram over at each marker.
struct Recorder {
    base: Instant,
    histogram: Histogram<u64>,
    events: u64,
    marks: UnboundedSender<Mark>,
}

/// A marker seen by the watcher, with what it recorded since the previous one.
struct Mark {
    id: u64,
    histogram: Histogram<u64>,
    events: u64,
}

impl Recorder {
    /// Takes one event that arrived at `at`. False: the benchmark stopped listening.
    fn arrived(&mut self, key: &[u8], value: &[u8], at: Instant) -> bool {
        if key.ends_with(MARKER.as_bytes()) {
            let id = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            let histogram = std::mem::replace(&mut self.histogram, histogram());
            let events = std::mem::take(&mut self.events);
            return self.marks.send(Mark { id, histogram, events }).is_ok();
        }
        // A value without a stamp was not written by this load: not counted, so the round's
        // check (one event per update) fails and says so.
        let Some(sent) =
            value.get(STAMP).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse::<u64>().ok())
        else {
            return true;
        };
        let elapsed = at.saturating_duration_since(self.base).as_nanos() as u64;
        self.histogram.record(elapsed.saturating_sub(sent).max(1)).ok();
        self.events += 1;
        true
    }
}

/// A value like a segment's metadata, `size` bytes, carrying `stamp` (ns since the load's base)
/// at `STAMP`.
fn segment_value(segment: u64, update: u64, stamp: u64, size: usize) -> Bytes {
    let mut v = format!(
        "{{\"t\":{stamp:020},\"segment\":{segment},\"log\":\"bench/log-{log}\",\"state\":\"open\",\
         \"ensemble\":[\"10.0.0.1:3181\",\"10.0.0.2:3181\",\"10.0.0.3:3181\"],\"write_quorum\":3,\
         \"ack_quorum\":2,\"first_entry\":0,\"last_entry\":{update},\"pad\":\"",
        log = segment / 4,
    );
    debug_assert_eq!(&v[..STAMP.start], "{\"t\":");
    if v.len() + 2 <= size {
        v.extend(std::iter::repeat_n('x', size - v.len() - 2));
        v.push_str("\"}");
    }
    v.truncate(size);
    Bytes::from(v)
}

/// One side (ours or a baseline) of a backend: its clients' keys, its watcher, its totals.
struct Load<T> {
    target: Arc<T>,
    base: Instant,
    value_size: usize,
    /// Each client's keys.
    clients: Vec<Vec<Key>>,
    marker: String,
    marks: UnboundedReceiver<Mark>,
    next_mark: u64,
    writes: Histogram<u64>,
    watched: Histogram<u64>,
    ops: u64,
    events: u64,
    elapsed: Duration,
}

impl<T: Target> Load<T> {
    /// Starts the watcher, then writes every key once.
    async fn start(target: T, s: &Settings, base: Instant) -> Result<Load<T>> {
        let (tx, marks) = unbounded_channel();
        let recorder = Recorder { base, histogram: histogram(), events: 0, marks: tx };
        target.watch(recorder).await?;
        let mut clients: Vec<Vec<Key>> = (0..s.inflight).map(|_| Vec::new()).collect();
        for k in 0..s.keys {
            let name = target.key(&format!("seg-{k:010}"));
            clients[k % s.inflight].push(Key { name, segment: k as u64, version: Version(0) });
        }
        let marker = target.key(MARKER);
        let target = Arc::new(target);
        for key in clients.iter_mut().flatten() {
            let value = segment_value(key.segment, 0, 0, s.value_size);
            target.write(key, value).await?;
        }
        Ok(Load {
            target,
            base,
            value_size: s.value_size,
            clients,
            marker,
            marks,
            next_mark: 0,
            writes: histogram(),
            watched: histogram(),
            ops: 0,
            events: 0,
            elapsed: Duration::ZERO,
        })
    }

    /// Writes the next marker and waits until the watcher saw it: every earlier event has then
    /// arrived (watches deliver in revision order). Returns what it recorded since the last one.
    async fn mark(&mut self) -> Result<Mark> {
        let id = self.next_mark;
        self.next_mark += 1;
        let mut key = Key { name: self.marker.clone(), segment: 0, version: Version(0) };
        self.target.write(&mut key, Bytes::from(id.to_string())).await?;
        loop {
            match tokio::time::timeout(MARK_TIMEOUT, self.marks.recv()).await {
                Ok(Some(mark)) if mark.id == id => return Ok(mark),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the watcher ended (the store closed its watch)"),
                Err(_) => bail!("marker {id} not seen by the watcher within {MARK_TIMEOUT:?}"),
            }
        }
    }

    /// Runs the clients for `duration`; adds the round to the totals when `measured`.
    async fn round(&mut self, duration: Duration, measured: bool) -> Result<()> {
        self.mark().await?;
        let started = now();
        let deadline = started + duration;
        let mut tasks = Vec::new();
        for keys in std::mem::take(&mut self.clients) {
            let (target, base, size) = (self.target.clone(), self.base, self.value_size);
            tasks.push(tokio::spawn(client(target, keys, base, size, deadline)));
        }
        let (mut writes, mut ops) = (histogram(), 0);
        for task in tasks {
            let (keys, h, n) = task.await.context("client task")??;
            self.clients.push(keys);
            writes.add(&h).ok();
            ops += n;
        }
        let elapsed = now() - started;
        let watched = self.mark().await?;
        ensure!(
            watched.events == ops,
            "the watcher saw {} events for {ops} updates (each must be seen once)",
            watched.events
        );
        if measured {
            self.writes.add(&writes).ok();
            self.watched.add(&watched.histogram).ok();
            self.ops += ops;
            self.events += watched.events;
            self.elapsed += elapsed;
        }
        Ok(())
    }

    fn writes(&self) -> Writes {
        Writes {
            ops: self.ops,
            ops_per_s: self.ops as f64 / self.elapsed.as_secs_f64(),
            latency_us: latency(&self.writes),
        }
    }

    fn watched(&self) -> Watched {
        Watched { events: self.events, latency_us: latency(&self.watched) }
    }

    /// Deletes the load's keys.
    async fn clear(self) -> Result<()> {
        let mut keys: Vec<String> = self.clients.into_iter().flatten().map(|k| k.name).collect();
        keys.push(self.marker);
        self.target.clear(keys).await
    }
}

/// One client: updates its keys in turn until `deadline`; returns them with the latency of each
/// update and the count.
async fn client<T: Target>(
    target: Arc<T>,
    mut keys: Vec<Key>,
    base: Instant,
    value_size: usize,
    deadline: Instant,
) -> Result<(Vec<Key>, Histogram<u64>, u64)> {
    let (mut h, mut ops, count) = (histogram(), 0u64, keys.len());
    for i in 0.. {
        let t = now();
        if t >= deadline {
            break;
        }
        let key = &mut keys[i % count];
        let stamp = t.saturating_duration_since(base).as_nanos() as u64;
        let value = segment_value(key.segment, ops + 1, stamp, value_size);
        if let Err(e) = target.write(key, value).await {
            return Err(e.context(format!("update of {}", key.name)));
        }
        h.record((now() - t).as_nanos() as u64).ok();
        ops += 1;
    }
    Ok((keys, h, ops))
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

/// The prefix of this run's keys (a store given with `--metadata` may be shared).
fn run_prefix(side: &str) -> String {
    format!("bench/{side}-{}/", std::process::id())
}

fn bench_local(rt: &Runtime, s: &Settings, dir: Option<&Path>, uri: Option<&str>) -> Result<BackendReport> {
    // Where the store lives and who removes what afterwards.
    let (_temp, store_dir, scratch_dir, started) = match (uri, dir) {
        (Some(uri), _) => {
            let path = uri.strip_prefix("local://").filter(|p| !p.is_empty());
            let path = PathBuf::from(path.with_context(|| format!("{uri:?}: expected local://<directory>"))?);
            (None, path.clone(), path, false)
        }
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let store_dir = dir.join("metadata-store");
            let _ = std::fs::remove_dir_all(&store_dir);
            (None, store_dir, dir.to_path_buf(), true)
        }
        (None, None) => {
            let temp = tempfile::Builder::new().prefix(".dlog-bench-metadata-").tempdir_in(".")?;
            let path = temp.path().to_path_buf();
            (Some(temp), path.join("metadata-store"), path, true)
        }
    };
    let scratch_path = scratch_dir.join("metadata-baseline.scratch");
    let scratch = ScratchFile::create(&scratch_path, SCRATCH_BYTES)
        .with_context(|| format!("baseline scratch file in {} (needs O_DIRECT)", scratch_dir.display()))?;
    let store =
        Arc::new(LocalStore::open(&store_dir).with_context(|| format!("open {}", store_dir.display()))?);
    let target = StoreTarget { store: store.clone(), prefix: run_prefix("store") };
    let base = now();
    let mut ours = rt.block_on(Load::start(target, s, base))?;
    let raw =
        |d: Duration| write_flush_loop(&scratch, BASELINE_WRITE_BYTES, d).context("raw write + fdatasync");
    let append_path = scratch_dir.join("metadata-append.scratch");
    // Created durable in its directory, as the store creates its log.
    let append_file = std::fs::File::create(&append_path).and_then(|f| f.sync_all().map(|()| f))?;
    std::fs::File::open(&scratch_dir)?.sync_all()?;
    let record = vec![0x5A; s.value_size + APPEND_OVERHEAD_BYTES];
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
fn bench_etcd(_: &Runtime, _: &Settings, _: Option<&str>) -> Result<BackendReport> {
    bail!("built without the `etcd` feature")
}

#[cfg(feature = "etcd")]
fn bench_etcd(rt: &Runtime, s: &Settings, uri: Option<&str>) -> Result<BackendReport> {
    use dlog_metadata::EtcdStore;
    use dlog_metadata::etcd_server::EtcdServer;
    use dlog_metadata::etcd_store::EtcdUri;

    let server = match uri {
        Some(_) => None,
        None => Some(EtcdServer::start().map_err(|e| anyhow::anyhow!("start etcd: {e}"))?),
    };
    let uri = server.as_ref().map_or_else(|| uri.unwrap_or_default().to_string(), |e| e.uri("dlog-bench"));
    let parsed = EtcdUri::parse(&uri)?;
    let started = server.is_some();
    if let Some(server) = &server {
        eprintln!("  started etcd at {} (data in {})", server.endpoint(), server.data_dir().display());
    }
    let (cas, watch, baseline_writes, baseline_watch, txn_writes) = rt.block_on(async {
        let store = EtcdStore::connect(&uri).await?;
        let client =
            etcd_client::Client::connect(&parsed.endpoints, None).await.context("etcd-client connect")?;
        let base = now();
        let ours = StoreTarget { store: Arc::new(store), prefix: run_prefix("store") };
        let plain = |side: &str, txn: bool| {
            let prefix = format!("/{}/{}", parsed.scope, run_prefix(side));
            PlainEtcd { client: client.clone(), prefix, txn }
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

/// The etcd baseline: plain puts and a plain prefix watch through etcd-client, with no dlog
/// code in the way. Keys are etcd keys (`/<scope>/bench/plain-<pid>/...`). With `txn`, the
/// context instead: each update is the txn `EtcdStore::put_if` sends, built here by hand.
#[cfg(feature = "etcd")]
struct PlainEtcd {
    client: etcd_client::Client,
    prefix: String,
    txn: bool,
}

#[cfg(feature = "etcd")]
impl Target for PlainEtcd {
    async fn write(&self, key: &mut Key, value: Bytes) -> Result<()> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let name = key.name.as_str();
        let header = if self.txn && key.version != Version(0) {
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(name, CompareOp::Equal, key.version.0 as i64)])
                .and_then(vec![TxnOp::put(name, value.to_vec(), None)])
                .or_else(vec![TxnOp::get(name, None)]);
            let r = self.client.kv_client().txn(txn).await?;
            ensure!(r.succeeded(), "compare of {name} at {:?} failed", key.version);
            r.header().cloned()
        } else {
            self.client.kv_client().put(name, value.to_vec(), None).await?.header().cloned()
        };
        // A write's revision is the key's new mod_revision.
        key.version = Version(header.map_or(0, |h| h.revision()) as u64);
        Ok(())
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn watch(&self, mut recorder: Recorder) -> Result<()> {
        let options = etcd_client::WatchOptions::new().with_prefix();
        let mut stream = self.client.watch_client().watch(self.prefix.as_str(), Some(options)).await?;
        tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let at = now();
                for kv in response.events().iter().filter_map(|e| e.kv()) {
                    if !recorder.arrived(kv.key(), kv.value(), at) {
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    async fn clear(&self, _keys: Vec<String>) -> Result<()> {
        let options = etcd_client::DeleteOptions::new().with_prefix();
        self.client.kv_client().delete(self.prefix.as_str(), Some(options)).await?;
        Ok(())
    }
}

// ---- Output. ----

/// Prints the results as one table: a row per measurement, then each backend's ratios and targets.
fn print_table(report: &Report) {
    let s = &report.settings;
    println!(
        "== dlog bench metadata: {} keys, {} B values, {} in flight, {:.1} s per side in {} rounds ==",
        s.keys, s.value_size, s.inflight, s.duration_s, s.rounds
    );
    println!(
        "  {:<6} {:<46} {:>8} {:>9} {:>9} {:>9}",
        "store", "measure", "ops/s", "p50 us", "p99 us", "p99.9 us"
    );
    for r in &report.backends {
        let row = |what: &str, ops_per_s: Option<f64>, l: &Latency| {
            let ops = ops_per_s.map_or("-".to_string(), |x| format!("{x:.0}"));
            println!("  {:<6} {what:<46} {ops:>8} {:>9.1} {:>9.1} {:>9.1}", r.backend, l.p50, l.p99, l.p999);
        };
        row("cas update (put_if, answered when durable)", Some(r.cas.ops_per_s), &r.cas.latency_us);
        row("watch (just before the put -> event)", None, &r.watch.latency_us);
        let baseline = format!("baseline: {}", r.baseline);
        row(&baseline, Some(r.baseline_writes.ops_per_s), &r.baseline_writes.latency_us);
        if let Some(w) = &r.baseline_watch {
            row("baseline: plain etcd-client watch", None, &w.latency_us);
        }
        let c = &r.context;
        row(&format!("context: {}", c.what), Some(c.writes.ops_per_s), &c.writes.latency_us);
        let (x, b) = (&r.ratios, r.backend.as_str());
        println!(
            "  {b:<6} ours/baseline: cas p50 {:.2}x p99 {:.2}x ops/s {:.2}x | watch p50 {:.2}x p99 {:.2}x | \
             cas/context p50 {:.2}x p99 {:.2}x",
            x.cas_p50, x.cas_p99, x.ops_per_s, x.watch_p50, x.watch_p99, c.cas_p50, c.cas_p99
        );
        let [cas, watch] = [r.cas_pass, r.watch_pass].map(|p| if p { "PASS" } else { "MISS" });
        println!("  {b:<6} p99 target < {:.0} us: cas {cas}, watch {watch}", r.target_p99_us);
    }
}
