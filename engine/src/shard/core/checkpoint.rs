//! The shard core's checkpoint and stop paths: which journal files a checkpoint reclaims (and
//! which marks it accepts), and how queued work is answered when a shard stops.

use super::{Cursor, ShardCore, clone_error};
use crate::constants::JOURNAL_FILE_HEADER_BYTES;
use crate::error::Error;
use crate::ids::FileSeq;
use crate::shard::request::JournalMark;

impl<T> ShardCore<T> {
    pub(super) fn checkpoint(&mut self, mark: JournalMark) -> Result<Vec<FileSeq>, Error> {
        if mark > self.durable {
            return Err(Error::InvalidRequest(format!(
                "checkpoint {mark:?} is past the durable position {:?}",
                self.durable
            )));
        }
        // Replay starts at the mark, so it must be where a batch starts: the start of a live
        // file or the end of an acknowledged batch in one. Anything else would make the next
        // open read a batch's middle as damage (or refuse to open).
        let at_start =
            mark.offset == JOURNAL_FILE_HEADER_BYTES as u64 && self.live_files.contains(&mark.file);
        let at_boundary =
            self.boundaries.get(&mark.file).is_some_and(|b| b.binary_search(&mark.offset).is_ok());
        if !at_start && !at_boundary {
            return Err(Error::InvalidRequest(format!(
                "checkpoint {mark:?} is not a batch boundary of a live journal file"
            )));
        }
        let active = self.active.as_ref().map(|a| a.seq);
        let in_flight: Vec<FileSeq> = self.in_flight.iter().map(|b| b.file).collect();
        let reads: Vec<FileSeq> = self.reads.values().map(|r| r.location.file).collect();
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
        // Replay starts at the mark, so key records before it are gone from the journal's
        // point of view: journal each key again on next use. Fence and LAC state outlive the
        // checkpoint only once segment storage persists them (the checkpoint's other half,
        // delivered with segment storage).
        for state in self.segments.values_mut() {
            state.key_journaled = false;
        }
        Ok(reclaim)
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
        let backlog = std::mem::take(&mut self.backlog);
        self.cursor = Cursor::default();
        for request in backlog {
            self.fail_request(request, clone_error(&error));
        }
    }
}
