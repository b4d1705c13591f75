//! `SimBookie`: the real `ShardCore` (one shard, journal only) behind a simulated shell: wire
//! requests in, the core's replies out as wire responses (through the bookie server's own
//! `dispatch` mapping of errors to statuses), its disk operations on a `SimDisk`, and crashes
//! and restarts through the real journal replay.
//!
//! The shell does what the bookie server's connection and dispatch do (docs/protocol.md): a
//! fencing READ or READ_LAC fences first and reads once the fence is durable (DP3); a
//! LONG_POLL waits for the LAC, then reads the entry after the one the client knew.
//!
//! Checks (reported as violations):
//! - SB1 (fencing): a non-recovery ADD that reached the bookie after it answered a fence of its
//!   segment is never acknowledged.
//! - SB2 (LAC, the engine's S2 and S5): the durable LAC a fence answers never moves back, across
//!   restarts too; the LAC READ_LAC and LONG_POLL answer (seen, possibly not durable yet) never
//!   moves back within one process and is never below a durable LAC answered before; and no
//!   LAC a bookie answers is past the writer's (a LAC is the writer's statement, never made up).
//! - SB3 (replay): a journal left by crashes and failed writes always replays under
//!   `JournalRecovery::Strict` (torn tails only, never damage).
//! - SB4 (no spin): one turn of the shell ends; a core that keeps producing work with no new
//!   input, or whose deadline is still past after its tick, is a bug.
//! - SB5 (acknowledged bytes): an entry a bookie acknowledged is never acknowledged again with
//!   other bytes; the audit reads every one back from that bookie, whatever the metadata says.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use dlog::bookie::dispatch::{add_entry, add_responses, refusal};
use dlog_engine::config::JournalRecovery;
use dlog_engine::journal::file_header::FileHeader;
use dlog_engine::journal::files::ShardDir;
use dlog_engine::journal::replay::replay;
use dlog_engine::shard::batch_bytes_limit_of;
use dlog_engine::shard::core::{CoreSettings, CoreStart, Output, ShardCore};
use dlog_engine::shard::request::{Reply, Request as CoreRequest};
use dlog_engine::{EntryId, Error, FileSeq, SegmentId, ShardId};
use dlog_protocol::{Op, Request, Response};

use crate::disk::SimDisk;
use crate::scenario::Mutation;
use crate::world::{Ctx, Event};
use rand::Rng;

/// Turns of the shell loop without new input before it counts as a spin (SB4).
const SPIN_TURNS_MAX: usize = 10_000;

/// One ADD of a batch the shell hands the core (as the server's connection batches the ADDs it
/// decoded together).
#[derive(Debug)]
struct AddKey {
    client: usize,
    req: u64,
    segment: u64,
    entry: u64,
    recovery: bool,
    last_add_confirmed: Option<u64>,
    payload: Bytes,
    arrival: u64,
}

#[derive(Debug)]
enum Step {
    Adds(Vec<AddKey>),
    FenceThenRead { segment: u64, entry: u64 },
    FenceLac { segment: u64 },
    Read { segment: u64, entry: u64 },
    ReadLac { segment: u64 },
    WriteLac { segment: u64, lac: u64 },
    Wait { segment: u64, known: Option<u64> },
    WaitRead { lac: u64, entry: u64 },
    Range,
}

/// The reply handle the core carries: who asked, and what to do with the answer.
#[derive(Debug)]
pub(crate) struct Handle {
    client: usize,
    req: u64,
    op: Op,
    step: Step,
    /// The bookie's arrival count when the request reached it (SB1).
    arrival: u64,
}

/// One simulated bookie (see the module doc).
pub(crate) struct SimBookie {
    index: usize,
    core: Option<ShardCore<Handle>>,
    disk: SimDisk,
    /// Bumped at each crash: events of an earlier process are ignored.
    pub(crate) incarnation: u64,
    settings: CoreSettings,
    waiting: VecDeque<CoreRequest<Handle>>,
    arrivals: u64,
    /// Per segment: the arrival count when the bookie first answered a fence (SB1).
    fenced_at: BTreeMap<u64, u64>,
    /// Entries acknowledged, with their bytes (SB5).
    acked: BTreeMap<u64, Bytes>,
    /// Per segment: the highest durable LAC: a fence's answer, or carried by an acknowledged
    /// ADD or WRITE_LAC (SB2).
    lac_durable: BTreeMap<u64, u64>,
    /// Per segment: the highest seen LAC answered, and by which incarnation (SB2).
    lac_seen: BTreeMap<u64, (u64, u64)>,
    tick_at: Option<std::time::Duration>,
    /// A restart is scheduled (after a poisoning).
    restart_pending: bool,
    /// Crash while the next journal write is in flight, restarting after this long.
    pub(crate) crash_armed: Option<std::time::Duration>,
    /// Restarts so far.
    pub(crate) restarts: u64,
}

impl SimBookie {
    pub(crate) fn new(index: usize, settings: CoreSettings, ctx: &mut Ctx) -> SimBookie {
        let mut bookie = SimBookie {
            index,
            core: None,
            disk: SimDisk::default(),
            incarnation: 0,
            settings,
            waiting: VecDeque::new(),
            arrivals: 0,
            fenced_at: BTreeMap::new(),
            acked: BTreeMap::new(),
            lac_durable: BTreeMap::new(),
            lac_seen: BTreeMap::new(),
            tick_at: None,
            restart_pending: false,
            crash_armed: None,
            restarts: 0,
        };
        bookie.start(CoreStart::default(), ctx);
        bookie
    }

    pub(crate) fn is_up(&self) -> bool {
        self.core.is_some()
    }

    fn start(&mut self, start: CoreStart, ctx: &mut Ctx) {
        let mut core = ShardCore::new(self.settings.clone(), start, ctx.instant());
        let buffers = (0..self.settings.writes_in_flight_max + 1)
            .map(|_| SimDisk::buffer(core.buffer_capacity()))
            .collect();
        core.provide_buffers(buffers);
        self.core = Some(core);
        self.tick_at = None;
        self.pump(ctx);
    }

    /// The process dies: the core's memory is gone, writes in flight land as the disk decides.
    pub(crate) fn crash(&mut self, ctx: &mut Ctx) {
        if self.core.take().is_none() {
            return;
        }
        self.disk.crash(&mut ctx.rng, ctx.scenario.faults.torn_writes);
        if ctx.mutation == Mutation::LoseDurable {
            self.disk.lose_last_durable();
        }
        self.waiting.clear();
        self.incarnation += 1;
        self.restart_pending = false;
    }

    /// A new process: the journal replayed by the real replay, over the files the crash left.
    pub(crate) fn restart(&mut self, ctx: &mut Ctx) {
        if self.core.is_some() {
            return;
        }
        self.restarts += 1;
        if ctx.trace_bookie == Some(self.index) {
            eprintln!("{:?} bookie {} restarts", ctx.now, self.index);
        }
        let start = match self.replay() {
            Ok((start, torn)) => {
                ctx.stats.torn_tails += u64::from(torn);
                start
            }
            Err(reason) => {
                ctx.violation(format!("SB3: bookie {} does not replay its journal: {reason}", self.index));
                return;
            }
        };
        self.start(start, ctx);
    }

    /// The replayed start, and whether a torn tail was cut.
    fn replay(&mut self) -> Result<(CoreStart, bool), String> {
        let shm = std::path::Path::new("/dev/shm");
        let tmp = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
        let tmp = tmp.map_err(|e| format!("temp dir: {e}"))?;
        let dir = ShardDir::open(tmp.path(), ShardId(0)).map_err(|e| e.to_string())?;
        self.disk.write_to(&dir).map_err(|e| format!("writing the journal: {e}"))?;
        let (start, report) =
            replay(&dir, JournalRecovery::Strict, false, false).map_err(|e| e.to_string())?;
        self.disk.read_from(&dir).map_err(|e| format!("reading the journal back: {e}"))?;
        Ok((start, report.torn_tail.is_some()))
    }

    /// A wire request arrives from `client`.
    pub(crate) fn on_request(&mut self, client: usize, req: u64, request: Request, ctx: &mut Ctx) {
        if self.core.is_none() {
            return;
        }
        self.arrivals += 1;
        let arrival = self.arrivals;
        if ctx.trace_bookie == Some(self.index) {
            let text = format!("{request:?}");
            eprintln!("{:?} bookie {} request {}", ctx.now, self.index, &text[..text.len().min(200)]);
        }
        let op = request.op();
        let handle = |step| Handle { client, req, op, step, arrival };
        let core_request = match request {
            Request::Add { segment, entry, last_add_confirmed, master_key, payload, recovery } => {
                let key = AddKey {
                    client,
                    req,
                    segment,
                    entry,
                    recovery,
                    last_add_confirmed,
                    payload: payload.clone(),
                    arrival,
                };
                let add = add_entry(segment, entry, last_add_confirmed, master_key, payload, recovery);
                // ADDs from one client that queue while the core is busy go to it as one batch.
                if let Some(CoreRequest::Add { entries, reply }) = self.waiting.back_mut()
                    && reply.client == client
                    && let Step::Adds(keys) = &mut reply.step
                {
                    entries.push(add);
                    keys.push(key);
                    return self.pump(ctx);
                }
                CoreRequest::Add { entries: vec![add], reply: handle(Step::Adds(vec![key])) }
            }
            Request::Read { segment, entry, fence: Some(_) } if ctx.mutation == Mutation::SkipFence => {
                CoreRequest::ReadEntry {
                    segment: SegmentId(segment),
                    entry: EntryId(entry),
                    reply: handle(Step::Read { segment, entry }),
                }
            }
            Request::ReadLastAddConfirmed { segment, fence: Some(_) }
                if ctx.mutation == Mutation::SkipFence =>
            {
                // The planted bug: the fence is answered but never reaches the core.
                self.fenced_at.entry(segment).or_insert(arrival);
                CoreRequest::ReadLac { segment: SegmentId(segment), reply: handle(Step::ReadLac { segment }) }
            }
            Request::Read { segment, entry, fence: Some(master_key) } => CoreRequest::Fence {
                segment: SegmentId(segment),
                master_key,
                reply: handle(Step::FenceThenRead { segment, entry }),
            },
            Request::Read { segment, entry, fence: None } => CoreRequest::ReadEntry {
                segment: SegmentId(segment),
                entry: EntryId(entry),
                reply: handle(Step::Read { segment, entry }),
            },
            Request::ReadLastAddConfirmed { segment, fence: Some(master_key) } => CoreRequest::Fence {
                segment: SegmentId(segment),
                master_key,
                reply: handle(Step::FenceLac { segment }),
            },
            Request::ReadLastAddConfirmed { segment, fence: None } => {
                CoreRequest::ReadLac { segment: SegmentId(segment), reply: handle(Step::ReadLac { segment }) }
            }
            Request::WriteLastAddConfirmed { segment, last_add_confirmed, master_key } => {
                CoreRequest::WriteLac {
                    segment: SegmentId(segment),
                    master_key,
                    last_add_confirmed: EntryId(last_add_confirmed),
                    reply: handle(Step::WriteLac { segment, lac: last_add_confirmed }),
                }
            }
            Request::LongPoll { segment, known, timeout_ms } => CoreRequest::WaitLac {
                segment: SegmentId(segment),
                known: known.map(EntryId),
                timeout: std::time::Duration::from_millis(u64::from(timeout_ms)),
                reply: handle(Step::Wait { segment, known }),
            },
            Request::ReadRange { segment, first, last, max_bytes } => CoreRequest::ReadRange {
                segment: SegmentId(segment),
                from: EntryId(first),
                to: EntryId(last),
                max_bytes: max_bytes.min(8 << 20) as usize,
                reply: handle(Step::Range),
            },
            other => {
                let response =
                    Response::refused(op.as_u8(), dlog_protocol::Status::BadRequest, "not simulated");
                ctx.violation(format!("a client sent a request the simulation does not serve: {other:?}"));
                ctx.respond(self.index, client, req, response);
                return;
            }
        };
        self.waiting.push_back(core_request);
        self.pump(ctx);
    }

    /// A disk operation of incarnation `incarnation` completed.
    pub(crate) fn on_disk_done(&mut self, incarnation: u64, op: u64, ctx: &mut Ctx) {
        if incarnation != self.incarnation {
            return;
        }
        let torn = ctx.scenario.faults.torn_writes;
        let Some(completion) = self.disk.complete(op, &mut ctx.rng, torn) else { return };
        let now = ctx.instant();
        if let Some(core) = self.core.as_mut() {
            core.on_completion(completion, now);
        }
        self.pump(ctx);
    }

    /// Journal file `seq` was prepared (or its preparation failed with ENOSPC).
    pub(crate) fn on_file_ready(&mut self, incarnation: u64, seq: FileSeq, ok: bool, ctx: &mut Ctx) {
        if incarnation != self.incarnation {
            return;
        }
        let now = ctx.instant();
        let Some(core) = self.core.as_mut() else { return };
        if ctx.trace_bookie == Some(self.index) {
            eprintln!("{:?} bookie {} file {seq:?} ready {ok}", ctx.now, self.index);
        }
        let result = if ok {
            let header = FileHeader {
                file_seq: seq,
                shard_id: ShardId(0),
                writes_in_flight_max: self.settings.writes_in_flight_max as u32,
                file_bytes: self.settings.journal_file_bytes,
                batch_bytes_limit: batch_bytes_limit_of(
                    self.settings.batch_bytes_max,
                    self.settings.entry_bytes_max,
                ),
            };
            self.disk.prepare(seq, header);
            Ok(())
        } else {
            Err(Error::NoSpace(ShardId(0)))
        };
        core.on_file_ready(seq, result, now);
        self.pump(ctx);
    }

    /// The core's deadline came.
    pub(crate) fn on_tick(&mut self, incarnation: u64, ctx: &mut Ctx) {
        if incarnation != self.incarnation {
            return;
        }
        self.tick_at = None;
        self.pump(ctx);
    }

    /// One turn of the shell: requests in while the core wants them, idle and deadline
    /// handling, every output out; again until nothing moves (SB4).
    fn pump(&mut self, ctx: &mut Ctx) {
        let now = ctx.instant();
        for _ in 0..SPIN_TURNS_MAX {
            let Some(core) = self.core.as_mut() else { return };
            let mut moved = false;
            while core.wants_requests()
                && let Some(request) = self.waiting.pop_front()
            {
                core.on_request(request, now);
                moved = true;
            }
            if self.waiting.is_empty() {
                core.on_idle(now);
            }
            if core.deadline().is_some_and(|d| d <= now) {
                core.on_tick(now);
            }
            let mut outputs = Vec::new();
            while let Some(output) = core.poll_output() {
                outputs.push(output);
            }
            let poisoned = core.is_poisoned();
            let deadline = core.deadline();
            moved |= !outputs.is_empty();
            for output in outputs {
                self.on_output(output, ctx);
            }
            if poisoned && !self.restart_pending {
                // A supervisor restarts a poisoned bookie (C4: it refuses writes until then).
                self.restart_pending = true;
                ctx.stats.poisonings += 1;
                let after = ctx.between_ms(20, 500);
                let crash = Event::Crash { bookie: self.index, restart_after: Some(after), planned: false };
                ctx.schedule(after, crash);
            }
            if !moved {
                if deadline.is_some_and(|d| d <= now) {
                    let bookie = self.index;
                    ctx.violation(format!("SB4: bookie {bookie}'s core has a past deadline after its tick"));
                    return;
                }
                if let Some(deadline) = deadline {
                    let at = ctx.since_start(deadline).max(ctx.now);
                    if self.tick_at.is_none_or(|t| at < t || t < ctx.now) {
                        self.tick_at = Some(at);
                        ctx.schedule_at(
                            at,
                            Event::BookieTick { bookie: self.index, incarnation: self.incarnation },
                        );
                    }
                }
                return;
            }
        }
        ctx.violation(format!("SB4: bookie {}'s shard core kept producing work with no input", self.index));
    }

    fn on_output(&mut self, output: Output<Handle>, ctx: &mut Ctx) {
        if ctx.trace_bookie == Some(self.index) {
            let text = format!("{output:?}");
            eprintln!("{:?} bookie {} output {}", ctx.now, self.index, &text[..text.len().min(200)]);
        }
        match output {
            Output::Disk(op, disk_op) => {
                let is_write = matches!(disk_op, dlog_engine::io::DiskOp::Write { .. });
                let fail = ctx.disk_fault(is_write);
                let latency = ctx.disk_latency(is_write);
                self.disk.submit(op, disk_op, fail);
                ctx.schedule(
                    latency,
                    Event::DiskDone { bookie: self.index, incarnation: self.incarnation, op },
                );
                if is_write
                    && ctx.faults_on
                    && let Some(restart_after) = self.crash_armed.take()
                {
                    // The crash lands while this write (and maybe others) is in flight.
                    let at = latency.mul_f64(ctx.rng.random_range(0.0..1.0));
                    let crash = Event::Crash {
                        bookie: self.index,
                        restart_after: Some(restart_after),
                        planned: true,
                    };
                    ctx.schedule(at, crash);
                }
            }
            Output::Reply(handle, reply) => self.on_reply(handle, reply, ctx),
            Output::PrepareFile(seq) => {
                let ok = !ctx.fault(ctx.scenario.faults.p_enospc);
                let after = ctx.between_ms(0, 5);
                let event = Event::FileReady { bookie: self.index, incarnation: self.incarnation, seq, ok };
                ctx.schedule(after, event);
            }
            other => ctx.violation(format!("journal-only shard asked for storage work: {other:?}")),
        }
    }

    /// The LAC `lac` of `segment` is durable here (an acknowledged ADD or WRITE_LAC carried it).
    fn durable_lac(&mut self, segment: u64, lac: u64) {
        let durable = self.lac_durable.entry(segment).or_insert(lac);
        *durable = (*durable).max(lac);
    }

    /// The bookie acknowledged `key`: SB1, the durable LAC it carried (SB2), and its bytes for
    /// the audit (SB5: acknowledged bytes never change and are never lost).
    fn acknowledged(&mut self, key: &AddKey, ctx: &mut Ctx) {
        let (bookie, segment, entry) = (self.index, key.segment, key.entry);
        if !key.recovery && self.fenced_at.get(&segment).is_some_and(|f| key.arrival > *f) {
            ctx.violation(format!(
                "SB1: bookie {bookie} acknowledged ADD {segment}/{entry} that arrived after its fence"
            ));
        }
        if let Some(lac) = key.last_add_confirmed {
            self.durable_lac(segment, lac);
        }
        if let Some(before) = self.acked.insert(entry, key.payload.clone())
            && before != key.payload
        {
            ctx.violation(format!("SB5: bookie {bookie} acknowledged other bytes for entry {entry}"));
        }
    }

    /// Entries this bookie acknowledged, with their bytes (SB5).
    pub(crate) fn acked(&self) -> &BTreeMap<u64, Bytes> {
        &self.acked
    }

    /// A LAC answered for `segment`: durable (a fence's) or seen (SB2).
    fn answered_lac(&mut self, segment: u64, lac: Option<EntryId>, durable: bool, ctx: &mut Ctx) {
        let bookie = self.index;
        let lac = lac.map(|l| l.0);
        if lac > ctx.history.writer_lac {
            let writer = ctx.history.writer_lac;
            ctx.violation(format!("SB2: bookie {bookie} answered LAC {lac:?} past the writer's {writer:?}"));
        }
        let durable_before = self.lac_durable.get(&segment).copied();
        if lac < durable_before {
            let what = if durable { "durable" } else { "seen" };
            ctx.violation(format!(
                "SB2: bookie {bookie} answered {what} LAC {lac:?} for {segment} after durable {durable_before:?}"
            ));
        }
        let Some(lac) = lac else { return };
        if durable {
            self.lac_durable.insert(segment, durable_before.map_or(lac, |d| d.max(lac)));
            return;
        }
        if let Some((incarnation, seen)) = self.lac_seen.get(&segment).copied()
            && incarnation == self.incarnation
            && lac < seen
        {
            ctx.violation(format!("SB2: bookie {bookie} answered LAC {lac} for {segment} after {seen}"));
        }
        let seen =
            self.lac_seen.get(&segment).filter(|(i, _)| *i == self.incarnation).map_or(lac, |s| s.1.max(lac));
        self.lac_seen.insert(segment, (self.incarnation, seen));
    }

    fn on_reply(&mut self, handle: Handle, reply: Reply, ctx: &mut Ctx) {
        let Handle { client, req, op, step, arrival } = handle;
        let index = self.index;
        let respond = |response: Response, ctx: &mut Ctx| ctx.respond(index, client, req, response);
        let response = match (step, reply) {
            (_, Reply::Refused(error)) => refusal(op, &error),
            (Step::Adds(keys), Reply::Added(result)) => {
                let entries: Vec<(u64, u64)> = keys.iter().map(|k| (k.segment, k.entry)).collect();
                let responses = add_responses(&entries, result);
                for (key, response) in keys.into_iter().zip(responses) {
                    if matches!(response, Response::Add { .. }) {
                        self.acknowledged(&key, ctx);
                    }
                    ctx.respond(self.index, key.client, key.req, response);
                }
                return;
            }
            (step @ (Step::FenceThenRead { .. } | Step::FenceLac { .. }), Reply::Fenced(result)) => {
                let segment = match step {
                    Step::FenceThenRead { segment, .. } | Step::FenceLac { segment } => segment,
                    _ => unreachable!("matched above"),
                };
                let lac = match result {
                    Ok(lac) => lac,
                    Err(error) => return respond(refusal(op, &error), ctx),
                };
                // The core marks the segment fenced when it takes the fence: every plain ADD that
                // reached the bookie after the fence request must be refused (SB1).
                self.fenced_at.entry(segment).and_modify(|f| *f = (*f).min(arrival)).or_insert(arrival);
                self.answered_lac(segment, lac, true, ctx);
                match step {
                    Step::FenceThenRead { segment, entry } => {
                        // DP3: the read comes once the fence is durable.
                        let step = Step::Read { segment, entry };
                        let reply = Handle { client, req, op, step, arrival };
                        let (segment, entry) = (SegmentId(segment), EntryId(entry));
                        self.waiting.push_back(CoreRequest::ReadEntry { segment, entry, reply });
                        return;
                    }
                    _ => Response::ReadLastAddConfirmed { last_add_confirmed: lac.map(|e| e.0) },
                }
            }
            (Step::Read { segment, entry }, Reply::Entry(result)) => match result {
                Ok(payload) => Response::Read { segment, entry, payload },
                Err(error) => refusal(op, &error),
            },
            (Step::WaitRead { lac, entry }, Reply::Entry(result)) => {
                // A failed read still answers the LAC (the reader asks for the entry again).
                let entry = result.ok().map(|payload: Bytes| (entry, payload));
                Response::LongPoll { last_add_confirmed: Some(lac), entry }
            }
            (Step::ReadLac { segment }, Reply::Lac(result)) => match result {
                Ok(lac) => {
                    self.answered_lac(segment, lac, false, ctx);
                    Response::ReadLastAddConfirmed { last_add_confirmed: lac.map(|e| e.0) }
                }
                Err(error) => refusal(op, &error),
            },
            (Step::WriteLac { segment, lac }, Reply::LacWritten(result)) => match result {
                Ok(()) => {
                    self.durable_lac(segment, lac);
                    Response::WriteLastAddConfirmed
                }
                Err(error) => refusal(op, &error),
            },
            (Step::Wait { segment, known }, Reply::LacWaited(result)) => match result {
                Ok(lac) => {
                    self.answered_lac(segment, lac, false, ctx);
                    let next = known.map_or(Some(0), |k| k.checked_add(1));
                    match (lac, next) {
                        (Some(lac), Some(next)) if lac.0 >= next => {
                            let step = Step::WaitRead { lac: lac.0, entry: next };
                            let reply = Handle { client, req, op, step, arrival };
                            let (segment, entry) = (SegmentId(segment), EntryId(next));
                            self.waiting.push_back(CoreRequest::ReadEntry { segment, entry, reply });
                            return;
                        }
                        _ => Response::LongPoll { last_add_confirmed: lac.map(|e| e.0), entry: None },
                    }
                }
                Err(error) => refusal(op, &error),
            },
            (Step::Range, Reply::Entries(result)) => match result {
                Ok(entries) => {
                    Response::ReadRange { entries: entries.into_iter().map(|(e, p)| (e.0, p)).collect() }
                }
                Err(error) => refusal(op, &error),
            },
            (step, reply) => {
                ctx.violation(format!("bookie {}: reply {reply:?} to {step:?}", self.index));
                return;
            }
        };
        respond(response, ctx);
    }

    /// For a stuck run's description.
    pub(crate) fn describe(&self) -> String {
        match &self.core {
            None => format!("bookie {} down", self.index),
            Some(core) => format!(
                "bookie {}: waiting {} wants {} poisoned {} deadline {:?} journal {} B, {:?}",
                self.index,
                self.waiting.len(),
                core.wants_requests(),
                core.is_poisoned(),
                core.deadline().is_some(),
                self.disk.bytes(),
                core.stats()
            ),
        }
    }
}
