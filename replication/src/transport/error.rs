//! `TransportError`: why a request got no response from a bookie.
//!
//! Owns: the transport's failure kinds, each saying what the caller may do next.
//! Does not own: refusals. A response with a status other than `Ok` is a response
//! (`Ok(Response::Refused { .. })`), never a `TransportError`: what a status means is for the
//! replication cores to decide.
//!
//! Invariants:
//! - R1: errors are `Clone`, so one failure (a lost connection) can be handed to every request
//!   it ends; I/O errors are shared behind an `Arc` for that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dlog_protocol::DecodeError;

use super::ConfigError;

/// A request that ended without a response.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TransportError {
    /// No response within the request's timeout (`ClientConfig::request_timeout`), waiting
    /// for room and for the connection included. The request may or may not have been done
    /// by the bookie.
    #[error("request timed out")]
    Timeout,
    /// The connection was lost (closed by the peer, an I/O error, a stalled write) with the
    /// request in flight, or before it. The request may or may not have been done.
    #[error("connection lost: {reason}")]
    Disconnected {
        /// What happened, for people.
        reason: String,
    },
    /// Connecting to the bookie failed (refused, unreachable, or `connect_timeout` passed).
    /// The request was not sent.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The bookie.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The TLS handshake with the bookie failed: its certificate is not trusted or not for
    /// its address, or it refused ours, or it does not speak TLS. The request was not sent.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// The bookie.
        addr: SocketAddr,
        /// Why, for people.
        reason: String,
    },
    /// The bookie refused the client's credentials: its AUTH step answered `Unauthorized`
    /// (a wrong or unknown token, a mechanism it does not take). The request was not sent.
    #[error("bookie {addr} refused authentication: {reason}")]
    Unauthorized {
        /// The bookie.
        addr: SocketAddr,
        /// The bookie's message.
        reason: String,
    },
    /// `Connection::submit` found `in_flight_max` requests in flight (or callers waiting for
    /// room): nothing was queued; submit again after taking completions.
    #[error("connection busy: {in_flight_max} requests in flight")]
    Busy {
        /// The bound.
        in_flight_max: usize,
    },
    /// The bookie sent bytes that do not decode: a broken frame (the connection is closed and
    /// every request in flight on it fails with this) or a malformed response body (only the
    /// request it answers fails).
    #[error("malformed response: {0}")]
    Protocol(DecodeError),
    /// The last connect failed and the client is backing off until `until`: the request was
    /// not sent (fail fast, so the caller can pick another bookie within its own timeout).
    #[error("bookie unavailable (reconnect backing off)")]
    Unavailable {
        /// When the next connect may be tried.
        until: Instant,
    },
    /// The connection, client or pool was closed by its owner.
    #[error("transport closed")]
    Closed,
    /// The request is over the limits (`ClientConfig::limits`); refused before sending.
    #[error("{what} of {bytes} bytes is over the limit of {max}")]
    TooLarge {
        /// Which part: "frame", "payload" or "token".
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The request cannot be encoded (a master key over 64 bytes, an empty READ_RANGE, an
    /// explicit LAC of `LAC_NONE`); refused before sending.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The `ClientConfig` is out of bounds.
    #[error("invalid client config: {0}")]
    Config(#[from] ConfigError),
}

impl From<DecodeError> for TransportError {
    fn from(error: DecodeError) -> Self {
        TransportError::Protocol(error)
    }
}
