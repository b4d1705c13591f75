//! `SegmentWriter`: the sans-I/O write path of one open segment
//! (docs/rfcs/2026-11-26-replication.md, "Write path").
//!
//! Owns: entry ids, the stored form of each entry (`entry_envelope`: checksum and cumulative
//! length), the window of entries held, each entry's acks (`AckSet`), completions in
//! entry order, `last_add_confirmed` (LAC) piggybacked on ADDs and written explicitly
//! (WRITE_LAC) when idle, what a bookie's answer means (ack, a failure of that bookie for that
//! entry, or fatal: `Fenced`, `WrongMasterKey`), ensemble changes (which members to replace and
//! from which entry, re-sending to the replacements), and the close request.
//! Does not own: sockets, clocks, timers, placement, the segment metadata. Inputs are method
//! calls (`add`, `on_response`, `on_ensemble_changed`, `on_tick`, `close`, `on_closed`) that
//! take the time as `now`; outputs queue up and the shell drains them with `poll_output`:
//! requests to send to an ensemble index under a `Tag`, completions, LAC advances, bookie
//! failures, the ensemble change and the close to perform on the metadata. The shell maps
//! ensemble indexes to connections and feeds `Connection::completions()` back in as
//! `on_response`, naming the bookie that answered.
//!
//! Ensemble change (BookKeeper's): when a member fails an ADD (error answer or none), the
//! writer stops sending to it and asks the shell to replace it from the first entry not yet
//! completed (`Output::ChangeEnsemble`). Completions wait until the shell answers. If the new
//! ensemble landed in the metadata, every held entry from that first entry is re-sent to the
//! replacements, and their acks count instead of the replaced members'. If the metadata is no
//! longer Open, the writer stops with `Fenced`. If only some could be replaced, the rest stay
//! failed for the next attempt. If none could be, the writer goes on with the members it has
//! and sends again to the failed ones (a member may only be slow), trying the change again
//! after `ensemble_change_retry`; after `ensemble_change_attempts_max` failed changes in a row,
//! an entry that cannot reach Qa fails (`QuorumUnreachable`), and so does every entry after it
//! (a log has no holes).
//!
//! Invariants:
//! - W1 (order): `Output::Completed` comes out for entries 0, 1, 2, ... in order, exactly once
//!   each: an entry completes only after every entry before it completed.
//! - W2 (LAC): the LAC is the last entry that completed `Ok`, and every entry up to it completed
//!   `Ok`; it never moves back. `Output::LastAddConfirmed` reports each advance. The LAC sent on
//!   an ADD or a WRITE_LAC is the LAC at the time it is sent. An idle writer writes its LAC to
//!   every member of the current ensemble.
//! - W3 (acknowledgement): an entry completes `Ok` only once Qa distinct members of its write
//!   set, in the ensemble that holds the entry, answered its ADD with success
//!   (`AckSet::is_complete`); nothing else counts.
//! - W4 (fencing): once any bookie answers `Fenced` (or `WrongMasterKey`), or an ensemble change
//!   finds the segment no longer Open, no entry completes `Ok` any more: every entry not yet
//!   completed completes with that error, in order, and new adds are refused with it.
//! - W5 (memory): at most `window_entries_max` entries are held (not completed, or with a
//!   request still in flight: a record is kept until every request for it was answered, so
//!   answers are deduplicated), and the payload bytes of the entries not yet completed are at
//!   most `window_bytes_max`. `add` refuses beyond (`WindowFull`); it never queues.
//! - W6 (answers): each request sent is answered at most once: an answer whose tag names no
//!   request in flight (a duplicate, a stale answer, a made-up tag), or that comes from a
//!   bookie other than the one the tag's index names in the ensemble holding the entry (a
//!   replaced member), is ignored and counted in `WriterStats::ignored_responses`.
//! - W7 (ensemble change): while a change from entry F is in flight, no entry completes `Ok`
//!   (every entry from F waits for it). Once it landed, the acks of the replaced members for
//!   entries from F are forgotten and those entries are sent to the replacements, so an entry
//!   from F completes with Qa acks of members of the new ensemble: the one the metadata names
//!   for it. At most one change is in flight; members failing meanwhile go into the next.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use dlog_protocol::{MASTER_KEY_BYTES_MAX, Request, Response, Status};

use crate::entry_envelope;
use crate::quorum::{AckOutcome, AckSet, BookieSet, FailureOutcome, QuorumSizes};

mod tag;
mod types;

pub use tag::{ENTRY_ID_LIMIT, Tag, TagKind, TransportFailure};
pub use types::{EnsembleChangeError, Output, SetupError, WriterError, WriterSettings, WriterStats};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// `close` was called: waiting for every entry to complete.
    Draining,
    /// `CloseRequested` emitted: waiting for `on_closed`.
    AwaitingMetadata,
    Closed,
}

#[derive(Debug)]
struct Record {
    /// The stored bytes (`entry_envelope`); emptied once the entry completed (no ensemble
    /// change re-sends it).
    payload: Bytes,
    /// The caller's payload bytes.
    user_bytes: u64,
    acks: AckSet,
    /// The members with an ADD of this entry in flight.
    outstanding: BookieSet,
    completed: bool,
}

/// What an answer means.
enum Verdict {
    Success,
    Fatal(WriterError),
    /// The entry itself was refused: no replacement helps.
    EntryRefused(String),
    Failure,
}

fn judge(result: Result<Response, TransportFailure>, expected: impl Fn(&Response) -> bool) -> Verdict {
    match result {
        Ok(Response::Refused { status: Status::Fenced, .. }) => Verdict::Fatal(WriterError::Fenced),
        Ok(Response::Refused { status: Status::WrongMasterKey, .. }) => {
            Verdict::Fatal(WriterError::WrongMasterKey)
        }
        Ok(Response::Refused { status: Status::Unauthorized, message, .. }) => {
            Verdict::Fatal(WriterError::Unauthorized(message))
        }
        Ok(response) if expected(&response) => Verdict::Success,
        Ok(Response::Refused {
            status: status @ (Status::TooLarge | Status::BadRequest), message, ..
        }) => Verdict::EntryRefused(format!("{status:?}: {message}")),
        Err(TransportFailure::Invalid) => Verdict::EntryRefused("refused before sending (limits)".into()),
        // Another refusal (ReadOnly, Internal, Overloaded...), an answer that does not match the
        // request, or no answer: that bookie failed that request.
        Ok(_) | Err(_) => Verdict::Failure,
    }
}

/// The write path of one segment (see the module doc for its invariants). `B` is whatever the
/// shell identifies a bookie by; the writer sends by ensemble index and checks who answered.
#[derive(Debug)]
pub struct SegmentWriter<B> {
    segment_id: u64,
    master_key: Bytes,
    quorum: QuorumSizes,
    /// The ensembles of the held entries, by first entry; the last one is the current one.
    ensembles: BTreeMap<u64, Vec<B>>,
    settings: WriterSettings,
    phase: Phase,
    /// The first entry that fails, and with what. Entries from it on complete with the error.
    failure: Option<(u64, WriterError)>,
    /// Held entries `first_held..next_entry` (W5).
    records: VecDeque<Record>,
    first_held: u64,
    /// Entries before it have completed (W1).
    first_uncompleted: u64,
    next_entry: u64,
    /// Payload bytes of the held entries not yet completed.
    uncompleted_bytes: u64,
    last_add_confirmed: Option<u64>,
    /// Payload bytes of entries `0..=last_add_confirmed`.
    length: u64,
    /// Payload bytes of entries `0..next_entry`.
    added_length: u64,
    /// The largest LAC sent, piggybacked or explicit.
    lac_sent: Option<u64>,
    last_add_at: Instant,
    /// WRITE_LACs in flight: (LAC, ensemble index).
    lac_writes: BTreeSet<(u64, usize)>,
    /// Members of the current ensemble that failed and are not replaced yet: no ADD goes to
    /// them (each new entry records them as failed at once).
    failed_members: BookieSet,
    /// The ensemble change in flight: its first entry and the indexes it replaces (W7).
    change: Option<(u64, BookieSet)>,
    /// After a failed change: when to try again, and why it failed.
    change_retry: Option<(Instant, String)>,
    /// Ensemble changes that failed in a row (no replacement).
    failed_changes: u32,
    outputs: VecDeque<Output>,
    stats: WriterStats,
}

impl<B: Clone + PartialEq> SegmentWriter<B> {
    /// A writer for the open segment `segment_id` (no entry written yet) over `ensemble`
    /// (`quorum.ensemble_size()` bookies, by ensemble index).
    pub fn new(
        segment_id: u64,
        master_key: Bytes,
        quorum: QuorumSizes,
        ensemble: Vec<B>,
        settings: WriterSettings,
        now: Instant,
    ) -> Result<Self, SetupError> {
        if ensemble.len() != quorum.ensemble_size() {
            return Err(SetupError::EnsembleSize {
                expected: quorum.ensemble_size(),
                actual: ensemble.len(),
            });
        }
        if settings.window_entries_max == 0 {
            return Err(SetupError::Zero("window_entries_max"));
        }
        if settings.ensemble_change_attempts_max == 0 {
            return Err(SetupError::Zero("ensemble_change_attempts_max"));
        }
        if settings.window_bytes_max == 0 {
            return Err(SetupError::Zero("window_bytes_max"));
        }
        if settings.entry_bytes_max == 0 {
            return Err(SetupError::Zero("entry_bytes_max"));
        }
        if master_key.len() > MASTER_KEY_BYTES_MAX {
            return Err(SetupError::MasterKeyTooLong(master_key.len()));
        }
        Ok(SegmentWriter {
            segment_id,
            master_key,
            quorum,
            ensembles: BTreeMap::from([(0, ensemble)]),
            settings,
            phase: Phase::Open,
            failure: None,
            records: VecDeque::new(),
            first_held: 0,
            first_uncompleted: 0,
            next_entry: 0,
            uncompleted_bytes: 0,
            last_add_confirmed: None,
            length: 0,
            added_length: 0,
            lac_sent: None,
            last_add_at: now,
            lac_writes: BTreeSet::new(),
            failed_members: BookieSet::EMPTY,
            change: None,
            change_retry: None,
            failed_changes: 0,
            outputs: VecDeque::new(),
            stats: WriterStats::default(),
        })
    }

    /// The segment written.
    pub fn segment_id(&self) -> u64 {
        self.segment_id
    }

    /// The quorum sizes.
    pub fn quorum(&self) -> QuorumSizes {
        self.quorum
    }

    /// The current ensemble (new entries go to it), by index.
    pub fn ensemble(&self) -> &[B] {
        self.ensembles.values().next_back().expect("there is always an ensemble")
    }

    /// The ensemble holding `entry`, as far as the writer still knows it (entries before the
    /// first held one may have been forgotten).
    pub fn ensemble_of(&self, entry: u64) -> &[B] {
        self.ensembles
            .range(..=entry)
            .next_back()
            .or_else(|| self.ensembles.iter().next())
            .map(|(_, e)| e.as_slice())
            .expect("there is always an ensemble")
    }

    /// The LAC: the last entry completed `Ok` (W2).
    pub fn last_add_confirmed(&self) -> Option<u64> {
        self.last_add_confirmed
    }

    /// Payload bytes of the entries up to the LAC.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The id the next accepted add gets.
    pub fn next_entry(&self) -> u64 {
        self.next_entry
    }

    /// Entries held (W5).
    pub fn held_entries(&self) -> usize {
        self.records.len()
    }

    /// Why the writer stopped accepting adds, if it failed (not if it closed).
    pub fn failure(&self) -> Option<&WriterError> {
        self.failure.as_ref().map(|(_, error)| error)
    }

    /// The members of the current ensemble that failed and are not replaced yet.
    pub fn failed_members(&self) -> BookieSet {
        self.failed_members
    }

    /// Whether an ensemble change is in flight.
    pub fn changing_ensemble(&self) -> bool {
        self.change.is_some()
    }

    /// The counters.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// The next piece of work for the shell.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `on_tick` has something to do (a WRITE_LAC, a retried ensemble change), if ever
    /// without another input.
    pub fn next_deadline(&self) -> Option<Instant> {
        let writing = matches!(self.phase, Phase::Open | Phase::Draining) && self.failure.is_none();
        if !writing {
            return None;
        }
        let lac = (self.last_add_confirmed > self.lac_sent)
            .then(|| self.last_add_at + self.settings.lac_flush_delay);
        let retry = self.change_retry.as_ref().map(|(at, _)| *at);
        match (lac, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Accepts `payload` as the next entry and emits its ADDs to its write set (but not to
    /// failed members), carrying the LAC. Refuses when the writer failed (its error), is
    /// closing (`Closed`), or the window is full (`WindowFull`, W5).
    pub fn add(&mut self, payload: Bytes, now: Instant) -> Result<u64, WriterError> {
        if let Some((_, error)) = &self.failure {
            return Err(error.clone());
        }
        if self.phase != Phase::Open {
            return Err(WriterError::Closed);
        }
        let bytes = payload.len() as u64;
        let max = self.settings.entry_bytes_max.min(self.settings.window_bytes_max);
        if bytes > max {
            return Err(WriterError::EntryTooLarge { bytes, max });
        }
        if self.records.len() >= self.settings.window_entries_max
            || self.uncompleted_bytes + bytes > self.settings.window_bytes_max
        {
            return Err(WriterError::WindowFull);
        }
        if self.next_entry >= ENTRY_ID_LIMIT {
            return Err(WriterError::EntryIdsExhausted);
        }
        let entry = self.next_entry;
        let cumulative_length = self.added_length + bytes;
        let mut record = Record {
            payload: entry_envelope::encode(self.segment_id, entry, cumulative_length, &payload),
            user_bytes: bytes,
            acks: self.quorum.ack_set(entry),
            outstanding: BookieSet::EMPTY,
            completed: false,
        };
        for bookie_index in self.quorum.write_set(entry).iter() {
            if self.failed_members.contains(bookie_index) {
                record.acks.record_failure(bookie_index);
            } else {
                self.send_add(entry, bookie_index, &mut record);
            }
        }
        self.lac_sent = self.lac_sent.max(self.last_add_confirmed);
        self.records.push_back(record);
        self.added_length = cumulative_length;
        self.uncompleted_bytes += bytes;
        self.next_entry += 1;
        self.last_add_at = now;
        Ok(entry)
    }

    /// The answer to the request sent with `tag`, from the bookie `from`: its response (a
    /// refusal is a `Response::Refused`), or why there was none.
    pub fn on_response(
        &mut self,
        tag: Tag,
        from: &B,
        result: Result<Response, TransportFailure>,
        now: Instant,
    ) {
        match tag.kind() {
            Some(TagKind::Add) => {
                let entry = tag.entry();
                if self.ensemble_of(entry).get(tag.bookie_index()) == Some(from) {
                    self.on_add_answer(entry, tag.bookie_index(), result);
                } else {
                    self.stats.ignored_responses += 1;
                }
            }
            Some(TagKind::WriteLastAddConfirmed) => {
                self.on_lac_answer(tag.entry(), tag.bookie_index(), result)
            }
            None => self.stats.ignored_responses += 1,
        }
        self.complete_in_order();
        self.maybe_change_ensemble(now);
    }

    /// The shell's answer to `ChangeEnsemble`: the new ensemble, now in the metadata from the
    /// change's first entry (it must differ from the current one exactly at the replaced
    /// indexes), or why not. Ignored when no change is in flight.
    pub fn on_ensemble_changed(&mut self, result: Result<Vec<B>, EnsembleChangeError>, now: Instant) {
        let Some((first_entry, replaced)) = self.change.take() else { return };
        match result {
            Err(EnsembleChangeError::Fenced) => self.fail(WriterError::Fenced),
            Err(EnsembleChangeError::Unavailable(reason)) => {
                self.stats.ensemble_change_failures += 1;
                self.failed_changes += 1;
                self.change_retry = Some((now + self.settings.ensemble_change_retry, reason.clone()));
                if self.failed_changes >= self.settings.ensemble_change_attempts_max {
                    self.fail_stuck_entries(&reason);
                } else {
                    // No replacement: a member that failed may only be slow (W7); try it again.
                    self.retry_failed_members();
                }
            }
            Ok(ensemble) => {
                // Placement may replace only some of the members asked for (too few spare
                // bookies): the others stay failed, for the next attempt.
                let current = self.ensemble();
                let fits = ensemble.len() == current.len()
                    && (0..ensemble.len()).all(|i| {
                        (ensemble[i] == current[i]
                            || (replaced.contains(i) && !current.contains(&ensemble[i])))
                            && !ensemble[..i].contains(&ensemble[i])
                    });
                let landed: BookieSet =
                    (0..ensemble.len()).filter(|i| fits && ensemble[*i] != current[*i]).collect();
                if !fits || landed.is_empty() {
                    let error = WriterError::Metadata("the new ensemble does not match the change".into());
                    self.fail_from(first_entry, error);
                } else if self.failure.is_none() {
                    self.failed_changes = 0;
                    self.land_change(first_entry, landed, ensemble);
                    if !replaced.difference(landed).is_empty() {
                        // Members placement could not replace wait for the next attempt.
                        let reason = "not every failed member could be replaced".to_owned();
                        self.change_retry = Some((now + self.settings.ensemble_change_retry, reason));
                    }
                }
            }
        }
        self.complete_in_order();
        self.maybe_change_ensemble(now);
    }

    /// Time passed: writes the LAC explicitly if the writer was idle for `lac_flush_delay`
    /// with a LAC not yet sent, and retries a failed ensemble change when its time came.
    pub fn on_tick(&mut self, now: Instant) {
        if self.change_retry.as_ref().is_some_and(|(at, _)| now >= *at) {
            self.change_retry = None;
            self.maybe_change_ensemble(now);
        }
        let Some(deadline) = self.next_deadline() else { return };
        let Some(lac) = self.last_add_confirmed else { return };
        if now < deadline || self.last_add_confirmed <= self.lac_sent {
            return;
        }
        // Every member of the current ensemble, not only the write set of the LAC: a tailing
        // reader waits on a member of the write set of the entry after the LAC it knows, and
        // when the window was sent at once every ADD carried a stale LAC.
        for bookie_index in 0..self.quorum.ensemble_size() {
            let request = Request::WriteLastAddConfirmed {
                segment: self.segment_id,
                last_add_confirmed: lac,
                master_key: self.master_key.clone(),
            };
            let tag = Tag::new(TagKind::WriteLastAddConfirmed, lac, bookie_index);
            self.lac_writes.insert((lac, bookie_index));
            self.outputs.push_back(Output::Send { bookie_index, tag, request });
            self.stats.lac_writes += 1;
        }
        self.lac_sent = Some(lac);
    }

    /// Stops accepting adds; once every entry completed `Ok`, emits `CloseRequested` (or
    /// `Closed(Err)` if the writer fails meanwhile). Refuses if the writer already failed (its
    /// error) or is closing (`Closed`).
    pub fn close(&mut self, _now: Instant) -> Result<(), WriterError> {
        if let Some((_, error)) = &self.failure {
            return Err(error.clone());
        }
        if self.phase != Phase::Open {
            return Err(WriterError::Closed);
        }
        self.phase = Phase::Draining;
        self.complete_in_order();
        Ok(())
    }

    /// The shell's answer to `CloseRequested`: `Ok` if the metadata is Closed at the requested
    /// last entry (this CAS, or one before it at the same entry), else the error (`Fenced` for
    /// InRecovery or Closed elsewhere, `Metadata` for a store failure). Ignored unless a close
    /// was requested.
    pub fn on_closed(&mut self, result: Result<(), WriterError>) {
        if self.phase == Phase::AwaitingMetadata {
            self.phase = Phase::Closed;
            self.outputs.push_back(Output::Closed(result));
        }
    }

    fn send_add(&mut self, entry: u64, bookie_index: usize, record: &mut Record) {
        let request = Request::Add {
            segment: self.segment_id,
            entry,
            last_add_confirmed: self.last_add_confirmed,
            master_key: self.master_key.clone(),
            payload: record.payload.clone(),
            recovery: false,
        };
        let tag = Tag::new(TagKind::Add, entry, bookie_index);
        record.outstanding.insert(bookie_index);
        self.outputs.push_back(Output::Send { bookie_index, tag, request });
    }

    fn on_add_answer(&mut self, entry: u64, bookie_index: usize, result: Result<Response, TransportFailure>) {
        let segment = self.segment_id;
        let Some(record) = entry
            .checked_sub(self.first_held)
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|offset| self.records.get_mut(offset))
        else {
            self.stats.ignored_responses += 1;
            return;
        };
        if !record.outstanding.remove(bookie_index) {
            self.stats.ignored_responses += 1;
            return;
        }
        let expected = |r: &Response| *r == Response::Add { segment, entry };
        match judge(result, expected) {
            Verdict::Success => {
                // Progress: failed changes are counted in a row (W7).
                self.failed_changes = 0;
                let outcome = record.acks.record_ack(bookie_index);
                debug_assert_eq!(outcome, AckOutcome::Counted, "one ADD per member, answered once");
                if record.completed {
                    self.stats.late_acks += 1;
                }
            }
            Verdict::Fatal(error) => self.fail(error),
            Verdict::EntryRefused(reason) => {
                self.stats.add_failures += 1;
                if !record.completed {
                    self.fail_from(entry, WriterError::EntryRefused { entry, reason });
                }
            }
            Verdict::Failure => {
                self.stats.add_failures += 1;
                if record.acks.record_failure(bookie_index) == FailureOutcome::Counted {
                    self.outputs.push_back(Output::BookieFailed { bookie_index, entry });
                    // A member of an ensemble since replaced needs no change; a current one
                    // is replaced even if the entry completed (BookKeeper's issue #1390).
                    let current = self.ensemble();
                    if entry >= self.current_start()
                        || self.ensemble_of(entry)[bookie_index] == current[bookie_index]
                    {
                        self.failed_members.insert(bookie_index);
                    }
                    if self.failure.is_some() {
                        // No change will come any more.
                        self.fail_stuck_entries("the writer failed");
                    }
                }
            }
        }
    }

    fn on_lac_answer(&mut self, lac: u64, bookie_index: usize, result: Result<Response, TransportFailure>) {
        // No check of who answered: a WRITE_LAC changes nothing the writer counts, and a
        // `Fenced` from any bookie that ever held the segment is true.
        if !self.lac_writes.remove(&(lac, bookie_index)) {
            self.stats.ignored_responses += 1;
            return;
        }
        match judge(result, |r| matches!(r, Response::WriteLastAddConfirmed)) {
            Verdict::Success => {}
            Verdict::Fatal(error) => self.fail(error),
            Verdict::Failure | Verdict::EntryRefused(_) => self.stats.lac_write_failures += 1,
        }
    }

    fn current_start(&self) -> u64 {
        *self.ensembles.keys().next_back().expect("there is always an ensemble")
    }

    /// Starts an ensemble change for the failed members, unless one is in flight, a failed
    /// one waits for its retry, or the writer is done.
    fn maybe_change_ensemble(&mut self, _now: Instant) {
        let writing = matches!(self.phase, Phase::Open | Phase::Draining) && self.failure.is_none();
        if !writing || self.change.is_some() || self.change_retry.is_some() || self.failed_members.is_empty()
        {
            return;
        }
        let first_entry = self.first_uncompleted;
        let replace = self.failed_members;
        self.change = Some((first_entry, replace));
        self.outputs.push_back(Output::ChangeEnsemble { first_entry, replace });
    }

    /// The change from `first_entry` landed (W7): the replacements take the replaced members'
    /// place for every held entry from `first_entry`.
    fn land_change(&mut self, first_entry: u64, replaced: BookieSet, ensemble: Vec<B>) {
        self.stats.ensemble_changes += 1;
        let _ = self.ensembles.split_off(&first_entry);
        self.ensembles.insert(first_entry, ensemble);
        for index in replaced.iter() {
            self.failed_members.remove(index);
        }
        let start = usize::try_from(first_entry.saturating_sub(self.first_held)).unwrap_or(usize::MAX);
        let mut records = std::mem::take(&mut self.records);
        for record in records.iter_mut().skip(start) {
            debug_assert!(!record.completed, "entries from the change's first entry wait for it (W7)");
            let entry = record.acks.entry();
            for index in replaced.intersection(record.acks.write_set().members()).iter() {
                record.acks.reset_member(index);
                // An ADD still in flight to the replaced member is forgotten: its answer comes
                // from a bookie no longer in this entry's ensemble and is ignored (W6).
                record.outstanding.remove(index);
                if self.failed_members.contains(index) {
                    record.acks.record_failure(index);
                } else {
                    self.send_add(entry, index, record);
                    self.stats.resent_adds += 1;
                }
            }
        }
        self.records = records;
    }

    /// No replacement could be had: the failed members may only be slow, so they are no longer
    /// skipped, and every entry not completed gets its ADD again from each of them that failed
    /// it (W7).
    fn retry_failed_members(&mut self) {
        let retried = std::mem::take(&mut self.failed_members);
        let start =
            usize::try_from(self.first_uncompleted.saturating_sub(self.first_held)).unwrap_or(usize::MAX);
        let mut records = std::mem::take(&mut self.records);
        for record in records.iter_mut().skip(start) {
            let entry = record.acks.entry();
            for index in retried.intersection(record.acks.failed()).iter() {
                if !record.outstanding.contains(index) {
                    record.acks.reset_member(index);
                    self.send_add(entry, index, record);
                    self.stats.retried_adds += 1;
                }
            }
        }
        self.records = records;
    }

    /// Degraded (W7): the first entry that cannot reach Qa without the failed members fails,
    /// and every one after it.
    fn fail_stuck_entries(&mut self, reason: &str) {
        let stuck = self.records.iter().find(|r| !r.completed && !r.acks.can_complete());
        if let Some(entry) = stuck.map(|r| r.acks.entry()) {
            self.fail_from(entry, WriterError::QuorumUnreachable { entry, reason: reason.to_owned() });
        }
    }

    /// A fatal answer (W4): every entry not yet completed fails with `error`; the first fatal
    /// error stays.
    fn fail(&mut self, error: WriterError) {
        debug_assert!(error.is_fatal());
        if self.failure.as_ref().is_some_and(|(_, current)| current.is_fatal()) {
            return;
        }
        self.failure = Some((self.first_uncompleted, error));
    }

    /// Entry `entry` cannot complete: it and every entry after it fail with `error`, unless an
    /// earlier entry already failed.
    fn fail_from(&mut self, entry: u64, error: WriterError) {
        if self.failure.as_ref().is_none_or(|(from, _)| entry < *from) {
            self.failure = Some((entry.max(self.first_uncompleted), error));
        }
    }

    /// Completes entries in order (W1), advances the LAC (W2), drops records and ensembles no
    /// longer needed (W5) and moves the close on.
    fn complete_in_order(&mut self) {
        let lac_before = self.last_add_confirmed;
        while self.first_uncompleted < self.next_entry {
            let entry = self.first_uncompleted;
            let offset = usize::try_from(entry - self.first_held).expect("the window fits in memory");
            let record = self.records.get_mut(offset).expect("every uncompleted entry is held");
            let result = match &self.failure {
                Some((from, error)) if entry >= *from => Err(error.clone()),
                _ if self.change.is_none() && record.acks.is_complete() => Ok(()),
                _ => break,
            };
            record.completed = true;
            record.payload = Bytes::new();
            self.uncompleted_bytes -= record.user_bytes;
            if result.is_ok() {
                debug_assert!(self.failure.as_ref().is_none_or(|(from, _)| entry < *from));
                self.last_add_confirmed = Some(entry);
                self.length += record.user_bytes;
            }
            self.outputs.push_back(Output::Completed { entry, result });
            self.first_uncompleted += 1;
        }
        if let Some(lac) = self.last_add_confirmed.filter(|_| self.last_add_confirmed != lac_before) {
            self.outputs.push_back(Output::LastAddConfirmed(lac));
        }
        while self.records.front().is_some_and(|r| r.completed && r.outstanding.is_empty()) {
            self.records.pop_front();
            self.first_held += 1;
        }
        // Keep the ensemble holding the first held entry and every later one.
        while let Some(second) = self.ensembles.keys().nth(1).copied() {
            if second > self.first_held {
                break;
            }
            self.ensembles.pop_first();
        }
        if self.phase == Phase::Draining && self.first_uncompleted == self.next_entry {
            match &self.failure {
                Some((_, error)) => {
                    self.phase = Phase::Closed;
                    self.outputs.push_back(Output::Closed(Err(error.clone())));
                }
                None => {
                    self.phase = Phase::AwaitingMetadata;
                    let (last_entry, length) = (self.last_add_confirmed, self.length);
                    self.outputs.push_back(Output::CloseRequested { last_entry, length });
                }
            }
        }
    }
}
