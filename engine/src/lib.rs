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
//! Not yet here (the next issue): segment storage (entry logs, index, checkpoints driven by
//! flushes). Until then entries are read from the journal, and `Bookie::checkpoint` is the seam
//! segment storage will call.

pub mod bookie;
pub mod config;
pub mod constants;
pub mod error;
pub mod ids;
pub mod io;
pub mod journal;
pub mod shard;

pub use bookie::{Bookie, Pending};
pub use config::{Backend, BookieConfig, DirectIo, JournalRecovery, JournalSync};
pub use error::{Error, IoOp, OpenError};
pub use ids::{EntryId, FileSeq, SegmentId, ShardId};
pub use journal::replay::{ReplayReport, TornTail};
pub use shard::core::CoreStats;
pub use shard::request::{AddEntry, AddFlags, JournalMark};
