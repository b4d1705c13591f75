//! `WriterCore`: the sans-I/O heart of a log writer. It turns the records written to a log
//! into entries of its segments: it checks and assigns transaction ids, packs records into
//! entries under the transmit policy, gives every record its DLSN at the call, decides when a
//! segment rolls, and tracks which entries are durable. The shell (writer.rs) creates
//! segments, adds entries through the replication client, feeds the answers back, and
//! resolves the callers' futures. Time comes in as `now`.
//!
//! Entries are numbered writer-wide by a *ticket* (0, 1, ...) in the order they were opened;
//! a record's future waits for its entry's ticket. Outputs (`poll_output`) come out in the
//! order the shell must act on them.
//!
//! Invariants:
//! - WC1: transaction ids strictly increase across the log, checked (or assigned) at the call,
//!   in call order; a refused record changes nothing.
//! - WC2: a record's DLSN is fixed at the call and is what it is stored under: entry ids of a
//!   segment are dense from 0 and transmitted in order, and an entry is transmitted to the
//!   segment it was opened in.
//! - WC3: tickets are acknowledged in order, and a ticket only once every earlier one is; so an
//!   acknowledged record has every record written before it durable too (across a roll: the
//!   entries of segment n + 1 are sent only once every entry of segment n is acknowledged, so a
//!   writer that dies mid-roll cannot leave a gap that recovery would close over).
//! - WC4: after the first failure, every ticket not acknowledged fails with that error and
//!   every later write is refused with it.
//! - WC5: a segment is sealed (`SealSegment`) only after its last entry was transmitted, with
//!   the record count, last transaction id and last DLSN of everything transmitted to it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::dlsn::Dlsn;
use super::entry_codec::{ENTRY_HEADER_BYTES, EntryBuilder, RECORD_HEADER_BYTES};
use super::error::LogError;

/// When the writer's open entry is transmitted to its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransmitPolicy {
    /// Transmit once the entry holds this many bytes (records and headers); 0: every record is
    /// an entry of its own.
    pub max_bytes: usize,
    /// Transmit at the latest this long after the entry's first record (`None`: no bound).
    pub max_delay: Option<Duration>,
    /// Transmit at once while fewer than this many entries are unacknowledged (0: never by this
    /// rule). Under load, records gather while entries are in flight, so entries grow with the
    /// load and latency stays near one round trip: group commit on the client.
    pub eager_in_flight: usize,
}

impl TransmitPolicy {
    /// Every record its own entry, sent at once.
    pub const fn immediate() -> TransmitPolicy {
        TransmitPolicy { max_bytes: 0, max_delay: None, eager_in_flight: 0 }
    }

    /// Entries of `max_bytes`, or what gathered within `max_delay`: throughput first.
    pub const fn batched(max_bytes: usize, max_delay: Duration) -> TransmitPolicy {
        TransmitPolicy { max_bytes, max_delay: Some(max_delay), eager_in_flight: 0 }
    }
}

impl Default for TransmitPolicy {
    /// Low latency: a record goes out at once when no entry is in flight, and records gather
    /// into entries of up to 256 KiB while one is; 1 ms at most. One entry in flight gave the
    /// lowest end-to-end latency at 50,000 records/s in `bench log` (p50 1.0 ms against 1.45 ms
    /// with 4: fewer, larger entries cost the bookies less CPU) and the same peak throughput
    /// (entries then fill to `max_bytes`).
    fn default() -> TransmitPolicy {
        TransmitPolicy { max_bytes: 256 << 10, max_delay: Some(Duration::from_millis(1)), eager_in_flight: 1 }
    }
}

/// What the core needs to know besides the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreSettings {
    /// When entries go out.
    pub transmit: TransmitPolicy,
    /// A segment rolls once this many entry bytes went to it.
    pub roll_bytes: u64,
    /// A segment rolls once it is this old (checked when a record comes).
    pub roll_age: Duration,
    /// The largest record payload.
    pub record_bytes_max: usize,
    /// The largest entry the segments take (the replication writer's `entry_bytes_max`).
    pub entry_bytes_max: usize,
}

impl CoreSettings {
    /// Checks that a record of `record_bytes_max` fits an entry.
    pub fn validate(&self) -> Result<(), String> {
        let record_max = self.record_bytes_max as u64 + (ENTRY_HEADER_BYTES + RECORD_HEADER_BYTES) as u64;
        if record_max > self.entry_bytes_max as u64 {
            return Err(format!(
                "record_bytes_max {} plus {} bytes of headers is over the entry limit {}",
                self.record_bytes_max,
                ENTRY_HEADER_BYTES + RECORD_HEADER_BYTES,
                self.entry_bytes_max
            ));
        }
        if self.record_bytes_max > u32::MAX as usize {
            return Err(format!("record_bytes_max {} is over 4 GiB", self.record_bytes_max));
        }
        if self.roll_bytes == 0 || self.roll_age.is_zero() {
            return Err("roll_bytes and roll_age must not be zero".into());
        }
        Ok(())
    }
}

/// A record the core took: where it will be stored and which entry's ticket it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its position.
    pub dlsn: Dlsn,
    /// Its transaction id.
    pub txid: u64,
    /// Its entry's ticket.
    pub ticket: u64,
}

/// A sealed segment's contents (WC5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Records in it.
    pub record_count: u64,
    /// The last record's transaction id.
    pub last_txid: Option<u64>,
    /// The last record's position.
    pub last_dlsn: Option<Dlsn>,
    /// The last entry.
    pub last_entry: Option<u64>,
}

/// Work for the shell, in order.
#[derive(Clone, Debug)]
pub enum CoreOutput {
    /// Create segment `seq` of the log, then call `segment_ready(seq)`.
    OpenSegment {
        /// Its sequence number in the log.
        seq: u64,
        /// The transaction id of its first record.
        first_txid: u64,
    },
    /// Add `payload` as entry `entry_id` of segment `seq` (entries of a segment come in order).
    Transmit {
        /// The segment.
        seq: u64,
        /// The entry id.
        entry_id: u64,
        /// The entry's bytes.
        payload: Bytes,
    },
    /// Segment `seq` takes no more entries: close it after its adds and complete it in the log.
    SealSegment {
        /// The segment.
        seq: u64,
        /// What it holds.
        summary: SegmentSummary,
    },
    /// Tickets up to `through` are durable.
    Acked {
        /// The last ticket acknowledged.
        through: u64,
    },
    /// Tickets from `from` on failed (WC4).
    Failed {
        /// The first failed ticket.
        from: u64,
        /// Why.
        error: LogError,
    },
}

struct OpenEntry {
    ticket: u64,
    entry_id: u64,
    builder: EntryBuilder,
    opened_at: Instant,
}

struct Sent {
    ticket: u64,
    seq: u64,
    entry_id: u64,
}

struct Segment {
    seq: u64,
    opened_at: Instant,
    bytes: u64,
    next_entry: u64,
    records: u64,
    last_txid: Option<u64>,
    last_count: u32,
    /// Created by the shell.
    ready: bool,
    /// Sealed entries waiting for `ready` (and for the previous segment's acks, WC3).
    unsent: VecDeque<(u64, u64, Bytes)>,
    /// To be sealed once `unsent` is empty.
    seal_pending: bool,
}

impl Segment {
    fn summary(&self) -> SegmentSummary {
        let last_entry = self.next_entry.checked_sub(1);
        SegmentSummary {
            record_count: self.records,
            last_txid: self.last_txid,
            last_dlsn: last_entry.map(|e| Dlsn::new(self.seq, e, u64::from(self.last_count) - 1)),
            last_entry,
        }
    }
}

/// The log writer's core (see the module doc).
pub struct WriterCore {
    settings: CoreSettings,
    /// The last transaction id of the log (`None`: none yet).
    last_txid: Option<u64>,
    next_seq: u64,
    segment: Option<Segment>,
    open: Option<OpenEntry>,
    in_flight: VecDeque<Sent>,
    next_ticket: u64,
    failed: Option<LogError>,
    closing: bool,
    outputs: VecDeque<CoreOutput>,
}

impl WriterCore {
    /// A writer whose next segment is `next_seq` and whose log's last transaction id is
    /// `last_txid`.
    pub fn new(settings: CoreSettings, next_seq: u64, last_txid: Option<u64>) -> Result<WriterCore, String> {
        settings.validate()?;
        Ok(WriterCore {
            settings,
            last_txid,
            next_seq,
            segment: None,
            open: None,
            in_flight: VecDeque::new(),
            next_ticket: 0,
            failed: None,
            closing: false,
            outputs: VecDeque::new(),
        })
    }

    /// Takes a record (WC1, WC2): `txid` given, or the last one plus one.
    pub fn write(&mut self, txid: Option<u64>, payload: &[u8], now: Instant) -> Result<Accepted, LogError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.closing {
            return Err(LogError::Closed);
        }
        if payload.len() > self.settings.record_bytes_max {
            let max = self.settings.record_bytes_max as u64;
            return Err(LogError::RecordTooLarge { bytes: payload.len() as u64, max });
        }
        let txid = match (txid, self.last_txid) {
            (Some(txid), Some(last)) if txid <= last => {
                return Err(LogError::TxidNotIncreasing { txid, last });
            }
            // The largest id is kept back, so the next one can always be assigned (WC1).
            (Some(u64::MAX), _) => return Err(LogError::TxidsExhausted),
            (Some(txid), _) => txid,
            (None, Some(last)) => last.checked_add(1).ok_or(LogError::TxidsExhausted)?,
            (None, None) => 0,
        };
        let added = RECORD_HEADER_BYTES + payload.len();
        if self.open.as_ref().is_some_and(|o| o.builder.len() + added > self.settings.entry_bytes_max) {
            self.seal_open();
        }
        if self.open.is_none() {
            self.open_entry(txid, payload.len(), now);
        }
        let open = self.open.as_mut().expect("opened above");
        open.builder.push(txid, payload);
        let segment = self.segment.as_mut().expect("an open entry has a segment");
        segment.records += 1;
        segment.last_txid = Some(txid);
        segment.last_count = open.builder.count();
        self.last_txid = Some(txid);
        let accepted = Accepted {
            dlsn: Dlsn::new(segment.seq, open.entry_id, u64::from(open.builder.count()) - 1),
            txid,
            ticket: open.ticket,
        };
        let policy = self.settings.transmit;
        if open.builder.len() >= policy.max_bytes || self.unacked() < policy.eager_in_flight {
            self.seal_open();
        }
        Ok(accepted)
    }

    /// Entries transmitted or sealed and not yet acknowledged.
    fn unacked(&self) -> usize {
        self.in_flight.len() + self.segment.as_ref().map_or(0, |s| s.unsent.len())
    }

    fn open_entry(&mut self, first_txid: u64, first_len: usize, now: Instant) {
        // Only a segment whose entries all went out rolls, so its seal completes here and
        // the next entry goes to a new segment.
        let roll = self.segment.as_ref().is_some_and(|s| {
            s.ready
                && s.unsent.is_empty()
                && s.records > 0
                && (s.bytes >= self.settings.roll_bytes
                    || now.duration_since(s.opened_at) >= self.settings.roll_age)
        });
        if roll {
            self.seal_segment();
            debug_assert!(self.segment.is_none(), "a segment with nothing unsent seals at once");
        }
        if self.segment.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.outputs.push_back(CoreOutput::OpenSegment { seq, first_txid });
            self.segment = Some(Segment {
                seq,
                opened_at: now,
                bytes: 0,
                next_entry: 0,
                records: 0,
                last_txid: None,
                last_count: 0,
                ready: false,
                unsent: VecDeque::new(),
                seal_pending: false,
            });
        }
        let segment = self.segment.as_mut().expect("a segment");
        let entry_id = segment.next_entry;
        segment.next_entry += 1;
        // Sized for a few records like the first: the buffer grows as records come, and an
        // entry that goes out with one record does not hold the policy's whole max_bytes.
        let one = RECORD_HEADER_BYTES + first_len;
        let capacity = (ENTRY_HEADER_BYTES + 4 * one)
            .min(self.settings.transmit.max_bytes.max(ENTRY_HEADER_BYTES + one));
        self.open = Some(OpenEntry {
            ticket: self.next_ticket,
            entry_id,
            builder: EntryBuilder::new(segment.records, capacity),
            opened_at: now,
        });
        self.next_ticket += 1;
    }

    /// Seals the open entry and transmits it when its segment can take it.
    fn seal_open(&mut self) {
        let Some(open) = self.open.take() else { return };
        let segment = self.segment.as_mut().expect("an open entry has a segment");
        let payload = open.builder.finish();
        segment.bytes += payload.len() as u64;
        segment.unsent.push_back((open.ticket, open.entry_id, payload));
        self.send_unsent();
    }

    /// Transmits the current segment's sealed entries once it is ready and every entry of the
    /// segments before it is acknowledged (WC3); then its seal, if asked for (WC5).
    fn send_unsent(&mut self) {
        let Some(segment) = self.segment.as_mut() else { return };
        if !segment.ready || self.in_flight.front().is_some_and(|s| s.seq != segment.seq) {
            return;
        }
        while let Some((ticket, entry_id, payload)) = segment.unsent.pop_front() {
            self.in_flight.push_back(Sent { ticket, seq: segment.seq, entry_id });
            self.outputs.push_back(CoreOutput::Transmit { seq: segment.seq, entry_id, payload });
        }
        if segment.seal_pending {
            let summary = segment.summary();
            self.outputs.push_back(CoreOutput::SealSegment { seq: segment.seq, summary });
            self.segment = None;
        }
    }

    /// Seals the current segment (the open entry must be sealed already).
    fn seal_segment(&mut self) {
        debug_assert!(self.open.is_none());
        if let Some(segment) = self.segment.as_mut() {
            segment.seal_pending = true;
            self.send_unsent();
        }
    }

    /// The shell created segment `seq`.
    pub fn segment_ready(&mut self, seq: u64) {
        if let Some(segment) = self.segment.as_mut().filter(|s| s.seq == seq) {
            segment.ready = true;
            self.send_unsent();
        }
    }

    /// Entry `entry_id` of segment `seq` is durable (the shell reports a segment's entries in
    /// order).
    pub fn on_acked(&mut self, seq: u64, entry_id: u64) {
        if self.failed.is_some() {
            return;
        }
        let Some(front) = self.in_flight.front() else { return };
        if (front.seq, front.entry_id) != (seq, entry_id) {
            // Another segment's ack ahead of its turn cannot happen (WC3 sends a segment's
            // entries only after the previous one's were acknowledged); an ack out of order
            // within a segment breaks the replication client's contract.
            let error = LogError::Internal(format!(
                "acknowledgement of {seq}:{entry_id} while {}:{} is the oldest unacknowledged entry",
                front.seq, front.entry_id
            ));
            return self.on_failed(error);
        }
        let ticket = front.ticket;
        self.in_flight.pop_front();
        self.outputs.push_back(CoreOutput::Acked { through: ticket });
        self.send_unsent();
        if self.open.is_some() && self.unacked() < self.settings.transmit.eager_in_flight {
            self.seal_open();
        }
    }

    /// An add failed, or the writer lost its lock: everything not acknowledged fails (WC4).
    pub fn on_failed(&mut self, error: LogError) {
        if self.failed.is_some() {
            return;
        }
        let from = self.in_flight.front().map(|s| s.ticket).or_else(|| {
            let segment = self.segment.as_ref();
            segment.and_then(|s| s.unsent.front()).map(|u| u.0).or(self.open.as_ref().map(|o| o.ticket))
        });
        self.in_flight.clear();
        self.open = None;
        self.segment = None;
        self.failed = Some(error.clone());
        if let Some(from) = from {
            self.outputs.push_back(CoreOutput::Failed { from, error });
        }
    }

    /// Transmits the open entry if it is due (`max_delay`).
    pub fn on_tick(&mut self, now: Instant) {
        if self.next_deadline().is_some_and(|d| now >= d) {
            self.seal_open();
        }
    }

    /// When `on_tick` has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let delay = self.settings.transmit.max_delay?;
        self.open.as_ref().map(|o| o.opened_at + delay)
    }

    /// Transmits the open entry now; the last ticket opened, to wait for (`None`: every entry
    /// opened is acknowledged, or none was).
    pub fn flush(&mut self) -> Option<u64> {
        self.seal_open();
        let last = self.next_ticket.checked_sub(1)?;
        (self.unacked() > 0).then_some(last)
    }

    /// Takes no more records: transmits the open entry and seals the segment. The last ticket,
    /// as `flush`.
    pub fn close(&mut self) -> Option<u64> {
        let last = self.flush();
        self.closing = true;
        self.seal_segment();
        last
    }

    /// The error the writer failed with.
    pub fn failure(&self) -> Option<&LogError> {
        self.failed.as_ref()
    }

    /// The last transaction id written.
    pub fn last_txid(&self) -> Option<u64> {
        self.last_txid
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<CoreOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
#[path = "writer_core_tests.rs"]
mod tests;
