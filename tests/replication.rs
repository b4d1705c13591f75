//! The replication client (`dlog_replication::client`) against real bookie servers in this
//! process, registered in an embedded metadata store: a segment written at E=3 Qw=3 Qa=2 reads
//! back from every replica and closes in the metadata; a bookie stopped mid-write is replaced
//! (ensemble change) with nothing acknowledged lost; a recoverer takes over from a live writer,
//! which then gets `Fenced` and never a success; two recoverers end at the same entry.
//! (Separate processes, SIGKILL and etcd: tests/replication_process.rs.)

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::AnyStore;
use dlog_metadata::schema::SegmentState;
use dlog_protocol::{Request, Response};
use dlog_replication::client::{ReplicationClient, ReplicationConfig};
use dlog_replication::entry_envelope;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_writer::WriterError;
use dlog_replication::transport::{ClientConfig, ClientPool};

const KEY: &[u8] = b"test-master-key";

#[path = "support/cluster.rs"]
mod cluster;

use cluster::Cluster;

impl Cluster {
    fn client(&self, config: ReplicationConfig) -> ReplicationClient<AnyStore> {
        ReplicationClient::new(self.store.clone(), self.runtime.handle().clone(), config).unwrap()
    }

    /// Checks a closed segment on every live replica: each entry up to the end is on Qa+
    /// members of its write set with the same bytes (`expected`), and no entry past the end
    /// is readable anywhere in the last ensemble (entries past it were never acknowledged).
    fn check_closed(&self, segment: u64, expected: &BTreeMap<u64, Bytes>) -> Option<u64> {
        let pool = ClientPool::new(ClientConfig::default()).unwrap();
        let meta = self.segment(segment);
        let SegmentState::Closed { last_entry_id, length } = meta.state else {
            panic!("not closed: {meta:?}")
        };
        let quorum = QuorumSizes::new(
            meta.ensemble_size as usize,
            meta.write_quorum_size as usize,
            meta.ack_quorum_size as usize,
        )
        .unwrap();
        let count = last_entry_id.map_or(0, |l| l + 1);
        let mut total = 0;
        for entry in 0..count {
            let ensemble = meta.ensemble_at(entry);
            let (mut copies, mut live, mut bytes_of_entry) = (0, 0, None);
            for index in quorum.write_set(entry).iter() {
                let Some(addr) = self.addr_of(&ensemble[index]) else { continue };
                live += 1;
                let answer = pool.submit(addr, Request::Read { segment, entry, fence: None }).wait();
                if let Ok(Response::Read { payload, .. }) = answer {
                    let (_, bytes) = entry_envelope::decode(segment, entry, &payload).expect("intact");
                    if let Some(want) = expected.get(&entry) {
                        assert_eq!(&bytes, want, "entry {entry} on {}", ensemble[index]);
                    }
                    assert!(bytes_of_entry.as_ref().is_none_or(|b| *b == bytes), "replicas of {entry} agree");
                    bytes_of_entry = Some(bytes);
                    copies += 1;
                }
            }
            // Qa copies, less the members stopped since (their copies are out of reach).
            let stopped = quorum.write_quorum_size() - live;
            assert!(
                copies + stopped >= quorum.ack_quorum_size() && copies >= 1,
                "entry {entry}: {copies} copies"
            );
            total += bytes_of_entry.map_or(0, |b| b.len() as u64);
        }
        assert_eq!(total, length, "the closed length");
        if let Some((entry, _)) = expected.range(count..).next() {
            panic!("entry {entry} was acknowledged but is past the end {last_entry_id:?}");
        }
        pool.close();
        last_entry_id
    }
}

#[expect(clippy::disallowed_methods, reason = "waits out the request timeout of a stopped bookie")]
fn sleep(duration: Duration) {
    std::thread::sleep(duration);
}

fn quorum(e: usize, w: usize, a: usize) -> QuorumSizes {
    QuorumSizes::new(e, w, a).unwrap()
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record-{i:08}-").repeat(8))
}

#[test]
fn write_close_and_read_back() {
    let cluster = Cluster::start(3);
    let client = cluster.client(ReplicationConfig::default());
    let handle = cluster
        .runtime
        .block_on(client.create_segment(quorum(3, 3, 2), Bytes::from_static(KEY), None))
        .unwrap();
    let mut expected = BTreeMap::new();
    let futures: Vec<_> = (0..2000).map(|i| (i, handle.add(payload(i)))).collect();
    cluster.runtime.block_on(async {
        for (i, future) in futures {
            assert_eq!(future.await, Ok(i), "entries complete in order with their ids");
            expected.insert(i, payload(i));
        }
        handle.close().await.unwrap();
    });
    assert_eq!(cluster.check_closed(handle.id(), &expected), Some(1999));
}

#[test]
fn a_stopped_bookie_is_replaced() {
    let mut cluster = Cluster::start(4);
    // The default request timeout (5 s): a stopped bookie refuses connections at once, and a
    // shorter timeout only risks replacing live bookies that the shared disk stalls.
    let client = cluster.client(ReplicationConfig::default());
    let handle = cluster
        .runtime
        .block_on(client.create_segment(quorum(3, 3, 2), Bytes::from_static(KEY), None))
        .unwrap();
    let before = cluster.segment(handle.id());
    let victim = before.current_ensemble()[1].clone();
    let mut expected = BTreeMap::new();
    let mut futures: Vec<_> = (0..1000u64).map(|i| (i, handle.add(payload(i)))).collect();
    // Stopped with adds in flight; later adds find it gone.
    cluster.stop(&victim);
    futures.extend((1000..2000u64).map(|i| (i, handle.add(payload(i)))));
    // Past the request timeout, the stopped bookie's adds have failed and it is replaced.
    sleep(Duration::from_millis(2500));
    futures.extend((2000..3000u64).map(|i| (i, handle.add(payload(i)))));
    cluster.runtime.block_on(async {
        for (i, future) in futures {
            assert_eq!(future.await, Ok(i));
            expected.insert(i, payload(i));
        }
        handle.close().await.unwrap();
    });
    let after = cluster.segment(handle.id());
    // Replaced from the first entry not acknowledged when it failed (from entry 0 the first
    // ensemble itself is replaced).
    assert!(!after.current_ensemble().contains(&victim), "{victim} replaced: {:?}", after.ensembles);
    assert_eq!(cluster.check_closed(handle.id(), &expected), Some(2999));
}

#[test]
fn recovery_fences_a_live_writer() {
    let cluster = Cluster::start(3);
    let old = cluster.client(ReplicationConfig::default());
    let new = cluster.client(ReplicationConfig::default());
    let handle =
        cluster.runtime.block_on(old.create_segment(quorum(3, 3, 2), Bytes::from_static(KEY), None)).unwrap();
    let segment = handle.id();
    let mut acknowledged = BTreeMap::new();
    cluster.runtime.block_on(async {
        for i in 0..100 {
            assert_eq!(handle.add(payload(i)).await, Ok(i));
            acknowledged.insert(i, payload(i));
        }
    });
    // The old writer keeps 1,000 adds in flight while two recoverers take over.
    let in_flight: Vec<_> = (100..1100).map(|i| (i, handle.add(payload(i)))).collect();
    let other = cluster.client(ReplicationConfig::default());
    let (a, b) = cluster.runtime.block_on(async {
        let a = new.recover_segment(segment, Bytes::from_static(KEY));
        let b = other.recover_segment(segment, Bytes::from_static(KEY));
        tokio::join!(a, b)
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "both recoverers end at the same entry");
    let mut fenced = 0;
    cluster.runtime.block_on(async {
        for (i, future) in in_flight {
            match future.await {
                Ok(entry) => {
                    assert_eq!(entry, i);
                    acknowledged.insert(i, payload(i));
                }
                Err(WriterError::Fenced) => fenced += 1,
                Err(other) => panic!("entry {i}: {other}"),
            }
        }
        // After the fence, the old writer never succeeds again.
        assert_eq!(handle.add(payload(5000)).await, Err(WriterError::Fenced));
    });
    let last = cluster.check_closed(segment, &acknowledged);
    assert_eq!(last, a.last_entry);
    assert!(last.is_some_and(|l| l >= 99));
    eprintln!("closed at {last:?}; {fenced} adds fenced");
}

/// A closed segment read through the client's reader: every entry in order with the writer's
/// bytes, then the end. A tailing reader started before the writes sees each entry once it
/// is acknowledged, and the end once the segment closes.
#[test]
fn readers_catch_up_and_tail() {
    use dlog_replication::client::ReadItem;
    let cluster = Cluster::start(3);
    let client = cluster.client(ReplicationConfig::default());
    let handle = cluster
        .runtime
        .block_on(client.create_segment(quorum(3, 2, 2), Bytes::from_static(KEY), None))
        .unwrap();
    let segment = handle.id();
    let mut tail = cluster.runtime.block_on(client.open_reader(segment, 0)).unwrap();
    let count = 500u64;
    cluster.runtime.block_on(async {
        let writes: Vec<_> = (0..count).map(|i| handle.add(payload(i))).collect();
        for (i, write) in writes.into_iter().enumerate() {
            assert_eq!(write.await, Ok(i as u64));
        }
        for i in 0..count {
            match tokio::time::timeout(Duration::from_secs(10), tail.next()).await {
                Ok(Some(ReadItem::Entry(entry, bytes))) => {
                    assert_eq!((entry, bytes), (i, payload(i)), "tailing: in order, once, intact");
                }
                other => panic!("tailing entry {i}: {other:?}"),
            }
        }
        handle.close().await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), tail.next()).await;
        assert!(matches!(end, Ok(Some(ReadItem::End))), "the tail ends with the close: {end:?}");
        let mut reader = client.open_reader(segment, 100).await.unwrap();
        for i in 100..count {
            assert_eq!(reader.next().await, Some(ReadItem::Entry(i, payload(i))));
        }
        assert_eq!(reader.next().await, Some(ReadItem::End));
    });
}

/// Bookies registered with zone labels: every segment's write sets span distinct zones, and the
/// replacement after a lost bookie keeps them so.
#[test]
fn ensembles_spread_over_zones() {
    let mut cluster = Cluster::start(0);
    for (i, zone) in ["a", "a", "b", "b", "c", "c", "c"].iter().enumerate() {
        cluster.add_bookie_in(&format!("bookie-{i}"), zone);
    }
    let zone_of = |id: &str| {
        ["a", "a", "b", "b", "c", "c", "c"][id.trim_start_matches("bookie-").parse::<usize>().unwrap()]
    };
    let client = cluster.client(ReplicationConfig::default());
    for _ in 0..10 {
        let handle = cluster
            .runtime
            .block_on(client.create_segment(quorum(3, 3, 2), Bytes::from_static(KEY), None))
            .unwrap();
        let meta = cluster.segment(handle.id());
        let mut zones: Vec<&str> = meta.current_ensemble().iter().map(|b| zone_of(b)).collect();
        zones.sort_unstable();
        assert_eq!(zones, ["a", "b", "c"], "{:?}", meta.current_ensemble());
    }
}

/// Recovery with a member of the last ensemble gone for good and Qa = Qw: the entries past the
/// fenced LAC cannot reach Qa recovery ADDs there, so recovery replaces the member for them,
/// and the close stores the new ensemble from the first of them.
#[test]
fn recovery_replaces_a_lost_member_for_its_adds() {
    let mut cluster = Cluster::start(4);
    let client = cluster.client(ReplicationConfig::default());
    // The segment's metadata comes from the client; its entries are written raw below, as a
    // writer that died mid-way would have left them.
    let handle = cluster
        .runtime
        .block_on(client.create_segment(quorum(3, 3, 3), Bytes::from_static(KEY), None))
        .unwrap();
    let segment = handle.id();
    let meta = cluster.segment(segment);
    let ensemble = meta.current_ensemble().to_vec();
    let pool = ClientPool::new(ClientConfig::default()).unwrap();
    let mut length = 0;
    for entry in 0..15u64 {
        length += payload(entry).len() as u64;
        let stored = entry_envelope::encode(segment, entry, length, &payload(entry));
        // Entries 0-9 on every member (acknowledged); 10-14 on the first two only (never
        // acknowledged at Qa = 3, so the writer's LAC stayed at 9).
        let members = if entry < 10 { &ensemble[..] } else { &ensemble[..2] };
        for id in members {
            let add = Request::Add {
                segment,
                entry,
                last_add_confirmed: entry.checked_sub(1).map(|lac| lac.min(9)),
                master_key: Bytes::from_static(KEY),
                payload: stored.clone(),
                recovery: false,
            };
            let answer = pool.submit(cluster.addr_of(id).unwrap(), add).wait();
            assert!(matches!(answer, Ok(Response::Add { .. })), "{answer:?}");
        }
    }
    pool.close();
    drop(handle);
    cluster.stop(&ensemble[2]);
    let recoverer = cluster.client(ReplicationConfig::default());
    let end = cluster.runtime.block_on(recoverer.recover_segment(segment, Bytes::from_static(KEY))).unwrap();
    assert_eq!(end.last_entry, Some(14), "the entries past the LAC held by one member are recovered");
    let closed = cluster.segment(segment);
    assert_eq!(closed.ensemble_at(9), &ensemble[..], "acknowledged entries keep their ensemble");
    let replaced = closed.ensemble_at(10);
    assert_eq!(&replaced[..2], &ensemble[..2]);
    assert_ne!(replaced[2], ensemble[2], "the lost member is replaced from entry 10: {:?}", closed.ensembles);
    let expected: BTreeMap<u64, Bytes> = (0..15).map(|e| (e, payload(e))).collect();
    assert_eq!(cluster.check_closed(segment, &expected), Some(14));
}

/// Adds made before `close` are all accepted before the writer closes, even when they wait
/// for the window (here one entry), and an oversized add fails alone, in its place.
#[test]
fn close_waits_for_queued_adds_and_a_refused_add_fails_alone() {
    use dlog_replication::segment_writer::WriterSettings;
    let cluster = Cluster::start(3);
    let writer = WriterSettings { window_entries_max: 1, ..WriterSettings::default() };
    let client = cluster.client(ReplicationConfig { writer, ..ReplicationConfig::default() });
    let handle = cluster
        .runtime
        .block_on(client.create_segment(quorum(3, 3, 2), Bytes::from_static(KEY), None))
        .unwrap();
    let too_big = Bytes::from(vec![7u8; (1 << 20) - 11]);
    let adds = vec![
        handle.add(payload(0)),
        handle.add(payload(1)),
        handle.add(too_big),
        handle.add(payload(2)),
        handle.add(payload(3)),
    ];
    let segment = handle.id();
    let results = cluster.runtime.block_on(async {
        let close = handle.close();
        // An add made after the close is refused, whatever still waits for the window; and
        // dropping the handle does not lose the close's answer.
        let late = handle.add(payload(9));
        drop(handle);
        let mut results = Vec::new();
        for add in adds {
            results.push(add.await);
        }
        assert_eq!(late.await, Err(WriterError::Closed));
        (results, close.await)
    });
    let (results, closed) = results;
    assert_eq!(results[..2], [Ok(0), Ok(1)]);
    assert!(matches!(results[2], Err(WriterError::EntryTooLarge { .. })), "{:?}", results[2]);
    assert_eq!(results[3..], [Ok(2), Ok(3)]);
    assert_eq!(closed, Ok(()));
    let expected: BTreeMap<u64, Bytes> = (0..4).map(|e| (e, payload(e))).collect();
    assert_eq!(cluster.check_closed(segment, &expected), Some(3));
}

/// A bookie not registered when recovery starts (restarting) is looked up again: once it is
/// back at a new address, recovery reaches it. At Qa = 1 the fence needs every bookie.
#[test]
fn recovery_reaches_a_bookie_that_comes_back_elsewhere() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client(ReplicationConfig::default());
    let handle = cluster
        .runtime
        .block_on(client.create_segment(quorum(3, 3, 1), Bytes::from_static(KEY), None))
        .unwrap();
    let segment = handle.id();
    cluster.runtime.block_on(async {
        for i in 0..20 {
            assert_eq!(handle.add(payload(i)).await, Ok(i));
        }
    });
    drop(handle);
    let restarting = cluster.segment(segment).current_ensemble()[1].clone();
    cluster.stop(&restarting);
    let recoverer = cluster.client(ReplicationConfig::default());
    let recovery = cluster
        .runtime
        .spawn(async move { recoverer.recover_segment(segment, Bytes::from_static(KEY)).await });
    sleep(Duration::from_millis(1500));
    assert!(!recovery.is_finished(), "the fence needs the missing bookie at Qa = 1");
    cluster.restart_server(&restarting);
    let end = cluster
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), recovery).await })
        .expect("recovery finishes once the bookie is back")
        .unwrap()
        .unwrap();
    assert_eq!(end.last_entry, Some(19));
    let expected: BTreeMap<u64, Bytes> = (0..20).map(|e| (e, payload(e))).collect();
    assert_eq!(cluster.check_closed(segment, &expected), Some(19));
}
