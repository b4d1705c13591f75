//! `SegmentWriter`: the sans-I/O write path of one open segment, **without ensemble change** yet
//! (docs/rfcs/2026-11-26-replication.md, "Write path").
//!
//! Owns: entry ids, the window of entries held, each entry's acks (`AckSet`), completions in
//! entry order, `last_add_confirmed` (LAC) piggybacked on ADDs and written explicitly
//! (WRITE_LAC) when idle, what a bookie's answer means (ack, a failure of that bookie for that
//! entry, or fatal: `Fenced`, `WrongMasterKey`), and the close request.
//! Does not own: sockets, clocks, timers, retries, placement, the segment metadata. Inputs are
//! method calls (`add`, `on_response`, `on_tick`, `close`, `on_closed`) that take the time as
//! `now`; outputs queue up and the shell drains them with `poll_output`: requests to send to an
//! ensemble index under a `Tag`, completions, LAC advances, bookie failures, and the close CAS
//! to perform. The shell (later) maps ensemble indexes to connections and feeds
//! `Connection::completions()` back in as `on_response`.
//!
//! Not there yet: ensemble change. A failing bookie is reported (`Output::BookieFailed`) and
//! its entries stay pending on the other members of their write sets. An entry whose write set
//! can no longer reach Qa acks (`AckSet::can_complete` false) fails with
//! `WriterError::QuorumUnreachable`, and so does every entry after it (a log has no holes): the
//! writer is failed and refuses new adds. The ensemble change will replace the bookie instead.
//!
//! Invariants:
//! - W1 (order): `Output::Completed` comes out for entries 0, 1, 2, ... in order, exactly once
//!   each: an entry completes only after every entry before it completed.
//! - W2 (LAC): the LAC is the last entry that completed `Ok`, and every entry up to it completed
//!   `Ok`; it never moves back. `Output::LastAddConfirmed` reports each advance. The LAC sent on
//!   an ADD or a WRITE_LAC is the LAC at the time it is sent.
//! - W3 (acknowledgement): an entry completes `Ok` only once Qa distinct members of its write
//!   set answered its ADD with success (`AckSet::is_complete`); nothing else counts.
//! - W4 (fencing): once any bookie answers `Fenced` (or `WrongMasterKey`), no entry completes
//!   `Ok` any more: every entry not yet completed completes with that error, in order, and new
//!   adds are refused with it.
//! - W5 (memory): at most `window_entries_max` entries are held (not completed, or with a
//!   request still in flight: a record is kept until every request for it was answered, so
//!   answers are deduplicated), and the payload bytes of the entries not yet completed are at
//!   most `window_bytes_max`. `add` refuses beyond (`WindowFull`); it never queues.
//! - W6 (answers): each request sent is answered at most once: an answer whose tag names no
//!   request in flight (a duplicate, a stale answer, a made-up tag) is ignored and counted in
//!   `WriterStats::ignored_responses`.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_protocol::{MASTER_KEY_BYTES_MAX, Request, Response, Status};

use crate::quorum::{AckOutcome, AckSet, BookieSet, FailureOutcome, QuorumSizes};
use crate::transport::TransportError;

/// Entry ids are below this (2^56): the rest of a `Tag` holds the ensemble index and the kind.
pub const ENTRY_ID_LIMIT: u64 = 1 << ENTRY_BITS;

const ENTRY_BITS: u32 = 56;
const INDEX_BITS: u32 = 6;
const KIND_BIT: u64 = 1 << (ENTRY_BITS + INDEX_BITS);
/// Not set by the writer; left to the shell (a tag with it set is never the writer's).
const RESERVED_BIT: u64 = 1 << 63;

/// What a request to a bookie was: the `Tag` says it, so its answer maps back (W6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// An ADD of the tag's entry.
    Add,
    /// A WRITE_LAC of the tag's LAC.
    WriteLastAddConfirmed,
}

/// The `u64` a request is submitted with (`Connection::submit(tag, ..)`): bits 0..56 the entry
/// (for a WRITE_LAC, the LAC written), bits 56..62 the ensemble index, bit 62 the kind, bit 63
/// clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(u64);

impl Tag {
    fn new(kind: TagKind, entry: u64, bookie_index: usize) -> Tag {
        assert!(entry < ENTRY_ID_LIMIT, "entry {entry} does not fit a tag");
        assert!(bookie_index < 1 << INDEX_BITS, "ensemble index {bookie_index} does not fit a tag");
        let kind_bit = match kind {
            TagKind::Add => 0,
            TagKind::WriteLastAddConfirmed => KIND_BIT,
        };
        Tag(entry | (bookie_index as u64) << ENTRY_BITS | kind_bit)
    }

    /// The tag a transport completion carries.
    pub fn from_raw(raw: u64) -> Tag {
        Tag(raw)
    }

    /// The value to submit the request with.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The request's kind, or `None` for a tag the writer never makes (bit 63 set).
    pub fn kind(self) -> Option<TagKind> {
        if self.0 & RESERVED_BIT != 0 {
            None
        } else if self.0 & KIND_BIT != 0 {
            Some(TagKind::WriteLastAddConfirmed)
        } else {
            Some(TagKind::Add)
        }
    }

    /// The entry of an ADD, or the LAC of a WRITE_LAC.
    pub fn entry(self) -> u64 {
        self.0 & (ENTRY_ID_LIMIT - 1)
    }

    /// The ensemble index the request went to.
    pub fn bookie_index(self) -> usize {
        ((self.0 >> ENTRY_BITS) & ((1 << INDEX_BITS) - 1)) as usize
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag({:?} entry {} bookie {})", self.kind(), self.entry(), self.bookie_index())
    }
}

/// Why a request got no answer from its bookie (the writer's view of a `TransportError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportFailure {
    /// No answer within the request timeout.
    Timeout,
    /// The connection was lost with the request in flight (or could not be made).
    Disconnected,
    /// Anything else (malformed answer, busy, closed, ...).
    Other,
}

impl From<&TransportError> for TransportFailure {
    fn from(error: &TransportError) -> Self {
        match error {
            TransportError::Timeout => TransportFailure::Timeout,
            TransportError::Disconnected { .. }
            | TransportError::Connect { .. }
            | TransportError::Unavailable { .. } => TransportFailure::Disconnected,
            _ => TransportFailure::Other,
        }
    }
}

/// How the writer bounds its window and flushes its LAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterSettings {
    /// Most entries held (W5). Default 1024; at least 1.
    pub window_entries_max: usize,
    /// Most payload bytes of entries not yet completed (W5); also the largest entry. Default
    /// 64 MiB; at least 1.
    pub window_bytes_max: u64,
    /// After no add for this long, a LAC not yet sent is written with WRITE_LAC to the write
    /// set of the last entry. Default 1 ms.
    pub lac_flush_delay: Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            window_entries_max: 1024,
            window_bytes_max: 64 << 20,
            lac_flush_delay: Duration::from_millis(1),
        }
    }
}

/// Why `SegmentWriter::new` refused its arguments.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The ensemble does not have `ensemble_size` members.
    #[error("ensemble of {actual} bookies for ensemble_size {expected}")]
    EnsembleSize {
        /// `QuorumSizes::ensemble_size`.
        expected: usize,
        /// The ensemble's length.
        actual: usize,
    },
    /// A window bound is zero.
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    /// The master key is longer than the wire allows.
    #[error("master key of {0} bytes is over {MASTER_KEY_BYTES_MAX}")]
    MasterKeyTooLong(usize),
}

/// Why an add was refused or failed, or why the writer stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriterError {
    /// The window is full (W5): add again after completions.
    #[error("write window full")]
    WindowFull,
    /// The payload is larger than `window_bytes_max`.
    #[error("entry of {bytes} bytes is over the window of {max}")]
    EntryTooLarge {
        /// The payload's length.
        bytes: u64,
        /// `window_bytes_max`.
        max: u64,
    },
    /// The segment has used every entry id (`ENTRY_ID_LIMIT`).
    #[error("entry ids exhausted")]
    EntryIdsExhausted,
    /// A bookie answered `Fenced`: a recoverer took the segment over (W4).
    #[error("segment fenced")]
    Fenced,
    /// A bookie answered `WrongMasterKey`: this writer does not own the segment.
    #[error("wrong master key")]
    WrongMasterKey,
    /// The write set of `entry` cannot reach Qa acks any more; with no ensemble change, that
    /// entry and every one after it fail.
    #[error("entry {entry} cannot reach its ack quorum")]
    QuorumUnreachable {
        /// The first entry that could not reach Qa.
        entry: u64,
    },
    /// The writer is closing or closed.
    #[error("writer closed")]
    Closed,
    /// The close's metadata update failed (given to `on_closed` by the shell).
    #[error("closing the segment metadata failed: {0}")]
    Metadata(String),
}

impl WriterError {
    fn is_fatal(&self) -> bool {
        matches!(self, WriterError::Fenced | WriterError::WrongMasterKey)
    }
}

/// Work for the shell, drained with `SegmentWriter::poll_output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `request` to the bookie at `bookie_index` of the ensemble, tagged `tag`; give its
    /// answer to `on_response` with the same tag.
    Send {
        /// The ensemble index.
        bookie_index: usize,
        /// The tag to submit with.
        tag: Tag,
        /// An ADD or a WRITE_LAC.
        request: Request,
    },
    /// Entry `entry` is done (W1): acknowledged, or failed with the error.
    Completed {
        /// The entry.
        entry: u64,
        /// `Ok` once Qa members of its write set acked it (W3).
        result: Result<(), WriterError>,
    },
    /// The LAC advanced to this entry (W2).
    LastAddConfirmed(u64),
    /// The bookie at `bookie_index` failed `entry` (an error answer or no answer). What the
    /// ensemble change will act on; for now the entry waits for the rest of its write set.
    BookieFailed {
        /// The ensemble index.
        bookie_index: usize,
        /// The entry it failed.
        entry: u64,
    },
    /// Every entry completed `Ok`: compare-and-set the metadata to Closed at `last_entry`
    /// (`None`: the segment is empty) and `length`, then call `on_closed`.
    CloseRequested {
        /// The LAC: the last entry.
        last_entry: Option<u64>,
        /// The total payload bytes of entries `0..=last_entry`.
        length: u64,
    },
    /// The close ended: `Ok` once the metadata says Closed at `last_entry`.
    Closed(Result<(), WriterError>),
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Answers ignored because their tag named no request in flight (W6).
    pub ignored_responses: u64,
    /// Acks that arrived after their entry had completed (normal when Qw > Qa).
    pub late_acks: u64,
    /// Failed ADDs (error answers, no answers, answers that do not match the request).
    pub add_failures: u64,
    /// WRITE_LAC requests sent (one per member of the write set).
    pub lac_writes: u64,
    /// WRITE_LACs that failed (harmless: the next ADD carries the LAC too).
    pub lac_write_failures: u64,
}

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
    /// Emptied once the entry completed (no ensemble change re-sends it).
    payload: Bytes,
    acks: AckSet,
    /// The members with an ADD of this entry in flight.
    outstanding: BookieSet,
    completed: bool,
}

/// What an answer means.
enum Verdict {
    Success,
    Fatal(WriterError),
    Failure,
}

fn judge(result: Result<Response, TransportFailure>, expected: impl Fn(&Response) -> bool) -> Verdict {
    match result {
        Ok(Response::Refused { status: Status::Fenced, .. }) => Verdict::Fatal(WriterError::Fenced),
        Ok(Response::Refused { status: Status::WrongMasterKey, .. }) => {
            Verdict::Fatal(WriterError::WrongMasterKey)
        }
        Ok(response) if expected(&response) => Verdict::Success,
        // Another refusal (ReadOnly, Internal, Overloaded...), an answer that does not match the
        // request, or no answer: that bookie failed that request.
        Ok(_) | Err(_) => Verdict::Failure,
    }
}

/// The write path of one segment (see the module doc for its invariants). `B` is whatever the
/// shell identifies a bookie by; the writer only uses ensemble indexes.
#[derive(Debug)]
pub struct SegmentWriter<B> {
    segment_id: u64,
    master_key: Bytes,
    quorum: QuorumSizes,
    ensemble: Vec<B>,
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
    /// The largest LAC sent, piggybacked or explicit.
    lac_sent: Option<u64>,
    last_add_at: Instant,
    /// WRITE_LACs in flight: (LAC, ensemble index).
    lac_writes: BTreeSet<(u64, usize)>,
    outputs: VecDeque<Output>,
    stats: WriterStats,
}

impl<B> SegmentWriter<B> {
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
        if settings.window_bytes_max == 0 {
            return Err(SetupError::Zero("window_bytes_max"));
        }
        if master_key.len() > MASTER_KEY_BYTES_MAX {
            return Err(SetupError::MasterKeyTooLong(master_key.len()));
        }
        Ok(SegmentWriter {
            segment_id,
            master_key,
            quorum,
            ensemble,
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
            lac_sent: None,
            last_add_at: now,
            lac_writes: BTreeSet::new(),
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

    /// The ensemble, by index.
    pub fn ensemble(&self) -> &[B] {
        &self.ensemble
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

    /// The counters.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// The next piece of work for the shell.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `on_tick` has something to do (a WRITE_LAC), if ever without another input.
    pub fn next_deadline(&self) -> Option<Instant> {
        let writing = matches!(self.phase, Phase::Open | Phase::Draining) && self.failure.is_none();
        (writing && self.last_add_confirmed > self.lac_sent)
            .then(|| self.last_add_at + self.settings.lac_flush_delay)
    }

    /// Accepts `payload` as the next entry and emits its ADDs to its write set, carrying the
    /// LAC. Refuses when the writer failed (its error), is closing (`Closed`), or the window is
    /// full (`WindowFull`, W5).
    pub fn add(&mut self, payload: Bytes, now: Instant) -> Result<u64, WriterError> {
        if let Some((_, error)) = &self.failure {
            return Err(error.clone());
        }
        if self.phase != Phase::Open {
            return Err(WriterError::Closed);
        }
        let bytes = payload.len() as u64;
        if bytes > self.settings.window_bytes_max {
            return Err(WriterError::EntryTooLarge { bytes, max: self.settings.window_bytes_max });
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
        let write_set = self.quorum.write_set(entry);
        for bookie_index in write_set.iter() {
            let request = Request::Add {
                segment: self.segment_id,
                entry,
                last_add_confirmed: self.last_add_confirmed,
                master_key: self.master_key.clone(),
                payload: payload.clone(),
                recovery: false,
            };
            let tag = Tag::new(TagKind::Add, entry, bookie_index);
            self.outputs.push_back(Output::Send { bookie_index, tag, request });
        }
        self.lac_sent = self.lac_sent.max(self.last_add_confirmed);
        self.records.push_back(Record {
            payload,
            acks: self.quorum.ack_set(entry),
            outstanding: write_set.members(),
            completed: false,
        });
        self.uncompleted_bytes += bytes;
        self.next_entry += 1;
        self.last_add_at = now;
        Ok(entry)
    }

    /// The answer to the request sent with `tag`: the bookie's response (a refusal is a
    /// `Response::Refused`), or why there was none. `now` is unused until ensemble changes.
    pub fn on_response(&mut self, tag: Tag, result: Result<Response, TransportFailure>, _now: Instant) {
        match tag.kind() {
            Some(TagKind::Add) => self.on_add_answer(tag.entry(), tag.bookie_index(), result),
            Some(TagKind::WriteLastAddConfirmed) => {
                self.on_lac_answer(tag.entry(), tag.bookie_index(), result)
            }
            None => self.stats.ignored_responses += 1,
        }
        self.complete_in_order();
    }

    /// Time passed: writes the LAC explicitly if the writer was idle for `lac_flush_delay`
    /// with a LAC not yet sent.
    pub fn on_tick(&mut self, now: Instant) {
        let Some(deadline) = self.next_deadline() else { return };
        let Some(lac) = self.last_add_confirmed else { return };
        if now < deadline {
            return;
        }
        for bookie_index in self.quorum.write_set(lac).iter() {
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
                let outcome = record.acks.record_ack(bookie_index);
                debug_assert_eq!(outcome, AckOutcome::Counted, "one ADD per member, answered once");
                if record.completed {
                    self.stats.late_acks += 1;
                }
            }
            Verdict::Fatal(error) => self.fail(error),
            Verdict::Failure => {
                self.stats.add_failures += 1;
                if record.acks.record_failure(bookie_index) == FailureOutcome::Counted {
                    // An entry already completed still reports it: BookKeeper's issue #1390,
                    // the bookie is replaced on the next add.
                    let unreachable = !record.completed && !record.acks.can_complete();
                    self.outputs.push_back(Output::BookieFailed { bookie_index, entry });
                    if unreachable {
                        self.fail_from(entry, WriterError::QuorumUnreachable { entry });
                    }
                }
            }
        }
    }

    fn on_lac_answer(&mut self, lac: u64, bookie_index: usize, result: Result<Response, TransportFailure>) {
        if !self.lac_writes.remove(&(lac, bookie_index)) {
            self.stats.ignored_responses += 1;
            return;
        }
        match judge(result, |r| matches!(r, Response::WriteLastAddConfirmed)) {
            Verdict::Success => {}
            Verdict::Fatal(error) => self.fail(error),
            Verdict::Failure => self.stats.lac_write_failures += 1,
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
            self.failure = Some((entry, error));
        }
    }

    /// Completes entries in order (W1), advances the LAC (W2), drops records no longer needed
    /// (W5) and moves the close on.
    fn complete_in_order(&mut self) {
        let lac_before = self.last_add_confirmed;
        while self.first_uncompleted < self.next_entry {
            let entry = self.first_uncompleted;
            let offset = usize::try_from(entry - self.first_held).expect("the window fits in memory");
            let record = self.records.get_mut(offset).expect("every uncompleted entry is held");
            let result = match &self.failure {
                Some((from, error)) if entry >= *from => Err(error.clone()),
                _ if record.acks.is_complete() => Ok(()),
                _ => break,
            };
            record.completed = true;
            let payload = std::mem::take(&mut record.payload);
            self.uncompleted_bytes -= payload.len() as u64;
            if result.is_ok() {
                debug_assert!(self.failure.as_ref().is_none_or(|(from, _)| entry < *from));
                self.last_add_confirmed = Some(entry);
                self.length += payload.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for (kind, entry, index) in [
            (TagKind::Add, 0, 0),
            (TagKind::Add, ENTRY_ID_LIMIT - 1, 63),
            (TagKind::WriteLastAddConfirmed, 12345, 7),
        ] {
            let tag = Tag::from_raw(Tag::new(kind, entry, index).raw());
            assert_eq!((tag.kind(), tag.entry(), tag.bookie_index()), (Some(kind), entry, index));
            assert_eq!(tag.raw() & RESERVED_BIT, 0);
        }
        assert_eq!(Tag::from_raw(RESERVED_BIT).kind(), None);
    }
}
