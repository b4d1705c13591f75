//! `Manifest`: what a shard's segment storage holds, persisted after every flush. Pure encode and
//! decode; the file is written by the shell (tmp, fsync, rename, directory fsync). Format:
//! docs/format.md#manifest.
//!
//! The manifest is an index, not the only copy of anything: without it (deleted or damaged) a
//! shard rebuilds its runs by scanning its entry logs, and segment state from the journal
//! (every checkpoint journals each segment's key, fence, deletion and LAC after its mark).
//!
//! Invariant M1: a manifest names only runs that were durable before it was written, and the
//! checkpoint mark whose journal prefix those runs hold.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::constants::MASTER_KEY_BYTES_MAX;
use crate::ids::{FileSeq, LogSeq, SegmentId};
use crate::shard::request::JournalMark;
use crate::shard::segment_state::SegmentState;

const MAGIC: u32 = 0x464D_4C44; // "DLMF"
const VERSION: u32 = 1;

const FLAG_FENCED: u32 = 1;
const FLAG_LAC: u32 = 2;
const FLAG_KEY: u32 = 4;
const FLAG_DELETED: u32 = 8;

/// Longest damage note kept in a manifest.
const DAMAGE_NOTE_BYTES_MAX: usize = 4096;

/// A run as the manifest lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestRun {
    /// The entry log.
    pub log: LogSeq,
    /// Offset of the run in it.
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// Its sequence number.
    pub seq: u64,
}

/// A segment's state as the manifest keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestSegment {
    /// The segment.
    pub segment: SegmentId,
    /// Its master key, if known.
    pub master_key: Option<Bytes>,
    /// Fenced.
    pub fenced: bool,
    /// Deleted (a tombstone).
    pub deleted: bool,
    /// Its `last_add_confirmed`.
    pub last_add_confirmed: Option<u64>,
}

/// A shard's storage manifest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    /// The shard.
    pub shard: u32,
    /// The checkpoint mark the runs cover (M1).
    pub checkpoint: Option<JournalMark>,
    /// Sequence number for the next entry log.
    pub next_log: u64,
    /// Sequence number for the next run: at most `RUN_SEQ_LIMIT` as a shard writes it (RN4).
    /// Decode takes any value; open counts one past the limit as damage (shard/core/flush.rs F4).
    pub next_run: u64,
    /// Entry logs with the bytes of them that runs use.
    pub logs: Vec<(LogSeq, u64)>,
    /// Runs, by sequence number (distinct, below `RUN_SEQ_LIMIT` as a shard writes them; open
    /// counts a listed run whose seq is repeated or past the limit as damage).
    pub runs: Vec<ManifestRun>,
    /// Segment states.
    pub segments: Vec<ManifestSegment>,
    /// Damage found at any open so far (reads of missing entries answer `Corrupt` while any
    /// is recorded).
    pub damage: Vec<String>,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or("manifest is truncated")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let raw = self.take(4)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }
    /// A count of items of at least `item_bytes` each: bounded by what is left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, String> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n > left / item_bytes as u64 {
            return Err(format!("manifest count {n} exceeds its length"));
        }
        Ok(n as usize)
    }
}

impl Manifest {
    /// Builds the manifest for segment states as the core holds them.
    pub fn segments_from(states: &BTreeMap<SegmentId, SegmentState>) -> Vec<ManifestSegment> {
        states
            .iter()
            .map(|(s, st)| ManifestSegment {
                segment: *s,
                master_key: st.master_key.clone(),
                fenced: st.fenced,
                deleted: st.deleted,
                last_add_confirmed: st.last_add_confirmed,
            })
            .collect()
    }

    /// Encodes with a trailing CRC32C.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + self.runs.len() * 32 + self.segments.len() * 48));
        w.u32(MAGIC);
        w.u32(VERSION);
        w.u32(self.shard);
        w.u32(u32::from(self.checkpoint.is_some()));
        let mark = self.checkpoint.unwrap_or(JournalMark { file: FileSeq(0), offset: 0 });
        w.u64(mark.file.0);
        w.u64(mark.offset);
        w.u64(self.next_log);
        w.u64(self.next_run);
        w.u64(self.logs.len() as u64);
        for (log, used) in &self.logs {
            w.u64(log.0);
            w.u64(*used);
        }
        w.u64(self.runs.len() as u64);
        for r in &self.runs {
            w.u64(r.log.0);
            w.u64(r.offset);
            w.u64(r.bytes);
            w.u64(r.seq);
        }
        w.u64(self.segments.len() as u64);
        for m in &self.segments {
            let (segment, key, lac) = (&m.segment, &m.master_key, &m.last_add_confirmed);
            let mut flags = 0;
            if m.fenced {
                flags |= FLAG_FENCED;
            }
            if m.deleted {
                flags |= FLAG_DELETED;
            }
            if lac.is_some() {
                flags |= FLAG_LAC;
            }
            if key.is_some() {
                flags |= FLAG_KEY;
            }
            w.u64(segment.0);
            w.u32(flags);
            let key = key.as_deref().unwrap_or(&[]);
            w.u32(key.len() as u32);
            w.u64(lac.unwrap_or(0));
            w.0.extend_from_slice(key);
        }
        w.u64(self.damage.len() as u64);
        for d in &self.damage {
            let d = &d.as_bytes()[..d.len().min(DAMAGE_NOTE_BYTES_MAX)];
            w.u32(d.len() as u32);
            w.0.extend_from_slice(d);
        }
        let crc = crc32c::crc32c(&w.0);
        w.u32(crc);
        w.0
    }

    /// Decodes and checks a manifest. Never panics; every error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() < 4 {
            return Err("manifest is truncated".into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("manifest checksum mismatch".into());
        }
        let mut r = Reader { bytes: body, at: 0 };
        if r.u32()? != MAGIC {
            return Err("not a dlog manifest".into());
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(format!("manifest format version {version}; this build reads {VERSION}"));
        }
        let shard = r.u32()?;
        let has_mark = r.u32()? != 0;
        let mark = JournalMark { file: FileSeq(r.u64()?), offset: r.u64()? };
        let next_log = r.u64()?;
        let next_run = r.u64()?;
        let mut logs = Vec::new();
        for _ in 0..r.count(16)? {
            logs.push((LogSeq(r.u64()?), r.u64()?));
        }
        let mut runs = Vec::new();
        for _ in 0..r.count(32)? {
            runs.push(ManifestRun {
                log: LogSeq(r.u64()?),
                offset: r.u64()?,
                bytes: r.u64()?,
                seq: r.u64()?,
            });
        }
        let mut segments = Vec::new();
        for _ in 0..r.count(24)? {
            let segment = SegmentId(r.u64()?);
            let flags = r.u32()?;
            let key_len = r.u32()? as usize;
            let lac = r.u64()?;
            if key_len > MASTER_KEY_BYTES_MAX {
                return Err(format!("master key of {key_len} bytes in the manifest"));
            }
            let key = Bytes::copy_from_slice(r.take(key_len)?);
            segments.push(ManifestSegment {
                segment,
                master_key: (flags & FLAG_KEY != 0).then_some(key),
                fenced: flags & FLAG_FENCED != 0,
                deleted: flags & FLAG_DELETED != 0,
                last_add_confirmed: (flags & FLAG_LAC != 0).then_some(lac),
            });
        }
        let mut damage = Vec::new();
        for _ in 0..r.count(4)? {
            let len = r.u32()? as usize;
            if len > DAMAGE_NOTE_BYTES_MAX {
                return Err(format!("damage note of {len} bytes in the manifest"));
            }
            damage.push(String::from_utf8_lossy(r.take(len)?).into_owned());
        }
        if r.at != body.len() {
            return Err("manifest has trailing bytes".into());
        }
        Ok(Manifest {
            shard,
            checkpoint: has_mark.then_some(mark),
            next_log,
            next_run,
            logs,
            runs,
            segments,
            damage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            shard: 1,
            checkpoint: Some(JournalMark { file: FileSeq(3), offset: 8192 }),
            next_log: 4,
            next_run: 9,
            logs: vec![(LogSeq(2), 1 << 20), (LogSeq(3), 4096)],
            runs: vec![ManifestRun { log: LogSeq(2), offset: 0, bytes: 1 << 20, seq: 8 }],
            segments: vec![
                ManifestSegment {
                    segment: SegmentId(5),
                    master_key: Some(Bytes::from_static(b"key")),
                    fenced: true,
                    deleted: false,
                    last_add_confirmed: Some(17),
                },
                ManifestSegment {
                    segment: SegmentId(6),
                    master_key: None,
                    fenced: false,
                    deleted: true,
                    last_add_confirmed: None,
                },
            ],
            damage: vec!["entry log 0000000000000002 offset 0: run footer: Checksum".into()],
        }
    }

    #[test]
    fn manifest_round_trip_and_damage() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn manifest_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::decode(&bytes);
            // With a valid checksum, the structure checks must still hold.
            let mut sealed = bytes.clone();
            sealed.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
            let _ = Manifest::decode(&sealed);
        }
    }
}
