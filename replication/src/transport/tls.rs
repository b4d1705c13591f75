//! TLS over a compio `TcpStream`: rustls driven by hand, as a reader half and a writer half for
//! the two tasks of one connection (the bookie server's and the client's alike), plus the plain
//! TCP halves behind the same two types, so a connection's loops do not care which it has.
//!
//! Owns: the handshake (`connect`, `accept`), decrypting into the caller's receive buffer
//! (`StreamReader::append`), encrypting and sending (`StreamWriter`, a compio `AsyncWrite`).
//! Does not own: certificates and keys (security.rs), who the peer is (the server's
//! authenticator reads `Accepted::peer_certificates`), timeouts (the callers race these futures
//! with their own).
//!
//! Why not `compio-tls` (0.10, the version compio 0.19 pins): its `TlsStream` keeps the rustls
//! connection private, so a server cannot read the client certificate mutual TLS identifies the
//! client by; and it splits only through a `BiLock` that a pending read holds, so a response
//! could not be sent while the reader waits for the next request (a pipelined connection reads
//! and writes at once). It also goes through two adapter layers (a buffered sync stream and a
//! futures-io stream with a boxed future per poll). Here both halves share one
//! `rustls::Connection` in a `RefCell` (a connection lives on one thread) and each owns a handle
//! on the duplex socket.
//!
//! Invariants:
//! - TL1: after the handshake only the writer half writes to the socket, and it sends the TLS
//!   records in the order rustls made them. Records the reader's processing queues (a KeyUpdate
//!   answer) leave with the writer's next write; nothing in our protocol waits for them.
//! - TL2: a write returns once the ciphertext of the bytes it took is handed to the socket in
//!   full, as a plain TCP write does; at most `WRITE_PLAINTEXT_MAX` plaintext bytes per call, so
//!   what one connection buffers in rustls is bounded.
//! - TL3: the reader hands out only plaintext rustls authenticated; a TLS error (a bad record,
//!   an alert from the peer) is a read error naming it, never bytes. A TCP end, with or without
//!   close_notify, reads as the end of the stream (frames delimit themselves: a cut frame is
//!   seen by the decoder as one never completed).
//! - TL4: no `RefCell` borrow of the rustls connection is held across an await.
//! - TL5: a failed handshake sends the alert rustls queued for it (best effort), so the peer
//!   learns why (an untrusted certificate, a missing one) instead of seeing a bare close.
//! - TL6: the writer sends in one of two ways, never both at once: straight from rustls'
//!   buffers with a non-blocking send (no await), and what the socket did not take through the
//!   runtime, awaited to the end before the write returns. A write dropped before it returned
//!   (a timeout) may leave a runtime send in flight: every later write on the half then fails
//!   (`sending` stays set) rather than overtake it; the callers break the connection there
//!   anyway (the bookie's outbox, the client's writer), as a half-sent TLS record could not be
//!   followed by anything.

use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use compio::BufResult;
use compio::buf::{IoBuf, IoVectoredBuf};
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::pki_types::{CertificateDer, ServerName};

/// Ciphertext a reader asks the socket for at once: at least this, and as much as the caller
/// has room for plaintext (the server's receive buffer grows to 512 KiB under load, so one read
/// brings it a large batch of requests, as over plain TCP), up to `CIPHER_READ_BYTES_MAX`.
const CIPHER_READ_BYTES: usize = 64 << 10;
const CIPHER_READ_BYTES_MAX: usize = 1 << 20;
/// Ciphertext a reader may hold without rustls taking any of it: more means a peer that does
/// not speak TLS records (rustls takes every whole record it is offered).
const CIPHER_STUCK_BYTES_MAX: usize = 1 << 20;
/// Plaintext one write takes at most (TL2); callers write the rest in the next call.
const WRITE_PLAINTEXT_MAX: usize = 1 << 20;
/// Plaintext of a full TLS record (rustls' default and the protocol's largest fragment).
const RECORD_BYTES: usize = 16 << 10;
/// Buffers a connection keeps between reads and writes at most once it calms down: larger
/// ones (grown for a busy moment) are let go when empty after a read of under `CALM_BYTES`, or
/// after `CALM_SENDS` writes in a row that each needed under `CALM_BYTES` of it, so an idle TLS
/// connection costs little more than a plain one, and a busy one keeps its buffers (no
/// allocation per read or write).
const KEEP_BYTES_MAX: usize = 64 << 10;
const CALM_BYTES: usize = 16 << 10;
/// A writer lets its large buffer go after this many sends in a row that needed little of it
/// (the socket took nearly everything straight from rustls).
const CALM_SENDS: u32 = 64;
/// How long, and for how many bytes, a server reads on after refusing a handshake (`linger`).
const LINGER: std::time::Duration = std::time::Duration::from_millis(200);
const LINGER_BYTES_MAX: usize = 64 << 10;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed during the handshake.
    #[error("connection lost during the TLS handshake: {0}")]
    Io(#[source] io::Error),
    /// TLS refused: a certificate not trusted or not for this name, a missing client
    /// certificate, an alert from the peer, a protocol error.
    #[error("{0}")]
    Tls(#[source] rustls::Error),
}

/// A finished handshake: the two halves, and what the peer proved.
pub struct Accepted {
    /// The half the reader task owns.
    pub reader: StreamReader,
    /// The half the writer task owns.
    pub writer: StreamWriter,
    /// The peer's certificate chain (end entity first), as the handshake verified it; `None`
    /// when the peer sent none (every server sends one; a client only when asked to).
    pub peer_certificates: Option<Vec<CertificateDer<'static>>>,
}

/// The reading half of a connection: plain TCP or TLS.
pub enum StreamReader {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(TlsReader),
}

/// The writing half of a connection: plain TCP or TLS. A compio `AsyncWrite`.
pub enum StreamWriter {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(TlsWriter),
}

/// Splits a plain TCP stream into the two halves (no TLS).
pub fn plain(stream: TcpStream) -> (StreamReader, StreamWriter) {
    let (reader, writer) = stream.into_split();
    (StreamReader::Plain(reader), StreamWriter::Plain(writer))
}

/// The client side of a handshake on a connected stream; the server's certificate is verified
/// against `name`.
pub async fn connect(
    stream: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<Accepted, HandshakeError> {
    let session = rustls::ClientConnection::new(config, name).map_err(HandshakeError::Tls)?;
    handshake(stream, rustls::Connection::Client(session)).await
}

/// The server side of a handshake on an accepted stream.
pub async fn accept(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<Accepted, HandshakeError> {
    let session = rustls::ServerConnection::new(config).map_err(HandshakeError::Tls)?;
    handshake(stream, rustls::Connection::Server(session)).await
}

/// The name a client verifies a bookie's certificate against by default: its IP address (so
/// bookie certificates carry an IP subject alternative name).
pub fn server_name_of(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

async fn handshake(stream: TcpStream, mut session: rustls::Connection) -> Result<Accepted, HandshakeError> {
    session.set_buffer_limit(None); // TL2 bounds what goes in instead
    let (mut read_socket, mut write_socket) = stream.into_split();
    let mut cipher = BytesMut::with_capacity(CIPHER_READ_BYTES);
    let mut out = Vec::new();
    loop {
        while session.wants_write() {
            out.clear();
            session.write_tls(&mut out).map_err(HandshakeError::Io)?;
            let BufResult(sent, returned) = write_socket.write_all(std::mem::take(&mut out)).await;
            out = returned;
            sent.map_err(HandshakeError::Io)?;
        }
        if !session.is_handshaking() {
            break;
        }
        if cipher.is_empty() {
            cipher.reserve(CIPHER_READ_BYTES);
            let BufResult(read, returned) = read_socket.append(cipher).await;
            cipher = returned;
            match read {
                Ok(0) => {
                    let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the peer");
                    return Err(HandshakeError::Io(closed));
                }
                Ok(_) => {}
                Err(error) => return Err(HandshakeError::Io(error)),
            }
        }
        let taken = read_tls(&mut session, &cipher).map_err(HandshakeError::Io)?;
        if taken == 0 {
            // rustls refuses input only with an error; never spin on bytes it will not take.
            let stuck = io::Error::new(io::ErrorKind::InvalidData, "TLS: handshake bytes not taken");
            return Err(HandshakeError::Io(stuck));
        }
        cipher.advance(taken);
        if let Err(error) = session.process_new_packets() {
            // TL5: tell the peer why, then give up.
            out.clear();
            if session.write_tls(&mut out).is_ok() && !out.is_empty() {
                let _ = write_socket.write_all(out).await;
            }
            if matches!(session, rustls::Connection::Server(_)) {
                linger(read_socket, write_socket).await;
            }
            return Err(HandshakeError::Tls(error));
        }
    }
    let peer_certificates = session.peer_certificates().map(<[CertificateDer<'static>]>::to_vec);
    let session = Rc::new(RefCell::new(session));
    let reader =
        TlsReader { session: session.clone(), socket: read_socket, cipher, ended: false, calm: true };
    let writer = TlsWriter { session, socket: write_socket, out, sending: false, calm_sends: 0 };
    Ok(Accepted { reader: StreamReader::Tls(reader), writer: StreamWriter::Tls(writer), peer_certificates })
}

/// After a refused handshake, a server closes its side and reads what the client still sends
/// (a TLS 1.3 client sends its first requests right after its certificate), for a moment and a
/// few bytes at most: closing with those unread would reset the connection, and a reset may
/// destroy the alert before the client reads it (TL5).
async fn linger(mut read_socket: TcpStream, mut write_socket: TcpStream) {
    let _ = write_socket.shutdown().await;
    let drain = async {
        let mut discarded = 0;
        let mut buf = Vec::with_capacity(LINGER_BYTES_MAX);
        while discarded < LINGER_BYTES_MAX {
            buf.clear();
            match read_socket.append(buf).await {
                BufResult(Ok(n), returned) if n > 0 => {
                    discarded += n;
                    buf = returned;
                }
                _ => return,
            }
        }
    };
    let _ = compio::time::timeout(LINGER, drain).await;
}

/// Offers `cipher` to rustls once; the bytes it took (at most what its record buffer has room
/// for: `process_new_packets` must run before the next offer).
fn read_tls(session: &mut rustls::Connection, cipher: &[u8]) -> io::Result<usize> {
    let mut rest = cipher;
    session.read_tls(&mut rest)?;
    Ok(cipher.len() - rest.len())
}

/// The reading half of a TLS connection.
pub struct TlsReader {
    session: Rc<RefCell<rustls::Connection>>,
    socket: TcpStream,
    /// Ciphertext read from the socket and not yet taken by rustls.
    cipher: BytesMut,
    /// The socket or the TLS session ended: no more bytes after what rustls holds.
    ended: bool,
    /// The last socket read was small: a large `cipher` may go once empty.
    calm: bool,
}

/// What `TlsReader::plaintext` found.
enum Drained {
    /// This many bytes went into the buffer (more than zero).
    Some(usize),
    /// Nothing now: rustls needs more ciphertext.
    Nothing,
    /// The stream ended (close_notify or a TCP end, TL3).
    End,
}

impl TlsReader {
    /// Appends plaintext to `buf` (within its spare capacity, reserving some if it has none):
    /// at least one byte, or 0 once the stream ended (TL3). Decrypts all the ciphertext one
    /// socket read brought, as far as the room goes, so a busy connection hands its caller
    /// large batches.
    async fn append(&mut self, mut buf: BytesMut) -> BufResult<usize, BytesMut> {
        if buf.capacity() == buf.len() {
            buf.reserve(CIPHER_READ_BYTES);
        }
        let room = buf.capacity() - buf.len();
        let mut moved = 0;
        loop {
            match self.plaintext(&mut buf, room - moved) {
                Ok(Drained::Some(n)) => moved += n,
                Ok(Drained::End) => return BufResult(Ok(moved), buf),
                Ok(Drained::Nothing) => {}
                Err(error) => return BufResult(Err(error), buf),
            }
            if moved == room {
                return BufResult(Ok(moved), buf);
            }
            match self.feed() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => return BufResult(Err(error), buf),
            }
            if moved > 0 {
                return BufResult(Ok(moved), buf);
            }
            if self.ended {
                return BufResult(Ok(0), buf);
            }
            if self.cipher.len() >= CIPHER_STUCK_BYTES_MAX + CIPHER_READ_BYTES_MAX {
                let error = io::Error::new(io::ErrorKind::InvalidData, "TLS: no whole record in 1 MiB");
                return BufResult(Err(error), buf);
            }
            if self.cipher.is_empty() && self.calm && self.cipher.capacity() > KEEP_BYTES_MAX {
                self.cipher = BytesMut::new();
            }
            self.cipher.reserve(room.clamp(CIPHER_READ_BYTES, CIPHER_READ_BYTES_MAX));
            let BufResult(read, cipher) = self.socket.append(std::mem::take(&mut self.cipher)).await;
            self.cipher = cipher;
            match read {
                Ok(0) => self.ended = true,
                Ok(n) => self.calm = n < CALM_BYTES,
                Err(error) => return BufResult(Err(error), buf),
            }
        }
    }

    /// Moves up to `room` bytes of the plaintext rustls holds into `buf` (TL4: the borrow
    /// ends here).
    fn plaintext(&mut self, buf: &mut BytesMut, room: usize) -> io::Result<Drained> {
        let mut session = self.session.borrow_mut();
        let mut reader = session.reader();
        let mut moved = 0;
        while moved < room {
            match reader.fill_buf() {
                Ok([]) => return Ok(if moved > 0 { Drained::Some(moved) } else { Drained::End }),
                Ok(chunk) => {
                    let take = chunk.len().min(room - moved);
                    buf.extend_from_slice(&chunk[..take]);
                    reader.consume(take);
                    moved += take;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(if moved > 0 { Drained::Some(moved) } else { Drained::End });
                }
                Err(error) => return Err(error),
            }
        }
        Ok(if moved > 0 { Drained::Some(moved) } else { Drained::Nothing })
    }

    /// Offers the ciphertext held to rustls and processes what it took; whether it took any.
    /// Called only with no plaintext pending (rustls refuses ciphertext past 16 KiB of it).
    /// rustls takes at most 4 KiB per offer: offers go on until its record buffer is full (a
    /// whole 16 KiB record or more) before one `process_new_packets`, which then decrypts
    /// every record it holds, rather than once per 4 KiB.
    fn feed(&mut self) -> io::Result<bool> {
        if self.cipher.is_empty() {
            return Ok(false);
        }
        let mut session = self.session.borrow_mut();
        let mut taken = read_tls(&mut session, &self.cipher)?;
        while taken > 0 && taken < self.cipher.len() {
            // Its buffer full, rustls refuses with an error: the bytes wait for the next feed.
            match read_tls(&mut session, &self.cipher[taken..]) {
                Ok(n) if n > 0 => taken += n,
                _ => break,
            }
        }
        self.cipher.advance(taken);
        if let Err(error) = session.process_new_packets() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, tls_read_error(&error)));
        }
        Ok(taken > 0)
    }
}

/// Hands `slices` (`bytes` in all) to rustls to encrypt as one record (or none when empty).
fn seal(session: &mut rustls::Connection, slices: &[io::IoSlice<'_>], bytes: usize) -> io::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let sealed = session.writer().write_vectored(slices)?;
    if sealed != bytes {
        // Cannot happen with the buffer limit off (`handshake`); a short seal would lose bytes
        // the caller was told were written.
        return Err(io::Error::other(format!("TLS took {sealed} of {bytes} bytes")));
    }
    Ok(())
}

/// A TLS error met while reading, for people: an alert from the peer says it refused us.
fn tls_read_error(error: &rustls::Error) -> String {
    match error {
        rustls::Error::AlertReceived(alert) => format!("TLS: the peer sent alert {alert:?}"),
        other => format!("TLS: {other}"),
    }
}

/// The writing half of a TLS connection.
pub struct TlsWriter {
    session: Rc<RefCell<rustls::Connection>>,
    socket: TcpStream,
    /// Ciphertext on its way to the socket (kept for its capacity).
    out: Vec<u8>,
    /// A runtime send of `out` is under way (TL6): set across its await, so a write dropped
    /// there leaves it set and every later write fails instead of overtaking it.
    sending: bool,
    /// Calls to `send` in a row that needed the runtime for less than `CALM_BYTES`.
    calm_sends: u32,
}

impl TlsWriter {
    /// Encrypts up to `WRITE_PLAINTEXT_MAX` bytes of `chunks` and sends them (TL2). The
    /// chunks go to rustls in groups of exactly one full record's plaintext (`RECORD_BYTES`, a
    /// chunk cut where a record ends): many small frames share a TLS record (one seal per 16
    /// KiB, not per frame), with no gathering copy, and rustls walks each group's few slices
    /// only (given all of a batch's up to 1024 slices at once, it walks every slice again for
    /// each record it cuts).
    async fn write_chunks<'a>(&mut self, chunks: impl Iterator<Item = &'a [u8]>) -> io::Result<usize> {
        let taken = {
            let mut session = self.session.borrow_mut();
            let mut group: Vec<io::IoSlice<'_>> = Vec::new();
            let (mut taken, mut grouped) = (0, 0);
            for chunk in chunks {
                let mut rest = &chunk[..chunk.len().min(WRITE_PLAINTEXT_MAX - taken)];
                taken += rest.len();
                while !rest.is_empty() {
                    let (head, tail) = rest.split_at(rest.len().min(RECORD_BYTES - grouped));
                    group.push(io::IoSlice::new(head));
                    grouped += head.len();
                    rest = tail;
                    if grouped == RECORD_BYTES {
                        seal(&mut session, &group, grouped)?;
                        group.clear();
                        grouped = 0;
                    }
                }
                if taken == WRITE_PLAINTEXT_MAX {
                    break;
                }
            }
            seal(&mut session, &group, grouped)?;
            taken
        };
        self.send().await?;
        Ok(taken)
    }

    /// Sends every TLS record rustls has queued (TL1). First straight from rustls' buffers
    /// with a non-blocking send (`DirectSend`), which saves copying every record into `out`;
    /// what the socket does not take at once is copied and sent through the runtime (TL6).
    /// `out` is let go when large once `CALM_SENDS` calls in a row needed the runtime for
    /// little (a connection its peer keeps up with), so a busy one keeps its buffer.
    async fn send(&mut self) -> io::Result<()> {
        if self.sending {
            // TL6: an earlier write was dropped while the runtime sent its records; what is
            // sent now could land before them.
            return Err(io::Error::other("TLS: an earlier write was dropped mid-send"));
        }
        loop {
            self.out.clear();
            {
                let mut session = self.session.borrow_mut();
                let mut direct = DirectSend(socket2::SockRef::from(&self.socket));
                while session.wants_write() {
                    match session.write_tls(&mut direct) {
                        Ok(0) => break, // nothing taken: the runtime sends the rest
                        Ok(_) => {}
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => return Err(error),
                    }
                }
                while session.wants_write() {
                    session.write_tls(&mut self.out)?;
                }
            }
            if self.out.is_empty() {
                self.calm_sends = self.calm_sends.saturating_add(1);
                if self.calm_sends >= CALM_SENDS && self.out.capacity() > KEEP_BYTES_MAX {
                    self.out = Vec::new();
                }
                return Ok(());
            }
            if self.out.len() >= CALM_BYTES {
                self.calm_sends = 0;
            }
            self.sending = true;
            let BufResult(sent, out) = self.socket.write_all(std::mem::take(&mut self.out)).await;
            self.sending = false;
            self.out = out;
            sent?;
        }
    }
}

/// An `io::Write` over a socket that never waits: a send the socket cannot take now fails with
/// `WouldBlock` (and takes nothing). Only the writer half uses it, and only while no runtime
/// send of its own is under way (TL6: `TlsWriter::sending`).
struct DirectSend<'a>(socket2::SockRef<'a>);

impl Write for DirectSend<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored_with_flags(bufs, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StreamReader {
    /// Appends what the peer sent to `buf`, within its spare capacity: some bytes, or 0 at the
    /// end of the stream.
    pub async fn append(&mut self, buf: BytesMut) -> BufResult<usize, BytesMut> {
        match self {
            StreamReader::Plain(socket) => socket.append(buf).await,
            StreamReader::Tls(tls) => tls.append(buf).await,
        }
    }
}

impl AsyncWrite for StreamWriter {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            StreamWriter::Plain(socket) => socket.write(buf).await,
            StreamWriter::Tls(tls) => {
                let written = tls.write_chunks(std::iter::once(buf.as_init())).await;
                BufResult(written, buf)
            }
        }
    }

    async fn write_vectored<T: IoVectoredBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            StreamWriter::Plain(socket) => socket.write_vectored(buf).await,
            StreamWriter::Tls(tls) => {
                let written = tls.write_chunks(buf.iter_slice()).await;
                BufResult(written, buf)
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            StreamWriter::Plain(socket) => socket.flush().await,
            StreamWriter::Tls(tls) => tls.send().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            StreamWriter::Plain(socket) => socket.shutdown().await,
            StreamWriter::Tls(tls) => {
                tls.session.borrow_mut().send_close_notify();
                tls.send().await?;
                tls.socket.shutdown().await
            }
        }
    }
}
