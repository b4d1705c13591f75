//! dlog-protocol: the bookie wire protocol, as a pure codec shared by the server and clients.
//!
//! Owns: the byte layout of frames (docs/protocol.md), the typed requests and responses they
//! carry, the status codes, the limits a decoder enforces, and a streaming decoder that splits
//! whole frames off a receive buffer.
//! Does not own: sockets, timeouts, connection state, authentication policy, or what a bookie
//! does with a request (the server maps requests onto `dlog_engine::Bookie`).
//!
//! Invariants:
//! - P1: decoding never panics and never allocates more than the frame it is decoding, which
//!   `Limits::frame_bytes_max` bounds; a frame length beyond it is refused from its first four
//!   bytes.
//! - P2: payloads (entries, tokens) decode as `Bytes` slices of the receive buffer: no copy.
//! - P3: every value the encoders produce decodes to the same value (round trip), and a
//!   truncated frame decodes to "need more bytes", never to a value.
//! - P4: a decode error says whether the stream is still in step (`DecodeError::is_fatal`):
//!   a malformed body of a well-framed request is answerable, with its request id and op.
//!
//! Identifiers are plain `u64` here (segment, entry, `last_add_confirmed`) rather than the
//! engine's newtypes: clients link this crate, and must not link the engine.

pub mod decoder;
pub mod error;
pub mod frame;
pub mod limits;
pub mod reader;
pub mod request;
pub mod response;
mod sink;
pub mod status;

pub use decoder::{decode_request, decode_response};
pub use error::{BodyError, DecodeError, FrameError};
pub use frame::{
    FLAG_FENCE, FLAG_RECOVERY_ADD, FRAME_HEADER_BYTES, FrameHeader, Op, PROTOCOL_VERSION, RESPONSE_BIT,
};
pub use limits::{
    ADD_OVERHEAD_BYTES_MAX, AUTH_TOKEN_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX, LAC_NONE, Limits, LimitsError,
    MASTER_KEY_BYTES_MAX, RANGE_ENTRIES_MAX, RANGE_ENTRY_OVERHEAD_BYTES,
};
pub use request::{Request, encode_request, encode_request_chunks};
pub use response::{Response, encode_response, encode_response_chunks};
pub use status::Status;
