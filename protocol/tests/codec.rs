//! Property tests of the wire codec: round trips of every op and status, streams fed a byte at
//! a time, truncations, malformed bodies, random bytes, allocation bounds and zero-copy
//! payloads (invariants P1-P4 in src/lib.rs).

use bytes::{Bytes, BytesMut};
use dlog_protocol::frame::{FRAME_LEN_MIN, RESPONSE_BIT};
use dlog_protocol::request::encode_request_chunks;
use dlog_protocol::{
    BodyError, DecodeError, ERROR_MESSAGE_BYTES_MAX, FRAME_HEADER_BYTES, FrameError, FrameHeader, LAC_NONE,
    Limits, MASTER_KEY_BYTES_MAX, Op, Request, Response, Status, decode_request, decode_response,
    encode_request, encode_response, encode_response_chunks,
};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn key() -> impl Strategy<Value = Bytes> {
    bytes(MASTER_KEY_BYTES_MAX)
}

fn lac() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(0..LAC_NONE)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), lac(), key(), bytes(300), any::<bool>()).prop_map(
            |(segment, entry, last_add_confirmed, master_key, payload, recovery)| Request::Add {
                segment,
                entry,
                last_add_confirmed,
                master_key,
                payload,
                recovery
            }
        ),
        (any::<u64>(), any::<u64>(), proptest::option::of(key()))
            .prop_map(|(segment, entry, fence)| Request::Read { segment, entry, fence }),
        (any::<u64>(), proptest::option::of(key()))
            .prop_map(|(segment, fence)| Request::ReadLastAddConfirmed { segment, fence }),
        (any::<u64>(), 0..LAC_NONE, key()).prop_map(|(segment, last_add_confirmed, master_key)| {
            Request::WriteLastAddConfirmed { segment, last_add_confirmed, master_key }
        }),
        (any::<u64>(), lac(), any::<u32>()).prop_map(|(segment, known, timeout_ms)| Request::LongPoll {
            segment,
            known,
            timeout_ms
        }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(segment, a, b, max_bytes)| {
            Request::ReadRange { segment, first: a.min(b), last: a.max(b), max_bytes }
        }),
        any::<u64>().prop_map(|segment| Request::DeleteSegment { segment }),
        (any::<u8>(), bytes(300)).prop_map(|(mechanism, token)| Request::Auth { mechanism, token }),
    ]
}

fn refusal_status() -> impl Strategy<Value = Status> {
    proptest::sample::select(&Status::ALL[1..])
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(segment, entry)| Response::Add { segment, entry }),
        (any::<u64>(), any::<u64>(), bytes(300)).prop_map(|(segment, entry, payload)| Response::Read {
            segment,
            entry,
            payload
        }),
        lac().prop_map(|last_add_confirmed| Response::ReadLastAddConfirmed { last_add_confirmed }),
        Just(Response::WriteLastAddConfirmed),
        (lac(), proptest::option::of((any::<u64>(), bytes(300))))
            .prop_map(|(last_add_confirmed, entry)| Response::LongPoll { last_add_confirmed, entry }),
        proptest::collection::vec((any::<u64>(), bytes(40)), 0..20)
            .prop_map(|entries| Response::ReadRange { entries }),
        Just(Response::DeleteSegment),
        bytes(300).prop_map(|token| Response::Auth { token }),
        (0..RESPONSE_BIT, refusal_status(), "\\PC{0,100}")
            .prop_map(|(op, status, message)| Response::Refused { op, status, message }),
    ]
}

fn encoded_request(request: &Request, id: u64) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_request(request, id, &mut buf);
    buf
}

fn encoded_response(response: &Response, id: u64) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_response(response, id, &mut buf);
    buf
}

/// Rewrites the frame's length field for a body of `body_len` bytes.
fn set_body_len(frame: &mut [u8], body_len: usize) {
    frame[..4].copy_from_slice(&(FRAME_LEN_MIN + body_len as u32).to_le_bytes());
}

/// Decodes every request in `buf` until it needs more bytes; panics on any decode error.
fn drain_requests(buf: &mut BytesMut, limits: &Limits, out: &mut Vec<(u64, Request)>) {
    while let Some(decoded) = decode_request(buf, limits).expect("a valid stream") {
        out.push(decoded);
    }
}

fn drain_responses(buf: &mut BytesMut, limits: &Limits, out: &mut Vec<(u64, Response)>) {
    while let Some(decoded) = decode_response(buf, limits).expect("a valid stream") {
        out.push(decoded);
    }
}

/// Feeds arbitrary bytes to a decoder until it needs more or the stream breaks. Decoded values
/// must re-encode to exactly the bytes they came from (decoding is canonical), and the buffer
/// must never grow past the frame limit (P1).
fn fuzz_requests(data: &[u8], limits: &Limits) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        let capacity = buf.capacity();
        match decode_request(&mut buf, limits) {
            Ok(Some((id, request))) => {
                let used = before.len() - buf.len();
                assert_eq!(encoded_request(&request, id)[..], before[..used], "decoding is not canonical");
            }
            Ok(None) => {
                assert_eq!(buf, before, "a partial frame was consumed");
                assert!(buf.capacity() <= capacity.max(limits.frame_bytes_max as usize) * 2);
                return;
            }
            Err(DecodeError::Malformed { .. }) => assert!(buf.len() < before.len(), "no frame consumed"),
            Err(DecodeError::Frame { .. }) => return,
        }
    }
}

fn fuzz_responses(data: &[u8], limits: &Limits) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match decode_response(&mut buf, limits) {
            Ok(Some((id, response))) => {
                let used = before.len() - buf.len();
                assert_eq!(encoded_response(&response, id)[..], before[..used], "decoding is not canonical");
            }
            Ok(None) => {
                assert_eq!(buf, before, "a partial frame was consumed");
                return;
            }
            Err(DecodeError::Malformed { .. }) => assert!(buf.len() < before.len(), "no frame consumed"),
            Err(DecodeError::Frame { .. }) => return,
        }
    }
}

fn small_limits() -> Limits {
    Limits { frame_bytes_max: 4096, entry_bytes_max: 200, range_bytes_max: 1000 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn request_round_trips(request in request(), id: u64) {
        let mut buf = encoded_request(&request, id);
        prop_assert_eq!(buf.len(), request.encoded_len());
        let mut chunks = Vec::new();
        encode_request_chunks(&request, id, &mut chunks);
        prop_assert_eq!(chunks.concat(), buf.to_vec());
        let decoded = decode_request(&mut buf, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some((id, request))));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn response_round_trips(response in response(), id: u64) {
        let mut buf = encoded_response(&response, id);
        prop_assert_eq!(buf.len(), response.encoded_len());
        let mut chunks = Vec::new();
        encode_response_chunks(&response, id, &mut chunks);
        prop_assert_eq!(chunks.concat(), buf.to_vec());
        let decoded = decode_response(&mut buf, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some((id, response))));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn request_stream_fed_a_byte_at_a_time(requests in proptest::collection::vec((any::<u64>(), request()), 1..12)) {
        let mut stream = BytesMut::new();
        for (id, request) in &requests {
            encode_request(request, *id, &mut stream);
        }
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in stream.iter() {
            buf.extend_from_slice(&[*byte]);
            drain_requests(&mut buf, &limits, &mut decoded);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, requests);
    }

    #[test]
    fn response_stream_fed_a_byte_at_a_time(responses in proptest::collection::vec((any::<u64>(), response()), 1..12)) {
        let mut stream = BytesMut::new();
        for (id, response) in &responses {
            encode_response(response, *id, &mut stream);
        }
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in stream.iter() {
            buf.extend_from_slice(&[*byte]);
            drain_responses(&mut buf, &limits, &mut decoded);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, responses);
    }

    #[test]
    fn every_truncation_needs_more(request in request(), response in response(), id: u64) {
        let limits = Limits::default();
        let frame = encoded_request(&request, id);
        for len in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..len]);
            prop_assert_eq!(decode_request(&mut buf, &limits), Ok(None));
            prop_assert_eq!(&buf[..], &frame[..len]);
        }
        let frame = encoded_response(&response, id);
        for len in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..len]);
            prop_assert_eq!(decode_response(&mut buf, &limits), Ok(None));
            prop_assert_eq!(&buf[..], &frame[..len]);
        }
    }

    /// A body cut short or extended, reframed so that the framing is intact: the frame is
    /// answerable (its id and op come back) and consumed, or, for ops that end in a payload,
    /// decodes with a shorter or longer payload.
    #[test]
    fn reframed_bodies_are_answerable(request in request(), id: u64, cut in any::<proptest::sample::Index>(),
                                      extra in 1usize..4) {
        let frame = encoded_request(&request, id);
        let body = frame.len() - FRAME_HEADER_BYTES;
        let ends_in_payload = matches!(request, Request::Add { .. } | Request::Auth { .. });
        for body_len in [cut.index(body.max(1)).min(body.saturating_sub(1)), body + extra] {
            if body_len == body {
                continue;
            }
            let mut bytes = frame.to_vec();
            bytes.resize(FRAME_HEADER_BYTES + body_len, 0xee);
            set_body_len(&mut bytes, body_len);
            bytes.extend_from_slice(&encoded_request(&Request::DeleteSegment { segment: 1 }, id ^ 1));
            let mut buf = BytesMut::from(&bytes[..]);
            match decode_request(&mut buf, &Limits::default()) {
                Err(DecodeError::Malformed { request_id, op, .. }) => {
                    prop_assert_eq!(request_id, id);
                    prop_assert_eq!(op, request.op().as_u8());
                }
                Ok(Some((decoded_id, decoded))) => {
                    prop_assert!(ends_in_payload, "{:?} decoded from a reframed body", decoded);
                    prop_assert_eq!(decoded_id, id);
                    prop_assert_eq!(decoded.op(), request.op());
                }
                other => prop_assert!(false, "{:?}", other),
            }
            // The next frame is still in step.
            let next = decode_request(&mut buf, &Limits::default());
            prop_assert_eq!(next, Ok(Some((id ^ 1, Request::DeleteSegment { segment: 1 }))));
        }
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_requests(&data, &Limits::default());
        fuzz_requests(&data, &small_limits());
        fuzz_responses(&data, &Limits::default());
        fuzz_responses(&data, &small_limits());
    }

    /// Random bodies behind a valid header, so that the body decoders see them.
    #[test]
    fn random_bodies_never_panic(op: u8, flags in prop_oneof![Just(0u16), Just(1), Just(2), Just(3), any::<u16>()],
                                 id: u64, body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut frame = FrameHeader::new(op & !RESPONSE_BIT, flags, id, body.len()).encode().to_vec();
        frame.extend_from_slice(&body);
        fuzz_requests(&frame, &Limits::default());
        fuzz_requests(&frame, &small_limits());
        let flags = if flags == 1 || flags == 2 { 0 } else { flags };
        frame[5] = op | RESPONSE_BIT;
        frame[6..8].copy_from_slice(&flags.to_le_bytes());
        fuzz_responses(&frame, &Limits::default());
        fuzz_responses(&frame, &small_limits());
    }

    /// A header claiming any length reserves at most the frame limit, and refuses beyond it
    /// from the length alone (P1, D3).
    #[test]
    fn claimed_lengths_are_bounded(frame_len: u32, id: u64, have in 0usize..=48) {
        let limits = small_limits();
        let mut header = FrameHeader::new(Op::Add.as_u8(), 0, id, 0);
        header.frame_len = frame_len;
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(&vec![0u8; have]);
        let frame_bytes = u64::from(frame_len) + 4;
        match decode_request(&mut buf, &limits) {
            Err(DecodeError::Frame { request_id, error: FrameError::TooLarge { .. } }) => {
                prop_assert!(frame_bytes > u64::from(limits.frame_bytes_max));
                prop_assert_eq!(request_id, Some(id));
                prop_assert!(buf.capacity() <= 64);
            }
            Err(DecodeError::Frame { error: FrameError::TooShort(_), .. }) => prop_assert!(frame_len < FRAME_LEN_MIN),
            Ok(None) => {
                prop_assert!(frame_bytes > (FRAME_HEADER_BYTES + have) as u64);
                prop_assert!(buf.capacity() <= 2 * limits.frame_bytes_max as usize);
            }
            other => prop_assert!(frame_bytes <= (FRAME_HEADER_BYTES + have) as u64, "{:?}", other),
        }
    }
}

#[test]
fn every_op_and_status_is_covered() {
    let requests = [
        Request::Add {
            segment: 1,
            entry: 2,
            last_add_confirmed: None,
            master_key: Bytes::from_static(b"k"),
            payload: Bytes::from_static(b"p"),
            recovery: true,
        },
        Request::Read { segment: 1, entry: 2, fence: Some(Bytes::new()) },
        Request::ReadLastAddConfirmed { segment: 1, fence: None },
        Request::WriteLastAddConfirmed { segment: 1, last_add_confirmed: 0, master_key: Bytes::new() },
        Request::LongPoll { segment: 1, known: Some(3), timeout_ms: 1000 },
        Request::ReadRange { segment: 1, first: 0, last: 9, max_bytes: 1 << 20 },
        Request::DeleteSegment { segment: 1 },
        Request::Auth { mechanism: 0, token: Bytes::new() },
    ];
    let ops: Vec<Op> = requests.iter().map(Request::op).collect();
    assert_eq!(ops, Op::ALL);
    for (i, request) in requests.into_iter().enumerate() {
        let mut buf = encoded_request(&request, i as u64);
        assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(Some((i as u64, request))));
    }
    for op in Op::ALL {
        for status in Status::ALL.into_iter().skip(1) {
            let response = Response::refused(op.as_u8(), status, format!("{status} for {op:?}"));
            let mut buf = encoded_response(&response, 7);
            assert_eq!(decode_response(&mut buf, &Limits::default()), Ok(Some((7, response))));
        }
    }
}

#[test]
fn malformed_bodies_name_their_request() {
    let limits = Limits::default();
    let check = |frame: &[u8], id: u64, op: Op, error: BodyError, status: Status| {
        let mut buf = BytesMut::from(frame);
        let decoded = decode_request(&mut buf, &limits).unwrap_err();
        assert_eq!(decoded, DecodeError::Malformed { request_id: id, op: op.as_u8(), error });
        assert_eq!(decoded.status(), status);
        assert!(buf.is_empty());
    };
    // A master key length over the limit.
    let mut frame = encoded_request(
        &Request::WriteLastAddConfirmed { segment: 1, last_add_confirmed: 1, master_key: Bytes::new() },
        11,
    )
    .to_vec();
    frame[FRAME_HEADER_BYTES + 16] = 65;
    check(&frame, 11, Op::WriteLastAddConfirmed, BodyError::MasterKeyTooLong(65), Status::BadRequest);
    // An explicit LAC of "none".
    let mut frame = encoded_request(
        &Request::WriteLastAddConfirmed { segment: 1, last_add_confirmed: 1, master_key: Bytes::new() },
        12,
    )
    .to_vec();
    frame[FRAME_HEADER_BYTES + 8..FRAME_HEADER_BYTES + 16].copy_from_slice(&LAC_NONE.to_le_bytes());
    check(
        &frame,
        12,
        Op::WriteLastAddConfirmed,
        BodyError::Invalid("last_add_confirmed (none)"),
        Status::BadRequest,
    );
    // An empty range.
    let mut frame =
        encoded_request(&Request::ReadRange { segment: 1, first: 5, last: 5, max_bytes: 0 }, 13).to_vec();
    frame[FRAME_HEADER_BYTES + 8] = 6;
    check(&frame, 13, Op::ReadRange, BodyError::EmptyRange { first: 6, last: 5 }, Status::BadRequest);
    // A flag the op does not define.
    let mut frame = encoded_request(&Request::DeleteSegment { segment: 1 }, 14).to_vec();
    frame[6] = 0x01;
    check(&frame, 14, Op::DeleteSegment, BodyError::UnknownFlags(1), Status::BadRequest);
    // A payload over the entry limit (but within the frame limit): TooLarge, still answerable.
    let payload = Bytes::from(vec![7u8; limits.entry_bytes_max as usize + 1]);
    let add = Request::Add {
        segment: 1,
        entry: 0,
        last_add_confirmed: None,
        master_key: Bytes::new(),
        payload,
        recovery: false,
    };
    let frame = encoded_request(&add, 15);
    let error = BodyError::PayloadTooLarge {
        len: u64::from(limits.entry_bytes_max) + 1,
        max: limits.entry_bytes_max,
    };
    check(&frame, 15, Op::Add, error, Status::TooLarge);
    // A fenced read without its master key.
    let mut frame = encoded_request(&Request::Read { segment: 1, entry: 2, fence: None }, 16).to_vec();
    frame[6] = 0x01;
    check(&frame, 16, Op::Read, BodyError::Truncated("master key length"), Status::BadRequest);
}

#[test]
fn malformed_responses_name_their_request() {
    let limits = Limits::default();
    // An unknown status.
    let mut frame = encoded_response(&Response::DeleteSegment, 21).to_vec();
    frame[FRAME_HEADER_BYTES] = Status::ALL.len() as u8;
    let error = decode_response(&mut BytesMut::from(&frame[..]), &limits).unwrap_err();
    assert_eq!(error.request_id(), Some(21));
    assert!(!error.is_fatal());
    assert!(matches!(error, DecodeError::Malformed { error: BodyError::UnknownStatus(12), .. }));
    // A message that is not UTF-8.
    let mut frame = encoded_response(&Response::refused(1, Status::Internal, "ab"), 22).to_vec();
    frame[FRAME_HEADER_BYTES + 1] = 0xff;
    let error = decode_response(&mut BytesMut::from(&frame[..]), &limits).unwrap_err();
    assert!(matches!(error, DecodeError::Malformed { request_id: 22, error: BodyError::BadMessage, .. }));
    // A range claiming more entries than its body holds.
    let mut frame = encoded_response(&Response::ReadRange { entries: Vec::new() }, 23).to_vec();
    frame[FRAME_HEADER_BYTES + 1..FRAME_HEADER_BYTES + 5].copy_from_slice(&60_000u32.to_le_bytes());
    let error = decode_response(&mut BytesMut::from(&frame[..]), &limits).unwrap_err();
    assert!(matches!(error, DecodeError::Malformed { request_id: 23, error: BodyError::Truncated(_), .. }));
}

#[test]
fn long_messages_are_cut_at_a_character_boundary() {
    let message = "é".repeat(ERROR_MESSAGE_BYTES_MAX);
    let mut buf = encoded_response(&Response::refused(2, Status::Corrupt, message), 1);
    let Ok(Some((1, Response::Refused { message, .. }))) = decode_response(&mut buf, &Limits::default())
    else {
        panic!("a refusal");
    };
    assert_eq!(message.len(), ERROR_MESSAGE_BYTES_MAX);
}

#[test]
fn payloads_are_slices_of_the_receive_buffer() {
    let add = Request::Add {
        segment: 3,
        entry: 4,
        last_add_confirmed: Some(2),
        master_key: Bytes::from_static(b"key"),
        payload: Bytes::from(vec![9u8; 4096]),
        recovery: false,
    };
    let mut buf = encoded_request(&add, 5);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some((5, Request::Add { payload, master_key, .. }))) =
        decode_request(&mut buf, &Limits::default())
    else {
        panic!("an add");
    };
    assert!(range.contains(&(payload.as_ptr() as usize)), "the payload was copied");
    assert!(range.contains(&(master_key.as_ptr() as usize)), "the master key was copied");

    let read = Response::Read { segment: 3, entry: 4, payload: Bytes::from(vec![1u8; 4096]) };
    let mut buf = encoded_response(&read, 6);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some((6, Response::Read { payload, .. }))) = decode_response(&mut buf, &Limits::default()) else {
        panic!("a read");
    };
    assert!(range.contains(&(payload.as_ptr() as usize)), "the payload was copied");
    // Sending: the chunk encoder hands the payload over as it is.
    let mut chunks = Vec::new();
    encode_response_chunks(
        &Response::Read { segment: 3, entry: 4, payload: payload.clone() },
        6,
        &mut chunks,
    );
    assert!(
        chunks.iter().any(|c| c.as_ptr() == payload.as_ptr()),
        "the payload was copied into the send chunks"
    );
}

#[test]
fn bad_versions_are_fatal_with_their_id() {
    let mut frame = encoded_request(&Request::DeleteSegment { segment: 1 }, 99).to_vec();
    frame[4] = 2;
    let error = decode_request(&mut BytesMut::from(&frame[..]), &Limits::default()).unwrap_err();
    assert_eq!(error, DecodeError::Frame { request_id: Some(99), error: FrameError::BadVersion(2) });
    assert!(error.is_fatal());
    assert_eq!(error.status(), Status::BadRequest);
}
