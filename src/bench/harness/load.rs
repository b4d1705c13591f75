//! The load: writers and readers on a namespace, through the run's timeline of phases.
//!
//! - Each writer has a sender thread (so an open loop paces itself with the OS's sleep, not a
//!   runtime timer tick that would add its own latency); each log has an acknowledgement task
//!   that awaits its records' futures in order and records them. A writer with several logs
//!   writes them in turn. Closed-loop phases keep `in_flight` records unacknowledged per writer
//!   (credits the acknowledgement tasks give back); open-loop phases send record `i` at its
//!   intended time and measure from it (`OpenLoop`), and count what was due and not sent by
//!   the phase's end as missed. A record the writer refuses for backpressure waits for room
//!   (`LogWriter::ready`) until the phase's end, its lateness measured as latency.
//! - Each record's payload starts with its stamp: its sequence number in its log, its send time
//!   (open loop: intended) on the run's clock, and its phase.
//! - Readers (per log) read from the tail from the start, or from the head at their phase
//!   (catch-up); each checks that its log's records come in order, each once. A catching-up
//!   reader measures its catch-up (until it has every record acknowledged so far); after that
//!   it counts as tailing. End to end is measured by tailing readers only.
//! - The settle (if any) ends once every record is acknowledged and every reader caught up.
//! - The end: senders stop at the timeline's end; acknowledgements are awaited (at most
//!   `DRAIN_MAX`, then what is missing counts as errors); readers read up to the last
//!   acknowledged record of their log (at most `DRAIN_MAX`, then what they had not read is
//!   reported as unread: lag, not loss).
//!
//! Accounting invariant: every record sent is acknowledged or counted as a write error.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use super::progress::{Progress, SeriesPoint};
use super::recorder::{Live, OpenLoop, PhaseStats, Recorder, Timeline};
use super::workload::{OpenRate, PhasePlan, RunConfig, SETTLE_MAX, STAMP_BYTES};
use crate::bench::log::{now, sleep};
use crate::log::{Appended, LogError, LogReader, LogWriter, Namespace, Record, StartPosition};

/// How long the end waits for acknowledgements, and then for readers, at most.
const DRAIN_MAX: Duration = Duration::from_secs(20);

/// The run's clock: ns since the timeline's 0.
#[derive(Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn ns(&self) -> u64 {
        now().saturating_duration_since(self.0).as_nanos() as u64
    }

    /// Sleeps the calling thread until `t_ns`.
    fn sleep_until(&self, t_ns: u64) {
        let at = self.at(t_ns);
        let n = now();
        if at > n {
            sleep(at - n);
        }
    }

    pub(crate) fn at(&self, t_ns: u64) -> Instant {
        self.0 + Duration::from_nanos(t_ns)
    }
}

/// What the writers, readers and the progress line share.
pub(crate) struct Control {
    pub(crate) clock: Clock,
    pub(crate) timeline: Timeline,
    pub(crate) plans: Vec<PhasePlan>,
    pub(crate) live: Live,
    /// Acknowledgements in each phase's window (for the peak an open phase offers a share of).
    window_acks: Vec<AtomicU64>,
    /// Each phase's open-loop rate, records/s over all writers, once known.
    rates: Vec<OnceLock<f64>>,
    /// Per log: one past the last sequence number acknowledged.
    acked_seq: Vec<AtomicU64>,
    /// Per phase: open-loop records due and not sent by its end (the sender fell behind, or
    /// the writer had no room).
    missed: Vec<AtomicU64>,
    /// Records written, all writers.
    sent: AtomicU64,
    /// ... acknowledged or failed.
    done: AtomicU64,
}

impl Control {
    /// Phase `p`'s open-loop rate over all writers, computing it on first use.
    fn rate(&self, p: usize) -> Option<f64> {
        let open = self.plans[p].open?;
        Some(*self.rates[p].get_or_init(|| match open {
            OpenRate::Fixed(r) => r,
            OpenRate::OfPeak(fraction) => {
                let before = (0..p)
                    .rev()
                    .find(|&q| self.plans[q].measured && self.plans[q].open.is_none() && !self.plans[q].idle)
                    .expect("an open phase after a peak");
                let length = (self.timeline.end(before) - self.timeline.start(before)) as f64 / 1e9;
                let peak = self.window_acks[before].load(Ordering::Relaxed) as f64 / length;
                (peak * fraction).max(1.0)
            }
        }))
    }

    /// Each phase's offered rate, records/s (`None`: closed loop).
    pub(crate) fn offered(&self) -> Vec<Option<f64>> {
        (0..self.plans.len()).map(|p| self.rates[p].get().copied()).collect()
    }
}

/// A record's stamp in the first `STAMP_BYTES` of its payload.
fn stamp(template: &Bytes, seq: u64, sent_ns: u64, phase: u8) -> Bytes {
    let mut b = BytesMut::from(&template[..]);
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    b[16] = phase;
    b.freeze()
}

/// `(seq, sent_ns, phase)` of a stamped payload.
fn unstamp(payload: &[u8]) -> Option<(u64, u64, usize)> {
    let head = payload.get(..STAMP_BYTES)?;
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    Some((word(0), word(8), usize::from(head[16])))
}

type AckFuture = Pin<Box<dyn Future<Output = Result<Appended, LogError>> + Send>>;

/// A record on its way to its acknowledgement task.
struct Pending {
    log: usize,
    seq: u64,
    phase: usize,
    sent_ns: u64,
    /// Took a closed-loop credit (to give back).
    credit: bool,
    ack: AckFuture,
}

/// One writer's sender: writes its logs in turn through the phases.
struct Sender {
    control: Arc<Control>,
    /// Its logs: (log index, writer, the log's acknowledgement queue).
    logs: Vec<(usize, Arc<LogWriter>, mpsc::UnboundedSender<Pending>)>,
    /// Which writer (0-based) of how many: its open-loop schedule is offset by its share.
    index: usize,
    writers: usize,
    template: Bytes,
    next_seq: Vec<u64>,
    turn: usize,
    credits: crossbeam_channel::Sender<()>,
    /// To give a credit back for a record that was not written after all.
    credits_back: crossbeam_channel::Receiver<()>,
    runtime: tokio::runtime::Handle,
}

/// What became of a record the sender tried to write.
enum Sent {
    /// Written (or refused: an error its acknowledgement task counts).
    Yes,
    /// Not written: the writer had no room before the phase ended.
    NoRoom,
    /// The writer failed: nothing more to send.
    WriterFailed,
}

impl Sender {
    fn run(mut self) {
        let c = self.control.clone();
        for p in 0..c.plans.len() {
            if c.plans[p].idle {
                continue;
            }
            // The phases after the settle start when it ends.
            while c.timeline.elastic().is_some_and(|e| e < p) && !c.timeline.settled() {
                sleep(Duration::from_millis(1));
            }
            let (start, end) = (c.timeline.start(p), c.timeline.end(p));
            if end <= start {
                continue;
            }
            c.clock.sleep_until(start);
            let alive = if c.plans[p].open.is_some() {
                self.open_phase(p, start, end)
            } else {
                self.closed_phase(p, end)
            };
            if !alive {
                return;
            }
        }
    }

    /// Sends on schedule until `end`; records due and not sent by then count as missed.
    fn open_phase(&mut self, p: usize, start: u64, end: u64) -> bool {
        let c = self.control.clone();
        let total = c.rate(p).expect("an open phase");
        // Writers take turns: writer w's records sit between the others', not on top of them.
        let offset = (self.index as f64 * 1e9 / total) as u64;
        let schedule = OpenLoop::new(start + offset, total / self.writers as f64);
        let mut i = 0u64;
        'phase: loop {
            let now = c.clock.ns();
            if now >= end {
                break;
            }
            let due = schedule.due(now);
            while i < due {
                if c.clock.ns() >= end {
                    break 'phase;
                }
                match self.send(p, schedule.intended_ns(i), false, end) {
                    Sent::Yes => i += 1,
                    Sent::NoRoom => break 'phase,
                    Sent::WriterFailed => return false,
                }
            }
            let next = schedule.intended_ns(i);
            if next >= end {
                break;
            }
            c.clock.sleep_until(next);
        }
        let missed = schedule.due(end - 1).saturating_sub(i);
        c.missed[p].fetch_add(missed, Ordering::Relaxed);
        true
    }

    /// Keeps `in_flight` records unacknowledged until `end`.
    fn closed_phase(&mut self, p: usize, end: u64) -> bool {
        let c = self.control.clone();
        let deadline = c.clock.at(end);
        loop {
            let wait = deadline.saturating_duration_since(now());
            if wait.is_zero() || self.credits.send_timeout((), wait).is_err() {
                return true;
            }
            match self.send(p, c.clock.ns(), true, end) {
                Sent::Yes => {}
                Sent::NoRoom => {
                    let _ = self.credits_back.try_recv();
                    return true;
                }
                Sent::WriterFailed => return false,
            }
        }
    }

    /// Writes the next record of the next log in turn, waiting for room until `end` if the
    /// writer pushes back.
    fn send(&mut self, phase: usize, sent_ns: u64, credit: bool, end: u64) -> Sent {
        let k = self.turn;
        let (log, writer, out) = &self.logs[k];
        let seq = self.next_seq[k];
        let payload = stamp(&self.template, seq, sent_ns, phase as u8);
        let len = payload.len();
        let mut outcome = writer.try_write(Record::new(payload.clone()));
        if let Err(LogError::Backpressure { .. }) = outcome {
            let wait = self.control.clock.at(end).saturating_duration_since(now());
            let room = self.runtime.block_on(async { tokio::time::timeout(wait, writer.ready(len)).await });
            if room.is_err() {
                return Sent::NoRoom;
            }
            outcome = writer.try_write(Record::new(payload));
        }
        self.turn = (self.turn + 1) % self.logs.len();
        let (ack, alive): (AckFuture, bool) = match outcome {
            Ok(ack) => {
                self.next_seq[k] += 1;
                (Box::pin(ack), true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a write was refused; this writer stops");
                (Box::pin(std::future::ready(Err(e))), false)
            }
        };
        self.control.sent.fetch_add(1, Ordering::Relaxed);
        let pending = Pending { log: *log, seq, phase, sent_ns, credit, ack };
        if out.send(pending).is_ok() && alive { Sent::Yes } else { Sent::WriterFailed }
    }
}

/// Awaits one log's acknowledgements in order; gives up (counting the rest as errors) when
/// `give_up` turns true.
async fn acknowledge(
    control: Arc<Control>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    credits: crossbeam_channel::Receiver<()>,
    record_size: u64,
    mut give_up: watch::Receiver<bool>,
) -> Recorder {
    let mut recorder = Recorder::new(&control.timeline);
    let mut stop = Box::pin(async move {
        let _ = give_up.wait_for(|g| *g).await;
    });
    let mut abandoned = false;
    while let Some(p) = rx.recv().await {
        recorder.sent(p.phase);
        if abandoned {
            recorder.write_error(p.phase);
        } else {
            match futures_util::future::select(p.ack, &mut stop).await {
                futures_util::future::Either::Left((Ok(_), _)) => {
                    let t = control.clock.ns();
                    let window = recorder.acked(p.phase, record_size, p.sent_ns, t, &control.live);
                    control.acked_seq[p.log].fetch_max(p.seq + 1, Ordering::Relaxed);
                    if let Some(w) = window {
                        control.window_acks[w].fetch_add(1, Ordering::Relaxed);
                    }
                }
                futures_util::future::Either::Left((Err(_), _)) => recorder.write_error(p.phase),
                futures_util::future::Either::Right(_) => {
                    recorder.write_error(p.phase);
                    abandoned = true;
                }
            }
        }
        // Out of flight: its credit goes back, and the settle may count it.
        if p.credit {
            let _ = credits.try_recv();
        }
        control.done.fetch_add(1, Ordering::Relaxed);
    }
    recorder.flush(&control.live);
    recorder
}

/// A catching-up reader's catch-up.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct CatchUp {
    /// Records it read until it had every record acknowledged so far.
    pub(crate) records: u64,
    /// Their payload bytes.
    pub(crate) bytes: u64,
    /// From its opening to then, s.
    pub(crate) seconds: f64,
}

/// One reader's outcome.
struct ReadOutcome {
    recorder: Recorder,
    catch_up: Option<CatchUp>,
}

/// Reads log `log` until stopped; the expected next sequence number is published in
/// `position`. A reader `catching_up` counts as tailing from the record that brings it to the
/// log's acknowledged end as it is then; end-to-end latency is recorded for tailing readers
/// only.
async fn read(
    control: Arc<Control>,
    mut reader: LogReader,
    log: usize,
    mut catching_up: bool,
    position: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> ReadOutcome {
    let mut recorder = Recorder::new(&control.timeline);
    let opened = control.clock.ns();
    let mut catch_up = None;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut expected = 0u64;
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            _ = stop.wait_for(|s| *s) => break,
        };
        let record = match next {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "a reader failed");
                break;
            }
        };
        let at = control.clock.ns();
        let Some((seq, sent_ns, phase)) = unstamp(&record.payload) else {
            recorder.read_error(0, 1);
            continue;
        };
        let phase = phase.min(control.plans.len() - 1);
        if seq < expected {
            // Twice, or out of order: one error each; the position does not go back.
            recorder.read_error(phase, 1);
            continue;
        }
        if seq > expected {
            // A gap: each record skipped is an error.
            recorder.read_error(phase, seq - expected);
        }
        expected = seq + 1;
        position.store(expected, Ordering::Relaxed);
        if catching_up {
            records += 1;
            bytes += record.payload.len() as u64;
            if expected < control.acked_seq[log].load(Ordering::Relaxed) {
                continue;
            }
            let seconds = (at - opened) as f64 / 1e9;
            catch_up = Some(CatchUp { records, bytes, seconds });
            catching_up = false;
            continue;
        }
        if control.plans[phase].measured {
            recorder.read(phase, sent_ns, at, &control.live);
        }
    }
    recorder.flush(&control.live);
    ReadOutcome { recorder, catch_up }
}

/// What the load measured.
pub(crate) struct LoadOutcome {
    /// Per phase, merged.
    pub(crate) phases: Vec<PhaseStats>,
    /// Each phase's offered rate (records/s; `None`: closed loop).
    pub(crate) offered: Vec<Option<f64>>,
    /// Each phase's length as run (the settle's is how long draining took), s.
    pub(crate) seconds: Vec<f64>,
    /// Each phase's open-loop records due and not sent by its end.
    pub(crate) missed: Vec<u64>,
    /// Acknowledged records readers had not read when the run stopped them (lag, not loss).
    pub(crate) unread: u64,
    /// The settle ended with the queues drained (false: it timed out).
    pub(crate) settled: bool,
    /// Each catching-up reader's catch-up (`None` for one that did not get there).
    pub(crate) catch_ups: Vec<Option<CatchUp>>,
}

/// The settle ends this long after the queues are seen drained (the senders poll for its end).
const SETTLE_LEAD: Duration = Duration::from_millis(5);

/// Lead time from the tailing readers' opening to the timeline's 0 (the senders start).
const LEAD: Duration = Duration::from_millis(50);

/// Runs the load of `config` on `ns`'s logs `logs` (created, empty; `writers[i]` is log `i`'s
/// writer) through the phases `plans`, the progress line shown when `show`.
pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    ns: &Namespace,
    config: &RunConfig,
    (logs, writers): (&[String], Vec<LogWriter>),
    plans: Vec<PhasePlan>,
    show: bool,
) -> Result<(LoadOutcome, Vec<SeriesPoint>)> {
    let handle = runtime.handle().clone();
    let writers: Vec<Arc<LogWriter>> = writers.into_iter().map(Arc::new).collect();
    let (give_up_tx, give_up) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    // Tailing readers open before anything is written.
    let mut readers = Vec::new();
    let open_readers = |from: StartPosition| -> Result<Vec<(usize, LogReader)>> {
        let mut opened = Vec::new();
        for (l, log) in logs.iter().enumerate() {
            for _ in 0..config.readers {
                let reader = runtime
                    .block_on(ns.open_reader(log, from))
                    .with_context(|| format!("reader of {log}"))?;
                opened.push((l, reader));
            }
        }
        Ok(opened)
    };
    let tail_readers =
        if !config.catchup && config.readers > 0 { open_readers(StartPosition::Tail)? } else { Vec::new() };
    let control = new_control(plans, logs.len(), LEAD);
    let control = &control;
    let reader_phase = control.plans.iter().position(|p| p.readers_start);
    let progress = Progress::start(control.clone(), show).context("the progress thread")?;
    let mut positions = Vec::new();
    let mut spawn_readers =
        |positions: &mut Vec<(usize, Arc<AtomicU64>)>, opened: Vec<(usize, LogReader)>, catching_up: bool| {
            for (l, reader) in opened {
                let position = Arc::new(AtomicU64::new(0));
                positions.push((l, position.clone()));
                let task = read(control.clone(), reader, l, catching_up, position, stop.clone());
                readers.push(runtime.spawn(task));
            }
        };
    spawn_readers(&mut positions, tail_readers, false);
    // Writers: sender threads and acknowledgement tasks.
    let mut senders = Vec::new();
    let mut acks = Vec::new();
    let template = Bytes::from(vec![0x5Au8; config.record_size]);
    for w in 0..config.writers {
        let (credits_tx, credits_rx) = crossbeam_channel::bounded(config.in_flight);
        // One acknowledgement task per log: a slow log does not hold up another's timing.
        let mut mine = Vec::new();
        for l in (w..logs.len()).step_by(config.writers) {
            let (out, rx) = mpsc::unbounded_channel();
            mine.push((l, writers[l].clone(), out));
            let record_size = config.record_size as u64;
            let task = acknowledge(control.clone(), rx, credits_rx.clone(), record_size, give_up.clone());
            acks.push(runtime.spawn(task));
        }
        let sender = Sender {
            control: control.clone(),
            next_seq: vec![0; mine.len()],
            logs: mine,
            index: w,
            writers: config.writers,
            template: template.clone(),
            turn: 0,
            credits: credits_tx,
            credits_back: credits_rx,
            runtime: handle.clone(),
        };
        senders.push(
            std::thread::Builder::new()
                .name(format!("dlog-bench-w{w}"))
                .spawn(move || sender.run())
                .context("sender thread")?,
        );
    }
    let mut settled = true;
    // The settle ends once every record written is acknowledged (or failed) and every reader
    // has read its log's acknowledged records, or at its planned end (`SETTLE_MAX`).
    if let Some(e) = control.timeline.elastic() {
        control.clock.sleep_until(control.timeline.start(e));
        let drained = || {
            control.sent.load(Ordering::Relaxed) == control.done.load(Ordering::Relaxed)
                && readers_caught_up(control, &positions)
        };
        while !drained() && control.clock.ns() < control.timeline.end(e) {
            sleep(Duration::from_millis(1));
        }
        settled = drained();
        if !settled {
            tracing::warn!(
                "the peak's queues did not drain within {SETTLE_MAX:?}: latency is measured on a busy system"
            );
        }
        // The rates of the phases after it are known now (the peak's window is closed), and
        // the end is a little ahead, so the senders are waiting when their first record is due.
        for p in e + 1..control.plans.len() {
            control.rate(p);
        }
        control.timeline.end_elastic(control.clock.ns() + SETTLE_LEAD.as_nanos() as u64);
    }
    // Catch-up readers open at their phase, from the head.
    if config.catchup {
        let p = reader_phase.context("a catch-up run has a phase whose readers start")?;
        control.clock.sleep_until(control.timeline.start(p));
        spawn_readers(&mut positions, open_readers(StartPosition::Head)?, true);
    }
    for s in senders {
        if s.join().is_err() {
            bail!("a sender thread panicked");
        }
    }
    // Acknowledgements: all of them, or give up after DRAIN_MAX.
    let give_up_at = now() + DRAIN_MAX;
    let mut recorders = Vec::new();
    runtime.block_on(async {
        let timer = tokio::time::sleep_until(give_up_at.into());
        tokio::pin!(timer);
        for task in &mut acks {
            tokio::select! {
                r = &mut *task => { recorders.push(r); }
                _ = &mut timer, if !*give_up_tx.borrow() => {
                    tracing::warn!("acknowledgements still missing after {DRAIN_MAX:?}: counted as errors");
                    let _ = give_up_tx.send(true);
                    recorders.push(task.await);
                }
            }
        }
    });
    // Readers: up to their log's last acknowledged record, or give up after DRAIN_MAX.
    let read_until = now() + DRAIN_MAX;
    while !readers_caught_up(control, &positions) && now() < read_until {
        sleep(Duration::from_millis(5));
    }
    let _ = stop_tx.send(true);
    let mut merged: Vec<PhaseStats> = (0..control.plans.len()).map(|_| PhaseStats::default()).collect();
    for r in recorders {
        let r = r.context("an acknowledgement task failed")?;
        for (into, from) in merged.iter_mut().zip(&r.phases) {
            into.merge(from);
        }
    }
    let mut catch_ups = Vec::new();
    let mut unread = 0;
    for (task, (l, position)) in readers.into_iter().zip(&positions) {
        let outcome = runtime.block_on(task).context("a reader task failed")?;
        for (into, from) in merged.iter_mut().zip(&outcome.recorder.phases) {
            into.merge(from);
        }
        // Not an error by itself (a reader may lag): reported as unread.
        let behind =
            control.acked_seq[*l].load(Ordering::Relaxed).saturating_sub(position.load(Ordering::Relaxed));
        if behind > 0 {
            tracing::warn!(behind, "a reader had not read every acknowledged record when the run stopped it");
            unread += behind;
        }
        if config.catchup {
            catch_ups.push(outcome.catch_up);
        }
    }
    // The writers close (their leases go now, and a log of a shared cluster can be deleted).
    for writer in writers {
        if let Ok(writer) = Arc::try_unwrap(writer) {
            let closed = runtime.block_on(async { tokio::time::timeout(DRAIN_MAX, writer.close()).await });
            if let Ok(Err(e)) | Err(e) = closed.map_err(|_| LogError::Closed) {
                tracing::warn!(error = %e, "a writer did not close cleanly");
            }
        }
    }
    let series = progress.finish();
    let t = &control.timeline;
    let seconds = (0..t.phases()).map(|p| (t.end(p) - t.start(p)) as f64 / 1e9).collect();
    let missed = control.missed.iter().map(|m| m.load(Ordering::Relaxed)).collect();
    let outcome = LoadOutcome {
        phases: merged,
        offered: control.offered(),
        seconds,
        missed,
        unread,
        settled,
        catch_ups,
    };
    Ok((outcome, series))
}

/// Whether every reader (log, position) has read its log's acknowledged records.
fn readers_caught_up(control: &Control, positions: &[(usize, Arc<AtomicU64>)]) -> bool {
    positions.iter().all(|(l, p)| p.load(Ordering::Relaxed) >= control.acked_seq[*l].load(Ordering::Relaxed))
}

/// The control of a run of `plans` starting `lead` from now, over `logs` logs.
fn new_control(plans: Vec<PhasePlan>, logs: usize, lead: Duration) -> Arc<Control> {
    let lengths: Vec<Duration> = plans.iter().map(|p| p.length).collect();
    let timeline = Timeline::new(&lengths, plans.iter().position(|p| p.idle));
    Arc::new(Control {
        clock: Clock(now() + lead),
        window_acks: (0..plans.len()).map(|_| AtomicU64::new(0)).collect(),
        rates: (0..plans.len()).map(|_| OnceLock::new()).collect(),
        acked_seq: (0..logs).map(|_| AtomicU64::new(0)).collect(),
        missed: (0..plans.len()).map(|_| AtomicU64::new(0)).collect(),
        sent: AtomicU64::new(0),
        done: AtomicU64::new(0),
        timeline,
        plans,
        live: Live::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accounting invariant on the paths that break it: records acknowledged, refused at
    /// the call, failed later, and never answered until the run gives up; each is
    /// acknowledged or an error, its credit goes back, and the settle's count sees it done.
    #[tokio::test]
    async fn every_record_is_acknowledged_or_an_error() {
        use crate::log::Dlsn;
        let plans = vec![PhasePlan::new("max", true, None, Duration::from_secs(60), false)];
        let control = new_control(plans, 1, Duration::ZERO);
        let (tx, rx) = mpsc::unbounded_channel();
        let (credits_tx, credits_rx) = crossbeam_channel::bounded(16);
        let (give_up_tx, give_up) = watch::channel(false);
        let task = tokio::spawn(acknowledge(control.clone(), rx, credits_rx, 100, give_up));
        let appended = |seq| Ok(Appended { dlsn: Dlsn::new(0, seq, 0), txid: seq });
        let acks: Vec<AckFuture> = vec![
            Box::pin(std::future::ready(appended(0))),
            Box::pin(std::future::ready(appended(1))),
            Box::pin(std::future::ready(Err(LogError::Backpressure { pending_bytes: 1, max: 1 }))),
            Box::pin(async { Err(LogError::Closed) }),
            Box::pin(std::future::pending()),
            Box::pin(std::future::ready(appended(5))),
        ];
        for (seq, ack) in acks.into_iter().enumerate() {
            credits_tx.send(()).unwrap();
            control.sent.fetch_add(1, Ordering::Relaxed);
            tx.send(Pending { log: 0, seq: seq as u64, phase: 0, sent_ns: 0, credit: true, ack }).unwrap();
        }
        drop(tx);
        // Record 4 is never answered: the drain gives up on it and on what comes after it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "waits for the unanswered record");
        give_up_tx.send(true).unwrap();
        let recorder = task.await.unwrap();
        let p = &recorder.phases[0];
        assert_eq!((p.sent, p.acked, p.write_errors), (6, 2, 4), "acked 0 and 1; 2 to 5 are errors");
        assert_eq!(p.sent, p.acked + p.write_errors);
        assert_eq!(p.acked_bytes, 200);
        assert_eq!(control.done.load(Ordering::Relaxed), control.sent.load(Ordering::Relaxed));
        assert_eq!(control.acked_seq[0].load(Ordering::Relaxed), 2);
        assert!(credits_tx.is_empty(), "every credit is back");
    }

    #[test]
    fn stamps_round_trip() {
        let template = Bytes::from(vec![7u8; 100]);
        let b = stamp(&template, 42, 123_456_789, 3);
        assert_eq!(b.len(), 100);
        assert_eq!(unstamp(&b), Some((42, 123_456_789, 3)));
        assert_eq!(&b[STAMP_BYTES..], &template[STAMP_BYTES..]);
        assert_eq!(unstamp(&b[..16]), None);
    }
}
