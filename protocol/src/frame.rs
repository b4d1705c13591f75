//! `FrameHeader` and `Op`: the 16 bytes that open every frame, in both directions.
//!
//! Owns: the header layout, the operation codes, the flag bits, the protocol version, and the
//! checks that make a stream untrustworthy (length, version, direction).
//! Does not own: bodies (request.rs, response.rs) or buffering (decoder.rs).
//!
//! Layout (little-endian): `frame_len u32` (bytes after this field), `version u8`, `op u8`,
//! `flags u16`, `request_id u64`, then the body. A response carries its request's op with
//! `RESPONSE_BIT` set and its request's id.
//!
//! Invariants:
//! - F1: `frame_len >= FRAME_HEADER_BYTES - 4`, and `frame_len + 4 <= Limits::frame_bytes_max`.
//! - F2: requests never have `RESPONSE_BIT` set in their op; responses always do.

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Bytes of the header after the `frame_len` field: the least `frame_len` can be.
pub const FRAME_LEN_MIN: u32 = (FRAME_HEADER_BYTES - 4) as u32;

/// The protocol version this crate speaks. See docs/protocol.md for the versioning rule.
pub const PROTOCOL_VERSION: u8 = 1;

/// Set in the op byte of every response.
pub const RESPONSE_BIT: u8 = 0x80;

/// READ and READ_LAST_ADD_CONFIRMED: fence the segment first (a master key follows).
pub const FLAG_FENCE: u16 = 0x0001;

/// ADD: a recovery add, accepted on a fenced segment.
pub const FLAG_RECOVERY_ADD: u16 = 0x0002;

/// An operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Add an entry.
    Add = 1,
    /// Read an entry, fencing the segment first with `FLAG_FENCE`.
    Read = 2,
    /// Read the segment's `last_add_confirmed`, fencing the segment first with `FLAG_FENCE`.
    ReadLastAddConfirmed = 3,
    /// Write an explicit `last_add_confirmed`.
    WriteLastAddConfirmed = 4,
    /// Wait until `last_add_confirmed` passes a known value; answer it with the next entry.
    LongPoll = 5,
    /// Read consecutive entries.
    ReadRange = 6,
    /// Delete a segment on this bookie.
    DeleteSegment = 7,
    /// Authentication handshake step.
    Auth = 8,
}

impl Op {
    /// Every operation, in byte order.
    pub const ALL: [Op; 8] = [
        Op::Add,
        Op::Read,
        Op::ReadLastAddConfirmed,
        Op::WriteLastAddConfirmed,
        Op::LongPoll,
        Op::ReadRange,
        Op::DeleteSegment,
        Op::Auth,
    ];

    /// The operation of a request op byte (without `RESPONSE_BIT`), if it is one.
    pub fn from_u8(byte: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_u8() == byte)
    }

    /// The op byte of a request.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The flag bits a request of this op may carry.
    pub fn request_flags(self) -> u16 {
        match self {
            Op::Add => FLAG_RECOVERY_ADD,
            Op::Read | Op::ReadLastAddConfirmed => FLAG_FENCE,
            _ => 0,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes after the `frame_len` field: the rest of the header plus the body.
    pub frame_len: u32,
    /// Protocol version.
    pub version: u8,
    /// Op byte, `RESPONSE_BIT` included.
    pub op: u8,
    /// Flag bits.
    pub flags: u16,
    /// The request id, echoed by the response.
    pub request_id: u64,
}

impl FrameHeader {
    /// A header for a frame of `body_bytes` bytes after the header.
    pub fn new(op: u8, flags: u16, request_id: u64, body_bytes: usize) -> FrameHeader {
        let frame_len = u32::try_from(body_bytes + FRAME_LEN_MIN as usize)
            .expect("frame larger than 4 GiB: callers check Limits::frame_bytes_max first");
        FrameHeader { frame_len, version: PROTOCOL_VERSION, op, flags, request_id }
    }

    /// Bytes of the whole frame, this header included.
    pub fn frame_bytes(&self) -> u64 {
        u64::from(self.frame_len) + 4
    }

    /// Bytes of the body.
    pub fn body_bytes(&self) -> u64 {
        u64::from(self.frame_len.saturating_sub(FRAME_LEN_MIN))
    }

    /// Writes the header's 16 bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut out = [0u8; FRAME_HEADER_BYTES];
        out[0..4].copy_from_slice(&self.frame_len.to_le_bytes());
        out[4] = self.version;
        out[5] = self.op;
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out
    }

    /// Reads a header from its 16 bytes; checks nothing (decoder.rs does).
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        let [l0, l1, l2, l3, version, op, f0, f1, i0, i1, i2, i3, i4, i5, i6, i7] = *bytes;
        FrameHeader {
            frame_len: u32::from_le_bytes([l0, l1, l2, l3]),
            version,
            op,
            flags: u16::from_le_bytes([f0, f1]),
            request_id: u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_little_endian() {
        let header =
            FrameHeader { frame_len: 0x0403_0201, version: 1, op: 0x85, flags: 0x0201, request_id: 7 };
        let bytes = header.encode();
        assert_eq!(bytes[..8], [1, 2, 3, 4, 1, 0x85, 1, 2]);
        assert_eq!(bytes[8..], 7u64.to_le_bytes());
        assert_eq!(FrameHeader::decode(&bytes), header);
    }

    #[test]
    fn op_bytes_round_trip() {
        for byte in 0..=u8::MAX {
            if let Some(op) = Op::from_u8(byte) {
                assert_eq!(op.as_u8(), byte);
            }
        }
        assert_eq!(Op::from_u8(0), None);
        assert_eq!(Op::from_u8(Op::Add.as_u8() | RESPONSE_BIT), None);
    }
}
