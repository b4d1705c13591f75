//! The checks behind the segment storage fuzz targets: an entry log's runs
//! (`dlog_engine::storage::run`: header, footer, array elements, entry records), the run index
//! built from the runs they accept (`storage::run_index`), and the storage manifest
//! (`storage::manifest`). Formats: docs/format.md#run and #manifest.
//!
//! Like the rest of this crate, each `check_*` function takes raw fuzz input and panics only
//! when the code under test misbehaves. What the checks hold the engine to:
//! - no decoder panics, on any bytes, at any offset an entry log is read at;
//! - what a decoder accepts obeys the format's rules, restated here (the header's sizes,
//!   RN1, the manifest's layout read by an independent parser);
//! - what a decoder accepts round-trips: every run record re-encodes to its own bytes; a run's
//!   entries re-encoded by `RunEncoder` read back to the same sections and entries, and to
//!   the input's very bytes (but for those no decoder reads) when the input's layout is the
//!   encoder's; a manifest re-encodes to the canonical form of its bytes and then decodes to
//!   itself (damage notes cut to 4096 bytes, as the encoder documents);
//! - the run index answers every lookup as a brute-force search of the footers does (RI2).
//!
//! Inputs are checked as they are, then with their checksums made valid, so mutated bytes
//! reach the checks behind the CRCs.

use std::ops::Range;

use bytes::Bytes;
use dlog_engine::constants::{RECORD_HEADER_BYTES, SECTOR_BYTES};
use dlog_engine::io::buf::AlignedBuf;
use dlog_engine::journal::record::{self, RecordHeader, RecordKind};
use dlog_engine::storage::manifest::{Manifest, ManifestRun, ManifestSegment};
use dlog_engine::storage::run::{
    self, ARRAY_ELEMENT_BYTES, RUN_BYTES_MAX, RUN_HEADER_BYTES, RUN_HEADER_PAYLOAD_BYTES, RunEncoder,
    RunHeader, SECTION_BYTES, Section,
};
use dlog_engine::storage::run_index::{Found, RunIndex, RunInfo};
use dlog_engine::{FileSeq, JournalMark, LogSeq, SegmentId};

use super::{Rng, split_u64};

/// Entries of one run by segment, then entry id: what `RunEncoder` writes a run from.
pub type RunEntries = Vec<(SegmentId, Vec<(u64, Bytes)>)>;

/// A run `read_entry_log` found: its header and footer decoded.
#[derive(Clone, Debug)]
pub struct FoundRun {
    /// Offset in the log.
    pub offset: usize,
    /// The header.
    pub header: RunHeader,
    /// The footer's sections.
    pub sections: Vec<Section>,
    /// Every entry, read through its array element; `None` when one did not decode, lies past
    /// the input, or `ENTRY_BYTES_BUDGET` ran out first.
    pub entries: Option<RunEntries>,
}

/// Bytes of entry records one pass over an input may checksum: elements may point many entries
/// into one long record, so a large input could otherwise make a case quadratic. Past it the
/// entries of the run are left unchecked (no verdict).
const ENTRY_BYTES_BUDGET: usize = 64 << 20;

/// Sections whose entries `check_run_index` looks up (four lookups each).
const INDEX_SECTIONS_MAX: usize = 64;

/// `entry_log_decode`: the first 8 bytes are the entry log's epoch (its `LogSeq`), the rest
/// its bytes. The log is read as opening storage without a manifest reads it
/// (`storage_dir::scan_log`): a run at 0, each next where the previous ends, and after bytes
/// that are not a run, the next sector boundary. At each run:
/// - `run::decode_header` never panics; a header it accepts has the documented sizes and
///   re-encodes to its 72 bytes;
/// - `run::decode_footer` (given the header's `footer_bytes` at `footer_at`, as `read_run`
///   does) never panics; its sections obey RN1 and add up to the header's counts, and the
///   footer record re-encodes from them to its own bytes;
/// - every entry is looked up through its array element (`decode_element`), checked as a
///   read checks it, and `decode_entry` accepts exactly the record of its segment and id;
///   that record re-encodes to its own bytes;
/// - a run whose entries all read back is re-encoded with `RunEncoder` (`check_reencoded`);
/// - the runs, indexed as open indexes them, answer lookups as the footers say
///   (`check_run_index`).
///
/// It checks the bytes as they are, then with each run's records' CRCs made valid
/// (`with_valid_run_checksums`).
pub fn check_entry_log_decode(data: &[u8]) {
    let (epoch, log) = split_u64(data);
    check_entry_log(epoch, log);
    let fixed = with_valid_run_checksums(epoch, log);
    if fixed != log {
        check_entry_log(epoch, &fixed);
    }
}

fn check_entry_log(epoch: u64, log: &[u8]) {
    let runs = read_entry_log(epoch, log);
    for found in &runs {
        if let Some(entries) = &found.entries {
            check_reencoded(epoch, &log[found.offset..], found, entries);
        }
    }
    check_run_index(LogSeq(epoch), &runs);
}

/// The runs of an entry log, found as `check_entry_log_decode` describes, every decoder's answer
/// checked on the way.
pub fn read_entry_log(epoch: u64, log: &[u8]) -> Vec<FoundRun> {
    let mut budget = ENTRY_BYTES_BUDGET;
    let mut runs = Vec::new();
    let mut at = 0;
    while at < log.len() {
        match read_run(epoch, &log[at..], &mut budget) {
            Some((header, sections, entries)) => {
                runs.push(FoundRun { offset: at, header, sections, entries });
                at = at.saturating_add(header.run_bytes as usize);
            }
            None => at = (at / SECTOR_BYTES + 1) * SECTOR_BYTES,
        }
    }
    runs
}

type ReadRun = (RunHeader, Vec<Section>, Option<RunEntries>);

/// The run at the start of `bytes`, if its header and footer decode (RN2).
fn read_run(epoch: u64, bytes: &[u8], budget: &mut usize) -> Option<ReadRun> {
    let header = run::decode_header(bytes, epoch).ok()?;
    check_header(epoch, bytes, &header);
    // Within the run (checked above): no overflow.
    let footer_at = header.footer_at as usize;
    let footer = bytes.get(footer_at..footer_at + header.footer_bytes as usize)?;
    let sections = run::decode_footer(footer, epoch, &header).ok()?;
    check_footer(epoch, &header, footer, &sections);
    let entries = read_entries(epoch, bytes, &header, &sections, budget);
    Some((header, sections, entries))
}

/// A header `decode_header` accepted: its sizes as docs/format.md#run requires them, and its
/// record re-encoded (with the input's flags and reserved bytes, which decode does not read).
fn check_header(epoch: u64, bytes: &[u8], h: &RunHeader) {
    let wide = u128::from;
    assert!(
        h.run_bytes.is_multiple_of(SECTOR_BYTES as u64) && h.run_bytes <= RUN_BYTES_MAX,
        "accepted a run of {} bytes",
        h.run_bytes
    );
    assert!(
        h.arrays_at >= RUN_HEADER_BYTES as u64 && h.arrays_at.is_multiple_of(8),
        "accepted arrays at {}",
        h.arrays_at
    );
    assert_eq!(
        wide(h.arrays_at) + 8 * wide(h.entry_count),
        wide(h.footer_at),
        "array does not end at the footer"
    );
    assert!(wide(h.footer_at) + wide(h.footer_bytes) <= wide(h.run_bytes), "footer past the run: {h:?}");
    assert!(h.footer_bytes >= RECORD_HEADER_BYTES as u64 && h.entry_count > 0, "accepted {h:?}");
    let mut reserved = [0u8; 8];
    reserved.copy_from_slice(&bytes[64..RUN_HEADER_BYTES]);
    let again = encode_run_header(epoch, h, bytes[9], reserved);
    assert_eq!(again[..], bytes[..RUN_HEADER_BYTES], "run header re-encoded differently");
    let canonical = encode_run_header(epoch, h, 0, [0; 8]);
    assert_eq!(run::decode_header(&canonical, epoch), Ok(*h), "an encoded run header decodes differently");
}

/// A run header record as docs/format.md#run lays it out.
fn encode_run_header(epoch: u64, h: &RunHeader, flags: u8, reserved: [u8; 8]) -> [u8; RUN_HEADER_BYTES] {
    let mut payload = [0u8; RUN_HEADER_PAYLOAD_BYTES];
    payload[0..8].copy_from_slice(&h.arrays_at.to_le_bytes());
    payload[8..16].copy_from_slice(&h.footer_at.to_le_bytes());
    payload[16..24].copy_from_slice(&h.footer_bytes.to_le_bytes());
    payload[24..32].copy_from_slice(&reserved);
    let header = RecordHeader {
        kind: RecordKind::RunHeader,
        flags,
        payload_len: RUN_HEADER_PAYLOAD_BYTES as u32,
        segment_id: h.run_bytes,
        entry_id: h.seq,
        last_add_confirmed: h.entry_count,
    };
    let mut out = [0u8; RUN_HEADER_BYTES];
    record::encode(&mut out, epoch, &header, &payload);
    out
}

/// Sections `decode_footer` accepted: RN1 and the counts, restated; the footer record holds
/// exactly them and re-encodes to its own bytes (with its flags and LAC, which decode does not
/// read). The record may end before `footer_bytes` does: decode does not insist.
fn check_footer(epoch: u64, header: &RunHeader, footer: &[u8], sections: &[Section]) {
    let mut next_index = 0u64;
    let mut record_bytes = 0u128;
    for (i, s) in sections.iter().enumerate() {
        assert!(s.count >= 1 && s.first.checked_add(s.count).is_some(), "accepted section {s:?}");
        assert!(u128::from(s.bytes) >= 40 * u128::from(s.count), "section {s:?} too short for its records");
        assert_eq!(s.array_index, next_index, "section {s:?} does not start where the one before ends");
        if let Some(p) = i.checked_sub(1).map(|p| &sections[p]) {
            assert!(
                p.segment < s.segment || (p.segment == s.segment && p.first + p.count < s.first),
                "sections out of order, overlapping or adjacent (RN1): {p:?} then {s:?}"
            );
        }
        next_index += s.count;
        record_bytes += u128::from(s.bytes);
    }
    assert_eq!(next_index, header.entry_count, "sections hold other than the header's entry count");
    assert!(
        record_bytes <= u128::from(header.arrays_at) - RUN_HEADER_BYTES as u128,
        "sections' records overrun the array"
    );
    let (h, payload) = record::decode(footer, epoch).expect("an accepted footer is a record");
    assert_eq!(payload, &section_bytes(sections)[..], "footer payload is not its sections");
    assert_eq!(
        (h.kind, h.segment_id, h.entry_id),
        (RecordKind::RunFooter, header.seq, sections.len() as u64),
        "footer record of another kind, run or count"
    );
    let mut again = vec![0u8; record::record_bytes(payload.len())];
    record::encode(&mut again, epoch, &h, payload);
    assert_eq!(again[..], footer[..again.len()], "run footer re-encoded differently");
}

fn section_bytes(sections: &[Section]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sections.len() * SECTION_BYTES);
    for s in sections {
        for v in [s.segment.0, s.first, s.count, s.array_index, s.bytes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Reads every entry of a run through its array element, as a point read does
/// (docs/format.md "Reading an entry", steps 4-6). `None` unless all read back.
fn read_entries(
    epoch: u64,
    bytes: &[u8],
    header: &RunHeader,
    sections: &[Section],
    budget: &mut usize,
) -> Option<RunEntries> {
    let mut entries: RunEntries = Vec::new();
    let mut whole = true;
    for s in sections {
        for k in 0..s.count {
            let (entry, index) = (s.first + k, s.array_index + k);
            // Before the footer, which is within `bytes`: no overflow. Elements are in order, so
            // once one is past the input so are the rest.
            let at = (header.arrays_at + index * ARRAY_ELEMENT_BYTES as u64) as usize;
            let raw: &[u8; ARRAY_ELEMENT_BYTES] = bytes.get(at..at + ARRAY_ELEMENT_BYTES)?.try_into().ok()?;
            let (offset, len) = run::decode_element(raw);
            let le = |r: Range<usize>| u32::from_le_bytes(raw[r].try_into().expect("4 bytes"));
            assert_eq!((offset, len), (u64::from(le(0..4)), le(4..8)), "array element decoded wrong");
            // Step 5: the record lies in the run's records.
            let end = offset + RECORD_HEADER_BYTES as u64 + u64::from(len);
            if offset < RUN_HEADER_BYTES as u64 || end > header.arrays_at {
                whole = false;
                continue;
            }
            let span = &bytes[offset as usize..end as usize];
            *budget = budget.checked_sub(span.len())?;
            let answer = run::decode_entry(span, epoch, s.segment, entry);
            let record = record::decode(span, epoch).ok();
            let expected = record
                .filter(|(h, _)| {
                    h.kind == RecordKind::Entry && h.segment_id == s.segment.0 && h.entry_id == entry
                })
                .map(|(_, payload)| payload);
            assert_eq!(
                answer.as_ref().ok().copied(),
                expected,
                "decode_entry of segment {} entry {entry} at {offset}: {answer:?}, the record is {:?}",
                s.segment.0,
                record.map(|(h, _)| h)
            );
            let Some((h, payload)) = record.filter(|_| answer.is_ok()) else {
                whole = false;
                continue;
            };
            let mut again = vec![0u8; record::record_bytes(payload.len())];
            record::encode(&mut again, epoch, &h, payload);
            assert_eq!(again[..], span[..again.len()], "entry record re-encoded differently");
            let item = (entry, Bytes::copy_from_slice(payload));
            match entries.last_mut() {
                Some((segment, list)) if *segment == s.segment => list.push(item),
                _ => entries.push((s.segment, vec![item])),
            }
        }
    }
    whole.then_some(entries)
}

/// A run whose entries all read back, re-encoded by `RunEncoder` with its seq and epoch: the
/// same sections (but `bytes`, which become the records' true length), counts and footer
/// size, and a run that reads back whole to the same entries. When the input's layout is the
/// encoder's (same header, sections and array), the encoding is the input's bytes up to the
/// footer's end, but for those no decoder reads: CRCs, flags and LACs of the records, the
/// header's reserved field and the padding before the array.
fn check_reencoded(epoch: u64, input: &[u8], found: &FoundRun, entries: &RunEntries) {
    let header = &found.header;
    let encoded = encode_run(epoch, header.seq, entries).expect("a run's entries plan a run");
    let mut budget = usize::MAX;
    let (h, sections, again) = read_run(epoch, &encoded, &mut budget).expect("an encoded run reads back");
    assert_eq!(again.as_ref(), Some(entries), "an encoded run reads back other entries");
    assert_eq!(sections.len(), found.sections.len(), "entries re-encoded into other sections");
    let mut payloads = entries.iter().flat_map(|(_, list)| list).map(|(_, payload)| payload.len());
    for (a, b) in found.sections.iter().zip(&sections) {
        let same = |s: &Section| (s.segment, s.first, s.count, s.array_index);
        assert_eq!(same(a), same(b), "entries re-encoded into another section");
        let mut bytes = 0u64;
        for _ in 0..b.count {
            bytes += record::record_bytes(payloads.next().expect("a section's entries")) as u64;
        }
        assert_eq!(b.bytes, bytes, "an encoded section's bytes are not its records'");
    }
    let footer_bytes = (RECORD_HEADER_BYTES + SECTION_BYTES * sections.len()) as u64;
    assert_eq!(
        (h.seq, h.entry_count, h.footer_bytes, h.footer_at - h.arrays_at),
        (header.seq, header.entry_count, footer_bytes, header.footer_at - header.arrays_at),
        "entries re-encoded into another run"
    );
    let array = header.arrays_at as usize..header.footer_at as usize;
    if h != *header || sections != found.sections || input[array.clone()] != encoded[array.clone()] {
        return;
    }
    let footer_at = header.footer_at as usize;
    let footer_end = footer_at + header.footer_bytes as usize;
    let records_end = RUN_HEADER_BYTES + sections.iter().map(|s| s.bytes as usize).sum::<usize>();
    let mut unread = vec![0..4, 9..10, 64..RUN_HEADER_BYTES, records_end..array.start];
    let record_at = encoded[array]
        .chunks_exact(ARRAY_ELEMENT_BYTES)
        .map(|raw| run::decode_element(raw.try_into().expect("an element")).0 as usize);
    for at in record_at.chain([footer_at]) {
        unread.extend([at..at + 4, at + 9..at + 10, at + 32..at + 40]);
    }
    let mut patched = encoded[..footer_end].to_vec();
    for range in unread {
        patched[range.clone()].copy_from_slice(&input[range]);
    }
    assert!(patched[..] == input[..footer_end], "a run in the encoder's layout re-encoded to other bytes");
}

/// `entries` as `RunEncoder` writes them for entry log `epoch`, through a small chunk so
/// records span chunks. `None` when the encoder plans no run.
pub fn encode_run(epoch: u64, seq: u64, entries: &RunEntries) -> Option<Vec<u8>> {
    let mut encoder = RunEncoder::new(epoch, seq, entries)?;
    let mut chunk = AlignedBuf::with_capacity(2 * SECTOR_BYTES);
    let mut out = Vec::with_capacity(encoder.header().run_bytes as usize);
    while !encoder.is_done() {
        encoder.fill(&mut chunk, entries);
        out.extend_from_slice(chunk.as_slice());
    }
    Some(out)
}

/// The runs, indexed as open indexes an entry log it scans, answer lookups as a brute-force
/// search of their sections does: for the first and last entry of a section and the ids just
/// outside it, `find` names the newest run holding the entry (RI2) and where its element and
/// section are; `last_entry` and `holds` agree; the log's bytes are all live; dropping
/// shadowed spans changes no answer. The index refuses a run whose seq an earlier run has, and
/// only such a run (RI3: seqs are unique per shard, docs/format.md#run); the answers are then
/// those of the runs it took.
fn check_run_index(log: LogSeq, runs: &[FoundRun]) {
    let mut index = RunIndex::default();
    let mut indexed: Vec<&FoundRun> = Vec::new();
    for found in runs {
        let taken = indexed.iter().any(|r| r.header.seq == found.header.seq);
        let info = RunInfo { log, offset: found.offset as u64, header: found.header };
        match index.insert(info, &found.sections, |_| false) {
            Ok(()) => assert!(!taken, "indexed a second run under seq {}", found.header.seq),
            Err(refused) => assert!(taken, "refused the run at {}: {refused}", found.offset),
        }
        if !taken {
            indexed.push(found);
        }
    }
    let total: u64 = indexed.iter().flat_map(|r| &r.sections).map(|s| s.bytes).sum();
    let usage: Vec<_> = index.log_use().collect();
    if total > 0 {
        assert_eq!(usage.len(), 1, "one entry log, accounted as {usage:?}");
        assert_eq!((usage[0].1.total, usage[0].1.live), (total, total), "log bytes misaccounted");
    }
    let mut lookups = Vec::new();
    for s in indexed.iter().flat_map(|r| &r.sections).take(INDEX_SECTIONS_MAX) {
        let last = s.first + s.count - 1;
        let around = [s.first.checked_sub(1), Some(s.first), Some(last), last.checked_add(1)];
        lookups.extend(around.into_iter().flatten().map(|entry| (s.segment, entry)));
    }
    let answers: Vec<Option<Found>> = lookups.iter().map(|(s, e)| index.find(*s, *e)).collect();
    for ((segment, entry), answer) in lookups.iter().zip(&answers) {
        let expected = expected_find(log, &indexed, *segment, *entry);
        assert_eq!(*answer, expected, "find(segment {}, entry {entry}) differs from the footers", segment.0);
        let sections = indexed.iter().flat_map(|r| &r.sections).filter(|s| s.segment == *segment);
        let last = sections.map(|s| s.first + s.count - 1).max();
        assert_eq!(index.last_entry(*segment), last, "last_entry of segment {}", segment.0);
        assert_eq!(index.holds(*segment), last.is_some(), "holds(segment {})", segment.0);
    }
    index.drop_shadowed();
    for ((segment, entry), answer) in lookups.iter().zip(&answers) {
        let after = index.find(*segment, *entry);
        assert_eq!(
            after, *answer,
            "dropping shadowed spans changed find(segment {}, entry {entry})",
            segment.0
        );
    }
}

/// Where the newest run holding `entry` of `segment` has it, by brute force.
fn expected_find(log: LogSeq, runs: &[&FoundRun], segment: SegmentId, entry: u64) -> Option<Found> {
    let mut best: Option<Found> = None;
    for found in runs {
        let mut records_at = RUN_HEADER_BYTES as u64;
        for s in &found.sections {
            let at = records_at;
            records_at += s.bytes;
            if s.segment != segment
                || !s.contains(entry)
                || best.is_some_and(|b| b.run.header.seq > found.header.seq)
            {
                continue;
            }
            let run = RunInfo { log, offset: found.offset as u64, header: found.header };
            let k = entry - s.first;
            let section_at = run.offset + at;
            best = Some(Found {
                run,
                element_at: run.offset
                    + found.header.arrays_at
                    + (s.array_index + k) * ARRAY_ELEMENT_BYTES as u64,
                remaining: s.count - k,
                index_in_section: k,
                section_at,
                section_end: section_at + s.bytes,
            });
        }
    }
    best
}

/// `log` with the CRC of every record `check_entry_log_decode` reads rewritten to match it:
/// walking the log as it does, each run's header first, then (once the header decodes) its
/// footer, then (once the footer decodes) each entry record an array element points to. What
/// a fuzzer would otherwise have to solve before a mutated run is read at all. Other fields
/// (kind, epoch, reserved bits) are left as they are.
pub fn with_valid_run_checksums(epoch: u64, log: &[u8]) -> Vec<u8> {
    let mut out = log.to_vec();
    let mut budget = ENTRY_BYTES_BUDGET;
    let mut at = 0;
    while at < out.len() {
        fix_record_crc(&mut out[at..], epoch, &mut budget);
        let Ok(header) = run::decode_header(&out[at..], epoch) else {
            at = (at / SECTOR_BYTES + 1) * SECTOR_BYTES;
            continue;
        };
        let footer = at + header.footer_at as usize..at + (header.footer_at + header.footer_bytes) as usize;
        if let Some(bytes) = out.get_mut(footer.start..) {
            fix_record_crc(bytes, epoch, &mut budget);
        }
        let Some(sections) = out.get(footer).and_then(|f| run::decode_footer(f, epoch, &header).ok()) else {
            at = (at / SECTOR_BYTES + 1) * SECTOR_BYTES;
            continue;
        };
        for index in 0..sections.iter().map(|s| s.count).sum::<u64>() {
            let element = at + (header.arrays_at + index * ARRAY_ELEMENT_BYTES as u64) as usize;
            let Some(raw) = out.get(element..element + ARRAY_ELEMENT_BYTES) else { break };
            let (offset, _) = run::decode_element(raw.try_into().expect("8 bytes"));
            if let Some(bytes) = out.get_mut(at + offset as usize..) {
                fix_record_crc(bytes, epoch, &mut budget);
            }
        }
        at = at.saturating_add(header.run_bytes as usize);
    }
    out
}

/// Rewrites the CRC of the record at the start of `bytes` as docs/format.md#checksum defines
/// it: CRC32C over the epoch (8 bytes LE), header bytes 4..40 and, but for Padding, the
/// payload. Leaves a record whose payload is past `bytes` (or past the budget) as it is.
fn fix_record_crc(bytes: &mut [u8], epoch: u64, budget: &mut usize) {
    let Some(header) = bytes.get(..RECORD_HEADER_BYTES) else { return };
    let payload_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let payload_len = if header[8] == RecordKind::Padding as u8 { 0 } else { payload_len };
    let Some(end) = RECORD_HEADER_BYTES.checked_add(payload_len).filter(|end| *end <= bytes.len()) else {
        return;
    };
    let Some(left) = budget.checked_sub(end) else { return };
    *budget = left;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&epoch.to_le_bytes()), &bytes[4..end]);
    bytes[..4].copy_from_slice(&crc.to_le_bytes());
}

/// A few runs of sample entries as one entry log, as a fuzz input (the epoch, then the log):
/// later runs hold entries again (RI2), or a section of an earlier run exactly, as compaction
/// moves one; when `trim`, the last run is cut after its footer (its zero tail is never read).
/// Returns the input and each run's entries. The seed of fuzz inputs that get past the CRCs.
pub fn sample_entry_log(seed: u64, runs: usize, trim: bool) -> (Vec<u8>, Vec<RunEntries>) {
    let mut rng = Rng::new(seed);
    let epoch = rng.below(1 << 20);
    let mut input = epoch.to_le_bytes().to_vec();
    let mut all: Vec<RunEntries> = Vec::new();
    let seq0 = rng.below(1000);
    for r in 0..runs {
        let entries = match all.last() {
            // As compaction moves a span: one section of an earlier run, as it was.
            Some(previous) if rng.below(4) == 0 => {
                let (segment, list) = &previous[rng.below(previous.len() as u64) as usize];
                let end = list.windows(2).position(|w| w[1].0 != w[0].0 + 1).map_or(list.len(), |i| i + 1);
                vec![(*segment, list[..end].to_vec())]
            }
            _ => sample_run_entries(&mut rng),
        };
        let mut run = encode_run(epoch, seq0 + r as u64, &entries).expect("sample entries plan a run");
        if trim && r + 1 == runs {
            let header = run::decode_header(&run, epoch).expect("a sample run header");
            run.truncate((header.footer_at + header.footer_bytes) as usize);
        }
        input.extend_from_slice(&run);
        all.push(entries);
    }
    (input, all)
}

/// Entries of one to three segments among 1..=4, each in up to three stretches of consecutive
/// ids with gaps between them (a section each), payloads mostly small, now and then past a
/// sector.
pub fn sample_run_entries(rng: &mut Rng) -> RunEntries {
    let mut segments: Vec<u64> = (0..1 + rng.below(3)).map(|_| 1 + rng.below(4)).collect();
    segments.sort_unstable();
    segments.dedup();
    let mut entries = Vec::new();
    for segment in segments {
        let mut list = Vec::new();
        let mut id = rng.below(20);
        for _ in 0..1 + rng.below(3) {
            for _ in 0..1 + rng.below(5) {
                let len = match rng.below(16) {
                    0 => 0,
                    1..=11 => rng.below(64),
                    12..=14 => 100 + rng.below(400),
                    _ => 4000 + rng.below(1000),
                } as usize;
                let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                list.push((id, Bytes::from(payload)));
                id += 1;
            }
            id += 1 + rng.below(10);
        }
        entries.push((SegmentId(segment), list));
    }
    entries
}

/// The manifest's magic number (docs/format.md#manifest).
const MANIFEST_MAGIC: u32 = 0x464D_4C44;
/// Longest damage note a manifest holds.
const NOTE_BYTES_MAX: usize = 4096;
/// Longest master key a manifest holds.
const KEY_BYTES_MAX: usize = 64;

/// `manifest_decode`: a storage manifest file. `Manifest::decode` never panics, and agrees
/// with an independent reading of docs/format.md#manifest (`canonical_manifest`): it accepts
/// exactly what the format accepts, and a manifest it accepts re-encodes to the canonical form
/// of the input (the bytes decode does not keep normalised). The re-encoding decodes to the
/// same manifest but for damage notes, which come back cut to 4096 bytes (`notes_cut`), and
/// is a fixed point from there; cut short or lengthened by a byte, with its CRC made valid,
/// it is refused (the format is self-delimiting).
///
/// It checks the bytes as they are, then with their trailing CRC made valid
/// (`with_valid_manifest_crc`).
pub fn check_manifest_decode(bytes: &[u8]) {
    check_manifest(bytes);
    let fixed = with_valid_manifest_crc(bytes);
    if fixed != bytes {
        check_manifest(&fixed);
    }
}

fn check_manifest(bytes: &[u8]) {
    let manifest = match (Manifest::decode(bytes), canonical_manifest(bytes)) {
        (Err(_), None) => return,
        (Ok(m), None) => panic!("Manifest::decode accepted what the format refuses: {m:?}"),
        (Err(e), Some(_)) => panic!("Manifest::decode refused a manifest the format accepts: {e}"),
        (Ok(m), Some(canonical)) => {
            assert!(m.encode() == canonical, "a decoded manifest re-encodes other than its canonical form");
            m
        }
    };
    let encoded = manifest.encode();
    let again = Manifest::decode(&encoded).expect("an encoded manifest decodes");
    assert_eq!(again, notes_cut(&manifest), "a manifest changed through encode and decode");
    assert_eq!(Manifest::decode(&again.encode()).as_ref(), Ok(&again), "encode and decode is no fixed point");
    let body = &encoded[..encoded.len() - 4];
    for cut in [0, body.len() / 2, body.len() - 1] {
        assert!(Manifest::decode(&seal(&body[..cut])).is_err(), "a manifest cut to {cut} bytes decodes");
    }
    let mut longer = body.to_vec();
    longer.push(0);
    assert!(Manifest::decode(&seal(&longer)).is_err(), "a manifest with a byte appended decodes");
}

/// `body` with its CRC32C appended, as a manifest file ends.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out
}

/// `bytes` with the trailing CRC32C rewritten to match the rest.
pub fn with_valid_manifest_crc(bytes: &[u8]) -> Vec<u8> {
    match bytes.len().checked_sub(4) {
        Some(n) => seal(&bytes[..n]),
        None => bytes.to_vec(),
    }
}

/// What decode then encode makes of a manifest: every damage note cut to its first 4096 bytes,
/// invalid UTF-8 where the cut split a character replaced (docs/format.md#manifest).
pub fn notes_cut(manifest: &Manifest) -> Manifest {
    let mut out = manifest.clone();
    for note in &mut out.damage {
        *note = String::from_utf8_lossy(&note.as_bytes()[..note.len().min(NOTE_BYTES_MAX)]).into_owned();
    }
    out
}

/// Reads a manifest as docs/format.md#manifest lays it out, independently of
/// `Manifest::decode`, and writes back the canonical form of what it holds (what the encoder
/// writes for it): `has_checkpoint` 0 or 1 and the mark zero without one, flag bits beyond the
/// four known ones cleared, no key bytes without the key flag and LAC 0 without the LAC flag,
/// damage notes made valid UTF-8 and cut to 4096 bytes, the CRC recomputed. `None` when the
/// format refuses the bytes.
pub fn canonical_manifest(bytes: &[u8]) -> Option<Vec<u8>> {
    let body = &bytes[..bytes.len().checked_sub(4)?];
    if crc32c::crc32c(body).to_le_bytes()[..] != bytes[body.len()..] {
        return None;
    }
    let mut r = Cursor { bytes: body, at: 0 };
    let mut out = Vec::with_capacity(bytes.len());
    let put = |out: &mut Vec<u8>, v: &[u8]| out.extend_from_slice(v);
    if r.u32()? != MANIFEST_MAGIC || r.u32()? != 1 {
        return None;
    }
    put(&mut out, &MANIFEST_MAGIC.to_le_bytes());
    put(&mut out, &1u32.to_le_bytes());
    put(&mut out, &r.u32()?.to_le_bytes());
    let has_checkpoint = r.u32()? != 0;
    let (file, offset) = (r.u64()?, r.u64()?);
    put(&mut out, &u32::from(has_checkpoint).to_le_bytes());
    for v in [file, offset] {
        put(&mut out, &(if has_checkpoint { v } else { 0 }).to_le_bytes());
    }
    put(&mut out, r.take(16)?); // next_log, next_run
    for item_bytes in [16, 32] {
        // Logs, then runs: fixed-size items, kept as they are.
        let count = r.u64()?;
        put(&mut out, &count.to_le_bytes());
        for _ in 0..count {
            put(&mut out, r.take(item_bytes)?);
        }
    }
    let segments = r.u64()?;
    put(&mut out, &segments.to_le_bytes());
    for _ in 0..segments {
        let (segment, flags, key_len, lac) = (r.u64()?, r.u32()?, r.u32()? as usize, r.u64()?);
        if key_len > KEY_BYTES_MAX {
            return None;
        }
        let key = r.take(key_len)?;
        let (has_lac, has_key) = (flags & 2 != 0, flags & 4 != 0);
        put(&mut out, &segment.to_le_bytes());
        put(&mut out, &(flags & 0xF).to_le_bytes());
        put(&mut out, &(if has_key { key_len as u32 } else { 0 }).to_le_bytes());
        put(&mut out, &(if has_lac { lac } else { 0 }).to_le_bytes());
        if has_key {
            put(&mut out, key);
        }
    }
    let notes = r.u64()?;
    put(&mut out, &notes.to_le_bytes());
    for _ in 0..notes {
        let len = r.u32()? as usize;
        if len > NOTE_BYTES_MAX {
            return None;
        }
        let text = String::from_utf8_lossy(r.take(len)?);
        let text = &text.as_bytes()[..text.len().min(NOTE_BYTES_MAX)];
        put(&mut out, &(text.len() as u32).to_le_bytes());
        put(&mut out, text);
    }
    if r.at != body.len() {
        return None;
    }
    Some(seal(&out))
}

/// Little-endian fields, front to back; `None` past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// A manifest as a shard writes one: a few logs, runs and segment states (keys, fences,
/// deletions, LACs), now and then no checkpoint, and damage notes (one not ASCII).
pub fn sample_manifest(rng: &mut Rng) -> Manifest {
    let logs: Vec<(LogSeq, u64)> =
        (0..rng.below(4)).map(|i| (LogSeq(i + rng.below(3)), rng.below(1 << 10) * 4096)).collect();
    let runs = (0..rng.below(6))
        .map(|i| ManifestRun {
            log: LogSeq(rng.below(4)),
            offset: rng.below(1 << 10) * 4096,
            bytes: (1 + rng.below(64)) * 4096,
            seq: i * 2 + rng.below(2),
        })
        .collect();
    let segments = (0..rng.below(6))
        .map(|i| ManifestSegment {
            segment: SegmentId(i * 3 + rng.below(3)),
            master_key: (rng.below(3) > 0).then(|| Bytes::from(vec![b'k'; rng.below(65) as usize])),
            fenced: rng.below(2) == 0,
            deleted: rng.below(4) == 0,
            last_add_confirmed: (rng.below(3) > 0).then(|| rng.below(1 << 20)),
        })
        .collect();
    let damage = (0..rng.below(3))
        .map(|i| match i {
            0 => format!(
                "entry log {:016x} offset {}: run footer: Checksum",
                rng.below(8),
                rng.below(9) * 4096
            ),
            1 => "journal file 0000000000000003 offset 8192: batch torn — données abîmées".to_string(),
            _ => format!("run {} is in entry log {}, which is missing", rng.below(100), rng.below(8)),
        })
        .collect();
    Manifest {
        shard: rng.below(8) as u32,
        checkpoint: (rng.below(4) > 0)
            .then(|| JournalMark { file: FileSeq(rng.below(100)), offset: rng.below(1 << 20) * 4096 }),
        next_log: 4 + rng.below(10),
        next_run: 12 + rng.below(100),
        logs,
        runs,
        segments,
        damage,
    }
}

/// A run header record with the fields of `header` (flags and reserved bytes zero), whether or
/// not they are consistent: for tests that forge headers.
pub fn run_header_record(epoch: u64, header: &RunHeader) -> [u8; RUN_HEADER_BYTES] {
    encode_run_header(epoch, header, 0, [0; 8])
}
