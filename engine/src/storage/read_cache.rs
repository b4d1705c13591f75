//! `ReadCache`: entries recently read from entry logs, so readers going over the same range
//! (several subscribers of one log, a reader retrying) do not read the disk again.
//!
//! Bounded by bytes charged (payload plus a fixed overhead per entry); evicts in insertion
//! order (FIFO): FIFO costs no bookkeeping on a hit. Filled by point reads only: range reads
//! are scans that would flush it for entries read once. An entry added again is dropped from
//! it (the write cache then holds the newer bytes); a deleted segment's reads are refused
//! before the cache is asked.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::ids::SegmentId;
use crate::storage::write_cache::CACHE_ENTRY_OVERHEAD_BYTES;

/// The read cache of one shard.
#[derive(Debug, Default)]
pub struct ReadCache {
    bytes_max: usize,
    bytes: usize,
    entries: HashMap<(SegmentId, u64), Bytes>,
    order: VecDeque<(SegmentId, u64)>,
}

impl ReadCache {
    /// A cache of at most `bytes_max` bytes charged (0: disabled).
    pub fn new(bytes_max: usize) -> ReadCache {
        ReadCache { bytes_max, ..ReadCache::default() }
    }

    /// The entry, if cached.
    pub fn get(&self, segment: SegmentId, entry: u64) -> Option<Bytes> {
        self.entries.get(&(segment, entry)).cloned()
    }

    /// Keeps an entry read from an entry log, evicting the oldest to stay in bounds.
    pub fn insert(&mut self, segment: SegmentId, entry: u64, payload: Bytes) {
        let charge = payload.len() + CACHE_ENTRY_OVERHEAD_BYTES;
        if charge > self.bytes_max / 4 || self.entries.contains_key(&(segment, entry)) {
            return;
        }
        while self.bytes + charge > self.bytes_max {
            let Some(key) = self.order.pop_front() else { break };
            if let Some(old) = self.entries.remove(&key) {
                self.bytes -= old.len() + CACHE_ENTRY_OVERHEAD_BYTES;
            }
        }
        if self.order.len() > 4 * self.entries.len() + 1024 {
            // Keys removed by `remove` pile up: drop them.
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        self.bytes += charge;
        self.entries.insert((segment, entry), payload);
        self.order.push_back((segment, entry));
    }

    /// Forgets an entry (added again: the write cache holds the newer bytes).
    pub fn remove(&mut self, segment: SegmentId, entry: u64) {
        if self.entries.is_empty() {
            return;
        }
        if let Some(old) = self.entries.remove(&(segment, entry)) {
            self.bytes -= old.len() + CACHE_ENTRY_OVERHEAD_BYTES;
            // Its place in `order` is dropped lazily at eviction.
        }
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bound_and_evicts_oldest_first() {
        let mut cache = ReadCache::new(4 * (1000 + CACHE_ENTRY_OVERHEAD_BYTES));
        for e in 0..6 {
            cache.insert(SegmentId(1), e, Bytes::from(vec![e as u8; 1000]));
        }
        assert!(cache.bytes() <= 4 * (1000 + CACHE_ENTRY_OVERHEAD_BYTES));
        assert!(cache.get(SegmentId(1), 0).is_none() && cache.get(SegmentId(1), 1).is_none());
        assert_eq!(cache.get(SegmentId(1), 5).unwrap()[0], 5);
        // Larger than a quarter of the cache: not kept.
        cache.insert(SegmentId(2), 0, Bytes::from(vec![0; 3000]));
        assert!(cache.get(SegmentId(2), 0).is_none());
        let disabled = ReadCache::new(0);
        assert!(disabled.get(SegmentId(1), 0).is_none());
    }
}
