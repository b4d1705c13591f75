//! `BatchBuilder`: lays out one journal batch (one aligned write) in an `AlignedBuf`.
//!
//! A batch is a `Batch` record (its length and sequence number), then entry, master-key, fence
//! and LAC records back to back, then a `Padding` record up to the next sector boundary unless
//! the records already end on one. Pure: no I/O, no clock.
//!
//! Invariants:
//! - BB1: a closed batch's length is a non-zero multiple of `SECTOR_BYTES`.
//! - BB2: the `Batch` record's length field equals the closed length.

use crate::constants::{RECORD_HEADER_BYTES, SECTOR_BYTES};
use crate::io::buf::{AlignedBuf, round_up};
use crate::journal::record::{self, RecordHeader, RecordKind};

/// Bytes beyond the records that closing a batch may need (a padding record spanning into one
/// more sector).
pub const BATCH_CLOSE_SLACK_BYTES: usize = SECTOR_BYTES + RECORD_HEADER_BYTES;

/// Builds one batch.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: AlignedBuf,
    epoch: u64,
    seed: u32,
    seq: u64,
    record_count: u64,
}

impl BatchBuilder {
    /// Starts batch `seq` for a file with `epoch` in `buf` (its old contents are overwritten).
    pub fn new(mut buf: AlignedBuf, epoch: u64, seq: u64) -> BatchBuilder {
        // No need to zero: records overwrite every byte they cover, and `close` zeroes the
        // padding.
        assert!(buf.capacity() >= RECORD_HEADER_BYTES + BATCH_CLOSE_SLACK_BYTES);
        buf.set_len(RECORD_HEADER_BYTES); // The Batch record, filled in by `close`.
        BatchBuilder { buf, epoch, seed: record::seed(epoch), seq, record_count: 0 }
    }

    /// Bytes used so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no record was added yet.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// This batch's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The epoch records are stamped with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a record with this payload still fits, leaving room to close.
    pub fn fits(&self, payload_len: usize) -> bool {
        self.buf.len() + record::record_bytes(payload_len) + BATCH_CLOSE_SLACK_BYTES <= self.buf.capacity()
    }

    /// Appends a record; returns its offset within the batch. The caller checked `fits`.
    pub fn push(&mut self, header: &RecordHeader, payload: &[u8]) -> usize {
        assert!(self.fits(payload.len()));
        assert_ne!(header.kind, RecordKind::Batch);
        assert_ne!(header.kind, RecordKind::Padding);
        let at = self.buf.len();
        let end = at + record::record_bytes(payload.len());
        self.buf.set_len(end);
        record::encode_seeded(&mut self.buf.as_mut_slice()[at..end], self.epoch, self.seed, header, payload);
        self.record_count += 1;
        at
    }

    /// Gives back the buffer of a batch that holds no record.
    pub fn into_buffer(self) -> AlignedBuf {
        assert_eq!(self.record_count, 0);
        self.buf
    }

    /// Gives back the buffer of a batch that will not be written.
    pub fn abandon(self) -> AlignedBuf {
        self.buf
    }

    /// Pads to a sector boundary, writes the `Batch` record, and hands back the buffer, whose
    /// length is the bytes to write (BB1).
    pub fn close(mut self) -> AlignedBuf {
        assert!(self.record_count > 0);
        let records_end = self.buf.len();
        let end = if records_end.is_multiple_of(SECTOR_BYTES) {
            records_end
        } else {
            let end = round_up(records_end + RECORD_HEADER_BYTES, SECTOR_BYTES);
            let padding = RecordHeader {
                kind: RecordKind::Padding,
                flags: 0,
                payload_len: (end - records_end - RECORD_HEADER_BYTES) as u32,
                segment_id: 0,
                entry_id: 0,
                last_add_confirmed: record::LAC_NONE,
            };
            self.buf.set_len(end);
            let slice = &mut self.buf.as_mut_slice()[records_end..end];
            slice[RECORD_HEADER_BYTES..].fill(0);
            record::encode(slice, self.epoch, &padding, &[]);
            end
        };
        let batch = RecordHeader {
            kind: RecordKind::Batch,
            flags: 0,
            payload_len: 0,
            segment_id: end as u64,
            entry_id: self.seq,
            last_add_confirmed: self.record_count,
        };
        record::encode(&mut self.buf.as_mut_slice()[..RECORD_HEADER_BYTES], self.epoch, &batch, &[]);
        assert!(end.is_multiple_of(SECTOR_BYTES) && end > 0);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{LAC_NONE, decode};

    fn entry(id: u64, len: usize) -> RecordHeader {
        RecordHeader {
            kind: RecordKind::Entry,
            flags: 0,
            payload_len: len as u32,
            segment_id: 1,
            entry_id: id,
            last_add_confirmed: LAC_NONE,
        }
    }

    #[test]
    fn batch_closes_aligned_at_every_length() {
        for len in 0..(2 * SECTOR_BYTES) {
            let mut b = BatchBuilder::new(AlignedBuf::with_capacity(4 * SECTOR_BYTES), 5, 9);
            let payload = vec![0xAB; len];
            let at = b.push(&entry(0, len), &payload);
            assert_eq!(at, RECORD_HEADER_BYTES);
            let buf = b.close();
            assert_eq!(buf.len() % SECTOR_BYTES, 0, "len {len}");
            let (h, _) = decode(buf.as_slice(), 5).unwrap();
            assert_eq!(h.kind, RecordKind::Batch);
            assert_eq!(h.segment_id as usize, buf.len());
            assert_eq!(h.entry_id, 9);
            let (e, p) = decode(&buf.as_slice()[at..], 5).unwrap();
            assert_eq!(e.entry_id, 0);
            assert_eq!(p, &payload[..]);
        }
    }
}
