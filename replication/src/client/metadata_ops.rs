//! `MetadataOps`: what the replication client asks of the metadata store, as async functions
//! run on the tokio runtime: create a segment (placement over the writable bookies), change
//! an ensemble, close a written segment, mark one InRecovery, close a recovered one, and find
//! bookies' addresses.
//!
//! Invariants:
//! - MO1: every change is a compare-and-set on the version read (a lost race re-reads and
//!   decides again; nothing is overwritten blindly).
//! - MO2: an ensemble change and a writer's close happen only while the segment is Open; any
//!   other state means a recoverer took over: `Fenced`.
//! - MO3: a recoverer's close goes from InRecovery to Closed; if the segment is Closed already,
//!   its stored end is the answer (the first close wins, Q7).
//! - MO4: a store error after a write was sent leaves it in doubt; the stored metadata, read
//!   again, decides (see `change_ensemble`): a writer is never told an ensemble change failed
//!   when it may have landed.
//! - MO5: the members an ensemble change (a writer's or a recoverer's) replaces are avoided by
//!   this client's placements for a while (quarantine.rs, QU1, QU2).
//! - MO6: an ensemble change and a writer's close ride out a store unavailable for a few
//!   seconds (an etcd leader election): their reads and writes are tried `CAS_ATTEMPTS` times
//!   with pauses (`retry_pause`), the stored metadata deciding after each (MO4).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::schema::{DigestType, SegmentMetadata, SegmentOwner, SegmentState};
use dlog_metadata::{BookieRegistry, MetaError, MetadataStore, SegmentMetadataStore, Version};

use super::ReplicationError;
use super::quarantine::{Quarantine, placing};
use crate::placement::{self, Candidate};
use crate::quorum::QuorumSizes;
use crate::recovery::RecoveredEnd;
use crate::segment_writer::{EnsembleChangeError, WriterError};

/// Compare-and-set attempts before giving up with the last conflict.
const CAS_ATTEMPTS: usize = 16;

/// The pause before attempt `attempt` (1 on) of a call that failed: 20 ms doubling to 640 ms,
/// so `CAS_ATTEMPTS` attempts span about 7 s (MO6).
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(10 << attempt.min(6))
}

/// A bookie id and, when it is registered, where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookieAddr {
    /// The bookie's id.
    pub id: String,
    /// Its endpoint; `None` when it is not registered now (requests to it fail at once).
    pub addr: Option<SocketAddr>,
}

/// A segment as recovery starts it.
pub(crate) enum RecoveryStart {
    /// Closed already: its end.
    Closed(RecoveredEnd),
    /// InRecovery now: its quorum sizes and ensembles.
    Recover { quorum: QuorumSizes, ensembles: BTreeMap<u64, Vec<String>> },
}

pub(crate) struct MetadataOps<S> {
    segments: SegmentMetadataStore<S>,
    registry: BookieRegistry<S>,
    quarantine: Quarantine,
}

/// The shell's clock for the quarantine (MO5).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn endpoint(endpoint: &str) -> Option<SocketAddr> {
    endpoint.to_socket_addrs().ok()?.next()
}

fn quorum_of(meta: &SegmentMetadata) -> Result<QuorumSizes, ReplicationError> {
    QuorumSizes::new(
        meta.ensemble_size as usize,
        meta.write_quorum_size as usize,
        meta.ack_quorum_size as usize,
    )
    .map_err(|e| ReplicationError::BadMetadata(e.to_string()))
}

/// Replacements for as many of `replace` as placement can find (in their order): a writer keeps
/// the others failed for its next attempt rather than get none.
fn replace_what_can_be(
    quorum: QuorumSizes,
    current: &[String],
    replace: &[usize],
    candidates: &[Candidate],
    avoided: &[String],
    seed: u64,
) -> Result<Vec<String>, placement::PlacementError> {
    placing(avoided, |exclude| {
        match placement::choose_replacements(quorum, current, replace, candidates, exclude, seed) {
            Err(placement::PlacementError::NotEnoughBookies { available, .. }) if available > 0 => {
                placement::choose_replacements(
                    quorum,
                    current,
                    &replace[..available],
                    candidates,
                    exclude,
                    seed,
                )
            }
            other => other,
        }
    })
}

impl<S: MetadataStore + 'static> MetadataOps<S> {
    pub(crate) fn new(store: Arc<S>) -> MetadataOps<S> {
        MetadataOps {
            segments: SegmentMetadataStore::new(store.clone()),
            registry: BookieRegistry::new(store),
            quarantine: Quarantine::default(),
        }
    }

    /// The writable bookies as placement candidates, and their addresses.
    async fn candidates(&self) -> Result<(Vec<Candidate>, HashMap<String, SocketAddr>), MetaError> {
        let mut candidates = Vec::new();
        let mut addrs = HashMap::new();
        for bookie in self.registry.writable().await?.into_iter().flatten() {
            let Some(addr) = endpoint(&bookie.info.endpoint) else { continue };
            addrs.insert(bookie.id.clone(), addr);
            candidates.push(Candidate {
                id: bookie.id,
                zone: bookie.info.zone,
                rack: bookie.info.rack,
                free_bytes: bookie.info.free_bytes,
                load: 0,
            });
        }
        Ok((candidates, addrs))
    }

    /// Where each bookie listens, looked up in the registry (writable or read-only).
    pub(crate) async fn addresses(&self, ids: &[String]) -> Result<Vec<BookieAddr>, MetaError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let addr = self.registry.bookie(id).await?.and_then(|b| endpoint(&b.info.endpoint));
            out.push(BookieAddr { id: id.clone(), addr });
        }
        Ok(out)
    }

    /// Creates an Open segment over an ensemble chosen by placement; its id and ensemble.
    pub(crate) async fn create(
        &self,
        quorum: QuorumSizes,
        master_key: &[u8],
        owner: Option<SegmentOwner>,
        seed: u64,
    ) -> Result<(u64, Vec<BookieAddr>), ReplicationError> {
        let (candidates, addrs) = self.candidates().await?;
        let avoided = self.quarantine.avoided(now());
        let ensemble =
            placing(&avoided, |exclude| placement::choose_ensemble(quorum, &candidates, exclude, seed))?;
        let meta = SegmentMetadata {
            ensemble_size: quorum.ensemble_size() as u32,
            write_quorum_size: quorum.write_quorum_size() as u32,
            ack_quorum_size: quorum.ack_quorum_size() as u32,
            digest_type: DigestType::Crc32c,
            // Stored as it is: re-replication writes with it (schema/segment.rs says who may
            // read it).
            master_key: Bytes::copy_from_slice(master_key),
            state: SegmentState::Open,
            ensembles: BTreeMap::from([(0, ensemble.clone())]),
            created_ms: dlog_metadata::wall_clock::now_ms(),
            owner,
        };
        let (id, _) = self.segments.create(&meta).await?;
        let bookies =
            ensemble.into_iter().map(|id| BookieAddr { addr: addrs.get(&id).copied(), id }).collect();
        Ok((id, bookies))
    }

    async fn read(&self, segment: u64) -> Result<(SegmentMetadata, Version), ReplicationError> {
        self.segments.get(segment).await?.ok_or(ReplicationError::NoSuchSegment(segment))
    }

    /// Replaces `replace` (indexes of `current`, the writer's current ensemble) from
    /// `first_entry` on, if the segment is still Open (MO2); the new ensemble. Placement may
    /// replace only some of them (too few spare bookies).
    ///
    /// MO4: `Unavailable` is answered only when the change did not land and never will: a write
    /// whose answer was lost (a store error after it was sent) may have landed, so the stored
    /// metadata decides: the proposal found there is success; the version moved on (or a no-op
    /// write at that version succeeded) means it can no longer land. Until one of those is
    /// known, this keeps asking the store, and the writer keeps its completions held. An
    /// ensemble that is neither the writer's nor its proposal is `Fenced`: the writer cannot
    /// know where its entries are said to be.
    pub(crate) async fn change_ensemble(
        &self,
        segment: u64,
        first_entry: u64,
        current: Vec<String>,
        replace: Vec<usize>,
        seed: u64,
    ) -> Result<Vec<BookieAddr>, EnsembleChangeError> {
        let unavailable = |e: &dyn std::fmt::Display| EnsembleChangeError::Unavailable(e.to_string());
        self.quarantine.add(replace.iter().filter_map(|&i| current.get(i)), now()); // MO5
        let avoided = self.quarantine.avoided(now());
        let mut tries = 0;
        let (candidates, addrs) = loop {
            match self.candidates().await {
                Ok(found) => break found,
                // MO6.
                Err(MetaError::Unavailable(_)) if tries < CAS_ATTEMPTS as u32 => {
                    tries += 1;
                    tokio::time::sleep(retry_pause(tries)).await;
                }
                Err(e) => return Err(unavailable(&e)),
            }
        };
        let to_addrs = |ids: Vec<String>| -> Vec<BookieAddr> {
            ids.into_iter().map(|id| BookieAddr { addr: addrs.get(&id).copied(), id }).collect()
        };
        // A proposal whose write may have landed (its answer was lost).
        let mut in_doubt: Option<Vec<String>> = None;
        let mut last_error = String::new();
        for attempt in 0u32.. {
            if attempt > 0 {
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            if attempt >= CAS_ATTEMPTS as u32 && in_doubt.is_none() {
                return Err(EnsembleChangeError::Unavailable(last_error));
            }
            let (mut meta, version) = match self.read(segment).await {
                Ok(read) => read,
                Err(e) if in_doubt.is_none() => return Err(unavailable(&e)),
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            if meta.state != SegmentState::Open {
                return Err(EnsembleChangeError::Fenced);
            }
            let stored = meta.current_ensemble().to_vec();
            if let Some(proposal) = &in_doubt
                && meta.ensembles.get(&first_entry) == Some(proposal)
                && stored == *proposal
            {
                return Ok(to_addrs(stored));
            }
            if stored != current {
                tracing::error!(segment, ?stored, ?current, "the stored ensemble is not the writer's");
                return Err(EnsembleChangeError::Fenced);
            }
            let quorum = match quorum_of(&meta) {
                Ok(quorum) => quorum,
                Err(e) if in_doubt.is_none() => return Err(unavailable(&e)),
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let proposal = match replace_what_can_be(quorum, &current, &replace, &candidates, &avoided, seed)
            {
                Ok(proposal) => proposal,
                Err(e) if in_doubt.is_none() => return Err(unavailable(&e)),
                Err(e) => {
                    // Settle the doubt: a write at this version makes the lost one impossible.
                    last_error = e.to_string();
                    match self.segments.update(segment, &meta, version).await {
                        Ok(_) => return Err(EnsembleChangeError::Unavailable(last_error)),
                        Err(_) => continue,
                    }
                }
            };
            let _ = meta.ensembles.split_off(&first_entry);
            meta.ensembles.insert(first_entry, proposal.clone());
            match self.segments.update(segment, &meta, version).await {
                Ok(_) => return Ok(to_addrs(proposal)),
                Err(e @ MetaError::VersionConflict { .. }) => last_error = e.to_string(),
                Err(e) => {
                    last_error = e.to_string();
                    in_doubt = Some(proposal);
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// The writer's close: Open to Closed at `last_entry` (MO2); Closed at the same entry
    /// already is success.
    pub(crate) async fn close_written(
        &self,
        segment: u64,
        last_entry: Option<u64>,
        length: u64,
    ) -> Result<(), WriterError> {
        let metadata = |e: &dyn std::fmt::Display| WriterError::Metadata(e.to_string());
        let mut last_error = String::new();
        for attempt in 0..CAS_ATTEMPTS as u32 {
            if attempt > 0 {
                tokio::time::sleep(retry_pause(attempt)).await; // MO6
            }
            let (mut meta, version) = match self.read(segment).await {
                Ok(read) => read,
                Err(ReplicationError::Metadata(e @ MetaError::Unavailable(_))) => {
                    last_error = e.to_string();
                    continue;
                }
                Err(e) => return Err(metadata(&e)),
            };
            match meta.state {
                SegmentState::Open => {}
                SegmentState::Closed { last_entry_id, .. } if last_entry_id == last_entry => return Ok(()),
                _ => return Err(WriterError::Fenced),
            }
            meta.state = SegmentState::Closed { last_entry_id: last_entry, length };
            // Ensembles holding no entry go (the first one stays: SG2).
            let end = last_entry.map_or(0, |l| l + 1);
            let _ = meta.ensembles.split_off(&end.max(1));
            match self.segments.update(segment, &meta, version).await {
                Ok(_) => return Ok(()),
                // A lost answer may hide a close that landed: the next read decides.
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(WriterError::Metadata(format!(
            "segment {segment}: close failed {CAS_ATTEMPTS} times: {last_error}"
        )))
    }

    /// Starts a recovery: a Closed segment's end, or the segment marked InRecovery (kept if it
    /// already is: another recoverer's run may have died) with what recovery needs.
    pub(crate) async fn begin_recovery(&self, segment: u64) -> Result<RecoveryStart, ReplicationError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut meta, version) = self.read(segment).await?;
            let quorum = quorum_of(&meta)?;
            match meta.state {
                SegmentState::Closed { last_entry_id, length } => {
                    return Ok(RecoveryStart::Closed(RecoveredEnd { last_entry: last_entry_id, length }));
                }
                SegmentState::InRecovery => {
                    return Ok(RecoveryStart::Recover { quorum, ensembles: meta.ensembles });
                }
                SegmentState::Open => {
                    meta.state = SegmentState::InRecovery;
                    match self.segments.update(segment, &meta, version).await {
                        Ok(_) => return Ok(RecoveryStart::Recover { quorum, ensembles: meta.ensembles }),
                        Err(MetaError::VersionConflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ReplicationError::BadMetadata(format!(
            "segment {segment}: recovery start lost {CAS_ATTEMPTS} races"
        )))
    }

    /// Replacements for `replace` (indexes of `current`, a recoverer's last ensemble) chosen by
    /// placement among the writable bookies; the whole ensemble with them in place. Nothing is
    /// written (RC7: the close stores it).
    pub(crate) async fn choose_replacements(
        &self,
        segment: u64,
        current: Vec<String>,
        replace: Vec<usize>,
        seed: u64,
    ) -> Result<Vec<BookieAddr>, String> {
        self.quarantine.add(replace.iter().filter_map(|&i| current.get(i)), now()); // MO5
        let avoided = self.quarantine.avoided(now());
        let (candidates, addrs) = self.candidates().await.map_err(|e| e.to_string())?;
        let (meta, _) = self.read(segment).await.map_err(|e| e.to_string())?;
        let quorum = quorum_of(&meta).map_err(|e| e.to_string())?;
        let ensemble = placing(&avoided, |exclude| {
            placement::choose_replacements(quorum, &current, &replace, &candidates, exclude, seed)
        })
        .map_err(|e| e.to_string())?;
        Ok(ensemble.into_iter().map(|id| BookieAddr { addr: addrs.get(&id).copied(), id }).collect())
    }

    /// A recoverer's close (MO3): the end the metadata holds afterwards. `change` holds the
    /// ensembles its recovery ADDs went to from their first entry on (RC7), stored with the
    /// Closed state.
    pub(crate) async fn close_recovered(
        &self,
        segment: u64,
        end: RecoveredEnd,
        change: Option<BTreeMap<u64, Vec<String>>>,
    ) -> Result<RecoveredEnd, String> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut meta, version) = self.read(segment).await.map_err(|e| e.to_string())?;
            match meta.state {
                SegmentState::Closed { last_entry_id, length } => {
                    return Ok(RecoveredEnd { last_entry: last_entry_id, length });
                }
                SegmentState::Open => return Err(format!("segment {segment} is Open again")),
                SegmentState::InRecovery => {}
            }
            meta.state = SegmentState::Closed { last_entry_id: end.last_entry, length: end.length };
            if let Some(change) = &change
                && let Some(first) = change.keys().next()
            {
                let _ = meta.ensembles.split_off(first);
                meta.ensembles.extend(change.iter().map(|(k, v)| (*k, v.clone())));
            }
            // Ensembles holding no entry go (the first one stays: SG2).
            let next = end.last_entry.map_or(0, |l| l + 1);
            let _ = meta.ensembles.split_off(&next.max(1));
            match self.segments.update(segment, &meta, version).await {
                Ok(_) => return Ok(end),
                // A lost answer may hide a close that landed: the next read decides (the
                // Closed state found is then ours, or the first recoverer's: MO3 either way).
                Err(_) => continue,
            }
        }
        Err(format!("segment {segment}: close lost {CAS_ATTEMPTS} races"))
    }

    /// A segment's metadata, for readers.
    pub(crate) async fn get(&self, segment: u64) -> Result<SegmentMetadata, ReplicationError> {
        Ok(self.read(segment).await?.0)
    }
}
