//! `RunIndex`: the in-memory index of a shard's entry logs: which runs exist, and per segment
//! which run sections hold which entry ids.
//!
//! Memory is per (segment, section), not per entry: a lookup finds the section, then reads one
//! array element from the run (one sector) to learn where the record is. Rebuilt at open from
//! the manifest's run list or, without one, from the entry logs themselves.
//!
//! Invariants:
//! - RI1: a span is added only once its run is durable (footer written and flushed).
//! - RI2: where spans of one segment overlap (an entry added again after a flush), the span of
//!   the newer run answers; entries are immutable once acknowledged, so either copy is right.
//! - RI3: indexed runs have distinct seqs, all below `RUN_SEQ_LIMIT` (RN4): `insert` refuses a
//!   run whose seq is taken or past the limit, and leaves the index as it was. Spans are keyed
//!   by seq, so two runs under one seq would answer for each other; a shard never writes that,
//!   but a damaged disk can claim it, and the caller reports the refused run as damage.

use std::collections::{BTreeMap, HashMap};

use crate::ids::{LogSeq, SegmentId};
use crate::storage::run::{ARRAY_ELEMENT_BYTES, RUN_SEQ_LIMIT, RunHeader, Section};

/// A run and where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// The entry log.
    pub log: LogSeq,
    /// Offset of the run in the log.
    pub offset: u64,
    /// The run's header.
    pub header: RunHeader,
}

/// Where an entry's array element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// The run.
    pub run: RunInfo,
    /// Absolute offset of the entry's array element in the log.
    pub element_at: u64,
    /// Entries of the same section from this one on (this one included): they follow it in
    /// the run, contiguous, in id order.
    pub remaining: u64,
    /// The entry's position in its section (0: the first, whose record is at `section_at`).
    pub index_in_section: u64,
    /// Absolute offset in the log of the section's first record.
    pub section_at: u64,
    /// Absolute offset in the log of the end of the section's records.
    pub section_end: u64,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    run: u64,
    count: u64,
    array_index: u64,
    /// Offset of the span's first record in its run.
    records_at: u64,
    /// Bytes of its records.
    bytes: u64,
}

#[derive(Debug, Default)]
struct SegmentSpans {
    /// Keyed by (first entry, run seq).
    spans: BTreeMap<(u64, u64), Span>,
    overlapping: bool,
}

/// A live span as compaction sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveSpan {
    /// The segment.
    pub segment: SegmentId,
    /// First entry id.
    pub first: u64,
    /// Entries.
    pub count: u64,
    /// The run holding it.
    pub run: RunInfo,
    /// Offset of its first record in the run (records of a span are contiguous).
    pub records_at: u64,
    /// Bytes of its records.
    pub bytes: u64,
}

/// Bytes of runs' records in one entry log: all of them, and those still indexed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogUse {
    /// Record bytes of every run written to the log.
    pub total: u64,
    /// Record bytes of spans still indexed (live).
    pub live: u64,
}

/// Why `RunIndex::insert` refused a run (RI3); the index is as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// An indexed run has the seq already.
    #[error("run seq {seq} is taken by the run at entry log {log} offset {offset}")]
    SeqTaken {
        /// The seq.
        seq: u64,
        /// The entry log of the run indexed under it.
        log: LogSeq,
        /// That run's offset in its log.
        offset: u64,
    },
    /// The seq is at or past `RUN_SEQ_LIMIT` (RN4).
    #[error("run seq {0} is past the limit 2^63")]
    SeqPastLimit(u64),
}

/// The index of one shard's runs.
#[derive(Debug, Default)]
pub struct RunIndex {
    runs: BTreeMap<u64, RunInfo>,
    /// Spans still indexed per run: a run with none is dead.
    run_spans: HashMap<u64, usize>,
    segments: HashMap<SegmentId, SegmentSpans>,
    logs: BTreeMap<LogSeq, LogUse>,
}

impl RunIndex {
    /// Adds a durable run and its sections (RI1). Sections of segments `dead` says are gone
    /// are counted in the log's total but not indexed. Refuses a run whose seq is taken or past
    /// the limit (RI3), changing nothing.
    pub fn insert(
        &mut self,
        run: RunInfo,
        sections: &[Section],
        dead: impl Fn(SegmentId) -> bool,
    ) -> Result<(), InsertError> {
        let seq = run.header.seq;
        if seq >= RUN_SEQ_LIMIT {
            return Err(InsertError::SeqPastLimit(seq));
        }
        if let Some(taken) = self.runs.get(&seq) {
            return Err(InsertError::SeqTaken { seq, log: taken.log, offset: taken.offset });
        }
        let mut records_at = super::run::RUN_HEADER_BYTES as u64;
        let mut indexed = 0;
        let usage = self.logs.entry(run.log).or_default();
        for s in sections {
            let at = records_at;
            records_at += s.bytes;
            usage.total += s.bytes;
            if dead(s.segment) {
                continue;
            }
            usage.live += s.bytes;
            indexed += 1;
            let spans = self.segments.entry(s.segment).or_default();
            let end = s.first + s.count;
            let before = spans.spans.range(..=(s.first, u64::MAX)).next_back();
            let after = spans.spans.range((s.first, 0)..).next();
            if before.is_some_and(|((first, _), span)| first + span.count > s.first)
                || after.is_some_and(|((first, _), _)| *first < end)
            {
                spans.overlapping = true;
            }
            let span =
                Span { run: seq, count: s.count, array_index: s.array_index, records_at: at, bytes: s.bytes };
            spans.spans.insert((s.first, seq), span);
        }
        if indexed > 0 {
            self.runs.insert(seq, run);
            self.run_spans.insert(seq, indexed);
        }
        Ok(())
    }

    fn drop_span(&mut self, span: &Span) {
        if let Some(run) = self.runs.get(&span.run)
            && let Some(usage) = self.logs.get_mut(&run.log)
        {
            usage.live = usage.live.saturating_sub(span.bytes);
        }
        if let Some(n) = self.run_spans.get_mut(&span.run) {
            *n -= 1;
            if *n == 0 {
                self.run_spans.remove(&span.run);
                self.runs.remove(&span.run);
            }
        }
    }

    /// Forgets every span of `segment` (deleted); returns the record bytes freed.
    pub fn remove_segment(&mut self, segment: SegmentId) -> u64 {
        let Some(spans) = self.segments.remove(&segment) else { return 0 };
        let mut freed = 0;
        for span in spans.spans.values() {
            freed += span.bytes;
            self.drop_span(span);
        }
        freed
    }

    /// Forgets one span (moved by compaction). False if it is not indexed.
    pub fn remove_span(&mut self, segment: SegmentId, first: u64, run: u64) -> bool {
        let Some(spans) = self.segments.get_mut(&segment) else { return false };
        let Some(span) = spans.spans.remove(&(first, run)) else { return false };
        if spans.spans.is_empty() {
            self.segments.remove(&segment);
        }
        self.drop_span(&span);
        true
    }

    /// Drops spans that a newer run holds again whole (same segment, same first entry, same
    /// count): what compaction moved before a restart, found again in both runs at open. Their
    /// bytes are dead; counting them live would make compaction move them again. Returns how
    /// many were dropped.
    pub fn drop_shadowed(&mut self) -> usize {
        let mut shadowed: Vec<(SegmentId, u64, u64)> = Vec::new();
        for (segment, spans) in &self.segments {
            if !spans.overlapping {
                continue;
            }
            let mut by_range: HashMap<(u64, u64), u64> = HashMap::new();
            for ((first, run), span) in &spans.spans {
                let newest = by_range.entry((*first, span.count)).or_insert(*run);
                if *run > *newest {
                    shadowed.push((*segment, *first, *newest));
                    *newest = *run;
                } else if *run < *newest {
                    shadowed.push((*segment, *first, *run));
                }
            }
        }
        let count = shadowed.len();
        for (segment, first, run) in shadowed {
            self.remove_span(segment, first, run);
        }
        count
    }

    /// The spans still indexed in `log`, by segment and entry.
    pub fn live_spans(&self, log: LogSeq) -> Vec<LiveSpan> {
        let mut out: Vec<LiveSpan> = Vec::new();
        for (segment, spans) in &self.segments {
            for ((first, _), span) in &spans.spans {
                let run = self.runs[&span.run];
                if run.log == log {
                    let (records_at, bytes) = (span.records_at, span.bytes);
                    out.push(LiveSpan {
                        segment: *segment,
                        first: *first,
                        count: span.count,
                        run,
                        records_at,
                        bytes,
                    });
                }
            }
        }
        out.sort_by_key(|s| (s.segment, s.first, s.run.header.seq));
        out
    }

    /// Record bytes per entry log, total and live.
    pub fn log_use(&self) -> impl Iterator<Item = (LogSeq, LogUse)> + '_ {
        self.logs.iter().map(|(log, usage)| (*log, *usage))
    }

    /// Forgets an entry log's accounting (the log is deleted; no run in it is indexed).
    pub fn forget_log(&mut self, log: LogSeq) {
        debug_assert!(self.runs.values().all(|r| r.log != log));
        self.logs.remove(&log);
    }

    /// Where `entry` of `segment` is, if a run holds it (RI2).
    pub fn find(&self, segment: SegmentId, entry: u64) -> Option<Found> {
        let spans = self.segments.get(&segment)?;
        let mut candidates = spans.spans.range(..=(entry, u64::MAX)).rev();
        let hit = if spans.overlapping {
            candidates
                .filter(|((first, _), span)| entry - first < span.count)
                .max_by_key(|(_, span)| span.run)
        } else {
            candidates.next().filter(|((first, _), span)| entry - first < span.count)
        };
        let ((first, _), span) = hit?;
        let run = *self.runs.get(&span.run).expect("a span's run is indexed (RI3)");
        let index = span.array_index + (entry - first);
        let element_at = run.offset + run.header.arrays_at + index * ARRAY_ELEMENT_BYTES as u64;
        let section_at = run.offset + span.records_at;
        Some(Found {
            run,
            element_at,
            remaining: span.count - (entry - first),
            index_in_section: entry - first,
            section_at,
            section_end: section_at + span.bytes,
        })
    }

    /// The highest entry id any run holds for `segment`.
    pub fn last_entry(&self, segment: SegmentId) -> Option<u64> {
        let spans = self.segments.get(&segment)?;
        spans.spans.iter().map(|((first, _), span)| first + span.count - 1).max()
    }

    /// Whether any run holds entries of `segment`.
    pub fn holds(&self, segment: SegmentId) -> bool {
        self.segments.contains_key(&segment)
    }

    /// Every run with indexed spans, by sequence number.
    pub fn runs(&self) -> impl Iterator<Item = &RunInfo> {
        self.runs.values()
    }

    /// Number of runs with indexed spans.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The sequence number after every indexed run's: at most `RUN_SEQ_LIMIT` (RI3).
    pub fn next_seq(&self) -> u64 {
        self.runs.last_key_value().map_or(0, |(seq, _)| seq + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: u64) -> RunInfo {
        let header =
            RunHeader { run_bytes: 4096, seq, entry_count: 0, arrays_at: 72, footer_at: 0, footer_bytes: 0 };
        RunInfo { log: LogSeq(1), offset: seq * 4096, header }
    }

    fn section(segment: u64, first: u64, count: u64, array_index: u64) -> Section {
        Section { segment: SegmentId(segment), first, count, array_index, bytes: count * 50 }
    }

    #[test]
    fn newer_run_answers_for_overlapping_entries() {
        let mut index = RunIndex::default();
        index.insert(run(0), &[section(1, 0, 100, 0), section(2, 5, 5, 100)], |_| false).unwrap();
        index.insert(run(1), &[section(1, 100, 50, 0)], |_| false).unwrap();
        assert_eq!(index.find(SegmentId(1), 120).unwrap().run.header.seq, 1);
        assert_eq!(index.find(SegmentId(1), 99).unwrap().element_at, 72 + 99 * 8);
        assert!(index.find(SegmentId(1), 150).is_none());
        assert!(index.find(SegmentId(2), 4).is_none());
        assert_eq!(index.find(SegmentId(2), 9).unwrap().element_at, 72 + 104 * 8);
        index.insert(run(2), &[section(1, 90, 20, 0)], |_| false).unwrap();
        assert_eq!(index.find(SegmentId(1), 95).unwrap().run.header.seq, 2);
        assert_eq!(index.find(SegmentId(1), 50).unwrap().run.header.seq, 0);
        assert_eq!(index.find(SegmentId(1), 120).unwrap().run.header.seq, 1);
        assert_eq!(index.last_entry(SegmentId(1)), Some(149));
        assert_eq!(index.next_seq(), 3);
        // Accounting: all in log 1; removing a segment frees its bytes and empty runs go.
        let usage = index.log_use().next().unwrap().1;
        assert_eq!(usage.total, usage.live);
        assert_eq!(index.live_spans(LogSeq(1)).len(), 4);
        assert!(index.remove_span(SegmentId(1), 100, 1));
        assert_eq!(index.run_count(), 2, "run 1 has no span left");
        let freed = index.remove_segment(SegmentId(1));
        assert_eq!(freed, (100 + 20) * 50);
        assert_eq!(index.log_use().next().unwrap().1.live, 5 * 50);
        assert!(index.find(SegmentId(1), 5).is_none());
        assert_eq!(index.run_count(), 1);
    }

    /// Regression: a second run under an indexed seq (a damaged disk) took the first's place
    /// in `runs`: the first's spans then answered with the second's offsets, and dropping one
    /// run's spans left the other's pointing at no run ("a span's run is indexed" panic).
    #[test]
    fn a_run_under_a_taken_or_too_high_seq_is_refused_and_changes_nothing() {
        let mut index = RunIndex::default();
        index.insert(run(0), &[section(1, 0, 10, 0)], |_| false).unwrap();
        let usage = index.log_use().collect::<Vec<_>>();
        let twin = RunInfo { offset: 1 << 20, ..run(0) };
        assert_eq!(
            index.insert(twin, &[section(2, 0, 10, 0)], |_| false),
            Err(InsertError::SeqTaken { seq: 0, log: LogSeq(1), offset: 0 })
        );
        for seq in [RUN_SEQ_LIMIT, u64::MAX] {
            let high = RunInfo { offset: 1 << 21, ..run(0) };
            let high = RunInfo { header: RunHeader { seq, ..high.header }, ..high };
            assert_eq!(
                index.insert(high, &[section(3, 0, 1, 0)], |_| false),
                Err(InsertError::SeqPastLimit(seq))
            );
        }
        assert_eq!(index.log_use().collect::<Vec<_>>(), usage, "refused runs are not accounted");
        assert_eq!(index.find(SegmentId(1), 3).unwrap().run.offset, 0);
        assert!(index.find(SegmentId(2), 3).is_none() && !index.holds(SegmentId(3)));
        assert_eq!(index.next_seq(), 1);
        assert_eq!(index.remove_segment(SegmentId(1)), 10 * 50);
        assert_eq!(index.run_count(), 0);
        // Once no span uses seq 0, a run under it is consistent again.
        index.insert(twin, &[section(2, 0, 10, 0)], |_| false).unwrap();
        assert_eq!(index.find(SegmentId(2), 3).unwrap().run.offset, 1 << 20);
    }

    #[test]
    fn a_span_moved_by_compaction_before_a_restart_is_dead_at_open() {
        let mut index = RunIndex::default();
        // Run 0 in log 1 held two spans; compaction moved segment 2's into run 5 (log 2).
        index.insert(run(0), &[section(1, 0, 10, 0), section(2, 0, 10, 10)], |_| false).unwrap();
        let moved = RunInfo { log: LogSeq(2), ..run(5) };
        index.insert(moved, &[section(2, 0, 10, 0)], |_| false).unwrap();
        assert_eq!(index.drop_shadowed(), 1);
        assert_eq!(index.find(SegmentId(2), 3).unwrap().run.header.seq, 5);
        let log1 = index.log_use().find(|(l, _)| *l == LogSeq(1)).unwrap().1;
        assert_eq!(log1.live, 10 * 50, "only segment 1's span is live in log 1");
        assert_eq!(index.drop_shadowed(), 0);
    }
}
