//! `RemoteStore`: the `MetadataStore` contract over a connection to a `MetadataServer`
//! (`dlog://host:port`).
//!
//! Owns: one connection at a time (RM2): a writer task fed frames by callers, a reader task
//! that routes each answer to its call by request id and each watch's events to its watch
//! task; the calls in flight; and one task per watch that follows it across connections
//! (RM3).
//! Does not own: the semantics (the served store's); retries of calls (RM1: a call is sent
//! once, its caller decides).
//!
//! Invariants (with RM1-RM4 of mod.rs):
//! - RC1: a call in flight is answered exactly once: by its answer, by `Unavailable` when its
//!   connection fails (`Shared::fail` answers every registered call), or by its timeout; a
//!   call registered on a connection that already failed is refused at once, so none waits
//!   for an answer that cannot come.
//! - RC2: the connection's tasks hold only `Shared`, never the `Conn`, so dropping the last
//!   `Conn` (the store and every watch on it) fails it and aborts its tasks: no task
//!   outlives its users.
//! - RC3: a watch task hands events to its `Watch` only a whole revision at a time, and only
//!   events at or past its resume point, so a revision split over messages, or a connection
//!   lost in the middle of one, is never half delivered (RM4, W1).
//! - RC4: a call's frame is written only while its caller still waits: one that timed out
//!   (told "in doubt") and still queued is dropped, not applied later behind the caller's back.
//!   (A frame already written may still be applied late: the server does not know deadlines.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, error::TrySendError};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::codec::{self, FrameError};
use super::messages::{self, Answer, Call, ListCall, Reply, Request, WatchCall};
use super::{ANSWER_BYTES_MAX, CONNECT_TIMEOUT, REQUEST_BYTES_MAX, REQUEST_TIMEOUT, SILENCE_MAX};
use super::{WATCH_BACKOFF_MAX, codec::IO_BUFFER};
use crate::error::MetaError;
use crate::metadata_uri::MetadataUri;
use crate::store::{MetadataStore, check_ops};
use crate::watch::{self, Watch, WatchSender};
use crate::{Event, LeaseId, Op, Page, Version, Versioned};

/// Frames queued for the writer at most; callers wait (within their timeout) beyond.
const OUTGOING_FRAMES: usize = 1024;
/// How often a watch task checks that its `Watch` still exists while the stream is quiet.
const WATCH_CHECK: Duration = Duration::from_millis(250);
/// First pause before watching again after a lost connection (doubles up to
/// `WATCH_BACKOFF_MAX`).
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// A metadata store served by a `MetadataServer` (see the module doc). Clones share one
/// connection.
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore").field("addr", &self.inner.addr).finish_non_exhaustive()
    }
}

struct Inner {
    /// `host:port` of the server.
    addr: String,
    /// The connection, once opened; replaced at the first call after it failed (RM2).
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Request (and watch) ids: never 0 (the server's connection-level messages), never reused.
    ids: AtomicU64,
}

/// One connection: the way to its writer, and its state shared with its tasks (RC2).
struct Conn {
    shared: Arc<Shared>,
    frames: mpsc::Sender<OutFrame>,
}

/// A frame on its way to the server, with the call it carries (`None`: a cancel). A call's
/// frame whose caller stopped waiting (timed out) is not sent (RC4): a write sent after its
/// caller was told "in doubt" could land long after it read back and acted.
#[derive(Clone)]
struct OutFrame {
    call: Option<u64>,
    bytes: Bytes,
}

impl AsRef<[u8]> for OutFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// What a connection's reader and callers share.
struct Shared {
    addr: String,
    state: Mutex<State>,
}

type AnswerTx = oneshot::Sender<Result<Answer, MetaError>>;

#[derive(Default)]
struct State {
    /// Why the connection failed; nothing is registered once set (RC1).
    dead: Option<String>,
    /// Calls waiting for their answer, by request id.
    pending: HashMap<u64, AnswerTx>,
    /// Watches' streams, by watch id.
    watches: HashMap<u64, UnboundedSender<WatchMsg>>,
    /// The reader and writer tasks, aborted when the connection fails.
    tasks: Vec<AbortHandle>,
}

/// What the reader hands a watch task.
enum WatchMsg {
    /// Events in revision order; `true`: the last one ends its revision.
    Events(Vec<Event>, bool),
    /// The served store ended the watch.
    End(MetaError),
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unexpected(call: &str, answer: &Answer) -> MetaError {
    let kind = answer.kind();
    MetaError::Unavailable(format!("metadata server answered {kind} to a {call}; the call is in doubt"))
}

impl Shared {
    fn unavailable(&self, why: &str) -> MetaError {
        MetaError::Unavailable(format!("metadata server {}: {why}", self.addr))
    }

    /// Registers a call (RC1); its answer arrives on the receiver.
    fn register(
        self: &Arc<Self>,
        id: u64,
    ) -> Result<(oneshot::Receiver<Result<Answer, MetaError>>, Registered), MetaError> {
        let (tx, rx) = oneshot::channel();
        let mut state = lock(&self.state);
        if let Some(why) = &state.dead {
            return Err(self.unavailable(why));
        }
        state.pending.insert(id, tx);
        Ok((rx, Registered { shared: self.clone(), id }))
    }

    fn add_watch(&self, id: u64, events: UnboundedSender<WatchMsg>) -> Result<(), MetaError> {
        let mut state = lock(&self.state);
        if let Some(why) = &state.dead {
            return Err(self.unavailable(why));
        }
        state.watches.insert(id, events);
        Ok(())
    }

    fn answer(&self, id: u64, answer: Result<Answer, MetaError>) {
        // None: the call timed out and left; its answer is dropped.
        if let Some(tx) = lock(&self.state).pending.remove(&id) {
            let _ = tx.send(answer);
        }
    }

    fn to_watch(&self, id: u64, msg: WatchMsg) {
        let mut state = lock(&self.state);
        let end = matches!(msg, WatchMsg::End(_));
        // None: a watch cancelled, whose events were already on their way.
        if let Some(events) = state.watches.get(&id) {
            let _ = events.send(msg);
        }
        if end {
            state.watches.remove(&id);
        }
    }

    fn is_dead(&self) -> bool {
        lock(&self.state).dead.is_some()
    }

    fn set_tasks(&self, tasks: Vec<AbortHandle>) {
        let mut state = lock(&self.state);
        if state.dead.is_some() {
            tasks.iter().for_each(AbortHandle::abort);
        } else {
            state.tasks = tasks;
        }
    }

    /// The connection is over: every call in flight answers `Unavailable`, every watch
    /// stream ends (its task watches again elsewhere), the tasks stop (RC1, RC2).
    fn fail(&self, why: String) {
        let (pending, watches, tasks) = {
            let mut state = lock(&self.state);
            if state.dead.is_some() {
                return;
            }
            tracing::debug!(addr = %self.addr, %why, "metadata connection closed");
            state.dead = Some(why.clone());
            let state = &mut *state;
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.watches),
                std::mem::take(&mut state.tasks),
            )
        };
        let error = self.unavailable(&format!("connection lost ({why}); a call in flight is in doubt"));
        for (_, tx) in pending {
            let _ = tx.send(Err(error.clone()));
        }
        drop(watches);
        tasks.iter().for_each(AbortHandle::abort);
    }
}

/// A registered call: leaves the table when its caller does (a timeout).
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.shared.state).pending.remove(&self.id);
    }
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, MetaError> {
        let failed = |why: String| MetaError::Unavailable(format!("metadata server {addr}: {why}"));
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(failed(format!("cannot connect: {e}"))),
            Err(_) => return Err(failed(format!("no connection within {CONNECT_TIMEOUT:?}"))),
        };
        stream.set_nodelay(true).map_err(|e| failed(format!("TCP_NODELAY: {e}")))?;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared { addr: addr.to_string(), state: Mutex::new(State::default()) });
        let (frames, queue) = mpsc::channel(OUTGOING_FRAMES);
        let writer = tokio::spawn({
            let shared = shared.clone();
            async move {
                let waited = shared.clone();
                let keep =
                    move |f: &OutFrame| f.call.is_none_or(|id| lock(&waited.state).pending.contains_key(&id));
                if let Err(e) = codec::write_frames(write, queue, None, keep, Some(SILENCE_MAX)).await {
                    shared.fail(format!("write failed: {e}"));
                }
            }
        });
        let reader = tokio::spawn({
            let shared = shared.clone();
            async move {
                let why = read_replies(read, &shared).await;
                shared.fail(why);
            }
        });
        shared.set_tasks(vec![reader.abort_handle(), writer.abort_handle()]);
        Ok(Conn { shared, frames })
    }

    async fn send(&self, id: u64, frame: Bytes) -> Result<(), MetaError> {
        if self.frames.send(OutFrame { call: Some(id), bytes: frame }).await.is_err() {
            let why = lock(&self.shared.state).dead.clone().unwrap_or_else(|| "writer stopped".into());
            return Err(self.shared.unavailable(&why));
        }
        Ok(())
    }

    /// Tells the server to stop watch `id`, without waiting.
    fn cancel(&self, id: u64) {
        lock(&self.shared.state).watches.remove(&id);
        if self.shared.is_dead() {
            return;
        }
        let Ok(frame) = codec::encode_frame(&Request { id, call: Some(Call::Cancel(id)) }, REQUEST_BYTES_MAX)
        else {
            return;
        };
        if let Err(TrySendError::Full(frame)) = self.frames.try_send(OutFrame { call: None, bytes: frame })
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let frames = self.frames.clone();
            runtime.spawn(async move {
                let _ = frames.send(frame).await;
            });
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.fail("closed by the client".into());
    }
}

/// Reads the server's frames and routes them until the connection ends; why it ended.
async fn read_replies(read: OwnedReadHalf, shared: &Shared) -> String {
    let mut reader = BufReader::with_capacity(IO_BUFFER, read);
    if let Err(e) = codec::read_preamble(&mut reader, Some(SILENCE_MAX)).await {
        return format!("no preamble: {e}");
    }
    loop {
        let body = match codec::read_frame(&mut reader, ANSWER_BYTES_MAX, Some(SILENCE_MAX)).await {
            Ok(Some(body)) => body,
            Ok(None) => return "the server closed the connection".into(),
            Err(e) => return format!("bad frame from the server: {e}"),
        };
        let reply: Reply = match codec::decode(body) {
            Ok(reply) => reply,
            Err(e @ FrameError::Undecodable(_)) => return format!("bad frame from the server: {e}"),
            Err(e) => return e.to_string(),
        };
        let id = reply.id;
        match reply.answer {
            None => return format!("a reply (id {id}) of a kind this build does not know"),
            Some(Answer::Heartbeat(_)) => {}
            Some(Answer::Error(e)) if id == 0 => {
                return format!("the server closed the connection: {}", messages::from_wire(e));
            }
            Some(Answer::Error(e)) => shared.answer(id, Err(messages::from_wire(e))),
            Some(Answer::Events(batch)) => {
                let count = batch.events.len();
                let events: Vec<Event> =
                    batch.events.into_iter().filter_map(messages::event_from_wire).collect();
                if events.len() != count {
                    return format!("watch {id}: an event of a kind this build does not know");
                }
                shared.to_watch(id, WatchMsg::Events(events, batch.complete));
            }
            Some(Answer::WatchEnd(e)) => shared.to_watch(id, WatchMsg::End(messages::from_wire(e))),
            Some(answer) => shared.answer(id, Ok(answer)),
        }
    }
}

impl Inner {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The open connection, or a new one (RM2).
    async fn connection(&self) -> Result<Arc<Conn>, MetaError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.shared.is_dead()
        {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = Arc::new(Conn::open(&self.addr).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn encode(&self, id: u64, call: Call) -> Result<Bytes, MetaError> {
        codec::encode_frame(&Request { id, call: Some(call) }, REQUEST_BYTES_MAX).map_err(|len| {
            MetaError::Invalid(format!("a request of {len} bytes is over the {REQUEST_BYTES_MAX}-byte limit"))
        })
    }

    /// Sends `call` once and awaits its answer, bounded by `REQUEST_TIMEOUT` (RM1).
    async fn call(&self, call: Call) -> Result<Answer, MetaError> {
        runtime()?;
        let unbounded = async {
            let id = self.next_id();
            let frame = self.encode(id, call)?;
            let conn = self.connection().await?;
            let (answer, _registered) = conn.shared.register(id)?;
            conn.send(id, frame).await?;
            match answer.await {
                Ok(answer) => answer,
                Err(_) => Err(conn.shared.unavailable("connection lost; a call in flight is in doubt")),
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, unbounded).await {
            Ok(answer) => answer,
            Err(_) => Err(MetaError::Unavailable(format!(
                "metadata server {}: no answer within {REQUEST_TIMEOUT:?}; the call is in doubt",
                self.addr
            ))),
        }
    }

    /// Starts watching `prefix` from `from` on the current connection (a new one if needed),
    /// bounded by `REQUEST_TIMEOUT`.
    async fn subscribe(&self, prefix: &str, from: Version) -> Result<Subscription, MetaError> {
        let unbounded = async {
            let id = self.next_id();
            let frame =
                self.encode(id, Call::Watch(WatchCall { prefix: prefix.to_string(), from: from.0 }))?;
            let conn = self.connection().await?;
            let (tx, events) = mpsc::unbounded_channel();
            conn.shared.add_watch(id, tx)?;
            // From here on, leaving (an error, the timeout) cancels the watch on the server.
            let mut subscription = Subscription { conn: conn.clone(), id, events, start: from };
            let (answer, _registered) = conn.shared.register(id)?;
            conn.send(id, frame).await?;
            match answer.await {
                Ok(Ok(Answer::WatchStarted(start))) => {
                    subscription.start = Version(start);
                    Ok(subscription)
                }
                Ok(Ok(other)) => Err(unexpected("watch", &other)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(conn.shared.unavailable("connection lost")),
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, unbounded).await {
            Ok(subscription) => subscription,
            Err(_) => Err(MetaError::Unavailable(format!(
                "metadata server {}: watch not started within {REQUEST_TIMEOUT:?}",
                self.addr
            ))),
        }
    }
}

/// A tokio runtime to run on, or `Invalid` (rather than tokio's panic).
fn runtime() -> Result<(), MetaError> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| MetaError::Invalid("RemoteStore is used outside a tokio runtime".into()))
}

/// A watch registered on one connection; cancelled on the server when dropped.
struct Subscription {
    conn: Arc<Conn>,
    id: u64,
    events: UnboundedReceiver<WatchMsg>,
    /// The version the server's watch started at.
    start: Version,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.conn.cancel(self.id);
    }
}

impl RemoteStore {
    /// Connects to `dlog://host:port`. The connection is made now (an unreachable server is
    /// `Unavailable`), and made again at the first call after it fails (RM2).
    pub async fn connect(uri: &str) -> Result<RemoteStore, MetaError> {
        match MetadataUri::parse(uri)? {
            MetadataUri::Remote(addr) => RemoteStore::connect_to(&addr).await,
            _ => Err(MetaError::Invalid(format!("metadata URI {uri:?}: expected dlog://host:port"))),
        }
    }

    /// `connect` to `host:port`.
    pub async fn connect_to(addr: &str) -> Result<RemoteStore, MetaError> {
        runtime()?;
        let store = RemoteStore {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                conn: tokio::sync::Mutex::new(None),
                ids: AtomicU64::new(1),
            }),
        };
        tokio::time::timeout(REQUEST_TIMEOUT, store.inner.connection())
            .await
            .map_err(|_| MetaError::Unavailable(format!("metadata server {addr}: no connection")))??;
        Ok(store)
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }
}

impl MetadataStore for RemoteStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, MetaError> {
        match self.inner.call(Call::Get(key.to_string())).await? {
            Answer::Found(kv) => Ok(Some(messages::versioned_from_wire(kv).1)),
            Answer::Absent(_) => Ok(None),
            other => Err(unexpected("get", &other)),
        }
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Version, MetaError> {
        // Refused here as by every backend, before anything is sent.
        check_ops(&ops)?;
        match self.inner.call(Call::Txn(messages::ops_to_wire(ops))).await? {
            Answer::Version(v) => Ok(Version(v)),
            other => Err(unexpected("txn", &other)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page, MetaError> {
        let call =
            ListCall { prefix: prefix.to_string(), after: after.map(str::to_string), limit: limit as u64 };
        match self.inner.call(Call::List(call)).await? {
            Answer::Page(page) => Ok(messages::page_from_wire(page)),
            other => Err(unexpected("list", &other)),
        }
    }

    async fn watch(&self, prefix: &str, from: Version) -> Result<Watch, MetaError> {
        runtime()?;
        let subscription = self.inner.subscribe(prefix, from).await?;
        let (events, watch) = watch::channel(subscription.start);
        let task = WatchTask {
            inner: self.inner.clone(),
            prefix: prefix.to_string(),
            next: subscription.start,
            events,
        };
        tokio::spawn(task.run(subscription));
        Ok(watch)
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        match self.inner.call(Call::Grant(messages::ttl_to_wire(ttl))).await? {
            Answer::Lease(id) => Ok(LeaseId(id)),
            other => Err(unexpected("grant", &other)),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        match self.inner.call(Call::KeepAlive(lease.0)).await? {
            Answer::Done(_) => Ok(()),
            other => Err(unexpected("keep_alive", &other)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<Version, MetaError> {
        match self.inner.call(Call::Revoke(lease.0)).await? {
            Answer::Version(v) => Ok(Version(v)),
            other => Err(unexpected("revoke", &other)),
        }
    }
}

/// Feeds one `Watch`, across connections (RM3).
struct WatchTask {
    inner: Arc<Inner>,
    prefix: String,
    /// The first revision not yet handed on whole.
    next: Version,
    events: WatchSender,
}

/// How following one subscription ended.
enum Followed {
    /// The `Watch` was dropped.
    Gone,
    /// The served store ended the watch with this error.
    Ended(MetaError),
    /// The connection was lost: watch again.
    Lost,
}

impl WatchTask {
    async fn run(mut self, first: Subscription) {
        let mut subscription = Some(first);
        let mut backoff = WATCH_BACKOFF_MIN;
        loop {
            if let Some(current) = subscription.take() {
                match self.follow(current).await {
                    Followed::Gone => return,
                    Followed::Ended(e) => {
                        self.events.fail(e);
                        return;
                    }
                    Followed::Lost => {}
                }
            }
            if self.events.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
            match self.inner.subscribe(&self.prefix, self.next).await {
                Ok(again) => {
                    backoff = WATCH_BACKOFF_MIN;
                    subscription = Some(again);
                }
                Err(MetaError::Unavailable(why)) => {
                    tracing::debug!(prefix = %self.prefix, next = self.next.0, %why, "watch reconnecting");
                }
                Err(e) => {
                    self.events.fail(e);
                    return;
                }
            }
        }
    }

    /// Hands on the events of one subscription, a whole revision at a time (RC3).
    async fn follow(&mut self, mut subscription: Subscription) -> Followed {
        let mut revision: Vec<Event> = Vec::new();
        let mut check = tokio::time::interval(WATCH_CHECK);
        loop {
            tokio::select! {
                msg = subscription.events.recv() => match msg {
                    Some(WatchMsg::Events(events, complete)) => {
                        let next = self.next;
                        revision.extend(events.into_iter().filter(|e| e.version >= next));
                        if complete && let Some(last) = revision.last().map(|e| e.version) {
                            if !self.events.send_all(&revision) {
                                return Followed::Gone;
                            }
                            self.next = Version(last.0.saturating_add(1));
                            revision.clear();
                        }
                    }
                    Some(WatchMsg::End(e)) => return Followed::Ended(e),
                    None => return Followed::Lost,
                },
                _ = check.tick() => {
                    if self.events.is_closed() {
                        return Followed::Gone;
                    }
                }
            }
        }
    }
}
