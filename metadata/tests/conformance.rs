//! One conformance suite for every `MetadataStore` backend: the embedded store on disk and in
//! memory, a `RemoteStore` talking to a `MetadataServer` that serves an in-memory store
//! (`dlog://`), and (with the `etcd` feature) a real etcd started on a free 127.0.0.1 port for
//! each test. Each case checks one promise of the contract (metadata/src/store.rs, MS1-MS5).
//! Without an `etcd` binary the etcd cases fail; they never skip.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::store::{KEY_BYTES_MAX, TXN_BYTES_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX};
use dlog_metadata::{Cond, EventKind, LeaseKeeper, LocalStore, MetaError, MetadataStore, Op, Version, Watch};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(key: &str, value: &str, cond: Cond) -> Op {
    Op::Put { key: key.into(), value: b(value), cond, lease: None }
}

/// A backend under test and what keeps it alive (temp dir, etcd process).
struct Backend<S> {
    store: Arc<S>,
    /// The shortest lease TTL the backend honours as asked (etcd: whole seconds, min 2 s).
    ttl: Duration,
    _guard: Box<dyn Any + Send>,
}

async fn next_event(watch: &mut Watch) -> dlog_metadata::Event {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => panic!("watch failed: {e}"),
        Err(_) => panic!("no event within 10 s"),
    }
}

async fn no_event(watch: &mut Watch, wait: Duration) {
    if let Ok(r) = tokio::time::timeout(wait, watch.next()).await {
        panic!("unexpected watch output {r:?}");
    }
}

mod cases {
    use super::*;

    pub(crate) async fn versions_and_conditions<S: MetadataStore>(s: &S) {
        assert_eq!(s.get("a").await.unwrap(), None);
        let v1 = s.create("a", b("1"), None).await.unwrap();
        let got = s.get("a").await.unwrap().unwrap();
        assert_eq!((got.value, got.version, got.created, got.lease), (b("1"), v1, v1, None));
        assert_eq!(s.create("a", b("x"), None).await, Err(MetaError::AlreadyExists("a".into())));
        let v2 = s.put_if("a", b("2"), v1).await.unwrap();
        assert!(v2 > v1, "revisions increase (MS1)");
        assert_eq!(
            s.put_if("a", b("3"), v1).await,
            Err(MetaError::VersionConflict { key: "a".into(), expected: Some(v1), actual: Some(v2) })
        );
        assert_eq!(
            s.put_if("missing", b("3"), v1).await,
            Err(MetaError::VersionConflict { key: "missing".into(), expected: Some(v1), actual: None })
        );
        let got = s.get("a").await.unwrap().unwrap();
        assert_eq!((got.value, got.version, got.created), (b("2"), v2, v1));
        assert_eq!(
            s.delete_if("a", v1).await,
            Err(MetaError::VersionConflict { key: "a".into(), expected: Some(v1), actual: Some(v2) })
        );
        let v3 = s.delete_if("a", v2).await.unwrap();
        assert!(v3 > v2);
        assert_eq!(s.get("a").await.unwrap(), None);
        assert_eq!(s.delete("a").await, Err(MetaError::NotFound("a".into())));
        // Re-created: a new creation version.
        let v4 = s.put("a", b("again")).await.unwrap();
        assert_eq!(s.get("a").await.unwrap().unwrap().created, v4);
    }

    pub(crate) async fn limits_are_refused_not_truncated<S: MetadataStore>(s: &S) {
        let big = Bytes::from(vec![7u8; VALUE_BYTES_MAX + 1]);
        assert!(matches!(s.put("big", big).await, Err(MetaError::Invalid(_))));
        let fits = Bytes::from(vec![7u8; VALUE_BYTES_MAX]);
        s.put("fits", fits.clone()).await.unwrap();
        assert_eq!(s.get("fits").await.unwrap().unwrap().value, fits);
        assert!(matches!(s.put(&"k".repeat(KEY_BYTES_MAX + 1), b("v")).await, Err(MetaError::Invalid(_))));
        assert!(matches!(s.put("", b("v")).await, Err(MetaError::Invalid(_))));
        let many = (0..=TXN_OPS_MAX).map(|i| put(&format!("m/{i}"), "v", Cond::Any)).collect();
        assert!(matches!(s.txn(many).await, Err(MetaError::Invalid(_))));
        let twice = vec![put("t", "1", Cond::Any), put("t", "2", Cond::Any)];
        assert!(matches!(s.txn(twice).await, Err(MetaError::Invalid(_))));
        assert!(matches!(s.txn(vec![]).await, Err(MetaError::Invalid(_))));
        assert!(matches!(s.put_if("v0", b("x"), Version(0)).await, Err(MetaError::Invalid(_))), "version 0");
        assert_eq!(s.get("v0").await.unwrap(), None);
        let half = Bytes::from(vec![1u8; TXN_BYTES_MAX / 2 + 1]);
        let heavy = vec![
            Op::Put { key: "h/1".into(), value: half.clone(), cond: Cond::Any, lease: None },
            Op::Put { key: "h/2".into(), value: half, cond: Cond::Any, lease: None },
        ];
        assert!(matches!(s.txn(heavy).await, Err(MetaError::Invalid(_))), "over TXN_BYTES_MAX");
        assert_eq!(s.get("big").await.unwrap(), None);
        assert_eq!(s.list("m/", None, 0).await.unwrap().items, vec![]);
    }

    pub(crate) async fn transactions_are_all_or_nothing<S: MetadataStore>(s: &S) {
        let v = s.txn(vec![put("t/a", "1", Cond::Absent), put("t/b", "1", Cond::Absent)]).await.unwrap();
        // The second operation fails: neither is applied, and the error names it.
        let r = s
            .txn(vec![
                put("t/a", "2", Cond::Version(v)),
                put("t/b", "2", Cond::Version(Version(v.0 + 100))),
                put("t/c", "2", Cond::Absent),
            ])
            .await;
        assert_eq!(
            r,
            Err(MetaError::VersionConflict {
                key: "t/b".into(),
                expected: Some(Version(v.0 + 100)),
                actual: Some(v)
            })
        );
        let r = s
            .txn(vec![put("t/c", "2", Cond::Absent), Op::Delete { key: "t/zz".into(), cond: Cond::Any }])
            .await;
        assert_eq!(r, Err(MetaError::NotFound("t/zz".into())));
        let r = s.txn(vec![put("t/c", "2", Cond::Absent), put("t/a", "2", Cond::Absent)]).await;
        assert_eq!(r, Err(MetaError::AlreadyExists("t/a".into())));
        let page = s.list("t/", None, 0).await.unwrap();
        let state: Vec<_> =
            page.items.iter().map(|(k, e)| (k.as_str(), e.value.clone(), e.version)).collect();
        assert_eq!(state, vec![("t/a", b("1"), v), ("t/b", b("1"), v)], "nothing applied");
        // All conditions hold: everything applies in one revision.
        let w = s
            .txn(vec![
                put("t/a", "2", Cond::Version(v)),
                Op::Delete { key: "t/b".into(), cond: Cond::Version(v) },
                put("t/c", "2", Cond::Absent),
            ])
            .await
            .unwrap();
        let page = s.list("t/", None, 0).await.unwrap();
        let state: Vec<_> = page.items.iter().map(|(k, e)| (k.as_str(), e.version)).collect();
        assert_eq!(state, vec![("t/a", w), ("t/c", w)]);
    }

    pub(crate) async fn concurrent_compare_and_set_has_one_winner<S: MetadataStore + 'static>(s: Arc<S>) {
        s.create("counter", b("0"), None).await.unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut wins = Vec::new();
                    for _ in 0..25 {
                        let current = s.get("counter").await.unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
                        match s.put_if("counter", b(&(n + 1).to_string()), current.version).await {
                            Ok(v) => wins.push((current.version, v)),
                            Err(MetaError::VersionConflict { .. }) => {}
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    wins
                })
            })
            .collect();
        let mut wins = Vec::new();
        for t in tasks {
            wins.extend(t.await.unwrap());
        }
        let value = s.get("counter").await.unwrap().unwrap().value;
        assert_eq!(std::str::from_utf8(&value).unwrap(), wins.len().to_string(), "every win counted once");
        wins.sort();
        assert!(wins.windows(2).all(|w| w[0].0 != w[1].0), "two winners for one version");
        assert!(!wins.is_empty());
        // A race to create: exactly one creator.
        let creators: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.create("owner", b(&i.to_string()), None).await })
            })
            .collect();
        let mut ok = 0;
        for c in creators {
            match c.await.unwrap() {
                Ok(_) => ok += 1,
                Err(MetaError::AlreadyExists(_)) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(ok, 1);
    }

    pub(crate) async fn listings_page_through_a_prefix<S: MetadataStore>(s: &S) {
        for i in 0..25 {
            s.create(&format!("logs/{i:03}"), b("x"), None).await.unwrap();
        }
        s.create("logz", b("x"), None).await.unwrap();
        s.create("log", b("x"), None).await.unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s.list("logs/", after.as_deref(), 10).await.unwrap();
            assert!(page.items.len() <= 10);
            seen.extend(page.items.iter().map(|(k, _)| k.clone()));
            after = page.items.last().map(|(k, _)| k.clone());
            if !page.more {
                break;
            }
        }
        let expected: Vec<_> = (0..25).map(|i| format!("logs/{i:03}")).collect();
        assert_eq!(seen, expected);
        assert_eq!(s.list("logs/", None, 0).await.unwrap().items.len(), 25, "limit 0 is no limit");
        let from_before = s.list("logs/", Some("a"), 5).await.unwrap();
        assert_eq!(from_before.items[0].0, "logs/000", "an `after` before the prefix starts at the prefix");
        let past = s.list("logs/", Some("logs/024"), 5).await.unwrap();
        assert!(past.items.is_empty() && !past.more);
        let (all, revision) = s.list_all("logs/").await.unwrap();
        assert_eq!(all.len(), 25);
        assert!(revision >= all.iter().map(|(_, e)| e.version).max().unwrap());
    }

    pub(crate) async fn watches_resume_without_gaps_or_repeats<S: MetadataStore>(s: &S) {
        let first = s.put("w/a", b("1")).await.unwrap();
        s.put("other", b("x")).await.unwrap();
        let mut watch = s.watch("w/", first).await.unwrap();
        let second = s.put("w/b", b("1")).await.unwrap();
        s.delete("w/a").await.unwrap();
        let seen: Vec<_> =
            [next_event(&mut watch).await, next_event(&mut watch).await, next_event(&mut watch).await]
                .into_iter()
                .map(|e| (e.kind, e.key, e.value))
                .collect();
        assert_eq!(
            seen,
            vec![
                (EventKind::Put, "w/a".to_string(), b("1")),
                (EventKind::Put, "w/b".to_string(), b("1")),
                (EventKind::Delete, "w/a".to_string(), Bytes::new()),
            ]
        );
        no_event(&mut watch, Duration::from_millis(200)).await;
        // Resume after dropping the watch: exactly the later events.
        let resume = watch.resume_from();
        assert!(resume > second);
        drop(watch);
        let v = s.put("w/c", b("1")).await.unwrap();
        s.put("w/c", b("2")).await.unwrap();
        let mut watch = s.watch("w/", resume).await.unwrap();
        let e = next_event(&mut watch).await;
        assert_eq!((e.key.as_str(), e.value.clone(), e.version), ("w/c", b("1"), v));
        assert_eq!(next_event(&mut watch).await.value, b("2"));
        no_event(&mut watch, Duration::from_millis(200)).await;
        // From 0: live only.
        let mut live = s.watch("w/", Version(0)).await.unwrap();
        let v = s.put("w/d", b("1")).await.unwrap();
        let e = next_event(&mut live).await;
        assert_eq!((e.key.as_str(), e.version), ("w/d", v));
        // From a future version: nothing before it.
        let mut future = s.watch("w/", Version(v.0 + 2)).await.unwrap();
        s.put("w/e", b("skipped")).await.unwrap();
        let v = s.put("w/e", b("seen")).await.unwrap();
        let e = next_event(&mut future).await;
        assert_eq!((e.value, e.version), (b("seen"), v));
    }

    pub(crate) async fn a_multi_key_revision_is_never_half_skipped<S: MetadataStore>(s: &S) {
        let mut watch = s.watch("m/", Version(0)).await.unwrap();
        let v = s
            .txn(vec![put("m/a", "1", Cond::Any), put("m/b", "1", Cond::Any), put("m/c", "1", Cond::Any)])
            .await
            .unwrap();
        let first = next_event(&mut watch).await;
        assert_eq!((first.key.as_str(), first.version), ("m/a", v));
        assert_eq!(watch.resume_from(), v, "mid-revision: resuming repeats the revision, never skips it");
        drop(watch);
        let mut watch = s.watch("m/", v).await.unwrap();
        let keys: Vec<String> =
            [next_event(&mut watch).await, next_event(&mut watch).await, next_event(&mut watch).await]
                .into_iter()
                .inspect(|e| assert_eq!(e.version, v))
                .map(|e| e.key)
                .collect();
        assert_eq!(keys, ["m/a", "m/b", "m/c"]);
        assert_eq!(watch.resume_from(), Version(v.0 + 1), "the whole revision seen: past it");
    }

    pub(crate) async fn large_values_list_and_watch<S: MetadataStore>(s: &S) {
        let from = s.put("big-marker", b("x")).await.unwrap();
        let mut watch = s.watch("big/", from).await.unwrap();
        let value = Bytes::from(vec![9u8; VALUE_BYTES_MAX]);
        for i in 0..6 {
            s.put(&format!("big/{i}"), value.clone()).await.unwrap();
        }
        let (all, _) = s.list_all("big/").await.unwrap();
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|(_, v)| v.value == value));
        for i in 0..6 {
            let e = next_event(&mut watch).await;
            assert_eq!((e.key, e.value.len()), (format!("big/{i}"), VALUE_BYTES_MAX));
        }
    }

    pub(crate) async fn many_events_reach_a_watch_in_order<S: MetadataStore + 'static>(s: Arc<S>) {
        let mut watch = s.watch("n/", Version(0)).await.unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in 0..50 {
                        s.put(&format!("n/{w}"), b(&i.to_string())).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let mut last = Version(0);
        let mut per_writer = [0u32; 4];
        for _ in 0..200 {
            let e = next_event(&mut watch).await;
            assert!(e.version > last, "revision order");
            last = e.version;
            let w: usize = e.key["n/".len()..].parse().unwrap();
            assert_eq!(e.value, b(&per_writer[w].to_string()), "each writer's events in its order");
            per_writer[w] += 1;
        }
        no_event(&mut watch, Duration::from_millis(200)).await;
    }

    pub(crate) async fn leases_bind_keys_and_expire<S: MetadataStore>(s: &S, ttl: Duration) {
        let lease = s.grant(ttl).await.unwrap();
        let mut watch = s.watch("l/", Version(0)).await.unwrap();
        s.txn(vec![Op::Put { key: "l/a".into(), value: b("1"), cond: Cond::Absent, lease: Some(lease) }])
            .await
            .unwrap();
        assert_eq!(s.get("l/a").await.unwrap().unwrap().lease, Some(lease));
        assert_eq!(next_event(&mut watch).await.kind, EventKind::Put);
        // Kept alive for twice its ttl: still there.
        for _ in 0..6 {
            tokio::time::sleep(ttl / 3).await;
            s.keep_alive(lease).await.unwrap();
        }
        assert!(s.get("l/a").await.unwrap().is_some(), "a kept-alive lease holds its keys");
        // Left alone: gone within a few ttls, with a Delete event.
        let e = next_event(&mut watch).await;
        assert_eq!((e.kind, e.key.as_str()), (EventKind::Delete, "l/a"));
        assert_eq!(s.get("l/a").await.unwrap(), None);
        assert_eq!(s.keep_alive(lease).await, Err(MetaError::LeaseExpired(lease)));
        let r = s
            .txn(vec![Op::Put { key: "l/b".into(), value: b("1"), cond: Cond::Any, lease: Some(lease) }])
            .await;
        assert!(matches!(r, Err(MetaError::LeaseExpired(_))), "{r:?}");
        assert_eq!(s.get("l/b").await.unwrap(), None);
    }

    pub(crate) async fn revoke_deletes_a_lease_keys_at_once<S: MetadataStore>(s: &S, ttl: Duration) {
        let lease = s.grant(ttl * 10).await.unwrap();
        let other = s.grant(ttl * 10).await.unwrap();
        let bound = |key: &str, lease| Op::Put {
            key: key.into(),
            value: b("1"),
            cond: Cond::Any,
            lease: Some(lease),
        };
        s.txn(vec![bound("r/a", lease), bound("r/b", lease), bound("r/c", other)]).await.unwrap();
        let v = s.revoke(lease).await.unwrap();
        let page = s.list("r/", None, 0).await.unwrap();
        assert_eq!(page.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["r/c"]);
        assert!(page.revision >= v);
        assert_eq!(s.revoke(lease).await, Err(MetaError::LeaseExpired(lease)));
        assert_eq!(s.keep_alive(lease).await, Err(MetaError::LeaseExpired(lease)));
        // Conditions are checked before leases, on every backend (as etcd does).
        let held = Op::Put { key: "r/c".into(), value: b("2"), cond: Cond::Absent, lease: Some(lease) };
        assert_eq!(s.txn(vec![held]).await, Err(MetaError::AlreadyExists("r/c".into())));
        s.revoke(other).await.unwrap();
    }

    pub(crate) async fn a_lease_keeper_holds_and_reports_loss<S: MetadataStore + 'static>(
        s: Arc<S>,
        ttl: Duration,
    ) {
        let mut keeper = LeaseKeeper::grant(s.clone(), ttl).await.unwrap();
        let op =
            Op::Put { key: "k/held".into(), value: b("1"), cond: Cond::Absent, lease: Some(keeper.id()) };
        s.txn(vec![op]).await.unwrap();
        tokio::time::sleep(ttl * 3).await;
        assert!(keeper.is_alive());
        assert!(s.get("k/held").await.unwrap().is_some(), "kept alive for three ttls");
        // Someone else ends the lease: the keeper says so at its next keep-alive.
        s.revoke(keeper.id()).await.unwrap();
        let lost = tokio::time::timeout(ttl * 2, keeper.lost()).await.expect("loss reported within two ttls");
        assert_eq!(lost, MetaError::LeaseExpired(keeper.id()));
        assert!(!keeper.is_alive());
    }
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn versions_and_conditions() {
                let b = $make.await;
                cases::versions_and_conditions(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn limits_are_refused_not_truncated() {
                let b = $make.await;
                cases::limits_are_refused_not_truncated(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn transactions_are_all_or_nothing() {
                let b = $make.await;
                cases::transactions_are_all_or_nothing(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_compare_and_set_has_one_winner() {
                let b = $make.await;
                cases::concurrent_compare_and_set_has_one_winner(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn listings_page_through_a_prefix() {
                let b = $make.await;
                cases::listings_page_through_a_prefix(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watches_resume_without_gaps_or_repeats() {
                let b = $make.await;
                cases::watches_resume_without_gaps_or_repeats(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_multi_key_revision_is_never_half_skipped() {
                let b = $make.await;
                cases::a_multi_key_revision_is_never_half_skipped(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_values_list_and_watch() {
                let b = $make.await;
                cases::large_values_list_and_watch(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn many_events_reach_a_watch_in_order() {
                let b = $make.await;
                cases::many_events_reach_a_watch_in_order(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn leases_bind_keys_and_expire() {
                let b = $make.await;
                cases::leases_bind_keys_and_expire(&*b.store, b.ttl).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_lease_keeper_holds_and_reports_loss() {
                let b = $make.await;
                cases::a_lease_keeper_holds_and_reports_loss(b.store.clone(), b.ttl).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revoke_deletes_a_lease_keys_at_once() {
                let b = $make.await;
                cases::revoke_deletes_a_lease_keys_at_once(&*b.store, b.ttl).await;
            }
        }
    };
}

async fn local_disk() -> Backend<LocalStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    Backend { store, ttl: Duration::from_millis(300), _guard: Box::new(dir) }
}

async fn memory() -> Backend<LocalStore> {
    Backend {
        store: Arc::new(LocalStore::in_memory().unwrap()),
        ttl: Duration::from_millis(300),
        _guard: Box::new(()),
    }
}

suite!(local_disk, local_disk());
suite!(memory, memory());

async fn remote() -> Backend<dlog_metadata::RemoteStore> {
    let served = Arc::new(LocalStore::in_memory().unwrap());
    let server = dlog_metadata::MetadataServer::start(served, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let store =
        dlog_metadata::RemoteStore::connect(&format!("dlog://{}", server.local_addr())).await.unwrap();
    Backend { store: Arc::new(store), ttl: Duration::from_millis(300), _guard: Box::new(server) }
}

suite!(remote, remote());

#[cfg(feature = "etcd")]
async fn etcd() -> Backend<dlog_metadata::EtcdStore> {
    let server = dlog_metadata::etcd_server::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = dlog_metadata::EtcdStore::connect(&server.uri("conformance")).await.unwrap();
    Backend { store: Arc::new(store), ttl: Duration::from_secs(2), _guard: Box::new(server) }
}

#[cfg(feature = "etcd")]
suite!(etcd, etcd());
