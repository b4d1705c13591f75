//! `Waiters`: tasks waiting for something on one compio thread, in arrival order, each known
//! by a ticket so that a waiter that gives up (timeout, dropped future) leaves exactly its own
//! place.
//!
//! Owns: the FIFO of waiting tasks and their wakers. Used by a `Connection` (callers waiting for
//! room under `in_flight_max`) and a `BookieClient` (callers waiting for a connect).
//! Does not own: what is waited for, nor when it is available (the caller decides, then wakes).
//!
//! Invariants:
//! - W1: a ticket is in the queue at most once; `leave` removes it wherever it is.
//! - W2: tickets are handed out in increasing order, so the queue is in arrival order.

use std::collections::VecDeque;
use std::task::Waker;

/// Tasks waiting, first come first served.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    next_ticket: u64,
    queue: VecDeque<(u64, Waker)>,
}

impl Waiters {
    /// Whether nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether `ticket` is first in line.
    pub(crate) fn is_first(&self, ticket: u64) -> bool {
        self.queue.front().is_some_and(|(first, _)| *first == ticket)
    }

    /// Queues a new waiter at the back; its ticket.
    pub(crate) fn join(&mut self, waker: &Waker) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push_back((ticket, waker.clone()));
        ticket
    }

    /// Replaces the waker of `ticket` (a waiter polled again), if it still waits.
    pub(crate) fn update(&mut self, ticket: u64, waker: &Waker) {
        if let Some((_, old)) = self.queue.iter_mut().find(|(t, _)| *t == ticket)
            && !old.will_wake(waker)
        {
            *old = waker.clone();
        }
    }

    /// Removes `ticket` from the line; whether it was first (so the caller may have to wake
    /// the next one in its place).
    pub(crate) fn leave(&mut self, ticket: u64) -> bool {
        let Some(at) = self.queue.iter().position(|(t, _)| *t == ticket) else { return false };
        self.queue.remove(at);
        at == 0
    }

    /// Wakes the first waiter, leaving it in line (it takes its turn when polled).
    pub(crate) fn wake_first(&self) {
        if let Some((_, waker)) = self.queue.front() {
            waker.wake_by_ref();
        }
    }

    /// Wakes every waiter, leaving them in line.
    pub(crate) fn wake_all(&self) {
        for (_, waker) in &self.queue {
            waker.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_come_first_served_and_leaving_anywhere() {
        let mut waiters = Waiters::default();
        let waker = Waker::noop();
        let a = waiters.join(waker);
        let b = waiters.join(waker);
        let c = waiters.join(waker);
        assert!(waiters.is_first(a) && !waiters.is_first(b));
        assert!(!waiters.leave(b), "b was not first");
        assert!(waiters.leave(a), "a was first");
        assert!(waiters.is_first(c));
        assert!(!waiters.leave(a), "a already left");
        assert!(waiters.leave(c));
        assert!(waiters.is_empty());
    }
}
