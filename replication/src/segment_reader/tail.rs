//! Following an open segment: the LAC (READ_LAC at start when none is known, LONG_POLL while
//! tailing, updates from the shell; monotonic, R3) and the entry a LONG_POLL brings along.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use dlog_protocol::{LAC_NONE, Request, Response, Status};

use super::ensembles::pick;
use super::window::{Outbox, Pending, Slot};
use super::{Output, Phase, SegmentEnd, SegmentReader, TransportFailure};

/// The LAC reads at start and the LONG_POLL (at most one in flight).
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Tags of the READ_LACs in flight.
    lac_reads: Vec<u64>,
    /// The READ_LACs at start have not answered yet: no LONG_POLL until one does (or all
    /// failed).
    waiting_for_lac: bool,
    /// The tag of the LONG_POLL in flight.
    poll: Option<u64>,
    /// After a failed LONG_POLL: when to send the next.
    retry_at: Option<Instant>,
    /// LONG_POLLs failed in a row (for the backoff).
    failures: u32,
    /// Which healthy member of the write set to poll; moves on after a failure.
    rotation: usize,
}

impl Tail {
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Lets the next LONG_POLL go once its backoff is over.
    pub(super) fn tick(&mut self, now: Instant) {
        self.retry_at = self.retry_at.filter(|at| *at > now);
    }

    /// No more LAC reads or polls (the segment closed, or the reader stopped): their answers
    /// will be stale.
    pub(super) fn stop<B: Clone>(&mut self, outbox: &mut Outbox<B>) {
        outbox.forget(self.poll.take());
        outbox.forget(self.lac_reads.drain(..));
        self.waiting_for_lac = false;
        self.retry_at = None;
    }
}

impl<B: Clone + PartialEq + fmt::Debug> SegmentReader<B> {
    /// An open segment with no LAC known: READ_LAC (not fenced) to every bookie of the last
    /// ensemble.
    pub(super) fn start_lac_reads(&mut self) {
        if self.end != (SegmentEnd::Open { last_add_confirmed: None }) {
            return;
        }
        for bookie in self.ensembles.last().to_vec() {
            let request = Request::ReadLastAddConfirmed { segment: self.segment_id, fence: None };
            let tag = self.outbox.send(bookie.clone(), Pending::ReadLac { bookie }, request);
            self.tail.lac_reads.push(tag);
            self.stats.lac_reads += 1;
        }
        self.tail.waiting_for_lac = true;
    }

    /// Takes `last_add_confirmed` if it is larger than the LAC known (R3); false if not, or if
    /// the segment is closed or the reader stopped.
    pub(super) fn advance_lac(&mut self, last_add_confirmed: Option<u64>) -> bool {
        if self.phase != Phase::Reading {
            return false;
        }
        let SegmentEnd::Open { last_add_confirmed: known } = &mut self.end else { return false };
        match last_add_confirmed {
            Some(lac) if lac != LAC_NONE && Some(lac) > *known => {
                *known = Some(lac);
                self.outbox.outputs.push_back(Output::LastAddConfirmed(lac));
                true
            }
            _ => false,
        }
    }

    pub(super) fn on_lac_answer(
        &mut self,
        tag: u64,
        bookie: B,
        result: Result<Response, TransportFailure>,
        now: Instant,
    ) {
        self.tail.lac_reads.retain(|other| *other != tag);
        match result {
            Ok(Response::ReadLastAddConfirmed { last_add_confirmed }) => {
                self.advance_lac(last_add_confirmed);
                self.tail.waiting_for_lac = false;
            }
            // No entry reached that bookie yet: it knows no LAC, and that is an answer.
            Ok(Response::Refused { status: Status::NoSuchSegment, .. }) => self.tail.waiting_for_lac = false,
            Ok(Response::Refused { status: Status::Unauthorized, message, .. }) => {
                self.refused_access(message)
            }
            Ok(_) | Err(_) => {
                self.health.suspect(&bookie, now, self.settings.suspect_duration);
                if self.tail.lac_reads.is_empty() {
                    self.tail.waiting_for_lac = false;
                }
            }
        }
    }

    /// Keeps one LONG_POLL in flight on an open segment once every entry up to the LAC has
    /// been asked for, on a member of W(n), healthy first, n the next entry to read (LAC + 1,
    /// unless the reader started past it).
    pub(super) fn poll_if_needed(&mut self, now: Instant) {
        let SegmentEnd::Open { last_add_confirmed: known } = self.end else { return };
        let tail = &self.tail;
        if self.phase != Phase::Reading
            || self.unreadable.is_some()
            || tail.waiting_for_lac
            || tail.poll.is_some()
            || tail.retry_at.is_some()
            || known.is_some_and(|lac| self.window.end() <= lac)
        {
            return;
        }
        // Wait for the next entry to read: past the LAC, or past `first_entry - 1` when the
        // reader starts beyond the LAC (the bookie only compares its LAC with `known`).
        let known = known.max(self.window.end().checked_sub(1));
        let next = known.map_or(0, |lac| lac + 1);
        let candidates = self.ensembles.candidates(&self.quorum, next, &self.health, now);
        let bookie = pick(&candidates, &self.health, self.tail.rotation, now);
        let timeout_ms = u32::try_from(self.settings.long_poll_timeout.as_millis()).unwrap_or(u32::MAX);
        let request = Request::LongPoll { segment: self.segment_id, known, timeout_ms };
        let tag = self.outbox.send(bookie.clone(), Pending::LongPoll { known, bookie }, request);
        self.tail.poll = Some(tag);
        self.stats.long_polls += 1;
    }

    pub(super) fn on_poll_answer(
        &mut self,
        known: Option<u64>,
        bookie: B,
        result: Result<Response, TransportFailure>,
        now: Instant,
    ) {
        self.tail.poll = None;
        match result {
            Ok(Response::LongPoll { last_add_confirmed, entry }) => {
                self.tail.failures = 0;
                // A LAC not past the one known: the wait timed out (or the bookie lags): the
                // same bookie is polled again.
                if !self.advance_lac(last_add_confirmed) {
                    self.stats.long_poll_timeouts += 1;
                }
                if let Some((id, stored)) = entry {
                    self.take_piggyback(known, id, stored, bookie, now);
                }
                return;
            }
            // No entry reached that bookie yet: not its fault.
            Ok(Response::Refused { status: Status::NoSuchSegment, .. }) => {}
            Ok(Response::Refused { status: Status::Unauthorized, message, .. }) => {
                return self.refused_access(message);
            }
            Ok(_) | Err(_) => self.health.suspect(&bookie, now, self.settings.suspect_duration),
        }
        self.stats.long_poll_failures += 1;
        self.tail.failures += 1;
        self.tail.rotation = self.tail.rotation.wrapping_add(1);
        self.tail.retry_at = Some(now + self.settings.backoff(self.tail.failures));
    }

    /// The entry after `known` that came with a LONG_POLL answer from `bookie`: taken if within
    /// the LAC (R2), it is the next entry to read (with room in the window, R4) or one being
    /// read, and its envelope checks (R7). Bytes that do not check are a corrupt replica: not
    /// taken, `bookie` reported and asked last; an entry being read counts it as asked in its
    /// round and asks the next member, as for a `Corrupt` READ answer.
    fn take_piggyback(&mut self, known: Option<u64>, entry: u64, stored: Bytes, bookie: B, now: Instant) {
        let expected = known.map_or(Some(0), |lac| lac.checked_add(1));
        if Some(entry) != expected || self.readable_end().is_none_or(|end| entry > end) {
            return;
        }
        let next = entry == self.window.end();
        let room = self.window.len() < self.settings.read_ahead_entries
            && self.window.bytes() < self.settings.read_ahead_bytes
            && self.unreadable.is_none();
        if !(next && room) && self.window.reading_mut(entry).is_none() {
            return;
        }
        let Some(payload) = self.open_envelope(entry, &stored) else {
            let mut ask_next = false;
            if let Some(read) = self.window.reading_mut(entry)
                && read.retry_at.is_none()
                && !read.asked.contains(&bookie)
            {
                read.asked.push(bookie.clone());
                ask_next = true;
            }
            self.corrupt_reply(entry, bookie, now);
            if ask_next {
                self.after_failure(entry, now);
            }
            return;
        };
        if next {
            self.window.push(Slot::Ready(payload));
        } else {
            let forget = self.window.resolve(entry, payload).unwrap_or_default();
            self.outbox.forget(forget);
        }
        self.stats.piggybacked_entries += 1;
    }
}
