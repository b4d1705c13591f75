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

use std::collections::{BTreeMap, HashMap};

use crate::ids::{LogSeq, SegmentId};
use crate::storage::run::{ARRAY_ELEMENT_BYTES, RunHeader, Section};

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
}

#[derive(Clone, Copy, Debug)]
struct Span {
    run: u64,
    count: u64,
    array_index: u64,
}

#[derive(Debug, Default)]
struct SegmentSpans {
    /// Keyed by (first entry, run seq).
    spans: BTreeMap<(u64, u64), Span>,
    overlapping: bool,
}

/// The index of one shard's runs.
#[derive(Debug, Default)]
pub struct RunIndex {
    runs: BTreeMap<u64, RunInfo>,
    segments: HashMap<SegmentId, SegmentSpans>,
}

impl RunIndex {
    /// Adds a durable run and its sections (RI1).
    pub fn insert(&mut self, run: RunInfo, sections: &[Section]) {
        let seq = run.header.seq;
        self.runs.insert(seq, run);
        for s in sections {
            let spans = self.segments.entry(s.segment).or_default();
            let end = s.first + s.count;
            let before = spans.spans.range(..=(s.first, u64::MAX)).next_back();
            let after = spans.spans.range((s.first, 0)..).next();
            if before.is_some_and(|((first, _), span)| first + span.count > s.first)
                || after.is_some_and(|((first, _), _)| *first < end)
            {
                spans.overlapping = true;
            }
            spans.spans.insert((s.first, seq), Span { run: seq, count: s.count, array_index: s.array_index });
        }
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
        let run = *self.runs.get(&span.run).expect("a span's run is indexed");
        let index = span.array_index + (entry - first);
        let element_at = run.offset + run.header.arrays_at + index * ARRAY_ELEMENT_BYTES as u64;
        Some(Found { run, element_at, remaining: span.count - (entry - first) })
    }

    /// The highest entry id any run holds for `segment`.
    pub fn last_entry(&self, segment: SegmentId) -> Option<u64> {
        let spans = self.segments.get(&segment)?;
        spans.spans.iter().map(|((first, _), span)| first + span.count - 1).max()
    }

    /// Every run, by sequence number.
    pub fn runs(&self) -> impl Iterator<Item = &RunInfo> {
        self.runs.values()
    }

    /// Number of runs.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The sequence number after every indexed run's.
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
        Section { segment: SegmentId(segment), first, count, array_index }
    }

    #[test]
    fn newer_run_answers_for_overlapping_entries() {
        let mut index = RunIndex::default();
        index.insert(run(0), &[section(1, 0, 100, 0), section(2, 5, 5, 100)]);
        index.insert(run(1), &[section(1, 100, 50, 0)]);
        assert_eq!(index.find(SegmentId(1), 120).unwrap().run.header.seq, 1);
        assert_eq!(index.find(SegmentId(1), 99).unwrap().element_at, 72 + 99 * 8);
        assert!(index.find(SegmentId(1), 150).is_none());
        assert!(index.find(SegmentId(2), 4).is_none());
        assert_eq!(index.find(SegmentId(2), 9).unwrap().element_at, 72 + 104 * 8);
        index.insert(run(2), &[section(1, 90, 20, 0)]);
        assert_eq!(index.find(SegmentId(1), 95).unwrap().run.header.seq, 2);
        assert_eq!(index.find(SegmentId(1), 50).unwrap().run.header.seq, 0);
        assert_eq!(index.find(SegmentId(1), 120).unwrap().run.header.seq, 1);
        assert_eq!(index.last_entry(SegmentId(1)), Some(149));
        assert_eq!(index.next_seq(), 3);
    }
}
