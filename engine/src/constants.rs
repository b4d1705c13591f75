//! Every fixed limit of the engine in one place, with the relations between them asserted.

/// Alignment of every journal write: offset, length and buffer address (O_DIRECT, 4 KiB
/// physical sectors on the disks we target).
pub const SECTOR_BYTES: usize = 4096;

/// Size of the journal file header block at offset 0.
pub const JOURNAL_FILE_HEADER_BYTES: usize = SECTOR_BYTES;

/// The disk's `FileSeq` of an entry log has this bit set (journal files never reach it), so one
/// `Disk` addresses both kinds of file.
pub const ENTRY_LOG_FILE_BIT: u64 = 1 << 62;

/// Size of a journal record header (see docs/format.md).
pub const RECORD_HEADER_BYTES: usize = 40;

/// Largest master key a segment may carry.
pub const MASTER_KEY_BYTES_MAX: usize = 64;

/// Largest number of journal batches (aligned write + flush pairs) a shard keeps in flight.
pub const JOURNAL_WRITES_IN_FLIGHT_MAX: usize = 16;

/// Depth of each shard's io_uring submission queue.
pub const IO_DEPTH_MAX: usize = 128;

/// Largest number of requests a shard takes off its queue in one turn of its loop, so that
/// completions are reaped regularly even under a flood of requests.
pub const SHARD_REQUESTS_PER_TURN_MAX: usize = 4096;

const _: () = assert!(SECTOR_BYTES.is_power_of_two());
const _: () = assert!(JOURNAL_FILE_HEADER_BYTES.is_multiple_of(SECTOR_BYTES));
const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(8));
const _: () = assert!(RECORD_HEADER_BYTES < SECTOR_BYTES);
// Each batch is a write and an fsync: two SQEs. Reads of journal entries need room too.
const _: () = assert!(IO_DEPTH_MAX >= 2 * JOURNAL_WRITES_IN_FLIGHT_MAX + 32);
