//! `ReaderActor`: the real `SegmentReader` behind a simulated client shell: tails the segment
//! from entry 0, follows the metadata (ensemble changes, the close) as a watch would deliver it,
//! starts again from the next entry when the core gives up, and records what it delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use dlog_protocol::Response;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_reader::{Output, ReaderSettings, SegmentEnd, SegmentReader, Tag};
use dlog_replication::segment_writer::TransportFailure;
use rand::Rng;

use crate::world::{Ctx, Event, SEGMENT};

/// One reader of the segment.
pub(crate) struct ReaderActor {
    id: usize,
    quorum: QuorumSizes,
    core: Option<SegmentReader<usize>>,
    /// The next entry to deliver.
    pub(crate) next: u64,
    lac: Option<u64>,
    /// `Output::End` came.
    pub(crate) ended: bool,
    tick_at: Option<Duration>,
}

impl ReaderActor {
    pub(crate) fn new(id: usize, quorum: QuorumSizes) -> ReaderActor {
        ReaderActor { id, quorum, core: None, next: 0, lac: None, ended: false, tick_at: None }
    }

    /// Started, and not at the end.
    pub(crate) fn is_reading(&self) -> bool {
        self.core.is_some() && !self.ended
    }

    /// Starts (or starts again from `next`) with the metadata as it is now.
    pub(crate) fn start(&mut self, ensembles: BTreeMap<u64, Vec<usize>>, end: SegmentEnd, ctx: &mut Ctx) {
        if self.ended {
            return;
        }
        let settings = ReaderSettings {
            speculative_timeout: Duration::from_millis(ctx.rng.random_range(5..100)),
            long_poll_timeout: Duration::from_millis(ctx.rng.random_range(100..3000)),
            read_ahead_entries: ctx.rng.random_range(8..=64),
            retry_backoff: Duration::from_millis(ctx.rng.random_range(5..100)),
            suspect_duration: Duration::from_millis(ctx.rng.random_range(10..2000)),
            ..ReaderSettings::default()
        };
        // Started again, the reader knows the LAC it learned before.
        let end = match end {
            SegmentEnd::Open { last_add_confirmed } => {
                SegmentEnd::Open { last_add_confirmed: last_add_confirmed.max(self.lac) }
            }
            closed => closed,
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

    pub(crate) fn on_answer(&mut self, tag: u64, result: Result<Response, TransportFailure>, ctx: &mut Ctx) {
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

    fn drain(&mut self, ctx: &mut Ctx) {
        let Some(core) = self.core.as_mut() else { return };
        let mut failed = false;
        loop {
            let mut consumed = None;
            while let Some(output) = core.poll_output() {
                match output {
                    Output::Send { bookie, tag, request } => ctx.send(self.id, bookie, tag.raw(), request),
                    Output::Entry { entry, payload } => {
                        ctx.history.delivered(self.id, self.next, entry, &payload);
                        self.next = entry + 1;
                        consumed = Some(entry);
                    }
                    Output::BadReplica { entry, bookie } => {
                        ctx.violation(format!(
                            "reader {}: bookie {bookie} gave bad bytes for {entry}",
                            self.id
                        ));
                    }
                    Output::LastAddConfirmed(lac) => {
                        ctx.history.reader_lac(self.id, self.lac, lac);
                        self.lac = Some(lac);
                    }
                    Output::End => self.ended = true,
                    Output::Failed(_) => failed = true,
                }
            }
            match consumed {
                Some(entry) => core.consumed(entry, ctx.instant()),
                None => break,
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
        let deadline = self.core.as_ref().and_then(SegmentReader::next_deadline);
        ctx.schedule_tick(self.id, deadline, &mut self.tick_at);
    }
}
