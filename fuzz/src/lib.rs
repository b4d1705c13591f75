//! The checks behind the fuzz targets, shared with `tests/fuzz_smoke.rs` in the main workspace
//! (which includes this file as a module with `#[path]`, so it must depend on nothing the main
//! crate's tests lack: `dlog_engine`, `dlog_metadata`, `dlog_protocol`, `bytes`, `crc32c` and
//! `std`). The metadata targets' checks are in `metadata.rs`, the wire protocol's in
//! `protocol.rs`, the segment storage formats' (entry log runs, run index, manifest) in
//! `storage.rs`. `input_check` names every target's check but `journal_replay`'s.
//!
//! Each `check_*` function takes raw fuzz input and panics only when the code under test
//! misbehaves: a panic inside the engine, the metadata layer or the wire codec, or a broken
//! round trip.

pub mod metadata;
pub mod protocol;
pub mod storage;

use std::fs;
use std::path::Path;

use dlog_engine::constants::{JOURNAL_FILE_HEADER_BYTES, SECTOR_BYTES};
use dlog_engine::io::buf::AlignedBuf;
use dlog_engine::journal::batch::{BATCH_CLOSE_SLACK_BYTES, BatchBuilder};
use dlog_engine::journal::file_header::FileHeader;
use dlog_engine::journal::record::{self, LAC_NONE, RecordHeader, RecordKind};
use dlog_engine::{Backend, Bookie, BookieConfig, DirectIo, FileSeq, JournalRecovery, OpenError, ShardId};

/// The check of the target named `target`, for runners outside cargo-fuzz (tests/fuzz_smoke.rs
/// runs every corpus file through it). `None` for an unknown name and for `journal_replay`,
/// whose check also needs a directory (`check_journal_replay`). Every other target in
/// fuzz_targets/ must be here (the smoke test checks).
pub fn input_check(target: &str) -> Option<fn(&[u8])> {
    let check: fn(&[u8]) = match target {
        "journal_record_decode" => check_record_decode,
        "file_header_decode" => check_file_header_decode,
        "metadata_log_decode" => metadata::check_log_decode,
        "metadata_replay" => |data| metadata::check_replay(data, metadata::replay_now()),
        "metadata_value_decode" => metadata::check_value_decode,
        "wire_frame_decode" => protocol::check_wire_decode,
        "entry_log_decode" => storage::check_entry_log_decode,
        "manifest_decode" => storage::check_manifest_decode,
        _ => return None,
    };
    Some(check)
}

/// Splits fuzz input into a little-endian `u64` (zero-padded when the input is shorter than 8
/// bytes) and the rest.
pub fn split_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut raw = [0u8; 8];
    raw[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(raw), &data[n..])
}

/// `journal_record_decode`: the first 8 bytes are the epoch, the rest goes to `record::decode`,
/// which must not panic. A record it accepts must re-encode to the very same bytes and decode
/// again to the same header and payload.
pub fn check_record_decode(data: &[u8]) {
    let (epoch, bytes) = split_u64(data);
    let Ok((header, payload)) = record::decode(bytes, epoch) else { return };
    if header.kind == RecordKind::Padding {
        assert!(payload.is_empty(), "padding decoded with a payload");
    } else {
        assert_eq!(payload.len(), header.payload_len as usize, "payload length differs from header");
    }
    // Padding occupies `payload_len` zero bytes the codec does not cover (R2): compare the
    // header only, which is all `encode` writes for it.
    let len = record::record_bytes(payload.len());
    let mut out = vec![0u8; len];
    record::encode(&mut out, epoch, &header, payload);
    assert_eq!(out[..], bytes[..len], "re-encoding a decoded {:?} record changed its bytes", header.kind);
    assert_eq!(record::decode(&out, epoch), Ok((header, payload)), "re-encoded record decodes differently");
}

/// `file_header_decode`: `FileHeader::decode` must not panic on any input; a header it accepts
/// must survive `encode` then `decode`, with every field at the bytes it was read from.
pub fn check_file_header_decode(data: &[u8]) {
    let Ok(header) = FileHeader::decode(data) else { return };
    let block = header.encode();
    assert_eq!(FileHeader::decode(&block), Ok(header), "encode then decode changed the header");
    // Magic, version and every field. Bytes 12..16 (the CRC) and 48..64 are compared only when
    // the input's reserved bytes 48..64 are zero: `decode` does not insist on that (the CRC
    // covers them), and `encode` always writes zeroes there.
    assert_eq!(block[..12], data[..12], "magic or version re-encoded differently");
    assert_eq!(block[16..48], data[16..48], "header fields re-encoded differently");
    if data[48..64].iter().all(|b| *b == 0) {
        assert_eq!(block[..64], data[..64], "header re-encoded differently");
    }
    assert!(block[64..].iter().all(|b| *b == 0), "encode left bytes after the header");
}

/// Batches are at most this long in `replay_config` (4 KiB).
pub const REPLAY_BATCH_BYTES_MAX: usize = 4 << 10;

/// Journal file size of `replay_config`: the smallest `BookieConfig::validate` allows for 4 KiB
/// batches and entries (4 x 4 KiB + 1 MiB), so each case writes little.
pub const REPLAY_FILE_BYTES: u64 = 4 * REPLAY_BATCH_BYTES_MAX as u64 + (1 << 20);

/// Bytes of a journal file after its header block: what the `journal_replay` input becomes,
/// truncated or zero-padded to this length.
pub const REPLAY_BODY_BYTES: usize = REPLAY_FILE_BYTES as usize - JOURNAL_FILE_HEADER_BYTES;

/// The configuration `check_journal_replay` opens with.
pub fn replay_config(dir: &Path, policy: JournalRecovery) -> BookieConfig {
    let mut config = BookieConfig::new(dir);
    config.shard_count = 1;
    config.batch_bytes_max = REPLAY_BATCH_BYTES_MAX;
    config.entry_bytes_max = REPLAY_BATCH_BYTES_MAX;
    config.journal_file_bytes = REPLAY_FILE_BYTES;
    config.backend = Backend::Portable;
    config.direct_io = DirectIo::Disabled;
    config.idle_spin_us = 0;
    // Parallel fuzz jobs would all pin their shard to CPU 0.
    config.pin_shards = false;
    config.journal_recovery = policy;
    config
}

/// The header a shard opened with `replay_config` writes into journal file 0.
pub fn replay_file_header() -> FileHeader {
    let config = replay_config(Path::new("."), JournalRecovery::TruncateTornTail);
    // Mirrors the engine's crate-private `shard::batch_bytes_limit`: the longest batch a file
    // of this configuration can hold.
    const MASTER_KEY_SLACK: usize = 256;
    let largest = config.batch_bytes_max.max(config.entry_bytes_max) + 2 * BATCH_CLOSE_SLACK_BYTES;
    let batch_bytes_limit = (largest + MASTER_KEY_SLACK).next_multiple_of(SECTOR_BYTES) + 4 * SECTOR_BYTES;
    FileHeader {
        file_seq: FileSeq(0),
        shard_id: ShardId(0),
        writes_in_flight_max: config.writes_in_flight_max as u32,
        file_bytes: config.journal_file_bytes,
        batch_bytes_limit: batch_bytes_limit as u64,
    }
}

/// Lays out a journal directory for one shard whose only file, `journal-0000000000000000.log`,
/// is a valid header block followed by `body` (truncated or zero-padded to the file size).
/// Anything already in `dir` is removed first.
pub fn write_journal_dir(dir: &Path, body: &[u8]) {
    let _ = fs::remove_dir_all(dir);
    let shard_dir = dir.join("shard-0");
    fs::create_dir_all(&shard_dir).expect("create journal directory");
    fs::write(dir.join("dlog-layout"), "dlog-journal-layout 1\nshard_count 1\n").expect("write layout");
    let header = replay_file_header();
    let mut file = Vec::with_capacity(REPLAY_FILE_BYTES as usize);
    file.extend_from_slice(&header.encode());
    file.extend_from_slice(&body[..body.len().min(REPLAY_BODY_BYTES)]);
    file.resize(REPLAY_FILE_BYTES as usize, 0);
    fs::write(shard_dir.join(format!("journal-{}.log", header.file_seq)), &file).expect("write journal file");
}

/// Opens a bookie on `dir`. A panic on a shard thread reaches the caller only as this error
/// (`Bookie::open` turns a shard that died while starting into it), so it is refused here.
fn open(dir: &Path, policy: JournalRecovery) -> Result<Bookie, OpenError> {
    let result = Bookie::open(replay_config(dir, policy));
    if let Err(OpenError::Config(message)) = &result {
        assert!(
            !message.contains("failed to start"),
            "shard thread died during open ({policy:?}): {message}"
        );
    }
    result
}

/// `journal_replay`: `body` is the content of a journal file after its header. Opening a bookie
/// on it must return `Ok` or `Err`, never panic, under both recovery policies. Beyond that:
/// - if `Strict` opens, so does `TruncateTornTail` (it tolerates strictly more);
/// - a directory `TruncateTornTail` opened once opens again (its cuts are final).
///
/// `dir` is emptied and reused.
pub fn check_journal_replay(dir: &Path, body: &[u8]) {
    write_journal_dir(dir, body);
    let strict = open(dir, JournalRecovery::Strict);
    let strict_ok = strict.is_ok();
    if let Ok(bookie) = strict {
        bookie.close();
    }
    let lenient = open(dir, JournalRecovery::TruncateTornTail);
    match lenient {
        Ok(bookie) => bookie.close(),
        Err(e) => {
            assert!(!strict_ok, "Strict opened but TruncateTornTail then refused: {e}");
            return;
        }
    }
    match open(dir, JournalRecovery::TruncateTornTail) {
        Ok(bookie) => bookie.close(),
        Err(e) => panic!("TruncateTornTail opened once, then refused the same directory: {e}"),
    }
}

/// A small deterministic generator (xorshift64*), so seeds need no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator; any seed works.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A well-formed journal body of `batches` batches (sequence numbers from 0, epoch 0), laid out
/// as the engine writes them: master keys on a segment's first use, entries with piggybacked
/// LACs, the odd fence and explicit LAC, padding to sector boundaries. The seed of fuzz inputs
/// that get past the first checksum.
pub fn sample_journal_body(seed: u64, batches: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let epoch = replay_file_header().epoch();
    let mut body = Vec::new();
    let mut next_entry = [0u64; 4];
    let mut keyed = [false; 4];
    let mut buf = Some(AlignedBuf::with_capacity(REPLAY_BATCH_BYTES_MAX + BATCH_CLOSE_SLACK_BYTES));
    for seq in 0..batches as u64 {
        let mut builder = BatchBuilder::new(buf.take().expect("buffer returned"), epoch, seq);
        let records = 1 + rng.below(6);
        for _ in 0..records {
            let s = rng.below(4) as usize;
            let segment = 1 + s as u64;
            let payload_len = match rng.below(4) {
                0 => 0,
                1 => rng.below(16) as usize,
                2 => rng.below(200) as usize,
                _ => rng.below(1500) as usize,
            };
            let key = b"fuzz-master-key";
            let need = payload_len + if keyed[s] { 0 } else { record::record_bytes(key.len()) };
            if !builder.fits(need) {
                break;
            }
            if !keyed[s] {
                let header = control(RecordKind::MasterKey, segment, 0, key.len());
                builder.push(&header, key);
                keyed[s] = true;
            }
            match rng.below(10) {
                0 => {
                    builder.push(&control(RecordKind::Fence, segment, 0, 0), &[]);
                }
                1 => {
                    let lac = next_entry[s].saturating_sub(1);
                    builder.push(&control(RecordKind::Lac, segment, lac, 0), &[]);
                }
                _ => {
                    let entry = next_entry[s];
                    next_entry[s] += 1;
                    let payload: Vec<u8> = (0..payload_len).map(|_| rng.next_u64() as u8).collect();
                    let header = RecordHeader {
                        kind: RecordKind::Entry,
                        flags: 0,
                        payload_len: payload_len as u32,
                        segment_id: segment,
                        entry_id: entry,
                        last_add_confirmed: entry.checked_sub(1).unwrap_or(LAC_NONE),
                    };
                    builder.push(&header, &payload);
                }
            }
        }
        if builder.is_empty() {
            buf = Some(builder.into_buffer());
            continue;
        }
        let closed = builder.close();
        if body.len() + closed.len() > REPLAY_BODY_BYTES {
            break;
        }
        body.extend_from_slice(closed.as_slice());
        buf = Some(closed);
    }
    body
}

fn control(kind: RecordKind, segment: u64, entry: u64, payload_len: usize) -> RecordHeader {
    RecordHeader {
        kind,
        flags: 0,
        payload_len: payload_len as u32,
        segment_id: segment,
        entry_id: entry,
        last_add_confirmed: LAC_NONE,
    }
}
