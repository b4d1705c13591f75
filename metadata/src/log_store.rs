//! `LogMetadataStore`: namespaces, logs, and each log's ordered segment list, through typed,
//! versioned operations.
//!
//! Invariants:
//! - LM1: a log is created only in an existing namespace, and a namespace is deleted only
//!   when empty: creating a log rewrites its namespace's value (same bytes) in the same
//!   transaction, so a concurrent namespace delete (a compare-and-set on the namespace's
//!   version) and a log creation cannot both succeed.
//! - LM2: a segment is added to a log in one transaction with the log's `next_segment_seq`
//!   bump (compare-and-set on the log's version): two writers cannot add the same or
//!   out-of-order sequence numbers.
//! - LM3: a log is deleted only when its segment list is empty (the caller removes segments,
//!   and their data, first), so no segment is left without its log, and when no writer holds
//!   its lock (checked before the delete; a writer taking the lock in between finds the log
//!   gone at its next compare-and-set on the log).
//! - LM4: every update is a compare-and-set on the version read; undecodable values are
//!   `Corrupt` naming the key.
//! - LM6: a segment leaves its log's list in the transaction that deletes its metadata and
//!   queues its data for deletion (`deletions/<id>`, removed once every bookie confirmed), so
//!   an interrupted truncation leaves work queued, never data no one will delete.
//! - LM5: segments are added and completed only by the holder of the log's writer lock: each
//!   such transaction also rewrites the lock key unchanged on the condition that its version is
//!   still the holder's, so a writer whose lock expired or was taken over gets `Fenced`, even
//!   after re-reading the log or retrying at a newer log version.

use std::sync::Arc;

use crate::error::MetaError;
use crate::schema::{self, LogMetadata, LogSegment, NamespaceInfo, check_name, wire};
use crate::segment_store::MODIFY_ATTEMPTS;
use crate::store::MetadataStore;
use crate::wall_clock::now_ms;
use crate::watch::Watch;
use crate::writer_lock::WriterLock;
use crate::{Cond, Op, Version};

/// Typed access to namespaces, logs and their segment lists.
#[derive(Debug)]
pub struct LogMetadataStore<S> {
    store: Arc<S>,
}

impl<S> Clone for LogMetadataStore<S> {
    fn clone(&self) -> LogMetadataStore<S> {
        LogMetadataStore { store: self.store.clone() }
    }
}

fn names(ns: &str, log: &str) -> Result<(), MetaError> {
    check_name("namespace", ns)?;
    check_name("log", log)
}

impl<S: MetadataStore> LogMetadataStore<S> {
    /// Logs in `store`.
    pub fn new(store: Arc<S>) -> LogMetadataStore<S> {
        LogMetadataStore { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Creates namespace `ns`; `AlreadyExists` when it exists.
    pub async fn create_namespace(&self, ns: &str) -> Result<Version, MetaError> {
        check_name("namespace", ns)?;
        let info = NamespaceInfo { created_ms: now_ms() };
        self.store.create(&schema::namespace_key(ns), wire::encode(&info), None).await
    }

    /// A namespace's info and version.
    pub async fn namespace(&self, ns: &str) -> Result<Option<(NamespaceInfo, Version)>, MetaError> {
        check_name("namespace", ns)?;
        let key = schema::namespace_key(ns);
        match self.store.get(&key).await? {
            Some(v) => Ok(Some((wire::decode(&key, &v.value)?, v.version))),
            None => Ok(None),
        }
    }

    /// Every namespace, in name order.
    pub async fn namespaces(&self) -> Result<Vec<String>, MetaError> {
        let (items, _) = self.store.list_all(schema::NAMESPACES).await?;
        Ok(items.into_iter().map(|(k, _)| k[schema::NAMESPACES.len()..].to_string()).collect())
    }

    /// Deletes an empty namespace (LM1); `Invalid` when it still has logs.
    pub async fn delete_namespace(&self, ns: &str) -> Result<Version, MetaError> {
        let (_, version) =
            self.namespace(ns).await?.ok_or_else(|| MetaError::NotFound(schema::namespace_key(ns)))?;
        let logs = self.store.list(&schema::logs_prefix(ns), None, 1).await?;
        if !logs.items.is_empty() {
            return Err(MetaError::Invalid(format!("namespace {ns} still has logs")));
        }
        // A log created since the listing rewrote the namespace: this fails (LM1).
        self.store.delete_if(&schema::namespace_key(ns), version).await
    }

    /// Creates log `log` in namespace `ns` (LM1); its metadata and version. `NotFound` for a
    /// missing namespace, `AlreadyExists` for an existing log.
    pub async fn create_log(&self, ns: &str, log: &str) -> Result<(LogMetadata, Version), MetaError> {
        names(ns, log)?;
        let ns_key = schema::namespace_key(ns);
        let meta = LogMetadata { created_ms: now_ms(), ..Default::default() };
        let mut conflict = None;
        // Concurrent creations of other logs rewrite the namespace too: re-read and retry.
        for _ in 0..MODIFY_ATTEMPTS {
            let ns_value =
                self.store.get(&ns_key).await?.ok_or_else(|| MetaError::NotFound(ns_key.clone()))?;
            let ops = vec![
                Op::Put {
                    key: ns_key.clone(),
                    value: ns_value.value,
                    cond: Cond::Version(ns_value.version),
                    lease: None,
                },
                Op::Put {
                    key: schema::log_key(ns, log),
                    value: wire::encode(&meta),
                    cond: Cond::Absent,
                    lease: None,
                },
            ];
            match self.store.txn(ops).await {
                Ok(version) => return Ok((meta, version)),
                Err(e @ MetaError::VersionConflict { .. }) => conflict = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(conflict.unwrap_or_else(|| MetaError::Unavailable("create_log: no attempt made".into())))
    }

    /// A log's metadata and version.
    pub async fn log(&self, ns: &str, log: &str) -> Result<Option<(LogMetadata, Version)>, MetaError> {
        names(ns, log)?;
        let key = schema::log_key(ns, log);
        match self.store.get(&key).await? {
            Some(v) => Ok(Some((wire::decode(&key, &v.value)?, v.version))),
            None => Ok(None),
        }
    }

    /// The logs of namespace `ns`, in name order, with their metadata and versions.
    pub async fn logs(&self, ns: &str) -> Result<Vec<(String, LogMetadata, Version)>, MetaError> {
        check_name("namespace", ns)?;
        let prefix = schema::logs_prefix(ns);
        let (items, _) = self.store.list_all(&prefix).await?;
        items
            .into_iter()
            .map(|(key, v)| Ok((key[prefix.len()..].to_string(), wire::decode(&key, &v.value)?, v.version)))
            .collect()
    }

    /// Replaces a log's metadata if its version is still `version` (LM4).
    pub async fn update_log(
        &self,
        ns: &str,
        log: &str,
        meta: &LogMetadata,
        version: Version,
    ) -> Result<Version, MetaError> {
        names(ns, log)?;
        self.store.put_if(&schema::log_key(ns, log), wire::encode(meta), version).await
    }

    /// Deletes a log whose segment list is empty and that no writer holds (LM3), at version
    /// `version`.
    pub async fn delete_log(&self, ns: &str, log: &str, version: Version) -> Result<Version, MetaError> {
        names(ns, log)?;
        if self.store.get(&schema::lock_key(ns, log)).await?.is_some() {
            return Err(MetaError::Invalid(format!("log {ns}/{log} has a writer; close it first")));
        }
        let segments = self.store.list(&schema::log_segments_prefix(ns, log), None, 1).await?;
        if !segments.items.is_empty() {
            return Err(MetaError::Invalid(format!("log {ns}/{log} still has segments; remove them first")));
        }
        self.store.delete_if(&schema::log_key(ns, log), version).await
    }

    /// A log's segments in sequence order, with their versions.
    pub async fn segments(&self, ns: &str, log: &str) -> Result<Vec<(LogSegment, Version)>, MetaError> {
        names(ns, log)?;
        let (items, _) = self.store.list_all(&schema::log_segments_prefix(ns, log)).await?;
        let prefix = schema::log_segments_prefix(ns, log);
        items
            .into_iter()
            .map(|(key, v)| {
                let segment = LogSegment::decode(&key, &v.value)?;
                // The key names the sequence number too: they must agree.
                if schema::parse_number(&key[prefix.len()..]) != Some(segment.seq) {
                    return Err(MetaError::Corrupt(format!("{key}: holds segment seq {}", segment.seq)));
                }
                Ok((segment, v.version))
            })
            .collect()
    }

    /// Appends `segment` to the log's list (LM2) as the holder of `lock` (LM5): `segment.seq`
    /// must be the log's `next_segment_seq` in `meta` read at `log_version`, and
    /// `segment.epoch` the lock's. The log's new metadata and the transaction's version (the
    /// new version of every key it wrote; `lock.version` moves to it).
    pub async fn add_segment(
        &self,
        lock: &mut WriterLock,
        segment: &LogSegment,
        meta: &LogMetadata,
        log_version: Version,
    ) -> Result<(LogMetadata, Version), MetaError> {
        let (ns, log) = (lock.namespace.clone(), lock.log.clone());
        names(&ns, &log)?;
        if segment.epoch != lock.epoch {
            return Err(MetaError::Invalid(format!(
                "segment epoch {} is not the lock's {}",
                segment.epoch, lock.epoch
            )));
        }
        if meta.writer_epoch != lock.epoch {
            let key = schema::log_key(&ns, &log);
            return Err(MetaError::Fenced { key, epoch: lock.epoch, current: meta.writer_epoch });
        }
        if segment.seq != meta.next_segment_seq {
            return Err(MetaError::Invalid(format!(
                "segment seq {} is not the log's next ({})",
                segment.seq, meta.next_segment_seq
            )));
        }
        let next_seq = segment.seq.checked_add(1).ok_or_else(|| {
            MetaError::Corrupt(format!(
                "{}: segment seq {} at the limit",
                schema::log_key(&ns, &log),
                segment.seq
            ))
        })?;
        let next = LogMetadata { next_segment_seq: next_seq, ..meta.clone() };
        let ops = vec![
            Op::Put {
                key: schema::log_segment_key(&ns, &log, segment.seq),
                value: segment.encode()?,
                cond: Cond::Absent,
                lease: None,
            },
            Op::Put {
                key: schema::log_key(&ns, &log),
                value: wire::encode(&next),
                cond: Cond::Version(log_version),
                lease: None,
            },
            lock.fence(),
        ];
        let version = self.fenced_txn(lock, ops).await?;
        Ok((next, version))
    }

    /// Replaces one segment of the list if its version is still `version`.
    pub async fn update_segment(
        &self,
        ns: &str,
        log: &str,
        segment: &LogSegment,
        version: Version,
    ) -> Result<Version, MetaError> {
        names(ns, log)?;
        self.store.put_if(&schema::log_segment_key(ns, log, segment.seq), segment.encode()?, version).await
    }

    /// Replaces a segment of the list and the log's metadata in one transaction (completing a
    /// segment moves the log's `next_txid`), each under its version, as the holder of `lock`
    /// (LM5; a recovering writer completes its predecessor's segment under its own lock).
    /// `lock.version` moves to the transaction's version.
    pub async fn update_segment_and_log(
        &self,
        lock: &mut WriterLock,
        segment: (&LogSegment, Version),
        meta: (&LogMetadata, Version),
    ) -> Result<Version, MetaError> {
        let (ns, log) = (lock.namespace.clone(), lock.log.clone());
        names(&ns, &log)?;
        if meta.0.writer_epoch != lock.epoch {
            let key = schema::log_key(&ns, &log);
            return Err(MetaError::Fenced { key, epoch: lock.epoch, current: meta.0.writer_epoch });
        }
        let ops = vec![
            Op::Put {
                key: schema::log_segment_key(&ns, &log, segment.0.seq),
                value: segment.0.encode()?,
                cond: Cond::Version(segment.1),
                lease: None,
            },
            Op::Put {
                key: schema::log_key(&ns, &log),
                value: wire::encode(meta.0),
                cond: Cond::Version(meta.1),
                lease: None,
            },
            lock.fence(),
        ];
        self.fenced_txn(lock, ops).await
    }

    /// Runs a transaction that ends with `lock.fence()`: success moves the lock's version;
    /// the lock no longer this holder's (taken over, or gone with its lease) is `Fenced`.
    async fn fenced_txn(&self, lock: &mut WriterLock, ops: Vec<Op>) -> Result<Version, MetaError> {
        let lock_key = schema::lock_key(&lock.namespace, &lock.log);
        match self.store.txn(ops).await {
            Ok(version) => {
                lock.version = version;
                Ok(version)
            }
            Err(MetaError::VersionConflict { key, .. }) if key == lock_key => Err(self.fenced(lock).await),
            Err(MetaError::LeaseExpired(l)) if l == lock.lease => Err(self.fenced(lock).await),
            Err(e) => Err(e),
        }
    }

    /// After a write fenced by `lock` whose answer was lost (it may have landed, moving the
    /// lock key's version): takes the stored version if the lock is still this holder's (the
    /// same value under the same lease); `Fenced` if not.
    pub async fn resync_lock(&self, lock: &mut WriterLock) -> Result<(), MetaError> {
        match self.store.get(&schema::lock_key(&lock.namespace, &lock.log)).await? {
            Some(stored) if lock.holds(&stored) => {
                lock.version = stored.version;
                Ok(())
            }
            _ => Err(self.fenced(lock).await),
        }
    }

    async fn fenced(&self, lock: &WriterLock) -> MetaError {
        let current = match self.log(&lock.namespace, &lock.log).await {
            Ok(Some((meta, _))) => meta.writer_epoch,
            _ => 0,
        };
        MetaError::Fenced { key: schema::log_key(&lock.namespace, &lock.log), epoch: lock.epoch, current }
    }

    /// Removes segment `seq` from the list if its version is still `version`.
    pub async fn remove_segment(
        &self,
        ns: &str,
        log: &str,
        seq: u64,
        version: Version,
    ) -> Result<Version, MetaError> {
        names(ns, log)?;
        self.store.delete_if(&schema::log_segment_key(ns, log, seq), version).await
    }

    /// Removes segment `seq` from the log's list (at `version`) together with its metadata
    /// (`segments/<segment_id>` at `segment_version`, if given), and queues its data for deletion
    /// from `bookies` (`deletions/<segment_id>`), all in one transaction (LM6).
    #[expect(
        clippy::too_many_arguments,
        reason = "one transaction over three keys, each named with its version"
    )]
    pub async fn remove_segment_queuing_data(
        &self,
        ns: &str,
        log: &str,
        seq: u64,
        version: Version,
        segment_id: u64,
        segment_version: Option<Version>,
        bookies: Vec<String>,
    ) -> Result<Version, MetaError> {
        names(ns, log)?;
        let mut ops =
            vec![Op::Delete { key: schema::log_segment_key(ns, log, seq), cond: Cond::Version(version) }];
        if let Some(segment_version) = segment_version {
            ops.push(Op::Delete {
                key: schema::segment_key(segment_id),
                cond: Cond::Version(segment_version),
            });
            let pending = schema::PendingDeletion { bookies, queued_ms: now_ms() };
            ops.push(Op::Put {
                key: schema::deletion_key(segment_id),
                value: wire::encode(&pending),
                cond: Cond::Any,
                lease: None,
            });
        }
        self.store.txn(ops).await
    }

    /// Segments whose data is still to be deleted from bookies: (segment id, bookies, version).
    pub async fn pending_deletions(&self) -> Result<Vec<(u64, Vec<String>, Version)>, MetaError> {
        let (items, _) = self.store.list_all(schema::DELETIONS).await?;
        items
            .into_iter()
            .map(|(key, v)| {
                let id = schema::parse_number(&key[schema::DELETIONS.len()..])
                    .ok_or_else(|| MetaError::Corrupt(format!("{key}: not a deletion key")))?;
                let pending: schema::PendingDeletion = wire::decode(&key, &v.value)?;
                Ok((id, pending.bookies, v.version))
            })
            .collect()
    }

    /// The data of `segment_id` is deleted from every bookie: its queue entry goes.
    pub async fn deletion_done(&self, segment_id: u64, version: Version) -> Result<Version, MetaError> {
        self.store.delete_if(&schema::deletion_key(segment_id), version).await
    }

    /// Changes to the log's segment list from version `from` (0: from now): how readers learn
    /// of new and completed segments without polling.
    pub async fn watch_segments(&self, ns: &str, log: &str, from: Version) -> Result<Watch, MetaError> {
        names(ns, log)?;
        self.store.watch(&schema::log_segments_prefix(ns, log), from).await
    }
}
