//! dlog-replication: the client side of a segment.
//!
//! Today: the client transport (`transport`), the client side of the bookie wire protocol
//! (docs/protocol.md): pipelined connections to bookies inside compio runtimes, a client per
//! bookie that reconnects with backoff, and a thread-safe pool for callers outside compio; and
//! the quorum arithmetic (`quorum`): write sets, ack sets, fence coverage and recovery's
//! absence verdict, pure and exhaustively tested; and the sans-I/O write path core
//! (`segment_writer`): adds, acks, in-order completion, LAC, fencing, close, without ensemble
//! change and not yet wired to a shell. `autorecovery`: the auditor (lost bookies, the
//! under-replicated queue) and the replication worker (copying lost replicas, ensemble
//! compare-and-set), sans-I/O cores with a tokio shell.
//!
//! Still to come (issue 6; docs/rfcs/2026-11-26-replication.md): striping a segment's entries over
//! an ensemble of `ensemble_size` bookies, writing each entry to `write_quorum_size` of them and
//! acknowledging it at `ack_quorum_size`; advancing `last_add_confirmed`; fencing and recovery so
//! that every recoverer closes a segment at the same last entry; ensemble change when a bookie
//! fails. Those cores will be sans-I/O state machines driven by
//! thin shells (this transport and a clock), like the engine's shard core.

pub mod autorecovery;
pub mod client;
pub mod entry_envelope;
pub mod placement;
pub mod quorum;
pub mod recovery;
pub mod segment_reader;
pub mod segment_writer;
pub mod transport;
