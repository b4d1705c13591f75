//! `RecovererActor`: the real `Recovery` behind a simulated client shell: marks the segment
//! InRecovery, fences and recovers it through the simulated network, chooses replacements,
//! closes it on the simulated metadata, and starts over when the store fails the close.

use std::time::Duration;

use dlog_protocol::Response;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::recovery::{Recovery, RecoveryError, RecoveryOutput, RecoverySettings, RecoveryTag};
use dlog_replication::segment_writer::TransportFailure;
use rand::Rng;

use crate::meta::{Begin, MetaOp, MetaResult, replace_members};
use crate::world::{Ctx, Event, MASTER_KEY, SEGMENT};

/// One recoverer of the segment.
pub(crate) struct RecovererActor {
    id: usize,
    quorum: QuorumSizes,
    core: Option<Recovery<usize>>,
    /// Bumped at each start: answers meant for an earlier recovery are dropped.
    generation: u64,
    started: bool,
    done: bool,
    tick_at: Option<Duration>,
}

impl RecovererActor {
    pub(crate) fn new(id: usize, quorum: QuorumSizes) -> RecovererActor {
        RecovererActor { id, quorum, core: None, generation: 0, started: false, done: false, tick_at: None }
    }

    /// Ever started.
    pub(crate) fn was_started(&self) -> bool {
        self.started
    }

    /// Started and not finished.
    pub(crate) fn is_running(&self) -> bool {
        self.started && !self.done
    }

    /// For a stuck run's description.
    pub(crate) fn describe(&self) -> String {
        match &self.core {
            Some(core) => format!(
                "fence complete {} fenced LAC {:?} {:?} deadline {:?}",
                core.fence_complete(),
                core.fenced_last_add_confirmed(),
                core.stats(),
                core.next_deadline().is_some()
            ),
            None => "no core".into(),
        }
    }

    /// Begins (or begins again): InRecovery on the metadata first.
    pub(crate) fn start(&mut self, ctx: &mut Ctx) {
        if self.done {
            return;
        }
        self.started = true;
        self.core = None;
        self.generation += 1;
        ctx.stats.recoveries += 1;
        ctx.meta((self.id, self.generation), MetaOp::BeginRecovery);
    }

    fn retry_later(&mut self, ctx: &mut Ctx) {
        self.core = None;
        let after = ctx.between_ms(10, 300);
        ctx.schedule(after, Event::StartClient { client: self.id });
    }

    pub(crate) fn on_meta(&mut self, generation: u64, result: MetaResult, ctx: &mut Ctx) {
        if generation != self.generation {
            return;
        }
        match result {
            MetaResult::Begin(Ok(Begin::Closed(end))) => {
                self.done = true;
                ctx.history.recovered.push(end);
            }
            MetaResult::Begin(Ok(Begin::Recover(ensembles))) => {
                let settings = RecoverySettings {
                    window_entries: ctx.rng.random_range(1..=64),
                    retry_delay: Duration::from_millis(ctx.rng.random_range(5..100)),
                };
                match Recovery::new(SEGMENT, MASTER_KEY.clone(), self.quorum, ensembles, settings) {
                    Ok(mut core) => {
                        core.start(ctx.instant());
                        self.core = Some(core);
                    }
                    Err(error) => ctx.violation(format!("recovery refused the metadata: {error}")),
                }
            }
            MetaResult::Begin(Err(_)) => self.retry_later(ctx),
            MetaResult::Recovered(result) => {
                if let Some(core) = self.core.as_mut() {
                    core.on_closed(result);
                }
            }
            other => ctx.violation(format!("recoverer got a writer's metadata answer {other:?}")),
        }
        self.drain(ctx);
    }

    pub(crate) fn on_answer(
        &mut self,
        generation: u64,
        bookie: usize,
        tag: u64,
        result: Result<Response, TransportFailure>,
        ctx: &mut Ctx,
    ) {
        if generation != self.generation {
            return;
        }
        if let Some(core) = self.core.as_mut() {
            core.on_response(RecoveryTag::from_raw(tag), &bookie, result, ctx.instant());
        }
        self.drain(ctx);
    }

    pub(crate) fn on_replaced(&mut self, generation: u64, result: Result<Vec<usize>, String>, ctx: &mut Ctx) {
        if generation != self.generation {
            return;
        }
        if let Some(core) = self.core.as_mut() {
            core.on_replaced(result, ctx.instant());
        }
        self.drain(ctx);
    }

    pub(crate) fn on_tick(&mut self, ctx: &mut Ctx) {
        self.tick_at = None;
        if let Some(core) = self.core.as_mut() {
            core.on_tick(ctx.instant());
        }
        self.drain(ctx);
    }

    fn drain(&mut self, ctx: &mut Ctx) {
        let mut restart = false;
        if let Some(core) = self.core.as_mut() {
            while let Some(output) = core.poll_output() {
                match output {
                    RecoveryOutput::Send { bookie, tag, request } => {
                        ctx.send((self.id, self.generation), bookie, tag.raw(), request)
                    }
                    RecoveryOutput::CloseRequested(end) => {
                        // What this recovery found, whether or not its close wins (H4).
                        ctx.history.proposed.push((format!("recoverer {}", self.id), end));
                        let change = core.ensemble_change(&end);
                        ctx.meta((self.id, self.generation), MetaOp::CloseRecovered { end, change });
                    }
                    RecoveryOutput::ReplaceBookies { replace } => {
                        let current = core.last_add_ensemble().to_vec();
                        let replace: Vec<usize> = replace.iter().collect();
                        // As the real placement: every member replaced, or none (and the store
                        // may fail the lookup).
                        let new = replace_members(&current, &replace, &ctx.up, &mut ctx.rng);
                        let all = replace.iter().all(|i| new[*i] != current[*i]);
                        let failed = ctx.fault(ctx.scenario.faults.p_meta_fail);
                        let result =
                            if all && !failed { Ok(new) } else { Err("no bookie to replace with".into()) };
                        let after = ctx.between_ms(1, 20);
                        let generation = self.generation;
                        ctx.schedule(after, Event::Replaced { client: self.id, generation, result });
                    }
                    RecoveryOutput::Done(Ok(end)) => {
                        self.done = true;
                        ctx.stats.entries_recovered += core.stats().entries_recovered;
                        ctx.history.recovered.push(end);
                    }
                    RecoveryOutput::Done(Err(RecoveryError::Metadata(_))) => restart = true,
                    RecoveryOutput::Done(Err(error)) => ctx.violation(format!("recovery failed: {error}")),
                }
            }
        }
        if restart {
            self.retry_later(ctx);
        }
        let deadline = self.core.as_ref().and_then(Recovery::next_deadline);
        ctx.schedule_tick(self.id, deadline, &mut self.tick_at);
    }
}
