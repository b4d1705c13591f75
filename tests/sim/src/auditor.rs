//! `Auditor`: after the segment closed and the world healed, reads every entry up to the end
//! from every member of its write set (plain READs through the network, no faults left) and
//! checks the replicas.
//!
//! Checks:
//! - A1 (agreement): every copy a bookie returns is byte for byte the envelope the writer's
//!   payload makes (segment, entry, cumulative length, payload).
//! - A2 (durability): every entry up to the end has at least `ack_quorum_size` copies in its
//!   write set, in the ensemble the metadata names for it; no member answers `Corrupt`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dlog_protocol::{Request, Response, Status};
use dlog_replication::entry_envelope;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_writer::TransportFailure;

use crate::world::{Ctx, SEGMENT};

/// The replica audit.
pub(crate) struct Auditor {
    id: usize,
    quorum: QuorumSizes,
    /// Tag → (entry, bookie) of each read in flight.
    reads: BTreeMap<u64, (u64, usize)>,
    /// Copies found per entry.
    copies: BTreeMap<u64, usize>,
    next_tag: u64,
    expected: Vec<Bytes>,
    /// Reads to send again (a bookie restarting), at the next tick.
    retry: Vec<(u64, usize)>,
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

    /// Reads entries `0..=last` from their write sets in `ensembles`.
    pub(crate) fn start(&mut self, ensembles: &BTreeMap<u64, Vec<usize>>, last: Option<u64>, ctx: &mut Ctx) {
        let Some(last) = last else {
            self.done = true;
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
                self.read(entry, ensemble[index], ctx);
            }
        }
    }

    fn read(&mut self, entry: u64, bookie: usize, ctx: &mut Ctx) {
        self.next_tag += 1;
        self.reads.insert(self.next_tag, (entry, bookie));
        ctx.send(self.id, bookie, self.next_tag, Request::Read { segment: SEGMENT, entry, fence: None });
    }

    pub(crate) fn on_tick(&mut self, ctx: &mut Ctx) {
        self.tick_at = None;
        for (entry, bookie) in std::mem::take(&mut self.retry) {
            self.read(entry, bookie, ctx);
        }
    }

    pub(crate) fn on_answer(&mut self, tag: u64, result: Result<Response, TransportFailure>, ctx: &mut Ctx) {
        let Some((entry, bookie)) = self.reads.remove(&tag) else { return };
        match result {
            Ok(Response::Read { payload, .. }) => {
                if payload != self.expected[entry as usize] {
                    ctx.violation(format!("A1: bookie {bookie}'s copy of entry {entry} differs"));
                }
                *self.copies.entry(entry).or_default() += 1;
            }
            Ok(Response::Refused { status: Status::NoSuchEntry, .. }) => {}
            Ok(Response::Refused { status: Status::Corrupt, message, .. }) => {
                ctx.violation(format!("A2: bookie {bookie} answers Corrupt for entry {entry}: {message}"));
            }
            // Nothing is faulty any more, but a bookie may be restarting: ask again soon.
            Ok(_) | Err(_) => {
                self.retry.push((entry, bookie));
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
