//! `Auditor`: after the segment closed and the world healed, reads every entry up to the end
//! from every member of its write set (plain READs through the network, no faults left) and
//! checks the replicas.
//!
//! Checks:
//! - A1 (agreement): every copy a bookie returns is byte for byte the envelope the writer's
//!   payload makes (segment, entry, cumulative length, payload).
//! - A2 (durability): every entry up to the end has at least `ack_quorum_size` copies in its
//!   write set, in the ensemble the metadata names for it; no member answers `Corrupt`.
//! - A3 (nothing acknowledged is lost, SB5): every entry any bookie acknowledged, up to the end
//!   or past it, reads back from that bookie with exactly the bytes it acknowledged, whatever
//!   the metadata says.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dlog_protocol::{Request, Response, Status};
use dlog_replication::entry_envelope;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_writer::TransportFailure;

use crate::world::{Ctx, SEGMENT};

/// One audit read.
#[derive(Clone)]
struct Read {
    entry: u64,
    bookie: usize,
    /// Read for A3: the bytes the bookie acknowledged.
    acknowledged: Option<Bytes>,
}

/// The replica audit.
pub(crate) struct Auditor {
    id: usize,
    quorum: QuorumSizes,
    /// Tag → (entry, bookie, the bytes that bookie acknowledged if it did) of each read in
    /// flight.
    reads: BTreeMap<u64, Read>,
    /// Copies found per entry.
    copies: BTreeMap<u64, usize>,
    next_tag: u64,
    expected: Vec<Bytes>,
    /// Reads to send again (a bookie restarting), at the next tick.
    retry: Vec<Read>,
    tick_at: Option<Duration>,
    pub(crate) done: bool,
}

impl Auditor {
    pub(crate) fn new(id: usize, quorum: QuorumSizes) -> Auditor {
        Auditor {
            id,
            quorum,
            reads: BTreeMap::new(),
            copies: BTreeMap::new(),
            next_tag: 0,
            expected: Vec::new(),
            retry: Vec::new(),
            tick_at: None,
            done: false,
        }
    }

    /// Reads entries `0..=last` from their write sets in `ensembles` (A1, A2), and every
    /// `(bookie, entry, bytes)` acknowledged from its bookie (A3).
    pub(crate) fn start(
        &mut self,
        ensembles: &BTreeMap<u64, Vec<usize>>,
        last: Option<u64>,
        acknowledged: Vec<(usize, u64, Bytes)>,
        ctx: &mut Ctx,
    ) {
        for (bookie, entry, bytes) in acknowledged {
            self.read(Read { entry, bookie, acknowledged: Some(bytes) }, ctx);
        }
        let Some(last) = last else {
            self.done = self.reads.is_empty();
            return;
        };
        let mut cumulative = 0u64;
        for entry in 0..=last {
            let payload = &ctx.history.payloads[entry as usize];
            cumulative += payload.len() as u64;
            self.expected.push(entry_envelope::encode(SEGMENT, entry, cumulative, payload));
            let ensemble = ensembles.range(..=entry).next_back().map(|(_, e)| e.clone()).unwrap_or_default();
            self.copies.insert(entry, 0);
            for index in self.quorum.write_set(entry).iter() {
                self.read(Read { entry, bookie: ensemble[index], acknowledged: None }, ctx);
            }
        }
    }

    fn read(&mut self, read: Read, ctx: &mut Ctx) {
        self.next_tag += 1;
        let (bookie, entry) = (read.bookie, read.entry);
        self.reads.insert(self.next_tag, read);
        ctx.send((self.id, 0), bookie, self.next_tag, Request::Read { segment: SEGMENT, entry, fence: None });
    }

    pub(crate) fn on_tick(&mut self, ctx: &mut Ctx) {
        self.tick_at = None;
        for read in std::mem::take(&mut self.retry) {
            self.read(read, ctx);
        }
    }

    pub(crate) fn on_answer(&mut self, tag: u64, result: Result<Response, TransportFailure>, ctx: &mut Ctx) {
        let Some(read) = self.reads.remove(&tag) else { return };
        let (entry, bookie) = (read.entry, read.bookie);
        match (result, &read.acknowledged) {
            (Ok(Response::Read { payload, .. }), Some(acknowledged)) => {
                if payload != acknowledged {
                    ctx.violation(format!(
                        "A3: bookie {bookie} returns other bytes for {entry} than it acknowledged"
                    ));
                }
            }
            (Ok(Response::Read { payload, .. }), None) => {
                if payload != self.expected[entry as usize] {
                    ctx.violation(format!("A1: bookie {bookie}'s copy of entry {entry} differs"));
                }
                *self.copies.entry(entry).or_default() += 1;
            }
            (Ok(Response::Refused { status: Status::NoSuchEntry, .. }), Some(_)) => {
                ctx.violation(format!("A3: bookie {bookie} lost entry {entry}, which it acknowledged"));
            }
            (Ok(Response::Refused { status: Status::NoSuchEntry, .. }), None) => {}
            (Ok(Response::Refused { status: Status::Corrupt, message, .. }), _) => {
                ctx.violation(format!("A2: bookie {bookie} answers Corrupt for entry {entry}: {message}"));
            }
            // Nothing is faulty any more, but a bookie may be restarting: ask again soon.
            (Ok(_) | Err(_), _) => {
                self.retry.push(read);
                let at = ctx.instant() + Duration::from_millis(50);
                ctx.schedule_tick(self.id, Some(at), &mut self.tick_at);
                return;
            }
        }
        if self.reads.is_empty() && self.retry.is_empty() && !self.done {
            self.done = true;
            let qa = self.quorum.ack_quorum_size();
            for (entry, copies) in &self.copies {
                if *copies < qa {
                    ctx.violation(format!("A2: entry {entry} has {copies} copies, fewer than Qa = {qa}"));
                }
            }
            ctx.stats.audited_copies = self.copies.values().map(|c| *c as u64).sum();
        }
    }
}
