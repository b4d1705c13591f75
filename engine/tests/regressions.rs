//! Regression tests for bugs a code review found (each test failed before its fix): file
//! preparation retried after a failure, futures over several shards keeping every part, master
//! keys surviving a checkpoint, checkpoints refused unless at a batch boundary of a live file,
//! no success trusted after a flush failure, out-of-range shard ids as errors, and reclaimed
//! files leaving no index entries behind.
#![allow(clippy::disallowed_methods, reason = "tests take one Instant and add durations to it")]

mod common;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{add, config, key, payload};
use dlog_engine::io::buf::AlignedBuf;
use dlog_engine::io::{Completion, DiskOp, OpId};
use dlog_engine::shard::core::{CoreSettings, CoreStart, Output, ShardCore};
use dlog_engine::shard::request::{Reply, Request};
use dlog_engine::{
    Backend, Bookie, EntryId, Error, FileSeq, IoOp, JournalMark, JournalSync, SegmentId, ShardId,
};

const SECTOR: usize = 4096;

fn settings(writes_in_flight_max: usize) -> CoreSettings {
    CoreSettings {
        shard: ShardId(0),
        batch_bytes_max: SECTOR,
        batch_delay_max: Duration::from_millis(1),
        batch_when_idle: true,
        writes_in_flight_max,
        // The header block and four sectors: three one-sector batches fit.
        journal_file_bytes: 5 * SECTOR as u64,
        entry_bytes_max: 1 << 20,
        journal_sync: JournalSync::Fdatasync,
        // These drive the journal alone (StorageMode::JournalOnly).
        storage: None,
    }
}

/// A bare driver for the core: outputs are collected, nothing is answered automatically.
struct Drive {
    core: ShardCore<u32>,
    now: Instant,
    /// (op, file, offset, buf) of writes not yet completed.
    writes: Vec<(OpId, FileSeq, u64, AlignedBuf)>,
    /// (op, file, offset, buf) of reads not yet completed.
    reads: Vec<(OpId, FileSeq, u64, AlignedBuf)>,
    replies: Vec<(u32, Reply)>,
    prepares: Vec<FileSeq>,
    checkpoints: Vec<(JournalMark, Vec<FileSeq>, u32)>,
    /// Answer PrepareFile at once with Ok.
    auto_prepare: bool,
}

impl Drive {
    fn new(settings: CoreSettings, auto_prepare: bool) -> Drive {
        let mut d = Drive {
            core: ShardCore::new(settings, CoreStart::default(), Instant::now()),
            now: Instant::now(),
            writes: Vec::new(),
            reads: Vec::new(),
            replies: Vec::new(),
            prepares: Vec::new(),
            checkpoints: Vec::new(),
            auto_prepare,
        };
        d.drain();
        d
    }

    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Disk(op, DiskOp::Write { file, offset, buf, .. }) => {
                    self.writes.push((op, file, offset, buf))
                }
                Output::Disk(op, DiskOp::Read { file, offset, buf }) => {
                    self.reads.push((op, file, offset, buf))
                }
                Output::Reply(id, reply) => self.replies.push((id, reply)),
                Output::PrepareFile(seq) => {
                    self.prepares.push(seq);
                    if self.auto_prepare {
                        self.core.on_file_ready(seq, Ok(()), self.now);
                    }
                }
                Output::Checkpoint { mark, reclaim, reply, .. } => {
                    self.checkpoints.push((mark, reclaim, reply.expect("checkpoints here are requested")));
                }
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
        self.core.on_idle(self.now);
        self.drain();
    }

    fn add(&mut self, id: u32, segment: u64, entry: u64, len: usize) {
        self.request(Request::Add { entries: vec![add(segment, entry, len)], reply: id });
    }

    /// Completes every outstanding write, oldest first, with `Ok`.
    fn complete_all_writes(&mut self) {
        while !self.writes.is_empty() {
            let (op, _, _, buf) = self.writes.remove(0);
            let bytes = buf.len();
            self.core.on_completion(Completion { op, result: Ok(()), bytes, buf }, self.now);
            self.drain();
        }
    }

    fn complete_write(&mut self, index: usize, result: Result<(), (IoOp, io::Error)>) {
        let (op, _, _, buf) = self.writes.remove(index);
        let bytes = buf.len();
        self.core.on_completion(Completion { op, result, bytes, buf }, self.now);
        self.drain();
    }

    fn position(&mut self) -> JournalMark {
        self.request(Request::Position { reply: 9999 });
        let at = self.replies.iter().position(|(id, _)| *id == 9999).expect("position answered");
        match self.replies.remove(at).1 {
            Reply::Position(mark) => mark,
            other => panic!("{other:?}"),
        }
    }
}

/// Finding 1: a journal file preparation that fails while the active file still has room is
/// never retried. Once the active file fills, every write request stalls forever: no reply, no
/// new `PrepareFile`, and `wants_requests()` stays false, so the shell stops reading its queue
/// (reads, `Stats` and `Msg::Stop` included; `Bookie::close` hangs).
#[test]
fn failed_prepare_while_the_active_file_is_full_is_retried() {
    let mut d = Drive::new(settings(4), false);
    assert_eq!(d.prepares, [FileSeq(0)]);
    d.core.on_file_ready(FileSeq(0), Ok(()), d.now);
    d.drain();
    d.add(1, 1, 0, 100);
    d.add(2, 1, 1, 100);
    d.add(3, 1, 2, 100);
    // Past half of file 0: file 1 was asked for early; it is still being prepared.
    assert_eq!(d.prepares, [FileSeq(0), FileSeq(1)]);
    // File 0 is full: add 4 waits for file 1.
    d.add(4, 1, 3, 100);
    d.complete_all_writes();
    assert_eq!(d.replies.len(), 3, "{:?}", d.replies);
    d.replies.clear();
    // File 1 cannot be prepared (ENOSPC for a moment): add 4 fails with NoSpace, as designed.
    d.core.on_file_ready(FileSeq(1), Err(Error::NoSpace(ShardId(0))), d.now);
    d.drain();
    assert!(matches!(d.replies[..], [(4, Reply::Added(Err(_)))]), "{:?}", d.replies);
    d.replies.clear();
    // Space is back. The next add must either ask for a file again or fail; it does neither.
    d.add(5, 1, 3, 100);
    d.complete_all_writes();
    d.core.on_tick(d.now + Duration::from_secs(1));
    d.drain();
    let retried = d.prepares.len() > 2;
    let answered = d.replies.iter().any(|(id, _)| *id == 5);
    assert!(
        retried || answered,
        "add 5 hangs forever: no reply, no new PrepareFile (prepares {:?}), wants_requests = {}",
        d.prepares,
        d.core.wants_requests()
    );
}

/// A batch due while every journal write slot is taken has no deadline until a write
/// completes: a past deadline made the shell's wait return at once, and the shard spun on the
/// clock and `io_uring_enter` for as long as its writes were in flight (found by `dlog bench`:
/// most of the shards' CPU at the peak).
#[test]
fn a_batch_waiting_for_a_write_slot_has_no_deadline() {
    let mut d = Drive::new(settings(1), true);
    d.add(1, 1, 0, 100);
    assert_eq!(d.writes.len(), 1);
    // The only slot is taken: entry 1's batch waits, however late it gets.
    d.add(2, 1, 1, 100);
    assert_eq!(d.writes.len(), 1);
    let later = d.now + Duration::from_millis(5);
    d.core.on_tick(later);
    d.drain();
    assert_eq!(d.writes.len(), 1);
    assert!(
        d.core.deadline().is_none_or(|t| t > later),
        "a due batch that cannot go out reports {:?}",
        d.core.deadline()
    );
    // The write completes: the waiting batch goes out, at once or at the next tick.
    d.complete_write(0, Ok(()));
    if d.writes.is_empty() {
        assert!(
            d.core.deadline().is_some_and(|t| t <= later),
            "the batch can go now: {:?}",
            d.core.deadline()
        );
        d.core.on_tick(later);
        d.drain();
    }
    assert_eq!(d.writes.len(), 1, "the waiting batch is written once a slot is free");
    d.complete_all_writes();
    assert!(d.replies.iter().any(|(id, r)| *id == 2 && matches!(r, Reply::Added(Ok(())))), "{:?}", d.replies);
}

/// Finding 2 (io_uring with buffered I/O, i.e. `DirectIo::Optional` fallback or `Disabled`):
/// batches in flight share one file descriptor, and Linux reports a writeback error to only
/// one fdatasync per descriptor (errseq, "fsyncgate"). When batch 1's flush reports EIO, the
/// error may have been batch 0's pages; batch 0's own fdatasync can then return success
/// although its data never reached the disk. The core still acknowledges batch 0.
#[test]
fn success_reported_after_a_flush_failure_is_not_trusted() {
    let mut d = Drive::new(settings(4), true);
    d.add(1, 1, 0, 100);
    d.add(2, 1, 1, 100);
    assert_eq!(d.writes.len(), 2);
    // Batch 1's flush fails first; batch 0's flush then reports success.
    d.complete_write(1, Err((IoOp::Flush, io::Error::from_raw_os_error(libc_eio()))));
    d.complete_write(0, Ok(()));
    let reply = d.replies.iter().find(|(id, _)| *id == 1).map(|(_, r)| r);
    assert!(
        !matches!(reply, Some(Reply::Added(Ok(())))),
        "batch 0 acknowledged on a success reported after the descriptor's writeback error was consumed"
    );
}

fn libc_eio() -> i32 {
    5
}

/// A checkpoint that cannot reclaim a file because a read is in flight on it keeps that file, and `remove_files_before(oldest kept)` then leaves index entries of LATER files
/// that were reclaimed (and unregistered from the disk by the shell). A read of such an entry is
/// sent to a file that no longer exists (the shell answers an I/O error), instead of
/// `NoSuchEntry`.
#[test]
fn reclaimed_files_leave_no_index_entries_behind() {
    let mut d = Drive::new(settings(4), true);
    // Three one-sector batches per file: entries 0..3 in file 0, 3..6 in file 1, 6..9 in file 2.
    for e in 0..10u64 {
        d.add(e as u32, 1, e, 100);
        d.complete_all_writes();
    }
    assert_eq!(d.replies.len(), 10);
    d.replies.clear();
    // A read of entry 4 (file 1) is in flight.
    d.request(Request::ReadEntry { segment: SegmentId(1), entry: EntryId(4), reply: 100 });
    assert_eq!(d.reads.len(), 1);
    assert_eq!(d.reads[0].1, FileSeq(1));
    let mark = d.position();
    assert_eq!(mark.file, FileSeq(3));
    d.request(Request::Checkpoint { mark, reply: 101 });
    // The checkpoint first journals the segments' state after the mark; once durable, it
    // reclaims.
    d.complete_all_writes();
    assert_eq!(d.checkpoints.len(), 1);
    assert_eq!(d.checkpoints[0].1, [FileSeq(0), FileSeq(2)], "file 1 kept: a read is in flight");
    // Entry 7 lived in file 2, which is reclaimed.
    d.request(Request::ReadEntry { segment: SegmentId(1), entry: EntryId(7), reply: 102 });
    let to_reclaimed: Vec<FileSeq> =
        d.reads.iter().map(|r| r.1).filter(|f| d.checkpoints[0].1.contains(f)).collect();
    assert!(to_reclaimed.is_empty(), "read sent to reclaimed (unregistered) file(s) {to_reclaimed:?}");
}

/// Finding 4: `Pending` polled as a `Future` for an `add_entries` split over shards keeps only
/// one receiver in `waiting`; a second poll that finds another part pending overwrites (drops)
/// the first. The dropped part's reply is lost: its errors disappear, and the future can
/// resolve `Ok` once the OTHER shard's part is durable, before this part is.
#[test]
fn multi_shard_add_entries_polled_as_a_future_keeps_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Backend::Portable);
    cfg.pin_shards = false;
    let bookie = Bookie::open(cfg).unwrap();
    let s0 = (1..1000u64).find(|s| bookie.shard_of(SegmentId(*s)) == ShardId(0)).unwrap();
    let s1 = (1..1000u64).find(|s| bookie.shard_of(SegmentId(*s)) == ShardId(1)).unwrap();
    let s1b = (s1 + 1..2000u64).find(|s| bookie.shard_of(SegmentId(*s)) == ShardId(1)).unwrap();
    // s1 is fenced: every plain add to it must fail.
    bookie.add_entry(add(s1, 0, 10)).wait().unwrap();
    bookie.fence(SegmentId(s1), key()).wait().unwrap();
    // Control: waited on from a thread, the same request reports the fenced entry.
    let control = bookie.add_entries(vec![add(s0, 100, 10), add(s1b, 100, 10), add(s1, 100, 10)]).wait();
    assert!(matches!(&control, Err(e) if e.iter().any(|(i, e)| *i == 2 && matches!(e, Error::Fenced(_)))));
    let mut wrong = 0;
    let rounds = 10u64;
    for round in 0..rounds {
        // Both parts need a durable write, so both are still pending at the first two polls;
        // shard 1's part answers (after its batch is durable) with entry 2 refused.
        let mut pending =
            bookie.add_entries(vec![add(s0, round, 1 << 20), add(s1b, round, 10), add(s1, 1 + round, 10)]);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let result = loop {
            if let Poll::Ready(r) = Pin::new(&mut pending).poll(&mut cx) {
                break r;
            }
            std::hint::spin_loop();
        };
        match result {
            Err(errors) if errors.iter().any(|(i, e)| *i == 2 && matches!(e, Error::Fenced(_))) => {}
            other => {
                wrong += 1;
                eprintln!("round {round}: {other:?}");
            }
        }
    }
    bookie.close();
    assert_eq!(wrong, 0, "{wrong} of {rounds} polled add_entries lost the fenced part's error");
}

/// Finding 5a: `checkpoint` accepts any mark not past the durable position. An offset inside
/// the first 4096 bytes (or not sector-aligned) is persisted, and the next open refuses the
/// directory (`OpenError::Layout`): one API call bricks the bookie.
#[test]
fn checkpoint_refuses_a_mark_the_next_open_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Backend::Portable);
    cfg.shard_count = 1;
    cfg.pin_shards = false;
    cfg.storage_mode = dlog_engine::StorageMode::JournalOnly; // Checkpoints are the caller's.
    let bookie = Bookie::open(cfg.clone()).unwrap();
    bookie.add_entry(add(1, 0, 100)).wait().unwrap();
    let durable = bookie.journal_position(ShardId(0)).wait().unwrap();
    let accepted = bookie.checkpoint(ShardId(0), JournalMark { file: durable.file, offset: 0 }).wait();
    bookie.close();
    let reopened = Bookie::open(cfg);
    assert!(
        accepted.is_err() || reopened.is_ok(),
        "checkpoint at offset 0 was accepted ({accepted:?}) and the bookie no longer opens: {:?}",
        reopened.err()
    );
}

/// Finding 5b: a sector-aligned mark inside a batch is accepted too. Replay then starts in the
/// middle of that batch, reads payload bytes as a damaged batch header, finds the following
/// (acknowledged!) batches inside the in-flight window, and cuts them off as a torn tail:
/// acknowledged entries after the mark are zeroed on disk.
#[test]
fn checkpoint_inside_a_batch_does_not_destroy_later_acknowledged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Backend::Portable);
    cfg.shard_count = 1;
    cfg.pin_shards = false;
    cfg.storage_mode = dlog_engine::StorageMode::JournalOnly; // Checkpoints are the caller's.
    let bookie = Bookie::open(cfg.clone()).unwrap();
    bookie.add_entry(add(1, 0, 10_000)).wait().unwrap(); // Batch 0: [4096, 16384).
    let after_first = bookie.journal_position(ShardId(0)).wait().unwrap();
    assert_eq!(after_first.offset, 16384);
    bookie.add_entry(add(1, 1, 100)).wait().unwrap();
    bookie.add_entry(add(1, 2, 100)).wait().unwrap();
    // "Everything before 8192 is stored elsewhere": entries 1 and 2 are not.
    let mark = JournalMark { file: after_first.file, offset: 8192 };
    let accepted = bookie.checkpoint(ShardId(0), mark).wait();
    bookie.close();
    if accepted.is_err() {
        return; // Refused: fine.
    }
    let bookie = Bookie::open(cfg).unwrap();
    let torn = bookie.replay_reports()[0].torn_tail.clone();
    for e in [1u64, 2] {
        let got = bookie.read_entry(SegmentId(1), EntryId(e)).wait();
        assert!(
            matches!(&got, Ok(b) if *b == payload(1, e, 100)),
            "acknowledged entry {e} lost after a mid-batch checkpoint: {got:?} (torn tail {torn:?})"
        );
    }
}

/// Finding 5c: a mark in an earlier file may carry any offset; a huge sector-aligned one is
/// persisted, and the next open fails (`has_batches` reads at an offset > i64::MAX: EINVAL),
/// so again one API call makes the bookie unopenable.
#[test]
fn checkpoint_with_a_huge_offset_in_an_older_file_keeps_the_bookie_openable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Backend::Portable);
    cfg.shard_count = 1;
    cfg.pin_shards = false;
    cfg.storage_mode = dlog_engine::StorageMode::JournalOnly; // Checkpoints are the caller's.
    let bookie = Bookie::open(cfg.clone()).unwrap();
    bookie.add_entry(add(1, 0, 100)).wait().unwrap(); // File 0.
    bookie.close();
    let bookie = Bookie::open(cfg.clone()).unwrap();
    bookie.add_entry(add(1, 1, 100)).wait().unwrap(); // A later file.
    let durable = bookie.journal_position(ShardId(0)).wait().unwrap();
    assert!(durable.file > FileSeq(0));
    let mark = JournalMark { file: FileSeq(0), offset: u64::MAX - (SECTOR as u64 - 1) };
    let accepted = bookie.checkpoint(ShardId(0), mark).wait();
    bookie.close();
    let reopened = Bookie::open(cfg);
    assert!(
        accepted.is_err() || reopened.is_ok(),
        "checkpoint {mark:?} accepted ({accepted:?}); reopen: {:?}",
        reopened.err()
    );
}

/// Finding 6 (minor): a shard id out of range panics the caller instead of returning an error.
#[test]
fn out_of_range_shard_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Backend::Portable);
    cfg.pin_shards = false;
    cfg.storage_mode = dlog_engine::StorageMode::JournalOnly; // Checkpoints are the caller's.
    let bookie = Bookie::open(cfg).unwrap();
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bookie.journal_position(ShardId(7)).wait()));
    bookie.close();
    assert!(result.is_ok(), "journal_position(ShardId(7)) panicked");
}

/// Finding 7 (regression from commit b1a1b11, "master keys are re-journaled only when a
/// checkpoint actually reclaims files"): a checkpoint whose mark lies inside a file that is not
/// reclaimed (the active file) leaves `key_journaled` set, yet replay starts at the mark and
/// never sees the key records before it. Records written after the checkpoint carry no key, so
/// after a restart the segment's key is unknown and ANY key is accepted (and adopted).
#[test]
fn master_key_survives_a_checkpoint_inside_the_active_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Backend::Portable);
    cfg.shard_count = 1;
    cfg.pin_shards = false;
    cfg.storage_mode = dlog_engine::StorageMode::JournalOnly;
    let bookie = Bookie::open(cfg.clone()).unwrap();
    bookie.add_entry(add(1, 0, 100)).wait().unwrap(); // Key record + entry 0, in file 0.
    let mark = bookie.journal_position(ShardId(0)).wait().unwrap();
    bookie.checkpoint(ShardId(0), mark).wait().unwrap(); // Reclaims nothing: file 0 is active.
    bookie.add_entry(add(1, 1, 100)).wait().unwrap(); // After the mark.
    bookie.close();
    let bookie = Bookie::open(cfg).unwrap();
    let wrong = bytes::Bytes::from_static(b"not-the-key");
    let fenced = bookie.fence(SegmentId(1), wrong).wait();
    assert!(
        matches!(fenced, Err(Error::WrongMasterKey(_))),
        "fence with a wrong master key after restart: {fenced:?}"
    );
}
