//! Bookie configuration: every knob with its default and bounds.

use std::path::PathBuf;

use crate::constants::{JOURNAL_WRITES_IN_FLIGHT_MAX, SECTOR_BYTES};
use crate::error::OpenError;

/// Which I/O backend shards use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring where the kernel allows it, otherwise the portable backend (logged once).
    Auto,
    /// io_uring only; opening fails where it is refused.
    IoUring,
    /// pwrite + fdatasync on the shard thread.
    Portable,
}

/// Whether journal files are opened with O_DIRECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectIo {
    /// Use O_DIRECT; refuse to open where the filesystem does not support it.
    Required,
    /// Use O_DIRECT where the filesystem supports it (probed per directory), else buffered I/O
    /// with fdatasync, saying so in the log.
    Optional,
    /// Buffered I/O with fdatasync.
    Disabled,
}

/// How a journal batch is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalSync {
    /// A write followed by an fdatasync (linked on io_uring).
    Fdatasync,
    /// One write with RWF_DSYNC (FUA where the device has it, else write + flush in the kernel).
    Dsync,
}

/// What recovery does with damage it finds in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalRecovery {
    /// Cut off a torn tail (batches in flight at a crash, which were never acknowledged). Damage
    /// followed by records that must have been durable is reported, skipped, and the bookie
    /// starts; reads of entries it may have held answer `Corrupt`, never `NoSuchEntry`. A file
    /// whose header is unreadable is skipped the same way, unless later files hold batches
    /// (its records cannot be read at all, so starting would silently drop acknowledged data).
    TruncateTornTail,
    /// Cut off a torn tail; refuse to start on any other damage, naming file and offset.
    Strict,
}

/// Where entries live once the journal has made them durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageMode {
    /// Write cache, flushes into entry logs, automatic journal checkpoints (a bookie).
    EntryLogs,
    /// Entries stay in the journal until the application calls `Bookie::checkpoint` (an
    /// embedded write-ahead log whose owner keeps the data elsewhere). Reads come from the
    /// journal.
    JournalOnly,
}

/// Asked before a deleted segment's entries are dropped: the metadata check (does the
/// metadata store agree the segment is gone?). Runs on a background thread; may block.
pub trait DeletionCheck: Send + Sync {
    /// True when `segment`'s deletion is confirmed; false keeps its data (asked again at the
    /// next open).
    fn confirm_deleted(&self, segment: crate::ids::SegmentId) -> bool;
}

/// A shareable `DeletionCheck`.
#[derive(Clone)]
pub struct DeletionHook(pub std::sync::Arc<dyn DeletionCheck>);

impl std::fmt::Debug for DeletionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeletionHook")
    }
}

/// Reports the free bytes of a directory's filesystem (tests inject a full disk with it).
pub trait FreeSpace: Send + Sync {
    /// Free bytes available to the bookie where `path` lives.
    fn free_bytes(&self, path: &std::path::Path) -> std::io::Result<u64>;
}

/// A shareable `FreeSpace`.
#[derive(Clone)]
pub struct FreeSpaceHook(pub std::sync::Arc<dyn FreeSpace>);

impl std::fmt::Debug for FreeSpaceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreeSpaceHook")
    }
}

/// Everything a bookie needs to open.
#[derive(Clone, Debug)]
pub struct BookieConfig {
    /// Journal directories. Shard `n` keeps its journal in `journal_dirs[n % len]/shard-n`.
    pub journal_dirs: Vec<PathBuf>,
    /// Number of shards (threads). Default: the number of CPUs. Fixed for the life of the
    /// directories: opening with a different count is refused.
    pub shard_count: u32,
    /// A batch closes once it holds this many bytes. Default 1 MiB; at least 4 KiB.
    pub batch_bytes_max: usize,
    /// A batch closes once its oldest entry has waited this long. Default 1000 us.
    pub batch_delay_us_max: u64,
    /// Close a batch as soon as the shard's queue runs dry (no added latency at low load).
    /// Default true; false makes every batch wait for the byte or delay bound.
    pub batch_when_idle: bool,
    /// Batches in flight per shard (write + flush pairs). Default 4; 1 to 16.
    pub writes_in_flight_max: usize,
    /// Journal file size; files rotate when full. Default 256 MiB; a multiple of 4 KiB.
    pub journal_file_bytes: u64,
    /// Reclaimed journal files kept for reuse (overwriting is faster than fresh files). Default 4.
    pub journal_files_recycled_max: usize,
    /// Largest entry payload accepted. Default 1 MiB (Kafka's default message limit is about
    /// 1 MB; BookKeeper's frame limit 5 MB). Replay reads ahead up to
    /// `writes_in_flight_max + 1` of the longest possible batch past the end of each file, so
    /// this also bounds restart work: at 1 MiB about 5 MiB per file, at 16 MiB about 80 MiB.
    pub entry_bytes_max: usize,
    /// Capacity of each shard's request queue, in requests. Default 65536.
    pub queue_capacity: usize,
    /// How long an idle shard polls its queue and completions before sleeping, in microseconds.
    /// Polling can avoid the cost of waking a halted CPU (about 30 us on this VM), but spinning
    /// vCPUs also slow the hypervisor's I/O thread here; measured best at 0 on 2 vCPUs.
    /// Default 0.
    pub idle_spin_us: u64,
    /// Pin shard `n` to CPU `n % cpus` (thread-per-core). A caller that runs on its shard's
    /// CPU (`Bookie::shard_cpu`) hands work over without waking another CPU. Default true.
    pub pin_shards: bool,
    /// I/O backend. Default `Auto`.
    pub backend: Backend,
    /// Direct I/O policy. Default `Optional`.
    pub direct_io: DirectIo,
    /// Durability mechanism for batches. Default `Fdatasync`.
    pub journal_sync: JournalSync,
    /// Recovery policy. Default `TruncateTornTail`.
    pub journal_recovery: JournalRecovery,
    /// Entry logs (default) or journal only.
    pub storage_mode: StorageMode,
    /// Directories for entry logs and manifests; shard `n` uses `storage_dirs[n % len]/storage-n`.
    /// Empty (the default): the journal directories.
    pub storage_dirs: Vec<PathBuf>,
    /// Write cache per shard, both halves together, in bytes (payloads plus 48 per entry). A
    /// flush starts when the active half reaches half of it; adds wait while a half is full
    /// and a flush or compaction is under way. Default 256 MiB; 4 MiB to 2 GiB, at least 4 x
    /// `entry_bytes_max`.
    pub write_cache_bytes_max: usize,
    /// A flush starts at least this often while the write cache holds entries, in
    /// milliseconds: it bounds how much journal a restart replays at low load. Default 10000.
    pub flush_interval_ms: u64,
    /// Entry log size: a log takes runs until the next would pass it. Default 1 GiB; at least
    /// 1 MiB.
    pub entry_log_bytes: u64,
    /// An entry log whose live bytes fall under this fraction is compacted. Default 0.5; 0
    /// disables compaction (logs are still deleted once nothing in them is live); at most 0.95.
    pub compaction_live_fraction: f64,
    /// Compaction moves at most this many bytes per second per shard, so foreground work keeps
    /// the disk. Default 64 MiB/s; at least 1 MiB/s.
    pub compaction_bytes_per_s: u64,
    /// Read cache per shard: entries recently read from entry logs, in bytes (payloads plus 48
    /// per entry). Default 64 MiB; 0 disables it.
    pub read_cache_bytes_max: usize,
    /// The deletion check asked before a deleted segment's entries are dropped. `None` (the
    /// default): `Bookie::delete_segment` is the authority.
    pub deletion_check: Option<DeletionHook>,
    /// Below this many free bytes on a shard's journal or storage filesystem the shard turns
    /// read-only: plain adds answer `NoSpace`; reads, fences, LAC writes and recovery adds
    /// still work, and flushes go on (they free journal space). Sampled every second.
    /// Default 1 GiB.
    pub disk_free_bytes_min: u64,
    /// A read-only shard turns writable again at this many free bytes (hysteresis). Default
    /// 2 GiB; at least `disk_free_bytes_min`.
    pub disk_free_bytes_resume: u64,
    /// Where free space is read from; `None` (the default): statvfs.
    pub free_space: Option<FreeSpaceHook>,
}

impl BookieConfig {
    /// The storage directory of shard `n`'s entry logs.
    pub fn storage_dir(&self, shard: u32) -> &std::path::Path {
        let dirs = if self.storage_dirs.is_empty() { &self.journal_dirs } else { &self.storage_dirs };
        &dirs[shard as usize % dirs.len()]
    }

    /// A configuration with defaults and one journal directory.
    pub fn new(journal_dir: impl Into<PathBuf>) -> BookieConfig {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        BookieConfig {
            journal_dirs: vec![journal_dir.into()],
            shard_count: u32::try_from(cpus).unwrap_or(1),
            batch_bytes_max: 1 << 20,
            batch_delay_us_max: 1000,
            batch_when_idle: true,
            writes_in_flight_max: 4,
            journal_file_bytes: 256 << 20,
            journal_files_recycled_max: 4,
            entry_bytes_max: 1 << 20,
            queue_capacity: 65536,
            idle_spin_us: 0,
            pin_shards: true,
            backend: Backend::Auto,
            direct_io: DirectIo::Optional,
            journal_sync: JournalSync::Fdatasync,
            journal_recovery: JournalRecovery::TruncateTornTail,
            storage_mode: StorageMode::EntryLogs,
            storage_dirs: Vec::new(),
            write_cache_bytes_max: 256 << 20,
            flush_interval_ms: 10_000,
            entry_log_bytes: 1 << 30,
            compaction_live_fraction: 0.5,
            compaction_bytes_per_s: 64 << 20,
            read_cache_bytes_max: 64 << 20,
            deletion_check: None,
            disk_free_bytes_min: 1 << 30,
            disk_free_bytes_resume: 2 << 30,
            free_space: None,
        }
    }

    /// Checks bounds; every error names the field.
    pub fn validate(&self) -> Result<(), OpenError> {
        let fail = |s: String| Err(OpenError::Config(s));
        if self.journal_dirs.is_empty() {
            return fail("journal_dirs is empty".into());
        }
        if self.shard_count == 0 || self.shard_count > 1024 {
            return fail(format!("shard_count {} is not in 1..=1024", self.shard_count));
        }
        if self.batch_bytes_max < SECTOR_BYTES || self.batch_bytes_max > 64 << 20 {
            return fail(format!("batch_bytes_max {} is not in 4 KiB..=64 MiB", self.batch_bytes_max));
        }
        if self.writes_in_flight_max == 0 || self.writes_in_flight_max > JOURNAL_WRITES_IN_FLIGHT_MAX {
            return fail(format!(
                "writes_in_flight_max {} is not in 1..={JOURNAL_WRITES_IN_FLIGHT_MAX}",
                self.writes_in_flight_max
            ));
        }
        if self.entry_bytes_max == 0 || self.entry_bytes_max > 256 << 20 {
            return fail(format!("entry_bytes_max {} is not in 1..=256 MiB", self.entry_bytes_max));
        }
        let file_min = 4 * (self.batch_bytes_max.max(self.entry_bytes_max) as u64) + (1 << 20);
        if !self.journal_file_bytes.is_multiple_of(SECTOR_BYTES as u64)
            || self.journal_file_bytes < file_min
            || self.journal_file_bytes > 1 << 40
        {
            return fail(format!(
                "journal_file_bytes {} must be a multiple of 4096, at most 1 TiB and at least \
                 {file_min} (4 x max(batch_bytes_max, entry_bytes_max) + 1 MiB)",
                self.journal_file_bytes
            ));
        }
        if self.queue_capacity == 0 {
            return fail("queue_capacity is 0".into());
        }
        let cache_min = (4 << 20).max(4 * self.entry_bytes_max);
        if self.write_cache_bytes_max < cache_min || self.write_cache_bytes_max > 2 << 30 {
            return fail(format!(
                "write_cache_bytes_max {} is not in {cache_min}..=2 GiB (at least 4 MiB and 4 x entry_bytes_max)",
                self.write_cache_bytes_max
            ));
        }
        if self.flush_interval_ms == 0 {
            return fail("flush_interval_ms is 0".into());
        }
        if !(0.0..=0.95).contains(&self.compaction_live_fraction) {
            return fail(format!(
                "compaction_live_fraction {} is not in 0..=0.95",
                self.compaction_live_fraction
            ));
        }
        if self.compaction_bytes_per_s < 1 << 20 {
            return fail(format!("compaction_bytes_per_s {} is under 1 MiB/s", self.compaction_bytes_per_s));
        }
        if self.disk_free_bytes_resume < self.disk_free_bytes_min {
            return fail(format!(
                "disk_free_bytes_resume {} is below disk_free_bytes_min {}",
                self.disk_free_bytes_resume, self.disk_free_bytes_min
            ));
        }
        if self.entry_log_bytes < 1 << 20 {
            return fail(format!("entry_log_bytes {} is under 1 MiB", self.entry_log_bytes));
        }
        Ok(())
    }
}
