//! The shard core's replies: answering a request that failed before it was journaled, and the
//! waiters of journaled requests once their batch is durable (or failed). A waiter is attached
//! to the batch holding its request's last record, so replies follow durability in order (C1).

use super::{Output, ShardCore, Waiter, clone_error};
use crate::error::Error;
use crate::ids::EntryId;
use crate::shard::request::{Reply, Request};

impl<T> ShardCore<T> {
    pub(super) fn fail_request(&mut self, request: Request<T>, error: Error) {
        let (reply, answer) = match request {
            Request::Add { entries, reply } => {
                let errors = (0..entries.len()).map(|i| (i, clone_error(&error))).collect();
                (reply, Reply::Added(Err(errors)))
            }
            Request::Fence { reply, .. } => (reply, Reply::Fenced(Err(error))),
            Request::WriteLac { reply, .. } => (reply, Reply::LacWritten(Err(error))),
            Request::ReadLac { reply, .. } => (reply, Reply::Lac(Err(error))),
            Request::WaitLac { reply, .. } => (reply, Reply::LacWaited(Err(error))),
            Request::ReadRange { reply, .. } => (reply, Reply::Entries(Err(error))),
            Request::ReadEntry { reply, .. } => (reply, Reply::Entry(Err(error))),
            Request::Position { reply } => (reply, Reply::Position(self.durable)),
            Request::Checkpoint { reply, .. } => (reply, Reply::Checkpointed(Err(error))),
            Request::Flush { reply } => (reply, Reply::Flushed(Err(error))),
            Request::DeleteSegment { reply, .. } => (reply, Reply::Deleted(Err(error))),
        };
        self.out.push_back(Output::Reply(reply, answer));
    }

    /// Hands a waiter to the batch holding its request's last record, or replies now when
    /// that batch is already acknowledged or nothing was journaled (C1).
    pub(super) fn attach(&mut self, placed_in: Option<u64>, waiter: Waiter<T>) {
        if let Some(seq) = placed_in {
            if let Some(batch) = self.batch.as_mut().filter(|b| b.builder.seq() == seq) {
                batch.waiters.push(waiter);
                return;
            }
            if let Some(batch) = self.in_flight.iter_mut().rev().find(|b| b.seq == seq) {
                batch.waiters.push(waiter);
                return;
            }
        }
        self.answer(waiter, Ok(()));
    }

    pub(super) fn answer(&mut self, waiter: Waiter<T>, outcome: Result<(), &Error>) {
        let (reply, answer) = match waiter {
            Waiter::Add { reply, entry_count, mut errors } => match outcome {
                Ok(()) if errors.is_empty() => (reply, Reply::Added(Ok(()))),
                Ok(()) => (reply, Reply::Added(Err(errors))),
                Err(error) => {
                    // Entries already refused keep their own error; the rest get this one.
                    let mut refused = errors.iter().map(|(i, _)| *i).peekable();
                    let mut all = Vec::with_capacity(entry_count);
                    for i in 0..entry_count {
                        if refused.peek() == Some(&i) {
                            refused.next();
                        } else {
                            all.push((i, clone_error(error)));
                        }
                    }
                    errors.extend(all);
                    errors.sort_by_key(|(i, _)| *i);
                    (reply, Reply::Added(Err(errors)))
                }
            },
            Waiter::Fence { reply, segment } => {
                let result = outcome
                    .map_err(clone_error)
                    .map(|()| self.segments.get(&segment).and_then(|s| s.last_add_confirmed).map(EntryId));
                (reply, Reply::Fenced(result))
            }
            Waiter::Lac { reply } => (reply, Reply::LacWritten(outcome.map_err(clone_error))),
            Waiter::Deleted { reply, segment } => {
                if outcome.is_ok() {
                    self.deletion_durable(segment);
                }
                (reply, Reply::Deleted(outcome.map_err(clone_error)))
            }
            Waiter::Checkpoint { reply, mark } => match (outcome, reply) {
                (Ok(()), reply) => {
                    let reclaim = self.checkpoint_complete(mark);
                    let manifest = if reply.is_none() { self.manifest(Some(mark)) } else { None };
                    self.out.push_back(Output::Checkpoint { mark, reclaim, reply, manifest });
                    return;
                }
                (Err(error), Some(reply)) => (reply, Reply::Checkpointed(Err(clone_error(error)))),
                (Err(error), None) => {
                    self.checkpoint_abandoned(error);
                    return;
                }
            },
        };
        self.out.push_back(Output::Reply(reply, answer));
    }
}
