//! Dispatch: one decoded request to the engine, and the engine's answer to a response.
//!
//! Owns: what each wire operation does on the engine (docs/protocol.md#operations), the map
//! from engine errors to wire statuses (docs/protocol.md#status-codes), and building ADD
//! batches.
//! Does not own: sockets, buffering, ordering of replies (connection.rs), limits on frames
//! (the codec's `Limits`).
//!
//! Invariants:
//! - DP1: every request gets exactly one response; an engine error is a refusal carrying the
//!   error's status and text, never a dropped request.
//! - DP2: damage is never reported as absence: `Corrupt` stays `Corrupt` (recovery relies on
//!   telling the two apart).
//! - DP3: a fenced read fences first and reads after the fence is durable, so a writer that was
//!   fenced can never have an entry acknowledged by this bookie after the read answered.
//! - DP4: `start` hands the request to the engine before it returns (only a second step, the
//!   read after a fence or after a long poll's wait, comes later): the connection calls it in
//!   decode order, so each shard's queue sees a connection's requests in the order they came.
//! - DP5: a long poll ends when the server drains, answered as a timeout that reports the LAC
//!   the client sent (true, if stale), so a shutdown never waits out a tailing reader's poll.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_engine::{AddEntry, AddFlags, Bookie, EntryId, Error, SegmentId};
use dlog_protocol::{Op, Request, Response, Status};

/// The longest a LONG_POLL waits, whatever the client asks: a connection's slot is not held
/// longer than this by one request.
pub const LONG_POLL_MAX: Duration = Duration::from_secs(60);

/// The wire status an engine error is answered with.
pub fn status_of(error: &Error) -> Status {
    match error {
        Error::Fenced(_) => Status::Fenced,
        Error::Deleted(_) | Error::NoSuchSegment(_) => Status::NoSuchSegment,
        Error::WrongMasterKey(_) => Status::WrongMasterKey,
        Error::NoSpace(_) => Status::ReadOnly,
        Error::NoSuchEntry(..) => Status::NoSuchEntry,
        Error::Corrupt { .. } => Status::Corrupt,
        Error::InvalidRequest(_) => Status::BadRequest,
        Error::Poisoned(_) | Error::Io { .. } | Error::ShardStopped(_) => Status::Internal,
        // The engine's error enum is non-exhaustive: a new error is an internal failure until
        // this table learns it.
        _ => Status::Internal,
    }
}

/// The refusal of a request with op `op` for an engine error.
pub fn refusal(op: Op, error: &Error) -> Response {
    Response::refused(op.as_u8(), status_of(error), error.to_string())
}

/// An ADD request as the engine takes it.
pub fn add_entry(
    segment: u64,
    entry: u64,
    last_add_confirmed: Option<u64>,
    master_key: Bytes,
    payload: Bytes,
    recovery: bool,
) -> AddEntry {
    AddEntry {
        segment: SegmentId(segment),
        entry: EntryId(entry),
        last_add_confirmed: last_add_confirmed.map(EntryId),
        master_key,
        payload,
        flags: if recovery { AddFlags::RECOVERY } else { AddFlags::NONE },
    }
}

/// The answers to one batch of ADDs (`entries[i]` is answered with `i`'s result): `Ok` for
/// each durable entry, the refusal for each refused one.
pub fn add_responses(entries: &[(u64, u64)], result: Result<(), Vec<(usize, Error)>>) -> Vec<Response> {
    let mut errors = match result {
        Ok(()) => Vec::new(),
        Err(errors) => errors,
    };
    // An error the batch cannot place refuses the whole batch: an entry is answered `Ok` only
    // where the engine said so (DP1).
    if let Some(unplaced) = errors.iter().position(|(i, _)| *i >= entries.len()) {
        let (_, error) = errors.swap_remove(unplaced);
        return entries.iter().map(|_| refusal(Op::Add, &error)).collect();
    }
    // The engine answers refusals in index order; sort anyway, so a change there cannot
    // misattribute one.
    errors.sort_by_key(|(i, _)| *i);
    let mut errors = errors.into_iter().peekable();
    entries
        .iter()
        .enumerate()
        .map(|(i, &(segment, entry))| {
            while errors.peek().is_some_and(|(at, _)| *at < i) {
                errors.next();
            }
            match errors.peek() {
                Some((at, error)) if *at == i => refusal(Op::Add, error),
                _ => Response::Add { segment, entry },
            }
        })
        .collect()
}

/// A request's answer on its way: the engine already has the request (DP4).
pub type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Response>>>;

/// Starts every request but ADD (batched by the connection) and AUTH (the connection's): the
/// first engine call is made now, before this returns (DP4), and the answer awaited later.
/// `limits` caps a READ_RANGE's `max_bytes` (`Limits::range_bytes`).
/// `room_for_entry` says, when a long poll wakes, whether its answer may carry the entry.
/// `drain` ends a long poll early when the server drains (DP5).
pub fn start(
    bookie: &Arc<Bookie>,
    request: Request,
    limits: &dlog_protocol::Limits,
    room_for_entry: impl Fn() -> bool + 'static,
    drain: compio::runtime::CancelToken,
) -> Answer {
    let op = request.op();
    let refused = move |error: Error| refusal(op, &error);
    match request {
        Request::Read { segment, entry, fence: Some(master_key) } => {
            let fenced = bookie.fence(SegmentId(segment), master_key); // DP3
            let bookie = bookie.clone();
            Box::pin(async move {
                if let Err(error) = fenced.await {
                    return refused(error);
                }
                match bookie.read_entry(SegmentId(segment), EntryId(entry)).await {
                    Ok(payload) => Response::Read { segment, entry, payload },
                    Err(error) => refused(error),
                }
            })
        }
        Request::Read { segment, entry, fence: None } => {
            let read = bookie.read_entry(SegmentId(segment), EntryId(entry));
            Box::pin(async move {
                read.await.map(|payload| Response::Read { segment, entry, payload }).unwrap_or_else(refused)
            })
        }
        Request::ReadLastAddConfirmed { segment, fence } => {
            let lac = match fence {
                Some(master_key) => bookie.fence(SegmentId(segment), master_key),
                None => bookie.read_last_add_confirmed(SegmentId(segment)),
            };
            Box::pin(async move {
                lac.await
                    .map(|lac| Response::ReadLastAddConfirmed { last_add_confirmed: lac.map(|e| e.0) })
                    .unwrap_or_else(refused)
            })
        }
        Request::WriteLastAddConfirmed { segment, last_add_confirmed, master_key } => {
            let written =
                bookie.write_last_add_confirmed(SegmentId(segment), master_key, EntryId(last_add_confirmed));
            Box::pin(async move {
                written.await.map(|()| Response::WriteLastAddConfirmed).unwrap_or_else(refused)
            })
        }
        Request::LongPoll { segment, known, timeout_ms } => {
            let timeout = Duration::from_millis(u64::from(timeout_ms)).min(LONG_POLL_MAX);
            let waited = bookie.wait_for_last_add_confirmed(SegmentId(segment), known.map(EntryId), timeout);
            let bookie = bookie.clone();
            Box::pin(async move {
                let drained = std::pin::pin!(drain.wait());
                match futures_util::future::select(waited, drained).await {
                    futures_util::future::Either::Left((Ok(lac), _)) => {
                        long_poll_answer(&bookie, segment, known, lac, room_for_entry()).await
                    }
                    futures_util::future::Either::Left((Err(error), _)) => refused(error),
                    // DP5: the server drains: answered as a timeout with what the client knew
                    // (true: the LAC is at least that), so the drain need not wait for it.
                    futures_util::future::Either::Right(_) => {
                        Response::LongPoll { last_add_confirmed: known, entry: None }
                    }
                }
            })
        }
        Request::ReadRange { segment, first, last, max_bytes } => {
            let max_bytes = limits.range_bytes(max_bytes) as usize;
            let read = bookie.read_range(SegmentId(segment), EntryId(first), EntryId(last), max_bytes);
            Box::pin(async move {
                read.await
                    .map(|entries| Response::ReadRange {
                        entries: entries.into_iter().map(|(e, payload)| (e.0, payload)).collect(),
                    })
                    .unwrap_or_else(refused)
            })
        }
        Request::DeleteSegment { segment } => {
            let deleted = bookie.delete_segment(SegmentId(segment));
            Box::pin(async move { deleted.await.map(|()| Response::DeleteSegment).unwrap_or_else(refused) })
        }
        Request::Add { .. } | Request::Auth { .. } => {
            let refusal =
                Response::refused(op.as_u8(), Status::Internal, "served by the connection, not dispatch");
            Box::pin(std::future::ready(refusal))
        }
    }
}

/// After a long poll's wait: the LAC, and the entry after `known` if the LAC covers it and
/// `with_entry`. A failed read of that entry still answers the LAC (the reader asks for the
/// entry again).
async fn long_poll_answer(
    bookie: &Bookie,
    segment: u64,
    known: Option<u64>,
    lac: Option<EntryId>,
    with_entry: bool,
) -> Response {
    let next = match known {
        Some(known) => known.checked_add(1),
        None => Some(0),
    };
    let entry = match (lac, next) {
        (Some(lac), Some(next)) if with_entry && lac.0 >= next => {
            match bookie.read_entry(SegmentId(segment), EntryId(next)).await {
                Ok(payload) => Some((next, payload)),
                Err(error) => {
                    tracing::debug!(segment, entry = next, %error, "long poll: entry after the LAC not read");
                    None
                }
            }
        }
        _ => None,
    };
    Response::LongPoll { last_add_confirmed: lac.map(|e| e.0), entry }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_responses_attribute_each_refusal_to_its_entry() {
        let entries = [(1, 0), (1, 1), (2, 0), (2, 1)];
        let errors = vec![(2, Error::Fenced(SegmentId(2))), (1, Error::NoSpace(dlog_engine::ShardId(0)))];
        let responses = add_responses(&entries, Err(errors));
        assert_eq!(responses[0], Response::Add { segment: 1, entry: 0 });
        assert_eq!(responses[1].status(), Status::ReadOnly);
        assert_eq!(responses[2].status(), Status::Fenced);
        assert_eq!(responses[3], Response::Add { segment: 2, entry: 1 });
        assert!(add_responses(&entries, Ok(())).iter().all(|r| r.status() == Status::Ok));
    }

    #[test]
    fn corruption_is_never_answered_as_absence() {
        let corrupt = Error::Corrupt { segment: SegmentId(1), entry: EntryId(2), detail: "crc".into() };
        assert_eq!(status_of(&corrupt), Status::Corrupt);
        assert_eq!(status_of(&Error::NoSuchEntry(SegmentId(1), EntryId(2))), Status::NoSuchEntry);
        assert_eq!(status_of(&Error::Deleted(SegmentId(1))), Status::NoSuchSegment);
    }
}
