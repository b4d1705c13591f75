//! `EntryEnvelope`: the bytes a segment writer stores as an entry: a 12-byte header (a CRC32C
//! and the segment's cumulative length) in front of the caller's payload. BookKeeper's digest,
//! in a smaller form.
//!
//! Layout: `crc32c: u32 LE | cumulative_length: u64 LE | payload`. The CRC covers the segment
//! id, the entry id (both as u64 LE, not stored), the cumulative length and the payload, so a
//! copy of another entry or another segment fails the check as surely as damaged bytes.
//!
//! Invariants:
//! - EV1: `decode(segment, entry, encode(segment, entry, length, payload))` gives back
//!   `(length, payload)`; any other bytes, or the same bytes under another segment or entry
//!   id, are refused as `Corrupt` (up to CRC32C's collision odds), never a panic.
//! - EV2: `cumulative_length` is the payload bytes of entries `0..=entry`: recovery takes a
//!   closed segment's length from its last entry without reading the others.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes the envelope adds in front of a payload.
pub const ENVELOPE_HEADER_BYTES: usize = 12;

/// Why stored bytes are not a valid entry of the segment (EV1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than the header.
    #[error("entry of {0} bytes is shorter than its header")]
    Short(usize),
    /// The CRC does not match: damaged, or the copy of another entry.
    #[error("entry checksum mismatch")]
    Checksum,
    /// The cumulative length is smaller than the payload.
    #[error("cumulative length {cumulative} is less than the payload's {payload} bytes")]
    Length {
        /// The stored cumulative length.
        cumulative: u64,
        /// The payload's bytes.
        payload: u64,
    },
}

fn checksum(segment: u64, entry: u64, cumulative_length: u64, payload: &[u8]) -> u32 {
    let mut ids = [0u8; 24];
    ids[..8].copy_from_slice(&segment.to_le_bytes());
    ids[8..16].copy_from_slice(&entry.to_le_bytes());
    ids[16..].copy_from_slice(&cumulative_length.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&ids), payload)
}

/// The stored bytes of entry `entry` of `segment`, whose payload brings the segment's length
/// to `cumulative_length` (EV2).
pub fn encode(segment: u64, entry: u64, cumulative_length: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(ENVELOPE_HEADER_BYTES + payload.len());
    out.put_u32_le(checksum(segment, entry, cumulative_length, payload));
    out.put_u64_le(cumulative_length);
    out.put_slice(payload);
    out.freeze()
}

/// The cumulative length and the payload (a slice of `stored`, no copy) of entry `entry` of
/// `segment`, or why the bytes are not it (EV1).
pub fn decode(segment: u64, entry: u64, stored: &Bytes) -> Result<(u64, Bytes), EnvelopeError> {
    if stored.len() < ENVELOPE_HEADER_BYTES {
        return Err(EnvelopeError::Short(stored.len()));
    }
    let crc = u32::from_le_bytes(stored[..4].try_into().expect("4 bytes"));
    let cumulative = u64::from_le_bytes(stored[4..12].try_into().expect("8 bytes"));
    let payload = stored.slice(ENVELOPE_HEADER_BYTES..);
    if checksum(segment, entry, cumulative, &payload) != crc {
        return Err(EnvelopeError::Checksum);
    }
    if cumulative < payload.len() as u64 {
        return Err(EnvelopeError::Length { cumulative, payload: payload.len() as u64 });
    }
    Ok((cumulative, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_refuses_everything_else(
            segment in any::<u64>(),
            entry in any::<u64>(),
            before in 0u64..1 << 40,
            payload in prop::collection::vec(any::<u8>(), 0..64),
            flip in any::<usize>(),
        ) {
            let length = before + payload.len() as u64;
            let stored = encode(segment, entry, length, &payload);
            prop_assert_eq!(decode(segment, entry, &stored), Ok((length, Bytes::from(payload.clone()))));
            prop_assert!(decode(segment, entry.wrapping_add(1), &stored).is_err());
            prop_assert!(decode(segment.wrapping_add(1), entry, &stored).is_err());
            let mut damaged = stored.to_vec();
            let bit = flip % (damaged.len() * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(segment, entry, &Bytes::from(damaged)).is_err());
            prop_assert!(decode(segment, entry, &stored.slice(..stored.len() - 1)).is_err());
        }
    }
}
