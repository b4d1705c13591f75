//! `MetadataServer`: serves one `MetadataStore` over TCP to `RemoteStore` clients
//! (`dlog://host:port`).
//!
//! Owns: the listening socket, one task per connection, and on each connection a writer
//! task, one task per call in flight and one per open watch.
//! Does not own: the semantics (every call goes to the store as it came; every answer and
//! error goes back typed), leases (the store's: a connection's end revokes nothing).
//!
//! Invariants (with RM4 and RM5 of mod.rs):
//! - RS1: a connection's calls run concurrently and are answered as they finish, each reply
//!   carrying its request's id; at most `IN_FLIGHT_MAX` at once, beyond which the server
//!   stops reading that connection.
//! - RS2: a watch forwards every event its store `Watch` yields, in order, each revision
//!   whole or split only by `WATCH_BATCH_BYTES` with `complete` on its last part (RM4), then
//!   the error that ended it (`WatchEnd`); a `Cancel` or the connection's end stops it.
//! - RS3: a connection's end (the peer closed, a bad frame, `shutdown`) aborts its calls
//!   and watches and waits for them: nothing a connection started outlives it. `shutdown`
//!   stops accepting and ends every connection before it returns, so by then the server
//!   holds no handle of the store and no socket (the port is free).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::BufReader;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::WATCH_BATCH_BYTES;
use super::codec::{self, IO_BUFFER};
use super::messages::{self, Answer, Call, Empty, EventsMsg, Reply, Request, WatchCall};
use super::{
    ANSWER_BYTES_MAX, HEARTBEAT_INTERVAL, IN_FLIGHT_MAX, REQUEST_BYTES_MAX, SILENCE_MAX, WATCHES_MAX,
};
use crate::error::MetaError;
use crate::store::MetadataStore;
use crate::{LeaseId, Version};

/// Reply frames queued for a connection's writer at most; calls and watches wait beyond (a
/// slow reader slows its own connection only).
const OUTGOING_FRAMES: usize = 256;
/// How long the writer may take to send the closing `Error` after a bad frame.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// A running server (see the module doc). Dropping it stops it as `shutdown` does, without
/// waiting.
#[derive(Debug)]
pub struct MetadataServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MetadataServer {
    /// Listens on `listen` (port 0: any free port, see `local_addr`) and serves `store` from
    /// tasks of the current tokio runtime.
    pub async fn start<S: MetadataStore + 'static>(
        store: Arc<S>,
        listen: SocketAddr,
    ) -> io::Result<MetadataServer> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept(store, listener, stopped));
        tracing::info!(%addr, "metadata server listening");
        Ok(MetadataServer { addr, stop: Some(stop), task: Some(task) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection (calls in flight are abandoned: their
    /// clients answer them `Unavailable`), then returns once every task the server started
    /// has ended: the port is free and the server holds no handle of the store (RS3).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until told to stop, then ends them all (RS3).
async fn accept<S: MetadataStore + 'static>(
    store: Arc<S>,
    listener: TcpListener,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let (stopping, stop) = watch::channel(false);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve(store.clone(), stream, peer, stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, say: let connections end rather than spin.
                    tracing::warn!(error = %e, "metadata server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    drop(store);
    // Each connection ends its calls and watches and waits for them (RS3).
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's state shared by its tasks.
struct Connection<S> {
    store: Arc<S>,
    frames: mpsc::Sender<Bytes>,
    /// Calls and watches running; dropped (aborted) with the connection (RS3).
    work: JoinSet<()>,
    watches: Arc<Mutex<HashMap<u64, AbortHandle>>>,
    permits: Arc<Semaphore>,
}

/// How a connection's reading ended.
enum Ended {
    /// The client closed it.
    Closed,
    /// The server is shutting down.
    Shutdown,
}

/// Serves one connection until it ends (RS1-RS3).
async fn serve<S: MetadataStore + 'static>(
    store: Arc<S>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "metadata server: TCP_NODELAY");
    }
    let (read, write) = stream.into_split();
    let (frames, queue) = mpsc::channel(OUTGOING_FRAMES);
    let heartbeat = reply_frame(0, Ok(Answer::Heartbeat(Empty {})));
    let mut writer = AbortOnDrop(tokio::spawn(codec::write_frames(
        write,
        queue,
        Some((HEARTBEAT_INTERVAL, heartbeat)),
        |_| true,
        // A client that stops reading loses its connection rather than pin its queues.
        Some(SILENCE_MAX),
    )));
    let mut connection = Connection {
        store,
        frames,
        work: JoinSet::new(),
        watches: Arc::new(Mutex::new(HashMap::new())),
        permits: Arc::new(Semaphore::new(IN_FLIGHT_MAX)),
    };
    let end = tokio::select! {
        end = connection.read_requests(read) => end.map(|()| Ended::Closed),
        _ = stop.wait_for(|stop| *stop) => Ok(Ended::Shutdown),
    };
    // The client is gone or misbehaved, or the server stops: nobody waits for the rest (RS3).
    connection.work.shutdown().await;
    match end {
        Ok(Ended::Closed) => tracing::debug!(%peer, "metadata connection closed by the client"),
        Ok(Ended::Shutdown) => {
            writer.0.abort();
            let _ = (&mut writer.0).await;
        }
        Err(why) => {
            tracing::warn!(%peer, %why, "metadata server: bad frame; closing the connection");
            let goodbye = MetaError::Invalid(format!("bad frame: {why}; closing the connection"));
            let frames = connection.frames;
            let flushed = async move {
                if frames.send(reply_frame(0, Err(goodbye))).await.is_ok() {
                    drop(frames);
                    let _ = (&mut writer.0).await;
                }
            };
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, flushed).await;
        }
    }
}

/// A reply as a frame. An answer too large for a frame (a listing without a limit) answers
/// `Invalid` instead.
fn reply_frame(id: u64, answer: Result<Answer, MetaError>) -> Bytes {
    let answer = answer.unwrap_or_else(|e| Answer::Error(messages::to_wire(&e)));
    codec::encode_frame(&Reply { id, answer: Some(answer) }, ANSWER_BYTES_MAX).unwrap_or_else(|len| {
        let e = MetaError::Invalid(format!(
            "an answer of {len} bytes is over the {ANSWER_BYTES_MAX}-byte frame limit (list with a limit)"
        ));
        let reply = Reply { id, answer: Some(Answer::Error(messages::to_wire(&e))) };
        // A few hundred bytes: always fits.
        codec::encode_frame(&reply, ANSWER_BYTES_MAX).unwrap_or_default()
    })
}

impl<S: MetadataStore + 'static> Connection<S> {
    /// Reads and dispatches requests until the client closes (`Ok`) or sends a bad frame
    /// (`Err`, why).
    async fn read_requests(&mut self, read: OwnedReadHalf) -> Result<(), String> {
        let mut reader = BufReader::with_capacity(IO_BUFFER, read);
        codec::read_preamble(&mut reader, None).await.map_err(|e| e.to_string())?;
        loop {
            while self.work.try_join_next().is_some() {}
            let body = match codec::read_frame(&mut reader, REQUEST_BYTES_MAX, None).await {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let request: Request = codec::decode(body).map_err(|e| e.to_string())?;
            let Some(call) = request.call else {
                return Err(format!("request {} of a kind this server does not know", request.id));
            };
            if request.id == 0 {
                return Err("request id 0 (reserved for the server's own messages)".into());
            }
            self.dispatch(request.id, call).await;
        }
    }

    async fn dispatch(&mut self, id: u64, call: Call) {
        let call = match call {
            Call::Cancel(watch) => {
                if let Some(task) = self.watches.lock().unwrap_or_else(PoisonError::into_inner).remove(&watch)
                {
                    task.abort();
                }
                return;
            }
            call => call,
        };
        // RS1: stop reading once IN_FLIGHT_MAX calls run (the semaphore is never closed).
        let Ok(permit) = self.permits.clone().acquire_owned().await else { return };
        let (store, frames) = (self.store.clone(), self.frames.clone());
        if let Call::Watch(watch) = call {
            let refused = {
                let watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
                if watches.contains_key(&id) {
                    Some(format!("watch id {id} is in use"))
                } else if watches.len() >= WATCHES_MAX {
                    Some(format!("more than {WATCHES_MAX} watches on one connection"))
                } else {
                    None
                }
            };
            if let Some(why) = refused {
                let _ = self.frames.send(reply_frame(id, Err(MetaError::Invalid(why)))).await;
                return;
            }
            // Held across the spawn, so the task's own removal (a watch that fails at once)
            // comes after this insertion.
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            let task = self.work.spawn(forward(store, frames, id, watch, permit, self.watches.clone()));
            watches.insert(id, task);
            return;
        }
        self.work.spawn(async move {
            let answer = answer(&*store, call).await;
            let _ = frames.send(reply_frame(id, answer)).await;
            drop(permit);
        });
    }
}

/// Runs one call on the store.
async fn answer<S: MetadataStore>(store: &S, call: Call) -> Result<Answer, MetaError> {
    match call {
        Call::Get(key) => Ok(match store.get(&key).await? {
            Some(v) => Answer::Found(messages::versioned_to_wire(String::new(), v)),
            None => Answer::Absent(Empty {}),
        }),
        Call::Txn(txn) => Ok(Answer::Version(store.txn(messages::ops_from_wire(txn)?).await?.0)),
        Call::List(list) => {
            let limit = usize::try_from(list.limit).unwrap_or(usize::MAX);
            let page = store.list(&list.prefix, list.after.as_deref(), limit).await?;
            Ok(Answer::Page(messages::page_to_wire(page)))
        }
        Call::Grant(grant) => Ok(Answer::Lease(store.grant(messages::ttl_from_wire(&grant)?).await?.0)),
        Call::KeepAlive(lease) => {
            store.keep_alive(LeaseId(lease)).await?;
            Ok(Answer::Done(Empty {}))
        }
        Call::Revoke(lease) => Ok(Answer::Version(store.revoke(LeaseId(lease)).await?.0)),
        // Handled by `dispatch`.
        Call::Watch(_) | Call::Cancel(_) => Err(MetaError::Invalid("not a call".into())),
    }
}

/// Forwards one watch's events until it ends or is cancelled (RS2).
async fn forward<S: MetadataStore>(
    store: Arc<S>,
    frames: mpsc::Sender<Bytes>,
    id: u64,
    call: WatchCall,
    permit: OwnedSemaphorePermit,
    watches: Arc<Mutex<HashMap<u64, AbortHandle>>>,
) {
    let forgotten = || {
        watches.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    };
    let mut watch = match store.watch(&call.prefix, Version(call.from)).await {
        Ok(watch) => watch,
        Err(e) => {
            forgotten();
            let _ = frames.send(reply_frame(id, Err(e))).await;
            return;
        }
    };
    if frames.send(reply_frame(id, Ok(Answer::WatchStarted(watch.resume_from().0)))).await.is_err() {
        return;
    }
    drop(permit);
    let mut events = Vec::new();
    let mut bytes = 0;
    loop {
        match watch.next().await {
            Ok(event) => {
                // `resume_from` moves past a revision only once its last event is out (W1).
                let complete = watch.resume_from() > event.version;
                bytes += event.key.len() + event.value.len();
                events.push(messages::event_to_wire(event));
                if complete || bytes >= WATCH_BATCH_BYTES {
                    let batch = EventsMsg { events: std::mem::take(&mut events), complete };
                    bytes = 0;
                    if frames.send(reply_frame(id, Ok(Answer::Events(batch)))).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                forgotten();
                let _ = frames.send(reply_frame(id, Ok(Answer::WatchEnd(messages::to_wire(&e))))).await;
                return;
            }
        }
    }
}
