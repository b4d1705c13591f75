//! The embedded store's log records: every mutation of a `LocalCore`, framed and checksummed,
//! so a shell can append them (write + fdatasync) before answering and replay rebuilds the
//! exact state, revisions included. Pure: no I/O.
//!
//! ```text
//! frame    u32 crc32c (over len and body), u32 len (of body, 1..=RECORD_BODY_MAX), body
//! body     u8 kind, then by kind:
//!   1 Txn          u32 op count, ops: u8 op (1 put, 2 delete), key (u32 len + UTF-8),
//!                  put: value (u32 len + bytes), u8 has lease, u64 lease id
//!   2 Grant        u64 lease id, u64 ttl in milliseconds
//!   3 End          u32 count, u64 lease ids (revoked or expired leases, in one revision)
//!   4 State        u64 revision, u64 next lease id: opens an image
//!   5 StateKeys    u32 count, keys: key, value, u64 version, u64 created, u8 has lease,
//!                  u64 lease id
//!   6 StateLeases  u32 count, leases: u64 id, u64 ttl ms
//!   7 StateEnd     u64 key total, u64 lease total: closes the image
//!   8 Batch        u32 record count (>= 1), records: u8 kind (1 Txn, 2 Grant or 3 End),
//!                  u32 len, then that record's body after its kind byte (no frame, no crc)
//! ```
//!
//! Conditions are not logged: a record is written only for a transaction that passed them, and
//! replay applies it unconditionally. Ttls are logged in whole milliseconds, rounded up (the
//! core keeps them whole, so nothing is lost).
//!
//! A shell appends each group commit's records with `encode_batches`: one Batch frame (a lone
//! record as its plain frame), or, past `BATCH_BYTES_MAX`, several Batch frames that it makes
//! durable one at a time (LL4). Why one frame: a write spans pages, and a power loss before
//! its fdatasync may keep a later page and lose an earlier one. Were the records framed one
//! by one, the decoder would find a bad frame followed by valid ones, which it must call damage
//! (LL3). Inside one frame the records carry no checksums, so nothing after the hole passes
//! for a frame and the whole unacknowledged write is a torn tail. `encode` (one record as
//! plain frames) writes images, and logs written before batches decode the same.
//!
//! A `LogRecord::State` (the whole state, first in a rewritten log) is written as several
//! frames: a State frame, StateKeys and StateLeases frames of about `IMAGE_CHUNK_BYTES` each,
//! and a StateEnd frame with the totals. So an image of any size is made of frames within
//! `RECORD_BODY_MAX`, and `decode_log` joins them back into one record. A batch never holds
//! an image or any of its frames.
//!
//! Invariants:
//! - LL1: replaying the records a core produced, in order, into an empty core gives the
//!   same keys, versions, revision and leases (deadlines restart from the replay's `now`).
//! - LL2: frames have at most `RECORD_BODY_MAX` body bytes: a Txn is bounded by the core's
//!   limits (`local_core::TXN_OPS_MAX`, `TXN_BYTES_MAX`), an End by
//!   `local_core::END_LEASES_MAX`, an image is chunked, and a Batch holds at most
//!   `BATCH_BYTES_MAX` body bytes (a record larger than that, which the limits rule out, would
//!   go alone in a plain frame).
//! - LL3: `decode_log` cuts a torn tail only: a bad frame (short, or failing its checksum) with
//!   no frame with a valid checksum at any later offset. Anything else is `Damaged`: a frame
//!   with a valid checksum whose body does not decode (a batch included: an empty one, one
//!   holding an image piece or a batch, a record that does not fill its length), a length
//!   above `RECORD_BODY_MAX` (no append writes one, and a torn append only loses bytes), an
//!   image not closed by its StateEnd (images are fsynced before they replace a log: never
//!   torn), or a search for a later frame that ran out of its `SCAN_CRC_BUDGET` (refusing to
//!   open is safe, cutting acknowledged records is not).
//! - LL4: a crash tears one frame at most, whichever of its pages it kept: each write of a
//!   shell is one frame of `encode_batches`, durable (fdatasync) before the next is written,
//!   and a Batch's records hold no frames of their own. So LL3 cuts a whole unacknowledged
//!   group commit (or its last frames past `BATCH_BYTES_MAX`; none was acknowledged), and
//!   never mistakes it for damage, except when the bytes of a record's key or value happen to
//!   form a frame with a valid checksum (then it refuses to open: safe).

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

/// One key of an image: (key, value, version, created, lease).
pub type ImageKey = (String, Bytes, Version, Version, Option<LeaseId>);

/// The whole state of a store, as a rewritten log starts with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateImage {
    /// The store revision.
    pub revision: Version,
    /// The next lease id.
    pub lease_next: u64,
    /// Every key, in key order.
    pub keys: Vec<ImageKey>,
    /// Every live lease with its time to live (deadlines restart at open), in id order.
    pub leases: Vec<(LeaseId, Duration)>,
}

const KIND_TXN: u8 = 1;
const KIND_GRANT: u8 = 2;
const KIND_END: u8 = 3;
const KIND_STATE: u8 = 4;
const KIND_STATE_KEYS: u8 = 5;
const KIND_STATE_LEASES: u8 = 6;
const KIND_STATE_END: u8 = 7;
const KIND_BATCH: u8 = 8;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Smallest encoded op (a delete of an empty key), StateKeys key, StateLeases lease, End id.
const OP_BYTES_MIN: usize = 1 + 4;
const IMAGE_KEY_BYTES_MIN: usize = 4 + 4 + 8 + 8 + 1 + 8;
const IMAGE_LEASE_BYTES: usize = 8 + 8;
const END_ID_BYTES: usize = 8;
/// A Batch's kind byte and record count; each record's kind byte and length.
const BATCH_HEADER_BYTES: usize = 1 + 4;
const BATCH_ITEM_HEADER_BYTES: usize = 1 + 4;
/// Smallest record in a batch: its header and a Txn or End of count 0.
const BATCH_ITEM_BYTES_MIN: usize = BATCH_ITEM_HEADER_BYTES + 4;
/// Largest record body accepted when decoding (a bound for damaged lengths). `encode` never
/// writes more (LL2).
pub const RECORD_BODY_MAX: usize = 64 << 20;
/// An image's StateKeys and StateLeases frames close once their body passes this size.
pub const IMAGE_CHUNK_BYTES: usize = 4 << 20;
/// A group commit's records past this many body bytes go in several Batch frames (LL2, LL4).
/// Far below `RECORD_BODY_MAX`, and far above one record (`local_core::TXN_BYTES_MAX`).
pub const BATCH_BYTES_MAX: usize = 8 << 20;
const _: () = assert!(BATCH_BYTES_MAX <= RECORD_BODY_MAX);
/// Bytes `decode_log` may checksum while it looks for a valid frame after a bad one (LL3):
/// bounds the search whatever the damage, so decoding stays linear in the log's size.
pub const SCAN_CRC_BUDGET: usize = 256 << 20;

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Counts and lengths are bounded far below u32::MAX by the core's limits (LL2).
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_lease(out: &mut Vec<u8>, lease: Option<LeaseId>) {
    out.push(u8::from(lease.is_some()));
    out.extend_from_slice(&lease.map_or(0, |l| l.0).to_le_bytes());
}

/// A ttl in whole milliseconds, rounded up (a sub-millisecond ttl is never logged as 0).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Appends `record`, framed, to `out` (an image as several frames): one record alone, as in
/// an image write; a shell appends its group commits with `encode_batches` (LL4).
pub fn encode(record: &LogRecord, out: &mut Vec<u8>) {
    match record {
        LogRecord::State(image) => encode_image(image, IMAGE_CHUNK_BYTES, out),
        _ => {
            let mut body = Vec::new();
            encode_body(record, &mut body);
            frame(&body, out);
        }
    }
}

/// Encodes one group commit's records as the frames to write, in order, each made durable
/// before the next is written (LL4): one Batch frame, or several past `BATCH_BYTES_MAX`; a lone
/// record as its plain frame. A group commit holds no image (only a rewrite writes one); were
/// one there, it would come out as its own frames, between batches.
pub fn encode_batches(records: &[LogRecord]) -> Vec<Vec<u8>> {
    encode_batches_within(records, BATCH_BYTES_MAX)
}

fn encode_batches_within(records: &[LogRecord], batch_bytes: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    // The bodies of the batch being filled (each starting with its kind), and its size.
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut bytes = BATCH_HEADER_BYTES;
    for record in records {
        if let LogRecord::State(image) = record {
            debug_assert!(false, "LL4: an image in a group commit");
            frames.extend(batch_frame(&std::mem::take(&mut bodies)));
            bytes = BATCH_HEADER_BYTES;
            let mut out = Vec::new();
            encode_image(image, IMAGE_CHUNK_BYTES, &mut out);
            frames.push(out);
            continue;
        }
        let mut body = Vec::new();
        encode_body(record, &mut body);
        let n = BATCH_ITEM_HEADER_BYTES + body.len() - 1;
        if !bodies.is_empty() && bytes + n > batch_bytes {
            frames.extend(batch_frame(&std::mem::take(&mut bodies)));
            bytes = BATCH_HEADER_BYTES;
        }
        bytes += n;
        bodies.push(body);
    }
    frames.extend(batch_frame(&bodies));
    frames
}

/// One frame holding record `bodies` (each starting with its kind): a Batch, or the plain
/// frame of a lone record; none for no records.
fn batch_frame(bodies: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match bodies {
        [] => return None,
        [body] => frame(body, &mut out),
        _ => {
            let size = bodies.iter().map(|b| BATCH_ITEM_HEADER_BYTES + b.len() - 1).sum::<usize>();
            let mut batch = Vec::with_capacity(BATCH_HEADER_BYTES + size);
            batch.push(KIND_BATCH);
            put_u32(&mut batch, bodies.len());
            for body in bodies {
                debug_assert!(matches!(body[0], KIND_TXN | KIND_GRANT | KIND_END), "LL4: kind {}", body[0]);
                batch.push(body[0]);
                put_bytes(&mut batch, &body[1..]);
            }
            frame(&batch, &mut out);
        }
    }
    Some(out)
}

/// Appends the body of a Txn, Grant or End (its kind, then its fields) to `body`.
fn encode_body(record: &LogRecord, body: &mut Vec<u8>) {
    match record {
        LogRecord::Txn(ops) => {
            body.push(KIND_TXN);
            put_u32(body, ops.len());
            for op in ops {
                match op {
                    Op::Put { key, value, lease, .. } => {
                        body.push(OP_PUT);
                        put_bytes(body, key.as_bytes());
                        put_bytes(body, value);
                        put_lease(body, *lease);
                    }
                    Op::Delete { key, .. } => {
                        body.push(OP_DELETE);
                        put_bytes(body, key.as_bytes());
                    }
                }
            }
        }
        LogRecord::Grant { id, ttl } => {
            body.push(KIND_GRANT);
            body.extend_from_slice(&id.0.to_le_bytes());
            body.extend_from_slice(&ttl_ms(*ttl).to_le_bytes());
        }
        LogRecord::End(ids) => {
            body.push(KIND_END);
            put_u32(body, ids.len());
            for id in ids {
                body.extend_from_slice(&id.0.to_le_bytes());
            }
        }
        LogRecord::State(_) => debug_assert!(false, "an image is encoded by encode_image"),
    }
}

fn frame(body: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!body.is_empty() && body.len() <= RECORD_BODY_MAX, "LL2: frame of {} bytes", body.len());
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
    let crc = crc32c_of(&len, body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(body);
}

/// Writes an image as State, StateKeys and StateLeases chunks closing past `chunk_bytes`,
/// and StateEnd.
fn encode_image(image: &StateImage, chunk_bytes: usize, out: &mut Vec<u8>) {
    let mut body = vec![KIND_STATE];
    body.extend_from_slice(&image.revision.0.to_le_bytes());
    body.extend_from_slice(&image.lease_next.to_le_bytes());
    frame(&body, out);
    for chunk in
        chunks(&image.keys, chunk_bytes, |(key, value, ..)| IMAGE_KEY_BYTES_MIN + key.len() + value.len())
    {
        body.clear();
        body.push(KIND_STATE_KEYS);
        put_u32(&mut body, chunk.len());
        for (key, value, version, created, lease) in chunk {
            put_bytes(&mut body, key.as_bytes());
            put_bytes(&mut body, value);
            body.extend_from_slice(&version.0.to_le_bytes());
            body.extend_from_slice(&created.0.to_le_bytes());
            put_lease(&mut body, *lease);
        }
        frame(&body, out);
    }
    for chunk in chunks(&image.leases, chunk_bytes, |_| IMAGE_LEASE_BYTES) {
        body.clear();
        body.push(KIND_STATE_LEASES);
        put_u32(&mut body, chunk.len());
        for (id, ttl) in chunk {
            body.extend_from_slice(&id.0.to_le_bytes());
            body.extend_from_slice(&ttl_ms(*ttl).to_le_bytes());
        }
        frame(&body, out);
    }
    body.clear();
    body.push(KIND_STATE_END);
    body.extend_from_slice(&(image.keys.len() as u64).to_le_bytes());
    body.extend_from_slice(&(image.leases.len() as u64).to_le_bytes());
    frame(&body, out);
}

/// Splits `items` into runs whose encoded sizes add up to at most `chunk_bytes` (a run holds
/// at least one item).
fn chunks<T>(items: &[T], chunk_bytes: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && bytes + n > chunk_bytes {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

fn crc32c_of(len: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len), body)
}

/// How a log ends, and where its valid bytes end (what a shell truncates the file to before
/// it appends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// At a record boundary `end`, followed by nothing or zeroes only.
    Clean {
        /// Where the last valid frame ends.
        end: usize,
    },
    /// A frame cut short or failing its checksum at `end` with no valid frame after it: an
    /// append that a crash interrupted (never acknowledged). The valid bytes end at `end`.
    Torn {
        /// Where the last valid frame ends (the torn one starts).
        end: usize,
    },
    /// Damage at `at` (LL3): the log cannot be trusted past it.
    Damaged {
        /// The offset of the first frame that is damaged (or of the image it belongs to).
        at: usize,
    },
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
    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }
    fn lease(&mut self) -> Option<Option<LeaseId>> {
        let has = self.u8()?;
        let id = self.u64()?;
        match has {
            0 => Some(None),
            1 => Some(Some(LeaseId(id))),
            _ => None,
        }
    }
    /// A count of items of at least `item_min` bytes each: refused when the rest of the body
    /// cannot hold them, so it is safe to allocate for.
    fn count(&mut self, item_min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n <= (self.bytes.len() - self.at) / item_min).then_some(n)
    }
}

/// One decoded frame: a whole record, a batch of them, or a piece of an image.
enum Frame {
    Record(LogRecord),
    Batch(Vec<LogRecord>),
    ImageStart { revision: Version, lease_next: u64 },
    ImageKeys(Vec<ImageKey>),
    ImageLeases(Vec<(LeaseId, Duration)>),
    ImageEnd { keys: u64, leases: u64 },
}

fn decode_body(body: &[u8]) -> Option<Frame> {
    let mut r = Reader { bytes: body, at: 0 };
    let frame = match r.u8()? {
        kind @ (KIND_TXN | KIND_GRANT | KIND_END) => {
            return decode_record(kind, &body[1..]).map(Frame::Record);
        }
        KIND_BATCH => {
            let n = r.count(BATCH_ITEM_BYTES_MIN).filter(|n| *n > 0)?;
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                let kind = r.u8()?;
                records.push(decode_record(kind, r.bytes()?)?);
            }
            Frame::Batch(records)
        }
        KIND_STATE => Frame::ImageStart { revision: Version(r.u64()?), lease_next: r.u64()? },
        KIND_STATE_KEYS => {
            let n = r.count(IMAGE_KEY_BYTES_MIN)?;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                let key = r.string()?;
                let value = Bytes::copy_from_slice(r.bytes()?);
                let (version, created) = (Version(r.u64()?), Version(r.u64()?));
                keys.push((key, value, version, created, r.lease()?));
            }
            Frame::ImageKeys(keys)
        }
        KIND_STATE_LEASES => {
            let n = r.count(IMAGE_LEASE_BYTES)?;
            let mut leases = Vec::with_capacity(n);
            for _ in 0..n {
                leases.push((LeaseId(r.u64()?), Duration::from_millis(r.u64()?)));
            }
            Frame::ImageLeases(leases)
        }
        KIND_STATE_END => Frame::ImageEnd { keys: r.u64()?, leases: r.u64()? },
        _ => return None,
    };
    (r.at == body.len()).then_some(frame)
}

/// A Txn, Grant or End from its `fields` (its body after the kind byte), which it must fill;
/// `None` for any other kind (an image piece, a batch).
fn decode_record(kind: u8, fields: &[u8]) -> Option<LogRecord> {
    let mut r = Reader { bytes: fields, at: 0 };
    let record = match kind {
        KIND_TXN => {
            let n = r.count(OP_BYTES_MIN)?;
            let mut ops = Vec::with_capacity(n);
            for _ in 0..n {
                match r.u8()? {
                    OP_PUT => {
                        let key = r.string()?;
                        let value = Bytes::copy_from_slice(r.bytes()?);
                        let lease = r.lease()?;
                        ops.push(Op::Put { key, value, cond: crate::Cond::Any, lease });
                    }
                    OP_DELETE => ops.push(Op::Delete { key: r.string()?, cond: crate::Cond::Any }),
                    _ => return None,
                }
            }
            LogRecord::Txn(ops)
        }
        KIND_GRANT => LogRecord::Grant { id: LeaseId(r.u64()?), ttl: Duration::from_millis(r.u64()?) },
        KIND_END => {
            let n = r.count(END_ID_BYTES)?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(LeaseId(r.u64()?));
            }
            LogRecord::End(ids)
        }
        _ => return None,
    };
    (r.at == fields.len()).then_some(record)
}

/// What the bytes at an offset hold.
enum Framed<'a> {
    /// A frame with a valid checksum: its body and framed length.
    Valid(&'a [u8], usize),
    /// A length above `RECORD_BODY_MAX`: no append writes one (LL3).
    Oversized,
    /// Cut short or failing its checksum: torn, if nothing valid follows.
    Bad,
}

fn frame_at(bytes: &[u8], at: usize) -> Framed<'_> {
    let Some(header) = bytes.get(at..).and_then(|b| b.get(..8)) else {
        return Framed::Bad;
    };
    let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > RECORD_BODY_MAX {
        return Framed::Oversized;
    }
    match bytes.get(at + 8..at + 8 + len) {
        Some(body) if len > 0 && crc32c_of(&header[4..], body) == crc => Framed::Valid(body, 8 + len),
        _ => Framed::Bad,
    }
}

/// A cheap test that a body of `len` bytes starting with `kind` could be a record, so the
/// search after a bad frame checksums only plausible candidates.
fn plausible(kind: u8, len: usize) -> bool {
    match kind {
        KIND_GRANT | KIND_STATE | KIND_STATE_END => len == 17,
        KIND_END => len >= 5 && (len - 5).is_multiple_of(END_ID_BYTES),
        KIND_STATE_LEASES => len >= 5 && (len - 5).is_multiple_of(IMAGE_LEASE_BYTES),
        KIND_TXN | KIND_STATE_KEYS => len >= 5,
        KIND_BATCH => len >= BATCH_HEADER_BYTES + BATCH_ITEM_BYTES_MIN,
        _ => false,
    }
}

/// Whether a frame with a valid checksum starts anywhere in `from..content_end`, each offset
/// looked at once; true as well when the search spends `SCAN_CRC_BUDGET` without an answer
/// (LL3: the caller then refuses the log rather than cut it).
fn valid_frame_after(bytes: &[u8], from: usize, content_end: usize) -> bool {
    let mut budget = SCAN_CRC_BUDGET;
    for at in from..content_end {
        let Some(header) = bytes.get(at..at + 9) else {
            return false; // Too short for a frame here or at any later offset.
        };
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len == 0 || len > RECORD_BODY_MAX || at + 8 + len > bytes.len() || !plausible(header[8], len) {
            continue;
        }
        let Some(left) = budget.checked_sub(len) else {
            return true;
        };
        budget = left;
        if matches!(frame_at(bytes, at), Framed::Valid(..)) {
            return true;
        }
    }
    false
}

/// Decodes a whole log: its valid records in order (an image's frames joined into one State
/// record) and how it ends, with the offset its valid bytes end at (LL3). Never panics; linear
/// in the log's size.
pub fn decode_log(bytes: &[u8]) -> (Vec<LogRecord>, LogEnd) {
    // Zero-filled space after the last frame is not data.
    let content_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut records = Vec::new();
    // An image being joined: the offset of its State frame, and what it holds so far.
    let mut image: Option<(usize, StateImage)> = None;
    let mut at = 0;
    let end = loop {
        if at >= content_end {
            break LogEnd::Clean { end: at };
        }
        match frame_at(bytes, at) {
            Framed::Valid(body, n) => {
                let joined = decode_body(body).and_then(|frame| join(frame, at, &mut image, &mut records));
                if joined.is_none() {
                    break LogEnd::Damaged { at };
                }
                at += n;
            }
            Framed::Oversized => break LogEnd::Damaged { at },
            Framed::Bad => {
                // A body flipped in place leaves the next frame where the length says: try it
                // first, then every later offset.
                let next = match bytes.get(at + 4..at + 8) {
                    Some(len) => at + 8 + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize,
                    None => bytes.len(),
                };
                let later = (next < content_end && matches!(frame_at(bytes, next), Framed::Valid(..)))
                    || valid_frame_after(bytes, at + 1, content_end);
                break if later { LogEnd::Damaged { at } } else { LogEnd::Torn { end: at } };
            }
        }
    };
    match image {
        // An image is written whole before it replaces a log: one cut short is damage (LL3).
        Some((start, _)) if !matches!(end, LogEnd::Damaged { .. }) => {
            (records, LogEnd::Damaged { at: start })
        }
        _ => (records, end),
    }
}

/// Adds a decoded frame to the records, joining images; `None` when it is out of place.
fn join(
    frame: Frame,
    at: usize,
    image: &mut Option<(usize, StateImage)>,
    records: &mut Vec<LogRecord>,
) -> Option<()> {
    match (frame, image.as_mut()) {
        (Frame::Record(record), None) => records.push(record),
        (Frame::Batch(batch), None) => records.extend(batch),
        (Frame::ImageStart { revision, lease_next }, None) => {
            *image = Some((at, StateImage { revision, lease_next, keys: Vec::new(), leases: Vec::new() }));
        }
        (Frame::ImageKeys(keys), Some((_, i))) => i.keys.extend(keys),
        (Frame::ImageLeases(leases), Some((_, i))) => i.leases.extend(leases),
        (Frame::ImageEnd { keys, leases }, Some((_, i))) => {
            if i.keys.len() as u64 != keys || i.leases.len() as u64 != leases {
                return None;
            }
            let (_, whole) = image.take()?;
            records.push(LogRecord::State(Box::new(whole)));
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests;
