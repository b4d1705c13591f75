//! The read workloads of `dlog bench journal --read <MODE>`, each against a baseline measured in
//! the same run:
//!
//! - `tail`: "entry written, then read from cache". One appender on shard 0's CPU adds an entry,
//!   waits until it is durable, then times `read_entry` of that entry (answered by the write
//!   cache). Baseline, for context: 4 KiB O_DIRECT preads of a scratch file, one at a time.
//! - `catch-up`: a reader catching up from entry logs. Writes `catch_up_mib` of entries over a
//!   few segments, flushes, closes and reopens the bookie (its write cache then empty), and reads
//!   every entry back with `read_range` calls of 4 MiB, two calls in flight overall, segment after
//!   segment. Baseline: sequential 4 MiB O_DIRECT reads, one at a time, of exactly the bytes the
//!   entry logs use. Raw reads and catch-ups alternate, twice each, and are averaged: whichever
//!   reads second may find the data in a cache below the guest. Timing starts once the reopened
//!   bookie has finished preparing journal files (startup writes, see `settle`).

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use dlog_engine::storage::run::{RUN_HEADER_BYTES, decode_header};
use dlog_engine::{
    AddEntry, AddFlags, Bookie, BookieConfig, EntryId, Pending, SegmentId, ShardId, StorageMode,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bench::baseline::{ScratchFile, pread_loop, read_sequential};
use crate::bench::journal::{Baseline, EngineSettings, Report, Workload, bookie_config, stats_sum};
use crate::bench::stats::{Latency, histogram, latency};

/// Bytes a catch-up `read_range` call asks for.
pub const CATCH_UP_READ_BYTES: usize = 4 << 20;
/// `read_range` calls a catch-up keeps in flight, over all segments: the reader asks for the
/// next chunk while the previous one is read and copied, as a pipelining reader of one log
/// does (segments are read one after another, as a subscriber catching up reads its log).
pub const CATCH_UP_IN_FLIGHT: usize = 2;
/// Segments per shard the catch-up writes.
const CATCH_UP_SEGMENTS_PER_SHARD: usize = 2;
/// Appends a catch-up keeps in flight while writing.
const CATCH_UP_WRITES_IN_FLIGHT: usize = 64;
/// Every this many entries a catch-up compares a whole payload (each entry's stamp is checked).
const SAMPLE_EVERY: u64 = 61;
/// How the tail reader waits for `read_entry`: blocking `wait`. Spinning on `poll_ready` from
/// the shard's own CPU keeps the shard from running until the scheduler preempts the spinner:
/// measured p50 144-159 us, p99 5.1-5.2 ms (with `yield_now` in the spin: p50 59 us, p99
/// 190-280 us), against p50 6.1 us, p99 22-46 us waiting (3 s runs, 2 vCPUs).
const TAIL_SPIN: bool = false;

/// Figures of the tail read workload.
#[derive(Debug, Default, Serialize)]
pub struct TailRead {
    /// Reads timed.
    pub reads: u64,
    /// Payload bytes per entry.
    pub entry_bytes: usize,
    /// How the reader waited: "wait" (blocking) or "spin" (`poll_ready`).
    pub wait: String,
    /// `read_entry` of the entry just acknowledged, call until its bytes are back, us.
    pub latency_us: Latency,
    /// Baseline: 4 KiB O_DIRECT pread, one at a time, us (for context: a read from the disk).
    pub baseline_pread_4k_us: Latency,
    /// Reads the write cache answered while timed.
    pub cache_reads: u64,
    /// Reads entry logs answered while timed.
    pub log_reads: u64,
}

/// Figures of the catch-up read workload.
#[derive(Debug, Default, Serialize)]
pub struct CatchUp {
    /// Segments written and read.
    pub segments: usize,
    /// Entries read per pass.
    pub entries: u64,
    /// Payload bytes read per pass.
    pub payload_bytes: u64,
    /// Entry log files and the bytes they use (read by the baseline).
    pub entry_logs: usize,
    /// Bytes the entry logs use.
    pub raw_bytes: u64,
    /// `max_bytes` of each `read_range` call.
    pub read_bytes: usize,
    /// `read_range` calls in flight (over all segments).
    pub in_flight: usize,
    /// `read_range` calls per pass.
    pub calls: u64,
    /// Payload MB/s of the catch-up, averaged over passes (total bytes / total time).
    pub mb_per_s: f64,
    /// MB/s of the raw sequential read of the used entry log bytes, averaged the same way.
    pub raw_mb_per_s: f64,
    /// mb_per_s / raw_mb_per_s.
    pub ratio: f64,
    /// Each catch-up pass, MB/s, in order (raw and catch-up alternate, raw first).
    pub passes_mb_per_s: Vec<f64>,
    /// Each raw pass, MB/s, in order.
    pub raw_passes_mb_per_s: Vec<f64>,
    /// Time to reopen the bookie before a pass (not counted in mb_per_s), ms, averaged.
    pub open_ms: f64,
    /// Entries the entry logs answered (all passes).
    pub log_reads: u64,
    /// Entries the write cache answered (all passes; 0 for a cold read).
    pub cache_reads: u64,
    /// Entries the read cache answered (all passes; 0 for a cold read: each pass reopens the
    /// bookie and reads every entry once).
    pub read_cache_hits: u64,
    /// Flushes of the write phase (runs written).
    pub flushes: u64,
}

#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
fn now() -> Instant {
    Instant::now()
}

/// Pins the calling thread to a CPU for as long as it lives.
struct Pinned(bool);

impl Pinned {
    fn to(cpu: Option<usize>) -> Result<Pinned> {
        match cpu {
            Some(cpu) => crate::bench::load::pin_to(cpu).map(|()| Pinned(true)),
            None => Ok(Pinned(false)),
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if self.0 {
            let _ = crate::bench::load::unpin();
        }
    }
}

/// The first segment id from `base` that `shard` owns.
fn segment_on(bookie: &Bookie, shard: ShardId, base: u64) -> SegmentId {
    (base..).map(SegmentId).find(|s| bookie.shard_of(*s) == shard).expect("some segment maps to every shard")
}

fn master_key() -> Bytes {
    Bytes::from_static(b"dlog-bench-master-key")
}

fn entry(segment: SegmentId, id: u64, payload: Bytes) -> AddEntry {
    AddEntry {
        segment,
        entry: EntryId(id),
        last_add_confirmed: id.checked_sub(1).map(EntryId),
        master_key: master_key(),
        payload,
        flags: AddFlags::NONE,
    }
}

/// What a write phase did, for the report's append figures.
struct Writes {
    entries: u64,
    elapsed: Duration,
    histogram: Histogram<u64>,
    batches: u64,
    batch_bytes: u64,
}

/// A report whose append figures come from a read workload's writes; no write baseline.
fn report(w: &Workload, e: &EngineSettings, bookie: (String, bool), writes: &Writes) -> Report {
    let secs = writes.elapsed.as_secs_f64();
    Report {
        workload: w.clone(),
        engine: e.clone(),
        backend: bookie.0,
        direct_io: bookie.1,
        entries_per_s: writes.entries as f64 / secs,
        mb_per_s: (writes.entries * w.entry_size as u64) as f64 / secs / 1e6,
        journal_mb_per_s: writes.batch_bytes as f64 / secs / 1e6,
        latency_us: latency(&writes.histogram),
        avg_batch_bytes: if writes.batches > 0 {
            writes.batch_bytes as f64 / writes.batches as f64
        } else {
            0.0
        },
        batches_per_s: writes.batches as f64 / secs,
        baseline: Baseline::default(),
        ratio_mb_per_s: 0.0,
        ratio_latency_p50: 0.0,
        ratio_latency_p99: 0.0,
        replay: None,
        storage: w.storage.clone(),
        journal_only: None,
        tail_read: None,
        catch_up: None,
        compaction: None,
    }
}

/// A report whose append figures come from another workload's writes; no write baseline.
pub(crate) fn append_report(
    w: &Workload,
    e: &EngineSettings,
    bookie: (String, bool),
    entries: u64,
    elapsed: Duration,
    histogram: &Histogram<u64>,
) -> Report {
    let writes = Writes { entries, elapsed, histogram: histogram.clone(), batches: 0, batch_bytes: 0 };
    report(w, e, bookie, &writes)
}

fn entry_logs_config(journal_dir: &Path, w: &Workload, e: &EngineSettings) -> Result<BookieConfig> {
    let mut config = bookie_config(journal_dir, w, e)?;
    config.storage_mode = StorageMode::EntryLogs;
    Ok(config)
}

/// The tail workload: in rounds, the appender and reader for `duration / rounds`, then the
/// pread baseline for as long (at most 2 s).
pub(crate) fn run_tail(dir: &Path, w: &Workload, e: &EngineSettings) -> Result<Report> {
    let journal_dir = dir.join("tail");
    let _ = std::fs::remove_dir_all(&journal_dir);
    let scratch = ScratchFile::create(&dir.join("baseline.scratch"), 256 << 20)?;
    let bookie = Bookie::open(entry_logs_config(&journal_dir, w, e)?).context("open bookie")?;
    let info = (bookie.backend().to_string(), bookie.direct_io());
    let segment = segment_on(&bookie, ShardId(0), 1);
    let payload: Vec<u8> = (0..w.entry_size).map(|i| (i * 31 + 7) as u8).collect();
    let payload = Bytes::from(payload);
    let round = w.duration / w.rounds.max(1);
    let mut tail = Tail { bookie: &bookie, segment, payload, next: 0 };
    let (mut writes, mut reads, mut base) = (histogram(), histogram(), histogram());
    let (mut entries, mut elapsed) = (0u64, Duration::ZERO);
    let before;
    {
        // One appender at one in flight on its shard's CPU, as the latency workload runs it.
        let _pinned = Pinned::to(bookie.shard_cpu(ShardId(0)))?;
        tail.run(Duration::from_millis(300).max(round / 4), &mut histogram(), &mut histogram())?;
        before = stats_sum(&bookie)?;
        for _ in 0..w.rounds.max(1) {
            let started = now();
            entries += tail.run(round, &mut writes, &mut reads)?;
            elapsed += now() - started;
            base.add(&pread_loop(&scratch, round.min(Duration::from_secs(2)))?).ok();
        }
    }
    let after = stats_sum(&bookie)?;
    bookie.close();
    let _ = std::fs::remove_dir_all(&journal_dir);
    drop(scratch);
    let cache_reads = after.cache_reads - before.cache_reads;
    let log_reads = after.log_reads - before.log_reads;
    ensure!(cache_reads > 0, "tail: {entries} reads, none answered by the write cache");
    if cache_reads != entries {
        tracing::warn!(
            entries,
            cache_reads,
            log_reads,
            "tail: not every read was answered by the write cache"
        );
    }
    let writes = Writes {
        entries,
        elapsed,
        histogram: writes,
        batches: after.batches - before.batches,
        batch_bytes: after.batch_bytes - before.batch_bytes,
    };
    let mut report = report(w, e, info, &writes);
    report.tail_read = Some(TailRead {
        reads: entries,
        entry_bytes: w.entry_size,
        wait: if TAIL_SPIN { "spin" } else { "wait" }.into(),
        latency_us: latency(&reads),
        baseline_pread_4k_us: latency(&base),
        cache_reads,
        log_reads,
    });
    Ok(report)
}

/// The tail appender and reader.
struct Tail<'a> {
    bookie: &'a Bookie,
    segment: SegmentId,
    payload: Bytes,
    next: u64,
}

impl Tail<'_> {
    /// For `duration`: add an entry, wait until durable, then time reading it back. Returns the
    /// entries written and read.
    fn run(
        &mut self,
        duration: Duration,
        writes: &mut Histogram<u64>,
        reads: &mut Histogram<u64>,
    ) -> Result<u64> {
        let deadline = now() + duration;
        let mut done = 0;
        while now() < deadline {
            let id = self.next;
            let sent = now();
            self.bookie.add_entry(entry(self.segment, id, self.payload.clone())).wait()?;
            let durable = now();
            let mut pending = self.bookie.read_entry(self.segment, EntryId(id));
            let result = if TAIL_SPIN {
                loop {
                    if let Some(result) = pending.poll_ready() {
                        break result;
                    }
                    std::hint::spin_loop();
                }
            } else {
                pending.wait()
            };
            let read = now();
            let bytes = result.with_context(|| format!("read back entry {id}"))?;
            ensure!(bytes == self.payload, "entry {id} read back {} bytes, not as written", bytes.len());
            writes.record((durable - sent).as_nanos() as u64).ok();
            reads.record((read - durable).as_nanos() as u64).ok();
            self.next += 1;
            done += 1;
        }
        Ok(done)
    }
}

/// The payload of entry `id` of `segment`: `base` stamped with both ids at its start and end
/// (so a read that returns another entry's bytes is caught).
fn stamped(base: &[u8], segment: SegmentId, id: u64) -> Vec<u8> {
    let mut payload = base.to_vec();
    let stamp = stamp(segment, id);
    payload[..16].copy_from_slice(&stamp);
    let end = payload.len();
    payload[end - 16..].copy_from_slice(&stamp);
    payload
}

fn stamp(segment: SegmentId, id: u64) -> [u8; 16] {
    let mut stamp = [0u8; 16];
    stamp[..8].copy_from_slice(&segment.0.to_le_bytes());
    stamp[8..].copy_from_slice(&id.to_le_bytes());
    stamp
}

/// The catch-up workload (see the module documentation).
pub(crate) fn run_catch_up(dir: &Path, w: &Workload, e: &EngineSettings) -> Result<Report> {
    ensure!(w.entry_size >= 32, "catch-up needs entries of at least 32 bytes (it stamps each one)");
    ensure!(w.catch_up_mib > 0, "catch-up needs --catch-up-mib of at least 1");
    let journal_dir = dir.join("catch-up");
    let _ = std::fs::remove_dir_all(&journal_dir);
    let config = entry_logs_config(&journal_dir, w, e)?;
    let bookie = Bookie::open(config.clone()).context("open bookie")?;
    let info = (bookie.backend().to_string(), bookie.direct_io());
    let segments: Vec<SegmentId> = (0..bookie.shard_count())
        .flat_map(|shard| {
            let bookie = &bookie;
            (0..CATCH_UP_SEGMENTS_PER_SHARD as u64)
                .map(move |k| segment_on(bookie, ShardId(shard), 1 + k * 1000))
        })
        .collect();
    let total = ((w.catch_up_mib << 20) / w.entry_size as u64).max(segments.len() as u64);
    let base: Vec<u8> = (0..w.entry_size).map(|i| (i * 31 + 7) as u8).collect();
    let before = stats_sum(&bookie)?;
    let writes = write_phase(&bookie, &segments, total, &base)?;
    bookie.flush().context("flush")?;
    let after = stats_sum(&bookie)?;
    bookie.close();
    let writes = Writes {
        batches: after.batches - before.batches,
        batch_bytes: after.batch_bytes - before.batch_bytes,
        ..writes
    };
    // Entry k went to segment k % n as its entry k / n.
    let n = segments.len() as u64;
    let plan: Vec<(SegmentId, u64)> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, total / n + u64::from((i as u64) < total % n)))
        .collect();
    let ranges = entry_log_ranges(&journal_dir, w.shards)?;
    let raw_bytes_used: u64 = ranges.iter().map(|(_, from, to)| to - from).sum();
    ensure!(
        raw_bytes_used >= total * w.entry_size as u64,
        "entry logs use {raw_bytes_used} B, less than written"
    );
    let mut out = CatchUp {
        segments: segments.len(),
        entries: total,
        payload_bytes: total * w.entry_size as u64,
        entry_logs: ranges.len(),
        raw_bytes: raw_bytes_used,
        read_bytes: CATCH_UP_READ_BYTES,
        in_flight: CATCH_UP_IN_FLIGHT,
        flushes: after.flushes - before.flushes,
        ..CatchUp::default()
    };
    let (mut raw_bytes, mut raw_time, mut time, mut open) =
        (0u64, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        let (bytes, elapsed) = read_sequential(&ranges)?;
        raw_bytes += bytes;
        raw_time += elapsed;
        out.raw_passes_mb_per_s.push(bytes as f64 / elapsed.as_secs_f64() / 1e6);
        let started = now();
        let bookie = Bookie::open(config.clone()).context("reopen bookie")?;
        open += now() - started;
        settle(&journal_dir, w.shards)?;
        let before = stats_sum(&bookie)?;
        let pass = catch_up(&bookie, &plan, &base)?;
        let after = stats_sum(&bookie)?;
        bookie.close();
        ensure!(pass.entries == total, "catch-up read {} entries of {total}", pass.entries);
        out.calls = pass.calls;
        out.log_reads += after.log_reads - before.log_reads;
        out.cache_reads += after.cache_reads - before.cache_reads;
        out.read_cache_hits += after.read_cache_hits - before.read_cache_hits;
        time += pass.elapsed;
        out.passes_mb_per_s.push(out.payload_bytes as f64 / pass.elapsed.as_secs_f64() / 1e6);
    }
    let _ = std::fs::remove_dir_all(&journal_dir);
    ensure!(
        out.log_reads > 0 && out.cache_reads == 0 && out.read_cache_hits == 0,
        "catch-up was not cold: {} entries from entry logs, {} from the write cache, {} from the read cache",
        out.log_reads,
        out.cache_reads,
        out.read_cache_hits
    );
    out.mb_per_s = 2.0 * out.payload_bytes as f64 / time.as_secs_f64() / 1e6;
    out.raw_mb_per_s = raw_bytes as f64 / raw_time.as_secs_f64() / 1e6;
    out.ratio = out.mb_per_s / out.raw_mb_per_s;
    out.open_ms = open.as_secs_f64() * 1e3 / 2.0;
    tracing::info!(?out, "catch-up");
    let mut report = report(w, e, info, &writes);
    report.catch_up = Some(out);
    Ok(report)
}

/// Waits until a just-opened bookie prepares no journal file. At open every shard prepares its
/// first journal file and at once the next one, zero-filling whichever no recycled file stands
/// for (here 128 MiB per shard, measured as about 200 MB written during a catch-up pass right
/// after open): startup work a raw read does not compete with. Settled: two listings of the
/// shard directories 100 ms apart are equal and hold no `.prep` file (gives up after 10 s).
fn settle(journal_dir: &Path, shards: u32) -> Result<()> {
    let listing = || -> Result<Vec<(PathBuf, u64)>> {
        let mut files = Vec::new();
        for shard in 0..shards {
            for e in std::fs::read_dir(journal_dir.join(format!("shard-{shard}")))? {
                let e = e?;
                files.push((e.path(), e.metadata().map_or(0, |m| m.len())));
            }
        }
        files.sort();
        Ok(files)
    };
    let deadline = now() + Duration::from_secs(10);
    let mut last = listing()?;
    while now() < deadline {
        // park_timeout may return early (a token left by an earlier unpark): wait out the time.
        let until = now() + Duration::from_millis(100);
        while now() < until {
            std::thread::park_timeout(until - now());
        }
        let current = listing()?;
        let preparing = current.iter().any(|(p, _)| p.extension().is_some_and(|x| x == "prep"));
        if !preparing && current == last {
            return Ok(());
        }
        last = current;
    }
    tracing::warn!("catch-up: journal files still being prepared 10 s after open; reading anyway");
    Ok(())
}

/// Writes `total` stamped entries round-robin over `segments`, a window of them in flight.
fn write_phase(bookie: &Bookie, segments: &[SegmentId], total: u64, base: &[u8]) -> Result<Writes> {
    let n = segments.len() as u64;
    let mut window: VecDeque<(Instant, Pending<Result<(), dlog_engine::Error>>)> = VecDeque::new();
    let mut histogram = histogram();
    let started = now();
    let mut k = 0u64;
    loop {
        while k < total && window.len() < CATCH_UP_WRITES_IN_FLIGHT {
            let (segment, id) = (segments[(k % n) as usize], k / n);
            let payload = Bytes::from(stamped(base, segment, id));
            window.push_back((now(), bookie.add_entry(entry(segment, id, payload))));
            k += 1;
        }
        let Some((sent, pending)) = window.pop_front() else { break };
        pending.wait().context("catch-up write")?;
        histogram.record((now() - sent).as_nanos() as u64).ok();
    }
    Ok(Writes { entries: total, elapsed: now() - started, histogram, batches: 0, batch_bytes: 0 })
}

/// What one catch-up pass did.
struct Pass {
    entries: u64,
    calls: u64,
    elapsed: Duration,
}

type RangeRead = Pending<Result<Vec<(EntryId, Bytes)>, dlog_engine::Error>>;

/// Reads every entry of `plan` ((segment, entries from 0)) with `read_range`, in chunks of
/// `CATCH_UP_READ_BYTES` worth of entries, `CATCH_UP_IN_FLIGHT` calls in flight. A call that
/// answers short (a run section ended, or the bytes bound) is followed by one for the rest of
/// its chunk. Checks every entry's id, size and stamp, and a sample of whole payloads.
fn catch_up(bookie: &Bookie, plan: &[(SegmentId, u64)], base: &[u8]) -> Result<Pass> {
    let chunk = (CATCH_UP_READ_BYTES / base.len()).max(1) as u64;
    // Chunks in order, over segments one after another.
    let mut chunks = plan.iter().flat_map(|&(segment, count)| {
        (0..count.div_ceil(chunk)).map(move |c| (segment, c * chunk, ((c + 1) * chunk).min(count) - 1))
    });
    let mut rest: VecDeque<(SegmentId, u64, u64)> = VecDeque::new();
    let mut flying: VecDeque<((SegmentId, u64, u64), RangeRead)> = VecDeque::new();
    let (mut entries, mut calls) = (0u64, 0u64);
    let started = now();
    loop {
        while flying.len() < CATCH_UP_IN_FLIGHT {
            let Some(next) = rest.pop_front().or_else(|| chunks.next()) else { break };
            let (segment, from, to) = next;
            flying.push_back((
                next,
                bookie.read_range(segment, EntryId(from), EntryId(to), CATCH_UP_READ_BYTES),
            ));
            calls += 1;
        }
        let Some(((segment, from, to), pending)) = flying.pop_front() else { break };
        let got = pending.wait().with_context(|| format!("read_range {segment} {from}..={to}"))?;
        ensure!(
            !got.is_empty() && got.len() as u64 <= to - from + 1,
            "read_range {from}..={to}: {}",
            got.len()
        );
        for (i, (id, payload)) in got.iter().enumerate() {
            let expected = from + i as u64;
            if id.0 != expected || payload.len() != base.len() || payload[..16] != stamp(segment, expected) {
                bail!("{segment} entry {expected}: read {id} of {} B, not as written", payload.len());
            }
            if expected.is_multiple_of(SAMPLE_EVERY) && payload[..] != stamped(base, segment, expected)[..] {
                bail!("{segment} entry {expected}: payload differs from what was written");
            }
        }
        let end = from + got.len() as u64;
        entries += got.len() as u64;
        if end <= to {
            rest.push_front((segment, end, to));
        }
    }
    Ok(Pass { entries, calls, elapsed: now() - started })
}

/// (entry log, 0, bytes its runs use) for every entry log of every shard, in order. The used
/// length is found by walking run headers from offset 0 with the engine's decoder (logs are
/// preallocated, so their file size says nothing).
fn entry_log_ranges(journal_dir: &Path, shards: u32) -> Result<Vec<(PathBuf, u64, u64)>> {
    let mut ranges = Vec::new();
    for shard in 0..shards {
        let dir = journal_dir.join(format!("storage-{shard}"));
        let mut logs: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .with_context(|| format!("list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?;
                let hex = name.strip_prefix("entrylog-")?.strip_suffix(".log")?;
                Some((u64::from_str_radix(hex, 16).ok()?, path))
            })
            .collect();
        logs.sort();
        for (seq, path) in logs {
            let used = log_used_bytes(&path, seq)?;
            if used > 0 {
                ranges.push((path, 0, used));
            }
        }
    }
    Ok(ranges)
}

/// The sum of `run_bytes` of the runs back to back from offset 0 of an entry log.
fn log_used_bytes(path: &Path, epoch: u64) -> Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut head = [0u8; RUN_HEADER_BYTES];
    let mut at = 0u64;
    while at + RUN_HEADER_BYTES as u64 <= len {
        file.read_exact_at(&mut head, at)?;
        match decode_header(&head, epoch) {
            Ok(header) => at += header.run_bytes,
            Err(_) => break,
        }
    }
    Ok(at)
}
