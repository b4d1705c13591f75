//! The log API end to end, on a `local://` namespace (embedded metadata and three bookies in
//! this process): writes read back from every kind of start position, tailing across segment
//! rolls, truncation, retention, a writer taken over while it is still writing, a writer that
//! loses its lease, and a crashed writer whose log is recovered.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use dlog::log::{
    Dlsn, LogError, LogRecord, Namespace, NamespaceConfig, ReaderConfig, Record, StartPosition,
    TransmitPolicy, WriterConfig,
};

async fn open(dir: &tempfile::TempDir, config: NamespaceConfig) -> Namespace {
    Namespace::open_with(&format!("local://{}", dir.path().display()), config).await.unwrap()
}

fn small_segments() -> NamespaceConfig {
    let mut config = NamespaceConfig::default();
    config.writer.roll_bytes = 4 << 10;
    config
}

/// Reads until `stop_at_tail` ends the reader.
async fn read_all(ns: &Namespace, log: &str, from: StartPosition) -> Vec<LogRecord> {
    let mut reader =
        ns.open_reader_with(log, from, ReaderConfig { stop_at_tail: true }).await.expect("open reader");
    let mut out = Vec::new();
    while let Some(record) =
        tokio::time::timeout(Duration::from_secs(20), reader.next()).await.unwrap().unwrap()
    {
        out.push(record);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_back_in_order_from_every_kind_of_start() {
    let dir = tempfile::tempdir().unwrap();
    let ns = open(&dir, small_segments()).await;
    ns.create_log("events").await.unwrap();
    assert!(matches!(ns.create_log("events").await, Err(LogError::LogExists(_))));
    assert_eq!(ns.logs().await.unwrap(), ["events"]);
    let writer = ns.open_writer("events").await.unwrap();
    let mut acks = Vec::new();
    // Ten rounds of fifty in flight: segments roll between entries.
    for round in 0..10u64 {
        let pending: Vec<_> = (round * 50..round * 50 + 50)
            .map(|i| {
                writer.write(Record::with_txid(1000 + 2 * i, format!("record-{i:04}-{}", "x".repeat(40))))
            })
            .collect();
        for p in pending {
            acks.push(p.await.unwrap());
        }
    }
    assert!(acks.windows(2).all(|w| w[0].dlsn < w[1].dlsn && w[0].txid < w[1].txid));
    assert!(acks.last().unwrap().dlsn.segment_seq > 2, "small segments rolled: {:?}", acks.last());
    // The tail is what readers may see: the segment's LAC, which trails the writer's
    // acknowledgements until the next add or the idle WRITE_LAC (1 ms) carries it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ns.tail_position("events").await.unwrap() <= acks.last().unwrap().dlsn {
        assert!(tokio::time::Instant::now() < deadline, "the LAC reached the bookies");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let all = read_all(&ns, "events", StartPosition::Head).await;
    assert_eq!(all.len(), 500);
    for (i, (record, ack)) in all.iter().zip(&acks).enumerate() {
        assert_eq!((record.dlsn, record.txid), (ack.dlsn, ack.txid), "record {i}");
        assert!(record.payload.starts_with(format!("record-{i:04}").as_bytes()));
    }
    // From a DLSN: that record on; from a DLSN between records (a slot past an entry's end):
    // the next one.
    let from = acks[123].dlsn;
    let read = read_all(&ns, "events", StartPosition::Dlsn(from)).await;
    assert_eq!(read.first().map(|r| r.dlsn), Some(from));
    assert_eq!(read.len(), 500 - 123);
    // From a transaction id: the first at or above it, also between two (odd ids are absent).
    let read = read_all(&ns, "events", StartPosition::Txid(1000 + 2 * 300 - 1)).await;
    assert_eq!(read.first().map(|r| r.txid), Some(1000 + 2 * 300));
    assert_eq!(read.len(), 200);
    assert!(read_all(&ns, "events", StartPosition::Txid(5000)).await.is_empty());
    // From the tail: nothing yet; then what comes after.
    assert!(read_all(&ns, "events", StartPosition::Tail).await.is_empty());
    let mut tailing = ns.open_reader("events", StartPosition::Tail).await.unwrap();
    let next = writer.write(Record::new("after")).await.unwrap();
    assert_eq!(next.txid, 1000 + 2 * 499 + 1, "assigned after the last");
    let got = tokio::time::timeout(Duration::from_secs(10), tailing.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((got.dlsn, &got.payload[..]), (next.dlsn, &b"after"[..]));
    writer.close().await.unwrap();
    // A new writer goes on after the last transaction id, in a new segment.
    let writer = ns.open_writer("events").await.unwrap();
    assert!(matches!(
        writer.write(Record::with_txid(5, "old")).await,
        Err(LogError::TxidNotIncreasing { .. })
    ));
    let later = writer.write(Record::new("later")).await.unwrap();
    assert_eq!(later.txid, next.txid + 1);
    assert!(later.dlsn.segment_seq > next.dlsn.segment_seq);
    writer.close().await.unwrap();
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailing_reader_follows_the_writer_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let ns = open(&dir, small_segments()).await;
    ns.create_log("tail").await.unwrap();
    let mut reader = ns.open_reader("tail", StartPosition::Head).await.unwrap();
    let writer = ns.open_writer("tail").await.unwrap();
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 300 {
            let record =
                tokio::time::timeout(Duration::from_secs(20), reader.next()).await.unwrap().unwrap().unwrap();
            got.push(record);
        }
        got
    });
    let mut acks = Vec::new();
    for i in 0..300 {
        // One at a time, paced: the reader is caught up and tails through every roll.
        acks.push(writer.write(Record::new(vec![i as u8; 100])).await.unwrap());
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let got = consumer.await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.dlsn).collect::<Vec<_>>(),
        acks.iter().map(|a| a.dlsn).collect::<Vec<_>>()
    );
    let segments: BTreeSet<u64> = acks.iter().map(|a| a.dlsn.segment_seq).collect();
    assert!(segments.len() >= 4, "rolled across {segments:?}");
    writer.close().await.unwrap();
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_hides_records_and_deletes_whole_segments_with_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let ns = open(&dir, small_segments()).await;
    ns.create_log("t").await.unwrap();
    let writer = ns.open_writer("t").await.unwrap();
    let mut acks = Vec::new();
    for i in 0..200u32 {
        acks.push(writer.write(Record::new(Bytes::from(vec![i as u8; 100]))).await.unwrap());
    }
    let before = ns.log_info("t").await.unwrap();
    // Truncate in the middle of a later segment.
    let cut = acks[150].dlsn;
    assert!(cut.segment_seq >= 3);
    ns.truncate("t", cut).await.unwrap();
    let after = ns.log_info("t").await.unwrap();
    assert!(after.segments.iter().all(|s| s.seq >= cut.segment_seq), "{:?}", after.segments);
    let gone: Vec<u64> =
        before.segments.iter().filter(|s| s.seq < cut.segment_seq).map(|s| s.segment_id).collect();
    for id in &gone {
        assert!(ns.replication().segment(*id).await.is_err(), "segment {id}'s metadata is gone");
    }
    let pending = dlog_metadata::LogMetadataStore::new(ns.store().clone()).pending_deletions().await.unwrap();
    assert!(pending.is_empty(), "every bookie confirmed: {pending:?}");
    let read = read_all(&ns, "t", StartPosition::Head).await;
    assert_eq!(read.first().map(|r| r.dlsn), Some(cut));
    assert_eq!(read.len(), 50);
    assert!(matches!(
        ns.open_reader("t", StartPosition::Dlsn(acks[10].dlsn)).await.err(),
        Some(LogError::Truncated { before }) if before == cut
    ));
    // Never backwards, never past the tail.
    ns.truncate("t", acks[5].dlsn).await.unwrap();
    assert_eq!(read_all(&ns, "t", StartPosition::Head).await.len(), 50);
    assert!(matches!(ns.truncate("t", Dlsn::new(99, 0, 0)).await, Err(LogError::Invalid(_))));
    // The writer goes on after a truncation moved its log's metadata under it, and a position
    // just acknowledged may be truncated at once (the tail catches up with the LAC).
    let still = writer.write(Record::new("still")).await.unwrap();
    ns.truncate("t", Dlsn { slot: still.dlsn.slot + 1, ..still.dlsn }).await.unwrap();
    // A deletion queued for a bookie that no longer exists (no cookie) does not fail a
    // truncation, and leaves the queue.
    let store = ns.store().clone();
    let queued = dlog_metadata::schema::PendingDeletion { bookies: vec!["ghost".into()], queued_ms: 0 };
    let key = dlog_metadata::schema::deletion_key(999_999);
    dlog_metadata::MetadataStore::put(&*store, &key, dlog_metadata::schema::wire::encode(&queued))
        .await
        .unwrap();
    let more = writer.write(Record::new("more")).await.unwrap();
    ns.truncate("t", more.dlsn).await.unwrap();
    let pending = dlog_metadata::LogMetadataStore::new(store.clone()).pending_deletions().await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    // A log with a writer is not deleted from under it.
    assert!(matches!(ns.delete_log("t").await, Err(LogError::LockHeld { .. })));
    writer.close().await.unwrap();
    ns.delete_log("t").await.unwrap();
    assert!(ns.logs().await.unwrap().is_empty());
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_fences_the_old_one_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NamespaceConfig::default();
    config.writer.transmit = TransmitPolicy::default();
    let ns = open(&dir, config).await;
    ns.create_log("owned").await.unwrap();
    let old = ns.open_writer("owned").await.unwrap();
    let old_task = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut i = 0u64;
        let error = loop {
            in_flight.push_back(old.write(Record::new(format!("old-{i}"))));
            i += 1;
            if in_flight.len() >= 64 {
                match in_flight.pop_front().unwrap().await {
                    Ok(a) => acked.push(a),
                    Err(e) => break e,
                }
            }
        };
        // Everything after the first failure fails too.
        for p in in_flight {
            assert!(p.await.is_err(), "nothing is acknowledged after a failure");
        }
        (acked, error)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = ns.open_writer("owned").await.unwrap();
    let (acked, error) = tokio::time::timeout(Duration::from_secs(30), old_task).await.unwrap().unwrap();
    assert!(matches!(error, LogError::Fenced { .. }), "{error:?}");
    assert!(acked.len() > 10, "the old writer was writing: {}", acked.len());
    let last_old = acked.last().unwrap().txid;
    let next = new.write(Record::new("new-0")).await.unwrap();
    assert!(next.txid > last_old);
    new.close().await.unwrap();
    let read = read_all(&ns, "owned", StartPosition::Head).await;
    // Every acknowledged record is there, in order, once; records the old writer was not told
    // about may be there too (between its last ack and the fence), never twice.
    let txids: Vec<u64> = read.iter().map(|r| r.txid).collect();
    assert!(txids.windows(2).all(|w| w[0] < w[1]), "no duplicate, no reordering");
    let present: BTreeSet<(Dlsn, u64)> = read.iter().map(|r| (r.dlsn, r.txid)).collect();
    for a in &acked {
        assert!(present.contains(&(a.dlsn, a.txid)), "acknowledged {a:?} lost");
    }
    assert_eq!(read.last().map(|r| &r.payload[..]), Some(&b"new-0"[..]));
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_errors_are_typed_and_final() {
    let dir = tempfile::tempdir().unwrap();
    let ns = open(&dir, NamespaceConfig::default()).await;
    assert!(matches!(ns.open_writer("missing").await.err(), Some(LogError::NoSuchLog(_))));
    assert!(matches!(
        ns.open_reader("missing", StartPosition::Head).await.err(),
        Some(LogError::NoSuchLog(_))
    ));
    ns.create_log("l").await.unwrap();
    let writer = ns.open_writer("l").await.unwrap();
    let too_big = vec![0u8; (1 << 20) - (4 << 10) + 1];
    assert!(matches!(writer.write(Record::new(too_big)).await, Err(LogError::RecordTooLarge { .. })));
    writer.write(Record::new("fine")).await.unwrap();
    // A second writer that may not take over is told who holds the log.
    let polite = WriterConfig { take_over: false, owner: "polite".into(), ..WriterConfig::default() };
    match ns.open_writer_with("l", polite).await.err() {
        Some(LogError::LockHeld { owner, .. }) => assert_eq!(owner, WriterConfig::default().owner),
        other => panic!("{other:?}"),
    }
    // The lease behind the lock ends (as when the store stops hearing from the writer): the
    // writer stops, with LockLost, for good.
    let logs = dlog_metadata::LogMetadataStore::new(ns.store().clone());
    let holder = logs.writer_lock(ns.name(), "l").await.unwrap().unwrap();
    dlog_metadata::MetadataStore::revoke(&**ns.store(), holder.lease.unwrap()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let error = loop {
        match writer.write(Record::new("after")).await {
            Err(e) => break e,
            Ok(_) => assert!(tokio::time::Instant::now() < deadline, "the writer noticed"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(matches!(error, LogError::LockLost { .. } | LogError::Fenced { .. }), "{error:?}");
    assert!(writer.write(Record::new("again")).await.is_err());
    drop(writer);
    // The log is free again: a writer that does not take over gets it.
    let next =
        ns.open_writer_with("l", WriterConfig { take_over: false, ..WriterConfig::default() }).await.unwrap();
    next.write(Record::new("next")).await.unwrap();
    next.close().await.unwrap();
    ns.shutdown().await;
}

/// LW6: past `pending_bytes_max` bytes not yet durable, a write is refused with `Backpressure`
/// and changes nothing (no txid, no DLSN taken); `ready` waits for room; what was taken is
/// acknowledged in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_refuses_past_the_bound_and_ready_waits_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let ns = open(&dir, NamespaceConfig::default()).await;
    ns.create_log("bp").await.unwrap();
    let config = WriterConfig { pending_bytes_max: Some(1000), ..WriterConfig::default() };
    let writer = ns.open_writer_with("bp", config).await.unwrap();
    // A burst with no await in between: what is past the bound is refused at the call.
    let burst: Vec<_> =
        (0..200u32).map(|i| Box::pin(writer.write(Record::new(vec![i as u8; 100])))).collect();
    let (mut taken, mut refused) = (Vec::new(), 0);
    for (i, mut write) in burst.into_iter().enumerate() {
        match futures_util::poll!(&mut write) {
            std::task::Poll::Ready(Err(LogError::Backpressure { max: 1000, .. })) => refused += 1,
            std::task::Poll::Ready(other) => panic!("{other:?}"),
            std::task::Poll::Pending => taken.push((i, write)),
        }
    }
    for (_, write) in taken.iter_mut() {
        write.await.unwrap();
    }
    assert!(refused > 0 && taken.len() >= 8, "{} taken, {refused} refused", taken.len());
    assert!(writer.pending_bytes() <= 1000);
    // Waiting for room, then writing, goes through every time.
    let mut acks = Vec::new();
    for i in 0..40u32 {
        writer.ready(100).await;
        acks.push(writer.write(Record::new(vec![i as u8; 100])));
    }
    let mut last = None;
    for a in acks {
        let a = a.await.unwrap();
        assert!(last < Some(a.txid), "in order");
        last = Some(a.txid);
    }
    // A record larger than the bound goes alone.
    writer.flush().await.unwrap();
    writer.write(Record::new(vec![0u8; 5000])).await.unwrap();
    writer.close().await.unwrap();
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_the_oldest_segments_and_a_crashed_writer_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_segments();
    config.writer.retention = dlog::log::Retention { max_age: None, max_bytes: Some(12 << 10) };
    config.writer.retention_check_every = Duration::from_millis(100);
    let ns = open(&dir, config).await;
    ns.create_log("r").await.unwrap();
    let writer = ns.open_writer("r").await.unwrap();
    let mut last = None;
    for i in 0..400u32 {
        last = Some(writer.write(Record::new(vec![i as u8; 200])).await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = ns.log_info("r").await.unwrap();
        if info.meta.truncated_before.is_some() && info.segments.len() <= 6 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "retention ran: {} segments", info.segments.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The writer dies without closing: the next one recovers its segment, and nothing
    // acknowledged is missing from what retention kept.
    drop(writer);
    let wal = dlog::log::WriteAheadLog::open(&ns, "r").await.unwrap();
    let mut replay = wal.replay(Dlsn::HEAD).await.unwrap();
    let mut read = Vec::new();
    while let Some(r) = replay.next().await.unwrap() {
        read.push(r);
    }
    assert_eq!(read.last().map(|r| r.dlsn), last.map(|a| a.dlsn), "the last acknowledged record survived");
    assert!(read.len() < 400 && read.len() > 20, "{}", read.len());
    wal.close().await.unwrap();
    ns.shutdown().await;
}
