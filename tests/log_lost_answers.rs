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
/// The remote protocol's preamble, which the client sends before its first frame.
const PREAMBLE_BYTES: usize = 12;

/// A TCP proxy that loses answers while `lose` is set, and holds calls while `late` is set.
struct LossyProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accepting: tokio::task::JoinHandle<()>,
}

/// What the proxy is told to do, and what it did.
#[derive(Default)]
struct ProxyState {
    lose: AtomicBool,
    late: AtomicBool,
    /// Connections cut at an answer, or at calls held to land late.
    cut: AtomicUsize,
    /// Calls (whole frames) held and then handed to the store.
    landed_late: AtomicUsize,
    /// Connections whose held calls are not handed over and answered yet.
    holding: AtomicUsize,
}

impl LossyProxy {
    async fn start(upstream: SocketAddr) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let accepting = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else { continue };
                    tokio::spawn(relay(client, server, state.clone()));
                }
            }
        });
        LossyProxy { addr, state, accepting }
    }

    /// Waits (within `WAIT`) until every held call has been handed to the store and answered.
    async fn settled(&self) {
        let waiting = async {
            while self.state.holding.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, waiting).await.expect("held calls handed over");
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// The whole units at the head of `pending` (the client's preamble, then frames of a u32
/// little-endian length and a body: metadata/src/remote/codec.rs): how many bytes, and how
/// many frames.
fn whole_units(pending: &[u8], preamble_seen: &mut bool) -> (usize, usize) {
    let (mut at, mut frames) = (0, 0);
    if !*preamble_seen {
        if pending.len() < PREAMBLE_BYTES {
            return (0, 0);
        }
        *preamble_seen = true;
        at = PREAMBLE_BYTES;
    }
    while let Some(header) = pending.get(at..at + 4) {
        let len = u32::from_le_bytes(header.try_into().unwrap()) as usize;
        if pending.len() < at + 4 + len {
            break;
        }
        at += 4 + len;
        frames += 1;
    }
    (at, frames)
}

/// Calls go through as they come, whole frames at a time; an answer read while `lose` is set
/// is dropped with the connection (both sockets close), so the client learns nothing of a
/// call the store applied. Calls read while `late` is set are held: the client's side closes
/// at once, and the whole frames among them go to the store after a pause (a part of a frame
/// the client sent is dropped: that call is lost, not late); the connection to the store
/// stays open a second for them to be applied and answered (its end would abort them).
async fn relay(client: TcpStream, server: TcpStream, state: Arc<ProxyState>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let calls = async {
        let (mut buf, mut pending, mut preamble_seen) = (vec![0u8; 64 << 10], Vec::new(), false);
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            pending.extend_from_slice(&buf[..n]);
            let (whole, frames) = whole_units(&pending, &mut preamble_seen);
            if state.late.load(Ordering::SeqCst) && frames > 0 {
                pending.truncate(whole);
                return Ok(Some((pending, frames)));
            }
            server_write.write_all(&pending[..whole]).await?;
            pending.drain(..whole);
        }
    };
    let answers = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if state.lose.load(Ordering::SeqCst) {
                state.cut.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    let held = tokio::select! {
        held = calls => held.ok().flatten(),
        _ = answers => None,
    };
    let Some((calls, frames)) = held else { return };
    // Counted before the client can see its connection end.
    state.holding.fetch_add(1, Ordering::SeqCst);
    drop((client_read, client_write));
    let n = state.cut.fetch_add(1, Ordering::SeqCst) as u64;
    tokio::time::sleep(Duration::from_millis(100 + n * 7919 % 700)).await;
    if server_write.write_all(&calls).await.is_ok() {
        state.landed_late.fetch_add(frames, Ordering::SeqCst);
        let drain = async {
            let mut answer = vec![0u8; 64 << 10];
            while matches!(server_read.read(&mut answer).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
    state.holding.fetch_sub(1, Ordering::SeqCst);
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
        Fault::LostAnswers => &proxy.state.lose,
        Fault::LateCalls => &proxy.state.late,
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
    proxy.settled().await;
    let cut = proxy.state.cut.load(Ordering::SeqCst);
    let landed_late = proxy.state.landed_late.load(Ordering::SeqCst);
    let info = ns.log_info("events").await.unwrap();
    assert!(cut >= 10, "connections cut: {cut}");
    if let Fault::LateCalls = fault {
        assert!(landed_late >= 10, "calls landed late: {landed_late}");
    }
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
        "{fault:?}: {cut} cut connections, {landed_late} calls landed late, {} records acknowledged, {} read, \
         segments {before} -> {}",
        acked.len(),
        read.len(),
        info.segments.len()
    );
    drop(reader);
    ns.shutdown().await;
    drop(proxy);
    tokio::time::timeout(WAIT, cluster.shutdown()).await.unwrap();
}
