//! Figure 1 of `dlog bench log`: durable records/s of one pipelined writer with the default
//! transmit policy, `--record-size` payloads, up to `--in-flight` records written and not yet
//! acknowledged (as many as the writer takes).
//!
//! Each round (after a warm-up) runs, in turn:
//! - the log: writes for `--duration / --rounds`, then waits for every acknowledgement; the
//!   rate is records acknowledged over the time to the last acknowledgement. The entries the
//!   writer made are counted from the DLSNs (records per entry, average entry bytes);
//! - raw replicated adds: entries of the log's average entry size in this round, `RAW_IN_FLIGHT`
//!   in flight, through the namespace's own `ReplicationClient` on a segment of its own: what
//!   replication does with entries of that size, as records/s at that many records per entry;
//! - the disk: `baseline::write_flush_loop` of 256 KiB writes + fdatasync in the same
//!   directory, as records/s if each record cost its payload and record header 3 times (one
//!   per replica; the bookies' journals and entry logs write it twice each, not counted).
//!
//! Also reported: the bytes the machine's disks wrote while the log ran (/proc/diskstats), per
//! payload byte and as a share of the disk baseline's MB/s, which says whether the disk is
//! what stops the log.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use dlog_metadata::AnyStore;
use dlog_replication::client::ReplicationClient;
use dlog_replication::quorum::QuorumSizes;
use serde::Serialize;

use super::{Figure, LogBenchArgs, Phase, configured, now, open};
use crate::bench::baseline::{ScratchFile, write_flush_loop};
use crate::bench::bookie::{median, payload};
use crate::bench::cpu::{self, CpuUse};
use crate::log::entry_codec::{ENTRY_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::log::{LogWriter, NamespaceConfig, Record};

/// Adds in flight in the raw replicated baseline (the replication writer's window is 1024).
const RAW_IN_FLIGHT: usize = 64;
/// Bytes per write of the disk baseline.
const DISK_WRITE_BYTES: usize = 256 << 10;
/// Replicas each record is written to (Qw).
const REPLICAS: u64 = 3;
/// Target: durable records/s.
const TARGET_RECORDS_PER_S: f64 = 500_000.0;

/// One round of the log and its baselines.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Round {
    /// Records written.
    pub(crate) sent: u64,
    /// Records acknowledged (all of them, or the round fails).
    pub(crate) acked: u64,
    /// Entries they went out in.
    pub(crate) entries: u64,
    /// Durable records/s.
    pub(crate) records_per_s: f64,
    /// Average entry bytes (records, record headers and the entry header).
    pub(crate) entry_bytes_avg: f64,
    /// Raw replicated adds of `entry_bytes_avg`: entries/s.
    pub(crate) raw_entries_per_s: f64,
    /// ... as records/s at this round's records per entry.
    pub(crate) raw_records_per_s: f64,
    /// The disk's durable write rate, MB/s.
    pub(crate) disk_mb_per_s: f64,
    /// ... as records/s (each record's bytes times the replicas).
    pub(crate) disk_records_per_s: f64,
    /// Bytes the machine's disks wrote while the log ran, per payload byte acknowledged (3
    /// replicas, each journaled and then written to an entry log: about 6 plus headers).
    pub(crate) disk_bytes_per_payload_byte: f64,
    /// Where the CPU went while the log ran.
    pub(crate) cpu: CpuUse,
}

/// The throughput phase's report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Throughput {
    /// Payload bytes per record.
    pub(crate) record_bytes: usize,
    /// Records in flight at most.
    pub(crate) in_flight: usize,
    /// The writer's transmit policy.
    pub(crate) transmit: String,
    /// Seconds of load per round.
    pub(crate) round_s: f64,
    /// Records written over all rounds.
    pub(crate) records_sent: u64,
    /// Records acknowledged over all rounds.
    pub(crate) records_acked: u64,
    /// Median durable records/s.
    pub(crate) records_per_s: f64,
    /// Median raw-replication records/s.
    pub(crate) raw_records_per_s: f64,
    /// Median disk records/s.
    pub(crate) disk_records_per_s: f64,
    /// Median of records_per_s / disk_records_per_s.
    pub(crate) ratio_to_disk: f64,
    /// Median of records_per_s / raw_records_per_s.
    pub(crate) ratio_to_raw_adds: f64,
    /// Median MB/s the machine's disks wrote while the log ran.
    pub(crate) log_disk_write_mb_per_s: f64,
    /// Median MB/s of the disk baseline.
    pub(crate) disk_mb_per_s: f64,
    /// Median of log_disk_write_mb_per_s / disk_mb_per_s.
    pub(crate) disk_bandwidth_used: f64,
    /// Bytes each record costs on each replica (payload and record header).
    pub(crate) record_cost_bytes: u64,
    /// Adds in flight in the raw baseline.
    pub(crate) raw_in_flight: usize,
    /// The rounds.
    pub(crate) rounds: Vec<Round>,
}

impl Throughput {
    pub(crate) fn figures(&self) -> Vec<Figure> {
        vec![
            Figure {
                figure: "throughput (records/s)".into(),
                target: format!(">= {TARGET_RECORDS_PER_S}"),
                measured: self.records_per_s,
                baseline: self.disk_records_per_s,
                baseline_is: "disk 256K write+fdatasync, x3".into(),
                ratio: self.ratio_to_disk,
                pass: Some(self.records_per_s >= TARGET_RECORDS_PER_S),
            },
            Figure {
                figure: "throughput vs raw replicated adds".into(),
                target: "-".into(),
                measured: self.records_per_s,
                baseline: self.raw_records_per_s,
                baseline_is: format!("raw adds, same entries, {RAW_IN_FLIGHT} i.f."),
                ratio: self.ratio_to_raw_adds,
                pass: None,
            },
            Figure {
                figure: "disk writes while the log ran (MB/s)".into(),
                target: "-".into(),
                measured: self.log_disk_write_mb_per_s,
                baseline: self.disk_mb_per_s,
                baseline_is: "disk 256K write+fdatasync, MB/s".into(),
                ratio: self.disk_bandwidth_used,
                pass: None,
            },
        ]
    }
}

/// What one log round did.
struct LogRound {
    sent: u64,
    acked: u64,
    entries: u64,
    elapsed: Duration,
}

/// Writes `payload` records for `duration`, `in_flight` at most unacknowledged, then waits for
/// the rest.
async fn log_round(
    writer: &LogWriter,
    payload: &Bytes,
    duration: Duration,
    in_flight: usize,
) -> Result<LogRound> {
    let mut window = VecDeque::with_capacity(in_flight);
    let (mut sent, mut acked, mut entries, mut last_entry) = (0u64, 0u64, 0u64, None);
    let started = now();
    let deadline = started + duration;
    loop {
        if now() < deadline {
            while window.len() < in_flight {
                window.push_back(writer.write(Record::new(payload.clone())));
                sent += 1;
            }
        }
        let Some(write) = window.pop_front() else { break };
        let appended = write.await.context("a write failed")?;
        acked += 1;
        let entry = (appended.dlsn.segment_seq, appended.dlsn.entry_id);
        if last_entry != Some(entry) {
            entries += 1;
            last_entry = Some(entry);
        }
    }
    Ok(LogRound { sent, acked, entries, elapsed: now() - started })
}

/// `RAW_IN_FLIGHT` adds of `payload` in flight for `duration` on a new segment: entries/s.
async fn raw_round(client: &ReplicationClient<AnyStore>, payload: Bytes, duration: Duration) -> Result<f64> {
    let quorum = QuorumSizes::new(3, 3, 2).map_err(|e| anyhow::anyhow!("quorum: {e}"))?;
    let segment = client.create_segment(quorum, Bytes::from_static(b"dlog-bench-log"), None).await?;
    let mut window = VecDeque::with_capacity(RAW_IN_FLIGHT);
    let mut acked = 0u64;
    let started = now();
    let deadline = started + duration;
    loop {
        let open = now() < deadline;
        while open && window.len() < RAW_IN_FLIGHT {
            window.push_back(segment.add(payload.clone()));
        }
        let Some(add) = window.pop_front() else { break };
        add.await.context("a raw add failed")?;
        acked += 1;
    }
    let elapsed = now() - started;
    segment.close().await.context("closing the raw segment")?;
    Ok(acked as f64 / elapsed.as_secs_f64())
}

/// Runs the phase in `dir`.
pub(crate) fn run(runtime: &tokio::runtime::Runtime, args: &LogBenchArgs, dir: &Path) -> Result<Throughput> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = ScratchFile::create(&dir.join("disk-baseline.scratch"), 256 << 20)?;
    let config = configured(NamespaceConfig::default(), &args.set, Phase::Default)?;
    let transmit = config.writer.transmit;
    let ns = runtime.block_on(open(&dir.join("cluster"), config))?;
    let record = payload(args.record_size);
    let round_time = args.duration / args.rounds;
    let record_cost = (args.record_size + RECORD_HEADER_BYTES) as u64;
    eprintln!(
        "log throughput: {} B records, {} in flight, {} rounds of {:.1} s (log, raw adds, disk)",
        args.record_size,
        args.in_flight,
        args.rounds,
        round_time.as_secs_f64()
    );
    let outcome = (|| -> Result<Throughput> {
        runtime.block_on(ns.create_log("throughput"))?;
        let writer = runtime.block_on(ns.open_writer("throughput"))?;
        let warm = round_time.min(Duration::from_secs(1));
        runtime.block_on(log_round(&writer, &record, warm, args.in_flight))?;
        let mut rounds = Vec::new();
        for round in 0..args.rounds {
            let before = cpu::sample();
            let log = runtime.block_on(log_round(&writer, &record, round_time, args.in_flight))?;
            let cpu = cpu::since(&before);
            ensure!(log.acked == log.sent, "{} records written, {} acknowledged", log.sent, log.acked);
            let records_per_s = log.acked as f64 / log.elapsed.as_secs_f64();
            let per_entry = log.acked as f64 / log.entries.max(1) as f64;
            let entry_bytes_avg = ENTRY_HEADER_BYTES as f64 + per_entry * record_cost as f64;
            let raw_payload = payload(entry_bytes_avg.round() as usize);
            let raw_entries_per_s = runtime.block_on(raw_round(ns.replication(), raw_payload, round_time))?;
            let disk = write_flush_loop(&scratch, DISK_WRITE_BYTES, round_time.min(Duration::from_secs(2)))?;
            let disk_mb_per_s = disk.mb_per_s();
            let r = Round {
                sent: log.sent,
                acked: log.acked,
                entries: log.entries,
                records_per_s,
                entry_bytes_avg,
                raw_entries_per_s,
                raw_records_per_s: raw_entries_per_s * per_entry,
                disk_mb_per_s,
                disk_records_per_s: disk_mb_per_s * 1e6 / (record_cost * REPLICAS) as f64,
                disk_bytes_per_payload_byte: cpu.disk_write_mb_per_s * 1e6 * log.elapsed.as_secs_f64()
                    / (log.acked * args.record_size as u64).max(1) as f64,
                cpu,
            };
            eprintln!(
                "round {round}: log {:.0} records/s ({} records in {} entries, {:.0} B/entry avg); raw adds {:.0} \
                 entries/s = {:.0} records/s; disk {:.0} MB/s = {:.0} records/s",
                r.records_per_s,
                r.acked,
                r.entries,
                r.entry_bytes_avg,
                r.raw_entries_per_s,
                r.raw_records_per_s,
                r.disk_mb_per_s,
                r.disk_records_per_s
            );
            eprintln!(
                "  log: {:.1} disk bytes written per payload byte; {}",
                r.disk_bytes_per_payload_byte,
                r.cpu.summary()
            );
            rounds.push(r);
        }
        runtime.block_on(writer.close()).context("closing the writer")?;
        let med = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        Ok(Throughput {
            record_bytes: args.record_size,
            in_flight: args.in_flight,
            transmit: format!("{transmit:?}"),
            round_s: round_time.as_secs_f64(),
            records_sent: rounds.iter().map(|r| r.sent).sum(),
            records_acked: rounds.iter().map(|r| r.acked).sum(),
            records_per_s: med(|r| r.records_per_s),
            raw_records_per_s: med(|r| r.raw_records_per_s),
            disk_records_per_s: med(|r| r.disk_records_per_s),
            ratio_to_disk: med(|r| r.records_per_s / r.disk_records_per_s),
            ratio_to_raw_adds: med(|r| r.records_per_s / r.raw_records_per_s),
            log_disk_write_mb_per_s: med(|r| r.cpu.disk_write_mb_per_s),
            disk_mb_per_s: med(|r| r.disk_mb_per_s),
            disk_bandwidth_used: med(|r| r.cpu.disk_write_mb_per_s / r.disk_mb_per_s),
            record_cost_bytes: record_cost,
            raw_in_flight: RAW_IN_FLIGHT,
            rounds,
        })
    })();
    runtime.block_on(ns.shutdown());
    drop(scratch);
    outcome
}
