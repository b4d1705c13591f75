//! The compaction workload: write latency with compaction running, against the same writes
//! without it, in the same run.
//!
//! Two bookies get the same backlog: two segments of 64 KiB entries written interleaved and
//! flushed, so every entry log holds both, then one segment deleted, leaving each log half
//! live. Bookie A compacts (live fraction 0.9, the default byte rate); bookie B does not
//! (live fraction 0). Rounds alternate: the write workload on A while its compaction moves
//! the backlog, then the same on B. The figure is A's write p99 over B's (target at most 1.5).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use dlog_engine::{AddEntry, AddFlags, Bookie, EntryId, SegmentId, ShardId, StorageMode};
use serde::Serialize;

use crate::bench::journal::{EngineSettings, Report, Workload, bookie_config};
use crate::bench::load::{LoadSpec, Segments, run};
use crate::bench::stats::{Latency, histogram, latency};

/// Results of the compaction workload.
#[derive(Debug, Serialize)]
pub struct CompactionWrites {
    /// Write latency with compaction running.
    pub with_us: Latency,
    /// Write latency without compaction.
    pub without_us: Latency,
    /// Entries per second with and without.
    pub entries_per_s: (f64, f64),
    /// Live bytes compaction moved during the measured rounds.
    pub compacted_bytes: u64,
    /// Compaction passes during the measured rounds.
    pub compactions: u64,
    /// p99 with / p99 without.
    pub ratio_p99: f64,
}

/// Backlog per bookie: two segments of this many MiB each, interleaved.
const BACKLOG_MIB_PER_SEGMENT: u64 = 384;

fn backlog(bookie: &Bookie) -> Result<()> {
    let payload = Bytes::from(vec![0x5A; 64 << 10]);
    let key = Bytes::from_static(b"dlog-bench-master-key");
    let entries = (BACKLOG_MIB_PER_SEGMENT << 20) / (64 << 10);
    let per_shard: Vec<[SegmentId; 2]> = (0..bookie.shard_count())
        .map(|shard| {
            let mut ids = (1u64 << 50..).map(SegmentId).filter(|s| bookie.shard_of(*s) == ShardId(shard));
            [ids.next().expect("a segment"), ids.next().expect("a segment")]
        })
        .collect();
    let add = |segment: SegmentId, id: u64| AddEntry {
        segment,
        entry: EntryId(id),
        last_add_confirmed: id.checked_sub(1).map(EntryId),
        master_key: key.clone(),
        payload: payload.clone(),
        flags: AddFlags::NONE,
    };
    for chunk in (0..entries).collect::<Vec<_>>().chunks(16) {
        let mut adds = Vec::new();
        for id in chunk {
            for pair in &per_shard {
                adds.push(add(pair[0], *id));
                adds.push(add(pair[1], *id));
            }
        }
        bookie.add_entries(adds).wait().map_err(|e| anyhow::anyhow!("backlog add: {:?}", e.first()))?;
    }
    bookie.flush().context("flush backlog")?;
    for pair in &per_shard {
        bookie.delete_segment(pair[0]).wait().context("delete")?;
    }
    Ok(())
}

fn compaction_totals(bookie: &Bookie) -> Result<(u64, u64)> {
    let mut total = (0, 0);
    for shard in 0..bookie.shard_count() {
        let s = bookie.stats(ShardId(shard))?;
        total.0 += s.compacted_bytes;
        total.1 += s.compactions;
    }
    Ok(total)
}

/// Runs the compaction workload in `dir`.
pub(crate) fn run_compaction(dir: &Path, w: &Workload, e: &EngineSettings) -> Result<Report> {
    let open = |name: &str, live_fraction: f64| -> Result<Bookie> {
        let journal_dir = dir.join(name);
        let _ = std::fs::remove_dir_all(&journal_dir);
        let mut config = bookie_config(&journal_dir, w, e)?;
        config.storage_mode = StorageMode::EntryLogs;
        config.compaction_live_fraction = live_fraction;
        config.entry_log_bytes = 128 << 20;
        let bookie = Bookie::open(config).context("open bookie")?;
        Ok(bookie)
    };
    // B first, so its backlog is written before A's compaction starts.
    let without = open("without", 0.0)?;
    backlog(&without)?;
    let with = open("with", 0.9)?;
    backlog(&with)?;
    let backend = with.backend().to_string();
    let direct_io = with.direct_io();
    let round = w.duration / w.rounds.max(1);
    let spec = LoadSpec {
        entry_bytes: w.entry_size,
        concurrency: w.concurrency,
        batch: w.batch,
        duration: round,
        spin: false,
    };
    let mut seg_with = Segments::new(&with, 2, 1, w.entry_size);
    let mut seg_without = Segments::new(&without, 2, 1, w.entry_size);
    let (mut h_with, mut h_without) = (histogram(), histogram());
    let (mut n_with, mut n_without, mut t_with, mut t_without) = (0u64, 0u64, Duration::ZERO, Duration::ZERO);
    let before = compaction_totals(&with)?;
    for _ in 0..w.rounds.max(1) {
        let r = run(&with, &mut seg_with, &spec, None)?;
        h_with.add(&r.histogram).ok();
        (n_with, t_with) = (n_with + r.entries, t_with + r.elapsed);
        let r = run(&without, &mut seg_without, &spec, None)?;
        h_without.add(&r.histogram).ok();
        (n_without, t_without) = (n_without + r.entries, t_without + r.elapsed);
    }
    let after = compaction_totals(&with)?;
    with.close();
    without.close();
    let _ = std::fs::remove_dir_all(dir.join("with"));
    let _ = std::fs::remove_dir_all(dir.join("without"));
    let (with_us, without_us) = (latency(&h_with), latency(&h_without));
    let result = CompactionWrites {
        ratio_p99: with_us.p99 / without_us.p99,
        with_us,
        without_us,
        entries_per_s: (n_with as f64 / t_with.as_secs_f64(), n_without as f64 / t_without.as_secs_f64()),
        compacted_bytes: after.0 - before.0,
        compactions: after.1 - before.1,
    };
    if result.compactions == 0 {
        anyhow::bail!("compaction did not run during the measured rounds: the figure would be meaningless");
    }
    let mut report = crate::bench::reads::append_report(w, e, (backend, direct_io), n_with, t_with, &h_with);
    report.compaction = Some(result);
    Ok(report)
}
