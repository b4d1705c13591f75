//! `Request`: what a client asks a bookie, its body layout, encoding and body decoding.
//!
//! Owns: the request body of every op (docs/protocol.md#requests) and which flags each op
//! takes. Does not own: framing checks and buffering (decoder.rs), serving (the server).
//!
//! Invariants:
//! - Q1: `encode_request` then `decode_request` gives back the same request and id.
//! - Q2: a decoded ADD's payload is at most `Limits::entry_bytes_max` bytes, its master key
//!   at most `MASTER_KEY_BYTES_MAX`; a READ_RANGE has `first <= last`; an explicit
//!   `last_add_confirmed` is never `LAC_NONE`.
//! - Q3: only the ops that end in a payload (ADD, AUTH) accept bytes after their last field.

use bytes::{Bytes, BytesMut};

use crate::error::BodyError;
use crate::frame::{FLAG_FENCE, FLAG_RECOVERY_ADD, FRAME_HEADER_BYTES, FrameHeader, Op};
use crate::limits::{AUTH_TOKEN_BYTES_MAX, LAC_NONE, Limits, MASTER_KEY_BYTES_MAX};
use crate::reader::BodyReader;
use crate::sink::{Chunks, Sink};

/// A request to a bookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Add one entry; answered once it is durable.
    Add {
        /// The segment.
        segment: u64,
        /// The entry's id in the segment.
        entry: u64,
        /// The writer's `last_add_confirmed` when it sent the entry (piggybacked), if any.
        last_add_confirmed: Option<u64>,
        /// The segment's master key (at most `MASTER_KEY_BYTES_MAX` bytes).
        master_key: Bytes,
        /// The entry's bytes.
        payload: Bytes,
        /// A recovery add (`FLAG_RECOVERY_ADD`): accepted on a fenced segment.
        recovery: bool,
    },
    /// Read one entry.
    Read {
        /// The segment.
        segment: u64,
        /// The entry.
        entry: u64,
        /// With `FLAG_FENCE`: the master key to fence the segment with before reading.
        fence: Option<Bytes>,
    },
    /// Read the highest `last_add_confirmed` the bookie has seen for the segment.
    ReadLastAddConfirmed {
        /// The segment.
        segment: u64,
        /// With `FLAG_FENCE`: the master key to fence the segment with first; the answer is
        /// then the LAC as fenced (what recovery starts from).
        fence: Option<Bytes>,
    },
    /// Write an explicit `last_add_confirmed`; answered once durable.
    WriteLastAddConfirmed {
        /// The segment.
        segment: u64,
        /// The new `last_add_confirmed` (never `LAC_NONE`).
        last_add_confirmed: u64,
        /// The segment's master key.
        master_key: Bytes,
    },
    /// Wait until the segment's `last_add_confirmed` passes `known`, or `timeout_ms`; answer
    /// the LAC, and the entry after `known` when the LAC covers it.
    LongPoll {
        /// The segment.
        segment: u64,
        /// The LAC the reader knows (`None`: any LAC answers at once).
        known: Option<u64>,
        /// Longest wait, in milliseconds (the server may cap it).
        timeout_ms: u32,
    },
    /// Read consecutive entries `first..=last`, as many as fit in `max_bytes` (at least one).
    ReadRange {
        /// The segment.
        segment: u64,
        /// First entry.
        first: u64,
        /// Last entry (`>= first`).
        last: u64,
        /// Payload bytes wanted at most (the server caps it at `Limits::range_bytes_max`).
        max_bytes: u32,
    },
    /// Delete the segment on this bookie; answered once durable.
    DeleteSegment {
        /// The segment.
        segment: u64,
    },
    /// One step of the authentication handshake.
    Auth {
        /// The authentication mechanism, as the server's authenticator numbers them.
        mechanism: u8,
        /// The mechanism's token (at most `AUTH_TOKEN_BYTES_MAX` bytes).
        token: Bytes,
    },
}

fn key_bytes(key: &Bytes) -> usize {
    1 + key.len()
}

impl Request {
    /// The request's operation.
    pub fn op(&self) -> Op {
        match self {
            Request::Add { .. } => Op::Add,
            Request::Read { .. } => Op::Read,
            Request::ReadLastAddConfirmed { .. } => Op::ReadLastAddConfirmed,
            Request::WriteLastAddConfirmed { .. } => Op::WriteLastAddConfirmed,
            Request::LongPoll { .. } => Op::LongPoll,
            Request::ReadRange { .. } => Op::ReadRange,
            Request::DeleteSegment { .. } => Op::DeleteSegment,
            Request::Auth { .. } => Op::Auth,
        }
    }

    /// The segment the request is about (none for AUTH): what a server routes by.
    pub fn segment(&self) -> Option<u64> {
        match self {
            Request::Add { segment, .. }
            | Request::Read { segment, .. }
            | Request::ReadLastAddConfirmed { segment, .. }
            | Request::WriteLastAddConfirmed { segment, .. }
            | Request::LongPoll { segment, .. }
            | Request::ReadRange { segment, .. }
            | Request::DeleteSegment { segment } => Some(*segment),
            Request::Auth { .. } => None,
        }
    }

    fn flags(&self) -> u16 {
        match self {
            Request::Add { recovery: true, .. } => FLAG_RECOVERY_ADD,
            Request::Read { fence: Some(_), .. } | Request::ReadLastAddConfirmed { fence: Some(_), .. } => {
                FLAG_FENCE
            }
            _ => 0,
        }
    }

    fn body_bytes(&self) -> usize {
        let fence = |key: &Option<Bytes>| key.as_ref().map_or(0, key_bytes);
        match self {
            Request::Add { master_key, payload, .. } => 24 + key_bytes(master_key) + payload.len(),
            Request::Read { fence: key, .. } => 16 + fence(key),
            Request::ReadLastAddConfirmed { fence: key, .. } => 8 + fence(key),
            Request::WriteLastAddConfirmed { master_key, .. } => 16 + key_bytes(master_key),
            Request::LongPoll { .. } => 20,
            Request::ReadRange { .. } => 28,
            Request::DeleteSegment { .. } => 8,
            Request::Auth { token, .. } => 1 + token.len(),
        }
    }

    /// Bytes of the encoded frame, header included: what to check against
    /// `Limits::frame_bytes_max` before sending.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_bytes()
    }

    fn encode_into(&self, request_id: u64, sink: &mut impl Sink) {
        let header = FrameHeader::new(self.op().as_u8(), self.flags(), request_id, self.body_bytes());
        sink.put(&header.encode());
        match self {
            Request::Add { segment, entry, last_add_confirmed, master_key, payload, .. } => {
                sink.put(&segment.to_le_bytes());
                sink.put(&entry.to_le_bytes());
                sink.put(&last_add_confirmed.unwrap_or(LAC_NONE).to_le_bytes());
                put_key(sink, master_key);
                sink.put_payload(payload);
            }
            Request::Read { segment, entry, fence } => {
                sink.put(&segment.to_le_bytes());
                sink.put(&entry.to_le_bytes());
                if let Some(key) = fence {
                    put_key(sink, key);
                }
            }
            Request::ReadLastAddConfirmed { segment, fence } => {
                sink.put(&segment.to_le_bytes());
                if let Some(key) = fence {
                    put_key(sink, key);
                }
            }
            Request::WriteLastAddConfirmed { segment, last_add_confirmed, master_key } => {
                assert_ne!(*last_add_confirmed, LAC_NONE, "an explicit last_add_confirmed is an entry id");
                sink.put(&segment.to_le_bytes());
                sink.put(&last_add_confirmed.to_le_bytes());
                put_key(sink, master_key);
            }
            Request::LongPoll { segment, known, timeout_ms } => {
                sink.put(&segment.to_le_bytes());
                sink.put(&known.unwrap_or(LAC_NONE).to_le_bytes());
                sink.put(&timeout_ms.to_le_bytes());
            }
            Request::ReadRange { segment, first, last, max_bytes } => {
                assert!(first <= last, "empty range {first}..={last}");
                sink.put(&segment.to_le_bytes());
                sink.put(&first.to_le_bytes());
                sink.put(&last.to_le_bytes());
                sink.put(&max_bytes.to_le_bytes());
            }
            Request::DeleteSegment { segment } => sink.put(&segment.to_le_bytes()),
            Request::Auth { mechanism, token } => {
                assert!(token.len() <= AUTH_TOKEN_BYTES_MAX, "token of {} bytes", token.len());
                sink.put(&[*mechanism]);
                sink.put_payload(token);
            }
        }
    }

    /// Decodes the body of a well-framed request whose header named `op`.
    pub(crate) fn decode_body(
        op: Op,
        flags: u16,
        body: Bytes,
        limits: &Limits,
    ) -> Result<Request, BodyError> {
        let unknown = flags & !op.request_flags();
        if unknown != 0 {
            return Err(BodyError::UnknownFlags(unknown));
        }
        let mut r = BodyReader::new(body);
        let fence = flags & FLAG_FENCE != 0;
        let request = match op {
            Op::Add => {
                let segment = r.u64("segment")?;
                let entry = r.u64("entry")?;
                let last_add_confirmed = r.lac("last_add_confirmed")?;
                let master_key = read_key(&mut r)?;
                let payload = r.rest();
                if payload.len() as u64 > u64::from(limits.entry_bytes_max) {
                    let max = limits.entry_bytes_max;
                    return Err(BodyError::PayloadTooLarge { len: payload.len() as u64, max });
                }
                let recovery = flags & FLAG_RECOVERY_ADD != 0;
                return Ok(Request::Add {
                    segment,
                    entry,
                    last_add_confirmed,
                    master_key,
                    payload,
                    recovery,
                });
            }
            Op::Read => {
                let segment = r.u64("segment")?;
                let entry = r.u64("entry")?;
                let fence = if fence { Some(read_key(&mut r)?) } else { None };
                Request::Read { segment, entry, fence }
            }
            Op::ReadLastAddConfirmed => {
                let segment = r.u64("segment")?;
                let fence = if fence { Some(read_key(&mut r)?) } else { None };
                Request::ReadLastAddConfirmed { segment, fence }
            }
            Op::WriteLastAddConfirmed => {
                let segment = r.u64("segment")?;
                let last_add_confirmed =
                    r.lac("last_add_confirmed")?.ok_or(BodyError::Invalid("last_add_confirmed (none)"))?;
                let master_key = read_key(&mut r)?;
                Request::WriteLastAddConfirmed { segment, last_add_confirmed, master_key }
            }
            Op::LongPoll => {
                let segment = r.u64("segment")?;
                let known = r.lac("known")?;
                let timeout_ms = r.u32("timeout_ms")?;
                Request::LongPoll { segment, known, timeout_ms }
            }
            Op::ReadRange => {
                let segment = r.u64("segment")?;
                let first = r.u64("first")?;
                let last = r.u64("last")?;
                let max_bytes = r.u32("max_bytes")?;
                if last < first {
                    return Err(BodyError::EmptyRange { first, last });
                }
                Request::ReadRange { segment, first, last, max_bytes }
            }
            Op::DeleteSegment => Request::DeleteSegment { segment: r.u64("segment")? },
            Op::Auth => {
                let mechanism = r.u8("mechanism")?;
                let token = r.rest();
                if token.len() > AUTH_TOKEN_BYTES_MAX {
                    return Err(BodyError::TokenTooLarge(token.len()));
                }
                return Ok(Request::Auth { mechanism, token });
            }
        };
        r.finish()?;
        Ok(request)
    }
}

/// Writes a master key: its length byte, then its bytes.
fn put_key(sink: &mut impl Sink, key: &Bytes) {
    assert!(key.len() <= MASTER_KEY_BYTES_MAX, "master key of {} bytes", key.len());
    sink.put(&[key.len() as u8]);
    sink.put(key);
}

/// A master key: its length byte, then its bytes (a slice of the body).
pub(crate) fn read_key(r: &mut BodyReader) -> Result<Bytes, BodyError> {
    let len = usize::from(r.u8("master key length")?);
    if len > MASTER_KEY_BYTES_MAX {
        return Err(BodyError::MasterKeyTooLong(len));
    }
    r.bytes(len, "master key")
}

/// Appends `request`'s frame, tagged with `request_id`, to `dst` (payload copied).
///
/// Panics on a request no decoder accepts (a programmer error): a master key over
/// `MASTER_KEY_BYTES_MAX`, a token over `AUTH_TOKEN_BYTES_MAX`, an empty READ_RANGE, an
/// explicit `last_add_confirmed` of `LAC_NONE`, or a frame over 4 GiB. Payloads over the
/// peer's `Limits::entry_bytes_max` encode, and the peer refuses them (`TooLarge`).
pub fn encode_request(request: &Request, request_id: u64, dst: &mut BytesMut) {
    dst.reserve(request.encoded_len());
    request.encode_into(request_id, dst);
}

/// Appends `request`'s frame to `chunks` for a vectored send: the header and fields in small
/// buffers, the payload as the caller's own `Bytes` (no copy). Panics as `encode_request`.
pub fn encode_request_chunks(request: &Request, request_id: u64, chunks: &mut Vec<Bytes>) {
    let mut sink = Chunks { chunks, fields: BytesMut::with_capacity(FRAME_HEADER_BYTES + 32 + 64) };
    request.encode_into(request_id, &mut sink);
    sink.finish();
}
