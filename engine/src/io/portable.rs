//! `PortableDisk`: pwrite + fdatasync (or pwritev2 RWF_DSYNC) on the shard thread.
//!
//! Chosen where io_uring is refused, or by configuration. Operations run one at a time when
//! reaped, so a flush blocks the shard; in exchange it needs nothing beyond POSIX.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::ReadWriteFlags;

use crate::config::JournalSync;
use crate::error::IoOp;
use crate::ids::FileSeq;
use crate::io::direct;
use crate::io::waker::Waker;
use crate::io::{Completion, Disk, DiskOp, OpId};

/// The portable backend.
#[derive(Debug, Default)]
pub struct PortableDisk {
    files: BTreeMap<FileSeq, File>,
    queued: VecDeque<(OpId, DiskOp)>,
}

impl PortableDisk {
    /// A disk with no files.
    pub fn new() -> PortableDisk {
        PortableDisk::default()
    }

    fn run(&self, op: OpId, disk_op: DiskOp) -> Completion {
        match disk_op {
            DiskOp::Write { file, offset, buf, sync } => {
                let Some(f) = self.files.get(&file) else {
                    return unknown(op, IoOp::Write, buf);
                };
                let bytes = buf.len();
                let written = match sync {
                    Some(JournalSync::Dsync) => {
                        pwrite_all_dsync(f, buf.as_slice(), offset).map_err(|e| (IoOp::Write, e))
                    }
                    _ => f.write_all_at(buf.as_slice(), offset).map_err(|e| (IoOp::Write, e)),
                };
                let result = written
                    .and_then(|()| match sync {
                        Some(JournalSync::Fdatasync) => f.sync_data().map_err(|e| (IoOp::Flush, e)),
                        _ => Ok(()),
                    })
                    .and_then(|()| {
                        crate::io::injected_write_error(file).map_or(Ok(()), |e| Err((IoOp::Flush, e)))
                    });
                Completion { op, result, bytes, buf }
            }
            DiskOp::Read { file, offset, mut buf } => {
                let Some(f) = self.files.get(&file) else {
                    return unknown(op, IoOp::Read, buf);
                };
                let (done, result) = direct::read_full_at(f, buf.as_mut_slice(), offset);
                let result = result.map_err(|e| (IoOp::Read, e));
                Completion { op, result, bytes: done, buf }
            }
        }
    }
}

fn unknown(op: OpId, step: IoOp, buf: crate::io::buf::AlignedBuf) -> Completion {
    let error = io::Error::new(io::ErrorKind::NotFound, "file not registered with the disk");
    Completion { op, result: Err((step, error)), bytes: 0, buf }
}

fn pwrite_all_dsync(file: &File, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    while !bytes.is_empty() {
        let iov = [io::IoSlice::new(bytes)];
        match rustix::io::pwritev2(file, &iov, offset, ReadWriteFlags::DSYNC) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev2 wrote 0")),
            Ok(n) => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Disk for PortableDisk {
    fn register_file(&mut self, seq: FileSeq, file: File) -> io::Result<()> {
        self.files.insert(seq, file);
        Ok(())
    }

    fn unregister_file(&mut self, seq: FileSeq) {
        self.files.remove(&seq);
    }

    fn submit(&mut self, op: OpId, disk_op: DiskOp) {
        self.queued.push_back((op, disk_op));
    }

    fn in_flight(&self) -> usize {
        self.queued.len()
    }

    fn reap(
        &mut self,
        out: &mut Vec<Completion>,
        timeout: Option<Duration>,
        waker: &Waker,
    ) -> io::Result<()> {
        if self.queued.is_empty() {
            if let Some(timeout) = timeout {
                let fd = waker.fd();
                let mut fds = [PollFd::new(&fd, PollFlags::IN)];
                let ts = Timespec::try_from(timeout).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 });
                match poll(&mut fds, Some(&ts)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
                waker.drain();
            }
            return Ok(());
        }
        while let Some((op, disk_op)) = self.queued.pop_front() {
            out.push(self.run(op, disk_op));
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "portable"
    }
}
