//! `LogSegments`: the writer's side of its log's metadata, under its writer lock: adding a new
//! segment to the log's list, completing one (its record count, last transaction id and last
//! DLSN, and the log's `next_txid`), and recovering segments a previous writer left in
//! progress. Each update is a compare-and-set fenced by the lock (LM5): a writer whose lock
//! was taken over gets `Fenced`.
//!
//! Invariants:
//! - LS1: a log metadata conflict caused by someone else (a truncation moving
//!   `truncated_before`) is retried on the fresh value, but only while the log's writer epoch
//!   is still this writer's; otherwise `Fenced`.
//! - LS2: a recovered segment is completed with what its last entry says (`first_index` plus
//!   its records), so its count needs no scan of the segment.
//! - LS3: only segments of earlier writer epochs are recovered: a newer writer's segment means
//!   this writer was taken over, and it stops (`Fenced`) without fencing the newer one.
//! - LS4: a roll rides out a store that is briefly unavailable (an etcd leader election): the
//!   segment's creation, its addition to the list and its completion are retried with
//!   backoff, within one budget of `STORE_RETRY_FOR` per roll (`PLACEMENT_RETRY_FOR` while
//!   too few bookies are registered: they register again after such an outage). An addition
//!   or completion whose answer was lost may have landed, even after a later try was sent:
//!   before trying again, and on a conflict while in doubt, the stored list decides (landed
//!   is success), and each try is a compare-and-set, so at most one lands. A segment whose
//!   addition may have landed is never deleted when the writer gives up (it may be listed):
//!   it stays, traceable by its owner. The previous segment's completion waits behind a roll
//!   that is retrying (they share the writer's hold on the log's metadata).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::schema::{self, LogMetadata, LogSegment, LogSegmentState, SegmentOwner};
use dlog_metadata::wall_clock::now_ms;
use dlog_metadata::{AnyStore, LogMetadataStore, MetaError, Version, WriterLock};
use dlog_replication::client::{ReadItem, ReplicationClient, ReplicationError, SegmentHandle};
use dlog_replication::placement::PlacementError;
use dlog_replication::quorum::QuorumSizes;

use super::dlsn::Dlsn;
use super::entry_codec::decode_entry;
use super::error::LogError;
use super::writer_core::SegmentSummary;

/// Attempts at a log metadata update that lost to someone else's (LS1).
const CONFLICT_ATTEMPTS: usize = 16;
/// How long a roll's metadata calls are retried while the store is unavailable (LS4).
pub(crate) const STORE_RETRY_FOR: Duration = Duration::from_secs(30);
/// How long a roll waits for enough bookies to register (LS4): bookies that lost their leases
/// in an outage register again within seconds; a cluster with too few bookies fails this late.
pub(crate) const PLACEMENT_RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Paces the retries of calls that met an unavailable store (LS4).
pub(crate) struct StoreRetry {
    started: tokio::time::Instant,
    pause: Duration,
}

impl StoreRetry {
    pub(crate) fn new() -> StoreRetry {
        StoreRetry { started: tokio::time::Instant::now(), pause: RETRY_PAUSE_MIN }
    }

    /// After a failed call: pauses and answers true when it is worth another (the store was
    /// unavailable and `STORE_RETRY_FOR` has not passed, or too few bookies were registered
    /// and `PLACEMENT_RETRY_FOR` has not passed); false at once otherwise.
    pub(crate) async fn again(&mut self, error: &LogError) -> bool {
        let unavailable = match error {
            LogError::Metadata(MetaError::Unavailable(_)) => true,
            LogError::Replication(e) => matches!(e.as_ref(), ReplicationError::Unavailable(_)),
            _ => false,
        };
        // Too few writable bookies is as passing: bookies re-register after an outage of the
        // store cost them their leases (Kafka's NotEnoughReplicas is retriable too).
        let placement = matches!(error, LogError::Replication(e)
            if matches!(e.as_ref(), ReplicationError::Placement(PlacementError::NotEnoughBookies { .. })));
        let limit = if placement { PLACEMENT_RETRY_FOR } else { STORE_RETRY_FOR };
        if !(unavailable || placement) || self.started.elapsed() >= limit {
            return false;
        }
        tracing::warn!(%error, pause = ?self.pause, "metadata unavailable; trying again");
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(RETRY_PAUSE_MAX);
        true
    }
}

/// Why `LogSegments::add` gave up.
pub(crate) struct AddFailed {
    /// The last error.
    pub(crate) error: LogError,
    /// Whether a try may have landed: the segment may be in the log's list (LS4).
    pub(crate) maybe_listed: bool,
}

/// The log's metadata as this writer last knew it, with its lock.
pub(crate) struct LogSegments {
    pub(crate) namespace: String,
    pub(crate) log: String,
    logs: LogMetadataStore<AnyStore>,
    pub(crate) lock: WriterLock,
    meta: LogMetadata,
    version: Version,
    /// In-progress segments this writer added, by sequence number.
    open: BTreeMap<u64, (LogSegment, Version)>,
}

impl LogSegments {
    pub(crate) fn new(
        logs: LogMetadataStore<AnyStore>,
        lock: WriterLock,
        meta: LogMetadata,
        version: Version,
    ) -> LogSegments {
        LogSegments {
            namespace: lock.namespace.clone(),
            log: lock.log.clone(),
            logs,
            lock,
            meta,
            version,
            open: BTreeMap::new(),
        }
    }

    fn fenced(&self) -> LogError {
        LogError::Fenced { log: format!("{}/{}", self.namespace, self.log) }
    }

    pub(crate) fn meta(&self) -> &LogMetadata {
        &self.meta
    }

    /// Maps a metadata error of a fenced transaction.
    fn map(&self, e: MetaError) -> LogError {
        match e {
            MetaError::Fenced { .. } => self.fenced(),
            e => LogError::Metadata(e),
        }
    }

    /// Re-reads the log after a conflict (LS1): Ok when this writer may retry.
    async fn refresh(&mut self) -> Result<(), LogError> {
        let (meta, version) = self
            .logs
            .log(&self.namespace, &self.log)
            .await?
            .ok_or_else(|| LogError::NoSuchLog(format!("{}/{}", self.namespace, self.log)))?;
        if meta.writer_epoch != self.lock.epoch {
            return Err(self.fenced());
        }
        (self.meta, self.version) = (meta, version);
        Ok(())
    }

    fn is_log_conflict(&self, e: &MetaError) -> bool {
        matches!(e, MetaError::VersionConflict { key, .. } if *key == schema::log_key(&self.namespace, &self.log))
    }

    /// Adds in-progress segment `seq` (the log's next) holding segment `segment_id`, retrying
    /// within `retry` (LS4). A failure says whether the addition may still have landed.
    pub(crate) async fn add(
        &mut self,
        seq: u64,
        segment_id: u64,
        first_txid: u64,
        retry: &mut StoreRetry,
    ) -> Result<(), AddFailed> {
        let mut in_doubt = false;
        let failed = |error, in_doubt| AddFailed { error, maybe_listed: in_doubt };
        let segment = LogSegment {
            seq,
            segment_id,
            first_txid,
            epoch: self.lock.epoch,
            created_ms: now_ms(),
            state: LogSegmentState::InProgress,
        };
        let mut conflicts = 0;
        loop {
            if in_doubt {
                // LS4: the stored list decides whether a lost answer hid the addition.
                match self.listed(seq).await {
                    Ok(Some((listed, version)))
                        if listed.segment_id == segment.segment_id && listed.epoch == segment.epoch =>
                    {
                        self.open.insert(seq, (listed, version));
                        return Ok(());
                    }
                    Ok(Some((listed, _))) => {
                        let error = LogError::Internal(format!(
                            "segment {seq} of the log is segment {}, not {segment_id}",
                            listed.segment_id
                        ));
                        return Err(failed(error, false));
                    }
                    Ok(None) => {}
                    Err(e) if retry.again(&e).await => continue,
                    // Fenced (the lock lost) included: this writer cannot tell any more.
                    Err(e) => return Err(failed(e, true)),
                }
            }
            let error = match self.logs.add_segment(&mut self.lock, &segment, &self.meta, self.version).await
            {
                Ok((meta, version)) => {
                    (self.meta, self.version) = (meta, version);
                    self.open.insert(seq, (segment, version));
                    return Ok(());
                }
                Err(e) => match self.failed_write(e, &mut conflicts, &mut in_doubt).await {
                    None => continue,
                    Some(error) => error,
                },
            };
            if !retry.again(&error).await {
                return Err(failed(error, in_doubt));
            }
        }
    }

    /// What a failed write fenced by the lock means (LS1, LS4): `None` to try again at once (a
    /// conflict caused by someone else: the log re-read), else the error; a store error after
    /// the write was sent leaves it `in_doubt`.
    async fn failed_write(
        &mut self,
        e: MetaError,
        conflicts: &mut usize,
        in_doubt: &mut bool,
    ) -> Option<LogError> {
        // While in doubt, a conflict may be the earlier try landing late (a timed-out etcd
        // proposal can still apply): the stored state decides, at the loop's top.
        let late = matches!(e, MetaError::AlreadyExists(_) | MetaError::VersionConflict { .. });
        if *in_doubt && late && *conflicts < CONFLICT_ATTEMPTS {
            *conflicts += 1;
            return None;
        }
        if self.is_log_conflict(&e) {
            if *conflicts < CONFLICT_ATTEMPTS {
                *conflicts += 1;
                return self.refresh().await.err();
            }
            return Some(LogError::Metadata(MetaError::Unavailable(format!(
                "{e}: {CONFLICT_ATTEMPTS} conflicts in a row"
            ))));
        }
        *in_doubt |= matches!(e, MetaError::Unavailable(_));
        Some(self.map(e))
    }

    /// The log's segment `seq` as stored, if listed (after re-reading the lock and the log:
    /// `Fenced` when another writer took it over).
    async fn listed(&mut self, seq: u64) -> Result<Option<(LogSegment, Version)>, LogError> {
        // A write that landed moved the lock key's version with it.
        self.logs.resync_lock(&mut self.lock).await.map_err(|e| self.map(e))?;
        self.refresh().await?;
        if self.meta.next_segment_seq <= seq {
            return Ok(None);
        }
        let listed = self.logs.segments(&self.namespace, &self.log).await?;
        Ok(listed.into_iter().find(|(s, _)| s.seq == seq))
    }

    /// Completes segment `seq` with `summary` (and moves the log's `next_txid`).
    pub(crate) async fn complete(&mut self, seq: u64, summary: SegmentSummary) -> Result<(), LogError> {
        let (segment, version) = match self.open.get(&seq) {
            Some(s) => s.clone(),
            None => return Err(LogError::Invalid(format!("segment {seq} is not one this writer added"))),
        };
        self.complete_segment(segment, version, summary).await?;
        self.open.remove(&seq);
        Ok(())
    }

    async fn complete_segment(
        &mut self,
        segment: LogSegment,
        version: Version,
        summary: SegmentSummary,
    ) -> Result<(), LogError> {
        let (last_txid, last_dlsn) = match (summary.record_count, summary.last_txid, summary.last_dlsn) {
            (0, _, _) => (0, None),
            (_, Some(txid), Some(dlsn)) => (txid, Some(dlsn.into())),
            _ => {
                return Err(LogError::Invalid(format!(
                    "segment {}: a count without a last record",
                    segment.seq
                )));
            }
        };
        let completed = LogSegment {
            state: LogSegmentState::Completed {
                last_txid,
                record_count: summary.record_count,
                last_dlsn,
                completed_ms: now_ms(),
            },
            ..segment
        };
        let seq = completed.seq;
        let (mut version, mut retry, mut in_doubt, mut conflicts) = (version, StoreRetry::new(), false, 0);
        loop {
            if in_doubt {
                // LS4: the stored segment decides whether a lost answer hid the completion.
                match self.listed(seq).await {
                    Ok(Some((listed, _))) if listed.state == completed.state => return Ok(()),
                    Ok(Some((listed, current))) if listed.state == LogSegmentState::InProgress => {
                        version = current
                    }
                    Ok(listed) => {
                        return Err(LogError::Internal(format!("segment {seq} to complete is {listed:?}")));
                    }
                    Err(e) if retry.again(&e).await => continue,
                    Err(e) => return Err(e),
                }
            }
            let mut meta = self.meta.clone();
            if summary.record_count > 0 {
                meta.next_txid = meta.next_txid.max(last_txid.saturating_add(1));
            }
            let error = match self
                .logs
                .update_segment_and_log(&mut self.lock, (&completed, version), (&meta, self.version))
                .await
            {
                Ok(v) => {
                    (self.meta, self.version) = (meta, v);
                    return Ok(());
                }
                Err(e) => match self.failed_write(e, &mut conflicts, &mut in_doubt).await {
                    None => continue,
                    Some(error) => error,
                },
            };
            if !retry.again(&error).await {
                return Err(error);
            }
        }
    }

    /// Recovers and completes every segment of the log still in progress (a previous writer's),
    /// in order (LS2).
    pub(crate) async fn recover_in_progress(
        &mut self,
        client: &ReplicationClient<AnyStore>,
    ) -> Result<(), LogError> {
        let segments = self.logs.segments(&self.namespace, &self.log).await?;
        for (segment, version) in segments {
            if segment.state != LogSegmentState::InProgress {
                continue;
            }
            // A segment of a newer writer: this one was taken over while opening (LS3).
            if segment.epoch > self.lock.epoch {
                return Err(self.fenced());
            }
            let meta = client.segment(segment.segment_id).await?;
            let end = client.recover_segment(segment.segment_id, meta.master_key.clone()).await?;
            let summary = match end.last_entry {
                None => {
                    SegmentSummary { record_count: 0, last_txid: None, last_dlsn: None, last_entry: None }
                }
                Some(last) => last_entry_summary(client, segment.seq, segment.segment_id, last).await?,
            };
            tracing::info!(log = %self.log, seq = segment.seq, records = summary.record_count, "recovered a segment");
            self.complete_segment(segment, version, summary).await?;
        }
        Ok(())
    }
}

/// What the last entry of a recovered segment says about it (LS2).
async fn last_entry_summary(
    client: &ReplicationClient<AnyStore>,
    seq: u64,
    segment: u64,
    last: u64,
) -> Result<SegmentSummary, LogError> {
    let mut reader = client.open_reader(segment, last).await?;
    let bytes = match reader.next().await {
        Some(ReadItem::Entry(entry, bytes)) if entry == last => bytes,
        Some(ReadItem::Failed(error)) => return Err(LogError::read(segment, error)),
        other => {
            return Err(LogError::Internal(format!(
                "segment {segment}: entry {last} not delivered: {other:?}"
            )));
        }
    };
    let entry = decode_entry(&bytes).map_err(|error| LogError::Corrupt { segment, entry: last, error })?;
    let count = entry.records.len() as u64;
    let last_record = entry.records.last().expect("decoded entries hold a record");
    Ok(SegmentSummary {
        record_count: entry.first_index + count,
        last_txid: Some(last_record.txid),
        last_dlsn: Some(Dlsn::new(seq, last, count - 1)),
        last_entry: Some(last),
    })
}

/// Creates segment `seq` of a log: placement and metadata through the replication client (the
/// owner recorded so an orphan can be traced to its log), with a fresh master key.
pub(crate) async fn create_segment(
    client: &ReplicationClient<AnyStore>,
    quorum: QuorumSizes,
    namespace: &str,
    log: &str,
    seq: u64,
) -> Result<SegmentHandle, LogError> {
    let owner = SegmentOwner { namespace: namespace.to_owned(), log: log.to_owned(), seq };
    Ok(client.create_segment(quorum, master_key(), Some(owner)).await?)
}

/// Deletes the metadata of a segment that never made it into its log's list (no entry was
/// sent to it); a failure is logged: the segment stays an orphan, traceable by its owner.
pub(crate) async fn delete_unlisted(store: &Arc<AnyStore>, segment: u64) {
    let segments = dlog_metadata::SegmentMetadataStore::new(store.clone());
    let deleted = async {
        match segments.get(segment).await? {
            Some((_, version)) => segments.delete(segment, version).await.map(|_| ()),
            None => Ok(()),
        }
    };
    if let Err(error) = deleted.await {
        tracing::warn!(segment, %error, "an unlisted segment's metadata could not be deleted");
    }
}

/// 16 random bytes: a writer's key for one segment.
fn master_key() -> Bytes {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&state.hash_one(1u8).to_le_bytes());
    key.extend_from_slice(&state.hash_one(2u8).to_le_bytes());
    key.into()
}
