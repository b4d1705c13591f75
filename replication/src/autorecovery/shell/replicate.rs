//! The replication worker's shell: watching the queue, claiming a segment, carrying out the
//! core's copy plan (placement, copies, the ensemble compare-and-set, recovering an open
//! segment), and completing or releasing the queue entry (AR3-AR6, AR9).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlog_metadata::schema::{self, SegmentMetadata};
use dlog_metadata::wall_clock::now_ms;
use dlog_metadata::{
    BookieRegistry, LeaseId, MetaError, MetadataStore, QueuedSegment, ReplicationQueue, SegmentMetadataStore,
    Version,
};

use super::copy::{CopyError, CopyJob, CopySettings, copy_fragment};
use tokio::sync::watch;

use super::{Context, Either, RecoveryTask, bump, first, lock, now, sleep_until};
use crate::autorecovery::worker::{self, Fragment, LastEnsemble, PlanError, ReplaceDecision};
use crate::placement::{self, Candidate, PlacementError};

/// Compare-and-set attempts of one ensemble change.
const CAS_ATTEMPTS: usize = 16;
/// Plan rounds in a row that replaced nothing before the segment is given up for now.
const IDLE_ROUNDS_MAX: usize = 8;
/// Replacements tried for one fragment whose copy failed on the replacement's side.
const TARGETS_MAX: usize = 3;
/// Completions of one claim that found the entry marked again meanwhile (RQ3).
const COMPLETE_ATTEMPTS: usize = 4;

/// Why a segment's re-replication stopped short.
#[derive(Debug, thiserror::Error)]
enum WorkError {
    #[error("metadata: {0}")]
    Metadata(#[from] MetaError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("placement: {0}")]
    Placement(#[from] PlacementError),
    #[error("copy to {replacement}: {error}")]
    Copy { replacement: String, error: CopyError },
    #[error("recovering the open segment: {0}")]
    Recovery(String),
    #[error("{0}")]
    Stuck(String),
}

/// What became of a claimed segment.
enum Progress {
    /// No ensemble names a missing bookie (or the segment is gone): complete the entry.
    Done,
    /// The last ensemble is the writer's for this long still: release, come back then.
    Waiting(Duration),
}

/// Runs the worker under `lease` until aborted: lists the queue, handles each segment not in
/// backoff, and waits for a queue change, a backoff's end or `scan_interval`.
pub(super) async fn run<S: MetadataStore + 'static>(context: Arc<Context<S>>, lease: LeaseId) {
    let queue = ReplicationQueue::new(context.store.clone());
    let mut backoff: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        // Watch from now, then list: a change after the listing wakes the wait below.
        let mut watch = match context.store.watch(schema::UNDER_REPLICATED, Version(0)).await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(error = %e, "autorecovery worker: cannot watch the queue; trying again");
                tokio::time::sleep(context.config.retry_backoff).await;
                continue;
            }
        };
        loop {
            let entries = match queue.under_replicated().await {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(error = %e, "autorecovery worker: cannot list the queue; trying again");
                    tokio::time::sleep(context.config.retry_backoff).await;
                    continue;
                }
            };
            backoff.retain(|_, until| *until > now());
            for entry in entries {
                let segment = match entry {
                    Ok(queued) => queued.segment,
                    Err(e) => {
                        tracing::error!(error = %e, "autorecovery worker: bad queue entry; skipped");
                        continue;
                    }
                };
                if backoff.contains_key(&segment) {
                    continue;
                }
                if let Some(pause) = handle(&context, &queue, lease, segment).await {
                    backoff.insert(segment, now() + pause);
                }
            }
            let poll = now() + context.config.scan_interval;
            let wake = backoff.values().min().map_or(poll, |until| (*until).min(poll));
            if let Either::Left(Err(e)) = first(watch.next(), sleep_until(wake)).await {
                tracing::warn!(error = %e, "autorecovery worker: queue watch ended; watching again");
                break;
            }
        }
    }
}

/// Claims `segment` and re-replicates it; completes its entry when done (AR6), releases it
/// otherwise. How long to leave it alone, when it is to be tried again later.
async fn handle<S: MetadataStore + 'static>(
    context: &Context<S>,
    queue: &ReplicationQueue<S>,
    lease: LeaseId,
    segment: u64,
) -> Option<Duration> {
    let mut queued = match queue.claim(segment, &context.config.owner, lease).await {
        Ok(queued) => queued,
        // Another worker's, or completed meanwhile.
        Err(MetaError::AlreadyExists(_) | MetaError::NotFound(_)) => return None,
        Err(e) => {
            tracing::warn!(segment, error = %e, "autorecovery worker: claim failed");
            return Some(context.config.retry_backoff);
        }
    };
    let mut pause = Some(context.config.retry_backoff);
    for _ in 0..COMPLETE_ATTEMPTS {
        match replicate(context, segment, &queued).await {
            Ok(Progress::Done) => match queue.complete(segment, queued.version).await {
                Ok(_) => {
                    tracing::info!(segment, missing = ?queued.missing, "autorecovery worker: re-replicated");
                    bump(&context.counters.segments_completed, 1);
                    return None;
                }
                // Marked again since the claim (RQ3): the new missing bookies too.
                Err(MetaError::VersionConflict { .. }) => match queue.queued(segment).await {
                    Ok(Some(again)) => queued = again,
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(segment, error = %e, "autorecovery worker: re-reading failed");
                        break;
                    }
                },
                Err(e) => {
                    tracing::warn!(segment, error = %e, "autorecovery worker: completing failed");
                    break;
                }
            },
            Ok(Progress::Waiting(wait)) => {
                tracing::info!(
                    segment,
                    ?wait,
                    "autorecovery worker: the open segment's writer has time left"
                );
                pause = Some(wait.min(context.config.retry_backoff));
                break;
            }
            Err(e) => {
                tracing::error!(
                    segment, missing = ?queued.missing, error = %e,
                    "autorecovery worker: RE-REPLICATION FAILED; the segment stays queued and is retried"
                );
                bump(&context.counters.failures, 1);
                break;
            }
        }
    }
    if let Err(e) = queue.release(segment, lease).await {
        tracing::warn!(segment, error = %e, "autorecovery worker: releasing the claim failed");
    }
    pause
}

/// Carries out the plan for `queued` until no ensemble names a missing bookie, or the last
/// ensemble waits for its writer (AR3-AR6).
async fn replicate<S: MetadataStore + 'static>(
    context: &Context<S>,
    segment: u64,
    queued: &QueuedSegment,
) -> Result<Progress, WorkError> {
    let segments = SegmentMetadataStore::new(context.store.clone());
    let missing: BTreeSet<String> = queued.missing.iter().cloned().collect();
    let grace_ms = u64::try_from(context.config.open_segment_grace.as_millis()).unwrap_or(u64::MAX);
    let mut failed_targets = BTreeSet::new();
    let mut idle_rounds = 0;
    while idle_rounds < IDLE_ROUNDS_MAX {
        let Some((meta, _)) = segments.get(segment).await? else {
            tracing::info!(segment, "autorecovery worker: the segment was deleted; its work is dropped");
            return Ok(Progress::Done);
        };
        let waited_ms = now_ms().saturating_sub(queued.since_ms);
        let plan = worker::plan(segment, &meta, &missing, waited_ms >= grace_ms)?;
        if let Some(fragment) = plan.fragments.first() {
            if replace(context, &segments, &meta, fragment, &missing, &mut failed_targets).await? {
                idle_rounds = 0;
            } else {
                idle_rounds += 1;
            }
            continue;
        }
        match plan.last_ensemble {
            LastEnsemble::Settled => return Ok(Progress::Done),
            LastEnsemble::WaitForWriter => {
                return Ok(Progress::Waiting(Duration::from_millis(grace_ms.saturating_sub(waited_ms))));
            }
            LastEnsemble::Recover => {
                recover(context, segment, &meta).await?;
                idle_rounds += 1;
            }
        }
    }
    Err(WorkError::Stuck(format!("{IDLE_ROUNDS_MAX} plan rounds in a row replaced nothing")))
}

/// Fences and closes an open segment whose last ensemble names a missing bookie, after the
/// open-segment grace (AR3). The recovery runs as its own task, at most one per segment: one
/// that outlives `recovery_timeout` is waited for again by the next attempt rather than
/// started twice (a recovery cannot be cancelled on the client's I/O thread).
async fn recover<S: MetadataStore + 'static>(
    context: &Context<S>,
    segment: u64,
    meta: &SegmentMetadata,
) -> Result<(), WorkError> {
    let client = context.client.clone().ok_or_else(|| WorkError::Recovery("no client".into()))?;
    let mut result = {
        let mut running = lock(&context.recoveries);
        running
            .entry(segment)
            .or_insert_with(|| {
                tracing::info!(segment, "autorecovery worker: recovering the open segment (fence and close)");
                let (done, result) = watch::channel(None);
                let master_key = meta.master_key.clone();
                let task = tokio::spawn(async move {
                    let end = client.recover_segment(segment, master_key).await.map_err(|e| e.to_string());
                    let _ = done.send(Some(end));
                });
                RecoveryTask { result, task }
            })
            .result
            .clone()
    };
    let finished =
        tokio::time::timeout(context.config.recovery_timeout, result.wait_for(Option::is_some)).await;
    let end = match finished {
        Ok(Ok(end)) => end.clone().unwrap_or_else(|| Err("no result".into())),
        Ok(Err(_)) => Err("the recovery task ended without a result".into()),
        Err(_) => {
            let timeout = context.config.recovery_timeout;
            return Err(WorkError::Recovery(format!("not done within {timeout:?}; still running")));
        }
    };
    lock(&context.recoveries).remove(&segment);
    let end = end.map_err(WorkError::Recovery)?;
    tracing::info!(segment, ?end, "autorecovery worker: segment closed");
    bump(&context.counters.segments_recovered, 1);
    Ok(())
}

/// Copies `fragment` to a replacement chosen by placement and compare-and-sets it into the
/// ensemble (AR4, AR5); true when the metadata changed.
async fn replace<S: MetadataStore + 'static>(
    context: &Context<S>,
    segments: &SegmentMetadataStore<S>,
    meta: &SegmentMetadata,
    fragment: &Fragment,
    missing: &BTreeSet<String>,
    failed_targets: &mut BTreeSet<String>,
) -> Result<bool, WorkError> {
    let segment = fragment.segment;
    let pool = context.pool.as_ref().ok_or_else(|| WorkError::Stuck("no bookie client".into()))?;
    let bookies = Bookies::list(context.store.clone()).await?;
    // Never a missing bookie (it may have come back, AR9), nor one that failed this segment.
    let exclude: Vec<&str> = missing.iter().chain(failed_targets.iter()).map(String::as_str).collect();
    let seed = segment ^ fragment.first_entry.rotate_left(17) ^ failed_targets.len() as u64;
    let ensemble = placement::choose_replacements(
        fragment.quorum,
        &fragment.ensemble,
        &[fragment.index],
        &bookies.candidates,
        &exclude,
        seed,
    )?;
    let replacement = ensemble.get(fragment.index).cloned().unwrap_or_default();
    // P1 makes it a non-member; checked anyway, as AR5 asks.
    if fragment.ensemble.contains(&replacement) {
        return Err(WorkError::Stuck(format!("placement chose {replacement}, a member of the ensemble")));
    }
    let target = *bookies
        .addrs
        .get(&replacement)
        .ok_or_else(|| WorkError::Stuck(format!("replacement {replacement} has no address")))?;
    let members: Vec<Option<SocketAddr>> =
        fragment.ensemble.iter().map(|id| bookies.addrs.get(id).copied()).collect();
    let job = CopyJob { fragment, missing, members: &members, target, master_key: meta.master_key.clone() };
    let settings = CopySettings {
        window: context.config.copy_window,
        read_rounds: context.config.read_rounds,
        add_attempts: context.config.add_attempts,
        retry_delay: context.config.retry_delay,
    };
    match copy_fragment(pool, job, settings).await {
        Ok(copied) => bump(&context.counters.entries_copied, copied),
        Err(error @ CopyError::Target { .. }) if failed_targets.len() + 1 < TARGETS_MAX => {
            tracing::warn!(segment, %replacement, %error, "autorecovery worker: replacement failed; another");
            failed_targets.insert(replacement);
            return Ok(false);
        }
        Err(error) => return Err(WorkError::Copy { replacement, error }),
    }
    for _ in 0..CAS_ATTEMPTS {
        let Some((current, version)) = segments.get(segment).await? else { return Ok(false) };
        match worker::replace_member(&current, fragment, &replacement) {
            ReplaceDecision::Replace(next) => match segments.update(segment, &next, version).await {
                Ok(_) => {
                    tracing::info!(
                        segment, first_entry = fragment.first_entry, lost = %fragment.lost, %replacement,
                        "autorecovery worker: ensemble member replaced"
                    );
                    bump(&context.counters.members_replaced, 1);
                    return Ok(true);
                }
                Err(MetaError::VersionConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            ReplaceDecision::AlreadyReplaced => return Ok(true),
            ReplaceDecision::Replan(why) => {
                tracing::info!(segment, why = %why, "autorecovery worker: metadata changed; planning again");
                return Ok(false);
            }
        }
    }
    Ok(false)
}

/// The registered bookies: writable ones as placement candidates, and every one's address.
struct Bookies {
    candidates: Vec<Candidate>,
    addrs: BTreeMap<String, SocketAddr>,
}

impl Bookies {
    async fn list<S: MetadataStore>(store: Arc<S>) -> Result<Bookies, MetaError> {
        let registry = BookieRegistry::new(store);
        let mut bookies = Bookies { candidates: Vec::new(), addrs: BTreeMap::new() };
        for (listing, writable) in [(registry.writable().await?, true), (registry.read_only().await?, false)]
        {
            for entry in listing {
                let bookie = match entry {
                    Ok(bookie) => bookie,
                    Err(e) => {
                        tracing::warn!(error = %e, "autorecovery worker: bad registration; skipped");
                        continue;
                    }
                };
                let Some(addr) = endpoint(&bookie.info.endpoint) else {
                    let (id, endpoint) = (&bookie.id, &bookie.info.endpoint);
                    tracing::warn!(bookie = %id, %endpoint, "autorecovery worker: bad endpoint; skipped");
                    continue;
                };
                bookies.addrs.insert(bookie.id.clone(), addr);
                if writable {
                    bookies.candidates.push(Candidate {
                        id: bookie.id,
                        zone: bookie.info.zone,
                        rack: bookie.info.rack,
                        free_bytes: bookie.info.free_bytes,
                        load: 0,
                    });
                }
            }
        }
        Ok(bookies)
    }
}

fn endpoint(endpoint: &str) -> Option<SocketAddr> {
    endpoint.to_socket_addrs().ok()?.next()
}
