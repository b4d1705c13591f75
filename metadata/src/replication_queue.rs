//! `ReplicationQueue`: the queue of under-replicated segments (`underreplicated/<id>`: the
//! bookies whose replicas are missing), the workers' claims on them
//! (`underreplicated-locks/<id>`, bound to each worker's lease), and the auditor election
//! (`auditor`, bound to the auditor's lease). BookKeeper's etcd driver has none of this
//! (reference §5.1); its ZooKeeper layout is the model (§1.9).
//!
//! Owns: marking, listing, claiming, completing and releasing queued segments; electing,
//! reading, resigning and watching the auditor.
//! Does not own: finding lost replicas (the auditor) or copying them (the worker), keeping
//! leases alive (`LeaseKeeper`).
//!
//! Invariants:
//! - RQ1: while a segment is queued its missing list only grows: a marking merges into the
//!   stored list by compare-and-set, never overwrites it; `since_ms` stays the first marking's.
//! - RQ2: at most one claim per segment, created only if absent, bound to the claiming
//!   worker's lease: it vanishes with the lease, so a dead worker's segment is claimable again.
//! - RQ3: `complete` deletes the entry only at the version the worker read, with the claim in
//!   the same transaction: a bookie marked missing after the worker read the entry fails it
//!   with `VersionConflict` (re-read, replicate the rest, complete again), so no missing
//!   replica is dropped unhandled. It deletes whoever's claim is there: the entry's version
//!   proves the work, the claim only spares duplicate work.
//! - RQ4: at most one auditor, created only if absent, bound to its lease. `watch_auditor`
//!   reads the holder and watches from one past that read's revision, so a standby cannot
//!   miss the vacancy between losing the election and starting to watch.
//! - RQ5: `release` and `resign_auditor` delete only the caller's own key (its lease, at the
//!   version read): a claim that expired and was taken by another is left alone.
//!
//! A listing answers one entry per key; a key or value that does not decode is `Err(Corrupt)`
//! naming its key, in place, so it is reported without hiding the rest of the queue.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::MetaError;
use crate::schema::{self, Claim, UnderReplicated, wire};
use crate::store::MetadataStore;
use crate::wall_clock::now_ms;
use crate::watch::Watch;
use crate::{Cond, EventKind, LeaseId, Op, Version, Versioned};

/// Attempts of a compare-and-set loop before it gives up with the last conflict.
pub const QUEUE_ATTEMPTS: usize = 32;

/// A queued segment, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedSegment {
    /// The segment.
    pub segment: u64,
    /// Bookies whose replicas are missing, sorted, without repeats.
    pub missing: Vec<String>,
    /// When it was first marked, ms since the Unix epoch.
    pub since_ms: u64,
    /// The entry's version (`complete` takes it, RQ3).
    pub version: Version,
}

/// A lease-bound claim (a worker's on a segment, or the auditor's), as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimHolder {
    /// The claim.
    pub claim: Claim,
    /// Its version.
    pub version: Version,
    /// The lease it is bound to.
    pub lease: Option<LeaseId>,
}

/// The under-replication queue and the auditor election in a store (see the module doc).
#[derive(Debug)]
pub struct ReplicationQueue<S> {
    store: Arc<S>,
}

impl<S> Clone for ReplicationQueue<S> {
    fn clone(&self) -> Self {
        ReplicationQueue { store: self.store.clone() }
    }
}

fn gave_up(last: Option<MetaError>, what: &str) -> MetaError {
    last.unwrap_or_else(|| MetaError::Unavailable(format!("{what}: kept conflicting")))
}

fn decode_queued(key: &str, stored: &Versioned) -> Result<QueuedSegment, MetaError> {
    let segment = schema::under_replicated_id_of(key)
        .ok_or_else(|| MetaError::Corrupt(format!("{key}: not an under-replicated segment key")))?;
    let entry: UnderReplicated = wire::decode(key, &stored.value)?;
    let missing: BTreeSet<String> = entry.missing.into_iter().collect();
    Ok(QueuedSegment {
        segment,
        missing: missing.into_iter().collect(),
        since_ms: entry.since_ms,
        version: stored.version,
    })
}

fn decode_claim(key: &str, stored: Versioned) -> Result<ClaimHolder, MetaError> {
    Ok(ClaimHolder { claim: wire::decode(key, &stored.value)?, version: stored.version, lease: stored.lease })
}

impl<S: MetadataStore> ReplicationQueue<S> {
    /// The queue of `store`.
    pub fn new(store: Arc<S>) -> ReplicationQueue<S> {
        ReplicationQueue { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Queues `segment` as missing its replicas on `missing` (bookie ids, at least one), or
    /// merges them into its entry if queued (RQ1); the entry's version.
    pub async fn mark_under_replicated(
        &self,
        segment: u64,
        missing: &[String],
    ) -> Result<Version, MetaError> {
        if missing.is_empty() {
            return Err(MetaError::Invalid(format!("segment {segment} marked with no missing bookie")));
        }
        for bookie in missing {
            schema::check_name("bookie", bookie)?;
        }
        let key = schema::under_replicated_key(segment);
        let mut last = None;
        for _ in 0..QUEUE_ATTEMPTS {
            let result = match self.store.get(&key).await? {
                None => {
                    let set: BTreeSet<&String> = missing.iter().collect();
                    let entry =
                        UnderReplicated { missing: set.into_iter().cloned().collect(), since_ms: now_ms() };
                    self.store.create(&key, wire::encode(&entry), None).await
                }
                Some(stored) => {
                    let queued = decode_queued(&key, &stored)?;
                    let mut merged: BTreeSet<String> = queued.missing.iter().cloned().collect();
                    merged.extend(missing.iter().cloned());
                    if merged.len() == queued.missing.len() {
                        return Ok(queued.version);
                    }
                    let entry =
                        UnderReplicated { missing: merged.into_iter().collect(), since_ms: queued.since_ms };
                    self.store.put_if(&key, wire::encode(&entry), queued.version).await
                }
            };
            match result {
                Ok(version) => return Ok(version),
                Err(e @ (MetaError::AlreadyExists(_) | MetaError::VersionConflict { .. })) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(last, &key))
    }

    /// `segment`'s entry; `None` when it is not queued.
    pub async fn queued(&self, segment: u64) -> Result<Option<QueuedSegment>, MetaError> {
        let key = schema::under_replicated_key(segment);
        self.store.get(&key).await?.map(|stored| decode_queued(&key, &stored)).transpose()
    }

    /// Every queued segment, in segment order; an entry that does not decode is `Err(Corrupt)`
    /// naming its key, in place.
    pub async fn under_replicated(&self) -> Result<Vec<Result<QueuedSegment, MetaError>>, MetaError> {
        let (items, _) = self.store.list_all(schema::UNDER_REPLICATED).await?;
        Ok(items.into_iter().map(|(key, stored)| decode_queued(&key, &stored)).collect())
    }

    /// Claims queued `segment` for worker `owner`, bound to its `lease` (RQ2); the entry to
    /// work from (its version goes to `complete`). `AlreadyExists` (the claim key) when
    /// another lease holds it; a repeat by the same lease answers as the first did.
    /// `NotFound` (the entry key) when the segment is not queued, and then no claim is left.
    pub async fn claim(&self, segment: u64, owner: &str, lease: LeaseId) -> Result<QueuedSegment, MetaError> {
        let key = schema::under_replicated_lock_key(segment);
        if !self.take(&key, owner, lease).await? {
            return Err(MetaError::AlreadyExists(key));
        }
        // Held: the entry can only grow (RQ1) or be completed by a worker that lost its claim.
        match self.queued(segment).await {
            Ok(Some(queued)) => Ok(queued),
            Ok(None) => {
                self.release(segment, lease).await?;
                Err(MetaError::NotFound(schema::under_replicated_key(segment)))
            }
            Err(e) => {
                // Best effort: the claim would otherwise block others until the lease ends.
                if let Err(release) = self.release(segment, lease).await {
                    tracing::warn!(segment, error = %release, "releasing a claim failed");
                }
                Err(e)
            }
        }
    }

    /// Who claims `segment`; `None` when nobody does.
    pub async fn claimed(&self, segment: u64) -> Result<Option<ClaimHolder>, MetaError> {
        let key = schema::under_replicated_lock_key(segment);
        self.store.get(&key).await?.map(|stored| decode_claim(&key, stored)).transpose()
    }

    /// Removes `segment` from the queue, with its claim, if its entry is still at `version`
    /// (RQ3); the revision of the removal. `VersionConflict` (the entry key) when it was
    /// marked again or completed since.
    pub async fn complete(&self, segment: u64, version: Version) -> Result<Version, MetaError> {
        let entry = schema::under_replicated_key(segment);
        let lock = schema::under_replicated_lock_key(segment);
        let mut last = None;
        for _ in 0..QUEUE_ATTEMPTS {
            let mut ops = vec![Op::Delete { key: entry.clone(), cond: Cond::Version(version) }];
            if let Some(claim) = self.store.get(&lock).await? {
                ops.push(Op::Delete { key: lock.clone(), cond: Cond::Version(claim.version) });
            }
            match self.store.txn(ops).await {
                Ok(revision) => return Ok(revision),
                // The claim came or went meanwhile: read it again.
                Err(MetaError::VersionConflict { key, expected, actual }) if key == lock => {
                    last = Some(MetaError::VersionConflict { key, expected, actual });
                }
                Err(MetaError::NotFound(key)) if key == lock => last = Some(MetaError::NotFound(key)),
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(last, &entry))
    }

    /// Gives up the claim on `segment` held by `lease` (a worker that failed, to let another
    /// try); false when `lease` holds no claim on it (RQ5).
    pub async fn release(&self, segment: u64, lease: LeaseId) -> Result<bool, MetaError> {
        self.drop_own(&schema::under_replicated_lock_key(segment), lease).await
    }

    /// Becomes the auditor, bound to `lease`, if there is none (RQ4): true when `lease` holds
    /// the auditor key (now, or already), false when another does.
    pub async fn try_become_auditor(&self, owner: &str, lease: LeaseId) -> Result<bool, MetaError> {
        self.take(schema::AUDITOR, owner, lease).await
    }

    /// The auditor; `None` when there is none.
    pub async fn auditor(&self) -> Result<Option<ClaimHolder>, MetaError> {
        self.store.get(schema::AUDITOR).await?.map(|stored| decode_claim(schema::AUDITOR, stored)).transpose()
    }

    /// Steps down as auditor; false when `lease` is not the auditor's (RQ5).
    pub async fn resign_auditor(&self, lease: LeaseId) -> Result<bool, MetaError> {
        self.drop_own(schema::AUDITOR, lease).await
    }

    /// The auditor now, and its changes from then on, without a gap (RQ4). A standby:
    /// `while !try_become_auditor(..)? { watch_auditor()?.vacant()? }`.
    pub async fn watch_auditor(&self) -> Result<AuditorWatch, MetaError> {
        let page = self.store.list(schema::AUDITOR, None, 0).await?;
        let current = match page.items.into_iter().find(|(key, _)| key == schema::AUDITOR) {
            Some((key, stored)) => Some(wire::decode(&key, &stored.value)?),
            None => None,
        };
        let watch = self.store.watch(schema::AUDITOR, Version(page.revision.0 + 1)).await?;
        Ok(AuditorWatch { current, watch })
    }

    /// Creates `key` with a claim for `owner` bound to `lease`: true when `lease` holds it
    /// (now, or already: a retry), false when another lease does.
    async fn take(&self, key: &str, owner: &str, lease: LeaseId) -> Result<bool, MetaError> {
        let value = wire::encode(&Claim { owner: owner.to_string(), since_ms: now_ms() });
        let mut last = None;
        for _ in 0..QUEUE_ATTEMPTS {
            match self.store.create(key, value.clone(), Some(lease)).await {
                Ok(_) => return Ok(true),
                Err(MetaError::AlreadyExists(k)) => match self.store.get(key).await? {
                    Some(held) => return Ok(held.lease == Some(lease)),
                    // Gone with its lease meanwhile: try again.
                    None => last = Some(MetaError::AlreadyExists(k)),
                },
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(last, key))
    }

    /// Deletes `key` if it is bound to `lease`, at the version read (RQ5).
    async fn drop_own(&self, key: &str, lease: LeaseId) -> Result<bool, MetaError> {
        match self.store.get(key).await? {
            Some(held) if held.lease == Some(lease) => match self.store.delete_if(key, held.version).await {
                Ok(_) => Ok(true),
                // Gone (or replaced) meanwhile: it is no longer ours.
                Err(MetaError::VersionConflict { .. } | MetaError::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            },
            _ => Ok(false),
        }
    }
}

/// The auditor key followed from a read on (RQ4).
#[derive(Debug)]
pub struct AuditorWatch {
    current: Option<Claim>,
    watch: Watch,
}

impl AuditorWatch {
    /// The auditor as last seen; `None`: vacant.
    pub fn current(&self) -> Option<&Claim> {
        self.current.as_ref()
    }

    /// Waits for the next change of the auditor; the new one (`None`: vacant). After an error
    /// the watch is over: call `watch_auditor` again.
    pub async fn next(&mut self) -> Result<Option<&Claim>, MetaError> {
        loop {
            let event = self.watch.next().await?;
            if event.key != schema::AUDITOR {
                continue;
            }
            self.current = match event.kind {
                EventKind::Put => Some(wire::decode(&event.key, &event.value)?),
                EventKind::Delete => None,
            };
            return Ok(self.current.as_ref());
        }
    }

    /// Resolves when there is no auditor (at once if there was none at the read).
    pub async fn vacant(&mut self) -> Result<(), MetaError> {
        while self.current.is_some() {
            self.next().await?;
        }
        Ok(())
    }
}
