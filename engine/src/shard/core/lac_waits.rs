//! Long-polls on `last_add_confirmed`: a tailing reader asks to be answered once a segment's
//! LAC moves past what it knows, or when its timeout passes (answered then with the LAC as it
//! is). Time comes from the shell (`now` on every input), so the waits are sans-I/O too.
//!
//! Invariant LW1: a wait is answered exactly once: when the LAC passes `known`, at its
//! deadline, or when the shard stops. The LAC is the highest seen (`SegmentState::seen_lac`,
//! S5): an accepted entry's piggybacked LAC wakes waits when it arrives, not when durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{Output, ShardCore};
use crate::ids::{EntryId, SegmentId};
use crate::shard::request::Reply;

/// Waits of one shard.
#[derive(Debug)]
pub(super) struct LacWaits<T> {
    next_id: u64,
    waits: BTreeMap<u64, (SegmentId, Option<EntryId>, Instant, T)>,
    by_segment: HashMap<SegmentId, Vec<u64>>,
    deadlines: BTreeSet<(Instant, u64)>,
}

impl<T> Default for LacWaits<T> {
    fn default() -> Self {
        LacWaits {
            next_id: 0,
            waits: BTreeMap::new(),
            by_segment: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }
}

impl<T> LacWaits<T> {
    /// The earliest deadline, if any wait is open.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Whether `segment` has open waits.
    pub(super) fn watches(&self, segment: SegmentId) -> bool {
        !self.by_segment.is_empty() && self.by_segment.contains_key(&segment)
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let (segment, _, deadline, reply) = self.waits.remove(&id)?;
        self.deadlines.remove(&(deadline, id));
        if let Some(ids) = self.by_segment.get_mut(&segment) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_segment.remove(&segment);
            }
        }
        Some(reply)
    }
}

fn passed(lac: Option<u64>, known: Option<EntryId>) -> bool {
    match (lac, known) {
        (Some(lac), Some(known)) => lac > known.0,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

impl<T> ShardCore<T> {
    /// The LAC readers are told: the highest seen (S5).
    pub(super) fn lac_of(&self, segment: SegmentId) -> Option<u64> {
        self.segments.get(&segment).and_then(|s| s.seen_lac)
    }

    /// An accepted entry or LAC write carried `lac`: long polls it passes are answered now,
    /// not one journal commit later.
    pub(super) fn saw_lac(&mut self, segment: SegmentId, lac: Option<u64>) {
        if lac.is_none() {
            return;
        }
        if let Some(state) = self.segments.get_mut(&segment) {
            state.see_lac(lac);
        }
        if self.lac_waits.watches(segment) {
            self.lac_moved(segment);
        }
    }

    /// A long-poll: answered at once if the LAC already passed `known`.
    pub(super) fn wait_for_lac(
        &mut self,
        segment: SegmentId,
        known: Option<EntryId>,
        timeout: Duration,
        reply: T,
        now: Instant,
    ) {
        let lac = self.lac_of(segment);
        if passed(lac, known) || timeout.is_zero() {
            self.out.push_back(Output::Reply(reply, Reply::LacWaited(Ok(lac.map(EntryId)))));
            return;
        }
        let waits = &mut self.lac_waits;
        let id = waits.next_id;
        waits.next_id += 1;
        let deadline = now + timeout;
        waits.waits.insert(id, (segment, known, deadline, reply));
        waits.by_segment.entry(segment).or_default().push(id);
        waits.deadlines.insert((deadline, id));
    }

    /// `segment`'s LAC may have moved: answer the waits it passed.
    pub(super) fn lac_moved(&mut self, segment: SegmentId) {
        let lac = self.lac_of(segment);
        let Some(ids) = self.lac_waits.by_segment.get(&segment) else { return };
        let done: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.lac_waits.waits.get(id).is_some_and(|(_, known, _, _)| passed(lac, *known)))
            .collect();
        for id in done {
            if let Some(reply) = self.lac_waits.remove(id) {
                self.out.push_back(Output::Reply(reply, Reply::LacWaited(Ok(lac.map(EntryId)))));
            }
        }
    }

    /// Answers the waits whose deadline passed, with the LAC as it is (LW1).
    pub(super) fn expire_lac_waits(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.lac_waits.deadlines.first() {
            if deadline > now {
                break;
            }
            let segment = self.lac_waits.waits.get(&id).map(|w| w.0);
            if let Some(reply) = self.lac_waits.remove(id) {
                let lac = segment.and_then(|s| self.lac_of(s)).map(EntryId);
                self.out.push_back(Output::Reply(reply, Reply::LacWaited(Ok(lac))));
            }
        }
    }

    /// Answers every open wait with `error` (stopping).
    pub(super) fn fail_lac_waits(&mut self, error: &crate::error::Error) {
        let ids: Vec<u64> = self.lac_waits.waits.keys().copied().collect();
        for id in ids {
            if let Some(reply) = self.lac_waits.remove(id) {
                let answer = Reply::LacWaited(Err(super::clone_error(error)));
                self.out.push_back(Output::Reply(reply, answer));
            }
        }
    }
}
