//! `ReaderQueue`: what a segment reader hosted on the I/O thread delivered and its consumer
//! has not taken yet (entries in order, then the end or the failure), with the consumer's
//! waker. The reader core bounds it (R4: it delivers only within its read-ahead window, which
//! the consumer frees by taking entries).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use bytes::Bytes;

use crate::segment_reader::ReaderError;

/// One thing a reader delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadItem {
    /// The next entry: its id and the caller's payload.
    Entry(u64, Bytes),
    /// A closed segment was read to its last entry.
    End,
    /// Reading stopped: an entry no member could supply, or the client closed.
    Failed(ReaderError),
}

#[derive(Default)]
pub(crate) struct ReaderQueue {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    items: VecDeque<ReadItem>,
    waker: Option<Waker>,
    closed: bool,
}

impl ReaderQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, item: ReadItem) {
        let waker = {
            let mut state = self.lock();
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// No more items will come (the client closed): the consumer gets `None` after the rest.
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

    /// The next item, and whether the queue is empty after it.
    pub(crate) fn poll_next(&self, cx: &mut std::task::Context<'_>) -> Poll<Option<(ReadItem, bool)>> {
        let mut state = self.lock();
        if let Some(item) = state.items.pop_front() {
            return Poll::Ready(Some((item, state.items.is_empty())));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
