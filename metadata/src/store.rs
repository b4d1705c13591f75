//! `MetadataStore`: the contract both backends (etcd, embedded) implement and the conformance
//! suite checks (metadata/tests/conformance.rs).
//!
//! Semantics every backend keeps:
//! - MS1: versions are store revisions: each mutation (a whole transaction, a lease's end)
//!   takes a new, higher revision; a key's version is the revision that last wrote it.
//! - MS2: `txn` applies all its operations or none; every condition is checked against the
//!   state before it. Failures name the first failing operation: `AlreadyExists` (create of a
//!   present key), `VersionConflict{key, expected, actual}`, `NotFound` (delete of a missing
//!   key), `LeaseExpired` (put bound to a lease that is gone).
//! - MS3: an answered mutation is durable (the embedded store fsyncs; etcd commits through
//!   its raft log); reads see every mutation answered before them.
//! - MS4: a watch from version `v` delivers every change under its prefix with version ≥ `v`,
//!   once, in revision order; `v = Version(0)` means changes after the current revision.
//!   `Compacted` when the backend no longer holds `v`.
//! - MS5: a lease expires no earlier than `ttl` after the store applied the last grant or
//!   keep-alive (so no earlier than `ttl` after the caller asked: `LeaseKeeper` counts from
//!   there); its keys vanish in one revision.
//!
//! Limits: keys at most `KEY_BYTES_MAX` bytes, values at most `VALUE_BYTES_MAX`, `TXN_OPS_MAX`
//! operations and `TXN_BYTES_MAX` key and value bytes per transaction (within etcd's default
//! request limits), enforced by both backends with `Invalid`.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::error::MetaError;
use crate::watch::Watch;
use crate::{Cond, LeaseId, Op, Page, Version, Versioned};

/// A metadata store: versioned keys, atomic transactions, prefix listings and watches, leases.
pub trait MetadataStore: Send + Sync {
    /// A key's value and versions, `None` when absent.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Versioned>, MetaError>> + Send;

    /// Applies `ops` atomically (MS2); the transaction's revision.
    fn txn(&self, ops: Vec<Op>) -> impl Future<Output = Result<Version, MetaError>> + Send;

    /// Keys under `prefix`, in key order, strictly after `after` if given, at most `limit`
    /// (0: no limit).
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, MetaError>> + Send;

    /// Changes under `prefix` from version `from` on (MS4).
    fn watch(&self, prefix: &str, from: Version) -> impl Future<Output = Result<Watch, MetaError>> + Send;

    /// A new lease of at least `ttl` (etcd rounds up to whole seconds, at least its minimum).
    fn grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseId, MetaError>> + Send;

    /// Restarts the lease's `ttl`. `LeaseExpired` when it is gone.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Ends the lease now, deleting its keys; the revision of the deletion. `LeaseExpired`
    /// when it is gone already.
    fn revoke(&self, lease: LeaseId) -> impl Future<Output = Result<Version, MetaError>> + Send;

    /// Creates `key`; `AlreadyExists` when present.
    fn create(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> impl Future<Output = Result<Version, MetaError>> + Send {
        self.txn(vec![Op::Put { key: key.to_string(), value, cond: Cond::Absent, lease }])
    }

    /// Replaces `key` if its version is `version` (compare-and-set).
    fn put_if(
        &self,
        key: &str,
        value: Bytes,
        version: Version,
    ) -> impl Future<Output = Result<Version, MetaError>> + Send {
        self.txn(vec![Op::Put { key: key.to_string(), value, cond: Cond::Version(version), lease: None }])
    }

    /// Writes `key` whatever is there.
    fn put(&self, key: &str, value: Bytes) -> impl Future<Output = Result<Version, MetaError>> + Send {
        self.txn(vec![Op::Put { key: key.to_string(), value, cond: Cond::Any, lease: None }])
    }

    /// Deletes `key` if its version is `version`.
    fn delete_if(
        &self,
        key: &str,
        version: Version,
    ) -> impl Future<Output = Result<Version, MetaError>> + Send {
        self.txn(vec![Op::Delete { key: key.to_string(), cond: Cond::Version(version) }])
    }

    /// Deletes `key`; `NotFound` when absent.
    fn delete(&self, key: &str) -> impl Future<Output = Result<Version, MetaError>> + Send {
        self.txn(vec![Op::Delete { key: key.to_string(), cond: Cond::Any }])
    }

    /// Every key under `prefix`, page by page, and the revision of the first page: watching
    /// from one past it sees every change after the listing (a change between pages may show
    /// in both the listing and the watch; applying events in order converges).
    fn list_all(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<(Vec<(String, Versioned)>, Version), MetaError>> + Send {
        async move {
            let mut items: Vec<(String, Versioned)> = Vec::new();
            let mut revision = None;
            loop {
                let after = items.last().map(|(k, _)| k.clone());
                let page = self.list(prefix, after.as_deref(), LIST_PAGE).await?;
                revision.get_or_insert(page.revision);
                items.extend(page.items);
                if !page.more {
                    return Ok((items, revision.unwrap_or(page.revision)));
                }
            }
        }
    }
}

/// Keys per page of `list_all` (with values of up to 1 MiB a page stays under etcd-client's
/// response limit, `etcd_store::RESPONSE_BYTES_MAX`).
pub const LIST_PAGE: usize = 128;

pub use crate::local_core::{KEY_BYTES_MAX, TXN_BYTES_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX};

/// Checks the limits every backend enforces (see the module doc): the embedded core's own
/// check, so both backends refuse exactly the same transactions.
pub(crate) fn check_ops(ops: &[Op]) -> Result<(), MetaError> {
    if ops.is_empty() {
        return Err(MetaError::Invalid("empty transaction".into()));
    }
    for op in ops {
        // No key ever has version 0 (revisions start at 1); etcd would read it as "absent".
        if let Op::Put { cond: Cond::Version(Version(0)), key, .. }
        | Op::Delete { cond: Cond::Version(Version(0)), key } = op
        {
            return Err(MetaError::Invalid(format!("{key}: version 0 (use Absent to create)")));
        }
    }
    crate::local_core::validate(ops)
}
