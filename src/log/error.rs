//! `LogError`: why a call of the log API failed, typed so callers can act on it (a `Fenced`
//! writer stops for good, `Unavailable` may be retried, a `TxidNotIncreasing` is the caller's
//! bug). `Clone`: one failed entry fails every record in it and after it with the same error.

use std::sync::Arc;

use dlog_metadata::MetaError;
use dlog_replication::client::ReplicationError;
use dlog_replication::recovery::RecoveryError;
use dlog_replication::segment_reader::ReaderError;
use dlog_replication::segment_writer::WriterError;

use super::dlsn::Dlsn;
use super::entry_codec::CodecError;

/// Why a log API call failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// No such log in the namespace.
    #[error("log {0} does not exist")]
    NoSuchLog(String),
    /// The log exists already.
    #[error("log {0} exists already")]
    LogExists(String),
    /// Another writer holds the log and this one was told not to take it over.
    #[error("log {log} is held by writer {owner:?}")]
    LockHeld {
        /// The log.
        log: String,
        /// Who holds it.
        owner: String,
    },
    /// A newer writer took the log over: this writer can add nothing more (its segment was
    /// fenced, or its lock is no longer the log's).
    #[error("writer fenced: a newer writer took log {log} over")]
    Fenced {
        /// The log.
        log: String,
    },
    /// The writer's lease ended (the metadata store did not hear from it for its ttl): another
    /// writer may take the log over, so this one stops.
    #[error("writer of log {log} lost its lock (lease ended)")]
    LockLost {
        /// The log.
        log: String,
    },
    /// The record is larger than the writer's `record_bytes_max`.
    #[error("record of {bytes} bytes is over the limit of {max}")]
    RecordTooLarge {
        /// The record's payload length.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Transaction ids must increase: `txid` is not above the log's last one.
    #[error("transaction id {txid} is not above the last one, {last}")]
    TxidNotIncreasing {
        /// The transaction id given.
        txid: u64,
        /// The last one written to the log.
        last: u64,
    },
    /// The writer holds `max` record bytes not yet durable (`WriterConfig::pending_bytes_max`):
    /// the record was not taken; `LogWriter::ready` waits for room.
    #[error("{pending_bytes} record bytes wait to be durable (max {max}): write again once ready")]
    Backpressure {
        /// Bytes waiting.
        pending_bytes: u64,
        /// The bound.
        max: u64,
    },
    /// Transaction ids are exhausted (the last one is `u64::MAX`).
    #[error("transaction ids exhausted")]
    TxidsExhausted,
    /// The writer or reader was closed (or failed earlier and was closed by the failure).
    #[error("closed")]
    Closed,
    /// Adding an entry to the segment failed; this record and every one after it failed, and
    /// the writer is done (records acknowledged before stay).
    #[error("segment {segment}: {error}")]
    Write {
        /// The segment.
        segment: u64,
        /// What the segment writer reported.
        error: WriterError,
    },
    /// A segment of the log could not be read: every replica of an entry failed.
    #[error("reading segment {segment}: {error}")]
    Read {
        /// The segment.
        segment: u64,
        /// What the segment reader reported.
        error: ReaderError,
    },
    /// A bookie refused this client: its credentials, or the bookies' permissions for the
    /// log's namespace, do not allow what it asked (writing, recovering, or reading). Nothing
    /// was written by the refused request; retrying with the same credentials cannot help.
    #[error("not authorized: {reason}")]
    Unauthorized {
        /// The bookie's reason.
        reason: String,
    },
    /// A segment the log's list names has no metadata, and no truncation explains it.
    #[error("segment {segment} of log {log} is listed but its metadata is gone")]
    MissingSegment {
        /// The log.
        log: String,
        /// The segment.
        segment: u64,
    },
    /// A broken internal rule (a bug): the writer or reader stops rather than go on wrong.
    #[error("internal error: {0}")]
    Internal(String),
    /// The metadata store failed.
    #[error("metadata: {0}")]
    Metadata(#[from] MetaError),
    /// The replication client failed (placement, recovery, reading).
    #[error("replication: {0}")]
    Replication(Arc<ReplicationError>),
    /// An entry of the log does not decode: damage the replication checks did not catch, or a
    /// writer of another format.
    #[error("segment {segment} entry {entry}: {error}")]
    Corrupt {
        /// The segment.
        segment: u64,
        /// The entry.
        entry: u64,
        /// Why.
        error: CodecError,
    },
    /// Records before `before` were truncated: the position asked for is gone.
    #[error("records before {before} were truncated")]
    Truncated {
        /// The log's first readable position.
        before: Dlsn,
    },
    /// The caller's request cannot be served as asked (a bad name, URI, setting or position).
    #[error("{0}")]
    Invalid(String),
}

impl From<ReplicationError> for LogError {
    fn from(e: ReplicationError) -> LogError {
        match e {
            ReplicationError::Metadata(e) => LogError::Metadata(e),
            ReplicationError::Recovery(RecoveryError::Unauthorized(reason))
            | ReplicationError::Writer(WriterError::Unauthorized(reason))
            | ReplicationError::Unauthorized(reason) => LogError::Unauthorized { reason },
            e => LogError::Replication(Arc::new(e)),
        }
    }
}

impl LogError {
    /// The error of a segment reader that stopped reading `segment`.
    pub(crate) fn read(segment: u64, error: ReaderError) -> LogError {
        match error {
            ReaderError::Unauthorized { reason } => LogError::Unauthorized { reason },
            error => LogError::Read { segment, error },
        }
    }
}
