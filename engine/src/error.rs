//! Errors callers act on. Programmer errors are assertions, never variants; operating errors
//! are these enums; an I/O failure of the journal poisons its shard for good.

use std::path::PathBuf;

use crate::ids::{EntryId, SegmentId, ShardId};

/// The I/O operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Writing a journal batch.
    Write,
    /// Flushing a journal batch to stable storage.
    Flush,
    /// Reading.
    Read,
    /// Opening, creating, preallocating or renaming a file.
    Open,
    /// Setting up the I/O backend.
    Setup,
}

/// A failure that a caller of the bookie can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The segment was fenced by recovery. Plain adds cannot succeed any more; recovery adds
    /// (`AddFlags::RECOVERY`) still can.
    #[error("{0} is fenced")]
    Fenced(SegmentId),
    /// The segment was deleted on this bookie: adds cannot succeed.
    #[error("{0} is deleted")]
    Deleted(SegmentId),
    /// The master key given does not match the one the segment was created with.
    #[error("wrong master key for {0}")]
    WrongMasterKey(SegmentId),
    /// The journal has no room: a new journal file could not be prepared.
    #[error("no space left for the journal of {0}")]
    NoSpace(ShardId),
    /// An earlier journal write or flush failed on this shard; nothing it holds that was not yet
    /// durable can be trusted, so it refuses all writes until the bookie is restarted (reads of
    /// durable entries are still served).
    #[error("{0} is poisoned by an earlier journal I/O failure")]
    Poisoned(ShardId),
    /// An I/O operation failed. If it was a journal write or flush, the shard is now poisoned.
    #[error("{op:?} failed on {file}@{offset}: {source}")]
    Io {
        /// What was being done.
        op: IoOp,
        /// The file it was done to.
        file: PathBuf,
        /// The byte offset in that file.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// This bookie holds nothing of the segment.
    #[error("no such segment: {0}")]
    NoSuchSegment(SegmentId),
    /// The entry is not held by this bookie, and no journal damage could have lost it.
    #[error("no such entry: {0} {1}")]
    NoSuchEntry(SegmentId, EntryId),
    /// The entry's bytes are damaged, or journal damage found at recovery may have held it.
    /// Never reported as `NoSuchEntry`: recovery must not mistake damage for absence.
    #[error("{segment} {entry} is corrupt: {detail}")]
    Corrupt {
        /// The segment asked for.
        segment: SegmentId,
        /// The entry asked for.
        entry: EntryId,
        /// What was found.
        detail: String,
    },
    /// The request is malformed (entry too large, master key too long, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The bookie is shutting down or its shard thread has stopped.
    #[error("{0} has stopped")]
    ShardStopped(ShardId),
}

/// Why a bookie refused to open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Journal recovery found damage it is not configured to tolerate.
    #[error(
        "journal corrupt in {file}@{offset}: {reason} (valid records follow it; \
             set journal_recovery = TruncateTornTail to start anyway and report it)"
    )]
    JournalCorrupt {
        /// The journal file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A journal file or directory is not what this version can read.
    #[error("unreadable journal layout at {path}: {reason}")]
    Layout {
        /// The offending path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process has the journal directory open (its `dlog.lock` is locked).
    #[error("{0}: in use by another process (its dlog.lock is locked)")]
    InUse(PathBuf),
    /// Direct I/O was required but the filesystem refuses it.
    #[error("O_DIRECT is required but {0} refuses it")]
    DirectIoUnsupported(PathBuf),
    /// An I/O operation failed while opening.
    #[error("{op:?} failed on {file}: {source}")]
    Io {
        /// What was being done.
        op: IoOp,
        /// The path it was done to.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Errors carry `io::Error`, which is not `Clone`; replies to many waiters need copies.
pub fn clone_error(error: &Error) -> Error {
    match error {
        Error::Fenced(s) => Error::Fenced(*s),
        Error::Deleted(s) => Error::Deleted(*s),
        Error::WrongMasterKey(s) => Error::WrongMasterKey(*s),
        Error::NoSpace(s) => Error::NoSpace(*s),
        Error::Poisoned(s) => Error::Poisoned(*s),
        Error::Io { op, file, offset, source } => Error::Io {
            op: *op,
            file: file.clone(),
            offset: *offset,
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::NoSuchSegment(s) => Error::NoSuchSegment(*s),
        Error::NoSuchEntry(s, e) => Error::NoSuchEntry(*s, *e),
        Error::Corrupt { segment, entry, detail } => {
            Error::Corrupt { segment: *segment, entry: *entry, detail: detail.clone() }
        }
        Error::InvalidRequest(s) => Error::InvalidRequest(s.clone()),
        Error::ShardStopped(s) => Error::ShardStopped(*s),
    }
}
