//! `Waker`: lets request senders wake a shard sleeping in its disk's `reap`.
//!
//! An eventfd plus a `sleeping` flag: senders write the eventfd only when the shard said it is
//! about to sleep, so a busy shard costs senders one atomic load per send.
//!
//! Invariant W1: a shard sets `sleeping`, then re-checks its queue, then sleeps; a sender
//! enqueues, then reads `sleeping`. A SeqCst fence sits between the store and the load on both
//! sides (the queue's own operations are only acquire/release, so SeqCst on the flag alone does
//! not order them: a sender could read `sleeping` before its message is visible, the shard
//! miss the message, and sleep until its next deadline with a request queued). With the fences
//! one of them sees the other.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering, fence};

use rustix::event::{EventfdFlags, eventfd};

/// An eventfd-backed wake-up signal shared by a shard and its senders.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    /// Creates a non-blocking eventfd.
    pub fn new() -> std::io::Result<Waker> {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(Waker { fd, sleeping: AtomicBool::new(false) })
    }

    /// The eventfd, for the disk to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Called by the shard before its final queue check and sleep (W1).
    pub fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::SeqCst);
        // W1: the queue check that follows is not moved before the store.
        fence(Ordering::SeqCst);
    }

    /// Called by senders after enqueueing: wakes the shard if it may be asleep (W1).
    pub fn wake_if_sleeping(&self) {
        // W1: the enqueue before this call is visible before the flag is read.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes the shard unconditionally.
    #[expect(clippy::host_endian_bytes, reason = "the eventfd counter is native-endian")]
    pub fn wake(&self) {
        // EAGAIN means the counter is saturated: the shard will wake anyway.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Resets the counter after a wake-up.
    pub fn drain(&self) {
        let mut raw = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut raw);
    }
}
