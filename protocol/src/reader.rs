//! `BodyReader`: a bounds-checked cursor over a frame body held as `Bytes`.
//!
//! Owns: reading little-endian integers and byte strings off a body without panicking, and
//! without copying byte strings (they come back as `Bytes` slices of the body).
//! Does not own: what the fields mean (request.rs, response.rs).
//!
//! Invariants:
//! - R1: every read checks the remaining length first; a short body is `BodyError::Truncated`
//!   naming the field, never a panic.

use bytes::{Buf, Bytes};

use crate::error::BodyError;

/// A cursor over a body.
#[derive(Debug)]
pub struct BodyReader {
    body: Bytes,
}

impl BodyReader {
    /// A reader over a whole body.
    pub fn new(body: Bytes) -> BodyReader {
        BodyReader { body }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.body.len()
    }

    fn need(&self, bytes: usize, field: &'static str) -> Result<(), BodyError> {
        if self.body.len() < bytes { Err(BodyError::Truncated(field)) } else { Ok(()) }
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, BodyError> {
        self.need(1, field)?;
        Ok(self.body.get_u8())
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, BodyError> {
        self.need(4, field)?;
        Ok(self.body.get_u32_le())
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, BodyError> {
        self.need(8, field)?;
        Ok(self.body.get_u64_le())
    }

    /// A `u64` where `LAC_NONE` means none.
    pub fn lac(&mut self, field: &'static str) -> Result<Option<u64>, BodyError> {
        let value = self.u64(field)?;
        Ok((value != crate::limits::LAC_NONE).then_some(value))
    }

    /// `len` bytes, as a slice of the body (no copy).
    pub fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, BodyError> {
        self.need(len, field)?;
        Ok(self.body.split_to(len))
    }

    /// Everything not read yet, as a slice of the body (no copy).
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Checks that the body was read to its end.
    pub fn finish(self) -> Result<(), BodyError> {
        if self.body.is_empty() { Ok(()) } else { Err(BodyError::Trailing(self.body.len() as u64)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_name_the_field() {
        let mut reader = BodyReader::new(Bytes::from_static(&[1, 2, 3]));
        assert_eq!(reader.u32("segment"), Err(BodyError::Truncated("segment")));
        assert_eq!(reader.u8("x"), Ok(1));
        assert_eq!(reader.bytes(3, "key"), Err(BodyError::Truncated("key")));
        assert_eq!(reader.bytes(2, "key"), Ok(Bytes::from_static(&[2, 3])));
        assert_eq!(reader.finish(), Ok(()));
    }
}
