//! The auditor's shell: the election (AR7), the registry watch feeding `LostBookies` (AR1), and
//! the scans of `segments/` that queue the segments naming a lost bookie (AR2).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dlog_metadata::schema::{self, SegmentMetadata};
use dlog_metadata::store::LIST_PAGE;
use dlog_metadata::{LeaseId, MetaError, MetadataStore, ReplicationQueue, Version};

use super::{Context, Either, bump, first, now, sleep_until};
use crate::autorecovery::auditor::{LostBookies, lost_in, named_bookies};

/// Runs for auditor under `lease` until aborted: a standby waits for the seat to be vacant
/// (RQ4), the auditor audits until the store fails it, then both start over.
pub(super) async fn run<S: MetadataStore + 'static>(context: Arc<Context<S>>, lease: LeaseId) {
    let queue = ReplicationQueue::new(context.store.clone());
    let owner = context.config.owner.as_str();
    let mut lost = LostBookies::new(context.config.lost_bookie_grace);
    loop {
        let outcome = match queue.try_become_auditor(owner, lease).await {
            Ok(true) => {
                context.counters.auditor.store(true, Ordering::Relaxed);
                tracing::info!(owner, lease = lease.0, "autorecovery: this process is the auditor");
                audit(&context, &queue, &mut lost).await
            }
            Ok(false) => match queue.watch_auditor().await {
                Ok(mut watch) => watch.vacant().await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        context.counters.auditor.store(false, Ordering::Relaxed);
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "autorecovery auditor: metadata store failed; starting over");
            tokio::time::sleep(context.config.retry_delay.max(std::time::Duration::from_millis(100))).await;
        }
    }
}

/// Every registered bookie id (writable or read-only: a key is enough, its value is not read)
/// and the revision of the listing.
async fn registered<S: MetadataStore>(store: &S) -> Result<(BTreeSet<String>, Version), MetaError> {
    let (items, revision) = store.list_all(schema::BOOKIES).await?;
    let ids = items
        .iter()
        .filter_map(|(key, _)| match schema::bookie_of(key) {
            Some((id, _)) => Some(id.to_owned()),
            None => {
                tracing::warn!(key = %key, "autorecovery auditor: not a registration key; skipped");
                None
            }
        })
        .collect();
    Ok((ids, revision))
}

/// The auditor's loop: registry snapshots on every registration change, the grace timers, and
/// a scan when a bookie is newly lost or every `scan_interval`. Returns on a store failure.
async fn audit<S: MetadataStore + 'static>(
    context: &Context<S>,
    queue: &ReplicationQueue<S>,
    lost: &mut LostBookies,
) -> Result<(), MetaError> {
    let store = context.store.as_ref();
    // List, then watch from one past the listing: no change is missed (MS4).
    let (ids, revision) = registered(store).await?;
    lost.observe_registry(ids, now());
    let mut watch = store.watch(schema::BOOKIES, Version(revision.0 + 1)).await?;
    let mut next_scan = now();
    loop {
        let newly = lost.poll(now());
        for id in &newly {
            tracing::warn!(
                bookie = %id,
                grace = ?context.config.lost_bookie_grace,
                "autorecovery auditor: bookie lost (unregistered for the grace); queueing its segments"
            );
            bump(&context.counters.bookies_lost, 1);
        }
        if !newly.is_empty() || now() >= next_scan {
            scan(context, queue, lost).await?;
            next_scan = now() + context.config.scan_interval;
            continue;
        }
        let wake = lost.next_deadline().map_or(next_scan, |deadline| deadline.min(next_scan));
        match first(watch.next(), sleep_until(wake)).await {
            Either::Left(event) => {
                event?;
                let (ids, _) = registered(store).await?;
                lost.observe_registry(ids, now());
            }
            Either::Right(()) => {}
        }
    }
}

/// Lists every segment and queues each that names a lost bookie with the lost bookies it names
/// (AR2); then tells `lost` which bookies the segments name (AR1). A value that does not decode
/// is logged and skipped (AR8); a store failure ends the scan (it is retried whole).
async fn scan<S: MetadataStore + 'static>(
    context: &Context<S>,
    queue: &ReplicationQueue<S>,
    lost: &mut LostBookies,
) -> Result<(), MetaError> {
    let store = context.store.as_ref();
    let lost_now = lost.lost().clone();
    let mut named = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(schema::SEGMENTS, after.as_deref(), LIST_PAGE).await?;
        for (key, stored) in &page.items {
            let Some(segment) = schema::segment_id_of(key) else {
                tracing::error!(key = %key, "autorecovery auditor: not a segment key; skipped");
                continue;
            };
            let meta = match SegmentMetadata::decode(key, &stored.value) {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::error!(key = %key, error = %e, "autorecovery auditor: bad segment; skipped");
                    continue;
                }
            };
            named.extend(named_bookies(&meta).cloned());
            let missing = lost_in(&meta, &lost_now);
            if missing.is_empty() {
                continue;
            }
            match queue.mark_under_replicated(segment, &missing).await {
                Ok(_) => {
                    tracing::info!(
                        segment,
                        ?missing,
                        "autorecovery auditor: segment queued as under-replicated"
                    );
                    bump(&context.counters.segments_marked, 1);
                }
                Err(e @ MetaError::Invalid(_)) => {
                    tracing::error!(segment, error = %e, "autorecovery auditor: cannot queue; skipped");
                }
                Err(e) => return Err(e),
            }
        }
        if !page.more {
            break;
        }
        after = page.items.last().map(|(key, _)| key.clone());
        if after.is_none() {
            break;
        }
    }
    lost.observe_named(&named, now());
    Ok(())
}
