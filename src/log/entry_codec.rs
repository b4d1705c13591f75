//! The bytes of an entry of a log's segment: a header, then records back to back. The
//! replication layer wraps them in its entry envelope (CRC32C), so this format carries no
//! checksum of its own.
//!
//! Layout (little-endian): `format u8 (1) | flags u8 (0) | reserved u16 (0) | record_count u32
//! | first_index u64`, then per record `txid u64 | length u32 | payload`. `first_index` is the
//! number of records of the segment before this entry, so the last entry of a segment tells the
//! segment's record count (recovery needs it) without reading the others.
//!
//! Invariants:
//! - EC1: decoding never panics and never trusts a count or a length: any byte string is
//!   either a whole, consistent entry (at least one record, lengths that add up exactly,
//!   strictly increasing transaction ids) or a `CodecError`.
//! - EC2: decoded payloads are slices of the entry's `Bytes` (no copy).

use bytes::{BufMut, Bytes, BytesMut};

/// The format byte this build writes and reads.
pub const ENTRY_FORMAT: u8 = 1;
/// Bytes of the entry header.
pub const ENTRY_HEADER_BYTES: usize = 16;
/// Bytes each record adds besides its payload.
pub const RECORD_HEADER_BYTES: usize = 12;

/// Why an entry's bytes are not a valid entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Shorter than its header says.
    #[error("entry truncated: {0}")]
    Truncated(&'static str),
    /// A header field this build does not know.
    #[error("unknown entry format {format} (flags {flags:#x}, reserved {reserved:#x})")]
    Unknown {
        /// The format byte.
        format: u8,
        /// The flags byte.
        flags: u8,
        /// The reserved field.
        reserved: u16,
    },
    /// Inconsistent contents.
    #[error("malformed entry: {0}")]
    Malformed(String),
}

/// Builds one entry's bytes, record by record.
#[derive(Debug)]
pub struct EntryBuilder {
    buf: BytesMut,
    count: u32,
    last_txid: Option<u64>,
}

impl EntryBuilder {
    /// An entry whose first record is the segment's record number `first_index`.
    pub fn new(first_index: u64, capacity: usize) -> EntryBuilder {
        let mut buf = BytesMut::with_capacity(capacity.max(ENTRY_HEADER_BYTES));
        buf.put_u8(ENTRY_FORMAT);
        buf.put_u8(0);
        buf.put_u16_le(0);
        buf.put_u32_le(0);
        buf.put_u64_le(first_index);
        EntryBuilder { buf, count: 0, last_txid: None }
    }

    /// Appends a record; the caller keeps transaction ids increasing (the writer checks them).
    pub fn push(&mut self, txid: u64, payload: &[u8]) {
        debug_assert!(self.last_txid.is_none_or(|last| txid > last), "txids increase");
        debug_assert!(u32::try_from(payload.len()).is_ok(), "the writer bounds record sizes");
        self.buf.put_u64_le(txid);
        self.buf.put_u32_le(payload.len() as u32);
        self.buf.put_slice(payload);
        self.count += 1;
        self.last_txid = Some(txid);
    }

    /// Records pushed.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True with no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entry's bytes.
    pub fn finish(mut self) -> Bytes {
        self.buf[4..8].copy_from_slice(&self.count.to_le_bytes());
        self.buf.freeze()
    }
}

/// One record decoded from an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecord {
    /// Its transaction id.
    pub txid: u64,
    /// Its payload (a slice of the entry).
    pub payload: Bytes,
}

/// A decoded entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedEntry {
    /// Records of the segment before this entry.
    pub first_index: u64,
    /// The records, in slot order.
    pub records: Vec<EntryRecord>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Decodes an entry (EC1, EC2).
pub fn decode_entry(entry: &Bytes) -> Result<DecodedEntry, CodecError> {
    let b = entry.as_ref();
    if b.len() < ENTRY_HEADER_BYTES {
        return Err(CodecError::Truncated("no whole header"));
    }
    let reserved = u16::from_le_bytes([b[2], b[3]]);
    if b[0] != ENTRY_FORMAT || b[1] != 0 || reserved != 0 {
        return Err(CodecError::Unknown { format: b[0], flags: b[1], reserved });
    }
    let count = u32_at(b, 4) as usize;
    let first_index = u64_at(b, 8);
    if count == 0 {
        return Err(CodecError::Malformed("no record".into()));
    }
    // Every record takes at least its header: a count the bytes cannot hold is refused before
    // anything is allocated for it.
    if count > (b.len() - ENTRY_HEADER_BYTES) / RECORD_HEADER_BYTES {
        return Err(CodecError::Malformed(format!("{count} records in {} bytes", b.len())));
    }
    let mut records = Vec::with_capacity(count);
    let mut at = ENTRY_HEADER_BYTES;
    for slot in 0..count {
        if b.len() - at < RECORD_HEADER_BYTES {
            return Err(CodecError::Truncated("record header"));
        }
        let txid = u64_at(b, at);
        let length = u32_at(b, at + 8) as usize;
        at += RECORD_HEADER_BYTES;
        if b.len() - at < length {
            return Err(CodecError::Truncated("record payload"));
        }
        if let Some(last) = records.last().map(|r: &EntryRecord| r.txid)
            && txid <= last
        {
            return Err(CodecError::Malformed(format!("slot {slot}: txid {txid} after {last}")));
        }
        records.push(EntryRecord { txid, payload: entry.slice(at..at + length) });
        at += length;
    }
    if at != b.len() {
        return Err(CodecError::Malformed(format!("{} bytes after the last record", b.len() - at)));
    }
    if first_index.checked_add(count as u64).is_none() {
        return Err(CodecError::Malformed(format!("first index {first_index} overflows")));
    }
    Ok(DecodedEntry { first_index, records })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn build(first: u64, records: &[(u64, Vec<u8>)]) -> Bytes {
        let mut b = EntryBuilder::new(first, 64);
        for (txid, payload) in records {
            b.push(*txid, payload);
        }
        b.finish()
    }

    #[test]
    fn round_trips_and_refuses_what_does_not_add_up() {
        let bytes = build(40, &[(7, b"a".to_vec()), (9, Vec::new()), (10, vec![3; 300])]);
        let d = decode_entry(&bytes).unwrap();
        assert_eq!(d.first_index, 40);
        assert_eq!(d.records.iter().map(|r| r.txid).collect::<Vec<_>>(), [7, 9, 10]);
        assert_eq!(&d.records[2].payload[..], &[3; 300][..]);
        // Any truncation, any trailing byte, a zero count, a txid going back: refused.
        for cut in 0..bytes.len() {
            assert!(decode_entry(&bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_entry(&longer.into()).is_err());
        assert!(decode_entry(&EntryBuilder::new(0, 0).finish()).is_err(), "no record");
        let mut back = bytes.to_vec();
        back[ENTRY_HEADER_BYTES + RECORD_HEADER_BYTES + 1..][..8].copy_from_slice(&7u64.to_le_bytes());
        assert!(matches!(decode_entry(&back.into()), Err(CodecError::Malformed(_))));
        let mut format = bytes.to_vec();
        format[0] = 2;
        assert!(matches!(decode_entry(&format.into()), Err(CodecError::Unknown { format: 2, .. })));
        let mut huge = bytes.to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entry(&huge.into()).is_err(), "a count the bytes cannot hold");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_entry(&Bytes::from(bytes));
        }

        #[test]
        fn built_entries_decode_to_what_was_pushed(
            first in any::<u64>().prop_map(|f| f / 2),
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..20),
        ) {
            let records: Vec<(u64, Vec<u8>)> =
                payloads.into_iter().enumerate().map(|(i, p)| (i as u64 * 3 + 1, p)).collect();
            let d = decode_entry(&build(first, &records)).unwrap();
            prop_assert_eq!(d.first_index, first);
            let got: Vec<(u64, Vec<u8>)> = d.records.into_iter().map(|r| (r.txid, r.payload.to_vec())).collect();
            prop_assert_eq!(got, records);
        }
    }
}
