//! Errors of the metadata contract: typed, so callers act on them (retry `Unavailable`, re-read
//! and retry on `VersionConflict`, re-list on `Compacted`, stop and tell an operator on
//! `Unauthorized`).

use crate::{LeaseId, Version};

/// A failure a caller of a metadata store can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// A compare-and-set found another version: re-read and retry.
    #[error("version conflict on {key}: expected {expected:?}, found {actual:?}")]
    VersionConflict {
        /// The key.
        key: String,
        /// The version the caller expected (`None`: expected absent).
        expected: Option<Version>,
        /// The version found (`None`: absent).
        actual: Option<Version>,
    },
    /// The key does not exist.
    #[error("no such key: {0}")]
    NotFound(String),
    /// The key exists (a create).
    #[error("key already exists: {0}")]
    AlreadyExists(String),
    /// The lease is gone (expired or revoked).
    #[error("lease {0:?} expired or revoked")]
    LeaseExpired(LeaseId),
    /// A watch asked for history the store no longer keeps: re-list, then watch from the
    /// listed version.
    #[error("history before version {oldest:?} is gone (asked from {requested:?})")]
    Compacted {
        /// The version asked for.
        requested: Version,
        /// The oldest version still served.
        oldest: Version,
    },
    /// The request is malformed (empty key, transaction touching a key twice, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A newer writer took the log (its writer epoch is higher): this writer must stop.
    #[error("fenced: {key} belongs to writer epoch {current}, not {epoch}")]
    Fenced {
        /// The log's key.
        key: String,
        /// The epoch the caller wrote as.
        epoch: u64,
        /// The log's current writer epoch.
        current: u64,
    },
    /// A stored value (or the embedded store's log) is damaged or was written by something
    /// that is not dlog: an operator must look. Never a reason to treat the key as absent.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// The store refused the caller: its credentials (an etcd user and password, a client
    /// certificate) were not accepted or are missing, or they do not permit this operation on
    /// this key (etcd's roles). Nothing was written. Not retryable: an operator must fix the
    /// credentials or grant the permission.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The store cannot be reached now; the operation may or may not have happened unless the
    /// error says otherwise. Retryable.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
}
