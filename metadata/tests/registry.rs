//! The cluster's identity, bookie registration and cookies, the under-replication queue and
//! the auditor election (metadata/src/{cluster,bookie_registry,replication_queue}.rs), each
//! case on the embedded store in memory and, with the `etcd` feature, on a real etcd.
//! Without an `etcd` binary the etcd cases fail; they never skip.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::cluster::{is_random_id, random_id};
use dlog_metadata::schema::{self, BookieInfo, Cookie};
use dlog_metadata::{
    BookieRegistry, Cluster, EventKind, LeaseKeeper, MetaError, MetadataStore, ReplicationQueue, Version,
    Watch,
};

/// A backend under test and what keeps it alive (etcd process).
struct Backend<S> {
    store: Arc<S>,
    /// The shortest lease TTL the backend honours as asked (etcd: whole seconds, min 2 s).
    ttl: Duration,
    _guard: Box<dyn Any + Send>,
}

fn info(endpoint: &str) -> BookieInfo {
    BookieInfo { endpoint: endpoint.into(), shards: 2, version: "test".into(), ..Default::default() }
}

fn cookie(id: &str) -> Cookie {
    Cookie {
        bookie_id: id.into(),
        instance_id: "0123456789abcdef0123456789abcdef".into(),
        journal_dirs: vec!["/data/journal".into()],
        ledger_dirs: vec!["/data/l0".into(), "/data/l1".into()],
        disk_id: "fedcba9876543210fedcba9876543210".into(),
    }
}

async fn next_event(watch: &mut Watch) -> dlog_metadata::Event {
    match tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => panic!("watch failed: {e}"),
        Err(_) => panic!("no event within 20 s"),
    }
}

/// Registered ids on each path, from the listings (which must all decode here).
async fn registered<S: MetadataStore>(r: &BookieRegistry<S>) -> (Vec<String>, Vec<String>) {
    let ids = |l: Vec<Result<dlog_metadata::RegisteredBookie, MetaError>>| {
        l.into_iter().map(|b| b.unwrap().id).collect::<Vec<_>>()
    };
    (ids(r.writable().await.unwrap()), ids(r.read_only().await.unwrap()))
}

mod cases {
    use super::*;

    pub(crate) async fn the_cluster_is_initialised_once<S: MetadataStore + 'static>(store: Arc<S>) {
        let cluster = Cluster::new(store.clone());
        assert_eq!(cluster.get().await.unwrap(), None);
        let inits: Vec<_> = (0..6)
            .map(|_| {
                let cluster = cluster.clone();
                tokio::spawn(async move { cluster.init().await.unwrap() })
            })
            .collect();
        let mut ids = BTreeSet::new();
        for init in inits {
            ids.insert(init.await.unwrap().instance_id);
        }
        assert_eq!(ids.len(), 1, "concurrent inits answer one identity: {ids:?}");
        let id = ids.pop_first().unwrap();
        assert!(is_random_id(&id), "{id}");
        assert_eq!(cluster.get().await.unwrap().unwrap().instance_id, id);
        assert_eq!(cluster.init().await.unwrap().instance_id, id, "a later init changes nothing");
        // A stored value of the wrong shape is reported, not trusted.
        store.put(schema::CLUSTER, Bytes::from_static(b"\x01garbage")).await.unwrap();
        let r = cluster.get().await;
        assert!(matches!(&r, Err(MetaError::Corrupt(m)) if m.contains(schema::CLUSTER)), "{r:?}");
    }

    pub(crate) async fn registration_refuses_a_reused_id_on_either_path<S: MetadataStore + 'static>(
        store: Arc<S>,
    ) {
        let registry = BookieRegistry::new(store.clone());
        let (l1, l2) = (
            store.grant(Duration::from_secs(60)).await.unwrap(),
            store.grant(Duration::from_secs(60)).await.unwrap(),
        );
        // No cookie yet: refused (the cookie guards registration).
        assert_eq!(
            registry.register("b1", &info("h:1"), l1, false).await,
            Err(MetaError::NotFound(schema::cookie_key("b1")))
        );
        registry.create_cookie(&cookie("b1")).await.unwrap();
        let v = registry.register("b1", &info("h:1"), l1, false).await.unwrap();
        let writable = schema::bookie_key("b1", false);
        assert_eq!(
            registry.register("b1", &info("h:2"), l2, false).await,
            Err(MetaError::AlreadyExists(writable.clone()))
        );
        assert_eq!(
            registry.register("b1", &info("h:2"), l2, true).await,
            Err(MetaError::AlreadyExists(writable.clone()))
        );
        assert_eq!(
            registry.register("b1", &info("h:1"), l1, true).await,
            Err(MetaError::AlreadyExists(writable))
        );
        assert_eq!(registry.register("b1", &info("h:1"), l1, false).await, Ok(v), "a retry by the holder");
        let held = registry.bookie("b1").await.unwrap().unwrap();
        assert_eq!((held.read_only, held.info, held.version, held.lease), (false, info("h:1"), v, Some(l1)));
        assert!(matches!(registry.register("a/b", &info("h"), l1, false).await, Err(MetaError::Invalid(_))));

        // Races: per id, two registrations on each path, each with its own lease: one wins.
        for round in 0..20 {
            let id = format!("race-{round}");
            registry.create_cookie(&cookie(&id)).await.unwrap();
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    let (registry, id) = (registry.clone(), id.clone());
                    tokio::spawn(async move {
                        let lease = registry.store().grant(Duration::from_secs(60)).await.unwrap();
                        registry.register(&id, &info(&format!("h:{i}")), lease, i % 2 == 1).await
                    })
                })
                .collect();
            let mut won = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => won += 1,
                    Err(MetaError::AlreadyExists(_)) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            assert_eq!(won, 1, "round {round}");
            let (w, r) = registered(&registry).await;
            let on_paths = w.iter().chain(&r).filter(|b| **b == id).count();
            assert_eq!(on_paths, 1, "round {round}: {w:?} {r:?}");
        }
    }

    pub(crate) async fn registration_moves_atomically<S: MetadataStore + 'static>(store: Arc<S>) {
        let registry = BookieRegistry::new(store.clone());
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        let other = store.grant(Duration::from_secs(60)).await.unwrap();
        registry.create_cookie(&cookie("b1")).await.unwrap();
        assert_eq!(
            registry.set_read_only("b1", &info("h"), lease, true).await,
            Err(MetaError::NotFound(schema::bookie_key("b1", false)))
        );
        let v = registry.register("b1", &info("h:1"), lease, false).await.unwrap();
        let mut watch = registry.watch_bookies(Version(v.0 + 1)).await.unwrap();
        let moved = registry.set_read_only("b1", &info("h:1 full"), lease, true).await.unwrap();
        assert_eq!(registered(&registry).await, (vec![], vec!["b1".to_string()]));
        let held = registry.bookie("b1").await.unwrap().unwrap();
        assert_eq!((held.read_only, held.info, held.lease), (true, info("h:1 full"), Some(lease)));
        // One transaction: the delete and the create carry the same revision.
        let (a, b) = (next_event(&mut watch).await, next_event(&mut watch).await);
        let mut seen = vec![(a.kind, a.key, a.version), (b.kind, b.key, b.version)];
        seen.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(
            seen,
            vec![
                (EventKind::Put, schema::bookie_key("b1", true), moved),
                (EventKind::Delete, schema::bookie_key("b1", false), moved),
            ]
        );
        assert_eq!(schema::bookie_of(&seen[0].1), Some(("b1", true)));
        // Only the holder's lease moves it; moving to where it is updates in place.
        let read_only = schema::bookie_key("b1", true);
        assert_eq!(
            registry.set_read_only("b1", &info("x"), other, false).await,
            Err(MetaError::AlreadyExists(read_only))
        );
        let v = registry.set_read_only("b1", &info("h:1 fuller"), lease, true).await.unwrap();
        assert_eq!(registry.bookie("b1").await.unwrap().unwrap().version, v);
        registry.set_read_only("b1", &info("h:1"), lease, false).await.unwrap();
        assert_eq!(registered(&registry).await, (vec!["b1".to_string()], vec![]));

        // Moves back and forth race registrations by another lease: none ever gets in.
        let done = Arc::new(AtomicBool::new(false));
        let intruder = {
            let (registry, done) = (registry.clone(), done.clone());
            tokio::spawn(async move {
                let mut tries = 0u32;
                while !done.load(Ordering::Relaxed) {
                    tries += 1;
                    match registry.register("b1", &info("intruder"), other, tries.is_multiple_of(2)).await {
                        // Refused, or gave up after conflicting with every move: not registered.
                        Err(MetaError::AlreadyExists(_) | MetaError::VersionConflict { .. }) => {}
                        r => panic!("an intruder registered during the moves: {r:?}"),
                    }
                }
                tries
            })
        };
        for i in 0..40 {
            registry.set_read_only("b1", &info("h:1"), lease, i % 2 == 0).await.unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(intruder.await.unwrap() > 0);
        let held = registry.bookie("b1").await.unwrap().unwrap();
        assert_eq!((held.read_only, held.lease), (false, Some(lease)), "40 moves end writable");
        let (w, r) = registered(&registry).await;
        assert_eq!(w.len() + r.len(), 1);
        // Deregistration removes it; a second one finds nothing.
        registry.deregister("b1").await.unwrap();
        assert_eq!(registered(&registry).await, (vec![], vec![]));
        assert_eq!(
            registry.deregister("b1").await,
            Err(MetaError::NotFound(schema::bookie_key("b1", false)))
        );
    }

    pub(crate) async fn reads_racing_moves_see_one_registration<S: MetadataStore + 'static>(store: Arc<S>) {
        let registry = Arc::new(BookieRegistry::new(store.clone()));
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        registry.create_cookie(&cookie("b1")).await.unwrap();
        registry.register("b1", &info("h:1"), lease, false).await.unwrap();
        let mover = {
            let registry = registry.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    registry.set_read_only("b1", &info("h:1"), lease, i % 2 == 0).await.unwrap();
                }
            })
        };
        let mut reads = 0;
        while !mover.is_finished() {
            match registry.bookie("b1").await {
                Ok(Some(_)) => reads += 1,
                other => panic!("a healthy, moving bookie read as {other:?}"),
            }
        }
        mover.await.unwrap();
        assert!(reads > 0);
    }

    pub(crate) async fn registration_vanishes_with_its_lease<S: MetadataStore + 'static>(
        store: Arc<S>,
        ttl: Duration,
    ) {
        let registry = BookieRegistry::new(store.clone());
        registry.create_cookie(&cookie("b1")).await.unwrap();
        let keeper = LeaseKeeper::grant(store.clone(), ttl).await.unwrap();
        let v = registry.register("b1", &info("h:1"), keeper.id(), false).await.unwrap();
        let mut watch = registry.watch_bookies(Version(v.0 + 1)).await.unwrap();
        tokio::time::sleep(ttl * 3).await;
        assert_eq!(registered(&registry).await.0, vec!["b1".to_string()], "kept alive for three ttls");
        drop(keeper); // stops keep-alives without revoking: the lease expires
        let e = next_event(&mut watch).await;
        assert_eq!((e.kind, e.key), (EventKind::Delete, schema::bookie_key("b1", false)));
        assert_eq!(registered(&registry).await, (vec![], vec![]));
        // The id is free again, on either path, for a new lease.
        let lease = store.grant(ttl * 10).await.unwrap();
        registry.register("b1", &info("h:1"), lease, true).await.unwrap();
        assert_eq!(registered(&registry).await.1, vec!["b1".to_string()]);
        store.revoke(lease).await.unwrap();
        assert_eq!(registered(&registry).await, (vec![], vec![]));
        // Registering with a lease that is gone: refused, nothing written.
        let r = registry.register("b1", &info("h:1"), lease, false).await;
        assert!(matches!(r, Err(MetaError::LeaseExpired(_))), "{r:?}");
        assert_eq!(registered(&registry).await, (vec![], vec![]));
    }

    pub(crate) async fn cookie_checks_list_every_difference<S: MetadataStore + 'static>(store: Arc<S>) {
        let registry = BookieRegistry::new(store.clone());
        assert_eq!(registry.cookie("b1").await.unwrap(), None);
        assert_eq!(
            registry.check_cookie("b1", &cookie("b1")).await,
            Err(MetaError::NotFound(schema::cookie_key("b1")))
        );
        let v = registry.create_cookie(&cookie("b1")).await.unwrap();
        assert_eq!(
            registry.create_cookie(&cookie("b1")).await,
            Err(MetaError::AlreadyExists(schema::cookie_key("b1")))
        );
        assert_eq!(registry.cookie("b1").await.unwrap(), Some((cookie("b1"), v)));
        assert_eq!(registry.check_cookie("b1", &cookie("b1")).await, Ok(v));

        let check = |local: Cookie| {
            let registry = registry.clone();
            async move {
                match registry.check_cookie("b1", &local).await {
                    Err(MetaError::Invalid(message)) => message,
                    r => panic!("a mismatch answered {r:?}"),
                }
            }
        };
        let other_cluster = Cookie { instance_id: random_id(), ..cookie("b1") };
        let m = check(other_cluster.clone()).await;
        assert!(
            m.contains("instance id")
                && m.contains("another cluster")
                && m.contains(&other_cluster.instance_id),
            "{m}"
        );
        let m =
            check(Cookie { ledger_dirs: vec!["/data/l0".into(), "/data/l2".into()], ..cookie("b1") }).await;
        assert!(
            m.contains("\"/data/l1\"") && m.contains("\"/data/l2\"") && !m.contains("instance id"),
            "{m}"
        );
        let m = check(Cookie { disk_id: random_id(), ..cookie("b1") }).await;
        assert!(m.contains("disk id") && m.contains("reformatted or swapped"), "{m}");
        // Everything at once: each difference is listed.
        let all = Cookie {
            instance_id: random_id(),
            journal_dirs: vec!["/other/journal".into()],
            ledger_dirs: vec!["/data/l1".into(), "/data/l0".into()],
            disk_id: random_id(),
            ..cookie("b1")
        };
        let m = check(all).await;
        for part in [
            "instance id",
            "journal dirs",
            "\"/other/journal\"",
            "ledger dirs: configured in another order",
            "disk id",
        ] {
            assert!(m.contains(part), "{part:?} missing from {m}");
        }
        assert_eq!(m.matches("; ").count(), 4, "five differences: {m}");

        // An operator adds a disk: compare-and-set on the version read.
        let grown = Cookie {
            ledger_dirs: vec!["/data/l0".into(), "/data/l1".into(), "/data/l2".into()],
            ..cookie("b1")
        };
        let v2 = registry.update_cookie(&grown, v).await.unwrap();
        assert!(matches!(
            registry.update_cookie(&cookie("b1"), v).await,
            Err(MetaError::VersionConflict { .. })
        ));
        assert_eq!(registry.check_cookie("b1", &grown).await, Ok(v2));
        // A registration changes the cookie's version (it is the registration guard).
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        registry.register("b1", &info("h"), lease, false).await.unwrap();
        let (stored, v3) = registry.cookie("b1").await.unwrap().unwrap();
        assert_eq!(stored, grown, "the value is unchanged");
        assert!(v3 > v2);
        assert!(matches!(
            registry.update_cookie(&cookie("b1"), v2).await,
            Err(MetaError::VersionConflict { .. })
        ));
        assert!(matches!(
            registry.create_cookie(&Cookie { disk_id: "x".into(), ..cookie("b2") }).await,
            Err(MetaError::Invalid(_))
        ));
    }

    pub(crate) async fn listings_report_undecodable_entries<S: MetadataStore + 'static>(store: Arc<S>) {
        let registry = BookieRegistry::new(store.clone());
        let queue = ReplicationQueue::new(store.clone());
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        for id in ["a", "c"] {
            registry.create_cookie(&cookie(id)).await.unwrap();
            registry.register(id, &info(id), lease, false).await.unwrap();
        }
        store.put(&schema::bookie_key("b", false), Bytes::from_static(b"\x07newer format")).await.unwrap();
        let listed = registry.writable().await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].as_ref().unwrap().id, "a");
        // Reported in place, naming the key.
        assert!(
            matches!(&listed[1], Err(MetaError::Corrupt(m)) if m.contains("bookies/writable/b")),
            "{listed:?}"
        );
        assert_eq!(listed[2].as_ref().unwrap().id, "c");
        queue.mark_under_replicated(1, &["a".into()]).await.unwrap();
        store.put(&schema::under_replicated_key(2), Bytes::new()).await.unwrap();
        let listed = queue.under_replicated().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].as_ref().unwrap().segment, 1);
        let key = schema::under_replicated_key(2);
        assert!(matches!(&listed[1], Err(MetaError::Corrupt(m)) if m.contains(&key)), "{listed:?}");
    }

    pub(crate) async fn auditor_election_has_one_winner_and_a_standby_takes_over<
        S: MetadataStore + 'static,
    >(
        store: Arc<S>,
    ) {
        let queue = ReplicationQueue::new(store.clone());
        assert!(queue.auditor().await.unwrap().is_none());
        let mut leases = Vec::new();
        for _ in 0..5 {
            leases.push(store.grant(Duration::from_secs(60)).await.unwrap());
        }
        let candidates: Vec<_> = leases
            .iter()
            .enumerate()
            .map(|(i, &lease)| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    (i, queue.try_become_auditor(&format!("auditor-{i}"), lease).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for c in candidates {
            let (i, won) = c.await.unwrap();
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let first = winners[0];
        let held = queue.auditor().await.unwrap().unwrap();
        assert_eq!((held.claim.owner, held.lease), (format!("auditor-{first}"), Some(leases[first])));
        assert!(queue.try_become_auditor("again", leases[first]).await.unwrap(), "the holder retrying");
        assert!(!queue.resign_auditor(leases[(first + 1) % 5]).await.unwrap(), "only the holder resigns");

        // Standbys wait for a vacancy and try again.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let standbys: Vec<_> = (0..5)
            .filter(|&i| i != first)
            .map(|i| {
                let (queue, tx, lease) = (queue.clone(), tx.clone(), leases[i]);
                tokio::spawn(async move {
                    loop {
                        if queue.try_become_auditor(&format!("auditor-{i}"), lease).await.unwrap() {
                            tx.send(i).unwrap();
                            return;
                        }
                        let mut watch = queue.watch_auditor().await.unwrap();
                        watch.vacant().await.unwrap();
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "no standby takes over while the auditor holds its lease");
        store.revoke(leases[first]).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
        assert_ne!(second, first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "exactly one standby took over");
        let held = queue.auditor().await.unwrap().unwrap();
        assert_eq!((held.claim.owner, held.lease), (format!("auditor-{second}"), Some(leases[second])));
        // It resigns: another standby takes over.
        assert!(queue.resign_auditor(leases[second]).await.unwrap());
        let third = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
        assert!(third != first && third != second);
        for s in standbys {
            s.abort();
        }
    }

    pub(crate) async fn concurrent_claims_have_one_winner<S: MetadataStore + 'static>(store: Arc<S>) {
        let queue = ReplicationQueue::new(store.clone());
        let lock = schema::under_replicated_lock_key(7);
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            queue.claim(7, "w", lease).await,
            Err(MetaError::NotFound(schema::under_replicated_key(7)))
        );
        assert_eq!(queue.claimed(7).await.unwrap(), None, "a claim on nothing is not left behind");
        let v = queue.mark_under_replicated(7, &["b1".into()]).await.unwrap();
        let mut leases = Vec::new();
        for _ in 0..6 {
            leases.push(store.grant(Duration::from_secs(60)).await.unwrap());
        }
        let workers: Vec<_> = leases
            .iter()
            .enumerate()
            .map(|(i, &lease)| {
                let queue = queue.clone();
                tokio::spawn(async move { (i, queue.claim(7, &format!("worker-{i}"), lease).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for w in workers {
            match w.await.unwrap() {
                (i, Ok(entry)) => {
                    assert_eq!((entry.segment, entry.missing, entry.version), (7, vec!["b1".to_string()], v));
                    winners.push(i);
                }
                (_, Err(e)) => assert_eq!(e, MetaError::AlreadyExists(lock.clone())),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let first = winners[0];
        let held = queue.claimed(7).await.unwrap().unwrap();
        assert_eq!((held.claim.owner, held.lease), (format!("worker-{first}"), Some(leases[first])));
        assert!(queue.claim(7, "again", leases[first]).await.is_ok(), "the holder retrying");
        // Release: only by the holder; then another may claim.
        let next = (first + 1) % 6;
        assert!(!queue.release(7, leases[next]).await.unwrap());
        assert!(queue.release(7, leases[first]).await.unwrap());
        assert!(!queue.release(7, leases[first]).await.unwrap(), "released once");
        queue.claim(7, "next", leases[next]).await.unwrap();
        // A claim vanishes with its worker's lease.
        store.revoke(leases[next]).await.unwrap();
        assert_eq!(queue.claimed(7).await.unwrap(), None);
        queue.claim(7, "third", leases[first]).await.unwrap();
    }

    pub(crate) async fn complete_removes_entry_and_claim<S: MetadataStore + 'static>(store: Arc<S>) {
        let queue = ReplicationQueue::new(store.clone());
        let lease = store.grant(Duration::from_secs(60)).await.unwrap();
        assert!(matches!(queue.mark_under_replicated(3, &[]).await, Err(MetaError::Invalid(_))));
        assert!(matches!(queue.mark_under_replicated(3, &["a/b".into()]).await, Err(MetaError::Invalid(_))));
        let v1 = queue.mark_under_replicated(3, &["b2".into(), "b1".into(), "b2".into()]).await.unwrap();
        let first = queue.queued(3).await.unwrap().unwrap();
        assert_eq!((first.missing.clone(), first.version), (vec!["b1".to_string(), "b2".to_string()], v1));
        assert_eq!(
            queue.mark_under_replicated(3, &["b1".into()]).await.unwrap(),
            v1,
            "nothing new: unchanged"
        );

        let claimed = queue.claim(3, "w", lease).await.unwrap();
        // The auditor finds another missing bookie while the worker works: completing the
        // entry it read fails, and nothing is removed.
        let v2 = queue.mark_under_replicated(3, &["b3".into()]).await.unwrap();
        let r = queue.complete(3, claimed.version).await;
        assert!(
            matches!(&r, Err(MetaError::VersionConflict { key, .. }) if *key == schema::under_replicated_key(3)),
            "{r:?}"
        );
        let entry = queue.queued(3).await.unwrap().unwrap();
        assert_eq!(entry.missing, vec!["b1".to_string(), "b2".to_string(), "b3".to_string()]);
        assert_eq!((entry.since_ms, entry.version), (first.since_ms, v2), "merged, first marking's time");
        assert!(queue.claimed(3).await.unwrap().is_some(), "the claim stays");
        // Completing the entry as it is now removes it and the claim, in one revision.
        let mut watch = store.watch("underreplicated", Version(v2.0 + 1)).await.unwrap();
        let done = queue.complete(3, v2).await.unwrap();
        for _ in 0..2 {
            let e = next_event(&mut watch).await;
            assert_eq!((e.kind, e.version), (EventKind::Delete, done));
        }
        assert_eq!(queue.queued(3).await.unwrap(), None);
        assert_eq!(queue.claimed(3).await.unwrap(), None);
        assert_eq!(queue.under_replicated().await.unwrap(), vec![]);
        assert!(queue.complete(3, v2).await.is_err(), "completed once");
        // Without a claim (its worker's lease ended), complete still removes the entry.
        let v = queue.mark_under_replicated(4, &["b1".into()]).await.unwrap();
        queue.complete(4, v).await.unwrap();
        assert_eq!(queue.queued(4).await.unwrap(), None);

        // Concurrent markings of one segment merge: every bookie ends in the list.
        let auditors: Vec<_> = (0..6)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for j in 0..5 {
                        queue.mark_under_replicated(9, &[format!("b{i}-{j}")]).await.unwrap();
                    }
                })
            })
            .collect();
        for a in auditors {
            a.await.unwrap();
        }
        let listed = queue.under_replicated().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].as_ref().unwrap().missing.len(), 30, "{listed:?}");
    }
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_cluster_is_initialised_once() {
                let b = $make.await;
                cases::the_cluster_is_initialised_once(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn registration_refuses_a_reused_id_on_either_path() {
                let b = $make.await;
                cases::registration_refuses_a_reused_id_on_either_path(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reads_racing_moves_see_one_registration() {
                let b = $make.await;
                cases::reads_racing_moves_see_one_registration(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn registration_moves_atomically() {
                let b = $make.await;
                cases::registration_moves_atomically(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn registration_vanishes_with_its_lease() {
                let b = $make.await;
                cases::registration_vanishes_with_its_lease(b.store.clone(), b.ttl).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cookie_checks_list_every_difference() {
                let b = $make.await;
                cases::cookie_checks_list_every_difference(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn listings_report_undecodable_entries() {
                let b = $make.await;
                cases::listings_report_undecodable_entries(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn auditor_election_has_one_winner_and_a_standby_takes_over() {
                let b = $make.await;
                cases::auditor_election_has_one_winner_and_a_standby_takes_over(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_claims_have_one_winner() {
                let b = $make.await;
                cases::concurrent_claims_have_one_winner(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn complete_removes_entry_and_claim() {
                let b = $make.await;
                cases::complete_removes_entry_and_claim(b.store.clone()).await;
            }
        }
    };
}

async fn memory() -> Backend<dlog_metadata::LocalStore> {
    Backend {
        store: Arc::new(dlog_metadata::LocalStore::in_memory().unwrap()),
        ttl: Duration::from_millis(300),
        _guard: Box::new(()),
    }
}

suite!(memory, memory());

#[cfg(feature = "etcd")]
async fn etcd() -> Backend<dlog_metadata::EtcdStore> {
    let server = dlog_metadata::etcd_server::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = dlog_metadata::EtcdStore::connect(&server.uri("registry")).await.unwrap();
    Backend { store: Arc::new(store), ttl: Duration::from_secs(2), _guard: Box::new(server) }
}

#[cfg(feature = "etcd")]
suite!(etcd, etcd());
