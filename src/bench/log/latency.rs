//! Figure 2 of `dlog bench log`: end-to-end latency of an open-loop writer at `--rate`
//! records/s, from each record's intended send time to a tailing reader (`StartPosition::Tail`,
//! in this process) receiving it; and the publish latency, from the intended send time to the
//! write's durable acknowledgement. Default transmit policy.
//!
//! The sender is a thread of its own that sends record i at `start + i / rate` (sleeping until
//! then, or sending at once when late), whatever the acknowledgements do; the payload carries the
//! record's sequence number and intended time. A task awaits the writes' futures in order
//! (publish), another reads (end to end); both check that every record sent arrived, in order.
//! The sender's lag (call time minus intended time) is reported too: it is part of both
//! latencies.
//!
//! Each round (the first after a warm-up of `WARM_UP`) runs the log for `--duration / --rounds`,
//! then two baselines through the namespace's own `ReplicationClient`, each for at most
//! `BASELINE_TIME`:
//! - open loop: raw adds of the log round's average entry size at the log round's entries/s, on
//!   a schedule as the records were, latency from each add's intended time to its
//!   acknowledgement: what replication alone does under the load the log put on it;
//! - one raw add in flight of a one-record entry: the floor of a round trip.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use dlog_metadata::AnyStore;
use dlog_replication::client::{ReplicationClient, SegmentHandle};
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_writer::WriterError;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Figure, LogBenchArgs, Phase, configured, now, open, sleep, stamped, unstamp};
use crate::bench::bookie::{median, payload};
use crate::bench::cpu::{self, CpuUse};
use crate::bench::stats::{Latency, histogram, latency};
use crate::log::entry_codec::{ENTRY_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::log::{Appended, LogError, LogReader, LogWriter, NamespaceConfig, Record, StartPosition};

/// Records of the first round sent before any is measured.
const WARM_UP: Duration = Duration::from_millis(500);
/// Each baseline's time per round, at most.
const BASELINE_TIME: Duration = Duration::from_secs(2);
/// Target: end-to-end p99, us.
const TARGET_E2E_P99_US: f64 = 2000.0;
/// Flag byte of a measured record (warm-up records carry 0).
const MEASURED: u8 = 1;

/// One round of the log and its baselines.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Round {
    /// Records sent (measured ones).
    pub(crate) sent: u64,
    /// ... acknowledged.
    pub(crate) acked: u64,
    /// ... received by the tailing reader.
    pub(crate) received: u64,
    /// Records/s actually sent (intended: `--rate`).
    pub(crate) sent_per_s: f64,
    /// Entries/s the writer made of them.
    pub(crate) entries_per_s: f64,
    /// Their average bytes (records, record headers, entry header).
    pub(crate) entry_bytes_avg: f64,
    /// Intended send time to the reader, us.
    pub(crate) e2e_us: Latency,
    /// Intended send time to the durable acknowledgement, us.
    pub(crate) publish_us: Latency,
    /// Intended send time to the `write` call, us.
    pub(crate) sender_lag_us: Latency,
    /// The writer seeing a record durable to the reader having it, us (0 when the reader was
    /// first): the tailing reader's share of e2e.
    pub(crate) reader_after_ack_us: Latency,
    /// Raw adds at `entries_per_s` of `entry_bytes_avg`, intended time to acknowledgement, us.
    pub(crate) raw_open_loop_us: Latency,
    /// One raw add in flight, us.
    pub(crate) raw_one_in_flight_us: Latency,
    /// Where the CPU went while the log ran.
    pub(crate) cpu: CpuUse,
}

/// The latency phase's report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LatencyReport {
    /// Records/s asked for.
    pub(crate) rate: u64,
    /// Payload bytes per record.
    pub(crate) record_bytes: usize,
    /// The writer's transmit policy.
    pub(crate) transmit: String,
    /// Seconds per round.
    pub(crate) round_s: f64,
    /// Measured records sent over all rounds.
    pub(crate) records_sent: u64,
    /// ... acknowledged.
    pub(crate) records_acked: u64,
    /// ... received by the reader.
    pub(crate) records_received: u64,
    /// End to end over all rounds, us.
    pub(crate) e2e_us: Latency,
    /// Publish over all rounds, us.
    pub(crate) publish_us: Latency,
    /// The sender's lag over all rounds, us.
    pub(crate) sender_lag_us: Latency,
    /// Acknowledgement (as the writer saw it) to the reader, over all rounds, us.
    pub(crate) reader_after_ack_us: Latency,
    /// Raw adds, open loop at the log's entry rate and size, over all rounds, us.
    pub(crate) raw_open_loop_us: Latency,
    /// One raw add in flight over all rounds, us.
    pub(crate) raw_one_in_flight_us: Latency,
    /// Median over rounds of e2e p99 / raw open-loop p99.
    pub(crate) e2e_p99_ratio: f64,
    /// Median over rounds of publish p99 / raw open-loop p99.
    pub(crate) publish_p99_ratio: f64,
    /// The rounds.
    pub(crate) rounds: Vec<Round>,
}

impl LatencyReport {
    pub(crate) fn figures(&self) -> Vec<Figure> {
        let raw = &self.raw_open_loop_us;
        let context = |figure: &str, measured: f64, baseline: f64, baseline_is: &str| Figure {
            figure: figure.into(),
            target: "-".into(),
            measured,
            baseline,
            baseline_is: baseline_is.into(),
            ratio: measured / baseline,
            pass: None,
        };
        vec![
            Figure {
                figure: format!("e2e p99 at {}/s (us)", self.rate),
                target: format!("< {TARGET_E2E_P99_US}"),
                measured: self.e2e_us.p99,
                baseline: raw.p99,
                baseline_is: "raw adds p99, same load".into(),
                ratio: self.e2e_p99_ratio,
                pass: Some(self.e2e_us.p99 < TARGET_E2E_P99_US),
            },
            context("e2e p50 (us)", self.e2e_us.p50, raw.p50, "raw adds p50, same load"),
            context("e2e p999 (us)", self.e2e_us.p999, raw.p999, "raw adds p999, same load"),
            context("e2e max (us)", self.e2e_us.max, raw.max, "raw adds max, same load"),
            Figure {
                ratio: self.publish_p99_ratio,
                ..context("publish p99 (us)", self.publish_us.p99, raw.p99, "raw adds p99, same load")
            },
            context("publish p50 (us)", self.publish_us.p50, raw.p50, "raw adds p50, same load"),
            context(
                "publish p99 vs an idle round trip",
                self.publish_us.p99,
                self.raw_one_in_flight_us.p99,
                "raw add p99, 1 in flight",
            ),
            context(
                "reader after the ack p99 (us)",
                self.reader_after_ack_us.p99,
                self.e2e_us.p99,
                "e2e p99 (its share)",
            ),
            context("sender lag p99 (us)", self.sender_lag_us.p99, self.e2e_us.p99, "e2e p99 (its share)"),
        ]
    }
}

/// A future in flight, with its intended time (ns after the round's base) and flag.
type InFlight<T> = (u64, u8, std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>);

/// Calls `send(i)` for i in `0..count` at `start + i / rate`, sleeping until then (or at once
/// when late), and passes each future on with its intended time; returns the lag histogram
/// (intended time to the return of `send`) of the measured ones (i >= `warm`).
fn schedule<T, F>(
    tx: mpsc::UnboundedSender<InFlight<T>>,
    base: Instant,
    (count, warm, rate): (u64, u64, f64),
    mut send: impl FnMut(u64, u64, u8) -> F,
) -> Result<Histogram<u64>>
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut lag = histogram();
    for i in 0..count {
        let intended = base + Duration::from_secs_f64(i as f64 / rate);
        let t = now();
        if t < intended {
            sleep(intended - t);
        }
        let stamp = (intended - base).as_nanos() as u64;
        let flag = if i < warm { 0 } else { MEASURED };
        let future = send(i, stamp, flag);
        if flag == MEASURED {
            lag.record((now() - intended).as_nanos() as u64).ok();
        }
        if tx.send((stamp, flag, Box::pin(future))).is_err() {
            bail!("the acknowledgement task ended early");
        }
    }
    Ok(lag)
}

/// What `acknowledgements` saw.
struct Acks {
    /// Intended time to acknowledgement of the measured ones, ns.
    hist: Histogram<u64>,
    /// When each measured one was seen acknowledged, ns after the base, in order.
    at: Vec<u64>,
    /// How many.
    acked: u64,
    /// The distinct `entry_of` their outputs.
    entries: u64,
}

/// Awaits the futures in order.
async fn acknowledgements<T, E: std::fmt::Display>(
    mut rx: mpsc::UnboundedReceiver<InFlight<Result<T, E>>>,
    base: Instant,
    entry_of: impl Fn(&T) -> (u64, u64),
) -> Result<Acks> {
    let mut hist = histogram();
    let mut at = Vec::new();
    let (mut acked, mut entries, mut last_entry) = (0, 0, None);
    while let Some((stamp, flag, future)) = rx.recv().await {
        let done = future.await.map_err(|e| anyhow::anyhow!("a write failed: {e}"))?;
        if flag == MEASURED {
            let t = (now() - base).as_nanos() as u64;
            hist.record(t.saturating_sub(stamp)).ok();
            at.push(t);
            acked += 1;
            let entry = entry_of(&done);
            if last_entry != Some(entry) {
                entries += 1;
                last_entry = Some(entry);
            }
        }
    }
    Ok(Acks { hist, at, acked, entries })
}

/// Reads `warm + measured` records from `first_seq` on: (reader, e2e histogram, when each
/// measured one was read (ns after the base)).
async fn read(
    mut reader: LogReader,
    base: Instant,
    (first_seq, warm, measured): (u64, u64, u64),
    timeout: Duration,
) -> Result<(LogReader, Histogram<u64>, Vec<u64>)> {
    let mut e2e = histogram();
    let mut received = Vec::new();
    for i in 0..warm + measured {
        let record = match tokio::time::timeout(timeout, reader.next()).await {
            Err(_) => bail!("the reader had no record {} within {timeout:?}", first_seq + i),
            Ok(record) => record.context("reading")?.context("the reader ended")?,
        };
        let at = (now() - base).as_nanos() as u64;
        let (seq, stamp, flag) = unstamp(&record.payload)?;
        ensure!(seq == first_seq + i, "the reader got record {seq} where {} was next", first_seq + i);
        if flag == MEASURED {
            e2e.record(at.saturating_sub(stamp)).ok();
            received.push(at);
        }
    }
    Ok((reader, e2e, received))
}

async fn raw_segment(client: &ReplicationClient<AnyStore>) -> Result<SegmentHandle> {
    let quorum = QuorumSizes::new(3, 3, 2).map_err(|e| anyhow::anyhow!("quorum: {e}"))?;
    Ok(client.create_segment(quorum, Bytes::from_static(b"dlog-bench-log"), None).await?)
}

/// One raw add of `payload` in flight for `duration`: latencies in ns.
async fn raw_one_in_flight(
    client: &ReplicationClient<AnyStore>,
    payload: Bytes,
    duration: Duration,
) -> Result<Histogram<u64>> {
    let segment = raw_segment(client).await?;
    let mut hist = histogram();
    let deadline = now() + duration;
    while now() < deadline {
        let sent = now();
        segment.add(payload.clone()).await.context("a raw add failed")?;
        hist.record((now() - sent).as_nanos() as u64).ok();
    }
    segment.close().await.context("closing the raw segment")?;
    Ok(hist)
}

/// Raw adds of `payload` at `rate` entries/s for `duration`, open loop: latencies in ns from
/// each add's intended time.
fn raw_open_loop(
    runtime: &tokio::runtime::Runtime,
    client: &ReplicationClient<AnyStore>,
    payload: Bytes,
    rate: f64,
    duration: Duration,
) -> Result<Histogram<u64>> {
    let segment = runtime.block_on(raw_segment(client))?;
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let base = now() + Duration::from_millis(20);
    let (tx, rx) = mpsc::unbounded_channel::<InFlight<Result<u64, WriterError>>>();
    let acks = runtime.spawn(acknowledgements(rx, base, |entry: &u64| (0, *entry)));
    schedule(tx, base, (count, 0, rate), |_, _, _| segment.add(payload.clone()))?;
    let Acks { hist, acked, .. } = runtime.block_on(acks).context("acknowledgement task")??;
    ensure!(acked == count, "{count} raw adds, {acked} acknowledged");
    runtime.block_on(segment.close()).context("closing the raw segment")?;
    Ok(hist)
}

/// What one log round measured.
struct LogRound {
    e2e: Histogram<u64>,
    publish: Histogram<u64>,
    lag: Histogram<u64>,
    reader_after_ack: Histogram<u64>,
    acked: u64,
    received: u64,
    entries: u64,
    sent_per_s: f64,
    cpu: CpuUse,
}

/// One round of the log: `plan` = (first sequence number, warm-up records, measured records).
fn log_round(
    runtime: &tokio::runtime::Runtime,
    writer: &LogWriter,
    reader: &mut Option<LogReader>,
    plan: (u64, u64, u64),
    args: &LogBenchArgs,
) -> Result<LogRound> {
    let (first_seq, warm, measured) = plan;
    // Starts a little later, so the tasks are waiting when the first record goes.
    let base = now() + Duration::from_millis(20);
    let (tx, rx) = mpsc::unbounded_channel::<InFlight<Result<Appended, LogError>>>();
    let entry_of = |a: &Appended| (a.dlsn.segment_seq, a.dlsn.entry_id);
    let acks = runtime.spawn(acknowledgements(rx, base, entry_of));
    let timeout = Duration::from_secs(30);
    let reading = runtime.spawn(read(reader.take().context("reader")?, base, plan, timeout));
    let before = cpu::sample();
    let size = args.record_size;
    let lag = schedule(tx, base, (warm + measured, warm, args.rate as f64), |i, stamp, flag| {
        writer.write(Record::new(stamped(size, first_seq + i, stamp, flag)))
    });
    let sent_per_s = (warm + measured) as f64 / (now() - base).as_secs_f64();
    let lag = lag?;
    let acks = runtime.block_on(acks).context("acknowledgement task")??;
    let (back, e2e, read_at) = runtime.block_on(reading).context("reader task")??;
    // How long after the writer saw a record durable the reader had it (0 when before).
    let mut reader_after_ack = histogram();
    for (read, acked) in read_at.iter().zip(&acks.at) {
        reader_after_ack.record(read.saturating_sub(*acked)).ok();
    }
    let (publish, acked, entries, received) = (acks.hist, acks.acked, acks.entries, read_at.len() as u64);
    let cpu = cpu::since(&before);
    *reader = Some(back);
    Ok(LogRound { e2e, publish, lag, reader_after_ack, acked, received, entries, sent_per_s, cpu })
}

/// Runs the phase in `dir`.
pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    args: &LogBenchArgs,
    dir: &Path,
) -> Result<LatencyReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = configured(NamespaceConfig::default(), &args.set, Phase::Default)?;
    let transmit = config.writer.transmit;
    let ns = runtime.block_on(open(&dir.join("cluster"), config))?;
    let round_time = args.duration / args.rounds;
    let per_round = (args.rate as f64 * round_time.as_secs_f64()).round().max(1.0) as u64;
    let warm_up = (args.rate as f64 * WARM_UP.as_secs_f64()).round() as u64;
    let one_record = payload(ENTRY_HEADER_BYTES + RECORD_HEADER_BYTES + args.record_size);
    let baseline_time = round_time.min(BASELINE_TIME);
    eprintln!(
        "log latency: {} B records at {}/s, {} rounds of {:.1} s (log, raw adds open loop, one raw add in flight)",
        args.record_size,
        args.rate,
        args.rounds,
        round_time.as_secs_f64()
    );
    let outcome = (|| -> Result<LatencyReport> {
        runtime.block_on(ns.create_log("latency"))?;
        let writer = runtime.block_on(ns.open_writer("latency"))?;
        let mut reader = Some(runtime.block_on(ns.open_reader("latency", StartPosition::Tail))?);
        let mut all = [histogram(), histogram(), histogram(), histogram(), histogram(), histogram()];
        let mut rounds = Vec::new();
        let mut seq = 0u64;
        for round in 0..args.rounds {
            let warm = if round == 0 { warm_up } else { 0 };
            let log = log_round(runtime, &writer, &mut reader, (seq, warm, per_round), args)?;
            seq += warm + per_round;
            let per_entry = log.acked as f64 / log.entries.max(1) as f64;
            let entry_bytes_avg =
                ENTRY_HEADER_BYTES as f64 + per_entry * (RECORD_HEADER_BYTES + args.record_size) as f64;
            let entries_per_s = log.entries as f64 / round_time.as_secs_f64();
            let open_loop = raw_open_loop(
                runtime,
                ns.replication(),
                payload(entry_bytes_avg.round() as usize),
                entries_per_s.max(1.0),
                baseline_time,
            )?;
            let one =
                runtime.block_on(raw_one_in_flight(ns.replication(), one_record.clone(), baseline_time))?;
            let r = Round {
                sent: per_round,
                acked: log.acked,
                received: log.received,
                sent_per_s: log.sent_per_s,
                entries_per_s,
                entry_bytes_avg,
                e2e_us: latency(&log.e2e),
                publish_us: latency(&log.publish),
                sender_lag_us: latency(&log.lag),
                reader_after_ack_us: latency(&log.reader_after_ack),
                raw_open_loop_us: latency(&open_loop),
                raw_one_in_flight_us: latency(&one),
                cpu: log.cpu,
            };
            eprintln!(
                "round {round}: sent {:.0}/s in {:.0} entries/s of {:.0} B; e2e p50 {:.0} p99 {:.0} p999 {:.0} max \
                 {:.0} us; publish p50 {:.0} p99 {:.0} us; reader after the ack p50 {:.0} p99 {:.0} us; sender \
                 lag p99 {:.0} us; raw adds (same load) p50 {:.0} p99 {:.0} us; one raw add in flight p50 {:.0} \
                 p99 {:.0} us",
                r.sent_per_s,
                r.entries_per_s,
                r.entry_bytes_avg,
                r.e2e_us.p50,
                r.e2e_us.p99,
                r.e2e_us.p999,
                r.e2e_us.max,
                r.publish_us.p50,
                r.publish_us.p99,
                r.reader_after_ack_us.p50,
                r.reader_after_ack_us.p99,
                r.sender_lag_us.p99,
                r.raw_open_loop_us.p50,
                r.raw_open_loop_us.p99,
                r.raw_one_in_flight_us.p50,
                r.raw_one_in_flight_us.p99
            );
            eprintln!("  log CPU: {}", r.cpu.summary());
            ensure!(
                r.acked == per_round && r.received == per_round,
                "round {round}: {per_round} sent, {} acknowledged, {} read",
                r.acked,
                r.received
            );
            let each = [&log.e2e, &log.publish, &log.lag, &open_loop, &one, &log.reader_after_ack];
            for (sum, h) in all.iter_mut().zip(each) {
                sum.add(h).ok();
            }
            rounds.push(r);
        }
        drop(reader);
        runtime.block_on(writer.close()).context("closing the writer")?;
        let [e2e, publish, lag, open_loop, one, reader_after_ack] = &all;
        Ok(LatencyReport {
            rate: args.rate,
            record_bytes: args.record_size,
            transmit: format!("{transmit:?}"),
            round_s: round_time.as_secs_f64(),
            records_sent: rounds.iter().map(|r| r.sent).sum(),
            records_acked: rounds.iter().map(|r| r.acked).sum(),
            records_received: rounds.iter().map(|r| r.received).sum(),
            e2e_us: latency(e2e),
            publish_us: latency(publish),
            sender_lag_us: latency(lag),
            reader_after_ack_us: latency(reader_after_ack),
            raw_open_loop_us: latency(open_loop),
            raw_one_in_flight_us: latency(one),
            e2e_p99_ratio: median(rounds.iter().map(|r| r.e2e_us.p99 / r.raw_open_loop_us.p99).collect()),
            publish_p99_ratio: median(
                rounds.iter().map(|r| r.publish_us.p99 / r.raw_open_loop_us.p99).collect(),
            ),
            rounds,
        })
    })();
    runtime.block_on(ns.shutdown());
    outcome
}
