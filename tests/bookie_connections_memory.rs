//! Memory of idle connections: 1,000 connections to a live in-process server cost under
//! 100 MiB. Its own test binary, so no other test's allocations share the process's RSS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use dlog::bookie::{BookieServer, ServerLimits, ServerOptions};
use dlog_engine::{Bookie, BookieConfig};
use dlog_protocol::{Limits, Request, decode_response, encode_request};

fn call(stream: &mut TcpStream, request: &Request) {
    let mut frame = BytesMut::new();
    encode_request(request, 1, &mut frame);
    stream.write_all(&frame).expect("send");
    let mut buf = BytesMut::new();
    loop {
        if decode_response(&mut buf, &Limits::default()).expect("well formed").is_some() {
            return;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).expect("resident").parse().expect("number");
    pages * 4096
}

#[test]
fn a_thousand_idle_connections_cost_under_100_mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BookieConfig::new(dir.path().join("journal"));
    config.shard_count = 2;
    config.pin_shards = false;
    let bookie = Arc::new(Bookie::open(config).expect("bookie opens"));
    let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), ServerLimits::default());
    let server = BookieServer::start(bookie, options).expect("server starts");
    let before = resident_bytes();
    let mut conns: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let stream = TcpStream::connect(server.local_addr()).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            stream
        })
        .collect();
    // Each connection did one request, so it is set up on the server side.
    for (i, c) in conns.iter_mut().enumerate() {
        call(c, &Request::ReadLastAddConfirmed { segment: i as u64, fence: None });
    }
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 100 << 20, "1000 idle connections grew the process by {} MiB", grown >> 20);
}
