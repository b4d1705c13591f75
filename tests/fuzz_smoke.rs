//! The fuzz targets' checks (fuzz/src/lib.rs, included below as a module) over inputs from
//! proptest, so they run in every `cargo test` without cargo-fuzz or nightly. Random bytes
//! rarely get past a CRC, so besides raw bytes each check also gets well-formed inputs with a
//! few corruptions (a metadata log, for one, written by a `LocalCore` or encoded from random
//! records). Longer runs: `cargo fuzz run -s none <target>` (fuzz/README.md). Every file of
//! every corpus in fuzz/corpus/ also goes through its target's check here
//! (`corpus_files_pass_their_checks`).

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_engine::journal::file_header::FileHeader;
use dlog_engine::journal::record::{self, RecordHeader, RecordKind};
use dlog_engine::storage::manifest::{Manifest, ManifestRun, ManifestSegment};
use dlog_engine::storage::run::{RUN_HEADER_BYTES, RunHeader};
use dlog_engine::{FileSeq, JournalMark, LogSeq, SegmentId, ShardId};
use dlog_metadata::local_log::{self, ImageKey, LogEnd, LogRecord, StateImage};
use dlog_metadata::schema::{self, LogSegment, SegmentMetadata};
use dlog_metadata::{Cond, LeaseId, LocalCore, Op, Version};
use proptest::prelude::*;
use proptest::sample::Index;

fn kind() -> impl Strategy<Value = RecordKind> {
    prop_oneof![
        Just(RecordKind::Batch),
        Just(RecordKind::Entry),
        Just(RecordKind::MasterKey),
        Just(RecordKind::Fence),
        Just(RecordKind::Lac),
        Just(RecordKind::Padding),
    ]
}

/// Flips `(at, mask)` bytes of `bytes` (a no-op on empty input).
fn corrupt(bytes: &mut [u8], flips: &[(Index, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for (at, mask) in flips {
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn record_decode_raw(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::check_record_decode(&data);
    }

    #[test]
    fn record_decode_encoded(epoch: u64, kind in kind(), flags: u8, segment: u64, entry: u64, lac: u64,
                             payload in proptest::collection::vec(any::<u8>(), 0..300),
                             padding_len in 0u32..5000, tail in proptest::collection::vec(any::<u8>(), 0..8),
                             flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..3)) {
        let (payload_len, payload): (u32, &[u8]) = if kind == RecordKind::Padding {
            (padding_len, &[])
        } else {
            (payload.len() as u32, &payload)
        };
        let header =
            RecordHeader { kind, flags, payload_len, segment_id: segment, entry_id: entry, last_add_confirmed: lac };
        let mut input = epoch.to_le_bytes().to_vec();
        input.resize(8 + record::record_bytes(payload.len()), 0);
        record::encode(&mut input[8..], epoch, &header, payload);
        input.extend_from_slice(&tail);
        if flips.is_empty() {
            // Intact: must decode, and the check's round trip must hold.
            prop_assert!(record::decode(&input[8..], epoch).is_ok());
        }
        corrupt(&mut input, &flips);
        checks::check_record_decode(&input);
    }

    #[test]
    fn file_header_decode_raw(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        checks::check_file_header_decode(&data);
    }

    #[test]
    fn file_header_decode_encoded(seq: u64, shard: u32, in_flight in 1u32..=16,
                                  file_sectors in 2u64..(1 << 20), limit_sectors: Index,
                                  len in 0usize..=4096,
                                  flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..3)) {
        // Fields in the ranges a writer produces (decode refuses others).
        let file_bytes = file_sectors * 4096;
        let limit = (limit_sectors.index(file_sectors as usize) as u64 + 1) * 4096;
        let header = FileHeader {
            file_seq: FileSeq(seq),
            shard_id: ShardId(shard),
            writes_in_flight_max: in_flight,
            file_bytes,
            batch_bytes_limit: limit,
        };
        let mut block = header.encode()[..len].to_vec();
        if len >= 64 && flips.is_empty() {
            prop_assert_eq!(FileHeader::decode(&block), Ok(header));
        }
        corrupt(&mut block, &flips);
        checks::check_file_header_decode(&block);
    }
}

/// Panics on the engine's own threads (shard, replay reader, preparer) are turned into errors
/// by `Bookie::open` or lost with the thread; count them so the replay cases can fail on them.
fn engine_thread_panics() -> &'static AtomicUsize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("dlog-")) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    &PANICS
}

/// One replay case at a time: the panic counter is shared.
static REPLAY: Mutex<()> = Mutex::new(());

fn replay_case(body: &[u8]) {
    let _guard = REPLAY.lock().unwrap_or_else(|e| e.into_inner());
    let panics = engine_thread_panics();
    let before = panics.load(Ordering::SeqCst);
    // tmpfs where there is one: the case's flushes are then free.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("temporary directory");
    checks::check_journal_replay(&dir.path().join("journal"), body);
    assert_eq!(panics.load(Ordering::SeqCst), before, "an engine thread panicked during replay");
}

/// How a well-formed journal body is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// XOR bytes.
    Flip(Vec<(Index, u8)>),
    /// Cut the body short (the rest of the file is zero).
    Truncate(Index),
    /// Zero one 4 KiB sector.
    ZeroSector(Index),
    /// Copy one sector over another (a batch out of place, a duplicated sequence number).
    CopySector(Index, Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        proptest::collection::vec((any::<Index>(), 1u8..), 1..4).prop_map(Damage::Flip),
        any::<Index>().prop_map(Damage::Truncate),
        any::<Index>().prop_map(Damage::ZeroSector),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Damage::CopySector(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn journal_replay_raw(data in proptest::collection::vec(any::<u8>(), 0..9000)) {
        replay_case(&data);
    }

    #[test]
    fn journal_replay_damaged(seed: u64, batches in 1usize..12, damage in proptest::option::of(damage())) {
        let mut body = checks::sample_journal_body(seed, batches);
        let sectors = body.len() / 4096;
        match damage {
            None => {}
            Some(Damage::Flip(flips)) => corrupt(&mut body, &flips),
            Some(Damage::Truncate(at)) => body.truncate(at.index(body.len() + 1)),
            Some(Damage::ZeroSector(at)) => {
                let s = at.index(sectors) * 4096;
                body[s..s + 4096].fill(0);
            }
            Some(Damage::CopySector(from, to)) => {
                let (from, to) = (from.index(sectors) * 4096, to.index(sectors + 1) * 4096);
                let sector = body[from..from + 4096].to_vec();
                if to == body.len() {
                    body.extend_from_slice(&sector);
                } else {
                    body[to..to + 4096].copy_from_slice(&sector);
                }
            }
        }
        replay_case(&body);
    }
}

/// An intact journal replays every entry it holds, under `Strict`.
#[test]
fn journal_replay_intact_entries_come_back() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let body = checks::sample_journal_body(11, 10);
    let mut entries = 0u64;
    let mut at = 0;
    while at < body.len() {
        let (batch, _) = record::decode(&body[at..], 0).expect("batch record");
        let len = batch.segment_id as usize;
        let mut r = record::record_bytes(0);
        while r < len {
            let (h, _) = record::decode(&body[at + r..], 0).expect("record");
            if h.kind == RecordKind::Padding {
                break;
            }
            entries += u64::from(h.kind == RecordKind::Entry);
            r += record::record_bytes(h.payload_len as usize);
        }
        at += len;
    }
    assert!(entries > 0);
    checks::write_journal_dir(dir.path(), &body);
    let bookie =
        dlog_engine::Bookie::open(checks::replay_config(dir.path(), dlog_engine::JournalRecovery::Strict))
            .expect("an intact journal opens under Strict");
    let report = &bookie.replay_reports()[0];
    assert_eq!(report.entries, entries);
    assert!(report.torn_tail.is_none() && report.damage.is_empty(), "{report:?}");
    bookie.close();
}

// The metadata targets: the embedded store's log, its replay, and the schema values.

/// A log record without an image: small keys, values, lease ids and ttls, so that replaying
/// them sometimes applies.
fn log_record() -> impl Strategy<Value = LogRecord> {
    let lease = proptest::option::of(0u64..6).prop_map(|l| l.map(LeaseId));
    let op = prop_oneof![
        ("[a-c/]{0,6}", proptest::collection::vec(any::<u8>(), 0..24), lease).prop_map(
            |(key, value, lease)| Op::Put { key, value: Bytes::from(value), cond: Cond::Any, lease }
        ),
        "[a-c/]{0,6}".prop_map(|key| Op::Delete { key, cond: Cond::Any }),
    ];
    prop_oneof![
        3 => proptest::collection::vec(op, 0..4).prop_map(LogRecord::Txn),
        1 => (0u64..8, 0u64..100_000).prop_map(|(id, ms)| LogRecord::Grant {
            id: LeaseId(id),
            ttl: Duration::from_millis(ms),
        }),
        1 => proptest::collection::vec((0u64..8).prop_map(LeaseId), 0..4).prop_map(LogRecord::End),
    ]
}

/// A state image of a few keys and leases (not always one a core would accept).
fn state_image() -> impl Strategy<Value = StateImage> {
    let key = ("[a-c/]{1,6}", proptest::collection::vec(any::<u8>(), 0..24), 1u64..20, 1u64..20, 0u64..4);
    let keys = proptest::collection::vec(key, 0..5).prop_map(|keys| {
        let mut keys: Vec<ImageKey> = keys
            .into_iter()
            .map(|(k, v, version, created, lease)| {
                let lease = (lease > 0).then_some(LeaseId(lease));
                (k, Bytes::from(v), Version(version.max(created)), Version(created.min(version)), lease)
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys.dedup_by(|a, b| a.0 == b.0);
        keys
    });
    let leases = proptest::collection::btree_map(1u64..4, 1u64..100_000, 0..3)
        .prop_map(|l| l.into_iter().map(|(id, ms)| (LeaseId(id), Duration::from_millis(ms))).collect());
    (20u64..30, 4u64..6, keys, leases).prop_map(|(revision, lease_next, keys, leases)| StateImage {
        revision: Version(revision),
        lease_next,
        keys,
        leases,
    })
}

/// How a well-formed metadata log is damaged.
#[derive(Clone, Debug)]
enum LogDamage {
    /// XOR bytes.
    Flip(Vec<(Index, u8)>),
    /// Cut the log short.
    Truncate(Index),
    /// Zero a run of bytes (at, length).
    Zero(Index, usize),
    /// Append bytes (a torn append, or garbage).
    Append(Vec<u8>),
}

fn log_damage() -> impl Strategy<Value = LogDamage> {
    prop_oneof![
        proptest::collection::vec((any::<Index>(), 1u8..), 1..4).prop_map(LogDamage::Flip),
        any::<Index>().prop_map(LogDamage::Truncate),
        (any::<Index>(), 1usize..64).prop_map(|(at, n)| LogDamage::Zero(at, n)),
        proptest::collection::vec(any::<u8>(), 1..32).prop_map(LogDamage::Append),
    ]
}

fn damage_log(log: &mut Vec<u8>, damage: &LogDamage) {
    match damage {
        LogDamage::Flip(flips) => corrupt(log, flips),
        LogDamage::Truncate(at) => log.truncate(at.index(log.len() + 1)),
        LogDamage::Zero(at, n) => {
            let at = at.index(log.len() + 1);
            let end = (at + n).min(log.len());
            log[at..end].fill(0);
        }
        LogDamage::Append(bytes) => log.extend_from_slice(bytes),
    }
}

/// Each group as one group commit (`encode_batches`: one frame here), after an image if any.
fn encode_log(image: Option<&StateImage>, groups: &[Vec<LogRecord>]) -> (Vec<u8>, Vec<LogRecord>) {
    let mut log = Vec::new();
    let mut records = Vec::new();
    if let Some(image) = image {
        let image = LogRecord::State(Box::new(image.clone()));
        local_log::encode(&image, &mut log);
        records.push(image);
    }
    for group in groups {
        log.extend(local_log::encode_batches(group).concat());
        records.extend(group.iter().cloned());
    }
    (log, records)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn metadata_log_decode_raw(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        checks::metadata::check_log_decode(&data);
        checks::metadata::check_replay(&data, checks::metadata::replay_now());
    }

    #[test]
    fn metadata_log_decode_damaged(image in proptest::option::of(state_image()),
                                   groups in proptest::collection::vec(
                                       proptest::collection::vec(log_record(), 1..5), 0..6),
                                   damage in proptest::option::of(log_damage())) {
        let (mut log, records) = encode_log(image.as_ref(), &groups);
        if damage.is_none() {
            prop_assert_eq!(local_log::decode_log(&log), (records, LogEnd::Clean { end: log.len() }));
        }
        if let Some(damage) = &damage {
            damage_log(&mut log, damage);
        }
        checks::metadata::check_log_decode(&log);
        checks::metadata::check_replay(&log, checks::metadata::replay_now());
    }

    /// LL4: whatever a crash does to the last group commit's frame (cut short, or pages of it
    /// lost as zeroes), the log ends at the frame before it, as a torn tail, never damaged.
    #[test]
    fn metadata_log_torn_last_commit(groups in proptest::collection::vec(
                                         proptest::collection::vec(log_record(), 1..5), 1..6),
                                     cut: Index, zero in proptest::option::of((any::<Index>(), 1usize..600))) {
        let (before, kept) = encode_log(None, &groups[..groups.len() - 1]);
        let (mut log, _) = encode_log(None, &groups);
        let intact = log.clone();
        let start = before.len();
        match zero {
            // Cut inside the last frame.
            None => log.truncate(start + 1 + cut.index(log.len() - start - 1)),
            // Zero a run of it.
            Some((at, n)) => {
                let at = start + at.index(log.len() - start);
                let end = (at + n).min(log.len());
                log[at..end].fill(0);
            }
        }
        // Zeroes over zeroes leave the frame whole.
        prop_assume!(log != intact);
        let (records, end) = local_log::decode_log(&log);
        prop_assert_eq!(records, kept);
        prop_assert!(matches!(end, LogEnd::Torn { end } | LogEnd::Clean { end } if end == start), "{:?}", end);
        checks::metadata::check_log_decode(&log);
    }

    /// LL1: a log a core wrote (group commits, leases, a rewrite) replays to the core's state;
    /// damaged, it replays without a panic.
    #[test]
    fn metadata_replay_sample_logs(seed: u64, commits in 1usize..24, rewrite: Option<Index>,
                                   damage in proptest::option::of(log_damage())) {
        let rewrite = rewrite.map(|r| r.index(commits));
        let (mut log, image) = checks::metadata::sample_log(seed, commits, rewrite);
        let now = checks::metadata::replay_now();
        if damage.is_none() {
            let (records, end) = local_log::decode_log(&log);
            prop_assert_eq!(end, LogEnd::Clean { end: log.len() });
            let mut core = LocalCore::new(64);
            for record in records {
                core.replay(record, now).expect("a record a core logged replays");
            }
            prop_assert_eq!(core.image(), image);
        }
        if let Some(damage) = &damage {
            damage_log(&mut log, damage);
        }
        checks::metadata::check_log_decode(&log);
        checks::metadata::check_replay(&log, now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn metadata_value_decode_raw(format: bool, data in proptest::collection::vec(any::<u8>(), 0..128)) {
        // Most values start with the format byte; without it every decoder refuses at once.
        let mut value = if format { vec![schema::wire::FORMAT] } else { Vec::new() };
        value.extend_from_slice(&data);
        checks::metadata::check_value_decode(&value);
    }

    #[test]
    fn metadata_value_decode_encoded(seed: u64, log_segment: bool, cut: Option<Index>,
                                     flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..3)) {
        let mut rng = checks::Rng::new(seed);
        let mut value = if log_segment {
            let segment = checks::metadata::sample_log_segment(&mut rng);
            let value = segment.encode().expect("a sample log segment encodes");
            prop_assert_eq!(LogSegment::decode("k", &value), Ok(segment));
            value.to_vec()
        } else {
            let segment = checks::metadata::sample_segment(&mut rng);
            let value = segment.encode().expect("a sample segment encodes");
            prop_assert_eq!(SegmentMetadata::decode("k", &value), Ok(segment));
            value.to_vec()
        };
        corrupt(&mut value, &flips);
        if let Some(cut) = cut {
            value.truncate(cut.index(value.len() + 1));
        }
        checks::metadata::check_value_decode(&value);
    }
}

/// Crashes `metadata_replay` found, each a log whose frames all have valid checksums: a Grant
/// of lease id `u64::MAX`, and an image at revision `u64::MAX` followed by a transaction.
/// Replaying them used to overflow `LocalCore`'s counters (a panic with overflow checks, ids
/// and revisions wrapping to 0 without); replay now refuses them as corrupt (LC6).
#[test]
fn metadata_replay_counters_at_their_limit() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    };
    let grant_max = "e81d111c1100000002ffffffffffffffffe803000000000000";
    let revision_max = concat!(
        "b196a4491100000004ffffffffffffffff0100000000000000",
        "c0a0a589110000000700000000000000000000000000000000",
        "bb7fe03718000000010100000001010000006b00000000000000000000000000",
    );
    for log in [grant_max, revision_max] {
        checks::metadata::check_replay(&hex(log), checks::metadata::replay_now());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn wire_frame_decode_raw(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        checks::protocol::check_wire_decode(&data);
    }

    /// Well-formed streams of every op, with a few bytes flipped and maybe cut short, decoded
    /// whole and in pieces.
    #[test]
    fn wire_frame_decode_encoded(seed: u64, frames in 1usize..12, responses: bool, small: bool, piece: u8,
                                 cut: Option<Index>,
                                 flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..3)) {
        let mut input = checks::protocol::sample_wire_input(seed, frames, responses, piece);
        input[0] |= u8::from(small) << 1;
        if flips.is_empty() && cut.is_none() && !small {
            // Intact, default limits: every frame decodes.
            let mut buf = bytes::BytesMut::from(&input[2..]);
            for _ in 0..frames {
                let decoded = if responses {
                    dlog_protocol::decode_response(&mut buf, &dlog_protocol::Limits::default()).map(|r| r.is_some())
                } else {
                    dlog_protocol::decode_request(&mut buf, &dlog_protocol::Limits::default()).map(|r| r.is_some())
                };
                prop_assert_eq!(decoded, Ok(true));
            }
            prop_assert!(buf.is_empty());
        }
        corrupt(&mut input[2..], &flips);
        if let Some(cut) = cut {
            input.truncate(2 + cut.index(input.len() - 1));
        }
        checks::protocol::check_wire_decode(&input);
    }
}

/// The protocol's copies of engine limits match the engine's.
#[test]
fn wire_limits_match_the_engine() {
    assert_eq!(dlog_protocol::MASTER_KEY_BYTES_MAX, dlog_engine::constants::MASTER_KEY_BYTES_MAX);
    let config = dlog_engine::BookieConfig::new("unused");
    assert_eq!(dlog_protocol::Limits::default().entry_bytes_max as usize, config.entry_bytes_max);
    assert_eq!(dlog_protocol::LAC_NONE, record::LAC_NONE);
}

// The segment storage targets: entry logs (runs, and the run index built from them) and
// manifests.

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000, failure_persistence: None, ..ProptestConfig::default()
    })]

    #[test]
    fn entry_log_decode_raw(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        checks::storage::check_entry_log_decode(&data);
    }

    /// Sample entry logs read back whole; damaged (bytes flipped, cut, zeroed, appended, a
    /// sector copied over another), they are still read without a broken check.
    #[test]
    fn entry_log_decode_damaged(seed: u64, runs in 1usize..4, trim: bool,
                                damage in proptest::option::of(log_damage()),
                                copy in proptest::option::of((any::<Index>(), any::<Index>()))) {
        let (input, entries) = checks::storage::sample_entry_log(seed, runs, trim);
        let (epoch, log) = checks::split_u64(&input);
        if damage.is_none() && copy.is_none() {
            let found = checks::storage::read_entry_log(epoch, log);
            prop_assert_eq!(found.len(), runs);
            for (run, entries) in found.iter().zip(&entries) {
                prop_assert_eq!(run.entries.as_ref(), Some(entries));
            }
        }
        let mut log = log.to_vec();
        if let Some(damage) = &damage {
            damage_log(&mut log, damage);
        }
        let sectors = log.len() / 4096;
        if let Some((from, to)) = copy.filter(|_| sectors > 0) {
            let (from, to) = (from.index(sectors) * 4096, to.index(sectors) * 4096);
            log.copy_within(from..from + 4096, to);
        }
        let mut input = epoch.to_le_bytes().to_vec();
        input.extend_from_slice(&log);
        checks::storage::check_entry_log_decode(&input);
    }

    /// Run headers with chosen fields around the limits `decode_header` checks, with a valid
    /// CRC, then a footer record of chosen sections and arbitrary array elements.
    #[test]
    fn entry_log_decode_forged(epoch in 0u64..3, run_sectors in 0u64..3, odd_size: bool, seq in 0u64..3,
                               entry_count in 0u64..5, arrays_at in 64u64..90, footer_delta in 0usize..4,
                               footer_bytes in 30u64..260, footer_seq in 0u64..3,
                               sections in proptest::collection::vec(
                                   (0u64..3, 0u64..8, 0u64..4, 0u64..6, 0u64..300), 0..5),
                               elements in proptest::collection::vec(any::<u8>(), 0..64)) {
        // Where the array ends, or a little off.
        let footer_at = (arrays_at + 8 * entry_count).saturating_add_signed([0, -8, 1, 8][footer_delta]);
        let header = RunHeader {
            run_bytes: run_sectors * 4096 + u64::from(odd_size) * 8,
            seq,
            entry_count,
            arrays_at,
            footer_at,
            footer_bytes,
        };
        let mut log = vec![0u8; 8192];
        log[..RUN_HEADER_BYTES].copy_from_slice(&checks::storage::run_header_record(epoch, &header));
        let at = arrays_at as usize;
        let n = elements.len().min(log.len() - at);
        log[at..at + n].copy_from_slice(&elements[..n]);
        let mut payload = Vec::new();
        for (segment, first, count, index, bytes) in &sections {
            for v in [*segment, *first, *count, *index, *bytes] {
                payload.extend_from_slice(&v.to_le_bytes());
            }
        }
        let footer = RecordHeader {
            kind: RecordKind::RunFooter,
            flags: 0,
            payload_len: payload.len() as u32,
            segment_id: footer_seq,
            entry_id: sections.len() as u64,
            last_add_confirmed: record::LAC_NONE,
        };
        let at = footer_at as usize;
        record::encode(&mut log[at..at + record::record_bytes(payload.len())], epoch, &footer, &payload);
        let mut input = epoch.to_le_bytes().to_vec();
        input.extend_from_slice(&log);
        checks::storage::check_entry_log_decode(&input);
    }
}

/// A manifest of a few logs, runs and segments, and damage notes: short ones of any text, and
/// ones around the 4096-byte cut with multi-byte characters (which the cut may split).
fn manifest() -> impl Strategy<Value = Manifest> {
    let mark = proptest::option::of((any::<u64>(), any::<u64>()))
        .prop_map(|m| m.map(|(file, offset)| JournalMark { file: FileSeq(file), offset }));
    let logs =
        proptest::collection::vec((any::<u64>(), any::<u64>()).prop_map(|(l, u)| (LogSeq(l), u)), 0..3);
    let runs = proptest::collection::vec(any::<(u64, u64, u64, u64)>(), 0..3).prop_map(|runs| {
        runs.into_iter()
            .map(|(log, offset, bytes, seq)| ManifestRun { log: LogSeq(log), offset, bytes, seq })
            .collect::<Vec<_>>()
    });
    let segment = (
        any::<u64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=64)),
        any::<(bool, bool)>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(segment, key, (fenced, deleted), lac)| ManifestSegment {
            segment: SegmentId(segment),
            master_key: key.map(Bytes::from),
            fenced,
            deleted,
            last_add_confirmed: lac,
        });
    let wide = prop_oneof![Just('a'), Just('é'), Just('€'), Just('😀')];
    let note = prop_oneof![
        3 => ".{0,40}",
        1 => proptest::collection::vec(wide, 1020..1400).prop_map(|c| c.into_iter().collect::<String>()),
    ];
    (
        any::<u32>(),
        mark,
        any::<(u64, u64)>(),
        logs,
        runs,
        proptest::collection::vec(segment, 0..4),
        proptest::collection::vec(note, 0..3),
    )
        .prop_map(|(shard, checkpoint, (next_log, next_run), logs, runs, segments, damage)| Manifest {
            shard,
            checkpoint,
            next_log,
            next_run,
            logs,
            runs,
            segments,
            damage,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000, failure_persistence: None, ..ProptestConfig::default()
    })]

    #[test]
    fn manifest_decode_raw(header: bool, data in proptest::collection::vec(any::<u8>(), 0..300)) {
        // With the magic and version in front, the check's CRC fix gets the body read.
        let mut bytes = if header { [0x464D_4C44u32, 1].map(u32::to_le_bytes).concat() } else { Vec::new() };
        bytes.extend_from_slice(&data);
        checks::storage::check_manifest_decode(&bytes);
    }

    #[test]
    fn manifest_decode_encoded(seed: u64, cut: Option<Index>,
                               flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..3)) {
        let manifest = checks::storage::sample_manifest(&mut checks::Rng::new(seed));
        let mut bytes = manifest.encode();
        prop_assert_eq!(Manifest::decode(&bytes), Ok(manifest));
        corrupt(&mut bytes, &flips);
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        checks::storage::check_manifest_decode(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any manifest survives encode and decode, but for damage notes cut to 4096 bytes.
    #[test]
    fn manifest_round_trip(manifest in manifest()) {
        let bytes = manifest.encode();
        prop_assert_eq!(Manifest::decode(&bytes), Ok(checks::storage::notes_cut(&manifest)));
        checks::storage::check_manifest_decode(&bytes);
    }
}

/// Time a target's corpus may take beyond its named seeds.
fn corpus_budget(target: &str) -> Duration {
    if target == "journal_replay" { Duration::from_secs(3) } else { Duration::from_secs(1) }
}

/// A name libFuzzer gives the inputs it adds to a corpus: 40 hex digits (SHA-1).
fn is_fuzzer_name(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        fs::read_dir(dir).expect("read directory").map(|e| e.expect("directory entry").path()).collect();
    paths.sort();
    paths
}

/// Every file of every corpus in fuzz/corpus/ passes its target's check, so the committed
/// seeds run in every `cargo test`, without cargo-fuzz. Named seeds (what `seed_corpus` writes,
/// and regression inputs) always run; inputs a local fuzz run added (named by their SHA-1) run
/// until the target's `corpus_budget` is spent, so a grown local corpus does not make the test
/// slow. Every target in fuzz/fuzz_targets/ has a check, and every corpus a target.
#[test]
#[expect(clippy::disallowed_methods, reason = "a test's time budget, not a core's clock")]
fn corpus_files_pass_their_checks() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets: Vec<String> = sorted_entries(&fuzz.join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for target in &targets {
        assert!(
            target == "journal_replay" || checks::input_check(target).is_some(),
            "fuzz target {target} has no check in fuzz/src/lib.rs input_check"
        );
    }
    let mut seeds = 0;
    for dir in sorted_entries(&fuzz.join("corpus")) {
        let target = dir.file_name().expect("a corpus name").to_string_lossy().into_owned();
        assert!(targets.contains(&target), "corpus {} of no fuzz target", dir.display());
        let check = checks::input_check(&target);
        let files = sorted_entries(&dir);
        let started = Instant::now();
        let mut ran = 0;
        for path in &files {
            let name = path.file_name().expect("a file name").to_string_lossy();
            let named = !is_fuzzer_name(&name);
            if !named && started.elapsed() > corpus_budget(&target) {
                continue;
            }
            let data = fs::read(path).expect("read a corpus file");
            let result = catch_unwind(AssertUnwindSafe(|| match check {
                Some(check) => check(&data),
                None => replay_case(&data),
            }));
            assert!(result.is_ok(), "{}: the {target} check failed on it", path.display());
            ran += 1;
            seeds += usize::from(named);
        }
        eprintln!("corpus {target}: {ran} of {} files in {:?}", files.len(), started.elapsed());
    }
    assert!(seeds > 0, "no named seeds in fuzz/corpus/");
}
