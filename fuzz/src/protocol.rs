//! The check behind the `wire_frame_decode` fuzz target: the bookie wire protocol's streaming
//! decoders (`dlog_protocol::decode_request`, `decode_response`) on arbitrary bytes.
//!
//! Like the rest of this crate, `check_wire_decode` takes raw fuzz input and panics only when
//! the codec misbehaves.

use bytes::{Bytes, BytesMut};
use dlog_protocol::{
    DecodeError, Limits, Request, Response, Status, decode_request, decode_response, encode_request,
    encode_response,
};

use super::Rng;

/// Small limits, so that inputs of a few KiB reach every limit check.
pub fn small_limits() -> Limits {
    Limits { frame_bytes_max: 4096, entry_bytes_max: 200, range_bytes_max: 1000 }
}

/// What one decode call gave, with the bytes it consumed.
#[derive(Debug, PartialEq)]
enum Outcome {
    Request(u64, Request, usize),
    Response(u64, Response, usize),
    Malformed(DecodeError, usize),
    Fatal(DecodeError),
}

/// Decodes everything in `buf` it can, checking each step: a value re-encodes to exactly the
/// bytes it consumed (decoding is canonical), `Ok(None)` consumes nothing and reserves at most
/// the frame limit, a malformed frame consumes at least a header. Stops at a fatal error.
fn drain(buf: &mut BytesMut, responses: bool, limits: &Limits, out: &mut Vec<Outcome>) -> bool {
    loop {
        let before = buf.clone();
        let capacity = buf.capacity();
        let decoded = if responses {
            decode_response(buf, limits).map(|r| r.map(|(id, response)| (id, Err(response))))
        } else {
            decode_request(buf, limits).map(|r| r.map(|(id, request)| (id, Ok(request))))
        };
        let used = before.len() - buf.len();
        match decoded {
            Ok(Some((id, value))) => {
                let mut again = BytesMut::new();
                match &value {
                    Ok(request) => encode_request(request, id, &mut again),
                    Err(response) => encode_response(response, id, &mut again),
                }
                assert_eq!(again[..], before[..used], "{value:?} re-encodes differently");
                out.push(match value {
                    Ok(request) => Outcome::Request(id, request, used),
                    Err(response) => Outcome::Response(id, response, used),
                });
            }
            Ok(None) => {
                assert_eq!(*buf, before, "a partial frame was consumed");
                let bound = capacity.max(limits.frame_bytes_max as usize) * 2;
                assert!(buf.capacity() <= bound, "reserved {} bytes", buf.capacity());
                return true;
            }
            Err(error @ DecodeError::Malformed { .. }) => {
                assert!(used >= dlog_protocol::FRAME_HEADER_BYTES, "a malformed frame consumed {used} bytes");
                assert!(error.request_id().is_some(), "a malformed frame without its id");
                out.push(Outcome::Malformed(error, used));
            }
            Err(error) => {
                assert!(error.is_fatal());
                out.push(Outcome::Fatal(error));
                return false;
            }
        }
    }
}

/// `wire_frame_decode`: byte 0 picks the direction (bit 0: responses) and the limits (bit 1:
/// `small_limits`), byte 1 the size of the pieces the rest arrives in (0: all at once). The
/// rest is decoded as a stream, piece by piece, and again all at once: both must give the same
/// values and errors, never panic, and satisfy the checks of `drain`.
pub fn check_wire_decode(data: &[u8]) {
    let (mode, piece, stream) = match data {
        [mode, piece, stream @ ..] => (*mode, usize::from(*piece), stream),
        _ => return,
    };
    let responses = mode & 1 != 0;
    let limits = if mode & 2 != 0 { small_limits() } else { Limits::default() };
    let mut whole = Vec::new();
    let mut buf = BytesMut::from(stream);
    drain(&mut buf, responses, &limits, &mut whole);
    if piece == 0 {
        return;
    }
    let mut pieces = Vec::new();
    let mut buf = BytesMut::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        if !drain(&mut buf, responses, &limits, &mut pieces) {
            break;
        }
    }
    // A frame error may be found earlier in pieces (from the length alone) with its request id
    // not yet there: compare the errors' kinds.
    let kind = |o: &Outcome| match o {
        Outcome::Fatal(DecodeError::Frame { error, .. }) => Err(error.clone()),
        _ => Ok(()),
    };
    assert_eq!(whole.len(), pieces.len(), "pieces decode differently: {pieces:?} vs {whole:?}");
    for (w, p) in whole.iter().zip(&pieces) {
        match (w, p) {
            (Outcome::Fatal(_), Outcome::Fatal(_)) => assert_eq!(kind(w), kind(p)),
            _ => assert_eq!(w, p, "pieces decode differently"),
        }
    }
}

fn sample_bytes(rng: &mut Rng, max: u64) -> Bytes {
    let len = rng.below(max + 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn sample_lac(rng: &mut Rng) -> Option<u64> {
    (rng.below(4) != 0).then(|| rng.below(1000))
}

/// A request of op `Op::ALL[i % 8]`, with small random fields.
pub fn sample_request(rng: &mut Rng, i: usize) -> Request {
    let segment = rng.below(100);
    let key = |rng: &mut Rng| sample_bytes(rng, 20);
    match i % 8 {
        0 => Request::Add {
            segment,
            entry: rng.below(1000),
            last_add_confirmed: sample_lac(rng),
            master_key: key(rng),
            payload: sample_bytes(rng, 150),
            recovery: rng.below(2) == 0,
        },
        1 => Request::Read { segment, entry: rng.below(1000), fence: (rng.below(2) == 0).then(|| key(rng)) },
        2 => Request::ReadLastAddConfirmed { segment, fence: (rng.below(2) == 0).then(|| key(rng)) },
        3 => Request::WriteLastAddConfirmed {
            segment,
            last_add_confirmed: rng.below(1000),
            master_key: key(rng),
        },
        4 => Request::LongPoll { segment, known: sample_lac(rng), timeout_ms: rng.below(5000) as u32 },
        5 => {
            let first = rng.below(1000);
            let last = first + rng.below(100);
            Request::ReadRange { segment, first, last, max_bytes: rng.below(1 << 20) as u32 }
        }
        6 => Request::DeleteSegment { segment },
        _ => Request::Auth { mechanism: rng.below(4) as u8, token: sample_bytes(rng, 40) },
    }
}

/// A response to op `Op::ALL[i % 8]`, refused with a random status one time in four.
pub fn sample_response(rng: &mut Rng, i: usize) -> Response {
    let op = (i % 8) as u8 + 1;
    if rng.below(4) == 0 {
        let status = Status::ALL[1 + rng.below(Status::ALL.len() as u64 - 1) as usize];
        return Response::refused(op, status, format!("{status} (sample {i})"));
    }
    match op {
        1 => Response::Add { segment: rng.below(100), entry: rng.below(1000) },
        2 => Response::Read {
            segment: rng.below(100),
            entry: rng.below(1000),
            payload: sample_bytes(rng, 150),
        },
        3 => Response::ReadLastAddConfirmed { last_add_confirmed: sample_lac(rng) },
        4 => Response::WriteLastAddConfirmed,
        5 => {
            let entry = (rng.below(2) == 0).then(|| (rng.below(1000), sample_bytes(rng, 150)));
            Response::LongPoll { last_add_confirmed: sample_lac(rng), entry }
        }
        6 => {
            let count = rng.below(6);
            Response::ReadRange { entries: (0..count).map(|n| (n, sample_bytes(rng, 40))).collect() }
        }
        7 => Response::DeleteSegment,
        _ => Response::Auth { token: sample_bytes(rng, 40) },
    }
}

/// A fuzz input (mode byte, piece byte, stream) holding `frames` well-formed frames of every
/// op in turn: requests, or responses when `responses`.
pub fn sample_wire_input(seed: u64, frames: usize, responses: bool, piece: u8) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut stream = BytesMut::new();
    for i in 0..frames {
        let id = rng.next_u64();
        if responses {
            encode_response(&sample_response(&mut rng, i), id, &mut stream);
        } else {
            encode_request(&sample_request(&mut rng, i), id, &mut stream);
        }
    }
    let mut input = vec![u8::from(responses), piece];
    input.extend_from_slice(&stream);
    input
}
