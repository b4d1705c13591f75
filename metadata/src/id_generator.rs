//! `IdGenerator`: segment ids unique across the cluster, with no hot key and no retries.
//!
//! An id is the store revision of an unconditional put to one of `IDGEN_BUCKETS` keys
//! (`idgen/<bucket>`), buckets taken round-robin from a random start.
//!
//! Invariants:
//! - ID1: ids never repeat within a store: every mutation takes a new, higher revision (MS1),
//!   whoever makes it, so two generators in two processes cannot draw the same id.
//! - ID2: concurrent generators never conflict (no compare-and-set), and spread their writes
//!   over the buckets.
//! - Caveat: revisions restart if a cluster's keys are copied into a new store; ids would
//!   then repeat. Segment creation is create-if-absent, so a repeat is refused, not merged.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::MetaError;
use crate::schema::{self, IDGEN_BUCKETS};
use crate::store::MetadataStore;

/// Draws segment ids (see the module doc).
#[derive(Debug)]
pub struct IdGenerator<S> {
    store: Arc<S>,
    next_bucket: AtomicU64,
}

impl<S: MetadataStore> IdGenerator<S> {
    /// A generator over `store`, starting at a random bucket.
    pub fn new(store: Arc<S>) -> IdGenerator<S> {
        let start = RandomState::new().hash_one(std::process::id()) % IDGEN_BUCKETS;
        IdGenerator { store, next_bucket: AtomicU64::new(start) }
    }

    /// A new id, never drawn before from this store (ID1).
    pub async fn next_id(&self) -> Result<u64, MetaError> {
        let bucket = self.next_bucket.fetch_add(1, Ordering::Relaxed) % IDGEN_BUCKETS;
        Ok(self.store.put(&schema::idgen_key(bucket), Bytes::new()).await?.0)
    }
}
