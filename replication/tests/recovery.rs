//! `Recovery` and `SegmentWriter` driven together over model bookies: each bookie stores
//! entries, a fence flag and a LAC as the engine does, and a seeded network delivers requests
//! and answers in any order, drops some, and takes bookies down for a while. A model of the
//! segment metadata does the compare-and-sets (ensemble change, InRecovery, Closed).
//!
//! What is checked after every run (the properties of issue 6):
//! - no entry acknowledged to the writer lies beyond the closed end, before or after the fence;
//! - every recoverer returns the same end, the one the metadata holds;
//! - every entry up to the end is held, with the writer's bytes, by at least Qa members of its
//!   write set in the ensemble the metadata names for it; no copy differs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_protocol::{Request, Response, Status};
use dlog_replication::entry_envelope;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::recovery::{
    RecoveredEnd, Recovery, RecoveryError, RecoveryOutput, RecoverySettings, RecoveryTag,
};
use dlog_replication::segment_writer::{
    EnsembleChangeError, Output, SegmentWriter, Tag, TransportFailure, WriterSettings,
};
use proptest::prelude::*;

const SEGMENT: u64 = 42;
const KEY: &[u8] = b"master";

#[expect(clippy::disallowed_methods, reason = "a base instant for the test clock")]
fn base() -> Instant {
    Instant::now()
}

fn payload(entry: u64) -> Bytes {
    Bytes::from(format!("entry-{entry}"))
}

#[derive(Default, Debug)]
struct ModelBookie {
    entries: BTreeMap<u64, Bytes>,
    fenced: bool,
    lac: Option<u64>,
    /// Entries whose stored copy is damaged: reads answer Corrupt.
    corrupt: BTreeSet<u64>,
}

impl ModelBookie {
    fn handle(&mut self, request: &Request) -> Response {
        let refused = |status| Response::refused(0, status, "");
        match request {
            Request::Add { entry, last_add_confirmed, payload, recovery, .. } => {
                if self.fenced && !recovery {
                    return refused(Status::Fenced);
                }
                self.entries.insert(*entry, payload.clone());
                self.corrupt.remove(entry);
                self.lac = self.lac.max(*last_add_confirmed);
                Response::Add { segment: SEGMENT, entry: *entry }
            }
            Request::Read { entry, fence, .. } => {
                self.fenced |= fence.is_some();
                if self.corrupt.contains(entry) {
                    return refused(Status::Corrupt);
                }
                match self.entries.get(entry) {
                    Some(payload) => {
                        Response::Read { segment: SEGMENT, entry: *entry, payload: payload.clone() }
                    }
                    None => refused(Status::NoSuchEntry),
                }
            }
            Request::ReadLastAddConfirmed { fence, .. } => {
                self.fenced |= fence.is_some();
                Response::ReadLastAddConfirmed { last_add_confirmed: self.lac }
            }
            Request::WriteLastAddConfirmed { last_add_confirmed, .. } => {
                if self.fenced {
                    return refused(Status::Fenced);
                }
                self.lac = self.lac.max(Some(*last_add_confirmed));
                Response::WriteLastAddConfirmed
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Writer,
    Recoverer(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Open,
    InRecovery,
    Closed(RecoveredEnd),
}

struct World {
    quorum: QuorumSizes,
    t0: Instant,
    now: u64,
    bookies: Vec<ModelBookie>,
    /// Bookie `i` answers nothing (Disconnected) while `down[i]` > now.
    down: Vec<u64>,
    /// (client, bookie) pairs that cannot reach each other.
    cut: Vec<(Client, u32)>,
    /// Messages in flight: (client, bookie, raw tag, request or answer).
    requests: Vec<(Client, u32, u64, Request)>,
    answers: Vec<(Client, u32, u64, Result<Response, TransportFailure>)>,
    state: State,
    ensembles: BTreeMap<u64, Vec<u32>>,
    spare: VecDeque<u32>,
    writer: SegmentWriter<u32>,
    writer_ok: BTreeSet<u64>,
    writer_done: bool,
    pending_change: Option<(u64, Vec<usize>)>,
    recoverers: Vec<Recovery<u32>>,
    recovered: Vec<Option<Result<RecoveredEnd, RecoveryError>>>,
    close_requests: VecDeque<(usize, RecoveredEnd)>,
    /// Every recovery ADD sent: (recoverer, entry).
    recovery_adds: Vec<(usize, u64)>,
    /// The end each recoverer computed (its `CloseRequested`), before any adoption.
    computed_ends: Vec<Option<RecoveredEnd>>,
    /// Recoverers waiting for replacements of failing members.
    replacements: VecDeque<(usize, dlog_replication::quorum::BookieSet)>,
}

impl World {
    fn new(e: usize, qw: usize, qa: usize, spares: u32) -> World {
        let quorum = QuorumSizes::new(e, qw, qa).expect("valid sizes");
        let t0 = base();
        let ensemble: Vec<u32> = (0..e as u32).collect();
        let settings =
            WriterSettings { ensemble_change_retry: Duration::from_millis(5), ..Default::default() };
        let writer =
            SegmentWriter::new(SEGMENT, Bytes::from_static(KEY), quorum, ensemble.clone(), settings, t0)
                .expect("valid writer");
        let total = e as u32 + spares;
        World {
            quorum,
            t0,
            now: 0,
            bookies: (0..total).map(|_| ModelBookie::default()).collect(),
            down: vec![0; total as usize],
            cut: Vec::new(),
            requests: Vec::new(),
            answers: Vec::new(),
            state: State::Open,
            ensembles: BTreeMap::from([(0, ensemble)]),
            spare: (e as u32..total).collect(),
            writer,
            writer_ok: BTreeSet::new(),
            writer_done: false,
            pending_change: None,
            recoverers: Vec::new(),
            recovered: Vec::new(),
            close_requests: VecDeque::new(),
            replacements: VecDeque::new(),
            recovery_adds: Vec::new(),
            computed_ends: Vec::new(),
        }
    }

    fn at(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now)
    }

    fn pump_writer(&mut self) {
        while let Some(output) = self.writer.poll_output() {
            match output {
                Output::Send { bookie_index, tag, request } => {
                    let bookie = match &request {
                        Request::Add { entry, .. } => self.writer.ensemble_of(*entry)[bookie_index],
                        Request::WriteLastAddConfirmed { .. } => self.writer.ensemble()[bookie_index],
                        other => panic!("writer sent {other:?}"),
                    };
                    self.requests.push((Client::Writer, bookie, tag.raw(), request));
                }
                Output::Completed { entry, result } => {
                    if result.is_ok() {
                        self.writer_ok.insert(entry);
                    }
                }
                Output::ChangeEnsemble { first_entry, replace } => {
                    self.pending_change = Some((first_entry, replace.iter().collect()));
                }
                Output::CloseRequested { .. } => panic!("the writer is never closed here"),
                Output::LastAddConfirmed(_) | Output::BookieFailed { .. } | Output::Closed(_) => {}
            }
        }
    }

    fn pump_recoverer(&mut self, k: usize) {
        while let Some(output) = self.recoverers[k].poll_output() {
            match output {
                RecoveryOutput::Send { bookie, tag, request } => {
                    self.requests.push((Client::Recoverer(k), bookie, tag.raw(), request))
                }
                RecoveryOutput::CloseRequested(end) => {
                    self.computed_ends[k] = Some(end);
                    self.close_requests.push_back((k, end));
                }
                RecoveryOutput::ReplaceBookies { replace } => self.replacements.push_back((k, replace)),
                RecoveryOutput::Done(result) => self.recovered[k] = Some(result),
            }
        }
    }

    /// The metadata's answer to the writer's ensemble change.
    fn answer_change(&mut self) {
        let Some((first, replace)) = self.pending_change.take() else { return };
        let now = self.at();
        if self.state != State::Open {
            self.writer.on_ensemble_changed(Err(EnsembleChangeError::Fenced), now);
        } else if self.spare.len() < replace.len() {
            self.writer.on_ensemble_changed(Err(EnsembleChangeError::Unavailable("no spare".into())), now);
        } else {
            let mut ensemble = self.writer.ensemble().to_vec();
            for index in replace {
                ensemble[index] = self.spare.pop_front().expect("checked");
            }
            let _ = self.ensembles.split_off(&first);
            self.ensembles.insert(first, ensemble.clone());
            self.writer.on_ensemble_changed(Ok(ensemble), now);
        }
        self.pump_writer();
    }

    /// A new writer takes over: the metadata goes InRecovery (kept if already) and a recoverer
    /// starts over the ensembles as they are now.
    fn start_recoverer(&mut self, window: usize) {
        if self.state == State::Open {
            self.state = State::InRecovery;
        }
        let settings = RecoverySettings { window_entries: window, retry_delay: Duration::from_millis(3) };
        let mut recovery =
            Recovery::new(SEGMENT, Bytes::from_static(KEY), self.quorum, self.ensembles.clone(), settings)
                .expect("valid metadata");
        recovery.start(self.at());
        self.recoverers.push(recovery);
        self.recovered.push(None);
        self.computed_ends.push(None);
        let k = self.recoverers.len() - 1;
        if let State::Closed(end) = self.state.clone() {
            // Closed already: the shell would not even start; model it as an instant close.
            self.recovered[k] = Some(Ok(end));
        }
        self.pump_recoverer(k);
    }

    /// Placement for a recoverer: spare bookies that are up, never a member of its ensemble.
    fn replace(&mut self) {
        while let Some((k, replace)) = self.replacements.pop_front() {
            let mut ensemble = self.recoverers[k].last_add_ensemble().to_vec();
            let now = self.at();
            let mut spares: Vec<u32> = (0..self.bookies.len() as u32)
                .filter(|b| self.down[*b as usize] != u64::MAX && !ensemble.contains(b))
                .collect();
            // As the shell's placement: as many as there are spares, none is an error.
            let result = if spares.is_empty() {
                Err("no spare".to_owned())
            } else {
                for index in replace.iter().take(spares.len()) {
                    ensemble[index] = spares.remove(0);
                }
                Ok(ensemble)
            };
            self.recoverers[k].on_replaced(result, now);
            self.pump_recoverer(k);
        }
    }

    fn close(&mut self) {
        self.replace();
        while let Some((k, end)) = self.close_requests.pop_front() {
            let stored = match &self.state {
                State::Closed(stored) => *stored,
                _ => {
                    self.state = State::Closed(end);
                    if let Some(change) = self.recoverers[k].ensemble_change(&end)
                        && let Some(first) = change.keys().next().copied()
                    {
                        let _ = self.ensembles.split_off(&first);
                        self.ensembles.extend(change);
                    }
                    let next = end.last_entry.map_or(0, |l| l + 1);
                    let _ = self.ensembles.split_off(&next.max(1));
                    end
                }
            };
            self.recoverers[k].on_closed(Ok(stored));
            self.pump_recoverer(k);
        }
    }

    /// Delivers one request or answer picked by `pick`, dropping it instead when `drop`.
    fn step(&mut self, pick: usize, deliver_answer: bool, drop: bool) {
        if deliver_answer && !self.answers.is_empty() {
            let (client, bookie, raw, result) = self.answers.swap_remove(pick % self.answers.len());
            let result = if drop { Err(TransportFailure::Timeout) } else { result };
            let now = self.at();
            match client {
                Client::Writer if !self.writer_done => {
                    self.writer.on_response(Tag::from_raw(raw), &bookie, result, now);
                    self.pump_writer();
                }
                Client::Writer => {}
                Client::Recoverer(k) => {
                    self.recoverers[k].on_response(RecoveryTag::from_raw(raw), &bookie, result, now);
                    self.pump_recoverer(k);
                }
            }
        } else if !self.requests.is_empty() {
            let (client, bookie, raw, request) = self.requests.swap_remove(pick % self.requests.len());
            let delivered =
                !drop && self.down[bookie as usize] <= self.now && !self.cut.contains(&(client, bookie));
            if let (Client::Recoverer(k), Request::Add { entry, .. }, true) = (client, &request, delivered) {
                self.recovery_adds.push((k, *entry));
            }
            let result =
                if drop || self.down[bookie as usize] > self.now || self.cut.contains(&(client, bookie)) {
                    Err(TransportFailure::Disconnected)
                } else {
                    Ok(self.bookies[bookie as usize].handle(&request))
                };
            self.answers.push((client, bookie, raw, result));
        }
    }

    fn tick(&mut self) {
        self.now += 1;
        let now = self.at();
        self.writer.on_tick(now);
        self.pump_writer();
        for k in 0..self.recoverers.len() {
            self.recoverers[k].on_tick(now);
            self.pump_recoverer(k);
        }
        self.answer_change();
        self.close();
    }

    fn quiet(&self) -> bool {
        self.requests.is_empty() && self.answers.is_empty()
    }

    /// Runs until every recoverer is done (bounded).
    fn run_to_end(&mut self, rng: &mut u64) {
        for _ in 0..200_000 {
            if self.recovered.iter().all(Option::is_some) && self.quiet() {
                return;
            }
            let r = next(rng);
            if self.quiet() {
                self.tick();
            } else {
                self.step(r as usize, r & 1 == 0, false);
                if r.is_multiple_of(7) {
                    self.tick();
                }
            }
        }
        for (i, b) in self.bookies.iter().enumerate() {
            eprintln!(
                "bookie {i}: lac {:?} fenced {} entries {:?} corrupt {:?}",
                b.lac,
                b.fenced,
                b.entries.keys(),
                b.corrupt
            );
        }
        eprintln!("ensembles {:?} acknowledged {:?} state {:?}", self.ensembles, self.writer_ok, self.state);
        panic!("recovery did not finish: {:?}\n{:#?}", self.recovered, self.recoverers);
    }

    fn check(&self) {
        let State::Closed(end) = self.state.clone() else { panic!("not closed: {:?}", self.state) };
        for (k, result) in self.recovered.iter().enumerate() {
            assert_eq!(result, &Some(Ok(end)), "recoverer {k} ends where the metadata does");
        }
        let last = end.last_entry;
        // RC4: no recoverer recovery-adds past the end it computed itself.
        for (k, entry) in &self.recovery_adds {
            let computed = self.computed_ends[*k].and_then(|e| e.last_entry);
            assert!(
                computed.is_some_and(|c| *entry <= c),
                "recoverer {k} re-added {entry} past its end {computed:?}"
            );
        }
        // No acknowledged entry beyond the end (nothing acknowledged is lost).
        if let Some(max_ok) = self.writer_ok.last() {
            assert!(last.is_some_and(|l| *max_ok <= l), "entry {max_ok} acknowledged, closed at {last:?}");
        }
        let count = last.map_or(0, |l| l + 1);
        let mut length = 0;
        for entry in 0..count {
            let ensemble = self.ensembles.range(..=entry).next_back().expect("ensemble").1;
            // Holders count the copy the test damaged on purpose (after the entry was written:
            // mending it is re-replication's work, not recovery's); one intact copy must be left.
            let (mut holders, mut intact) = (0, 0);
            for index in self.quorum.write_set(entry).iter() {
                let bookie = &self.bookies[ensemble[index] as usize];
                if let Some(stored) = bookie.entries.get(&entry) {
                    let (_, bytes) = entry_envelope::decode(SEGMENT, entry, stored).expect("intact copy");
                    assert_eq!(bytes, payload(entry), "every copy holds the writer's bytes");
                    holders += 1;
                    intact += usize::from(!bookie.corrupt.contains(&entry));
                }
            }
            assert!(holders >= self.quorum.ack_quorum_size(), "entry {entry} held by {holders}");
            assert!(intact >= 1, "entry {entry} has no intact copy");
            length += payload(entry).len() as u64;
        }
        assert_eq!(end.length, length, "the closed length is the payload bytes up to the end");
        // A zombie writer that never heard of the fence sends entries past the end to their
        // write sets in its ensemble (the last the writer knew; a recoverer's replacement is
        // not in it): no entry may find Qa bookies that accept it (Q5).
        let last_ensemble = self.writer.ensemble();
        for entry in count..count + self.quorum.ensemble_size() as u64 {
            let accepting = self
                .quorum
                .write_set(entry)
                .iter()
                .filter(|i| !self.bookies[last_ensemble[*i] as usize].fenced)
                .count();
            assert!(accepting < self.quorum.ack_quorum_size(), "entry {entry} could still be acknowledged");
        }
    }
}

fn next(state: &mut u64) -> u64 {
    // splitmix64: a seeded schedule, replayable from the proptest's inputs.
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn sizes() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..=5).prop_flat_map(|e| (Just(e), 1..=e)).prop_flat_map(|(e, qw)| (Just(e), Just(qw), 1..=qw))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A writer writes with random delivery, drops and a bookie down for a while; one or two
    /// recoverers take over at a random moment while the old writer keeps writing; a replica
    /// may be corrupt. Every property in the module doc holds.
    #[test]
    fn takeover_keeps_every_acknowledged_entry(
        (e, qw, qa) in sizes(),
        seed in any::<u64>(),
        entries in 1u64..40,
        takeover_at in 0usize..400,
        second_recoverer in any::<bool>(),
        window in 1usize..8,
        corrupt in any::<bool>(),
        dies in any::<bool>(),
    ) {
        let mut world = World::new(e, qw, qa, 2);
        // A member of the current ensemble dies for good at the takeover (with Qa >= 2, so
        // every acknowledged entry keeps a copy): recovery must replace it for its ADDs.
        let dies = dies && qa >= 2;
        let corrupt = corrupt && !dies;
        let mut rng = seed;
        let mut added = 0;
        for step in 0..takeover_at + 600 {
            if step == takeover_at {
                if dies {
                    let victim = world.writer.ensemble()[(next(&mut rng) % e as u64) as usize];
                    world.down[victim as usize] = u64::MAX;
                }
                world.start_recoverer(window);
                if corrupt {
                    // One replica of an entry that another bookie holds too goes bad: not
                    // absence. (The only copy of an entry going bad blocks recovery, rightly:
                    // it may have been the acknowledged one.)
                    let bookie = (next(&mut rng) % e as u64) as usize;
                    let held_twice = world.bookies[bookie].entries.keys().rev().copied().find(|entry| {
                        let ensemble = world.ensembles.range(..=*entry).next_back().expect("ensemble").1;
                        let members = world.quorum.write_set(*entry).iter().map(|i| ensemble[i] as usize);
                        members.filter(|b| world.bookies[*b].entries.contains_key(entry)).count() >= 2
                    });
                    if let Some(entry) = held_twice {
                        world.bookies[bookie].corrupt.insert(entry);
                    }
                }
            }
            if second_recoverer && step == takeover_at + 50 {
                world.start_recoverer(window);
            }
            if added < entries && world.writer.add(payload(added), world.at()).is_ok() {
                added += 1;
                world.pump_writer();
            }
            let r = next(&mut rng);
            if r.is_multiple_of(97) {
                let bookie = (r / 97) as usize % world.bookies.len();
                if world.down[bookie] != u64::MAX {
                    world.down[bookie] = world.now + 20;
                }
            }
            world.step((r >> 8) as usize, r & 1 == 0, r.is_multiple_of(23));
            if r.is_multiple_of(5) {
                world.tick();
            }
        }
        if world.recoverers.is_empty() {
            world.start_recoverer(window);
        }
        world.run_to_end(&mut rng);
        // The old writer, still running, never gets an entry past the end acknowledged.
        for _ in 0..200 {
            if world.writer.add(payload(added), world.at()).is_ok() {
                added += 1;
                world.pump_writer();
            }
            let r = next(&mut rng);
            world.step(r as usize, r & 1 == 0, false);
            world.tick();
        }
        world.check();
    }
}

/// An entry one replica holds corrupt and the others do not hold is not absent: recovery
/// waits for the corrupt one (retries) instead of closing before it.
#[test]
fn a_corrupt_replica_is_not_absence() {
    let mut world = World::new(3, 3, 2, 0);
    let stored = entry_envelope::encode(SEGMENT, 0, payload(0).len() as u64, &payload(0));
    // Entry 0 on bookies 0 and 1 (acknowledged at Qa = 2), but bookie 1's copy is damaged and
    // bookie 0 is down: the only answers are Corrupt and NoSuchEntry.
    world.bookies[0].entries.insert(0, stored.clone());
    world.bookies[1].entries.insert(0, stored);
    world.bookies[1].corrupt.insert(0);
    world.writer_ok.insert(0);
    world.down[0] = 60;
    world.start_recoverer(4);
    let mut rng = 7;
    world.run_to_end(&mut rng);
    world.check();
    assert!(world.recoverers[0].stats().retries > 0);
    let State::Closed(end) = world.state else { panic!("closed") };
    assert_eq!(end.last_entry, Some(0));
}

/// Nothing written: the segment closes empty.
#[test]
fn an_empty_segment_closes_empty() {
    let mut world = World::new(3, 2, 2, 0);
    world.start_recoverer(4);
    let mut rng = 1;
    world.run_to_end(&mut rng);
    world.check();
    assert_eq!(world.state, State::Closed(RecoveredEnd { last_entry: None, length: 0 }));
}

/// Two recoverers that would close at different ends (an unacknowledged entry seen by one
/// and confirmed absent by the other) both end at the end that closed first.
#[test]
fn racing_recoverers_adopt_the_first_close() {
    let mut world = World::new(3, 3, 2, 0);
    for entry in 0..2 {
        let length = (0..=entry).map(|e| payload(e).len() as u64).sum();
        let stored = entry_envelope::encode(SEGMENT, entry, length, &payload(entry));
        for bookie in 0..3 {
            if entry == 0 || bookie == 2 {
                world.bookies[bookie].entries.insert(entry, stored.clone());
            }
        }
    }
    world.writer_ok.insert(0);
    // Recoverer 0 cannot reach bookie 2, so entry 1 is absent to it; recoverer 1 reads it.
    world.cut.push((Client::Recoverer(0), 2));
    world.start_recoverer(4);
    world.start_recoverer(4);
    let mut rng = 3;
    // Recoverer 1 is held back (its messages wait) until recoverer 0 has closed.
    for _ in 0..5_000 {
        if world.recovered[0].is_some() {
            break;
        }
        let own: Vec<usize> =
            (0..world.requests.len()).filter(|i| world.requests[*i].0 == Client::Recoverer(0)).collect();
        let answers: Vec<usize> =
            (0..world.answers.len()).filter(|i| world.answers[*i].0 == Client::Recoverer(0)).collect();
        let r = next(&mut rng) as usize;
        if !answers.is_empty() && (r & 1 == 0 || own.is_empty()) {
            let (client, bookie, raw, result) = world.answers.swap_remove(answers[r % answers.len()]);
            assert_eq!(client, Client::Recoverer(0));
            let now = world.at();
            world.recoverers[0].on_response(RecoveryTag::from_raw(raw), &bookie, result, now);
            world.pump_recoverer(0);
        } else if !own.is_empty() {
            let (client, bookie, raw, request) = world.requests.swap_remove(own[r % own.len()]);
            let result = if world.cut.contains(&(client, bookie)) {
                Err(TransportFailure::Disconnected)
            } else {
                Ok(world.bookies[bookie as usize].handle(&request))
            };
            world.answers.push((client, bookie, raw, result));
        }
        world.now += 1;
        let now = world.at();
        world.recoverers[0].on_tick(now);
        world.pump_recoverer(0);
        world.close();
    }
    assert_eq!(world.state, State::Closed(RecoveredEnd { last_entry: Some(0), length: 7 }));
    world.run_to_end(&mut rng);
    assert_eq!(world.recovered[1], Some(Ok(RecoveredEnd { last_entry: Some(0), length: 7 })));
    world.check();
}
