//! `WriteCache`: entries acknowledged by the journal and not yet in an entry log, per shard.
//!
//! Two halves: adds go into the active half; a flush seals it (it becomes the sealed half, still
//! served to reads) and writes it out as one run while a new active half fills. The cache holds
//! the callers' payload `Bytes` themselves: no copy between the journal and the flush.
//!
//! Invariants:
//! - W1: at most one sealed half exists; it is dropped only once its run is durable and indexed.
//! - W2: the active half holds exactly the entries of journal batches acknowledged since the
//!   sealed half was sealed (or since the shard started), so sealing at the durable journal
//!   position names a checkpoint mark that covers the sealed half and nothing else.
//! - W3: within a half, a later add of the same (segment, entry) replaces an earlier one.

use std::collections::HashMap;

use bytes::Bytes;

use crate::ids::SegmentId;

/// Bytes charged per entry beyond its payload (id, `Bytes` handle, vector slack), so a cache of
/// tiny entries is bounded by memory, not by payload bytes alone.
pub const CACHE_ENTRY_OVERHEAD_BYTES: usize = 48;

/// One segment's entries in a half.
#[derive(Debug, Default)]
pub struct SegmentEntries {
    /// (entry id, payload), in add order until sorted.
    pub entries: Vec<(u64, Bytes)>,
    /// Entries are in strictly increasing id order.
    sorted: bool,
}

impl SegmentEntries {
    fn sort(&mut self) {
        if self.sorted {
            return;
        }
        // Stable: of equal ids the later add stays last, and dedup keeps it (W3).
        self.entries.sort_by_key(|(id, _)| *id);
        let mut out: Vec<(u64, Bytes)> = Vec::with_capacity(self.entries.len());
        for (id, payload) in self.entries.drain(..) {
            match out.last_mut() {
                Some(last) if last.0 == id => *last = (id, payload),
                _ => out.push((id, payload)),
            }
        }
        self.entries = out;
        self.sorted = true;
    }

    fn get(&self, entry: u64) -> Option<&Bytes> {
        if self.sorted {
            let i = self.entries.binary_search_by_key(&entry, |(id, _)| *id).ok()?;
            Some(&self.entries[i].1)
        } else {
            self.entries.iter().rev().find(|(id, _)| *id == entry).map(|(_, p)| p)
        }
    }
}

/// One half of the cache.
#[derive(Debug, Default)]
pub struct CacheHalf {
    segments: Vec<(SegmentId, SegmentEntries)>,
    positions: HashMap<SegmentId, usize>,
    /// The segment of the last add: consecutive adds of one segment skip the hash lookup.
    last: Option<(SegmentId, usize)>,
    bytes: usize,
    entries: usize,
    /// Segment positions in id order, once sorted for a flush.
    order: Vec<usize>,
}

impl CacheHalf {
    /// Bytes charged (payloads plus overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held (before deduplication).
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn insert(&mut self, segment: SegmentId, entry: u64, payload: Bytes) {
        let index = match self.last {
            Some((s, i)) if s == segment => i,
            _ => {
                let next = self.segments.len();
                let i = *self.positions.entry(segment).or_insert(next);
                if i == next {
                    self.segments.push((segment, SegmentEntries { entries: Vec::new(), sorted: true }));
                }
                self.last = Some((segment, i));
                i
            }
        };
        let entries = &mut self.segments[index].1;
        if entries.entries.last().is_some_and(|(last, _)| *last >= entry) {
            entries.sorted = false;
        }
        self.bytes += payload.len() + CACHE_ENTRY_OVERHEAD_BYTES;
        self.entries += 1;
        entries.entries.push((entry, payload));
    }

    fn get(&self, segment: SegmentId, entry: u64) -> Option<&Bytes> {
        let i = *self.positions.get(&segment)?;
        self.segments[i].1.get(entry)
    }

    /// Sorts every segment's entries (deduplicated, W3) and the segments by id, for a flush.
    pub fn sort(&mut self) {
        for (_, entries) in &mut self.segments {
            entries.sort();
        }
        let mut order: Vec<usize> = (0..self.segments.len()).collect();
        order.sort_by_key(|i| self.segments[*i].0);
        self.order = order;
    }

    /// After `sort`: the segments in id order, each with its entries in id order.
    pub fn sorted_segments(&self) -> impl Iterator<Item = (SegmentId, &[(u64, Bytes)])> {
        self.order.iter().map(|i| {
            let (segment, entries) = &self.segments[*i];
            (*segment, entries.entries.as_slice())
        })
    }

    /// After `sort`: segment `n` in id order.
    pub fn sorted_segment(&self, n: usize) -> Option<(SegmentId, &[(u64, Bytes)])> {
        let (segment, entries) = &self.segments[*self.order.get(n)?];
        Some((*segment, entries.entries.as_slice()))
    }
}

/// The double-buffered write cache of one shard.
#[derive(Debug, Default)]
pub struct WriteCache {
    active: CacheHalf,
    sealed: Option<CacheHalf>,
}

impl WriteCache {
    /// Adds an acknowledged entry to the active half (W3).
    pub fn insert(&mut self, segment: SegmentId, entry: u64, payload: Bytes) {
        self.active.insert(segment, entry, payload);
    }

    /// The entry, if either half holds it; the active half is newer and wins.
    pub fn get(&self, segment: SegmentId, entry: u64) -> Option<Bytes> {
        self.active
            .get(segment, entry)
            .or_else(|| self.sealed.as_ref().and_then(|h| h.get(segment, entry)))
            .cloned()
    }

    /// The active half.
    pub fn active(&self) -> &CacheHalf {
        &self.active
    }

    /// The sealed half being flushed, if any.
    pub fn sealed(&self) -> Option<&CacheHalf> {
        self.sealed.as_ref()
    }

    /// Bytes charged in both halves.
    pub fn bytes(&self) -> usize {
        self.active.bytes + self.sealed.as_ref().map_or(0, |h| h.bytes)
    }

    /// Seals the active half for a flush and sorts it; a new active half starts empty (W1).
    pub fn seal(&mut self) -> &CacheHalf {
        assert!(self.sealed.is_none(), "one flush at a time (W1)");
        let mut half = std::mem::take(&mut self.active);
        half.sort();
        self.sealed.insert(half)
    }

    /// The sealed half's run is durable and indexed: let it go (W1).
    pub fn release_sealed(&mut self) -> Option<CacheHalf> {
        self.sealed.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_add_wins_and_sealed_half_stays_readable() {
        let mut cache = WriteCache::default();
        let s = SegmentId(3);
        cache.insert(s, 2, Bytes::from_static(b"b"));
        cache.insert(s, 1, Bytes::from_static(b"a"));
        cache.insert(s, 2, Bytes::from_static(b"B"));
        cache.insert(SegmentId(1), 0, Bytes::from_static(b"x"));
        assert_eq!(cache.get(s, 2).unwrap(), "B");
        let sealed = cache.seal();
        let segments: Vec<_> = sealed.sorted_segments().map(|(s, e)| (s, e.len())).collect();
        assert_eq!(segments, [(SegmentId(1), 1), (s, 2)]);
        assert_eq!(sealed.sorted_segment(1).unwrap().1[1].1, "B");
        cache.insert(s, 2, Bytes::from_static(b"C"));
        assert_eq!(cache.get(s, 2).unwrap(), "C", "the active half is newer");
        assert_eq!(cache.get(s, 1).unwrap(), "a");
        cache.release_sealed();
        assert_eq!(cache.get(s, 1), None);
    }
}
