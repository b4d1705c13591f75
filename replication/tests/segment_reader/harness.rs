//! The scripted harness of tests/segment_reader.rs: it plays the bookies. Every
//! `Output::Send` is kept as a request in flight, and each test answers the ones it wants, in
//! the order it wants, with an entry, a refusal or a transport failure. Time is a base `Instant`
//! plus offsets. Bookies are `u32` ids from 10 up, so they are never mistaken for ensemble
//! indexes. Bookies store what the writer stores: `entry_envelope::encode` of the caller's
//! `payload(entry)` (`stored`); the reader must deliver `payload(entry)`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_protocol::{Request, Response, Status};
use dlog_replication::entry_envelope;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_reader::{
    Output, ReaderError, ReaderSettings, SegmentEnd, SegmentReader, Tag, TransportFailure,
};

pub(crate) const SEGMENT: u64 = 7;

#[expect(clippy::disallowed_methods, reason = "a base instant for the test clock")]
pub(crate) fn base() -> Instant {
    Instant::now()
}

/// The caller's payload of `entry`.
pub(crate) fn payload(entry: u64) -> Bytes {
    Bytes::from(format!("entry-{entry}"))
}

/// What the bookies hold for `entry`: its envelope, with the segment's length through it.
pub(crate) fn stored(entry: u64) -> Bytes {
    let cumulative: u64 = (0..=entry).map(|e| payload(e).len() as u64).sum();
    entry_envelope::encode(SEGMENT, entry, cumulative, &payload(entry))
}

/// `stored(entry)` with one bit of its payload flipped: the CRC no longer matches.
pub(crate) fn damaged(entry: u64) -> Bytes {
    let mut bytes = stored(entry).to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    Bytes::from(bytes)
}

/// Per-entry reads only (no READ_RANGE), unless a test turns ranges on.
pub(crate) fn settings() -> ReaderSettings {
    ReaderSettings { range_read_entries_min: None, ..ReaderSettings::default() }
}

pub(crate) fn ensembles(list: &[(u64, &[u32])]) -> BTreeMap<u64, Vec<u32>> {
    list.iter().map(|(first, bookies)| (*first, bookies.to_vec())).collect()
}

pub(crate) struct Harness {
    pub(crate) reader: SegmentReader<u32>,
    pub(crate) quorum: QuorumSizes,
    pub(crate) ensembles: BTreeMap<u64, Vec<u32>>,
    pub(crate) t0: Instant,
    pub(crate) now: Instant,
    /// Requests sent and not answered yet, by raw tag.
    pub(crate) in_flight: BTreeMap<u64, (u32, Request)>,
    /// Every Send seen.
    pub(crate) sent: Vec<(u32, Request)>,
    pub(crate) entries: Vec<(u64, Bytes)>,
    pub(crate) bad: Vec<(u64, u32)>,
    pub(crate) lacs: Vec<u64>,
    pub(crate) ends: usize,
    pub(crate) failures: Vec<ReaderError>,
    /// Outputs seen after `End` or `Failed` (R1: must stay 0).
    pub(crate) after_stop: usize,
    /// Call `consumed` for every entry as soon as it comes out.
    pub(crate) auto_consume: bool,
    pub(crate) consumed_through: Option<u64>,
}

impl Harness {
    pub(crate) fn new(sizes: (usize, usize, usize), list: &[(u64, &[u32])], end: SegmentEnd) -> Harness {
        Harness::with(sizes, list, 0, end, settings())
    }

    pub(crate) fn with(
        (e, qw, qa): (usize, usize, usize),
        list: &[(u64, &[u32])],
        first_entry: u64,
        end: SegmentEnd,
        settings: ReaderSettings,
    ) -> Harness {
        let t0 = base();
        let quorum = QuorumSizes::new(e, qw, qa).expect("valid sizes");
        let reader = SegmentReader::new(SEGMENT, quorum, ensembles(list), first_entry, end, settings, t0)
            .expect("valid reader");
        let mut h = Harness {
            reader,
            quorum,
            ensembles: ensembles(list),
            t0,
            now: t0,
            in_flight: BTreeMap::new(),
            sent: Vec::new(),
            entries: Vec::new(),
            bad: Vec::new(),
            lacs: Vec::new(),
            ends: 0,
            failures: Vec::new(),
            after_stop: 0,
            auto_consume: true,
            consumed_through: None,
        };
        h.pump();
        h
    }

    pub(crate) fn pump(&mut self) {
        loop {
            while let Some(output) = self.reader.poll_output() {
                if self.ends + self.failures.len() > 0 {
                    self.after_stop += 1;
                }
                match output {
                    Output::Send { bookie, tag, request } => {
                        assert!(self.in_flight.insert(tag.raw(), (bookie, request.clone())).is_none());
                        self.sent.push((bookie, request));
                    }
                    Output::Entry { entry, payload } => self.entries.push((entry, payload)),
                    Output::BadReplica { entry, bookie } => self.bad.push((entry, bookie)),
                    Output::LastAddConfirmed(lac) => self.lacs.push(lac),
                    Output::End => self.ends += 1,
                    Output::Failed(error) => self.failures.push(error),
                }
            }
            let last = self.entries.last().map(|(entry, _)| *entry);
            if !self.auto_consume || last <= self.consumed_through {
                return;
            }
            self.consumed_through = last;
            self.reader.consumed(last.expect("an entry"), self.now);
        }
    }

    pub(crate) fn at(&mut self, ms: u64) {
        self.now = self.t0 + Duration::from_millis(ms);
    }

    pub(crate) fn tick(&mut self, ms: u64) {
        self.at(ms);
        self.reader.on_tick(self.now);
        self.pump();
    }

    /// Requests in flight matching `pick`, as (raw tag, bookie, request).
    pub(crate) fn pending(&self, pick: impl Fn(&Request) -> bool) -> Vec<(u64, u32, Request)> {
        self.in_flight.iter().filter(|(_, (_, r))| pick(r)).map(|(t, (b, r))| (*t, *b, r.clone())).collect()
    }

    /// The bookies with a READ of `entry` in flight, in sending order.
    pub(crate) fn reads_of(&self, entry: u64) -> Vec<u32> {
        self.pending(|r| matches!(r, Request::Read { entry: e, .. } if *e == entry))
            .iter()
            .map(|p| p.1)
            .collect()
    }

    pub(crate) fn polls(&self) -> Vec<(u64, u32, Request)> {
        self.pending(|r| matches!(r, Request::LongPoll { .. }))
    }

    pub(crate) fn respond(&mut self, raw: u64, result: Result<Response, TransportFailure>) {
        self.in_flight.remove(&raw);
        self.reader.on_response(Tag::from_raw(raw), result, self.now);
        self.pump();
    }

    /// Answers the READ of `entry` in flight to `bookie`.
    pub(crate) fn answer_read(
        &mut self,
        entry: u64,
        bookie: u32,
        result: Result<Response, TransportFailure>,
    ) {
        let found = self.pending(|r| matches!(r, Request::Read { entry: e, .. } if *e == entry));
        let (raw, _, _) = *found.iter().find(|p| p.1 == bookie).expect("a READ of the entry to the bookie");
        self.respond(raw, result);
    }

    pub(crate) fn read_ok(&mut self, entry: u64, bookie: u32) {
        let response = Response::Read { segment: SEGMENT, entry, payload: stored(entry) };
        self.answer_read(entry, bookie, Ok(response));
    }

    pub(crate) fn refuse(&mut self, entry: u64, bookie: u32, status: Status) {
        self.answer_read(entry, bookie, Ok(Response::refused(2, status, "no")));
    }

    pub(crate) fn delivered(&self) -> Vec<u64> {
        self.entries.iter().map(|(entry, _)| *entry).collect()
    }

    /// Every READ went to a member of its entry's write set in the ensemble holding it.
    pub(crate) fn reads_hit_write_sets(&self) {
        for (bookie, request) in &self.sent {
            if let Request::Read { entry, .. } = request {
                let ensemble = self.ensembles.range(..=*entry).next_back().expect("ensemble").1;
                let members: Vec<u32> = self.quorum.write_set(*entry).iter().map(|i| ensemble[i]).collect();
                assert!(members.contains(bookie), "READ of {entry} to {bookie}, write set {members:?}");
            }
        }
    }
}
