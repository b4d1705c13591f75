//! The journal workload's two phases, generic over a `Peer`:
//! - peak: closed loop, `in_flight` records outstanding, a warm-up then a measured window;
//!   records/s counts the acknowledgements that arrive inside the window;
//! - rated: open loop at a fixed rate (a fraction of the peak), paced by `pacer`; a record's
//!   latency is its ack time minus its intended send time, so a stall shows as latency
//!   (no coordinated omission).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::pacer;

/// A peer under test: one record written and acknowledged per `put`.
pub(crate) trait Peer: Clone + Send + Sync + 'static {
    /// Writes record `seq` (unique within a run); resolves once the peer has acknowledged it.
    fn put(&self, seq: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The checked workload (see `flags::LoadArgs`).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) in_flight: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) rated_fraction: f64,
    pub(crate) rate: Option<f64>,
    pub(crate) rated_duration: Duration,
    pub(crate) op_timeout: Duration,
}

/// Acknowledged and failed records with their latencies in µs.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) acked: u64,
    pub(crate) errors: u64,
    pub(crate) latency_us: Histogram<u64>,
}

/// The peak phase's result.
#[derive(Debug)]
pub(crate) struct Peak {
    /// Acknowledged inside the window, with their closed-loop latencies; errors of the phase.
    pub(crate) tally: Tally,
    pub(crate) window: Duration,
}

/// The rated phase's result.
#[derive(Debug)]
pub(crate) struct Rated {
    pub(crate) offered_per_s: f64,
    pub(crate) sent: u64,
    /// Latencies from intended send time to ack.
    pub(crate) tally: Tally,
    /// How late the runtime picked each record up after its intended time (pacer + wake-up).
    pub(crate) dispatch_lag_us: Histogram<u64>,
    /// From the first intended send time to the last acknowledgement.
    pub(crate) elapsed: Duration,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self { acked: 0, errors: 0, latency_us: histogram()? })
    }
}

impl Peak {
    pub(crate) fn records_per_s(&self) -> f64 {
        self.tally.acked as f64 / self.window.as_secs_f64()
    }
}

/// Latencies from 1 µs to 10 min, 3 significant digits.
pub(crate) fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a latency histogram")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// One record: sent after `delay` (a pause after an error), then awaited for at most
/// `op_timeout`. Returns whether it was acknowledged, when it was sent and when it completed.
async fn record<P: Peer>(
    peer: &P,
    seq: u64,
    delay: Duration,
    op_timeout: Duration,
) -> (bool, Instant, Instant) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let sent = Instant::now();
    let acked = matches!(tokio::time::timeout(op_timeout, peer.put(seq)).await, Ok(Ok(())));
    (acked, sent, Instant::now())
}

/// The peak phase: `plan.in_flight` records outstanding, each replaced when it completes, all
/// polled by this one task (no task per record, so the client stays cheap).
pub(crate) async fn peak<P: Peer>(peer: &P, plan: &Plan, seq: &mut u64) -> anyhow::Result<Peak> {
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.duration;
    let mut tally = Tally::new()?;
    let mut pending = FuturesUnordered::new();
    for _ in 0..plan.in_flight {
        pending.push(record(peer, next(seq), Duration::ZERO, plan.op_timeout));
    }
    while let Some((acked, sent, done)) = pending.next().await {
        let mut delay = Duration::ZERO;
        if !acked {
            tally.errors += 1;
            // A failing peer must not turn the loop into a busy one.
            delay = Duration::from_millis(1);
        } else if done >= window_start && done <= window_end {
            tally.acked += 1;
            tally.latency_us.saturating_record(micros(done - sent));
        }
        if done < window_end {
            pending.push(record(peer, next(seq), delay, plan.op_timeout));
        }
    }
    Ok(Peak { tally, window: plan.duration })
}

fn next(seq: &mut u64) -> u64 {
    *seq += 1;
    *seq
}

/// The rated phase: `rate` records/s offered for `plan.rated_duration`. The pacer thread says
/// when each record is due; this task sends it at once and polls all outstanding records.
pub(crate) async fn rated<P: Peer>(peer: &P, plan: &Plan, rate: f64, seq: &mut u64) -> anyhow::Result<Rated> {
    let total = (rate * plan.rated_duration.as_secs_f64()).round();
    if !(rate.is_finite() && rate > 0.0 && total >= 1.0) {
        bail!("the rated phase would offer no record (rate {rate} records/s)");
    }
    let (due_tx, mut due_rx) = mpsc::unbounded_channel();
    let start = Instant::now() + Duration::from_millis(20);
    let pacer = pacer::spawn(start, rate, total as u64, due_tx).context("starting the pacer thread")?;

    let mut tally = Tally::new()?;
    let mut dispatch_lag_us = histogram()?;
    let mut pending = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut pacing = true;
    while pacing || !pending.is_empty() {
        tokio::select! {
            // Outstanding records first: a record just pushed is sent on its first poll here.
            biased;
            Some(((acked, _, done), intended)) = pending.next() => {
                let (done, intended): (Instant, Instant) = (done, intended);
                if acked {
                    tally.acked += 1;
                    tally.latency_us.saturating_record(micros(done.saturating_duration_since(intended)));
                } else {
                    tally.errors += 1;
                }
            }
            due = due_rx.recv(), if pacing => match due {
                Some(due) => {
                    dispatch_lag_us.saturating_record(micros(due.intended.elapsed()));
                    let put = record(peer, next(seq), Duration::ZERO, plan.op_timeout);
                    pending.push(async move { (put.await, due.intended) });
                    sent += 1;
                }
                None => pacing = false,
            },
        }
    }
    if pacer.join().is_err() {
        bail!("the pacer thread panicked");
    }
    let elapsed = start.elapsed();
    Ok(Rated { offered_per_s: rate, sent, tally, dispatch_lag_us, elapsed })
}

/// Both phases: the peak, then the rated phase at `plan.rate` or a fraction of that peak.
pub(crate) async fn journal<P: Peer>(peer: &P, plan: &Plan) -> anyhow::Result<(Peak, Rated)> {
    let mut seq = 0;
    let peak = peak(peer, plan, &mut seq).await?;
    let rate = plan.rate.unwrap_or(peak.records_per_s() * plan.rated_fraction);
    if !(rate.is_finite() && rate > 0.0) {
        bail!(
            "the peak phase acknowledged no record ({} errors), so there is no rate to offer",
            peak.tally.errors
        );
    }
    let rated = rated(peer, plan, rate, &mut seq).await?;
    Ok((peak, rated))
}
