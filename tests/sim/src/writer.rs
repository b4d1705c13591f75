//! `WriterActor`: the real `SegmentWriter` behind a simulated client shell: adds at the
//! scenario's pace, sends its requests through the simulated network, performs its ensemble
//! changes and close on the simulated metadata, and records what it was told in the history.

use std::time::Duration;

use bytes::Bytes;
use dlog_protocol::Response;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::recovery::RecoveredEnd;
use dlog_replication::segment_writer::{
    Output, SegmentWriter, Tag, TagKind, TransportFailure, WriterError, WriterSettings,
};
use rand::Rng;

use crate::meta::{MetaOp, MetaResult};
use crate::world::{Ctx, Event, MASTER_KEY, SEGMENT};

/// The writer of the segment.
pub(crate) struct WriterActor {
    id: usize,
    core: SegmentWriter<usize>,
    total: u64,
    /// An add was refused for a full window: the next completion retries it.
    blocked: bool,
    /// The writer's close ended (`Output::Closed`).
    closed: bool,
    tick_at: Option<Duration>,
}

impl WriterActor {
    pub(crate) fn new(id: usize, quorum: QuorumSizes, ensemble: Vec<usize>, ctx: &mut Ctx) -> WriterActor {
        let settings = WriterSettings {
            window_entries_max: ctx.scenario.window_entries,
            lac_flush_delay: Duration::from_millis(1),
            ensemble_change_retry: Duration::from_millis(ctx.rng.random_range(50..1000)),
            ensemble_change_attempts_max: ctx.rng.random_range(1..=10),
            ..WriterSettings::default()
        };
        let core = SegmentWriter::new(SEGMENT, MASTER_KEY.clone(), quorum, ensemble, settings, ctx.instant())
            .expect("valid writer settings");
        WriterActor { id, core, total: ctx.scenario.entries, blocked: false, closed: false, tick_at: None }
    }

    /// Nothing more will happen unless asked: closed, or failed.
    pub(crate) fn is_quiet(&self) -> bool {
        self.closed || self.core.failure().is_some()
    }

    /// The next add of the workload.
    pub(crate) fn on_add(&mut self, ctx: &mut Ctx) {
        let added = self.core.next_entry();
        if self.blocked || added >= self.total || self.core.failure().is_some() {
            return;
        }
        let len = ctx.rng.random_range(0..=ctx.scenario.payload_bytes_max);
        let mut payload = vec![0u8; len];
        ctx.rng.fill(&mut payload[..]);
        let payload = Bytes::from(payload);
        match self.core.add(payload.clone(), ctx.instant()) {
            Ok(entry) => {
                if entry as usize != ctx.history.payloads.len() {
                    ctx.violation(format!(
                        "writer gave entry id {entry} to add {}",
                        ctx.history.payloads.len()
                    ));
                }
                ctx.history.payloads.push(payload);
                if entry + 1 == self.total {
                    let _ = self.core.close(ctx.instant());
                } else {
                    let gap = ctx.add_gap();
                    ctx.schedule(gap, Event::Add);
                }
            }
            Err(WriterError::WindowFull) => self.blocked = true,
            Err(_) => {}
        }
        self.drain(ctx);
    }

    pub(crate) fn on_answer(
        &mut self,
        bookie: usize,
        tag: u64,
        result: Result<Response, TransportFailure>,
        ctx: &mut Ctx,
    ) {
        self.core.on_response(Tag::from_raw(tag), &bookie, result, ctx.instant());
        self.drain(ctx);
    }

    pub(crate) fn on_meta(&mut self, result: MetaResult, ctx: &mut Ctx) {
        match result {
            MetaResult::Ensemble(result) => self.core.on_ensemble_changed(result, ctx.instant()),
            MetaResult::Closed(result) => self.core.on_closed(result),
            other => ctx.violation(format!("writer got a recoverer's metadata answer {other:?}")),
        }
        self.drain(ctx);
    }

    pub(crate) fn on_tick(&mut self, ctx: &mut Ctx) {
        self.tick_at = None;
        self.core.on_tick(ctx.instant());
        self.drain(ctx);
    }

    fn drain(&mut self, ctx: &mut Ctx) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { bookie_index, tag, request } => {
                    let ensemble = match tag.kind() {
                        Some(TagKind::Add) => self.core.ensemble_of(tag.entry()),
                        _ => self.core.ensemble(),
                    };
                    let bookie = ensemble[bookie_index];
                    ctx.send((self.id, 0), bookie, tag.raw(), request);
                }
                Output::Completed { entry, result } => {
                    ctx.stats.fenced_adds += u64::from(result == Err(WriterError::Fenced));
                    ctx.history.completed(entry, result.is_ok());
                }
                Output::LastAddConfirmed(lac) => ctx.history.writer_lac(lac),
                Output::BookieFailed { .. } => ctx.stats.bookie_failures += 1,
                Output::ChangeEnsemble { first_entry, replace } => {
                    ctx.stats.ensemble_changes += 1;
                    let replace = replace.iter().collect();
                    ctx.meta((self.id, 0), MetaOp::ChangeEnsemble { first_entry, replace });
                }
                Output::CloseRequested { last_entry, length } => {
                    ctx.history.proposed.push(("writer".into(), RecoveredEnd { last_entry, length }));
                    ctx.meta((self.id, 0), MetaOp::CloseWritten { last_entry, length });
                }
                Output::Closed(result) => {
                    self.closed = true;
                    if result.is_ok() {
                        ctx.history.writer_closed = Some(self.core.last_add_confirmed());
                    }
                }
            }
        }
        // The window frees as entries complete and their last answers come in (W5).
        if self.blocked && self.core.held_entries() < ctx.scenario.window_entries {
            self.blocked = false;
            ctx.schedule(Duration::ZERO, Event::Add);
        }
        let deadline = self.core.next_deadline();
        ctx.schedule_tick(self.id, deadline, &mut self.tick_at);
    }
}
