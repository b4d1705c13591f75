//! The shard core's inputs at start: its settings and the state replay rebuilt, and the
//! counters it keeps.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::flush::{StorageSettings, StorageStartState};
use crate::config::JournalSync;
use crate::ids::{FileSeq, SegmentId, ShardId};
use crate::shard::location_index::LocationIndex;
use crate::shard::request::JournalMark;
use crate::shard::segment_state::SegmentState;

/// The knobs the core needs (a subset of `BookieConfig`).
#[derive(Clone, Debug)]
pub struct CoreSettings {
    /// This shard.
    pub shard: ShardId,
    /// Batch byte bound.
    pub batch_bytes_max: usize,
    /// Batch delay bound.
    pub batch_delay_max: Duration,
    /// Close a batch when the queue runs dry.
    pub batch_when_idle: bool,
    /// Batches in flight.
    pub writes_in_flight_max: usize,
    /// Journal file size.
    pub journal_file_bytes: u64,
    /// Largest payload.
    pub entry_bytes_max: usize,
    /// Flush mechanism.
    pub journal_sync: JournalSync,
    /// Segment storage; `None`: `StorageMode::JournalOnly`.
    pub storage: Option<StorageSettings>,
}

/// What a shard starts from: the outcome of journal replay.
#[derive(Debug, Default)]
pub struct CoreStart {
    /// Segment states rebuilt by replay.
    pub segments: BTreeMap<SegmentId, SegmentState>,
    /// Entry locations rebuilt by replay.
    pub index: LocationIndex,
    /// Journal files holding replayed data, oldest first.
    pub files: Vec<FileSeq>,
    /// Sequence number for the first new batch.
    pub batch_seq_next: u64,
    /// Sequence number for the first new journal file.
    pub file_seq_next: u64,
    /// Descriptions of journal damage found at replay (tolerated by policy). While any exists,
    /// a read of a missing entry answers `Corrupt`, not `NoSuchEntry`.
    pub damage: Vec<String>,
    /// The replay start position.
    pub checkpoint: Option<JournalMark>,
    /// Batch boundaries replay saw per file (the checkpoint's offset and every replayed
    /// batch's end), so a checkpoint can name them after a restart.
    pub boundaries: BTreeMap<FileSeq, Vec<u64>>,
    /// Entries replayed (with entry logs, replay keeps payloads for the write cache instead of
    /// indexing journal locations).
    pub replayed: Vec<(SegmentId, u64, Bytes)>,
    /// Segment storage found at open (entry logs mode).
    pub storage: Option<StorageStartState>,
}

/// Counters for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreStats {
    /// Batches acknowledged.
    pub batches: u64,
    /// Bytes written in acknowledged batches.
    pub batch_bytes: u64,
    /// Entries acknowledged.
    pub entries: u64,
    /// Nanoseconds journal batches spent between submission and their write+flush completing,
    /// summed (divide by `batches` for the mean).
    pub journal_sync_ns: u64,
    /// Flushes completed (runs written to entry logs).
    pub flushes: u64,
    /// Bytes of runs written by flushes.
    pub flushed_bytes: u64,
    /// Entries written by flushes.
    pub flushed_entries: u64,
    /// Times adds had to wait because the write cache was full and a flush running (F2).
    pub adds_throttled: u64,
    /// Reads answered from the write cache.
    pub cache_reads: u64,
    /// Reads answered from entry logs.
    pub log_reads: u64,
    /// Reads answered from the read cache.
    pub read_cache_hits: u64,
    /// Record bytes dropped from the index by confirmed segment deletions.
    pub deleted_bytes: u64,
    /// Compaction passes completed.
    pub compactions: u64,
    /// Live record bytes moved by compaction.
    pub compacted_bytes: u64,
    /// Entry logs deleted (nothing live left in them).
    pub entry_logs_deleted: u64,
    /// Flush or compaction attempts dropped for a retry: a run write or an entry log creation
    /// failed (F3).
    pub run_write_failures: u64,
    /// Manifest writes that failed (after a flush or a compaction pass).
    pub manifest_failures: u64,
    /// The shard is read-only now (free space under `disk_free_bytes_min`).
    pub read_only: bool,
    /// Times the shard turned read-only.
    pub read_only_entered: u64,
    /// A journal write or flush failed: the shard refuses writes until the bookie restarts.
    pub poisoned: bool,
}
