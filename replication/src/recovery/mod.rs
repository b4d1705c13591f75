//! `Recovery`: the sans-I/O fence-and-recover of a segment another writer was writing
//! (docs/rfcs/2026-11-26-replication.md, "Fencing and recovery"; the arithmetic and why it is
//! safe: quorum/mod.rs Q5-Q9 and docs/protocol.md).
//!
//! Owns: the fencing READ_LAC round over the last ensemble, reading forward with fencing READs
//! from the fenced LAC, each entry's verdict (`EntryAnswers`), re-writing every recovered entry
//! to its write set with recovery ADDs, retries of failed requests, and the close to request.
//! Does not own: the metadata (the shell has set it InRecovery before starting this, and
//! performs the close's compare-and-set), sockets, clocks.
//! Inputs: `start`, `on_response`, `on_tick`, `on_closed`; outputs through `poll_output`:
//! requests to bookies, `CloseRequested`, `Done`.
//!
//! Invariants:
//! - RC1 (fence first): no READ is sent before the bookies that answered the fencing READ_LAC
//!   cover every write set of the last ensemble (Q5, Q9); from then on the old writer cannot
//!   get an entry acknowledged.
//! - RC2 (the end): recovery reads from the fenced LAC (or from the last entry before the last
//!   ensemble, which was acknowledged before that ensemble was made) and the end is the entry
//!   before the first one judged `ConfirmedAbsent` (Q6), every entry before it being `Present`.
//!   Failed answers, corrupt copies and silence never count as absence; they are retried. An
//!   entry at or below the fenced LAC is acknowledged and never taken as absent.
//! - RC3 (durable before the close): `CloseRequested` comes only once every entry after the
//!   fenced LAC up to the end has Qa recovery-add acks from its write set (Q7).
//! - RC4 (no overreach): recovery ADDs carry the fenced LAC as their LAC, never a recovered
//!   entry: another recoverer may close the segment before it (Q7), and a reader must never
//!   be told such an entry is confirmed.
//! - RC5 (memory): at most `window_entries` entries are held (being read or recovery-added).
//! - RC6 (answers): an answer counts once, for a request in flight, from the bookie at the
//!   tag's index of the ensemble holding the entry (for a recovery ADD, the ensemble it was
//!   sent to); anything else is ignored and counted.
//! - RC7 (replacement): a member of the last ensemble whose failures keep an entry from Qa
//!   recovery ADDs is replaced (`ReplaceBookies`, placement by the shell) from the first entry
//!   whose ADDs are not all done; those entries are re-added to the replacement and count only
//!   its acks in that slot. Reads keep going to the ensemble the writer wrote (a replacement
//!   holds none of its copies, so its NoSuchEntry must never count toward absence), and the
//!   new ensemble reaches the metadata only with the close (`ensemble_change`), so no other
//!   recoverer ever reads the writer's entries from it.

mod types;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use dlog_protocol::{Request, Response, Status};

pub use types::{
    RecoveredEnd, RecoveryError, RecoveryOutput, RecoverySettings, RecoveryStats, RecoveryTag,
    RecoveryTagKind,
};

use crate::entry_envelope;
use crate::quorum::{AckSet, BookieSet, EntryAnswers, EntryVerdict, QuorumSizes, ReplicaAnswer};
use crate::segment_writer::TransportFailure;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Fencing,
    Reading,
    Closing,
    Done,
}

#[derive(Debug)]
struct EntryState {
    entry: u64,
    answers: EntryAnswers,
    reads_in_flight: BookieSet,
    /// The stored bytes of the first valid copy, and its cumulative length.
    copy: Option<(Bytes, u64)>,
    /// Recovery ADDs, once sent (`None` for an entry known acknowledged: nothing to add).
    acks: Option<AckSet>,
    adds_in_flight: BookieSet,
}

impl EntryState {
    fn finished(&self, known_acknowledged: bool) -> bool {
        self.copy.is_some() && (known_acknowledged || self.acks.as_ref().is_some_and(AckSet::is_complete))
    }
}

/// The recovery of one segment (see the module doc for its invariants). `B` is the shell's
/// bookie identity.
#[derive(Debug)]
pub struct Recovery<B> {
    segment_id: u64,
    master_key: Bytes,
    quorum: QuorumSizes,
    ensembles: BTreeMap<u64, Vec<B>>,
    settings: RecoverySettings,
    phase: Phase,
    /// Indexes of the last ensemble that answered the fencing READ_LAC (RC1).
    fenced: BookieSet,
    lac_reads_in_flight: BookieSet,
    fenced_lac: Option<u64>,
    /// Entries `first_held..next_to_read` being read or added (RC5).
    entries: VecDeque<EntryState>,
    first_held: u64,
    next_to_read: u64,
    /// Entries up to it are known acknowledged: the fenced LAC, or the last entry before the
    /// last ensemble (RC2).
    acknowledged_upto: Option<u64>,
    /// The end, once the first `ConfirmedAbsent` entry is found: `Some(last entry)`.
    end: Option<Option<u64>>,
    /// The cumulative length of the last finished entry.
    length: u64,
    /// Where recovery ADDs go: the ensembles, with replacements for members that failed them
    /// from `changed_from` on (RC7). Reads always go to `ensembles`, where the writer wrote.
    add_ensembles: BTreeMap<u64, Vec<B>>,
    /// The first entry a replacement holds, once one was made.
    changed_from: Option<u64>,
    /// Indexes of the last ensemble that failed recovery ADDs some entry needs.
    failed_members: BookieSet,
    /// The indexes of a `ReplaceBookies` in flight.
    replacing: Option<BookieSet>,
    /// After a failed replacement: when to ask again.
    replace_retry_at: Option<Instant>,
    /// Failed requests to send again: (when, kind, entry, ensemble index).
    retries: Vec<(Instant, RecoveryTagKind, u64, usize)>,
    outputs: VecDeque<RecoveryOutput<B>>,
    stats: RecoveryStats,
}

enum Answer {
    Fenced(Option<u64>),
    Replica(ReplicaAnswer, Option<(Bytes, u64)>),
    Acked,
    WrongMasterKey,
    Unauthorized(String),
    Failed,
}

impl<B: Clone + PartialEq> Recovery<B> {
    /// Recovery of `segment_id`, whose metadata (now InRecovery) holds `ensembles` (by first
    /// entry), with the segment's master key.
    pub fn new(
        segment_id: u64,
        master_key: Bytes,
        quorum: QuorumSizes,
        ensembles: BTreeMap<u64, Vec<B>>,
        settings: RecoverySettings,
    ) -> Result<Self, RecoveryError> {
        if ensembles.keys().next() != Some(&0)
            || ensembles.values().any(|e| e.len() != quorum.ensemble_size())
        {
            return Err(RecoveryError::BadMetadata(format!(
                "ensembles must start at entry 0 and hold {} bookies",
                quorum.ensemble_size()
            )));
        }
        if settings.window_entries == 0 {
            return Err(RecoveryError::BadMetadata("window_entries must be more than zero".into()));
        }
        Ok(Recovery {
            segment_id,
            master_key,
            quorum,
            add_ensembles: ensembles.clone(),
            changed_from: None,
            failed_members: BookieSet::EMPTY,
            replacing: None,
            replace_retry_at: None,
            ensembles,
            settings,
            phase: Phase::Idle,
            fenced: BookieSet::EMPTY,
            lac_reads_in_flight: BookieSet::EMPTY,
            fenced_lac: None,
            entries: VecDeque::new(),
            first_held: 0,
            next_to_read: 0,
            acknowledged_upto: None,
            end: None,
            length: 0,
            retries: Vec::new(),
            outputs: VecDeque::new(),
            stats: RecoveryStats::default(),
        })
    }

    /// The fenced LAC, once fencing is done.
    pub fn fenced_last_add_confirmed(&self) -> Option<u64> {
        self.fenced_lac
    }

    /// Whether the fence covers every write set (RC1).
    pub fn fence_complete(&self) -> bool {
        !matches!(self.phase, Phase::Idle | Phase::Fencing)
    }

    /// The counters.
    pub fn stats(&self) -> RecoveryStats {
        self.stats
    }

    /// The next piece of work for the shell.
    pub fn poll_output(&mut self) -> Option<RecoveryOutput<B>> {
        self.outputs.pop_front()
    }

    /// When `on_tick` has a retry to send, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retries.iter().map(|(at, ..)| *at).chain(self.replace_retry_at).min()
    }

    /// The last ensemble recovery ADDs go to (with its replacements, RC7).
    pub fn last_add_ensemble(&self) -> &[B] {
        self.add_ensembles.values().next_back().map(Vec::as_slice).expect("ensembles start at 0")
    }

    /// The ensembles recovery wrote to from the first replacement on (RC7), if it made one
    /// that holds entries up to `end`: the close must store them with the Closed state.
    pub fn ensemble_change(&self, end: &RecoveredEnd) -> Option<BTreeMap<u64, Vec<B>>> {
        let from = self.changed_from?;
        let holds_entries = end.last_entry.is_some_and(|last| from <= last);
        holds_entries.then(|| self.add_ensembles.range(from..).map(|(k, v)| (*k, v.clone())).collect())
    }

    /// The shell's answer to `ReplaceBookies`: the last ensemble with the replacements in place
    /// (differing from the current one exactly at the replaced indexes), or why none could be
    /// had (asked again after `retry_delay`).
    pub fn on_replaced(&mut self, result: Result<Vec<B>, String>, now: Instant) {
        let Some(replaced) = self.replacing.take() else { return };
        if self.phase != Phase::Reading {
            return;
        }
        let current = self.add_ensembles.values().next_back().expect("ensembles start at 0").clone();
        // Placement may replace only some of the members asked for: the rest stay failed.
        let fits = result.as_ref().is_ok_and(|new| {
            new.len() == current.len()
                && (0..new.len()).all(|i| {
                    (new[i] == current[i] || (replaced.contains(i) && !current.contains(&new[i])))
                        && !new[..i].contains(&new[i])
                })
        });
        let new = match result {
            Ok(new) if fits && new != current => new,
            _ => {
                self.replace_retry_at = Some(now + self.settings.retry_delay);
                return;
            }
        };
        let replaced: BookieSet = (0..new.len()).filter(|i| new[*i] != current[*i]).collect();
        self.stats.replacements += 1;
        // The first entry past the acknowledged ones whose recovery ADDs are not all done: every
        // one from it on is held. Acknowledged entries keep the ensemble that holds them.
        let after_acknowledged = self.acknowledged_upto.map_or(0, |a| a + 1);
        let first = self
            .entries
            .iter()
            .filter(|s| s.entry >= after_acknowledged)
            .find(|s| !s.acks.as_ref().is_some_and(AckSet::is_complete))
            .map_or(self.next_to_read, |s| s.entry)
            .max(after_acknowledged)
            .max(*self.add_ensembles.keys().next_back().expect("ensembles start at 0"));
        let _ = self.add_ensembles.split_off(&first);
        self.add_ensembles.insert(first, new);
        self.changed_from = Some(self.changed_from.map_or(first, |f| f.min(first)));
        self.failed_members = self.failed_members.difference(replaced);
        let mut resend = Vec::new();
        for state in self.entries.iter_mut().filter(|s| s.entry >= first) {
            let Some(acks) = state.acks.as_mut() else { continue };
            for index in replaced.intersection(acks.write_set().members()).iter() {
                acks.reset_member(index);
                state.adds_in_flight.remove(index);
                resend.push((state.entry, index));
            }
        }
        for (entry, index) in resend {
            self.send(RecoveryTagKind::Add, entry, index);
        }
        self.advance();
    }

    /// Sends the fencing READ_LAC to every member of the last ensemble. Once only.
    pub fn start(&mut self, _now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Fencing;
        for index in 0..self.quorum.ensemble_size() {
            self.send(RecoveryTagKind::FenceLastAddConfirmed, 0, index);
        }
    }

    /// The answer to the request sent with `tag`, from `from`.
    pub fn on_response(
        &mut self,
        tag: RecoveryTag,
        from: &B,
        result: Result<Response, TransportFailure>,
        now: Instant,
    ) {
        let (kind, entry, index) = match tag.kind() {
            Some(kind) => (kind, tag.entry(), tag.bookie_index()),
            None => return self.stats.ignored_responses += 1,
        };
        let ensemble_entry = if kind == RecoveryTagKind::FenceLastAddConfirmed { u64::MAX } else { entry };
        let member = match kind {
            RecoveryTagKind::Add => self.add_ensemble_of(entry).get(index),
            _ => self.ensemble_of(ensemble_entry).get(index),
        };
        let in_flight = member == Some(from) && self.take_in_flight(kind, entry, index);
        if !in_flight || matches!(self.phase, Phase::Done | Phase::Closing) {
            self.stats.ignored_responses += 1;
            return;
        }
        match self.judge(kind, entry, result) {
            Answer::WrongMasterKey => return self.finish(Err(RecoveryError::WrongMasterKey)),
            Answer::Unauthorized(why) => return self.finish(Err(RecoveryError::Unauthorized(why))),
            Answer::Failed => {
                self.stats.retries += 1;
                self.retries.push((now + self.settings.retry_delay, kind, entry, index));
                if kind == RecoveryTagKind::Add {
                    // RC7: a member that keeps an entry from Qa recovery ADDs is replaced
                    // (retries go on meanwhile: it may come back).
                    let stuck = self.state_mut(entry).and_then(|s| s.acks.as_mut()).is_some_and(|acks| {
                        acks.record_failure(index);
                        !acks.can_complete()
                    });
                    if stuck {
                        self.failed_members.insert(index);
                    }
                }
            }
            Answer::Fenced(lac) => {
                self.fenced.insert(index);
                self.fenced_lac = self.fenced_lac.max(lac);
            }
            Answer::Replica(answer, copy) => {
                if let Some(state) = self.state_mut(entry) {
                    state.answers.record(index, answer);
                    if state.copy.is_none() {
                        state.copy = copy;
                    }
                }
            }
            Answer::Acked => {
                if let Some(acks) = self.state_mut(entry).and_then(|s| s.acks.as_mut()) {
                    acks.record_ack(index);
                }
                // The member answers again: it was only slow, no replacement is needed.
                self.failed_members.remove(index);
                self.stats.recovery_adds += 1;
            }
        }
        self.advance();
        self.maybe_replace();
    }

    /// Asks the shell for replacements of the members failing recovery ADDs (RC7), unless a
    /// request is in flight or waits for its retry.
    fn maybe_replace(&mut self) {
        if self.phase == Phase::Reading
            && self.replacing.is_none()
            && self.replace_retry_at.is_none()
            && !self.failed_members.is_empty()
        {
            self.replacing = Some(self.failed_members);
            self.outputs.push_back(RecoveryOutput::ReplaceBookies { replace: self.failed_members });
        }
    }

    /// Time passed: sends the retries that are due, if still needed.
    pub fn on_tick(&mut self, now: Instant) {
        if self.replace_retry_at.is_some_and(|at| at <= now) {
            self.replace_retry_at = None;
            self.maybe_replace();
        }
        let mut due = Vec::new();
        self.retries.retain(|r| {
            let is_due = r.0 <= now;
            if is_due {
                due.push(*r);
            }
            !is_due
        });
        for (_, kind, entry, index) in due {
            let needed = match kind {
                RecoveryTagKind::FenceLastAddConfirmed => self.phase == Phase::Fencing,
                RecoveryTagKind::Read => {
                    self.state(entry).is_some_and(|s| s.answers.verdict() == EntryVerdict::Undecided)
                }
                RecoveryTagKind::Add => {
                    self.state(entry).and_then(|s| s.acks.as_ref()).is_some_and(|a| !a.is_complete())
                }
            };
            if needed && !matches!(self.phase, Phase::Done | Phase::Closing) {
                self.send(kind, entry, index);
            }
        }
    }

    /// The shell's answer to `CloseRequested`: the end the metadata now holds (this close's,
    /// or another recoverer's that closed first), or why the close failed.
    pub fn on_closed(&mut self, result: Result<RecoveredEnd, RecoveryError>) {
        if self.phase == Phase::Closing {
            self.finish(result);
        }
    }

    fn finish(&mut self, result: Result<RecoveredEnd, RecoveryError>) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.retries.clear();
            self.entries.clear();
            self.outputs.push_back(RecoveryOutput::Done(result));
        }
    }

    fn add_ensemble_of(&self, entry: u64) -> &[B] {
        self.add_ensembles
            .range(..=entry)
            .next_back()
            .map(|(_, e)| e.as_slice())
            .expect("ensembles start at 0")
    }

    fn ensemble_of(&self, entry: u64) -> &[B] {
        self.ensembles.range(..=entry).next_back().map(|(_, e)| e.as_slice()).expect("ensembles start at 0")
    }

    fn state(&self, entry: u64) -> Option<&EntryState> {
        let offset = usize::try_from(entry.checked_sub(self.first_held)?).ok()?;
        self.entries.get(offset)
    }

    fn state_mut(&mut self, entry: u64) -> Option<&mut EntryState> {
        let offset = usize::try_from(entry.checked_sub(self.first_held)?).ok()?;
        self.entries.get_mut(offset)
    }

    fn take_in_flight(&mut self, kind: RecoveryTagKind, entry: u64, index: usize) -> bool {
        match kind {
            RecoveryTagKind::FenceLastAddConfirmed => self.lac_reads_in_flight.remove(index),
            RecoveryTagKind::Read => self.state_mut(entry).is_some_and(|s| s.reads_in_flight.remove(index)),
            RecoveryTagKind::Add => self.state_mut(entry).is_some_and(|s| s.adds_in_flight.remove(index)),
        }
    }

    fn judge(
        &mut self,
        kind: RecoveryTagKind,
        entry: u64,
        result: Result<Response, TransportFailure>,
    ) -> Answer {
        let response = match result {
            Ok(Response::Refused { status: Status::WrongMasterKey, .. }) => return Answer::WrongMasterKey,
            Ok(Response::Refused { status: Status::Unauthorized, message, .. }) => {
                return Answer::Unauthorized(message);
            }
            Ok(response) => response,
            Err(_) => return Answer::Failed,
        };
        let absent = |r: &Response| {
            matches!(r, Response::Refused { status: Status::NoSuchEntry | Status::NoSuchSegment, .. })
        };
        match kind {
            RecoveryTagKind::FenceLastAddConfirmed => match response {
                Response::ReadLastAddConfirmed { last_add_confirmed } => Answer::Fenced(last_add_confirmed),
                // Q9: "no such entry/segment" fenced the segment too.
                r if absent(&r) => Answer::Fenced(None),
                _ => Answer::Failed,
            },
            RecoveryTagKind::Read => match response {
                Response::Read { segment, entry: e, payload } if segment == self.segment_id && e == entry => {
                    match entry_envelope::decode(self.segment_id, entry, &payload) {
                        Ok((cumulative, _)) => {
                            Answer::Replica(ReplicaAnswer::Present, Some((payload, cumulative)))
                        }
                        Err(_) => {
                            self.stats.corrupt_replicas += 1;
                            Answer::Failed
                        }
                    }
                }
                r if absent(&r) => Answer::Replica(ReplicaAnswer::NoSuchEntry, None),
                // Corrupt, I/O errors, anything else: unknown, never absence (RC2).
                _ => Answer::Failed,
            },
            RecoveryTagKind::Add => match response {
                Response::Add { segment, entry: e } if segment == self.segment_id && e == entry => {
                    Answer::Acked
                }
                _ => Answer::Failed,
            },
        }
    }

    fn send(&mut self, kind: RecoveryTagKind, entry: u64, index: usize) {
        let segment = self.segment_id;
        let request = match kind {
            RecoveryTagKind::FenceLastAddConfirmed => {
                self.lac_reads_in_flight.insert(index);
                Request::ReadLastAddConfirmed { segment, fence: Some(self.master_key.clone()) }
            }
            RecoveryTagKind::Read => {
                let Some(state) = self.state_mut(entry) else { return };
                state.reads_in_flight.insert(index);
                Request::Read { segment, entry, fence: Some(self.master_key.clone()) }
            }
            RecoveryTagKind::Add => {
                let fenced_lac = self.fenced_lac;
                let master_key = self.master_key.clone();
                let Some(state) = self.state_mut(entry) else { return };
                let Some((payload, _)) = state.copy.clone() else { return };
                state.adds_in_flight.insert(index);
                // RC4: the LAC carried is the fenced one, never a recovered entry.
                let last_add_confirmed = fenced_lac.filter(|lac| *lac < entry);
                Request::Add { segment, entry, last_add_confirmed, master_key, payload, recovery: true }
            }
        };
        let ensemble_entry = if kind == RecoveryTagKind::FenceLastAddConfirmed { u64::MAX } else { entry };
        let bookie = match kind {
            RecoveryTagKind::Add => self.add_ensemble_of(entry)[index].clone(),
            _ => self.ensemble_of(ensemble_entry)[index].clone(),
        };
        let tag = RecoveryTag::new(kind, entry, index);
        self.outputs.push_back(RecoveryOutput::Send { bookie, tag, request });
    }

    /// Moves recovery on: from fencing to reading (RC1), decides entries in order (RC2),
    /// starts recovery adds, reads further within the window (RC5), and requests the close
    /// (RC3).
    fn advance(&mut self) {
        if self.phase == Phase::Fencing && self.quorum.lac_responses_sufficient(&self.fenced) {
            self.phase = Phase::Reading;
            self.retries.retain(|r| r.1 != RecoveryTagKind::FenceLastAddConfirmed);
            let last_start = *self.ensembles.keys().next_back().expect("ensembles start at 0");
            // RC2: the last acknowledged entry is read too, for the segment's length.
            self.acknowledged_upto = self.fenced_lac.max(last_start.checked_sub(1));
            self.first_held = self.acknowledged_upto.unwrap_or(0);
            self.next_to_read = self.first_held;
        }
        if self.phase != Phase::Reading {
            return;
        }
        let acknowledged_upto = self.acknowledged_upto;
        loop {
            let mut progressed = false;
            // Decide the front entries in order.
            for offset in 0..self.entries.len() {
                let entry = self.entries[offset].entry;
                let known_acknowledged = acknowledged_upto.is_some_and(|a| entry <= a);
                match self.entries[offset].answers.verdict() {
                    EntryVerdict::Present if !known_acknowledged && self.entries[offset].acks.is_none() => {
                        self.entries[offset].acks = Some(self.quorum.ack_set(entry));
                        self.stats.entries_recovered += 1;
                        for index in self.quorum.write_set(entry).iter() {
                            self.send(RecoveryTagKind::Add, entry, index);
                        }
                    }
                    EntryVerdict::ConfirmedAbsent if !known_acknowledged => {
                        // RC2: the first absent entry with every entry before it Present.
                        let all_present = self
                            .entries
                            .iter()
                            .take(offset)
                            .all(|s| s.answers.verdict() == EntryVerdict::Present);
                        if all_present && self.end.is_none() {
                            // Its state goes too: a late copy of it must not be recovery-added
                            // past the end (RC4).
                            self.end = Some(entry.checked_sub(1));
                            self.entries.truncate(offset);
                            self.next_to_read = entry + 1;
                            self.retries.retain(|r| r.1 != RecoveryTagKind::Read || r.2 < entry);
                        }
                        break;
                    }
                    // RC4: nothing is recovery-added past an entry not known Present: it may
                    // turn out absent, and the end before it.
                    EntryVerdict::Undecided => break,
                    _ => {}
                }
            }
            // Drop finished entries from the front.
            while let Some(front) = self.entries.front() {
                let known_acknowledged = acknowledged_upto.is_some_and(|a| front.entry <= a);
                if !front.finished(known_acknowledged) {
                    break;
                }
                self.length = front.copy.as_ref().map_or(self.length, |(_, cumulative)| *cumulative);
                self.entries.pop_front();
                self.first_held += 1;
                progressed = true;
            }
            // Read further within the window.
            while self.end.is_none() && self.entries.len() < self.settings.window_entries {
                let entry = self.next_to_read;
                self.entries.push_back(EntryState {
                    entry,
                    answers: self.quorum.entry_answers(entry),
                    reads_in_flight: BookieSet::EMPTY,
                    copy: None,
                    acks: None,
                    adds_in_flight: BookieSet::EMPTY,
                });
                self.next_to_read += 1;
                for index in self.quorum.write_set(entry).iter() {
                    self.send(RecoveryTagKind::Read, entry, index);
                }
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        // RC3: every entry up to the end is finished.
        if let Some(last_entry) = self.end
            && self.entries.is_empty()
        {
            self.phase = Phase::Closing;
            self.retries.clear();
            let length = if last_entry.is_some() { self.length } else { 0 };
            self.outputs.push_back(RecoveryOutput::CloseRequested(RecoveredEnd { last_entry, length }));
        }
    }
}
