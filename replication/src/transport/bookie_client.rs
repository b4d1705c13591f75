//! `BookieClient`: the client of one bookie address, inside one compio runtime (`!Send`).
//!
//! Owns: the connection to the bookie and its life: connecting on demand, replacing a dead
//! connection, and backing off after failed connects (exponential, with jitter, bounded by
//! `ClientConfig::backoff_initial` and `backoff_max`).
//! Does not own: requests on the wire (connection.rs), retrying requests (never done here).
//!
//! Policy while backing off: requests fail fast with `TransportError::Unavailable { until }`,
//! never wait. A bookie that cannot be reached should cost the replication layer nothing but
//! the decision to write elsewhere (an ensemble change), within its own timeout; a request
//! parked until the backoff ends could only time out. The first connect after a connection
//! dies is tried at once (the bookie was reachable a moment ago); each failed connect then
//! doubles the backoff, and a successful one resets it.
//!
//! Invariants:
//! - B1: at most one connect is in progress per client; callers arriving meanwhile wait for
//!   it (within their own deadline) and get its outcome.
//! - B2: a dead connection is never handed out: it is dropped (closing it) and replaced.
//! - B3: the backoff after `n` consecutive failed connects lies in
//!   `[b/2, b]` with `b = min(backoff_initial * 2^(n-1), backoff_max)`, unless `nudge` ends it
//!   early: the owner saw the bookie registered (a sign it may be back; the replication client
//!   nudges a bookie at most once a second), and the next request connects at once; the count
//!   of failures stays, so a bookie still down backs off as long.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dlog_protocol::{Request, Response};

use super::connection::{Connection, check, request_timeout};
use super::slots::Waiters;
use super::{ClientConfig, ConfigError, TransportError, now};

/// The client of one bookie. Cheap to clone (clones share the connection); `!Send`: it lives
/// on the compio runtime that created it.
#[derive(Clone)]
pub struct BookieClient {
    inner: Rc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    config: ClientConfig,
    link: RefCell<Link>,
    /// Callers waiting for a connect in progress.
    waiters: RefCell<Waiters>,
    /// Connects started so far: which attempt a waiter waits for.
    attempts: Cell<u64>,
    /// Consecutive failed connects.
    failures: Cell<u32>,
    /// State of the jitter generator.
    random: Cell<u64>,
}

/// Where the client stands with its bookie.
enum Link {
    /// No connection (never connected, or the last one died): connect at the next request.
    Idle,
    /// Connect `attempt` is running.
    Connecting { attempt: u64 },
    /// Connected.
    Up(Rc<Connection>),
    /// Connect `attempt` failed with `error`; no new connect until `until`.
    Backoff { attempt: u64, until: Instant, error: TransportError },
    /// Closed by its owner.
    Closed,
}

impl BookieClient {
    /// A client of the bookie at `addr`. Connects at the first request, not now; must be used
    /// inside a compio runtime.
    pub fn new(addr: SocketAddr, config: ClientConfig) -> Result<BookieClient, ConfigError> {
        config.validate()?;
        Ok(BookieClient::with_valid_config(addr, config))
    }

    /// `new`, for a config already validated.
    pub(crate) fn with_valid_config(addr: SocketAddr, config: ClientConfig) -> BookieClient {
        let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
        seed.write(addr.to_string().as_bytes());
        let inner = Inner {
            addr,
            config,
            link: RefCell::new(Link::Idle),
            waiters: RefCell::new(Waiters::default()),
            attempts: Cell::new(0),
            failures: Cell::new(0),
            random: Cell::new(seed.finish() | 1),
        };
        BookieClient { inner: Rc::new(inner) }
    }

    /// The bookie's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Sends `request` and waits for its response, connecting first if needed, all within
    /// `ClientConfig::request_timeout` (plus `timeout_ms` for a LONG_POLL). Fails fast with
    /// `Unavailable` while backing off after a failed connect. Never retried: a request that
    /// fails with `Disconnected` or `Timeout` may or may not have been done by the bookie.
    pub async fn request(&self, request: Request) -> Result<Response, TransportError> {
        let deadline = now() + request_timeout(&self.inner.config, &request);
        self.request_until(request, deadline).await
    }

    /// `request`, ending with `TransportError::Timeout` at `deadline`.
    pub(crate) async fn request_until(
        &self,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        check(&request, &self.inner.config)?;
        let connection = match compio::time::timeout_at(deadline, self.connection()).await {
            Ok(connection) => connection?,
            Err(_) => return Err(TransportError::Timeout),
        };
        connection.request_until(request, deadline).await
    }

    /// A live connection: the current one, or a new one once connected (connecting or
    /// failing fast while backing off, as `request` does). For shells that `submit` on the
    /// connection themselves.
    pub async fn connected(&self) -> Result<Rc<Connection>, TransportError> {
        let deadline = now() + self.inner.config.connect_timeout;
        match compio::time::timeout_at(deadline, self.connection()).await {
            Ok(connection) => connection,
            Err(_) => Err(TransportError::Timeout),
        }
    }

    /// The live connection, if one is open now (no connect is started).
    pub fn live(&self) -> Option<Rc<Connection>> {
        match &*self.inner.link.borrow() {
            Link::Up(connection) if !connection.is_dead() => Some(connection.clone()),
            _ => None,
        }
    }

    /// Ends a backoff now (B3): the next request connects at once. For the owner that saw the
    /// bookie registered.
    pub fn nudge(&self) {
        let mut link = self.inner.link.borrow_mut();
        if matches!(&*link, Link::Backoff { .. }) {
            *link = Link::Idle;
        }
    }

    /// Whether a live connection is open now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.link.borrow(), Link::Up(connection) if !connection.is_dead())
    }

    /// Closes the client: its connection closes (requests in flight fail with `Closed`), and
    /// later requests fail with `Closed`.
    pub fn close(&self) {
        let old = std::mem::replace(&mut *self.inner.link.borrow_mut(), Link::Closed);
        if let Link::Up(connection) = old {
            connection.close();
        }
        self.inner.waiters.borrow().wake_all();
    }

    /// A live connection: the current one, or a new one (B1, B2).
    fn connection(&self) -> AwaitLink<'_> {
        AwaitLink { inner: &self.inner, waiting: None }
    }
}

/// Waits for a live connection, starting a connect when there is none (B1, B2).
struct AwaitLink<'a> {
    inner: &'a Rc<Inner>,
    /// Our ticket among the waiters, and the connect attempt we wait for.
    waiting: Option<(u64, u64)>,
}

impl Future for AwaitLink<'_> {
    type Output = Result<Rc<Connection>, TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let inner = this.inner;
        let waited_for = this.waiting.map(|(_, attempt)| attempt);
        let mut link = inner.link.borrow_mut();
        let outcome = match &*link {
            Link::Up(connection) if !connection.is_dead() => Ok(Rc::clone(connection)),
            Link::Closed => Err(TransportError::Closed),
            Link::Backoff { attempt, error, .. } if waited_for == Some(*attempt) => Err(error.clone()),
            Link::Backoff { until, .. } if now() < *until => {
                Err(TransportError::Unavailable { until: *until })
            }
            Link::Connecting { attempt } => return this.wait(cx, *attempt),
            Link::Up(_) | Link::Idle | Link::Backoff { .. } => {
                // Dead, never connected, or the backoff is over: connect now. The old
                // connection, if any, is dropped here (closing it).
                let attempt = inner.attempts.get() + 1;
                inner.attempts.set(attempt);
                *link = Link::Connecting { attempt };
                drop(link);
                compio::runtime::spawn(connect(Rc::downgrade(inner), attempt)).detach();
                return this.wait(cx, attempt);
            }
        };
        drop(link);
        if let Some((ticket, _)) = this.waiting.take() {
            inner.waiters.borrow_mut().leave(ticket);
        }
        Poll::Ready(outcome)
    }
}

impl AwaitLink<'_> {
    /// Waits (in line) for the outcome of connect `attempt`.
    fn wait(&mut self, cx: &mut Context<'_>, attempt: u64) -> Poll<Result<Rc<Connection>, TransportError>> {
        let mut waiters = self.inner.waiters.borrow_mut();
        match self.waiting {
            Some((ticket, _)) => {
                waiters.update(ticket, cx.waker());
                self.waiting = Some((ticket, attempt));
            }
            None => self.waiting = Some((waiters.join(cx.waker()), attempt)),
        }
        Poll::Pending
    }
}

impl Drop for AwaitLink<'_> {
    fn drop(&mut self) {
        if let Some((ticket, _)) = self.waiting.take() {
            self.inner.waiters.borrow_mut().leave(ticket);
        }
    }
}

impl std::fmt::Debug for BookieClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookieClient")
            .field("addr", &self.inner.addr)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// The connect task of `attempt`: connects, then records the outcome and wakes the waiters.
async fn connect(inner: Weak<Inner>, attempt: u64) {
    let Some((addr, config)) = inner.upgrade().map(|inner| (inner.addr, inner.config.clone())) else {
        return;
    };
    let result = Connection::connect(addr, &config).await;
    // The client may have been dropped or closed meanwhile: the new connection then closes.
    let Some(inner) = inner.upgrade() else { return };
    {
        let mut link = inner.link.borrow_mut();
        if !matches!(&*link, Link::Connecting { attempt: current } if *current == attempt) {
            return;
        }
        *link = match result {
            Ok(connection) => {
                inner.failures.set(0);
                Link::Up(Rc::new(connection))
            }
            Err(error) => {
                let failures = inner.failures.get();
                inner.failures.set(failures.saturating_add(1));
                let delay = backoff_delay(&config, failures, inner.next_random());
                tracing::warn!(%addr, %error, ?delay, "connect to bookie failed: backing off");
                Link::Backoff { attempt, until: now() + delay, error }
            }
        };
    }
    inner.waiters.borrow().wake_all();
}

impl Inner {
    /// The next value of a xorshift64* generator: jitter, not cryptography.
    fn next_random(&self) -> u64 {
        let mut x = self.random.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The backoff after `failures + 1` consecutive failed connects (B3): half the exponential
/// base, plus a random part of the other half ("equal jitter": never zero, never in step with
/// the other clients of a bookie that went away).
pub(crate) fn backoff_delay(config: &ClientConfig, failures: u32, random: u64) -> Duration {
    let base = config.backoff_initial.saturating_mul(1 << failures.min(30)).min(config.backoff_max);
    let half = base / 2;
    let spread = u64::try_from((base - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random % spread.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let config = ClientConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..ClientConfig::default()
        };
        for random in [0, 1, 12_345, u64::MAX] {
            let delays: Vec<Duration> = (0..40).map(|n| backoff_delay(&config, n, random)).collect();
            assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
            assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
            for delay in &delays {
                assert!(*delay >= Duration::from_millis(50) && *delay <= Duration::from_secs(1), "{delay:?}");
            }
            assert!(delays[39] >= Duration::from_millis(500));
        }
    }
}
