//! The client transport: the client side of the bookie wire protocol (docs/protocol.md).
//!
//! Owns: TCP connections to bookies, request ids, pipelining, per-request timeouts, the bound on
//! requests in flight, reconnecting with backoff, and a thread-safe handle for callers outside a
//! compio runtime. Three layers, bottom up:
//! - `Connection` (connection.rs): one pipelined connection, compio-native (`!Send`): a writer
//!   task sends every queued frame in one vectored write, a reader task matches responses to
//!   requests by id, in any order.
//! - `BookieClient` (bookie_client.rs): one bookie address; holds a `Connection`, reconnects on
//!   demand with exponential backoff and jitter, and fails fast while backing off.
//! - `ClientPool` (client_pool.rs): `Send + Sync`; one I/O thread running a compio runtime that
//!   hosts a `BookieClient` per address; `submit` returns a `Completion` (a future, or `wait`).
//!
//! Under `Connection`, tls.rs puts TLS (rustls) on the socket when `ClientConfig::security`
//! asks for it, and security.rs loads the certificates and the token (default: plaintext, no
//! AUTH step); the bookie server uses the same TLS stream.
//!
//! Does not own: what a status means (a refusal is `Ok(Response::Refused { .. })`, for the
//! replication cores to judge), retries of failed requests (never automatic: only the caller
//! knows whether a request may be sent twice), the codec (`dlog-protocol`).
//!
//! Invariants:
//! - T1: every request ends, within its timeout, in exactly one answer: its response, or a
//!   typed `TransportError`; nothing the peer sends can panic or hang a caller.
//! - T2: at most `in_flight_max` requests per connection are registered (sent or queued); a
//!   caller beyond waits for room, in arrival order, within its own timeout.
//! - T3: a request that ends early (timeout, dropped future) gives its slot back at once; if
//!   it was not sent yet, it never is.

mod bookie_client;
mod client_pool;
mod connection;
mod error;
pub mod security;
mod slots;
pub mod tls;

use std::time::{Duration, Instant};

pub use bookie_client::BookieClient;
pub use client_pool::{ClientPool, Completion, PoolError};
pub use connection::{Connection, ConnectionStats};
use dlog_protocol::{Limits, LimitsError};
pub use error::TransportError;
pub use security::{AuthToken, ClientSecurity, ClientTls, MECHANISM_TOKEN, TlsFileError, TokenError};

/// How clients connect, wait and back off. `ClientConfig::default()` suits a LAN cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest wait for a TCP connection to be established. Default 2 s.
    pub connect_timeout: Duration,
    /// Longest time a request may take, from the call to its response, waiting for room and
    /// (for a `BookieClient`) for the connection included. A LONG_POLL gets its own
    /// `timeout_ms` on top. Default 5 s (BookKeeper's add and read timeouts).
    pub request_timeout: Duration,
    /// Most requests registered on one connection (queued or sent, not yet answered). Callers
    /// beyond wait for room. Default 4096; at least 1.
    pub in_flight_max: usize,
    /// Backoff after the first failed reconnect; doubled per further failure. Default 100 ms.
    pub backoff_initial: Duration,
    /// Longest backoff. Default 2 s (a restarted bookie is back within seconds; a reader
    /// retries for about 3 s); at least `backoff_initial`.
    pub backoff_max: Duration,
    /// The codec limits, the same as the bookies'. Requests over them are refused before
    /// sending (`TransportError::TooLarge`); responses over them are malformed.
    pub limits: Limits,
    /// TLS and the token to authenticate with. Default: plaintext, no AUTH step. The TLS
    /// handshake and the AUTH step each get `connect_timeout`.
    pub security: ClientSecurity,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            in_flight_max: 4096,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            limits: Limits::default(),
            security: ClientSecurity::default(),
        }
    }
}

/// A `ClientConfig` field out of bounds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration or count that must be positive is zero.
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    /// `backoff_max` is below `backoff_initial`.
    #[error("backoff_max {max:?} is below backoff_initial {initial:?}")]
    BackoffMaxBelowInitial {
        /// The configured `backoff_initial`.
        initial: Duration,
        /// The configured `backoff_max`.
        max: Duration,
    },
    /// The codec limits do not fit together.
    #[error("limits: {0}")]
    Limits(#[from] LimitsError),
}

impl ClientConfig {
    /// Checks every field, naming the first one out of bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            (self.connect_timeout.is_zero(), "connect_timeout"),
            (self.request_timeout.is_zero(), "request_timeout"),
            (self.in_flight_max == 0, "in_flight_max"),
            (self.backoff_initial.is_zero(), "backoff_initial"),
        ];
        if let Some((_, field)) = zero.into_iter().find(|(is_zero, _)| *is_zero) {
            return Err(ConfigError::Zero(field));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(ConfigError::BackoffMaxBelowInitial {
                initial: self.backoff_initial,
                max: self.backoff_max,
            });
        }
        self.limits.validate()?;
        Ok(())
    }
}

/// The clock of the transport (a shell): deadlines and backoff ends.
#[expect(clippy::disallowed_methods, reason = "the transport is a shell and owns the real clock")]
pub(crate) fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ClientConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_fields_are_named() {
        let config = ClientConfig { in_flight_max: 0, ..ClientConfig::default() };
        assert_eq!(config.validate(), Err(ConfigError::Zero("in_flight_max")));
        let config = ClientConfig { request_timeout: Duration::ZERO, ..ClientConfig::default() };
        assert_eq!(config.validate(), Err(ConfigError::Zero("request_timeout")));
        let config = ClientConfig { backoff_max: Duration::from_millis(1), ..ClientConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::BackoffMaxBelowInitial { .. })));
        let limits = Limits { entry_bytes_max: 0, ..Limits::default() };
        let config = ClientConfig { limits, ..ClientConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::Limits(_))));
    }
}
