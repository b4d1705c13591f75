//! `SimDisk`: one bookie's journal files in memory, and the operations in flight on them.
//!
//! The model (the `Disk` contract, D2: a write submitted with a flush completes only once
//! durable): a file's bytes are what completed writes left there; a write in flight has not
//! landed yet. At a crash each write in flight lands whole, not at all, or (torn) with only
//! some of its sectors, and the process's memory is gone. A write that completes with EIO
//! may have landed whole, partly or not at all too (the flush failed: nothing is promised).
//!
//! Invariants:
//! - SD1: the durable image (`files`) changes only when a write completes or at a crash; a
//!   read sees exactly it.
//! - SD2: every buffer submitted is handed back in its completion (D1), or dropped with the
//!   process at a crash; nothing is completed twice.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use dlog_engine::constants::JOURNAL_FILE_HEADER_BYTES;
use dlog_engine::io::buf::AlignedBuf;
use dlog_engine::io::{Completion, DiskOp, OpId};
use dlog_engine::journal::file_header::FileHeader;
use dlog_engine::journal::files::ShardDir;
use dlog_engine::{FileSeq, IoOp};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The unit a torn write lands in.
const TORN_UNIT_BYTES: usize = 512;

/// How a write in flight lands at a crash or a failed flush.
fn land(rng: &mut ChaCha8Rng, torn: bool, file: &mut [u8], offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    if start >= file.len() {
        return;
    }
    let bytes = &bytes[..bytes.len().min(file.len() - start)];
    match rng.random_range(0..3) {
        0 => {}
        1 => file[start..start + bytes.len()].copy_from_slice(bytes),
        _ if torn => {
            // Torn in 512-byte units: a 4 KiB sector of a device with 512-byte atomic writes
            // can land in part.
            for (i, piece) in bytes.chunks(TORN_UNIT_BYTES).enumerate() {
                if rng.random_bool(0.5) {
                    let at = start + i * TORN_UNIT_BYTES;
                    file[at..at + piece.len()].copy_from_slice(piece);
                }
            }
        }
        _ => {}
    }
}

struct InFlight {
    disk_op: DiskOp,
    /// The error to complete with, decided at submission.
    fail: Option<(IoOp, i32)>,
}

/// One bookie's journal (SD1, SD2).
#[derive(Default)]
pub(crate) struct SimDisk {
    files: BTreeMap<FileSeq, Vec<u8>>,
    in_flight: BTreeMap<OpId, InFlight>,
    /// The last write that completed: (file, offset, length), for `Mutation::LoseDurable`.
    last_durable: Option<(FileSeq, usize, usize)>,
}

impl SimDisk {
    /// Makes journal file `seq`: zeroes with a durable header (what the preparer does).
    pub(crate) fn prepare(&mut self, seq: FileSeq, header: FileHeader) {
        let mut bytes = vec![0u8; header.file_bytes as usize];
        bytes[..JOURNAL_FILE_HEADER_BYTES].copy_from_slice(&header.encode());
        self.files.insert(seq, bytes);
    }

    /// Queues an operation that completes with `fail` when the world says so.
    pub(crate) fn submit(&mut self, op: OpId, disk_op: DiskOp, fail: Option<(IoOp, i32)>) {
        let previous = self.in_flight.insert(op, InFlight { disk_op, fail });
        assert!(previous.is_none(), "op {op} submitted twice");
    }

    /// Completes `op` (SD2): a write lands (or, failed, lands as `land` decides); a read copies.
    pub(crate) fn complete(&mut self, op: OpId, rng: &mut ChaCha8Rng, torn: bool) -> Option<Completion> {
        let InFlight { disk_op, fail } = self.in_flight.remove(&op)?;
        let result = match fail {
            Some((step, errno)) => Err((step, io::Error::from_raw_os_error(errno))),
            None => Ok(()),
        };
        match disk_op {
            DiskOp::Write { file, offset, buf, .. } => {
                let bytes = buf.len();
                if let Some(image) = self.files.get_mut(&file) {
                    if result.is_ok() {
                        let start = offset as usize;
                        let end = (start + bytes).min(image.len());
                        image[start..end].copy_from_slice(&buf.as_slice()[..end - start]);
                        self.last_durable = Some((file, start, end - start));
                    } else {
                        land(rng, torn, image, offset, buf.as_slice());
                    }
                }
                Some(Completion { op, result, bytes, buf })
            }
            DiskOp::Read { file, offset, mut buf } => {
                let mut bytes = 0;
                if result.is_ok()
                    && let Some(image) = self.files.get(&file)
                {
                    let start = (offset as usize).min(image.len());
                    let end = (start + buf.len()).min(image.len());
                    buf.as_mut_slice()[..end - start].copy_from_slice(&image[start..end]);
                    bytes = end - start;
                }
                Some(Completion { op, result, bytes, buf })
            }
        }
    }

    /// A broken disk (`Mutation::LoseDurable`): the last write it called durable is lost.
    pub(crate) fn lose_last_durable(&mut self) {
        if let Some((file, start, len)) = self.last_durable.take()
            && let Some(image) = self.files.get_mut(&file)
        {
            image[start..start + len].fill(0);
        }
    }

    /// The process died: writes in flight land whole, not at all, or torn; the rest is gone.
    pub(crate) fn crash(&mut self, rng: &mut ChaCha8Rng, torn: bool) {
        for (_, in_flight) in std::mem::take(&mut self.in_flight) {
            if let DiskOp::Write { file, offset, buf, .. } = in_flight.disk_op
                && let Some(image) = self.files.get_mut(&file)
            {
                land(rng, torn, image, offset, buf.as_slice());
            }
        }
    }

    /// Writes the journal files where `ShardDir` expects them, for replay.
    pub(crate) fn write_to(&self, dir: &ShardDir) -> io::Result<()> {
        std::fs::create_dir_all(&dir.path)?;
        for (seq, bytes) in &self.files {
            std::fs::write(dir.journal_path(*seq), bytes)?;
        }
        Ok(())
    }

    /// Reads the files back after replay (it zeroes torn tails, and may delete files).
    pub(crate) fn read_from(&mut self, dir: &ShardDir) -> io::Result<()> {
        let mut files = BTreeMap::new();
        for seq in self.files.keys() {
            let path = dir.journal_path(*seq);
            if Path::new(&path).exists() {
                files.insert(*seq, std::fs::read(&path)?);
            }
        }
        self.files = files;
        Ok(())
    }

    /// Bytes of journal files.
    pub(crate) fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.len() as u64).sum()
    }

    /// A buffer for the core.
    pub(crate) fn buffer(capacity: usize) -> AlignedBuf {
        AlignedBuf::with_capacity(capacity)
    }
}
