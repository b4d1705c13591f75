//! The embedded store's log records: every mutation of a `LocalCore`, framed and checksummed,
//! so a shell can append them (write + fdatasync) before answering and replay rebuilds the
//! exact state, revisions included. Pure: no I/O.
//!
//! ```text
//! record   u32 crc32c (over len and body), u32 len (of body), body
//! body     u8 kind, then by kind:
//!   1 Txn     u32 op count, ops: u8 op (1 put, 2 delete), key (u32 len + UTF-8),
//!             put: value (u32 len + bytes), u8 has lease, u64 lease id
//!   2 Grant   u64 lease id, u64 ttl in milliseconds
//!   3 End     u32 count, u64 lease ids (revoked or expired leases, in one revision)
//!   4 State   u64 revision, u64 next lease id, u32 key count, keys: key, value, u64 version,
//!             u64 created, u8 has lease, u64 lease id; u32 lease count, leases: u64 id,
//!             u64 ttl ms (only as the first record of a rewritten log)
//! ```
//!
//! Conditions are not logged: a record is written only for a transaction that passed them, and
//! replay applies it unconditionally.
//!
//! Invariant LL1: replaying the records a core produced, in order, into an empty core gives the
//! same keys, versions, revision and leases (deadlines restart from the replay's `now`).

use std::time::Duration;

use bytes::Bytes;

use crate::{LeaseId, Op, Version};

/// One logged mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRecord {
    /// A transaction that was applied (its operations, unconditional on replay).
    Txn(Vec<Op>),
    /// A lease was granted.
    Grant {
        /// Its id.
        id: LeaseId,
        /// Its time to live.
        ttl: Duration,
    },
    /// Leases ended (revoked or expired) in one revision, deleting their keys.
    End(Vec<LeaseId>),
    /// The whole state (the first record of a rewritten log): what every record before it
    /// built.
    State(Box<StateImage>),
}

/// The whole state of a store, as a rewritten log starts with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateImage {
    /// The store revision.
    pub revision: Version,
    /// The next lease id.
    pub lease_next: u64,
    /// Every key: (key, value, version, created, lease).
    pub keys: Vec<(String, Bytes, Version, Version, Option<LeaseId>)>,
    /// Every live lease with its time to live (deadlines restart at open).
    pub leases: Vec<(LeaseId, Duration)>,
}

const KIND_TXN: u8 = 1;
const KIND_GRANT: u8 = 2;
const KIND_END: u8 = 3;
const KIND_STATE: u8 = 4;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Largest record body accepted when decoding (a bound for damaged lengths).
pub const RECORD_BODY_MAX: usize = 64 << 20;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends `record`, framed, to `out`.
pub fn encode(record: &LogRecord, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    match record {
        LogRecord::Txn(ops) => {
            body.push(KIND_TXN);
            body.extend_from_slice(&(ops.len() as u32).to_le_bytes());
            for op in ops {
                match op {
                    Op::Put { key, value, lease, .. } => {
                        body.push(OP_PUT);
                        put_bytes(&mut body, key.as_bytes());
                        put_bytes(&mut body, value);
                        body.push(u8::from(lease.is_some()));
                        body.extend_from_slice(&lease.map_or(0, |l| l.0).to_le_bytes());
                    }
                    Op::Delete { key, .. } => {
                        body.push(OP_DELETE);
                        put_bytes(&mut body, key.as_bytes());
                    }
                }
            }
        }
        LogRecord::Grant { id, ttl } => {
            body.push(KIND_GRANT);
            body.extend_from_slice(&id.0.to_le_bytes());
            body.extend_from_slice(&(ttl.as_millis() as u64).to_le_bytes());
        }
        LogRecord::End(ids) => {
            body.push(KIND_END);
            body.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                body.extend_from_slice(&id.0.to_le_bytes());
            }
        }
        LogRecord::State(image) => {
            body.push(KIND_STATE);
            body.extend_from_slice(&image.revision.0.to_le_bytes());
            body.extend_from_slice(&image.lease_next.to_le_bytes());
            body.extend_from_slice(&(image.keys.len() as u32).to_le_bytes());
            for (key, value, version, created, lease) in &image.keys {
                put_bytes(&mut body, key.as_bytes());
                put_bytes(&mut body, value);
                body.extend_from_slice(&version.0.to_le_bytes());
                body.extend_from_slice(&created.0.to_le_bytes());
                body.push(u8::from(lease.is_some()));
                body.extend_from_slice(&lease.map_or(0, |l| l.0).to_le_bytes());
            }
            body.extend_from_slice(&(image.leases.len() as u32).to_le_bytes());
            for (id, ttl) in &image.leases {
                body.extend_from_slice(&id.0.to_le_bytes());
                body.extend_from_slice(&(ttl.as_millis() as u64).to_le_bytes());
            }
        }
    }
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32c_of(&len, &body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&body);
}

fn crc32c_of(len: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len), body)
}

/// How a log ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// At a record boundary, followed by nothing or zeroes.
    Clean,
    /// A record cut short or failing its checksum at the very end: an append that a crash
    /// interrupted (never acknowledged). Its offset.
    Torn(usize),
    /// Bytes that are not a record, with valid records after them: damage. Its offset.
    Damaged(usize),
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        Some(u64::from_le_bytes(raw))
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn decode_body(body: &[u8]) -> Option<LogRecord> {
    let mut r = Reader { bytes: body, at: 0 };
    let record = match r.u8()? {
        KIND_TXN => {
            let n = r.u32()? as usize;
            let mut ops = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                match r.u8()? {
                    OP_PUT => {
                        let key = std::str::from_utf8(r.bytes()?).ok()?.to_string();
                        let value = Bytes::copy_from_slice(r.bytes()?);
                        let has_lease = r.u8()?;
                        let lease = r.u64()?;
                        let lease = match has_lease {
                            0 => None,
                            1 => Some(LeaseId(lease)),
                            _ => return None,
                        };
                        ops.push(Op::Put { key, value, cond: crate::Cond::Any, lease });
                    }
                    OP_DELETE => {
                        let key = std::str::from_utf8(r.bytes()?).ok()?.to_string();
                        ops.push(Op::Delete { key, cond: crate::Cond::Any });
                    }
                    _ => return None,
                }
            }
            LogRecord::Txn(ops)
        }
        KIND_GRANT => LogRecord::Grant { id: LeaseId(r.u64()?), ttl: Duration::from_millis(r.u64()?) },
        KIND_END => {
            let n = r.u32()? as usize;
            let mut ids = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                ids.push(LeaseId(r.u64()?));
            }
            LogRecord::End(ids)
        }
        KIND_STATE => {
            let revision = Version(r.u64()?);
            let lease_next = r.u64()?;
            let n = r.u32()? as usize;
            let mut keys = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                let key = std::str::from_utf8(r.bytes()?).ok()?.to_string();
                let value = Bytes::copy_from_slice(r.bytes()?);
                let (version, created) = (Version(r.u64()?), Version(r.u64()?));
                let has_lease = r.u8()?;
                let lease = r.u64()?;
                let lease = match has_lease {
                    0 => None,
                    1 => Some(LeaseId(lease)),
                    _ => return None,
                };
                keys.push((key, value, version, created, lease));
            }
            let n = r.u32()? as usize;
            let mut leases = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                leases.push((LeaseId(r.u64()?), Duration::from_millis(r.u64()?)));
            }
            LogRecord::State(Box::new(StateImage { revision, lease_next, keys, leases }))
        }
        _ => return None,
    };
    (r.at == body.len()).then_some(record)
}

/// Decodes one framed record at the start of `bytes`: the record and its framed length.
fn decode_one(bytes: &[u8]) -> Option<(LogRecord, usize)> {
    let crc = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let len_raw = bytes.get(4..8)?;
    let len = u32::from_le_bytes(len_raw.try_into().ok()?) as usize;
    if len == 0 || len > RECORD_BODY_MAX {
        return None;
    }
    let body = bytes.get(8..8 + len)?;
    if crc32c_of(len_raw, body) != crc {
        return None;
    }
    Some((decode_body(body)?, 8 + len))
}

/// Decodes a whole log: its valid records in order and how it ends. Never panics. A record
/// that fails is a torn tail when nothing valid follows it, damage otherwise (telling them
/// apart tries every later offset: quadratic in the bytes after the failure, which only
/// damage makes long).
pub fn decode_log(bytes: &[u8]) -> (Vec<LogRecord>, LogEnd) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at..].iter().all(|b| *b == 0) {
            return (records, LogEnd::Clean);
        }
        match decode_one(&bytes[at..]) {
            Some((record, n)) => {
                records.push(record);
                at += n;
            }
            None => {
                // Anything valid later means acknowledged records after the bad bytes.
                let later = (at + 1..bytes.len()).any(|i| decode_one(&bytes[i..]).is_some());
                return (records, if later { LogEnd::Damaged(at) } else { LogEnd::Torn(at) });
            }
        }
    }
    (records, LogEnd::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<LogRecord> {
        vec![
            LogRecord::Grant { id: LeaseId(1), ttl: Duration::from_millis(5000) },
            LogRecord::Txn(vec![
                Op::Put {
                    key: "bookies/1".into(),
                    value: Bytes::from_static(b"addr"),
                    cond: crate::Cond::Any,
                    lease: Some(LeaseId(1)),
                },
                Op::Delete { key: "old".into(), cond: crate::Cond::Any },
            ]),
            LogRecord::End(vec![LeaseId(1)]),
        ]
    }

    #[test]
    fn round_trip_torn_tail_and_damage() {
        let mut log = Vec::new();
        for r in sample() {
            encode(&r, &mut log);
        }
        assert_eq!(decode_log(&log), (sample(), LogEnd::Clean));
        let mut padded = log.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(decode_log(&padded).1, LogEnd::Clean);
        // Cut inside the last record: torn.
        let cut = &log[..log.len() - 3];
        let (records, end) = decode_log(cut);
        assert_eq!(records.len(), 2);
        assert!(matches!(end, LogEnd::Torn(_)));
        // A flipped byte in the first record, valid ones after: damage.
        let mut bad = log.clone();
        bad[10] ^= 1;
        assert!(matches!(decode_log(&bad), (r, LogEnd::Damaged(0)) if r.is_empty()));
    }

    proptest! {
        #[test]
        fn decode_log_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_log(&bytes);
        }

    }
}
