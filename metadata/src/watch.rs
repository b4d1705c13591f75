//! `Watch`: the receiving end of a prefix watch, shared by both backends.
//!
//! Owns: the channel a backend feeds events into and the position to resume from.
//!
//! Invariants:
//! - W1: events arrive in revision order, each once. `resume_from` is one past the last
//!   revision handed out whole (or the watch's `from` before any), so re-watching from it
//!   after any error misses nothing and repeats nothing, except: a consumer that stops in the
//!   middle of a revision holding several events (a transaction, a lease's end) gets that
//!   revision again whole. Never a skip. Backends send each revision's events together and
//!   mark its last one.
//! - W2: a watcher that falls more than `WATCH_LAG_MAX` events behind is cut off with an error
//!   rather than holding unbounded memory; one whose `Watch` was dropped is forgotten by the
//!   backend at its next send.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::error::MetaError;
use crate::{Event, Version};

/// Events a watcher may have queued and unread before it is cut off (W2).
pub const WATCH_LAG_MAX: usize = 1 << 20;

/// A stream of changes under a prefix, in revision order (W1).
#[derive(Debug)]
pub struct Watch {
    events: UnboundedReceiver<Result<(Event, bool), MetaError>>,
    queued: Arc<AtomicUsize>,
    resume: Version,
    failed: bool,
    guard: Option<tokio::task::AbortHandle>,
}

/// The backend's end of a watch.
#[derive(Debug)]
pub(crate) struct WatchSender {
    events: UnboundedSender<Result<(Event, bool), MetaError>>,
    queued: Arc<AtomicUsize>,
}

/// A new watch starting at `from`.
pub(crate) fn channel(from: Version) -> (WatchSender, Watch) {
    let (tx, rx) = unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        WatchSender { events: tx, queued: queued.clone() },
        Watch { events: rx, queued, resume: from, failed: false, guard: None },
    )
}

impl WatchSender {
    /// Queues `events` (in revision order, each revision whole), marking each revision's last
    /// event (W1). False: the watcher is gone or was cut off (W2); forget it.
    pub(crate) fn send_all<'a>(&self, events: impl IntoIterator<Item = &'a Event>) -> bool {
        let mut events = events.into_iter().peekable();
        while let Some(event) = events.next() {
            let last = events.peek().is_none_or(|next| next.version != event.version);
            if self.queued.fetch_add(1, Ordering::Relaxed) >= WATCH_LAG_MAX {
                self.fail(MetaError::Unavailable(format!(
                    "watch fell more than {WATCH_LAG_MAX} events behind and was cut off"
                )));
                return false;
            }
            if self.events.send(Ok((event.clone(), last))).is_err() {
                return false;
            }
        }
        true
    }

    /// Ends the watch with `error`.
    pub(crate) fn fail(&self, error: MetaError) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(Err(error));
    }

    /// The watcher dropped its `Watch`.
    pub(crate) fn is_closed(&self) -> bool {
        self.events.is_closed()
    }
}

impl Watch {
    /// Ties a backend task to the watch: it is aborted when the watch is dropped.
    #[cfg_attr(
        not(feature = "etcd"),
        expect(dead_code, reason = "only the etcd backend runs a task per watch")
    )]
    pub(crate) fn with_guard(mut self, guard: tokio::task::AbortHandle) -> Watch {
        self.guard = Some(guard);
        self
    }

    /// Sets where the watch starts once the backend resolved `from = 0` (live only) to a
    /// revision.
    pub(crate) fn set_start(&mut self, from: Version) {
        self.resume = from;
    }

    /// The next change. After an error the watch is over: watch again from `resume_from()`
    /// (after `Compacted`, list first and watch from the listed revision + 1).
    pub async fn next(&mut self) -> Result<Event, MetaError> {
        if self.failed {
            return Err(MetaError::Unavailable("watch ended; watch again from resume_from()".into()));
        }
        match self.events.recv().await {
            Some(Ok((event, last))) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                // Past the revision only once its last event is out (W1).
                self.resume = if last { Version(event.version.0 + 1) } else { event.version };
                Ok(event)
            }
            Some(Err(e)) => {
                self.failed = true;
                Err(e)
            }
            None => {
                self.failed = true;
                Err(MetaError::Unavailable("watch ended: the store was closed".into()))
            }
        }
    }

    /// The version to watch from to continue exactly after the last event handed out (W1).
    pub fn resume_from(&self) -> Version {
        self.resume
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.abort();
        }
    }
}
