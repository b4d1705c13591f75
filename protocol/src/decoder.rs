//! The streaming decoders: whole frames off the front of a receive buffer.
//!
//! Owns: deciding, from the bytes received so far, whether a whole frame is there, whether the
//! stream is broken (E1), and splitting the frame off without copying it (P2).
//! Does not own: reading the socket (the caller appends to the buffer), body layouts
//! (request.rs, response.rs).
//!
//! Invariants:
//! - D1: `Ok(None)` leaves the buffer's bytes as they were (it may reserve room for the rest of
//!   a frame whose header passed the checks, never more than `Limits::frame_bytes_max`).
//! - D2: `Ok(Some(..))` and `DecodeError::Malformed` consume exactly one frame.
//! - D3: the length is checked from the first four bytes, before anything is reserved (P1).
//! - D4: payloads in the result are slices of the frame split off the buffer: the buffer's
//!   allocation is shared, not copied.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, FrameError};
use crate::frame::{FRAME_HEADER_BYTES, FRAME_LEN_MIN, FrameHeader, Op, PROTOCOL_VERSION, RESPONSE_BIT};
use crate::limits::Limits;
use crate::request::Request;
use crate::response::Response;

/// Which way frames go on the stream being decoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// Decodes the next request in `buf`: `Ok(None)` when more bytes are needed, else the request
/// id and the request, consumed from `buf`. On `DecodeError::Frame` close the connection
/// (answering first when the error has a request id); on `DecodeError::Malformed` answer
/// `error.status()` to its request id and go on decoding.
pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<(u64, Request)>, DecodeError> {
    let Some((header, body)) = split_frame(buf, limits, Direction::Request)? else { return Ok(None) };
    let malformed = |error| DecodeError::Malformed { request_id: header.request_id, op: header.op, error };
    let op =
        Op::from_u8(header.op).ok_or_else(|| malformed(crate::error::BodyError::UnknownOp(header.op)))?;
    let request = Request::decode_body(op, header.flags, body, limits).map_err(malformed)?;
    Ok(Some((header.request_id, request)))
}

/// Decodes the next response in `buf`: `Ok(None)` when more bytes are needed, else the request
/// id it answers and the response, consumed from `buf`. On `DecodeError::Frame` close the
/// connection and fail everything in flight on it; on `DecodeError::Malformed` fail that one
/// request id and go on decoding.
pub fn decode_response(buf: &mut BytesMut, limits: &Limits) -> Result<Option<(u64, Response)>, DecodeError> {
    let Some((header, body)) = split_frame(buf, limits, Direction::Response)? else { return Ok(None) };
    let op = header.op & !RESPONSE_BIT;
    let response = Response::decode_body(op, header.flags, body, limits)
        .map_err(|error| DecodeError::Malformed { request_id: header.request_id, op: header.op, error })?;
    Ok(Some((header.request_id, response)))
}

/// Checks the header of the frame at the front of `buf` and, once the frame is whole, splits
/// it off: its header and body (a slice of the split frame).
fn split_frame(
    buf: &mut BytesMut,
    limits: &Limits,
    direction: Direction,
) -> Result<Option<(FrameHeader, Bytes)>, DecodeError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else { return Ok(None) };
    let frame_len = u32::from_le_bytes(*len_bytes);
    let request_id = buf.first_chunk::<FRAME_HEADER_BYTES>().map(|h| FrameHeader::decode(h).request_id);
    let broken = |error| Err(DecodeError::Frame { request_id, error });
    if frame_len < FRAME_LEN_MIN {
        return broken(FrameError::TooShort(frame_len));
    }
    let frame_bytes = u64::from(frame_len) + 4;
    if frame_bytes > u64::from(limits.frame_bytes_max) {
        return broken(FrameError::TooLarge { frame_bytes, frame_bytes_max: limits.frame_bytes_max });
    }
    let Some(header_bytes) = buf.first_chunk::<FRAME_HEADER_BYTES>() else { return Ok(None) };
    let header = FrameHeader::decode(header_bytes);
    if header.version != PROTOCOL_VERSION {
        return broken(FrameError::BadVersion(header.version));
    }
    let is_response = header.op & RESPONSE_BIT != 0;
    if is_response != (direction == Direction::Response) {
        return broken(FrameError::WrongDirection(header.op));
    }
    // Bounded by frame_bytes_max, checked above.
    let frame_bytes = frame_bytes as usize;
    if buf.len() < frame_bytes {
        buf.reserve(frame_bytes - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_bytes).freeze();
    let body = frame.split_off(FRAME_HEADER_BYTES);
    Ok(Some((header, body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BodyError;
    use crate::request::encode_request;

    #[test]
    fn a_4_gib_frame_is_refused_from_its_length() {
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let capacity = buf.capacity();
        let error = decode_request(&mut buf, &Limits::default()).unwrap_err();
        assert!(error.is_fatal());
        assert_eq!(error.request_id(), None);
        assert!(matches!(error, DecodeError::Frame { error: FrameError::TooLarge { .. }, .. }));
        assert_eq!(buf.capacity(), capacity, "nothing reserved for a refused frame");
    }

    #[test]
    fn an_unknown_op_is_answerable_and_consumes_its_frame() {
        let mut buf = BytesMut::new();
        let header = FrameHeader::new(0x55, 0, 42, 3);
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(&[1, 2, 3]);
        encode_request(&Request::DeleteSegment { segment: 9 }, 43, &mut buf);
        let error = decode_request(&mut buf, &Limits::default()).unwrap_err();
        assert_eq!(
            error,
            DecodeError::Malformed { request_id: 42, op: 0x55, error: BodyError::UnknownOp(0x55) }
        );
        assert!(!error.is_fatal());
        let next = decode_request(&mut buf, &Limits::default()).unwrap();
        assert_eq!(next, Some((43, Request::DeleteSegment { segment: 9 })));
    }

    #[test]
    fn a_response_on_the_request_stream_is_fatal() {
        let mut buf = BytesMut::from(&FrameHeader::new(0x81, 0, 5, 0).encode()[..]);
        let error = decode_request(&mut buf, &Limits::default()).unwrap_err();
        assert_eq!(
            error,
            DecodeError::Frame { request_id: Some(5), error: FrameError::WrongDirection(0x81) }
        );
    }
}
