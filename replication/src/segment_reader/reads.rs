//! Reading entries: filling the window (a READ per entry, a READ_RANGE to catch up), what
//! their answers mean, speculative reads and retry rounds, and delivery in entry order.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use dlog_protocol::{RANGE_ENTRIES_MAX, Request, Response, Status};

use super::ensembles::pick;
use super::window::{EntryRead, Pending, RangeRead, Slot};

use super::{Output, Phase, ReaderError, SegmentEnd, SegmentReader, TransportFailure};
use crate::entry_envelope;

impl<B: Clone + PartialEq + fmt::Debug> SegmentReader<B> {
    /// The answer to a request still waited for (R6).
    pub(super) fn on_answer(
        &mut self,
        tag: u64,
        pending: Pending<B>,
        result: Result<Response, TransportFailure>,
        now: Instant,
    ) {
        match pending {
            Pending::Read { entry, bookie } => self.on_read_answer(tag, entry, bookie, result, now),
            Pending::Range => self.on_range_answer(tag, result, now),
            Pending::LongPoll { known, bookie } => self.on_poll_answer(known, bookie, result, now),
            Pending::ReadLac { bookie } => self.on_lac_answer(tag, bookie, result, now),
        }
    }

    /// The caller's payload of `entry` (a slice of `stored`, no copy) if `stored` is that
    /// entry's envelope in this segment (R7); `None`, counted, if it is not: damaged bytes, or
    /// another entry's or segment's. The caller treats `None` as a `Corrupt` answer.
    pub(super) fn open_envelope(&mut self, entry: u64, stored: &Bytes) -> Option<Bytes> {
        match entry_envelope::decode(self.segment_id, entry, stored) {
            Ok((_, payload)) => Some(payload),
            Err(_) => {
                self.stats.bad_envelopes += 1;
                None
            }
        }
    }

    /// `bookie` answered `Corrupt` for `entry`, or bytes that are not its envelope (R7): it is
    /// asked last for a while and reported for the auditor.
    pub(super) fn corrupt_reply(&mut self, entry: u64, bookie: B, now: Instant) {
        self.stats.corrupt_replies += 1;
        self.health.suspect(&bookie, now, self.settings.suspect_duration);
        self.outbox.outputs.push_back(Output::BadReplica { entry, bookie });
    }

    /// Delivers the entries ready in order (R1, R5), then the error of an unreadable entry in
    /// its place, or the end of a closed segment.
    pub(super) fn deliver(&mut self) {
        while self.phase == Phase::Reading {
            let entry = self.next_deliver;
            if let Some(payload) = self.window.deliver(entry) {
                self.outbox.outputs.push_back(Output::Entry { entry, payload });
                self.next_deliver += 1;
            } else if matches!(self.window.get(entry), Some(Slot::Unreadable)) {
                let rounds = self.settings.read_rounds_max;
                self.stop(Phase::Failed(ReaderError::Unreadable { entry, rounds }));
            } else {
                break;
            }
        }
        if self.phase == Phase::Reading
            && let SegmentEnd::Closed { last_entry } = self.end
            && last_entry.is_none_or(|last| self.next_deliver > last)
        {
            self.stop(Phase::Ended);
        }
    }

    /// The shortest run read with READ_RANGE, when ranges are on and every bookie of an
    /// ensemble holds every entry of it (E == Qw).
    fn range_min(&self) -> Option<u64> {
        let whole = self.quorum.write_quorum_size() == self.quorum.ensemble_size();
        self.settings.range_read_entries_min.filter(|_| whole).map(|min| min as u64)
    }

    /// Starts reading the next entries while the window has room (R4), up to the known end
    /// (R2), and not past an unreadable entry (R5).
    pub(super) fn fill(&mut self, now: Instant) {
        while self.phase == Phase::Reading
            && self.unreadable.is_none()
            && self.ranges.len() < self.settings.ranges_in_flight
        {
            let next = self.window.end();
            let Some(end) = self.readable_end().filter(|end| next <= *end) else { return };
            let room = self.settings.read_ahead_entries.saturating_sub(self.window.len()) as u64;
            if room == 0 || self.window.bytes() + self.range_reserved() >= self.settings.read_ahead_bytes {
                return;
            }
            // A range stays within one ensemble: the next one may have other bookies.
            let run_last = self.ensembles.last_of(next).map_or(end, |last| last.min(end));
            let remaining = run_last - next + 1;
            if let Some(min) = self.range_min().filter(|min| remaining >= *min) {
                // Catching up: wait for room for a whole range rather than read one by one.
                // A share of the window, so the next range can go out while this one is read.
                let share = (self.settings.read_ahead_entries / self.settings.ranges_in_flight) as u64;
                let mut count = remaining.min(room).min(RANGE_ENTRIES_MAX as u64).min(share.max(min));
                // Within the bytes one range may bring, at the size entries had so far.
                let max_bytes = self.range_bytes();
                if let Some(per_entry) = self.range_entry_bytes.filter(|b| *b > 0) {
                    count = count.min((max_bytes / per_entry).max(min));
                }
                if count < min {
                    return;
                }
                self.send_range(next, next + count - 1, max_bytes, now);
                continue;
            }
            self.window.push(Slot::Reading(EntryRead::new(Vec::new())));
            self.ask_next(next, now);
        }
    }

    /// Bytes the ranges in flight may still bring (R4 counts them as held).
    fn range_reserved(&self) -> u64 {
        self.ranges.iter().map(|r| r.max_bytes).sum()
    }

    /// The bytes the next range may bring: its share of the read-ahead left, so that
    /// `ranges_in_flight` ranges fit in it together (R4).
    fn range_bytes(&self) -> u64 {
        let left = self.settings.read_ahead_bytes.saturating_sub(self.window.bytes() + self.range_reserved());
        let share = self.settings.read_ahead_bytes / self.settings.ranges_in_flight as u64;
        left.min(share.max(1)).min(u64::from(u32::MAX))
    }

    /// Starts a range at the window's end: its slots are pushed, it is the last in flight.
    fn send_range(&mut self, first: u64, last: u64, max_bytes: u64, now: Instant) {
        for _ in first..=last {
            self.window.push(Slot::Ranged);
        }
        let range = self.ask_range(first, last, max_bytes, now);
        self.ranges.push(range);
    }

    /// Sends a READ_RANGE for `first..=last` within `max_bytes` to a healthy member, rotating.
    fn ask_range(&mut self, first: u64, last: u64, max_bytes: u64, now: Instant) -> RangeRead<B> {
        // Ensemble order, not W(first)'s, so that rotating moves to another bookie.
        let members = self.ensembles.members(first, &self.health, now);
        let bookie = pick(&members, &self.health, self.range_rotation, now);
        self.range_rotation = self.range_rotation.wrapping_add(1);
        let wire_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX);
        let request = Request::ReadRange { segment: self.segment_id, first, last, max_bytes: wire_bytes };
        let tag = self.outbox.send(bookie.clone(), Pending::Range, request);
        self.stats.range_reads += 1;
        let give_up_at = now + self.settings.range_read_timeout;
        RangeRead { tag, first, last, bookie, give_up_at, max_bytes }
    }

    /// Asks the next member of the write set of `entry` not asked in this round, healthy ones
    /// first; arms the speculative read if another is left. False if none is left.
    fn ask_next(&mut self, entry: u64, now: Instant) -> bool {
        let candidates = self.ensembles.candidates(&self.quorum, entry, &self.health, now);
        let Some(read) = self.window.reading_mut(entry) else { return false };
        let mut untried = candidates.into_iter().filter(|bookie| !read.asked.contains(bookie));
        let Some(bookie) = untried.next() else {
            read.speculate_at = None;
            return false;
        };
        read.speculate_at = untried.next().map(|_| now + self.settings.speculative_timeout);
        read.asked.push(bookie.clone());
        let request = Request::Read { segment: self.segment_id, entry, fence: None };
        let tag = self.outbox.send(bookie.clone(), Pending::Read { entry, bookie }, request);
        read.in_flight.push(tag);
        self.stats.reads += 1;
        true
    }

    /// A member failed `entry`: ask the next; when none is left and none is in flight, the
    /// round failed.
    pub(super) fn after_failure(&mut self, entry: u64, now: Instant) {
        if self.ask_next(entry, now) {
            return;
        }
        if self
            .window
            .reading_mut(entry)
            .is_some_and(|read| read.in_flight.is_empty() && read.retry_at.is_none())
        {
            self.round_failed(entry, now);
        }
    }

    /// Every member of the write set failed `entry` in this round: a new round after the
    /// backoff, or, after `read_rounds_max` rounds, the entry is unreadable and nothing after
    /// it is read (R5).
    fn round_failed(&mut self, entry: u64, now: Instant) {
        let Some(read) = self.window.reading_mut(entry) else { return };
        read.round += 1;
        if read.round < self.settings.read_rounds_max {
            read.asked.clear();
            read.speculate_at = None;
            read.retry_at = Some(now + self.settings.backoff(read.round));
            return;
        }
        if let Some(slot) = self.window.get_mut(entry) {
            *slot = Slot::Unreadable;
        }
        self.unreadable = Some(entry);
        let forget = self.window.truncate(entry + 1);
        self.outbox.forget(forget);
        // The ranges after it held entries that were just dropped (none holds `entry`: it was
        // read on its own).
        let dropped: Vec<u64> = self.ranges.iter().filter(|r| r.first > entry).map(|r| r.tag).collect();
        self.ranges.retain(|r| r.first <= entry);
        debug_assert!(self.ranges.iter().all(|r| r.last < entry));
        self.outbox.forget(dropped);
    }

    fn on_read_answer(
        &mut self,
        tag: u64,
        entry: u64,
        bookie: B,
        result: Result<Response, TransportFailure>,
        now: Instant,
    ) {
        // A READ is waited for only while its entry is being read (`Window::resolve` and
        // `truncate` hand back the tags to forget).
        let Some(read) = self.window.reading_mut(entry) else {
            unreachable!("a READ of entry {entry} waited for, but the entry is not being read")
        };
        read.in_flight.retain(|other| *other != tag);
        match result {
            Ok(Response::Read { segment, entry: got, payload: stored })
                if segment == self.segment_id && got == entry =>
            {
                let Some(payload) = self.open_envelope(entry, &stored) else {
                    // Bad bytes are a corrupt replica, never the entry nor its absence (R7).
                    self.corrupt_reply(entry, bookie, now);
                    self.after_failure(entry, now);
                    return;
                };
                let forget = self.window.resolve(entry, payload).unwrap_or_default();
                // The other replicas' answers will be stale (R6).
                self.outbox.forget(forget);
                return;
            }
            Ok(Response::Refused { status: Status::NoSuchEntry | Status::NoSuchSegment, .. }) => {
                self.stats.missing_replies += 1;
            }
            Ok(Response::Refused { status: Status::Corrupt, .. }) => self.corrupt_reply(entry, bookie, now),
            Ok(Response::Refused { status: Status::Unauthorized, message, .. }) => {
                return self.refused_access(message);
            }
            Ok(_) | Err(_) => {
                self.stats.read_failures += 1;
                self.health.suspect(&bookie, now, self.settings.suspect_duration);
            }
        }
        self.after_failure(entry, now);
    }

    fn on_range_answer(&mut self, tag: u64, result: Result<Response, TransportFailure>, now: Instant) {
        let Some(at) = self.ranges.iter().position(|r| r.tag == tag) else {
            unreachable!("a READ_RANGE waited for without its range")
        };
        let RangeRead { first, last, bookie, max_bytes, .. } = self.ranges.remove(at);
        let mut next = first;
        let mut stored_bytes = 0u64;
        // `next` came back corrupt from `bookie`: a Corrupt status, or bytes that are not its
        // envelope (R7).
        let mut corrupt = false;
        match result {
            Ok(Response::ReadRange { entries }) => {
                // Consecutive entries from `first`, within `last`; anything else ends the batch,
                // and so does an entry whose envelope does not check (the good prefix is kept).
                for (entry, stored) in entries {
                    if entry != next || entry > last {
                        break;
                    }
                    let Some(payload) = self.open_envelope(entry, &stored) else {
                        corrupt = true;
                        break;
                    };
                    let forget = self.window.resolve(entry, payload);
                    debug_assert_eq!(forget, Some(Vec::new()), "ranged entries are read by their range only");
                    stored_bytes += stored.len() as u64;
                    next += 1;
                }
                if next > first {
                    self.range_entry_bytes = Some(stored_bytes.div_ceil(next - first));
                }
                if next <= last {
                    self.stats.short_ranges += 1;
                }
            }
            Ok(Response::Refused { status: Status::NoSuchEntry | Status::NoSuchSegment, .. }) => {
                self.stats.missing_replies += 1;
            }
            // A range answers Corrupt only for its first entry.
            Ok(Response::Refused { status: Status::Corrupt, .. }) => corrupt = true,
            Ok(Response::Refused { status: Status::Unauthorized, message, .. }) => {
                return self.refused_access(message);
            }
            Ok(_) | Err(_) => {
                self.stats.read_failures += 1;
                self.health.suspect(&bookie, now, self.settings.suspect_duration);
            }
        }
        if corrupt {
            self.corrupt_reply(next, bookie.clone(), now);
        }
        if next == first {
            self.stats.failed_ranges += 1;
        }
        // What the rest may still bring: the answered range's reservation less what came.
        let left = max_bytes.saturating_sub(stored_bytes);
        if next == first || corrupt {
            self.range_to_entry_read(next, last, bookie, left, now);
        } else if next <= last {
            self.range_rest(next, last, left, now);
        }
    }

    /// Entries `from..=last` of a range did not come (a byte cap, the end of a source on the
    /// bookie, a failure). If they end the window, the next range asks them (`fill`, within
    /// the bytes left then, R4); before a later range, they are asked again at once as a range
    /// of their own in its place, within what the first one had reserved (`left`; the server
    /// gives at least one entry), so the bytes held stay bounded.
    fn range_rest(&mut self, from: u64, last: u64, left: u64, now: Instant) {
        if self.window.end() == last + 1 {
            let forget = self.window.truncate(from);
            debug_assert!(forget.is_empty());
            return;
        }
        let range = self.ask_range(from, last, left.max(1), now);
        // In entry order: the later ranges come after it.
        let at = self.ranges.iter().position(|r| r.first > last).unwrap_or(self.ranges.len());
        self.ranges.insert(at, range);
    }

    /// The range gave nothing usable for `entry` (its first, or the first whose envelope
    /// failed): `entry` is read on its own (`bookie` counted as asked), the rest of the range
    /// (to `last`) as `range_rest` says.
    fn range_to_entry_read(&mut self, entry: u64, last: u64, bookie: B, left: u64, now: Instant) {
        if entry < last {
            self.range_rest(entry + 1, last, left, now);
        }
        if let Some(slot) = self.window.get_mut(entry) {
            *slot = Slot::Reading(EntryRead::new(vec![bookie]));
        }
        self.after_failure(entry, now);
    }

    /// Gives up the READ_RANGEs in flight that had no answer in time: their answers will be
    /// stale.
    pub(super) fn tick_range(&mut self, now: Instant) {
        // The rests asked again get a later deadline: the loop ends.
        while let Some(at) = self.ranges.iter().position(|range| range.give_up_at <= now) {
            let range = self.ranges.remove(at);
            self.outbox.forget([range.tag]);
            self.health.suspect(&range.bookie, now, self.settings.suspect_duration);
            self.stats.failed_ranges += 1;
            self.range_to_entry_read(range.first, range.last, range.bookie, range.max_bytes, now);
        }
    }

    /// Starts the rounds whose backoff ended, and speculative reads whose time came (the
    /// members still silent become suspect).
    pub(super) fn tick_entries(&mut self, now: Instant) {
        let due: Vec<(u64, bool)> = self
            .window
            .reading()
            .filter_map(|(entry, read)| {
                let retry = read.retry_at.is_some_and(|at| at <= now);
                let speculate = read.speculate_at.is_some_and(|at| at <= now);
                (retry || speculate).then_some((entry, retry))
            })
            .collect();
        for (entry, retry) in due {
            let Some(read) = self.window.reading_mut(entry) else { continue };
            if retry {
                read.retry_at = None;
                self.stats.retry_rounds += 1;
                self.after_failure(entry, now);
                continue;
            }
            read.speculate_at = None;
            for tag in &read.in_flight {
                if let Some(Pending::Read { bookie, .. }) = self.outbox.get(*tag) {
                    self.health.suspect(bookie, now, self.settings.suspect_duration);
                }
            }
            if self.ask_next(entry, now) {
                self.stats.speculative_reads += 1;
            }
        }
    }
}
