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
//! then the baseline: one raw replicated add in flight through the namespace's own
//! `ReplicationClient` (an entry of one record), for at most 2 s.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use dlog_metadata::AnyStore;
use dlog_replication::client::ReplicationClient;
use dlog_replication::quorum::QuorumSizes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Figure, LogBenchArgs, now, open, sleep, stamped, unstamp};
use crate::bench::bookie::{median, payload};
use crate::bench::stats::{Latency, histogram, latency};
use crate::log::entry_codec::{ENTRY_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::log::{LogReader, LogWriter, NamespaceConfig, StartPosition};

/// Records of the first round sent before any is measured.
const WARM_UP: Duration = Duration::from_millis(500);
/// Target: end-to-end p99, us.
const TARGET_E2E_P99_US: f64 = 2000.0;
/// Flag byte of a measured record (warm-up records carry 0).
const MEASURED: u8 = 1;

/// One round of the log and its baseline.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Round {
    /// Records sent (measured ones).
    pub(crate) sent: u64,
    /// ... acknowledged.
    pub(crate) acked: u64,
    /// ... received by the tailing reader.
    pub(crate) received: u64,
    /// Intended send time to the reader, us.
    pub(crate) e2e_us: Latency,
    /// Intended send time to the durable acknowledgement, us.
    pub(crate) publish_us: Latency,
    /// Intended send time to the `write` call, us.
    pub(crate) sender_lag_us: Latency,
    /// One raw replicated add in flight, us.
    pub(crate) raw_add_us: Latency,
    /// Records/s actually sent (intended: `--rate`).
    pub(crate) sent_per_s: f64,
}

/// The latency phase's report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LatencyReport {
    /// Records/s asked for.
    pub(crate) rate: u64,
    /// Payload bytes per record.
    pub(crate) record_bytes: usize,
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
    /// One raw replicated add in flight over all rounds, us.
    pub(crate) raw_add_us: Latency,
    /// Median over rounds of e2e p99 / raw add p99.
    pub(crate) e2e_p99_ratio_to_raw_add: f64,
    /// Median over rounds of publish p99 / raw add p99.
    pub(crate) publish_p99_ratio_to_raw_add: f64,
    /// The rounds.
    pub(crate) rounds: Vec<Round>,
}

impl LatencyReport {
    pub(crate) fn figures(&self) -> Vec<Figure> {
        let raw = "raw add p99, 1 in flight".to_string();
        let context = |figure: &str, measured: f64, baseline: f64, baseline_is: String| Figure {
            figure: figure.into(),
            target: "-".into(),
            measured,
            baseline,
            baseline_is,
            ratio: measured / baseline,
            pass: None,
        };
        vec![
            Figure {
                figure: format!("e2e p99 at {}/s (us)", self.rate),
                target: format!("< {TARGET_E2E_P99_US}"),
                measured: self.e2e_us.p99,
                baseline: self.raw_add_us.p99,
                baseline_is: raw.clone(),
                ratio: self.e2e_p99_ratio_to_raw_add,
                pass: Some(self.e2e_us.p99 < TARGET_E2E_P99_US),
            },
            context("e2e p50 (us)", self.e2e_us.p50, self.raw_add_us.p50, "raw add p50, 1 in flight".into()),
            context(
                "e2e p999 (us)",
                self.e2e_us.p999,
                self.raw_add_us.p999,
                "raw add p999, 1 in flight".into(),
            ),
            context("e2e max (us)", self.e2e_us.max, self.raw_add_us.max, "raw add max, 1 in flight".into()),
            Figure {
                ratio: self.publish_p99_ratio_to_raw_add,
                ..context("publish p99 (us)", self.publish_us.p99, self.raw_add_us.p99, raw)
            },
            context(
                "publish p50 (us)",
                self.publish_us.p50,
                self.raw_add_us.p50,
                "raw add p50, 1 in flight".into(),
            ),
            context(
                "sender lag p99 (us)",
                self.sender_lag_us.p99,
                self.e2e_us.p99,
                "e2e p99 (share of it)".into(),
            ),
        ]
    }
}

/// A write's future, with the record's intended time (ns after the round's base) and flag.
type Sent =
    (u64, u8, std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), crate::log::LogError>> + Send>>);

/// Sends `warm + measured` records at `rate` from `first_seq` on; returns the lag histogram.
fn send(
    writer: &LogWriter,
    tx: mpsc::UnboundedSender<Sent>,
    base: Instant,
    (first_seq, warm, measured): (u64, u64, u64),
    rate: u64,
    record_size: usize,
) -> Result<Histogram<u64>> {
    let mut lag = histogram();
    for i in 0..warm + measured {
        let intended = base + Duration::from_nanos(i * 1_000_000_000 / rate);
        let t = now();
        if t < intended {
            sleep(intended - t);
        }
        let stamp = (intended - base).as_nanos() as u64;
        let flag = if i < warm { 0 } else { MEASURED };
        let write = writer.write(crate::log::Record::new(stamped(record_size, first_seq + i, stamp, flag)));
        let called = now();
        if flag == MEASURED {
            lag.record((called - intended).as_nanos() as u64).ok();
        }
        let write = Box::pin(async move { write.await.map(|_| ()) });
        if tx.send((stamp, flag, write)).is_err() {
            bail!("the acknowledgement task ended early");
        }
    }
    Ok(lag)
}

/// Awaits the writes in order: (publish histogram, measured acknowledged).
async fn acknowledgements(
    mut rx: mpsc::UnboundedReceiver<Sent>,
    base: Instant,
) -> Result<(Histogram<u64>, u64)> {
    let mut publish = histogram();
    let mut acked = 0;
    while let Some((stamp, flag, write)) = rx.recv().await {
        write.await.context("a write failed")?;
        if flag == MEASURED {
            publish.record(((now() - base).as_nanos() as u64).saturating_sub(stamp)).ok();
            acked += 1;
        }
    }
    Ok((publish, acked))
}

/// Reads `warm + measured` records from `first_seq` on: (reader, e2e histogram, measured read).
async fn read(
    mut reader: LogReader,
    base: Instant,
    (first_seq, warm, measured): (u64, u64, u64),
    timeout: Duration,
) -> Result<(LogReader, Histogram<u64>, u64)> {
    let mut e2e = histogram();
    let mut received = 0;
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
            received += 1;
        }
    }
    Ok((reader, e2e, received))
}

/// One raw replicated add of `payload` in flight for `duration`: latencies in ns.
async fn raw_one_in_flight(
    client: &ReplicationClient<AnyStore>,
    payload: Bytes,
    duration: Duration,
) -> Result<Histogram<u64>> {
    let quorum = QuorumSizes::new(3, 3, 2).map_err(|e| anyhow::anyhow!("quorum: {e}"))?;
    let segment = client.create_segment(quorum, Bytes::from_static(b"dlog-bench-log"), None).await?;
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

/// Runs the phase in `dir`.
pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    args: &LogBenchArgs,
    dir: &Path,
) -> Result<LatencyReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ns = runtime.block_on(open(&dir.join("cluster"), NamespaceConfig::default()))?;
    let round_time = args.duration / args.rounds;
    let per_round = (args.rate as f64 * round_time.as_secs_f64()).round().max(1.0) as u64;
    let warm_up = (args.rate as f64 * WARM_UP.as_secs_f64()).round() as u64;
    let raw_payload = payload(ENTRY_HEADER_BYTES + RECORD_HEADER_BYTES + args.record_size);
    eprintln!(
        "log latency: {} B records at {}/s, {} rounds of {:.1} s (log, then one raw add in flight)",
        args.record_size,
        args.rate,
        args.rounds,
        round_time.as_secs_f64()
    );
    let outcome = (|| -> Result<LatencyReport> {
        runtime.block_on(ns.create_log("latency"))?;
        let writer = runtime.block_on(ns.open_writer("latency"))?;
        let mut reader = Some(runtime.block_on(ns.open_reader("latency", StartPosition::Tail))?);
        let (mut e2e, mut publish, mut lag, mut raw) = (histogram(), histogram(), histogram(), histogram());
        let mut rounds = Vec::new();
        let mut seq = 0u64;
        for round in 0..args.rounds {
            let warm = if round == 0 { warm_up } else { 0 };
            let plan = (seq, warm, per_round);
            // Starts a little later, so the tasks are waiting when the first record goes.
            let base = now() + Duration::from_millis(20);
            let (tx, rx) = mpsc::unbounded_channel();
            let acks = runtime.spawn(acknowledgements(rx, base));
            let timeout = Duration::from_secs(30);
            let reading = runtime.spawn(read(reader.take().context("reader")?, base, plan, timeout));
            let sent_lag = send(&writer, tx, base, plan, args.rate, args.record_size);
            let sent_at = now();
            let lag_round = sent_lag?;
            let (publish_round, acked) = runtime.block_on(acks).context("acknowledgement task")??;
            let (back, e2e_round, received) = runtime.block_on(reading).context("reader task")??;
            reader = Some(back);
            seq += warm + per_round;
            let sent_per_s = (warm + per_round) as f64 / (sent_at - base).as_secs_f64();
            let raw_round = runtime.block_on(raw_one_in_flight(
                ns.replication(),
                raw_payload.clone(),
                round_time.min(Duration::from_secs(2)),
            ))?;
            let r = Round {
                sent: per_round,
                acked,
                received,
                e2e_us: latency(&e2e_round),
                publish_us: latency(&publish_round),
                sender_lag_us: latency(&lag_round),
                raw_add_us: latency(&raw_round),
                sent_per_s,
            };
            eprintln!(
                "round {round}: sent {:.0}/s; e2e p50 {:.0} p99 {:.0} p999 {:.0} max {:.0} us; publish p50 {:.0} \
                 p99 {:.0} us; sender lag p99 {:.0} us; raw add p50 {:.0} p99 {:.0} us",
                r.sent_per_s,
                r.e2e_us.p50,
                r.e2e_us.p99,
                r.e2e_us.p999,
                r.e2e_us.max,
                r.publish_us.p50,
                r.publish_us.p99,
                r.sender_lag_us.p99,
                r.raw_add_us.p50,
                r.raw_add_us.p99
            );
            ensure!(
                acked == per_round && received == per_round,
                "round {round}: {per_round} sent, {acked} \
                acknowledged, {received} read"
            );
            e2e.add(&e2e_round).ok();
            publish.add(&publish_round).ok();
            lag.add(&lag_round).ok();
            raw.add(&raw_round).ok();
            rounds.push(r);
        }
        drop(reader);
        runtime.block_on(writer.close()).context("closing the writer")?;
        Ok(LatencyReport {
            rate: args.rate,
            record_bytes: args.record_size,
            round_s: round_time.as_secs_f64(),
            records_sent: rounds.iter().map(|r| r.sent).sum(),
            records_acked: rounds.iter().map(|r| r.acked).sum(),
            records_received: rounds.iter().map(|r| r.received).sum(),
            e2e_us: latency(&e2e),
            publish_us: latency(&publish),
            sender_lag_us: latency(&lag),
            raw_add_us: latency(&raw),
            e2e_p99_ratio_to_raw_add: median(
                rounds.iter().map(|r| r.e2e_us.p99 / r.raw_add_us.p99).collect(),
            ),
            publish_p99_ratio_to_raw_add: median(
                rounds.iter().map(|r| r.publish_us.p99 / r.raw_add_us.p99).collect(),
            ),
            rounds,
        })
    })();
    runtime.block_on(ns.shutdown());
    outcome
}
