//! `DecodeError`: why bytes from a peer did not decode, split by what the receiver can do.
//!
//! Owns: the two kinds of decode failure and the status each is answered with.
//! Does not own: closing connections or writing the answer (the server and client do).
//!
//! Invariants:
//! - E1: `DecodeError::Frame` means the stream is out of step or not this protocol: the
//!   receiver closes the connection (after answering, if it knows the request id). Nothing
//!   more is decoded from that buffer.
//! - E2: `DecodeError::Malformed` means one well-framed frame had a bad body: that frame has
//!   been consumed, the error names its request id and op byte, and decoding goes on with the
//!   next frame.

use crate::status::Status;

/// A decode failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The framing is broken: close the connection (E1).
    #[error("bad frame (request id {request_id:?}): {error}")]
    Frame {
        /// The request id, when the 16 header bytes had arrived.
        request_id: Option<u64>,
        /// What is wrong.
        error: FrameError,
    },
    /// A well-framed frame with a bad body: answer it, and go on (E2).
    #[error("malformed frame {request_id} (op {op:#04x}): {error}")]
    Malformed {
        /// The request id from the header.
        request_id: u64,
        /// The op byte from the header (`RESPONSE_BIT` included in responses).
        op: u8,
        /// What is wrong.
        error: BodyError,
    },
}

impl DecodeError {
    /// Whether the stream is no longer trustworthy and the connection must be closed (E1).
    pub fn is_fatal(&self) -> bool {
        matches!(self, DecodeError::Frame { .. })
    }

    /// The request id the error concerns, when known.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            DecodeError::Frame { request_id, .. } => *request_id,
            DecodeError::Malformed { request_id, .. } => Some(*request_id),
        }
    }

    /// The status a server answers the request with: `TooLarge` for a frame or payload over
    /// the limits, `BadRequest` otherwise.
    pub fn status(&self) -> Status {
        match self {
            DecodeError::Frame { error: FrameError::TooLarge { .. }, .. }
            | DecodeError::Malformed { error: BodyError::PayloadTooLarge { .. }, .. }
            | DecodeError::Malformed { error: BodyError::TokenTooLarge { .. }, .. } => Status::TooLarge,
            _ => Status::BadRequest,
        }
    }
}

/// A broken frame header: the stream cannot be trusted past it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `frame_len + 4` is over `Limits::frame_bytes_max`.
    #[error("frame of {frame_bytes} bytes is over the limit of {frame_bytes_max}")]
    TooLarge {
        /// Bytes the frame claims, header included.
        frame_bytes: u64,
        /// The limit.
        frame_bytes_max: u32,
    },
    /// `frame_len` is shorter than the rest of the header.
    #[error("frame_len {0} is shorter than the header")]
    TooShort(u32),
    /// A protocol version this side does not speak.
    #[error("protocol version {0} (this side speaks {v})", v = crate::frame::PROTOCOL_VERSION)]
    BadVersion(u8),
    /// A request op byte with `RESPONSE_BIT` set, or a response op byte without it.
    #[error("op {0:#04x} goes the other way")]
    WrongDirection(u8),
}

/// A malformed body in a well-framed frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The op byte names no operation this side knows.
    #[error("unknown op {0:#04x}")]
    UnknownOp(u8),
    /// Flag bits the op does not define.
    #[error("flags {0:#06x} are not defined for this op")]
    UnknownFlags(u16),
    /// The body ends before the field.
    #[error("body ends inside {0}")]
    Truncated(&'static str),
    /// Bytes follow the last field of a body that has no trailing payload.
    #[error("{0} bytes after the last field")]
    Trailing(u64),
    /// A master key longer than `MASTER_KEY_BYTES_MAX`.
    #[error("master key of {0} bytes is over the limit")]
    MasterKeyTooLong(usize),
    /// An entry payload over `Limits::entry_bytes_max`.
    #[error("payload of {len} bytes is over the limit of {max}")]
    PayloadTooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// An authentication token over `AUTH_TOKEN_BYTES_MAX`.
    #[error("token of {0} bytes is over the limit")]
    TokenTooLarge(usize),
    /// A field holds a value it may not (the field is named).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A READ_RANGE whose last entry is before its first.
    #[error("empty range {first}..={last}")]
    EmptyRange {
        /// First entry asked for.
        first: u64,
        /// Last entry asked for.
        last: u64,
    },
    /// A status byte with no status.
    #[error("unknown status {0}")]
    UnknownStatus(u8),
    /// A READ_RANGE response claiming more entries than `RANGE_ENTRIES_MAX`.
    #[error("{0} entries in a range response")]
    TooManyEntries(u32),
    /// A refusal whose message is too long or not UTF-8.
    #[error("bad refusal message")]
    BadMessage,
}
