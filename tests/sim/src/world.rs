//! `World`: one seeded run. The event loop, the context every actor acts through (`Ctx`: the
//! virtual clock, the seeded stream, the queue, the network, the history), the fault schedule,
//! and the end of the run: heal, finish the segment, audit.
//!
//! Invariants:
//! - WD1 (determinism): the run is a function of the seed alone: one thread, one ChaCha stream,
//!   a queue ordered by (time, push order), ordered maps only. Cores see time as
//!   `base + virtual time`; `base` is the only real clock reading and nothing depends on it.
//! - WD2 (transport): every request a client sends gets exactly one answer from its transport:
//!   the response, `Timeout` (after the request timeout, plus a LONG_POLL's own wait), or
//!   `Disconnected` when its connection resets. A response that comes after that is dropped,
//!   except that the fault mix may hand the cores stale answers (which the real transport never
//!   does: a violation only they cause is a core not meeting its own contract, W6/RC6, not a
//!   production failure). Answers carry the generation of the core that sent the request: a
//!   restarted recoverer or reader never gets its predecessor's answers.
//! - WD3 (liveness): after the fault window the run must end (segment closed, every recoverer
//!   and reader done, the audit complete) within `LIVENESS`; otherwise it fails as stuck.
//! - WD4 (the wire): every message crosses as the wire codec frames it: encoded, decoded, and
//!   the decoded value is what arrives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_engine::FileSeq;
use dlog_protocol::{Request, Response};
use dlog_replication::segment_writer::TransportFailure;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::history::History;
use crate::meta::{MetaOp, MetaResult};
use crate::net::{Fate, Net};
use crate::queue::Queue;
use crate::scenario::Scenario;

/// The one segment the simulation writes.
pub(crate) const SEGMENT: u64 = 7;
/// Its master key.
pub(crate) static MASTER_KEY: Bytes = Bytes::from_static(b"sim-master-key");
/// How long after the fault window the run may take (WD3).
pub(crate) const LIVENESS: Duration = Duration::from_secs(180);

/// Something that happens at a virtual time.
pub(crate) enum Event {
    Request {
        bookie: usize,
        client: usize,
        req: u64,
        request: Request,
    },
    Response {
        client: usize,
        bookie: usize,
        req: u64,
        response: Response,
    },
    Stale {
        client: usize,
        generation: u64,
        bookie: usize,
        tag: u64,
        response: Response,
    },
    Timeout {
        req: u64,
    },
    Reset {
        client: usize,
        bookie: usize,
    },
    DiskDone {
        bookie: usize,
        incarnation: u64,
        op: u64,
    },
    FileReady {
        bookie: usize,
        incarnation: u64,
        seq: FileSeq,
        ok: bool,
    },
    BookieTick {
        bookie: usize,
        incarnation: u64,
    },
    Crash {
        bookie: usize,
        restart_after: Option<Duration>,
        /// A fault (dropped after the fault window), not a supervisor's restart.
        planned: bool,
    },
    Restart {
        bookie: usize,
    },
    /// Crash the bookie while its next journal write is in flight.
    ArmCrash {
        bookie: usize,
        restart_after: Duration,
    },
    ClientTick {
        client: usize,
    },
    Add,
    Meta {
        client: usize,
        generation: u64,
        op: MetaOp,
    },
    MetaDone {
        client: usize,
        generation: u64,
        result: MetaResult,
    },
    Replaced {
        client: usize,
        generation: u64,
        result: Result<Vec<usize>, String>,
    },
    StartClient {
        client: usize,
    },
    /// A reader's application consumed what it was given.
    Consume {
        client: usize,
        generation: u64,
    },
    Notify,
    Partition,
    Swizzle,
    Clog {
        bookie: usize,
        until: Duration,
    },
    Heal,
    Finalize,
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Bookie crashes (planned and after poisoning).
    pub crashes: u64,
    /// Journal writes failed with EIO.
    pub eio_writes: u64,
    /// Journal reads failed with EIO.
    pub eio_reads: u64,
    /// Slow flushes.
    pub slow_fsyncs: u64,
    /// Metadata calls failed.
    pub meta_failures: u64,
    /// Requests timed out.
    pub timeouts: u64,
    /// Stale answers handed to cores.
    pub stale_answers: u64,
    /// Bookie failures the writer reported.
    pub bookie_failures: u64,
    /// Ensemble changes the writer asked for.
    pub ensemble_changes: u64,
    /// Recoveries begun.
    pub recoveries: u64,
    /// Readers started again after giving up.
    pub reader_restarts: u64,
    /// Copies the audit read.
    pub audited_copies: u64,
    /// Torn tails replay cut off at restarts.
    pub torn_tails: u64,
    /// Shards poisoned by a failed journal write.
    pub poisonings: u64,
    /// Entries recoveries found past the fenced LAC and re-added.
    pub entries_recovered: u64,
    /// Writer adds that failed after a recoverer fenced the segment.
    pub fenced_adds: u64,
}

impl Stats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            events,
            crashes,
            eio_writes,
            eio_reads,
            slow_fsyncs,
            meta_failures,
            timeouts,
            stale_answers,
            bookie_failures,
            ensemble_changes,
            recoveries,
            reader_restarts,
            audited_copies,
            torn_tails,
            poisonings,
            entries_recovered,
            fenced_adds,
        } = *other;
        self.events += events;
        self.crashes += crashes;
        self.eio_writes += eio_writes;
        self.eio_reads += eio_reads;
        self.slow_fsyncs += slow_fsyncs;
        self.meta_failures += meta_failures;
        self.timeouts += timeouts;
        self.stale_answers += stale_answers;
        self.bookie_failures += bookie_failures;
        self.ensemble_changes += ensemble_changes;
        self.recoveries += recoveries;
        self.reader_restarts += reader_restarts;
        self.audited_copies += audited_copies;
        self.torn_tails += torn_tails;
        self.poisonings += poisonings;
        self.entries_recovered += entries_recovered;
        self.fenced_adds += fenced_adds;
    }
}

/// A decoder of the wire codec.
type Decode<T> =
    fn(&mut bytes::BytesMut, &dlog_protocol::Limits) -> Result<Option<(u64, T)>, dlog_protocol::DecodeError>;

struct Pending {
    client: usize,
    /// The client's core generation that sent it (WD2).
    generation: u64,
    bookie: usize,
    tag: u64,
}

/// What actors act through (WD1, WD2).
pub(crate) struct Ctx {
    pub(crate) now: Duration,
    base: Instant,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) queue: Queue<Event>,
    pub(crate) scenario: Scenario,
    pub(crate) faults_on: bool,
    pub(crate) net: Net,
    /// Which bookies are up (what placement sees).
    pub(crate) up: Vec<bool>,
    pub(crate) history: History,
    pub(crate) stats: Stats,
    pending: BTreeMap<u64, Pending>,
    next_req: u64,
    /// `DLOG_SIM_TRACE=<client>`: print that client's requests and answers.
    trace: Option<usize>,
    /// The bug planted, if any.
    pub(crate) mutation: crate::scenario::Mutation,
    /// `DLOG_SIM_TRACE_BOOKIE=<bookie>`: print that bookie's requests and core outputs.
    pub(crate) trace_bookie: Option<usize>,
}

impl Ctx {
    pub(crate) fn new(scenario: Scenario, mutation: crate::scenario::Mutation) -> Ctx {
        #[expect(clippy::disallowed_methods, reason = "one real reading; cores see base + virtual time")]
        let base = Instant::now();
        Ctx {
            now: Duration::ZERO,
            base,
            rng: rand::SeedableRng::seed_from_u64(scenario.seed),
            queue: Queue::new(),
            up: vec![true; scenario.bookies],
            scenario,
            faults_on: true,
            net: Net::default(),
            history: History::default(),
            stats: Stats::default(),
            pending: BTreeMap::new(),
            next_req: 0,
            trace: std::env::var("DLOG_SIM_TRACE").ok().and_then(|v| v.parse().ok()),
            mutation,
            trace_bookie: std::env::var("DLOG_SIM_TRACE_BOOKIE").ok().and_then(|v| v.parse().ok()),
        }
    }

    /// The virtual now as the cores see it.
    pub(crate) fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// A core's deadline as virtual time.
    pub(crate) fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }

    pub(crate) fn schedule(&mut self, after: Duration, event: Event) {
        self.queue.push(self.now + after, event);
    }

    pub(crate) fn schedule_at(&mut self, at: Duration, event: Event) {
        self.queue.push(at.max(self.now), event);
    }

    /// Schedules `client`'s tick at its core's deadline, unless one is due no later.
    pub(crate) fn schedule_tick(
        &mut self,
        client: usize,
        deadline: Option<Instant>,
        tick_at: &mut Option<Duration>,
    ) {
        let Some(deadline) = deadline else { return };
        // As the real client shell: a timer at least 50 us ahead, so a core whose deadline
        // stays in the past still lets time move (and shows up as stuck, WD3).
        let at = self.since_start(deadline).max(self.now + Duration::from_micros(50));
        if tick_at.is_none_or(|t| at < t || t < self.now) {
            *tick_at = Some(at);
            self.schedule_at(at, Event::ClientTick { client });
        }
    }

    pub(crate) fn violation(&mut self, message: String) {
        self.history.violation(format!("at {:?}: {message}", self.now));
    }

    /// A fault with probability `p`, only in the fault window.
    pub(crate) fn fault(&mut self, p: f64) -> bool {
        self.faults_on && p > 0.0 && self.rng.random_bool(p)
    }

    pub(crate) fn between_ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(self.rng.random_range(lo * 1000..=hi * 1000))
    }

    /// The gap before the writer's next add: exponential around the mean, with bursts.
    pub(crate) fn add_gap(&mut self) -> Duration {
        if self.rng.random_bool(0.2) {
            return Duration::ZERO;
        }
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        self.scenario.add_gap_mean.mul_f64(-u.ln())
    }

    /// The error a disk operation completes with, if the fault mix says so.
    pub(crate) fn disk_fault(&mut self, is_write: bool) -> Option<(dlog_engine::IoOp, i32)> {
        let faults = &self.scenario.faults;
        let (p, step) = if is_write {
            (faults.p_eio_write, dlog_engine::IoOp::Flush)
        } else {
            (faults.p_eio_read, dlog_engine::IoOp::Read)
        };
        if !self.fault(p) {
            return None;
        }
        if is_write {
            self.stats.eio_writes += 1;
        } else {
            self.stats.eio_reads += 1;
        }
        Some((step, 5)) // EIO
    }

    /// How long a disk operation takes.
    pub(crate) fn disk_latency(&mut self, is_write: bool) -> Duration {
        let base = Duration::from_micros(self.rng.random_range(20..if is_write { 2000 } else { 300 }));
        let slow = self.scenario.faults.p_slow_fsync;
        if is_write && self.fault(slow) {
            self.stats.slow_fsyncs += 1;
            let max = self.scenario.faults.slow_fsync_max.as_micros() as u64;
            return base + Duration::from_micros(self.rng.random_range(0..=max));
        }
        base
    }

    /// A client sends `request` to `bookie` under its core's `tag` (WD2). It travels as the
    /// wire codec frames it (WD4).
    pub(crate) fn send(
        &mut self,
        (client, generation): (usize, u64),
        bookie: usize,
        tag: u64,
        request: Request,
    ) {
        self.next_req += 1;
        let req = self.next_req;
        let request =
            self.over_the_wire(request, req, dlog_protocol::encode_request, dlog_protocol::decode_request);
        if self.trace == Some(client) {
            eprintln!(
                "{:?} client {client} -> bookie {bookie} req {req} tag {tag:#x}: {request:?}",
                self.now
            );
        }
        self.pending.insert(req, Pending { client, generation, bookie, tag });
        // As the real transport: a LONG_POLL may take its own wait on top of the timeout.
        let timeout = self.scenario.request_timeout
            + match &request {
                Request::LongPoll { timeout_ms, .. } => Duration::from_millis(u64::from(*timeout_ms)),
                _ => Duration::ZERO,
            };
        self.schedule(timeout, Event::Timeout { req });
        let faults = &self.scenario.faults;
        match self.net.transmit(&mut self.rng, faults, self.faults_on, self.now, client, bookie, true) {
            Fate::Deliver(times) => {
                for at in times {
                    let request = request.clone();
                    self.schedule_at(at, Event::Request { bookie, client, req, request });
                }
            }
            Fate::Reset(at) => self.schedule_at(at, Event::Reset { client, bookie }),
            Fate::Vanish => {}
        }
    }

    /// `message` as it arrives: framed with `encode`, read back with `decode` (WD4).
    fn over_the_wire<T: std::fmt::Debug>(
        &mut self,
        message: T,
        id: u64,
        encode: fn(&T, u64, &mut bytes::BytesMut),
        decode: Decode<T>,
    ) -> T {
        let mut frame = bytes::BytesMut::new();
        encode(&message, id, &mut frame);
        match decode(&mut frame, &dlog_protocol::Limits::default()) {
            Ok(Some((decoded_id, decoded))) if decoded_id == id && frame.is_empty() => decoded,
            other => {
                self.violation(format!("WD4: the codec does not carry {message:?}: {other:?}"));
                message
            }
        }
    }

    /// A bookie answers request `req` of `client`, framed by the wire codec (WD4).
    pub(crate) fn respond(&mut self, bookie: usize, client: usize, req: u64, response: Response) {
        let response =
            self.over_the_wire(response, req, dlog_protocol::encode_response, dlog_protocol::decode_response);
        let faults = &self.scenario.faults;
        match self.net.transmit(&mut self.rng, faults, self.faults_on, self.now, client, bookie, false) {
            Fate::Deliver(times) => {
                for at in times {
                    let response = response.clone();
                    self.schedule_at(at, Event::Response { client, bookie, req, response });
                }
            }
            Fate::Reset(at) => self.schedule_at(at, Event::Reset { client, bookie }),
            Fate::Vanish => {}
        }
    }

    /// A metadata call: applied when it reaches the store.
    pub(crate) fn meta(&mut self, (client, generation): (usize, u64), op: MetaOp) {
        let max = self.scenario.faults.meta_delay_max.as_millis() as u64;
        let after = self.between_ms(0, max.max(1));
        self.schedule(after, Event::Meta { client, generation, op });
    }

    /// Takes the pending request `req`: its client, bookie and tag.
    fn take_pending(&mut self, req: u64) -> Option<Pending> {
        self.pending.remove(&req)
    }

    /// Every pending request of `client` to `bookie`.
    fn take_connection(&mut self, client: usize, bookie: usize) -> Vec<(u64, Pending)> {
        let reqs: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.client == client && p.bookie == bookie)
            .map(|(r, _)| *r)
            .collect();
        reqs.into_iter().filter_map(|r| self.pending.remove(&r).map(|p| (r, p))).collect()
    }
}

/// A transport answer for a client.
pub(crate) struct Answer {
    pub(crate) client: usize,
    pub(crate) generation: u64,
    pub(crate) bookie: usize,
    pub(crate) tag: u64,
    pub(crate) result: Result<Response, TransportFailure>,
}

impl Ctx {
    /// The transport's part of a network event: the answers it makes (WD2).
    pub(crate) fn transport(&mut self, event: &Event) -> Vec<Answer> {
        let answers = self.transport_answers(event);
        for a in &answers {
            if self.trace == Some(a.client) {
                eprintln!(
                    "{:?} client {} <- bookie {} tag {:#x}: {:?}",
                    self.now, a.client, a.bookie, a.tag, a.result
                );
            }
        }
        answers
    }

    fn transport_answers(&mut self, event: &Event) -> Vec<Answer> {
        match event {
            Event::Response { client, bookie, req, response } => {
                let Some(p) = self.take_pending(*req) else { return Vec::new() };
                debug_assert_eq!((p.client, p.bookie), (*client, *bookie));
                let stale = self.scenario.faults.p_stale_answer;
                if self.fault(stale) {
                    self.stats.stale_answers += 1;
                    let after = self.between_ms(0, 300);
                    let stale = Event::Stale {
                        client: p.client,
                        generation: p.generation,
                        bookie: p.bookie,
                        tag: p.tag,
                        response: response.clone(),
                    };
                    self.schedule(after, stale);
                }
                vec![Answer {
                    client: p.client,
                    generation: p.generation,
                    bookie: p.bookie,
                    tag: p.tag,
                    result: Ok(response.clone()),
                }]
            }
            Event::Stale { client, generation, bookie, tag, response } => vec![Answer {
                client: *client,
                generation: *generation,
                bookie: *bookie,
                tag: *tag,
                result: Ok(response.clone()),
            }],
            Event::Timeout { req } => match self.take_pending(*req) {
                Some(p) => {
                    self.stats.timeouts += 1;
                    vec![Answer {
                        client: p.client,
                        generation: p.generation,
                        bookie: p.bookie,
                        tag: p.tag,
                        result: Err(TransportFailure::Timeout),
                    }]
                }
                None => Vec::new(),
            },
            Event::Reset { client, bookie } => self
                .take_connection(*client, *bookie)
                .into_iter()
                .map(|(_, p)| Answer {
                    client: p.client,
                    generation: p.generation,
                    bookie: p.bookie,
                    tag: p.tag,
                    result: Err(TransportFailure::Disconnected),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Plans the fault window's events (crashes, partitions, swizzles) and the heal.
    pub(crate) fn plan_faults(&mut self) {
        let end = self.scenario.faults_end;
        let end_ms = end.as_millis() as u64;
        for _ in 0..self.scenario.faults.crashes {
            let at = self.between_ms(0, end_ms);
            let bookie = self.rng.random_range(0..self.scenario.bookies);
            let restart_after = self.between_ms(5, 3000);
            if self.rng.random_bool(0.5) {
                self.schedule_at(
                    at,
                    Event::Crash { bookie, restart_after: Some(restart_after), planned: true },
                );
            } else {
                self.schedule_at(at, Event::ArmCrash { bookie, restart_after });
            }
        }
        if self.scenario.faults.partitions {
            let at = self.between_ms(0, end_ms / 2);
            self.schedule_at(at, Event::Partition);
        }
        if self.scenario.faults.clogging {
            let at = self.between_ms(0, end_ms / 2);
            self.schedule_at(at, Event::Swizzle);
        }
        self.schedule_at(end, Event::Heal);
    }

    /// Cuts a random set of clients from a random set of bookies for a while.
    pub(crate) fn partition(&mut self, clients: usize) {
        if !self.faults_on {
            return;
        }
        let bookies: Vec<usize> = (0..self.scenario.bookies).filter(|_| self.rng.random_bool(0.4)).collect();
        let cut: Vec<usize> = (0..clients).filter(|_| self.rng.random_bool(0.5)).collect();
        let until = self.now + self.between_ms(50, 3000);
        self.net.partition(&cut, &bookies, until);
        let next = self.between_ms(200, 3000);
        self.schedule(next, Event::Partition);
    }

    /// Swizzle-clogging: clog a random set of bookies one by one, then unclog them in another
    /// random order.
    pub(crate) fn swizzle(&mut self) {
        if !self.faults_on {
            return;
        }
        let mut bookies: Vec<usize> = (0..self.scenario.bookies).collect();
        bookies.shuffle(&mut self.rng);
        bookies.truncate(self.rng.random_range(1..=self.scenario.bookies));
        let step = self.between_ms(10, 300);
        let mut clog_at = Vec::new();
        let mut at = self.now;
        for bookie in &bookies {
            at += step;
            clog_at.push((*bookie, at));
        }
        at += self.between_ms(100, 2000);
        // Unclogged in another order: each bookie's clog lasts until its turn comes.
        clog_at.shuffle(&mut self.rng);
        for (bookie, from) in clog_at {
            at += step;
            self.schedule_at(from, Event::Clog { bookie, until: at });
        }
        let next = at - self.now + self.between_ms(500, 3000);
        self.schedule(next, Event::Swizzle);
    }
}
