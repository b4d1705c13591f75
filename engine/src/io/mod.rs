//! The I/O seam: a completion-based `Disk` with owned buffers, and its two backends.
//!
//! Owns: submitting journal writes (each with its flush) and reads, reaping completions,
//! sleeping until a completion or a `Waker` fires.
//! Does not own: what is written where (the shard core decides), file preparation.
//!
//! Invariants:
//! - D1: a buffer passed to `submit` is owned by the disk until its `Completion` hands it back,
//!   whatever the outcome; the kernel never sees a buffer the disk does not own.
//! - D2: a write submitted with a sync mode completes only after its bytes are durable (or
//!   with an error naming the step that failed).

pub mod buf;
pub mod direct;
pub mod portable;
pub mod uring;
pub mod waker;

use std::fs::File;
use std::io;
use std::time::Duration;

use crate::config::JournalSync;
use crate::error::IoOp;
use crate::ids::FileSeq;
use buf::AlignedBuf;
use waker::Waker;

/// Fault injection for tests (feature `failpoints`): the error to report for a write to `file`
/// that otherwise succeeded, if its failpoint is active: `dlog-entry-log-write-eio` for entry
/// logs, `dlog-journal-flush-eio` for journal files.
pub(crate) fn injected_write_error(file: FileSeq) -> Option<io::Error> {
    if file.0 & crate::constants::ENTRY_LOG_FILE_BIT != 0 {
        fail::fail_point!("dlog-entry-log-write-eio", |_| Some(io::Error::from_raw_os_error(libc::EIO)));
        return None;
    }
    fail::fail_point!("dlog-journal-flush-eio", |_| Some(io::Error::from_raw_os_error(libc::EIO)));
    None
}

/// Identifies a submitted operation; chosen by the submitter, echoed in its completion.
pub type OpId = u64;

/// An operation for the disk.
#[derive(Debug)]
pub enum DiskOp {
    /// Write `buf.as_slice()` at `offset`, then make it durable per `sync` (None: no flush).
    Write {
        /// Target file.
        file: FileSeq,
        /// Byte offset, sector-aligned.
        offset: u64,
        /// The bytes; length is a multiple of the sector size.
        buf: AlignedBuf,
        /// How to make it durable.
        sync: Option<JournalSync>,
    },
    /// Read `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Source file.
        file: FileSeq,
        /// Byte offset, sector-aligned.
        offset: u64,
        /// Destination; its length is the number of bytes to read.
        buf: AlignedBuf,
    },
}

/// The outcome of an operation, with its buffer handed back (D1).
#[derive(Debug)]
pub struct Completion {
    /// The id given at submission.
    pub op: OpId,
    /// Ok, or the failed step and its error. A short read is not an error; see `bytes`.
    pub result: Result<(), (IoOp, io::Error)>,
    /// Bytes transferred by the read or write step.
    pub bytes: usize,
    /// The buffer given at submission.
    pub buf: AlignedBuf,
}

/// A completion-based disk. One per shard, used from the shard's thread only.
pub trait Disk {
    /// Makes `file` addressable as `seq`.
    fn register_file(&mut self, seq: FileSeq, file: File) -> io::Result<()>;
    /// Forgets `seq`. No operation on it may be in flight.
    fn unregister_file(&mut self, seq: FileSeq);
    /// Queues an operation. Never fails: failures arrive as completions.
    fn submit(&mut self, op: OpId, disk_op: DiskOp);
    /// Operations submitted and not yet completed.
    fn in_flight(&self) -> usize;
    /// Pushes finished completions into `out`, first sending queued submissions to the kernel.
    /// Blocks until at least one completion arrives, `waker` is woken, or `timeout` passes
    /// (`None`: do not block).
    fn reap(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>, waker: &Waker)
    -> io::Result<()>;
    /// Registers long-lived buffers for faster writes where the backend has such a thing
    /// (io_uring fixed buffers); tags them so later writes from them use it. The caller must
    /// keep every registered buffer alive until the disk is dropped. Returns how many were
    /// registered (0 where unsupported).
    fn register_buffers(&mut self, bufs: &mut [AlignedBuf]) -> io::Result<usize> {
        let _ = bufs;
        Ok(0)
    }
    /// A short name for logs and benchmark output.
    fn name(&self) -> &'static str;
}
