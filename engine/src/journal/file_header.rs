//! The header block at offset 0 of every journal file. Format: docs/format.md#journal-file.
//!
//! ```text
//! 0   [u8; 8] magic "DLOGJRNL"
//! 8   u32 format_version (1)
//! 12  u32 crc32c over bytes 16..64
//! 16  u64 file_seq   (also the file's epoch)
//! 24  u32 shard_id
//! 28  u32 writes_in_flight_max   (the window recovery uses to tell a torn tail from damage)
//! 32  u64 file_bytes
//! 40  u64 batch_bytes_limit      (no batch in this file is longer)
//! 48..64 reserved, zero
//! ```
//! The rest of the 4 KiB block is zero.

use crate::constants::JOURNAL_FILE_HEADER_BYTES;
use crate::ids::{FileSeq, ShardId};

const MAGIC: &[u8; 8] = b"DLOGJRNL";

/// The format version this build writes and reads.
pub const JOURNAL_FORMAT_VERSION: u32 = 1;

/// A decoded journal file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Sequence number, and epoch of every record in this use of the file.
    pub file_seq: FileSeq,
    /// The shard that owns the file.
    pub shard_id: ShardId,
    /// Batches the writer kept in flight at most.
    pub writes_in_flight_max: u32,
    /// Size the file was prepared to.
    pub file_bytes: u64,
    /// No batch in this file is longer than this.
    pub batch_bytes_limit: u64,
}

impl FileHeader {
    /// The epoch records in this file carry.
    pub fn epoch(&self) -> u64 {
        self.file_seq.0
    }

    /// Encodes into a full header block.
    pub fn encode(&self) -> [u8; JOURNAL_FILE_HEADER_BYTES] {
        let mut block = [0u8; JOURNAL_FILE_HEADER_BYTES];
        block[0..8].copy_from_slice(MAGIC);
        block[8..12].copy_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
        block[16..24].copy_from_slice(&self.file_seq.0.to_le_bytes());
        block[24..28].copy_from_slice(&self.shard_id.0.to_le_bytes());
        block[28..32].copy_from_slice(&self.writes_in_flight_max.to_le_bytes());
        block[32..40].copy_from_slice(&self.file_bytes.to_le_bytes());
        block[40..48].copy_from_slice(&self.batch_bytes_limit.to_le_bytes());
        let crc = crc32c::crc32c(&block[16..64]);
        block[12..16].copy_from_slice(&crc.to_le_bytes());
        block
    }

    /// Decodes a header block; the error says what is wrong. Never panics.
    pub fn decode(block: &[u8]) -> Result<FileHeader, String> {
        let Some(b) = block.get(..64) else {
            return Err(format!("header is {} bytes, shorter than 64", block.len()));
        };
        if &b[0..8] != MAGIC {
            return Err("bad magic: not a dlog journal file".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        let version = u32_at(8);
        if version != JOURNAL_FORMAT_VERSION {
            return Err(format!("format version {version}; this build reads {JOURNAL_FORMAT_VERSION}"));
        }
        if u32_at(12) != crc32c::crc32c(&b[16..64]) {
            return Err("header checksum mismatch".into());
        }
        if b[48..64].iter().any(|x| *x != 0) {
            return Err("reserved header bytes are not zero".into());
        }
        let header = FileHeader {
            file_seq: FileSeq(u64_at(16)),
            shard_id: ShardId(u32_at(24)),
            writes_in_flight_max: u32_at(28),
            file_bytes: u64_at(32),
            batch_bytes_limit: u64_at(40),
        };
        // Fields replay computes with: keep them in the ranges the writer can produce.
        let sector = JOURNAL_FILE_HEADER_BYTES as u64;
        if header.writes_in_flight_max == 0
            || header.writes_in_flight_max as usize > crate::constants::JOURNAL_WRITES_IN_FLIGHT_MAX
        {
            return Err(format!("writes_in_flight_max {} out of range", header.writes_in_flight_max));
        }
        if header.file_bytes < 2 * sector
            || !header.file_bytes.is_multiple_of(sector)
            || header.file_bytes > 1 << 44
        {
            return Err(format!("file_bytes {} out of range", header.file_bytes));
        }
        if header.batch_bytes_limit < sector || header.batch_bytes_limit > header.file_bytes {
            return Err(format!("batch_bytes_limit {} out of range", header.batch_bytes_limit));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_header_round_trip_and_damage() {
        let h = FileHeader {
            file_seq: FileSeq(42),
            shard_id: ShardId(3),
            writes_in_flight_max: 4,
            file_bytes: 1 << 28,
            batch_bytes_limit: 1 << 20,
        };
        let mut block = h.encode();
        assert_eq!(FileHeader::decode(&block), Ok(h));
        block[20] ^= 1;
        assert!(FileHeader::decode(&block).unwrap_err().contains("checksum"));
        assert!(FileHeader::decode(&[0u8; 10]).is_err());
        assert!(FileHeader::decode(&[0u8; 4096]).unwrap_err().contains("magic"));
    }
}
