//! `ReaderActor`: the real `SegmentReader` behind a simulated client shell: tails the segment
//! from entry 0, follows the metadata (ensemble changes, the close) as a watch would deliver it,
//! opens the segment again from the next entry when the core gives up (with the LAC unknown,
//! as the log reader does), consumes entries in bunches as an application would, and records
//! what it delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use dlog_protocol::Response;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_reader::{Output, ReaderSettings, SegmentEnd, SegmentReader, Tag};
use dlog_replication::segment_writer::TransportFailure;
use rand::Rng;

use crate::world::{Ctx, Event, SEGMENT};

/// Entries delivered before the consumer reports them consumed (the client's bunching).
const CONSUME_EVERY: u64 = 16;

/// One reader of the segment.
pub(crate) struct ReaderActor {
    id: usize,
    quorum: QuorumSizes,
    core: Option<SegmentReader<usize>>,
    /// Bumped at each start: answers meant for an earlier core are dropped.
    generation: u64,
    started: bool,
    /// The next entry to deliver.
    pub(crate) next: u64,
    /// Entries delivered and not yet reported consumed.
    unconsumed: u64,
    /// The current core's LAC (R3 holds per core).
    lac: Option<u64>,
    /// `Output::End` came.
    pub(crate) ended: bool,
    tick_at: Option<Duration>,
}

impl ReaderActor {
    pub(crate) fn new(id: usize, quorum: QuorumSizes) -> ReaderActor {
        ReaderActor {
            id,
            quorum,
            core: None,
            generation: 0,
            started: false,
            next: 0,
            unconsumed: 0,
            lac: None,
            ended: false,
            tick_at: None,
        }
    }

    /// Started, and not at the end (a reader waiting to open again is still reading).
    pub(crate) fn is_reading(&self) -> bool {
        self.started && !self.ended
    }

    /// Starts (or starts again from `next`) with the metadata as it is now.
    pub(crate) fn start(&mut self, ensembles: BTreeMap<u64, Vec<usize>>, end: SegmentEnd, ctx: &mut Ctx) {
        if self.ended {
            return;
        }
        self.started = true;
        self.generation += 1;
        self.lac = None;
        self.unconsumed = 0;
        let settings = ReaderSettings {
            speculative_timeout: Duration::from_millis(ctx.rng.random_range(5..100)),
            long_poll_timeout: Duration::from_millis(ctx.rng.random_range(100..3000)),
            read_ahead_entries: ctx.rng.random_range(8..=64),
            retry_backoff: Duration::from_millis(ctx.rng.random_range(5..100)),
            suspect_duration: Duration::from_millis(ctx.rng.random_range(10..2000)),
            ..ReaderSettings::default()
        };
        match SegmentReader::new(SEGMENT, self.quorum, ensembles, self.next, end, settings, ctx.instant()) {
            Ok(core) => self.core = Some(core),
            Err(error) => ctx.violation(format!("reader {} refused the metadata: {error}", self.id)),
        }
        self.drain(ctx);
    }

    pub(crate) fn on_metadata(
        &mut self,
        ensembles: BTreeMap<u64, Vec<usize>>,
        end: SegmentEnd,
        ctx: &mut Ctx,
    ) {
        let Some(core) = self.core.as_mut() else { return };
        if let Err(error) = core.on_metadata(ensembles, end, ctx.instant()) {
            ctx.violation(format!("reader {} refused a metadata update: {error}", self.id));
        }
        self.drain(ctx);
    }

    pub(crate) fn on_answer(
        &mut self,
        generation: u64,
        tag: u64,
        result: Result<Response, TransportFailure>,
        ctx: &mut Ctx,
    ) {
        if generation != self.generation {
            return;
        }
        if let Some(core) = self.core.as_mut() {
            core.on_response(Tag::from_raw(tag), result, ctx.instant());
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

    /// The application is done with what was delivered.
    pub(crate) fn on_consume(&mut self, generation: u64, ctx: &mut Ctx) {
        if generation != self.generation || self.unconsumed == 0 {
            return;
        }
        self.unconsumed = 0;
        if let Some(core) = self.core.as_mut() {
            core.consumed(self.next - 1, ctx.instant());
        }
        self.drain(ctx);
    }

    fn drain(&mut self, ctx: &mut Ctx) {
        let Some(core) = self.core.as_mut() else { return };
        let mut failed = false;
        let delivered_before = self.unconsumed;
        while let Some(output) = core.poll_output() {
            match output {
                Output::Send { bookie, tag, request } => {
                    ctx.send((self.id, self.generation), bookie, tag.raw(), request)
                }
                Output::Entry { entry, payload } => {
                    ctx.history.delivered(self.id, self.next, entry, &payload);
                    self.next = entry + 1;
                    self.unconsumed += 1;
                    if self.unconsumed >= CONSUME_EVERY {
                        self.unconsumed = 0;
                        core.consumed(entry, ctx.instant());
                    }
                }
                Output::BadReplica { entry, bookie } => {
                    ctx.violation(format!("reader {}: bookie {bookie} gave bad bytes for {entry}", self.id));
                }
                Output::LastAddConfirmed(lac) => {
                    ctx.history.reader_lac(self.id, self.lac, lac);
                    self.lac = Some(lac);
                }
                Output::End => self.ended = true,
                Output::Failed(_) => failed = true,
            }
        }
        if failed {
            // The log reader opens the segment again from the next entry.
            ctx.stats.reader_restarts += 1;
            self.core = None;
            let after = ctx.between_ms(10, 500);
            ctx.schedule(after, Event::StartClient { client: self.id });
            return;
        }
        if self.unconsumed > 0 && delivered_before == 0 {
            // The rest of a bunch is consumed once the application drains its queue.
            let after = ctx.between_ms(0, 5);
            ctx.schedule(after, Event::Consume { client: self.id, generation: self.generation });
        }
        let deadline = self.core.as_ref().and_then(SegmentReader::next_deadline);
        ctx.schedule_tick(self.id, deadline, &mut self.tick_at);
    }
}
