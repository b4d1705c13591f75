//! dlog-engine: the bookie storage engine.
//!
//! A bookie is split into shards, one per core by default. A segment id maps to one shard (a
//! fixed hash), and each shard is a thread that owns its io_uring (or the portable backend), its
//! journal and its segments' state; callers hand it work over a bounded queue. Entries are
//! acknowledged only once durable: the journal writes them in group commits, one aligned
//! O_DIRECT write plus one flush per batch, with several batches in flight.
//!
//! Layout: `bookie` (the embedded API), `shard` (the thread shell and its sans-I/O `core`),
//! `journal` (formats, preparation, replay), `io` (the `Disk` seam, io_uring and portable
//! backends, aligned buffers). Formats: docs/format.md. Design: docs/ARCHITECTURE.md.
//!
//! Once durable, entries move through the shard's write cache into entry logs (`storage`):
//! each flush writes one sorted, self-indexed run, then the shard checkpoints its journal past
//! it. `StorageMode::JournalOnly` skips that for applications that keep the data themselves and
//! checkpoint the journal with `Bookie::checkpoint`.

pub mod bookie;
pub mod config;
pub mod constants;
pub mod error;
pub mod ids;
pub mod io;
pub mod journal;
pub mod shard;
pub mod storage;

pub use bookie::{Bookie, Pending};
pub use config::{
    Backend, BookieConfig, DeletionCheck, DeletionHook, DirectIo, FreeSpace, FreeSpaceHook, JournalRecovery,
    JournalSync, StorageMode,
};
pub use error::{Error, IoOp, OpenError};
pub use ids::{EntryId, FileSeq, LogSeq, SegmentId, ShardId};
pub use journal::replay::{ReplayReport, TornTail};
pub use shard::core::CoreStats;
pub use shard::request::{AddEntry, AddFlags, JournalMark};
