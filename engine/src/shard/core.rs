//! `ShardCore`: the sans-I/O state machine of one shard.
//!
//! Owns: group commit (forming batches, keeping up to `writes_in_flight_max` of them in flight,
//! acknowledging them in order), per-segment durable state (master key, fence, deletion, LAC),
//! journal file rotation, poisoning and read-only mode; through its submodules, segment storage
//! (`flush`: write cache, runs, checkpoints after flushes), reads (`reads`, `range_reads`),
//! garbage collection (`compaction`), LAC long-polls (`lac_waits`), placing records (`place`),
//! and in `StorageMode::JournalOnly` the index of journal-resident entries.
//! Does not own: syscalls, clocks, threads, file preparation. Inputs are requests, disk
//! completions, file-ready events and the current time; outputs are disk operations, replies
//! and file requests, drained with `poll_output`. The shard shell (`shard/mod.rs`) connects it to
//! a `Disk`; tests and simulations can drive it with anything else.
//!
//! Invariants:
//! - C1: a reply for a request that journaled records is emitted only after the batch holding
//!   its last record, and every batch before it, completed its write and flush (J1).
//! - C2: batch `s` is submitted only while `s < oldest unacknowledged + writes_in_flight_max`;
//!   recovery relies on it to tell a torn tail from damage (see journal/replay.rs).
//! - C3: a new journal file is written only once every batch of the previous one is durable.
//! - C4: once poisoned, nothing is acknowledged that was not durable before the failure, and
//!   every later request fails with `Poisoned`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use crate::constants::{JOURNAL_FILE_HEADER_BYTES, RECORD_HEADER_BYTES, SECTOR_BYTES};
use crate::error::Error;
use crate::ids::{EntryId, FileSeq, LogSeq, SegmentId};
use crate::io::buf::{AlignedBuf, round_up};
use crate::io::{Completion, DiskOp, OpId};
use crate::journal::batch::{BATCH_CLOSE_SLACK_BYTES, BatchBuilder};
use crate::journal::record::{LAC_NONE, RecordHeader, RecordKind};
use crate::shard::location_index::{Location, LocationIndex};
use crate::shard::request::{JournalMark, Reply, Request};
use crate::shard::segment_state::SegmentState;

mod checkpoint;
mod compaction;
pub mod flush;
mod lac_waits;
mod place;
mod range_reads;
mod reads;
mod start;
mod waiters;
pub use crate::error::clone_error;
use place::ControlRecord;
use reads::PendingRead;
pub use start::{CoreSettings, CoreStart, CoreStats};

/// Reads (journal or entry log, one entry or a range) a shard keeps in flight at most.
pub const READS_IN_FLIGHT_MAX: usize = 64;

/// Work for the shell.
#[derive(Debug)]
pub enum Output<T> {
    /// Submit this disk operation.
    Disk(OpId, DiskOp),
    /// Send this reply.
    Reply(T, Reply),
    /// Prepare journal file `seq` (zeroed or recycled, header written) and report `FileReady`.
    PrepareFile(FileSeq),
    /// Persist the storage manifest (after a flush), then the checkpoint, then recycle these
    /// journal files (no operation on them is in flight); then send `Reply::Checkpointed` to
    /// the handle if there is one, else report `on_checkpoint_persisted` (F1).
    Checkpoint {
        /// The checkpoint.
        mark: JournalMark,
        /// Journal files wholly before it.
        reclaim: Vec<FileSeq>,
        /// The caller's handle; `None` for the checkpoint after a flush.
        reply: Option<T>,
        /// The encoded storage manifest to write first (after a flush).
        manifest: Option<Vec<u8>>,
    },
    /// Create entry log `seq`, register it with the disk (`flush::entry_log_file`), and report
    /// `on_entry_log_ready`.
    OpenEntryLog(LogSeq),
    /// Persist this storage manifest (after a compaction), then report
    /// `on_checkpoint_persisted`.
    PersistManifest(Vec<u8>),
    /// Unregister entry log `seq` from the disk (nothing is in flight on it) and delete it.
    DeleteEntryLog(LogSeq),
    /// Ask the deletion check whether `segment`'s deletion is confirmed, then report
    /// `on_deletion_confirmed`.
    ConfirmDeletion(SegmentId),
}

#[derive(Debug)]
enum Waiter<T> {
    Add { reply: T, entry_count: usize, errors: Vec<(usize, Error)> },
    Fence { reply: T, segment: SegmentId },
    Lac { reply: T },
    Checkpoint { reply: Option<T>, mark: JournalMark },
    Deleted { reply: T, segment: SegmentId },
}

#[derive(Debug)]
enum Effect {
    Entry { segment: SegmentId, entry: u64, at: u32, len: u32, lac: Option<u64>, payload: Bytes },
    Lac { segment: SegmentId, lac: u64 },
}

#[derive(Debug)]
struct OpenBatch<T> {
    builder: BatchBuilder,
    file: FileSeq,
    opened_at: Instant,
    waiters: Vec<Waiter<T>>,
    effects: Vec<Effect>,
}

#[derive(Debug)]
struct FlightBatch<T> {
    op: OpId,
    seq: u64,
    file: FileSeq,
    offset: u64,
    len: u64,
    waiters: Vec<Waiter<T>>,
    effects: Vec<Effect>,
    outcome: Option<Result<(), Error>>,
    /// When the write was submitted: its write+flush time feeds `CoreStats::journal_sync_ns`.
    submitted: Instant,
}

#[derive(Debug)]
struct ActiveFile {
    seq: FileSeq,
    /// Offset of the next batch.
    offset: u64,
    /// No record fits any more: rotate once drained (C3).
    full: bool,
}

/// Progress through the request at the front of the backlog.
#[derive(Debug, Default)]
struct Cursor {
    next_entry: usize,
    errors: Vec<(usize, Error)>,
    placed_in: Option<u64>,
    /// Checkpoint snapshot: the last segment journaled.
    segment_done: Option<SegmentId>,
}

enum Step {
    Done,
    Stalled,
}

/// The shard state machine; `T` is the caller's reply handle.
#[derive(Debug)]
pub struct ShardCore<T> {
    settings: CoreSettings,
    poisoned: Option<u64>,
    active: Option<ActiveFile>,
    ready: Option<FileSeq>,
    preparing: Option<FileSeq>,
    file_seq_next: u64,
    live_files: Vec<FileSeq>,
    /// End offsets of acknowledged (or replayed) batches per live file: the marks a
    /// checkpoint may name.
    boundaries: BTreeMap<FileSeq, Vec<u64>>,
    batch: Option<OpenBatch<T>>,
    batch_seq_next: u64,
    in_flight: VecDeque<FlightBatch<T>>,
    buffers_free: Vec<AlignedBuf>,
    buffer_capacity: usize,
    segments: BTreeMap<SegmentId, SegmentState>,
    index: LocationIndex,
    reads: BTreeMap<OpId, PendingRead<T>>,
    backlog: VecDeque<Request<T>>,
    cursor: Cursor,
    op_next: OpId,
    out: VecDeque<Output<T>>,
    damage: Vec<String>,
    durable: JournalMark,
    stats: CoreStats,
    /// Segment storage; `None` in `StorageMode::JournalOnly`.
    storage: Option<flush::Storage<T>>,
    lac_waits: lac_waits::LacWaits<T>,
    /// Free space fell under `disk_free_bytes_min`: plain adds answer `NoSpace`.
    read_only: bool,
    /// Free bytes at the last sample, if any.
    free_bytes: Option<u64>,
}

const OP_KIND_BITS: u32 = 2;
const OP_WRITE: u64 = 0;
const OP_READ: u64 = 1;
const OP_FLUSH: u64 = 2;
const OP_COMPACT: u64 = 3;

impl<T> ShardCore<T> {
    /// A core resuming from replay. It asks for its first journal file at once.
    pub fn new(settings: CoreSettings, start: CoreStart, now: Instant) -> ShardCore<T> {
        assert!(settings.writes_in_flight_max > 0);
        assert!(settings.batch_bytes_max >= SECTOR_BYTES);
        let buffer_capacity =
            round_up(settings.batch_bytes_max + RECORD_HEADER_BYTES + BATCH_CLOSE_SLACK_BYTES, SECTOR_BYTES);
        let replay_start = start.checkpoint.unwrap_or(JournalMark {
            file: start.files.first().copied().unwrap_or(FileSeq(start.file_seq_next)),
            offset: JOURNAL_FILE_HEADER_BYTES as u64,
        });
        // Durable up to the end of what replay read: a flush of replayed entries names it.
        let replay_end =
            start.boundaries.iter().next_back().and_then(|(file, ends)| {
                ends.last().map(|offset| JournalMark { file: *file, offset: *offset })
            });
        let durable = replay_end.map_or(replay_start, |end| end.max(replay_start));
        let storage = settings.storage.clone().map(|storage_settings| {
            let mut storage_start = start.storage.unwrap_or_default();
            storage_start.replayed = start.replayed;
            storage_start.checkpoint = start.checkpoint;
            flush::Storage::new(storage_settings, storage_start, now)
        });
        let mut core = ShardCore {
            poisoned: None,
            active: None,
            ready: None,
            preparing: None,
            file_seq_next: start.file_seq_next,
            live_files: start.files,
            boundaries: start.boundaries,
            batch: None,
            batch_seq_next: start.batch_seq_next,
            in_flight: VecDeque::new(),
            buffers_free: Vec::new(),
            buffer_capacity,
            segments: start.segments,
            index: start.index,
            reads: BTreeMap::new(),
            backlog: VecDeque::new(),
            cursor: Cursor::default(),
            op_next: 0,
            out: VecDeque::new(),
            damage: start.damage,
            durable,
            stats: CoreStats::default(),
            settings,
            storage,
            lac_waits: lac_waits::LacWaits::default(),
            read_only: false,
            free_bytes: None,
        };
        core.request_next_file();
        core.confirm_deletions_at_start();
        core.dead_logs_at_start();
        core
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        CoreStats { poisoned: self.poisoned.is_some(), ..self.stats }
    }

    /// Whether the shell should hand over more requests now. False applies backpressure: the
    /// shard's bounded queue fills and senders wait.
    pub fn wants_requests(&self) -> bool {
        self.backlog.is_empty()
    }

    /// The shell sampled the free bytes of the shard's filesystems: turn read-only under
    /// `disk_free_bytes_min`, writable again at `disk_free_bytes_resume` (hysteresis).
    pub fn on_free_space(&mut self, free_bytes: u64, min: u64, resume: u64) {
        let shard = self.settings.shard.0;
        self.free_bytes = Some(free_bytes);
        if !self.read_only && free_bytes < min {
            self.read_only = true;
            self.stats.read_only_entered += 1;
            tracing::warn!(
                shard,
                free_bytes,
                min,
                "disk almost full: shard is read-only (adds answer NoSpace)"
            );
        } else if self.read_only && free_bytes >= resume {
            self.read_only = false;
            tracing::info!(shard, free_bytes, resume, "disk space back: shard is writable again");
        }
        self.stats.read_only = self.read_only;
    }

    /// Whether this shard has failed for good.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output<T>> {
        self.out.pop_front()
    }

    /// When `on_tick` must be called at the latest (the open batch's delay bound), if ever.
    pub fn deadline(&self) -> Option<Instant> {
        // A batch that cannot go out (every journal write slot taken) has no deadline: a
        // completion frees a slot and the shell ticks then. Reporting its past deadline made
        // the shell's wait return at once, and the shard spun on the clock and io_uring_enter
        // under load (most of its CPU at the peak, in `dlog bench`).
        let can_write = self.in_flight.len() < self.settings.writes_in_flight_max;
        let batch = self.batch.as_ref().filter(|b| !b.builder.is_empty() && can_write);
        let batch_due = batch.map(|b| b.opened_at + self.settings.batch_delay_max);
        [batch_due, self.storage_deadline(), self.lac_waits.deadline()].into_iter().flatten().min()
    }

    /// A new request.
    pub fn on_request(&mut self, request: Request<T>, now: Instant) {
        self.backlog.push_back(request);
        self.pump(now);
    }

    /// The queue ran dry: close the open batch at once if so configured.
    pub fn on_idle(&mut self, now: Instant) {
        if self.settings.batch_when_idle {
            self.try_close_batch(now, true);
        }
    }

    /// Time passed: close the open batch if its delay bound is reached.
    pub fn on_tick(&mut self, now: Instant) {
        let batch_due = self
            .batch
            .as_ref()
            .is_some_and(|b| !b.builder.is_empty() && now >= b.opened_at + self.settings.batch_delay_max);
        if batch_due {
            self.try_close_batch(now, true);
        }
        self.expire_lac_waits(now);
        self.pump(now);
    }

    /// A journal file asked for with `PrepareFile` is ready, or could not be prepared.
    pub fn on_file_ready(&mut self, seq: FileSeq, result: Result<(), Error>, now: Instant) {
        assert_eq!(self.preparing, Some(seq));
        self.preparing = None;
        match result {
            Ok(()) => self.ready = Some(seq),
            Err(error) => {
                // No file: requests that need journal space fail with this error until a later
                // attempt succeeds (for example after space is freed).
                let shard = self.settings.shard;
                let error = match error {
                    Error::NoSpace(_) => Error::NoSpace(shard),
                    other => other,
                };
                self.fail_backlog(&error);
                self.file_seq_next = self.file_seq_next.max(seq.0);
                return;
            }
        }
        self.maybe_rotate();
        self.pump(now);
    }

    /// A disk operation completed.
    pub fn on_completion(&mut self, completion: Completion, now: Instant) {
        match completion.op & ((1 << OP_KIND_BITS) - 1) {
            OP_WRITE => self.on_write_completed(completion, now),
            OP_FLUSH => self.on_flush_completed(completion, now),
            OP_COMPACT => self.on_compaction_read(completion, now),
            _ => self.on_read_completed(completion),
        }
        self.pump(now);
    }

    fn op_id(&mut self, kind: u64) -> OpId {
        self.op_next += 1;
        (self.op_next << OP_KIND_BITS) | kind
    }

    fn request_next_file(&mut self) {
        if self.preparing.is_none() && self.ready.is_none() && self.poisoned.is_none() {
            let seq = FileSeq(self.file_seq_next);
            self.file_seq_next += 1;
            self.preparing = Some(seq);
            self.out.push_back(Output::PrepareFile(seq));
        }
    }

    /// Moves to the ready file once the active one is full and drained (C3).
    fn maybe_rotate(&mut self) {
        let needs_file = match &self.active {
            None => true,
            Some(active) => active.full && self.in_flight.is_empty() && self.batch.is_none(),
        };
        if !needs_file {
            return;
        }
        if let Some(seq) = self.ready.take() {
            self.active = Some(ActiveFile { seq, offset: JOURNAL_FILE_HEADER_BYTES as u64, full: false });
            self.live_files.push(seq);
            self.request_next_file();
        }
    }

    fn pump(&mut self, now: Instant) {
        self.pump_flush_checkpoint(now);
        while let Some(request) = self.backlog.pop_front() {
            match self.step(request, now) {
                (Step::Done, _) => self.cursor = Cursor::default(),
                (Step::Stalled, Some(request)) => {
                    self.backlog.push_front(request);
                    break;
                }
                (Step::Stalled, None) => unreachable!("a stalled request is handed back"),
            }
        }
        let full = self.batch.as_ref().is_some_and(|b| b.builder.len() >= self.settings.batch_bytes_max);
        if full {
            self.try_close_batch(now, false);
        }
        self.maybe_start_flush(now);
        self.flush_pump();
        self.maybe_start_compaction(now);
    }

    fn step(&mut self, request: Request<T>, now: Instant) -> (Step, Option<Request<T>>) {
        // Poisoned: nothing more is written; reads of what is durable are still served.
        let writes = !matches!(
            request,
            Request::ReadEntry { .. }
                | Request::ReadRange { .. }
                | Request::ReadLac { .. }
                | Request::WaitLac { .. }
                | Request::Position { .. }
        );
        if self.poisoned.is_some() && writes {
            self.fail_request(request, Error::Poisoned(self.settings.shard));
            return (Step::Done, None);
        }
        match request {
            Request::Add { entries, reply } => {
                while self.cursor.next_entry < entries.len() {
                    let index = self.cursor.next_entry;
                    match self.place_entry(&entries[index], now) {
                        Ok(Some(seq)) => self.cursor.placed_in = Some(seq),
                        Ok(None) => return (Step::Stalled, Some(Request::Add { entries, reply })),
                        Err(error) => self.cursor.errors.push((index, error)),
                    }
                    self.cursor.next_entry += 1;
                }
                let errors = std::mem::take(&mut self.cursor.errors);
                let placed_in = self.cursor.placed_in;
                self.attach(placed_in, Waiter::Add { reply, entry_count: entries.len(), errors });
                (Step::Done, None)
            }
            Request::Fence { segment, master_key, reply } => {
                match self.place_control(segment, &master_key, ControlRecord::Fence, now) {
                    Ok(Some(seq)) => {
                        self.attach(Some(seq), Waiter::Fence { reply, segment });
                    }
                    Ok(None) => {
                        return (Step::Stalled, Some(Request::Fence { segment, master_key, reply }));
                    }
                    Err(error) => self.out.push_back(Output::Reply(reply, Reply::Fenced(Err(error)))),
                }
                (Step::Done, None)
            }
            Request::WriteLac { segment, master_key, last_add_confirmed, reply } => {
                let record = ControlRecord::Lac(last_add_confirmed.0);
                match self.place_control(segment, &master_key, record, now) {
                    Ok(Some(seq)) => self.attach(Some(seq), Waiter::Lac { reply }),
                    Ok(None) => {
                        let request = Request::WriteLac { segment, master_key, last_add_confirmed, reply };
                        return (Step::Stalled, Some(request));
                    }
                    Err(error) => {
                        self.out.push_back(Output::Reply(reply, Reply::LacWritten(Err(error))));
                    }
                }
                (Step::Done, None)
            }
            Request::ReadLac { segment, reply } => {
                let result = match self.segments.get(&segment) {
                    Some(state) => Ok(state.seen_lac.map(EntryId)),
                    None => Err(Error::NoSuchSegment(segment)),
                };
                self.out.push_back(Output::Reply(reply, Reply::Lac(result)));
                (Step::Done, None)
            }
            Request::WaitLac { segment, known, timeout, reply } => {
                self.wait_for_lac(segment, known, timeout, reply, now);
                (Step::Done, None)
            }
            Request::ReadRange { segment, from, to, max_bytes, reply } => {
                if self.reads.len() >= READS_IN_FLIGHT_MAX {
                    return (Step::Stalled, Some(Request::ReadRange { segment, from, to, max_bytes, reply }));
                }
                self.start_range(segment, from, to, max_bytes, reply);
                (Step::Done, None)
            }
            Request::ReadEntry { segment, entry, reply } => {
                if self.reads.len() >= READS_IN_FLIGHT_MAX {
                    return (Step::Stalled, Some(Request::ReadEntry { segment, entry, reply }));
                }
                self.start_read(segment, entry, reply);
                (Step::Done, None)
            }
            Request::Position { reply } => {
                self.out.push_back(Output::Reply(reply, Reply::Position(self.durable)));
                (Step::Done, None)
            }
            Request::Flush { reply } => {
                self.request_flush(reply, now);
                (Step::Done, None)
            }
            Request::DeleteSegment { segment, reply } => {
                if !self.ensure_room(RECORD_HEADER_BYTES, now) {
                    return (Step::Stalled, Some(Request::DeleteSegment { segment, reply }));
                }
                let state = self.segments.entry(segment).or_insert_with(|| {
                    let mut state = SegmentState::new(Bytes::new());
                    state.master_key = None;
                    state
                });
                state.deleted = true;
                let batch = self.batch.as_mut().expect("ensure_room opened a batch");
                batch.builder.push(&control_header(RecordKind::Delete, segment, 0, 0), &[]);
                let seq = batch.builder.seq();
                self.attach(Some(seq), Waiter::Deleted { reply, segment });
                (Step::Done, None)
            }
            Request::Checkpoint { reply, .. } if self.storage.is_some() => {
                let error = Error::InvalidRequest(
                    "this bookie stores entries in entry logs and checkpoints its journal itself \
                     after each flush; checkpoint is for StorageMode::JournalOnly"
                        .into(),
                );
                self.out.push_back(Output::Reply(reply, Reply::Checkpointed(Err(error))));
                (Step::Done, None)
            }
            Request::Checkpoint { mark, reply } => {
                let resuming = self.cursor.segment_done.is_some() || self.cursor.placed_in.is_some();
                if !resuming && let Err(error) = self.checkpoint_check(mark) {
                    self.out.push_back(Output::Reply(reply, Reply::Checkpointed(Err(error))));
                    return (Step::Done, None);
                }
                match self.checkpoint_snapshot(now) {
                    Ok(true) => {
                        let placed_in = self.cursor.placed_in;
                        self.attach(placed_in, Waiter::Checkpoint { reply: Some(reply), mark });
                    }
                    Ok(false) => return (Step::Stalled, Some(Request::Checkpoint { mark, reply })),
                    Err(error) => {
                        self.out.push_back(Output::Reply(reply, Reply::Checkpointed(Err(error))));
                    }
                }
                (Step::Done, None)
            }
        }
    }

    /// Makes sure the open batch can take `need` more bytes, closing it and opening a new one
    /// (rotating files when needed). False: not now; the request stalls.
    fn ensure_room(&mut self, need: usize, now: Instant) -> bool {
        loop {
            if let Some(batch) = &self.batch {
                let fits_batch = batch.builder.fits(need - RECORD_HEADER_BYTES)
                    && (batch.builder.is_empty()
                        || batch.builder.len() + need <= self.settings.batch_bytes_max + 4 * SECTOR_BYTES);
                let active = self.active.as_ref().expect("an open batch has a file");
                let fits_file = active.offset + (batch.builder.len() + need + BATCH_CLOSE_SLACK_BYTES) as u64
                    <= self.settings.journal_file_bytes;
                if fits_batch && fits_file {
                    return true;
                }
                if !fits_file && batch.builder.is_empty() {
                    // Not even an empty batch fits: the file is full. Its sequence number was
                    // never written: the next batch takes it (replay expects no gaps).
                    let batch = self.batch.take().expect("checked");
                    assert_eq!(batch.builder.seq() + 1, self.batch_seq_next);
                    self.batch_seq_next = batch.builder.seq();
                    self.recycle_buffer(batch.builder.into_buffer());
                    self.active.as_mut().expect("checked").full = true;
                    self.maybe_rotate();
                    continue;
                }
                if !fits_file {
                    self.active.as_mut().expect("checked").full = true;
                }
                if !self.try_close_batch(now, true) {
                    return false;
                }
                continue;
            }
            // No open batch: open one if a file has room.
            self.maybe_rotate();
            let Some(active) = &self.active else {
                self.request_next_file();
                return false;
            };
            if active.full {
                // Waiting to rotate: make sure a file is on its way, even if an earlier
                // attempt to prepare one failed.
                self.request_next_file();
                return false;
            }
            let file = active.seq;
            let buf = self.take_buffer(need);
            let seq = self.batch_seq_next;
            self.batch_seq_next += 1;
            self.batch = Some(OpenBatch {
                builder: BatchBuilder::new(buf, file.0, seq),
                file,
                opened_at: now,
                waiters: Vec::new(),
                effects: Vec::new(),
            });
        }
    }

    fn take_buffer(&mut self, need: usize) -> AlignedBuf {
        let capacity = round_up(need + RECORD_HEADER_BYTES + BATCH_CLOSE_SLACK_BYTES, SECTOR_BYTES);
        if capacity <= self.buffer_capacity {
            self.buffers_free.pop().unwrap_or_else(|| AlignedBuf::with_capacity(self.buffer_capacity))
        } else {
            AlignedBuf::with_capacity(capacity)
        }
    }

    fn recycle_buffer(&mut self, buf: AlignedBuf) {
        // A registered buffer is never dropped while the disk lives (Disk::register_buffers);
        // there are at most `writes_in_flight_max + 1` of them.
        if buf.fixed_index().is_some()
            || (buf.capacity() == self.buffer_capacity
                && self.buffers_free.len() <= self.settings.writes_in_flight_max)
        {
            self.buffers_free.push(buf);
        }
    }

    /// Capacity of the standard batch buffers.
    pub fn buffer_capacity(&self) -> usize {
        self.buffer_capacity
    }

    /// Hands the core long-lived batch buffers (registered with the disk by the shell).
    pub fn provide_buffers(&mut self, buffers: Vec<AlignedBuf>) {
        for buf in buffers {
            assert_eq!(buf.capacity(), self.buffer_capacity);
            self.buffers_free.push(buf);
        }
    }

    /// Closes and submits the open batch if a write slot is free (C2). `force`: close even if
    /// under the byte bound. Returns whether no open batch remains.
    fn try_close_batch(&mut self, now: Instant, force: bool) -> bool {
        let Some(batch) = &self.batch else { return true };
        if batch.builder.is_empty() {
            return true;
        }
        if !force && batch.builder.len() < self.settings.batch_bytes_max {
            return false;
        }
        if self.in_flight.len() >= self.settings.writes_in_flight_max {
            return false;
        }
        let batch = self.batch.take().expect("checked");
        let active = self.active.as_mut().expect("an open batch has a file");
        assert_eq!(active.seq, batch.file);
        let seq = batch.builder.seq();
        let buf = batch.builder.close();
        let offset = active.offset;
        let len = buf.len() as u64;
        assert!(offset.is_multiple_of(SECTOR_BYTES as u64));
        assert!(offset + len <= self.settings.journal_file_bytes);
        active.offset += len;
        if let Some(oldest) = self.in_flight.front() {
            assert!(seq < oldest.seq + self.settings.writes_in_flight_max as u64); // C2
        }
        let op = self.op_id(OP_WRITE);
        let disk_op = DiskOp::Write { file: batch.file, offset, buf, sync: Some(self.settings.journal_sync) };
        self.out.push_back(Output::Disk(op, disk_op));
        self.in_flight.push_back(FlightBatch {
            op,
            seq,
            file: batch.file,
            offset,
            len,
            waiters: batch.waiters,
            effects: batch.effects,
            outcome: None,
            submitted: now,
        });
        // Ask for the next file early, so rotation never waits for zeroing.
        if self.active.as_ref().is_some_and(|a| a.offset * 2 >= self.settings.journal_file_bytes) {
            self.request_next_file();
        }
        true
    }

    fn on_write_completed(&mut self, completion: Completion, now: Instant) {
        let Completion { op, result, buf, .. } = completion;
        // Writes complete in any order; at most `writes_in_flight_max` are searched.
        let index = self
            .in_flight
            .iter()
            .position(|b| b.op == op)
            .expect("a write completion belongs to a batch in flight");
        let oldest = self.in_flight.front().map(|b| b.seq);
        let batch = &mut self.in_flight[index];
        let took = now.saturating_duration_since(batch.submitted);
        self.stats.journal_sync_ns += u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        batch.outcome = Some(match result {
            Ok(()) => Ok(()),
            Err((op, source)) => {
                let offset = batch.offset;
                let file = batch.file;
                if self.poisoned.is_none() {
                    tracing::error!(shard = self.settings.shard.0, ?op, %file, offset, %source,
                        "journal I/O failed; shard poisoned");
                }
                let error = Error::Io { op, file: format!("journal {file}").into(), offset, source };
                // Trust no batch still unacknowledged: Linux reports a writeback error to one
                // fdatasync of a file only, so a concurrent flush of an earlier batch may have
                // returned success for pages that were lost (fsyncgate).
                let oldest = oldest.unwrap_or(batch.seq);
                self.poisoned = Some(self.poisoned.map_or(oldest, |p| p.min(oldest)));
                Err(error)
            }
        });
        self.recycle_buffer(buf);
        self.acknowledge_ready();
        if self.poisoned.is_some() {
            self.fail_everything_pending();
        }
        self.maybe_rotate();
    }

    /// Acknowledges batches at the front whose write and flush are done, in order (C1, C4).
    fn acknowledge_ready(&mut self) {
        while self.in_flight.front().is_some_and(|b| b.outcome.is_some()) {
            let batch = self.in_flight.pop_front().expect("checked");
            let poisoned_before = self.poisoned.is_some_and(|p| p <= batch.seq);
            let outcome = batch.outcome.expect("checked");
            let outcome = match outcome {
                Ok(()) if poisoned_before => Err(Error::Poisoned(self.settings.shard)),
                other => other,
            };
            match outcome {
                Ok(()) => {
                    self.apply_effects(&batch.effects, batch.file, batch.offset);
                    self.durable = JournalMark { file: batch.file, offset: batch.offset + batch.len };
                    self.boundaries.entry(batch.file).or_default().push(batch.offset + batch.len);
                    self.stats.batches += 1;
                    self.stats.batch_bytes += batch.len;
                    for waiter in batch.waiters {
                        self.answer(waiter, Ok(()));
                    }
                }
                Err(error) => {
                    for waiter in batch.waiters {
                        self.answer(waiter, Err(&error));
                    }
                }
            }
        }
    }

    fn apply_effects(&mut self, effects: &[Effect], file: FileSeq, offset: u64) {
        for effect in effects {
            match *effect {
                Effect::Entry { segment, entry, at, len, lac, ref payload } => {
                    if !self.cache_insert(segment, entry, payload) {
                        let location = Location { file, offset: offset + u64::from(at), len };
                        self.index.insert(segment, EntryId(entry), location);
                    }
                    if let Some(state) = self.segments.get_mut(&segment) {
                        state.observe_lac(lac);
                    }
                    if lac.is_some() && self.lac_waits.watches(segment) {
                        self.lac_moved(segment);
                    }
                    self.stats.entries += 1;
                }
                Effect::Lac { segment, lac } => {
                    if let Some(state) = self.segments.get_mut(&segment) {
                        state.observe_lac(Some(lac));
                    }
                    if self.lac_waits.watches(segment) {
                        self.lac_moved(segment);
                    }
                }
            }
        }
    }

    /// After poisoning: fail the open batch and queued requests (C4). Batches in flight are
    /// answered as their completions arrive.
    fn fail_everything_pending(&mut self) {
        self.abandon(Error::Poisoned(self.settings.shard));
    }

    /// Answers every queued request with `error`.
    fn fail_backlog(&mut self, error: &Error) {
        let backlog = std::mem::take(&mut self.backlog);
        self.cursor = Cursor::default();
        for request in backlog {
            self.fail_request(request, clone_error(error));
        }
    }

    /// Nothing open, queued or in flight: safe to stop.
    pub fn is_quiescent(&self) -> bool {
        self.backlog.is_empty()
            && self.in_flight.is_empty()
            && self.reads.is_empty()
            && self.batch.as_ref().is_none_or(|b| b.builder.is_empty())
            && self.out.is_empty()
    }

    /// Where the journal ends, for a clean stop to mark: the active file and the offset of its
    /// next batch, if a sector fits there and the shard is healthy and quiescent. Zeroing that
    /// sector makes the next replay see a clean end even when the file is recycled and its
    /// earlier use left bytes there that could otherwise read as a torn batch.
    pub fn end_of_journal(&self) -> Option<(FileSeq, u64)> {
        let active = self.active.as_ref()?;
        let fits = active.offset + SECTOR_BYTES as u64 <= self.settings.journal_file_bytes;
        (fits && self.poisoned.is_none() && self.is_quiescent()).then_some((active.seq, active.offset))
    }

    /// Closes the open batch now, whatever its size (used when stopping).
    pub fn flush_now(&mut self, now: Instant) {
        self.try_close_batch(now, true);
    }
}

pub(super) fn control_header(
    kind: RecordKind,
    segment: SegmentId,
    entry: u64,
    payload_len: usize,
) -> RecordHeader {
    RecordHeader {
        kind,
        flags: 0,
        payload_len: payload_len as u32,
        segment_id: segment.0,
        entry_id: entry,
        last_add_confirmed: LAC_NONE,
    }
}
