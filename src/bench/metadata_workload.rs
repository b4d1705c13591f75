//! The load of `dlog bench metadata` (metadata.rs says what is measured against what): clients
//! updating keys with one update in flight each, one watcher on the keys, and the markers that
//! delimit each round's events.
//!
//! Ours (`SegmentTarget`): `--keys` real segments created with `SegmentMetadataStore::create`,
//! each as a writer creates one: E=3, Qw=3, Qa=2, CRC32C, a 32-byte master key, Open, one
//! ensemble of three bookies (`bookie-<n>:3181`, a pool of nine), owned by log
//! `bench-<pid>/log-<n>` at seq 1..=4. Each update is `SegmentMetadataStore::update(id, &meta,
//! version)` on the version the previous update returned (no read before a write); the store
//! encodes and validates every value. The change is a writer's ensemble change: a new ensemble
//! from entry `ENSEMBLE_STEP` past the last one on, with one bookie (a rotating position)
//! replaced by the next pool bookie not in the ensemble. A segment holds at most `ENSEMBLES_MAX`
//! ensembles: the update after it has that many starts over from one ensemble (the current one)
//! at entry 0, as if the segment had rolled over to a fresh one under the same id. So a value
//! never grows: it cycles through `ENSEMBLES_MAX` sizes (`segment_value_sizes`), identical for
//! every segment of a run (bookie ids, log names and entry ids have fixed widths).
//!
//! The watch latency stamp travels inside the real value: the benchmark abuses `created_ms` to
//! carry `STAMP_OFFSET` + the monotonic ns since the load's base taken just before the update
//! was called (the offset gives the field the 6-byte varint a real ms timestamp has, for a
//! run's first 55 minutes). The watcher, one `MetadataStore::watch` on `segments/` (the typed
//! accessor only watches one segment), decodes every event with `SegmentMetadata::decode` and
//! reads the stamp back; events of segments another namespace owns (a store shared through
//! `--metadata`) are not counted. The round marker is a segment of this run too (log
//! `MARKER`), its `created_ms` the marker's number.
//!
//! Baselines (`PlainEtcd`, etcd only): raw values, the stamp at `STAMP` (`{"t":` then 20
//! decimal digits) then padding, whose length follows the segment values' cycle (update `n` of
//! a key writes `segment_value_sizes()[n % ENSEMBLES_MAX]` bytes, as ours does): the same bytes
//! per update, with no encode, decode or validation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use dlog_metadata::schema::{self, DigestType, SegmentMetadata, SegmentOwner, SegmentState};
use dlog_metadata::{MetadataStore, SegmentMetadataStore, Version, Watch};
use hdrhistogram::Histogram;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::bench::metadata::{Settings, Watched, Writes, now};
use crate::bench::stats::{histogram, latency};

/// Longest a marker may take to come back through the watch before the run fails.
const MARK_TIMEOUT: Duration = Duration::from_secs(30);
/// The marker: the log of the marker segment; the last part of the baselines' marker key.
const MARKER: &str = "marker";
/// Where a baseline value carries its write's start time: `{"t":` then 20 decimal digits.
#[cfg(feature = "etcd")]
const STAMP: std::ops::Range<usize> = 5..25;
/// Most ensembles a segment holds before its ensemble changes start over (see the module doc).
pub(crate) const ENSEMBLES_MAX: usize = 4;
/// Entries between two ensemble changes.
const ENSEMBLE_STEP: u64 = 100_000;
/// Bookies in the pool ensembles are drawn from (ids of one length: `bookie-1:3181`..`-9`).
const BOOKIES: usize = 9;
/// Added to the ns stamp in `created_ms` (2^40 ms is in 2004): see the module doc.
const STAMP_OFFSET: u64 = 1 << 40;

/// The namespace that owns this run's segments (fixed width, so the values' sizes are too).
pub(crate) fn run_namespace() -> String {
    format!("bench-{:010}", std::process::id())
}

/// The prefix of this run's raw keys (a store given with `--metadata` may be shared).
#[cfg(feature = "etcd")]
pub(crate) fn run_prefix(side: &str) -> String {
    format!("bench/{side}-{}/", std::process::id())
}

fn bookie(i: usize) -> String {
    format!("bookie-{}:3181", i % BOOKIES + 1)
}

/// Segment `index`'s metadata as created (see the module doc).
pub(crate) fn new_segment(namespace: &str, index: usize) -> SegmentMetadata {
    let master_key: Vec<u8> = (0..32).map(|i| (index.wrapping_mul(131) + i * 37) as u8).collect();
    SegmentMetadata {
        ensemble_size: 3,
        write_quorum_size: 3,
        ack_quorum_size: 2,
        digest_type: DigestType::Crc32c,
        master_key: Bytes::from(master_key),
        state: SegmentState::Open,
        ensembles: BTreeMap::from([(0, (0..3).map(|i| bookie(index + i)).collect())]),
        created_ms: STAMP_OFFSET,
        owner: Some(SegmentOwner {
            namespace: namespace.into(),
            log: format!("log-{:06}", index / 4),
            seq: index as u64 % 4 + 1,
        }),
    }
}

/// The change of update `turn` (1, 2, ...): an ensemble change, or a restart from the current
/// ensemble at entry 0 once the segment holds `ENSEMBLES_MAX` of them (see the module doc).
pub(crate) fn change_ensemble(meta: &mut SegmentMetadata, turn: u64) {
    let Some((&first, current)) = meta.ensembles.last_key_value() else { return };
    let mut next = current.clone();
    if meta.ensembles.len() >= ENSEMBLES_MAX {
        meta.ensembles = BTreeMap::from([(0, next)]);
        return;
    }
    let at = turn as usize % next.len();
    if let Some(fresh) = (0..BOOKIES).map(|j| bookie(turn as usize + j)).find(|b| !next.contains(b)) {
        next[at] = fresh;
    }
    meta.ensembles.insert(first + ENSEMBLE_STEP, next);
}

/// The encoded sizes of a segment's value through one cycle of changes: entry `n` is the size
/// after update `n` (mod `ENSEMBLES_MAX`), entry 0 also the size as created.
pub(crate) fn segment_value_sizes(namespace: &str) -> Result<Vec<usize>> {
    let mut meta = new_segment(namespace, 0);
    let mut sizes = Vec::new();
    for turn in 1..=ENSEMBLES_MAX as u64 {
        sizes.push(meta.encode()?.len());
        change_ensemble(&mut meta, turn);
    }
    Ok(sizes)
}

/// A baseline value of `size` bytes carrying `stamp` (ns since the load's base) at `STAMP`.
#[cfg(feature = "etcd")]
fn raw_value(stamp: u64, size: usize) -> Bytes {
    let mut v = format!("{{\"t\":{stamp:020},\"pad\":\"");
    debug_assert_eq!(&v[..STAMP.start], "{\"t\":");
    if v.len() + 2 <= size {
        v.extend(std::iter::repeat_n('x', size - v.len() - 2));
        v.push_str("\"}");
    }
    v.truncate(size);
    Bytes::from(v)
}

/// A key under load and what its owner knows of it.
#[derive(Debug)]
pub(crate) struct Key {
    /// The key, as the target spells it (ours: `segments/<id>`).
    name: String,
    /// Ours: the segment's id.
    id: u64,
    /// The version the last write returned.
    version: Version,
    /// Updates made to it so far (its place in the cycle of changes).
    updates: u64,
    /// Ours: the segment's metadata as last written.
    meta: Option<SegmentMetadata>,
}

/// Something the load writes to and watches: segments in a `MetadataStore`, or plain etcd.
pub(crate) trait Target: Send + Sync + 'static {
    /// Creates key `index` of the load (`None`: the marker) and writes its first value.
    fn create(&self, index: Option<usize>) -> impl Future<Output = Result<Key>> + Send;
    /// Updates `key` (a CAS on its last version, or a baseline's put), carrying `stamp`.
    fn update(&self, key: &mut Key, stamp: u64) -> impl Future<Output = Result<()>> + Send;
    /// Writes marker number `id` to the marker key.
    fn mark(&self, marker: &mut Key, id: u64) -> impl Future<Output = Result<()>> + Send;
    /// Starts a task feeding every event of the load's keys to `recorder`.
    fn watch(&self, recorder: Recorder) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the load's keys (when measuring a store that outlives the run).
    fn clear(&self, keys: Vec<Key>) -> impl Future<Output = Result<()>> + Send;
}

/// Ours: real segments updated through `SegmentMetadataStore` (see the module doc).
pub(crate) struct SegmentTarget<S> {
    store: Arc<S>,
    segments: SegmentMetadataStore<S>,
    namespace: String,
}

impl<S: MetadataStore + 'static> SegmentTarget<S> {
    /// Segments of this run in `store`.
    pub(crate) fn new(store: Arc<S>) -> SegmentTarget<S> {
        SegmentTarget {
            segments: SegmentMetadataStore::new(store.clone()),
            store,
            namespace: run_namespace(),
        }
    }

    async fn write(&self, key: &mut Key) -> Result<()> {
        let meta = key.meta.as_ref().context("not a segment")?;
        key.version =
            self.segments.update(key.id, meta, key.version).await.with_context(|| key.name.clone())?;
        Ok(())
    }
}

impl<S: MetadataStore + 'static> Target for SegmentTarget<S> {
    async fn create(&self, index: Option<usize>) -> Result<Key> {
        let mut meta = new_segment(&self.namespace, index.unwrap_or(0));
        if index.is_none() {
            let owner = meta.owner.as_mut().expect("new segments have an owner");
            (owner.log, owner.seq, meta.created_ms) = (MARKER.into(), 1, u64::MAX);
        }
        let (id, version) = self.segments.create(&meta).await?;
        Ok(Key { name: schema::segment_key(id), id, version, updates: 0, meta: Some(meta) })
    }

    async fn update(&self, key: &mut Key, stamp: u64) -> Result<()> {
        key.updates += 1;
        let meta = key.meta.as_mut().context("not a segment")?;
        change_ensemble(meta, key.updates);
        meta.created_ms = STAMP_OFFSET + stamp;
        self.write(key).await
    }

    async fn mark(&self, marker: &mut Key, id: u64) -> Result<()> {
        marker.meta.as_mut().context("not a segment")?.created_ms = id;
        self.write(marker).await
    }

    async fn watch(&self, mut recorder: Recorder) -> Result<()> {
        let mut watch: Watch = self.store.watch(schema::SEGMENTS, Version(0)).await?;
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            // Ends when the store closes or the benchmark stops listening.
            while let Ok(event) = watch.next().await {
                let at = now();
                let seen = match SegmentMetadata::decode(&event.key, &event.value) {
                    // A delete (empty value) or a foreign value: not this load's update.
                    Err(_) => Seen::Other,
                    Ok(m) => match m.owner {
                        Some(o) if o.namespace == namespace && o.log == MARKER => Seen::Mark(m.created_ms),
                        Some(o) if o.namespace == namespace => {
                            Seen::Stamp(m.created_ms.wrapping_sub(STAMP_OFFSET))
                        }
                        _ => Seen::Other,
                    },
                };
                if !recorder.arrived(seen, at) {
                    return;
                }
            }
        });
        Ok(())
    }

    async fn clear(&self, keys: Vec<Key>) -> Result<()> {
        for key in keys {
            self.segments
                .delete(key.id, key.version)
                .await
                .with_context(|| format!("delete {}", key.name))?;
        }
        Ok(())
    }
}

/// What the watcher made of an event.
pub(crate) enum Seen {
    /// A marker, with its number.
    Mark(u64),
    /// An update, with its stamp (ns since the load's base).
    Stamp(u64),
    /// Not this load's: not counted (an update of ours seen so fails the round's check).
    Other,
}

/// Turns the watcher's arrivals into latencies; hands its histogram over at each marker.
pub(crate) struct Recorder {
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
    fn arrived(&mut self, seen: Seen, at: Instant) -> bool {
        match seen {
            Seen::Mark(id) => {
                let histogram = std::mem::replace(&mut self.histogram, histogram());
                let events = std::mem::take(&mut self.events);
                self.marks.send(Mark { id, histogram, events }).is_ok()
            }
            Seen::Stamp(sent) => {
                let elapsed = at.saturating_duration_since(self.base).as_nanos() as u64;
                self.histogram.record(elapsed.saturating_sub(sent).max(1)).ok();
                self.events += 1;
                true
            }
            Seen::Other => true,
        }
    }
}

/// One side (ours or a baseline) of a backend: its clients' keys, its watcher, its totals.
pub(crate) struct Load<T> {
    target: Arc<T>,
    base: Instant,
    /// Each client's keys.
    clients: Vec<Vec<Key>>,
    marker: Key,
    marks: UnboundedReceiver<Mark>,
    next_mark: u64,
    writes: Histogram<u64>,
    watched: Histogram<u64>,
    ops: u64,
    events: u64,
    elapsed: Duration,
}

impl<T: Target> Load<T> {
    /// Starts the watcher, then creates every key (client `k % inflight` owns key `k`).
    pub(crate) async fn start(target: T, s: &Settings, base: Instant) -> Result<Load<T>> {
        let (tx, marks) = unbounded_channel();
        target.watch(Recorder { base, histogram: histogram(), events: 0, marks: tx }).await?;
        let mut clients: Vec<Vec<Key>> = (0..s.inflight).map(|_| Vec::new()).collect();
        for k in 0..s.keys {
            clients[k % s.inflight].push(target.create(Some(k)).await?);
        }
        let marker = target.create(None).await?;
        Ok(Load {
            target: Arc::new(target),
            base,
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
        self.target.mark(&mut self.marker, id).await?;
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
    pub(crate) async fn round(&mut self, duration: Duration, measured: bool) -> Result<()> {
        self.mark().await?;
        let started = now();
        let deadline = started + duration;
        let mut tasks = Vec::new();
        for keys in std::mem::take(&mut self.clients) {
            tasks.push(tokio::spawn(client(self.target.clone(), keys, self.base, deadline)));
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

    /// The measured updates.
    pub(crate) fn writes(&self) -> Writes {
        Writes {
            ops: self.ops,
            ops_per_s: self.ops as f64 / self.elapsed.as_secs_f64(),
            latency_us: latency(&self.writes),
        }
    }

    /// What the watcher saw of them.
    pub(crate) fn watched(&self) -> Watched {
        Watched { events: self.events, latency_us: latency(&self.watched) }
    }

    /// Deletes the load's keys.
    pub(crate) async fn clear(self) -> Result<()> {
        let mut keys: Vec<Key> = self.clients.into_iter().flatten().collect();
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
        if let Err(e) = target.update(key, stamp).await {
            return Err(e.context(format!("update of {}", key.name)));
        }
        h.record((now() - t).as_nanos() as u64).ok();
        ops += 1;
    }
    Ok((keys, h, ops))
}

/// The etcd baseline: plain puts and a plain prefix watch through etcd-client, with no dlog
/// code in the way. Keys are etcd keys (`/<scope>/bench/plain-<pid>/...`), values raw (see the
/// module doc). With `txn`, the context instead: each update is the txn `EtcdStore::put_if`
/// sends, built here by hand.
#[cfg(feature = "etcd")]
pub(crate) struct PlainEtcd {
    /// The connection.
    pub(crate) client: etcd_client::Client,
    /// The keys' prefix.
    pub(crate) prefix: String,
    /// CAS txns instead of plain puts.
    pub(crate) txn: bool,
    /// The value sizes, in the segment values' cycle (`segment_value_sizes`).
    pub(crate) sizes: Vec<usize>,
}

#[cfg(feature = "etcd")]
impl PlainEtcd {
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
}

#[cfg(feature = "etcd")]
impl Target for PlainEtcd {
    async fn create(&self, index: Option<usize>) -> Result<Key> {
        let (name, value) = match index {
            Some(k) => (format!("{}seg-{k:010}", self.prefix), raw_value(0, self.sizes[0])),
            None => (format!("{}{MARKER}", self.prefix), Bytes::from(u64::MAX.to_string())),
        };
        let mut key = Key { name, id: 0, version: Version(0), updates: 0, meta: None };
        self.write(&mut key, value).await?;
        Ok(key)
    }

    async fn update(&self, key: &mut Key, stamp: u64) -> Result<()> {
        key.updates += 1;
        let size = self.sizes[key.updates as usize % self.sizes.len()];
        self.write(key, raw_value(stamp, size)).await
    }

    async fn mark(&self, marker: &mut Key, id: u64) -> Result<()> {
        self.write(marker, Bytes::from(id.to_string())).await
    }

    async fn watch(&self, mut recorder: Recorder) -> Result<()> {
        let options = etcd_client::WatchOptions::new().with_prefix();
        let mut stream = self.client.watch_client().watch(self.prefix.as_str(), Some(options)).await?;
        tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let at = now();
                for kv in response.events().iter().filter_map(|e| e.kv()) {
                    let parse = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
                    let seen = if kv.key().ends_with(MARKER.as_bytes()) {
                        Seen::Mark(parse(kv.value()).unwrap_or(u64::MAX))
                    } else {
                        // A value without a stamp was not written by this load.
                        kv.value().get(STAMP).and_then(parse).map_or(Seen::Other, Seen::Stamp)
                    };
                    if !recorder.arrived(seen, at) {
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    async fn clear(&self, _keys: Vec<Key>) -> Result<()> {
        let options = etcd_client::DeleteOptions::new().with_prefix();
        self.client.kv_client().delete(self.prefix.as_str(), Some(options)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every segment of a run has the same size at the same place in the cycle, every value is
    /// valid, and the cycle neither grows nor stalls.
    #[test]
    fn segment_values_cycle_through_fixed_sizes() {
        let ns = run_namespace();
        let sizes = segment_value_sizes(&ns).unwrap();
        assert_eq!(sizes.len(), ENSEMBLES_MAX);
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
        for index in [0, 1, 7, 63, 4_000] {
            let mut meta = new_segment(&ns, index);
            for turn in 1..=3 * ENSEMBLES_MAX as u64 {
                change_ensemble(&mut meta, turn);
                meta.created_ms = STAMP_OFFSET + turn * 1_000_000_007;
                let value = meta.encode().unwrap();
                assert_eq!(value.len(), sizes[turn as usize % ENSEMBLES_MAX], "segment {index} turn {turn}");
                assert_eq!(SegmentMetadata::decode("k", &value).unwrap(), meta);
            }
        }
        #[cfg(feature = "etcd")]
        assert_eq!(raw_value(42, sizes[1]).len(), sizes[1]);
    }
}
