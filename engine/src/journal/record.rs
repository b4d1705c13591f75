//! Journal record framing: pure encode and decode, no I/O. Format: docs/format.md#record.
//!
//! ```text
//! 0   u32 crc32c   over bytes 4..40 and the payload (padding: bytes 4..40 only), seeded with
//!                  the file epoch, so a record is only valid in the file use that wrote it
//! 4   u32 payload_len
//! 8   u8  kind     (0 never valid: preallocated files are zero)
//! 9   u8  flags
//! 10  u16 reserved (0)
//! 12  u32 epoch    low 32 bits of the file epoch
//! 16  u64 segment_id    (Batch: total bytes of the batch)
//! 24  u64 entry_id      (Batch: batch sequence number; Lac: the explicit LAC)
//! 32  u64 last_add_confirmed (u64::MAX when none)
//! ```
//!
//! Invariants:
//! - R1: `decode_header` accepts a header only if its kind is known, reserved bits are zero,
//!   the epoch matches and the CRC over header (and, with `verify_payload`, payload) matches.
//! - R2: every byte of a record is covered by its CRC, except the zero payload of padding.

use crate::constants::RECORD_HEADER_BYTES;

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// First record of every batch: its length and sequence number.
    Batch = 1,
    /// An entry of a segment; payload = entry bytes.
    Entry = 2,
    /// The master key of a segment, journaled on first sight; payload = key.
    MasterKey = 3,
    /// The segment is fenced.
    Fence = 4,
    /// An explicit `last_add_confirmed` write.
    Lac = 5,
    /// Zeroes up to the end of the batch, which ends on a sector boundary.
    Padding = 6,
    /// First record of a run in an entry log (storage/run.rs); never in a journal.
    RunHeader = 7,
    /// The section table that ends a run in an entry log; never in a journal.
    RunFooter = 8,
    /// The segment is deleted: refuse adds, answer reads with `NoSuchSegment`, and let the
    /// garbage collector drop its entries once the deletion is confirmed.
    Delete = 9,
}

impl RecordKind {
    fn from_u8(value: u8) -> Option<RecordKind> {
        Some(match value {
            1 => RecordKind::Batch,
            2 => RecordKind::Entry,
            3 => RecordKind::MasterKey,
            4 => RecordKind::Fence,
            5 => RecordKind::Lac,
            6 => RecordKind::Padding,
            7 => RecordKind::RunHeader,
            8 => RecordKind::RunFooter,
            9 => RecordKind::Delete,
            _ => return None,
        })
    }
}

/// `last_add_confirmed` value meaning "none yet".
pub const LAC_NONE: u64 = u64::MAX;

/// Flag on an entry record: written by recovery, accepted on a fenced segment.
pub const FLAG_RECOVERY: u8 = 0x01;

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the record is.
    pub kind: RecordKind,
    /// Flags (`FLAG_RECOVERY`).
    pub flags: u8,
    /// Length of the payload following the header.
    pub payload_len: u32,
    /// Segment (Batch: total batch bytes).
    pub segment_id: u64,
    /// Entry (Batch: sequence number; Lac: explicit LAC).
    pub entry_id: u64,
    /// The LAC the entry carried, or `LAC_NONE`.
    pub last_add_confirmed: u64,
}

/// Why bytes are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header or than the payload length claims.
    Short,
    /// All-zero header: never written (end of the journal in a preallocated file).
    Zero,
    /// Kind unknown or reserved bits set.
    Malformed,
    /// Written in an earlier use of a recycled file.
    StaleEpoch,
    /// Checksum mismatch.
    Checksum,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Total bytes a record with this payload occupies.
pub fn record_bytes(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + payload_len
}

/// The CRC seed of an epoch: computed once per file by writers (`encode_seeded`).
pub fn seed(epoch: u64) -> u32 {
    crc32c::crc32c(&epoch.to_le_bytes())
}

/// Writes header and payload into `out[..record_bytes(payload.len())]`. For `Padding`, pass an
/// empty payload and the padding length in `header.payload_len`; the caller keeps those bytes
/// zero.
pub fn encode(out: &mut [u8], epoch: u64, header: &RecordHeader, payload: &[u8]) {
    encode_seeded(out, epoch, seed(epoch), header, payload);
}

/// `encode` with the epoch's seed computed by the caller (hot paths write many records of one
/// epoch).
pub fn encode_seeded(out: &mut [u8], epoch: u64, seed: u32, header: &RecordHeader, payload: &[u8]) {
    let (h, rest) = out.split_at_mut(RECORD_HEADER_BYTES);
    let crc = fill_header(h, epoch, seed, header, payload);
    if header.kind != RecordKind::Padding {
        rest[..payload.len()].copy_from_slice(payload);
    }
    h[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// The header bytes of a record (its CRC covers `payload`), for callers that place the payload
/// themselves, possibly split over several buffers.
pub fn encode_header(
    epoch: u64,
    seed: u32,
    header: &RecordHeader,
    payload: &[u8],
) -> [u8; RECORD_HEADER_BYTES] {
    let mut h = [0u8; RECORD_HEADER_BYTES];
    let crc = fill_header(&mut h, epoch, seed, header, payload);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Fills header bytes 4..40 and returns the record's CRC.
fn fill_header(h: &mut [u8], epoch: u64, seed: u32, header: &RecordHeader, payload: &[u8]) -> u32 {
    h[4..8].copy_from_slice(&header.payload_len.to_le_bytes());
    h[8] = header.kind as u8;
    h[9] = header.flags;
    h[10..12].copy_from_slice(&0u16.to_le_bytes());
    h[12..16].copy_from_slice(&(epoch as u32).to_le_bytes());
    h[16..24].copy_from_slice(&header.segment_id.to_le_bytes());
    h[24..32].copy_from_slice(&header.entry_id.to_le_bytes());
    h[32..40].copy_from_slice(&header.last_add_confirmed.to_le_bytes());
    let crc = crc32c::crc32c_append(seed, &h[4..RECORD_HEADER_BYTES]);
    if header.kind != RecordKind::Padding {
        assert_eq!(payload.len(), header.payload_len as usize);
        crc32c::crc32c_append(crc, payload)
    } else {
        assert!(payload.is_empty());
        crc
    }
}

/// Decodes the header at the start of `bytes` and, unless it is padding, checks the CRC over the
/// payload too (which must be within `bytes`). Never panics on any input.
pub fn decode(bytes: &[u8], epoch: u64) -> Result<(RecordHeader, &[u8]), DecodeError> {
    let Some(h) = bytes.get(..RECORD_HEADER_BYTES) else {
        return Err(DecodeError::Short);
    };
    if h.iter().all(|b| *b == 0) {
        return Err(DecodeError::Zero);
    }
    let kind = RecordKind::from_u8(h[8]).ok_or(DecodeError::Malformed)?;
    if h[10] != 0 || h[11] != 0 {
        return Err(DecodeError::Malformed);
    }
    if read_u32(h, 12) != epoch as u32 {
        return Err(DecodeError::StaleEpoch);
    }
    let header = RecordHeader {
        kind,
        flags: h[9],
        payload_len: read_u32(h, 4),
        segment_id: read_u64(h, 16),
        entry_id: read_u64(h, 24),
        last_add_confirmed: read_u64(h, 32),
    };
    let mut crc = crc32c::crc32c_append(seed(epoch), &h[4..]);
    let payload: &[u8] = if kind == RecordKind::Padding {
        &[]
    } else {
        let end =
            RECORD_HEADER_BYTES.checked_add(header.payload_len as usize).ok_or(DecodeError::Malformed)?;
        let Some(payload) = bytes.get(RECORD_HEADER_BYTES..end) else {
            // The CRC covers the payload, so it cannot be checked yet: the caller must supply
            // more bytes, or treat the record as damaged if there are none.
            return Err(DecodeError::Short);
        };
        crc = crc32c::crc32c_append(crc, payload);
        payload
    };
    if crc != read_u32(h, 0) {
        return Err(DecodeError::Checksum);
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(seg: u64, id: u64, lac: u64, len: usize) -> RecordHeader {
        RecordHeader {
            kind: RecordKind::Entry,
            flags: 0,
            payload_len: len as u32,
            segment_id: seg,
            entry_id: id,
            last_add_confirmed: lac,
        }
    }

    proptest! {
        #[test]
        fn record_round_trip(seg: u64, id: u64, lac: u64, epoch: u64, flags: u8,
                             payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut h = entry(seg, id, lac, payload.len());
            h.flags = flags;
            let mut buf = vec![0u8; record_bytes(payload.len())];
            encode(&mut buf, epoch, &h, &payload);
            let (decoded, got) = decode(&buf, epoch).unwrap();
            prop_assert_eq!(decoded, h);
            prop_assert_eq!(got, &payload[..]);
        }

        #[test]
        fn record_any_byte_corruption_detected(epoch: u64,
                payload in proptest::collection::vec(any::<u8>(), 1..300),
                at in any::<proptest::sample::Index>(), flip in 1u8..=255) {
            let h = entry(7, 9, 8, payload.len());
            let mut buf = vec![0u8; record_bytes(payload.len())];
            encode(&mut buf, epoch, &h, &payload);
            let at = at.index(buf.len());
            buf[at] ^= flip;
            prop_assert!(decode(&buf, epoch).is_err());
        }

        #[test]
        fn record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                      epoch: u64) {
            let _ = decode(&bytes, epoch);
        }
    }

    #[test]
    fn record_other_epoch_is_stale() {
        let h = entry(1, 2, 3, 4);
        let mut buf = vec![0u8; record_bytes(4)];
        encode(&mut buf, 10, &h, b"abcd");
        assert_eq!(decode(&buf, 11), Err(DecodeError::StaleEpoch));
        assert_eq!(decode(&[0u8; 64], 10), Err(DecodeError::Zero));
        assert_eq!(decode(&buf[..30], 10), Err(DecodeError::Short));
        assert_eq!(decode(&buf[..41], 10), Err(DecodeError::Short));
    }
}
