//! `Mailbox<T>`: items from one side of a thread boundary to a task on the other: a
//! mutex-guarded queue plus the waker of the receiving task. Pushing wakes it. It serves the
//! commands to the client's compio I/O thread (taken all at once, `take`) and what a segment
//! reader delivers to its consumer (taken one at a time, `poll_next`).
//!
//! Invariant: MB1: once closed, pushes are refused (the command comes back) and `take` ends
//! with `None` after the commands queued before the close were taken.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

pub(crate) struct Mailbox<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    closed: bool,
}

impl<T> Mailbox<T> {
    pub(crate) fn new() -> Mailbox<T> {
        Mailbox { state: Mutex::new(State { queue: VecDeque::new(), waker: None, closed: false }) }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves a queue that is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `command` and wakes the I/O thread; gives it back if the mailbox is closed.
    pub(crate) fn push(&self, command: T) -> Result<(), T> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(command);
            }
            state.queue.push_back(command);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Refuses further pushes (MB1) and wakes the I/O thread.
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Closes the mailbox and drops what it still holds (the receiving thread is gone: each
    /// command's replies resolve as dropped).
    pub(crate) fn close_and_drain(&self) {
        self.close();
        let drained: Vec<T> = self.lock().queue.drain(..).collect();
        drop(drained);
    }

    /// The next item, and whether the queue is empty after it; `None` once closed and empty.
    pub(crate) fn poll_next(&self, cx: &mut std::task::Context<'_>) -> Poll<Option<(T, bool)>> {
        let mut state = self.lock();
        if let Some(item) = state.queue.pop_front() {
            return Poll::Ready(Some((item, state.queue.is_empty())));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Every queued command, once there is one; `None` once closed and empty.
    pub(crate) async fn take(&self) -> Option<Vec<T>> {
        poll_fn(|cx| {
            let mut state = self.lock();
            if !state.queue.is_empty() {
                return Poll::Ready(Some(state.queue.drain(..).collect()));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
