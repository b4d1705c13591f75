//! `SegmentState`: what a shard knows durably about one segment.
//!
//! Rebuilt by journal replay from master-key, fence, entry and LAC records.
//!
//! Invariants:
//! - S1: `fenced` never goes back to false.
//! - S4: `deleted` never goes back to false.
//! - S2: `last_add_confirmed` only grows.
//! - S5: `seen_lac` only grows and is never below `last_add_confirmed`.
//! - S3: the master key record is journaled before (or in the same batch as, earlier than) the
//!   first entry, fence or LAC record of the segment, so replay always knows the key first. A
//!   Delete record needs no key (deleting is not the writer's act): a tombstone may have none.

use bytes::Bytes;

/// A segment's state on this shard.
#[derive(Clone, Debug)]
pub struct SegmentState {
    /// The key every writer of the segment must present. `None` only after replay found the
    /// segment's records but not its key record (reclaimed by a checkpoint); the next key
    /// presented is adopted and journaled.
    pub master_key: Option<Bytes>,
    /// Fenced: plain adds are refused (S1). Set when the fence is accepted, before it is
    /// durable, so no add accepted after a fence request can slip in.
    pub fenced: bool,
    /// Highest `last_add_confirmed` seen in durable entries and explicit LAC writes (S2).
    pub last_add_confirmed: Option<u64>,
    /// Highest `last_add_confirmed` carried by an entry or LAC write this shard accepted, durable
    /// or not yet (S5): what READ_LAC and long polls answer. Every LAC is the writer's true
    /// statement that Qa bookies hold the entries up to it, whether or not the record carrying
    /// it is durable here, so readers may read up to it at once instead of one journal commit
    /// later. In memory only: replay starts it at `last_add_confirmed`.
    pub seen_lac: Option<u64>,
    /// The master key record is in the journal (or in a batch being written) (S3).
    pub key_journaled: bool,
    /// Deleted: adds are refused and entry reads answer `NoSuchSegment` (LAC reads still answer
    /// the last LAC); never undone (S4). Kept as
    /// a tombstone so a writer that missed the deletion cannot bring the segment back.
    pub deleted: bool,
}

impl SegmentState {
    /// A segment first seen with this key.
    pub fn new(master_key: Bytes) -> SegmentState {
        SegmentState {
            master_key: Some(master_key),
            fenced: false,
            last_add_confirmed: None,
            seen_lac: None,
            key_journaled: false,
            deleted: false,
        }
    }

    /// Raises the LAC (S2).
    pub fn observe_lac(&mut self, lac: Option<u64>) {
        if let Some(lac) = lac {
            self.last_add_confirmed = Some(self.last_add_confirmed.map_or(lac, |l| l.max(lac)));
        }
        self.see_lac(self.last_add_confirmed);
    }

    /// Raises the LAC readers are told (S5).
    pub fn see_lac(&mut self, lac: Option<u64>) {
        if let Some(lac) = lac {
            self.seen_lac = Some(self.seen_lac.map_or(lac, |l| l.max(lac)));
        }
    }
}
