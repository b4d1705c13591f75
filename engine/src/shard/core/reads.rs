//! The shard core's read path.
//!
//! With entry logs: the write cache answers at once; otherwise the run index names the run, one
//! aligned read fetches the entry's array element (where its record is), and a second fetches
//! the record, checked (kind, ids, CRC) before it is returned. In `JournalOnly` mode entries
//! are read back from the journal with one aligned read each, checked the same way.
//!
//! An entry whose bytes fail the check answers `Corrupt`; a missing entry answers `NoSuchEntry`
//! unless damage found at open (journal or entry logs) may have held it, then `Corrupt`
//! (recovery must not mistake damage for absence).

use bytes::Bytes;

use super::{OP_READ, Output, ShardCore};
use crate::constants::{RECORD_HEADER_BYTES, SECTOR_BYTES};
use crate::error::Error;
use crate::ids::{EntryId, FileSeq, LogSeq, SegmentId};
use crate::io::buf::{AlignedBuf, round_up};
use crate::io::{Completion, DiskOp};
use crate::journal::record::{self, RecordKind};
use crate::shard::core::flush::entry_log_file;
use crate::shard::location_index::Location;
use crate::shard::request::Reply;
use crate::storage::run::{self, ARRAY_ELEMENT_BYTES};
use crate::storage::run_index::Found;

/// What a read waits for.
#[derive(Debug)]
pub(super) enum Stage {
    /// A journal record (JournalOnly mode).
    Journal { location: Location, skew: usize },
    /// The entry's array element in a run.
    Element { found: Found, skew: usize },
    /// The entry's record in a run.
    Record { log: LogSeq, at: u64, skew: usize },
    /// The array elements of a range's entries in one run section.
    RangeElements { found: Found, count: usize, max_bytes: usize, skew: usize },
    /// The records of a range, contiguous in a run: (offset in the buffer, payload length).
    RangeRecords { log: LogSeq, at: u64, records: Vec<(usize, u32)> },
}

/// Array elements a range read fetches at most (one 512 KiB read).
pub(super) const RANGE_ENTRIES_MAX: u64 = 64 << 10;
/// Bytes of records a range read fetches at most, whatever `max_bytes` says (beyond the first).
pub(super) const RANGE_BYTES_MAX: usize = 16 << 20;

/// A read waiting for its completion.
#[derive(Debug)]
pub(super) struct PendingRead<T> {
    /// For a range read: answer with `Reply::Entries`.
    pub(super) range: bool,
    pub(super) reply: T,
    pub(super) segment: SegmentId,
    pub(super) entry: EntryId,
    pub(super) stage: Stage,
}

impl<T> PendingRead<T> {
    /// The entry log this read uses, if any (compaction keeps it).
    pub(super) fn entry_log(&self) -> Option<LogSeq> {
        match &self.stage {
            Stage::Journal { .. } => None,
            Stage::Element { found, .. } | Stage::RangeElements { found, .. } => Some(found.run.log),
            Stage::Record { log, .. } | Stage::RangeRecords { log, .. } => Some(*log),
        }
    }

    /// The journal file this read holds open, if any (checkpoints keep it).
    pub(super) fn journal_file(&self) -> Option<FileSeq> {
        match self.stage {
            Stage::Journal { location, .. } => Some(location.file),
            _ => None,
        }
    }
}

/// An aligned buffer covering `[at, at + len)`, and the offset of `at` in it.
fn aligned_span(at: u64, len: usize) -> (u64, AlignedBuf, usize) {
    let start = at - at % SECTOR_BYTES as u64;
    let end = round_up((at - start) as usize + len, SECTOR_BYTES);
    let mut buf = AlignedBuf::with_capacity(end);
    buf.set_len(end);
    (start, buf, (at - start) as usize)
}

impl<T> ShardCore<T> {
    fn missing(&self, segment: SegmentId, entry: EntryId) -> Error {
        let storage_damage = self.storage.as_ref().map_or(&[][..], |s| &s.damage[..]);
        if self.damage.is_empty() && storage_damage.is_empty() {
            return Error::NoSuchEntry(segment, entry);
        }
        let all: Vec<&str> = self.damage.iter().chain(storage_damage).map(String::as_str).collect();
        Error::Corrupt {
            segment,
            entry,
            detail: format!("not found, and damage found at open may have held it: {}", all.join("; ")),
        }
    }

    pub(super) fn start_read(&mut self, segment: SegmentId, entry: EntryId, reply: T) {
        if self.segments.get(&segment).is_some_and(|s| s.deleted) {
            self.out.push_back(Output::Reply(reply, Reply::Entry(Err(Error::NoSuchSegment(segment)))));
            return;
        }
        if let Some(storage) = &self.storage {
            if let Some(payload) = storage.cache.get(segment, entry.0) {
                self.stats.cache_reads += 1;
                self.out.push_back(Output::Reply(reply, Reply::Entry(Ok(payload))));
                return;
            }
            if let Some(payload) = storage.read_cache.get(segment, entry.0) {
                self.stats.read_cache_hits += 1;
                self.out.push_back(Output::Reply(reply, Reply::Entry(Ok(payload))));
                return;
            }
            let Some(found) = storage.index.find(segment, entry.0) else {
                let error = self.missing(segment, entry);
                self.out.push_back(Output::Reply(reply, Reply::Entry(Err(error))));
                return;
            };
            let (start, buf, skew) = aligned_span(found.element_at, ARRAY_ELEMENT_BYTES);
            let op = self.op_id(OP_READ);
            let file = entry_log_file(found.run.log);
            self.reads.insert(
                op,
                PendingRead { range: false, reply, segment, entry, stage: Stage::Element { found, skew } },
            );
            self.out.push_back(Output::Disk(op, DiskOp::Read { file, offset: start, buf }));
            return;
        }
        self.start_journal_read(segment, entry, reply, false);
    }

    fn start_journal_read(&mut self, segment: SegmentId, entry: EntryId, reply: T, range: bool) {
        let Some(location) = self.index.get(segment, entry) else {
            let error = self.missing(segment, entry);
            let answer = if range { Reply::Entries(Err(error)) } else { Reply::Entry(Err(error)) };
            self.out.push_back(Output::Reply(reply, answer));
            return;
        };
        let (start, buf, skew) = aligned_span(location.offset, RECORD_HEADER_BYTES + location.len as usize);
        let op = self.op_id(OP_READ);
        let stage = Stage::Journal { location, skew };
        self.reads.insert(op, PendingRead { range, reply, segment, entry, stage });
        self.out.push_back(Output::Disk(op, DiskOp::Read { file: location.file, offset: start, buf }));
    }

    pub(super) fn on_read_completed(&mut self, completion: Completion) {
        let read = self.reads.remove(&completion.op).expect("a read completion belongs to a read");
        let PendingRead { range, reply, segment, entry, stage } = read;
        if range && !matches!(stage, Stage::Journal { .. }) {
            self.on_range_completed(completion, reply, segment, entry, stage);
            return;
        }
        let corrupt = |detail: String| Error::Corrupt { segment, entry, detail };
        let (what, offset) = match &stage {
            Stage::Journal { location, .. } => (format!("journal {}", location.file), location.offset),
            Stage::Element { found, .. } => (format!("entry log {}", found.run.log), found.element_at),
            Stage::Record { log, at, .. } => (format!("entry log {log}"), *at),
            Stage::RangeElements { .. } | Stage::RangeRecords { .. } => {
                unreachable!("range reads answer elsewhere")
            }
        };
        if let Err((op, source)) = completion.result {
            let error = Error::Io { op, file: what.into(), offset, source };
            let answer = if range { Reply::Entries(Err(error)) } else { Reply::Entry(Err(error)) };
            self.out.push_back(Output::Reply(reply, answer));
            return;
        }
        let bytes = &completion.buf.as_slice()[..completion.bytes.min(completion.buf.len())];
        let result = match stage {
            Stage::Journal { location, skew } => match bytes
                .get(skew..)
                .map(|b| record::decode(b, location.file.0))
            {
                Some(Ok((h, payload)))
                    if h.kind == RecordKind::Entry && h.segment_id == segment.0 && h.entry_id == entry.0 =>
                {
                    Ok(Bytes::copy_from_slice(payload))
                }
                other => {
                    Err(corrupt(format!("{what} offset {offset}: {:?}", other.map(|r| r.map(|(h, _)| h)))))
                }
            },
            Stage::Element { found, skew } => {
                let Some(raw) = bytes.get(skew..skew + ARRAY_ELEMENT_BYTES) else {
                    let error = corrupt(format!("{what} offset {offset}: array element cut off"));
                    self.out.push_back(Output::Reply(reply, Reply::Entry(Err(error))));
                    return;
                };
                let (record_at, len) = run::decode_element(raw.try_into().expect("8 bytes"));
                let header = found.run.header;
                let in_run = record_at >= run::RUN_HEADER_BYTES as u64
                    && record_at + (RECORD_HEADER_BYTES as u64 + u64::from(len)) <= header.arrays_at;
                if !in_run || len as usize > self.settings.entry_bytes_max.max(1 << 20) * 2 {
                    Err(corrupt(format!("{what} offset {offset}: array element points outside the run")))
                } else {
                    let at = found.run.offset + record_at;
                    let (start, buf, skew) = aligned_span(at, RECORD_HEADER_BYTES + len as usize);
                    let op = self.op_id(OP_READ);
                    let log = found.run.log;
                    let stage = Stage::Record { log, at, skew };
                    self.reads.insert(op, PendingRead { range: false, reply, segment, entry, stage });
                    self.out.push_back(Output::Disk(
                        op,
                        DiskOp::Read { file: entry_log_file(log), offset: start, buf },
                    ));
                    return;
                }
            }
            Stage::Record { log, at, skew } => {
                match bytes.get(skew..).map(|b| run::decode_entry(b, log.0, segment, entry.0)) {
                    Some(Ok(payload)) => {
                        self.stats.log_reads += 1;
                        let payload = Bytes::copy_from_slice(payload);
                        if let Some(storage) = self.storage.as_mut() {
                            storage.read_cache.insert(segment, entry.0, payload.clone());
                        }
                        Ok(payload)
                    }
                    Some(Err(reason)) => Err(corrupt(format!("entry log {log} offset {at}: {reason}"))),
                    None => Err(corrupt(format!("entry log {log} offset {at}: record cut off"))),
                }
            }
            Stage::RangeElements { .. } | Stage::RangeRecords { .. } => {
                unreachable!("range reads answer elsewhere")
            }
        };
        let answer =
            if range { Reply::Entries(result.map(|b| vec![(entry, b)])) } else { Reply::Entry(result) };
        self.out.push_back(Output::Reply(reply, answer));
    }
}

impl<T> ShardCore<T> {
    /// A range read: from the write cache at once, or from one run section with two reads
    /// (its array elements, then its records as one sequential span).
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
        let count = found.remaining.min(to.0 - from.0 + 1).min(RANGE_ENTRIES_MAX) as usize;
        let (start, buf, skew) = aligned_span(found.element_at, count * ARRAY_ELEMENT_BYTES);
        let op = self.op_id(OP_READ);
        let file = entry_log_file(found.run.log);
        let stage = Stage::RangeElements { found, count, max_bytes, skew };
        self.reads.insert(op, PendingRead { range: true, reply, segment, entry: from, stage });
        self.out.push_back(Output::Disk(op, DiskOp::Read { file, offset: start, buf }));
    }

    fn on_range_completed(
        &mut self,
        completion: Completion,
        reply: T,
        segment: SegmentId,
        from: EntryId,
        stage: Stage,
    ) {
        let corrupt = |detail: String| Error::Corrupt { segment, entry: from, detail };
        if let Err((op, source)) = completion.result {
            let log = match &stage {
                Stage::RangeElements { found, .. } => found.run.log,
                Stage::RangeRecords { log, .. } => *log,
                _ => unreachable!("a range read"),
            };
            let error = Error::Io { op, file: format!("entry log {log}").into(), offset: 0, source };
            self.out.push_back(Output::Reply(reply, Reply::Entries(Err(error))));
            return;
        }
        let bytes = &completion.buf.as_slice()[..completion.bytes.min(completion.buf.len())];
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
                    let error =
                        corrupt(format!("entry log {}: array element points outside the run", found.run.log));
                    self.out.push_back(Output::Reply(reply, Reply::Entries(Err(error))));
                    return;
                };
                let span_end = expected_at.expect("at least one record");
                let at = found.run.offset + first_at;
                let (start, buf, skew) = aligned_span(at, (span_end - first_at) as usize);
                let records = records.iter().map(|(a, len)| (skew + (a - first_at) as usize, *len)).collect();
                let op = self.op_id(OP_READ);
                let log = found.run.log;
                let stage = Stage::RangeRecords { log, at, records };
                self.reads.insert(op, PendingRead { range: true, reply, segment, entry: from, stage });
                let file = entry_log_file(log);
                self.out.push_back(Output::Disk(op, DiskOp::Read { file, offset: start, buf }));
                return;
            }
            Stage::RangeRecords { log, at, records } => {
                let mut out = Vec::with_capacity(records.len());
                let mut failure = None;
                for (i, (offset, _)) in records.iter().enumerate() {
                    let id = from.0 + i as u64;
                    match bytes.get(*offset..).map(|b| run::decode_entry(b, log.0, segment, id)) {
                        Some(Ok(payload)) => out.push((EntryId(id), Bytes::copy_from_slice(payload))),
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
                match (out.is_empty(), failure) {
                    // The damaged entry answers Corrupt when it is first in a later call.
                    (true, Some(detail)) => Err(corrupt(detail)),
                    _ => Ok(out),
                }
            }
            _ => unreachable!("a range read"),
        };
        self.out.push_back(Output::Reply(reply, Reply::Entries(result)));
    }
}
