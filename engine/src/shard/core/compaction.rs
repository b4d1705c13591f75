//! Garbage collection of entry logs: segment deletion, and compaction of logs whose live
//! fraction fell under `compaction_live_fraction`.
//!
//! Deletion: `delete_segment` journals a Delete record and marks the segment deleted (a
//! tombstone: adds are refused, reads answer `NoSuchSegment`). Once durable, the shell asks the
//! deletion check (the metadata hook); only a confirmed deletion drops the segment's spans from
//! the index, which makes their bytes dead.
//!
//! Compaction, one pass at a time, throttled to `compaction_bytes_per_s`: pick the log with the
//! lowest live fraction under the threshold (never the log being appended to); read up to
//! `COMPACTION_PASS_BYTES_MAX` of its live spans (one sequential read each, every record
//! checked); write them as a new run through the flush writer (flushes go first); index the new
//! run and drop the moved spans; persist the manifest; delete the log once nothing in it is
//! live and no read uses it.
//!
//! Invariants:
//! - G1: a deleted segment's bytes are dropped only after the deletion check confirmed it.
//! - G2: a log file is deleted only after a manifest that does not list it is durable, and
//!   while no read of it is in flight. A crash in between leaves an unlisted log, which the
//!   next open deletes (when it reads the manifest; a rebuild keeps every log it finds). A
//!   listed log with no indexed run at open is left out of the next manifest, then deleted.
//! - G3: a span that fails its checks while being moved stops the compaction of its log (the
//!   log is kept as it is and not compacted again until restart): damage is never dropped.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::flush::{FlushState, RunSource, Writing};
use super::{OP_COMPACT, Output, ShardCore};
use crate::constants::{RECORD_HEADER_BYTES, SECTOR_BYTES};
use crate::ids::{LogSeq, SegmentId};
use crate::io::buf::{AlignedBuf, round_up};
use crate::io::{Completion, DiskOp};
use crate::storage::run::{self, RunEncoder};
use crate::storage::run_index::LiveSpan;

/// Live bytes one compaction pass moves at most (a single larger span moves alone).
pub(super) const COMPACTION_PASS_BYTES_MAX: u64 = 16 << 20;

/// Entries moved by one compaction pass.
#[derive(Debug)]
pub(super) struct Moved {
    /// The entries, sorted by (segment, entry).
    pub(super) entries: Vec<(SegmentId, Vec<(u64, Bytes)>)>,
    /// The spans they came from: (segment, first entry, run seq).
    spans: Vec<(SegmentId, u64, u64)>,
    victim: LogSeq,
    bytes: u64,
}

#[derive(Debug)]
struct Reading {
    victim: LogSeq,
    spans: Vec<LiveSpan>,
    results: Vec<Option<Vec<(u64, Bytes)>>>,
    ops: Vec<(u64, usize, usize)>,
    failed: Option<String>,
}

/// Garbage collection state of one shard.
#[derive(Debug, Default)]
pub(super) struct Compaction {
    /// Deleted segments whose deletion is confirmed: their sections are dead on sight (G1).
    pub(super) purged: HashSet<SegmentId>,
    /// No compaction pass starts before this (throttle, retry delay).
    pub(super) next_at: Option<Instant>,
    reading: Option<Reading>,
    ready: Option<Moved>,
    /// A manifest after a compaction is being persisted.
    pub(super) persisting: bool,
    /// Logs left out of the manifest being persisted, to delete once it is durable.
    unlisted: Vec<LogSeq>,
    /// Logs to delete once no read uses them (G2).
    doomed: Vec<LogSeq>,
    /// Logs not to compact again (G3).
    skip: HashSet<LogSeq>,
}

impl Compaction {
    /// Compaction state that never touches `logs` (they hold damage, G3).
    pub(super) fn kept(logs: Vec<LogSeq>) -> Compaction {
        Compaction { skip: logs.into_iter().collect(), ..Compaction::default() }
    }
}

impl<T> ShardCore<T> {
    /// A segment's deletion is durable: ask the deletion check.
    pub(super) fn deletion_durable(&mut self, segment: SegmentId) {
        if self.storage.is_some() {
            self.out.push_back(Output::ConfirmDeletion(segment));
        }
    }

    /// The deletion check answered for `segment` (G1).
    pub fn on_deletion_confirmed(&mut self, segment: SegmentId, confirmed: bool, now: Instant) {
        let shard = self.settings.shard.0;
        let Some(storage) = self.storage.as_mut() else { return };
        if !confirmed {
            tracing::warn!(shard, %segment, "deletion not confirmed by the deletion check; its data is kept");
            return;
        }
        storage.compaction.purged.insert(segment);
        let freed = storage.index.remove_segment(segment);
        self.stats.deleted_bytes += freed;
        tracing::info!(shard, %segment, freed, "deleted segment's entries dropped from the index");
        self.maybe_start_compaction(now);
    }

    /// Logs listed at open that hold no indexed run (everything in them was moved or deleted
    /// before a restart): leave them out of the next manifest, then delete them (G2).
    pub(super) fn dead_logs_at_start(&mut self) {
        let Some(storage) = self.storage.as_mut() else { return };
        let live: HashSet<LogSeq> = storage.index.runs().map(|r| r.log).collect();
        let skip = &storage.compaction.skip;
        let dead: Vec<LogSeq> =
            storage.logs.iter().map(|(l, _)| *l).filter(|l| !live.contains(l) && !skip.contains(l)).collect();
        if dead.is_empty() {
            return;
        }
        storage.logs.retain(|(l, _)| !dead.contains(l));
        storage.compaction.unlisted.extend(dead);
        storage.compaction.persisting = true;
        storage.state = FlushState::Checkpointing;
        let manifest = self.manifest(None).expect("storage exists");
        self.out.push_back(Output::PersistManifest(manifest));
    }

    /// Deleted segments still holding runs at open: ask the deletion check again.
    pub(super) fn confirm_deletions_at_start(&mut self) {
        let Some(storage) = &self.storage else { return };
        let pending: Vec<SegmentId> = self
            .segments
            .iter()
            .filter(|(s, st)| st.deleted && storage.index.holds(**s))
            .map(|(s, _)| *s)
            .collect();
        for segment in pending {
            self.out.push_back(Output::ConfirmDeletion(segment));
        }
    }

    /// Moves compaction along: deletes doomed logs, starts a moved run's write, or starts a
    /// pass. Flushes come first.
    pub(super) fn maybe_start_compaction(&mut self, now: Instant) {
        if self.poisoned.is_some() {
            return;
        }
        self.delete_doomed_logs();
        let Some(storage) = self.storage.as_mut() else { return };
        let flush_wanted = storage.cache.sealed().is_some()
            || storage.cache.active().bytes() >= storage.settings.write_cache_bytes_max / 2;
        if storage.busy() || flush_wanted || storage.compaction.persisting {
            return;
        }
        if let Some(moved) = storage.compaction.ready.take() {
            let Some(seq) = storage.take_run_seq() else {
                // F4: no seq left. The moved entries are dropped; their spans stay where they are.
                tracing::error!(
                    shard = self.settings.shard.0,
                    next_run = storage.next_run,
                    "no run seq left below 2^63 (runs on disk claim seqs near it); compaction waits"
                );
                storage.compaction.next_at = Some(now + super::flush::FLUSH_RETRY_DELAY);
                return;
            };
            let epoch = storage.active_log.map_or(u64::MAX, |l| l.0);
            let encoder = RunEncoder::new(epoch, seq, &moved.entries).expect("a pass fits one run");
            storage.state =
                FlushState::Writing(Box::new(Writing::new(encoder, RunSource::Compaction(Box::new(moved)))));
            self.place_run();
            self.flush_pump();
            return;
        }
        if storage.compaction.reading.is_some() {
            return;
        }
        match storage.compaction.next_at {
            Some(t) if now < t => return,
            // Passed: cleared, so the shard's deadline does not stay in the past.
            Some(_) => storage.compaction.next_at = None,
            None => {}
        }
        let threshold = storage.settings.compaction_live_fraction;
        let victim = storage
            .index
            .log_use()
            .filter(|(log, usage)| {
                Some(*log) != storage.active_log
                    && !storage.compaction.skip.contains(log)
                    && !storage.compaction.doomed.contains(log)
                    && usage.total > 0
                    && (usage.live == 0 || (usage.live as f64) < threshold * usage.total as f64)
            })
            .min_by(|a, b| {
                let fa = a.1.live as f64 / a.1.total as f64;
                let fb = b.1.live as f64 / b.1.total as f64;
                fa.total_cmp(&fb)
            })
            .map(|(log, usage)| (log, usage.live));
        let Some((victim, live)) = victim else { return };
        if live == 0 {
            // Nothing to move: drop the log from the manifest, then delete it (G2).
            storage.logs.retain(|(l, _)| *l != victim);
            storage.compaction.unlisted.push(victim);
            storage.compaction.persisting = true;
            storage.state = FlushState::Checkpointing;
            let manifest = self.manifest(None).expect("storage exists");
            self.out.push_back(Output::PersistManifest(manifest));
            return;
        }
        // A pass writes its bytes before it frees any: on a nearly full disk it stays small.
        let pass_max =
            self.free_bytes.map_or(COMPACTION_PASS_BYTES_MAX, |f| (f / 4).min(COMPACTION_PASS_BYTES_MAX));
        let mut spans = Vec::new();
        let mut bytes = 0;
        for span in storage.index.live_spans(victim) {
            if !spans.is_empty() && bytes + span.bytes > pass_max {
                break;
            }
            bytes += span.bytes;
            spans.push(span);
        }
        let mut reading = Reading {
            victim,
            results: vec![None; spans.len()],
            ops: Vec::with_capacity(spans.len()),
            spans,
            failed: None,
        };
        for (i, span) in reading.spans.iter().enumerate() {
            let at = span.run.offset + span.records_at;
            let start = at - at % SECTOR_BYTES as u64;
            let skew = (at - start) as usize;
            let len = round_up(skew + span.bytes as usize, SECTOR_BYTES);
            let mut buf = AlignedBuf::with_capacity(len);
            buf.set_len(len);
            self.op_next += 1;
            let op = (self.op_next << super::OP_KIND_BITS) | OP_COMPACT;
            reading.ops.push((op, i, skew));
            let file = super::flush::entry_log_file(victim);
            self.out.push_back(Output::Disk(op, DiskOp::Read { file, offset: start, buf }));
        }
        if let Some(storage) = self.storage.as_mut() {
            storage.compaction.reading = Some(reading);
        }
    }

    /// A compaction read completed: check and keep its records.
    pub(super) fn on_compaction_read(&mut self, completion: Completion, now: Instant) {
        let Some(storage) = self.storage.as_mut() else { return };
        let Some(reading) = storage.compaction.reading.as_mut() else { return };
        let Some(k) = reading.ops.iter().position(|(op, _, _)| *op == completion.op) else { return };
        let (_, i, skew) = reading.ops.swap_remove(k);
        let span = reading.spans[i];
        let log = reading.victim;
        match completion.result {
            Err((_, source)) => {
                reading.failed.get_or_insert(format!("entry log {log}: read failed: {source}"));
            }
            Ok(()) => {
                let bytes = &completion.buf.as_slice()[..completion.bytes.min(completion.buf.len())];
                match decode_span(bytes, skew, log, &span) {
                    Ok(entries) => reading.results[i] = Some(entries),
                    Err(detail) => {
                        reading.failed.get_or_insert(detail);
                    }
                }
            }
        }
        if !reading.ops.is_empty() {
            return;
        }
        let reading = storage.compaction.reading.take().expect("checked");
        if let Some(detail) = reading.failed {
            // G3: keep the log as it is.
            tracing::error!(shard = self.settings.shard.0, log = %reading.victim, %detail,
                "compaction stopped: a live span failed its checks; the entry log is kept");
            storage.compaction.skip.insert(reading.victim);
            return;
        }
        let mut all: Vec<(SegmentId, u64, u64, Bytes)> = Vec::new();
        for (span, entries) in reading.spans.iter().zip(reading.results) {
            for (id, payload) in entries.expect("every read succeeded") {
                all.push((span.segment, id, span.run.header.seq, payload));
            }
        }
        // Overlapping spans: the newer run's copy wins (RI2).
        all.sort_by_key(|(s, id, run, _)| (*s, *id, *run));
        let mut entries: Vec<(SegmentId, Vec<(u64, Bytes)>)> = Vec::new();
        for (segment, id, _, payload) in all {
            match entries.last_mut() {
                Some((s, list)) if *s == segment => match list.last_mut() {
                    Some(last) if last.0 == id => *last = (id, payload),
                    _ => list.push((id, payload)),
                },
                _ => entries.push((segment, vec![(id, payload)])),
            }
        }
        let bytes = reading.spans.iter().map(|s| s.bytes).sum();
        let spans = reading.spans.iter().map(|s| (s.segment, s.first, s.run.header.seq)).collect();
        storage.compaction.ready = Some(Moved { entries, spans, victim: reading.victim, bytes });
        self.maybe_start_compaction(now);
    }

    /// A compaction's run is durable and indexed: drop the moved spans, then persist the
    /// manifest (the victim left out of it once nothing in it is live).
    pub(super) fn compaction_written(&mut self, moved: Moved, run_bytes: u64, now: Instant) {
        let shard = self.settings.shard.0;
        let Some(storage) = self.storage.as_mut() else { return };
        for (segment, first, run) in &moved.spans {
            storage.index.remove_span(*segment, *first, *run);
        }
        let live = storage.index.log_use().find(|(l, _)| *l == moved.victim).map_or(0, |(_, u)| u.live);
        if live == 0 {
            storage.logs.retain(|(l, _)| *l != moved.victim);
            storage.compaction.unlisted.push(moved.victim);
        }
        let rate = storage.settings.compaction_bytes_per_s.max(1);
        storage.compaction.next_at = Some(now + Duration::from_secs_f64(moved.bytes as f64 / rate as f64));
        storage.compaction.persisting = true;
        self.stats.compactions += 1;
        self.stats.compacted_bytes += moved.bytes;
        tracing::info!(shard, log = %moved.victim, moved = moved.bytes, run_bytes, live_left = live,
            "compaction pass done");
        let manifest = self.manifest(None).expect("storage exists");
        self.out.push_back(Output::PersistManifest(manifest));
    }

    /// The manifest after a compaction is durable (or not): logs it left out may go (G2).
    pub(super) fn compaction_persisted(&mut self, ok: bool, _now: Instant) {
        let Some(storage) = self.storage.as_mut() else { return };
        let unlisted = std::mem::take(&mut storage.compaction.unlisted);
        if ok {
            storage.compaction.doomed.extend(unlisted);
        } else {
            self.stats.manifest_failures += 1;
            tracing::error!(shard = self.settings.shard.0, logs = ?unlisted,
                "manifest after a compaction pass not persisted; emptied logs are kept for now");
        }
        // Not persisted: the files stay; the next open deletes them once a later manifest
        // leaves them out.
        self.delete_doomed_logs();
    }

    /// Deletes doomed logs no read uses (G2).
    fn delete_doomed_logs(&mut self) {
        let Some(storage) = self.storage.as_ref() else { return };
        if storage.compaction.doomed.is_empty() {
            return;
        }
        let busy: HashSet<LogSeq> = self.reads.values().filter_map(|r| r.entry_log()).collect();
        let (go, stay): (Vec<LogSeq>, Vec<LogSeq>) =
            storage.compaction.doomed.iter().partition(|l| !busy.contains(l));
        let Some(storage) = self.storage.as_mut() else { return };
        storage.compaction.doomed = stay;
        for log in go {
            storage.index.forget_log(log);
            self.stats.entry_logs_deleted += 1;
            self.out.push_back(Output::DeleteEntryLog(log));
        }
    }
}

/// Checks and copies the records of `span` from a read of its bytes starting at `skew`.
fn decode_span(bytes: &[u8], skew: usize, log: LogSeq, span: &LiveSpan) -> Result<Vec<(u64, Bytes)>, String> {
    let mut out = Vec::with_capacity(span.count as usize);
    let mut at = skew;
    for i in 0..span.count {
        let id = span.first + i;
        let payload =
            bytes.get(at..).ok_or_else(|| format!("entry log {log}: entry {id} cut off")).and_then(|b| {
                run::decode_entry(b, log.0, span.segment, id).map_err(|e| format!("entry log {log}: {e}"))
            })?;
        at += RECORD_HEADER_BYTES + payload.len();
        out.push((id, Bytes::copy_from_slice(payload)));
    }
    Ok(out)
}
