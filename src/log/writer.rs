//! `LogWriter`: the shell that drives a `WriterCore` for one log (writer_core.rs has the
//! rules). It holds the log's writer lock under a lease, creates the segments the core asks
//! for, adds the core's entries through the replication client, feeds the acknowledgements
//! back, seals and completes segments in the log's metadata, and resolves each `write`'s
//! future with its DLSN once its entry is durable at the ack quorum.
//!
//! Invariants (besides the core's WC1-WC5):
//! - LW1: `SegmentHandle::add` is called under the core's lock, in the order the core emits
//!   entries, so the entry ids the core assigned are the ones the segment gives.
//! - LW2: a write's future resolves only from its entry's ticket: Ok once the core says the
//!   ticket is acknowledged, else the core's error; dropping the future does not unwrite the
//!   record (it was taken at the call).
//! - LW3: losing the lock (the lease ended, a metadata update came back `Fenced`, a bookie
//!   answered `Fenced`) fails the writer: nothing more is acknowledged to it. A newer writer
//!   fences its segment before reading it, so nothing acknowledged to this one is lost.
//! - LW4: a segment that fails to seal (its close or its completion in the log) fails the
//!   writer: a segment left open would stop every reader at it while the writer went on.
//! - LW6: at most `pending_bytes_max` record bytes are written and not yet durable (a record
//!   alone always goes): a `write` past it is refused with `Backpressure`, and changes nothing;
//!   `ready` waits for room. The caller's memory, not the writer's, holds what waits.
//! - LW5: background tasks (timer, lease watcher, retention) hold the shell weakly and end with
//!   it or at `close`; the timer sleeps for the deadline it armed and is woken only for an
//!   earlier one.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_metadata::{AnyStore, LeaseId, LeaseKeeper, MetaError, MetadataStore};
use dlog_replication::client::{ReplicationClient, SegmentHandle};
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_writer::WriterError;
use tokio::sync::{Notify, mpsc, watch};

use super::dlsn::Dlsn;
use super::error::LogError;
use super::log_segments::{self, LogSegments};
use super::namespace::Inner;
use super::truncation::{self, Retention};
use super::writer_core::{CoreOutput, CoreSettings, TransmitPolicy, WriterCore};

/// A record to write: its payload and, optionally, its transaction id (by default the log's
/// last one plus one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The transaction id, above the log's last one; `None`: assigned.
    pub txid: Option<u64>,
    /// The payload.
    pub payload: Bytes,
}

impl Record {
    /// A record whose transaction id the writer assigns.
    pub fn new(payload: impl Into<Bytes>) -> Record {
        Record { txid: None, payload: payload.into() }
    }

    /// A record with transaction id `txid`.
    pub fn with_txid(txid: u64, payload: impl Into<Bytes>) -> Record {
        Record { txid: Some(txid), payload: payload.into() }
    }
}

/// A durable record: where it is and its transaction id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its position.
    pub dlsn: Dlsn,
    /// Its transaction id.
    pub txid: u64,
}

/// How a writer writes.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Bookies a segment is striped over. Default 3.
    pub ensemble_size: usize,
    /// Bookies each entry is written to. Default 3.
    pub write_quorum_size: usize,
    /// Acknowledgements an entry needs. Default 2.
    pub ack_quorum_size: usize,
    /// When entries go out (default: low latency, see `TransmitPolicy::default`).
    pub transmit: TransmitPolicy,
    /// A segment rolls after this many bytes. Default 256 MiB.
    pub roll_bytes: u64,
    /// A segment rolls when a record comes after it is this old. Default 2 h.
    pub roll_age: Duration,
    /// The largest record payload. Default 1 MiB − 4 KiB (must fit an entry).
    pub record_bytes_max: usize,
    /// The writer lock's lease ttl: a writer that dies leaves the log to the next one after at
    /// most this long (a live one is taken over at once when `take_over`). Default 10 s.
    pub lock_ttl: Duration,
    /// Take the log over from a writer that holds it (fencing it) instead of failing with
    /// `LockHeld`. Default true: the newest writer wins, safely.
    pub take_over: bool,
    /// Who this writer is, as shown to others (`LockHeld`, `dlog admin`). Default
    /// `<hostname>:<pid>`.
    pub owner: String,
    /// What the log keeps: the writer truncates older segments in the background. Default:
    /// everything (no bound).
    pub retention: Retention,
    /// How often retention looks. Default 60 s.
    pub retention_check_every: Duration,
    /// The most record bytes (payloads and record headers) written and not yet durable: a
    /// `write` beyond it is refused with `Backpressure` (LW6); `ready` waits for room. Default
    /// 256 MiB; `None`: no bound.
    pub pending_bytes_max: Option<u64>,
}

impl Default for WriterConfig {
    fn default() -> WriterConfig {
        WriterConfig {
            ensemble_size: 3,
            write_quorum_size: 3,
            ack_quorum_size: 2,
            transmit: TransmitPolicy::default(),
            roll_bytes: 256 << 20,
            roll_age: Duration::from_secs(2 * 3600),
            record_bytes_max: (1 << 20) - (4 << 10),
            lock_ttl: Duration::from_secs(10),
            take_over: true,
            owner: default_owner(),
            retention: Retention::default(),
            retention_check_every: Duration::from_secs(60),
            pending_bytes_max: Some(256 << 20),
        }
    }
}

fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

#[expect(clippy::disallowed_methods, reason = "the writer shell owns the clock")]
fn now() -> Instant {
    Instant::now()
}

/// A ticket's outcome, as its records' futures see it.
type Outcome = Option<Result<(), LogError>>;

struct State {
    core: WriterCore,
    handles: BTreeMap<u64, Arc<SegmentHandle>>,
    /// Per segment, the adds whose answers its driver task waits for, in entry order.
    drivers: BTreeMap<u64, mpsc::UnboundedSender<(u64, AddFuture)>>,
    /// Tickets not yet resolved, oldest first.
    tickets: VecDeque<Ticket>,
    /// Record bytes of the tickets not yet resolved (LW6).
    pending_bytes: u64,
    /// Seals in progress (a close waits for them; a failed one fails the core, LW4).
    seals: Vec<tokio::task::JoinHandle<()>>,
    /// The deadline the timer task sleeps for (LW5).
    armed: Option<Instant>,
}

/// A ticket waited for: its outcome channel and the record bytes written into it.
struct Ticket {
    ticket: u64,
    outcome: watch::Sender<Outcome>,
    bytes: u64,
}

type AddFuture = std::pin::Pin<Box<dyn Future<Output = Result<u64, WriterError>> + Send>>;

pub(crate) struct Shared {
    name: String,
    state: Mutex<State>,
    client: ReplicationClient<AnyStore>,
    store: Arc<AnyStore>,
    segments: tokio::sync::Mutex<LogSegments>,
    quorum: QuorumSizes,
    /// Wakes the timer task early (a nearer deadline).
    timer: Arc<Notify>,
    /// Wakes `ready` callers when tickets resolve (LW6).
    room: Notify,
    pending_bytes_max: Option<u64>,
    runtime: tokio::runtime::Handle,
    lease: LeaseId,
    /// `close` was called or the writer dropped: the lease's end is not a failure.
    released: AtomicBool,
    /// Dropped with the shell (or sent at `close`): the background tasks end (LW5).
    stop: watch::Sender<bool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The timer may be waiting for a deadline only this shell could set.
        self.timer.notify_one();
    }
}

/// The single writer of one log (see the module doc). `Send + Sync`: `write` may be called
/// from any thread; the order of calls is the order of records.
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A writer's settings, checked (before any lock is taken: a bad setting must not fence the
/// log's current writer).
pub(crate) struct CheckedConfig {
    quorum: QuorumSizes,
    settings: CoreSettings,
}

impl WriterConfig {
    pub(crate) fn check(&self, entry_bytes_max: usize) -> Result<CheckedConfig, LogError> {
        let quorum = QuorumSizes::new(self.ensemble_size, self.write_quorum_size, self.ack_quorum_size)
            .map_err(|e| LogError::Invalid(format!("quorum sizes: {e}")))?;
        let settings = CoreSettings {
            transmit: self.transmit,
            roll_bytes: self.roll_bytes,
            roll_age: self.roll_age,
            record_bytes_max: self.record_bytes_max,
            entry_bytes_max,
        };
        settings.validate().map_err(LogError::Invalid)?;
        if self.lock_ttl < Duration::from_millis(100) {
            return Err(LogError::Invalid(format!("lock_ttl {:?} is under 100 ms", self.lock_ttl)));
        }
        Ok(CheckedConfig { quorum, settings })
    }
}

impl LogWriter {
    /// Starts the writer's shell: `segments` holds the lock (taken, and every in-progress
    /// segment recovered), `lease` keeps it.
    pub(crate) fn start(
        ns: &Arc<Inner>,
        segments: LogSegments,
        lease: LeaseKeeper,
        checked: CheckedConfig,
        config: &WriterConfig,
    ) -> Result<LogWriter, LogError> {
        let meta = segments.meta();
        let core = WriterCore::new(checked.settings, meta.next_segment_seq, meta.next_txid.checked_sub(1))
            .map_err(LogError::Invalid)?;
        let name = format!("{}/{}", segments.namespace, segments.log);
        let log = segments.log.clone();
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            name,
            state: Mutex::new(State {
                core,
                handles: BTreeMap::new(),
                drivers: BTreeMap::new(),
                tickets: VecDeque::new(),
                pending_bytes: 0,
                seals: Vec::new(),
                armed: None,
            }),
            client: ns.client.clone(),
            store: ns.store.clone(),
            segments: tokio::sync::Mutex::new(segments),
            quorum: checked.quorum,
            timer: Arc::new(Notify::new()),
            room: Notify::new(),
            pending_bytes_max: config.pending_bytes_max,
            runtime: ns.runtime.clone(),
            lease: lease.id(),
            released: AtomicBool::new(false),
            stop,
        });
        let runtime = &ns.runtime;
        runtime.spawn(timer(Arc::downgrade(&shared), shared.timer.clone(), stopped.clone()));
        runtime.spawn(watch_lease(Arc::downgrade(&shared), lease, stopped.clone()));
        // Deletions an interrupted truncation left are finished in the background.
        runtime.spawn(truncation::delete_queued_quietly(Arc::downgrade(ns)));
        if !config.retention.is_unbounded() {
            let every = config.retention_check_every;
            runtime.spawn(retain(Arc::downgrade(ns), log, config.retention, every, stopped));
        }
        Ok(LogWriter { shared })
    }
    /// Writes `record` (WC1, WC2): the order of calls is the order of records. The future
    /// resolves with its DLSN once durable at the ack quorum (LW2), or with why not: a record
    /// refused at the call (`try_write`'s errors) resolves at once with the refusal.
    pub fn write(&self, record: Record) -> impl Future<Output = Result<Appended, LogError>> + Send + 'static {
        match self.try_write(record) {
            Ok(written) => futures_util::future::Either::Right(written),
            Err(refused) => futures_util::future::Either::Left(std::future::ready(Err(refused))),
        }
    }

    /// Writes `record` if the writer takes it now, and says so: `Err` when it was refused at
    /// the call and nothing changed (`RecordTooLarge`, `TxidNotIncreasing`, `TxidsExhausted`,
    /// `Backpressure`, or the error the writer already failed with); otherwise the future of its
    /// acknowledgement. A caller that must not write past a refused record (a log of lines)
    /// stops at the `Err`.
    pub fn try_write(
        &self,
        record: Record,
    ) -> Result<impl Future<Output = Result<Appended, LogError>> + Send + 'static, LogError> {
        let (appended, mut outcome) = {
            let mut state = self.shared.state();
            let bytes = (record.payload.len() + super::entry_codec::RECORD_HEADER_BYTES) as u64;
            // LW6: a record alone is always taken, so one larger than the bound still goes.
            if let Some(max) = self.shared.pending_bytes_max
                && state.pending_bytes > 0
                && state.pending_bytes + bytes > max
            {
                return Err(LogError::Backpressure { pending_bytes: state.pending_bytes, max });
            }
            let accepted = state.core.write(record.txid, &record.payload, now())?;
            let outcome = ticket(&mut state, accepted.ticket, bytes);
            pump(&self.shared, &mut state);
            (Appended { dlsn: accepted.dlsn, txid: accepted.txid }, outcome)
        };
        Ok(async move { wait(&mut outcome).await.map(|()| appended) })
    }

    /// Resolves once a record of `bytes` would be taken by `write` without `Backpressure`
    /// (LW6), or once the writer failed (the next `write` then says why).
    pub async fn ready(&self, bytes: usize) {
        let bytes = (bytes + super::entry_codec::RECORD_HEADER_BYTES) as u64;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let state = self.shared.state();
                let fits = self
                    .shared
                    .pending_bytes_max
                    .is_none_or(|max| state.pending_bytes == 0 || state.pending_bytes + bytes <= max);
                if fits || state.core.failure().is_some() {
                    return;
                }
            }
            room.await;
        }
    }

    /// Record bytes written and not yet durable.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.state().pending_bytes
    }

    /// Sends what is gathered now and waits until every record written before is durable.
    pub async fn flush(&self) -> Result<(), LogError> {
        let waiting = {
            let mut state = self.shared.state();
            let last = state.core.flush();
            let waiting = last.map(|t| ticket(&mut state, t, 0));
            pump(&self.shared, &mut state);
            match (waiting, state.core.failure()) {
                (_, Some(error)) => return Err(error.clone()),
                (w, None) => w,
            }
        };
        match waiting {
            Some(mut outcome) => wait(&mut outcome).await,
            None => Ok(()),
        }
    }

    /// Flushes, closes the segment (completed in the log's metadata) and gives the log up.
    pub async fn close(self) -> Result<(), LogError> {
        let waiting = {
            let mut state = self.shared.state();
            let last = state.core.close();
            let waiting = last.map(|t| ticket(&mut state, t, 0));
            pump(&self.shared, &mut state);
            waiting
        };
        let mut result = match waiting {
            Some(mut outcome) => wait(&mut outcome).await,
            None => Ok(()),
        };
        let seals = std::mem::take(&mut self.shared.state().seals);
        for seal in seals {
            let _ = seal.await;
        }
        // A seal that failed failed the core (LW4).
        if let Some(error) = self.shared.state().core.failure() {
            result = result.and(Err(error.clone()));
        }
        // Give the log up: the lock goes with its lease.
        if !self.shared.released.swap(true, Ordering::SeqCst) {
            let _ = self.shared.store.revoke(self.shared.lease).await;
        }
        self.shared.stop.send_replace(true);
        result
    }

    /// The last transaction id written (accepted, not necessarily durable yet).
    pub fn last_txid(&self) -> Option<u64> {
        self.shared.state().core.last_txid()
    }
}

impl Drop for LogWriter {
    /// A writer dropped without `close` leaves its segment open (the next writer recovers it)
    /// and ends its lease now, so the next writer need not wait for it.
    fn drop(&mut self) {
        if !self.shared.released.swap(true, Ordering::SeqCst) {
            let (store, lease) = (self.shared.store.clone(), self.shared.lease);
            self.shared.runtime.spawn(async move {
                let _ = store.revoke(lease).await;
            });
        }
        self.shared.stop.send_replace(true);
    }
}

/// The outcome channel of `ticket` (the newest or a new one: tickets come in order).
fn ticket(state: &mut State, ticket: u64, bytes: u64) -> watch::Receiver<Outcome> {
    state.pending_bytes += bytes;
    if let Some(last) = state.tickets.back_mut()
        && last.ticket == ticket
    {
        last.bytes += bytes;
        return last.outcome.subscribe();
    }
    let (outcome, rx) = watch::channel(None);
    state.tickets.push_back(Ticket { ticket, outcome, bytes });
    rx
}

async fn wait(outcome: &mut watch::Receiver<Outcome>) -> Result<(), LogError> {
    match outcome.wait_for(Option::is_some).await {
        Ok(done) => done.clone().unwrap_or(Err(LogError::Closed)),
        Err(_) => Err(LogError::Closed),
    }
}

/// Acts on everything the core has to say (under its lock: LW1).
fn pump(shared: &Arc<Shared>, state: &mut State) {
    while let Some(output) = state.core.poll_output() {
        match output {
            CoreOutput::OpenSegment { seq, first_txid } => {
                shared.runtime.spawn(open_segment(shared.clone(), seq, first_txid));
            }
            CoreOutput::Transmit { seq, entry_id, payload } => {
                let (Some(handle), Some(driver)) = (state.handles.get(&seq), state.drivers.get(&seq)) else {
                    state
                        .core
                        .on_failed(LogError::Internal(format!("entry for segment {seq}, which is not open")));
                    continue;
                };
                let add: AddFuture = Box::pin(handle.add(payload));
                let _ = driver.send((entry_id, add));
            }
            CoreOutput::SealSegment { seq, summary } => {
                // Its driver ends once the adds it holds are answered.
                state.drivers.remove(&seq);
                let handle = state.handles.remove(&seq);
                let shared = shared.clone();
                let seal = shared.runtime.clone().spawn(async move {
                    let sealed = async {
                        if let Some(handle) = handle {
                            let closed = handle.close().await;
                            closed.map_err(|error| write_error(&shared, seq, handle.id(), error))?;
                        }
                        shared.segments.lock().await.complete(seq, summary).await
                    };
                    // LW4: a segment left unsealed would stop every reader at it.
                    if let Err(error) = sealed.await {
                        tracing::warn!(log = %shared.name, seq, %error, "sealing a segment failed; the writer stops");
                        let mut state = shared.state();
                        state.core.on_failed(error);
                        pump(&shared, &mut state);
                    }
                });
                state.seals.retain(|s| !s.is_finished());
                state.seals.push(seal);
            }
            CoreOutput::Acked { through } => {
                while state.tickets.front().is_some_and(|t| t.ticket <= through) {
                    let done = state.tickets.pop_front().expect("front");
                    state.pending_bytes -= done.bytes;
                    done.outcome.send_replace(Some(Ok(())));
                }
                shared.room.notify_waiters();
            }
            CoreOutput::Failed { from, error } => {
                tracing::warn!(log = %shared.name, %error, "the writer failed");
                for t in state.tickets.drain(..) {
                    debug_assert!(t.ticket >= from, "tickets before {from} were acknowledged");
                    t.outcome.send_replace(Some(Err(error.clone())));
                }
                state.pending_bytes = 0;
                shared.room.notify_waiters();
                state.drivers.clear();
                state.handles.clear();
            }
        }
    }
    // LW5: the timer is woken only for a deadline before the one it sleeps for.
    if let Some(deadline) = state.core.next_deadline()
        && state.armed.is_none_or(|armed| deadline < armed)
    {
        state.armed = Some(deadline);
        shared.timer.notify_one();
    }
}

fn write_error(shared: &Shared, seq: u64, segment: u64, error: WriterError) -> LogError {
    match error {
        // Another writer's key on the segment: it is not this writer's any more.
        WriterError::Fenced | WriterError::WrongMasterKey => LogError::Fenced { log: shared.name.clone() },
        WriterError::Unauthorized(reason) => LogError::Unauthorized { reason },
        error => {
            tracing::debug!(seq, segment, %error, "segment write failed");
            LogError::Write { segment, error }
        }
    }
}

/// Creates segment `seq` and adds it to the log, then lets the core send to it.
async fn open_segment(shared: Arc<Shared>, seq: u64, first_txid: u64) {
    let opened = async {
        let mut segments = shared.segments.lock().await;
        let mut retry = log_segments::StoreRetry::new();
        let handle = loop {
            let (namespace, log) = (&segments.namespace, &segments.log);
            match log_segments::create_segment(&shared.client, shared.quorum, namespace, log, seq).await {
                Ok(handle) => break handle,
                // LS4 (a creation whose answer was lost leaves an orphan, traceable by its owner).
                Err(error) if retry.again(&error).await => {}
                Err(error) => return Err(error),
            }
        };
        match segments.add(seq, handle.id(), first_txid, &mut retry).await {
            Ok(()) => Ok(handle),
            Err(failed) => {
                let id = handle.id();
                drop(handle);
                if failed.maybe_listed {
                    // LS4: it may be listed: its metadata stays.
                    let error = &failed.error;
                    tracing::warn!(segment = id, %error, "a segment's addition to its log is in doubt; kept");
                } else {
                    // Not in the log's list, and no entry was sent to it: its metadata goes
                    // too, or it would be an orphan no one deletes.
                    log_segments::delete_unlisted(&shared.store, id).await;
                }
                Err(failed.error)
            }
        }
    }
    .await;
    let mut state = shared.state();
    match opened {
        Ok(handle) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let id = handle.id();
            state.handles.insert(seq, Arc::new(handle));
            state.drivers.insert(seq, tx);
            shared.runtime.spawn(drive_acks(Arc::downgrade(&shared), seq, id, rx));
            state.core.segment_ready(seq);
        }
        Err(error) => state.core.on_failed(error),
    }
    pump(&shared, &mut state);
}

/// Feeds one segment's add answers to the core, in entry order.
async fn drive_acks(
    shared: Weak<Shared>,
    seq: u64,
    segment: u64,
    mut adds: mpsc::UnboundedReceiver<(u64, AddFuture)>,
) {
    while let Some((entry_id, add)) = adds.recv().await {
        let result = add.await;
        let Some(shared) = shared.upgrade() else { return };
        let mut state = shared.state();
        match result {
            Ok(id) if id == entry_id => state.core.on_acked(seq, entry_id),
            Ok(id) => state.core.on_failed(LogError::Internal(format!(
                "segment {segment} gave entry id {id} to what the writer numbered {entry_id}"
            ))),
            Err(error) => {
                let error = write_error(&shared, seq, segment, error);
                state.core.on_failed(error);
            }
        }
        pump(&shared, &mut state);
    }
}

/// Transmits entries whose `max_delay` passed (LW5: it holds the shell only while it works,
/// sleeps for the deadline it armed, and ends with the shell).
async fn timer(shared: Weak<Shared>, wake: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
    loop {
        let deadline = {
            let Some(shared) = shared.upgrade() else { return };
            let mut state = shared.state();
            state.core.on_tick(now());
            pump(&shared, &mut state);
            state.armed = state.core.next_deadline();
            state.armed
        };
        tokio::select! {
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
            () = wake.notified() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Fails the writer when its lease may be lost (LW3); ends with the shell.
async fn watch_lease(shared: Weak<Shared>, mut lease: LeaseKeeper, mut stopped: watch::Receiver<bool>) {
    let error = tokio::select! {
        error = lease.lost() => error,
        _ = stopped.wait_for(|stop| *stop) => return,
    };
    let Some(shared) = shared.upgrade() else { return };
    if shared.released.load(Ordering::SeqCst) {
        return;
    }
    if !matches!(error, MetaError::LeaseExpired(_)) {
        tracing::warn!(log = %shared.name, %error, "writer lease may be lost");
    }
    let mut state = shared.state();
    state.core.on_failed(LogError::LockLost { log: shared.name.clone() });
    pump(&shared, &mut state);
}

/// Applies the writer's retention every `every` while the writer lives.
async fn retain(
    ns: Weak<Inner>,
    log: String,
    retention: Retention,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let Some(ns) = ns.upgrade() else { return };
        let applied = async {
            match truncation::retention_point(&ns, &log, retention).await? {
                Some(before) => truncation::truncate(&ns, &log, before).await,
                None => Ok(()),
            }
        };
        if let Err(error) = applied.await {
            tracing::warn!(%log, %error, "retention did not finish; it runs again later");
        }
    }
}
