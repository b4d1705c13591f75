//! `Outbox`: a connection's responses on their way to the socket, and the connection's
//! in-flight accounting; `write_loop`, the task that sends them.
//!
//! Owns: admitting requests against the connection's bounds, queueing encoded responses, and
//! sending everything queued in one vectored send (many acknowledgements, one syscall).
//! Does not own: reading and decoding (connection.rs), what a response says (dispatch.rs).
//!
//! Invariants:
//! - OB1: a request is admitted only while fewer than `in_flight_max` are admitted and not yet
//!   sent, and their reserved response bytes are under the budget; each reserves the largest
//!   response it can get (`reservation`), released once its response is sent. So a connection
//!   never holds more than `in_flight_max` requests, nor more than the budget plus one largest
//!   response of responses, however slowly its client reads.
//! - OB2: responses go out in the order they were queued; every queued response is sent, or
//!   the socket failed (`broken`) and nothing more is sent.
//! - OB3: a write that makes no progress for the idle timeout breaks the connection: a client
//!   that stops reading cannot hold its requests and buffers for ever; one that reads slowly
//!   but steadily is served.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::AsyncWrite;
use dlog_protocol::{
    ERROR_MESSAGE_BYTES_MAX, FRAME_HEADER_BYTES, Limits, RANGE_ENTRIES_MAX, RANGE_ENTRY_OVERHEAD_BYTES,
    Request, Response, encode_response, encode_response_chunks,
};

use crate::bookie::connection::ThreadContext;

/// Response payloads at least this large are sent from their own buffer (no copy into the send
/// buffer); smaller responses are encoded into it.
const ZERO_COPY_BYTES_MIN: usize = 4 << 10;

/// Chunks per vectored send: under the kernel's `IOV_MAX` (1024).
const IOVECS_PER_SEND: usize = 512;

/// Response bytes a connection may have reserved (OB1), unless one request alone needs more.
pub const RESPONSE_BUDGET_BYTES: usize = 64 << 20;

/// The reservation of a response without a payload: a refusal (status and message) or a
/// small result (the largest, LONG_POLL's, is under 64 bytes of fields).
pub const SMALL_RESPONSE_BYTES: usize = FRAME_HEADER_BYTES + 64 + ERROR_MESSAGE_BYTES_MAX;

/// The largest response `request` can get, in bytes (OB1): a refusal, or the op's result.
pub fn reservation(request: &Request, limits: &Limits) -> usize {
    let small = SMALL_RESPONSE_BYTES;
    let payload = match request {
        // A LONG_POLL may wait a minute: it reserves only its small answer while it waits, and
        // includes its entry only if the connection has room then (`Outbox::room_for_entry`).
        Request::Read { .. } => limits.entry_bytes_max as usize,
        Request::ReadRange { max_bytes, .. } => {
            let bytes = limits.range_bytes(*max_bytes).max(limits.entry_bytes_max) as usize;
            bytes + RANGE_ENTRIES_MAX * RANGE_ENTRY_OVERHEAD_BYTES
        }
        _ => 0,
    };
    small + payload
}

/// Wakes one waiting task; remembers a notification given while nobody waits.
#[derive(Default)]
pub struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Wakes the waiter, or the next one to wait.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves at the first notification since the last one taken.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// See the module doc.
pub struct Outbox {
    in_flight_max: usize,
    budget: usize,
    /// Small responses, encoded back to back.
    small: RefCell<BytesMut>,
    /// Whole frames ready to send, in order (`small` is split off into it before a payload).
    chunks: RefCell<Vec<Bytes>>,
    /// Responses queued, and the bytes they reserved.
    queued: Cell<(usize, usize)>,
    /// Requests admitted and not yet answered and sent.
    in_flight: Cell<usize>,
    /// Bytes those requests reserved.
    reserved: Cell<usize>,
    /// The socket failed: nothing more is admitted or sent.
    pub broken: Cell<bool>,
    /// The reader is done: the writer exits once everything is sent.
    pub reading_done: Cell<bool>,
    /// Wakes the writer.
    pub to_writer: Notify,
    /// Wakes the reader (room again, or the socket failed).
    pub to_reader: Notify,
    /// See `last_active`.
    last_active: Cell<Instant>,
}

impl Outbox {
    /// An empty outbox with the connection's bounds.
    pub fn new(in_flight_max: usize, budget: usize) -> Outbox {
        Outbox {
            in_flight_max,
            budget,
            small: RefCell::default(),
            chunks: RefCell::default(),
            queued: Cell::new((0, 0)),
            in_flight: Cell::new(0),
            reserved: Cell::new(0),
            broken: Cell::new(false),
            reading_done: Cell::new(false),
            to_writer: Notify::default(),
            to_reader: Notify::default(),
            last_active: Cell::new(crate::bookie::connection::clock()),
        }
    }

    /// Whether another request may be admitted now (OB1). The first request in flight is
    /// always admitted, whatever it reserves, so every request can be served.
    pub fn has_room(&self) -> bool {
        self.in_flight.get() == 0
            || (self.in_flight.get() < self.in_flight_max && self.reserved.get() < self.budget)
    }

    /// Counts a request in flight with its reservation; false once the socket failed.
    pub fn admit(&self, reserve: usize, ctx: &ThreadContext) -> bool {
        if self.broken.get() {
            return false;
        }
        self.in_flight.set(self.in_flight.get() + 1);
        self.reserved.set(self.reserved.get() + reserve);
        ctx.metrics.in_flight(1.0);
        true
    }

    /// Requests admitted and not yet sent.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Whether a long poll that woke up may include its entry: the connection's reserved
    /// bytes are under the budget. Else it answers the LAC alone (the client then reads the
    /// entry), so parked long polls never hold entry-sized reservations (OB1).
    pub fn room_for_entry(&self) -> bool {
        self.reserved.get() < self.budget
    }

    /// When the connection last had something to do: a read, or its last response sent
    /// (CN5 counts idleness from there).
    pub fn last_active(&self) -> Instant {
        self.last_active.get()
    }

    /// A read completed.
    pub fn touch(&self, now: Instant) {
        self.last_active.set(now);
    }

    /// Queues the response to an admitted request that reserved `reserved` bytes (OB2).
    pub fn push(&self, request_id: u64, response: &Response, reserved: usize) {
        if self.broken.get() {
            return;
        }
        let payload = match response {
            Response::Read { payload, .. } => payload.len(),
            Response::LongPoll { entry: Some((_, payload)), .. } => payload.len(),
            Response::ReadRange { entries } => entries.iter().map(|(_, p)| p.len()).sum(),
            _ => 0,
        };
        if payload >= ZERO_COPY_BYTES_MIN {
            let mut chunks = self.chunks.borrow_mut();
            let mut small = self.small.borrow_mut();
            if !small.is_empty() {
                chunks.push(small.split().freeze());
            }
            encode_response_chunks(response, request_id, &mut chunks);
        } else {
            encode_response(response, request_id, &mut self.small.borrow_mut());
        }
        // A response larger than its reservation (a long poll's entry) is charged the rest.
        let charged = reserved.max(response.encoded_len());
        self.reserved.set(self.reserved.get() + (charged - reserved));
        let (count, bytes) = self.queued.get();
        self.queued.set((count + 1, bytes + charged));
        self.to_writer.notify();
    }

    /// Everything queued, as one list of chunks, with its response count and reservation.
    fn take(&self) -> (Vec<Bytes>, usize, usize) {
        let mut chunks = std::mem::take(&mut *self.chunks.borrow_mut());
        let mut small = self.small.borrow_mut();
        if !small.is_empty() {
            chunks.push(small.split().freeze());
        }
        let (count, reserved) = self.queued.replace((0, 0));
        (chunks, count, reserved)
    }

    /// `count` responses that reserved `reserved` bytes were sent: their room is free again.
    fn sent(&self, count: usize, reserved: usize, ctx: &ThreadContext) {
        self.in_flight.set(self.in_flight.get().saturating_sub(count));
        if self.in_flight.get() == 0 {
            self.last_active.set(crate::bookie::connection::clock());
        }
        self.reserved.set(self.reserved.get().saturating_sub(reserved));
        ctx.metrics.in_flight(-(count as f64));
        ctx.metrics.sent(count);
        self.to_reader.notify();
    }

    /// The socket failed: forget everything in flight (OB2).
    fn break_off(&self, ctx: &ThreadContext) {
        self.broken.set(true);
        ctx.metrics.in_flight(-(self.in_flight.replace(0) as f64));
        self.reserved.set(0);
        self.to_reader.notify();
    }
}

/// Sends `chunks` in vectored writes of at most `IOVECS_PER_SEND` buffers. Each write must
/// make progress within the idle timeout (OB3): a slow reader that keeps reading is never cut
/// off, one that stopped is.
async fn send_all<W: AsyncWrite>(
    writer: &mut W,
    chunks: Vec<Bytes>,
    ctx: &ThreadContext,
) -> Result<(), String> {
    let mut rest = std::collections::VecDeque::from(chunks);
    while !rest.is_empty() {
        let batch: Vec<Bytes> = rest.drain(..rest.len().min(IOVECS_PER_SEND)).collect();
        let written = match compio::time::timeout(ctx.limits.idle_timeout, writer.write_vectored(batch)).await
        {
            Ok(BufResult(Ok(0), _)) => return Err("the socket took no bytes".to_owned()),
            Ok(BufResult(Ok(n), batch)) => (n, batch),
            Ok(BufResult(Err(error), _)) => return Err(error.to_string()),
            Err(_) => return Err("the client read nothing for the idle timeout".to_owned()),
        };
        // Put back what was not written, the partly written buffer cut to its rest.
        let (mut n, batch) = written;
        let mut unwritten = Vec::new();
        for mut chunk in batch {
            if n >= chunk.len() {
                n -= chunk.len();
            } else {
                chunk.advance(n);
                n = 0;
                unwritten.push(chunk);
            }
        }
        for chunk in unwritten.into_iter().rev() {
            rest.push_front(chunk);
        }
    }
    Ok(())
}

/// Sends whatever is queued, all at once, until the reader is done and nothing is left in
/// flight, or the socket fails (OB2, OB3).
pub async fn write_loop<W: AsyncWrite>(mut writer: W, out: Rc<Outbox>, ctx: Rc<ThreadContext>) {
    loop {
        let (chunks, count, reserved) = out.take();
        if chunks.is_empty() {
            if out.reading_done.get() && (out.in_flight() == 0 || out.broken.get()) {
                return;
            }
            out.to_writer.notified().await;
            continue;
        }
        if let Err(why) = send_all(&mut writer, chunks, &ctx).await {
            tracing::debug!(why, "connection write failed");
            out.break_off(&ctx);
            return;
        }
        out.sent(count, reserved, &ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_bound_what_a_connection_may_have_in_flight() {
        let limits = Limits::default();
        let range = Request::ReadRange { segment: 1, first: 0, last: u64::MAX, max_bytes: u32::MAX };
        let read = Request::Read { segment: 1, entry: 0, fence: None };
        let add = Request::DeleteSegment { segment: 1 };
        assert!(reservation(&range, &limits) >= limits.range_bytes_max as usize);
        assert!(reservation(&read, &limits) >= limits.entry_bytes_max as usize);
        assert!(reservation(&add, &limits) < 4096);
        // Admit READ_RANGEs until the budget says no: the total stays within one over it.
        let out = Outbox::new(1024, RESPONSE_BUDGET_BYTES);
        let mut admitted = 0;
        while out.has_room() {
            out.in_flight.set(out.in_flight.get() + 1);
            out.reserved.set(out.reserved.get() + reservation(&range, &limits));
            admitted += 1;
        }
        assert!((1..16).contains(&admitted), "{admitted} ranges of 8 MiB admitted");
        assert!(out.reserved.get() < RESPONSE_BUDGET_BYTES + reservation(&range, &limits));
        // The first request is always admitted, however large.
        let empty = Outbox::new(1024, 1);
        assert!(empty.has_room());
    }
}
