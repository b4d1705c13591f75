//! `run`: one seed from start to verdict: the cluster built from the scenario, the event loop
//! dispatching each event to the bookie or client it concerns, and the end of the run (heal,
//! finish the segment with a last recovery if needed, audit the replicas, a final read).

use std::collections::BTreeMap;
use std::time::Duration;

use dlog_engine::shard::core::CoreSettings;
use dlog_engine::{JournalSync, ShardId};
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_reader::SegmentEnd;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::auditor::Auditor;
use crate::bookie::SimBookie;
use crate::meta::{MetaOp, MetaResult, SegState, SimMeta};
use crate::reader::ReaderActor;
use crate::recoverer::RecovererActor;
use crate::scenario::{Mutation, Scenario};
use crate::world::{Ctx, Event, LIVENESS, Stats};
use crate::writer::WriterActor;

/// Events one run may process at most (a run that needs more is stuck in a loop).
const EVENTS_MAX: u64 = 20_000_000;
/// Events queued at once at most (more is a storm: something answers itself in a loop).
const QUEUED_MAX: usize = 2_000_000;

enum Client {
    Writer(WriterActor),
    Recoverer(RecovererActor),
    Reader(ReaderActor),
    Auditor(Auditor),
}

/// How one seed ended.
#[derive(Debug)]
pub struct Report {
    /// The scenario run.
    pub scenario: Scenario,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// Counters.
    pub stats: Stats,
    /// Network counters.
    pub net: crate::net::NetStats,
    /// Entries the writer added.
    pub added: u64,
    /// Entries it acknowledged.
    pub acked: u64,
    /// Where the segment closed.
    pub last_entry: Option<u64>,
    /// Entries readers delivered.
    pub delivered: u64,
    /// Bookie restarts.
    pub restarts: u64,
    /// Violations: empty when the seed passed.
    pub violations: Vec<String>,
}

struct World {
    ctx: Ctx,
    quorum: QuorumSizes,
    bookies: Vec<SimBookie>,
    clients: Vec<Client>,
    meta: SimMeta,
    auditing: bool,
    /// The last reader, started with the audit: it must read the closed segment to its end.
    final_reader: Option<usize>,
    finished: bool,
}

/// Runs `seed`.
pub fn run(seed: u64) -> Report {
    run_mutated(seed, Mutation::None)
}

/// Runs `seed` with a planted bug. A panic (a core's assertion, or the simulation's) is a
/// violation of the seed, not the end of a batch.
pub fn run_mutated(seed: u64, mutation: Mutation) -> Report {
    match std::panic::catch_unwind(|| run_unguarded(seed, mutation)) {
        Ok(report) => report,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".into());
            Report {
                scenario: Scenario::from_seed(seed),
                virtual_time: Duration::ZERO,
                stats: Stats::default(),
                net: crate::net::NetStats::default(),
                added: 0,
                acked: 0,
                last_entry: None,
                delivered: 0,
                restarts: 0,
                violations: vec![format!("panic: {message}")],
            }
        }
    }
}

fn run_unguarded(seed: u64, mutation: Mutation) -> Report {
    let scenario = Scenario::from_seed(seed);
    let mut ctx = Ctx::new(scenario.clone(), mutation);
    let (e, w, a) = scenario.quorum;
    let quorum = QuorumSizes::new(e, w, a).expect("scenario quorums are valid");
    let settings = CoreSettings {
        shard: ShardId(0),
        batch_bytes_max: scenario.batch_bytes_max,
        batch_delay_max: scenario.batch_delay_max,
        batch_when_idle: scenario.batch_when_idle,
        writes_in_flight_max: scenario.writes_in_flight_max,
        journal_file_bytes: scenario.journal_file_bytes,
        entry_bytes_max: 64 << 10,
        journal_sync: JournalSync::Fdatasync,
        storage: None,
    };
    let bookies = (0..scenario.bookies).map(|i| SimBookie::new(i, settings.clone(), &mut ctx)).collect();
    let mut pool: Vec<usize> = (0..scenario.bookies).collect();
    pool.shuffle(&mut ctx.rng);
    let ensemble: Vec<usize> = pool[..e].to_vec();
    let mut clients = vec![Client::Writer(WriterActor::new(0, quorum, ensemble.clone(), &mut ctx))];
    let takeover_at = ctx.between_ms(0, scenario.faults_end.as_millis() as u64);
    for i in 0..scenario.recoverers {
        clients.push(Client::Recoverer(RecovererActor::new(clients.len(), quorum)));
        if scenario.takeover {
            let at = takeover_at + ctx.between_ms(0, 300) * i as u32;
            ctx.schedule_at(at, Event::StartClient { client: clients.len() - 1 });
        }
    }
    for _ in 0..scenario.readers {
        clients.push(Client::Reader(ReaderActor::new(clients.len(), quorum)));
        let at = ctx.between_ms(0, scenario.faults_end.as_millis() as u64 / 2);
        ctx.schedule_at(at, Event::StartClient { client: clients.len() - 1 });
    }
    ctx.schedule(Duration::from_millis(1), Event::Add);
    ctx.plan_faults();
    let mut world = World {
        ctx,
        quorum,
        bookies,
        clients,
        meta: SimMeta::new(ensemble),
        auditing: false,
        final_reader: None,
        finished: false,
    };
    world.run_loop();
    let World { ctx, bookies, meta, .. } = world;
    let last_entry = match meta.state {
        SegState::Closed(end) => end.last_entry,
        _ => None,
    };
    Report {
        scenario,
        virtual_time: ctx.now,
        stats: ctx.stats,
        net: ctx.net.stats,
        added: ctx.history.payloads.len() as u64,
        acked: ctx.history.acked,
        last_entry,
        delivered: ctx.history.delivered,
        restarts: bookies.iter().map(|b| b.restarts).sum(),
        violations: ctx.history.violations,
    }
}

impl World {
    fn run_loop(&mut self) {
        let deadline = self.ctx.scenario.faults_end + LIVENESS;
        while let Some((at, event)) = self.ctx.queue.pop() {
            if at > deadline {
                let state = self.describe();
                self.ctx.violation(format!(
                    "WD3: stuck: the run did not end {LIVENESS:?} after the faults: {state}"
                ));
                return;
            }
            self.ctx.now = at;
            self.ctx.stats.events += 1;
            self.handle(event);
            if self.auditing {
                let audited = self.clients.iter().all(|c| !matches!(c, Client::Auditor(a) if !a.done));
                let final_reader = self.final_reader.and_then(|r| match &self.clients[r] {
                    Client::Reader(r) if r.ended => Some(r.next),
                    _ => None,
                });
                if let (Some(next), SegState::Closed(end)) = (final_reader, self.meta.state)
                    && Some(next) != end.last_entry.map(|l| l + 1).or(Some(0))
                {
                    self.ctx
                        .violation(format!("H3: the final reader ended at {next}, the segment at {end:?}"));
                }
                self.finished = audited && final_reader.is_some();
            }
            if !self.ctx.history.violations.is_empty() || self.finished {
                return;
            }
            if self.ctx.stats.events > EVENTS_MAX || self.ctx.queue.len() > QUEUED_MAX {
                let queued = self.ctx.queue.len();
                self.ctx.violation(format!("event storm: {} events, {queued} queued", self.ctx.stats.events));
                return;
            }
        }
        if !self.finished {
            let state = self.describe();
            self.ctx.violation(format!("WD3: nothing left to happen, but the run did not end: {state}"));
        }
    }

    fn describe(&self) -> String {
        let mut parts = vec![format!("metadata {:?}", self.meta.state)];
        for (i, client) in self.clients.iter().enumerate() {
            let what = match client {
                Client::Writer(w) => format!("writer quiet {}", w.is_quiet()),
                Client::Recoverer(r) => format!("recoverer running {} {}", r.is_running(), r.describe()),
                Client::Reader(r) => format!("reader at {} ended {}", r.next, r.ended),
                Client::Auditor(a) => format!("auditor done {}", a.done),
            };
            parts.push(format!("{i}: {what}"));
        }
        parts.extend(self.bookies.iter().map(SimBookie::describe));
        parts.push(format!("queued events {}", self.ctx.queue.len()));
        parts.join("; ")
    }

    fn snapshot(&self) -> (BTreeMap<u64, Vec<usize>>, SegmentEnd) {
        let end = match self.meta.state {
            SegState::Closed(end) => SegmentEnd::Closed { last_entry: end.last_entry },
            _ => SegmentEnd::Open { last_add_confirmed: None },
        };
        (self.meta.ensembles.clone(), end)
    }

    fn handle(&mut self, event: Event) {
        let ctx = &mut self.ctx;
        match event {
            Event::Request { bookie, client, req, request } => {
                if self.bookies[bookie].is_up() {
                    self.bookies[bookie].on_request(client, req, request, ctx);
                } else {
                    // Connection refused.
                    let after = ctx.between_ms(0, 5);
                    ctx.schedule(after, Event::Reset { client, bookie });
                }
            }
            event @ (Event::Response { .. }
            | Event::Stale { .. }
            | Event::Timeout { .. }
            | Event::Reset { .. }) => {
                for answer in ctx.transport(&event) {
                    match &mut self.clients[answer.client] {
                        Client::Writer(w) => w.on_answer(answer.bookie, answer.tag, answer.result, ctx),
                        Client::Recoverer(r) => {
                            r.on_answer(answer.generation, answer.bookie, answer.tag, answer.result, ctx)
                        }
                        Client::Reader(r) => r.on_answer(answer.generation, answer.tag, answer.result, ctx),
                        Client::Auditor(a) => a.on_answer(answer.tag, answer.result, ctx),
                    }
                }
            }
            Event::DiskDone { bookie, incarnation, op } => {
                self.bookies[bookie].on_disk_done(incarnation, op, ctx)
            }
            Event::FileReady { bookie, incarnation, seq, ok } => {
                self.bookies[bookie].on_file_ready(incarnation, seq, ok, ctx);
            }
            Event::BookieTick { bookie, incarnation } => self.bookies[bookie].on_tick(incarnation, ctx),
            Event::Crash { bookie, restart_after, planned } => {
                if planned && !ctx.faults_on {
                    return;
                }
                if self.bookies[bookie].is_up() {
                    ctx.stats.crashes += 1;
                    self.bookies[bookie].crash(ctx);
                    ctx.up[bookie] = false;
                    for client in 0..self.clients.len() {
                        let after = ctx.between_ms(0, 100);
                        ctx.schedule(after, Event::Reset { client, bookie });
                    }
                }
                if let Some(after) = restart_after {
                    ctx.schedule(after, Event::Restart { bookie });
                }
            }
            Event::ArmCrash { bookie, restart_after } => {
                if ctx.faults_on {
                    self.bookies[bookie].crash_armed = Some(restart_after);
                }
            }
            Event::Restart { bookie } => {
                self.bookies[bookie].restart(ctx);
                ctx.up[bookie] = self.bookies[bookie].is_up();
            }
            Event::ClientTick { client } => match &mut self.clients[client] {
                Client::Writer(w) => w.on_tick(ctx),
                Client::Recoverer(r) => r.on_tick(ctx),
                Client::Reader(r) => r.on_tick(ctx),
                Client::Auditor(a) => a.on_tick(ctx),
            },
            Event::Add => {
                if let Client::Writer(w) = &mut self.clients[0] {
                    w.on_add(ctx);
                }
            }
            Event::Meta { client, generation, op } => {
                let lost_after_applying = matches!(op, MetaOp::BeginRecovery) && ctx.rng.random_bool(0.5);
                let result = if ctx.fault(ctx.scenario.faults.p_meta_fail) {
                    ctx.stats.meta_failures += 1;
                    if lost_after_applying {
                        // M4: InRecovery landed, the recoverer is told it failed.
                        let version = self.meta.version;
                        let _ = self.meta.apply(op.clone(), &ctx.up, &mut ctx.rng);
                        if self.meta.version != version {
                            ctx.schedule(Duration::ZERO, Event::Notify);
                        }
                    }
                    failed(&op)
                } else {
                    let version = self.meta.version;
                    let result = self.meta.apply(op, &ctx.up, &mut ctx.rng);
                    if self.meta.version != version {
                        let after = ctx.between_ms(0, 50);
                        ctx.schedule(after, Event::Notify);
                    }
                    result
                };
                let max = ctx.scenario.faults.meta_delay_max.as_millis() as u64;
                let after = ctx.between_ms(0, max.max(1));
                ctx.schedule(after, Event::MetaDone { client, generation, result });
            }
            Event::MetaDone { client, generation, result } => match &mut self.clients[client] {
                Client::Writer(w) => w.on_meta(result, ctx),
                Client::Recoverer(r) => r.on_meta(generation, result, ctx),
                _ => ctx.violation(format!("metadata answer for client {client}")),
            },
            Event::Replaced { client, generation, result } => {
                if let Client::Recoverer(r) = &mut self.clients[client] {
                    r.on_replaced(generation, result, ctx);
                }
            }
            Event::Consume { client, generation } => {
                if let Client::Reader(r) = &mut self.clients[client] {
                    r.on_consume(generation, ctx);
                }
            }
            Event::StartClient { client } => {
                let (ensembles, end) = self.snapshot();
                let ctx = &mut self.ctx;
                match &mut self.clients[client] {
                    Client::Recoverer(r) => r.start(ctx),
                    Client::Reader(r) => r.start(ensembles, end, ctx),
                    _ => {}
                }
            }
            Event::Notify => {
                let (ensembles, end) = self.snapshot();
                let ctx = &mut self.ctx;
                for client in &mut self.clients {
                    if let Client::Reader(r) = client
                        && r.is_reading()
                    {
                        r.on_metadata(ensembles.clone(), end, ctx);
                    }
                }
            }
            Event::Partition => ctx.partition(self.clients.len()),
            Event::Swizzle => ctx.swizzle(),
            Event::Clog { bookie, until } => {
                if ctx.faults_on {
                    ctx.net.clog(bookie, until);
                }
            }
            Event::Heal => {
                ctx.faults_on = false;
                ctx.net.heal();
                for bookie in 0..self.bookies.len() {
                    self.bookies[bookie].crash_armed = None;
                    if !self.bookies[bookie].is_up() {
                        ctx.schedule(Duration::ZERO, Event::Restart { bookie });
                    }
                }
                ctx.schedule(Duration::from_secs(1), Event::Finalize);
            }
            Event::Finalize => self.finalize(),
        }
    }

    /// After the heal: lets the writer and recoverers finish, recovers the segment if nobody
    /// closes it, then audits (WD3).
    fn finalize(&mut self) {
        if self.auditing {
            return;
        }
        let writer_quiet = matches!(&self.clients[0], Client::Writer(w) if w.is_quiet());
        let recovering = self.clients.iter().any(|c| matches!(c, Client::Recoverer(r) if r.is_running()));
        let since_heal = self.ctx.now.saturating_sub(self.ctx.scenario.faults_end);
        let closed = matches!(self.meta.state, SegState::Closed(_));
        let ever_recovered =
            self.clients.iter().any(|c| matches!(c, Client::Recoverer(r) if r.was_started()));
        if !writer_quiet && !ever_recovered && since_heal > Duration::from_secs(20) {
            self.ctx.violation(
                "WD3: the writer has not finished 20 s after the heal, and nobody fenced it".into(),
            );
            return;
        }
        if !closed && !recovering && (writer_quiet || since_heal > Duration::from_secs(20)) {
            // The writer is gone or fenced: a new owner recovers the segment.
            let id = self.clients.len();
            let mut recoverer = RecovererActor::new(id, self.quorum);
            recoverer.start(&mut self.ctx);
            self.clients.push(Client::Recoverer(recoverer));
        }
        let readers_done = self.clients.iter().all(|c| !matches!(c, Client::Reader(r) if r.is_reading()));
        if let SegState::Closed(end) = self.meta.state
            && writer_quiet
            && !recovering
            && readers_done
        {
            if self.ctx.history.check_closed(end) {
                return;
            }
            for client in &self.clients {
                if let Client::Reader(r) = client
                    && r.ended
                    && Some(r.next) != end.last_entry.map(|l| l + 1).or(Some(0))
                {
                    let next = r.next;
                    self.ctx.violation(format!("H3: a reader ended at {next}, the segment at {end:?}"));
                }
            }
            self.auditing = true;
            // The audit, and a last reader from entry 0 on the closed segment.
            let id = self.clients.len();
            let mut auditor = Auditor::new(id, self.quorum);
            let acked: Vec<(usize, u64, bytes::Bytes)> = self
                .bookies
                .iter()
                .enumerate()
                .flat_map(|(b, bookie)| bookie.acked().iter().map(move |(e, p)| (b, *e, p.clone())))
                .collect();
            auditor.start(&self.meta.ensembles, end.last_entry, acked, &mut self.ctx);
            self.clients.push(Client::Auditor(auditor));
            let id = self.clients.len();
            let mut reader = ReaderActor::new(id, self.quorum);
            let (ensembles, end) = self.snapshot();
            reader.start(ensembles, end, &mut self.ctx);
            self.clients.push(Client::Reader(reader));
            self.final_reader = Some(id);
            return;
        }
        let after = Duration::from_millis(self.ctx.rng.random_range(200..1000));
        self.ctx.schedule(after, Event::Finalize);
    }
}

/// The store's answer to `op` when the call fails before it is applied.
fn failed(op: &crate::meta::MetaOp) -> MetaResult {
    use crate::meta::MetaOp;
    use dlog_replication::recovery::RecoveryError;
    use dlog_replication::segment_writer::{EnsembleChangeError, WriterError};
    let reason = "store unavailable".to_owned();
    match op {
        MetaOp::ChangeEnsemble { .. } => MetaResult::Ensemble(Err(EnsembleChangeError::Unavailable(reason))),
        MetaOp::CloseWritten { .. } => MetaResult::Closed(Err(WriterError::Metadata(reason))),
        MetaOp::BeginRecovery => MetaResult::Begin(Err(reason)),
        MetaOp::CloseRecovered { .. } => MetaResult::Recovered(Err(RecoveryError::Metadata(reason))),
    }
}
