//! The read-ahead window (one slot per held entry, R4) and the table of requests in flight
//! with the output queue (`Outbox`, R6).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use dlog_protocol::Request;

use super::{Output, TAG_LIMIT, Tag};

/// What a request in flight was sent for.
#[derive(Debug)]
pub(super) enum Pending<B> {
    /// A READ of `entry`.
    Read { entry: u64, bookie: B },
    /// Asked by a READ_RANGE in flight (`SegmentReader::ranges` says which entries).
    Range,
    /// A LONG_POLL that knew `known`.
    LongPoll { known: Option<u64>, bookie: B },
    /// A READ_LAC at start.
    ReadLac { bookie: B },
}

/// The requests in flight by tag, and the outputs not drained yet.
#[derive(Debug)]
pub(super) struct Outbox<B> {
    requests: BTreeMap<u64, Pending<B>>,
    next_tag: u64,
    pub(super) outputs: VecDeque<Output<B>>,
}

impl<B> Default for Outbox<B> {
    fn default() -> Self {
        Outbox { requests: BTreeMap::new(), next_tag: 0, outputs: VecDeque::new() }
    }
}

impl<B: Clone> Outbox<B> {
    /// Queues `request` to `bookie` under a new tag, remembered as `pending`.
    pub(super) fn send(&mut self, bookie: B, pending: Pending<B>, request: Request) -> u64 {
        let tag = self.next_tag;
        assert!(tag < TAG_LIMIT, "tags exhausted");
        self.next_tag += 1;
        self.requests.insert(tag, pending);
        self.outputs.push_back(Output::Send { bookie, tag: Tag(tag), request });
        tag
    }

    /// The request sent under `tag`, if still waited for; it is not any more (R6).
    pub(super) fn take(&mut self, tag: u64) -> Option<Pending<B>> {
        self.requests.remove(&tag)
    }

    /// The request sent under `tag`, if still waited for.
    pub(super) fn get(&self, tag: u64) -> Option<&Pending<B>> {
        self.requests.get(&tag)
    }

    /// Whether the reader issued `tag` (waited for or not).
    pub(super) fn issued(&self, tag: u64) -> bool {
        tag < self.next_tag
    }

    pub(super) fn forget(&mut self, tags: impl IntoIterator<Item = u64>) {
        for tag in tags {
            self.requests.remove(&tag);
        }
    }

    pub(super) fn forget_all(&mut self) {
        self.requests.clear();
    }

    pub(super) fn in_flight(&self) -> usize {
        self.requests.len()
    }
}

/// A READ_RANGE in flight: entries `first..=last` to `bookie`.
#[derive(Debug)]
pub(super) struct RangeRead<B> {
    pub(super) tag: u64,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) bookie: B,
    pub(super) give_up_at: Instant,
    /// The bytes it may bring (its `max_bytes`), reserved in the read-ahead bound (R4).
    pub(super) max_bytes: u64,
}

/// One round of READs of one entry, each member of its write set asked at most once.
#[derive(Debug)]
pub(super) struct EntryRead<B> {
    /// Rounds that failed before this one.
    pub(super) round: u32,
    /// The members asked in this round.
    pub(super) asked: Vec<B>,
    /// Tags of this round's READs still in flight.
    pub(super) in_flight: Vec<u64>,
    /// When to ask one more member (speculative read).
    pub(super) speculate_at: Option<Instant>,
    /// Between rounds: when to start the next.
    pub(super) retry_at: Option<Instant>,
}

impl<B> EntryRead<B> {
    pub(super) fn new(asked: Vec<B>) -> Self {
        EntryRead { round: 0, asked, in_flight: Vec::new(), speculate_at: None, retry_at: None }
    }
}

/// A held entry.
#[derive(Debug)]
pub(super) enum Slot<B> {
    /// Asked by the READ_RANGE in flight.
    Ranged,
    /// Read on its own.
    Reading(EntryRead<B>),
    /// Read, waiting for the entries before it.
    Ready(Bytes),
    /// Delivered, not yet consumed: its bytes still count (R4).
    Delivered { bytes: u64 },
    /// Every round failed (R5).
    Unreadable,
}

/// Held entries `first..end()`, contiguous, in entry order.
#[derive(Debug)]
pub(super) struct Window<B> {
    slots: VecDeque<Slot<B>>,
    first: u64,
    /// Payload bytes of the `Ready` and `Delivered` slots.
    bytes: u64,
}

impl<B> Window<B> {
    pub(super) fn new(first: u64) -> Self {
        Window { slots: VecDeque::new(), first, bytes: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry after the last held: the next to read.
    pub(super) fn end(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    fn offset(&self, entry: u64) -> Option<usize> {
        let offset = usize::try_from(entry.checked_sub(self.first)?).ok()?;
        (offset < self.slots.len()).then_some(offset)
    }

    pub(super) fn get(&self, entry: u64) -> Option<&Slot<B>> {
        self.offset(entry).map(|offset| &self.slots[offset])
    }

    pub(super) fn get_mut(&mut self, entry: u64) -> Option<&mut Slot<B>> {
        self.offset(entry).map(|offset| &mut self.slots[offset])
    }

    /// The entry being read on its own, if `entry` is.
    pub(super) fn reading_mut(&mut self, entry: u64) -> Option<&mut EntryRead<B>> {
        match self.get_mut(entry) {
            Some(Slot::Reading(read)) => Some(read),
            _ => None,
        }
    }

    /// Holds the next entry (`end()`).
    pub(super) fn push(&mut self, slot: Slot<B>) {
        if let Slot::Ready(payload) = &slot {
            self.bytes += payload.len() as u64;
        }
        self.slots.push_back(slot);
    }

    /// `entry`, being read, is read: the tags of its READs still in flight, to forget. `None`
    /// if it was not being read (already read, or not held).
    pub(super) fn resolve(&mut self, entry: u64, payload: Bytes) -> Option<Vec<u64>> {
        let slot = self.get_mut(entry)?;
        let in_flight = match slot {
            Slot::Ranged => Vec::new(),
            Slot::Reading(read) => std::mem::take(&mut read.in_flight),
            Slot::Ready(_) | Slot::Delivered { .. } | Slot::Unreadable => return None,
        };
        let bytes = payload.len() as u64;
        *slot = Slot::Ready(payload);
        self.bytes += bytes;
        Some(in_flight)
    }

    /// `entry`'s payload, if it is ready: it becomes delivered.
    pub(super) fn deliver(&mut self, entry: u64) -> Option<Bytes> {
        let slot = self.get_mut(entry)?;
        let Slot::Ready(payload) = slot else { return None };
        let payload = std::mem::take(payload);
        *slot = Slot::Delivered { bytes: payload.len() as u64 };
        Some(payload)
    }

    /// Drops every slot from `entry` on: the tags of their READs in flight, to forget.
    pub(super) fn truncate(&mut self, entry: u64) -> Vec<u64> {
        let keep = usize::try_from(entry.saturating_sub(self.first)).unwrap_or(usize::MAX);
        let mut tags = Vec::new();
        while self.slots.len() > keep {
            match self.slots.pop_back() {
                Some(Slot::Reading(read)) => tags.extend(read.in_flight),
                Some(Slot::Ready(payload)) => self.bytes -= payload.len() as u64,
                Some(Slot::Delivered { .. }) => unreachable!("delivered entries are never dropped"),
                Some(Slot::Ranged | Slot::Unreadable) | None => {}
            }
        }
        tags
    }

    /// Frees the delivered entries up to `through` (entries from `delivered_end` on are not
    /// delivered).
    pub(super) fn release(&mut self, through: u64, delivered_end: u64) {
        while self.first <= through && self.first < delivered_end {
            match self.slots.pop_front() {
                Some(Slot::Delivered { bytes }) => self.bytes -= bytes,
                _ => unreachable!("entry {} delivered but not held as delivered", self.first),
            }
            self.first += 1;
        }
    }

    /// The entries being read, with their deadlines.
    pub(super) fn reading(&self) -> impl Iterator<Item = (u64, &EntryRead<B>)> {
        self.slots.iter().zip(self.first..).filter_map(|(slot, entry)| match slot {
            Slot::Reading(read) => Some((entry, read)),
            _ => None,
        })
    }

    /// The earliest speculative read or new round due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.reading().flat_map(|(_, read)| [read.speculate_at, read.retry_at]).flatten().min()
    }
}
