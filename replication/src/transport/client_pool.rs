//! `ClientPool`: a `Send + Sync` handle on the transport for callers outside compio (tests, the
//! CLI, blocking code, other runtimes).
//!
//! Owns: one I/O thread running a compio runtime that hosts a `BookieClient` per bookie
//! address; the mailbox that carries requests to it (a mutex-guarded queue plus the waker of
//! the runtime's receiving task: pushing wakes the I/O thread, which takes every queued
//! request at once); and `Completion`, the caller's end of one request, completed from the
//! I/O thread.
//! Does not own: connections and their policies (bookie_client.rs, connection.rs).
//!
//! Invariants:
//! - P1: every `Completion` completes exactly once: with the request's outcome, or `Closed`
//!   when the pool closes first (a dropped `Reply` completes its `Completion`).
//! - P2: a request's timeout runs from `submit`, not from when the I/O thread takes it.
//! - P3: once `close` returns, the I/O thread has ended; later submits complete at once with
//!   `Closed`.
//!
//! Memory: requests wait on the I/O thread only while their connection is at `in_flight_max`,
//! each within its timeout, so what waits is bounded by the submit rate times the timeout.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use dlog_protocol::{Request, Response};

use super::bookie_client::BookieClient;
use super::connection::request_timeout;
use super::{ClientConfig, ConfigError, TransportError, now};

/// Why a pool did not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The config is out of bounds.
    #[error("invalid client config: {0}")]
    Config(#[from] ConfigError),
    /// The compio runtime of the I/O thread could not be built.
    #[error("cannot start the client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The I/O thread could not be spawned.
    #[error("cannot spawn the client I/O thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A handle on the transport's I/O thread. Clones share the thread; it stops at `close` or
/// when the last clone is dropped, failing requests still in flight with `Closed`.
#[derive(Clone)]
pub struct ClientPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: ClientConfig,
    mailbox: Arc<Mailbox>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One request for the I/O thread.
struct Command {
    addr: SocketAddr,
    request: Request,
    deadline: Instant,
    reply: Reply,
}

/// Requests on their way to the I/O thread.
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
}

#[derive(Default)]
struct MailboxState {
    commands: VecDeque<Command>,
    /// The I/O thread's receiving task, when it waits.
    waker: Option<Waker>,
    closed: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent data here (plain pushes and
    // takes): go on rather than spread the panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mailbox {
    /// Queues `command` and wakes the I/O thread; gives its reply back when the pool is closed.
    fn push(&self, command: Command) -> Result<(), Reply> {
        let waker = {
            let mut state = lock(&self.state);
            if state.closed {
                return Err(command.reply);
            }
            state.commands.push_back(command);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Waits for commands and moves all of them into `into`; false once closed.
    async fn take_all(&self, into: &mut VecDeque<Command>) -> bool {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.closed {
                return Poll::Ready(false);
            }
            if state.commands.is_empty() {
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            std::mem::swap(&mut state.commands, into);
            Poll::Ready(true)
        })
        .await
    }

    /// Closes the mailbox, wakes the I/O thread, and fails the commands it did not take.
    fn close(&self) {
        let (commands, waker) = {
            let mut state = lock(&self.state);
            state.closed = true;
            (std::mem::take(&mut state.commands), state.waker.take())
        };
        drop(commands); // Their replies complete with `Closed` (P1).
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl ClientPool {
    /// Starts the I/O thread and its compio runtime.
    pub fn new(config: ClientConfig) -> Result<ClientPool, PoolError> {
        config.validate()?;
        let mailbox = Arc::new(Mailbox::default());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dlog-client-io".to_owned())
            .spawn({
                let mailbox = Arc::clone(&mailbox);
                let config = config.clone();
                move || io_thread(mailbox, config, started_tx)
            })
            .map_err(PoolError::Thread)?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(PoolError::Runtime(error));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(PoolError::Runtime(std::io::Error::other("client I/O thread died at start")));
            }
        }
        let inner = PoolInner { config, mailbox, thread: Mutex::new(Some(thread)) };
        Ok(ClientPool { inner: Arc::new(inner) })
    }

    /// Sends `request` to the bookie at `addr` (connecting on first use). The `Completion`
    /// completes within the request's timeout (`ClientConfig::request_timeout`, from now), or
    /// at once with `Closed` when the pool is closed.
    pub fn submit(&self, addr: SocketAddr, request: Request) -> Completion {
        let (reply, completion) = completion_pair();
        let deadline = now() + request_timeout(&self.inner.config, &request);
        if let Err(reply) = self.inner.mailbox.push(Command { addr, request, deadline, reply }) {
            reply.complete(Err(TransportError::Closed));
        }
        completion
    }

    /// Stops the I/O thread and waits for it to end; requests in flight complete with
    /// `Closed`. Idempotent; every clone sees the pool closed.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl PoolInner {
    fn close(&self) {
        self.mailbox.close();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("client I/O thread panicked");
        }
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPool").field("closed", &lock(&self.inner.mailbox.state).closed).finish()
    }
}

/// The I/O thread: a compio runtime taking requests from the mailbox, one task each.
fn io_thread(
    mailbox: Arc<Mailbox>,
    config: ClientConfig,
    started: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    let _ = started.send(Ok(()));
    // However the thread ends (a panic included), later submits must not wait for it.
    let _close_on_exit = CloseOnExit(Arc::clone(&mailbox));
    runtime.block_on(async {
        let mut clients: HashMap<SocketAddr, BookieClient> = HashMap::new();
        let mut commands = VecDeque::new();
        while mailbox.take_all(&mut commands).await {
            for Command { addr, request, deadline, reply } in commands.drain(..) {
                let client = clients
                    .entry(addr)
                    .or_insert_with(|| BookieClient::with_valid_config(addr, config.clone()))
                    .clone();
                compio::runtime::spawn(async move {
                    reply.complete(client.request_until(request, deadline).await);
                })
                .detach();
            }
        }
        for client in clients.values() {
            client.close();
        }
    });
    // Dropping the runtime drops the tasks still running; their replies complete with
    // `Closed` (P1).
    drop(runtime);
}

/// Closes the mailbox when the I/O thread ends, however it ends.
struct CloseOnExit(Arc<Mailbox>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Where a request's outcome meets its caller.
struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<Response, TransportError>>,
    /// Completed (the result may have been taken since).
    finished: bool,
    /// A task awaiting the `Completion`.
    waker: Option<Waker>,
}

fn completion_pair() -> (Reply, Completion) {
    let slot = Arc::new(Slot { state: Mutex::new(SlotState::default()), done: Condvar::new() });
    (Reply { slot: Some(Arc::clone(&slot)) }, Completion { slot })
}

/// The I/O thread's end of a request: completes its `Completion`, with `Closed` when dropped
/// unused (P1).
struct Reply {
    slot: Option<Arc<Slot>>,
}

impl Reply {
    fn complete(mut self, result: Result<Response, TransportError>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<Response, TransportError>) {
        let Some(slot) = self.slot.take() else { return };
        let waker = {
            let mut state = lock(&slot.state);
            state.result = Some(result);
            state.finished = true;
            state.waker.take()
        };
        slot.done.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.finish(Err(TransportError::Closed));
    }
}

/// The outcome of a submitted request: a future (for any executor), or `wait` from a plain
/// thread.
pub struct Completion {
    slot: Arc<Slot>,
}

impl Completion {
    /// Blocks the thread until the request completes (within its timeout, P2).
    pub fn wait(self) -> Result<Response, TransportError> {
        let state = lock(&self.slot.state);
        let mut state =
            self.slot.done.wait_while(state, |state| !state.finished).unwrap_or_else(PoisonError::into_inner);
        state.result.take().unwrap_or(Err(TransportError::Closed))
    }

    /// Blocks the thread until the request completes or `timeout` passes
    /// (`TransportError::Timeout`; the request itself goes on to its own timeout).
    pub fn wait_timeout(self, timeout: Duration) -> Result<Response, TransportError> {
        let state = lock(&self.slot.state);
        let (mut state, _) = self
            .slot
            .done
            .wait_timeout_while(state, timeout, |state| !state.finished)
            .unwrap_or_else(PoisonError::into_inner);
        if !state.finished {
            return Err(TransportError::Timeout);
        }
        state.result.take().unwrap_or(Err(TransportError::Closed))
    }

    /// Whether the request has completed.
    pub fn is_done(&self) -> bool {
        lock(&self.slot.state).finished
    }
}

impl Future for Completion {
    type Output = Result<Response, TransportError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.slot.state);
        if state.finished {
            // Polled again after its result was taken: nothing more will come.
            return Poll::Ready(state.result.take().unwrap_or(Err(TransportError::Closed)));
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion").field("done", &self.is_done()).finish()
    }
}
