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

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use dlog_metadata::schema::{self, LogMetadata, LogSegment, LogSegmentState, SegmentOwner};
use dlog_metadata::wall_clock::now_ms;
use dlog_metadata::{AnyStore, LogMetadataStore, MetaError, Version, WriterLock};
use dlog_replication::client::{ReadItem, ReplicationClient, SegmentHandle};
use dlog_replication::quorum::QuorumSizes;

use super::dlsn::Dlsn;
use super::entry_codec::decode_entry;
use super::error::LogError;
use super::writer_core::SegmentSummary;

/// Attempts at a log metadata update that lost to someone else's (LS1).
const CONFLICT_ATTEMPTS: usize = 16;

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

    /// Adds in-progress segment `seq` (the log's next) holding segment `segment_id`.
    pub(crate) async fn add(&mut self, seq: u64, segment_id: u64, first_txid: u64) -> Result<(), LogError> {
        let segment = LogSegment {
            seq,
            segment_id,
            first_txid,
            epoch: self.lock.epoch,
            created_ms: now_ms(),
            state: LogSegmentState::InProgress,
        };
        for _ in 0..CONFLICT_ATTEMPTS {
            match self.logs.add_segment(&mut self.lock, &segment, &self.meta, self.version).await {
                Ok((meta, version)) => {
                    (self.meta, self.version) = (meta, version);
                    self.open.insert(seq, (segment, version));
                    return Ok(());
                }
                Err(e) if self.is_log_conflict(&e) => self.refresh().await?,
                Err(e) => return Err(self.map(e)),
            }
        }
        Err(LogError::Metadata(MetaError::Unavailable(format!("adding segment {seq}: too many conflicts"))))
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
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut meta = self.meta.clone();
            if summary.record_count > 0 {
                meta.next_txid = meta.next_txid.max(last_txid.saturating_add(1));
            }
            match self
                .logs
                .update_segment_and_log(&mut self.lock, (&completed, version), (&meta, self.version))
                .await
            {
                Ok(v) => {
                    (self.meta, self.version) = (meta, v);
                    return Ok(());
                }
                Err(e) if self.is_log_conflict(&e) => self.refresh().await?,
                Err(e) => return Err(self.map(e)),
            }
        }
        let seq = completed.seq;
        Err(LogError::Metadata(MetaError::Unavailable(format!(
            "completing segment {seq}: too many conflicts"
        ))))
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
