//! Tests of the log records: round trips, chunked images, torn tails against damage (LL3),
//! and decoding arbitrary bytes and arbitrary frames with valid checksums without panics.

use super::*;
use proptest::prelude::*;

fn sample() -> Vec<LogRecord> {
    vec![
        LogRecord::Grant { id: LeaseId(1), ttl: Duration::from_millis(5000) },
        LogRecord::Txn(vec![
            Op::Put {
                key: "bookies/1".into(),
                value: Bytes::from_static(b"addr"),
                cond: crate::Cond::Any,
                lease: Some(LeaseId(1)),
            },
            Op::Delete { key: "old".into(), cond: crate::Cond::Any },
        ]),
        LogRecord::End(vec![LeaseId(1)]),
    ]
}

fn encoded(records: &[LogRecord]) -> Vec<u8> {
    let mut log = Vec::new();
    for r in records {
        encode(r, &mut log);
    }
    log
}

/// A frame around `body` with a valid checksum.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame(body, &mut out);
    out
}

fn image(keys: usize, leases: usize, value: &Bytes) -> StateImage {
    StateImage {
        revision: Version(keys as u64 + 10),
        lease_next: leases as u64 + 1,
        keys: (0..keys)
            .map(|i| {
                let lease = (i % 3 == 0 && leases > 0).then(|| LeaseId((i % leases) as u64 + 1));
                (format!("k/{i:06}"), value.clone(), Version(i as u64 + 2), Version(1), lease)
            })
            .collect(),
        leases: (1..=leases).map(|i| (LeaseId(i as u64), Duration::from_millis(i as u64))).collect(),
    }
}

#[test]
fn round_trip_torn_tail_and_damage() {
    let log = encoded(&sample());
    assert_eq!(decode_log(&log), (sample(), LogEnd::Clean { end: log.len() }));
    // Cut inside the last record: torn, the valid bytes end where it starts.
    let last = encoded(&sample()[..2]).len();
    let (records, end) = decode_log(&log[..log.len() - 3]);
    assert_eq!((records.len(), end), (2, LogEnd::Torn { end: last }));
    // The last record failing its checksum in place: torn too.
    let mut bad = log.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(decode_log(&bad).1, LogEnd::Torn { end: last });
    // A flipped byte in the first record, valid ones after: damage.
    let mut bad = log.clone();
    bad[10] ^= 1;
    assert!(matches!(decode_log(&bad), (r, LogEnd::Damaged { at: 0 }) if r.is_empty()));
    // A damaged length in the first record, valid ones after: damage too.
    let mut bad = log.clone();
    bad[4] ^= 0x40;
    assert!(matches!(decode_log(&bad), (r, LogEnd::Damaged { at: 0 }) if r.is_empty()));
}

/// H2: the valid bytes end at the last frame, before zero-filled space, so a shell cuts it.
#[test]
fn a_clean_end_before_zeroes_says_where_the_valid_bytes_end() {
    let log = encoded(&sample());
    let mut padded = log.clone();
    padded.extend_from_slice(&[0; 100]);
    assert_eq!(decode_log(&padded), (sample(), LogEnd::Clean { end: log.len() }));
    // A last record that ends with zero bytes (a lease id, a ttl) still ends where it ends.
    let grant = LogRecord::Grant { id: LeaseId(1 << 40), ttl: Duration::from_millis(256) };
    let mut log = encoded(std::slice::from_ref(&grant));
    let len = log.len();
    assert_eq!(log[len - 1], 0);
    log.extend_from_slice(&[0; 7]);
    assert_eq!(decode_log(&log), (vec![grant], LogEnd::Clean { end: len }));
    assert_eq!(decode_log(&[]), (vec![], LogEnd::Clean { end: 0 }));
    assert_eq!(decode_log(&[0; 64]), (vec![], LogEnd::Clean { end: 0 }));
}

/// H1: a length no append writes is damage, never a torn tail that would cut everything.
#[test]
fn an_oversized_length_is_damage_even_alone() {
    let mut log = framed(&[KIND_GRANT; 17]);
    log[4..8].copy_from_slice(&(RECORD_BODY_MAX as u32 + 1).to_le_bytes());
    assert_eq!(decode_log(&log).1, LogEnd::Damaged { at: 0 });
    let mut log = encoded(&sample());
    let at = log.len();
    log.extend_from_slice(&[9, 9, 9, 9, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    assert_eq!(decode_log(&log), (sample(), LogEnd::Damaged { at }));
}

/// H1: an image of any size is written in frames within the limit, and joined back.
#[test]
fn an_image_larger_than_a_frame_round_trips() {
    let value = Bytes::from(vec![7u8; 1536 << 10]);
    let big = image(46, 3, &value); // 69 MiB of values: more than RECORD_BODY_MAX.
    let log = encoded(&[LogRecord::State(Box::new(big.clone()))]);
    assert!(log.len() > RECORD_BODY_MAX);
    let (records, end) = decode_log(&log);
    assert_eq!(end, LogEnd::Clean { end: log.len() });
    assert_eq!(records, vec![LogRecord::State(Box::new(big))]);
}

#[test]
fn images_are_chunked_and_joined() {
    let value = Bytes::from_static(b"value");
    for (keys, leases, chunk) in
        [(0, 0, 64), (1, 0, 1), (100, 7, 200), (10, 40, 64), (5, 5, IMAGE_CHUNK_BYTES)]
    {
        let want = image(keys, leases, &value);
        let mut log = Vec::new();
        encode_image(&want, chunk, &mut log);
        let tail = LogRecord::End(vec![LeaseId(1)]);
        encode(&tail, &mut log);
        let got = decode_log(&log);
        assert_eq!(got, (vec![LogRecord::State(Box::new(want)), tail], LogEnd::Clean { end: log.len() }));
    }
}

/// An image cut short after its State frame, at any frame boundary or inside a frame, is
/// damage at its start: it was fsynced before it replaced the log, so it cannot be a torn
/// append. (A State frame cut short itself is a torn last frame, like any other.)
#[test]
fn an_image_cut_short_is_damage() {
    let mut log = encoded(&sample()[..1]);
    let start = log.len();
    encode_image(&image(50, 5, &Bytes::from_static(b"v")), 300, &mut log);
    for cut in (start + 25..log.len()).step_by(37).chain([log.len() - 1]) {
        let (records, end) = decode_log(&log[..cut]);
        assert_eq!(end, LogEnd::Damaged { at: start }, "cut at {cut}");
        assert_eq!(records, sample()[..1]);
    }
    // Totals that do not match what the chunks held.
    let mut log = Vec::new();
    encode_image(&image(3, 0, &Bytes::new()), 64, &mut log);
    let end_frame = log.len() - 25;
    let mut body = vec![KIND_STATE_END];
    body.extend_from_slice(&4u64.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    log.truncate(end_frame);
    log.extend_from_slice(&framed(&body));
    assert_eq!(decode_log(&log).1, LogEnd::Damaged { at: end_frame });
    // Image pieces outside an image, a record inside one.
    assert_eq!(decode_log(&framed(&body)).1, LogEnd::Damaged { at: 0 });
    let mut log = Vec::new();
    encode_image(&image(3, 0, &Bytes::new()), 64, &mut log);
    let at = log.len() - 25;
    log.truncate(at);
    log.extend_from_slice(&encoded(&sample()[..1]));
    assert_eq!(decode_log(&log).1, LogEnd::Damaged { at });
}

/// A frame with a valid checksum whose body does not decode is damage, never torn.
#[test]
fn a_valid_checksum_over_a_bad_body_is_damage() {
    let log = framed(&[KIND_GRANT, 1, 2, 3]);
    assert_eq!(decode_log(&log).1, LogEnd::Damaged { at: 0 });
    // L1: a count the body cannot hold is refused before anything is allocated for it.
    for kind in [KIND_TXN, KIND_END, KIND_STATE_KEYS, KIND_STATE_LEASES] {
        let mut body = vec![kind];
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&[0; 64]);
        assert_eq!(decode_log(&framed(&body)).1, LogEnd::Damaged { at: 0 });
    }
}

/// M1: the search for a valid frame after a bad one is bounded, even over bytes that look like
/// frame headers at every other offset (each would checksum 64 KiB: quadratic before).
#[test]
fn the_search_after_a_bad_frame_is_bounded() {
    // A bad frame of 5 bytes, then what looks like a Txn header of 64 KiB every 2 bytes.
    let mut log = vec![1, 1, 1, 1, 5, 0, 0, 0, 1, 1, 1, 1];
    for _ in 0..(1 << 20) {
        log.extend_from_slice(&[KIND_TXN, 0, 1, 0]);
    }
    #[expect(clippy::disallowed_methods, reason = "measures the test's own run time")]
    let started = std::time::Instant::now();
    let (records, end) = decode_log(&log);
    let took = started.elapsed();
    assert!(records.is_empty());
    // No frame is valid, but the budget ran out first: refused rather than cut (LL3).
    assert_eq!(end, LogEnd::Damaged { at: 0 });
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Over a few candidates, the answer is exact: garbage after the last frame is torn.
    let mut log = encoded(&sample());
    let at = log.len();
    log.extend_from_slice(&[1, 1, 1, 1, 5, 0, 0, 0, 1, 1, 1, 1]);
    for _ in 0..500 {
        log.extend_from_slice(&[KIND_TXN, 0, 0, 0, 20, 0, 0, 0]);
    }
    assert_eq!(decode_log(&log), (sample(), LogEnd::Torn { end: at }));
}

/// Bodies of every kind, mostly well-formed-looking, to frame with valid checksums.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    (0u8..9, proptest::collection::vec(any::<u8>(), 0..80), any::<u32>(), any::<bool>()).prop_map(
        |(kind, rest, count, small)| {
            let mut body = vec![kind];
            if small {
                body.extend_from_slice(&(count % 4).to_le_bytes());
            }
            body.extend_from_slice(&rest);
            body
        },
    )
}

proptest! {
    #[test]
    fn decode_log_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_log(&bytes);
    }

    /// Logs made only of frames with valid checksums (random bodies, some real records) decode
    /// to records or damage: never a torn tail, never a panic.
    #[test]
    fn frames_with_valid_checksums_are_records_or_damage(
        frames in proptest::collection::vec((any_body(), any::<bool>()), 1..12),
    ) {
        let mut log = Vec::new();
        for (body, real) in &frames {
            if *real {
                log.extend_from_slice(&encoded(&sample()));
            }
            log.extend_from_slice(&framed(body));
        }
        let (records, end) = decode_log(&log);
        match end {
            LogEnd::Clean { end } => prop_assert_eq!(end, log.len()),
            LogEnd::Damaged { at } => prop_assert!(at < log.len()),
            LogEnd::Torn { .. } => prop_assert!(false, "torn: {:?}", end),
        }
        prop_assert!(records.len() <= 3 * frames.len() + frames.len());
    }
}
