//! Tests of the log records: round trips, chunked images, batches, torn tails against damage
//! (LL3), a batch missing an earlier page as a torn tail (LL4), and decoding arbitrary bytes,
//! arbitrary frames and batch bodies with valid checksums without panics.

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

/// `n` transactions putting `value_bytes`-byte values under `tag/`.
fn txns(n: usize, value_bytes: usize, tag: &str) -> Vec<LogRecord> {
    (0..n)
        .map(|i| {
            let value = Bytes::from(vec![b'v'; value_bytes]);
            let key = format!("{tag}/{i}");
            LogRecord::Txn(vec![Op::Put { key, value, cond: crate::Cond::Any, lease: None }])
        })
        .collect()
}

/// The frames of one group commit, as a shell appends them.
fn batched(records: &[LogRecord]) -> Vec<u8> {
    encode_batches(records).concat()
}

/// A batch body: `count`, then `items` (kind, fields) each with its length.
fn batch_body(count: u32, items: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = vec![KIND_BATCH];
    body.extend_from_slice(&count.to_le_bytes());
    for (kind, fields) in items {
        body.push(*kind);
        put_bytes(&mut body, fields);
    }
    body
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

const PAGE: usize = 4096;

/// LL4: a group commit spans pages, and a power loss before its fdatasync may keep a later page
/// and lose an earlier one (zeroes), or keep neither. Nothing in it was acknowledged, and its
/// records are one Batch frame with no frames inside: a torn tail, wherever the hole is, and
/// the batches before it are kept.
#[test]
fn a_batch_missing_an_earlier_page_is_a_torn_tail() {
    let (mut log, mut committed) = (Vec::new(), Vec::new());
    for group in [sample(), txns(3, 100, "a"), sample()[..1].to_vec(), txns(2, 5000, "b")] {
        log.extend_from_slice(&batched(&group));
        committed.extend(group);
    }
    let start = log.len();
    let last = txns(8, 3000, "c");
    assert_eq!(encode_batches(&last).len(), 1, "one frame");
    log.extend_from_slice(&batched(&last));
    assert!(log.len() - start > 5 * PAGE);
    let all = [committed.clone(), last.clone()].concat();
    assert_eq!(decode_log(&log), (all, LogEnd::Clean { end: log.len() }));
    // Each page the batch touches but its last lost, the pages after it kept; or the pages
    // from some later one on lost too (zeroes), or never written (a short file).
    let (first_page, last_page) = (start / PAGE, (log.len() - 1) / PAGE);
    for hole in first_page..last_page {
        let mut lost = log.clone();
        lost[(hole * PAGE).max(start)..(hole + 1) * PAGE].fill(0);
        assert_eq!(decode_log(&lost), (committed.clone(), LogEnd::Torn { end: start }), "page {hole} lost");
        for from in hole + 2..=last_page {
            let mut zeroed = lost.clone();
            zeroed[from * PAGE..].fill(0);
            assert_eq!(decode_log(&zeroed).1, LogEnd::Torn { end: start }, "page {hole}, zeroes from {from}");
            assert_eq!(
                decode_log(&lost[..from * PAGE]).1,
                LogEnd::Torn { end: start },
                "page {hole}, cut {from}"
            );
        }
    }
    // The same records framed one by one (as before batches): the valid frames after the hole
    // make it damage, and the store would refuse to open.
    let mut single = log[..start].to_vec();
    for r in &last {
        encode(r, &mut single);
    }
    single[(first_page + 1) * PAGE..(first_page + 2) * PAGE].fill(0);
    assert!(matches!(decode_log(&single).1, LogEnd::Damaged { .. }));
}

/// LL4: a group commit past the batch bound is several frames, each durable before the next is
/// written: an earlier one is whole, and a later one missing an earlier page is cut alone.
#[test]
fn a_group_commit_in_several_frames_tears_its_last_frame_only() {
    let records = txns(24, 1500, "g");
    let frames = encode_batches_within(&records, 3 * PAGE);
    assert!(frames.len() >= 3, "{} frames", frames.len());
    let mut log = batched(&sample());
    for f in &frames[..frames.len() - 1] {
        log.extend_from_slice(f);
    }
    let (kept, _) = decode_log(&log);
    let start = log.len();
    log.extend_from_slice(&frames[frames.len() - 1]);
    assert!(log.len() - start > 2 * PAGE);
    assert_eq!(decode_log(&log).0, [sample(), records].concat());
    log[start + 100..start + 100 + PAGE].fill(0);
    assert_eq!(decode_log(&log), (kept, LogEnd::Torn { end: start }));
}

/// LL3: a batch that fails its checksum with a valid frame after it was fsynced (a later
/// group commit followed it): damage, never a torn tail.
#[test]
fn a_damaged_batch_before_a_valid_one_is_damage() {
    let first = batched(&sample());
    assert_eq!(first[8], KIND_BATCH);
    let second = batched(&txns(3, 10, "x"));
    let log = [first.clone(), second.clone()].concat();
    assert_eq!(decode_log(&log), ([sample(), txns(3, 10, "x")].concat(), LogEnd::Clean { end: log.len() }));
    for at in [0, 5, 8, 9, 13, 30, first.len() - 1] {
        let mut bad = log.clone();
        bad[at] ^= 0x04;
        assert!(matches!(decode_log(&bad), (r, LogEnd::Damaged { at: 0 }) if r.is_empty()), "flip at {at}");
    }
    // A page of the first batch lost, the second batch whole: damage too.
    let mut bad = log.clone();
    bad[20..first.len() - 4].fill(0);
    assert_eq!(decode_log(&bad).1, LogEnd::Damaged { at: 0 });
    // The same flip in the last batch: torn, the first kept.
    let mut bad = log.clone();
    bad[first.len() + 20] ^= 0x04;
    assert_eq!(decode_log(&bad), (sample(), LogEnd::Torn { end: first.len() }));
}

/// LL3: a batch with a valid checksum whose body does not decode is damage.
#[test]
fn a_valid_checksum_over_a_bad_batch_is_damage() {
    let grant = [7u8; 16];
    let ok = batch_body(2, &[(KIND_GRANT, &grant), (KIND_END, &[0; 4])]);
    assert_eq!(decode_log(&framed(&ok)).1, LogEnd::Clean { end: 8 + ok.len() });
    let state = [0u8; 16];
    let nested = batch_body(1, &[(KIND_GRANT, &grant)]);
    let mut trailing = ok.clone();
    trailing.push(0);
    let mut too_long = batch_body(1, &[]);
    too_long.extend_from_slice(&[KIND_GRANT, 17, 0, 0, 0]);
    too_long.extend_from_slice(&grant);
    let bad: [Vec<u8>; 9] = [
        batch_body(0, &[]),                                          // empty
        batch_body(0, &[(KIND_GRANT, &grant)]),                      // count below the records
        batch_body(3, &[(KIND_GRANT, &grant), (KIND_END, &[0; 4])]), // count above them
        batch_body(1, &[(KIND_STATE, &state)]),                      // an image piece
        batch_body(1, &[(KIND_BATCH, &nested[1..])]),                // a batch in a batch
        batch_body(1, &[(KIND_GRANT, &grant[..15])]),                // a record short of its fields
        batch_body(1, &[(KIND_END, &[1, 0, 0, 0, 9])]),              // a record short of its length
        trailing,
        too_long, // a length past the body
    ];
    for body in bad {
        assert_eq!(decode_log(&framed(&body)).1, LogEnd::Damaged { at: 0 }, "{body:?}");
    }
    // L1: a count the body cannot hold is refused before anything is allocated for it.
    let mut body = batch_body(u32::MAX, &[]);
    body.extend_from_slice(&[0; 64]);
    assert_eq!(decode_log(&framed(&body)).1, LogEnd::Damaged { at: 0 });
}

/// LL2: batches close past their bound (a record alone whatever its size); a lone record is its
/// plain frame; no records, no frame.
#[test]
fn batches_split_at_their_bound() {
    assert!(encode_batches(&[]).is_empty());
    let lone = encode_batches(&sample()[..1]);
    assert_eq!((lone.len(), lone[0][8]), (1, KIND_GRANT));
    assert_eq!(lone[0], encoded(&sample()[..1]), "the plain frame");
    let records = [txns(5, 100, "s"), txns(1, 2000, "big"), txns(7, 100, "t")].concat();
    let frames = encode_batches_within(&records, 600);
    for f in &frames {
        let body = f.len() - 8;
        assert!(body <= 600 || f[8] == KIND_TXN, "a batch of {body} bytes");
    }
    assert!(frames.iter().any(|f| f[8] == KIND_TXN && f.len() > 2000), "the big record alone");
    let log = frames.concat();
    assert_eq!(decode_log(&log), (records, LogEnd::Clean { end: log.len() }));
}

fn any_record() -> impl Strategy<Value = LogRecord> {
    let op =
        (any::<bool>(), "[a-z/]{0,12}", proptest::collection::vec(any::<u8>(), 0..40), any::<Option<u64>>())
            .prop_map(|(put, key, value, lease)| match put {
                true => {
                    Op::Put { key, value: value.into(), cond: crate::Cond::Any, lease: lease.map(LeaseId) }
                }
                false => Op::Delete { key, cond: crate::Cond::Any },
            });
    prop_oneof![
        proptest::collection::vec(op, 0..5).prop_map(LogRecord::Txn),
        (any::<u64>(), 1u64..1 << 40)
            .prop_map(|(id, ms)| LogRecord::Grant { id: LeaseId(id), ttl: Duration::from_millis(ms) }),
        proptest::collection::vec(any::<u64>().prop_map(LeaseId), 0..6).prop_map(LogRecord::End),
    ]
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
        // A random body can be a batch of a few records.
        prop_assert!(records.len() <= (3 + 80 / BATCH_ITEM_BYTES_MIN) * frames.len());
    }

    /// Group commits of random records, in batches of a random bound, replay the same records;
    /// a hole anywhere in the last frame tears it alone.
    #[test]
    fn batches_round_trip_and_tear_whole(
        groups in proptest::collection::vec(proptest::collection::vec(any_record(), 0..8), 1..6),
        bound in 16usize..400,
        hole in (any::<proptest::sample::Index>(), 1usize..PAGE),
    ) {
        let mut log = Vec::new();
        let mut last_start = 0;
        for group in &groups {
            for f in encode_batches_within(group, bound) {
                prop_assert!(f.len() - 8 <= bound || f[8] != KIND_BATCH);
                last_start = log.len();
                log.extend_from_slice(&f);
            }
        }
        let all = groups.concat();
        prop_assert_eq!(decode_log(&log), (all, LogEnd::Clean { end: log.len() }));
        if !log.is_empty() {
            let from = last_start + hole.0.index(log.len() - last_start);
            let mut torn = log.clone();
            torn[from..(from + hole.1).min(log.len())].fill(0);
            let kept = decode_log(&log[..last_start]).0;
            let (records, end) = decode_log(&torn);
            if torn == log {
                prop_assert_eq!(end, LogEnd::Clean { end: log.len() });
            } else if torn[last_start..].iter().all(|b| *b == 0) {
                // Never written at all.
                prop_assert_eq!((records, end), (kept, LogEnd::Clean { end: last_start }));
            } else {
                prop_assert_eq!((records, end), (kept, LogEnd::Torn { end: last_start }));
            }
        }
    }

    /// Random bytes inside a batch with a valid checksum (laid out as a batch, or a real batch
    /// with bytes overwritten) decode to records or damage: never torn, never a panic.
    #[test]
    fn random_batch_bodies_are_records_or_damage(
        items in proptest::collection::vec((0u8..10, proptest::collection::vec(any::<u8>(), 0..40)), 0..6),
        count in proptest::option::of(0u32..8),
        records in proptest::collection::vec(any_record(), 2..6),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let items: Vec<(u8, &[u8])> = items.iter().map(|(k, f)| (*k, f.as_slice())).collect();
        let laid_out = batch_body(count.unwrap_or(items.len() as u32), &items);
        let mut edited = batched(&records)[8..].to_vec();
        for (at, byte) in edits {
            let at = at.index(edited.len());
            edited[at] = byte;
        }
        for body in [laid_out, edited] {
            let log = framed(&body);
            match decode_log(&log) {
                (records, LogEnd::Clean { end }) => {
                    prop_assert_eq!(end, log.len());
                    prop_assert!(records.len() <= body.len() / BATCH_ITEM_BYTES_MIN);
                }
                (records, LogEnd::Damaged { at }) => prop_assert_eq!((records.len(), at), (0, 0)),
                (_, end) => prop_assert!(false, "torn: {:?}", end),
            }
        }
    }
}
