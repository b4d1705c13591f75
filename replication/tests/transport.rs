//! The client transport against a fake bookie: a std `TcpListener` on 127.0.0.1 whose
//! connections each run a test's handler on a plain thread, decoding requests with
//! `decode_request` and answering with `encode_response` (or with whatever bytes the test
//! wants). Every wait is bounded: client code runs under a 10 s timeout, the fake's sockets
//! time out reads after 5 s, and pool waits use `wait_timeout`.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dlog_protocol::{FrameHeader, Limits, Request, Response, Status, decode_request, encode_response};
use dlog_replication::transport::{BookieClient, ClientConfig, ClientPool, Connection, TransportError};

const WAIT: Duration = Duration::from_secs(5);

/// One accepted connection, seen from the fake bookie.
struct FakeConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl FakeConn {
    /// The next request, or `None` when the client closed, the read timed out or the bytes
    /// did not decode.
    fn next(&mut self) -> Option<(u64, Request)> {
        self.next_within(WAIT).flatten()
    }

    /// The next request; `Some(None)` when none came for `quiet`; `None` when the client
    /// closed or the bytes did not decode.
    fn next_within(&mut self, quiet: Duration) -> Option<Option<(u64, Request)>> {
        self.stream.set_read_timeout(Some(quiet)).expect("read timeout");
        loop {
            match decode_request(&mut self.buf, &Limits::default()) {
                Ok(Some(request)) => return Some(Some(request)),
                Ok(None) => {}
                Err(_) => return None,
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Some(None);
                }
                Err(_) => return None,
            }
        }
    }

    fn reply(&mut self, id: u64, response: &Response) {
        let mut out = BytesMut::new();
        encode_response(response, id, &mut out);
        self.send_raw(&out);
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        // The client may be gone; the test sees that on its side.
        let _ = self.stream.write_all(bytes);
    }

    /// Answers every request like a healthy bookie, until the client closes.
    fn echo_forever(&mut self) {
        while let Some((id, request)) = self.next() {
            self.reply(id, &answer(&request));
        }
    }
}

struct FakeBookie {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

/// Starts a fake bookie whose connection `n` (from 0) runs `handler(n, conn)` on its own
/// thread. The threads end with their sockets; the listener's with the test process.
fn fake_bookie(handler: impl Fn(usize, FakeConn) + Send + Sync + 'static) -> FakeBookie {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            stream.set_read_timeout(Some(WAIT)).expect("read timeout");
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            std::thread::spawn(move || handler(n, FakeConn { stream, buf: BytesMut::new() }));
        }
    });
    FakeBookie { addr, accepted }
}

/// What a healthy bookie answers: reads return the entry id's bytes, adds are acknowledged.
fn answer(request: &Request) -> Response {
    match request {
        Request::Read { segment, entry, .. } => Response::Read {
            segment: *segment,
            entry: *entry,
            payload: Bytes::from(entry.to_le_bytes().to_vec()),
        },
        Request::Add { segment, entry, .. } => Response::Add { segment: *segment, entry: *entry },
        other => Response::refused(other.op().as_u8(), Status::BadRequest, "not in the fake"),
    }
}

fn read(segment: u64, entry: u64) -> Request {
    Request::Read { segment, entry, fence: None }
}

fn read_answer(segment: u64, entry: u64) -> Response {
    Response::Read { segment, entry, payload: Bytes::from(entry.to_le_bytes().to_vec()) }
}

fn config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(3),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(2),
        ..ClientConfig::default()
    }
}

/// Runs `test` on a fresh compio runtime, failing it after 10 s.
fn run<F: Future>(test: F) -> F::Output {
    let runtime = compio::runtime::Runtime::new().expect("compio runtime");
    runtime.block_on(async {
        compio::time::timeout(Duration::from_secs(10), test).await.expect("test timed out after 10 s")
    })
}

/// Waits (bounded) until `done` holds, polling every 5 ms on the runtime.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        compio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn pipelined_requests_get_their_own_answers_out_of_order() {
    const N: u64 = 16;
    let bookie = fake_bookie(|_, mut conn| {
        // Take all N before answering any (they are in flight together), then answer them
        // last first.
        let mut held = Vec::new();
        while held.len() < N as usize {
            let Some(request) = conn.next() else { return };
            held.push(request);
        }
        for (id, request) in held.into_iter().rev() {
            conn.reply(id, &answer(&request));
        }
        conn.echo_forever();
    });
    run(async {
        let conn = Rc::new(Connection::connect(bookie.addr, &config()).await.expect("connect"));
        let tasks: Vec<_> = (0..N)
            .map(|entry| {
                let conn = Rc::clone(&conn);
                compio::runtime::spawn(async move { (entry, conn.request(read(7, entry)).await) })
            })
            .collect();
        for task in tasks {
            let (entry, response) = task.await.expect("task");
            assert_eq!(response.expect("response"), read_answer(7, entry));
        }
        assert_eq!(conn.in_flight(), 0);
        let stats = conn.stats();
        assert_eq!((stats.frames_sent, stats.responses, stats.responses_unknown), (N, N, 0));
        // Sent from one tick of the runtime, the requests share writes.
        assert!(stats.writes < N / 2, "{stats:?}");
        // An ADD's payload goes out as the caller's `Bytes` and arrives whole.
        let payload = Bytes::from(vec![0xA5; 300 << 10]);
        let add = Request::Add {
            segment: 7,
            entry: 99,
            last_add_confirmed: Some(98),
            master_key: Bytes::from_static(b"key"),
            payload,
            recovery: false,
        };
        assert_eq!(conn.request(add).await.expect("add"), Response::Add { segment: 7, entry: 99 });
    });
}

#[test]
fn in_flight_is_bounded_and_waiters_are_served() {
    let over_bound = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&over_bound);
    let bookie = fake_bookie(move |_, mut conn| {
        // Hold requests until none came for 50 ms, then answer them all (last first). More
        // than two held at once would break the client's bound.
        let mut held = Vec::new();
        while let Some(next) = conn.next_within(Duration::from_millis(50)) {
            match next {
                Some(request) => held.push(request),
                None => {
                    if held.len() > 2 {
                        flag.store(true, Ordering::SeqCst);
                    }
                    for (id, request) in held.drain(..).rev() {
                        conn.reply(id, &answer(&request));
                    }
                }
            }
        }
    });
    run(async {
        let config = ClientConfig { in_flight_max: 2, ..config() };
        let conn = Rc::new(Connection::connect(bookie.addr, &config).await.expect("connect"));
        let tasks: Vec<_> = (0..10)
            .map(|entry| {
                let conn = Rc::clone(&conn);
                compio::runtime::spawn(async move { (entry, conn.request(read(1, entry)).await) })
            })
            .collect();
        for task in tasks {
            let (entry, response) = task.await.expect("task");
            assert_eq!(response.expect("response"), read_answer(1, entry));
        }
    });
    assert!(!over_bound.load(Ordering::SeqCst), "more than in_flight_max requests reached the bookie");
}

#[test]
fn a_refusal_is_a_response_not_an_error() {
    let bookie = fake_bookie(|_, mut conn| {
        while let Some((id, request)) = conn.next() {
            conn.reply(id, &Response::refused(request.op().as_u8(), Status::Fenced, "fenced"));
        }
    });
    run(async {
        let client = BookieClient::new(bookie.addr, config()).expect("client");
        let add = Request::Add {
            segment: 3,
            entry: 0,
            last_add_confirmed: None,
            master_key: Bytes::from_static(b"k"),
            payload: Bytes::from_static(b"x"),
            recovery: false,
        };
        match client.request(add).await {
            Ok(Response::Refused { status: Status::Fenced, op, message }) => {
                assert_eq!(op, 1);
                assert_eq!(message, "fenced");
            }
            other => panic!("expected a Fenced refusal, got {other:?}"),
        }
    });
}

#[test]
fn timed_out_requests_free_their_slots() {
    let bookie = fake_bookie(|_, mut conn| {
        // Segment 0 is a black hole until a segment 1 request comes: then the held requests
        // are answered (late: their callers timed out) and then the segment 1 request.
        let mut held = Vec::new();
        while let Some((id, request)) = conn.next() {
            if request.segment() == Some(0) {
                held.push((id, request));
                continue;
            }
            for (id, request) in held.drain(..) {
                conn.reply(id, &answer(&request));
            }
            conn.reply(id, &answer(&request));
        }
    });
    run(async {
        let config =
            ClientConfig { in_flight_max: 2, request_timeout: Duration::from_millis(150), ..config() };
        let conn = Rc::new(Connection::connect(bookie.addr, &config).await.expect("connect"));
        // More than in_flight_max, one after another: each times out, none waits forever.
        for entry in 0..5 {
            assert!(matches!(conn.request(read(0, entry)).await, Err(TransportError::Timeout)));
            assert_eq!(conn.in_flight(), 0, "a timed-out request kept its slot");
        }
        // And concurrently: the two in flight and the four waiting for room all time out.
        let tasks: Vec<_> = (5..11)
            .map(|entry| {
                let conn = Rc::clone(&conn);
                compio::runtime::spawn(async move { conn.request(read(0, entry)).await })
            })
            .collect();
        for task in tasks {
            assert!(matches!(task.await.expect("task"), Err(TransportError::Timeout)));
        }
        assert_eq!(conn.in_flight(), 0);
        // Slots are free: a request that is answered gets through (after the late answers to
        // the timed-out ones, which the client drops).
        assert_eq!(conn.request(read(1, 5)).await.expect("answered"), read_answer(1, 5));
        assert!(!conn.is_dead());
        // Every request sent was answered; all but the last answer came too late and were
        // dropped. Requests that timed out waiting for room were never sent.
        let stats = conn.stats();
        assert!(stats.frames_sent >= 8, "5 one by one, 2 or more of the 6 together, 1 answered: {stats:?}");
        assert_eq!((stats.responses, stats.responses_unknown), (1, stats.frames_sent - 1), "{stats:?}");
    });
}

#[test]
fn server_close_fails_in_flight_then_the_client_reconnects() {
    let bookie = fake_bookie(|n, mut conn| {
        if n == 0 {
            // Take three requests, answer none, hang up.
            for _ in 0..3 {
                if conn.next().is_none() {
                    return;
                }
            }
            return;
        }
        conn.echo_forever();
    });
    run(async {
        let client = BookieClient::new(bookie.addr, config()).expect("client");
        let tasks: Vec<_> = (0..3)
            .map(|entry| {
                let client = client.clone();
                compio::runtime::spawn(async move { client.request(read(2, entry)).await })
            })
            .collect();
        for task in tasks {
            let result = task.await.expect("task");
            assert!(matches!(result, Err(TransportError::Disconnected { .. })), "{result:?}");
        }
        assert!(!client.is_connected());
        assert_eq!(client.request(read(2, 9)).await.expect("after reconnect"), read_answer(2, 9));
        assert!(client.is_connected());
    });
    assert_eq!(bookie.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn garbage_from_the_bookie_is_a_protocol_error_then_the_client_reconnects() {
    let bookie = fake_bookie(|n, mut conn| {
        if n == 0 {
            if conn.next().is_some() {
                conn.send_raw(&[0xFF; 32]); // A frame length of 4 GiB: a broken stream.
            }
            // Keep the socket open: the client must close it on its own.
            let _ = conn.next();
            return;
        }
        conn.echo_forever();
    });
    run(async {
        let client = BookieClient::new(bookie.addr, config()).expect("client");
        let result = client.request(read(4, 0)).await;
        match result {
            Err(TransportError::Protocol(error)) => assert!(error.is_fatal(), "{error}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert!(!client.is_connected());
        assert_eq!(client.request(read(4, 1)).await.expect("after reconnect"), read_answer(4, 1));
    });
    assert_eq!(bookie.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn a_malformed_body_fails_only_its_request() {
    let bookie = fake_bookie(|_, mut conn| {
        // First request: a well-framed READ response whose status byte is unknown. Second:
        // an ADD response to a READ. Then healthy answers, on the same connection.
        if let Some((id, _)) = conn.next() {
            let mut frame = FrameHeader::new(0x82, 0, id, 1).encode().to_vec();
            frame.push(200);
            conn.send_raw(&frame);
        }
        if let Some((id, _)) = conn.next() {
            conn.reply(id, &Response::Add { segment: 5, entry: 1 });
        }
        conn.echo_forever();
    });
    run(async {
        let conn = Connection::connect(bookie.addr, &config()).await.expect("connect");
        for entry in 0..2 {
            match conn.request(read(5, entry)).await {
                Err(TransportError::Protocol(error)) => assert!(!error.is_fatal(), "{error}"),
                other => panic!("expected a malformed response, got {other:?}"),
            }
        }
        assert!(!conn.is_dead());
        assert_eq!(conn.request(read(5, 2)).await.expect("same connection"), read_answer(5, 2));
    });
    assert_eq!(bookie.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_bookie_that_stops_reading_ends_the_connection() {
    let bookie = fake_bookie(|_, conn| {
        // Never read; hold the socket open for a while.
        let (_keep, hold) = std::sync::mpsc::channel::<()>();
        let _ = hold.recv_timeout(WAIT);
        drop(conn);
    });
    run(async {
        let config = ClientConfig { request_timeout: Duration::from_millis(300), ..config() };
        let conn = Rc::new(Connection::connect(bookie.addr, &config).await.expect("connect"));
        // 32 MiB of ADDs (one payload, shared): more than the socket buffers hold.
        let payload = Bytes::from(vec![7; 1 << 20]);
        let tasks: Vec<_> = (0..32)
            .map(|entry| {
                let conn = Rc::clone(&conn);
                let add = Request::Add {
                    segment: 1,
                    entry,
                    last_add_confirmed: None,
                    master_key: Bytes::from_static(b"k"),
                    payload: payload.clone(),
                    recovery: false,
                };
                compio::runtime::spawn(async move { conn.request(add).await })
            })
            .collect();
        for task in tasks {
            let result = task.await.expect("task");
            let ended = matches!(result, Err(TransportError::Timeout | TransportError::Disconnected { .. }));
            assert!(ended, "{result:?}");
        }
        eventually("the stalled write to kill the connection", || conn.is_dead()).await;
        match conn.request(read(1, 0)).await {
            Err(TransportError::Disconnected { reason }) => assert!(reason.contains("stalled"), "{reason}"),
            other => panic!("expected a dead connection, got {other:?}"),
        }
    });
}

#[test]
fn closing_a_connection_fails_its_requests_with_closed() {
    let bookie = fake_bookie(|_, mut conn| while conn.next().is_some() {});
    run(async {
        let conn = Rc::new(Connection::connect(bookie.addr, &config()).await.expect("connect"));
        let task = {
            let conn = Rc::clone(&conn);
            compio::runtime::spawn(async move { conn.request(read(6, 0)).await })
        };
        eventually("the request in flight", || conn.in_flight() == 1).await;
        conn.close();
        assert!(matches!(task.await.expect("task"), Err(TransportError::Closed)));
        assert!(matches!(conn.request(read(6, 1)).await, Err(TransportError::Closed)));
    });
}

#[test]
fn a_failed_connect_backs_off_and_fails_fast_until_nudged() {
    // A port with nobody listening.
    let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    run(async {
        let client = BookieClient::new(addr, config()).expect("client");
        match client.request(read(0, 0)).await {
            Err(TransportError::Connect { addr: failed, .. }) => assert_eq!(failed, addr),
            other => panic!("expected a connect error, got {other:?}"),
        }
        // backoff_initial is 1 s: the next request is refused at once, not sent or parked.
        let refused = compio::time::timeout(Duration::from_millis(100), client.request(read(0, 1))).await;
        assert!(matches!(refused, Ok(Err(TransportError::Unavailable { .. }))), "{refused:?}");
        // Nudged (its owner saw the bookie registered anew): the next request tries a connect
        // at once, which fails again here (nobody listens) and backs off again.
        client.nudge();
        let tried = compio::time::timeout(Duration::from_millis(500), client.request(read(0, 2))).await;
        assert!(matches!(tried, Ok(Err(TransportError::Connect { .. }))), "{tried:?}");
        let refused = compio::time::timeout(Duration::from_millis(100), client.request(read(0, 3))).await;
        assert!(matches!(refused, Ok(Err(TransportError::Unavailable { .. }))), "{refused:?}");
    });
}

#[test]
fn requests_over_the_limits_are_refused_before_sending() {
    let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    run(async {
        let client = BookieClient::new(addr, config()).expect("client");
        let add = |master_key: Bytes, payload: Bytes| Request::Add {
            segment: 1,
            entry: 0,
            last_add_confirmed: None,
            master_key,
            payload,
            recovery: false,
        };
        let big = Bytes::from(vec![0; (1 << 20) + 1]);
        let result = client.request(add(Bytes::from_static(b"k"), big)).await;
        assert!(matches!(result, Err(TransportError::TooLarge { what: "payload", .. })), "{result:?}");
        let long_key = Bytes::from(vec![1; 65]);
        let result = client.request(add(long_key, Bytes::from_static(b"x"))).await;
        assert!(matches!(result, Err(TransportError::Invalid(_))), "{result:?}");
        assert!(!client.is_connected(), "nothing was sent");
    });
}

#[test]
fn the_pool_serves_plain_threads_and_other_executors() {
    let bookie = fake_bookie(|_, mut conn| conn.echo_forever());
    let pool = ClientPool::new(config()).expect("pool");
    let addr = bookie.addr;
    let threads: Vec<_> = (0..4u64)
        .map(|segment| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let completions: Vec<_> =
                    (0..25).map(|entry| pool.submit(addr, read(segment, entry))).collect();
                for (entry, completion) in (0..25).zip(completions) {
                    assert_eq!(completion.wait_timeout(WAIT).expect("answer"), read_answer(segment, entry));
                }
            })
        })
        .collect();
    // A `Completion` is also a future: awaited on another compio runtime, on another thread.
    let on_runtime = {
        let pool = pool.clone();
        std::thread::spawn(move || run(async move { pool.submit(addr, read(9, 9)).await }))
    };
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_eq!(on_runtime.join().expect("thread").expect("answer"), read_answer(9, 9));
    assert_eq!(bookie.accepted.load(Ordering::SeqCst), 1, "one connection for every caller");
    pool.close();
    let after = pool.submit(addr, read(0, 0));
    assert!(after.is_done());
    assert!(matches!(after.wait_timeout(WAIT), Err(TransportError::Closed)));
}

#[test]
fn closing_the_pool_fails_requests_in_flight() {
    let bookie = fake_bookie(|_, mut conn| while conn.next().is_some() {});
    let pool = ClientPool::new(config()).expect("pool");
    // The bookie never answers: the request stays in flight (its own timeout is 3 s).
    let first = pool.submit(bookie.addr, read(0, 0));
    assert!(matches!(first.wait_timeout(Duration::from_millis(200)), Err(TransportError::Timeout)));
    let pending = pool.submit(bookie.addr, read(0, 1));
    let closer = pool.clone();
    std::thread::spawn(move || drop(closer)).join().expect("drop a clone");
    pool.close();
    assert!(matches!(pending.wait_timeout(WAIT), Err(TransportError::Closed)));
}
