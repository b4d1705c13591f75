//! Recovery's tag, settings, outputs, errors and counters.

use std::time::Duration;

use dlog_protocol::Request;

const ENTRY_BITS: u32 = 56;
const INDEX_BITS: u32 = 6;
const KIND_SHIFT: u32 = ENTRY_BITS + INDEX_BITS;

/// What a recovery request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecoveryTagKind {
    /// The fencing READ_LAC (the tag's entry is 0).
    FenceLastAddConfirmed,
    /// A fencing READ of the tag's entry.
    Read,
    /// A recovery ADD of the tag's entry.
    Add,
}

/// The `u64` a recovery request is submitted with: bits 0..56 the entry, 56..62 the ensemble
/// index, 62..64 the kind (0 READ_LAC, 1 READ, 2 ADD; 3 is never made).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecoveryTag(u64);

impl RecoveryTag {
    pub(crate) fn new(kind: RecoveryTagKind, entry: u64, bookie_index: usize) -> RecoveryTag {
        assert!(entry < 1 << ENTRY_BITS, "entry {entry} does not fit a tag");
        assert!(bookie_index < 1 << INDEX_BITS, "ensemble index {bookie_index} does not fit a tag");
        let kind = match kind {
            RecoveryTagKind::FenceLastAddConfirmed => 0,
            RecoveryTagKind::Read => 1,
            RecoveryTagKind::Add => 2,
        };
        RecoveryTag(entry | (bookie_index as u64) << ENTRY_BITS | kind << KIND_SHIFT)
    }

    /// The tag a transport completion carries.
    pub fn from_raw(raw: u64) -> RecoveryTag {
        RecoveryTag(raw)
    }

    /// The value to submit the request with.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The request's kind, or `None` for a tag recovery never makes.
    pub fn kind(self) -> Option<RecoveryTagKind> {
        match self.0 >> KIND_SHIFT {
            0 => Some(RecoveryTagKind::FenceLastAddConfirmed),
            1 => Some(RecoveryTagKind::Read),
            2 => Some(RecoveryTagKind::Add),
            _ => None,
        }
    }

    /// The entry read or added.
    pub fn entry(self) -> u64 {
        self.0 & ((1 << ENTRY_BITS) - 1)
    }

    /// The ensemble index the request went to.
    pub fn bookie_index(self) -> usize {
        ((self.0 >> ENTRY_BITS) & ((1 << INDEX_BITS) - 1)) as usize
    }
}

impl std::fmt::Debug for RecoveryTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryTag({:?} entry {} bookie {})", self.kind(), self.entry(), self.bookie_index())
    }
}

/// How recovery paces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoverySettings {
    /// Entries being read or recovery-added at once (R5). Default 256; at least 1.
    pub window_entries: usize,
    /// A request that failed (error answer, no answer) is sent again after this long.
    /// Default 50 ms.
    pub retry_delay: Duration,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings { window_entries: 256, retry_delay: Duration::from_millis(50) }
    }
}

/// Why recovery failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// A bookie answered `WrongMasterKey`: the key recovery was given is not the segment's.
    #[error("wrong master key")]
    WrongMasterKey,
    /// A bookie answered `Unauthorized`: this client may not fence or write the segment.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// The segment's ensembles are not usable (empty, or of the wrong size).
    #[error("bad segment metadata: {0}")]
    BadMetadata(String),
    /// The close's metadata update failed (given to `on_closed` by the shell).
    #[error("closing the segment metadata failed: {0}")]
    Metadata(String),
}

/// Where recovery closed the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveredEnd {
    /// The last entry (`None`: the segment is empty).
    pub last_entry: Option<u64>,
    /// Payload bytes of entries `0..=last_entry`.
    pub length: u64,
}

/// Work for the shell, drained with `Recovery::poll_output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryOutput<B> {
    /// Send `request` to `bookie` tagged `tag`; give its answer to `on_response` with the tag
    /// and the bookie.
    Send {
        /// The bookie.
        bookie: B,
        /// The tag to submit with.
        tag: RecoveryTag,
        /// A fencing READ_LAC, a fencing READ or a recovery ADD.
        request: Request,
    },
    /// The end is found and every entry up to it is recovered: compare-and-set the metadata
    /// from InRecovery to Closed at `end`, with `Recovery::ensemble_change` if any; if it is
    /// Closed already, take its end. Give the end the metadata holds to `on_closed`.
    CloseRequested(RecoveredEnd),
    /// Members of the last ensemble (indexes) fail recovery ADDs that need them: choose a
    /// replacement for each (not a member) and give the whole last ensemble with them in place
    /// to `on_replaced`. Nothing is written to the metadata until the close (RC7).
    ReplaceBookies {
        /// The indexes to replace.
        replace: crate::quorum::BookieSet,
    },
    /// Recovery is over: the end the metadata holds, or why it failed.
    Done(Result<RecoveredEnd, RecoveryError>),
}

/// Counters, for tests, metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Answers ignored: no such request in flight, or from a bookie not at that index.
    pub ignored_responses: u64,
    /// Requests sent again after a failure.
    pub retries: u64,
    /// Entries read Present past the fenced LAC (recovered).
    pub entries_recovered: u64,
    /// Replicas that returned bytes failing the envelope check.
    pub corrupt_replicas: u64,
    /// Recovery ADDs acknowledged.
    pub recovery_adds: u64,
    /// Replacements of failing members that landed (RC7).
    pub replacements: u64,
}
