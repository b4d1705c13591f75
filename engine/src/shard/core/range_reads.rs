//! The shard core's range reads (`read_range`): consecutive entries of a segment from one place.
//!
//! From the write cache or the read cache: at once. From a run section: one sequential read of
//! its records when their start is known, either because the range starts at the section's
//! first entry (the footer gives the section's offset) or because it continues the previous
//! range read of the segment (a hint kept per segment); otherwise first a read of the
//! entries' array elements, then the records. Every record is checked (kind, ids, CRC); the
//! payloads handed out are slices of the read buffer (no copy).
//!
//! Invariant RR1: a hint only says where to look. A record that does not check out at a
//! hinted offset sends the read down the array path; only records found through the footer or
//! the array answer `Corrupt`.

use bytes::Bytes;

use super::reads::{PendingRead, RANGE_BYTES_MAX, RANGE_ENTRIES_MAX, Stage, aligned_span};
use super::{OP_READ, Output, ShardCore};
use crate::constants::RECORD_HEADER_BYTES;
use crate::error::Error;
use crate::ids::{EntryId, SegmentId};
use crate::io::{Completion, DiskOp};
use crate::shard::core::flush::entry_log_file;
use crate::shard::request::Reply;
use crate::storage::run::{self, ARRAY_ELEMENT_BYTES};
use crate::storage::run_index::Found;

/// Where the previous range read of a segment stopped: the next entry, its run, and the
/// absolute offset of its record.
#[derive(Clone, Copy, Debug)]
pub(super) struct RangeHint {
    next_entry: u64,
    run: u64,
    at: u64,
}

/// Segments with a hint kept at most (hints are dropped wholesale past it).
const RANGE_HINTS_MAX: usize = 4096;

impl<T> ShardCore<T> {
    /// A range read: from a cache at once, or from one run section.
    pub(super) fn start_range(
        &mut self,
        segment: SegmentId,
        from: EntryId,
        to: EntryId,
        max_bytes: usize,
        reply: T,
    ) {
        if self.segments.get(&segment).is_some_and(|s| s.deleted) {
            self.out.push_back(Output::Reply(reply, Reply::Entries(Err(Error::NoSuchSegment(segment)))));
            return;
        }
        if to < from {
            let error = Error::InvalidRequest(format!("read_range from {} to {}: empty range", from.0, to.0));
            self.out.push_back(Output::Reply(reply, Reply::Entries(Err(error))));
            return;
        }
        let Some(storage) = &self.storage else {
            // JournalOnly: one entry per call.
            self.start_journal_read(segment, from, reply, true);
            return;
        };
        let in_cache = storage.cache.get(segment, from.0).is_some();
        if in_cache || storage.read_cache.get(segment, from.0).is_some() {
            // From one cache: consecutive entries it holds.
            let lookup = |id: u64| {
                if in_cache { storage.cache.get(segment, id) } else { storage.read_cache.get(segment, id) }
            };
            let mut out = Vec::new();
            let mut bytes = 0usize;
            let mut id = from.0;
            while id <= to.0 {
                let Some(payload) = lookup(id) else { break };
                if !out.is_empty() && bytes + payload.len() > max_bytes {
                    break;
                }
                bytes += payload.len();
                out.push((EntryId(id), payload));
                id += 1;
            }
            if in_cache {
                self.stats.cache_reads += out.len() as u64;
            } else {
                self.stats.read_cache_hits += out.len() as u64;
            }
            self.out.push_back(Output::Reply(reply, Reply::Entries(Ok(out))));
            return;
        }
        let Some(found) = storage.index.find(segment, from.0) else {
            let error = self.missing(segment, from);
            self.out.push_back(Output::Reply(reply, Reply::Entries(Err(error))));
            return;
        };
        let count_max = found.remaining.min(to.0 - from.0 + 1).min(RANGE_ENTRIES_MAX);
        let hinted = storage
            .range_hints
            .get(&segment)
            .filter(|h| h.next_entry == from.0 && h.run == found.run.header.seq)
            .filter(|h| h.at >= found.section_at && h.at < found.section_end)
            .map(|h| h.at);
        let start = if found.index_in_section == 0 { Some(found.section_at) } else { hinted };
        match start {
            Some(at) => self.start_range_scan(segment, from, found, at, count_max, max_bytes, reply),
            None => self.start_range_elements(segment, from, found, count_max as usize, max_bytes, reply),
        }
    }

    fn start_range_elements(
        &mut self,
        segment: SegmentId,
        from: EntryId,
        found: Found,
        count: usize,
        max_bytes: usize,
        reply: T,
    ) {
        let (start, buf, skew) = aligned_span(found.element_at, count * ARRAY_ELEMENT_BYTES);
        let op = self.op_id(OP_READ);
        let file = entry_log_file(found.run.log);
        let stage = Stage::RangeElements { found, count, max_bytes, skew };
        self.reads.insert(op, PendingRead { range: true, reply, segment, entry: from, stage });
        self.out.push_back(Output::Disk(op, DiskOp::Read { file, offset: start, buf }));
    }

    #[expect(clippy::too_many_arguments, reason = "one read's parameters, passed explicitly")]
    fn start_range_scan(
        &mut self,
        segment: SegmentId,
        from: EntryId,
        found: Found,
        at: u64,
        count_max: u64,
        max_bytes: usize,
        reply: T,
    ) {
        // Enough for max_bytes of payloads and their headers, within the section.
        let want = max_bytes.saturating_add(max_bytes / 16).clamp(64 << 10, RANGE_BYTES_MAX) as u64;
        let len = (found.section_end - at).min(want) as usize;
        let (start, buf, skew) = aligned_span(at, len);
        let op = self.op_id(OP_READ);
        let file = entry_log_file(found.run.log);
        let stage = Stage::RangeScan { found, at, skew, count_max, max_bytes };
        self.reads.insert(op, PendingRead { range: true, reply, segment, entry: from, stage });
        self.out.push_back(Output::Disk(op, DiskOp::Read { file, offset: start, buf }));
    }

    fn keep_hint(&mut self, segment: SegmentId, found: &Found, next_entry: u64, at: u64) {
        let Some(storage) = self.storage.as_mut() else { return };
        if at >= found.section_end {
            storage.range_hints.remove(&segment);
            return;
        }
        if storage.range_hints.len() >= RANGE_HINTS_MAX {
            storage.range_hints.clear();
        }
        storage.range_hints.insert(segment, RangeHint { next_entry, run: found.run.header.seq, at });
    }

    pub(super) fn on_range_completed(
        &mut self,
        completion: Completion,
        reply: T,
        segment: SegmentId,
        from: EntryId,
        stage: Stage,
    ) {
        let corrupt = |detail: String| Error::Corrupt { segment, entry: from, detail };
        if let Err((op, source)) = completion.result {
            let log = stage_log(&stage);
            let error = Error::Io { op, file: format!("entry log {log}").into(), offset: 0, source };
            self.out.push_back(Output::Reply(reply, Reply::Entries(Err(error))));
            return;
        }
        let read = completion.bytes.min(completion.buf.len());
        // The payloads handed out are slices of this buffer.
        let owner = Bytes::from_owner(completion.buf).slice(..read);
        let bytes = &owner[..];
        let result = match stage {
            Stage::RangeElements { found, count, max_bytes, skew } => {
                let Some(raw) = bytes.get(skew..skew + count * ARRAY_ELEMENT_BYTES) else {
                    let error = corrupt(format!("entry log {}: array elements cut off", found.run.log));
                    self.out.push_back(Output::Reply(reply, Reply::Entries(Err(error))));
                    return;
                };
                // Records of a section are contiguous: take as many as fit, checking that.
                let header = found.run.header;
                let mut records = Vec::new();
                let mut expected_at = None;
                let mut total = 0usize;
                for element in raw.chunks_exact(ARRAY_ELEMENT_BYTES) {
                    let (at, len) = run::decode_element(element.try_into().expect("8 bytes"));
                    let end = at + RECORD_HEADER_BYTES as u64 + u64::from(len);
                    let fits = at >= run::RUN_HEADER_BYTES as u64 && end <= header.arrays_at;
                    if !fits || expected_at.is_some_and(|e| e != at) {
                        break;
                    }
                    let payload = len as usize;
                    if !records.is_empty()
                        && (total + payload > max_bytes || total + payload > RANGE_BYTES_MAX)
                    {
                        break;
                    }
                    total += payload;
                    records.push((at, len));
                    expected_at = Some(end);
                }
                let Some(&(first_at, _)) = records.first() else {
                    let detail = format!("entry log {}: array element points outside the run", found.run.log);
                    self.out.push_back(Output::Reply(reply, Reply::Entries(Err(corrupt(detail)))));
                    return;
                };
                let span_end = expected_at.expect("at least one record");
                let at = found.run.offset + first_at;
                let (start, buf, skew) = aligned_span(at, (span_end - first_at) as usize);
                let records = records.iter().map(|(a, len)| (skew + (a - first_at) as usize, *len)).collect();
                let op = self.op_id(OP_READ);
                let log = found.run.log;
                let stage = Stage::RangeRecords { log, at, records, found };
                self.reads.insert(op, PendingRead { range: true, reply, segment, entry: from, stage });
                let file = entry_log_file(log);
                self.out.push_back(Output::Disk(op, DiskOp::Read { file, offset: start, buf }));
                return;
            }
            Stage::RangeRecords { log, at, records, found } => {
                let mut out = Vec::with_capacity(records.len());
                let mut failure = None;
                let mut next_at = at;
                for (i, (offset, len)) in records.iter().enumerate() {
                    let id = from.0 + i as u64;
                    match bytes.get(*offset..).map(|b| run::decode_entry(b, log.0, segment, id)) {
                        Some(Ok(_)) => {
                            let payload_at = offset + RECORD_HEADER_BYTES;
                            out.push((EntryId(id), owner.slice(payload_at..payload_at + *len as usize)));
                            next_at += (RECORD_HEADER_BYTES + *len as usize) as u64;
                        }
                        Some(Err(reason)) => {
                            failure = Some(format!("entry log {log} offset {at}: entry {id}: {reason}"));
                            break;
                        }
                        None => {
                            failure = Some(format!("entry log {log} offset {at}: entry {id} cut off"));
                            break;
                        }
                    }
                }
                self.stats.log_reads += out.len() as u64;
                if failure.is_none() {
                    self.keep_hint(segment, &found, from.0 + out.len() as u64, next_at);
                }
                match (out.is_empty(), failure) {
                    // The damaged entry answers Corrupt when it is first in a later call.
                    (true, Some(detail)) => Err(corrupt(detail)),
                    _ => Ok(out),
                }
            }
            Stage::RangeScan { found, at, skew, count_max, max_bytes } => {
                let log = found.run.log;
                let mut out = Vec::new();
                let mut pos = skew;
                let mut total = 0usize;
                let mut failure = None;
                while (out.len() as u64) < count_max {
                    let id = from.0 + out.len() as u64;
                    // Only whole records are decoded: one cut off by the end of the read is for
                    // the next call.
                    let Some(head) = bytes.get(pos..pos + RECORD_HEADER_BYTES) else { break };
                    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
                    if bytes.len() - pos - RECORD_HEADER_BYTES < len {
                        break;
                    }
                    if !out.is_empty() && total + len > max_bytes {
                        break;
                    }
                    match run::decode_entry(&bytes[pos..], log.0, segment, id) {
                        Ok(payload) => {
                            let payload_at = pos + RECORD_HEADER_BYTES;
                            out.push((EntryId(id), owner.slice(payload_at..payload_at + payload.len())));
                            total += payload.len();
                            pos += RECORD_HEADER_BYTES + payload.len();
                        }
                        Err(reason) => {
                            let offset = at + (pos - skew) as u64;
                            failure = Some(format!("entry log {log} offset {offset}: entry {id}: {reason}"));
                            break;
                        }
                    }
                }
                if out.is_empty() {
                    // Nothing checked out where the footer or the hint said (RR1): the array says
                    // where the record is, and a damaged one answers Corrupt from there.
                    let count = count_max as usize;
                    self.start_range_elements(segment, from, found, count, max_bytes, reply);
                    return;
                }
                self.stats.log_reads += out.len() as u64;
                let next_at = at + (pos - skew) as u64;
                if failure.is_none() {
                    self.keep_hint(segment, &found, from.0 + out.len() as u64, next_at);
                }
                Ok(out)
            }
            _ => unreachable!("a range read"),
        };
        self.out.push_back(Output::Reply(reply, Reply::Entries(result)));
    }
}

fn stage_log(stage: &Stage) -> crate::ids::LogSeq {
    match stage {
        Stage::RangeElements { found, .. } | Stage::RangeScan { found, .. } => found.run.log,
        Stage::RangeRecords { log, .. } => *log,
        _ => unreachable!("a range read"),
    }
}
