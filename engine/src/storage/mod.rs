//! Segment storage: where entries live once the journal has made them durable.
//!
//! Entries acknowledged by the journal go into the shard's `WriteCache`; a flush writes a
//! sealed half of it, sorted by (segment, entry), as one self-indexed run appended to an entry
//! log (`run`), indexes it in memory (`run_index`), records it in the `manifest`, and then the
//! journal is checkpointed past it. The flush itself is driven by the shard core
//! (shard/core/flush.rs); this module holds the formats and structures, pure except for
//! `storage_dir` (opening and scanning files, run by the shell).
//! Design and measurements: docs/rfcs/2026-11-25-segment-storage.md, docs/ARCHITECTURE.md.

pub mod manifest;
pub mod read_cache;
pub mod run;
pub mod run_index;
pub mod storage_dir;
pub mod write_cache;
