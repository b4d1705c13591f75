//! The checks behind the metadata fuzz targets: the embedded store's log
//! (`dlog_metadata::local_log`), replaying it into a `LocalCore`, and the schema values.
//!
//! Like the rest of this crate, each `check_*` function takes raw fuzz input and panics only
//! when the code under test misbehaves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_metadata::local_log::{self, LogEnd, LogRecord, RECORD_BODY_MAX, StateImage};
use dlog_metadata::schema::{
    self, DigestType, Dlsn, LogSegment, LogSegmentState, SegmentMetadata, SegmentOwner, SegmentState, wire,
};
use dlog_metadata::{Cond, LeaseId, LocalCore, MetaError, Op};

use super::Rng;

/// `metadata_log_decode`: `local_log::decode_log` must not panic, and its answer must hold up:
/// - the offset it returns is within the input; a `Clean` end is followed by zeroes only, a
///   `Torn` one by something that is not;
/// - the valid bytes, `bytes[..end]` of a `Clean` or `Torn` log, decode to the same records
///   and a `Clean` end there; the bytes before `Damaged { at }` to the same records, ending
///   `Clean` at `at` or damaged earlier (an image left open);
/// - a `Torn` cut drops no frame a writer could have made: no later offset holds a frame with
///   a valid checksum (LL3);
/// - the records re-encode (`encode_batches`, and `encode` one by one) to a log that decodes
///   to the same records, ending `Clean` at its length.
///
/// It checks `bytes` as they are, then with their frames' checksums made valid
/// (`with_valid_checksums`), so mutated bodies reach the record decoders.
pub fn check_log_decode(bytes: &[u8]) {
    check_decoded_log(bytes);
    let fixed = with_valid_checksums(bytes);
    if fixed != bytes {
        check_decoded_log(&fixed);
    }
}

/// `bytes` with the checksum of each frame rewritten to match it, frame after frame from the
/// start while the lengths fit: what a fuzzer would otherwise have to solve before a mutated
/// body is decoded at all.
pub fn with_valid_checksums(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut at = 0;
    while let Some(header) = out.get(at..at + 8) {
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let Some(body) = out.get(at + 8..at + 8 + len).filter(|_| len > 0) else { break };
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[4..8]), body);
        out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        at += 8 + len;
    }
    out
}

fn check_decoded_log(bytes: &[u8]) {
    let (records, end) = local_log::decode_log(bytes);
    match end {
        LogEnd::Clean { end } => {
            assert!(end <= bytes.len(), "Clean end {end} past the input ({} bytes)", bytes.len());
            assert!(bytes[end..].iter().all(|b| *b == 0), "Clean end {end} followed by non-zero bytes");
            check_valid_prefix(bytes, end, &records);
        }
        LogEnd::Torn { end } => {
            assert!(end < bytes.len(), "Torn end {end} at or past the input ({} bytes)", bytes.len());
            assert!(bytes[end..].iter().any(|b| *b != 0), "Torn end {end} followed by zeroes only");
            check_valid_prefix(bytes, end, &records);
            if let Some(at) = frame_after(bytes, end) {
                panic!("Torn at {end}, but a frame with a valid checksum starts at {at} (LL3)");
            }
        }
        LogEnd::Damaged { at } => {
            assert!(at < bytes.len(), "Damaged at {at}, past the input ({} bytes)", bytes.len());
            let (before, before_end) = local_log::decode_log(&bytes[..at]);
            assert_eq!(before, records, "the bytes before the damage at {at} decode to other records");
            assert!(
                matches!(before_end, LogEnd::Clean { end } if end == at)
                    || matches!(before_end, LogEnd::Damaged { at: a } if a < at),
                "the bytes before the damage at {at} end {before_end:?}"
            );
        }
    }
    check_reencode(&records);
}

/// `bytes[..end]`, a log's valid bytes, decode to `records` and end `Clean` at `end`.
fn check_valid_prefix(bytes: &[u8], end: usize, records: &[LogRecord]) {
    let (again, again_end) = local_log::decode_log(&bytes[..end]);
    assert_eq!(again, records, "the valid bytes ..{end} decode to other records");
    assert_eq!(again_end, LogEnd::Clean { end }, "the valid bytes ..{end} do not end Clean there");
}

/// Bytes the brute-force search of `frame_after` may checksum per input; past it the search
/// gives up (no verdict), so a large input cannot make one case quadratic.
const FRAME_SEARCH_BUDGET: usize = 64 << 20;

/// The first offset after `from` where a frame with a valid checksum starts, whose body a
/// writer could have made: found by checksumming every candidate, independently of
/// `decode_log`'s search. `None` also when the search ran out of `FRAME_SEARCH_BUDGET`.
fn frame_after(bytes: &[u8], from: usize) -> Option<usize> {
    let mut budget = FRAME_SEARCH_BUDGET;
    for at in from + 1..bytes.len() {
        let Some(header) = bytes.get(at..at + 9) else { break };
        let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len == 0 || len > RECORD_BODY_MAX || !could_be_written(header[8], len) {
            continue;
        }
        let Some(body) = bytes.get(at + 8..at + 8 + len) else { continue };
        budget = budget.checked_sub(len)?;
        if crc32c::crc32c_append(crc32c::crc32c(&header[4..8]), body) == crc {
            return Some(at);
        }
    }
    None
}

/// Whether a frame body of `len` bytes starting with `kind` has a size some record of that
/// kind has (local_log.rs's format table). `decode_log` skips any other frame with a valid
/// checksum when it looks past a bad one: no writer made it, and its body would not decode.
fn could_be_written(kind: u8, len: usize) -> bool {
    match kind {
        // Grant, State, StateEnd: the kind and two u64.
        2 | 4 | 7 => len == 17,
        // End: a count and lease ids; StateLeases: a count and (id, ttl) pairs.
        3 => len >= 5 && (len - 5).is_multiple_of(8),
        6 => len >= 5 && (len - 5).is_multiple_of(16),
        // Txn, StateKeys: a count, then items of any size.
        1 | 5 => len >= 5,
        // Batch: a count and at least one record (its kind, length and a count).
        8 => len >= 5 + 9,
        _ => false,
    }
}

/// `records` re-encoded two ways decode to themselves, ending `Clean` at the encoding's end.
fn check_reencode(records: &[LogRecord]) {
    // As a shell appends them: each run of records between images as one group commit, an
    // image alone (a group commit never holds one).
    let mut batched = Vec::new();
    let mut run = 0;
    for (i, record) in records.iter().enumerate() {
        if matches!(record, LogRecord::State(_)) {
            batched.extend(local_log::encode_batches(&records[run..i]).concat());
            local_log::encode(record, &mut batched);
            run = i + 1;
        }
    }
    batched.extend(local_log::encode_batches(&records[run..]).concat());
    // One record at a time.
    let mut single = Vec::new();
    for record in records {
        local_log::encode(record, &mut single);
    }
    for (how, log) in [("encode_batches", &batched), ("encode", &single)] {
        let (again, end) = local_log::decode_log(log);
        assert_eq!(again, records, "records re-encoded with {how} decode differently");
        assert_eq!(end, LogEnd::Clean { end: log.len() }, "records re-encoded with {how} do not end Clean");
    }
}

/// Events a replaying core keeps (its history plays no part in replay).
const REPLAY_HISTORY: usize = 64;

/// The instant replays run at (any will do: a replayed lease's deadline starts from it).
#[expect(clippy::disallowed_methods, reason = "a fuzz harness is a shell: replay takes some instant")]
pub fn replay_now() -> Instant {
    Instant::now()
}

/// `metadata_replay`: the records `decode_log` finds in `bytes` (their frames' checksums made
/// valid first: `with_valid_checksums`), replayed in order into an empty `LocalCore`, must not
/// panic. Beyond that (LC5, LL1):
/// - a record that does not apply answers `Corrupt` and changes nothing (the
///   core's image is the same before and after);
/// - the state replay built, as an image, replays into an empty core to the same image.
///
/// Replay goes on after a record that does not apply (a store would refuse to open): the
/// records after it meet states a clean log never builds.
pub fn check_replay(bytes: &[u8], now: Instant) {
    let (records, _) = local_log::decode_log(&with_valid_checksums(bytes));
    let mut core = LocalCore::new(REPLAY_HISTORY);
    for record in records {
        let before = core.image();
        let what = format!("{record:?}");
        if let Err(e) = core.replay(record, now) {
            assert!(
                matches!(&e, MetaError::Corrupt(m) if m.contains("metadata log")),
                "replaying {what:.200} failed with {e:?}, not Corrupt(metadata log)"
            );
            assert_eq!(core.image(), before, "replaying {what:.200} failed ({e}) but changed the state");
        }
    }
    let image = core.image();
    let mut fresh = LocalCore::new(REPLAY_HISTORY);
    if let Err(e) = fresh.replay(LogRecord::State(Box::new(image.clone())), now) {
        panic!("the image of a replayed core does not replay: {e}");
    }
    assert_eq!(fresh.image(), image, "the image of a replayed core replays to another state");
}

/// The key each value is decoded at in `check_value_decode` (it only names the value in
/// errors).
pub const VALUE_KEY: &str = "fuzz/value";

/// A decode error must be `Corrupt` naming the key (wire.rs WI1).
fn assert_corrupt(what: &str, e: &MetaError) {
    assert!(
        matches!(e, MetaError::Corrupt(m) if m.starts_with(VALUE_KEY)),
        "{what}: a bad value answered {e:?}, not Corrupt naming the key"
    );
}

/// A wire message: decoding `bytes` must give a value or `Corrupt`; a value must survive
/// `encode` then `decode`, and encode to the same bytes again.
macro_rules! wire_round_trip {
    ($bytes:expr, $($message:ident),+ $(,)?) => {$(
        match wire::decode::<wire::$message>(VALUE_KEY, $bytes) {
            Ok(value) => {
                let encoded = wire::encode(&value);
                let again = wire::decode::<wire::$message>(VALUE_KEY, &encoded);
                assert_eq!(again.as_ref(), Ok(&value), "{} changed through encode and decode", stringify!($message));
                assert_eq!(wire::encode(&value), encoded, "{} encodes two ways", stringify!($message));
            }
            Err(e) => assert_corrupt(stringify!($message), &e),
        }
    )+};
}

/// `metadata_value_decode`: every schema value decoder on the same bytes. None may panic;
/// each answers a value or `Corrupt` naming the key. `SegmentMetadata` and `LogSegment`
/// values (validated domain types) must encode (their `validate` passed at decode), decode
/// again to an equal value, and encode again to the same bytes (encoding is canonical); so
/// must every wire message.
pub fn check_value_decode(bytes: &[u8]) {
    match SegmentMetadata::decode(VALUE_KEY, bytes) {
        Ok(segment) => {
            let encoded = segment.encode().expect("a decoded SegmentMetadata encodes");
            let again =
                SegmentMetadata::decode(VALUE_KEY, &encoded).expect("an encoded SegmentMetadata decodes");
            assert_eq!(again, segment, "SegmentMetadata changed through encode and decode");
            assert_eq!(again.encode().ok(), Some(encoded), "SegmentMetadata encodes two ways");
            check_segment_shape(&segment);
        }
        Err(e) => assert_corrupt("SegmentMetadata", &e),
    }
    match LogSegment::decode(VALUE_KEY, bytes) {
        Ok(segment) => {
            let encoded = segment.encode().expect("a decoded LogSegment encodes");
            let again = LogSegment::decode(VALUE_KEY, &encoded).expect("an encoded LogSegment decodes");
            assert_eq!(again, segment, "LogSegment changed through encode and decode");
            assert_eq!(again.encode().ok(), Some(encoded), "LogSegment encodes two ways");
        }
        Err(e) => assert_corrupt("LogSegment", &e),
    }
    wire_round_trip!(
        bytes,
        ClusterInfo,
        BookieInfo,
        Cookie,
        NamespaceInfo,
        LogMetadata,
        WriterLock,
        UnderReplicated,
        Claim,
        SegmentMetadata,
        LogSegment,
    );
}

/// What a decoded `SegmentMetadata` promises its users (segment.rs SG1-SG4), asked through
/// its accessors.
fn check_segment_shape(segment: &SegmentMetadata) {
    let e = segment.ensemble_size as usize;
    assert_eq!(segment.ensemble_at(0).len(), e, "no ensemble of E bookies at entry 0");
    assert_eq!(segment.current_ensemble().len(), e, "the current ensemble is not E bookies");
    for bookies in segment.ensembles.values() {
        for bookie in bookies {
            assert!(schema::check_name("bookie", bookie).is_ok(), "bookie id {bookie:?} is not a name");
        }
    }
}

/// A log as a `LocalStore` writes it, made by driving a `LocalCore` with `commits` random
/// group commits (puts with and without leases, deletes, grants, revokes, expiries), each
/// appended with `encode_batches`; when `rewrite` is given, the log is rewritten as the
/// core's image after that many commits (LS3). Returns the log and the image of the state it
/// holds. The seed of fuzz inputs that get past the checksums.
pub fn sample_log(seed: u64, commits: usize, rewrite: Option<usize>) -> (Vec<u8>, StateImage) {
    let mut rng = Rng::new(seed);
    let start = replay_now();
    let mut now = start;
    let mut core = LocalCore::new(REPLAY_HISTORY);
    let mut log = Vec::new();
    for commit in 0..commits {
        if rewrite == Some(commit) {
            log.clear();
            local_log::encode(&LogRecord::State(Box::new(core.image())), &mut log);
        }
        for _ in 0..1 + rng.below(4) {
            step(&mut core, &mut rng, &mut now);
        }
        log.extend(local_log::encode_batches(&core.take_log()).concat());
    }
    (log, core.image())
}

/// One request to `core`, as a shell would apply it (failures are answers, not log records).
fn step(core: &mut LocalCore, rng: &mut Rng, now: &mut Instant) {
    let keys: Vec<String> = core.list("", None, 0).items.into_iter().map(|(k, _)| k).collect();
    let leases: Vec<LeaseId> = core.image().leases.iter().map(|(id, _)| *id).collect();
    let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
    match rng.below(10) {
        0..=4 => {
            let mut ops = Vec::new();
            for i in 0..1 + rng.below(3) {
                let key =
                    format!("{}/{:02}/{i}", ["bookies", "segments", "logs/ns"][pick(rng, 3)], rng.below(12));
                let value: Vec<u8> = (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect();
                let lease =
                    (!leases.is_empty() && rng.below(3) == 0).then(|| leases[pick(rng, leases.len())]);
                ops.push(Op::Put { key, value: Bytes::from(value), cond: Cond::Any, lease });
            }
            let _ = core.txn(ops, *now);
        }
        5 if !keys.is_empty() => {
            let key = keys[pick(rng, keys.len())].clone();
            let _ = core.txn(vec![Op::Delete { key, cond: Cond::Any }], *now);
        }
        6 | 7 => {
            let _ = core.grant(Duration::from_millis(1 + rng.below(5000)), *now);
        }
        8 if !leases.is_empty() => {
            let _ = core.revoke(leases[pick(rng, leases.len())]);
        }
        _ => {
            *now += Duration::from_millis(rng.below(3000));
            core.expire(*now);
        }
    }
}

/// A valid `SegmentMetadata` drawn from `rng`: any state, one to three ensembles, with or
/// without an owner.
pub fn sample_segment(rng: &mut Rng) -> SegmentMetadata {
    let e = 1 + rng.below(5) as u32;
    let w = 1 + rng.below(u64::from(e)) as u32;
    let a = 1 + rng.below(u64::from(w)) as u32;
    let last_entry_id = rng.below(1000);
    let mut ensembles = BTreeMap::new();
    let mut first = 0;
    for _ in 0..1 + rng.below(3) {
        let bookies =
            (0..e).map(|i| format!("bookie-{}.rack:3181", i + 10 * ensembles.len() as u32)).collect();
        ensembles.insert(first, bookies);
        first += 1 + rng.below(last_entry_id / 2 + 1);
    }
    let state = match rng.below(4) {
        0 => SegmentState::Open,
        1 => SegmentState::InRecovery,
        2 => SegmentState::Closed { last_entry_id: None, length: 0 },
        _ => SegmentState::Closed { last_entry_id: Some(last_entry_id), length: rng.below(1 << 30) },
    };
    if let SegmentState::Closed { last_entry_id, .. } = state {
        // SG3: no ensemble starts past one after the last entry.
        let end = last_entry_id.map_or(0, |l| l + 1);
        ensembles.retain(|first, _| *first <= end);
    }
    SegmentMetadata {
        ensemble_size: e,
        write_quorum_size: w,
        ack_quorum_size: a,
        digest_type: DigestType::Crc32c,
        master_key: Bytes::from((0..rng.below(33)).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>()),
        state,
        ensembles,
        created_ms: rng.next_u64() >> 20,
        owner: (rng.below(3) > 0).then(|| SegmentOwner {
            namespace: "ns".into(),
            log: format!("log-{}", rng.below(100)),
            seq: rng.below(50),
        }),
    }
}

/// A valid `LogSegment` drawn from `rng`: in progress, or completed with or without records.
pub fn sample_log_segment(rng: &mut Rng) -> LogSegment {
    let seq = rng.below(100);
    let first_txid = rng.below(1 << 40);
    let state = match rng.below(3) {
        0 => LogSegmentState::InProgress,
        1 => LogSegmentState::Completed { last_txid: 0, record_count: 0, last_dlsn: None, completed_ms: 7 },
        _ => {
            let count = 1 + rng.below(1000);
            LogSegmentState::Completed {
                last_txid: first_txid + count - 1,
                record_count: count,
                last_dlsn: Some(Dlsn { segment_seq: seq, entry_id: rng.below(500), slot: rng.below(8) }),
                completed_ms: rng.next_u64() >> 20,
            }
        }
    };
    LogSegment {
        seq,
        segment_id: rng.next_u64(),
        first_txid,
        epoch: rng.below(10),
        created_ms: rng.next_u64() >> 20,
        state,
    }
}
