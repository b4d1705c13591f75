//! `MetadataDeletionCheck`: the bookie's deletion check (`dlog_engine::DeletionCheck`) backed by
//! the cluster metadata: a deleted segment's data is dropped from a bookie only once its
//! metadata (`segments/<id>`) is gone.
//!
//! Invariant DC1: any doubt keeps the data. An unreachable or failing metadata store answers
//! "not confirmed"; the engine asks again at its next open (BookKeeper's `verifyMetadataOnGC`,
//! which exists because bookies once dropped data of segments that were still in use).

use std::sync::Arc;

use dlog_engine::{DeletionCheck, SegmentId};
use dlog_metadata::{MetadataStore, SegmentMetadataStore};

/// Answers the engine's deletion check from the metadata store.
pub struct MetadataDeletionCheck<S> {
    segments: SegmentMetadataStore<S>,
    runtime: tokio::runtime::Handle,
}

impl<S: MetadataStore + 'static> MetadataDeletionCheck<S> {
    /// A check over `store`, running its calls on `runtime` (the engine asks from a thread of
    /// its own, outside any runtime, and may block).
    pub fn new(store: Arc<S>, runtime: tokio::runtime::Handle) -> MetadataDeletionCheck<S> {
        MetadataDeletionCheck { segments: SegmentMetadataStore::new(store), runtime }
    }
}

impl<S: MetadataStore + 'static> DeletionCheck for MetadataDeletionCheck<S> {
    fn confirm_deleted(&self, segment: SegmentId) -> bool {
        match self.runtime.block_on(self.segments.confirm_deleted(segment.0)) {
            Ok(gone) => gone,
            Err(e) => {
                tracing::warn!(segment = segment.0, error = %e, "deletion not confirmed: metadata unreadable");
                false // DC1
            }
        }
    }
}
