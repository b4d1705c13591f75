//! Autorecovery (`dlog_replication::autorecovery`) against real bookie servers in this process,
//! registered in an embedded metadata store (the fixture of tests/replication.rs):
//! - a bookie stopped for good is found lost after the grace, its segments (closed and striped,
//!   closed with full write sets, one left open by an idle writer) are queued, copied and
//!   changed in the metadata, and every acknowledged entry then reads back with its bytes from
//!   every member of its write set, none of them the lost bookie, with nothing past the ends;
//!   the auditor and two workers share the work, skipping values that do not decode;
//! - an entry no member can supply keeps its segment queued, unchanged, until a copy is back;
//! - a bookie that comes back within the grace is never queued (and one that stays away is);
//! - one auditor at a time, and a standby takes over when it stops.

use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::schema::{self, SegmentState};
use dlog_metadata::{AnyStore, MetadataStore, ReplicationQueue};
use dlog_protocol::{Request, Response, Status};
use dlog_replication::autorecovery::{Autorecovery, AutorecoveryConfig, AutorecoveryStats};
use dlog_replication::client::{ReplicationClient, ReplicationConfig, SegmentHandle};
use dlog_replication::entry_envelope;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::transport::{ClientConfig, ClientPool};

const KEY: &[u8] = b"autorecovery-test-key";

#[path = "support/cluster.rs"]
mod cluster;

use cluster::Cluster;

impl Cluster {
    fn client(&self) -> ReplicationClient<AnyStore> {
        let config = ReplicationConfig {
            transport: ClientConfig { request_timeout: Duration::from_secs(2), ..ClientConfig::default() },
            ..ReplicationConfig::default()
        };
        ReplicationClient::new(self.store.clone(), self.runtime.handle().clone(), config).unwrap()
    }

    fn queue(&self) -> Vec<(u64, Vec<String>)> {
        let queue = ReplicationQueue::new(self.store.clone());
        let entries = self.runtime.block_on(queue.under_replicated()).unwrap();
        entries.into_iter().filter_map(Result::ok).map(|q| (q.segment, q.missing)).collect()
    }

    /// Checks a closed segment after re-replication: every entry up to the end is on every
    /// member of its write set (all live, none `lost`) with the expected bytes, the length
    /// adds up, and the entry after the end is on no member of its write set.
    fn check_replicated(&self, segment: u64, expected: &[Bytes], lost: &str) {
        let pool = ClientPool::new(ClientConfig::default()).unwrap();
        let meta = self.segment(segment);
        let SegmentState::Closed { last_entry_id, length } = meta.state else {
            panic!("segment {segment} is not closed: {meta:?}")
        };
        assert_eq!(last_entry_id, (expected.len() as u64).checked_sub(1), "segment {segment}'s end");
        assert!(!meta.ensembles.values().flatten().any(|b| b == lost), "{lost} still named: {meta:?}");
        let quorum = QuorumSizes::new(
            meta.ensemble_size as usize,
            meta.write_quorum_size as usize,
            meta.ack_quorum_size as usize,
        )
        .unwrap();
        let read = |bookie: &str, entry: u64| {
            let addr = self.addr_of(bookie).unwrap_or_else(|| panic!("{bookie} is not live"));
            pool.submit(addr, Request::Read { segment, entry, fence: None }).wait().unwrap()
        };
        let mut total = 0;
        for (entry, want) in (0u64..).zip(expected) {
            let ensemble = meta.ensemble_at(entry);
            for index in quorum.write_set(entry).iter() {
                let Response::Read { payload, .. } = read(&ensemble[index], entry) else {
                    panic!("segment {segment} entry {entry} is not on {}", ensemble[index])
                };
                let (_, bytes) = entry_envelope::decode(segment, entry, &payload).expect("an intact copy");
                assert_eq!(&bytes, want, "segment {segment} entry {entry} on {}", ensemble[index]);
            }
            total += want.len() as u64;
        }
        assert_eq!(total, length, "segment {segment}'s length");
        let past = expected.len() as u64;
        let ensemble = meta.ensemble_at(past);
        for index in quorum.write_set(past).iter() {
            match read(&ensemble[index], past) {
                Response::Refused { status: Status::NoSuchEntry | Status::NoSuchSegment, .. } => {}
                other => {
                    panic!("segment {segment}: entry {past} past the end on {}: {other:?}", ensemble[index])
                }
            }
        }
        pool.close();
    }
}

#[expect(clippy::disallowed_methods, reason = "tests wait on real servers and a real clock")]
fn sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// Polls `done` every 50 ms for up to `limit`; whether it became true.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let step = Duration::from_millis(50);
    for _ in 0..limit.as_millis() / step.as_millis() {
        if done() {
            return true;
        }
        sleep(step);
    }
    done()
}

fn payload(segment: u64, i: u64) -> Bytes {
    Bytes::from(format!("segment-{segment}-record-{i:06}-").repeat(1 + (i % 5) as usize))
}

/// Writes `count` entries to a new segment at the given quorum sizes; its handle and payloads.
fn write(
    cluster: &Cluster,
    client: &ReplicationClient<AnyStore>,
    quorum: (usize, usize, usize),
    count: u64,
) -> (SegmentHandle, Vec<Bytes>) {
    let quorum = QuorumSizes::new(quorum.0, quorum.1, quorum.2).unwrap();
    let handle =
        cluster.runtime.block_on(client.create_segment(quorum, Bytes::from_static(KEY), None)).unwrap();
    let payloads: Vec<Bytes> = (0..count).map(|i| payload(handle.id(), i)).collect();
    let adds: Vec<_> = payloads.iter().map(|p| handle.add(p.clone())).collect();
    cluster.runtime.block_on(async {
        for (i, add) in (0u64..).zip(adds) {
            assert_eq!(add.await, Ok(i));
        }
    });
    (handle, payloads)
}

fn config(owner: &str) -> AutorecoveryConfig {
    let mut config = AutorecoveryConfig::new(owner);
    config.lease_ttl = Duration::from_secs(2);
    config.lost_bookie_grace = Duration::from_millis(500);
    config.open_segment_grace = Duration::from_secs(1);
    config.scan_interval = Duration::from_millis(500);
    config.retry_backoff = Duration::from_millis(300);
    config.retry_delay = Duration::from_millis(50);
    config.recovery_timeout = Duration::from_secs(10);
    config.replication.transport.request_timeout = Duration::from_secs(2);
    config
}

#[test]
fn a_lost_bookie_is_re_replicated() {
    let mut cluster = Cluster::start(5);
    let client = cluster.client();
    // The open segment: its writer stays idle, so only the worker's recovery closes it.
    let (open, open_payloads) = write(&cluster, &client, (3, 3, 2), 150);
    let lost = cluster.segment(open.id()).current_ensemble()[0].clone();
    // Closed segments, striped (Qw=2) and not (Qw=3), until at least four name `lost`.
    let mut closed = Vec::new();
    for round in 0..40u64 {
        if closed.iter().filter(|(id, _)| cluster.segment(*id).ensembles[&0].contains(&lost)).count() >= 4 {
            break;
        }
        let quorum = if round % 2 == 0 { (3, 2, 2) } else { (3, 3, 2) };
        let (handle, payloads) = write(&cluster, &client, quorum, 100 + round * 7);
        cluster.runtime.block_on(handle.close()).unwrap();
        closed.push((handle.id(), payloads));
    }
    let (empty, _) = write(&cluster, &client, (3, 2, 2), 0);
    cluster.runtime.block_on(empty.close()).unwrap();
    closed.push((empty.id(), Vec::new()));
    let naming: Vec<u64> = closed
        .iter()
        .map(|(id, _)| *id)
        .chain([open.id()])
        .filter(|id| cluster.segment(*id).ensembles[&0].contains(&lost))
        .collect();
    assert!(naming.len() >= 5, "{lost} is in {naming:?}");

    // Values autorecovery cannot decode, to be logged and skipped (AR8): a segment, a queue
    // entry, a registration.
    cluster.runtime.block_on(async {
        let garbage = Bytes::from_static(b"\xffnot a value");
        cluster.store.put(&schema::segment_key(u64::MAX - 1), garbage.clone()).await.unwrap();
        cluster.store.put(&schema::under_replicated_key(u64::MAX - 1), garbage.clone()).await.unwrap();
        cluster.store.put(&schema::bookie_key("ghost", false), garbage).await.unwrap();
    });

    cluster.stop(&lost);
    // Two processes: one auditor, two workers sharing the queue through their claims.
    let start = |owner| {
        Autorecovery::start(cluster.store.clone(), cluster.runtime.handle().clone(), config(owner)).unwrap()
    };
    let processes = [start("ar-0"), start("ar-1")];
    let stats = || {
        let [a, b] = processes.each_ref().map(Autorecovery::stats);
        AutorecoveryStats {
            bookies_lost: a.bookies_lost + b.bookies_lost,
            segments_marked: a.segments_marked + b.segments_marked,
            segments_completed: a.segments_completed + b.segments_completed,
            members_replaced: a.members_replaced + b.members_replaced,
            entries_copied: a.entries_copied + b.entries_copied,
            segments_recovered: a.segments_recovered + b.segments_recovered,
            failures: a.failures + b.failures,
        }
    };
    let settled = eventually(Duration::from_secs(25), || {
        let named = closed
            .iter()
            .map(|(id, _)| *id)
            .chain([open.id()])
            .any(|id| cluster.segment(id).ensembles.values().flatten().any(|b| *b == lost));
        !named && cluster.queue().is_empty()
    });
    let stats = stats();
    assert!(settled, "not re-replicated in time: {stats:?}, queue {:?}", cluster.queue());
    eprintln!("{stats:?}");
    assert_eq!(stats.bookies_lost, 1);
    assert!(stats.segments_recovered >= 1, "the open segment was fenced and closed");
    assert!(stats.segments_completed >= naming.len() as u64, "{stats:?}");
    assert_eq!(stats.members_replaced, naming.len() as u64, "one slot per segment: {stats:?}");
    assert!(stats.entries_copied > 0);
    assert_eq!(stats.failures, 0);

    for (id, payloads) in &closed {
        cluster.check_replicated(*id, payloads, &lost);
    }
    cluster.check_replicated(open.id(), &open_payloads, &lost);
    // The writer was fenced.
    assert!(cluster.runtime.block_on(open.add(Bytes::from_static(b"late"))).is_err());

    let [a, b] = processes;
    cluster.runtime.block_on(async { tokio::join!(a.stop(), b.stop()) });
    let queue = ReplicationQueue::new(cluster.store.clone());
    assert_eq!(cluster.runtime.block_on(queue.auditor()).unwrap(), None, "the lease ended with stop");
}

#[test]
fn an_unreadable_entry_keeps_its_segment_queued() {
    let mut cluster = Cluster::start(4);
    let client = cluster.client();
    // E=3, Qw=2: W(e) = {e % 3, (e + 1) % 3}. With index 0 lost and index 1 down, entries
    // 0, 3, 6, ... have no copy in reach; entries 2, 5, ... are on index 2.
    let (handle, payloads) = write(&cluster, &client, (3, 2, 2), 30);
    cluster.runtime.block_on(handle.close()).unwrap();
    let ensemble = cluster.segment(handle.id()).ensembles[&0].clone();
    let (lost, down) = (ensemble[0].clone(), ensemble[1].clone());
    cluster.stop(&lost);
    let node = cluster.node(&down);
    node.server.take().unwrap().shutdown(Duration::ZERO); // still registered: not lost
    let mut config = config("ar-0");
    config.lost_bookie_grace = Duration::from_secs(1);
    let autorecovery =
        Autorecovery::start(cluster.store.clone(), cluster.runtime.handle().clone(), config).unwrap();
    assert!(eventually(Duration::from_secs(15), || autorecovery.stats().failures >= 2));
    // Not completed, and the metadata still names the lost bookie: nothing was half-done.
    assert_eq!(cluster.queue(), vec![(handle.id(), vec![lost.clone()])]);
    assert_eq!(cluster.segment(handle.id()).ensembles[&0], ensemble);
    assert_eq!(autorecovery.stats().members_replaced, 0);

    // The other copy comes back (restarted on a new port): the next attempt succeeds.
    cluster.restart_server(&down);
    assert!(eventually(Duration::from_secs(15), || cluster.queue().is_empty()), "{:?}", autorecovery.stats());
    assert_eq!(autorecovery.stats().bookies_lost, 1, "the restarted bookie was not lost");
    cluster.check_replicated(handle.id(), &payloads, &lost);
    cluster.runtime.block_on(autorecovery.stop());
}

#[test]
fn a_bookie_back_within_the_grace_is_not_queued() {
    let mut cluster = Cluster::start(4);
    let client = cluster.client();
    let (handle, _) = write(&cluster, &client, (3, 3, 2), 50);
    cluster.runtime.block_on(handle.close()).unwrap();
    let away = cluster.segment(handle.id()).ensembles[&0][1].clone();
    let mut config = config("ar-0");
    config.worker = false;
    config.lost_bookie_grace = Duration::from_millis(1500);
    let autorecovery =
        Autorecovery::start(cluster.store.clone(), cluster.runtime.handle().clone(), config).unwrap();
    assert!(eventually(Duration::from_secs(5), || autorecovery.is_auditor()));
    sleep(Duration::from_millis(300)); // the auditor's first listing and scan

    // Gone, and back within the grace: a restart.
    cluster.deregister(&away);
    sleep(Duration::from_millis(500));
    cluster.register(&away);
    sleep(Duration::from_millis(2500));
    assert!(cluster.queue().is_empty(), "queued: {:?}", cluster.queue());
    assert_eq!(autorecovery.stats().bookies_lost, 0);
    assert_eq!(autorecovery.stats().segments_marked, 0);

    // Gone for good: queued after the grace, with the bookie it lost.
    cluster.deregister(&away);
    assert!(eventually(Duration::from_secs(5), || !cluster.queue().is_empty()));
    assert_eq!(cluster.queue(), vec![(handle.id(), vec![away.clone()])]);
    assert_eq!(autorecovery.stats().bookies_lost, 1);
    cluster.runtime.block_on(autorecovery.stop());
}

#[test]
fn one_auditor_at_a_time() {
    let cluster = Cluster::start(0);
    let start = |owner: &str| {
        let mut config = config(owner);
        config.worker = false;
        Autorecovery::start(cluster.store.clone(), cluster.runtime.handle().clone(), config).unwrap()
    };
    let (a, b) = (start("ar-a"), start("ar-b"));
    assert!(eventually(Duration::from_secs(5), || a.is_auditor() || b.is_auditor()));
    sleep(Duration::from_millis(300));
    assert!(a.is_auditor() != b.is_auditor(), "exactly one auditor");
    let (auditor, standby) = if a.is_auditor() { (a, b) } else { (b, a) };
    cluster.runtime.block_on(auditor.stop());
    // The standby saw the seat vacant and took it.
    assert!(eventually(Duration::from_secs(5), || standby.is_auditor()));
    let queue = ReplicationQueue::new(cluster.store.clone());
    let holder = cluster.runtime.block_on(queue.auditor()).unwrap().expect("an auditor");
    assert!(holder.claim.owner == "ar-a" || holder.claim.owner == "ar-b");
    cluster.runtime.block_on(standby.stop());
}
