//! `serve_connection`: one client connection on a network thread.
//!
//! Owns: the TLS handshake of a connection (when the server has TLS), its identity (AU1, AU2),
//! reading a connection's bytes, decoding its frames, admitting each request against the
//! connection's bounds, handing its ADDs to the engine in one call per run of ADDs and its
//! other requests one by one, in decode order.
//! Does not own: what a request does (dispatch.rs), sending and the in-flight accounting
//! (outbox.rs), accepting and draining (server.rs).
//!
//! Invariants:
//! - CN1: a frame is decoded only when the outbox admits another request (OB1); past the
//!   bound the connection stops decoding and reading (backpressure) until responses are sent.
//! - CN2: requests reach the engine in the order they were decoded: a run of ADDs is handed to
//!   the engine before any later request, and every other request's first engine call is made
//!   at its place in the order (dispatch DP4).
//! - CN3: a frame that breaks the framing (`DecodeError::Frame`) is answered when its request
//!   id is known, then nothing more is read; responses already in flight are still sent, then
//!   the connection closes. A malformed body is answered (`BadRequest`/`TooLarge`) and decoding
//!   goes on. Nothing a peer sends panics the thread.
//! - CN4: a connection closes only after every request it admitted was answered and sent, or
//!   the socket failed, or the server's drain deadline passed (server.rs drops the runtime).
//! - CN5: a connection with nothing in flight, and nothing read nor sent for `idle_timeout`, is
//!   closed.
//! - CN6: ADD payloads handed to the engine are slices of the receive buffer (no copy) only
//!   when they are at least half of the receive allocation they live in; else they are copied
//!   out, and after slices were kept the next read starts a fresh allocation. The write cache
//!   keeps payloads until their run is flushed and a slice keeps its whole allocation alive:
//!   this bounds what the cache pins to about twice what it is charged. (The engine copies the
//!   master keys it keeps, for the same reason.)
//! - CN7: the server decodes requests under a frame limit of the largest legal request (an ADD
//!   of `entry_bytes_max`, or an AUTH), not the response limit: a peer cannot make a
//!   connection reserve more.
//! - CN8: with TLS, nothing is read as a frame before the handshake completed, and a handshake
//!   that fails (an untrusted or missing client certificate under mutual TLS), does not finish
//!   within `HANDSHAKE_TIMEOUT_MAX` (or the idle timeout, if shorter), or meets the drain
//!   closes the connection with no request executed.
//! - CN9: with a permissions file, a request on a segment runs only if the connection's
//!   identity is allowed its access (permissions.rs) on the segment's namespace; else it is
//!   answered `Unauthorized` and nothing of it is executed. A request whose segment's
//!   namespace is not known yet is held, decoding stops (so CN2's order holds) until the
//!   metadata answered, then it is decided and decoding goes on; a failed lookup refuses it
//!   (`Internal`, PG2). The connection keeps its decisions (at most `DECISIONS_MAX`).

use std::collections::HashMap;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::net::TcpStream;
use compio::runtime::CancelToken;
use dlog_engine::{AddEntry, Bookie};
use dlog_protocol::{
    ADD_OVERHEAD_BYTES_MAX, AUTH_TOKEN_BYTES_MAX, DecodeError, FRAME_HEADER_BYTES, Op, RESPONSE_BIT, Request,
    Response, Status, decode_request,
};
use dlog_replication::transport::tls::{self, StreamReader};
use futures_util::future::{Either, select};

use crate::bookie::auth::{AuthStep, Authenticator, certificate_identity};
use crate::bookie::config::ServerLimits;
use crate::bookie::dispatch;
use crate::bookie::metrics::{CloseReason, ServerMetrics};
use crate::bookie::outbox::{Outbox, RESPONSE_BUDGET_BYTES, SMALL_RESPONSE_BYTES, reservation, write_loop};
use crate::bookie::permissions::{Access, Allowed, access_of};
use crate::bookie::segment_owners::PermissionGate;

/// Free room a read asks for at first: an idle connection costs little. A frame larger than
/// this is read into room the decoder reserves from its header (at most the request limit).
const READ_CHUNK: usize = 16 << 10;

/// Free room a read asks for at most: a read that fills its room doubles the next one's, up
/// to this, so a busy connection hands the engine large batches (one queue hand-off per read);
/// a read of under an eighth halves it again, so a connection that calms down shrinks back.
const READ_CHUNK_MAX: usize = 512 << 10;

/// Segments a connection keeps its permission decisions for (CN9); past it, it starts over.
const DECISIONS_MAX: usize = 4096;

/// Longest a TLS handshake may take (CN8).
pub const HANDSHAKE_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// What every connection of a network thread shares.
pub struct ThreadContext {
    /// The engine.
    pub bookie: Arc<Bookie>,
    /// Frame and connection bounds.
    pub limits: ServerLimits,
    /// The codec's limits, derived from `limits` (responses).
    pub protocol: dlog_protocol::Limits,
    /// The limits requests are decoded under (CN7).
    pub requests: dlog_protocol::Limits,
    /// The AUTH hook.
    pub auth: Arc<dyn Authenticator>,
    /// TLS for every connection, or plaintext when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The per-namespace permission check (CN9), or everything allowed when `None`.
    pub permissions: Option<Arc<PermissionGate>>,
    /// Cancelled when the server drains: connections stop reading.
    pub drain: CancelToken,
    /// This thread's metric handles.
    pub metrics: ServerMetrics,
}

impl ThreadContext {
    /// The context of one network thread.
    pub fn new(bookie: Arc<Bookie>, limits: ServerLimits, auth: Arc<dyn Authenticator>) -> ThreadContext {
        let protocol = limits.protocol();
        let largest_request = (ADD_OVERHEAD_BYTES_MAX + protocol.entry_bytes_max as usize)
            .max(FRAME_HEADER_BYTES + 1 + AUTH_TOKEN_BYTES_MAX);
        let frame_bytes_max =
            protocol.frame_bytes_max.min(u32::try_from(largest_request).unwrap_or(u32::MAX));
        ThreadContext {
            bookie,
            limits,
            protocol,
            requests: dlog_protocol::Limits { frame_bytes_max, ..protocol },
            auth,
            tls: None,
            permissions: None,
            drain: CancelToken::new(),
            metrics: ServerMetrics::new(),
        }
    }
}

/// The receive buffer and what CN6 needs to know about its allocation.
struct Receive {
    buf: BytesMut,
    /// Room the next read asks for (adaptive, `READ_CHUNK..=READ_CHUNK_MAX`).
    chunk: usize,
    /// Bytes of the allocation `buf` lives in: split-off bytes plus `buf`'s capacity.
    allocation: usize,
    /// Bytes split off the allocation so far.
    split: usize,
    /// Slices of the allocation were handed to the engine: the next read starts a fresh one.
    pinned: bool,
}

impl Receive {
    fn new() -> Receive {
        Receive {
            buf: BytesMut::with_capacity(READ_CHUNK),
            chunk: READ_CHUNK,
            allocation: READ_CHUNK,
            split: 0,
            pinned: false,
        }
    }

    /// Room for the next read: a fresh allocation (the partial frame copied over) when the
    /// current one is pinned or nearly full.
    fn prepare(&mut self) {
        if self.pinned || self.buf.capacity() - self.buf.len() < self.chunk / 4 {
            let mut fresh = BytesMut::with_capacity(self.buf.len() + self.chunk);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
            self.allocation = self.buf.capacity();
            self.split = 0;
            self.pinned = false;
        }
    }

    /// After a read of `n` bytes into `room`: the next read's room.
    fn adapt(&mut self, n: usize, room: usize) {
        self.chunk = if n == room {
            (self.chunk * 2).min(READ_CHUNK_MAX)
        } else if n < self.chunk / 8 {
            (self.chunk / 2).max(READ_CHUNK)
        } else {
            self.chunk
        };
    }

    /// The allocation's size as far as CN6 can tell. The decoder may have reallocated (for a
    /// large frame); the larger figure is the safe one (it copies more, never pins more).
    fn allocation(&self) -> usize {
        self.allocation.max(self.split + self.buf.capacity())
    }
}

/// Serves one connection until the client closes it, it breaks, it idles out, or the server
/// drains (CN4). Returns why it closed.
pub async fn serve_connection(stream: TcpStream, ctx: Rc<ThreadContext>) -> CloseReason {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let (reader, writer, certificate) = match ctx.tls.clone() {
        None => {
            let (reader, writer) = tls::plain(stream);
            (reader, writer, None)
        }
        Some(config) => match handshake(stream, config, &ctx).await {
            Ok(accepted) => accepted,
            Err(reason) => return reason,
        },
    };
    // AU1, AU2: the connection's identity from its start (a verified client certificate), or
    // none until an AUTH step succeeds.
    let identity = Identity { name: ctx.auth.on_connect(certificate.as_deref()), decisions: HashMap::new() };
    let budget = RESPONSE_BUDGET_BYTES.max(2 * ctx.protocol.range_response_bytes_max() as usize);
    let out = Rc::new(Outbox::new(ctx.limits.in_flight_max as usize, budget));
    let writing = compio::runtime::spawn(write_loop(writer, out.clone(), ctx.clone()));
    let reason = read_loop(reader, identity, &out, &ctx).await;
    // CN4: wait for every response still in flight, then let the writer finish.
    while out.in_flight() > 0 && !out.broken.get() {
        out.to_reader.notified().await;
    }
    out.reading_done.set(true);
    out.to_writer.notify();
    let _ = writing.await;
    if out.broken.get() && reason != CloseReason::BadFrame { CloseReason::Io } else { reason }
}

/// The server side of a TLS handshake (CN8): the halves, and the identity of the client
/// certificate it verified, if any.
async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    ctx: &Rc<ThreadContext>,
) -> Result<(StreamReader, tls::StreamWriter, Option<String>), CloseReason> {
    let peer = stream.peer_addr().ok();
    let limit = HANDSHAKE_TIMEOUT_MAX.min(ctx.limits.idle_timeout);
    let accepting = pin!(compio::time::timeout(limit, tls::accept(stream, config)));
    let accepted = match select(accepting, pin!(ctx.drain.clone().wait())).await {
        Either::Left((Ok(Ok(accepted)), _)) => accepted,
        Either::Left((Ok(Err(error)), _)) => {
            tracing::info!(?peer, %error, "TLS handshake failed: connection closed");
            return Err(CloseReason::Io);
        }
        Either::Left((Err(_), _)) => {
            tracing::info!(?peer, ?limit, "no TLS handshake within the limit: connection closed");
            return Err(CloseReason::Idle);
        }
        Either::Right(_) => return Err(CloseReason::Drain),
    };
    let certificate = accepted.peer_certificates.as_ref().and_then(|chain| chain.first());
    let identity = certificate.and_then(certificate_identity);
    if certificate.is_some() && identity.is_none() {
        tracing::info!(?peer, "client certificate verified, but it names nobody (no CN nor SAN)");
    }
    Ok((accepted.reader, accepted.writer, identity))
}

/// Who a connection's client is (AU1, AU2): `None` until it authenticated, when the
/// authenticator requires it; and what it may do to the segments it named so far (CN9).
struct Identity {
    name: Option<String>,
    /// Per segment: what this identity may do (from the gate's cache or its lookups).
    decisions: HashMap<u64, Allowed>,
}

impl Identity {
    fn remember(&mut self, segment: u64, allowed: Allowed) {
        if self.decisions.len() >= DECISIONS_MAX {
            self.decisions.clear();
        }
        self.decisions.insert(segment, allowed);
    }
}

/// A decoded request waiting for its segment's namespace (CN9); once looked up, the decision
/// is among the connection's.
struct Held {
    request_id: u64,
    request: Request,
}

/// Why decoding stopped.
enum Decoded {
    /// No whole frame left: read more.
    NeedBytes,
    /// The outbox admits no more requests now (CN1).
    NoRoom,
    /// The held request's segment needs a lookup (CN9).
    NeedOwner {
        /// The segment.
        segment: u64,
    },
}

async fn read_loop(
    mut reader: StreamReader,
    mut identity: Identity,
    out: &Rc<Outbox>,
    ctx: &Rc<ThreadContext>,
) -> CloseReason {
    let mut receive = Receive::new();
    let mut held = None;
    loop {
        match decode(&mut receive, out, ctx, &mut identity, &mut held) {
            Err(reason) => return reason,
            Ok(Decoded::NeedBytes) if out.has_room() => {}
            Ok(Decoded::NeedOwner { segment }) => {
                match look_up(&identity, segment, out, ctx).await {
                    Err(reason) => return reason,
                    Ok(Ok(allowed)) => identity.remember(segment, allowed),
                    Ok(Err(why)) => {
                        // PG2: refused, not executed; the next request asks again.
                        if let Some(Held { request_id, request, .. }) = held.take() {
                            tracing::warn!(segment, why, "permission lookup failed: request refused");
                            let refusal = Response::refused(
                                request.op().as_u8(),
                                Status::Internal,
                                format!("permission check: {why}"),
                            );
                            answer_now(out, ctx, request_id, refusal);
                        }
                    }
                }
                continue;
            }
            Ok(_) => {
                // CN1: neither decode nor read until responses are sent.
                let drained = pin!(ctx.drain.clone().wait());
                if let Either::Right(_) = select(pin!(out.to_reader.notified()), drained).await {
                    return CloseReason::Drain;
                }
                if out.broken.get() {
                    return CloseReason::Io;
                }
                continue;
            }
        }
        receive.prepare();
        let room = receive.buf.capacity() - receive.buf.len();
        let buf = std::mem::take(&mut receive.buf);
        let read = match read_some(&mut reader, buf, out, ctx).await {
            Ok(read) => read,
            Err(reason) => return reason,
        };
        receive.buf = match read {
            BufResult(Ok(0), _) => return CloseReason::Eof,
            BufResult(Ok(n), buf) => {
                receive.adapt(n, room);
                buf
            }
            BufResult(Err(error), _) => {
                tracing::debug!(%error, "connection read failed");
                return CloseReason::Io;
            }
        };
    }
}

/// One read, raced with the drain, the idle timeout (CN5) and the socket failing on the write
/// side. The read is cancelled only when it loses, and its buffer goes with it, which is fine:
/// the connection is closing and nothing in the buffer was admitted.
async fn read_some(
    reader: &mut StreamReader,
    buf: BytesMut,
    out: &Outbox,
    ctx: &Rc<ThreadContext>,
) -> Result<BufResult<usize, BytesMut>, CloseReason> {
    let read = pin!(reader.append(buf));
    let drained = pin!(ctx.drain.clone().wait());
    let idle = pin!(async {
        // Idle: nothing in flight, and nothing read nor sent for `idle_timeout` (counted from
        // the later of the last read and the last response sent). Requests in flight (a long
        // poll) keep the connection open; a writer stalled that long breaks it (OB3).
        loop {
            let since = clock().saturating_duration_since(out.last_active());
            let left = ctx.limits.idle_timeout.saturating_sub(since);
            if left.is_zero() && out.in_flight() == 0 {
                return CloseReason::Idle;
            }
            compio::time::sleep(left.max(Duration::from_millis(1)).min(ctx.limits.idle_timeout)).await;
        }
    });
    let broken = pin!(async {
        while !out.broken.get() {
            out.to_reader.notified().await;
        }
        CloseReason::Io
    });
    let stop = async {
        match select(drained, select(idle, broken)).await {
            Either::Left(_) => CloseReason::Drain,
            Either::Right((Either::Left((reason, _)) | Either::Right((reason, _)), _)) => reason,
        }
    };
    match select(read, pin!(stop)).await {
        Either::Left((read, _)) => {
            out.touch(clock());
            Ok(read)
        }
        Either::Right((reason, _)) => Err(reason),
    }
}

/// Where the held request's segment belongs, raced with the drain and the socket failing:
/// the decision for the connection's identity, or why the lookup failed.
async fn look_up(
    identity: &Identity,
    segment: u64,
    out: &Outbox,
    ctx: &Rc<ThreadContext>,
) -> Result<Result<Allowed, String>, CloseReason> {
    let (Some(gate), Some(name)) = (ctx.permissions.as_ref(), identity.name.as_deref()) else {
        return Ok(Ok(Allowed::ALL)); // unreachable: decode holds nothing without both
    };
    let looked_up = pin!(gate.look_up(name, segment));
    let broken = pin!(async {
        while !out.broken.get() {
            out.to_reader.notified().await;
        }
    });
    match select(looked_up, select(pin!(ctx.drain.clone().wait()), broken)).await {
        Either::Left((decided, _)) => Ok(decided),
        Either::Right((Either::Left(_), _)) => Err(CloseReason::Drain),
        Either::Right((Either::Right(_), _)) => Err(CloseReason::Io),
    }
}

/// The permission check of one request (CN9): `Some(allowed)` when known now, `None` when its
/// segment's namespace must be looked up first. Everything is allowed without a gate.
fn permitted(
    identity: &mut Identity,
    segment: u64,
    access: Access,
    gate: Option<&PermissionGate>,
) -> Option<bool> {
    let (Some(gate), Some(name)) = (gate, identity.name.as_deref()) else {
        return Some(true);
    };
    if let Some(allowed) = gate.permissions().regardless_of_namespace(name, access) {
        return Some(allowed); // PG4
    }
    if let Some(allowed) = identity.decisions.get(&segment) {
        return Some(allowed.covers(access));
    }
    let allowed = gate.cached(name, segment)?;
    identity.remember(segment, allowed);
    Some(allowed.covers(access))
}

/// Decodes and starts frames from the receive buffer while the outbox admits them (CN1-CN3,
/// CN9). A request `held` for a lookup goes first.
fn decode(
    receive: &mut Receive,
    out: &Rc<Outbox>,
    ctx: &Rc<ThreadContext>,
    identity: &mut Identity,
    held: &mut Option<Held>,
) -> Result<Decoded, CloseReason> {
    let mut adds = Adds::default();
    let result = loop {
        if !out.has_room() {
            break Ok(Decoded::NoRoom);
        }
        let decoded = match held.take() {
            Some(Held { request_id, request }) => Ok(Some((request_id, request))),
            None => {
                let before = receive.buf.len();
                let decoded = decode_request(&mut receive.buf, &ctx.requests);
                receive.split += before - receive.buf.len();
                decoded
            }
        };
        let (request_id, request) = match decoded {
            Ok(Some(decoded)) => decoded,
            Ok(None) => break Ok(Decoded::NeedBytes),
            Err(error) => {
                // The op byte as sent, without the response bit (a refusal is a response).
                let header_op = receive.buf.get(5).copied().unwrap_or(0) & !RESPONSE_BIT;
                if let Some(request_id) = error.request_id() {
                    let op = match &error {
                        DecodeError::Malformed { op, .. } => *op & !RESPONSE_BIT,
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
        // AU1.
        if identity.name.is_none() && !matches!(request, Request::Auth { .. }) {
            let refusal = Response::refused(request.op().as_u8(), Status::Unauthorized, "authenticate first");
            answer_now(out, ctx, request_id, refusal);
            continue;
        }
        // CN9.
        if let Some((segment, access)) = access_of(&request) {
            match permitted(identity, segment, access, ctx.permissions.as_deref()) {
                Some(true) => {}
                Some(false) => {
                    let name = identity.name.as_deref().unwrap_or_default();
                    tracing::debug!(identity = name, segment, ?access, "request refused: no permission");
                    let why = format!("{name} may not {} segment {segment}", access.verb());
                    let refusal = Response::refused(request.op().as_u8(), Status::Unauthorized, why);
                    answer_now(out, ctx, request_id, refusal);
                    continue;
                }
                None => {
                    *held = Some(Held { request_id, request });
                    break Ok(Decoded::NeedOwner { segment });
                }
            }
        }
        let reserve = reservation(&request, &ctx.protocol);
        match request {
            Request::Add { segment, entry, last_add_confirmed, master_key, payload, recovery } => {
                if out.admit(reserve, ctx) {
                    adds.bytes += payload.len();
                    let add = dispatch::add_entry(
                        segment,
                        entry,
                        last_add_confirmed,
                        master_key,
                        payload,
                        recovery,
                    );
                    adds.entries.push((request_id, reserve, add));
                }
            }
            Request::Auth { mechanism, token } => {
                let response = match ctx.auth.step(mechanism, &token) {
                    // AU2: the identity never changes once set; without required
                    // authentication it is the one the connection started with.
                    Ok(AuthStep::Done { .. }) if !ctx.auth.required() && identity.name.is_some() => {
                        Response::Auth { token: Bytes::new() }
                    }
                    Ok(AuthStep::Done { identity: name })
                        if identity.name.as_ref().is_some_and(|current| *current != name) =>
                    {
                        tracing::info!(
                            identity = name,
                            "AUTH step refused: the connection is someone else's"
                        );
                        let why = "this connection is authenticated already as another identity";
                        Response::refused(Op::Auth.as_u8(), Status::Unauthorized, why)
                    }
                    Ok(AuthStep::Done { identity: name }) => {
                        tracing::debug!(identity = name, "connection authenticated");
                        identity.name = Some(name);
                        Response::Auth { token: Bytes::new() }
                    }
                    Ok(AuthStep::Continue(token)) => Response::Auth { token },
                    Err(why) => {
                        tracing::info!(why, "AUTH step refused");
                        Response::refused(Op::Auth.as_u8(), Status::Unauthorized, why)
                    }
                };
                answer_now(out, ctx, request_id, response);
            }
            other => {
                submit_adds(std::mem::take(&mut adds), receive, out, ctx); // CN2
                if out.admit(reserve, ctx) {
                    let room = Rc::downgrade(out);
                    let room_for_entry = move || room.upgrade().is_some_and(|out| out.room_for_entry());
                    let answer =
                        dispatch::start(&ctx.bookie, other, &ctx.protocol, room_for_entry, ctx.drain.clone());
                    spawn_answer(request_id, answer, reserve, out, ctx);
                }
            }
        }
    };
    submit_adds(adds, receive, out, ctx);
    result
}

/// A run of decoded ADDs, not yet handed to the engine.
#[derive(Default)]
struct Adds {
    /// Request id, reserved response bytes, and the entry.
    entries: Vec<(u64, usize, AddEntry)>,
    /// Their payload bytes (CN6).
    bytes: usize,
}

fn answer_now(out: &Outbox, ctx: &ThreadContext, request_id: u64, response: Response) {
    let reserve = SMALL_RESPONSE_BYTES;
    if out.admit(reserve, ctx) {
        ctx.metrics.answered(response.op(), response.status(), Duration::ZERO);
        out.push(request_id, &response, reserve);
    }
}

/// Hands a run of ADDs to the engine in one call and answers each when the batch is durable.
fn submit_adds(mut adds: Adds, receive: &mut Receive, out: &Rc<Outbox>, ctx: &Rc<ThreadContext>) {
    if adds.entries.is_empty() {
        return;
    }
    // CN6: slices only where the payloads are at least half of their allocation.
    if adds.bytes.saturating_mul(2) >= receive.allocation() {
        receive.pinned = true;
    } else {
        for (_, _, add) in &mut adds.entries {
            add.payload = Bytes::copy_from_slice(&add.payload);
        }
    }
    let at = clock();
    let mut answers = Vec::with_capacity(adds.entries.len());
    let mut keys = Vec::with_capacity(adds.entries.len());
    let mut entries = Vec::with_capacity(adds.entries.len());
    for (request_id, reserved, add) in adds.entries {
        answers.push((request_id, reserved));
        keys.push((add.segment.0, add.entry.0));
        entries.push(add);
    }
    let pending = ctx.bookie.add_entries(entries);
    let (out, ctx) = (out.clone(), ctx.clone());
    compio::runtime::spawn(async move {
        let result = pending.await;
        let took = clock().saturating_duration_since(at);
        for ((request_id, reserved), response) in
            answers.into_iter().zip(dispatch::add_responses(&keys, result))
        {
            ctx.metrics.answered(Op::Add.as_u8(), response.status(), took);
            out.push(request_id, &response, reserved);
        }
    })
    .detach();
}

fn spawn_answer(
    request_id: u64,
    answer: dispatch::Answer,
    reserved: usize,
    out: &Rc<Outbox>,
    ctx: &Rc<ThreadContext>,
) {
    let (out, ctx) = (out.clone(), ctx.clone());
    let at = clock();
    compio::runtime::spawn(async move {
        let response = answer.await;
        ctx.metrics.answered(response.op(), response.status(), clock().saturating_duration_since(at));
        out.push(request_id, &response, reserved);
    })
    .detach();
}

/// The clock for request latencies and the idle timeout.
#[expect(
    clippy::disallowed_methods,
    reason = "the server's latency metrics and idle timer read the clock here"
)]
pub(crate) fn clock() -> Instant {
    Instant::now()
}
