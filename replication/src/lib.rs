//! dlog-replication: the client side of a segment.
//!
//! Will own (not yet written; see docs/ARCHITECTURE.md and the open issues): striping a segment's
//! entries over an ensemble of `ensemble_size` bookies, writing each entry to `write_quorum_size`
//! of them and acknowledging it at `ack_quorum_size`; advancing `last_add_confirmed`; fencing and
//! recovery so that every recoverer closes a segment at the same last entry; ensemble change when
//! a bookie fails; re-replication of lost replicas. Its cores will be sans-I/O state machines
//! driven by thin TCP and clock shells, like the engine's shard core.
//!
//! This crate exports nothing yet: there are no placeholder APIs.
