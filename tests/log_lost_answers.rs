//! The log writer when the metadata store's answers are lost (LS4, MO6): the store applies a
//! call and its answer never arrives. A proxy sits between the namespace (`dlog://`, a
//! `RemoteStore`) and the cluster's `MetadataServer`; in bursts it forwards every call and
//! drops the connection at the first byte of any answer, so creations, additions to the log,
//! completions, lock renewals and registry reads land but are answered `Unavailable`. In the
//! second test's bursts it holds calls instead: the client's connection is cut the moment a
//! call arrives (it sees `Unavailable` and tries again), and the call reaches the store
//! 100-800 ms later, after the writer's next try or its settling by the stored list: a try
//! landing late. A writer rolling a segment every 8 KiB must ride both out: no record fails,
//! every acknowledged one reads back once and in order, and the log's list and its segments'
//! metadata agree (a segment whose addition may have landed is never deleted).

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dlog::local_cluster::{LocalCluster, LocalClusterOptions};
use dlog::log::{Namespace, NamespaceConfig, ReaderConfig, Record, StartPosition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any one step (a start, a read, the writer's end) may take.
const WAIT: Duration = Duration::from_secs(60);

/// A TCP proxy that loses answers while `lose` is set, and holds calls while `late` is set.
struct LossyProxy {
    addr: SocketAddr,
    lose: Arc<AtomicBool>,
    late: Arc<AtomicBool>,
    /// Connections cut at an answer, or at a call held to land late.
    cut: Arc<AtomicUsize>,
    accepting: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    async fn start(upstream: SocketAddr) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (lose, late, cut) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let accepting = tokio::spawn({
            let (lose, late, cut) = (lose.clone(), late.clone(), cut.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else { continue };
                    tokio::spawn(relay(client, server, lose.clone(), late.clone(), cut.clone()));
                }
            }
        });
        LossyProxy { addr, lose, late, cut, accepting }
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Calls go through as they come; an answer read while `lose` is set is dropped with the
/// connection (both sockets close), so the client learns nothing of a call the store applied.
/// A call read while `late` is set is held: the client's side closes at once, and the call
/// goes to the store after a pause (its answer is read and dropped), landing after the
/// client has moved on.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    lose: Arc<AtomicBool>,
    late: Arc<AtomicBool>,
    cut: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let calls = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            if late.load(Ordering::SeqCst) {
                return Ok(Some(buf[..n].to_vec()));
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let answers = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if lose.load(Ordering::SeqCst) {
                cut.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    let held = tokio::select! {
        held = calls => held.ok().flatten(),
        _ = answers => None,
    };
    drop((client_read, client_write));
    if let Some(call) = held {
        let n = cut.fetch_add(1, Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(100 + n * 7919 % 700)).await;
        if server_write.write_all(&call).await.is_ok() {
            let mut answer = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(2), server_read.read(&mut answer)).await;
        }
    }
}

/// A small deterministic generator for the bursts' timing (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_writer_rides_out_lost_metadata_answers() {
    rolling_writer_through(Fault::LostAnswers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_writer_rides_out_metadata_calls_landing_late() {
    rolling_writer_through(Fault::LateCalls).await;
}

/// What the proxy does in a burst.
#[derive(Clone, Copy, Debug)]
enum Fault {
    LostAnswers,
    LateCalls,
}

async fn rolling_writer_through(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let options = LocalClusterOptions {
        bookies: 3,
        metadata_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..LocalClusterOptions::default()
    };
    let cluster =
        tokio::time::timeout(WAIT, LocalCluster::start(dir.path(), options)).await.unwrap().unwrap();
    let proxy = LossyProxy::start(cluster.metadata_addr().unwrap()).await;
    let mut config = NamespaceConfig::default();
    config.writer.roll_bytes = 8 << 10;
    let uri = format!("dlog://{}?namespace=lossy", proxy.addr);
    let ns = Namespace::open_with(&uri, config).await.unwrap();
    ns.create_log("events").await.unwrap();
    let writer = Arc::new(ns.open_writer("events").await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn({
        let (writer, stop) = (writer.clone(), stop.clone());
        async move {
            let (mut acked, mut in_flight, mut i) = (Vec::new(), VecDeque::new(), 0u64);
            while !stop.load(Ordering::Relaxed) || !in_flight.is_empty() {
                if !stop.load(Ordering::Relaxed) {
                    in_flight
                        .push_back(writer.write(Record::new(format!("record-{i:06}-{}", "x".repeat(200)))));
                    i += 1;
                }
                if in_flight.len() >= 32 || stop.load(Ordering::Relaxed) {
                    match in_flight.pop_front().expect("in flight").await {
                        Ok(appended) => acked.push(appended),
                        Err(error) => return Err((acked.len(), error)),
                    }
                }
            }
            Ok(acked)
        }
    });
    // Bursts of lost answers: 25 of them, 20-200 ms each, 100-300 ms apart.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ns.log_info("events").await.unwrap().segments.len();
    let switch = match fault {
        Fault::LostAnswers => &proxy.lose,
        Fault::LateCalls => &proxy.late,
    };
    for _ in 0..25 {
        switch.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20 + rng.below(180))).await;
        switch.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = match tokio::time::timeout(WAIT, writing).await.unwrap().unwrap() {
        Ok(acked) => acked,
        Err((count, error)) => panic!("the writer failed after {count} records: {error:?}"),
    };
    let cut = proxy.cut.load(Ordering::SeqCst);
    let info = ns.log_info("events").await.unwrap();
    assert!(cut >= 10, "connections cut: {cut}");
    assert!(info.segments.len() > before + 5, "segments rolled: {before} then {}", info.segments.len());
    let writer = Arc::try_unwrap(writer).ok().expect("the only handle");
    tokio::time::timeout(WAIT, writer.close()).await.unwrap().unwrap();

    // The list is gap-free, and every segment it lists has its metadata (a reader opens each).
    let info = ns.log_info("events").await.unwrap();
    let seqs: Vec<u64> = info.segments.iter().map(|s| s.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the log's segments: {seqs:?}");
    let reader_config = ReaderConfig { stop_at_tail: true };
    let mut reader = ns.open_reader_with("events", StartPosition::Head, reader_config).await.unwrap();
    let mut read = Vec::new();
    while let Some(record) = tokio::time::timeout(WAIT, reader.next()).await.unwrap().unwrap() {
        read.push((record.dlsn, record.txid));
    }
    assert!(read.windows(2).all(|w| w[0] < w[1]), "records in order, none twice");
    let present: BTreeSet<_> = read.iter().copied().collect();
    let missing = acked.iter().filter(|a| !present.contains(&(a.dlsn, a.txid))).count();
    assert_eq!(missing, 0, "acknowledged records missing, of {}", acked.len());
    eprintln!(
        "{fault:?}: {cut} cut connections, {} records acknowledged, {} read, segments {before} -> {}",
        acked.len(),
        read.len(),
        info.segments.len()
    );
    drop(reader);
    ns.shutdown().await;
    drop(proxy);
    tokio::time::timeout(WAIT, cluster.shutdown()).await.unwrap();
}
