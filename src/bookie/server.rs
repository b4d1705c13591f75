//! `BookieServer`: the network threads that put a `Bookie` on TCP.
//!
//! Owns: the listening socket, one network thread per shard (pinned to its shard's CPU, each
//! running a compio runtime: io_uring, or polling where io_uring is unavailable), accepting
//! connections, and the drain at shutdown. TLS and the authenticator are options, handed to
//! every connection.
//! Does not own: a connection's protocol (connection.rs), the engine (the caller opens and
//! closes it), registration (registration.rs), the process (run.rs).
//!
//! Why one shared listening socket rather than SO_REUSEPORT: every network thread keeps an
//! accept pending on the same socket and the kernel hands each connection to one waiter, so
//! connections spread over the threads with no hand-off; SO_REUSEPORT would let any other
//! process of the same user bind the same port and silently take a share of the connections.
//!
//! Invariants:
//! - SV1: after `shutdown` starts, no connection is accepted and no request is read; requests
//!   already read are answered and sent until the drain deadline, then every connection is
//!   closed and every thread has exited before `shutdown` returns.
//! - SV2: a request is never answered by a thread other than the one that read it; the engine's
//!   completion wakes that thread (compio's remote waker).

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use compio::runtime::RuntimeBuilder;
use dlog_engine::{Bookie, ShardId};
use futures_util::future::{Either, select};

use crate::bookie::auth::{AllowAll, Authenticator};
use crate::bookie::config::ServerLimits;
use crate::bookie::connection::{ThreadContext, serve_connection};
use crate::bookie::metrics::CloseReason;
use crate::bookie::segment_owners::PermissionGate;

/// How the server runs.
#[derive(Clone)]
pub struct ServerOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Frame and connection bounds.
    pub limits: ServerLimits,
    /// Network threads (default: one per shard).
    pub threads: Option<u32>,
    /// The AUTH hook.
    pub auth: Arc<dyn Authenticator>,
    /// TLS for every connection (a handshake before the first frame), or plaintext when
    /// `None`. A config that verifies client certificates gives each connection the identity
    /// of its certificate (mutual TLS; `auth::certificate_identity`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The per-namespace permission check (`permissions_file`), or every authenticated
    /// client may do everything when `None`.
    pub permissions: Option<Arc<PermissionGate>>,
}

impl ServerOptions {
    /// Options with the given address and limits, one thread per shard, plaintext, no
    /// authentication.
    pub fn new(listen: SocketAddr, limits: ServerLimits) -> ServerOptions {
        ServerOptions {
            listen,
            limits,
            threads: None,
            auth: Arc::new(AllowAll),
            tls: None,
            permissions: None,
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A network thread could not start its runtime.
    #[error("network thread {thread}: {source}")]
    Thread {
        /// The thread's index.
        thread: u32,
        /// Why.
        source: io::Error,
    },
    /// The limits do not fit the protocol.
    #[error("limits: {0}")]
    Limits(String),
}

/// A thread's stop signal: the deadline for its drain.
type Stop = futures_channel::oneshot::Sender<Duration>;

/// A running server.
pub struct BookieServer {
    addr: SocketAddr,
    threads: Vec<(JoinHandle<()>, Stop)>,
}

impl std::fmt::Debug for BookieServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookieServer")
            .field("addr", &self.addr)
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl BookieServer {
    /// Binds `options.listen` and starts the network threads over `bookie`.
    pub fn start(bookie: Arc<Bookie>, options: ServerOptions) -> Result<BookieServer, ServerError> {
        let protocol = options.limits.protocol();
        protocol.validate().map_err(|e| ServerError::Limits(e.to_string()))?;
        let listener = TcpListener::bind(options.listen)
            .map_err(|source| ServerError::Bind { addr: options.listen, source })?;
        let addr =
            listener.local_addr().map_err(|source| ServerError::Bind { addr: options.listen, source })?;
        let count = options.threads.unwrap_or(bookie.shard_count()).max(1);
        let mut threads = Vec::new();
        for thread in 0..count {
            let listener = listener.try_clone().map_err(|source| ServerError::Thread { thread, source })?;
            let cpu = bookie.shard_cpu(ShardId(thread % bookie.shard_count()));
            let (stop_tx, stop_rx) = futures_channel::oneshot::channel();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (bookie, options) = (bookie.clone(), options.clone());
            let handle = std::thread::Builder::new()
                .name(format!("dlog-net-{thread}"))
                .spawn(move || network_thread(listener, cpu, bookie, options, stop_rx, ready_tx))
                .map_err(|source| ServerError::Thread { thread, source })?;
            let started = ready_rx.recv().unwrap_or_else(|_| Err(io::Error::other("network thread exited")));
            threads.push((handle, stop_tx));
            if let Err(source) = started {
                BookieServer { addr, threads }.shutdown(Duration::ZERO);
                return Err(ServerError::Thread { thread, source });
            }
        }
        tracing::info!(%addr, threads = count, "bookie server listening");
        Ok(BookieServer { addr, threads })
    }

    /// The address the server listens on (with the port chosen, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and reading, answers what was read until `drain` has passed, then
    /// closes every connection and joins the threads (SV1).
    pub fn shutdown(mut self, drain: Duration) {
        self.stop(drain);
    }

    fn stop(&mut self, drain: Duration) {
        for (_, stop) in &mut self.threads {
            let (never, _) = futures_channel::oneshot::channel();
            let _ = std::mem::replace(stop, never).send(drain);
        }
        for (thread, _) in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a network thread panicked");
            }
        }
    }
}

impl Drop for BookieServer {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Counts a connection as live until dropped, whatever ends its task (a panic included: compio
/// catches panics per task), so a drain never waits for a connection that is gone.
struct Live {
    live: Rc<std::cell::Cell<usize>>,
    ctx: Rc<ThreadContext>,
    reason: CloseReason,
}

impl Live {
    fn enter(live: &Rc<std::cell::Cell<usize>>, ctx: &Rc<ThreadContext>) -> Live {
        live.set(live.get() + 1);
        Live { live: live.clone(), ctx: ctx.clone(), reason: CloseReason::Io }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.live.set(self.live.get().saturating_sub(1));
        self.ctx.metrics.closed(self.reason);
    }
}

fn network_thread(
    listener: TcpListener,
    cpu: Option<usize>,
    bookie: Arc<Bookie>,
    options: ServerOptions,
    stop: futures_channel::oneshot::Receiver<Duration>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let mut builder = RuntimeBuilder::new();
    if let Some(cpu) = cpu {
        builder.thread_affinity(HashSet::from([cpu]));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match compio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut ctx = ThreadContext::new(bookie, options.limits, options.auth);
        ctx.tls = options.tls;
        ctx.permissions = options.permissions;
        let ctx = Rc::new(ctx);
        let live = Rc::new(std::cell::Cell::new(0usize));
        let mut stop = stop;
        let deadline = loop {
            match select(std::pin::pin!(listener.accept()), &mut stop).await {
                Either::Left((Ok((stream, peer)), _)) => {
                    tracing::debug!(%peer, "connection accepted");
                    ctx.metrics.opened();
                    let guard = Live::enter(&live, &ctx);
                    let ctx = ctx.clone();
                    compio::runtime::spawn(async move {
                        let mut guard = guard;
                        let reason = serve_connection(stream, ctx).await;
                        tracing::debug!(%peer, ?reason, "connection closed");
                        guard.reason = reason;
                    })
                    .detach();
                }
                Either::Left((Err(error), _)) => {
                    // EMFILE, ECONNABORTED...: keep serving; back off so a persistent error
                    // does not spin.
                    tracing::warn!(%error, "accept failed");
                    compio::time::sleep(Duration::from_millis(10)).await;
                }
                Either::Right((deadline, _)) => break deadline.unwrap_or(Duration::ZERO),
            }
        };
        // Close the socket now (not when the runtime goes), so nothing more queues on it.
        if let Err(error) = listener.close().await {
            tracing::warn!(%error, "closing the listening socket failed");
        }
        ctx.drain.clone().cancel();
        let drained = async {
            while live.get() > 0 {
                compio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        if compio::time::timeout(deadline, drained).await.is_err() {
            tracing::warn!(
                connections = live.get(),
                "drain deadline passed; closing connections with requests in flight"
            );
        }
    });
    // Dropping the runtime cancels whatever is left (SV1).
}
