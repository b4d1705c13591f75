//! The shard core's checkpoint and stop paths.
//!
//! A checkpoint (a) accepts only a batch boundary of a live file as its mark, (b) journals a
//! snapshot of every segment's durable state (master key, fence, deletion, LAC) after the mark and waits
//! for it to be durable, then (c) reclaims files wholly before the mark. So replay from the
//! mark always rebuilds fences and keys, whatever was reclaimed: a fenced segment never
//! becomes writable again by a restart. Stopping answers queued work nothing can unblock.

use std::ops::Bound::{Excluded, Unbounded};
use std::time::Instant;

use super::{ShardCore, control_header};
use crate::constants::{JOURNAL_FILE_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::error::Error;
use crate::ids::FileSeq;
use crate::journal::record::{self, RecordKind};
use crate::shard::request::JournalMark;

impl<T> ShardCore<T> {
    /// Whether a checkpoint may name `mark`: not past the durable position, and where a batch
    /// starts (the start of a live file or the end of an acknowledged batch in one), since replay
    /// starts there. Anything else would make the next open read a batch's middle as damage,
    /// or refuse to open.
    pub(super) fn checkpoint_check(&self, mark: JournalMark) -> Result<(), Error> {
        if mark > self.durable {
            return Err(Error::InvalidRequest(format!(
                "checkpoint {mark:?} is past the durable position {:?}",
                self.durable
            )));
        }
        let at_start =
            mark.offset == JOURNAL_FILE_HEADER_BYTES as u64 && self.live_files.contains(&mark.file);
        let at_boundary =
            self.boundaries.get(&mark.file).is_some_and(|b| b.binary_search(&mark.offset).is_ok());
        if !at_start && !at_boundary {
            return Err(Error::InvalidRequest(format!(
                "checkpoint {mark:?} is not a batch boundary of a live journal file"
            )));
        }
        Ok(())
    }

    /// Journals every segment's durable state (master key, fence, deletion, LAC) after the mark,
    /// so that replay from the mark rebuilds it whatever files are reclaimed. Resumable: up to
    /// `cursor.segment_done` are done. Ok(false): stalled, call again.
    pub(super) fn checkpoint_snapshot(&mut self, now: Instant) -> Result<bool, Error> {
        loop {
            let next = match self.cursor.segment_done {
                Some(done) => self.segments.range((Excluded(done), Unbounded)).next(),
                None => self.segments.iter().next(),
            };
            let Some((&segment, state)) = next else { return Ok(true) };
            let key = state.master_key.clone();
            let fenced = state.fenced;
            let deleted = state.deleted;
            let lac = state.last_add_confirmed;
            let need = key.as_ref().map_or(0, |k| record::record_bytes(k.len()))
                + usize::from(fenced) * RECORD_HEADER_BYTES
                + usize::from(deleted) * RECORD_HEADER_BYTES
                + usize::from(lac.is_some()) * RECORD_HEADER_BYTES;
            if need > 0 {
                if !self.ensure_room(need, now) {
                    return Ok(false);
                }
                let batch = self.batch.as_mut().expect("ensure_room opened a batch");
                if let Some(key) = &key {
                    batch.builder.push(&control_header(RecordKind::MasterKey, segment, 0, key.len()), key);
                }
                if fenced {
                    batch.builder.push(&control_header(RecordKind::Fence, segment, 0, 0), &[]);
                }
                if deleted {
                    batch.builder.push(&control_header(RecordKind::Delete, segment, 0, 0), &[]);
                }
                if let Some(lac) = lac {
                    batch.builder.push(&control_header(RecordKind::Lac, segment, lac, 0), &[]);
                }
                self.cursor.placed_in = Some(batch.builder.seq());
            }
            self.cursor.segment_done = Some(segment);
        }
    }

    /// The snapshot for `mark` is durable: reclaim journal files wholly before the mark (none
    /// with a write or read in flight) and drop the index entries before it.
    pub(super) fn checkpoint_complete(&mut self, mark: JournalMark) -> Vec<FileSeq> {
        let active = self.active.as_ref().map(|a| a.seq);
        let in_flight: Vec<FileSeq> = self.in_flight.iter().map(|b| b.file).collect();
        let reads: Vec<FileSeq> = self.reads.values().filter_map(|r| r.journal_file()).collect();
        let (reclaim, keep): (Vec<FileSeq>, Vec<FileSeq>) = self.live_files.iter().partition(|f| {
            **f < mark.file && Some(**f) != active && !in_flight.contains(f) && !reads.contains(f)
        });
        self.live_files = keep;
        for file in &reclaim {
            self.boundaries.remove(file);
        }
        // Everything before the mark is stored elsewhere now: the journal index lets go of it
        // all, including entries in files kept a while longer for reads or writes in flight.
        self.index.remove_files_before(mark.file);
        reclaim
    }

    /// Requests are queued that nothing can unblock: no write or read in flight and no file on
    /// its way.
    pub fn is_stuck(&self) -> bool {
        !self.backlog.is_empty()
            && self.in_flight.is_empty()
            && self.reads.is_empty()
            && self.preparing.is_none()
    }

    /// Answers every queued request, and the open batch's waiters, with `error` (when stopping).
    pub fn abandon(&mut self, error: Error) {
        if let Some(batch) = self.batch.take() {
            for waiter in batch.waiters {
                self.answer(waiter, Err(&error));
            }
            self.recycle_buffer(batch.builder.abandon());
        }
        self.fail_backlog(&error);
        self.fail_lac_waits(&error);
    }
}
