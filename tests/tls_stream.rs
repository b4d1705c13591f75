//! The TLS stream halves (replication/src/transport/tls.rs) under back-pressure, over loopback,
//! for TLS 1.3 and TLS 1.2: a writer whose records the socket cannot take at once (the peer not
//! reading) falls back from its direct non-blocking send to the runtime's send and loses,
//! repeats or reorders nothing; both directions of one connection at once; a shutdown read as
//! the end of the stream after everything sent; and a write dropped mid-send failing every
//! later write on that half (TL6) instead of letting it overtake.
//!
//! Every byte is checked against its position's pattern, so a lost, repeated or reordered
//! record fails the test at the first byte it moved.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use compio::BufResult;
use compio::io::{AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use dlog_replication::transport::security::crypto_provider;
use dlog_replication::transport::tls::{self, Accepted, StreamReader, StreamWriter};
use futures_util::future::join;
use rcgen::{ExtendedKeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;

#[path = "support/pki.rs"]
#[expect(dead_code, reason = "this test needs the certificates, not the PEM files")]
mod pki;
use pki::{leaf, new_ca};

/// The byte at `position` of a stream: a pattern that does not repeat within any record.
fn pattern(position: u64) -> u8 {
    (position.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Chunks of varied sizes (1 byte to past a record and past the writer's per-call bound)
/// covering `total` bytes of the pattern from 0.
fn chunks(total: usize) -> Vec<Vec<u8>> {
    let sizes = [1, 13, 1024, 16 << 10, (16 << 10) + 7, 70_000, 300_000, (1 << 20) + 5];
    let (mut out, mut at, mut i) = (Vec::new(), 0usize, 0usize);
    while at < total {
        let len = sizes[i % sizes.len()].min(total - at);
        out.push((at..at + len).map(|p| pattern(p as u64)).collect());
        at += len;
        i += 1;
    }
    out
}

/// A connected TLS pair over loopback, speaking only `version`: (client side, server side).
async fn pair(version: &'static rustls::SupportedProtocolVersion) -> (Accepted, Accepted) {
    let (ca, issuer) = new_ca("tls stream test CA");
    let (cert, key) = leaf(
        &issuer,
        "bookie",
        vec![SanType::IpAddress([127, 0, 0, 1].into())],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Small socket buffers, whatever the machine's limits: the 24 MiB write cannot fit in them
    // even with the reader's, so the direct send is cut short and falls back.
    let server_side = async {
        let (stream, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&stream).set_recv_buffer_size(64 << 10).unwrap();
        tls::accept(stream, Arc::new(server)).await.unwrap()
    };
    let client_side = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        socket2::SockRef::from(&stream).set_send_buffer_size(64 << 10).unwrap();
        tls::connect(stream, Arc::new(client), tls::server_name_of(addr)).await.unwrap()
    };
    join(client_side, server_side).await
}

/// Writes `total` bytes of the pattern as vectored writes of `chunks`, then shuts down.
async fn write_pattern(writer: &mut StreamWriter, total: usize) {
    let all = chunks(total);
    for group in all.chunks(5) {
        let BufResult(written, _) = writer.write_vectored_all(group.to_vec()).await;
        written.unwrap();
    }
    writer.shutdown().await.unwrap();
}

/// Reads to the end of the stream, after `wait`, checking every byte; the byte count.
async fn read_pattern(reader: &mut StreamReader, wait: Duration) -> u64 {
    compio::time::sleep(wait).await;
    let mut position = 0u64;
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        buf.clear();
        let BufResult(read, returned) = reader.append(buf).await;
        buf = returned;
        if read.unwrap() == 0 {
            return position;
        }
        for (i, byte) in buf.iter().enumerate() {
            assert_eq!(*byte, pattern(position + i as u64), "byte {}", position + i as u64);
        }
        position += buf.len() as u64;
    }
}

/// Runs `future` on a compio runtime of its own; a hang (a writer spinning or waiting for
/// ever) fails the test after a minute instead of holding CI.
fn run<F: std::future::Future>(future: F) -> F::Output {
    let bounded = compio::time::timeout(Duration::from_secs(60), future);
    compio::runtime::Runtime::new().unwrap().block_on(bounded).expect("the TLS stream test hung")
}

#[test]
fn a_write_larger_than_the_socket_takes_lands_whole_after_the_reader_waited() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        run(async {
            let (mut client, mut server) = pair(version).await;
            let total = 24 << 20;
            let (_, read) = join(
                write_pattern(&mut client.writer, total),
                read_pattern(&mut server.reader, Duration::from_millis(300)),
            )
            .await;
            assert_eq!(read, total as u64, "{version:?}");
        });
    }
}

#[test]
fn both_directions_of_one_connection_at_once() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        run(async {
            let (mut client, mut server) = pair(version).await;
            let total = 8 << 20;
            let there = join(
                write_pattern(&mut client.writer, total),
                read_pattern(&mut server.reader, Duration::from_millis(50)),
            );
            let back = join(
                write_pattern(&mut server.writer, total),
                read_pattern(&mut client.reader, Duration::from_millis(100)),
            );
            let ((_, there), (_, back)) = join(there, back).await;
            assert_eq!((there, back), (total as u64, total as u64), "{version:?}");
        });
    }
}

#[test]
fn a_write_dropped_mid_send_fails_every_later_write() {
    run(async {
        let (mut client, _server) = pair(&rustls::version::TLS13).await;
        // Nobody reads: the write waits on the runtime's send until the timeout drops it.
        let stuck = compio::time::timeout(
            Duration::from_millis(300),
            client.writer.write_vectored_all(chunks(24 << 20)),
        );
        assert!(stuck.await.is_err(), "a 24 MiB write finished with nobody reading");
        // TL6: a later write must not overtake the send the dropped one left under way.
        let BufResult(later, _) = client.writer.write_all(vec![7u8; 100]).await;
        assert!(later.is_err(), "a write after a dropped one went through");
    });
}
