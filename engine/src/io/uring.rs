//! `UringDisk`: the io_uring backend, driven directly from the shard's own loop.
//!
//! A journal write with `Fdatasync` is two linked SQEs (WRITE, then FSYNC with DATASYNC run
//! only if the write succeeded in full); with `Dsync` it is one WRITE carrying RWF_DSYNC. Each
//! operation occupies one slot of the in-flight table, which owns its buffer until every CQE of
//! the operation has been reaped (D1). The shard's `Waker` eventfd is watched by a POLL_ADD so a
//! new request wakes a shard blocked in `io_uring_enter`.
//!
//! Invariants:
//! - U1: a buffer whose pointer is in a pushed SQE is held by `slots[i]` until the last CQE
//!   whose user_data names slot `i` has been reaped.
//! - U2: at most `IO_DEPTH_MAX` SQEs are pushed and not yet completed; overflow waits in
//!   `backlog`, which holds operations no SQE points to yet.
#![expect(unsafe_code, reason = "io_uring submission of raw buffer pointers")]

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

use crate::config::JournalSync;
use crate::constants::IO_DEPTH_MAX;
use crate::error::IoOp;
use crate::ids::FileSeq;
use crate::io::buf::AlignedBuf;
use crate::io::waker::Waker;
use crate::io::{Completion, Disk, DiskOp, OpId};

const STEP_MAIN: u64 = 0;
const STEP_FSYNC: u64 = 1;
const WAKER_USER_DATA: u64 = u64::MAX;

#[derive(Debug)]
struct Slot {
    op: OpId,
    buf: AlignedBuf,
    is_write: bool,
    /// The file written (fault injection tells journal files from entry logs).
    file: FileSeq,
    cqes_pending: u8,
    bytes: usize,
    result: Result<(), (IoOp, io::Error)>,
}

/// The io_uring backend.
pub struct UringDisk {
    ring: IoUring,
    files: BTreeMap<FileSeq, File>,
    slots: Vec<Option<Slot>>,
    slots_free: Vec<usize>,
    backlog: VecDeque<(OpId, DiskOp)>,
    sqes_in_flight: usize,
    waker_armed: bool,
    /// (address, capacity) of each registered buffer, by index.
    registered: Vec<(usize, usize)>,
}

impl std::fmt::Debug for UringDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDisk").field("in_flight", &self.in_flight()).finish()
    }
}

impl UringDisk {
    /// Sets up a ring; fails where the kernel refuses io_uring (too old, disabled by sysctl,
    /// blocked by seccomp), so the caller can fall back.
    pub fn new() -> io::Result<UringDisk> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(IO_DEPTH_MAX as u32)
            .or_else(|_| IoUring::new(IO_DEPTH_MAX as u32))?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks IORING_FEAT_EXT_ARG (kernel older than 5.11)",
            ));
        }
        Ok(UringDisk {
            ring,
            files: BTreeMap::new(),
            slots: Vec::new(),
            slots_free: Vec::new(),
            backlog: VecDeque::new(),
            sqes_in_flight: 0,
            waker_armed: false,
            registered: Vec::new(),
        })
    }

    fn slot_alloc(&mut self, slot: Slot) -> usize {
        if let Some(i) = self.slots_free.pop() {
            assert!(self.slots[i].is_none());
            self.slots[i] = Some(slot);
            i
        } else {
            self.slots.push(Some(slot));
            self.slots.len() - 1
        }
    }

    /// Moves backlog operations into the SQ while there is room (U2).
    fn fill_sq(&mut self, out: &mut Vec<Completion>) {
        while let Some((_, disk_op)) = self.backlog.front() {
            let sqes_needed = match disk_op {
                DiskOp::Write { sync: Some(JournalSync::Fdatasync), .. } => 2,
                _ => 1,
            };
            if self.sqes_in_flight + sqes_needed > IO_DEPTH_MAX {
                return;
            }
            let Some((op, disk_op)) = self.backlog.pop_front() else { return };
            self.push(op, disk_op, out);
        }
    }

    fn push(&mut self, op: OpId, disk_op: DiskOp, out: &mut Vec<Completion>) {
        let (file, offset, buf, is_write, sync) = match disk_op {
            DiskOp::Write { file, offset, buf, sync } => (file, offset, buf, true, sync),
            DiskOp::Read { file, offset, buf } => (file, offset, buf, false, None),
        };
        let Some(fd) = self.files.get(&file).map(|f| types::Fd(f.as_raw_fd())) else {
            let error = io::Error::new(io::ErrorKind::NotFound, "file not registered with disk");
            let step = if is_write { IoOp::Write } else { IoOp::Read };
            out.push(Completion { op, result: Err((step, error)), bytes: 0, buf });
            return;
        };
        let len = u32::try_from(buf.len()).expect("I/O larger than 4 GiB");
        let linked_fsync = sync == Some(JournalSync::Fdatasync);
        let cqes = if linked_fsync { 2 } else { 1 };
        let slot = Slot { op, buf, is_write, file, cqes_pending: cqes, bytes: 0, result: Ok(()) };
        let index = self.slot_alloc(slot);
        let user_data = (index as u64) << 1;
        let ptr = self.slots[index].as_mut().map(|s| s.buf.as_mut_ptr()).expect("slot just set");
        let rw_flags = if sync == Some(JournalSync::Dsync) { libc::RWF_DSYNC } else { 0 };
        let fixed = self.slots[index].as_ref().and_then(|s| s.buf.fixed_index()).filter(|i| {
            self.registered.get(usize::from(*i)) == Some(&(ptr as usize, self.slot_capacity(index)))
        });
        let main = if is_write {
            let write = match fixed {
                Some(buf_index) => {
                    opcode::WriteFixed::new(fd, ptr, len, buf_index).offset(offset).rw_flags(rw_flags).build()
                }
                None => opcode::Write::new(fd, ptr, len).offset(offset).rw_flags(rw_flags).build(),
            };
            let sqe = write.user_data(user_data | STEP_MAIN);
            if linked_fsync { sqe.flags(squeue::Flags::IO_LINK) } else { sqe }
        } else {
            opcode::Read::new(fd, ptr, len).offset(offset).build().user_data(user_data | STEP_MAIN)
        };
        // SAFETY: the buffer behind `ptr` is owned by `self.slots[index]`, which is neither
        // freed nor reused until both CQEs naming `index` are reaped in `drain_cq` (U1); its
        // heap address is stable while the `AlignedBuf` lives (buf.rs B3). `fd` stays open: a
        // file is only unregistered when no operation on it is in flight.
        let pushed = unsafe { self.ring.submission().push(&main) };
        pushed.expect("SQ has room: bounded by IO_DEPTH_MAX (U2)");
        if linked_fsync {
            let fsync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(user_data | STEP_FSYNC);
            // SAFETY: an fsync references no memory; `fd` stays open as above.
            let pushed = unsafe { self.ring.submission().push(&fsync) };
            pushed.expect("SQ has room: bounded by IO_DEPTH_MAX (U2)");
        }
        self.sqes_in_flight += cqes as usize;
    }

    fn slot_capacity(&self, index: usize) -> usize {
        self.slots[index].as_ref().map_or(0, |s| s.buf.capacity())
    }

    fn arm_waker(&mut self, waker: &Waker) {
        if self.waker_armed {
            return;
        }
        let fd = types::Fd(waker.fd().as_raw_fd());
        let sqe = opcode::PollAdd::new(fd, libc::POLLIN as u32).build().user_data(WAKER_USER_DATA);
        // SAFETY: a poll references no memory. If the eventfd is closed while the poll is
        // armed, the kernel keeps its own reference to the file until the poll completes or
        // the ring is torn down, so no stale descriptor is used.
        let pushed = unsafe { self.ring.submission().push(&sqe) };
        if pushed.is_ok() {
            self.waker_armed = true;
        }
    }

    fn drain_cq(&mut self, out: &mut Vec<Completion>, waker: &Waker) {
        let mut done = Vec::new();
        for cqe in self.ring.completion() {
            done.push((cqe.user_data(), cqe.result()));
        }
        for (user_data, result) in done {
            if user_data == WAKER_USER_DATA {
                self.waker_armed = false;
                waker.drain();
                continue;
            }
            self.sqes_in_flight -= 1;
            let index = (user_data >> 1) as usize;
            let step = user_data & 1;
            let slot = self.slots[index].as_mut().expect("CQE for a live slot (U1)");
            slot.cqes_pending -= 1;
            if step == STEP_MAIN {
                let name = if slot.is_write { IoOp::Write } else { IoOp::Read };
                if result < 0 {
                    slot.result = Err((name, io::Error::from_raw_os_error(-result)));
                } else {
                    slot.bytes = result as usize;
                    if slot.is_write && slot.bytes != slot.buf.len() {
                        let msg = format!("short write: {} of {} bytes", slot.bytes, slot.buf.len());
                        slot.result = Err((IoOp::Write, io::Error::new(io::ErrorKind::WriteZero, msg)));
                    }
                }
            } else if result < 0 && slot.result.is_ok() {
                slot.result = Err((IoOp::Flush, io::Error::from_raw_os_error(-result)));
            }
            if slot.cqes_pending == 0 {
                let mut slot = self.slots[index].take().expect("checked above");
                if slot.is_write
                    && slot.result.is_ok()
                    && let Some(error) = crate::io::injected_write_error(slot.file)
                {
                    slot.result = Err((IoOp::Flush, error));
                }
                self.slots_free.push(index);
                out.push(Completion { op: slot.op, result: slot.result, bytes: slot.bytes, buf: slot.buf });
            }
        }
    }
}

impl Drop for UringDisk {
    /// Waits for every operation in flight before the buffers are freed (U1): the kernel may
    /// still be writing into them. If the ring fails, the buffers are leaked, never freed.
    fn drop(&mut self) {
        self.backlog.clear(); // No SQE points at these yet.
        while self.sqes_in_flight > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                tracing::error!(error = %e, "io_uring wait failed while closing; leaking its buffers");
                for slot in self.slots.drain(..).flatten() {
                    std::mem::forget(slot.buf);
                }
                return;
            }
            let mut reaped = 0;
            for cqe in self.ring.completion() {
                let user_data = cqe.user_data();
                if user_data == WAKER_USER_DATA {
                    continue;
                }
                reaped += 1;
                let index = (user_data >> 1) as usize;
                if let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) {
                    slot.cqes_pending -= 1;
                    if slot.cqes_pending == 0 {
                        self.slots[index] = None;
                    }
                }
            }
            self.sqes_in_flight -= reaped;
        }
    }
}

impl Disk for UringDisk {
    fn register_file(&mut self, seq: FileSeq, file: File) -> io::Result<()> {
        self.files.insert(seq, file);
        Ok(())
    }

    fn unregister_file(&mut self, seq: FileSeq) {
        self.files.remove(&seq);
    }

    fn submit(&mut self, op: OpId, disk_op: DiskOp) {
        self.backlog.push_back((op, disk_op));
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.slots_free.len() + self.backlog.len()
    }

    fn reap(
        &mut self,
        out: &mut Vec<Completion>,
        timeout: Option<Duration>,
        waker: &Waker,
    ) -> io::Result<()> {
        self.fill_sq(out);
        let submitted = match timeout {
            None => self.ring.submit(),
            Some(timeout) => {
                self.arm_waker(waker);
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match submitted {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        self.drain_cq(out, waker);
        self.fill_sq(out);
        Ok(())
    }

    fn register_buffers(&mut self, bufs: &mut [AlignedBuf]) -> io::Result<usize> {
        if !self.registered.is_empty() || bufs.is_empty() || bufs.len() > usize::from(u16::MAX) {
            return Ok(0);
        }
        let iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.capacity() })
            .collect();
        // SAFETY: each iovec spans one live `AlignedBuf` allocation (buf.rs B1, B3). The
        // caller keeps every registered buffer alive until this disk, and so the ring and its
        // registration, is dropped (Disk::register_buffers contract; the shard core never
        // drops a buffer with a fixed index, and the shard drops its disk before its core).
        let result = unsafe { self.ring.submitter().register_buffers(&iovecs) };
        result?;
        for (i, b) in bufs.iter_mut().enumerate() {
            let index = u16::try_from(i).expect("checked above");
            b.set_fixed_index(index);
            self.registered.push((b.as_ptr() as usize, b.capacity()));
        }
        Ok(bufs.len())
    }

    fn name(&self) -> &'static str {
        "io_uring"
    }
}
