//! The fuzz targets' checks (fuzz/src/lib.rs, included below as a module) over inputs from
//! proptest, so they run in every `cargo test` without cargo-fuzz or nightly. Random bytes
//! rarely get past a CRC, so besides raw bytes each check also gets well-formed inputs with a
//! few corruptions. Longer runs: `cargo fuzz run -s none <target>` (fuzz/README.md).

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use dlog_engine::journal::file_header::FileHeader;
use dlog_engine::journal::record::{self, RecordHeader, RecordKind};
use dlog_engine::{FileSeq, ShardId};
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
        let header = RecordHeader { kind, flags, payload_len, segment_id: segment, entry_id: entry, last_add_confirmed: lac };
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
