//! Runs: the on-disk form of one flush (or one compaction output) in an entry log. Pure: no
//! I/O. Format: docs/format.md#run.
//!
//! ```text
//! 0           RunHeader record; fields: segment_id = run bytes, entry_id = run seq,
//!             last_add_confirmed = entry count; payload (32 B): arrays_at u64, footer_at u64,
//!             footer bytes u64, reserved u64
//! 72          Entry records sorted by (segment, entry), journal record format, epoch = log seq
//! arrays_at   (8-aligned) per entry in the same order: u32 record offset in the run, u32 payload
//!             length
//! footer_at   RunFooter record; payload: sections of 40 B: segment u64, first entry u64,
//!             count u64, index of the section's first array element u64, record bytes u64
//! ...         zeroes to the next sector boundary
//! ```
//!
//! Invariants:
//! - RN1: sections are sorted by (segment, first entry), disjoint, and each covers consecutive
//!   entry ids: whether a run holds an entry is decided by the CRC-checked footer alone, never
//!   by array contents (an array element only says where to look; the record it points to is
//!   checked on every read).
//! - RN2: a run is whole only if its header and footer decode; the footer is written last, after
//!   every other byte of the run is written, and made durable with it.
//! - RN3: a run is a whole number of sectors and shorter than 4 GiB (u32 offsets).
//! - RN4: a run's seq is below `RUN_SEQ_LIMIT` (2^63): `decode_header` refuses any other and
//!   `RunEncoder` is never asked for one, so no seq counter can overflow, whatever a disk holds.

use bytes::Bytes;

use crate::constants::{RECORD_HEADER_BYTES, SECTOR_BYTES};
use crate::ids::SegmentId;
use crate::io::buf::AlignedBuf;
use crate::journal::record::{self, LAC_NONE, RecordHeader, RecordKind};

/// Payload bytes of the run header record.
pub const RUN_HEADER_PAYLOAD_BYTES: usize = 32;
/// Bytes of the run header record.
pub const RUN_HEADER_BYTES: usize = RECORD_HEADER_BYTES + RUN_HEADER_PAYLOAD_BYTES;
/// Bytes of one array element.
pub const ARRAY_ELEMENT_BYTES: usize = 8;
/// Bytes of one footer section.
pub const SECTION_BYTES: usize = 40;
/// Largest run (RN3).
pub const RUN_BYTES_MAX: u64 = u32::MAX as u64 - SECTOR_BYTES as u64;
/// Run seqs stay below this (RN4): 2^63 runs is out of reach of any real shard (292,000 years
/// at a million runs per second), so a run that claims more is damage, and `seq + 1` never
/// overflows.
pub const RUN_SEQ_LIMIT: u64 = 1 << 63;

/// Entries sorted by (segment, entry), as a run is written from.
pub trait SortedEntries {
    /// Segment `n` in id order, with its entries in id order (no duplicates).
    fn segment(&self, n: usize) -> Option<(SegmentId, &[(u64, Bytes)])>;
}

impl SortedEntries for crate::storage::write_cache::CacheHalf {
    fn segment(&self, n: usize) -> Option<(SegmentId, &[(u64, Bytes)])> {
        self.sorted_segment(n)
    }
}

impl SortedEntries for Vec<(SegmentId, Vec<(u64, Bytes)>)> {
    fn segment(&self, n: usize) -> Option<(SegmentId, &[(u64, Bytes)])> {
        self.get(n).map(|(s, e)| (*s, e.as_slice()))
    }
}

/// A run of consecutive entry ids of one segment in a run (RN1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// The segment.
    pub segment: SegmentId,
    /// First entry id.
    pub first: u64,
    /// Number of entries (ids `first..first + count`).
    pub count: u64,
    /// Index of the first entry's array element.
    pub array_index: u64,
    /// Bytes of the section's records (contiguous in the run): what compaction accounts.
    pub bytes: u64,
}

impl Section {
    /// Whether the section holds `entry`.
    pub fn contains(&self, entry: u64) -> bool {
        entry >= self.first && entry - self.first < self.count
    }
}

/// A decoded run header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunHeader {
    /// Total bytes of the run (a sector multiple).
    pub run_bytes: u64,
    /// The run's sequence number (unique per shard).
    pub seq: u64,
    /// Entries in the run.
    pub entry_count: u64,
    /// Offset of the array of entry locations.
    pub arrays_at: u64,
    /// Offset of the footer record.
    pub footer_at: u64,
    /// Bytes of the footer record.
    pub footer_bytes: u64,
}

/// Why a run's header, footer or entry did not decode.
pub type RunError = String;

/// Streams one run into sector-aligned chunks. Plan first (sizes, sections, arrays), then
/// `fill` chunks in order until `is_done`.
#[derive(Debug)]
pub struct RunEncoder {
    epoch: u64,
    seed: u32,
    head: Vec<u8>,
    /// Zero pad to 8, arrays, footer, zero pad to the sector: everything after the records.
    tail: Vec<u8>,
    sections: Vec<Section>,
    header: RunHeader,
    records_end: u64,
    /// Bytes of the run emitted so far.
    pos: u64,
    /// Cursor over the records: segment in order, entry within it, bytes of it emitted.
    segment: usize,
    entry: usize,
    within: usize,
}

impl RunEncoder {
    /// Plans a run of `entries` for entry log `epoch`. None when there is nothing to write or
    /// the run would exceed `RUN_BYTES_MAX`. `seq` is below `RUN_SEQ_LIMIT` (RN4).
    pub fn new(epoch: u64, seq: u64, entries: &dyn SortedEntries) -> Option<RunEncoder> {
        assert!(seq < RUN_SEQ_LIMIT, "run seq {seq} is past the limit (RN4)");
        let mut sections: Vec<Section> = Vec::new();
        let mut arrays: Vec<u8> = Vec::new();
        let mut at = RUN_HEADER_BYTES as u64;
        let mut count = 0u64;
        let mut n = 0;
        while let Some((segment, list)) = entries.segment(n) {
            n += 1;
            for (id, payload) in list {
                let bytes = record::record_bytes(payload.len()) as u64;
                match sections.last_mut() {
                    Some(s) if s.segment == segment && s.first + s.count == *id => {
                        s.count += 1;
                        s.bytes += bytes;
                    }
                    _ => sections.push(Section { segment, first: *id, count: 1, array_index: count, bytes }),
                }
                arrays.extend_from_slice(&(at as u32).to_le_bytes());
                arrays.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                at += record::record_bytes(payload.len()) as u64;
                count += 1;
                if at > RUN_BYTES_MAX {
                    return None;
                }
            }
        }
        if count == 0 {
            return None;
        }
        let records_end = at;
        let arrays_at = records_end.next_multiple_of(8);
        let footer_at = arrays_at + arrays.len() as u64;
        let mut footer_payload = Vec::with_capacity(sections.len() * SECTION_BYTES);
        for s in &sections {
            for v in [s.segment.0, s.first, s.count, s.array_index, s.bytes] {
                footer_payload.extend_from_slice(&v.to_le_bytes());
            }
        }
        let footer_bytes = record::record_bytes(footer_payload.len()) as u64;
        let run_bytes = (footer_at + footer_bytes).next_multiple_of(SECTOR_BYTES as u64);
        if run_bytes > RUN_BYTES_MAX {
            return None;
        }
        let header = RunHeader { run_bytes, seq, entry_count: count, arrays_at, footer_at, footer_bytes };
        let mut tail = vec![0u8; (run_bytes - records_end) as usize];
        let arrays_rel = (arrays_at - records_end) as usize;
        tail[arrays_rel..arrays_rel + arrays.len()].copy_from_slice(&arrays);
        let footer_rel = (footer_at - records_end) as usize;
        let footer_header = RecordHeader {
            kind: RecordKind::RunFooter,
            flags: 0,
            payload_len: footer_payload.len() as u32,
            segment_id: seq,
            entry_id: sections.len() as u64,
            last_add_confirmed: LAC_NONE,
        };
        record::encode(
            &mut tail[footer_rel..footer_rel + footer_bytes as usize],
            epoch,
            &footer_header,
            &footer_payload,
        );
        let mut head = vec![0u8; RUN_HEADER_BYTES];
        let mut payload = [0u8; RUN_HEADER_PAYLOAD_BYTES];
        payload[0..8].copy_from_slice(&arrays_at.to_le_bytes());
        payload[8..16].copy_from_slice(&footer_at.to_le_bytes());
        payload[16..24].copy_from_slice(&footer_bytes.to_le_bytes());
        let run_header = RecordHeader {
            kind: RecordKind::RunHeader,
            flags: 0,
            payload_len: RUN_HEADER_PAYLOAD_BYTES as u32,
            segment_id: run_bytes,
            entry_id: seq,
            last_add_confirmed: count,
        };
        record::encode(&mut head, epoch, &run_header, &payload);
        Some(RunEncoder {
            epoch,
            seed: record::seed(epoch),
            head,
            tail,
            sections,
            header,
            records_end,
            pos: 0,
            segment: 0,
            entry: 0,
            within: 0,
        })
    }

    /// The epoch (entry log sequence number) the run is encoded for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The run's header (sizes).
    pub fn header(&self) -> &RunHeader {
        &self.header
    }

    /// The run's sections (RN1).
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Bytes emitted so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Every byte of the run was emitted.
    pub fn is_done(&self) -> bool {
        self.pos == self.header.run_bytes
    }

    /// Fills `chunk` (whose capacity is a sector multiple) with the next bytes of the run, from
    /// `entries` (the same the plan was made from). Its length is set to a sector multiple.
    pub fn fill(&mut self, chunk: &mut AlignedBuf, entries: &dyn SortedEntries) {
        assert!(chunk.capacity().is_multiple_of(SECTOR_BYTES) && chunk.capacity() > 0);
        let room = (chunk.capacity() as u64).min(self.header.run_bytes - self.pos) as usize;
        chunk.set_len(room);
        let out = chunk.as_mut_slice();
        let mut n = 0;
        while n < room {
            let pos = self.pos as usize;
            if pos < RUN_HEADER_BYTES {
                let take = (RUN_HEADER_BYTES - pos).min(room - n);
                out[n..n + take].copy_from_slice(&self.head[pos..pos + take]);
                n += take;
                self.pos += take as u64;
            } else if self.pos < self.records_end {
                n += self.fill_records(&mut out[n..], entries);
            } else {
                let rel = (self.pos - self.records_end) as usize;
                let take = (self.tail.len() - rel).min(room - n);
                out[n..n + take].copy_from_slice(&self.tail[rel..rel + take]);
                n += take;
                self.pos += take as u64;
            }
        }
    }

    /// Copies records into `out` until it is full or the records end; returns bytes written.
    fn fill_records(&mut self, out: &mut [u8], entries: &dyn SortedEntries) -> usize {
        let mut n = 0;
        while n < out.len() && self.pos < self.records_end {
            let (segment, list) = entries.segment(self.segment).expect("the plan counted this segment");
            let Some((id, payload)) = list.get(self.entry) else {
                self.segment += 1;
                self.entry = 0;
                continue;
            };
            let header = RecordHeader {
                kind: RecordKind::Entry,
                flags: 0,
                payload_len: payload.len() as u32,
                segment_id: segment.0,
                entry_id: *id,
                last_add_confirmed: LAC_NONE,
            };
            let len = record::record_bytes(payload.len());
            if self.within == 0 && out.len() - n >= len {
                record::encode_seeded(&mut out[n..n + len], self.epoch, self.seed, &header, payload);
                n += len;
            } else {
                // The record spans chunks: copy the part that fits.
                let head = record::encode_header(self.epoch, self.seed, &header, payload);
                let mut copied = 0;
                while self.within < len && n < out.len() {
                    let (src, offset) = if self.within < RECORD_HEADER_BYTES {
                        (&head[..], self.within)
                    } else {
                        (&payload[..], self.within - RECORD_HEADER_BYTES)
                    };
                    let take = (src.len() - offset).min(out.len() - n);
                    out[n..n + take].copy_from_slice(&src[offset..offset + take]);
                    n += take;
                    self.within += take;
                    copied += take;
                }
                self.pos += copied as u64;
                if self.within < len {
                    return n;
                }
                self.within = 0;
                self.entry += 1;
                continue;
            }
            self.pos += len as u64;
            self.entry += 1;
        }
        n
    }
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Decodes a run header at the start of `bytes` (at least `RUN_HEADER_BYTES`), checking that
/// its sizes are consistent and its seq is below `RUN_SEQ_LIMIT` (RN4). Never panics.
pub fn decode_header(bytes: &[u8], epoch: u64) -> Result<RunHeader, RunError> {
    let (h, payload) = record::decode(bytes, epoch).map_err(|e| format!("run header: {e:?}"))?;
    if h.kind != RecordKind::RunHeader || payload.len() != RUN_HEADER_PAYLOAD_BYTES {
        return Err(format!("expected a run header, found {:?} of {} bytes", h.kind, payload.len()));
    }
    let header = RunHeader {
        run_bytes: h.segment_id,
        seq: h.entry_id,
        entry_count: h.last_add_confirmed,
        arrays_at: read_u64(payload, 0),
        footer_at: read_u64(payload, 8),
        footer_bytes: read_u64(payload, 16),
    };
    let arrays_end = header
        .entry_count
        .checked_mul(ARRAY_ELEMENT_BYTES as u64)
        .and_then(|a| a.checked_add(header.arrays_at));
    let footer_end = header.footer_at.checked_add(header.footer_bytes);
    let consistent = header.run_bytes.is_multiple_of(SECTOR_BYTES as u64)
        && header.run_bytes <= RUN_BYTES_MAX
        && header.arrays_at >= RUN_HEADER_BYTES as u64
        && header.arrays_at.is_multiple_of(8)
        && arrays_end == Some(header.footer_at)
        && footer_end.is_some_and(|end| end <= header.run_bytes)
        && header.footer_bytes >= RECORD_HEADER_BYTES as u64
        && header.entry_count > 0;
    if !consistent {
        return Err(format!("run header sizes are inconsistent: {header:?}"));
    }
    if header.seq >= RUN_SEQ_LIMIT {
        return Err(format!("run seq {} is past the limit 2^63 (RN4)", header.seq));
    }
    Ok(header)
}

/// Decodes a run's footer (`bytes` = exactly its footer record) into sections, checking RN1
/// and that they account for every entry. Never panics, whatever `header` says.
pub fn decode_footer(bytes: &[u8], epoch: u64, header: &RunHeader) -> Result<Vec<Section>, RunError> {
    // Bytes the records may take: `decode_header` has `arrays_at` at least 72; a header from
    // anywhere else may not.
    let Some(records_max) = header.arrays_at.checked_sub(RUN_HEADER_BYTES as u64) else {
        return Err(format!("run header with the array at {}, inside the header", header.arrays_at));
    };
    let (h, payload) = record::decode(bytes, epoch).map_err(|e| format!("run footer: {e:?}"))?;
    if h.kind != RecordKind::RunFooter || h.segment_id != header.seq {
        return Err(format!(
            "expected the footer of run {}, found {:?} of run {}",
            header.seq, h.kind, h.segment_id
        ));
    }
    if !payload.len().is_multiple_of(SECTION_BYTES) || (payload.len() / SECTION_BYTES) as u64 != h.entry_id {
        return Err(format!("footer of {} bytes for {} sections", payload.len(), h.entry_id));
    }
    let mut sections = Vec::with_capacity(payload.len() / SECTION_BYTES);
    let mut next_index = 0u64;
    let mut record_bytes = 0u64;
    for raw in payload.chunks_exact(SECTION_BYTES) {
        let section = Section {
            segment: SegmentId(read_u64(raw, 0)),
            first: read_u64(raw, 8),
            count: read_u64(raw, 16),
            array_index: read_u64(raw, 24),
            bytes: read_u64(raw, 32),
        };
        let ordered = sections.last().is_none_or(|p: &Section| {
            p.segment < section.segment || (p.segment == section.segment && p.first + p.count < section.first)
        });
        record_bytes = record_bytes.saturating_add(section.bytes);
        if section.count == 0
            || section.bytes < section.count.saturating_mul(RECORD_HEADER_BYTES as u64)
            || record_bytes > records_max
            || section.array_index != next_index
            || section.first.checked_add(section.count).is_none()
            || !ordered
        {
            return Err(format!("footer section {section:?} breaks the section rules"));
        }
        next_index += section.count;
        sections.push(section);
    }
    if next_index != header.entry_count {
        return Err(format!("sections hold {next_index} entries, the header says {}", header.entry_count));
    }
    Ok(sections)
}

/// Decodes one array element: (record offset in the run, payload length).
pub fn decode_element(bytes: &[u8; ARRAY_ELEMENT_BYTES]) -> (u64, u32) {
    let offset = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (u64::from(offset), len)
}

/// Checks an entry record read from a run: its kind, ids and CRC. Returns the payload.
pub fn decode_entry(bytes: &[u8], epoch: u64, segment: SegmentId, entry: u64) -> Result<&[u8], RunError> {
    match record::decode(bytes, epoch) {
        Ok((h, payload))
            if h.kind == RecordKind::Entry && h.segment_id == segment.0 && h.entry_id == entry =>
        {
            Ok(payload)
        }
        Ok((h, _)) => Err(format!("found {:?} of segment {} entry {}", h.kind, h.segment_id, h.entry_id)),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(
        epoch: u64,
        input: &Vec<(SegmentId, Vec<(u64, Bytes)>)>,
        chunk: usize,
    ) -> (Vec<u8>, RunEncoder) {
        let mut enc = RunEncoder::new(epoch, 7, input).unwrap();
        let mut out = Vec::new();
        let mut buf = AlignedBuf::with_capacity(chunk);
        while !enc.is_done() {
            enc.fill(&mut buf, input);
            assert!(buf.len().is_multiple_of(SECTOR_BYTES));
            out.extend_from_slice(buf.as_slice());
        }
        (out, enc)
    }

    proptest! {
        #[test]
        fn run_round_trip(
            raw in proptest::collection::btree_map(
                (0u64..4, 0u64..40), proptest::collection::vec(any::<u8>(), 0..9000), 1..60),
            chunk_sectors in 1usize..4,
        ) {
            let mut input: Vec<(SegmentId, Vec<(u64, Bytes)>)> = Vec::new();
            for ((segment, id), payload) in &raw {
                match input.last_mut() {
                    Some((s, list)) if s.0 == *segment => list.push((*id, Bytes::from(payload.clone()))),
                    _ => input.push((SegmentId(*segment), vec![(*id, Bytes::from(payload.clone()))])),
                }
            }
            let (bytes, enc) = encode_all(11, &input, chunk_sectors * SECTOR_BYTES);
            prop_assert_eq!(bytes.len() as u64, enc.header().run_bytes);
            let header = decode_header(&bytes, 11).unwrap();
            prop_assert_eq!(&header, enc.header());
            let footer = &bytes[header.footer_at as usize..(header.footer_at + header.footer_bytes) as usize];
            let sections = decode_footer(footer, 11, &header).unwrap();
            prop_assert_eq!(&sections[..], enc.sections());
            for ((segment, id), payload) in &raw {
                let section = sections.iter().find(|s| s.segment.0 == *segment && s.contains(*id)).unwrap();
                let index = section.array_index + (id - section.first);
                let at = (header.arrays_at + index * 8) as usize;
                let (offset, len) = decode_element(bytes[at..at + 8].try_into().unwrap());
                prop_assert_eq!(len as usize, payload.len());
                let got = decode_entry(&bytes[offset as usize..], 11, SegmentId(*segment), *id).unwrap();
                prop_assert_eq!(got, &payload[..]);
            }
            prop_assert_eq!(sections.iter().map(|s| s.count).sum::<u64>(), raw.len() as u64);
        }

        #[test]
        fn run_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), epoch: u64) {
            let _ = decode_header(&bytes, epoch);
            let header = RunHeader {
                run_bytes: 4096, seq: 0, entry_count: 1, arrays_at: 72, footer_at: 80, footer_bytes: 72,
            };
            let _ = decode_footer(&bytes, epoch, &header);
            let _ = decode_entry(&bytes, epoch, SegmentId(0), 0);
        }
    }

    /// `bytes` with the record at `at` re-encoded (valid CRC) after `change`: a forged record.
    fn reencode(bytes: &mut [u8], at: usize, epoch: u64, change: impl Fn(&mut RecordHeader)) {
        let (mut h, payload) = record::decode(&bytes[at..], epoch).unwrap();
        let payload = payload.to_vec();
        change(&mut h);
        record::encode(&mut bytes[at..at + record::record_bytes(payload.len())], epoch, &h, &payload);
    }

    /// Regression: a CRC-valid header claiming seq `u64::MAX` decoded, and the run index's
    /// `seq + 1` overflowed at open (RN4).
    #[test]
    fn a_run_seq_past_the_limit_is_refused() {
        let input = vec![(SegmentId(1), vec![(0, Bytes::from_static(b"abc"))])];
        let (bytes, _) = encode_all(3, &input, SECTOR_BYTES);
        for (seq, ok) in [(RUN_SEQ_LIMIT - 1, true), (RUN_SEQ_LIMIT, false), (u64::MAX, false)] {
            let mut forged = bytes.clone();
            reencode(&mut forged, 0, 3, |h| h.entry_id = seq);
            assert_eq!(decode_header(&forged, 3).is_ok(), ok, "seq {seq}");
        }
    }

    /// Regression: `decode_footer` given a header with `arrays_at` below 72 (which
    /// `decode_header` never returns) underflowed instead of answering an error.
    #[test]
    fn decode_footer_refuses_an_array_inside_the_header() {
        let input = vec![(SegmentId(1), vec![(0, Bytes::from_static(b"abc"))])];
        let (bytes, _) = encode_all(3, &input, SECTOR_BYTES);
        let header = decode_header(&bytes, 3).unwrap();
        let footer = &bytes[header.footer_at as usize..(header.footer_at + header.footer_bytes) as usize];
        assert!(decode_footer(footer, 3, &header).is_ok());
        for arrays_at in [0, 8, RUN_HEADER_BYTES as u64 - 8] {
            let inside = RunHeader { arrays_at, ..header };
            assert!(decode_footer(footer, 3, &inside).is_err(), "arrays_at {arrays_at}");
        }
    }

    #[test]
    fn a_flipped_payload_byte_fails_its_entry_only() {
        let input = vec![(SegmentId(1), (0..10).map(|i| (i, Bytes::from(vec![i as u8; 100]))).collect())];
        let (mut bytes, _) = encode_all(3, &input, SECTOR_BYTES);
        let header = decode_header(&bytes, 3).unwrap();
        let element = |b: &[u8], i: u64| {
            decode_element(b[(header.arrays_at + i * 8) as usize..][..8].try_into().unwrap())
        };
        let (offset, _) = element(&bytes, 4);
        bytes[offset as usize + RECORD_HEADER_BYTES + 50] ^= 1;
        assert!(decode_entry(&bytes[offset as usize..], 3, SegmentId(1), 4).is_err());
        let (offset, _) = element(&bytes, 5);
        assert!(decode_entry(&bytes[offset as usize..], 3, SegmentId(1), 5).is_ok());
    }
}
