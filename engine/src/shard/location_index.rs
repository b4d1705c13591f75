//! `LocationIndex`: (segment, entry) -> where the entry's record sits in the journal.
//!
//! Serves reads of entries not yet moved to segment storage. Entries of a segment arrive mostly
//! in order, so each segment keeps a dense run from its first entry id and a sparse map for the
//! rest (out-of-order or far ids). The dense run stores 12-byte packed locations in fixed-size
//! chunks: pushing the next id is O(1) and never copies earlier entries, which keeps replay of
//! millions of small entries cheap (a growing `Vec` of 32-byte options spent about a quarter of
//! replay's CPU in page faults and copies).
//!
//! Invariant L1: a location is in the dense run or in the sparse map, never both.

use std::collections::{BTreeMap, VecDeque};

use crate::ids::{EntryId, FileSeq, SegmentId};

/// Where a record lives: its header starts at `offset` in journal file `file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Journal file.
    pub file: FileSeq,
    /// Byte offset of the record header.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
}

/// A `Location` in 12 bytes; `len == u32::MAX` marks an empty slot (payloads are far smaller).
#[derive(Clone, Copy, Debug)]
struct Packed {
    file: u32,
    offset: u32,
    len: u32,
}

const EMPTY: Packed = Packed { file: 0, offset: 0, len: u32::MAX };

impl Packed {
    fn pack(location: Location) -> Option<Packed> {
        let file = u32::try_from(location.file.0).ok()?;
        let offset = u32::try_from(location.offset).ok()?;
        (location.len != u32::MAX).then_some(Packed { file, offset, len: location.len })
    }

    fn unpack(self) -> Option<Location> {
        (self.len != u32::MAX).then_some(Location {
            file: FileSeq(u64::from(self.file)),
            offset: u64::from(self.offset),
            len: self.len,
        })
    }
}

const CHUNK: usize = 16 * 1024;

#[derive(Debug, Default)]
struct SegmentLocations {
    /// Entry id of slot 0 of the first chunk.
    base: u64,
    /// Slots in use across `chunks`.
    dense_len: usize,
    chunks: VecDeque<Vec<Packed>>,
    sparse: BTreeMap<u64, Location>,
}

impl SegmentLocations {
    fn slot(&mut self, at: usize) -> &mut Packed {
        &mut self.chunks[at / CHUNK][at % CHUNK]
    }

    fn dense_get(&self, id: u64) -> Option<Location> {
        let at = usize::try_from(id.checked_sub(self.base)?).ok()?;
        if at >= self.dense_len {
            return None;
        }
        self.chunks[at / CHUNK][at % CHUNK].unpack()
    }

    fn push(&mut self, packed: Packed) {
        if self.dense_len.is_multiple_of(CHUNK) {
            self.chunks.push_back(Vec::with_capacity(CHUNK));
        }
        self.chunks.back_mut().expect("a chunk with room").push(packed);
        self.dense_len += 1;
    }

    fn is_empty(&self) -> bool {
        self.dense_len == 0 && self.sparse.is_empty()
    }
}

/// The per-shard index of journal-resident entries.
#[derive(Debug, Default)]
pub struct LocationIndex {
    segments: BTreeMap<SegmentId, SegmentLocations>,
    count: usize,
}

const DENSE_GAP_MAX: u64 = 1024;

impl LocationIndex {
    /// An empty index.
    pub fn new() -> LocationIndex {
        LocationIndex::default()
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records (or replaces) the location of an entry.
    pub fn insert(&mut self, segment: SegmentId, entry: EntryId, location: Location) {
        let s = self.segments.entry(segment).or_default();
        let id = entry.0;
        if s.is_empty() {
            s.base = id;
            s.chunks.clear();
        }
        let packed = Packed::pack(location);
        let dense_at = id.checked_sub(s.base).and_then(|d| usize::try_from(d).ok());
        let replaced = match (packed, dense_at) {
            (Some(packed), Some(at)) if at < s.dense_len => {
                let slot = s.slot(at);
                let was = slot.unpack().is_some();
                *slot = packed;
                was
            }
            (Some(packed), Some(at)) if (at - s.dense_len) as u64 <= DENSE_GAP_MAX => {
                while s.dense_len < at {
                    s.push(EMPTY);
                }
                s.push(packed);
                s.sparse.remove(&id).is_some() // L1
            }
            _ => {
                // Out of the dense run (or not packable): sparse, and never also dense (L1).
                let was_dense = match dense_at {
                    Some(at) if at < s.dense_len => {
                        let slot = s.slot(at);
                        let was = slot.unpack().is_some();
                        *slot = EMPTY;
                        was
                    }
                    _ => false,
                };
                s.sparse.insert(id, location).is_some() || was_dense
            }
        };
        if !replaced {
            self.count += 1;
        }
    }

    /// The location of an entry, if indexed.
    pub fn get(&self, segment: SegmentId, entry: EntryId) -> Option<Location> {
        let s = self.segments.get(&segment)?;
        s.dense_get(entry.0).or_else(|| s.sparse.get(&entry.0).copied())
    }

    /// Forgets every location in a file before `file` (a checkpoint reclaimed them).
    pub fn remove_files_before(&mut self, file: FileSeq) {
        let mut count = 0;
        for s in self.segments.values_mut() {
            let mut live = 0;
            for chunk in &mut s.chunks {
                for slot in chunk.iter_mut() {
                    match slot.unpack() {
                        Some(l) if l.file < file => *slot = EMPTY,
                        Some(_) => live += 1,
                        None => {}
                    }
                }
            }
            // Entries leave mostly from the front: drop emptied leading chunks so later scans
            // stay proportional to the live entries.
            while s.chunks.len() > 1
                && s.chunks
                    .front()
                    .is_some_and(|c| c.len() == CHUNK && c.iter().all(|p| p.unpack().is_none()))
            {
                s.chunks.pop_front();
                s.base += CHUNK as u64;
                s.dense_len -= CHUNK;
            }
            if live == 0 {
                s.chunks.clear();
                s.dense_len = 0;
            }
            s.sparse.retain(|_, l| l.file >= file);
            count += live + s.sparse.len();
        }
        self.segments.retain(|_, s| !s.is_empty());
        self.count = count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The index answers exactly like a plain map under inserts, replacements, gaps,
        /// far and backwards ids, and checkpoints.
        #[test]
        fn index_matches_model(ops in proptest::collection::vec(
            (0u64..3, prop_oneof![0u64..40_000, 1u64 << 40..(1u64 << 40) + 10], 0u64..6, any::<bool>()), 1..400)) {
            let mut index = LocationIndex::new();
            let mut model: BTreeMap<(u64, u64), Location> = BTreeMap::new();
            for (i, (segment, entry, file, checkpoint)) in ops.into_iter().enumerate() {
                if checkpoint && i % 7 == 0 {
                    index.remove_files_before(FileSeq(file));
                    model.retain(|_, l| l.file >= FileSeq(file));
                } else {
                    let location = Location { file: FileSeq(file), offset: i as u64 * 4096, len: i as u32 };
                    index.insert(SegmentId(segment), EntryId(entry), location);
                    model.insert((segment, entry), location);
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for ((segment, entry), location) in &model {
                prop_assert_eq!(index.get(SegmentId(*segment), EntryId(*entry)), Some(*location));
            }
            for probe in 0..50u64 {
                let key = (probe % 3, probe * 997);
                prop_assert_eq!(index.get(SegmentId(key.0), EntryId(key.1)), model.get(&key).copied());
            }
        }
    }

    fn loc(offset: u64) -> Location {
        Location { file: FileSeq(1), offset, len: 1 }
    }

    #[test]
    fn index_dense_sparse_and_replace() {
        let mut index = LocationIndex::new();
        let seg = SegmentId(3);
        for i in 10..20 {
            index.insert(seg, EntryId(i), loc(i));
        }
        index.insert(seg, EntryId(5), loc(5)); // before base: sparse
        index.insert(seg, EntryId(1_000_000), loc(6)); // far: sparse
        index.insert(seg, EntryId(12), loc(99)); // replace
        index.insert(seg, EntryId(25), loc(25)); // small gap: dense
        assert_eq!(index.len(), 13);
        assert_eq!(index.get(seg, EntryId(12)), Some(loc(99)));
        assert_eq!(index.get(seg, EntryId(5)), Some(loc(5)));
        assert_eq!(index.get(seg, EntryId(22)), None);
        assert_eq!(index.get(seg, EntryId(25)), Some(loc(25)));
        assert_eq!(index.get(SegmentId(4), EntryId(12)), None);
        index.remove_files_before(FileSeq(2));
        assert!(index.is_empty());
    }
}
