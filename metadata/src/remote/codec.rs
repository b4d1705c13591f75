//! Framing of the remote protocol: the preamble each side sends first, then frames of a u32
//! little-endian length and that many bytes of one protobuf message (messages.rs).
//!
//! Owns: reading and writing frames on a byte stream, the frame size bounds, and the writer
//! loop both ends run (batched writes, one flush per burst, optional heartbeats).
//! Does not own: what the messages mean (client.rs, server.rs).
//!
//! Invariants:
//! - RF1: a frame longer than the reader's bound is refused from its length field alone: no
//!   buffer of the claimed size is allocated, and the body is read as it arrives (a peer that
//!   claims 256 MiB and sends 10 bytes costs 10 bytes).
//! - RF2: reading never panics: a short read, a length over the bound, a wrong preamble or a
//!   stall longer than the caller's silence bound is a `FrameError`, and the caller closes that
//!   connection only.
//! - RF3: the writer sends the preamble before any frame, and frames whole and in the order
//!   they were queued; it flushes whenever its queue runs empty, so no frame waits for a later
//!   one.

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// The first bytes each side sends: "dlogmeta" and the protocol's version (1). A peer that
/// sends anything else is not a dlog metadata client or server (or one of another version).
pub(crate) const PREAMBLE: [u8; 12] = *b"dlogmeta\x01\x00\x00\x00";

/// Buffer sizes of the reading and writing halves.
pub(crate) const IO_BUFFER: usize = 64 << 10;

/// Frames written in one burst at most before a flush (RF3 keeps latency bounded under load).
const BURST_FRAMES: usize = 64;

/// Why a stream stopped yielding frames (RF2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The socket failed or ended inside a frame.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The length field is over the bound (RF1).
    #[error("a frame of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The length announced.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The peer did not start with `PREAMBLE`.
    #[error("the peer does not speak the dlog metadata protocol (preamble {0:02x?})")]
    Preamble(Vec<u8>),
    /// Nothing arrived for this long.
    #[error("nothing received for {0:?}")]
    Silent(Duration),
    /// The body is not the message expected.
    #[error("undecodable frame: {0}")]
    Undecodable(#[from] prost::DecodeError),
}

/// `message` as a frame (length and body); `Err(len)` when its body is over `max` bytes.
pub(crate) fn encode_frame<M: Message>(message: &M, max: usize) -> Result<Bytes, usize> {
    let len = message.encoded_len();
    let Ok(len32) = u32::try_from(len) else { return Err(len) };
    if len > max {
        return Err(len);
    }
    let mut buf = BytesMut::with_capacity(4 + len);
    buf.put_u32_le(len32);
    message.encode(&mut buf).map_err(|_| len)?;
    Ok(buf.freeze())
}

/// Decodes a frame's body.
pub(crate) fn decode<M: Message + Default>(body: Bytes) -> Result<M, FrameError> {
    Ok(M::decode(body)?)
}

/// Awaits `io`, bounded by `silence` when given.
async fn within<T>(
    silence: Option<Duration>,
    io: impl Future<Output = io::Result<T>>,
) -> Result<T, FrameError> {
    match silence {
        None => Ok(io.await?),
        Some(limit) => match tokio::time::timeout(limit, io).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(FrameError::Silent(limit)),
        },
    }
}

/// Reads the peer's preamble (RF2).
pub(crate) async fn read_preamble<R: AsyncRead + Unpin>(
    reader: &mut R,
    silence: Option<Duration>,
) -> Result<(), FrameError> {
    let mut got = [0u8; PREAMBLE.len()];
    within(silence, reader.read_exact(&mut got)).await?;
    if got != PREAMBLE {
        return Err(FrameError::Preamble(got.to_vec()));
    }
    Ok(())
}

/// The next frame's body; `None` at a clean end of stream (between frames). Each read waits
/// at most `silence` when given (RF1, RF2).
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    silence: Option<Duration>,
) -> Result<Option<Bytes>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let Some(rest) = header.get_mut(got..) else { break };
        let n = within(silence, reader.read(rest)).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        got += n;
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Grown as bytes arrive, never to more than the frame (RF1).
    let mut body = BytesMut::with_capacity(len.min(IO_BUFFER));
    while body.len() < len {
        let missing = len - body.len();
        body.reserve(missing.min(1 << 20));
        let mut limited = (&mut *reader).take(missing as u64);
        let n = within(silence, limited.read_buf(&mut body)).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(body.freeze()))
}

/// `work`, failed with `TimedOut` past `deadline`: a peer that stops reading (stopped,
/// partitioned) must not hold this side's queues, and what feeds them, for ever.
async fn written<T>(
    deadline: Option<Duration>,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match deadline {
        None => work.await,
        Some(deadline) => match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("peer not reading for {deadline:?}")))
            }
        },
    }
}

/// Writes the preamble, then every frame queued on `frames` that `keep` keeps, until all its
/// senders are gone (RF3). With `heartbeat`, writes that frame whenever nothing was queued for
/// its interval. With `write_deadline`, a write that cannot finish within it ends the writing
/// with `TimedOut`.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin, F: AsRef<[u8]> + Clone>(
    writer: W,
    mut frames: mpsc::Receiver<F>,
    heartbeat: Option<(Duration, F)>,
    keep: impl Fn(&F) -> bool,
    write_deadline: Option<Duration>,
) -> io::Result<()> {
    let mut writer = BufWriter::with_capacity(IO_BUFFER, writer);
    written(write_deadline, async {
        writer.write_all(&PREAMBLE).await?;
        writer.flush().await
    })
    .await?;
    loop {
        let frame = match &heartbeat {
            None => frames.recv().await,
            Some((every, beat)) => match tokio::time::timeout(*every, frames.recv()).await {
                Ok(frame) => frame,
                Err(_) => Some(beat.clone()),
            },
        };
        let Some(frame) = frame else { break };
        let mut burst = Vec::with_capacity(BURST_FRAMES);
        if keep(&frame) {
            burst.push(frame);
        }
        for _ in 1..BURST_FRAMES {
            let Ok(frame) = frames.try_recv() else { break };
            if keep(&frame) {
                burst.push(frame);
            }
        }
        written(write_deadline, async {
            for frame in &burst {
                writer.write_all(frame.as_ref()).await?;
            }
            writer.flush().await
        })
        .await?;
    }
    writer.flush().await?;
    writer.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::messages::{Call, Request};

    async fn frames_of(bytes: Vec<u8>, max: usize) -> Vec<Result<Option<Bytes>, String>> {
        let mut reader = bytes.as_slice();
        let mut out = Vec::new();
        loop {
            let r = read_frame(&mut reader, max, None).await.map_err(|e| e.to_string());
            let end = !matches!(r, Ok(Some(_)));
            out.push(r);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let request = Request { id: 7, call: Some(Call::Get("k".into())) };
        let frame = encode_frame(&request, 1 << 10).unwrap();
        let mut stream = frame.to_vec();
        stream.extend_from_slice(&frame);
        let got = frames_of(stream, 1 << 10).await;
        assert_eq!(got.len(), 3);
        let body = got[0].clone().unwrap().unwrap();
        assert_eq!(decode::<Request>(body).unwrap(), request);
        assert_eq!(got[2], Ok(None), "a clean end between frames");
        assert_eq!(encode_frame(&request, 2), Err(request.encoded_len()));
        // A length over the bound is refused before any body is read.
        let got = frames_of(vec![0xff, 0xff, 0xff, 0x7f, 1, 2], 1 << 20).await;
        assert!(matches!(&got[0], Err(m) if m.contains("over the")), "{got:?}");
        // A frame cut short, in the header or in the body.
        assert!(frames_of(vec![5, 0], 64).await[0].is_err());
        assert!(frames_of(vec![5, 0, 0, 0, 1, 2], 64).await[0].is_err());
    }

    #[tokio::test]
    async fn a_wrong_preamble_is_refused() {
        let mut ok = PREAMBLE.as_slice();
        read_preamble(&mut ok, None).await.unwrap();
        let mut http = b"GET / HTTP/1.1\r\n".as_slice();
        assert!(matches!(read_preamble(&mut http, None).await, Err(FrameError::Preamble(_))));
        let mut short = b"dlog".as_slice();
        assert!(matches!(read_preamble(&mut short, None).await, Err(FrameError::Io(_))));
    }

    proptest::proptest! {
        /// RF2: any bytes give frames, messages or an error, never a panic.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode::<Request>(Bytes::from(bytes.clone()));
            let _ = decode::<crate::remote::messages::Reply>(Bytes::from(bytes.clone()));
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            for frame in rt.block_on(frames_of(bytes, 128)).into_iter().flatten().flatten() {
                let _ = decode::<Request>(frame);
            }
        }
    }
}
