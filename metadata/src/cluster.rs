//! `Cluster`: the cluster's identity (`cluster`): a random instance id fixed when the cluster
//! is first initialised, which every cookie records, so a bookie whose disks were formatted
//! for another cluster is refused at start.
//!
//! Owns: the `cluster` key, and `random_id`, the 32-hex-digit random ids of the schema
//! (instance id, cookies' disk id).
//! Does not own: checking cookies against it (bookie_registry.rs compares cookies).
//!
//! Invariants:
//! - CL1: `cluster` is only ever created (create-if-absent), never updated: once any `init`
//!   answered, every later `init` and `get` answers the same instance id. Concurrent `init`s
//!   all answer the winner's.
//! - CL2: a stored instance id is 32 lowercase hex digits; anything else is `Corrupt`.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::MetaError;
use crate::schema::{self, ClusterInfo, wire};
use crate::store::MetadataStore;
use crate::wall_clock::now_ms;

/// Reads of `init` after a lost create before it gives up (the key is never deleted, so one
/// read normally answers).
const INIT_ATTEMPTS: usize = 4;

/// The cluster's identity in a store.
#[derive(Debug)]
pub struct Cluster<S> {
    store: Arc<S>,
}

impl<S> Clone for Cluster<S> {
    fn clone(&self) -> Self {
        Cluster { store: self.store.clone() }
    }
}

impl<S: MetadataStore> Cluster<S> {
    /// The cluster of `store`.
    pub fn new(store: Arc<S>) -> Cluster<S> {
        Cluster { store }
    }

    /// The cluster's identity, created with a fresh instance id if there is none yet (CL1).
    pub async fn init(&self) -> Result<ClusterInfo, MetaError> {
        for _ in 0..INIT_ATTEMPTS {
            if let Some(info) = self.get().await? {
                return Ok(info);
            }
            let info = ClusterInfo { instance_id: random_id(), created_ms: now_ms() };
            match self.store.create(schema::CLUSTER, wire::encode(&info), None).await {
                Ok(_) => return Ok(info),
                // Another init won: answer its identity (next round's read).
                Err(MetaError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(MetaError::Unavailable(format!(
            "{}: created by another process but not readable after {INIT_ATTEMPTS} reads",
            schema::CLUSTER
        )))
    }

    /// The cluster's identity; `None` before the first `init`.
    pub async fn get(&self) -> Result<Option<ClusterInfo>, MetaError> {
        let Some(stored) = self.store.get(schema::CLUSTER).await? else {
            return Ok(None);
        };
        let info: ClusterInfo = wire::decode(schema::CLUSTER, &stored.value)?;
        if !is_random_id(&info.instance_id) {
            return Err(MetaError::Corrupt(format!(
                "{}: instance id {:?} is not 32 lowercase hex digits",
                schema::CLUSTER,
                info.instance_id
            )));
        }
        Ok(Some(info))
    }
}

/// A fresh random id: 32 lowercase hex digits (128 bits).
///
/// Drawn from std's `RandomState`, whose keys come from the operating system's random source
/// once per thread; hashing the time, a process-wide counter, the process and the thread
/// makes two calls differ even on one thread. Good for identities, not for secrets.
pub fn random_id() -> String {
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let seed =
        (now_ms(), DRAWN.fetch_add(1, Ordering::Relaxed), std::process::id(), std::thread::current().id());
    let high = RandomState::new().hash_one(seed);
    let low = RandomState::new().hash_one(seed);
    format!("{high:016x}{low:016x}")
}

/// Whether `id` has the shape `random_id` gives (CL2).
pub fn is_random_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_the_shape_and_differ() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_random_id(id)), "{ids:?}");
        assert!(!is_random_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_random_id("0123"));
    }
}
