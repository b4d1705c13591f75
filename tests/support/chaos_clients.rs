//! The clients of tests/chaos.rs, in this process on its tokio runtime, each on a `Namespace` of
//! its own (its own etcd connection and replication client): per log, a writer slot and a
//! tailing reader, both reporting to the `History` (chaos_history.rs).
//!
//! A slot is a task that owns the log's current writer generation and carries out what the
//! scheduler tells it: take the log over (a new generation opens the log while the current one
//! writes: the current one is fenced and must see only `Fenced` from then on), crash the
//! current one (its task aborted, its writer and namespace dropped with records in flight;
//! two recoverers then race the next generation on every segment left in progress), or stop
//! (drain and close, reopening until a writer closes cleanly). A generation that fails on its
//! own (the cluster too impaired) is replaced after a pause.
//!
//! Invariants:
//! - CL1: generation `g` writes records 0, 1, 2, ... of its own (`payload(log, g, seq)`), at most
//!   `WINDOW` unacknowledged, `PER_TICK` per `TICK`, and checks H4 on every outcome.
//! - CL2: no wait is unbounded: a writer that does not open within `OPEN_WAIT`, or a drain or
//!   close that does not finish within `DRAIN_WAIT`, is a violation (an availability bug).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dlog::log::{
    Appended, Dlsn, LogError, LogRecord, LogWriter, Namespace, NamespaceConfig, ReaderConfig, Record,
    StartPosition, WriterConfig,
};
use dlog_metadata::schema::LogSegmentState;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::chaos_history::{History, Seen, is_fenced, kind, payload};
use crate::process::now;

/// Records a generation writes per tick, its tick, and the most it leaves unacknowledged.
const PER_TICK: usize = 3;
const TICK: Duration = Duration::from_millis(10);
const WINDOW: usize = 256;
/// Writes a superseded writer makes after its successor opened the log (all must fail
/// `Fenced`).
const AFTER_FENCE_WRITES: u64 = 20;
/// Segments roll at this size: a generation writes several.
const ROLL_BYTES: u64 = 512 << 10;
/// Longest a writer may take to open (attempts included) or to drain and close.
const OPEN_WAIT: Duration = Duration::from_secs(60);
const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// Longest one attempt (open, recover) may take before it is given up and retried.
const ATTEMPT_WAIT: Duration = Duration::from_secs(30);
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What the scheduler tells a slot.
pub(crate) enum SlotCommand {
    /// A new generation opens the log while the current one writes.
    Takeover,
    /// The current generation crashes; the next opens `reopen_after` later.
    Crash { reopen_after: Duration },
    /// Drain and close; answered once a writer closed cleanly.
    Stop(oneshot::Sender<()>),
}

/// A log's writer slot (see the module doc).
pub(crate) struct Slot {
    pub(crate) log: String,
    commands: mpsc::UnboundedSender<SlotCommand>,
    busy: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Slot {
    /// Starts the slot of `log` (its first generation opens in the background).
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        uri: &str,
        log: &str,
        history: Arc<History>,
    ) -> Slot {
        let (commands, rx) = mpsc::unbounded_channel();
        let busy = Arc::new(AtomicBool::new(true));
        let actor = Actor { log: log.to_owned(), uri: uri.to_owned(), history, next_gen: 0 };
        let task = runtime.spawn(run_slot(actor, rx, busy.clone()));
        Slot { log: log.to_owned(), commands, busy, task }
    }

    /// Whether it carries out a command (or opens its first writer): send no other then.
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    pub(crate) fn send(&self, command: SlotCommand) {
        self.busy.store(true, Ordering::Release);
        self.commands.send(command).unwrap_or_else(|_| panic!("slot {} ended", self.log));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A writer generation.
struct Generation {
    generation: u64,
    ns: Namespace,
    control: Arc<Control>,
    /// The write loop: whether it closed its writer cleanly (at a stop).
    task: JoinHandle<bool>,
}

#[derive(Default)]
struct Control {
    /// A successor is opening the log: a `Fenced` failure is waited out until it opened.
    takeover: AtomicBool,
    /// Its successor opened the log.
    superseded: AtomicBool,
    /// Drain and close.
    stop: AtomicBool,
}

struct Actor {
    log: String,
    uri: String,
    history: Arc<History>,
    next_gen: u64,
}

async fn run_slot(
    mut actor: Actor,
    mut commands: mpsc::UnboundedReceiver<SlotCommand>,
    busy: Arc<AtomicBool>,
) {
    let mut current = actor.open_generation().await;
    busy.store(false, Ordering::Release);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    SlotCommand::Takeover => {
                        current.control.takeover.store(true, Ordering::Release);
                        let next = actor.open_generation().await;
                        current.control.superseded.store(true, Ordering::Release);
                        actor.history.count(|c| c.fenced_writers += 1);
                        let old = std::mem::replace(&mut current, next);
                        tokio::spawn(old.finish(actor.history.clone(), actor.log.clone()));
                    }
                    SlotCommand::Crash { reopen_after } => {
                        current.task.abort();
                        let _ = (&mut current.task).await;
                        drop(current.ns);
                        let (uri, log) = (actor.uri.clone(), actor.log.clone());
                        tokio::spawn(race_recoverers(uri, log, actor.history.clone()));
                        tokio::time::sleep(reopen_after).await;
                        current = actor.open_generation().await;
                    }
                    SlotCommand::Stop(reply) => {
                        actor.stop(current).await;
                        let _ = reply.send(());
                        return;
                    }
                }
                busy.store(false, Ordering::Release);
            }
            // The writer failed on its own (counted by its loop): the next one takes over.
            _ = &mut current.task => {
                busy.store(true, Ordering::Release);
                tokio::time::sleep(RETRY_PAUSE).await;
                current = actor.open_generation().await;
                busy.store(false, Ordering::Release);
            }
        }
    }
}

impl Generation {
    /// Waits for a superseded generation's loop to end (its writes after the fence made).
    async fn finish(self, history: Arc<History>, log: String) {
        if tokio::time::timeout(DRAIN_WAIT, self.task).await.is_err() {
            history.violation(format!(
                "{log}: superseded generation {} did not end in {DRAIN_WAIT:?}",
                self.generation
            ));
        }
        self.ns.shutdown().await;
    }
}

fn namespace_config(log: &str, generation: u64) -> NamespaceConfig {
    let writer = WriterConfig {
        roll_bytes: ROLL_BYTES,
        owner: format!("chaos-{log}-{generation}"),
        ..WriterConfig::default()
    };
    NamespaceConfig { writer, ..NamespaceConfig::default() }
}

impl Actor {
    /// Opens the next generation's writer (taking the log over), retrying until it opens
    /// (CL2), and starts its write loop.
    async fn open_generation(&mut self) -> Generation {
        let generation = self.next_gen;
        self.next_gen += 1;
        let started = now();
        let mut late = false;
        loop {
            let attempt = async {
                let ns = Namespace::open_with(&self.uri, namespace_config(&self.log, generation)).await?;
                let writer = ns.open_writer(&self.log).await?;
                Ok::<_, LogError>((ns, writer))
            };
            let failure = match tokio::time::timeout(ATTEMPT_WAIT, attempt).await {
                Ok(Ok((ns, writer))) => {
                    let control = Arc::new(Control::default());
                    let task = tokio::spawn(write_loop(
                        self.log.clone(),
                        generation,
                        writer,
                        control.clone(),
                        self.history.clone(),
                    ));
                    self.history.count(|c| c.generations += 1);
                    return Generation { generation, ns, control, task };
                }
                Ok(Err(e)) => kind(&e),
                Err(_) => "timed out".to_owned(),
            };
            self.history.count(|c| *c.open_failures.entry(failure).or_default() += 1);
            if !late && started.elapsed() > OPEN_WAIT {
                late = true;
                self.history
                    .violation(format!("{}: generation {generation} not open after {OPEN_WAIT:?}", self.log));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Drains and closes the current generation; when it does not close cleanly (it failed),
    /// opens another (which recovers what it left) and closes that, until one does.
    async fn stop(&mut self, mut current: Generation) {
        loop {
            current.control.stop.store(true, Ordering::Release);
            let closed = match tokio::time::timeout(DRAIN_WAIT, &mut current.task).await {
                Ok(closed) => closed.unwrap_or(false),
                Err(_) => {
                    let generation = current.generation;
                    self.history.violation(format!(
                        "{}: generation {generation} did not close in {DRAIN_WAIT:?}",
                        self.log
                    ));
                    current.task.abort();
                    false
                }
            };
            current.ns.shutdown().await;
            if closed {
                return;
            }
            current = self.open_generation().await;
        }
    }
}

type Outcome = (u64, bool, Result<Appended, LogError>);

/// Writes records of generation `generation` (CL1) until it fails, is superseded (then makes its
/// `AFTER_FENCE_WRITES`) or is told to stop (then drains and closes); whether it closed cleanly.
async fn write_loop(
    log: String,
    generation: u64,
    writer: LogWriter,
    control: Arc<Control>,
    history: Arc<History>,
) -> bool {
    let mut in_flight: FuturesOrdered<BoxFuture<'static, Outcome>> = FuturesOrdered::new();
    let mut next_seq = 0u64;
    let mut last: Option<Appended> = None;
    let mut failed: Option<LogError> = None;
    let mut after_fence = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let violation = |what: String| history.violation(format!("H4 {log} generation {generation}: {what}"));
    loop {
        let superseded = control.superseded.load(Ordering::Acquire);
        let stopping = control.stop.load(Ordering::Acquire);
        let may_write =
            if superseded { after_fence < AFTER_FENCE_WRITES } else { !stopping && failed.is_none() };
        // Fenced by the successor opening now: its writes after the fence are still to make.
        let awaits_successor =
            !superseded && control.takeover.load(Ordering::Acquire) && failed.as_ref().is_some_and(is_fenced);
        if !may_write && in_flight.is_empty() && !awaits_successor {
            break;
        }
        tokio::select! {
            Some((seq, after, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(at) => {
                    if let Some(e) = &failed {
                        violation(format!("record {seq} acknowledged at {} after a failure ({e})", at.dlsn));
                    }
                    if after {
                        violation(format!("record {seq}, written after the successor opened, acknowledged"));
                    }
                    if last.is_some_and(|l| at.dlsn <= l.dlsn || at.txid <= l.txid) {
                        violation(format!("record {seq} acknowledged at {at:?} after {last:?}"));
                    }
                    last = Some(at);
                    history.acked(&log, generation, seq, at);
                }
                Err(e) => {
                    if is_fenced(&e) {
                        history.count(|c| {
                            c.fenced_writes += 1;
                            c.after_fence_writes += u64::from(after);
                        });
                    }
                    // Failures are sticky: the first one says why every later write failed.
                    // A write made after the successor opened fails Fenced unless the writer
                    // had failed for another reason before it.
                    let first_fenced = failed.as_ref().is_none_or(is_fenced);
                    if after && first_fenced && !is_fenced(&e) {
                        violation(format!("record {seq}, written after the successor opened, failed {e:?}"));
                    }
                    if failed.is_none() {
                        failed = Some(e);
                    }
                }
            },
            _ = tick.tick() => {
                if may_write {
                    let n = if superseded { 1 } else { PER_TICK.min(WINDOW.saturating_sub(in_flight.len())) };
                    for _ in 0..n {
                        let seq = next_seq;
                        next_seq += 1;
                        after_fence += u64::from(superseded);
                        history.written(&log, generation, seq);
                        let write = writer.write(Record::new(payload(&log, generation, seq)));
                        in_flight.push_back(async move { (seq, superseded, write.await) }.boxed());
                    }
                }
            }
        }
    }
    if control.superseded.load(Ordering::Acquire) {
        return false;
    }
    if let Some(e) = failed {
        history.count(|c| *c.writer_failures.entry(kind(&e)).or_default() += 1);
        return false;
    }
    match tokio::time::timeout(DRAIN_WAIT, writer.close()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            history.count(|c| *c.writer_failures.entry(format!("close: {}", kind(&e))).or_default() += 1);
            false
        }
        Err(_) => {
            history.violation(format!(
                "{log}: generation {generation}'s close did not finish in {DRAIN_WAIT:?}"
            ));
            false
        }
    }
}

/// After a crash: two recoverers race the next writer on each segment of `log` left in
/// progress; each end they find goes to the history (H5 is checked after the run).
async fn race_recoverers(uri: String, log: String, history: Arc<History>) {
    let started = now();
    let segments = loop {
        let listed = async {
            let ns = Namespace::open(&uri).await?;
            let info = ns.log_info(&log).await?;
            Ok::<_, LogError>((ns, info))
        };
        match tokio::time::timeout(ATTEMPT_WAIT, listed).await {
            Ok(Ok((ns, info))) => {
                let open: Vec<u64> = info
                    .segments
                    .iter()
                    .filter(|s| s.state == LogSegmentState::InProgress)
                    .map(|s| s.segment_id)
                    .collect();
                break (ns, open);
            }
            _ if started.elapsed() > OPEN_WAIT => return,
            _ => tokio::time::sleep(RETRY_PAUSE).await,
        }
    };
    let (ns, open) = segments;
    let recoveries: Vec<_> = open
        .iter()
        .flat_map(|&segment| [segment, segment])
        .map(|segment| {
            let (client, history) = (ns.replication().clone(), history.clone());
            tokio::spawn(async move {
                let started = now();
                while started.elapsed() < OPEN_WAIT {
                    let recovered = async {
                        let meta = client.segment(segment).await?;
                        client.recover_segment(segment, meta.master_key).await
                    };
                    match tokio::time::timeout(ATTEMPT_WAIT, recovered).await {
                        Ok(Ok(end)) => return history.recovered(segment, end),
                        Ok(Err(e)) => history.count(|c| {
                            *c.recovery_failures
                                .entry(format!("{e:?}").chars().take(60).collect())
                                .or_default() += 1;
                        }),
                        Err(_) => history
                            .count(|c| *c.recovery_failures.entry("timed out".into()).or_default() += 1),
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                history.violation(format!("H5: segment {segment} not recovered in {OPEN_WAIT:?}"));
            })
        })
        .collect();
    for recovery in recoveries {
        let _ = recovery.await;
    }
    ns.shutdown().await;
}

/// Starts the tailing reader of `log`: from the head, reopened where it was after an error,
/// until `stop` says true. Checks H3 as records come (the rest after the run).
pub(crate) fn spawn_reader(
    runtime: &tokio::runtime::Handle,
    uri: &str,
    log: &str,
    history: Arc<History>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    runtime.spawn(tail(uri.to_owned(), log.to_owned(), history, stop))
}

async fn tail(uri: String, log: String, history: Arc<History>, mut stop: watch::Receiver<bool>) {
    let ns = loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            opened = Namespace::open(&uri) => match opened {
                Ok(ns) => break ns,
                Err(e) => {
                    let kind = format!("namespace: {}", kind(&e));
                    history.count(|c| *c.reader_errors.entry(kind).or_default() += 1);
                }
            },
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    let mut from = StartPosition::Head;
    let mut last: Option<Seen> = None;
    let mut position = Dlsn::HEAD;
    'reopen: loop {
        let opened = tokio::select! {
            _ = stop.wait_for(|s| *s) => break 'reopen,
            opened = ns.open_reader(&log, from) => opened,
        };
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(e) => {
                history.count(|c| *c.reader_errors.entry(format!("open: {}", kind(&e))).or_default() += 1);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.wait_for(|s| *s) => break 'reopen,
                next = reader.next() => next,
            };
            match next {
                Ok(Some(record)) => {
                    if let Some(seen) = history.seen(&log, &record, last.as_ref()) {
                        last = Some(seen);
                    }
                    let after = reader.position();
                    if after < position || after <= record.dlsn {
                        history.violation(format!(
                            "H3 {log}: the reader's position moved from {position} to {after} (record at {})",
                            record.dlsn
                        ));
                    }
                    position = after;
                }
                Ok(None) => {
                    history.violation(format!("H3 {log}: the tailing reader ended at {position}"));
                    break 'reopen;
                }
                Err(e) => {
                    history.count(|c| *c.reader_errors.entry(kind(&e)).or_default() += 1);
                    from = StartPosition::Dlsn(reader.position());
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue 'reopen;
                }
            }
        }
    }
    ns.shutdown().await;
}

/// Log `log` from its head to its tail, read by a new reader (each record within `wait`).
pub(crate) async fn read_all(uri: &str, log: &str, wait: Duration) -> Result<Vec<LogRecord>, String> {
    let ns = Namespace::open(uri).await.map_err(|e| e.to_string())?;
    let read = async {
        let config = ReaderConfig { stop_at_tail: true };
        let mut reader =
            ns.open_reader_with(log, StartPosition::Head, config).await.map_err(|e| e.to_string())?;
        let mut records = Vec::new();
        loop {
            match tokio::time::timeout(wait, reader.next()).await {
                Ok(Ok(Some(record))) => records.push(record),
                Ok(Ok(None)) => return Ok(records),
                Ok(Err(e)) => return Err(format!("{log} after {} records: {e}", records.len())),
                Err(_) => return Err(format!("{log}: no record within {wait:?} after {}", records.len())),
            }
        }
    }
    .await;
    ns.shutdown().await;
    read
}
