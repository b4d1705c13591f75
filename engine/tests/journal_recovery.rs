//! Journal recovery against damaged journals, on both backends: torn tails cut at every byte
//! offset of the last batch, garbage after the tail, damage to acknowledged batches (Strict
//! refuses, TruncateTornTail reports and answers `Corrupt`), the in-flight window's edge, and
//! stale records of recycled files.
//!
//! Journal files are edited directly; batch boundaries are found by parsing the Batch records
//! (see `parse_batches`).

mod common;
use common::Rng;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{BACKENDS, add, payload};
use dlog_engine::journal::files::ShardDir;
use dlog_engine::journal::record::{self, RecordKind};
use dlog_engine::journal::replay::replay;
use dlog_engine::{
    Backend, Bookie, BookieConfig, EntryId, Error, FileSeq, JournalRecovery, OpenError, ReplayReport,
    SegmentId, ShardId,
};

const SECTOR: usize = 4096;
const HEADER: usize = 40;
const KIND_ENTRY: u8 = 2;
const KIND_PADDING: u8 = 6;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Rec {
    /// File offset of the record header.
    at: usize,
    kind: u8,
    payload_len: usize,
    segment: u64,
    entry: u64,
}

#[derive(Clone, Debug)]
struct BatchInfo {
    offset: usize,
    len: usize,
    seq: u64,
    records: Vec<Rec>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The epoch (= sequence number) in a journal file's header block.
fn file_epoch(file: &[u8]) -> u64 {
    u64_at(file, 16)
}

/// Valid batches of the file's epoch from offset 4096 on, in order, until the first position
/// that does not hold one. The Batch record's CRC is checked with the engine's decoder; the
/// records inside are walked by their lengths.
fn parse_batches(file: &[u8]) -> Vec<BatchInfo> {
    let epoch = file_epoch(file);
    let mut out = Vec::new();
    let mut pos = SECTOR;
    while pos + HEADER <= file.len() {
        let Ok((h, _)) = record::decode(&file[pos..pos + HEADER], epoch) else { break };
        if h.kind != RecordKind::Batch {
            break;
        }
        let len = u64_at(file, pos + 16) as usize;
        if len == 0 || !len.is_multiple_of(SECTOR) || pos + len > file.len() {
            break;
        }
        let mut records = Vec::new();
        let mut at = pos + HEADER;
        while at < pos + len {
            let kind = file[at + 8];
            let payload_len = u32_at(file, at + 4) as usize;
            records.push(Rec {
                at,
                kind,
                payload_len,
                segment: u64_at(file, at + 16),
                entry: u64_at(file, at + 24),
            });
            at += HEADER + payload_len;
            if kind == KIND_PADDING {
                break;
            }
        }
        assert_eq!(at, pos + len, "records of the batch at {pos} do not fill it");
        assert_eq!(u64_at(file, pos + 32), records.iter().filter(|r| r.kind != KIND_PADDING).count() as u64);
        out.push(BatchInfo { offset: pos, len, seq: u64_at(file, pos + 24), records });
        pos += len;
    }
    out
}

/// Sectors of the file that start with a valid Batch record of `epoch`.
fn valid_batch_headers(file: &[u8], epoch: u64) -> usize {
    (SECTOR..file.len())
        .step_by(SECTOR)
        .filter(|at| matches!(record::decode(&file[*at..*at + HEADER], epoch), Ok((h, _)) if h.kind == RecordKind::Batch))
        .count()
}

/// A temporary directory on tmpfs when there is one, else the default place.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn journal_path(dir: &Path, shard: u32, seq: u64) -> PathBuf {
    dir.join(format!("shard-{shard}")).join(format!("journal-{seq:016x}.log"))
}

fn shard_dir_names(dir: &Path, shard: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join(format!("shard-{shard}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset as u64).unwrap();
    file.sync_data().unwrap();
}

/// Every file of a journal directory, to put it back between cases.
struct Snapshot {
    files: Vec<(PathBuf, Vec<u8>)>,
    shard_dirs: Vec<PathBuf>,
}

impl Snapshot {
    fn take(dir: &Path) -> Snapshot {
        let mut files = vec![(dir.join("dlog-layout"), fs::read(dir.join("dlog-layout")).unwrap())];
        let mut shard_dirs = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                for f in fs::read_dir(&path).unwrap() {
                    let f = f.unwrap().path();
                    files.push((f.clone(), fs::read(&f).unwrap()));
                }
                shard_dirs.push(path);
            }
        }
        Snapshot { files, shard_dirs }
    }

    fn restore(&self) {
        for shard_dir in &self.shard_dirs {
            for f in fs::read_dir(shard_dir).unwrap() {
                let f = f.unwrap().path();
                if !self.files.iter().any(|(p, _)| *p == f) {
                    fs::remove_file(&f).unwrap();
                }
            }
        }
        for (path, bytes) in &self.files {
            fs::write(path, bytes).unwrap();
        }
    }
}

/// One shard, one batch in flight, small files (the smallest `validate` accepts).
fn small_config(dir: &Path, backend: Backend) -> BookieConfig {
    let mut config = common::config(dir, backend);
    config.shard_count = 1;
    config.writes_in_flight_max = 1;
    config.batch_when_idle = true;
    config.batch_bytes_max = SECTOR;
    config.entry_bytes_max = SECTOR;
    config.journal_file_bytes = 4 * SECTOR as u64 + (1 << 20);
    config
}

fn with_policy(mut config: BookieConfig, policy: JournalRecovery) -> BookieConfig {
    config.journal_recovery = policy;
    config
}

fn only_report(bookie: &Bookie) -> &ReplayReport {
    let reports = bookie.replay_reports();
    assert_eq!(reports.len(), 1);
    &reports[0]
}

fn assert_clean(report: &ReplayReport, what: &str) {
    assert!(report.torn_tail.is_none(), "{what}: unexpected torn tail {:?}", report.torn_tail);
    assert!(report.damage.is_empty(), "{what}: unexpected damage {:?}", report.damage);
}

fn read_exact(bookie: &Bookie, segment: u64, entry: u64, len: usize, what: &str) {
    match bookie.read_entry(SegmentId(segment), EntryId(entry)).wait() {
        Ok(bytes) => {
            assert!(bytes == payload(segment, entry, len), "{what}: {segment}/{entry} has wrong bytes")
        }
        Err(e) => panic!("{what}: reading {segment}/{entry}: {e}"),
    }
}

fn read_absent(bookie: &Bookie, segment: u64, entry: u64, what: &str) {
    match bookie.read_entry(SegmentId(segment), EntryId(entry)).wait() {
        Err(Error::NoSuchEntry(s, e)) => assert_eq!((s, e), (SegmentId(segment), EntryId(entry))),
        other => panic!("{what}: {segment}/{entry} should be NoSuchEntry, got {other:?}"),
    }
}

fn read_corrupt(bookie: &Bookie, segment: u64, entry: u64, what: &str) {
    match bookie.read_entry(SegmentId(segment), EntryId(entry)).wait() {
        Err(Error::Corrupt { segment: s, entry: e, .. }) => {
            assert_eq!((s, e), (SegmentId(segment), EntryId(entry)));
        }
        other => panic!("{what}: {segment}/{entry} should be Corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The torn-tail journal: N single-entry batches, then one two-sector batch of three entries.
// ---------------------------------------------------------------------------------------------

const SEG: u64 = 1;
/// Lengths of the acknowledged entries 0..N of segment 1, each in its own batch.
const EARLY: [usize; 5] = [0, 1, 100, 1000, 3900];
const N: u64 = EARLY.len() as u64;
/// Lengths of entries N..N+3 of segment 1, all in the last batch: 40 + 3 * 40 + 7900 = 8060
/// bytes of records, then a padding record (header at 8060, 92 zero bytes) to 8192.
const LAST: [usize; 3] = [1500, 2500, 3900];

fn entry_len(entry: u64) -> usize {
    if entry < N { EARLY[entry as usize] } else { LAST[(entry - N) as usize] }
}

/// Writes the torn-tail journal with a bookie, returns the bytes of journal file 0.
fn write_tail_journal(dir: &Path, backend: Backend) -> Vec<u8> {
    let bookie = Bookie::open(small_config(dir, backend)).unwrap();
    for e in 0..N {
        bookie.add_entry(add(SEG, e, entry_len(e))).wait().unwrap();
    }
    let last = (0..LAST.len() as u64).map(|i| add(SEG, N + i, entry_len(N + i))).collect();
    bookie.add_entries(last).wait().unwrap();
    bookie.close();
    fs::read(journal_path(dir, 0, 0)).unwrap()
}

/// Where the last batch is, and where the padding's (CRC-free, R2) zero payload starts in it.
struct Tail {
    offset: usize,
    len: usize,
    padding_payload: usize,
}

fn check_tail_layout(file: &[u8]) -> Tail {
    let batches = parse_batches(file);
    assert_eq!(batches.len() as u64, N + 1, "one batch per early entry, then one");
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.seq, i as u64);
        assert_eq!(b.offset, SECTOR * (i + 1), "early batches are one sector each");
    }
    let last = batches.last().unwrap();
    assert_eq!(last.len, 2 * SECTOR, "the last batch spans two sectors");
    let kinds: Vec<u8> = last.records.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [KIND_ENTRY, KIND_ENTRY, KIND_ENTRY, KIND_PADDING]);
    let ids: Vec<(u64, u64)> = last.records[..3].iter().map(|r| (r.segment, r.entry)).collect();
    assert_eq!(ids, [(SEG, N), (SEG, N + 1), (SEG, N + 2)]);
    let padding = &last.records[3];
    assert_eq!(padding.at - last.offset, 8060);
    Tail { offset: last.offset, len: last.len, padding_payload: padding.at + HEADER - last.offset }
}

/// What replay must make of the last batch after it was changed to `modified`:
/// (intact: its records are valid, torn: it is cut off and reported).
fn classify(pristine: &[u8], modified: &[u8], tail: &Tail, epoch: u64) -> (bool, bool) {
    // Every byte before the padding's payload is covered by a CRC; the padding's payload is not
    // (record.rs, R2), so a change confined to it leaves the batch valid.
    let intact = modified[..tail.padding_payload] == pristine[..tail.padding_payload];
    let h = &modified[..HEADER];
    // An all-zero header is "never written"; a well-formed header of another epoch is a stale
    // record of a recycled file. Both are an end of the journal, not damage.
    let zero = h.iter().all(|b| *b == 0);
    let well_formed = (1..=6).contains(&h[8]) && h[10] == 0 && h[11] == 0;
    let stale = well_formed && u32_at(h, 12) != epoch as u32;
    (intact, !intact && !zero && !stale)
}

#[derive(Clone, Copy, Debug)]
enum Tear {
    /// Bytes [k, end) of the batch are zero.
    Zero,
    /// Bytes [k, end) of the batch are random.
    Garbage,
}

fn tear(pristine: &[u8], k: usize, how: Tear, rng: &mut Rng) -> Vec<u8> {
    let mut m = pristine.to_vec();
    match how {
        Tear::Zero => m[k..].fill(0),
        Tear::Garbage => {
            let g = rng.bytes(m.len() - k);
            m[k..].copy_from_slice(&g);
        }
    }
    m
}

/// Replay's verdict on every byte offset of the torn batch, through the engine's `replay` (what
/// `Bookie::open` runs per shard) rather than a full bookie, so that all 8193 offsets (zeroed,
/// plus garbage at a sample) fit in a few seconds. For each: earlier entries are indexed where
/// their exact bytes are, the last batch is all there or all gone, a torn tail is reported and
/// zeroed on disk exactly when the batch was damaged, and replaying again is clean.
#[test]
fn torn_tail_every_byte_offset_replay() {
    // Both backends must write byte-identical journals; replay is the same code for both.
    let dirs: Vec<_> = BACKENDS.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let files: Vec<Vec<u8>> =
        BACKENDS.iter().zip(&dirs).map(|(b, d)| write_tail_journal(d.path(), *b)).collect();
    assert!(files[0] == files[1], "the two backends wrote different journal bytes");
    let file = &files[0];
    let tail = check_tail_layout(file);
    let epoch = file_epoch(file);
    let pristine = file[tail.offset..tail.offset + tail.len].to_vec();

    // Replay a copy of journal file 0 alone (the spare file 1 holds nothing), in memory where
    // there is a tmpfs: replay's decisions do not depend on the medium, and 16k replays with a
    // flush each would take a minute on a disk.
    let work = scratch_dir();
    let shard_dir = ShardDir::open(work.path(), ShardId(0)).unwrap();
    let direct_io = dlog_engine::io::direct::probe(&shard_dir.path).unwrap();
    let path = shard_dir.journal_path(FileSeq(0));
    // Past the torn batch a fresh journal file is zeroes: copy it as a sparse file of the same
    // length and content, which replays twice as fast.
    let written = tail.offset + tail.len;
    assert!(file[written..].iter().all(|b| *b == 0));
    fs::write(&path, &file[..written]).unwrap();
    let handle = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    handle.set_len(file.len() as u64).unwrap();
    let mut rng = Rng(0x7041_2a11);

    let entries: Vec<u64> = (0..N + LAST.len() as u64).collect();
    let check_index = |start: &dlog_engine::shard::core::CoreStart, intact: bool, what: &str| {
        for &e in &entries {
            let location = start.index.get(SegmentId(SEG), EntryId(e));
            if e >= N && !intact {
                assert!(location.is_none(), "{what}: entry {e} of the torn batch is still indexed");
                continue;
            }
            let location = location.unwrap_or_else(|| panic!("{what}: entry {e} lost"));
            assert_eq!(location.file, FileSeq(0));
            assert_eq!(location.len as usize, entry_len(e));
            let mut bytes = vec![0u8; HEADER + entry_len(e)];
            handle.read_exact_at(&mut bytes, location.offset).unwrap();
            let (h, got) =
                record::decode(&bytes, epoch).unwrap_or_else(|err| panic!("{what}: entry {e}: {err:?}"));
            assert_eq!((h.kind, h.segment_id, h.entry_id), (RecordKind::Entry, SEG, e), "{what}");
            assert!(got == &payload(SEG, e, entry_len(e))[..], "{what}: entry {e} bytes differ");
        }
    };

    let mut replayed_again = std::collections::HashMap::new();
    let mut torn_count = 0;
    let mut intact_count = 0;
    for k in 0..=tail.len {
        let mut tears = vec![Tear::Zero];
        if k < tail.len && (k % 16 == 0 || k < 2 * HEADER) {
            tears.push(Tear::Garbage);
        }
        for how in tears {
            let what = format!("offset {k} {how:?}");
            let modified = tear(&pristine, k, how, &mut rng);
            let (intact, torn) = classify(&pristine, &modified, &tail, epoch);
            handle.write_all_at(&modified, tail.offset as u64).unwrap();
            // Torn tails are cut under either policy; alternate them.
            let policy = if k % 2 == 0 { JournalRecovery::Strict } else { JournalRecovery::TruncateTornTail };
            let (start, report) =
                replay(&shard_dir, policy, direct_io, false).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
            assert_eq!(report.batches, N + u64::from(intact), "{what}");
            assert_eq!(report.entries, N + 3 * u64::from(intact), "{what}");
            assert_eq!(start.batch_seq_next, N + u64::from(intact), "{what}");
            match (&report.torn_tail, torn) {
                (Some(t), true) => {
                    assert_eq!(t.file, path, "{what}");
                    assert_eq!(t.offset, tail.offset as u64, "{what}");
                    assert!(
                        t.bytes > 0 && t.bytes % SECTOR as u64 == 0 && t.bytes <= tail.len as u64,
                        "{what}: {t:?}"
                    );
                    let mut cut = vec![1u8; t.bytes as usize];
                    handle.read_exact_at(&mut cut, t.offset).unwrap();
                    assert!(cut.iter().all(|b| *b == 0), "{what}: the cut region is not zeroed");
                    torn_count += 1;
                }
                (None, false) => {
                    let mut now = vec![0u8; tail.len];
                    handle.read_exact_at(&mut now, tail.offset as u64).unwrap();
                    assert!(now == modified, "{what}: replay changed a batch it did not cut");
                }
                (got, _) => panic!("{what}: torn tail {got:?}, expected torn = {torn}"),
            }
            intact_count += usize::from(intact);
            check_index(&start, intact, &what);

            // Replaying again finds nothing to cut and the same entries. Replay is a function of
            // the bytes on disk; many cases leave the same bytes (every cut of a tear in the first
            // sector), so each distinct outcome is replayed again once.
            let mut after = vec![0u8; tail.len];
            handle.read_exact_at(&mut after, tail.offset as u64).unwrap();
            let key = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                after.hash(&mut h);
                h.finish()
            };
            let outcome = (report.batches, report.entries, intact);
            if let Some(seen) = replayed_again.insert(key, outcome) {
                assert_eq!(seen, outcome, "{what}: the same bytes replayed differently");
                continue;
            }
            let (start2, report2) =
                replay(&shard_dir, policy, direct_io, false).unwrap_or_else(|e| panic!("{what}, again: {e}"));
            assert_clean(&report2, &format!("{what}, again"));
            assert_eq!((report2.batches, report2.entries), (report.batches, report.entries), "{what}, again");
            check_index(&start2, intact, &format!("{what}, again"));
        }
    }
    // The cases above include both outcomes in quantity (a sanity check of the setup itself).
    assert!(torn_count > 8000, "{torn_count} torn cases");
    assert!(intact_count > 92, "{intact_count} intact cases");
    assert!(replayed_again.len() > 4000, "{} distinct outcomes", replayed_again.len());
}

/// Offsets of the torn batch that get the full treatment through a bookie: the fields of the
/// Batch record, both sides of every record header and of the sector boundary, the padding, the
/// last byte, the end (no tear), and every 512th byte.
fn sampled_offsets(file: &[u8], tail: &Tail) -> Vec<usize> {
    let mut ks: Vec<usize> = vec![0, 1, 4, 8, 9, 12, 16, 24, 32, 39];
    let last = parse_batches(file).pop().unwrap();
    for r in &last.records {
        let at = r.at - tail.offset;
        ks.extend([at - 1, at, at + 1, at + HEADER - 1, at + HEADER]);
    }
    ks.extend([SECTOR - 1, SECTOR, SECTOR + 1, tail.len - 1, tail.len]);
    ks.extend((0..tail.len).step_by(512));
    ks.sort_unstable();
    ks.dedup();
    ks.retain(|k| *k <= tail.len);
    ks
}

/// Torn tails through a bookie at sampled offsets, on both backends: reads answer exact bytes or
/// `NoSuchEntry`, new adds after the cut work, and a reopen afterwards is clean and still has
/// everything (a cut tail must not later look like corruption once a newer file holds batches).
#[test]
fn torn_tail_sampled_offsets_bookie() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let file = write_tail_journal(dir.path(), backend);
        let tail = check_tail_layout(&file);
        let epoch = file_epoch(&file);
        let pristine = file[tail.offset..tail.offset + tail.len].to_vec();
        let snapshot = Snapshot::take(dir.path());
        let path = journal_path(dir.path(), 0, 0);
        let mut rng = Rng(0x5eed_0000 + backend as u64);
        for (i, k) in sampled_offsets(&file, &tail).into_iter().enumerate() {
            let how = if i % 3 == 2 && k < tail.len { Tear::Garbage } else { Tear::Zero };
            let policy = if i % 2 == 0 { JournalRecovery::Strict } else { JournalRecovery::TruncateTornTail };
            let what = format!("{backend:?} offset {k} {how:?} {policy:?}");
            snapshot.restore();
            let modified = tear(&pristine, k, how, &mut rng);
            let (intact, torn) = classify(&pristine, &modified, &tail, epoch);
            write_at(&path, tail.offset, &modified);
            let config = with_policy(small_config(dir.path(), backend), policy);

            let bookie = Bookie::open(config.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let report = only_report(&bookie);
            assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
            assert_eq!(report.entries, N + 3 * u64::from(intact), "{what}");
            match &report.torn_tail {
                Some(t) => {
                    assert!(torn, "{what}: unexpected torn tail {t:?}");
                    assert_eq!((t.file.clone(), t.offset), (path.clone(), tail.offset as u64), "{what}");
                }
                None => assert!(!torn, "{what}: torn tail not reported"),
            }
            for e in 0..N {
                read_exact(&bookie, SEG, e, entry_len(e), &what);
            }
            for e in N..N + LAST.len() as u64 {
                if intact {
                    read_exact(&bookie, SEG, e, entry_len(e), &what);
                } else {
                    read_absent(&bookie, SEG, e, &what);
                }
            }
            // New work after the cut: the writer's retry of the lost entries, a new segment.
            let retried = N + LAST.len() as u64;
            let mut adds: Vec<_> = (0..3).map(|e| add(2, e, 700 + e as usize)).collect();
            if !intact {
                adds.extend((N..retried).map(|e| add(SEG, e, entry_len(e))));
            }
            adds.push(add(SEG, retried, 33));
            bookie.add_entries(adds).wait().unwrap();
            bookie.close();

            let bookie = Bookie::open(config).unwrap_or_else(|e| panic!("{what}, reopened: {e}"));
            assert_clean(only_report(&bookie), &format!("{what}, reopened"));
            for e in 0..retried {
                read_exact(&bookie, SEG, e, entry_len(e), &what);
            }
            read_exact(&bookie, SEG, retried, 33, &what);
            for e in 0..3 {
                read_exact(&bookie, 2, e, 700 + e as usize, &what);
            }
            read_absent(&bookie, SEG, retried + 1, &what);
            bookie.close();
        }
    }
}

/// Random bytes after the last batch (at its end, a little after it, a sector after it): the
/// bookie opens, every entry is intact, damage is never reported, a torn tail only where the
/// garbage sits where the next batch would start; after new adds a reopen is clean.
#[test]
fn garbage_after_tail() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let file = write_tail_journal(dir.path(), backend);
        let tail = check_tail_layout(&file);
        let epoch = file_epoch(&file);
        let end = tail.offset + tail.len;
        let snapshot = Snapshot::take(dir.path());
        let path = journal_path(dir.path(), 0, 0);
        let mut rng = Rng(0x000a_11ce + backend as u64);
        let cases = [(0usize, 3 * SECTOR), (100, 2 * SECTOR), (SECTOR, 3 * SECTOR), (17, 40)];
        for (i, (skip, len)) in cases.into_iter().enumerate() {
            for policy in [JournalRecovery::Strict, JournalRecovery::TruncateTornTail] {
                let what = format!("{backend:?} garbage at end+{skip} ({len} bytes) {policy:?}");
                snapshot.restore();
                let garbage = rng.bytes(len);
                write_at(&path, end + skip, &garbage);
                let mut next_header = vec![0u8; HEADER];
                for (j, b) in next_header.iter_mut().enumerate() {
                    if (skip..skip + len).contains(&j) {
                        *b = garbage[j - skip];
                    }
                }
                let zero = next_header.iter().all(|b| *b == 0);
                let stale = (1..=6).contains(&next_header[8])
                    && next_header[10] == 0
                    && next_header[11] == 0
                    && u32_at(&next_header, 12) != epoch as u32;
                let torn = !zero && !stale;
                let config = with_policy(small_config(dir.path(), backend), policy);
                let bookie = Bookie::open(config.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
                let report = only_report(&bookie);
                assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
                assert_eq!(report.entries, N + 3, "{what}");
                match &report.torn_tail {
                    Some(t) => {
                        assert!(torn, "{what}: unexpected torn tail {t:?}");
                        assert_eq!((t.file.clone(), t.offset), (path.clone(), end as u64), "{what}");
                    }
                    None => assert!(!torn, "{what}: torn tail not reported"),
                }
                for e in 0..N + 3 {
                    read_exact(&bookie, SEG, e, entry_len(e), &what);
                }
                bookie.add_entry(add(SEG, N + 3, 10 + i)).wait().unwrap();
                bookie.add_entries((0..4).map(|e| add(3, e, 2000)).collect()).wait().unwrap();
                bookie.close();
                let bookie = Bookie::open(config).unwrap_or_else(|e| panic!("{what}, reopened: {e}"));
                assert_clean(only_report(&bookie), &format!("{what}, reopened"));
                assert_eq!(only_report(&bookie).entries, N + 3 + 1 + 4, "{what}, reopened");
                for e in 0..N + 3 {
                    read_exact(&bookie, SEG, e, entry_len(e), &what);
                }
                read_exact(&bookie, SEG, N + 3, 10 + i, &what);
                for e in 0..4 {
                    read_exact(&bookie, 3, e, 2000, &what);
                }
                bookie.close();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Damage to acknowledged batches (writes_in_flight_max = 2).
// ---------------------------------------------------------------------------------------------

const WINDOW: usize = 2;
const BATCHES: u64 = 12;

fn window_config(dir: &Path, backend: Backend, policy: JournalRecovery) -> BookieConfig {
    let mut config = small_config(dir, backend);
    config.writes_in_flight_max = WINDOW;
    config.journal_recovery = policy;
    config
}

fn window_len(entry: u64) -> usize {
    100 + 300 * entry as usize
}

/// Writes entries 0..12 of segment 1, each acknowledged before the next (one batch each).
/// Returns journal file 0's batches.
fn write_window_journal(dir: &Path, backend: Backend) -> Vec<BatchInfo> {
    let bookie = Bookie::open(window_config(dir, backend, JournalRecovery::Strict)).unwrap();
    for e in 0..BATCHES {
        bookie.add_entry(add(SEG, e, window_len(e))).wait().unwrap();
    }
    bookie.close();
    let batches = parse_batches(&fs::read(journal_path(dir, 0, 0)).unwrap());
    assert_eq!(batches.len() as u64, BATCHES);
    for (i, b) in batches.iter().enumerate() {
        assert_eq!((b.seq, b.len), (i as u64, SECTOR));
        let entries: Vec<&Rec> = b.records.iter().filter(|r| r.kind == KIND_ENTRY).collect();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].segment, entries[0].entry), (SEG, i as u64));
    }
    batches
}

/// Flips one byte in the middle of the entry payload of `batch`.
fn flip_entry_byte(dir: &Path, batch: &BatchInfo) {
    let entry = batch.records.iter().find(|r| r.kind == KIND_ENTRY).unwrap();
    let at = entry.at + HEADER + entry.payload_len / 2;
    let path = journal_path(dir, 0, 0);
    let mut byte = [0u8; 1];
    fs::File::open(&path).unwrap().read_exact_at(&mut byte, at as u64).unwrap();
    write_at(&path, at, &[byte[0] ^ 0x5a]);
}

fn expect_corrupt(result: Result<Bookie, OpenError>, file: &Path, offset: usize, what: &str) {
    match result {
        Err(OpenError::JournalCorrupt { file: f, offset: o, reason }) => {
            assert_eq!(f, file, "{what}: {reason}");
            assert_eq!(o, offset as u64, "{what}: {reason}");
        }
        Err(e) => panic!("{what}: expected JournalCorrupt, got {e}"),
        Ok(_) => panic!("{what}: a damaged journal opened under Strict"),
    }
}

/// A flipped byte in an entry of batch 3 of 12 (valid batches follow it far beyond the
/// in-flight window): Strict refuses naming file and batch offset, changing nothing;
/// TruncateTornTail opens, reports the damage, serves every other entry, and answers `Corrupt`
/// (never `NoSuchEntry`) for the damaged entry and for any missing entry while damage exists.
#[test]
fn corrupt_middle_record() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let batches = write_window_journal(dir.path(), backend);
        let damaged = &batches[3];
        flip_entry_byte(dir.path(), damaged);
        let path = journal_path(dir.path(), 0, 0);
        let before = Snapshot::take(dir.path());

        let what = format!("{backend:?} Strict");
        expect_corrupt(
            Bookie::open(window_config(dir.path(), backend, JournalRecovery::Strict)),
            &path,
            damaged.offset,
            &what,
        );
        for (p, bytes) in &before.files {
            assert!(fs::read(p).unwrap() == *bytes, "{what}: a refused open changed {}", p.display());
        }
        assert_eq!(
            shard_dir_names(dir.path(), 0),
            ["journal-0000000000000000.log", "journal-0000000000000001.log"]
        );

        let what = format!("{backend:?} TruncateTornTail");
        let config = window_config(dir.path(), backend, JournalRecovery::TruncateTornTail);
        let check = |bookie: &Bookie, extra: bool| {
            let report = only_report(bookie);
            assert!(report.torn_tail.is_none(), "{what}: {:?}", report.torn_tail);
            assert_eq!(report.damage.len(), 1, "{what}: {:?}", report.damage);
            let named = format!("{}@{}", path.display(), damaged.offset);
            assert!(
                report.damage[0].starts_with(&named),
                "{what}: {:?} does not name {named}",
                report.damage
            );
            assert_eq!(report.entries, BATCHES - 1 + if extra { 2 } else { 0 }, "{what}");
            for e in (0..BATCHES).filter(|e| *e != 3) {
                read_exact(bookie, SEG, e, window_len(e), &what);
            }
            read_corrupt(bookie, SEG, 3, &what);
            read_corrupt(bookie, 77, 0, &what);
            if extra {
                read_exact(bookie, SEG, BATCHES, 5, &what);
                read_exact(bookie, 2, 0, 6, &what);
                read_corrupt(bookie, SEG, BATCHES + 1, &what);
            } else {
                read_corrupt(bookie, SEG, BATCHES, &what);
            }
        };
        let bookie = Bookie::open(config.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        check(&bookie, false);
        bookie.add_entry(add(SEG, BATCHES, 5)).wait().unwrap();
        bookie.add_entry(add(2, 0, 6)).wait().unwrap();
        bookie.close();
        // The damage is skipped, not cut: it is reported on every open, and Strict still refuses.
        let bookie = Bookie::open(config).unwrap_or_else(|e| panic!("{what}, reopened: {e}"));
        check(&bookie, true);
        bookie.close();
        expect_corrupt(
            Bookie::open(window_config(dir.path(), backend, JournalRecovery::Strict)),
            &path,
            damaged.offset,
            &format!("{backend:?} Strict after TruncateTornTail"),
        );
    }
}

/// The edge of the in-flight window (2): damage to the last batch, or to the one before it
/// (followed only by a batch inside the window), is a torn tail cut together with what follows
/// it; damage to the batch before that (a batch 2 beyond it is valid) is corruption.
#[test]
fn damage_at_window_edge() {
    for backend in BACKENDS {
        for (damaged, corrupt) in [(11usize, false), (10, false), (9, true)] {
            let dir = tempfile::tempdir().unwrap();
            let batches = write_window_journal(dir.path(), backend);
            flip_entry_byte(dir.path(), &batches[damaged]);
            let path = journal_path(dir.path(), 0, 0);
            let what = format!("{backend:?} damaged batch {damaged}");
            let strict = Bookie::open(window_config(dir.path(), backend, JournalRecovery::Strict));
            if corrupt {
                expect_corrupt(strict, &path, batches[damaged].offset, &what);
                let config = window_config(dir.path(), backend, JournalRecovery::TruncateTornTail);
                let bookie = Bookie::open(config).unwrap_or_else(|e| panic!("{what}: {e}"));
                let report = only_report(&bookie);
                assert_eq!(report.damage.len(), 1, "{what}: {:?}", report.damage);
                assert!(report.torn_tail.is_none(), "{what}");
                for e in (0..BATCHES).filter(|e| *e != damaged as u64) {
                    read_exact(&bookie, SEG, e, window_len(e), &what);
                }
                read_corrupt(&bookie, SEG, damaged as u64, &what);
                continue;
            }
            let bookie = strict.unwrap_or_else(|e| panic!("{what}: {e}"));
            let report = only_report(&bookie);
            assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
            let cut = report.torn_tail.clone().unwrap_or_else(|| panic!("{what}: no torn tail"));
            assert_eq!(cut.file, path, "{what}");
            assert_eq!(cut.offset, batches[damaged].offset as u64, "{what}");
            // Everything from the damaged batch to the end of the last valid one is cut.
            assert_eq!(cut.bytes, (SECTOR * (BATCHES as usize - damaged)) as u64, "{what}");
            assert_eq!(report.entries, damaged as u64, "{what}");
            for e in 0..damaged as u64 {
                read_exact(&bookie, SEG, e, window_len(e), &what);
            }
            for e in damaged as u64..BATCHES {
                read_absent(&bookie, SEG, e, &what);
            }
            bookie.add_entry(add(SEG, damaged as u64, 9)).wait().unwrap();
            bookie.close();
            let config = window_config(dir.path(), backend, JournalRecovery::Strict);
            let bookie = Bookie::open(config).unwrap_or_else(|e| panic!("{what}, reopened: {e}"));
            assert_clean(only_report(&bookie), &format!("{what}, reopened"));
            read_exact(&bookie, SEG, damaged as u64, 9, &what);
            read_absent(&bookie, SEG, damaged as u64 + 1, &what);
            bookie.close();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

/// Entries `0..count` added one at a time, each acknowledged before the next (one single-sector
/// batch per entry), so they fill files 0 and 1 and go on in file 2. Returns the Strict config
/// and `count`.
fn write_rotated_journal(dir: &Path, backend: Backend, writes_in_flight_max: usize) -> (BookieConfig, u64) {
    let mut config = small_config(dir, backend);
    config.writes_in_flight_max = writes_in_flight_max;
    config.journal_recovery = JournalRecovery::Strict;
    let count = 2 * 258 + 9;
    let bookie = Bookie::open(config.clone()).unwrap();
    for e in 0..count {
        bookie.add_entry(add(SEG, e, OLD_LEN)).wait().unwrap();
    }
    bookie.close();
    (config, count)
}

/// Entries added one at a time, each acknowledged before the next, fill files 0 and 1 (one
/// single-sector batch per entry) and go on in file 2. Batch sequence numbers run on without a
/// gap across the rotations, and a reopen (Strict) is clean and reads every entry back.
#[test]
fn rotation_keeps_batch_sequence_and_every_entry() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let (config, count) = write_rotated_journal(dir.path(), backend, 4);
        let what = format!("{backend:?}");
        let mut seqs = Vec::new();
        for file in 0..3 {
            let batches = parse_batches(&fs::read(journal_path(dir.path(), 0, file)).unwrap());
            assert!(!batches.is_empty(), "{what}: file {file} holds nothing");
            seqs.extend(batches.iter().map(|b| b.seq));
        }
        assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "{what}: batch sequence numbers");
        for round in 0..2 {
            let what = format!("{what}, reopen {round}");
            let bookie = Bookie::open(config.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let report = only_report(&bookie);
            assert_clean(report, &what);
            assert_eq!((report.entries, report.batches), (count + round, count + round), "{what}");
            for e in 0..count {
                read_exact(&bookie, SEG, e, OLD_LEN, &what);
            }
            if round == 1 {
                read_exact(&bookie, SEG, count, 1, &what);
            }
            bookie.add_entry(add(SEG, count + round, 1)).wait().unwrap();
            bookie.close();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recycled files
// ---------------------------------------------------------------------------------------------

const OLD_LEN: usize = 3000;
/// Entries of segment 1 written before the checkpoint: 268 requests of two, one two-sector batch
/// each (129 fill a file: sectors 1-2, 3-4, ..., 257-258), so files 0 and 1 fill and file 2
/// holds the last 10 batches.
const A1: u64 = 2 * 268;
/// Entries of segment 1 written after the checkpoint (single-sector batches, file 2).
const A2: std::ops::Range<u64> = A1..A1 + 20;
/// Segment 1's ids written again (other bytes) into the recycled file.
const REDONE: u64 = 10;
const REDONE_LEN: usize = 777;

/// Files 0 and 1 filled with two-sector batches, checkpointed away (recycled), 20 entries after
/// the checkpoint, reopened: returns the open bookie, whose next file (4) reuses file 0.
fn recycled_setup(dir: &Path, backend: Backend) -> (BookieConfig, Bookie) {
    let mut config = small_config(dir, backend);
    config.writes_in_flight_max = 4;
    config.journal_files_recycled_max = 2;
    config.storage_mode = dlog_engine::StorageMode::JournalOnly;
    let what = format!("{backend:?} setup");
    let shard = ShardId(0);
    let bookie = Bookie::open(config.clone()).unwrap();
    for i in 0..A1 / 2 {
        let pair = vec![add(SEG, 2 * i, OLD_LEN), add(SEG, 2 * i + 1, OLD_LEN)];
        bookie.add_entries(pair).wait().unwrap();
    }
    let mark = bookie.journal_position(shard).wait().unwrap();
    assert_eq!(mark.file, FileSeq(2), "{what}: phase A1 should end in file 2");
    for seq in 0..2 {
        let batches = parse_batches(&fs::read(journal_path(dir, 0, seq)).unwrap());
        assert_eq!(batches.len(), 129, "{what}: file {seq}");
        assert!(batches.iter().all(|b| b.len == 2 * SECTOR), "{what}: file {seq}");
    }
    bookie.checkpoint(shard, mark).wait().unwrap();
    assert_eq!(
        shard_dir_names(dir, 0),
        [
            "checkpoint",
            "journal-0000000000000002.log",
            "journal-0000000000000003.log",
            "recycle-0000000000000000.log",
            "recycle-0000000000000001.log",
        ],
        "{what}"
    );
    // The running bookie forgot the reclaimed files' entries.
    read_absent(&bookie, SEG, 0, &what);
    for e in A2 {
        bookie.add_entry(add(SEG, e, OLD_LEN)).wait().unwrap();
    }
    bookie.close();

    let bookie = Bookie::open(config.clone()).unwrap();
    let report = only_report(&bookie);
    assert_clean(report, &what);
    assert_eq!(report.entries, 20, "{what}: only entries after the checkpoint replay");
    for e in (0..A1).step_by(7) {
        read_absent(&bookie, SEG, e, &what);
    }
    for e in A2 {
        read_exact(&bookie, SEG, e, OLD_LEN, &what);
    }
    (config, bookie)
}

/// Writes `count` single-sector batches into the bookie's current file: segment 1's ids
/// 0..REDONE again with other bytes, then segment 2's ids from 0.
fn write_new_use(bookie: &Bookie, count: u64) {
    for i in 0..count {
        let a = if i < REDONE { add(SEG, i, REDONE_LEN) } else { add(2, i - REDONE, OLD_LEN) };
        bookie.add_entry(a).wait().unwrap();
    }
}

fn check_new_use(bookie: &Bookie, count: u64, big: Option<u64>, what: &str) {
    for e in 0..REDONE {
        read_exact(bookie, SEG, e, REDONE_LEN, what);
    }
    for e in (REDONE..A1).step_by(7) {
        read_absent(bookie, SEG, e, what);
    }
    for e in A2 {
        read_exact(bookie, SEG, e, OLD_LEN, what);
    }
    for e in 0..count - REDONE {
        read_exact(bookie, 2, e, OLD_LEN, what);
    }
    let next = match big {
        Some(e) => {
            read_exact(bookie, 2, e, 4000, what);
            e + 1
        }
        None => count - REDONE,
    };
    read_absent(bookie, 2, next, what);
}

/// Recycled file 0 becomes file 4 and is written until full (257 single-sector batches, to
/// sector 258, where an old two-sector batch's second half remains), then the shard rotates to
/// file 5 (recycled file 1) for an entry that does not fit. Replay must read file 4 up to its
/// last new batch and stop there: the old use's bytes behind it are neither entries nor damage.
/// Entries before the checkpoint stay gone, entries after it read back exactly, and segment 1's
/// re-added ids keep their new bytes although stale records of the same ids sit behind them.
#[test]
fn recycled_file_filled_and_rotated_replays_only_its_new_use() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let what = format!("{backend:?}");
        let (config, bookie) = recycled_setup(dir.path(), backend);
        write_new_use(&bookie, 257);
        // 4000 bytes need 8216 with the closing slack; two sectors remain in file 4.
        let big = 257 - REDONE;
        bookie.add_entry(add(2, big, 4000)).wait().unwrap();
        bookie.close();

        let names = shard_dir_names(dir.path(), 0);
        assert!(
            !names.iter().any(|n| n.starts_with("recycle-")),
            "{what}: recycled files not reused: {names:?}"
        );
        let file4 = fs::read(journal_path(dir.path(), 0, 4)).unwrap();
        let new = parse_batches(&file4);
        assert_eq!(new.len(), 257, "{what}");
        assert!(new.iter().all(|b| b.len == SECTOR), "{what}");
        let end = SECTOR * 258;
        assert_eq!(new.last().map(|b| b.offset + b.len), Some(end), "{what}");
        // The setup is only a test if file 4 holds file 0's bytes behind its new batches: the
        // second half of an old two-sector batch right at the end, not a header at all.
        assert!(
            matches!(
                record::decode(&file4[end..end + HEADER], 4),
                Err(record::DecodeError::Malformed | record::DecodeError::Checksum)
            ),
            "{what}: file 4 does not hold old bytes at its end"
        );
        let file5 = fs::read(journal_path(dir.path(), 0, 5)).unwrap();
        let new5 = parse_batches(&file5);
        assert_eq!(
            new5.iter().map(|b| (b.offset, b.len)).collect::<Vec<_>>(),
            [(SECTOR, 2 * SECTOR)],
            "{what}"
        );
        assert!(valid_batch_headers(&file5, 1) > 100, "{what}: file 5 was not a recycled file 1");
        assert_eq!(
            new5[0].seq,
            new.last().unwrap().seq + 1,
            "{what}: batch sequence numbers skip at rotation"
        );

        for policy in [JournalRecovery::Strict, JournalRecovery::TruncateTornTail, JournalRecovery::Strict] {
            let what = format!("{what}, reopened {policy:?}");
            let bookie =
                Bookie::open(with_policy(config.clone(), policy)).unwrap_or_else(|e| panic!("{what}: {e}"));
            let report = only_report(&bookie);
            assert_clean(report, &what);
            assert_eq!(report.entries, 20 + 257 + 1, "{what}");
            check_new_use(&bookie, 257, Some(big), &what);
            bookie.close();
        }
    }
}

/// Recycled file 0 becomes file 4 and holds 41 single-sector batches when the bookie closes.
/// A clean stop zeroes the sector after them, so the next open reports nothing at all. After a
/// crash, right after them would lie the second half of one of file 0's two-sector batches
/// (the test puts such a sector back): reopening must report no damage and replay exactly the
/// new entries; no stale entry reappears. A torn tail may be reported there (replay cannot tell
/// old bytes from a torn write of a batch header); if it is, it cuts exactly that sector and
/// nothing else, and the next reopen is clean.
#[test]
fn recycled_file_partly_used_replays_only_its_new_use() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let what = format!("{backend:?}");
        let (config, bookie) = recycled_setup(dir.path(), backend);
        write_new_use(&bookie, 41);
        bookie.close();
        let path4 = journal_path(dir.path(), 0, 4);
        let file4 = fs::read(&path4).unwrap();
        assert_eq!(parse_batches(&file4).len(), 41, "{what}");
        let end = SECTOR * 42;
        assert!(file4[end..end + SECTOR].iter().all(|b| *b == 0), "{what}: a clean stop marks the end");
        let stale = &file4[end + 2 * SECTOR..end + 3 * SECTOR];
        assert!(stale.iter().any(|b| *b != 0), "{what}: file 4 was not recycled");
        {
            let bookie = Bookie::open(config.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let report = only_report(&bookie);
            assert_clean(report, &format!("{what}, after a clean stop"));
            assert_eq!(report.entries, 20 + 41, "{what}");
            bookie.close();
        }
        // As a crash would leave it: the earlier use's bytes right behind the new batches (the
        // second half of one of its two-sector batches).
        write_at(&path4, end, stale);
        for round in 0..2 {
            let what = format!("{what}, reopen {round}");
            let bookie = Bookie::open(config.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let report = only_report(&bookie);
            assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
            if let Some(t) = &report.torn_tail {
                assert_eq!(round, 0, "{what}: a torn tail again: {t:?}");
                assert_eq!((&t.file, t.offset, t.bytes), (&path4, end as u64, SECTOR as u64), "{what}");
            }
            assert_eq!(report.entries, 20 + 41, "{what}");
            check_new_use(&bookie, 41, None, &what);
            bookie.close();
        }
    }
}

/// Damage to the last batch of a file the writer rotated away from: nothing valid follows it in
/// that file, so only the next file's first batch number shows that an acknowledged batch is
/// missing. Strict refuses, naming the next file's first batch; TruncateTornTail reports it,
/// serves everything else and answers `Corrupt` for the lost entry.
#[test]
fn damage_to_last_batch_before_rotation() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let (config, count) = write_rotated_journal(dir.path(), backend, 1);
        let what = format!("{backend:?}");
        let first = parse_batches(&fs::read(journal_path(dir.path(), 0, 0)).unwrap());
        let last = first.last().unwrap();
        let lost = last.records.iter().find(|r| r.kind == KIND_ENTRY).unwrap().entry;
        flip_entry_byte(dir.path(), last);
        let next = journal_path(dir.path(), 0, 1);
        expect_corrupt(Bookie::open(config.clone()), &next, SECTOR, &what);
        let bookie = Bookie::open(with_policy(config.clone(), JournalRecovery::TruncateTornTail)).unwrap();
        let report = only_report(&bookie);
        assert_eq!(report.damage.len(), 1, "{what}: {:?}", report.damage);
        assert!(report.torn_tail.is_none(), "{what}");
        read_corrupt(&bookie, SEG, lost, &what);
        for e in (0..count).filter(|e| *e != lost) {
            read_exact(&bookie, SEG, e, OLD_LEN, &what);
        }
        bookie.close();
    }
}
