//! The shard core's segment storage: the write cache, flushes to entry logs, and the checkpoint
//! that follows each flush.
//!
//! A flush: seal the active cache half at the durable journal position (the mark, W2); plan a
//! run; make sure an entry log has room (asking the shell for a new one if not); stream the run
//! in chunks with a few writes in flight, the last chunk (the footer) only once every other
//! chunk is written, with an fdatasync (RN2); index the run (RI1) and drop the sealed half;
//! then checkpoint the journal at the mark (journal the segments' state after it, persist the
//! manifest, reclaim journal files). One flush at a time; the next starts once the manifest is
//! persisted.
//!
//! Invariants:
//! - F1: the journal is checkpointed at a mark only after every entry before the mark is in a
//!   durable, indexed run, and the manifest naming those runs is written before any journal
//!   file is reclaimed (the shell runs manifest, checkpoint, reclaim in that order).
//! - F2: adds wait (backpressure, counted in `adds_throttled`) only while the active half is
//!   full and a flush or compaction is under way; each half is bounded by half of
//!   `write_cache_bytes_max` plus the journal batches in flight when it filled.
//! - F3: a failed entry log write or flush keeps the sealed half and the journal; the flush is
//!   retried later in a new entry log, so nothing acknowledged is ever lost to it.
//! - F4: `next_run` is above every indexed run's seq and at most `RUN_SEQ_LIMIT` (RN4): a run
//!   takes it only while it is below the limit (else the flush fails as in F3, or compaction
//!   waits), and a manifest's `next_run` past the limit is damage, not taken; so no seq repeats
//!   or wraps, whatever the disk says.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{OP_FLUSH, Output, ShardCore};
use crate::error::Error;
use crate::ids::{FileSeq, LogSeq, SegmentId};
use crate::io::buf::AlignedBuf;
use crate::io::{Completion, DiskOp};
use crate::shard::request::{JournalMark, Reply};
use crate::storage::manifest::{Manifest, ManifestRun};
use crate::storage::run::{RUN_SEQ_LIMIT, RunEncoder};
use crate::storage::run_index::{RunIndex, RunInfo};
use crate::storage::write_cache::WriteCache;

/// Bytes per flush write.
pub const FLUSH_CHUNK_BYTES: usize = 512 << 10;
/// Flush writes in flight at most.
pub const FLUSH_WRITES_IN_FLIGHT_MAX: usize = 4;
/// Wait after a failed flush before the next attempt.
pub const FLUSH_RETRY_DELAY: Duration = Duration::from_secs(1);

use crate::constants::ENTRY_LOG_FILE_BIT;

/// The disk's name for entry log `seq`.
pub fn entry_log_file(seq: LogSeq) -> FileSeq {
    FileSeq(ENTRY_LOG_FILE_BIT | seq.0)
}

/// The storage knobs the core needs.
#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// Both cache halves together, in bytes charged.
    pub write_cache_bytes_max: usize,
    /// A flush starts at least this often while the cache holds entries.
    pub flush_interval: Duration,
    /// An entry log takes runs until it would pass this size.
    pub entry_log_bytes: u64,
    /// A log whose live bytes fall under this fraction of its bytes is compacted.
    pub compaction_live_fraction: f64,
    /// Compaction moves at most this many bytes per second.
    pub compaction_bytes_per_s: u64,
    /// Read cache size in bytes charged (0: none).
    pub read_cache_bytes_max: usize,
}

/// Storage as the core starts with it.
#[derive(Debug, Default)]
pub struct StorageStartState {
    /// Runs found at open.
    pub index: RunIndex,
    /// Entry logs and the bytes of each that runs use.
    pub logs: Vec<(LogSeq, u64)>,
    /// Sequence number for the next entry log.
    pub next_log: u64,
    /// Damage found at open.
    pub damage: Vec<String>,
    /// Entry logs holding damage: kept as they are (G3).
    pub damaged_logs: Vec<LogSeq>,
    /// Entries replayed from the journal after the checkpoint: they go into the write cache.
    pub replayed: Vec<(SegmentId, u64, Bytes)>,
    /// The checkpoint replay started from.
    pub checkpoint: Option<JournalMark>,
    /// Sequence number for the next run, as the manifest says (runs are never renumbered).
    pub next_run: u64,
}

/// What a run being written holds.
#[derive(Debug)]
pub(super) enum RunSource {
    /// The sealed cache half; the journal is checkpointed at this mark once it is durable.
    Cache(JournalMark),
    /// Live spans of an entry log, moved by compaction.
    Compaction(Box<super::compaction::Moved>),
}

impl RunSource {
    fn entries<'a>(&'a self, cache: &'a WriteCache) -> &'a dyn crate::storage::run::SortedEntries {
        match self {
            RunSource::Cache(_) => cache.sealed().expect("a flush has a sealed half"),
            RunSource::Compaction(moved) => &moved.entries,
        }
    }
}

#[derive(Debug)]
pub(super) struct Writing {
    encoder: RunEncoder,
    source: RunSource,
    /// The log and the run's offset in it, once a log with room is ready.
    place: Option<(LogSeq, u64)>,
    in_flight: usize,
    /// The footer chunk, held until every other chunk is written (RN2).
    last: Option<AlignedBuf>,
    last_submitted: bool,
    failed: Option<Error>,
}

impl Writing {
    /// A run about to be placed and written.
    pub(super) fn new(encoder: RunEncoder, source: RunSource) -> Writing {
        Writing {
            encoder,
            source,
            place: None,
            in_flight: 0,
            last: None,
            last_submitted: false,
            failed: None,
        }
    }
}

#[derive(Debug)]
pub(super) enum FlushState {
    Idle,
    Writing(Box<Writing>),
    /// The run is indexed; the checkpoint (after a flush) or the manifest (after a compaction)
    /// is on its way.
    Checkpointing,
}

/// The core's storage state.
#[derive(Debug)]
pub(super) struct Storage<T> {
    pub(super) settings: StorageSettings,
    pub(super) cache: WriteCache,
    pub(super) read_cache: crate::storage::read_cache::ReadCache,
    /// Where the last range read of each segment stopped (range_reads.rs).
    pub(super) range_hints: std::collections::HashMap<SegmentId, super::range_reads::RangeHint>,
    pub(super) index: RunIndex,
    pub(super) logs: Vec<(LogSeq, u64)>,
    /// The log new runs are appended to, if any.
    pub(super) active_log: Option<LogSeq>,
    opening_log: Option<LogSeq>,
    /// A log created ahead of time, registered, not yet used (not in the manifest).
    spare_log: Option<LogSeq>,
    next_log: u64,
    pub(super) next_run: u64,
    pub(super) state: FlushState,
    /// The last checkpoint mark (informational in the manifest; replay uses the checkpoint file).
    mark: Option<JournalMark>,
    /// Compaction's progress (compaction.rs).
    pub(super) compaction: super::compaction::Compaction,
    /// The mark of the sealed half, kept while its flush is retried (F3).
    sealed_mark: Option<JournalMark>,
    /// The checkpoint after a flush, run outside the request backlog (an add waiting for the
    /// flush must not stand in its way) with its own cursor.
    pub(super) checkpoint: Option<(JournalMark, super::Cursor)>,
    chunks_free: Vec<AlignedBuf>,
    last_flush: Instant,
    retry_at: Option<Instant>,
    /// Flush requests waiting for the next flush to start / for the running one to finish.
    waiting_next: Vec<T>,
    waiting_current: Vec<T>,
    requested: bool,
    pub(super) damage: Vec<String>,
    throttled: bool,
}

impl<T> Storage<T> {
    pub(super) fn new(settings: StorageSettings, mut start: StorageStartState, now: Instant) -> Storage<T> {
        // Spans compaction moved before a restart are found in both runs: the old copies are
        // dead (RI2 would answer from the new run anyway).
        let shadowed = start.index.drop_shadowed();
        if shadowed > 0 {
            tracing::debug!(shadowed, "spans held again by newer runs dropped from the index");
        }
        let mut cache = WriteCache::default();
        for (segment, entry, payload) in start.replayed {
            cache.insert(segment, entry, payload);
        }
        // F4: the index's next seq is at most the limit (RI3); the manifest's may be anything.
        let next_run = if start.next_run <= RUN_SEQ_LIMIT {
            start.index.next_seq().max(start.next_run)
        } else {
            start.damage.push(format!(
                "storage manifest: next run seq {} is past the limit 2^63; continuing after the \
                 highest indexed run",
                start.next_run
            ));
            start.index.next_seq()
        };
        Storage {
            read_cache: crate::storage::read_cache::ReadCache::new(settings.read_cache_bytes_max),
            range_hints: std::collections::HashMap::new(),
            settings,
            cache,
            index: start.index,
            // Appending to a log found at open is avoided: its tail may hold bytes of a flush
            // that never finished. New runs go to a new log.
            logs: start.logs,
            active_log: None,
            opening_log: None,
            spare_log: None,
            next_log: start.next_log,
            next_run,
            state: FlushState::Idle,
            compaction: super::compaction::Compaction::kept(start.damaged_logs),
            mark: start.checkpoint,
            sealed_mark: None,
            checkpoint: None,
            chunks_free: Vec::new(),
            last_flush: now,
            retry_at: None,
            waiting_next: Vec::new(),
            waiting_current: Vec::new(),
            requested: false,
            damage: start.damage,
            throttled: false,
        }
    }

    /// Takes the next run seq (F4); None when every seq below the limit is used (only a disk
    /// claiming seqs near 2^63 gets there).
    pub(super) fn take_run_seq(&mut self) -> Option<u64> {
        let seq = self.next_run;
        self.next_run = seq.checked_add(1).filter(|next| *next <= RUN_SEQ_LIMIT)?;
        Some(seq)
    }

    fn half_bytes(&self) -> usize {
        self.settings.write_cache_bytes_max / 2
    }

    pub(super) fn busy(&self) -> bool {
        !matches!(self.state, FlushState::Idle)
    }

    /// When a flush is due by time, if the cache holds anything.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        if self.cache.sealed().is_some() {
            return self.retry_at;
        }
        if self.cache.active().is_empty() && !self.requested {
            return None;
        }
        let due =
            if self.requested { self.last_flush } else { self.last_flush + self.settings.flush_interval };
        Some(self.retry_at.map_or(due, |r| r.max(due)))
    }
}

impl<T> ShardCore<T> {
    /// Whether an add must wait for the flush to catch up (F2).
    pub(super) fn cache_full(&mut self) -> bool {
        let Some(storage) = self.storage.as_mut() else { return false };
        let active = storage.cache.active().bytes();
        // While a flush or compaction is under way (writing, or checkpointing after it), a full
        // active half waits: the checkpoint runs outside the backlog, so it never waits behind
        // the add it unblocks.
        let full = active >= storage.half_bytes() && (storage.cache.sealed().is_some() || storage.busy());
        if full && !storage.throttled {
            self.stats.adds_throttled += 1;
        }
        storage.throttled = full;
        full
    }

    /// An acknowledged entry goes into the write cache (and out of the read cache, should an
    /// entry be added again with other bytes).
    pub(super) fn cache_insert(&mut self, segment: SegmentId, entry: u64, payload: &Bytes) -> bool {
        match self.storage.as_mut() {
            Some(storage) => {
                storage.cache.insert(segment, entry, payload.clone());
                storage.read_cache.remove(segment, entry);
                true
            }
            None => false,
        }
    }

    /// A `Flush` request: answered once everything acknowledged before it is in an entry log
    /// and the journal is checkpointed past it.
    pub(super) fn request_flush(&mut self, reply: T, now: Instant) {
        let Some(storage) = self.storage.as_mut() else {
            self.out.push_back(Output::Reply(reply, Reply::Flushed(Ok(()))));
            return;
        };
        if !storage.busy() && storage.cache.active().is_empty() && storage.cache.sealed().is_none() {
            self.out.push_back(Output::Reply(reply, Reply::Flushed(Ok(()))));
            return;
        }
        storage.waiting_next.push(reply);
        storage.requested = true;
        self.maybe_start_flush(now);
    }

    /// Starts a flush if one is due: the active half is half the cache, the interval passed,
    /// or a flush was requested.
    pub(super) fn maybe_start_flush(&mut self, now: Instant) {
        if self.poisoned.is_some() {
            return;
        }
        let durable = self.durable;
        let Some(storage) = self.storage.as_mut() else { return };
        if storage.busy() || storage.retry_at.is_some_and(|r| now < r) {
            return;
        }
        let retry = storage.cache.sealed().is_some();
        if !retry {
            let due = storage.cache.active().bytes() >= storage.half_bytes()
                || storage.requested
                || now >= storage.last_flush + storage.settings.flush_interval;
            if storage.cache.active().is_empty() {
                // Nothing acknowledged since the last flush: requests waiting for "everything
                // so far" are satisfied by the flushes already done.
                storage.requested = false;
                let waiting = std::mem::take(&mut storage.waiting_next);
                for reply in waiting {
                    self.out.push_back(Output::Reply(reply, Reply::Flushed(Ok(()))));
                }
                return;
            }
            if !due {
                return;
            }
            storage.cache.seal();
            storage.sealed_mark = Some(durable);
        }
        storage.retry_at = None;
        storage.requested = false;
        storage.waiting_current.append(&mut storage.waiting_next);
        let mark = storage.sealed_mark.expect("a sealed half has its mark");
        let Some(seq) = storage.take_run_seq() else {
            tracing::error!(
                shard = self.settings.shard.0,
                next_run = storage.next_run,
                "no run seq left below 2^63 (runs on disk claim seqs near it); flush retried later, \
                 the journal keeps its entries"
            );
            self.flush_failed(now);
            return;
        };
        let half = storage.cache.sealed().expect("sealed above or kept for a retry");
        // Larger than a run can be (RN3) cannot happen: a half holds at most half of
        // write_cache_bytes_max (at most 1 GiB) plus the journal batches in flight when it filled
        // (at most 16 x 64 MiB), far under 4 GiB.
        let encoder =
            RunEncoder::new(storage.log_epoch_hint(), seq, half).expect("a cache half fits one run");
        storage.state = FlushState::Writing(Box::new(Writing {
            encoder,
            source: RunSource::Cache(mark),
            place: None,
            in_flight: 0,
            last: None,
            last_submitted: false,
            failed: None,
        }));
        self.place_run();
        self.flush_pump();
    }

    /// Finds the run a place in an entry log with room, or asks for a new log.
    pub(super) fn place_run(&mut self) {
        let Some(storage) = self.storage.as_mut() else { return };
        let FlushState::Writing(w) = &storage.state else { return };
        if w.place.is_some() {
            return;
        }
        let run_bytes = w.encoder.header().run_bytes;
        let room = |storage: &Storage<T>, log: LogSeq| {
            let used = storage.logs.iter().find(|(s, _)| *s == log).map_or(0, |(_, u)| *u);
            (used == 0 || used + run_bytes <= storage.settings.entry_log_bytes).then_some(used)
        };
        let mut target = storage.active_log.and_then(|log| room(storage, log).map(|used| (log, used)));
        if target.is_none()
            && let Some(spare) = storage.spare_log.take()
        {
            // The next log was made ready ahead of time: no flush waits for file creation.
            storage.logs.push((spare, 0));
            storage.active_log = Some(spare);
            target = Some((spare, 0));
        }
        let FlushState::Writing(w) = &mut storage.state else { return };
        if let Some((log, used)) = target {
            if w.encoder.epoch() != log.0 {
                // Planned for another log (the epoch seeds every CRC): plan again.
                let seq = w.encoder.header().seq;
                w.encoder = RunEncoder::new(log.0, seq, w.source.entries(&storage.cache))
                    .expect("planned once already");
            }
            w.place = Some((log, used));
            // Half full: have the next log ready before it is needed.
            if used + run_bytes >= storage.settings.entry_log_bytes / 2 {
                self.request_log();
            }
            return;
        }
        self.request_log();
    }

    /// Asks the shell for a new entry log, unless one is on its way or ready.
    fn request_log(&mut self) {
        let Some(storage) = self.storage.as_mut() else { return };
        if storage.opening_log.is_some() || storage.spare_log.is_some() {
            return;
        }
        let seq = LogSeq(storage.next_log);
        storage.next_log += 1;
        storage.opening_log = Some(seq);
        self.out.push_back(Output::OpenEntryLog(seq));
    }

    /// The shell created entry log `seq` (registered with the disk), or could not.
    pub fn on_entry_log_ready(&mut self, seq: LogSeq, result: Result<(), Error>, now: Instant) {
        let Some(storage) = self.storage.as_mut() else { return };
        assert_eq!(storage.opening_log, Some(seq));
        storage.opening_log = None;
        let waiting = matches!(&storage.state, FlushState::Writing(w) if w.place.is_none());
        match result {
            Ok(()) => {
                storage.spare_log = Some(seq);
                if waiting {
                    self.place_run();
                    self.flush_pump();
                }
            }
            Err(error) => {
                tracing::error!(shard = self.settings.shard.0, log = %seq, %error,
                    "could not create an entry log; flush retried later");
                if waiting {
                    self.flush_failed(now);
                }
            }
        }
    }

    /// Submits run chunks while write slots are free; the footer chunk last (RN2).
    pub(super) fn flush_pump(&mut self) {
        loop {
            let Some(storage) = self.storage.as_mut() else { return };
            let FlushState::Writing(w) = &mut storage.state else { return };
            let Some((log, offset)) = w.place else { return };
            if w.failed.is_some() {
                return;
            }
            if w.last.is_some() && !w.last_submitted && w.in_flight == 0 {
                let buf = w.last.take().expect("checked");
                let at = offset + w.encoder.header().run_bytes - buf.len() as u64;
                w.last_submitted = true;
                w.in_flight += 1;
                let op = self.op_id(OP_FLUSH);
                let sync = Some(crate::config::JournalSync::Fdatasync);
                self.out.push_back(Output::Disk(
                    op,
                    DiskOp::Write { file: entry_log_file(log), offset: at, buf, sync },
                ));
                return;
            }
            if w.encoder.is_done() || w.in_flight >= FLUSH_WRITES_IN_FLIGHT_MAX {
                return;
            }
            let mut buf =
                storage.chunks_free.pop().unwrap_or_else(|| AlignedBuf::with_capacity(FLUSH_CHUNK_BYTES));
            let at = offset + w.encoder.position();
            let Writing { encoder, source, .. } = &mut **w;
            encoder.fill(&mut buf, source.entries(&storage.cache));
            if w.encoder.is_done() {
                w.last = Some(buf);
                continue;
            }
            w.in_flight += 1;
            let op = self.op_id(OP_FLUSH);
            self.out.push_back(Output::Disk(
                op,
                DiskOp::Write { file: entry_log_file(log), offset: at, buf, sync: None },
            ));
        }
    }

    /// A flush write completed.
    pub(super) fn on_flush_completed(&mut self, completion: Completion, now: Instant) {
        let shard = self.settings.shard;
        let Some(storage) = self.storage.as_mut() else { return };
        let FlushState::Writing(w) = &mut storage.state else {
            unreachable!("a flush completion without a flush")
        };
        w.in_flight -= 1;
        if let Err((op, source)) = completion.result {
            if source.raw_os_error() == Some(libc::ENOSPC) && !self.read_only {
                // The disk filled between two free-space samples: read-only now, until the
                // next sample finds space again (F3 keeps the data).
                self.read_only = true;
                self.stats.read_only = true;
                self.stats.read_only_entered += 1;
                tracing::warn!(shard = shard.0, "entry log write found the disk full: shard is read-only");
            }
            let (log, offset) = w.place.expect("written, so placed");
            tracing::error!(shard = shard.0, log = %log, offset, ?op, %source,
                "entry log write failed; flush retried later in a new entry log");
            w.failed.get_or_insert(Error::Io { op, file: format!("entry log {log}").into(), offset, source });
        }
        // A registered buffer is never dropped while the disk lives (Disk::register_buffers).
        if completion.buf.fixed_index().is_some() || storage.chunks_free.len() < FLUSH_WRITES_IN_FLIGHT_MAX {
            storage.chunks_free.push(completion.buf);
        }
        if w.in_flight > 0 {
            return;
        }
        if w.failed.is_some() {
            // F3: this log's tail cannot be trusted; the next attempt uses a new log.
            storage.active_log = None;
            self.flush_failed(now);
            return;
        }
        if !w.last_submitted {
            self.flush_pump();
            return;
        }
        // The run is durable (RI1).
        let FlushState::Writing(w) = std::mem::replace(&mut storage.state, FlushState::Checkpointing) else {
            unreachable!("checked")
        };
        let (log, offset) = w.place.expect("written, so placed");
        let header = *w.encoder.header();
        let purged = &storage.compaction.purged;
        storage
            .index
            .insert(RunInfo { log, offset, header }, w.encoder.sections(), |s| purged.contains(&s))
            .expect("a new run's seq is fresh and below the limit (F4)");
        if let Some(used) = storage.logs.iter_mut().find(|(s, _)| *s == log) {
            used.1 = offset + header.run_bytes;
        }
        match w.source {
            RunSource::Cache(mark) => {
                if let Some(half) = storage.cache.release_sealed() {
                    self.stats.flushed_entries += half.len() as u64;
                }
                storage.sealed_mark = None;
                storage.checkpoint = Some((mark, super::Cursor::default()));
                self.stats.flushes += 1;
                self.stats.flushed_bytes += header.run_bytes;
            }
            RunSource::Compaction(moved) => self.compaction_written(*moved, header.run_bytes, now),
        }
    }

    /// Gives up on the current flush attempt; the sealed half stays and is retried (F3). A
    /// compaction's run is dropped: its spans stay where they are, and it is tried again later.
    fn flush_failed(&mut self, now: Instant) {
        self.stats.run_write_failures += 1;
        let Some(storage) = self.storage.as_mut() else { return };
        if let FlushState::Writing(mut w) = std::mem::replace(&mut storage.state, FlushState::Idle) {
            // The held footer chunk may be a registered buffer: it goes back to the pool.
            if let Some(buf) = w.last.take() {
                storage.chunks_free.push(buf);
            }
            if let RunSource::Compaction(_) = w.source {
                storage.compaction.next_at = Some(now + FLUSH_RETRY_DELAY);
                return;
            }
        }
        // The sealed half and its mark stay: the next attempt writes them to a new log.
        storage.retry_at = Some(now + FLUSH_RETRY_DELAY);
        storage.requested |= !storage.waiting_current.is_empty();
        let mut waiting = std::mem::take(&mut storage.waiting_current);
        waiting.append(&mut storage.waiting_next);
        storage.waiting_next = waiting;
    }

    /// The manifest as storage is now; `mark`: the checkpoint being made (after a flush), else
    /// the last one.
    pub(super) fn manifest(&mut self, mark: Option<JournalMark>) -> Option<Vec<u8>> {
        let storage = self.storage.as_mut()?;
        if mark.is_some() {
            storage.mark = mark;
        }
        let manifest = Manifest {
            shard: self.settings.shard.0,
            checkpoint: storage.mark,
            next_log: storage.next_log,
            next_run: storage.next_run,
            logs: storage.logs.clone(),
            runs: storage
                .index
                .runs()
                .map(|r| ManifestRun {
                    log: r.log,
                    offset: r.offset,
                    bytes: r.header.run_bytes,
                    seq: r.header.seq,
                })
                .collect(),
            segments: Manifest::segments_from(&self.segments),
            damage: storage.damage.iter().chain(&self.damage).cloned().collect(),
        };
        Some(manifest.encode())
    }

    /// Hands the core long-lived flush chunk buffers (registered with the disk by the shell).
    pub fn provide_flush_buffers(&mut self, buffers: Vec<AlignedBuf>) {
        if let Some(storage) = self.storage.as_mut() {
            for buf in buffers {
                assert_eq!(buf.capacity(), FLUSH_CHUNK_BYTES);
                storage.chunks_free.push(buf);
            }
        }
    }

    /// The shell persisted the manifest and checkpoint of the last flush, or the manifest
    /// after a compaction (or failed to).
    pub fn on_checkpoint_persisted(&mut self, result: Result<(), Error>, now: Instant) {
        let Some(storage) = self.storage.as_mut() else { return };
        storage.state = FlushState::Idle;
        if std::mem::take(&mut storage.compaction.persisting) {
            self.compaction_persisted(result.is_ok(), now);
            self.maybe_start_flush(now);
            return;
        }
        storage.last_flush = now;
        if let Err(error) = &result {
            self.stats.manifest_failures += 1;
            tracing::error!(shard = self.settings.shard.0, %error,
                "could not persist the storage manifest; the journal is kept until a later flush");
        }
        let waiting = std::mem::take(&mut storage.waiting_current);
        for reply in waiting {
            let answer = result.as_ref().copied().map_err(super::clone_error);
            self.out.push_back(Output::Reply(reply, Reply::Flushed(answer)));
        }
        self.maybe_start_flush(now);
    }

    /// The checkpoint after a flush could not be journaled (the shard is poisoned).
    pub(super) fn checkpoint_abandoned(&mut self, error: &Error) {
        let Some(storage) = self.storage.as_mut() else { return };
        storage.state = FlushState::Idle;
        let waiting: Vec<T> =
            storage.waiting_current.drain(..).chain(storage.waiting_next.drain(..)).collect();
        for reply in waiting {
            self.out.push_back(Output::Reply(reply, Reply::Flushed(Err(super::clone_error(error)))));
        }
    }

    /// Storage's deadline: a flush due by time, or the next compaction pass.
    pub(super) fn storage_deadline(&self) -> Option<Instant> {
        let storage = self.storage.as_ref()?;
        [storage.deadline(), storage.compaction.next_at].into_iter().flatten().min()
    }
}

impl<T> Storage<T> {
    /// The epoch a new run is planned with: the active log's, when there is one with room.
    fn log_epoch_hint(&self) -> u64 {
        self.active_log.map_or(u64::MAX, |l| l.0)
    }
}

impl<T> ShardCore<T> {
    /// Runs the checkpoint after a flush: checks its mark once, journals the segments' state
    /// after it (resumable, with its own cursor), then waits for that to be durable.
    pub(super) fn pump_flush_checkpoint(&mut self, now: Instant) {
        let Some(storage) = self.storage.as_mut() else { return };
        let Some((mark, mut cursor)) = storage.checkpoint.take() else { return };
        if self.poisoned.is_some() {
            self.checkpoint_abandoned(&Error::Poisoned(self.settings.shard));
            return;
        }
        let fresh = cursor.segment_done.is_none() && cursor.placed_in.is_none();
        if fresh && let Err(error) = self.checkpoint_check(mark) {
            tracing::error!(shard = self.settings.shard.0, %error, "checkpoint after a flush refused");
            self.on_checkpoint_persisted(Err(error), now);
            return;
        }
        std::mem::swap(&mut self.cursor, &mut cursor);
        let result = self.checkpoint_snapshot(now);
        std::mem::swap(&mut self.cursor, &mut cursor);
        match result {
            Ok(true) => self.attach(cursor.placed_in, super::Waiter::Checkpoint { reply: None, mark }),
            Ok(false) => {
                if let Some(storage) = self.storage.as_mut() {
                    storage.checkpoint = Some((mark, cursor));
                }
            }
            Err(error) => self.checkpoint_abandoned(&error),
        }
    }
}
