//! `WriterLock`: a log's single-writer ownership (`locks/<ns>/<log>`), bound to the writer's
//! lease, with an epoch that increases at every takeover.
//!
//! Invariants:
//! - WL1: at most one holder: the lock key is created only if absent, and vanishes with the
//!   holder's lease (or at release).
//! - WL2: every acquisition takes `writer_epoch + 1` and stores it in the log's metadata in
//!   the same transaction (compare-and-set on the log's version), so epochs strictly
//!   increase across holders even though the lock key itself comes and goes. Segments record
//!   the epoch that created them, so a stale writer's segment is recognisable.
//! - WL3: release deletes the lock only at the version this holder created: a lock that
//!   expired and was taken by another writer is never released by the old one.

use bytes::Bytes;

use crate::error::MetaError;
use crate::log_store::LogMetadataStore;
use crate::schema::{self, LogMetadata, wire};
use crate::segment_store::MODIFY_ATTEMPTS;
use crate::store::MetadataStore;
use crate::wall_clock::now_ms;
use crate::{Cond, LeaseId, Op, Version};

/// A held writer lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterLock {
    /// The namespace.
    pub namespace: String,
    /// The log.
    pub log: String,
    /// The epoch this holder took (WL2).
    pub epoch: u64,
    /// The lease the lock is bound to.
    pub lease: LeaseId,
    /// The lock key's version (WL3); writes fenced by the lock move it (LM5).
    pub version: Version,
    /// The lock key's value, rewritten unchanged by every write the lock fences.
    value: Bytes,
}

impl WriterLock {
    /// Whether `stored` (the lock key as read) is still this holder's lock: the same value
    /// (its epoch and acquisition time) under the same lease (its version may have moved with
    /// writes it fenced).
    pub(crate) fn holds(&self, stored: &crate::Versioned) -> bool {
        stored.value == self.value && stored.lease == Some(self.lease)
    }

    /// The operation that fences a write with this lock: the lock key rewritten unchanged,
    /// on the condition that it is still this holder's (its version) and bound to its lease.
    pub(crate) fn fence(&self) -> Op {
        Op::Put {
            key: schema::lock_key(&self.namespace, &self.log),
            value: self.value.clone(),
            cond: Cond::Version(self.version),
            lease: Some(self.lease),
        }
    }
}

/// Who holds a log's lock.
#[derive(Clone, Debug, PartialEq)]
pub struct LockHolder {
    /// The stored lock.
    pub lock: wire::WriterLock,
    /// Its version.
    pub version: Version,
    /// The lease it is bound to.
    pub lease: Option<LeaseId>,
}

impl<S: MetadataStore> LogMetadataStore<S> {
    /// Takes the log's writer lock for `owner`, bound to `lease` (WL1, WL2). `AlreadyExists`
    /// (the lock key) when another writer holds it; `NotFound` when the log does not exist.
    pub async fn acquire_writer_lock(
        &self,
        ns: &str,
        log: &str,
        owner: &str,
        lease: LeaseId,
    ) -> Result<WriterLock, MetaError> {
        let mut conflict = None;
        for _ in 0..MODIFY_ATTEMPTS {
            let (meta, log_version) =
                self.log(ns, log).await?.ok_or_else(|| MetaError::NotFound(schema::log_key(ns, log)))?;
            let epoch = meta.writer_epoch.checked_add(1).ok_or_else(|| {
                MetaError::Corrupt(format!("{}: writer epoch at the limit", schema::log_key(ns, log)))
            })?;
            let lock =
                wire::encode(&wire::WriterLock { owner: owner.to_string(), epoch, acquired_ms: now_ms() });
            let next = LogMetadata { writer_epoch: epoch, ..meta };
            let ops = vec![
                Op::Put {
                    key: schema::lock_key(ns, log),
                    value: lock.clone(),
                    cond: Cond::Absent,
                    lease: Some(lease),
                },
                Op::Put {
                    key: schema::log_key(ns, log),
                    value: wire::encode(&next),
                    cond: Cond::Version(log_version),
                    lease: None,
                },
            ];
            match self.store().txn(ops).await {
                Ok(version) => {
                    return Ok(WriterLock {
                        namespace: ns.into(),
                        log: log.into(),
                        epoch,
                        lease,
                        version,
                        value: lock,
                    });
                }
                // The log changed (another writer's segment, a truncation): re-read.
                Err(e @ MetaError::VersionConflict { .. }) => conflict = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(conflict.unwrap_or_else(|| MetaError::Unavailable("writer lock: no attempt made".into())))
    }

    /// Who holds the log's writer lock, if anyone.
    pub async fn writer_lock(&self, ns: &str, log: &str) -> Result<Option<LockHolder>, MetaError> {
        let key = schema::lock_key(ns, log);
        match self.store().get(&key).await? {
            Some(v) => Ok(Some(LockHolder {
                lock: wire::decode(&key, &v.value)?,
                version: v.version,
                lease: v.lease,
            })),
            None => Ok(None),
        }
    }

    /// Ok when `lock` is still held by its holder; `LeaseExpired` when the lock is gone,
    /// `VersionConflict` when another writer holds it now.
    pub async fn check_writer_lock(&self, lock: &WriterLock) -> Result<(), MetaError> {
        let key = schema::lock_key(&lock.namespace, &lock.log);
        match self.store().get(&key).await? {
            Some(v) if v.version == lock.version => Ok(()),
            Some(v) => {
                Err(MetaError::VersionConflict { key, expected: Some(lock.version), actual: Some(v.version) })
            }
            None => Err(MetaError::LeaseExpired(lock.lease)),
        }
    }

    /// Releases `lock` if this holder still has it (WL3); a lock already gone or taken over
    /// is left alone and answers the error `check_writer_lock` would.
    pub async fn release_writer_lock(&self, lock: &WriterLock) -> Result<(), MetaError> {
        match self.store().delete_if(&schema::lock_key(&lock.namespace, &lock.log), lock.version).await {
            Ok(_) => Ok(()),
            Err(MetaError::NotFound(_)) => Err(MetaError::LeaseExpired(lock.lease)),
            Err(e) => Err(e),
        }
    }
}
