//! The bookie server's metrics: names, labels, and handles resolved once per network thread.
//!
//! Owns: every metric the server publishes (docs/bookie.md lists them) and the per-thread
//! handle tables that make recording one a few atomic operations (no name lookup per request).
//! Does not own: exporting (run.rs installs the Prometheus exporter when `--metrics-listen` is
//! set; without it every handle is a no-op) nor the engine's counters (run.rs samples them).

use std::time::Duration;

use dlog_engine::CoreStats;
use dlog_protocol::{Op, Status};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Requests answered, by op and status.
pub const REQUESTS: &str = "dlog_bookie_requests_total";
/// Time from a request's decoding to its response being queued for sending, by op.
pub const REQUEST_SECONDS: &str = "dlog_bookie_request_seconds";
/// Connections open now.
pub const CONNECTIONS: &str = "dlog_bookie_connections";
/// Connections accepted.
pub const CONNECTIONS_ACCEPTED: &str = "dlog_bookie_connections_accepted_total";
/// Connections closed, by reason.
pub const CONNECTIONS_CLOSED: &str = "dlog_bookie_connections_closed_total";
/// Requests decoded but not yet answered and sent, all connections.
pub const IN_FLIGHT: &str = "dlog_bookie_requests_in_flight";
/// Responses sent per send call (how well acknowledgements are batched).
pub const RESPONSES_PER_SEND: &str = "dlog_bookie_responses_per_send";

/// Bucket bounds of `REQUEST_SECONDS`: 50 us to 10 s.
pub const REQUEST_SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// Bucket bounds of `RESPONSES_PER_SEND`.
pub const RESPONSES_PER_SEND_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The label value of an op byte.
pub fn op_name(op: u8) -> &'static str {
    match Op::from_u8(op) {
        Some(Op::Add) => "add",
        Some(Op::Read) => "read",
        Some(Op::ReadLastAddConfirmed) => "read_lac",
        Some(Op::WriteLastAddConfirmed) => "write_lac",
        Some(Op::LongPoll) => "long_poll",
        Some(Op::ReadRange) => "read_range",
        Some(Op::DeleteSegment) => "delete_segment",
        Some(Op::Auth) => "auth",
        None => "unknown",
    }
}

/// Why a connection was closed (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it.
    Eof,
    /// Reading or writing failed.
    Io,
    /// The stream broke the framing (`DecodeError::Frame`).
    BadFrame,
    /// Nothing in flight for the idle timeout.
    Idle,
    /// The server is shutting down.
    Drain,
}

impl CloseReason {
    const ALL: [CloseReason; 5] =
        [CloseReason::Eof, CloseReason::Io, CloseReason::BadFrame, CloseReason::Idle, CloseReason::Drain];

    fn label(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::Io => "io",
            CloseReason::BadFrame => "bad_frame",
            CloseReason::Idle => "idle",
            CloseReason::Drain => "drain",
        }
    }
}

const OPS: usize = Op::ALL.len() + 1; // the last slot is "unknown"

fn op_slot(op: u8) -> usize {
    Op::ALL.iter().position(|o| o.as_u8() == op).unwrap_or(OPS - 1)
}

/// One network thread's handles.
pub struct ServerMetrics {
    requests: Vec<[Counter; Status::ALL.len()]>,
    latency: Vec<Histogram>,
    connections: Gauge,
    accepted: Counter,
    closed: [Counter; CloseReason::ALL.len()],
    in_flight: Gauge,
    responses_per_send: Histogram,
}

impl ServerMetrics {
    /// Resolves every handle (against the recorder installed now, if any).
    pub fn new() -> ServerMetrics {
        let op_label = |slot: usize| Op::ALL.get(slot).map_or("unknown", |op| op_name(op.as_u8()));
        ServerMetrics {
            requests: (0..OPS)
                .map(|slot| {
                    Status::ALL.map(
                        |status| counter!(REQUESTS, "op" => op_label(slot), "status" => status.to_string()),
                    )
                })
                .collect(),
            latency: (0..OPS).map(|slot| histogram!(REQUEST_SECONDS, "op" => op_label(slot))).collect(),
            connections: gauge!(CONNECTIONS),
            accepted: counter!(CONNECTIONS_ACCEPTED),
            closed: CloseReason::ALL.map(|r| counter!(CONNECTIONS_CLOSED, "reason" => r.label())),
            in_flight: gauge!(IN_FLIGHT),
            responses_per_send: histogram!(RESPONSES_PER_SEND),
        }
    }

    /// A request answered.
    pub fn answered(&self, op: u8, status: Status, took: Duration) {
        let slot = op_slot(op);
        self.requests[slot][status.as_u8() as usize].increment(1);
        self.latency[slot].record(took.as_secs_f64());
    }

    /// A connection accepted.
    pub fn opened(&self) {
        self.accepted.increment(1);
        self.connections.increment(1.0);
    }

    /// A connection closed.
    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].increment(1);
        self.connections.decrement(1.0);
    }

    /// Requests decoded (`+n`) or answered and sent (`-n`).
    pub fn in_flight(&self, delta: f64) {
        self.in_flight.increment(delta);
    }

    /// One send of `responses` responses.
    pub fn sent(&self, responses: usize) {
        self.responses_per_send.record(responses as f64);
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

/// Publishes a shard's engine counters (sampled by run.rs) and its queue depth.
pub fn record_shard(shard: u32, stats: &CoreStats, queue_depth: usize) {
    let s = shard.to_string();
    counter!("dlog_journal_batches_total", "shard" => s.clone()).absolute(stats.batches);
    counter!("dlog_journal_batch_bytes_total", "shard" => s.clone()).absolute(stats.batch_bytes);
    counter!("dlog_journal_entries_total", "shard" => s.clone()).absolute(stats.entries);
    counter!("dlog_journal_sync_nanoseconds_total", "shard" => s.clone()).absolute(stats.journal_sync_ns);
    counter!("dlog_storage_flushes_total", "shard" => s.clone()).absolute(stats.flushes);
    counter!("dlog_storage_flushed_bytes_total", "shard" => s.clone()).absolute(stats.flushed_bytes);
    counter!("dlog_storage_compactions_total", "shard" => s.clone()).absolute(stats.compactions);
    counter!("dlog_storage_cache_reads_total", "shard" => s.clone()).absolute(stats.cache_reads);
    counter!("dlog_storage_log_reads_total", "shard" => s.clone()).absolute(stats.log_reads);
    gauge!("dlog_shard_read_only", "shard" => s.clone()).set(if stats.read_only { 1.0 } else { 0.0 });
    gauge!("dlog_shard_queue_depth", "shard" => s).set(queue_depth as f64);
}

/// Publishes a data directory's disk usage.
pub fn record_disk(dir: &str, total_bytes: u64, free_bytes: u64) {
    gauge!("dlog_disk_total_bytes", "dir" => dir.to_string()).set(total_bytes as f64);
    gauge!("dlog_disk_free_bytes", "dir" => dir.to_string()).set(free_bytes as f64);
}
