//! `Response`: what a bookie answers, its body layout, encoding and body decoding.
//!
//! Owns: the response body of every op (docs/protocol.md#responses): a status byte, then for
//! `Ok` the op's result, for any other status a short UTF-8 message.
//! Does not own: framing checks and buffering (decoder.rs), matching responses to requests
//! (the client, by request id).
//!
//! Invariants:
//! - A1: `encode_response` then `decode_response` gives back the same response and id, for
//!   every op and every status (messages up to `ERROR_MESSAGE_BYTES_MAX`).
//! - A2: a refusal decodes whatever its op byte, so a client learns why even a request it sent
//!   with an op the server does not know was refused.
//! - A3: decoded payloads are at most `Limits::entry_bytes_max` bytes each; a READ_RANGE
//!   response has at most `RANGE_ENTRIES_MAX` entries.

use bytes::{Bytes, BytesMut};

use crate::error::BodyError;
use crate::frame::{FRAME_HEADER_BYTES, FrameHeader, Op, RESPONSE_BIT};
use crate::limits::RANGE_ENTRY_OVERHEAD_BYTES;
use crate::limits::{AUTH_TOKEN_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX, LAC_NONE, Limits, RANGE_ENTRIES_MAX};
use crate::reader::BodyReader;
use crate::sink::{Chunks, Sink};
use crate::status::Status;

/// A bookie's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// ADD done: the entry is durable.
    Add {
        /// The segment.
        segment: u64,
        /// The entry.
        entry: u64,
    },
    /// READ done.
    Read {
        /// The segment.
        segment: u64,
        /// The entry.
        entry: u64,
        /// Its bytes.
        payload: Bytes,
    },
    /// READ_LAST_ADD_CONFIRMED done (after the fence, with `FLAG_FENCE`).
    ReadLastAddConfirmed {
        /// The highest `last_add_confirmed` this bookie has seen for the segment (carried by an
        /// entry or LAC write it accepted, durable here or not yet), if any.
        last_add_confirmed: Option<u64>,
    },
    /// WRITE_LAST_ADD_CONFIRMED done: durable.
    WriteLastAddConfirmed,
    /// LONG_POLL done: the LAC passed `known`, or the wait timed out.
    LongPoll {
        /// The segment's `last_add_confirmed` now.
        last_add_confirmed: Option<u64>,
        /// The entry after `known` and its bytes, when the LAC covers it and it was read.
        entry: Option<(u64, Bytes)>,
    },
    /// READ_RANGE done: consecutive entries from the first asked for.
    ReadRange {
        /// Entry ids and bytes, in order.
        entries: Vec<(u64, Bytes)>,
    },
    /// DELETE_SEGMENT done: durable.
    DeleteSegment,
    /// AUTH step accepted.
    Auth {
        /// The server's token for the next step (empty when the handshake is done).
        token: Bytes,
    },
    /// Any request refused: every status but `Ok`.
    Refused {
        /// The request's op byte as it came (it may name an op this side does not know);
        /// without `RESPONSE_BIT`.
        op: u8,
        /// Why (never `Status::Ok`).
        status: Status,
        /// A human-readable detail, at most `ERROR_MESSAGE_BYTES_MAX` bytes (longer ones are
        /// cut at a character boundary when encoded).
        message: String,
    },
}

/// `message` cut to at most `ERROR_MESSAGE_BYTES_MAX` bytes, at a character boundary.
fn cut_message(message: &str) -> &str {
    let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl Response {
    /// A refusal of a request with op byte `op`.
    pub fn refused(op: u8, status: Status, message: impl Into<String>) -> Response {
        Response::Refused { op, status, message: message.into() }
    }

    /// The op byte of the request this answers (without `RESPONSE_BIT`).
    pub fn op(&self) -> u8 {
        let op = match self {
            Response::Add { .. } => Op::Add,
            Response::Read { .. } => Op::Read,
            Response::ReadLastAddConfirmed { .. } => Op::ReadLastAddConfirmed,
            Response::WriteLastAddConfirmed => Op::WriteLastAddConfirmed,
            Response::LongPoll { .. } => Op::LongPoll,
            Response::ReadRange { .. } => Op::ReadRange,
            Response::DeleteSegment => Op::DeleteSegment,
            Response::Auth { .. } => Op::Auth,
            Response::Refused { op, .. } => return *op,
        };
        op.as_u8()
    }

    /// The response's status.
    pub fn status(&self) -> Status {
        match self {
            Response::Refused { status, .. } => *status,
            _ => Status::Ok,
        }
    }

    fn body_bytes(&self) -> usize {
        1 + match self {
            Response::Add { .. } => 16,
            Response::Read { payload, .. } => 16 + payload.len(),
            Response::ReadLastAddConfirmed { .. } => 8,
            Response::WriteLastAddConfirmed | Response::DeleteSegment => 0,
            Response::LongPoll { entry, .. } => 9 + entry.as_ref().map_or(0, |(_, p)| 8 + p.len()),
            Response::ReadRange { entries } => {
                4 + entries.iter().map(|(_, p)| RANGE_ENTRY_OVERHEAD_BYTES + p.len()).sum::<usize>()
            }
            Response::Auth { token } => token.len(),
            Response::Refused { message, .. } => cut_message(message).len(),
        }
    }

    /// Bytes of the encoded frame, header included: what to check against
    /// `Limits::frame_bytes_max` before sending.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_bytes()
    }

    fn encode_into(&self, request_id: u64, sink: &mut impl Sink) {
        let op = self.op();
        assert!(op & RESPONSE_BIT == 0, "op byte {op:#04x} is a response's");
        let header = FrameHeader::new(op | RESPONSE_BIT, 0, request_id, self.body_bytes());
        sink.put(&header.encode());
        sink.put(&[self.status().as_u8()]);
        match self {
            Response::Add { segment, entry } => {
                sink.put(&segment.to_le_bytes());
                sink.put(&entry.to_le_bytes());
            }
            Response::Read { segment, entry, payload } => {
                sink.put(&segment.to_le_bytes());
                sink.put(&entry.to_le_bytes());
                sink.put_payload(payload);
            }
            Response::ReadLastAddConfirmed { last_add_confirmed } => {
                sink.put(&last_add_confirmed.unwrap_or(LAC_NONE).to_le_bytes());
            }
            Response::WriteLastAddConfirmed | Response::DeleteSegment => {}
            Response::LongPoll { last_add_confirmed, entry } => {
                sink.put(&last_add_confirmed.unwrap_or(LAC_NONE).to_le_bytes());
                sink.put(&[u8::from(entry.is_some())]);
                if let Some((id, payload)) = entry {
                    sink.put(&id.to_le_bytes());
                    sink.put_payload(payload);
                }
            }
            Response::ReadRange { entries } => {
                assert!(entries.len() <= RANGE_ENTRIES_MAX, "{} entries in a range", entries.len());
                sink.put(&(entries.len() as u32).to_le_bytes());
                for (id, payload) in entries {
                    let len = u32::try_from(payload.len()).expect("payload over 4 GiB");
                    sink.put(&id.to_le_bytes());
                    sink.put(&len.to_le_bytes());
                    sink.put_payload(payload);
                }
            }
            Response::Auth { token } => {
                assert!(token.len() <= AUTH_TOKEN_BYTES_MAX, "token of {} bytes", token.len());
                sink.put_payload(token);
            }
            Response::Refused { status, message, .. } => {
                assert_ne!(*status, Status::Ok, "a refusal with status Ok");
                sink.put(cut_message(message).as_bytes());
            }
        }
    }

    /// Decodes the body of a well-framed response; `op` is its header's op byte without
    /// `RESPONSE_BIT`.
    pub(crate) fn decode_body(
        op: u8,
        flags: u16,
        body: Bytes,
        limits: &Limits,
    ) -> Result<Response, BodyError> {
        if flags != 0 {
            return Err(BodyError::UnknownFlags(flags));
        }
        let mut r = BodyReader::new(body);
        let byte = r.u8("status")?;
        let status = Status::from_u8(byte).ok_or(BodyError::UnknownStatus(byte))?;
        if status != Status::Ok {
            let message = r.rest();
            if message.len() > ERROR_MESSAGE_BYTES_MAX {
                return Err(BodyError::BadMessage);
            }
            let message = String::from_utf8(message.to_vec()).map_err(|_| BodyError::BadMessage)?;
            return Ok(Response::Refused { op, status, message });
        }
        let payload = |r: &mut BodyReader| {
            let payload = r.rest();
            check_payload(payload.len() as u64, limits)?;
            Ok(payload)
        };
        let response = match Op::from_u8(op).ok_or(BodyError::UnknownOp(op))? {
            Op::Add => Response::Add { segment: r.u64("segment")?, entry: r.u64("entry")? },
            Op::Read => {
                let segment = r.u64("segment")?;
                let entry = r.u64("entry")?;
                return Ok(Response::Read { segment, entry, payload: payload(&mut r)? });
            }
            Op::ReadLastAddConfirmed => {
                Response::ReadLastAddConfirmed { last_add_confirmed: r.lac("last_add_confirmed")? }
            }
            Op::WriteLastAddConfirmed => Response::WriteLastAddConfirmed,
            Op::LongPoll => {
                let last_add_confirmed = r.lac("last_add_confirmed")?;
                match r.u8("has_entry")? {
                    0 => Response::LongPoll { last_add_confirmed, entry: None },
                    1 => {
                        let id = r.u64("entry")?;
                        let entry = Some((id, payload(&mut r)?));
                        return Ok(Response::LongPoll { last_add_confirmed, entry });
                    }
                    _ => return Err(BodyError::Invalid("has_entry")),
                }
            }
            Op::ReadRange => {
                let count = r.u32("count")?;
                if count as usize > RANGE_ENTRIES_MAX {
                    return Err(BodyError::TooManyEntries(count));
                }
                // Never reserve more than the body could hold (P1).
                let fit = r.remaining() / RANGE_ENTRY_OVERHEAD_BYTES;
                let mut entries = Vec::with_capacity((count as usize).min(fit));
                for _ in 0..count {
                    let id = r.u64("range entry id")?;
                    let len = r.u32("range entry length")?;
                    check_payload(u64::from(len), limits)?;
                    entries.push((id, r.bytes(len as usize, "range entry payload")?));
                }
                Response::ReadRange { entries }
            }
            Op::DeleteSegment => Response::DeleteSegment,
            Op::Auth => {
                let token = r.rest();
                if token.len() > AUTH_TOKEN_BYTES_MAX {
                    return Err(BodyError::TokenTooLarge(token.len()));
                }
                return Ok(Response::Auth { token });
            }
        };
        r.finish()?;
        Ok(response)
    }
}

fn check_payload(len: u64, limits: &Limits) -> Result<(), BodyError> {
    if len > u64::from(limits.entry_bytes_max) {
        return Err(BodyError::PayloadTooLarge { len, max: limits.entry_bytes_max });
    }
    Ok(())
}

/// Appends `response`'s frame, tagged with `request_id`, to `dst` (payloads copied).
///
/// Panics on a response no decoder accepts (a programmer error): a refusal with `Status::Ok`
/// or an op byte with `RESPONSE_BIT`, a token over `AUTH_TOKEN_BYTES_MAX`, more than
/// `RANGE_ENTRIES_MAX` range entries, or a frame over 4 GiB. Check `encoded_len` against the
/// limits first: a frame over the peer's `frame_bytes_max` closes the connection.
pub fn encode_response(response: &Response, request_id: u64, dst: &mut BytesMut) {
    dst.reserve(response.encoded_len());
    response.encode_into(request_id, dst);
}

/// Appends `response`'s frame to `chunks` for a vectored send: header and fields in small
/// buffers, entry payloads as the caller's own `Bytes` (no copy). Panics as
/// `encode_response`.
pub fn encode_response_chunks(response: &Response, request_id: u64, chunks: &mut Vec<Bytes>) {
    let mut sink = Chunks { chunks, fields: BytesMut::with_capacity(FRAME_HEADER_BYTES + 32) };
    response.encode_into(request_id, &mut sink);
    sink.finish();
}
