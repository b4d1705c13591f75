//! Figure 3 of `dlog bench log`: catch-up. Writes `--catchup-mib` of 1 KiB records to a log
//! (transmit policy `batched(CATCHUP_ENTRY_BYTES, 2 ms)`, so writing is quick and entries are
//! large), closes the writer and the cluster, then in rounds, each read cold (the cluster or the
//! engine reopened, the page cache dropped where permitted), alternating which goes first:
//! - the log: a new cluster on the same directory, a reader from the head with `stop_at_tail`,
//!   every record read and its sequence number checked; timed from `open_reader` to the last
//!   record (the cluster's start is not counted);
//! - the baseline: bookie-0's engine opened on its own (`Bookie::open` on its directory, as the
//!   cluster opens it) and every entry of the log's segments read with `read_range` calls of
//!   `reads::CATCH_UP_READ_BYTES`, `reads::CATCH_UP_IN_FLIGHT` in flight, as `bench journal
//!   --read catch-up` reads; timed from the first call to the last answer.
//!
//! Both are reported as MB/s of record payload (the same bytes), so the ratio is one of times.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlog_engine::{Bookie, EntryId, Pending, SegmentId};
use dlog_metadata::schema::SegmentState;
use dlog_replication::entry_envelope::ENVELOPE_HEADER_BYTES;
use serde::Serialize;

use super::{Figure, LogBenchArgs, Phase, configured, drop_caches, now, open, stamped, unstamp};
use crate::bench::bookie::median;
use crate::bench::cpu::{self, CpuUse};
use crate::bench::reads::{CATCH_UP_IN_FLIGHT, CATCH_UP_READ_BYTES};
use crate::local_cluster::BOOKIES_DIR;
use crate::log::entry_codec::{ENTRY_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::log::{NamespaceConfig, ReaderConfig, Record, StartPosition, TransmitPolicy};

/// Payload bytes per record.
const RECORD_BYTES: usize = 1024;
/// Entry size the writer packs records into.
const CATCHUP_ENTRY_BYTES: usize = 256 << 10;
/// Records in flight while writing (64 MiB).
const WRITE_IN_FLIGHT: usize = 64 << 10;
/// Target: the log's catch-up over the engine's.
const TARGET_RATIO: f64 = 0.7;

/// One round.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Round {
    /// Which read first ("log" or "raw").
    pub(crate) first: String,
    /// The log reader's payload MB/s.
    pub(crate) log_mb_per_s: f64,
    /// The engine's `read_range` MB/s of the same payload.
    pub(crate) raw_mb_per_s: f64,
    /// Entry bytes (as stored, envelope included) the engine returned per second, MB/s.
    pub(crate) raw_stored_mb_per_s: f64,
    /// Time to start the cluster before the log pass (not counted), ms.
    pub(crate) cluster_start_ms: f64,
    /// Time to open the engine before the raw pass (not counted), ms.
    pub(crate) engine_open_ms: f64,
    /// Bytes the machine's disks read during the log pass per payload byte.
    pub(crate) log_disk_read_per_payload_byte: f64,
    /// ... during the raw pass.
    pub(crate) raw_disk_read_per_payload_byte: f64,
    /// Where the CPU went during the log pass.
    pub(crate) log_cpu: CpuUse,
    /// ... and during the raw pass.
    pub(crate) raw_cpu: CpuUse,
}

/// The catch-up phase's report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CatchUp {
    /// Payload bytes per record.
    pub(crate) record_bytes: usize,
    /// Entry bytes the writer packed records into (its `max_bytes`).
    pub(crate) entry_bytes_max: usize,
    /// The log readers' replication settings.
    pub(crate) reader_settings: String,
    /// Records written (and read back, each round).
    pub(crate) records: u64,
    /// Payload bytes written.
    pub(crate) payload_bytes: u64,
    /// Segments and entries of the log.
    pub(crate) segments: usize,
    /// Entries of the log.
    pub(crate) entries: u64,
    /// Write phase, payload MB/s (durable), for context.
    pub(crate) write_mb_per_s: f64,
    /// Whether the page cache could be dropped before each pass.
    pub(crate) page_cache_dropped: bool,
    /// Median log reader MB/s.
    pub(crate) log_mb_per_s: f64,
    /// Median engine `read_range` MB/s.
    pub(crate) raw_mb_per_s: f64,
    /// Median of log / raw.
    pub(crate) ratio: f64,
    /// The rounds.
    pub(crate) rounds: Vec<Round>,
}

impl CatchUp {
    pub(crate) fn figures(&self) -> Vec<Figure> {
        vec![Figure {
            figure: "catch-up (payload MB/s)".into(),
            target: format!(">= {TARGET_RATIO} x raw"),
            measured: self.log_mb_per_s,
            baseline: self.raw_mb_per_s,
            baseline_is: "bookie-0 engine read_range, cold".into(),
            ratio: self.ratio,
            pass: Some(self.ratio >= TARGET_RATIO),
        }]
    }
}

/// The catch-up namespace's settings: the batched writer, and `--set`'s changes.
fn config(sets: &[String]) -> Result<NamespaceConfig> {
    let mut config = NamespaceConfig::default();
    config.writer.transmit = TransmitPolicy::batched(CATCHUP_ENTRY_BYTES, Duration::from_millis(2));
    configured(config, sets, Phase::CatchUp)
}

/// Writes `records` stamped records, `WRITE_IN_FLIGHT` at most unacknowledged; the elapsed time.
async fn write(ns: &crate::log::Namespace, records: u64) -> Result<Duration> {
    ns.create_log("catchup").await?;
    let writer = ns.open_writer("catchup").await?;
    let started = now();
    let mut window = VecDeque::with_capacity(WRITE_IN_FLIGHT);
    let mut seq = 0;
    loop {
        while seq < records && window.len() < WRITE_IN_FLIGHT {
            window.push_back(writer.write(Record::new(stamped(RECORD_BYTES, seq, 0, 0))));
            seq += 1;
        }
        let Some(write) = window.pop_front() else { break };
        write.await.context("a write failed")?;
    }
    writer.close().await.context("closing the writer")?;
    Ok(now() - started)
}

/// Reads the whole log from the head; checks every record; the elapsed time.
async fn log_pass(ns: &crate::log::Namespace, records: u64) -> Result<Duration> {
    let started = now();
    let config = ReaderConfig { stop_at_tail: true };
    let mut reader = ns.open_reader_with("catchup", StartPosition::Head, config).await?;
    let mut seq = 0u64;
    while let Some(record) = reader.next().await.context("reading")? {
        let (got, _, _) = unstamp(&record.payload)?;
        ensure!(got == seq && record.payload.len() == RECORD_BYTES, "record {seq} read back as {got}");
        seq += 1;
    }
    let elapsed = now() - started;
    ensure!(seq == records, "the reader read {seq} records of {records}");
    Ok(elapsed)
}

type RangeRead = Pending<Result<Vec<(EntryId, bytes::Bytes)>, dlog_engine::Error>>;

/// Reads entries `0..count` of every `(segment, count)` with `read_range` calls of
/// `chunk` entries, `CATCH_UP_IN_FLIGHT` in flight; a short answer is followed by a call for
/// the rest of its chunk. Returns (entries, entry bytes, elapsed).
fn raw_pass(bookie: &Bookie, plan: &[(u64, u64)], chunk: u64) -> Result<(u64, u64, Duration)> {
    let mut chunks = plan.iter().flat_map(|&(segment, count)| {
        (0..count.div_ceil(chunk)).map(move |c| (segment, c * chunk, ((c + 1) * chunk).min(count) - 1))
    });
    let mut rest: VecDeque<(u64, u64, u64)> = VecDeque::new();
    let mut flying: VecDeque<((u64, u64, u64), RangeRead)> = VecDeque::new();
    let (mut entries, mut bytes) = (0u64, 0u64);
    let started = now();
    loop {
        while flying.len() < CATCH_UP_IN_FLIGHT {
            let Some(next) = rest.pop_front().or_else(|| chunks.next()) else { break };
            let (segment, from, to) = next;
            let read = bookie.read_range(SegmentId(segment), EntryId(from), EntryId(to), CATCH_UP_READ_BYTES);
            flying.push_back((next, read));
        }
        let Some(((segment, from, to), pending)) = flying.pop_front() else { break };
        let got = pending.wait().with_context(|| format!("read_range {segment} {from}..={to}"))?;
        if got.is_empty() || got.len() as u64 > to - from + 1 || got[0].0 != EntryId(from) {
            bail!(
                "read_range {segment} {from}..={to}: {} entries from {:?}",
                got.len(),
                got.first().map(|e| e.0)
            );
        }
        entries += got.len() as u64;
        bytes += got.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        let end = from + got.len() as u64;
        if end <= to {
            rest.push_front((segment, end, to));
        }
    }
    Ok((entries, bytes, now() - started))
}

/// Whether this process may drop the page cache.
fn can_drop_caches() -> bool {
    std::fs::OpenOptions::new().write(true).open("/proc/sys/vm/drop_caches").is_ok()
}

/// Runs the phase in `dir`.
pub(crate) fn run(runtime: &tokio::runtime::Runtime, args: &LogBenchArgs, dir: &Path) -> Result<CatchUp> {
    std::fs::create_dir_all(dir.join("cluster")).with_context(|| format!("creating {}", dir.display()))?;
    let cluster = std::fs::canonicalize(dir.join("cluster"))?;
    let records = (args.catchup_mib << 20) / RECORD_BYTES as u64;
    let payload_bytes = records * RECORD_BYTES as u64;
    eprintln!("log catch-up: writing {records} records of {RECORD_BYTES} B ({} MiB)", args.catchup_mib,);
    let settings = config(&args.set)?;
    let entry_bytes = settings.writer.transmit.max_bytes;
    let reader_settings = format!("{:?}", settings.replication.reader);
    // Write, then learn each segment's entries, then stop the cluster.
    let (written, plan) = runtime.block_on(async {
        let ns = open(&cluster, settings.clone()).await?;
        let outcome = async {
            let written = write(&ns, records).await?;
            let mut plan = Vec::new();
            for segment in ns.log_info("catchup").await?.segments {
                let meta = ns.replication().segment(segment.segment_id).await?;
                match meta.state {
                    SegmentState::Closed { last_entry_id: Some(last), .. } => {
                        plan.push((segment.segment_id, last + 1));
                    }
                    SegmentState::Closed { last_entry_id: None, .. } => {}
                    other => bail!("segment {} is {other:?} after the writer closed", segment.segment_id),
                }
            }
            anyhow::Ok((written, plan))
        }
        .await;
        ns.shutdown().await;
        outcome
    })?;
    let entries: u64 = plan.iter().map(|(_, n)| n).sum();
    let write_mb_per_s = payload_bytes as f64 / written.as_secs_f64() / 1e6;
    eprintln!(
        "wrote {:.0} MB/s payload: {} segments, {entries} entries; reading back in {} rounds",
        write_mb_per_s,
        plan.len(),
        args.rounds
    );
    // Entries per call: as many of the largest stored entry (the writer seals once an entry
    // reaches `entry_bytes`, so one record and the headers more) as fit the call's bytes, so
    // that no call answers short (a short answer's rest would be a call of its own).
    let stored_max =
        entry_bytes + RECORD_BYTES + RECORD_HEADER_BYTES + ENTRY_HEADER_BYTES + ENVELOPE_HEADER_BYTES;
    let chunk = (CATCH_UP_READ_BYTES / stored_max).max(1) as u64;
    let engine = settings.local.bookie_config(&cluster.join(BOOKIES_DIR).join("bookie-0"));
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let raw_first = round % 2 == 0;
        let (mut log, mut raw) = (None, None);
        for pass in 0..2 {
            drop_caches();
            if (pass == 0) == raw_first {
                let started = now();
                let bookie = Bookie::open(engine.clone()).context("opening bookie-0's engine")?;
                let opened = now() - started;
                let before = cpu::sample();
                let result = raw_pass(&bookie, &plan, chunk);
                let used = cpu::since(&before);
                bookie.close();
                let (got, bytes, elapsed) = result?;
                ensure!(got == entries, "the engine read {got} entries of {entries}");
                raw = Some((elapsed, bytes, opened, used));
            } else {
                let (elapsed, started_in) = runtime.block_on(async {
                    let started = now();
                    let ns = open(&cluster, settings.clone()).await?;
                    let started_in = now() - started;
                    let before = cpu::sample();
                    let outcome = log_pass(&ns, records).await;
                    let used = cpu::since(&before);
                    ns.shutdown().await;
                    anyhow::Ok((outcome?, (started_in, used)))
                })?;
                log = Some((elapsed, started_in));
            }
        }
        let ((log_time, (cluster_start, log_cpu)), (raw_time, raw_bytes, engine_open, raw_cpu)) =
            (log.context("log pass")?, raw.context("raw pass")?);
        let r = Round {
            first: if raw_first { "raw" } else { "log" }.into(),
            log_mb_per_s: payload_bytes as f64 / log_time.as_secs_f64() / 1e6,
            raw_mb_per_s: payload_bytes as f64 / raw_time.as_secs_f64() / 1e6,
            raw_stored_mb_per_s: raw_bytes as f64 / raw_time.as_secs_f64() / 1e6,
            cluster_start_ms: cluster_start.as_secs_f64() * 1e3,
            engine_open_ms: engine_open.as_secs_f64() * 1e3,
            log_disk_read_per_payload_byte: log_cpu.disk_read_mb_per_s * 1e6 * log_time.as_secs_f64()
                / payload_bytes as f64,
            raw_disk_read_per_payload_byte: raw_cpu.disk_read_mb_per_s * 1e6 * raw_time.as_secs_f64()
                / payload_bytes as f64,
            log_cpu,
            raw_cpu,
        };
        eprintln!(
            "round {round} ({} first): log reader {:.0} MB/s, engine read_range {:.0} MB/s payload ({:.0} MB/s \
             stored): {:.2}x",
            r.first,
            r.log_mb_per_s,
            r.raw_mb_per_s,
            r.raw_stored_mb_per_s,
            r.log_mb_per_s / r.raw_mb_per_s
        );
        eprintln!(
            "  log: {:.2} disk bytes read per payload byte; {}",
            r.log_disk_read_per_payload_byte,
            r.log_cpu.summary()
        );
        eprintln!(
            "  raw: {:.2} disk bytes read per payload byte; {}",
            r.raw_disk_read_per_payload_byte,
            r.raw_cpu.summary()
        );
        rounds.push(r);
    }
    Ok(CatchUp {
        record_bytes: RECORD_BYTES,
        entry_bytes_max: entry_bytes,
        reader_settings,
        records,
        payload_bytes,
        segments: plan.len(),
        entries,
        write_mb_per_s,
        page_cache_dropped: can_drop_caches(),
        log_mb_per_s: median(rounds.iter().map(|r| r.log_mb_per_s).collect()),
        raw_mb_per_s: median(rounds.iter().map(|r| r.raw_mb_per_s).collect()),
        ratio: median(rounds.iter().map(|r| r.log_mb_per_s / r.raw_mb_per_s).collect()),
        rounds,
    })
}
