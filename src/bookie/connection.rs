//! `serve_connection`: one client connection on a network thread.
//!
//! Owns: reading and decoding a connection's frames, batching its ADDs into one engine hand-off
//! per read, running its other requests as tasks, and sending responses batched (every
//! response ready when the socket is free goes out in one send).
//! Does not own: what a request does (dispatch.rs), accepting and draining (server.rs).
//!
//! Invariants:
//! - CN1: at most `in_flight_max` requests of a connection are decoded and not yet answered
//!   and sent; past it the connection stops reading (backpressure), so a client that sends
//!   without reading cannot grow the server's memory beyond the bound (nor beyond
//!   `OUT_BYTES_MAX` of responses waiting for the socket, checked before each read).
//! - CN2: requests reach each shard's queue in the order they were decoded: a batch of ADDs is
//!   handed to the engine before any later request of the connection is dispatched.
//! - CN3: a frame that breaks the framing (`DecodeError::Frame`) is answered when its request
//!   id is known, then nothing more is read; responses already in flight are still sent, then
//!   the connection closes. A malformed body is answered (`BadRequest`/`TooLarge`) and decoding
//!   goes on. Nothing a peer sends panics the thread.
//! - CN4: a connection closes only after every request it decoded was answered and sent, or
//!   the socket failed, or the server's drain deadline passed (server.rs drops the runtime).
//! - CN5: a connection with nothing in flight for `idle_timeout` is closed.
//! - CN6: an ADD payload handed to the engine is a slice of the receive buffer (no copy) only
//!   when the ADD payloads of its batch are at least half the bytes decoded with them; else it
//!   is copied out. The write cache keeps payloads until their run is flushed, and a slice
//!   keeps its whole allocation alive: this bounds that allocation to about twice the payload
//!   bytes it holds, so a client mixing tiny ADDs with other traffic cannot make the cache pin
//!   many times its charged size. (The engine copies master keys it keeps, for the same
//!   reason.)

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use compio::runtime::CancelToken;
use dlog_engine::{AddEntry, Bookie};
use dlog_protocol::{DecodeError, Op, Request, Response, Status, decode_request, encode_response};
use futures_util::future::{Either, select};

use crate::bookie::auth::{AuthStep, Authenticator};
use crate::bookie::config::ServerLimits;
use crate::bookie::dispatch;
use crate::bookie::metrics::{CloseReason, ServerMetrics};

/// Free room a read asks for at first: an idle connection costs little. A frame larger than
/// this is read into room the decoder reserves from its header (at most `frame_bytes_max`).
const READ_CHUNK: usize = 16 << 10;

/// Free room a read asks for at most: a read that fills its room doubles the next one's, up
/// to this, so a busy connection hands the engine large batches (one queue hand-off per read);
/// a read of under an eighth halves it again, so a connection that calms down shrinks back.
const READ_CHUNK_MAX: usize = 512 << 10;

/// Responses waiting for the socket beyond which the connection stops reading (CN1).
const OUT_BYTES_MAX: usize = 32 << 20;

/// Response payloads at least this large are sent from their own buffer (no copy into the send
/// buffer); smaller responses are encoded into it.
const ZERO_COPY_BYTES_MIN: usize = 4 << 10;

/// Chunks per vectored send: under the kernel's `IOV_MAX` (1024).
const IOVECS_PER_SEND: usize = 512;

/// What every connection of a network thread shares.
pub struct ThreadContext {
    /// The engine.
    pub bookie: Arc<Bookie>,
    /// Frame and connection bounds.
    pub limits: ServerLimits,
    /// The codec's limits, derived from `limits`.
    pub protocol: dlog_protocol::Limits,
    /// The AUTH hook.
    pub auth: Arc<dyn Authenticator>,
    /// Cancelled when the server drains: connections stop reading.
    pub drain: CancelToken,
    /// This thread's metric handles.
    pub metrics: ServerMetrics,
}

/// Wakes one waiting task; remembers a notification given while nobody waits.
#[derive(Default)]
struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn notified(&self) -> impl Future<Output = ()> + '_ {
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

/// Responses on their way to the socket, and the connection's in-flight accounting (CN1).
struct Outbox {
    /// Small responses, encoded back to back.
    small: RefCell<BytesMut>,
    /// Whole frames ready to send, in order (`small` is split off into it before a payload).
    chunks: RefCell<Vec<Bytes>>,
    /// Bytes in `small` and `chunks`.
    queued_bytes: Cell<usize>,
    /// Responses in `small` and `chunks`.
    queued: Cell<usize>,
    /// Requests decoded and not yet answered and sent.
    in_flight: Cell<usize>,
    /// The socket failed: nothing more is sent.
    broken: Cell<bool>,
    /// The reader is done: the writer exits once everything is sent.
    reading_done: Cell<bool>,
    /// When the connection last read bytes or had something in flight (CN5).
    last_active: Cell<Instant>,
    /// Wakes the writer.
    to_writer: Notify,
    /// Wakes the reader (room again, or the writer failed).
    to_reader: Notify,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            small: RefCell::default(),
            chunks: RefCell::default(),
            queued_bytes: Cell::new(0),
            queued: Cell::new(0),
            in_flight: Cell::new(0),
            broken: Cell::new(false),
            reading_done: Cell::new(false),
            last_active: Cell::new(clock()),
            to_writer: Notify::default(),
            to_reader: Notify::default(),
        }
    }

    fn push(&self, request_id: u64, response: &Response) {
        let payload = match response {
            Response::Read { payload, .. } => payload.len(),
            Response::LongPoll { entry: Some((_, payload)), .. } => payload.len(),
            Response::ReadRange { entries } => entries.iter().map(|(_, p)| p.len()).sum(),
            _ => 0,
        };
        let len = response.encoded_len();
        if payload >= ZERO_COPY_BYTES_MIN {
            let mut chunks = self.chunks.borrow_mut();
            let mut small = self.small.borrow_mut();
            if !small.is_empty() {
                chunks.push(small.split().freeze());
            }
            dlog_protocol::encode_response_chunks(response, request_id, &mut chunks);
        } else {
            encode_response(response, request_id, &mut self.small.borrow_mut());
        }
        self.queued_bytes.set(self.queued_bytes.get() + len);
        self.queued.set(self.queued.get() + 1);
        self.to_writer.notify();
    }

    /// Everything queued, as one list of chunks, with its response and byte counts.
    fn take(&self) -> (Vec<Bytes>, usize, usize) {
        let mut chunks = std::mem::take(&mut *self.chunks.borrow_mut());
        let mut small = self.small.borrow_mut();
        if !small.is_empty() {
            chunks.push(small.split().freeze());
        }
        (chunks, self.queued.replace(0), self.queued_bytes.replace(0))
    }

    fn has_room(&self, in_flight_max: usize) -> bool {
        self.in_flight.get() < in_flight_max && self.queued_bytes.get() < OUT_BYTES_MAX
    }
}

/// Serves one connection until the client closes it, it breaks, it idles out, or the server
/// drains (CN4). Returns why it closed.
pub async fn serve_connection(stream: TcpStream, ctx: Rc<ThreadContext>) -> CloseReason {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let (reader, writer) = stream.into_split();
    let out = Rc::new(Outbox::new());
    let writing = compio::runtime::spawn(write_loop(writer, out.clone(), ctx.clone()));
    let reason = read_loop(reader, &out, &ctx).await;
    // CN4: wait for every response still in flight, then let the writer finish.
    while out.in_flight.get() > 0 && !out.broken.get() {
        out.to_reader.notified().await;
    }
    out.reading_done.set(true);
    out.to_writer.notify();
    let _ = writing.await;
    if out.broken.get() && reason != CloseReason::BadFrame { CloseReason::Io } else { reason }
}

async fn read_loop(mut reader: TcpStream, out: &Rc<Outbox>, ctx: &Rc<ThreadContext>) -> CloseReason {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut chunk = READ_CHUNK;
    let mut authenticated = !ctx.auth.required();
    let in_flight_max = ctx.limits.in_flight_max as usize;
    loop {
        // CN1: no reading while the connection is at its bound.
        while !out.has_room(in_flight_max) && !out.broken.get() {
            let drained = pin!(ctx.drain.clone().wait());
            if let Either::Right(_) = select(pin!(out.to_reader.notified()), drained).await {
                return CloseReason::Drain;
            }
        }
        if out.broken.get() {
            return CloseReason::Io;
        }
        if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        let room = buf.capacity() - buf.len();
        let read = match read_some(&mut reader, buf, out, ctx).await {
            Ok(read) => read,
            Err(reason) => return reason,
        };
        buf = match read {
            BufResult(Ok(0), _) => return CloseReason::Eof,
            BufResult(Ok(n), buf) => {
                chunk = if n == room {
                    (chunk * 2).min(READ_CHUNK_MAX)
                } else if n < chunk / 8 {
                    (chunk / 2).max(READ_CHUNK)
                } else {
                    chunk
                };
                buf
            }
            BufResult(Err(error), _) => {
                tracing::debug!(%error, "connection read failed");
                return CloseReason::Io;
            }
        };
        if let Err(reason) = decode_all(&mut buf, out, ctx, &mut authenticated) {
            return reason;
        }
    }
}

/// One read, raced with the drain and the idle timeout (CN5). The read is cancelled only when
/// it loses, and then its buffer goes with it, which is fine: the connection is closing and
/// nothing in the buffer was acknowledged.
async fn read_some(
    reader: &mut TcpStream,
    buf: BytesMut,
    out: &Outbox,
    ctx: &Rc<ThreadContext>,
) -> Result<BufResult<usize, BytesMut>, CloseReason> {
    let read = pin!(reader.append(buf));
    let drained = pin!(ctx.drain.clone().wait());
    let idle = pin!(async {
        // Idle means nothing in flight and no byte read for `idle_timeout`: requests in flight
        // (a long poll) keep a connection open, however long they take.
        loop {
            let since = out.last_active.get();
            let left = ctx.limits.idle_timeout.saturating_sub(clock().saturating_duration_since(since));
            if left.is_zero() && out.in_flight.get() == 0 {
                return;
            }
            compio::time::sleep(left.max(Duration::from_millis(1))).await;
            if out.in_flight.get() > 0 {
                out.last_active.set(clock());
            }
        }
    });
    let stop = async {
        match select(drained, idle).await {
            Either::Left(_) => CloseReason::Drain,
            Either::Right(_) => CloseReason::Idle,
        }
    };
    match select(read, pin!(stop)).await {
        Either::Left((read, _)) => {
            out.last_active.set(clock());
            Ok(read)
        }
        Either::Right((reason, _)) => Err(reason),
    }
}

/// Decodes and dispatches every whole frame in `buf` (CN2, CN3).
fn decode_all(
    buf: &mut BytesMut,
    out: &Rc<Outbox>,
    ctx: &Rc<ThreadContext>,
    authenticated: &mut bool,
) -> Result<(), CloseReason> {
    let mut adds: Vec<(u64, AddEntry)> = Vec::new();
    // Bytes of frames decoded since the last batch was submitted (CN6).
    let mut mark = buf.len();
    let result = loop {
        let (request_id, request) = match decode_request(buf, &ctx.protocol) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => break Ok(()),
            Err(error) => {
                let header_op = buf.get(5).copied().unwrap_or(0);
                if let Some(request_id) = error.request_id() {
                    let op = match &error {
                        DecodeError::Malformed { op, .. } => *op,
                        DecodeError::Frame { .. } => header_op,
                    };
                    answer_now(
                        out,
                        ctx,
                        request_id,
                        Response::refused(op, error.status(), error.to_string()),
                    );
                }
                if error.is_fatal() {
                    tracing::debug!(%error, "closing a connection whose framing broke");
                    break Err(CloseReason::BadFrame);
                }
                continue;
            }
        };
        if !*authenticated && !matches!(request, Request::Auth { .. }) {
            let refusal = Response::refused(request.op().as_u8(), Status::Unauthorized, "authenticate first");
            answer_now(out, ctx, request_id, refusal);
            continue;
        }
        match request {
            Request::Add { segment, entry, last_add_confirmed, master_key, payload, recovery } => {
                let add =
                    dispatch::add_entry(segment, entry, last_add_confirmed, master_key, payload, recovery);
                adds.push((request_id, add));
            }
            Request::Auth { mechanism, token } => {
                let response = match ctx.auth.step(mechanism, &token) {
                    Ok(AuthStep::Done { identity }) => {
                        tracing::debug!(identity, "connection authenticated");
                        *authenticated = true;
                        Response::Auth { token: Bytes::new() }
                    }
                    Ok(AuthStep::Continue(token)) => Response::Auth { token },
                    Err(why) => Response::refused(Op::Auth.as_u8(), Status::Unauthorized, why),
                };
                answer_now(out, ctx, request_id, response);
            }
            other => {
                let decoded = mark - buf.len();
                mark = buf.len();
                submit_adds(std::mem::take(&mut adds), decoded, out, ctx); // CN2
                spawn_request(request_id, other, out, ctx);
            }
        }
    };
    submit_adds(adds, mark - buf.len(), out, ctx);
    result
}

fn started(out: &Outbox, ctx: &ThreadContext, requests: usize) {
    out.in_flight.set(out.in_flight.get() + requests);
    ctx.metrics.in_flight(requests as f64);
}

fn answer_now(out: &Outbox, ctx: &ThreadContext, request_id: u64, response: Response) {
    started(out, ctx, 1);
    ctx.metrics.answered(response.op(), response.status(), Duration::ZERO);
    out.push(request_id, &response);
}

/// Hands a batch of ADDs to the engine in one call and answers each when the batch is durable.
/// `decoded`: bytes of the frames decoded since the previous batch, this one's included.
fn submit_adds(mut adds: Vec<(u64, AddEntry)>, decoded: usize, out: &Rc<Outbox>, ctx: &Rc<ThreadContext>) {
    if adds.is_empty() {
        return;
    }
    // CN6: payloads are slices of the receive buffer, which the write cache then keeps alive
    // whole. Where they are under half of what was decoded with them, copy them out instead.
    let payload_bytes: usize = adds.iter().map(|(_, add)| add.payload.len()).sum();
    if payload_bytes.saturating_mul(2) < decoded {
        for (_, add) in &mut adds {
            add.payload = Bytes::copy_from_slice(&add.payload);
        }
    }
    started(out, ctx, adds.len());
    let at = clock();
    let ids: Vec<(u64, (u64, u64))> =
        adds.iter().map(|(id, add)| (*id, (add.segment.0, add.entry.0))).collect();
    let pending = ctx.bookie.add_entries(adds.into_iter().map(|(_, add)| add).collect());
    let (out, ctx) = (out.clone(), ctx.clone());
    compio::runtime::spawn(async move {
        let result = pending.await;
        let entries: Vec<(u64, u64)> = ids.iter().map(|(_, e)| *e).collect();
        let took = clock().saturating_duration_since(at);
        for ((request_id, _), response) in ids.iter().zip(dispatch::add_responses(&entries, result)) {
            ctx.metrics.answered(Op::Add.as_u8(), response.status(), took);
            out.push(*request_id, &response);
        }
    })
    .detach();
}

fn spawn_request(request_id: u64, request: Request, out: &Rc<Outbox>, ctx: &Rc<ThreadContext>) {
    started(out, ctx, 1);
    let (out, ctx) = (out.clone(), ctx.clone());
    compio::runtime::spawn(async move {
        let at = clock();
        let response = dispatch::serve(&ctx.bookie, request, |asked| ctx.protocol.range_bytes(asked)).await;
        ctx.metrics.answered(response.op(), response.status(), clock().saturating_duration_since(at));
        out.push(request_id, &response);
    })
    .detach();
}

/// Sends whatever is queued, all at once, until the reader is done and nothing is left.
async fn write_loop(mut writer: TcpStream, out: Rc<Outbox>, ctx: Rc<ThreadContext>) {
    loop {
        let (mut chunks, responses, _) = out.take();
        if chunks.is_empty() {
            if out.reading_done.get() && out.in_flight.get() == 0 {
                return;
            }
            if out.reading_done.get() && out.broken.get() {
                return;
            }
            out.to_writer.notified().await;
            continue;
        }
        while !chunks.is_empty() {
            let rest = chunks.split_off(chunks.len().min(IOVECS_PER_SEND));
            let BufResult(result, _) = writer.write_vectored_all(chunks).await;
            chunks = rest;
            if let Err(error) = result {
                tracing::debug!(%error, "connection write failed");
                out.broken.set(true);
                ctx.metrics.in_flight(-(out.in_flight.get() as f64));
                out.in_flight.set(0);
                out.to_reader.notify();
                return;
            }
        }
        ctx.metrics.sent(responses);
        ctx.metrics.in_flight(-(responses as f64));
        out.in_flight.set(out.in_flight.get().saturating_sub(responses));
        out.to_reader.notify();
    }
}

/// The clock for request latencies.
#[expect(clippy::disallowed_methods, reason = "the server's latency metrics read the wall clock here only")]
fn clock() -> Instant {
    std::time::Instant::now()
}
