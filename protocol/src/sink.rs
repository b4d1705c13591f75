//! `Sink`: where encoders write a frame, either one contiguous buffer or a list of chunks.
//!
//! Owns: the two ways an encoded frame leaves the encoder: copied into a `BytesMut`, or as
//! `Bytes` chunks where payloads stay the caller's own buffers (for vectored sends: no copy of
//! an entry payload on the way out).
//! Does not own: the frame layout (request.rs, response.rs).
//!
//! Invariants:
//! - K1: both sinks produce the same bytes, in the same order, for the same frame.

use bytes::{BufMut, Bytes, BytesMut};

/// A destination for an encoded frame.
pub(crate) trait Sink {
    /// Fixed-size fields: copied.
    fn put(&mut self, bytes: &[u8]);
    /// An entry payload or token: copied by `BytesMut`, kept as a chunk by `Chunks`.
    fn put_payload(&mut self, payload: &Bytes);
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }

    fn put_payload(&mut self, payload: &Bytes) {
        self.put_slice(payload);
    }
}

/// Collects a frame as chunks: runs of fields in small buffers, payloads as given.
pub(crate) struct Chunks<'a> {
    pub(crate) chunks: &'a mut Vec<Bytes>,
    pub(crate) fields: BytesMut,
}

impl Chunks<'_> {
    /// Pushes the fields written since the last payload as one chunk.
    pub(crate) fn finish(&mut self) {
        if !self.fields.is_empty() {
            self.chunks.push(self.fields.split().freeze());
        }
    }
}

impl Sink for Chunks<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.fields.put_slice(bytes);
    }

    fn put_payload(&mut self, payload: &Bytes) {
        self.finish();
        if !payload.is_empty() {
            self.chunks.push(payload.clone());
        }
    }
}
