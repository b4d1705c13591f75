//! `Connection`: one pipelined TCP connection to a bookie, inside one compio runtime (`!Send`).
//!
//! Owns: the request ids of the connection, the table of requests in flight, the queue of
//! frames not yet sent, the writer task (every queued frame in one vectored write: many
//! requests, one send, ADD payloads sent from the caller's own `Bytes`), the reader task
//! (responses decoded from one receive buffer and handed to their callers by id, in any order),
//! and the death of the connection; at connect, the TLS handshake and the AUTH step when
//! `ClientConfig::security` asks for them.
//! Does not own: reconnecting (bookie_client.rs), what statuses mean (the caller's), TLS
//! records (tls.rs).
//!
//! Invariants:
//! - C1: a request id is used once per connection (ids only grow); a response is delivered
//!   only to the request with its id, and only if it answers the same op.
//! - C2: `pending.len() <= in_flight_max` (T2). Frames in the queue all have an entry in
//!   `pending`; a request that ends early removes both (T3), so queued bytes are bounded by
//!   `in_flight_max` frames, plus the one batch being written.
//! - C3: once dead (EOF, I/O error, broken frame, stalled write, `close`), a connection never
//!   comes back: every request in flight fails with the cause, later ones fail at once, and
//!   both tasks end.
//! - C4: nothing the peer sends panics: decode errors are values, unknown ids are logged and
//!   dropped (they may answer requests that timed out).
//! - C5: a registered request past its deadline fails with `Timeout` within one sweep
//!   (`sweep_every`: a tenth of the request timeout, at most 100 ms) and its slot is freed.
//!   One sweeper task per connection replaces a timer per request, which cost the client more
//!   CPU than encoding the request (measured with `dlog bench bookie`).
//! - C6: with a token configured, `connect` returns a connection only once the bookie accepted
//!   the token (an AUTH step, the connection's first request): no other request goes before.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use compio::runtime::JoinHandle;
use dlog_protocol::{
    AUTH_TOKEN_BYTES_MAX, BodyError, DecodeError, LAC_NONE, MASTER_KEY_BYTES_MAX, Request, Response, Status,
    decode_response, encode_request_chunks,
};

use super::security::{AuthToken, MECHANISM_TOKEN};
use super::slots::Waiters;
use super::tls::{self, StreamReader, StreamWriter};
use super::{ClientConfig, TransportError, now};

/// Most buffers in one vectored write (Linux's `IOV_MAX`).
const WRITE_CHUNKS_MAX: usize = 1024;
/// Bytes after which a batch stops taking more frames (its first frame always goes).
const WRITE_BATCH_BYTES_MAX: usize = 4 << 20;
/// Free room the receive buffer keeps before each read.
const READ_BYTES_MIN: usize = 64 << 10;

/// A pipelined connection to one bookie. Requests take `&self`, so any number of tasks on the
/// runtime may have requests in flight at once (share it with `Rc`). Dropping it (or `close`)
/// closes the socket and fails the requests in flight with `TransportError::Closed`.
pub struct Connection {
    addr: SocketAddr,
    shared: Rc<Shared>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
}

/// What the caller, the writer task and the reader task share.
struct Shared {
    config: ClientConfig,
    state: RefCell<State>,
}

struct State {
    /// Why the connection died (C3); `None` while it lives.
    dead: Option<TransportError>,
    next_id: u64,
    pending: HashMap<u64, InFlight, foldhash::fast::RandomState>,
    queue: VecDeque<Frame>,
    /// The writer task, when it waits for frames.
    writer: Option<Waker>,
    /// The reader task, woken when the connection dies of something else, to end its read.
    reader: Option<Waker>,
    /// Callers waiting for room under `in_flight_max`.
    room: Waiters,
    /// Results of `submit`ted requests not yet taken by `completions`, in completion order.
    completed: Vec<(u64, Result<Response, TransportError>)>,
    /// The task waiting in `completions`.
    completions: Option<Waker>,
    /// Where small frames are encoded (`encode_frame`).
    staging: BytesMut,
    stats: ConnectionStats,
}

/// Counters of one connection, since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Request frames handed to the socket.
    pub frames_sent: u64,
    /// Vectored writes that carried them (batching: many frames per write under load).
    pub writes: u64,
    /// Responses delivered to their requests (refusals and malformed bodies included).
    pub responses: u64,
    /// Responses dropped because no request with their id was in flight (timed out).
    pub responses_unknown: u64,
}

/// A request registered on the connection, waiting for its response.
struct InFlight {
    /// Its op byte, which the response must repeat.
    op: u8,
    /// When the sweeper fails it with `Timeout` (C5).
    deadline: Instant,
    reply: Reply,
}

/// Where a request's result goes.
enum Reply {
    /// A caller awaiting `request`.
    Caller(oneshot::Sender<Result<Response, TransportError>>),
    /// A `submit`ted request: its result joins the completion queue with this tag.
    Tagged(u64),
}

/// An encoded request, not yet sent.
struct Frame {
    id: u64,
    /// A small frame, encoded whole (payload copied) into the connection's staging buffer.
    whole: Option<Bytes>,
    /// A large frame: fields in small buffers, the payload as the caller's own `Bytes`.
    chunks: Vec<Bytes>,
}

impl Frame {
    fn chunk_count(&self) -> usize {
        usize::from(self.whole.is_some()) + self.chunks.len()
    }

    fn bytes(&self) -> usize {
        self.whole.as_ref().map_or(0, Bytes::len) + self.chunks.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Frames up to this size are copied whole into the staging buffer (one allocation shared by
/// many frames, one iovec each); larger ones keep their payload as the caller's `Bytes`.
const COPY_FRAME_BYTES_MAX: usize = 4 << 10;

/// Room the staging buffer is refilled with.
const STAGING_BYTES: usize = 64 << 10;

/// Encodes `request` as frame `id`: small frames whole into `staging`, large ones as chunks.
fn encode_frame(staging: &mut BytesMut, request: &Request, id: u64) -> Frame {
    let len = request.encoded_len();
    if len <= COPY_FRAME_BYTES_MAX {
        if staging.capacity() - staging.len() < len {
            *staging = BytesMut::with_capacity(STAGING_BYTES.max(len));
        }
        dlog_protocol::encode_request(request, id, staging);
        Frame { id, whole: Some(staging.split().freeze()), chunks: Vec::new() }
    } else {
        let mut chunks = Vec::with_capacity(2);
        encode_request_chunks(request, id, &mut chunks);
        Frame { id, whole: None, chunks }
    }
}

impl Connection {
    /// Connects to the bookie at `addr` within `config.connect_timeout`, with TCP_NODELAY, and
    /// starts its writer and reader tasks on the current compio runtime. With
    /// `config.security`: the TLS handshake (`TransportError::Tls` when it fails), then the
    /// token's AUTH step (`TransportError::Unauthorized` when refused), each within
    /// `connect_timeout` (C6).
    pub async fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<Connection, TransportError> {
        config.validate()?;
        let connect_error = |source| TransportError::Connect { addr, source: Arc::new(source) };
        let stream = match compio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(connect_error(error)),
            Err(_) => {
                let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect_timeout passed");
                return Err(connect_error(timed_out));
            }
        };
        stream.set_nodelay(true).map_err(connect_error)?;
        let (read_half, write_half) = match &config.security.tls {
            None => tls::plain(stream),
            Some(client_tls) => {
                let handshake =
                    tls::connect(stream, client_tls.config().clone(), client_tls.server_name(addr));
                match compio::time::timeout(config.connect_timeout, handshake).await {
                    Ok(Ok(accepted)) => (accepted.reader, accepted.writer),
                    Ok(Err(error)) => return Err(TransportError::Tls { addr, reason: error.to_string() }),
                    Err(_) => {
                        let reason = "no handshake within connect_timeout".to_owned();
                        return Err(TransportError::Tls { addr, reason });
                    }
                }
            }
        };
        let shared = Rc::new(Shared {
            config: config.clone(),
            state: RefCell::new(State {
                dead: None,
                next_id: 1,
                pending: HashMap::default(),
                queue: VecDeque::new(),
                writer: None,
                reader: None,
                room: Waiters::default(),
                completed: Vec::new(),
                completions: None,
                staging: BytesMut::new(),
                stats: ConnectionStats::default(),
            }),
        });
        let reader = compio::runtime::spawn(read_loop(Rc::clone(&shared), read_half));
        let writer = compio::runtime::spawn(write_loop(Rc::clone(&shared), write_half));
        let sweeper = compio::runtime::spawn(sweep_loop(Rc::downgrade(&shared)));
        let connection = Connection { addr, shared, tasks: RefCell::new(vec![reader, writer, sweeper]) };
        if let Some(token) = &config.security.token {
            connection.authenticate(token).await?;
        }
        tracing::debug!(%addr, "connected to bookie");
        Ok(connection)
    }

    /// The AUTH step of a token (C6): the connection's first request.
    async fn authenticate(&self, token: &AuthToken) -> Result<(), TransportError> {
        let addr = self.addr;
        let request = Request::Auth { mechanism: MECHANISM_TOKEN, token: token.bytes().clone() };
        let deadline = now() + self.shared.config.connect_timeout;
        let refused = |reason: String| TransportError::Unauthorized { addr, reason };
        match self.request_until(request, deadline).await {
            Ok(Response::Auth { token }) if token.is_empty() => Ok(()),
            Ok(Response::Auth { .. }) => Err(refused("the bookie asked for a second AUTH step".into())),
            Ok(Response::Refused { status: Status::Unauthorized, message, .. }) => Err(refused(message)),
            Ok(Response::Refused { status, message, .. }) => Err(refused(format!("{status:?}: {message}"))),
            Ok(other) => Err(refused(format!("unexpected answer to AUTH: {other:?}"))),
            // On TLS, a bookie that refused our certificate says so only now (TLS 1.3: after
            // the client's side of the handshake is done), with an alert.
            Err(TransportError::Disconnected { reason }) if self.shared.config.security.tls.is_some() => {
                Err(TransportError::Tls { addr, reason })
            }
            Err(error) => Err(error),
        }
    }

    /// Sends `request` and waits for its response, within `config.request_timeout` (plus the
    /// request's own `timeout_ms` for a LONG_POLL), waiting for room first when
    /// `in_flight_max` requests are in flight. A refusal is `Ok(Response::Refused { .. })`.
    pub async fn request(&self, request: Request) -> Result<Response, TransportError> {
        let deadline = now() + request_timeout(&self.shared.config, &request);
        self.request_until(request, deadline).await
    }

    /// `request`, ending with `TransportError::Timeout` at `deadline`.
    pub(crate) async fn request_until(
        &self,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        check(&request, &self.shared.config)?;
        let shared = &*self.shared;
        // The fast path arms no timer: a request registered at once is timed out by the
        // sweeper (C5); only a wait for room needs a timer of its own.
        let mut acquire = pin!(Acquire { shared, request: Some(request), ticket: None, deadline });
        let registered = match poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await {
            Poll::Ready(registered) => registered,
            Poll::Pending => {
                compio::time::timeout_at(deadline, acquire).await.unwrap_or(Err(TransportError::Timeout))
            }
        };
        let (id, response) = registered?;
        let _registered = Registered { shared, id };
        response.await.unwrap_or(Err(TransportError::Closed))
    }

    /// Queues `request` without waiting for room or for its response: its result comes out of
    /// `completions` with `tag`, within its timeout as for `request`. Fails at once, with
    /// nothing queued, on a dead connection, a request the bookie would refuse for its size,
    /// or when `in_flight_max` requests are in flight (or callers wait for room):
    /// `TransportError::Busy`. For a sans-I/O core's shell: many requests per turn, their
    /// results as a batch of inputs, no task or channel per request.
    pub fn submit(&self, tag: u64, request: Request) -> Result<(), TransportError> {
        check(&request, &self.shared.config)?;
        let deadline = now() + request_timeout(&self.shared.config, &request);
        let mut state = self.shared.state.borrow_mut();
        if let Some(cause) = &state.dead {
            return Err(after_death(cause));
        }
        let in_flight_max = self.shared.config.in_flight_max;
        if state.pending.len() >= in_flight_max || !state.room.is_empty() {
            return Err(TransportError::Busy { in_flight_max });
        }
        state.register(&request, deadline, Reply::Tagged(tag));
        Ok(())
    }

    /// Waits until a `submit`ted request has a result, then takes every result there is, in
    /// the order they came. Once the connection is dead and every result was taken: the cause.
    pub async fn completions(&self) -> Result<Vec<(u64, Result<Response, TransportError>)>, TransportError> {
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            if !state.completed.is_empty() {
                return Poll::Ready(Ok(std::mem::take(&mut state.completed)));
            }
            if let Some(cause) = &state.dead {
                return Poll::Ready(Err(after_death(cause)));
            }
            state.completions = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The bookie's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the connection is dead (C3): requests on it fail at once.
    pub fn is_dead(&self) -> bool {
        self.shared.state.borrow().dead.is_some()
    }

    /// Requests registered now (queued or sent, not yet answered).
    pub fn in_flight(&self) -> usize {
        self.shared.state.borrow().pending.len()
    }

    /// The connection's counters.
    pub fn stats(&self) -> ConnectionStats {
        self.shared.state.borrow().stats
    }

    /// Closes the connection: requests in flight and later ones fail with `Closed`, both tasks
    /// are cancelled and the socket is closed.
    pub fn close(&self) {
        self.shared.fail(TransportError::Closed);
        self.shared.state.borrow_mut().dead = Some(TransportError::Closed);
        // Dropping a compio JoinHandle cancels its task; the tasks own the socket's halves.
        self.tasks.borrow_mut().clear();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("in_flight", &self.in_flight())
            .field("dead", &self.is_dead())
            .finish()
    }
}

/// How long `request` may take under `config`: the request timeout, plus the wait a LONG_POLL
/// asks the bookie for.
pub(crate) fn request_timeout(config: &ClientConfig, request: &Request) -> Duration {
    match request {
        Request::LongPoll { timeout_ms, .. } => {
            config.request_timeout.saturating_add(Duration::from_millis(u64::from(*timeout_ms)))
        }
        _ => config.request_timeout,
    }
}

/// Refuses, before anything is sent, a request the bookie would refuse for its size or that
/// the encoder cannot encode.
pub(crate) fn check(request: &Request, config: &ClientConfig) -> Result<(), TransportError> {
    let limits = &config.limits;
    let too_large = |what, bytes: usize, max: u64| {
        let bytes = bytes as u64;
        if bytes > max { Err(TransportError::TooLarge { what, bytes, max }) } else { Ok(()) }
    };
    let key = |key: &Bytes| {
        if key.len() > MASTER_KEY_BYTES_MAX {
            Err(TransportError::Invalid("master key over 64 bytes"))
        } else {
            Ok(())
        }
    };
    match request {
        Request::Add { master_key, payload, .. } => {
            key(master_key)?;
            too_large("payload", payload.len(), u64::from(limits.entry_bytes_max))?;
        }
        Request::Read { fence: Some(master_key), .. }
        | Request::ReadLastAddConfirmed { fence: Some(master_key), .. } => key(master_key)?,
        Request::WriteLastAddConfirmed { last_add_confirmed, master_key, .. } => {
            key(master_key)?;
            if *last_add_confirmed == LAC_NONE {
                return Err(TransportError::Invalid("explicit last_add_confirmed of LAC_NONE"));
            }
        }
        Request::ReadRange { first, last, .. } if last < first => {
            return Err(TransportError::Invalid("READ_RANGE with last before first"));
        }
        Request::Auth { token, .. } => too_large("token", token.len(), AUTH_TOKEN_BYTES_MAX as u64)?,
        _ => {}
    }
    too_large("frame", request.encoded_len(), u64::from(limits.frame_bytes_max))
}

impl State {
    /// Registers `request` under the next id: in flight with its deadline and reply, its frame
    /// queued, the writer woken. The caller has checked the room (C2).
    fn register(&mut self, request: &Request, deadline: Instant, reply: Reply) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_frame(&mut self.staging, request, id);
        self.pending.insert(id, InFlight { op: request.op().as_u8(), deadline, reply });
        self.queue.push_back(frame);
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
        id
    }
}

impl Shared {
    /// Kills the connection (C3): records the cause, fails every request in flight with
    /// `error`, drops the queue and wakes the writer and every caller waiting for room.
    fn fail(&self, error: TransportError) {
        let pending = {
            let mut state = self.state.borrow_mut();
            if state.dead.is_none() {
                tracing::debug!(%error, in_flight = state.pending.len(), "bookie connection dead");
                state.dead = Some(error.clone());
            }
            state.queue.clear();
            if let Some(writer) = state.writer.take() {
                writer.wake();
            }
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
            state.room.wake_all();
            std::mem::take(&mut state.pending)
        };
        for (_, in_flight) in pending {
            // The caller may have gone (its future dropped): nobody to tell.
            self.reply(in_flight.reply, Err(error.clone()));
        }
        if let Some(waker) = self.state.borrow_mut().completions.take() {
            waker.wake();
        }
    }

    /// Hands `result` to the request `id`, if it is still in flight; a response to another op
    /// than the request's is malformed (C1).
    fn complete(&self, id: u64, result: Result<Response, TransportError>) {
        let in_flight = {
            let mut state = self.state.borrow_mut();
            let Some(in_flight) = state.pending.remove(&id) else {
                state.stats.responses_unknown += 1;
                tracing::warn!(request_id = id, "response for no request in flight (timed out?): dropped");
                return;
            };
            state.stats.responses += 1;
            state.room.wake_first();
            in_flight
        };
        let result = match result {
            Ok(response) if response.op() != in_flight.op => {
                let error = BodyError::Invalid("response op (not the request's)");
                let op = response.op() | dlog_protocol::RESPONSE_BIT;
                Err(TransportError::Protocol(DecodeError::Malformed { request_id: id, op, error }))
            }
            other => other,
        };
        self.reply(in_flight.reply, result);
    }

    /// Delivers a request's result where it is awaited.
    fn reply(&self, reply: Reply, result: Result<Response, TransportError>) {
        match reply {
            Reply::Caller(sender) => {
                let _ = sender.send(result);
            }
            Reply::Tagged(tag) => {
                let mut state = self.state.borrow_mut();
                state.completed.push((tag, result));
                if let Some(waker) = state.completions.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Forgets request `id` (its caller stopped waiting, T3, or its deadline passed, C5): frees
    /// its slot, unsends it if still queued, and hands back its entry if it was in flight.
    fn forget(&self, id: u64) -> Option<InFlight> {
        let mut state = self.state.borrow_mut();
        let in_flight = state.pending.remove(&id)?;
        if let Some(at) = state.queue.iter().position(|frame| frame.id == id) {
            state.queue.remove(at);
        }
        state.room.wake_first();
        Some(in_flight)
    }

    /// Waits for queued frames and moves a batch of them into `batch`; false once dead.
    async fn next_batch(&self, batch: &mut Vec<Bytes>) -> bool {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.dead.is_some() {
                return Poll::Ready(false);
            }
            if state.queue.is_empty() {
                state.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let mut bytes = 0;
            let mut frames = 0;
            while let Some(frame) = state.queue.front() {
                let full =
                    batch.len() + frame.chunk_count() > WRITE_CHUNKS_MAX || bytes >= WRITE_BATCH_BYTES_MAX;
                if full && !batch.is_empty() {
                    break;
                }
                let Some(frame) = state.queue.pop_front() else { break };
                bytes += frame.bytes();
                frames += 1;
                batch.extend(frame.whole);
                batch.extend(frame.chunks);
            }
            state.stats.frames_sent += frames;
            state.stats.writes += 1;
            Poll::Ready(true)
        })
        .await
    }

    /// Decodes every whole response in `buf` and delivers it; false when the stream broke.
    fn deliver(&self, buf: &mut BytesMut) -> bool {
        loop {
            match decode_response(buf, &self.config.limits) {
                Ok(None) => return true,
                Ok(Some((id, response))) => self.complete(id, Ok(response)),
                Err(error @ DecodeError::Malformed { request_id, .. }) => {
                    tracing::warn!(%error, "malformed response from bookie");
                    self.complete(request_id, Err(error.into()));
                }
                Err(error) => {
                    tracing::warn!(%error, "broken frame from bookie: closing the connection");
                    self.fail(TransportError::Protocol(error));
                    return false;
                }
            }
        }
    }
}

/// The error a request gets on a connection that died of `cause` before it was registered.
fn after_death(cause: &TransportError) -> TransportError {
    match cause {
        TransportError::Closed => TransportError::Closed,
        TransportError::Disconnected { .. } => cause.clone(),
        other => TransportError::Disconnected { reason: format!("connection dead: {other}") },
    }
}

/// Registers a request once there is room (T2, in arrival order): its id, encoded frame in the
/// queue, and the receiver of its response.
struct Acquire<'a> {
    shared: &'a Shared,
    request: Option<Request>,
    /// The request's deadline, for the sweeper.
    deadline: Instant,
    /// Our place in line, while we wait for room.
    ticket: Option<u64>,
}

type ResponseReceiver = oneshot::Receiver<Result<Response, TransportError>>;

impl Future for Acquire<'_> {
    type Output = Result<(u64, ResponseReceiver), TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.shared.state.borrow_mut();
        if let Some(cause) = &state.dead {
            let error = after_death(cause);
            if let Some(ticket) = this.ticket.take() {
                state.room.leave(ticket);
            }
            return Poll::Ready(Err(error));
        }
        let in_flight_max = this.shared.config.in_flight_max;
        let first = match this.ticket {
            None => state.room.is_empty(),
            Some(ticket) => state.room.is_first(ticket),
        };
        if !first || state.pending.len() >= in_flight_max {
            match this.ticket {
                None => this.ticket = Some(state.room.join(cx.waker())),
                Some(ticket) => state.room.update(ticket, cx.waker()),
            }
            return Poll::Pending;
        }
        if let Some(ticket) = this.ticket.take() {
            state.room.leave(ticket);
        }
        let Some(request) = this.request.take() else {
            return Poll::Ready(Err(TransportError::Invalid("request polled after it was registered")));
        };
        let (reply, response) = oneshot::channel();
        let id = state.register(&request, this.deadline, Reply::Caller(reply));
        if state.pending.len() < in_flight_max {
            state.room.wake_first();
        }
        Poll::Ready(Ok((id, response)))
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else { return };
        let mut state = self.shared.state.borrow_mut();
        if state.room.leave(ticket) && state.pending.len() < self.shared.config.in_flight_max {
            state.room.wake_first();
        }
    }
}

/// A registered request whose caller waits for the response: dropping it (answered, timed out
/// or abandoned) gives the slot back (T3).
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

/// How often the sweeper looks for requests past their deadline: a tenth of the request
/// timeout, between 1 ms and 100 ms.
fn sweep_every(config: &ClientConfig) -> Duration {
    (config.request_timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// The sweeper task: fails every request past its deadline with `Timeout` (C5). Holds the
/// connection weakly, so it ends when the connection goes.
async fn sweep_loop(shared: std::rc::Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(shared) => sweep_every(&shared.config),
        None => return,
    };
    loop {
        compio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else { return };
        if shared.state.borrow().dead.is_some() {
            return;
        }
        let time = now();
        let expired: Vec<u64> = {
            let state = shared.state.borrow();
            state.pending.iter().filter(|(_, f)| f.deadline <= time).map(|(id, _)| *id).collect()
        };
        for id in expired {
            if let Some(in_flight) = shared.forget(id) {
                shared.reply(in_flight.reply, Err(TransportError::Timeout));
            }
        }
    }
}

/// The writer task: batches of queued frames, one vectored write each.
async fn write_loop(shared: Rc<Shared>, mut stream: StreamWriter) {
    let mut batch = Vec::new();
    while shared.next_batch(&mut batch).await {
        let write = stream.write_vectored_all(std::mem::take(&mut batch));
        // A write that cannot finish within the request timeout has outlived every request in
        // it; half a frame may be on the wire, so the connection cannot go on.
        match compio::time::timeout(shared.config.request_timeout, write).await {
            Ok(BufResult(Ok(()), mut chunks)) => {
                chunks.clear();
                batch = chunks;
            }
            Ok(BufResult(Err(error), _)) => {
                shared.fail(TransportError::Disconnected { reason: format!("write failed: {error}") });
                return;
            }
            Err(_) => {
                let reason = "write stalled for request_timeout".to_owned();
                shared.fail(TransportError::Disconnected { reason });
                return;
            }
        }
    }
}

/// The reader task: reads into one buffer and delivers every whole response; ends when the
/// stream ends or breaks, or when the connection dies of something else (a failed or stalled
/// write), so that both halves of the socket are dropped and it closes.
async fn read_loop(shared: Rc<Shared>, mut stream: StreamReader) {
    let mut buf = BytesMut::with_capacity(2 * READ_BYTES_MIN);
    loop {
        if buf.capacity() - buf.len() < READ_BYTES_MIN {
            buf.reserve(2 * READ_BYTES_MIN);
        }
        let mut read = pin!(stream.append(buf));
        let read = poll_fn(|cx| {
            {
                let mut state = shared.state.borrow_mut();
                if state.dead.is_some() {
                    return Poll::Ready(None);
                }
                state.reader = Some(cx.waker().clone());
            }
            read.as_mut().poll(cx).map(Some)
        });
        let Some(BufResult(result, returned)) = read.await else { return };
        buf = returned;
        let reason = match result {
            Ok(0) => "closed by the bookie".to_owned(),
            Ok(_) => {
                if shared.deliver(&mut buf) {
                    continue;
                }
                return;
            }
            Err(error) => format!("read failed: {error}"),
        };
        shared.fail(TransportError::Disconnected { reason });
        return;
    }
}
