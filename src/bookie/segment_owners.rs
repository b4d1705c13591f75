//! `PermissionGate`: the bookie's per-namespace permission check (issue 9): the permissions
//! file, and where each segment belongs, asked of the metadata and cached.
//!
//! Owns: looking a segment's namespace up (`OwnerLookup`; `MetadataOwners` asks the segment's
//! metadata on the bookie's control runtime), the cache of the answers shared by every
//! connection, and the decision for an identity (`allowed`).
//! Does not own: the rules (permissions.rs), refusing or holding requests (connection.rs).
//!
//! Invariants:
//! - PG1: a segment's namespace is cached only once the metadata named it (`Log` or `NoLog`):
//!   a segment's owner is set when its metadata is created and never changes, so the cache
//!   never goes stale. `Missing` and `BeingDeleted` are never cached here: a segment whose id
//!   one client asked about before its metadata was created must not stay closed to the
//!   others. (A connection keeps its own decisions, `Missing` included: a client asking about
//!   a segment before it exists only closes it to itself, and a log's clients never do.)
//! - PG2: a lookup that fails (the metadata unreachable, or slower than `LOOKUP_TIMEOUT`) is an
//!   error, never a decision: the request is refused as `Internal`, not executed, and the
//!   next request asks again. `LOOKUP_TIMEOUT` is well under a client's request timeout (5 s
//!   by default), so the requests held behind a lookup are answered before clients give up.
//! - PG4: a decision that needs no namespace (`Permissions::regardless_of_namespace`: no grant
//!   could allow it, or `"*"` allows it) is made without a lookup.
//! - PG3: the cache holds at most `CACHE_SEGMENTS_MAX` segments; past it, it starts over (the
//!   metadata is asked again), so a client naming many segments cannot grow it without bound.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_metadata::{MetadataStore, SegmentMetadataStore, schema};

use crate::bookie::permissions::{Allowed, Permissions, SegmentNamespace};

/// Longest a lookup waits for the metadata (PG2).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Segments the shared cache holds at most (PG3).
pub const CACHE_SEGMENTS_MAX: usize = 1 << 16;

/// A lookup on its way: the segment's namespace, or why it is unknown (PG2).
pub type Lookup = Pin<Box<dyn Future<Output = Result<SegmentNamespace, String>> + Send>>;

/// Where a segment's namespace comes from.
pub trait OwnerLookup: Send + Sync + 'static {
    /// The namespace of `segment`, as its metadata says. The future may be polled on any
    /// runtime (the network threads run compio).
    fn lookup(&self, segment: u64) -> Lookup;
}

/// Asks the segment's metadata (`segments/<id>`, then `deletions/<id>` when it has none), on
/// the control runtime (the store's client
/// needs tokio; the future handed back only awaits the task).
pub struct MetadataOwners<S> {
    store: Arc<S>,
    segments: Arc<SegmentMetadataStore<S>>,
    runtime: tokio::runtime::Handle,
}

impl<S: MetadataStore + 'static> MetadataOwners<S> {
    /// Lookups in `store`, run on `runtime`.
    pub fn new(store: Arc<S>, runtime: tokio::runtime::Handle) -> MetadataOwners<S> {
        MetadataOwners { segments: Arc::new(SegmentMetadataStore::new(store.clone())), store, runtime }
    }
}

impl<S: MetadataStore + 'static> OwnerLookup for MetadataOwners<S> {
    fn lookup(&self, segment: u64) -> Lookup {
        let (store, segments) = (self.store.clone(), self.segments.clone());
        let task = self.runtime.spawn(async move {
            let ask = async {
                Ok::<_, dlog_metadata::MetaError>(match segments.get(segment).await? {
                    Some((meta, _)) => match meta.owner {
                        Some(owner) => SegmentNamespace::Log(owner.namespace),
                        None => SegmentNamespace::NoLog,
                    },
                    None => match store.get(&schema::deletion_key(segment)).await? {
                        Some(_) => SegmentNamespace::BeingDeleted,
                        None => SegmentNamespace::Missing,
                    },
                })
            };
            match tokio::time::timeout(LOOKUP_TIMEOUT, ask).await {
                Err(_) => {
                    Err(format!("segment {segment}: no answer from the metadata in {LOOKUP_TIMEOUT:?}"))
                }
                Ok(Err(e)) => Err(format!("segment {segment}: metadata: {e}")),
                Ok(Ok(namespace)) => Ok(namespace),
            }
        });
        Box::pin(async move { task.await.map_err(|e| format!("metadata lookup: {e}"))? })
    }
}

/// The permissions file and the segments' namespaces, shared by every network thread.
pub struct PermissionGate {
    permissions: Permissions,
    owners: Arc<dyn OwnerLookup>,
    cache: Mutex<HashMap<u64, SegmentNamespace>>,
}

impl PermissionGate {
    /// A gate applying `permissions`, with namespaces from `owners`.
    pub fn new(permissions: Permissions, owners: Arc<dyn OwnerLookup>) -> PermissionGate {
        PermissionGate { permissions, owners, cache: Mutex::new(HashMap::new()) }
    }

    /// The rules.
    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    /// What `identity` may do to `segment`, if its namespace is cached (PG1).
    pub fn cached(&self, identity: &str, segment: u64) -> Option<Allowed> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(&segment).map(|namespace| self.permissions.decide(identity, namespace))
    }

    /// Asks where `segment` belongs, caches the answer when it may be (PG1, PG3), and decides
    /// for `identity`. `Err`: the lookup failed (PG2).
    pub async fn look_up(&self, identity: &str, segment: u64) -> Result<Allowed, String> {
        let namespace = self.owners.lookup(segment).await?;
        if matches!(namespace, SegmentNamespace::Log(_) | SegmentNamespace::NoLog) {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= CACHE_SEGMENTS_MAX {
                cache.clear(); // PG3
            }
            cache.insert(segment, namespace.clone());
        }
        Ok(self.permissions.decide(identity, &namespace))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Segment 1 is in "orders", 2 has no log, 3 is missing, 5 is being deleted, others fail.
    struct Fixed {
        asked: AtomicUsize,
    }

    impl OwnerLookup for Fixed {
        fn lookup(&self, segment: u64) -> Lookup {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                match segment {
                    1 => Ok(SegmentNamespace::Log("orders".into())),
                    2 => Ok(SegmentNamespace::NoLog),
                    3 => Ok(SegmentNamespace::Missing),
                    5 => Ok(SegmentNamespace::BeingDeleted),
                    _ => Err("unreachable".into()),
                }
            })
        }
    }

    #[test]
    fn answers_are_cached_except_missing_and_failures() {
        let permissions = Permissions::parse("[w]\nwrite = [\"orders\"]\n[all]\nwrite = [\"*\"]").unwrap();
        let fixed = Arc::new(Fixed { asked: AtomicUsize::new(0) });
        let gate = PermissionGate::new(permissions, fixed.clone());
        let run = |identity: &str, segment: u64| {
            ready(Box::pin({
                let gate = &gate;
                let identity = identity.to_owned();
                async move { gate.look_up(&identity, segment).await }
            }))
        };
        assert_eq!(gate.cached("w", 1), None);
        assert_eq!(run("w", 1), Ok(Allowed::ALL));
        assert_eq!(gate.cached("w", 1), Some(Allowed::ALL), "PG1: a log's namespace is cached");
        assert_eq!(gate.cached("all", 1), Some(Allowed::ALL), "the cache is shared by identities");
        assert_eq!(run("w", 2), Ok(Allowed::default()));
        assert_eq!(gate.cached("all", 2), Some(Allowed::ALL));
        assert_eq!(run("w", 3), Ok(Allowed::default()), "PM4: only \"*\" deletes what never was");
        assert_eq!(run("all", 3), Ok(Allowed::ALL));
        assert_eq!(gate.cached("w", 3), None, "PG1: missing is never cached");
        assert!(run("w", 4).is_err(), "PG2");
        assert_eq!(gate.cached("w", 4), None, "PG2");
        let gone = Allowed { delete: true, ..Allowed::default() };
        assert_eq!(run("w", 5), Ok(gone), "PM4: any write grant deletes what a truncation queued");
        assert_eq!(gate.cached("w", 5), None, "PG1: being deleted is never cached");
        assert_eq!(fixed.asked.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn the_metadata_tells_logs_segments_of_no_log_deletions_and_missing() {
        use std::collections::BTreeMap;

        use bytes::Bytes;
        use dlog_metadata::schema::{DigestType, SegmentMetadata, SegmentOwner, SegmentState};
        use dlog_metadata::{LocalStore, MetadataStore};

        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let store = Arc::new(LocalStore::in_memory().unwrap());
        let segments = SegmentMetadataStore::new(store.clone());
        let meta = |owner| SegmentMetadata {
            ensemble_size: 1,
            write_quorum_size: 1,
            ack_quorum_size: 1,
            digest_type: DigestType::Crc32c,
            master_key: Bytes::from_static(b"k"),
            state: SegmentState::Open,
            ensembles: BTreeMap::from([(0, vec!["b".to_string()])]),
            created_ms: 1,
            owner,
        };
        let owner = SegmentOwner { namespace: "orders".into(), log: "l".into(), seq: 1 };
        let (in_log, no_log) = runtime.block_on(async {
            let (in_log, _) = segments.create(&meta(Some(owner))).await.unwrap();
            let (no_log, _) = segments.create(&meta(None)).await.unwrap();
            store.create(&schema::deletion_key(77), Bytes::from_static(b"queued"), None).await.unwrap();
            (in_log, no_log)
        });
        let owners = MetadataOwners::new(store, runtime.handle().clone());
        let ask = |segment| runtime.block_on(owners.lookup(segment));
        assert_eq!(ask(in_log), Ok(SegmentNamespace::Log("orders".into())));
        assert_eq!(ask(no_log), Ok(SegmentNamespace::NoLog));
        assert_eq!(ask(77), Ok(SegmentNamespace::BeingDeleted), "PM4: a truncation queued it");
        assert_eq!(ask(78), Ok(SegmentNamespace::Missing));
    }

    /// Polls a future that never waits to its end (the fixture's lookups are ready at once).
    fn ready<T>(mut f: Pin<Box<dyn Future<Output = T> + '_>>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the fixture's lookups are ready at once"),
        }
    }
}
