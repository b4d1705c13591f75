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
    RangeRecords { log: LogSeq, at: u64, records: Vec<(usize, u32)>, found: Found },
    /// The records of a range read from a known offset without their array elements, decoded
    /// in order until `count_max` entries or `max_bytes`.
    RangeScan { found: Found, at: u64, skew: usize, count_max: u64, max_bytes: usize },
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
            Stage::RangeScan { found, .. } => Some(found.run.log),
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
pub(super) fn aligned_span(at: u64, len: usize) -> (u64, AlignedBuf, usize) {
    let start = at - at % SECTOR_BYTES as u64;
    let end = round_up((at - start) as usize + len, SECTOR_BYTES);
    let mut buf = AlignedBuf::with_capacity(end);
    buf.set_len(end);
    (start, buf, (at - start) as usize)
}

impl<T> ShardCore<T> {
    pub(super) fn missing(&self, segment: SegmentId, entry: EntryId) -> Error {
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

    pub(super) fn start_journal_read(&mut self, segment: SegmentId, entry: EntryId, reply: T, range: bool) {
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
            Stage::RangeElements { .. } | Stage::RangeRecords { .. } | Stage::RangeScan { .. } => {
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
                        // Not if the entry was added again while this read was in flight: the
                        // write cache holds the newer bytes.
                        if let Some(storage) = self.storage.as_mut()
                            && storage.cache.get(segment, entry.0).is_none()
                        {
                            storage.read_cache.insert(segment, entry.0, payload.clone());
                        }
                        Ok(payload)
                    }
                    Some(Err(reason)) => Err(corrupt(format!("entry log {log} offset {at}: {reason}"))),
                    None => Err(corrupt(format!("entry log {log} offset {at}: record cut off"))),
                }
            }
            Stage::RangeElements { .. } | Stage::RangeRecords { .. } | Stage::RangeScan { .. } => {
                unreachable!("range reads answer elsewhere")
            }
        };
        let answer =
            if range { Reply::Entries(result.map(|b| vec![(entry, b)])) } else { Reply::Entry(result) };
        self.out.push_back(Output::Reply(reply, answer));
    }
}
