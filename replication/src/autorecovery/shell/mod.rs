//! The autorecovery shell: tokio tasks that run the auditor and the replication worker against
//! a metadata store and bookies. Thin: every decision is the cores' (auditor.rs, worker.rs);
//! this holds the lease, the clock, the watches, the listings and the requests.
//!
//! Owns: the lease both roles act under (granted again when lost), the supervisor task that
//! starts and stops the roles with it, the bookie client pool (reads and recovery ADDs), a
//! `ReplicationClient` (recovering open segments), and the counters.
//! Tasks: `audit::run` (election, registry watch, scans, marking), `replicate::run` (queue
//! watch, claims, copies, metadata compare-and-set, completion), `copy::copy_fragment`.

mod audit;
mod copy;
mod replicate;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use dlog_metadata::{LeaseKeeper, MetadataStore};
use tokio::sync::watch;

use crate::client::{ReplicationClient, ReplicationConfig, ReplicationError};
use crate::recovery::RecoveredEnd;
use crate::transport::{ClientPool, PoolError};

/// How autorecovery runs. `AutorecoveryConfig::new` gives the defaults.
#[derive(Clone, Debug)]
pub struct AutorecoveryConfig {
    /// Who this is in the auditor key and in claims (a bookie id, a host name); not empty.
    pub owner: String,
    /// The lease the auditor key and the claims are bound to: they vanish this long after
    /// this process stops keeping it alive. Default 10 s; at least 100 ms.
    pub lease_ttl: Duration,
    /// How long a bookie's registration must stay gone before it is lost (a restart within it
    /// cancels). Default 30 s.
    pub lost_bookie_grace: Duration,
    /// How long after a segment is queued its writer may still replace a lost bookie of its
    /// last ensemble itself, before the worker fences and closes the segment. Default 30 s.
    pub open_segment_grace: Duration,
    /// The auditor's full scan of `segments/` and the worker's poll of the queue (both also
    /// wake on changes). Default 60 s; more than zero.
    pub scan_interval: Duration,
    /// Run for the auditor election. Default true.
    pub auditor: bool,
    /// Run a replication worker. Default true.
    pub worker: bool,
    /// Entries being copied at once, per segment. Default 64; at least 1.
    pub copy_window: usize,
    /// Rounds over an entry's write set before it is called unreadable. Default 3; at least 1.
    pub read_rounds: usize,
    /// Recovery ADDs of one entry to the replacement before it is given up. Default 3; at
    /// least 1.
    pub add_attempts: usize,
    /// Pause between two rounds of reads or two ADD attempts. Default 100 ms.
    pub retry_delay: Duration,
    /// Pause before a segment that failed (or waits for its writer) is tried again. Default
    /// 5 s (BookKeeper's `rwRereplicateBackoffMs`).
    pub retry_backoff: Duration,
    /// Longest wait for `recover_segment` on an open segment. Default 120 s; more than zero.
    pub recovery_timeout: Duration,
    /// The bookie client (transport) and the recovery settings.
    pub replication: ReplicationConfig,
}

impl AutorecoveryConfig {
    /// The defaults, as `owner`.
    pub fn new(owner: impl Into<String>) -> AutorecoveryConfig {
        AutorecoveryConfig {
            owner: owner.into(),
            lease_ttl: Duration::from_secs(10),
            lost_bookie_grace: Duration::from_secs(30),
            open_segment_grace: Duration::from_secs(30),
            scan_interval: Duration::from_secs(60),
            auditor: true,
            worker: true,
            copy_window: 64,
            read_rounds: 3,
            add_attempts: 3,
            retry_delay: Duration::from_millis(100),
            retry_backoff: Duration::from_secs(5),
            recovery_timeout: Duration::from_secs(120),
            replication: ReplicationConfig::default(),
        }
    }

    /// Checks the bounds above.
    pub fn validate(&self) -> Result<(), AutorecoveryError> {
        let bad = |why: &str| Err(AutorecoveryError::Config(why.to_owned()));
        if self.owner.is_empty() {
            return bad("owner is empty");
        }
        if self.lease_ttl < Duration::from_millis(100) {
            return bad("lease_ttl is under 100 ms");
        }
        if self.scan_interval.is_zero() || self.recovery_timeout.is_zero() {
            return bad("scan_interval and recovery_timeout must be more than zero");
        }
        if self.copy_window == 0 || self.read_rounds == 0 || self.add_attempts == 0 {
            return bad("copy_window, read_rounds and add_attempts must be at least 1");
        }
        Ok(())
    }
}

/// Why autorecovery did not start.
#[derive(Debug, thiserror::Error)]
pub enum AutorecoveryError {
    /// The config is out of bounds.
    #[error("invalid autorecovery config: {0}")]
    Config(String),
    /// The bookie client pool did not start.
    #[error("cannot start the bookie client: {0}")]
    Pool(#[from] PoolError),
    /// The replication client did not start.
    #[error("cannot start the replication client: {0}")]
    Client(#[from] ReplicationError),
}

/// Counters since start, for tests, metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutorecoveryStats {
    /// Bookies this process, as auditor, declared lost.
    pub bookies_lost: u64,
    /// `mark_under_replicated` calls made (a segment marked again counts again).
    pub segments_marked: u64,
    /// Queue entries this worker completed.
    pub segments_completed: u64,
    /// Ensemble members replaced in the metadata.
    pub members_replaced: u64,
    /// Entries copied to replacements.
    pub entries_copied: u64,
    /// Open segments this worker fenced and closed.
    pub segments_recovered: u64,
    /// Segments released after a failure (each logged at error).
    pub failures: u64,
}

/// The counters, shared with the tasks.
#[derive(Debug, Default)]
struct Counters {
    auditor: AtomicBool,
    bookies_lost: AtomicU64,
    segments_marked: AtomicU64,
    segments_completed: AtomicU64,
    members_replaced: AtomicU64,
    entries_copied: AtomicU64,
    segments_recovered: AtomicU64,
    failures: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// What the tasks share.
struct Context<S> {
    store: Arc<S>,
    config: AutorecoveryConfig,
    counters: Arc<Counters>,
    /// The worker's bookie clients (`None` when the worker is off).
    pool: Option<ClientPool>,
    client: Option<ReplicationClient<S>>,
    /// Recoveries of open segments started by the worker, by segment (at most one each).
    recoveries: Mutex<BTreeMap<u64, RecoveryTask>>,
}

/// A recovery running as its own task, and where its end (or error) will be.
struct RecoveryTask {
    result: watch::Receiver<Option<Result<RecoveredEnd, String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded map is left consistent by every holder (plain inserts and removes).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Autorecovery running on a tokio runtime (see the module docs). Dropping it stops the tasks
/// without waiting; `stop` waits and ends the lease at once.
#[derive(Debug)]
pub struct Autorecovery {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Autorecovery {
    /// Starts the auditor candidate and the worker, as configured, on `runtime` (which needs
    /// timers). The lease is granted by the task: store failures are retried there, not
    /// reported here.
    pub fn start<S: MetadataStore + 'static>(
        store: Arc<S>,
        runtime: tokio::runtime::Handle,
        config: AutorecoveryConfig,
    ) -> Result<Autorecovery, AutorecoveryError> {
        config.validate()?;
        let (pool, client) = if config.worker {
            let pool = ClientPool::new(config.replication.transport.clone())?;
            let client = ReplicationClient::new(store.clone(), runtime.clone(), config.replication.clone())?;
            (Some(pool), Some(client))
        } else {
            (None, None)
        };
        let counters = Arc::new(Counters::default());
        let recoveries = Mutex::new(BTreeMap::new());
        let context =
            Arc::new(Context { store, config, counters: counters.clone(), pool, client, recoveries });
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(supervise(context, stopped));
        Ok(Autorecovery { stop, task: Some(task), counters })
    }

    /// Whether this process is the auditor now.
    pub fn is_auditor(&self) -> bool {
        self.counters.auditor.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> AutorecoveryStats {
        let c = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AutorecoveryStats {
            bookies_lost: read(&c.bookies_lost),
            segments_marked: read(&c.segments_marked),
            segments_completed: read(&c.segments_completed),
            members_replaced: read(&c.members_replaced),
            entries_copied: read(&c.entries_copied),
            segments_recovered: read(&c.segments_recovered),
            failures: read(&c.failures),
        }
    }

    /// Stops both roles, ends the lease (the auditor key and claims vanish now), and waits for
    /// the tasks and the clients to end. Work in progress is abandoned where it is: every step
    /// is idempotent, and the queue entry stays for the next worker.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "the autorecovery task panicked");
        }
    }
}

impl Drop for Autorecovery {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Holds the lease and runs the roles under it until `stopped`; grants a new lease when it is
/// lost (the roles stop acting on the lost one first).
async fn supervise<S: MetadataStore + 'static>(context: Arc<Context<S>>, mut stopped: watch::Receiver<bool>) {
    let ttl = context.config.lease_ttl;
    loop {
        let granted =
            match first(LeaseKeeper::grant(context.store.clone(), ttl), until_stopped(&mut stopped)).await {
                Either::Left(granted) => granted,
                Either::Right(()) => break,
            };
        let mut keeper = match granted {
            Ok(keeper) => keeper,
            Err(e) => {
                tracing::warn!(error = %e, "autorecovery: cannot get a lease; trying again");
                if pause(ttl / 2, &mut stopped).await {
                    break;
                }
                continue;
            }
        };
        let lease = keeper.id();
        let mut roles = tokio::task::JoinSet::new();
        if context.config.auditor {
            roles.spawn(audit::run(context.clone(), lease));
        }
        if context.config.worker {
            roles.spawn(replicate::run(context.clone(), lease));
        }
        let outcome = first(keeper.lost(), until_stopped(&mut stopped)).await;
        roles.abort_all();
        while roles.join_next().await.is_some() {}
        context.counters.auditor.store(false, Ordering::Relaxed);
        match outcome {
            Either::Left(why) => {
                tracing::warn!(lease = lease.0, error = %why, "autorecovery: lease lost; starting again");
            }
            Either::Right(()) => {
                if let Err(e) = keeper.revoke(context.store.as_ref()).await {
                    tracing::warn!(lease = lease.0, error = %e, "autorecovery: revoking the lease failed");
                }
                break;
            }
        }
    }
    // Recoveries still running are abandoned (the segment stays queued); their tasks hold
    // client clones, which must be gone before the last one is dropped below.
    let running: Vec<RecoveryTask> = std::mem::take(&mut *lock(&context.recoveries)).into_values().collect();
    for recovery in running {
        recovery.task.abort();
        let _ = recovery.task.await;
    }
    // The clients join their I/O threads when dropped: not on a runtime worker.
    let _ = tokio::task::spawn_blocking(move || drop(context)).await;
}

/// Resolves once `stop` was asked (or its sender is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Sleeps `duration`; true when stopped meanwhile.
async fn pause(duration: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    matches!(first(tokio::time::sleep(duration), until_stopped(stopped)).await, Either::Right(()))
}

/// The shell's clock.
#[expect(clippy::disallowed_methods, reason = "the autorecovery shell owns the real clock")]
fn now() -> Instant {
    Instant::now()
}

/// Sleeps until `deadline`.
async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
}

/// One of two outcomes.
enum Either<L, R> {
    Left(L),
    Right(R),
}

/// Runs both futures until the first is ready (the left one first when both are); drops the
/// other.
async fn first<L: Future, R: Future>(left: L, right: R) -> Either<L::Output, R::Output> {
    let (mut left, mut right) = (pin!(left), pin!(right));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = left.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(value));
        }
        if let Poll::Ready(value) = right.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(value));
        }
        Poll::Pending
    })
    .await
}
