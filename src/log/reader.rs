//! `LogReader`: reads a log's records in order from a start position, across its segments,
//! then tails it. Each segment is read by a replication `SegmentReaderHandle` (read-ahead,
//! speculation, READ_RANGE catch-up, LONG_POLL tailing, and the segment's close, all below);
//! this shell decodes entries into records, skips what lies before the start position or the
//! log's truncation point, and moves to the next segment when one ends, learning of new
//! segments from a watch on the log's segment list (no polling).
//!
//! Invariants:
//! - LR1: records come in DLSN order, each once, none before the start position, none before
//!   the truncation point the reader knows, none below the start transaction id.
//! - LR2: a record is delivered only once the segment reader delivered its entry: at or below
//!   the segment's last_add_confirmed, so durable at the ack quorum and never one recovery
//!   later drops.
//! - LR3: a segment is left only at its end (the segment's close), and the next one read is
//!   the next in the log's list, so no segment is skipped; one deleted by truncation while
//!   being read fails with `Truncated`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::schema::{LogSegment, LogSegmentState};
use dlog_metadata::{EventKind, Watch};
use dlog_replication::client::{ReadItem, SegmentReaderHandle};

use super::dlsn::Dlsn;
use super::entry_codec::decode_entry;
use super::error::LogError;
use super::namespace::Inner;

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The log's first readable record.
    Head,
    /// After the last durable record when the reader opens: only new records.
    Tail,
    /// The record at this position, or the first after it.
    Dlsn(Dlsn),
    /// The first record whose transaction id is at least this.
    Txid(u64),
}

/// How a reader reads.
#[derive(Clone, Debug, Default)]
pub struct ReaderConfig {
    /// Stop (`next` answers `None`) at the log's tail as it was when the reader opened, instead
    /// of waiting for new records.
    pub stop_at_tail: bool,
}

/// A record read from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its position.
    pub dlsn: Dlsn,
    /// Its transaction id.
    pub txid: u64,
    /// Its payload.
    pub payload: Bytes,
}

struct Current {
    seq: u64,
    segment: u64,
    reader: SegmentReaderHandle,
}

/// A reader of one log (see the module doc).
pub struct LogReader {
    ns: Arc<Inner>,
    log: String,
    /// The next position to deliver from.
    position: Dlsn,
    min_txid: Option<u64>,
    truncated_before: Dlsn,
    end: Option<Dlsn>,
    current: Option<Current>,
    /// Decoded records of the current entry, with the position after each.
    pending: VecDeque<(LogRecord, Dlsn)>,
    known: BTreeMap<u64, LogSegment>,
    watch: Option<Watch>,
}

/// The position after the last durable record of `log`.
pub(crate) async fn tail_position(ns: &Inner, log: &str) -> Result<Dlsn, LogError> {
    let (meta, _) =
        ns.logs.log(&ns.name, log).await?.ok_or_else(|| LogError::NoSuchLog(format!("{}/{log}", ns.name)))?;
    let segments = ns.logs.segments(&ns.name, log).await?;
    tail_of(ns, meta.next_segment_seq, segments.last().map(|(s, _)| s)).await
}

/// The tail of a log whose next segment is `next_segment_seq` and last segment `last`.
async fn tail_of(ns: &Inner, next_segment_seq: u64, last: Option<&LogSegment>) -> Result<Dlsn, LogError> {
    let Some(last) = last else {
        return Ok(Dlsn::segment_start(next_segment_seq));
    };
    match last.state {
        LogSegmentState::Completed { .. } => Ok(Dlsn::segment_start(last.seq + 1)),
        LogSegmentState::InProgress => {
            let lac = ns.client.last_add_confirmed(last.segment_id).await?;
            Ok(Dlsn::new(last.seq, lac.map_or(0, |l| l + 1), 0))
        }
    }
}

impl LogReader {
    pub(crate) async fn open(
        ns: Arc<Inner>,
        log: &str,
        from: StartPosition,
        config: ReaderConfig,
    ) -> Result<LogReader, LogError> {
        let full = format!("{}/{log}", ns.name);
        // The watch starts before the listing: a segment added in between is seen twice, never
        // missed.
        let watch = ns.logs.watch_segments(&ns.name, log, dlog_metadata::Version(0)).await?;
        let (meta, _) = ns.logs.log(&ns.name, log).await?.ok_or_else(|| LogError::NoSuchLog(full.clone()))?;
        let segments = ns.logs.segments(&ns.name, log).await?;
        let known: BTreeMap<u64, LogSegment> = segments.into_iter().map(|(s, _)| (s.seq, s)).collect();
        let truncated_before = meta.truncated_before.map(Dlsn::from).unwrap_or(Dlsn::HEAD);
        // Read once, from the listing above, for a tail start and a `stop_at_tail` end alike.
        let tail = if from == StartPosition::Tail || config.stop_at_tail {
            Some(tail_of(&ns, meta.next_segment_seq, known.values().next_back()).await?)
        } else {
            None
        };
        let (position, min_txid) = match from {
            StartPosition::Head => (truncated_before, None),
            StartPosition::Tail => (tail.expect("read for a tail start"), None),
            StartPosition::Dlsn(d) if d < truncated_before => {
                return Err(LogError::Truncated { before: truncated_before });
            }
            StartPosition::Dlsn(d) => (d, None),
            StartPosition::Txid(txid) => {
                // The first segment that may hold it: skip completed ones that end below it.
                let first = known.values().find(|s| match s.state {
                    LogSegmentState::Completed { record_count, last_txid, .. } => {
                        record_count > 0 && last_txid >= txid
                    }
                    LogSegmentState::InProgress => true,
                });
                let start =
                    first.map_or(Dlsn::segment_start(meta.next_segment_seq), |s| Dlsn::segment_start(s.seq));
                (start.max(truncated_before), Some(txid))
            }
        };
        let end = if config.stop_at_tail { tail } else { None };
        Ok(LogReader {
            ns,
            log: log.to_owned(),
            position,
            min_txid,
            truncated_before,
            end,
            current: None,
            pending: VecDeque::new(),
            known,
            watch: Some(watch),
        })
    }

    /// The position the next record is at or after.
    pub fn position(&self) -> Dlsn {
        self.position
    }

    /// The next record; waits for one while caught up (tailing). `None` only with
    /// `stop_at_tail`, once the tail is reached.
    pub async fn next(&mut self) -> Result<Option<LogRecord>, LogError> {
        loop {
            if let Some((record, after)) = self.pending.pop_front() {
                self.position = after;
                return Ok(Some(record));
            }
            if self.end.is_some_and(|end| self.position >= end) {
                return Ok(None);
            }
            match self.current.as_mut() {
                Some(current) => {
                    let item = current.reader.next().await;
                    self.take(item).await?;
                }
                None => self.open_next().await?,
            }
        }
    }

    /// Acts on what the segment reader delivered.
    async fn take(&mut self, item: Option<ReadItem>) -> Result<(), LogError> {
        let current = self.current.as_ref().expect("reading a segment");
        let (seq, segment) = (current.seq, current.segment);
        match item {
            Some(ReadItem::Entry(entry, bytes)) => {
                let decoded =
                    decode_entry(&bytes).map_err(|error| LogError::Corrupt { segment, entry, error })?;
                let count = decoded.records.len() as u64;
                for (slot, record) in decoded.records.into_iter().enumerate() {
                    let slot = slot as u64;
                    let dlsn = Dlsn::new(seq, entry, slot);
                    let after = if slot + 1 == count {
                        Dlsn::new(seq, entry + 1, 0)
                    } else {
                        Dlsn::new(seq, entry, slot + 1)
                    };
                    let visible = dlsn >= self.position
                        && dlsn >= self.truncated_before
                        && self.min_txid.is_none_or(|t| record.txid >= t);
                    if visible {
                        self.pending.push_back((
                            LogRecord { dlsn, txid: record.txid, payload: record.payload },
                            after,
                        ));
                    }
                }
                // Every filter cuts a prefix of the entry (positions and txids increase in it),
                // so the last record kept moves the position past the entry.
                if self.pending.is_empty() {
                    self.position = self.position.max(Dlsn::new(seq, entry + 1, 0));
                }
                Ok(())
            }
            Some(ReadItem::End) => {
                self.current = None;
                self.position = Dlsn::segment_start(seq + 1);
                Ok(())
            }
            Some(ReadItem::Failed(error)) => {
                self.current = None;
                self.check_truncated().await?;
                Err(LogError::read(segment, error))
            }
            None => Err(LogError::Closed),
        }
    }

    /// `Truncated` when the log was truncated past the reader's position.
    async fn check_truncated(&mut self) -> Result<(), LogError> {
        if let Some((meta, _)) = self.ns.logs.log(&self.ns.name, &self.log).await?
            && let Some(before) = meta.truncated_before.map(Dlsn::from)
        {
            self.truncated_before = self.truncated_before.max(before);
        }
        if self.position < self.truncated_before {
            return Err(LogError::Truncated { before: self.truncated_before });
        }
        Ok(())
    }

    /// Opens the segment holding the position, waiting for the log's list to have it.
    async fn open_next(&mut self) -> Result<(), LogError> {
        loop {
            if let Some(segment) =
                self.known.range(self.position.segment_seq..).next().map(|(_, s)| s.clone())
            {
                if segment.seq > self.position.segment_seq {
                    self.position = Dlsn::segment_start(segment.seq);
                }
                let empty = matches!(segment.state, LogSegmentState::Completed { record_count: 0, .. });
                if empty {
                    self.position = Dlsn::segment_start(segment.seq + 1);
                    return Ok(());
                }
                let first = self.position.entry_id;
                let reader = match self.ns.client.open_reader(segment.segment_id, first).await {
                    Ok(reader) => reader,
                    Err(dlog_replication::client::ReplicationError::NoSuchSegment(_)) => {
                        // Deleted by a truncation since it was listed (LR3).
                        self.known.remove(&segment.seq);
                        self.check_truncated().await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                self.current = Some(Current { seq: segment.seq, segment: segment.segment_id, reader });
                return Ok(());
            }
            if self.end.is_some_and(|end| self.position >= end) {
                return Ok(());
            }
            self.wait_for_segments().await?;
        }
    }

    /// Waits for a change of the log's segment list and applies it.
    async fn wait_for_segments(&mut self) -> Result<(), LogError> {
        let prefix = dlog_metadata::schema::log_segments_prefix(&self.ns.name, &self.log);
        loop {
            let watch = match self.watch.as_mut() {
                Some(watch) => watch,
                None => {
                    // Re-listed after the watch is back, as at open.
                    let watch = self
                        .ns
                        .logs
                        .watch_segments(&self.ns.name, &self.log, dlog_metadata::Version(0))
                        .await?;
                    self.watch = Some(watch);
                    let segments = self.ns.logs.segments(&self.ns.name, &self.log).await?;
                    self.known = segments.into_iter().map(|(s, _)| (s.seq, s)).collect();
                    return Ok(());
                }
            };
            match watch.next().await {
                Ok(event) => {
                    let Some(seq) =
                        event.key.strip_prefix(&prefix).and_then(dlog_metadata::schema::parse_number)
                    else {
                        continue;
                    };
                    match event.kind {
                        EventKind::Put => {
                            let segment = LogSegment::decode(&event.key, &event.value)?;
                            self.known.insert(seq, segment);
                        }
                        EventKind::Delete => {
                            self.known.remove(&seq);
                        }
                    }
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(log = %self.log, %error, "segment list watch failed; watching again");
                    self.watch = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
