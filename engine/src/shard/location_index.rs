//! `LocationIndex`: (segment, entry) -> where the entry's record sits in the journal.
//!
//! Serves reads of entries not yet moved to segment storage. Entries of a segment arrive mostly
//! in order, so each segment keeps a dense vector from its first entry id and a sparse map for
//! the rest (out-of-order or far ids); pushing the next id is O(1), so replay stays cheap.

use std::collections::BTreeMap;

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

#[derive(Debug, Default)]
struct SegmentLocations {
    base: u64,
    dense: Vec<Option<Location>>,
    sparse: BTreeMap<u64, Location>,
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
        if s.dense.is_empty() && s.sparse.is_empty() {
            s.base = id;
        }
        let replaced = if id >= s.base && id - s.base < s.dense.len() as u64 {
            s.dense[(id - s.base) as usize].replace(location).is_some()
        } else if id >= s.base && id - s.base <= s.dense.len() as u64 + DENSE_GAP_MAX {
            let at = (id - s.base) as usize;
            s.dense.resize(at, None);
            s.dense.push(Some(location));
            s.sparse.remove(&id).is_some()
        } else {
            s.sparse.insert(id, location).is_some()
        };
        if !replaced {
            self.count += 1;
        }
    }

    /// The location of an entry, if indexed.
    pub fn get(&self, segment: SegmentId, entry: EntryId) -> Option<Location> {
        let s = self.segments.get(&segment)?;
        let id = entry.0;
        if id >= s.base
            && id - s.base < s.dense.len() as u64
            && let Some(location) = s.dense[(id - s.base) as usize]
        {
            return Some(location);
        }
        s.sparse.get(&id).copied()
    }

    /// Forgets every location in a file before `file` (a checkpoint reclaimed them).
    pub fn remove_files_before(&mut self, file: FileSeq) {
        let mut count = 0;
        for s in self.segments.values_mut() {
            for slot in &mut s.dense {
                if slot.is_some_and(|l| l.file < file) {
                    *slot = None;
                }
            }
            // Entries leave mostly from the front: drop the emptied prefix so the dense vector
            // only spans live entries and later scans stay proportional to them.
            let emptied = s.dense.iter().take_while(|l| l.is_none()).count();
            s.dense.drain(..emptied);
            s.base += emptied as u64;
            s.sparse.retain(|_, l| l.file >= file);
            count += s.dense.iter().filter(|l| l.is_some()).count() + s.sparse.len();
        }
        self.segments.retain(|_, s| s.dense.iter().any(Option::is_some) || !s.sparse.is_empty());
        self.count = count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
