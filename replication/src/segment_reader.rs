//! `SegmentReader`: the sans-I/O read path of one segment, open or closed
//! (docs/rfcs/2026-11-26-replication.md, "Reads").
//!
//! Owns: which entries to read (from `first_entry` up to the known end: the LAC of an open
//! segment, the last entry of a closed one), which replica of each to ask and when to ask
//! another (speculative reads, retry rounds with backoff), what an answer means (the entry, a
//! replica that lacks it, a corrupt replica, a failure), the read-ahead window and delivery in
//! entry order, the LAC (READ_LAC at start, LONG_POLL while tailing, the shell's updates), the
//! segment's end, and each entry's envelope check (`entry_envelope`: a CRC32C over the segment
//! id, entry id, cumulative length and payload) before the caller's payload is handed out.
//! Does not own: sockets, clocks, timers, the segment metadata. Inputs are method calls that
//! take the time as `now` (`on_response`, `on_tick`, `consumed`, `on_last_add_confirmed`,
//! `on_metadata`); outputs queue up and the shell drains them with `poll_output`: requests to
//! send to a bookie (named by the shell's identity
//! `B`, since ensembles change across entries) under a `Tag`, entries in order, bad replicas for
//! the auditor, LAC advances, the end, or the error that stopped the reader. `next_deadline`
//! says when to call `on_tick`. The shell must answer every `Send` exactly once (the transport's
//! request timeout guarantees it; a LONG_POLL needs `timeout_ms` more than the usual timeout).
//!
//! Choices:
//! - Replica order for entry e: the members of W(e) in write-set order, which starts at
//!   e mod E and so rotates the first member asked from entry to entry, with bookies that
//!   failed or were slow within `suspect_duration` moved last. After `speculative_timeout`
//!   without an answer the next member is asked too (and the slow ones become suspect); an
//!   error answer asks the next member at once. The timeout is fixed, not adaptive (yet).
//! - A round asks every member of W(e) once. When all of them failed (missing, corrupt or
//!   error), the entry waits `retry_backoff` (doubling up to `retry_backoff_max`) and a new round
//!   starts; after `read_rounds_max` rounds it is `ReaderError::Unreadable`. Entries before it
//!   are still delivered, then the error comes out in its place and the reader stops: a failure
//!   to read is an error, never a gap. A new reader from `next_entry()` resumes.
//! - Catch-up (E == Qw only, every bookie holds every entry of its ensemble): a run of at least
//!   `range_read_entries_min` entries within one ensemble is asked with READ_RANGEs,
//!   `ranges_in_flight` (2) at a time, each to a healthy bookie (rotating) and within an equal
//!   share of the window and of the read-ahead bytes (sized by the entries' stored size so far,
//!   so the server's byte cap rarely cuts one short): the next range is read from disk while
//!   the answer to the previous one travels and is checked. A range may return fewer entries
//!   (a byte cap, a missing entry): if it ends the window, the rest is asked again by the next
//!   range; before a later range, each of the rest is read on its own. A range that fails,
//!   returns nothing valid, or has no answer after `range_read_timeout` gives its first entry
//!   to the per-entry path (with that bookie counted as asked) and the rest as a short answer's.
//!   With E > Qw entries are read one by one.
//! - Consumption: an `Output::Entry` stays counted in the window until the caller says it is
//!   done with it (`consumed`); that is what bounds the memory of the reader and its caller.
//! - LAC unknown at start (open segment, no LAC given): READ_LAC (not fenced) to every bookie of
//!   the last ensemble. Every answer is a true LAC (only the writer makes LACs); the largest
//!   wins as they come, and tailing starts at the first answer (`NoSuchSegment`, no entry yet,
//!   counts) or once all failed. Then, when every entry up to the LAC has been asked, one
//!   LONG_POLL is kept in flight, on a member of W(LAC + 1), healthy first (`known` is the LAC,
//!   or `first_entry - 1` for a reader that starts past it): a timeout answer polls the same
//!   bookie again; a failure moves to the next member after a backoff; an entry that rides on
//!   the answer is taken when it is the next one to read (or one being read) and within the
//!   LAC.
//! - Answers that do not match their request (another segment or entry) are failures of that
//!   bookie. `NoSuchEntry` / `NoSuchSegment` (a replica without the entry: normal when Qa < Qw)
//!   does not make the bookie suspect; `Corrupt` does and is reported as `Output::BadReplica`.
//! - Envelopes: the bytes of every entry a bookie sends (READ, each entry of a READ_RANGE, the
//!   entry on a LONG_POLL) are checked with `entry_envelope::decode` under this segment and
//!   the entry's id. Bytes that fail (damaged, or another entry's or segment's envelope) count
//!   as a `Corrupt` answer of that bookie: `BadReplica`, suspect, the next member asked; never
//!   the entry, never its absence. A READ_RANGE keeps its entries before the first that fails
//!   and gives that one to the per-entry path (that bookie counted as asked). Held bytes count
//!   the caller's payloads, not the 12-byte headers; a READ_RANGE's `max_bytes` caps stored
//!   bytes, which are more, so R4's bound holds.
//!
//! Invariants:
//! - R1 (order): `Output::Entry` comes out for `first_entry`, `first_entry + 1`, ... in order,
//!   exactly once each; `Output::End` comes out at most once, after the last entry of a closed
//!   segment, and nothing comes out after `End` or `Failed`.
//! - R2 (known end): no entry past the known end is read or delivered: a READ or READ_RANGE
//!   names only entries at most the LAC (open) or the last entry (closed) known when it is sent,
//!   and the end never moves back (R3), so every entry delivered is within the end.
//! - R3 (LAC): the LAC only moves forward, whatever its source (the constructor, the shell,
//!   metadata, READ_LAC, LONG_POLL); a smaller or equal LAC is ignored. Metadata closing the
//!   segment before the LAC known is refused, and so is a closed end that changes.
//! - R4 (memory): at most `read_ahead_entries` entries are held (read, being read, or delivered
//!   and not yet consumed). A read starts only while the payload bytes held are below
//!   `read_ahead_bytes`, and a READ_RANGE asks at most its share of the bytes left, counted as
//!   held until it is answered (the rest of a short one keeps what is left of it), so the
//!   bytes held stay below `read_ahead_bytes` plus one entry per read in flight. Requests in flight are at most
//!   Qw per held entry (a round asks each member once; more only when an ensemble change
//!   replaces members mid-round), plus `ranges_in_flight` READ_RANGEs, one LONG_POLL and E
//!   READ_LACs.
//! - R5 (no gaps): an entry is delivered only after every entry before it; an entry that cannot
//!   be read after `read_rounds_max` rounds stops the reader with `Unreadable` at that entry.
//! - R6 (answers): each request's answer is used at most once: an answer whose tag names no
//!   request the reader still waits for is ignored and counted, as `stale_answers` (a request
//!   it sent: a duplicate, the slower replica of a speculative read) or `unknown_answers`.
//! - R7 (integrity): only entries whose envelope checks under this segment and their own entry
//!   id are delivered, and what `Output::Entry` carries is the caller's payload (the envelope's,
//!   without its header); bytes that do not check are a corrupt replica, reported as
//!   `BadReplica`, and the entry is read from another member (or, R5, is `Unreadable`).

mod ensembles;
mod reads;
mod tail;
mod window;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_protocol::{LAC_NONE, Request, Response};

use crate::quorum::QuorumSizes;
pub use crate::segment_writer::TransportFailure;

use ensembles::{Ensembles, Health};
use tail::Tail;
use window::{Outbox, RangeRead, Window};

/// A reader's tags count up from 0 and stay below this (bit 63 is left to the shell).
pub const TAG_LIMIT: u64 = 1 << 63;

/// The `u64` a request is submitted with (`Connection::submit(tag, ..)`): a sequence number,
/// new for every request the reader sends, below `TAG_LIMIT`. Its answer goes back to
/// `on_response` with it (R6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u64);

impl Tag {
    /// The tag a transport completion carries.
    pub fn from_raw(raw: u64) -> Tag {
        Tag(raw)
    }

    /// The value to submit the request with.
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// The end of the segment as known: where reading must stop (R2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The segment is open: entries up to its LAC can be read, and the LAC grows.
    Open {
        /// The LAC known (from the metadata or the writer), or `None` if none is known: the
        /// reader then asks the bookies (READ_LAC).
        last_add_confirmed: Option<u64>,
    },
    /// The segment is closed at its last entry (`None`: it has no entry).
    Closed {
        /// The last entry.
        last_entry: Option<u64>,
    },
}

/// How the reader paces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderSettings {
    /// Without an answer for this long, one more member of the write set is asked. Default
    /// 50 ms (near a bookie's p99 read latency); fixed, not adaptive.
    pub speculative_timeout: Duration,
    /// The wait a LONG_POLL asks for (the server may cap it, at 60 s today). Default 10 s.
    pub long_poll_timeout: Duration,
    /// Most entries held: being read, read, or delivered and not yet `consumed` (R4). Default
    /// 64; at least 1.
    pub read_ahead_entries: usize,
    /// Reads start only while the payload bytes held are below this (R4). Default 16 MiB; at
    /// least 1.
    pub read_ahead_bytes: u64,
    /// The wait before a new round for an entry every member failed, and before a LONG_POLL
    /// after a failed one; doubles with each failure. Default 100 ms.
    pub retry_backoff: Duration,
    /// The longest backoff. Default 2 s.
    pub retry_backoff_max: Duration,
    /// Rounds over the whole write set before an entry is `Unreadable`. Default 6 (with the
    /// default backoff, about 3 s of retries: long enough for the client to ask the registry
    /// again, every second, for a bookie that was briefly unregistered); at least 1.
    pub read_rounds_max: u32,
    /// A bookie that failed or was slow is asked last for this long. Default 10 s.
    pub suspect_duration: Duration,
    /// Runs of at least this many entries are read with READ_RANGE when E == Qw; `None`: never.
    /// Default `Some(8)`; at least 1 and at most `read_ahead_entries`.
    pub range_read_entries_min: Option<usize>,
    /// A READ_RANGE without an answer for this long is given up (its first entry is read on its
    /// own, the rest asked again as a range). Default 1 s.
    pub range_read_timeout: Duration,
    /// READ_RANGEs kept in flight while catching up, each within an equal share of the window
    /// and of `read_ahead_bytes`, so the next one is read from disk while the answer to the
    /// previous one travels and is checked. Default 2; at least 1.
    pub ranges_in_flight: usize,
}

impl Default for ReaderSettings {
    fn default() -> Self {
        ReaderSettings {
            speculative_timeout: Duration::from_millis(50),
            long_poll_timeout: Duration::from_secs(10),
            read_ahead_entries: 64,
            read_ahead_bytes: 16 << 20,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(2),
            read_rounds_max: 6,
            suspect_duration: Duration::from_secs(10),
            range_read_entries_min: Some(8),
            range_read_timeout: Duration::from_secs(1),
            ranges_in_flight: 2,
        }
    }
}

impl ReaderSettings {
    /// The wait after the `failures`-th failure in a row (1 or more).
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.retry_backoff.saturating_mul(factor).min(self.retry_backoff_max)
    }
}

/// Why `SegmentReader::new` or `SegmentReader::on_metadata` refused its arguments (nothing
/// changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The segment has no ensemble.
    #[error("no ensemble")]
    NoEnsemble,
    /// The first ensemble must start at entry 0.
    #[error("the first ensemble starts at entry {0}, not 0")]
    FirstEnsemble(u64),
    /// An ensemble does not have `ensemble_size` members.
    #[error("ensemble from entry {first_entry} has {actual} bookies for ensemble_size {expected}")]
    EnsembleSize {
        /// The ensemble's first entry.
        first_entry: u64,
        /// `QuorumSizes::ensemble_size`.
        expected: usize,
        /// The ensemble's length.
        actual: usize,
    },
    /// A bookie appears twice in one ensemble.
    #[error("ensemble from entry {first_entry} names a bookie twice")]
    DuplicateBookie {
        /// The ensemble's first entry.
        first_entry: u64,
    },
    /// An entry id or LAC of `LAC_NONE` (`u64::MAX`), which no entry has.
    #[error("entry id {0} is out of range")]
    EntryId(u64),
    /// A setting is zero that must not be.
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    /// `range_read_entries_min` is larger than `read_ahead_entries`: no range would fit.
    #[error("range_read_entries_min {min} is over read_ahead_entries {window}")]
    RangeOverWindow {
        /// `range_read_entries_min`.
        min: usize,
        /// `read_ahead_entries`.
        window: usize,
    },
    /// The metadata says open after it said closed: segments never reopen.
    #[error("segment reopened")]
    Reopened,
    /// The metadata closes the segment at another last entry than before.
    #[error("closed end changed from {was:?} to {now:?}")]
    EndChanged {
        /// The last entry known.
        was: Option<u64>,
        /// The last entry given.
        now: Option<u64>,
    },
    /// The metadata closes the segment before the LAC known (R3): impossible for a correct
    /// close, so it is refused.
    #[error("closed at {last_entry:?}, before the last add confirmed {last_add_confirmed}")]
    EndBeforeLastAddConfirmed {
        /// The last entry given.
        last_entry: Option<u64>,
        /// The LAC known.
        last_add_confirmed: u64,
    },
}

/// Why the reader stopped (R5).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReaderError {
    /// Every member of the entry's write set failed to give it, `rounds` times over.
    #[error("entry {entry} unreadable after {rounds} rounds")]
    Unreadable {
        /// The entry: every entry before it was delivered, none after.
        entry: u64,
        /// The rounds tried (`read_rounds_max`).
        rounds: u32,
    },
    /// A bookie answered `Unauthorized`: this client may not read the segment (its
    /// credentials, or the bookies' permissions for the segment's namespace). The reader stops
    /// at once: every replica would answer the same.
    #[error("not authorized: {reason}")]
    Unauthorized {
        /// The bookie's reason.
        reason: String,
    },
}

/// Work for the shell, drained with `SegmentReader::poll_output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<B> {
    /// Send `request` to `bookie`, tagged `tag`; give its answer to `on_response` with the tag.
    Send {
        /// The bookie.
        bookie: B,
        /// The tag to submit with.
        tag: Tag,
        /// A READ, READ_RANGE, LONG_POLL or READ_LAC (never fenced).
        request: Request,
    },
    /// The next entry (R1). Call `consumed` once done with it (R4).
    Entry {
        /// The entry id.
        entry: u64,
        /// The caller's payload: the envelope's, checked (R7), a slice of the bytes the bookie
        /// sent (no copy).
        payload: Bytes,
    },
    /// `bookie` answered `Corrupt` for `entry`, or bytes that are not its envelope (R7): for the
    /// auditor's queue.
    BadReplica {
        /// The entry.
        entry: u64,
        /// The bookie.
        bookie: B,
    },
    /// The LAC advanced to this entry (R3).
    LastAddConfirmed(u64),
    /// Every entry of the closed segment from `first_entry` on was delivered.
    End,
    /// The reader stopped: every entry before the error's was delivered (R5).
    Failed(ReaderError),
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// READs sent (speculative ones included).
    pub reads: u64,
    /// READs sent because the ones before had no answer within `speculative_timeout`.
    pub speculative_reads: u64,
    /// READ_RANGEs sent.
    pub range_reads: u64,
    /// READ_RANGEs that returned fewer entries than asked.
    pub short_ranges: u64,
    /// READ_RANGEs that failed, returned nothing usable, or timed out.
    pub failed_ranges: u64,
    /// `NoSuchEntry` / `NoSuchSegment` answers to reads.
    pub missing_replies: u64,
    /// `Corrupt` answers to reads, and entries whose envelope did not check (R7).
    pub corrupt_replies: u64,
    /// Entries (READ, READ_RANGE, LONG_POLL) whose envelope did not check (R7): counted in
    /// `corrupt_replies` too.
    pub bad_envelopes: u64,
    /// Other failed reads: refusals, transport failures, answers that do not match.
    pub read_failures: u64,
    /// Rounds started again after every member of a write set failed.
    pub retry_rounds: u64,
    /// LONG_POLLs sent.
    pub long_polls: u64,
    /// LONG_POLL answers that did not advance the LAC (timeouts).
    pub long_poll_timeouts: u64,
    /// LONG_POLLs that failed.
    pub long_poll_failures: u64,
    /// Entries taken from LONG_POLL answers.
    pub piggybacked_entries: u64,
    /// READ_LACs sent.
    pub lac_reads: u64,
    /// Answers to requests the reader no longer waits for (R6).
    pub stale_answers: u64,
    /// Answers whose tag the reader never issued (R6).
    pub unknown_answers: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Reading,
    Ended,
    Failed(ReaderError),
}

/// The read path of one segment (see the module doc for its invariants). `B` is whatever the
/// shell identifies a bookie by.
#[derive(Debug)]
pub struct SegmentReader<B> {
    segment_id: u64,
    quorum: QuorumSizes,
    ensembles: Ensembles<B>,
    end: SegmentEnd,
    settings: ReaderSettings,
    phase: Phase,
    /// Held entries; `window.end()` is the next entry to read.
    window: Window<B>,
    /// The next entry to deliver (R1).
    next_deliver: u64,
    /// The entry found unreadable, once one is: nothing past it is read (R5).
    unreadable: Option<u64>,
    /// READ_RANGEs in flight, in entry order, at most `ranges_in_flight` (the rest of a short
    /// one is asked again in its place).
    ranges: Vec<RangeRead<B>>,
    range_rotation: usize,
    /// Stored bytes per entry in the last range answered: sizes the next ranges so the
    /// server's byte cap does not cut them short.
    range_entry_bytes: Option<u64>,
    tail: Tail,
    health: Health<B>,
    outbox: Outbox<B>,
    stats: ReaderStats,
}

fn check_entry_id(entry: Option<u64>) -> Result<(), SetupError> {
    match entry {
        Some(LAC_NONE) => Err(SetupError::EntryId(LAC_NONE)),
        _ => Ok(()),
    }
}

fn check_settings(settings: &ReaderSettings) -> Result<(), SetupError> {
    if settings.read_ahead_entries == 0 {
        return Err(SetupError::Zero("read_ahead_entries"));
    }
    if settings.read_ahead_bytes == 0 {
        return Err(SetupError::Zero("read_ahead_bytes"));
    }
    if settings.read_rounds_max == 0 {
        return Err(SetupError::Zero("read_rounds_max"));
    }
    if settings.ranges_in_flight == 0 {
        return Err(SetupError::Zero("ranges_in_flight"));
    }
    match settings.range_read_entries_min {
        Some(0) => Err(SetupError::Zero("range_read_entries_min")),
        Some(min) if min > settings.read_ahead_entries => {
            Err(SetupError::RangeOverWindow { min, window: settings.read_ahead_entries })
        }
        _ => Ok(()),
    }
}

impl<B: Clone + PartialEq + fmt::Debug> SegmentReader<B> {
    /// A reader of segment `segment_id` from `first_entry` on, with the segment's ensembles
    /// (by first entry: the first at 0, each of `quorum.ensemble_size()` distinct bookies) and
    /// its end as known. Its first requests are queued at once; a closed segment with nothing
    /// from `first_entry` on queues `Output::End`.
    pub fn new(
        segment_id: u64,
        quorum: QuorumSizes,
        ensembles: BTreeMap<u64, Vec<B>>,
        first_entry: u64,
        end: SegmentEnd,
        settings: ReaderSettings,
        now: Instant,
    ) -> Result<Self, SetupError> {
        check_settings(&settings)?;
        check_entry_id(Some(first_entry))?;
        let (SegmentEnd::Open { last_add_confirmed: known } | SegmentEnd::Closed { last_entry: known }) = end;
        check_entry_id(known)?;
        let ensembles = Ensembles::new(ensembles, &quorum)?;
        let mut reader = SegmentReader {
            segment_id,
            quorum,
            ensembles,
            end,
            settings,
            phase: Phase::Reading,
            window: Window::new(first_entry),
            next_deliver: first_entry,
            unreadable: None,
            ranges: Vec::new(),
            range_rotation: 0,
            range_entry_bytes: None,
            tail: Tail::default(),
            health: Health::default(),
            outbox: Outbox::default(),
            stats: ReaderStats::default(),
        };
        reader.start_lac_reads();
        reader.progress(now);
        Ok(reader)
    }

    /// The segment read.
    pub fn segment_id(&self) -> u64 {
        self.segment_id
    }

    /// The end as known now (R2, R3).
    pub fn end(&self) -> SegmentEnd {
        self.end
    }

    /// The LAC known, for an open segment; the last entry, for a closed one.
    pub fn last_add_confirmed(&self) -> Option<u64> {
        self.readable_end()
    }

    /// The next entry to deliver: where a new reader resumes after a failure.
    pub fn next_entry(&self) -> u64 {
        self.next_deliver
    }

    /// Entries held: being read, read, or delivered and not consumed (R4).
    pub fn held_entries(&self) -> usize {
        self.window.len()
    }

    /// Payload bytes held: read, or delivered and not consumed (R4).
    pub fn held_bytes(&self) -> u64 {
        self.window.bytes()
    }

    /// Requests sent and not yet answered that the reader waits for (R4).
    pub fn requests_in_flight(&self) -> usize {
        self.outbox.in_flight()
    }

    /// Whether `Output::End` came out.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Why the reader stopped, if it failed.
    pub fn failure(&self) -> Option<&ReaderError> {
        match &self.phase {
            Phase::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// The counters.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// The next piece of work for the shell.
    pub fn poll_output(&mut self) -> Option<Output<B>> {
        self.outbox.outputs.pop_front()
    }

    /// When `on_tick` has something to do (a speculative read, a new round, a range given up,
    /// a LONG_POLL after its backoff), if ever without another input.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Reading {
            return None;
        }
        let range = self.ranges.iter().map(|range| range.give_up_at).min();
        [self.window.next_deadline(), range, self.tail.retry_at()].into_iter().flatten().min()
    }

    /// The answer to the request sent with `tag`: the bookie's response (a refusal is a
    /// `Response::Refused`), or why there was none.
    pub fn on_response(&mut self, tag: Tag, result: Result<Response, TransportFailure>, now: Instant) {
        let Some(pending) = self.outbox.take(tag.raw()) else {
            if self.outbox.issued(tag.raw()) {
                self.stats.stale_answers += 1;
            } else {
                self.stats.unknown_answers += 1;
            }
            return;
        };
        self.on_answer(tag.raw(), pending, result, now);
        self.progress(now);
    }

    /// Time passed: speculative reads, new rounds, ranges given up, LONG_POLLs after backoff.
    pub fn on_tick(&mut self, now: Instant) {
        if self.phase != Phase::Reading {
            return;
        }
        self.tick_range(now);
        self.tick_entries(now);
        self.tail.tick(now);
        self.progress(now);
    }

    /// The caller is done with every entry delivered up to `through`: their room in the window
    /// is free again (R4). Entries not delivered yet are not affected.
    pub fn consumed(&mut self, through: u64, now: Instant) {
        self.window.release(through, self.next_deliver);
        self.progress(now);
    }

    /// A LAC learned by the shell (from the writer, say): taken if larger than the one known
    /// (R3); ignored for a closed segment.
    pub fn on_last_add_confirmed(&mut self, last_add_confirmed: u64, now: Instant) {
        if self.advance_lac(Some(last_add_confirmed)) {
            self.progress(now);
        }
    }

    /// The segment's metadata changed: new ensembles (a bookie replaced), a LAC, or the close.
    /// Reads not yet sent go to the new ensembles. A closed segment is read to its last entry,
    /// then `Output::End`. Refused, with nothing changed, when malformed or when it contradicts
    /// what is known (a reopened segment, a changed close, a close before the LAC: R3).
    pub fn on_metadata(
        &mut self,
        ensembles: BTreeMap<u64, Vec<B>>,
        end: SegmentEnd,
        now: Instant,
    ) -> Result<(), SetupError> {
        let ensembles = Ensembles::new(ensembles, &self.quorum)?;
        match (self.end, end) {
            (SegmentEnd::Closed { .. }, SegmentEnd::Open { .. }) => return Err(SetupError::Reopened),
            (SegmentEnd::Closed { last_entry: was }, SegmentEnd::Closed { last_entry: now })
                if was != now =>
            {
                return Err(SetupError::EndChanged { was, now });
            }
            (SegmentEnd::Open { last_add_confirmed: Some(lac) }, SegmentEnd::Closed { last_entry })
                if last_entry.is_none_or(|last| last < lac) =>
            {
                return Err(SetupError::EndBeforeLastAddConfirmed { last_entry, last_add_confirmed: lac });
            }
            (
                _,
                SegmentEnd::Open { last_add_confirmed: known } | SegmentEnd::Closed { last_entry: known },
            ) => check_entry_id(known)?,
        }
        self.ensembles = ensembles;
        match end {
            SegmentEnd::Open { last_add_confirmed } => {
                self.advance_lac(last_add_confirmed);
            }
            SegmentEnd::Closed { .. } => {
                if matches!(self.end, SegmentEnd::Open { .. }) {
                    self.end = end;
                    self.tail.stop(&mut self.outbox);
                }
            }
        }
        if self.phase == Phase::Reading {
            self.progress(now);
        }
        Ok(())
    }

    /// The last entry that may be read now (R2).
    fn readable_end(&self) -> Option<u64> {
        match self.end {
            SegmentEnd::Open { last_add_confirmed } => last_add_confirmed,
            SegmentEnd::Closed { last_entry } => last_entry,
        }
    }

    /// Delivers what is ready, reads what the window allows, keeps a LONG_POLL going.
    fn progress(&mut self, now: Instant) {
        self.deliver();
        self.fill(now);
        self.poll_if_needed(now);
    }

    /// A bookie refused this client (`Unauthorized`): the reader fails (no other replica would
    /// answer otherwise).
    fn refused_access(&mut self, reason: String) {
        if self.phase == Phase::Reading {
            self.stop(Phase::Failed(ReaderError::Unauthorized { reason }));
        }
    }

    /// Stops for good: every request is forgotten, so later answers are stale (R1, R6).
    fn stop(&mut self, phase: Phase) {
        debug_assert_eq!(self.phase, Phase::Reading);
        self.outbox.forget_all();
        self.ranges.clear();
        self.tail.stop(&mut self.outbox);
        match &phase {
            Phase::Failed(error) => self.outbox.outputs.push_back(Output::Failed(error.clone())),
            Phase::Ended => self.outbox.outputs.push_back(Output::End),
            Phase::Reading => unreachable!("stop to a stopped phase"),
        }
        self.phase = phase;
    }
}
