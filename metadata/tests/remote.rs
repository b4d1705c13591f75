//! Remote access (`dlog://`) beyond the conformance suite (which runs whole against a
//! `RemoteStore`): what a network adds. A server restart under an open watch (RM3), a
//! lease outliving its connection, calls in flight when the server dies (RM1), calls with no
//! answer (RM1), a watch whose resume point was compacted away, a watch its store ends
//! (RS2), garbage sent to a server and by a "server" (RM5), extreme arguments. Every wait is
//! bounded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::remote::REQUEST_TIMEOUT;
use dlog_metadata::store::TXN_OPS_MAX;
use dlog_metadata::{
    AnyStore, Cond, EventKind, LeaseId, LocalStore, MetaError, MetadataServer, MetadataStore, Op, Page,
    RemoteStore, Version, Versioned, Watch,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// What each side sends first (docs/metadata.md, "Remote access").
const PREAMBLE: &[u8; 12] = b"dlogmeta\x01\x00\x00\x00";

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn next_event(watch: &mut Watch) -> dlog_metadata::Event {
    match timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => panic!("watch failed: {e}"),
        Err(_) => panic!("no event within 10 s"),
    }
}

async fn no_event(watch: &mut Watch, wait: Duration) {
    if let Ok(r) = timeout(wait, watch.next()).await {
        panic!("unexpected watch output {r:?}");
    }
}

/// Starts a server on `addr`, retrying briefly while the port is still being released.
async fn start_on<S: MetadataStore + 'static>(store: Arc<S>, addr: SocketAddr) -> MetadataServer {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match MetadataServer::start(store.clone(), addr).await {
            Ok(server) => return server,
            Err(e) if Instant::now() < deadline => {
                eprintln!("bind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// A restart of the server under an open watch: the watch resumes from one past the last
/// revision it delivered, with nothing missed or repeated, including changes made while no
/// server ran; calls fail while it is down and work again after; a lease outlives the
/// connection it was granted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_a_server_restart_without_gaps_or_repeats() {
    let served = Arc::new(LocalStore::in_memory().unwrap());
    let server = MetadataServer::start(served.clone(), any()).await.unwrap();
    let addr = server.local_addr();
    let client = AnyStore::open(&format!("dlog://{addr}")).await.unwrap();
    assert!(matches!(client, AnyStore::Remote(_)));
    let mut watch = client.watch("w/", Version(0)).await.unwrap();
    let lease = client.grant(Duration::from_secs(30)).await.unwrap();
    let held = Op::Put { key: "held".into(), value: b("x"), cond: Cond::Absent, lease: Some(lease) };
    client.txn(vec![held]).await.unwrap();
    let v0 = client.put("w/0", b("0")).await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!((e.key.as_str(), e.version), ("w/0", v0));

    server.shutdown().await;
    assert_eq!(Arc::strong_count(&served), 1, "a stopped server holds no handle of the store");
    match client.get("w/0").await {
        Err(MetaError::Unavailable(_)) => {}
        other => panic!("a call with no server: {other:?}"),
    }
    // Changes while no server runs, one of them a revision of three keys.
    let v1 = served.put("w/1", b("1")).await.unwrap();
    let put = |k: &str| Op::Put { key: k.into(), value: b("2"), cond: Cond::Any, lease: None };
    let v2 = served.txn(vec![put("w/2a"), put("w/2b"), put("w/2c")]).await.unwrap();
    served.put("elsewhere", b("x")).await.unwrap();

    let server = start_on(served.clone(), addr).await;
    let v3 = client.put("w/3", b("3")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = next_event(&mut watch).await;
        seen.push((e.kind, e.key, e.version));
    }
    let expected = vec![
        (EventKind::Put, "w/1".to_string(), v1),
        (EventKind::Put, "w/2a".to_string(), v2),
        (EventKind::Put, "w/2b".to_string(), v2),
        (EventKind::Put, "w/2c".to_string(), v2),
        (EventKind::Put, "w/3".to_string(), v3),
    ];
    assert_eq!(seen, expected);
    no_event(&mut watch, Duration::from_millis(300)).await;
    assert_eq!(watch.resume_from(), Version(v3.0 + 1));

    // The lease is the store's: the lost connection did not end it.
    client.keep_alive(lease).await.unwrap();
    assert_eq!(client.get("held").await.unwrap().unwrap().lease, Some(lease));
    client.revoke(lease).await.unwrap();
    assert_eq!(client.get("held").await.unwrap(), None);
    server.shutdown().await;
}

/// A store whose transactions never finish (they say when they started), and which can be
/// closed under its watches.
struct Stalling {
    store: Mutex<Option<Arc<LocalStore>>>,
    entered: tokio::sync::Notify,
}

impl Stalling {
    fn new() -> Stalling {
        Stalling {
            store: Mutex::new(Some(Arc::new(LocalStore::in_memory().unwrap()))),
            entered: tokio::sync::Notify::new(),
        }
    }

    fn store(&self) -> Result<Arc<LocalStore>, MetaError> {
        let store = self.store.lock().unwrap().clone();
        store.ok_or_else(|| MetaError::Unavailable("closed".into()))
    }

    /// Drops the store: its watches end.
    fn close(&self) {
        self.store.lock().unwrap().take();
    }
}

impl MetadataStore for Stalling {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, MetaError> {
        self.store()?.get(key).await
    }

    async fn txn(&self, _ops: Vec<Op>) -> Result<Version, MetaError> {
        self.entered.notify_one();
        std::future::pending().await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page, MetaError> {
        self.store()?.list(prefix, after, limit).await
    }

    async fn watch(&self, prefix: &str, from: Version) -> Result<Watch, MetaError> {
        self.store()?.watch(prefix, from).await
    }

    async fn grant(&self, ttl: Duration) -> Result<dlog_metadata::LeaseId, MetaError> {
        self.store()?.grant(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        self.store()?.keep_alive(lease).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<Version, MetaError> {
        self.store()?.revoke(lease).await
    }
}

/// A transaction in flight when the server dies answers `Unavailable` (in doubt) at once, not
/// at its timeout; the other calls of the connection are unaffected while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_in_flight_when_the_server_dies_is_unavailable() {
    let stalling = Arc::new(Stalling::new());
    let server = MetadataServer::start(stalling.clone(), any()).await.unwrap();
    let client = Arc::new(RemoteStore::connect(&format!("dlog://{}", server.local_addr())).await.unwrap());
    let txn = tokio::spawn({
        let client = client.clone();
        async move { client.put("k", b("v")).await }
    });
    timeout(Duration::from_secs(5), stalling.entered.notified()).await.expect("the txn reached the store");
    // Pipelined: a get on the same connection is answered while the txn waits.
    assert_eq!(client.get("k").await.unwrap(), None);
    let died = Instant::now();
    server.shutdown().await;
    assert_eq!(Arc::strong_count(&stalling), 1, "the stalled call was ended with its connection");
    let answer = timeout(Duration::from_secs(5), txn).await.expect("answered").unwrap();
    match answer {
        Err(MetaError::Unavailable(m)) => assert!(m.contains("in doubt"), "{m}"),
        other => panic!("a txn whose server died: {other:?}"),
    }
    assert!(died.elapsed() < REQUEST_TIMEOUT / 2, "answered at the loss, not at the timeout");
}

/// A call the server never answers is `Unavailable` after `REQUEST_TIMEOUT`, and the
/// connection still serves the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_an_answer_times_out() {
    let stalling = Arc::new(Stalling::new());
    let server = MetadataServer::start(stalling.clone(), any()).await.unwrap();
    let client = RemoteStore::connect(&format!("dlog://{}", server.local_addr())).await.unwrap();
    let asked = Instant::now();
    let answer = timeout(REQUEST_TIMEOUT * 2, client.put("k", b("v"))).await.expect("bounded");
    match answer {
        Err(MetaError::Unavailable(m)) => assert!(m.contains("no answer within"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(asked.elapsed() >= REQUEST_TIMEOUT);
    assert_eq!(client.get("k").await.unwrap(), None);
}

/// A watch its store ends (here: the store closed) ends with the store's error on the
/// client too; it is not resumed as if the connection were lost (RS2, RM3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_the_store_ends_ends_with_its_error() {
    let stalling = Arc::new(Stalling::new());
    let server = MetadataServer::start(stalling.clone(), any()).await.unwrap();
    let client = RemoteStore::connect(&format!("dlog://{}", server.local_addr())).await.unwrap();
    let mut watch = client.watch("w/", Version(0)).await.unwrap();
    stalling.close();
    match timeout(Duration::from_secs(5), watch.next()).await.expect("ended") {
        Err(MetaError::Unavailable(m)) => assert!(m.contains("store was closed"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(client.watch("w/", Version(0)).await, Err(MetaError::Unavailable(_))));
}

/// A watch whose resume point the store no longer holds when it reconnects fails with
/// `Compacted`, as does a new watch from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_resume_point_is_surfaced() {
    let served = Arc::new(LocalStore::in_memory().unwrap());
    let server = MetadataServer::start(served.clone(), any()).await.unwrap();
    let addr = server.local_addr();
    let client = RemoteStore::connect(&format!("dlog://{addr}")).await.unwrap();
    let from = client.put("c/first", b("x")).await.unwrap();
    let mut watch = client.watch("c/", from).await.unwrap();
    assert_eq!(next_event(&mut watch).await.version, from);
    server.shutdown().await;
    // More changes than the store keeps for watches (HISTORY_MAX, 100,000).
    for batch in 0..(100_000 / TXN_OPS_MAX + 2) {
        let ops = (0..TXN_OPS_MAX)
            .map(|i| Op::Put {
                key: format!("c/{i}"),
                value: b(&batch.to_string()),
                cond: Cond::Any,
                lease: None,
            })
            .collect();
        served.txn(ops).await.unwrap();
    }
    let _server = start_on(served.clone(), addr).await;
    match timeout(Duration::from_secs(10), watch.next()).await.expect("bounded") {
        Err(MetaError::Compacted { requested, .. }) => assert_eq!(requested, Version(from.0 + 1)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(client.watch("c/", from).await, Err(MetaError::Compacted { .. })));
}

/// Writes `bytes` on a new connection and reads until the server closes it; what it sent.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server closes a connection that sent a bad frame");
    got
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = PREAMBLE.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Garbage, an oversized length, an undecodable body, a message of no known kind and a
/// reserved id each close that connection (after an error saying why), and nothing else: the
/// server keeps serving its other clients and new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_closes_that_connection_only() {
    let served = Arc::new(LocalStore::in_memory().unwrap());
    let server = MetadataServer::start(served, any()).await.unwrap();
    let addr = server.local_addr();
    let client = RemoteStore::connect(&format!("dlog://{addr}")).await.unwrap();
    let mut watch = client.watch("k", Version(0)).await.unwrap();
    client.put("k", b("1")).await.unwrap();

    // Exactly one preamble's worth, so the server has read everything when it closes.
    let got = send_raw(addr, b"GET / HTTP/1").await;
    assert!(got.starts_with(PREAMBLE));
    let mut oversized = PREAMBLE.to_vec();
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    let cases: [(&str, Vec<u8>); 4] = [
        ("oversized", oversized),
        ("undecodable", frame(&[0xff, 0xff, 0xff])),
        // Field 1 (the id) only: no call of any kind this server knows.
        ("unknown kind", frame(&[0x08, 0x05])),
        // A get (field 2, "k") with id 0, which is the server's own.
        ("id 0", frame(&[0x12, 0x01, b'k'])),
    ];
    for (case, bytes) in cases {
        let got = send_raw(addr, &bytes).await;
        assert!(got.starts_with(PREAMBLE), "{case}");
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("bad frame"), "{case}: the server says why: {text:?}");
        assert_eq!(client.get("k").await.unwrap().unwrap().value, b("1"), "{case}: others still served");
    }
    let v = client.put("k", b("2")).await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!(e.value, b("1"));
    assert_eq!(next_event(&mut watch).await.version, v);
    let other = RemoteStore::connect(&format!("dlog://{addr}")).await.unwrap();
    assert_eq!(other.get("k").await.unwrap().unwrap().version, v);
}

/// A "server" that sends garbage makes calls `Unavailable`, never a panic or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_server_makes_calls_unavailable() {
    let mut oversized = PREAMBLE.to_vec();
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    for garbage in [b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), oversized, frame(&[0xff, 0xff])] {
        let listener = TcpListener::bind(any()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let _ = stream.write_all(&garbage).await;
                // Keep it open: the client must notice the garbage, not an end of stream.
                tokio::spawn(async move {
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        let client = RemoteStore::connect_to(&addr.to_string()).await.unwrap();
        let asked = Instant::now();
        match client.get("k").await {
            Err(MetaError::Unavailable(m)) => assert!(m.contains(&addr.to_string()), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(asked.elapsed() < REQUEST_TIMEOUT, "noticed, not timed out");
        assert!(matches!(client.watch("k", Version(0)).await, Err(MetaError::Unavailable(_))));
        fake.abort();
    }
}

/// Extreme arguments, now reachable from any socket, are answered (an error or a value) and
/// leave the served store working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_arguments_are_answered() {
    let served = Arc::new(LocalStore::in_memory().unwrap());
    let server = MetadataServer::start(served, any()).await.unwrap();
    let client = RemoteStore::connect(&format!("dlog://{}", server.local_addr())).await.unwrap();
    let v = client.put("k", b("1")).await.unwrap();
    let _ = client.grant(Duration::MAX).await;
    let _ = client.grant(Duration::from_nanos(1)).await;
    let _ = client.keep_alive(LeaseId(u64::MAX)).await;
    let _ = client.revoke(LeaseId(u64::MAX)).await;
    let _ = client.list("", Some("\u{10ffff}"), usize::MAX).await;
    let _ = client.list("k", Some(""), 1).await;
    let huge = "k".repeat(1 << 20);
    let _ = client.get(&huge).await;
    assert!(matches!(client.get(&"k".repeat(9 << 20)).await, Err(MetaError::Invalid(_))), "over the frame");
    let _ = client.put_if("k", b("x"), Version(u64::MAX)).await;
    let bound = Op::Put { key: "l".into(), value: b("x"), cond: Cond::Any, lease: Some(LeaseId(u64::MAX)) };
    let _ = client.txn(vec![bound]).await;
    for from in [u64::MAX, u64::MAX - 1, 1 << 63] {
        if let Ok(mut watch) = client.watch("k", Version(from)).await {
            no_event(&mut watch, Duration::from_millis(50)).await;
        }
    }
    let (all, _) = client.list_all("").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(client.get("k").await.unwrap().unwrap().version, v, "the store still answers");
    assert!(client.put("k2", b("2")).await.unwrap() > v);
}
