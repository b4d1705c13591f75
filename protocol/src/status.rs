//! `Status`: the outcome code that opens every response body.
//!
//! Owns: the status values and their one-byte encoding.
//! Does not own: which engine error maps to which status (the server's; docs/protocol.md has
//! the table).
//!
//! Invariants:
//! - S1: every status has one byte value, fixed forever; a byte with no status decodes to
//!   `None` (a malformed response), never to a panic or a default.

/// The outcome of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Done; the response body is the operation's result.
    Ok = 0,
    /// The bookie holds the segment but not this entry (and no damage could have lost it).
    NoSuchEntry = 1,
    /// The bookie holds nothing of the segment, or the segment was deleted on it.
    NoSuchSegment = 2,
    /// The segment is fenced: plain adds are refused (recovery adds are not).
    Fenced = 3,
    /// The master key does not match the one the segment was created with.
    WrongMasterKey = 4,
    /// The bookie's disk is (nearly) full: plain adds are refused.
    ReadOnly = 5,
    /// The entry's bytes are damaged, or damage may have held it; never mistake it for absence.
    Corrupt = 6,
    /// An entry, frame or token is larger than the limits allow.
    TooLarge = 7,
    /// The request is malformed or not understood (unknown op, bad flags, bad body).
    BadRequest = 8,
    /// The bookie or the connection has too much in flight: retry later, or elsewhere.
    Overloaded = 9,
    /// Authentication failed or is required first.
    Unauthorized = 10,
    /// The bookie failed (I/O error, poisoned shard, shutting down).
    Internal = 11,
}

impl Status {
    /// Every status, in byte order.
    pub const ALL: [Status; 12] = [
        Status::Ok,
        Status::NoSuchEntry,
        Status::NoSuchSegment,
        Status::Fenced,
        Status::WrongMasterKey,
        Status::ReadOnly,
        Status::Corrupt,
        Status::TooLarge,
        Status::BadRequest,
        Status::Overloaded,
        Status::Unauthorized,
        Status::Internal,
    ];

    /// The status a byte stands for, or `None` for a byte no status has (S1).
    pub fn from_u8(byte: u8) -> Option<Status> {
        Status::ALL.get(usize::from(byte)).copied()
    }

    /// The status's byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_decodes_to_its_status_or_none() {
        for byte in 0..=u8::MAX {
            match Status::from_u8(byte) {
                Some(status) => assert_eq!(status.as_u8(), byte),
                None => assert!(usize::from(byte) >= Status::ALL.len()),
            }
        }
    }
}
