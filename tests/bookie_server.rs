//! The bookie server in process, driven over real TCP by a plain blocking client built on the
//! codec: every operation, pipelining, fencing over the wire, backpressure, bad input, idle
//! timeout, drain, and the memory of idle connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dlog::bookie::{BookieServer, ServerLimits, ServerOptions};
use dlog_engine::{Bookie, BookieConfig};
use dlog_protocol::{Limits, Request, Response, Status, decode_response, encode_request};

struct Fixture {
    server: Option<BookieServer>,
    bookie: Arc<Bookie>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn start(limits: ServerLimits) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BookieConfig::new(dir.path().join("journal"));
        config.shard_count = 2;
        config.pin_shards = false;
        let bookie = Arc::new(Bookie::open(config).expect("bookie opens"));
        let mut options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), limits);
        options.threads = Some(2);
        let server = BookieServer::start(bookie.clone(), options).expect("server starts");
        Fixture { server: Some(server), bookie, _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").local_addr()
    }

    fn client(&self) -> Client {
        Client::connect(self.addr())
    }
}

/// A blocking client: send frames, read responses by id.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, buf: BytesMut::new(), next_id: 1 }
    }

    fn send(&mut self, request: &Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = BytesMut::new();
        encode_request(request, id, &mut frame);
        self.stream.write_all(&frame).expect("send");
        id
    }

    /// The next response; `None` once the server closed the connection.
    fn recv(&mut self) -> Option<(u64, Response)> {
        loop {
            if let Some(decoded) =
                decode_response(&mut self.buf, &Limits::default()).expect("well-formed response")
            {
                return Some(decoded);
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn call(&mut self, request: Request) -> Response {
        let id = self.send(&request);
        let (got, response) = self.recv().expect("a response");
        assert_eq!(got, id);
        response
    }
}

fn key() -> Bytes {
    Bytes::from_static(b"master-key")
}

fn add(segment: u64, entry: u64, payload: &[u8]) -> Request {
    Request::Add {
        segment,
        entry,
        last_add_confirmed: entry.checked_sub(1),
        master_key: key(),
        payload: Bytes::copy_from_slice(payload),
        recovery: false,
    }
}

#[test]
fn every_operation_round_trips_over_tcp() {
    let fixture = Fixture::start(ServerLimits::default());
    let mut c = fixture.client();
    for entry in 0..5 {
        assert_eq!(
            c.call(add(7, entry, format!("e{entry}").as_bytes())),
            Response::Add { segment: 7, entry }
        );
    }
    match c.call(Request::Read { segment: 7, entry: 3, fence: None }) {
        Response::Read { payload, .. } => assert_eq!(&payload[..], b"e3"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.call(Request::Read { segment: 7, entry: 9, fence: None }).status(), Status::NoSuchEntry);
    let unknown = c.call(Request::Read { segment: 99, entry: 0, fence: None }).status();
    assert!(matches!(unknown, Status::NoSuchSegment | Status::NoSuchEntry), "{unknown:?}");
    assert_eq!(
        c.call(Request::WriteLastAddConfirmed { segment: 7, last_add_confirmed: 4, master_key: key() }),
        Response::WriteLastAddConfirmed
    );
    assert_eq!(
        c.call(Request::ReadLastAddConfirmed { segment: 7, fence: None }),
        Response::ReadLastAddConfirmed { last_add_confirmed: Some(4) }
    );
    match c.call(Request::ReadRange { segment: 7, first: 1, last: 3, max_bytes: 1 << 20 }) {
        Response::ReadRange { entries } => {
            assert_eq!(entries.iter().map(|(e, _)| *e).collect::<Vec<_>>(), vec![1, 2, 3]);
        }
        other => panic!("{other:?}"),
    }
    // A long poll behind the LAC answers at once with the next entry.
    match c.call(Request::LongPoll { segment: 7, known: Some(2), timeout_ms: 5_000 }) {
        Response::LongPoll { last_add_confirmed: Some(4), entry: Some((3, payload)) } => {
            assert_eq!(&payload[..], b"e3")
        }
        other => panic!("{other:?}"),
    }
    // A long poll at the LAC waits for the next add (sent on another connection).
    let poll_id = c.send(&Request::LongPoll { segment: 7, known: Some(4), timeout_ms: 10_000 });
    let mut writer = fixture.client();
    assert_eq!(writer.call(add(7, 5, b"e5")).status(), Status::Ok);
    assert_eq!(writer.call(add(7, 6, b"e6")).status(), Status::Ok); // carries LAC 5
    let (id, response) = c.recv().expect("long poll answered");
    assert_eq!(id, poll_id);
    match response {
        Response::LongPoll { last_add_confirmed: Some(lac), entry: Some((5, payload)) } => {
            assert!(lac >= 5);
            assert_eq!(&payload[..], b"e5");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.call(Request::DeleteSegment { segment: 7 }), Response::DeleteSegment);
    assert_eq!(c.call(Request::Read { segment: 7, entry: 0, fence: None }).status(), Status::NoSuchSegment);
    assert_eq!(c.call(add(7, 7, b"late")).status(), Status::NoSuchSegment);
    assert_eq!(
        c.call(Request::Auth { mechanism: 0, token: Bytes::new() }),
        Response::Auth { token: Bytes::new() }
    );
}

#[test]
fn pipelined_adds_are_all_answered_by_id() {
    let fixture = Fixture::start(ServerLimits::default());
    let mut c = fixture.client();
    let mut ids = std::collections::HashMap::new();
    // Several segments, so both shards answer and responses interleave.
    for entry in 0..2_000u64 {
        let segment = 100 + entry % 4;
        let id = c.send(&add(segment, entry / 4, &[entry as u8; 1024]));
        ids.insert(id, (segment, entry / 4));
    }
    while !ids.is_empty() {
        let (id, response) = c.recv().expect("response");
        let (segment, entry) = ids.remove(&id).expect("an id sent, answered once");
        assert_eq!(response, Response::Add { segment, entry });
    }
    match c.call(Request::Read { segment: 101, entry: 499, fence: None }) {
        Response::Read { payload, .. } => assert_eq!(payload.len(), 1024),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fencing_over_the_wire_stops_the_old_writer_but_not_recovery() {
    let fixture = Fixture::start(ServerLimits::default());
    let mut old_writer = fixture.client();
    let mut recoverer = fixture.client();
    assert_eq!(old_writer.call(add(5, 0, b"a")).status(), Status::Ok);
    assert_eq!(old_writer.call(add(5, 1, b"b")).status(), Status::Ok);
    let fenced = recoverer.call(Request::ReadLastAddConfirmed { segment: 5, fence: Some(key()) });
    assert_eq!(fenced, Response::ReadLastAddConfirmed { last_add_confirmed: Some(0) });
    assert_eq!(old_writer.call(add(5, 2, b"c")).status(), Status::Fenced);
    assert_eq!(
        recoverer
            .call(Request::ReadLastAddConfirmed { segment: 5, fence: Some(Bytes::from_static(b"other")) })
            .status(),
        Status::WrongMasterKey
    );
    // A fenced read answers the entry; a recovery add is still accepted.
    assert_eq!(
        recoverer.call(Request::Read { segment: 5, entry: 1, fence: Some(key()) }).status(),
        Status::Ok
    );
    let recovery = Request::Add {
        segment: 5,
        entry: 1,
        last_add_confirmed: Some(0),
        master_key: key(),
        payload: Bytes::from_static(b"b"),
        recovery: true,
    };
    assert_eq!(recoverer.call(recovery).status(), Status::Ok);
}

#[test]
fn bad_bytes_never_stop_the_server_serving_good_clients() {
    let fixture = Fixture::start(ServerLimits::default());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let mut stream = TcpStream::connect(fixture.addr()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let len = (random() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| random() as u8).collect();
        match round % 4 {
            // A valid header with a lying length and garbage body.
            0 if len >= 16 => {
                bytes[..4].copy_from_slice(&(len as u32 - 4).to_le_bytes());
                bytes[4] = 1;
            }
            // A truncated valid frame, then close.
            1 => {
                let mut frame = BytesMut::new();
                encode_request(&add(1, round, b"payload"), round, &mut frame);
                bytes = frame[..(random() as usize % frame.len())].to_vec();
            }
            // A huge declared length.
            2 => bytes = [u32::MAX.to_le_bytes().as_slice(), &[1, 1, 0, 0], &[0; 8]].concat(),
            _ => {}
        }
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // The server answers what it can and closes; it must not hang the connection.
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    // A malformed body on a good connection is answered and the connection goes on.
    let mut c = fixture.client();
    let mut frame = BytesMut::new();
    encode_request(&Request::DeleteSegment { segment: 1 }, 77, &mut frame);
    frame[5] = 0x7f; // unknown op, well framed
    c.stream.write_all(&frame).expect("send");
    let (id, response) = c.recv().expect("answered");
    assert_eq!((id, response.status()), (77, Status::BadRequest));
    assert_eq!(c.call(add(3, 0, b"fine")).status(), Status::Ok);
    // A frame over the limit is answered TooLarge, then the connection is closed.
    let mut big = fixture.client();
    let header = [&(64u32 << 20).to_le_bytes()[..], &[1, 1, 0, 0], &9u64.to_le_bytes()].concat();
    big.stream.write_all(&header).expect("send");
    let (id, response) = big.recv().expect("answered before closing");
    assert_eq!((id, response.status()), (9, Status::TooLarge));
    assert!(big.recv().is_none(), "closed after a broken frame");
    assert_eq!(fixture.client().call(add(3, 1, b"still fine")).status(), Status::Ok);
}

#[test]
fn a_small_in_flight_bound_still_answers_everything() {
    let limits = ServerLimits { in_flight_max: 2, ..ServerLimits::default() };
    let fixture = Fixture::start(limits);
    let mut c = fixture.client();
    for entry in 0..500 {
        c.send(&add(9, entry, b"x"));
    }
    let mut answered = 0;
    while answered < 500 {
        let (_, response) = c.recv().expect("response");
        assert_eq!(response.status(), Status::Ok);
        answered += 1;
    }
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() {
    let limits = ServerLimits { idle_timeout: Duration::from_millis(300), ..ServerLimits::default() };
    let fixture = Fixture::start(limits);
    let mut idle = fixture.client();
    assert_eq!(idle.call(add(4, 0, b"x")).status(), Status::Ok);
    // A long poll in flight keeps its connection open past the idle timeout.
    let mut busy = fixture.client();
    let id = busy.send(&Request::LongPoll { segment: 4, known: Some(5), timeout_ms: 800 });
    assert!(idle.recv().is_none(), "the idle connection is closed");
    let (got, response) = busy.recv().expect("long poll answered at its timeout");
    assert_eq!(got, id);
    assert_eq!(response.status(), Status::Ok);
}

#[test]
fn shutdown_answers_what_was_read_then_closes() {
    let mut fixture = Fixture::start(ServerLimits::default());
    let addr = fixture.addr();
    let mut c = fixture.client();
    let mut sent = Vec::new();
    for entry in 0..200 {
        sent.push(c.send(&add(11, entry, &[1; 512])));
    }
    // Once a request sent after them is answered, the server has read them all; then drain.
    let marker = c.send(&Request::ReadLastAddConfirmed { segment: 11, fence: None });
    let mut acked = Vec::new();
    loop {
        let (id, response) = c.recv().expect("response");
        if id == marker {
            break;
        }
        assert_eq!(response.status(), Status::Ok);
        acked.push(id);
    }
    let server = fixture.server.take().expect("running");
    server.shutdown(Duration::from_secs(5));
    while let Some((id, response)) = c.recv() {
        assert_eq!(response.status(), Status::Ok);
        acked.push(id);
    }
    assert_eq!(acked.len(), 200, "every request read before the drain is answered");
    for entry in 0..200 {
        fixture
            .bookie
            .read_entry(dlog_engine::SegmentId(11), dlog_engine::EntryId(entry))
            .wait()
            .expect("durable");
    }
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

/// Frames sent in one write, to be decoded from one read.
fn send_together(c: &mut Client, requests: &[Request]) -> Vec<u64> {
    let mut frames = BytesMut::new();
    let mut ids = Vec::new();
    for request in requests {
        let id = c.next_id;
        c.next_id += 1;
        encode_request(request, id, &mut frames);
        ids.push(id);
    }
    c.stream.write_all(&frames).expect("send");
    ids
}

fn answers(c: &mut Client, count: usize) -> std::collections::HashMap<u64, Response> {
    (0..count).map(|_| c.recv().expect("answered")).collect()
}

#[test]
fn requests_of_one_read_reach_the_engine_in_order() {
    let fixture = Fixture::start(ServerLimits::default());
    let mut c = fixture.client();
    assert_eq!(c.call(add(21, 0, b"a")).status(), Status::Ok);
    assert_eq!(c.call(add(22, 0, b"a")).status(), Status::Ok);
    // A fence then a plain add in one read: the add comes after the fence.
    let ids = send_together(
        &mut c,
        &[Request::ReadLastAddConfirmed { segment: 21, fence: Some(key()) }, add(21, 1, b"b")],
    );
    let got = answers(&mut c, 2);
    assert_eq!(got[&ids[0]].status(), Status::Ok);
    assert_eq!(
        got[&ids[1]].status(),
        Status::Fenced,
        "the add must come after the fence: {:?}",
        got[&ids[1]]
    );
    // A delete then an add in one read: the add finds the segment deleted.
    let ids = send_together(&mut c, &[Request::DeleteSegment { segment: 22 }, add(22, 1, b"b")]);
    let got = answers(&mut c, 2);
    assert_eq!(got[&ids[0]], Response::DeleteSegment);
    assert_eq!(got[&ids[1]].status(), Status::NoSuchSegment);
}

#[test]
fn the_in_flight_bound_holds_within_one_read() {
    let limits = ServerLimits { in_flight_max: 2, ..ServerLimits::default() };
    let fixture = Fixture::start(limits);
    let mut c = fixture.client();
    assert_eq!(c.call(add(23, 0, b"a")).status(), Status::Ok);
    // Six long polls that each wait their full 400 ms, sent in one write: two at a time means
    // three rounds, so no sooner than 1.2 s (a lower bound only: a slow machine passes too).
    let polls: Vec<Request> =
        (0..6).map(|_| Request::LongPoll { segment: 23, known: Some(0), timeout_ms: 400 }).collect();
    #[expect(clippy::disallowed_methods, reason = "the test measures that waits were serialized")]
    let started = std::time::Instant::now();
    send_together(&mut c, &polls);
    let got = answers(&mut c, 6);
    assert!(got.values().all(|r| r.status() == Status::Ok));
    assert!(
        started.elapsed() >= Duration::from_millis(1150),
        "only 2 may be in flight: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_broken_frame_with_a_response_op_is_answered_and_drain_is_not_held_up() {
    let mut fixture = Fixture::start(ServerLimits::default());
    for op in [0x81u8, 0xff] {
        let mut c = fixture.client();
        // A request frame carrying a response's op byte: the framing is broken (wrong
        // direction); the refusal names the op without the response bit.
        let header = [&12u32.to_le_bytes()[..], &[1, op, 0, 0], &42u64.to_le_bytes()].concat();
        c.stream.write_all(&header).expect("send");
        let (id, response) = c.recv().expect("answered, not a panicked task");
        assert_eq!((id, response.status()), (42, Status::BadRequest));
        assert_eq!(response.op(), op & 0x7f);
        assert!(c.recv().is_none(), "closed after a broken frame");
    }
    // No connection was left counted as live: the drain ends at once, not at its deadline.
    let server = fixture.server.take().expect("running");
    #[expect(clippy::disallowed_methods, reason = "the test checks the drain did not wait out its deadline")]
    let started = std::time::Instant::now();
    server.shutdown(Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(10), "drain waited {:?}", started.elapsed());
}

#[test]
fn parked_long_polls_do_not_hold_up_other_requests() {
    let fixture = Fixture::start(ServerLimits::default());
    let mut c = fixture.client();
    assert_eq!(c.call(add(31, 0, b"a")).status(), Status::Ok);
    // 100 long polls parked for 5 s each, then an ADD to another segment, in one write: the
    // ADD is answered first, long before any poll times out.
    let mut requests: Vec<Request> =
        (0..100).map(|_| Request::LongPoll { segment: 31, known: Some(0), timeout_ms: 5_000 }).collect();
    requests.push(add(32, 0, b"b"));
    let ids = send_together(&mut c, &requests);
    let (id, response) = c.recv().expect("answered");
    assert_eq!((id, response.status()), (ids[100], Status::Ok), "the ADD came first");
}

#[test]
fn idleness_counts_from_the_last_response_sent() {
    let limits = ServerLimits { idle_timeout: Duration::from_millis(1000), ..ServerLimits::default() };
    let fixture = Fixture::start(limits);
    let mut c = fixture.client();
    assert_eq!(c.call(add(33, 0, b"a")).status(), Status::Ok);
    // A long poll answered at its 900 ms timeout, then a request 300 ms later: the connection
    // was busy until the answer, so it is not idle yet.
    assert_eq!(
        c.call(Request::LongPoll { segment: 33, known: Some(0), timeout_ms: 900 }).status(),
        Status::Ok
    );
    #[expect(clippy::disallowed_methods, reason = "the test waits less than the idle timeout")]
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.call(add(33, 1, b"b")).status(), Status::Ok);
}

#[test]
fn a_slow_steady_reader_is_served_and_not_cut_off() {
    let limits = ServerLimits { idle_timeout: Duration::from_millis(1000), ..ServerLimits::default() };
    let fixture = Fixture::start(limits);
    let mut c = fixture.client();
    let big = vec![7u8; 1 << 20];
    assert_eq!(c.call(add(34, 0, &big)).status(), Status::Ok);
    // 12 reads of a 1 MiB entry (12 MiB of answers), read back at about 4 MiB/s: about 3 s, well
    // past the idle timeout, but every write makes progress.
    let reads: Vec<Request> = (0..12).map(|_| Request::Read { segment: 34, entry: 0, fence: None }).collect();
    send_together(&mut c, &reads);
    let mut answered = 0;
    let mut chunk = vec![0u8; 256 << 10];
    while answered < 12 {
        while let Some((_, response)) = decode_response(&mut c.buf, &Limits::default()).expect("well formed")
        {
            assert_eq!(response.status(), Status::Ok);
            answered += 1;
        }
        if answered == 12 {
            break;
        }
        let n = c.stream.read(&mut chunk).expect("the server keeps the connection");
        assert!(n > 0, "closed after {answered} answers");
        c.buf.extend_from_slice(&chunk[..n]);
        #[expect(clippy::disallowed_methods, reason = "the test reads slowly on purpose")]
        std::thread::sleep(Duration::from_millis(60));
    }
}

#[test]
fn an_entry_over_the_limit_is_refused_too_large() {
    // Under the request frame limit (set by the largest AUTH here): answered, and the
    // connection goes on.
    let limits = ServerLimits { entry_bytes_max: 4096, ..ServerLimits::default() };
    let fixture = Fixture::start(limits);
    let mut c = fixture.client();
    assert_eq!(c.call(add(35, 0, &[1; 4096])).status(), Status::Ok, "at the limit");
    assert_eq!(c.call(add(35, 1, &[1; 4097])).status(), Status::TooLarge);
    assert_eq!(c.call(Request::Read { segment: 35, entry: 1, fence: None }).status(), Status::NoSuchEntry);
    // Over the request frame limit (the default entry limit, 1 MiB, sets it): answered, then
    // the connection is closed without reading the frame's body.
    let fixture = Fixture::start(ServerLimits::default());
    let mut c = fixture.client();
    let id = c.send(&add(36, 0, &vec![1; (1 << 20) + 200]));
    let (got, response) = c.recv().expect("answered");
    assert_eq!((got, response.status()), (id, Status::TooLarge));
    assert!(c.recv().is_none(), "closed");
    assert_eq!(fixture.client().call(add(36, 0, b"small")).status(), Status::Ok);
}
