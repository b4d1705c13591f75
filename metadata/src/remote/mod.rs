//! Remote access to a metadata store (`dlog://host:port`): `MetadataServer` serves any
//! `MetadataStore` over TCP, and `RemoteStore` is a `MetadataStore` that talks to it. What
//! it is for: the embedded store (`LocalStore`) is one process at a time (it flocks its
//! directory), so the process that owns it (`dlog local`) serves it, and CLI commands in
//! other processes reach it as `dlog://127.0.0.1:7480`.
//!
//! Owns: the protocol (docs/metadata.md "Remote access"): a preamble each way, then frames of
//! a u32 little-endian length and one protobuf message (codec.rs); requests carrying an id,
//! answered in any order; watches as streams of events on the same connection (messages.rs).
//! Does not own: the semantics, which are the served store's (MS1-MS5, store.rs): the server
//! forwards every call to it and every answer and error back; leases are the store's, not
//! the connection's (a client's `LeaseKeeper` keeps them alive, and a lost connection does
//! not end them).
//!
//! Invariants:
//! - RM1: the client sees exactly what the served store answered, errors typed (RW1 in
//!   messages.rs), or `Unavailable` when it cannot know: no answer within
//!   `REQUEST_TIMEOUT`, or the connection lost with the call in flight. A mutation answered
//!   `Unavailable` is in doubt, as on etcd. No call is ever sent twice.
//! - RM2: the client keeps at most one connection, opened at the first call and opened again
//!   at the next call after it failed. A connection fails at a socket error, at a bad frame
//!   from the server, or after `SILENCE_MAX` without a frame (the server sends a heartbeat
//!   every `HEARTBEAT_INTERVAL` of idleness), so a dead peer is noticed even by a connection
//!   that only carries a watch.
//! - RM3: a watch survives the loss of its connection and server restarts: it watches again
//!   over a new connection from one past the last revision it delivered whole (W1 in
//!   watch.rs), so nothing is missed or repeated. It ends only with an error the served store
//!   gave (`Compacted`, a lag cut-off, ...), or when dropped (the server is told to stop).
//! - RM4: the server sends each revision's events whole (a revision too large for one
//!   message is split, and the client hands it on only once it has all of it), so W1 holds
//!   through the connection.
//! - RM5: nothing a peer sends panics either side (RF2 in codec.rs, RW2 in messages.rs): a
//!   bad frame (over its bound, undecodable, of a kind this build does not know, or before
//!   a correct preamble) closes that connection only, the server first sending an `Error`
//!   with id 0 that says why. The server bounds what one connection holds: `IN_FLIGHT_MAX`
//!   calls (then it stops reading: TCP pushes back), `WATCHES_MAX` watches, request frames
//!   of `REQUEST_BYTES_MAX`.
//!
//! Both ends run on tokio: `MetadataServer::start` and every `RemoteStore` call need a tokio
//! runtime with I/O and time enabled.

mod client;
mod codec;
mod messages;
mod server;

use std::time::Duration;

pub use client::RemoteStore;
pub use server::MetadataServer;

/// Longest a call may take before it answers `Unavailable` (RM1), as `EtcdStore`'s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The server sends a heartbeat on a connection it had nothing to send on for this long (RM2).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The client drops a connection that sent nothing for this long (RM2).
pub const SILENCE_MAX: Duration = Duration::from_secs(5);
/// Largest request frame a server reads: several times the largest transaction a store
/// accepts (`TXN_BYTES_MAX`, 1.25 MiB); a larger request is refused by the client as
/// `Invalid` before it is sent.
pub const REQUEST_BYTES_MAX: usize = 8 << 20;
/// Largest answer frame a client reads: a `list_all` page (`LIST_PAGE` values of up to 1 MiB)
/// fits many times over; a listing without a limit that would not fit answers `Invalid`
/// (etcd's client has the same bound, `RESPONSE_BYTES_MAX`).
pub const ANSWER_BYTES_MAX: usize = 256 << 20;
/// Calls of one connection a server works on at once (RM5).
pub const IN_FLIGHT_MAX: usize = 1024;
/// Watches one connection may hold open on a server (RM5).
pub const WATCHES_MAX: usize = 4096;
/// A server splits a watch's events into messages of about this many key and value bytes.
pub const WATCH_BATCH_BYTES: usize = 4 << 20;
/// Longest pause between a watch's attempts to watch again after a lost connection (RM3).
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);
