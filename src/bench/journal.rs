//! `dlog bench journal`: the engine-only journal benchmark.
//!
//! Each workload alternates rounds of dlog load and rounds of the raw baseline on the same
//! directory, so both see the same disk weather. With `--storage both` (the default for the
//! throughput workloads) every round runs a bookie with entry logs (flushes running) and one
//! in `JournalOnly` mode, so the flush's cost is a ratio measured in the same run. The baseline
//! for throughput is one O_DIRECT write of the journal's observed average batch size plus one
//! fdatasync, serially; the baseline for latency is the same loop at 4 KiB. Replay is compared
//! with a sequential O_DIRECT read of the same journal files. The read workloads
//! (`--read tail|catch-up`) live in `reads`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dlog_engine::constants::{JOURNAL_FILE_HEADER_BYTES, RECORD_HEADER_BYTES};
use dlog_engine::journal::file_header::FileHeader;
use dlog_engine::journal::record::{self, RecordKind};
use dlog_engine::{Backend, Bookie, BookieConfig, CoreStats, DirectIo, JournalSync, ShardId, StorageMode};
use serde::Serialize;

use crate::bench::baseline::{ScratchFile, WriteLoop, read_sequential, write_flush_loop};
use crate::bench::load::{LoadSpec, Segments, run};
use crate::bench::stats::{Latency, histogram, latency};

/// Settings of one workload.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Name in reports.
    pub name: String,
    /// Payload bytes per entry.
    pub entry_size: usize,
    /// Entries in flight.
    pub concurrency: usize,
    /// Entries per submission call.
    pub batch: usize,
    /// Shards.
    pub shards: u32,
    /// Total load time, split over the rounds.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Rounds of (dlog, baseline).
    pub rounds: u32,
    /// MiB of journal to write and replay; 0 skips the replay measurement.
    pub replay_mib: u64,
    /// "entry-logs", "journal-only", or "both" (entry logs measured against journal only).
    pub storage: String,
    /// A read workload instead of appends: "tail" or "catch-up" (see `reads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// MiB of entries the catch-up workload writes and reads back.
    #[serde(skip_serializing_if = "is_zero")]
    pub catch_up_mib: u64,
    /// The compaction workload: writes with compaction running against writes without.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compaction: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Engine settings shared by all workloads.
#[derive(Clone, Debug, Serialize)]
pub struct EngineSettings {
    /// "auto", "io-uring" or "portable".
    pub backend: String,
    /// "fdatasync" or "dsync".
    pub sync: String,
    /// Batches in flight per shard.
    pub writes_in_flight: usize,
    /// Batch byte bound.
    pub batch_bytes_max: usize,
    /// Idle spin of shards, us.
    pub idle_spin_us: u64,
}

/// Baseline figures.
#[derive(Debug, Default, Serialize)]
pub struct Baseline {
    /// Bytes per baseline write (the journal's average batch, rounded to 4 KiB).
    pub write_bytes: usize,
    /// Baseline throughput at `write_bytes`.
    pub mb_per_s: f64,
    /// Latency of 4 KiB write + fdatasync, qd1.
    pub latency_us: Latency,
}

/// Replay figures.
#[derive(Debug, Default, Serialize)]
pub struct Replay {
    /// Journal bytes replayed.
    pub bytes: u64,
    /// Entries replayed.
    pub entries: u64,
    /// Replay speed.
    pub mb_per_s: f64,
    /// Sequential O_DIRECT read of the same ranges.
    pub raw_read_mb_per_s: f64,
    /// Replay / raw read.
    pub ratio: f64,
}

/// One workload's report (the JSON the issue asks for).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Workload settings.
    pub workload: Workload,
    /// Engine settings.
    pub engine: EngineSettings,
    /// Backend actually used.
    pub backend: String,
    /// Whether O_DIRECT was used.
    pub direct_io: bool,
    /// Durable entries per second.
    pub entries_per_s: f64,
    /// Durable payload MB/s (10^6).
    pub mb_per_s: f64,
    /// Journal bytes written per second, MB/s (payload + framing + padding).
    pub journal_mb_per_s: f64,
    /// Latency of a submission call until durable, us.
    pub latency_us: Latency,
    /// Average bytes per journal write.
    pub avg_batch_bytes: f64,
    /// Journal writes per second.
    pub batches_per_s: f64,
    /// Baseline.
    pub baseline: Baseline,
    /// journal_mb_per_s / baseline.mb_per_s (both are bytes to disk per second).
    pub ratio_mb_per_s: f64,
    /// latency p50 / baseline 4 KiB p50.
    pub ratio_latency_p50: f64,
    /// latency p99 / baseline 4 KiB p99.
    pub ratio_latency_p99: f64,
    /// Replay, when measured.
    pub replay: Option<Replay>,
    /// The storage mode of the main figures above.
    pub storage: String,
    /// With `--storage both`: the same load on a journal-only bookie in the same rounds.
    pub journal_only: Option<JournalOnly>,
    /// The tail read workload. Its appends fill the figures above (no write baseline is
    /// measured: `baseline` and the ratios are 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_read: Option<crate::bench::reads::TailRead>,
    /// The catch-up read workload. Its write phase fills the figures above (no write baseline
    /// is measured: `baseline` and the ratios are 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<crate::bench::reads::CatchUp>,
    /// The compaction workload's results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<crate::bench::compaction::CompactionWrites>,
}

/// The journal-only comparison of a `--storage both` workload.
#[derive(Debug, Serialize)]
pub struct JournalOnly {
    /// Durable entries per second without segment storage.
    pub entries_per_s: f64,
    /// Durable payload MB/s without segment storage.
    pub mb_per_s: f64,
    /// Latency without segment storage.
    pub latency_us: Latency,
    /// Entry-logs entries/s over journal-only entries/s.
    pub ratio: f64,
    /// Flushes the entry-logs bookie completed during the measured rounds.
    pub flushes: u64,
    /// Times adds waited for a flush during the measured rounds.
    pub adds_throttled: u64,
    /// Journal bytes written per second by the journal-only bookie, MB/s.
    pub journal_mb_per_s: f64,
    /// journal_mb_per_s / the baseline (the journal issue's bandwidth figure).
    pub ratio_mb_per_s: f64,
}

#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
fn now() -> Instant {
    Instant::now()
}

pub(crate) fn bookie_config(dir: &Path, w: &Workload, e: &EngineSettings) -> Result<BookieConfig> {
    let mut config = BookieConfig::new(dir);
    config.storage_mode = match w.storage.as_str() {
        "journal-only" => StorageMode::JournalOnly,
        "entry-logs" | "both" => StorageMode::EntryLogs,
        other => anyhow::bail!("unknown storage {other:?} (entry-logs, journal-only, both)"),
    };
    config.shard_count = w.shards;
    config.batch_bytes_max = e.batch_bytes_max;
    config.writes_in_flight_max = e.writes_in_flight;
    config.idle_spin_us = e.idle_spin_us;
    config.journal_file_bytes = 128 << 20;
    config.journal_files_recycled_max = 4;
    config.direct_io = DirectIo::Optional;
    config.backend = match e.backend.as_str() {
        "auto" => Backend::Auto,
        "io-uring" => Backend::IoUring,
        "portable" => Backend::Portable,
        other => anyhow::bail!("unknown backend {other:?} (auto, io-uring, portable)"),
    };
    config.journal_sync = match e.sync.as_str() {
        "fdatasync" => JournalSync::Fdatasync,
        "dsync" => JournalSync::Dsync,
        other => anyhow::bail!("unknown sync {other:?} (fdatasync, dsync)"),
    };
    Ok(config)
}

fn stats_total(bookie: &Bookie) -> Result<(u64, u64)> {
    let s = stats_sum(bookie)?;
    Ok((s.batches, s.batch_bytes))
}

/// Every shard's counters, summed.
pub(crate) fn stats_sum(bookie: &Bookie) -> Result<CoreStats> {
    let mut sum = CoreStats::default();
    for shard in 0..bookie.shard_count() {
        let s = bookie.stats(ShardId(shard))?;
        sum.batches += s.batches;
        sum.batch_bytes += s.batch_bytes;
        sum.entries += s.entries;
        sum.flushes += s.flushes;
        sum.flushed_bytes += s.flushed_bytes;
        sum.flushed_entries += s.flushed_entries;
        sum.adds_throttled += s.adds_throttled;
        sum.cache_reads += s.cache_reads;
        sum.log_reads += s.log_reads;
        sum.read_cache_hits += s.read_cache_hits;
    }
    Ok(sum)
}

/// A bookie under load, with what it needs between rounds.
struct Target {
    bookie: Bookie,
    segments: Segments,
    /// Checkpoint period for journal-only bookies (standing in for storage).
    checkpoint_every: Option<Duration>,
}

impl Target {
    /// Opens a bookie in `dir` and brings it to steady state: enough written to fill the
    /// journal recycle pool (rotations then reuse files instead of zeroing new ones, as in a
    /// long-running bookie), then a warm-up with the workload itself.
    fn open(
        dir: &Path,
        w: &Workload,
        e: &EngineSettings,
        mode: StorageMode,
        spec: &LoadSpec,
    ) -> Result<Target> {
        let mut config = bookie_config(dir, w, e)?;
        config.storage_mode = mode;
        let bookie = Bookie::open(config.clone()).context("open bookie")?;
        let checkpoint_every = (mode == StorageMode::JournalOnly).then_some(Duration::from_millis(100));
        let pool_bytes = (config.journal_files_recycled_max as u64 + 2) * config.journal_file_bytes;
        let mut filler = Segments::new(&bookie, 1, 1 << 40, 64 << 10);
        let fill = LoadSpec {
            entry_bytes: 64 << 10,
            concurrency: 64,
            batch: 1,
            duration: Duration::from_millis(100),
            spin: false,
        };
        let fill_every = checkpoint_every.map(|_| Duration::from_millis(20));
        while stats_total(&bookie)?.1 < pool_bytes * u64::from(w.shards) {
            run(&bookie, &mut filler, &fill, fill_every)?;
        }
        let segments = Segments::new(&bookie, 4, 1, w.entry_size);
        let mut target = Target { bookie, segments, checkpoint_every };
        let warm = LoadSpec { duration: Duration::from_millis(500).max(spec.duration / 4), ..spec.clone() };
        run(&target.bookie, &mut target.segments, &warm, target.checkpoint_every)?;
        target.settle()?;
        Ok(target)
    }

    /// Between rounds: leave nothing for a timer-driven flush to do during another target's
    /// round.
    fn settle(&self) -> Result<()> {
        self.bookie.flush().context("flush between rounds")
    }
}

/// Runs one workload in `dir` (created, and emptied afterwards).
pub fn run_workload(dir: &Path, w: &Workload, e: &EngineSettings) -> Result<Report> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if w.compaction {
        return crate::bench::compaction::run_compaction(dir, w, e);
    }
    match w.read.as_deref() {
        None => {}
        Some("tail") => return crate::bench::reads::run_tail(dir, w, e),
        Some("catch-up") => return crate::bench::reads::run_catch_up(dir, w, e),
        Some(other) => anyhow::bail!("unknown read workload {other:?} (tail, catch-up)"),
    }
    let journal_dir = dir.join("journal");
    let _ = std::fs::remove_dir_all(&journal_dir);
    let scratch = ScratchFile::create(&dir.join("baseline.scratch"), 256 << 20)?;
    let round = w.duration / w.rounds.max(1);
    let spec = LoadSpec {
        entry_bytes: w.entry_size,
        concurrency: w.concurrency,
        batch: w.batch,
        duration: round,
        spin: false,
    };
    let main_mode =
        if w.storage == "journal-only" { StorageMode::JournalOnly } else { StorageMode::EntryLogs };
    let mut main = Target::open(&journal_dir, w, e, main_mode, &spec)?;
    let journal_only_dir = dir.join("journal-only");
    let _ = std::fs::remove_dir_all(&journal_only_dir);
    let mut other = if w.storage == "both" {
        Some(Target::open(&journal_only_dir, w, e, StorageMode::JournalOnly, &spec)?)
    } else {
        None
    };
    let backend = main.bookie.backend().to_string();
    let direct_io = main.bookie.direct_io();

    // One appender at one in flight: run it on its shard's CPU, as a thread-per-core server
    // runs a connection on the core that owns its data, so hand-offs wake no other CPU.
    let pinned = w.concurrency <= w.batch;
    if pinned {
        main.segments = Segments::on_shards(&main.bookie, 1, 1 << 30, w.entry_size, 1);
        if let Some(t) = other.as_mut() {
            t.segments = Segments::on_shards(&t.bookie, 1, 1 << 30, w.entry_size, 1);
        }
        if let Some(cpu) = main.bookie.shard_cpu(ShardId(0)) {
            crate::bench::load::pin_to(cpu)?;
        }
    }
    let mut hist = histogram();
    let mut base_4k = histogram();
    let (mut entries, mut bytes, mut elapsed) = (0u64, 0u64, Duration::ZERO);
    let (mut batches, mut batch_bytes) = (0u64, 0u64);
    let (mut base_bytes, mut base_elapsed) = (0f64, Duration::ZERO);
    let mut jo_journal_bytes = 0u64;
    let (mut jo_entries, mut jo_bytes, mut jo_elapsed, mut jo_hist) =
        (0u64, 0u64, Duration::ZERO, histogram());
    let main_before = stats_sum(&main.bookie)?;
    let mut write_bytes = 4096;
    for _ in 0..w.rounds.max(1) {
        let (b0, bb0) = stats_total(&main.bookie)?;
        let result = run(&main.bookie, &mut main.segments, &spec, main.checkpoint_every)?;
        let (b1, bb1) = stats_total(&main.bookie)?;
        main.settle()?;
        entries += result.entries;
        bytes += result.bytes;
        elapsed += result.elapsed;
        batches += b1 - b0;
        batch_bytes += bb1 - bb0;
        hist.add(&result.histogram).ok();
        if let Some(t) = other.as_mut() {
            let (_, jb0) = stats_total(&t.bookie)?;
            let result = run(&t.bookie, &mut t.segments, &spec, t.checkpoint_every)?;
            jo_journal_bytes += stats_total(&t.bookie)?.1 - jb0;
            jo_entries += result.entries;
            jo_bytes += result.bytes;
            jo_elapsed += result.elapsed;
            jo_hist.add(&result.histogram).ok();
        }
        let avg = batch_bytes.checked_div(batches).unwrap_or(4096);
        write_bytes = (avg as usize).max(4096).next_multiple_of(4096);
        let base: WriteLoop = write_flush_loop(&scratch, write_bytes, round.min(Duration::from_secs(3)))?;
        base_bytes += base.writes as f64 * base.write_bytes as f64;
        base_elapsed += base.elapsed;
        let lat = write_flush_loop(&scratch, 4096, (round / 2).min(Duration::from_secs(2)))?;
        base_4k.add(&lat.histogram).ok();
    }
    let main_after = stats_sum(&main.bookie)?;
    let journal_only = other.map(|t| {
        t.bookie.close();
        let _ = std::fs::remove_dir_all(&journal_only_dir);
        let entries_per_s = jo_entries as f64 / jo_elapsed.as_secs_f64();
        let journal_mb_per_s = jo_journal_bytes as f64 / jo_elapsed.as_secs_f64() / 1e6;
        let base_mb_per_s = base_bytes / base_elapsed.as_secs_f64() / 1e6;
        JournalOnly {
            journal_mb_per_s,
            ratio_mb_per_s: journal_mb_per_s / base_mb_per_s,
            entries_per_s,
            mb_per_s: jo_bytes as f64 / jo_elapsed.as_secs_f64() / 1e6,
            latency_us: latency(&jo_hist),
            ratio: (entries as f64 / elapsed.as_secs_f64()) / entries_per_s,
            flushes: main_after.flushes - main_before.flushes,
            adds_throttled: main_after.adds_throttled - main_before.adds_throttled,
        }
    });
    let bookie = main.bookie;
    if pinned {
        crate::bench::load::unpin()?;
    }
    bookie.close();
    let _ = std::fs::remove_dir_all(&journal_dir);
    let secs = elapsed.as_secs_f64();
    let journal_mb_per_s = batch_bytes as f64 / secs / 1e6;
    let baseline = Baseline {
        write_bytes,
        mb_per_s: base_bytes / base_elapsed.as_secs_f64() / 1e6,
        latency_us: latency(&base_4k),
    };
    let ours = latency(&hist);
    let replay = if w.replay_mib > 0 { Some(measure_replay(dir, w, e)?) } else { None };
    drop(scratch);
    Ok(Report {
        workload: w.clone(),
        engine: e.clone(),
        backend,
        direct_io,
        entries_per_s: entries as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        journal_mb_per_s,
        latency_us: ours,
        avg_batch_bytes: if batches > 0 { batch_bytes as f64 / batches as f64 } else { 0.0 },
        batches_per_s: batches as f64 / secs,
        ratio_mb_per_s: journal_mb_per_s / baseline.mb_per_s,
        ratio_latency_p50: ours.p50 / baseline.latency_us.p50,
        ratio_latency_p99: ours.p99 / baseline.latency_us.p99,
        baseline,
        replay,
        storage: w.storage.clone(),
        journal_only,
        tail_read: None,
        catch_up: None,
        compaction: None,
    })
}

/// Writes `replay_mib` of journal, closes the bookie (as a crash would leave it: no checkpoint),
/// then times reopening it against a raw sequential read of the same file ranges.
fn measure_replay(dir: &Path, w: &Workload, e: &EngineSettings) -> Result<Replay> {
    let journal_dir = dir.join("replay");
    let _ = std::fs::remove_dir_all(&journal_dir);
    let mut config = bookie_config(&journal_dir, w, e)?;
    config.journal_file_bytes = 256 << 20;
    // Replay of a journal never flushed: what a crash leaves at most (the write cache's worth
    // with entry logs; here the whole journal, the journal issue's measurement).
    config.storage_mode = StorageMode::JournalOnly;
    let bookie = Bookie::open(config.clone())?;
    let mut segments = Segments::new(&bookie, 4, 1_000_000, w.entry_size);
    let target = w.replay_mib << 20;
    let spec = LoadSpec {
        entry_bytes: w.entry_size,
        concurrency: w.concurrency.max(256),
        batch: w.batch.max(1),
        duration: Duration::from_millis(250),
        spin: false,
    };
    while stats_total(&bookie)?.1 < target {
        run(&bookie, &mut segments, &spec, None)?;
    }
    bookie.close();
    // The ranges replay must read: every journal file from its header to its last batch.
    let ranges = journal_ranges(&journal_dir, w.shards)?;
    // Alternate raw reads and replays: whichever reads second may find the data in a cache
    // below the guest (the hypervisor's), so each gets both positions.
    let (mut raw_bytes, mut raw_time, mut replay_time) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut reports = Vec::new();
    for _ in 0..2 {
        let (bytes, time) = read_sequential(&ranges)?;
        raw_bytes += bytes;
        raw_time += time;
        let started = now();
        let bookie = Bookie::open(config.clone())?;
        replay_time += now() - started;
        reports = bookie.replay_reports().to_vec();
        bookie.close();
    }
    let raw_bytes = raw_bytes / 2;
    let raw_time = raw_time / 2;
    let replay_time = replay_time / 2;
    tracing::info!(open_ms = replay_time.as_millis() as u64,
        shard_ms = ?reports.iter().map(|r| r.elapsed.as_millis() as u64).collect::<Vec<_>>(),
        shard_bytes = ?reports.iter().map(|r| r.bytes).collect::<Vec<_>>(), "replay");
    let _ = std::fs::remove_dir_all(&journal_dir);
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let entries: u64 = reports.iter().map(|r| r.entries).sum();
    let mb_per_s = bytes as f64 / replay_time.as_secs_f64() / 1e6;
    let raw_read_mb_per_s = raw_bytes as f64 / raw_time.as_secs_f64() / 1e6;
    Ok(Replay { bytes, entries, mb_per_s, raw_read_mb_per_s, ratio: mb_per_s / raw_read_mb_per_s })
}

/// (file, 4096, end of its last batch) for every journal file, found by walking batch headers.
fn journal_ranges(journal_dir: &Path, shards: u32) -> Result<Vec<(PathBuf, u64, u64)>> {
    let mut ranges = Vec::new();
    for shard in 0..shards {
        let shard_dir = journal_dir.join(format!("shard-{shard}"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&shard_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log") && p.to_string_lossy().contains("journal-"))
            .collect();
        files.sort();
        for path in files {
            let end = used_bytes(&path)?;
            if end > 4096 {
                ranges.push((path, 4096, end));
            }
        }
    }
    Ok(ranges)
}

/// The end of a journal file's last batch, walking the batch records with the engine's own
/// decoders (file header for the epoch, record header with its checksum).
fn used_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut block = vec![0u8; JOURNAL_FILE_HEADER_BYTES];
    file.read_exact_at(&mut block, 0)?;
    let header = FileHeader::decode(&block).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut head = [0u8; RECORD_HEADER_BYTES];
    let mut at = JOURNAL_FILE_HEADER_BYTES as u64;
    loop {
        let n = file.read_at(&mut head, at)?;
        match record::decode(&head[..n], header.epoch()) {
            Ok((h, _)) if h.kind == RecordKind::Batch && h.segment_id > 0 => at += h.segment_id,
            _ => return Ok(at),
        }
    }
}

/// The workloads behind the figures: four of appends, then the two read workloads (tail reads
/// of 1 KiB entries; catch-up of `catch_up_mib` of 64 KiB entries).
pub fn suite(shards: u32, duration: Duration, rounds: u32, catch_up_mib: u64) -> Vec<Workload> {
    let w = |name: &str, entry_size, concurrency, batch, replay_mib: u64| Workload {
        name: name.into(),
        entry_size,
        concurrency,
        batch,
        shards,
        duration,
        rounds,
        replay_mib,
        storage: if replay_mib > 0 { "journal-only".into() } else { "both".into() },
        read: None,
        catch_up_mib: 0,
        compaction: false,
    };
    let read = |name: &str, mode: &str, entry_size: usize, catch_up_mib: u64| Workload {
        storage: "entry-logs".into(),
        read: Some(mode.into()),
        catch_up_mib,
        ..w(name, entry_size, if catch_up_mib > 0 { 64 } else { 1 }, 1, 0)
    };
    vec![
        w("entries_100b", 100, 65536, 1024, 0),
        w("bandwidth_64k", 65536, 64, 1, 0),
        w("latency_4k_qd1", 4096, 1, 1, 0),
        w("replay_100b", 100, 65536, 1024, 1024),
        read("tail_read_1k", "tail", 1024, 0),
        read("catch_up_64k", "catch-up", 65536, catch_up_mib),
        Workload {
            storage: "entry-logs".into(),
            compaction: true,
            ..w("compaction_writes_4k", 4096, 16, 1, 0)
        },
    ]
}
