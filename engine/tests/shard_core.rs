//! The sans-I/O shard core driven directly, with a fake disk: completions are made up by the
//! test, in any order, with failures where wanted; time is an `Instant` plus offsets.
//!
//! Checks the core's invariants: replies only after their batch and every batch before it are
//! durable, in order (C1); at most `writes_in_flight_max` batches in flight (C2); a new file is
//! written only once the old one's batches are durable (C3); a failed flush poisons (C4); group
//! commit closes batches on idle, at the byte bound or at the delay bound.
#![allow(clippy::disallowed_methods, reason = "tests take one Instant and add durations to it")]

mod common;
use common::Rng;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::time::{Duration, Instant};

use common::{add, payload};
use dlog_engine::io::buf::AlignedBuf;
use dlog_engine::io::{Completion, DiskOp, OpId};
use dlog_engine::journal::record::{self, RecordKind};
use dlog_engine::shard::core::{CoreSettings, CoreStart, Output, ShardCore};
use dlog_engine::shard::request::{Reply, Request};
use dlog_engine::{AddEntry, EntryId, Error, FileSeq, IoOp, JournalSync, SegmentId, ShardId};

const SECTOR: usize = 4096;
const HEADER: usize = 40;

fn settings(writes_in_flight_max: usize) -> CoreSettings {
    CoreSettings {
        shard: ShardId(0),
        batch_bytes_max: 16 << 10,
        batch_delay_max: Duration::from_millis(1),
        batch_when_idle: true,
        writes_in_flight_max,
        journal_file_bytes: 64 << 20,
        entry_bytes_max: 1 << 20,
        journal_sync: JournalSync::Fdatasync,
        // These drive the journal alone (StorageMode::JournalOnly).
        storage: None,
    }
}

/// A journal write the core asked for, as the fake disk saw it.
#[derive(Debug)]
struct Write {
    op: OpId,
    file: FileSeq,
    offset: u64,
    len: u64,
    seq: u64,
    /// (segment, entry, payload) of its entry records, in order.
    entries: Vec<(u64, u64, Vec<u8>)>,
    /// Master key records.
    keys: usize,
    buf: Option<AlignedBuf>,
}

/// Decodes a batch the core wrote; checks its framing.
fn parse_write(op: OpId, file: FileSeq, offset: u64, buf: AlignedBuf) -> Write {
    let bytes = buf.as_slice();
    assert!(offset.is_multiple_of(SECTOR as u64), "write at unaligned offset {offset}");
    assert!(!bytes.is_empty() && bytes.len().is_multiple_of(SECTOR), "write of {} bytes", bytes.len());
    let epoch = file.0;
    let (h, _) = record::decode(bytes, epoch).expect("a batch starts with a valid Batch record");
    assert_eq!(h.kind, RecordKind::Batch);
    assert_eq!(h.segment_id, bytes.len() as u64, "Batch record length");
    let mut entries = Vec::new();
    let mut keys = 0;
    let mut count = 0;
    let mut at = HEADER;
    while at < bytes.len() {
        let (r, p) = record::decode(&bytes[at..], epoch).expect("valid records");
        at += HEADER + r.payload_len as usize;
        match r.kind {
            RecordKind::Padding => break,
            RecordKind::Entry => entries.push((r.segment_id, r.entry_id, p.to_vec())),
            RecordKind::MasterKey => keys += 1,
            _ => {}
        }
        count += 1;
    }
    assert_eq!(at, bytes.len(), "records fill the batch");
    assert_eq!(h.last_add_confirmed, count, "Batch record count");
    Write { op, file, offset, len: bytes.len() as u64, seq: h.entry_id, entries, keys, buf: Some(buf) }
}

/// The core plus a fake disk and a fake preparer.
struct Sim {
    core: ShardCore<u32>,
    now: Instant,
    wim: usize,
    /// Every write submitted, in order.
    writes: Vec<Write>,
    /// Indexes into `writes` not yet completed.
    outstanding: Vec<usize>,
    /// Seqs completed.
    completed: BTreeSet<u64>,
    replies: Vec<(u32, Reply)>,
    prepares: Vec<FileSeq>,
    /// Answer `PrepareFile` at once.
    auto_prepare: bool,
    /// Highest number of writes outstanding at once.
    peak: usize,
}

impl Sim {
    fn new(settings: CoreSettings) -> Sim {
        Self::with(settings, true)
    }

    fn with(settings: CoreSettings, auto_prepare: bool) -> Sim {
        let wim = settings.writes_in_flight_max;
        let core = ShardCore::new(settings, CoreStart::default(), Instant::now());
        let mut sim = Sim {
            core,
            now: Instant::now(),
            wim,
            writes: Vec::new(),
            outstanding: Vec::new(),
            completed: BTreeSet::new(),
            replies: Vec::new(),
            prepares: Vec::new(),
            auto_prepare,
            peak: 0,
        };
        sim.drain();
        sim
    }

    /// Batches acknowledged: the longest prefix of seqs all completed.
    fn acked_upto(&self) -> Option<u64> {
        let mut upto = None;
        for (i, s) in self.completed.iter().enumerate() {
            if *s != i as u64 {
                break;
            }
            upto = Some(*s);
        }
        upto
    }

    /// Batches the core holds in flight: submitted and not acknowledged.
    fn core_in_flight(&self) -> Vec<&Write> {
        let acked = self.acked_upto();
        self.writes.iter().filter(|w| acked.is_none_or(|a| w.seq > a)).collect()
    }

    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Disk(op, DiskOp::Write { file, offset, buf, sync }) => {
                    assert_eq!(sync, Some(JournalSync::Fdatasync));
                    let w = parse_write(op, file, offset, buf);
                    // Batches are numbered without gaps (replay relies on it).
                    assert_eq!(w.seq, self.writes.len() as u64, "batch sequence numbers");
                    // C3: a file is written only once every batch of earlier files is durable.
                    for earlier in self.core_in_flight() {
                        assert!(
                            earlier.file >= w.file,
                            "write to {:?} while {earlier:?} is in flight",
                            w.file
                        );
                    }
                    // Batches of a file are laid out back to back after the header block.
                    let prev_end = self
                        .writes
                        .iter()
                        .rev()
                        .find(|p| p.file == w.file)
                        .map_or(SECTOR as u64, |p| p.offset + p.len);
                    assert_eq!(w.offset, prev_end, "batch {} offset", w.seq);
                    self.writes.push(w);
                    self.outstanding.push(self.writes.len() - 1);
                    // C2.
                    let in_flight = self.core_in_flight();
                    assert!(
                        in_flight.len() <= self.wim,
                        "{} batches in flight, max {}",
                        in_flight.len(),
                        self.wim
                    );
                    let oldest = in_flight.iter().map(|w| w.seq).min().unwrap();
                    assert!(self.writes.last().unwrap().seq < oldest + self.wim as u64);
                    self.peak = self.peak.max(self.outstanding.len());
                }
                Output::Disk(_, other) => panic!("unexpected disk op {other:?}"),
                Output::Reply(id, reply) => self.replies.push((id, reply)),
                Output::PrepareFile(seq) => {
                    self.prepares.push(seq);
                    if self.auto_prepare {
                        self.core.on_file_ready(seq, Ok(()), self.now);
                    }
                }
                Output::Checkpoint { .. } => panic!("unexpected checkpoint"),
                Output::OpenEntryLog(seq) => panic!("unexpected entry log {seq}"),
                other @ (Output::PersistManifest(_)
                | Output::DeleteEntryLog(_)
                | Output::ConfirmDeletion(_)) => {
                    panic!("unexpected storage output {other:?}")
                }
            }
        }
    }

    fn request(&mut self, request: Request<u32>) {
        self.core.on_request(request, self.now);
        self.drain();
    }

    fn add(&mut self, id: u32, entries: Vec<AddEntry>) {
        self.request(Request::Add { entries, reply: id });
    }

    fn idle(&mut self) {
        self.core.on_idle(self.now);
        self.drain();
    }

    fn tick(&mut self, at: Instant) {
        self.now = at;
        self.core.on_tick(at);
        self.drain();
    }

    fn file_ready(&mut self, seq: FileSeq) {
        self.core.on_file_ready(seq, Ok(()), self.now);
        self.drain();
    }

    /// Completes the write of batch `seq`.
    fn complete(&mut self, seq: u64, result: Result<(), (IoOp, io::Error)>) {
        let at = self
            .outstanding
            .iter()
            .position(|i| self.writes[*i].seq == seq)
            .unwrap_or_else(|| panic!("batch {seq} is not outstanding"));
        let index = self.outstanding.remove(at);
        let w = &mut self.writes[index];
        let buf = w.buf.take().unwrap();
        let completion = Completion { op: w.op, result, bytes: buf.len(), buf };
        self.completed.insert(seq);
        self.core.on_completion(completion, self.now);
        self.drain();
    }

    fn outstanding_seqs(&self) -> Vec<u64> {
        self.outstanding.iter().map(|i| self.writes[*i].seq).collect()
    }

    fn take_replies(&mut self) -> Vec<(u32, Reply)> {
        std::mem::take(&mut self.replies)
    }

    fn reply_ids(&mut self) -> Vec<u32> {
        self.take_replies()
            .into_iter()
            .map(|(id, reply)| match reply {
                Reply::Added(Ok(())) => id,
                other => panic!("request {id}: {other:?}"),
            })
            .collect()
    }
}

fn entry_ids(w: &Write) -> Vec<(u64, u64)> {
    w.entries.iter().map(|(s, e, _)| (*s, *e)).collect()
}

/// (a) Replies wait for their batch's completion; completions arriving out of order still
/// produce replies in batch order, each as soon as it and every batch before it are done.
#[test]
fn replies_wait_for_durability_and_follow_batch_order() {
    let mut sim = Sim::new(settings(4));
    assert_eq!(sim.prepares, [FileSeq(0), FileSeq(1)]);
    sim.add(1, vec![add(1, 0, 100)]);
    assert!(sim.writes.is_empty(), "a batch closed before the queue ran dry");
    sim.idle();
    sim.add(2, vec![add(1, 1, 100)]);
    sim.idle();
    sim.add(3, vec![add(2, 0, 50), add(1, 2, 10)]);
    sim.idle();
    assert_eq!(sim.outstanding_seqs(), [0, 1, 2]);
    assert_eq!(entry_ids(&sim.writes[2]), [(2, 0), (1, 2)]);
    assert_eq!(
        sim.writes.iter().map(|w| (w.file, w.offset)).collect::<Vec<_>>(),
        [(FileSeq(0), 4096), (FileSeq(0), 8192), (FileSeq(0), 12288)]
    );
    assert!(sim.replies.is_empty());
    sim.complete(2, Ok(()));
    assert!(sim.replies.is_empty(), "batch 2 acknowledged before batches 0 and 1");
    sim.complete(1, Ok(()));
    assert!(sim.replies.is_empty(), "batch 1 acknowledged before batch 0");
    sim.complete(0, Ok(()));
    assert_eq!(sim.reply_ids(), [1, 2, 3]);

    // In order, one at a time: each reply as soon as its own batch is done.
    for (id, entry) in [(4u32, 3u64), (5, 4), (6, 5)] {
        sim.add(id, vec![add(1, entry, 10)]);
        sim.idle();
    }
    assert_eq!(sim.outstanding_seqs(), [3, 4, 5]);
    sim.complete(4, Ok(()));
    assert!(sim.replies.is_empty());
    sim.complete(3, Ok(()));
    assert_eq!(sim.reply_ids(), [4, 5]);
    sim.complete(5, Ok(()));
    assert_eq!(sim.reply_ids(), [6]);
    assert_eq!(sim.core.stats().batches, 6);
    assert_eq!(sim.core.stats().entries, 7);
    assert!(sim.core.is_quiescent());
}

/// (b) With a window of `w`, the `w + 1`-th closed batch waits for the oldest to complete; the
/// requests behind it are held in the open batch, never written early.
#[test]
fn never_more_writes_in_flight_than_the_window() {
    for wim in [1usize, 2, 3, 4] {
        let mut sim = Sim::new(settings(wim));
        let mut id = 0u32;
        for e in 0..(wim as u64 + 3) {
            id += 1;
            sim.add(id, vec![add(1, e, 200)]);
            sim.idle();
        }
        // `wim` batches written; the rest are in the open batch, waiting for a slot.
        assert_eq!(sim.outstanding_seqs(), (0..wim as u64).collect::<Vec<_>>(), "window {wim}");
        assert!(sim.replies.is_empty());
        // Completing the newest write frees no slot (the oldest is still unacknowledged).
        if wim > 1 {
            sim.complete(wim as u64 - 1, Ok(()));
            sim.idle();
            assert_eq!(sim.writes.len(), wim, "window {wim}: a slot opened before the oldest completed");
        }
        sim.complete(0, Ok(()));
        // The oldest done: one slot, and the held requests go out together in one batch.
        sim.idle();
        assert_eq!(sim.writes.len(), wim + 1, "window {wim}");
        assert_eq!(sim.writes[wim].entries.len(), 3, "window {wim}: held requests share a batch");
        while let Some(seq) = sim.outstanding_seqs().first().copied() {
            sim.complete(seq, Ok(()));
            sim.idle();
        }
        assert_eq!(sim.reply_ids(), (1..=id).collect::<Vec<_>>(), "window {wim}");
        assert_eq!(sim.peak, wim, "window {wim}");
    }
}

fn expect_added_err(reply: &Reply, entries: usize, check: impl Fn(&Error) -> bool, what: &str) {
    match reply {
        Reply::Added(Err(errors)) => {
            assert_eq!(
                errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                (0..entries).collect::<Vec<_>>(),
                "{what}"
            );
            for (_, e) in errors {
                assert!(check(e), "{what}: {e:?}");
            }
        }
        other => panic!("{what}: {other:?}"),
    }
}

fn is_poisoned(e: &Error) -> bool {
    matches!(e, Error::Poisoned(ShardId(0)))
}

/// (c) A failed flush poisons the shard: the failed batch's requests get the I/O error; every
/// other batch not yet acknowledged when the failure arrived, even one before it that later
/// reports success (Linux reports a writeback error to one fdatasync only: fsyncgate), and
/// every new write get `Poisoned`. Nothing more is written or prepared.
#[test]
fn failed_flush_poisons_the_shard() {
    for failing in [1u64, 0] {
        let what = format!("batch {failing} fails");
        let mut sim = Sim::new(settings(4));
        sim.add(1, vec![add(1, 0, 100)]);
        sim.idle();
        sim.add(2, vec![add(1, 1, 100)]);
        sim.idle();
        sim.add(3, vec![add(1, 2, 100), add(2, 0, 100)]);
        sim.idle();
        assert_eq!(sim.outstanding_seqs(), [0, 1, 2]);
        let failed_offset = sim.writes[failing as usize].offset;
        let prepares = sim.prepares.clone();
        if failing == 0 {
            // Later batches complete fine first: their data is on disk but must not be
            // acknowledged once an earlier batch failed.
            sim.complete(1, Ok(()));
            sim.complete(2, Ok(()));
            assert!(sim.replies.is_empty(), "{what}");
        }
        sim.complete(failing, Err((IoOp::Flush, io::Error::other("injected flush failure"))));
        assert!(sim.core.is_poisoned(), "{what}");

        // New writes fail at once; reads are still answered (entry 0 never became durable).
        sim.add(4, vec![add(1, 3, 10)]);
        sim.request(Request::Fence { segment: SegmentId(1), master_key: common::key(), reply: 5 });
        sim.request(Request::ReadEntry { segment: SegmentId(1), entry: EntryId(0), reply: 6 });
        sim.idle();
        let now: BTreeMap<u32, Reply> = sim.take_replies().into_iter().collect();
        let mut ids: Vec<u32> = now.keys().copied().collect();
        if failing == 0 {
            // Everything in flight is answered too: the failed batch was the oldest.
            assert_eq!(ids, [1, 2, 3, 4, 5, 6], "{what}");
        } else {
            // Batch 0 is still in flight: nothing of it or after it is answered yet.
            assert_eq!(ids, [4, 5, 6], "{what}");
            ids.clear();
        }
        expect_added_err(&now[&4], 1, is_poisoned, &what);
        assert!(matches!(&now[&5], Reply::Fenced(Err(e)) if is_poisoned(e)), "{what}: {:?}", now[&5]);
        assert!(matches!(&now[&6], Reply::Entry(Err(Error::NoSuchEntry(..)))), "{what}: {:?}", now[&6]);
        let later: BTreeMap<u32, Reply> = if failing == 0 {
            now
        } else {
            sim.complete(0, Ok(()));
            let mid: BTreeMap<u32, Reply> = sim.take_replies().into_iter().collect();
            assert_eq!(mid.keys().copied().collect::<Vec<_>>(), [1, 2], "{what}");
            sim.complete(2, Ok(()));
            let mut all = mid;
            all.extend(sim.take_replies());
            all
        };
        let io_failed =
            |e: &Error| matches!(e, Error::Io { op: IoOp::Flush, offset, .. } if *offset == failed_offset);
        if failing == 0 {
            expect_added_err(&later[&1], 1, io_failed, &what);
            expect_added_err(&later[&2], 1, is_poisoned, &what);
        } else {
            expect_added_err(&later[&1], 1, is_poisoned, &what);
            expect_added_err(&later[&2], 1, io_failed, &what);
        }
        expect_added_err(&later[&3], 2, is_poisoned, &what);
        assert_eq!(sim.writes.len(), 3, "{what}: written after poisoning");
        assert_eq!(sim.prepares, prepares, "{what}: file prepared after poisoning");
        assert!(sim.outstanding.is_empty());
        assert_eq!(sim.core.stats().batches, 0, "{what}: nothing acknowledged after the failure");
    }
}

/// (d) Group commit. Closing when the queue runs dry: many adds that arrive before `on_idle`
/// go out in one write. Without it: a batch closes at the byte bound, or when `on_tick` passes
/// its delay bound, not before.
#[test]
fn group_commit_bounds() {
    // Idle closes, and everything queued before it shares one write.
    let mut sim = Sim::new(settings(4));
    for e in 0..50 {
        sim.add(e as u32, vec![add(1, e, 100)]);
    }
    assert!(sim.writes.is_empty());
    sim.idle();
    assert_eq!(sim.writes.len(), 1);
    assert_eq!(entry_ids(&sim.writes[0]), (0..50).map(|e| (1, e)).collect::<Vec<_>>());
    assert_eq!(sim.writes[0].keys, 1);
    for e in 50..60 {
        sim.add(e as u32, vec![add(1, e, 100)]);
    }
    sim.idle();
    assert_eq!(sim.writes.len(), 2);
    assert_eq!(sim.writes[1].entries.len(), 10);
    sim.complete(1, Ok(()));
    sim.complete(0, Ok(()));
    assert_eq!(sim.reply_ids(), (0..60).collect::<Vec<_>>());

    // Byte bound: a batch closes with the add that takes it to `batch_bytes_max`.
    let mut s = settings(4);
    s.batch_when_idle = false;
    let bound = s.batch_bytes_max;
    let delay = s.batch_delay_max;
    let mut sim = Sim::new(s);
    let t0 = sim.now;
    let len = 1000;
    let key = HEADER + common::key().len();
    // Batch record, master key record, then entries.
    let closing = (bound - HEADER - key).div_ceil(HEADER + len) as u64;
    for e in 0..closing {
        assert!(sim.writes.is_empty(), "closed below the byte bound after {e} adds");
        sim.add(e as u32, vec![add(1, e, len)]);
        sim.idle(); // Must not close anything.
        sim.tick(t0 + delay / 2);
    }
    assert_eq!(sim.writes.len(), 1, "not closed at the byte bound");
    let w = &sim.writes[0];
    assert_eq!(w.entries.len() as u64, closing);
    assert!(HEADER + key + (HEADER + len) * closing as usize >= bound);
    assert_eq!(w.len as usize, (HEADER + key + (HEADER + len) * closing as usize).next_multiple_of(SECTOR));

    // Delay bound: a lone add waits `batch_delay_max` from when its batch opened.
    let t1 = t0 + Duration::from_millis(10);
    sim.now = t1;
    sim.add(100, vec![add(1, closing, len)]);
    assert_eq!(sim.core.deadline(), Some(t1 + delay));
    sim.idle();
    sim.tick(t1 + delay - Duration::from_micros(1));
    assert_eq!(sim.writes.len(), 1, "closed before the delay bound");
    sim.tick(t1 + delay);
    assert_eq!(sim.writes.len(), 2, "not closed at the delay bound");
    assert_eq!(entry_ids(&sim.writes[1]), [(1, closing)]);
    assert_eq!(sim.core.deadline(), None);
    sim.complete(0, Ok(()));
    sim.complete(1, Ok(()));
    assert_eq!(sim.reply_ids(), (0..closing as u32).chain([100]).collect::<Vec<_>>());
}

/// (e) Rotation: when a file is full, the next batch goes to the next file only once every
/// write of the full file completed, whatever order they complete in; sequence numbers run on.
/// Requests also wait (without failing) while no file is ready at all.
#[test]
fn rotation_waits_for_the_old_files_writes() {
    let mut s = settings(4);
    s.batch_bytes_max = SECTOR;
    // The header block and four sectors: three one-sector batches fit (the slack a batch needs
    // to close rules out the fourth).
    s.journal_file_bytes = 5 * SECTOR as u64;
    let mut sim = Sim::with(s, false);
    assert_eq!(sim.prepares, [FileSeq(0)]);
    sim.add(1, vec![add(1, 0, 100)]);
    sim.idle();
    assert!(sim.writes.is_empty() && sim.replies.is_empty(), "written with no file ready");
    sim.file_ready(FileSeq(0));
    sim.idle();
    assert_eq!(sim.prepares, [FileSeq(0), FileSeq(1)]);
    sim.file_ready(FileSeq(1));
    for (id, e) in [(2u32, 1u64), (3, 2)] {
        sim.add(id, vec![add(1, e, 100)]);
        sim.idle();
    }
    assert_eq!(
        sim.writes.iter().map(|w| (w.file, w.offset)).collect::<Vec<_>>(),
        [(FileSeq(0), 4096), (FileSeq(0), 8192), (FileSeq(0), 12288)]
    );
    // File 0 is full: the next add waits for its three writes, although file 1 is ready and a
    // write slot is free.
    sim.add(4, vec![add(1, 3, 100)]);
    sim.idle();
    assert_eq!(sim.writes.len(), 3, "written to file 1 with file 0 in flight");
    sim.complete(2, Ok(()));
    sim.idle();
    sim.complete(1, Ok(()));
    sim.idle();
    assert_eq!(sim.writes.len(), 3, "written to file 1 with file 0 in flight");
    assert!(sim.replies.is_empty());
    sim.complete(0, Ok(()));
    assert_eq!(sim.reply_ids(), [1, 2, 3]);
    sim.idle();
    assert_eq!(sim.writes.len(), 4);
    let w = &sim.writes[3];
    assert_eq!((w.file, w.offset, w.seq), (FileSeq(1), 4096, 3));
    assert_eq!(entry_ids(w), [(1, 3)]);
    assert_eq!(w.keys, 0, "the key was journaled in file 0 already");
    assert_eq!(sim.prepares.last(), Some(&FileSeq(2)), "the next file is asked for on rotation");
    sim.complete(3, Ok(()));
    assert_eq!(sim.reply_ids(), [4]);
}

/// Takes the replies out of `sim` and checks them (see `random_schedules_keep_the_invariants`).
fn check_replies(sim: &mut Sim, requests: &[Vec<(u64, u64, usize)>], replied: &mut usize, what: &str) {
    let acked = sim.acked_upto();
    let mut placed: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for w in &sim.writes {
        for (s, e, _) in &w.entries {
            assert!(placed.insert((*s, *e), w.seq).is_none(), "{what}: {s}/{e} written twice");
        }
    }
    for id in sim.reply_ids() {
        assert_eq!(id as usize, *replied, "{what}: replies out of request order");
        *replied += 1;
        for (s, e, _) in &requests[id as usize] {
            let batch =
                placed.get(&(*s, *e)).unwrap_or_else(|| panic!("{what}: {s}/{e} acknowledged unwritten"));
            assert!(acked.is_some_and(|a| *batch <= a), "{what}: {s}/{e} acknowledged before durable");
        }
    }
}

/// All of the above at once, at random: adds of one to four entries, idle turns, time passing,
/// completions in any order, small files (frequent rotation), several windows, with and without
/// closing on idle. `Sim::drain` checks C2, C3, gap-free sequence numbers and layout at every
/// write; here replies are checked to come in request order, only once every batch holding the
/// request's entries is acknowledged, and every entry is written exactly once, byte for byte.
#[test]
fn random_schedules_keep_the_invariants() {
    for case in 0..16u64 {
        let mut rng = Rng(0xC0FE + case);
        let mut s = settings([1, 2, 4, 16][case as usize % 4]);
        s.batch_when_idle = case % 8 < 4;
        s.journal_file_bytes = 24 * SECTOR as u64;
        let what = format!("case {case} window {} idle {}", s.writes_in_flight_max, s.batch_when_idle);
        let mut sim = Sim::new(s);
        let mut next = [0u64; 3];
        let mut requests: Vec<Vec<(u64, u64, usize)>> = Vec::new();
        let mut replied = 0usize;
        for _ in 0..400 {
            match rng.below(10) {
                0..=4 => {
                    let count = 1 + rng.below(4) as usize;
                    let entries: Vec<(u64, u64, usize)> = (0..count)
                        .map(|_| {
                            let s = rng.below(3) as usize;
                            next[s] += 1;
                            (s as u64 + 1, next[s] - 1, rng.below(3000) as usize)
                        })
                        .collect();
                    let adds = entries.iter().map(|(s, e, l)| add(*s, *e, *l)).collect();
                    requests.push(entries);
                    sim.add(requests.len() as u32 - 1, adds);
                }
                5..=6 => sim.idle(),
                7 => {
                    let at = sim.now + Duration::from_micros(rng.below(1500));
                    sim.tick(at);
                }
                _ => {
                    if !sim.outstanding.is_empty() {
                        let i = rng.below(sim.outstanding.len() as u64) as usize;
                        let seq = sim.writes[sim.outstanding[i]].seq;
                        sim.complete(seq, Ok(()));
                    }
                }
            }
            check_replies(&mut sim, &requests, &mut replied, &what);
        }
        // Drain: close what is open, complete everything, until every request is answered.
        for _ in 0..1000 {
            if replied == requests.len() {
                break;
            }
            sim.idle();
            let at = sim.now + Duration::from_secs(1);
            sim.tick(at);
            while !sim.outstanding.is_empty() {
                let i = rng.below(sim.outstanding.len() as u64) as usize;
                let seq = sim.writes[sim.outstanding[i]].seq;
                sim.complete(seq, Ok(()));
            }
            check_replies(&mut sim, &requests, &mut replied, &what);
        }
        assert_eq!(replied, requests.len(), "{what}: requests never answered");
        assert!(sim.core.is_quiescent(), "{what}");
        let written: BTreeMap<(u64, u64), &Vec<u8>> =
            sim.writes.iter().flat_map(|w| w.entries.iter().map(|(s, e, p)| ((*s, *e), p))).collect();
        let total: usize = requests.iter().map(Vec::len).sum();
        assert_eq!(written.len(), total, "{what}");
        for (s, e, l) in requests.iter().flatten() {
            assert!(written[&(*s, *e)][..] == payload(*s, *e, *l)[..], "{what}: {s}/{e} bytes");
        }
        assert_eq!(sim.core.stats().entries, total as u64, "{what}");
        assert!(sim.writes.iter().any(|w| w.file > FileSeq(1)), "{what}: no rotation exercised");
        assert!(sim.peak > 1 || sim.wim == 1, "{what}: never more than one write in flight");
    }
}

/// A journal file that cannot be prepared (the disk is full) fails the waiting adds with
/// `NoSpace` (not `Poisoned`: nothing durable is in doubt). The next add asks for a file again,
/// and once one is ready, adds succeed.
#[test]
fn no_space_fails_waiting_adds_then_recovers() {
    let mut sim = Sim::with(settings(2), false);
    assert_eq!(sim.prepares.len(), 1, "the core asks for its first file at once");
    sim.add(1, vec![add(1, 0, 100)]);
    sim.add(2, vec![add(1, 1, 100)]);
    assert!(sim.writes.is_empty(), "nothing written without a file");
    let first = sim.prepares[0];
    sim.core.on_file_ready(first, Err(Error::NoSpace(ShardId(0))), sim.now);
    sim.drain();
    let replies = sim.take_replies();
    assert_eq!(replies.len(), 2, "{replies:?}");
    for (_, reply) in replies {
        match reply {
            Reply::Added(Err(errors)) => {
                assert!(matches!(errors[..], [(0, Error::NoSpace(_))]), "{errors:?}")
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
    }
    assert!(!sim.core.is_poisoned());
    // Space is back: the next add asks for a file, and succeeds once it is ready.
    sim.add(3, vec![add(1, 0, 100)]);
    assert_eq!(sim.prepares.len(), 2, "a new attempt to prepare a file");
    let second = sim.prepares[1];
    assert_ne!(second, first);
    sim.file_ready(second);
    sim.idle();
    assert_eq!(sim.outstanding_seqs(), [0]);
    sim.complete(0, Ok(()));
    assert_eq!(sim.reply_ids(), [3]);
}

/// (S5) A long poll is answered as soon as an accepted add carries a LAC past what the reader
/// knows, before that add's batch is durable: the LAC is the writer's statement about other
/// copies. READ_LAC says the same; the durable LAC (replay's) still waits for the batch.
#[test]
fn a_piggybacked_lac_wakes_long_polls_when_it_arrives() {
    let mut sim = Sim::new(settings(4));
    sim.add(1, vec![add(1, 0, 100)]);
    sim.idle();
    sim.complete(0, Ok(()));
    assert_eq!(sim.reply_ids(), [1]);
    // A reader knows nothing yet and waits.
    sim.request(Request::WaitLac {
        segment: SegmentId(1),
        known: None,
        timeout: Duration::from_secs(10),
        reply: 7,
    });
    assert!(sim.replies.is_empty(), "no LAC yet");
    // Entry 1 carries LAC 0: the wait is answered at once, its batch still in flight.
    sim.add(2, vec![add(1, 1, 100)]);
    let replies = sim.take_replies();
    assert!(
        matches!(&replies[..], [(7, Reply::LacWaited(Ok(Some(EntryId(0)))))]),
        "answered on arrival: {replies:?}"
    );
    sim.request(Request::ReadLac { segment: SegmentId(1), reply: 8 });
    assert!(matches!(&sim.take_replies()[..], [(8, Reply::Lac(Ok(Some(EntryId(0)))))]));
    sim.idle();
    assert_eq!(sim.outstanding_seqs(), [1], "the carrying add is not durable yet");
    sim.complete(1, Ok(()));
    assert_eq!(sim.reply_ids(), [2]);
}
