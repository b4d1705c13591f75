//! The report: one JSON document with the key names of `dlog bench --workload journal`
//! (`records_per_s`, `mb_per_s`, `publish_latency_us`, ...), written to `--json` (or to
//! stdout without it), and a one-line summary on stdout.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::load::{Peak, Rated};

/// What the peer module knows about the system under test.
#[derive(Debug)]
pub(crate) struct PeerInfo {
    /// `nats-jetstream` or `etcd`.
    pub(crate) peer: &'static str,
    /// The server's version, as it reports it.
    pub(crate) version: String,
    /// Exactly what an acknowledgement means for this peer.
    pub(crate) durability: String,
    pub(crate) record_size: usize,
    /// The flags.
    pub(crate) config: Value,
}

/// p50/p90/p99/p999/max (and mean, count) of a latency histogram in µs.
fn percentiles(latency_us: &Histogram<u64>) -> Value {
    json!({
        "p50": latency_us.value_at_quantile(0.50),
        "p90": latency_us.value_at_quantile(0.90),
        "p99": latency_us.value_at_quantile(0.99),
        "p999": latency_us.value_at_quantile(0.999),
        "max": latency_us.max(),
        "mean": (latency_us.mean() * 10.0).round() / 10.0,
        "count": latency_us.len(),
    })
}

/// The JSON document.
pub(crate) fn document(info: &PeerInfo, peak: &Peak, rated: &Rated) -> Value {
    let records_per_s = peak.records_per_s();
    let unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json!({
        "workload": "journal",
        "peer": info.peer,
        "version": info.version,
        "durability": info.durability,
        "record_size": info.record_size,
        "records_per_s": records_per_s.round(),
        "mb_per_s": (records_per_s * info.record_size as f64 / 1e4).round() / 100.0,
        "errors": peak.tally.errors + rated.tally.errors,
        "publish_latency_us": percentiles(&rated.tally.latency_us),
        "latency_at_records_per_s": rated.offered_per_s.round(),
        "peak": {
            "acked": peak.tally.acked,
            "errors": peak.tally.errors,
            "window_s": peak.window.as_secs_f64(),
            "closed_loop_latency_us": percentiles(&peak.tally.latency_us),
        },
        "rated": {
            "offered_records_per_s": rated.offered_per_s.round(),
            "sent": rated.sent,
            "acked": rated.tally.acked,
            "errors": rated.tally.errors,
            "elapsed_s": (rated.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "dispatch_lag_us": percentiles(&rated.dispatch_lag_us),
        },
        "config": info.config,
        "host": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "measured_at_unix_s": unix_secs,
    })
}

/// Prints the summary, and writes the document to `json` (to stdout if `None`).
pub(crate) fn emit(document: &Value, json: Option<&Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(document).context("encoding the report")?;
    let latency = &document["publish_latency_us"];
    println!(
        "{} {}: peak {} records/s ({} MB/s); at {} records/s: p50 {} p99 {} p999 {} max {} µs; errors {}",
        document["peer"].as_str().unwrap_or("?"),
        document["version"].as_str().unwrap_or("?"),
        document["records_per_s"],
        document["mb_per_s"],
        document["latency_at_records_per_s"],
        latency["p50"],
        latency["p99"],
        latency["p999"],
        latency["max"],
        document["errors"],
    );
    match json {
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{text}");
            Ok(())
        }
    }
}
