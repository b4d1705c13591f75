//! Truncation: `truncate(log, before)` hides every record before `before` and deletes the
//! segments wholly before it, metadata first, then their data on the bookies; and retention,
//! which picks `before` by age or size.
//!
//! Order, and why nothing leaks (pain point: two-step deletes that orphan data):
//! 1. the log's `truncated_before` moves (compare-and-set): readers skip what is before it;
//! 2. each completed segment before `before.segment_seq` leaves the log's list in one
//!    transaction that also deletes its segment metadata and queues its data for deletion
//!    (`deletions/<id>`, LM6);
//! 3. each queued deletion is sent to its bookies (DELETE_SEGMENT; they drop the data once the
//!    segment's metadata is gone, their deletion check) and leaves the queue once all
//!    confirmed. A truncation that stops anywhere leaves its work in the queue, and the next
//!    truncation of any log (or `dlog admin truncate`) finishes it.
//!
//! Invariants:
//! - TR1: `truncated_before` never moves back; a position past the log's tail is refused (it
//!   would hide records not yet written).
//! - TR2: an in-progress segment is never deleted; truncation stops at the first one.
//! - TR3: a truncation's result is its own work (steps 1 and 2); a queued deletion that fails
//!   (a bookie down) stays queued for later and does not fail it. Writers work the queue off
//!   when they open; a bookie without a cookie (decommissioned) is dropped from it.

use std::time::Duration;

use dlog_metadata::MetaError;
use dlog_metadata::schema::{LogMetadata, LogSegmentState};
use dlog_metadata::wall_clock::now_ms;

use super::dlsn::Dlsn;
use super::error::LogError;
use super::namespace::Inner;

/// Attempts at moving `truncated_before` against concurrent updates of the log.
const ATTEMPTS: usize = 16;
/// Looks at the tail, 5 ms apart, before a position past it is refused.
const TAIL_WAITS: usize = 40;

/// What retention keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Segments completed longer ago than this are deleted (`None`: no age bound).
    pub max_age: Option<Duration>,
    /// The oldest completed segments are deleted while the log holds more bytes than this
    /// (`None`: no size bound).
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// True when it bounds nothing.
    pub fn is_unbounded(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }
}

/// Truncates `log` before `before` (the module doc's three steps).
pub(crate) async fn truncate(ns: &Inner, log: &str, before: Dlsn) -> Result<(), LogError> {
    let full = format!("{}/{log}", ns.name);
    // The tail readers see trails the writer's acknowledgements until the LAC reaches the
    // bookies (the next add, or the idle LAC write 1 ms later): a position just acknowledged
    // gets a moment to become the tail.
    let mut tail = super::reader::tail_position(ns, log).await?;
    for _ in 0..TAIL_WAITS {
        if before <= tail {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        tail = super::reader::tail_position(ns, log).await?;
    }
    if before > tail {
        return Err(LogError::Invalid(format!(
            "cannot truncate {full} before {before}: its tail is at {tail}"
        )));
    }
    let mut moved = false;
    for _ in 0..ATTEMPTS {
        let (meta, version) =
            ns.logs.log(&ns.name, log).await?.ok_or_else(|| LogError::NoSuchLog(full.clone()))?;
        if meta.truncated_before.is_some_and(|t| Dlsn::from(t) >= before) {
            moved = true;
            break;
        }
        let next = LogMetadata { truncated_before: Some(before.into()), ..meta };
        match ns.logs.update_log(&ns.name, log, &next, version).await {
            Ok(_) => {
                moved = true;
                break;
            }
            Err(MetaError::VersionConflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !moved {
        return Err(LogError::Metadata(MetaError::Unavailable(format!(
            "truncating {full}: too many conflicts"
        ))));
    }
    remove_segments(ns, log, before.segment_seq).await
}

/// Removes the completed segments of `log` before sequence number `limit` (TR2), then works
/// off the deletion queue (TR3: what fails there stays queued, and is not this call's error).
pub(crate) async fn remove_segments(ns: &Inner, log: &str, limit: u64) -> Result<(), LogError> {
    for (segment, version) in ns.logs.segments(&ns.name, log).await? {
        if segment.seq >= limit || segment.state == LogSegmentState::InProgress {
            break;
        }
        let (segment_version, bookies) = match ns.segments.get(segment.segment_id).await? {
            Some((meta, v)) => {
                let mut bookies: Vec<String> = meta.ensembles.values().flatten().cloned().collect();
                bookies.sort();
                bookies.dedup();
                (Some(v), bookies)
            }
            None => (None, Vec::new()),
        };
        match ns
            .logs
            .remove_segment_queuing_data(
                &ns.name,
                log,
                segment.seq,
                version,
                segment.segment_id,
                segment_version,
                bookies,
            )
            .await
        {
            // Someone else removed it first: theirs queued the data.
            Ok(_) | Err(MetaError::VersionConflict { .. }) | Err(MetaError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Err(error) = delete_queued(ns).await {
        tracing::warn!(%error, "some segment data is not deleted yet; it stays queued");
    }
    Ok(())
}

/// `delete_queued` in the background, once, for a namespace that may go away meanwhile.
pub(crate) async fn delete_queued_quietly(ns: std::sync::Weak<Inner>) {
    let Some(ns) = ns.upgrade() else { return };
    if let Err(error) = delete_queued(&ns).await {
        tracing::debug!(%error, "queued segment deletions not finished; they stay queued");
    }
}

/// Sends every queued deletion to its bookies; each leaves the queue once all confirmed. The
/// first failure is returned after trying every one (the rest stay queued).
pub(crate) async fn delete_queued(ns: &Inner) -> Result<(), LogError> {
    let mut first_error = None;
    let registry = dlog_metadata::BookieRegistry::new(ns.store.clone());
    for (segment, bookies, version) in ns.logs.pending_deletions().await? {
        // A bookie without a cookie was decommissioned (or never existed): nothing to delete
        // there, and waiting for it would keep the entry queued forever.
        let mut live = Vec::with_capacity(bookies.len());
        for bookie in bookies {
            match registry.cookie(&bookie).await {
                Ok(None) => {
                    tracing::info!(segment, %bookie, "bookie decommissioned; nothing to delete there")
                }
                _ => live.push(bookie),
            }
        }
        match ns.client.delete_segment_data(segment, &live).await {
            Ok(()) => match ns.logs.deletion_done(segment, version).await {
                Ok(_) | Err(MetaError::VersionConflict { .. }) | Err(MetaError::NotFound(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(LogError::from(e));
                }
            },
            Err(e) => {
                tracing::warn!(segment, error = %e, "segment data not deleted yet; it stays queued");
                first_error.get_or_insert(LogError::from(e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Where `retention` truncates `log` now: the start of the first segment it keeps, if any
/// segment goes.
pub(crate) async fn retention_point(
    ns: &Inner,
    log: &str,
    retention: Retention,
) -> Result<Option<Dlsn>, LogError> {
    let segments = ns.logs.segments(&ns.name, log).await?;
    let now = now_ms();
    // Bytes of each completed segment, newest first, to apply the size bound.
    let mut keep_from = None;
    let mut held: u64 = 0;
    for (segment, _) in segments.iter().rev() {
        let LogSegmentState::Completed { completed_ms, .. } = segment.state else { continue };
        let length = match ns.segments.get(segment.segment_id).await? {
            Some((meta, _)) => match meta.state {
                dlog_metadata::schema::SegmentState::Closed { length, .. } => length,
                _ => 0,
            },
            None => 0,
        };
        held = held.saturating_add(length);
        let too_old = retention.max_age.is_some_and(|age| {
            now.saturating_sub(completed_ms) > u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
        });
        let too_big = retention.max_bytes.is_some_and(|max| held > max);
        if too_old || too_big {
            keep_from = Some(segment.seq + 1);
            break;
        }
    }
    Ok(keep_from.map(Dlsn::segment_start))
}
