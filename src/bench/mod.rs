//! Benchmarks run by `dlog bench`: each measures dlog against a baseline measured in the same
//! run, on the same directory, and reports ratios (this machine is shared and noisy, so absolute
//! numbers from different runs do not compare).

pub mod baseline;
pub mod bookie;
pub mod compaction;
pub(crate) mod cpu;
pub mod harness;
pub mod journal;
pub mod load;
pub mod log;
pub(crate) mod machine;
pub mod metadata;
mod metadata_workload;
pub mod reads;
pub mod replication;
pub mod report;
pub mod stats;

use std::time::Duration;

/// `--ensemble`, `--write-quorum`, `--ack-quorum`: the quorum sizes of the segments a
/// benchmark writes (E=3 Qw=3 Qa=2 by default).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct QuorumArgs {
    /// E: bookies a segment is striped over.
    #[arg(long, default_value_t = 3)]
    pub ensemble: usize,
    /// Qw: bookies each entry is written to.
    #[arg(long, default_value_t = 3)]
    pub write_quorum: usize,
    /// Qa: acknowledgements an entry needs.
    #[arg(long, default_value_t = 2)]
    pub ack_quorum: usize,
}

/// A duration such as "10s", "500ms", "200us" or "1m"; zero is allowed (checked by the caller).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) =
        s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = number.parse().map_err(|_| format!("bad duration {s:?}: expected e.g. 10s or 500ms"))?;
    let secs = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}: use us, ms, s or m")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("duration {s:?} must be within [0, 1h]"));
    }
    Ok(Duration::from_secs_f64(secs))
}
