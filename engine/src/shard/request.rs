//! Requests a shard serves, and its replies.

use bytes::Bytes;

use crate::error::Error;
use crate::ids::{EntryId, FileSeq, SegmentId};

/// Flags of an add.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddFlags(pub u8);

impl AddFlags {
    /// A plain add from the segment's writer.
    pub const NONE: AddFlags = AddFlags(0);
    /// An add by recovery: accepted on a fenced segment.
    pub const RECOVERY: AddFlags = AddFlags(crate::journal::record::FLAG_RECOVERY);

    /// Whether this is a recovery add.
    pub fn is_recovery(self) -> bool {
        self.0 & Self::RECOVERY.0 != 0
    }
}

/// One entry to add.
#[derive(Clone, Debug)]
pub struct AddEntry {
    /// The segment.
    pub segment: SegmentId,
    /// The entry's id within the segment.
    pub entry: EntryId,
    /// The writer's `last_add_confirmed` when it sent this entry (piggybacked LAC).
    pub last_add_confirmed: Option<EntryId>,
    /// The segment's master key.
    pub master_key: Bytes,
    /// The entry bytes, stored verbatim.
    pub payload: Bytes,
    /// Flags.
    pub flags: AddFlags,
}

/// A position in a shard's journal: everything before it is covered by a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalMark {
    /// The journal file.
    pub file: FileSeq,
    /// Byte offset in it.
    pub offset: u64,
}

/// A request to a shard; `T` is the caller's reply handle, opaque to the core.
#[derive(Debug)]
pub enum Request<T> {
    /// Add entries; one reply once all are durable (or refused).
    Add {
        /// The entries, all owned by this shard.
        entries: Vec<AddEntry>,
        /// Reply handle.
        reply: T,
    },
    /// Fence a segment; replies once the fence is durable, with the segment's LAC.
    Fence {
        /// The segment.
        segment: SegmentId,
        /// Its master key.
        master_key: Bytes,
        /// Reply handle.
        reply: T,
    },
    /// Write an explicit `last_add_confirmed`; replies once durable.
    WriteLac {
        /// The segment.
        segment: SegmentId,
        /// Its master key.
        master_key: Bytes,
        /// The LAC.
        last_add_confirmed: EntryId,
        /// Reply handle.
        reply: T,
    },
    /// Read the segment's durable `last_add_confirmed`.
    ReadLac {
        /// The segment.
        segment: SegmentId,
        /// Reply handle.
        reply: T,
    },
    /// Long-poll: answered once the segment's durable `last_add_confirmed` is past `known`
    /// (any LAC when `known` is `None`), or after `timeout` with the LAC as it is.
    WaitLac {
        /// The segment.
        segment: SegmentId,
        /// The LAC the reader knows.
        known: Option<EntryId>,
        /// How long to wait at most.
        timeout: std::time::Duration,
        /// Reply handle.
        reply: T,
    },
    /// Read a range of entries: from `from` up to `to` (inclusive), in order, as many as fit
    /// in `max_bytes` (at least one), from one source (the write cache or one run section):
    /// the caller asks again from the next entry for the rest.
    ReadRange {
        /// The segment.
        segment: SegmentId,
        /// First entry.
        from: EntryId,
        /// Last entry wanted.
        to: EntryId,
        /// Payload bytes to return at most (the first entry is returned whatever its size).
        max_bytes: usize,
        /// Reply handle.
        reply: T,
    },
    /// Read one entry.
    ReadEntry {
        /// The segment.
        segment: SegmentId,
        /// The entry.
        entry: EntryId,
        /// Reply handle.
        reply: T,
    },
    /// Report the durable journal position.
    Position {
        /// Reply handle.
        reply: T,
    },
    /// Delete a segment: journal its deletion (adds are refused from then on, reads answer
    /// `NoSuchSegment`); its entries are dropped once the deletion check confirms it.
    DeleteSegment {
        /// The segment.
        segment: SegmentId,
        /// Reply handle.
        reply: T,
    },
    /// Write everything acknowledged so far to entry logs and checkpoint the journal past it;
    /// replies once done (at once in `StorageMode::JournalOnly`, or when there is nothing).
    Flush {
        /// Reply handle.
        reply: T,
    },
    /// Everything before `mark` is stored elsewhere: reclaim journal files wholly before it.
    /// Only in `StorageMode::JournalOnly` (an embedding application that keeps the data
    /// itself); with entry logs the shard checkpoints itself after each flush.
    Checkpoint {
        /// The checkpoint.
        mark: JournalMark,
        /// Reply handle.
        reply: T,
    },
}

/// A shard's answer.
#[derive(Debug)]
pub enum Reply {
    /// For `Add`: Ok, or the refused entries by index in the request with why.
    Added(Result<(), Vec<(usize, Error)>>),
    /// For `Fence`: the LAC once the fence is durable.
    Fenced(Result<Option<EntryId>, Error>),
    /// For `WriteLac`.
    LacWritten(Result<(), Error>),
    /// For `ReadLac`.
    Lac(Result<Option<EntryId>, Error>),
    /// For `ReadEntry`.
    Entry(Result<Bytes, Error>),
    /// For `WaitLac`: the LAC when answered.
    LacWaited(Result<Option<EntryId>, Error>),
    /// For `ReadRange`: consecutive entries from `from`.
    Entries(Result<Vec<(EntryId, Bytes)>, Error>),
    /// For `Position`.
    Position(JournalMark),
    /// For `Checkpoint`.
    Checkpointed(Result<(), Error>),
    /// For `Flush`.
    Flushed(Result<(), Error>),
    /// For `DeleteSegment`, once the deletion is durable.
    Deleted(Result<(), Error>),
    /// The request never reached a shard's core (the shard stopped, or no such shard).
    Refused(Error),
}
