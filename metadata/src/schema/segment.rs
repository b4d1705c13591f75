//! `SegmentMetadata`: what the cluster knows about one segment (BookKeeper's ledger metadata):
//! quorum sizes, digest, master key, state, and its ensembles by first entry id.
//!
//! The master key is stored as it is, as BookKeeper stores a ledger's password in its
//! metadata: re-replication writes lost replicas with recovery ADDs, which bookies accept only
//! with the segment's key, long after its writer is gone. Whoever can read `segments/` can
//! therefore write to (and fence) any segment: the metadata store's access control (etcd's
//! authentication and role permissions, the embedded store's file permissions) protects the
//! keys, as ZooKeeper ACLs do in BookKeeper. The key guards against mistakes (a writer
//! addressing the wrong segment), not against a client that can read the metadata.
//!
//! Invariants (checked by `validate`, so by every encode and decode):
//! - SG1: 1 <= ack_quorum_size <= write_quorum_size <= ensemble_size <= `ENSEMBLE_MAX`.
//! - SG2: the ensembles start at entry 0, each holds `ensemble_size` distinct valid bookie
//!   ids, and their first entry ids strictly increase.
//! - SG3: a closed segment's ensembles start no later than one past its last entry, which is
//!   below `u64::MAX`.
//! - SG4: the master key is at most `MASTER_KEY_BYTES_MAX` bytes; the owner's namespace and
//!   log are valid names.
//! - SG5: decoding refuses fields that do not belong to the state (a length while open), so
//!   a value means exactly one thing.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::MetaError;
use crate::schema::{check_name, wire};

/// Largest ensemble.
pub const ENSEMBLE_MAX: u32 = 64;
/// Longest master key, in bytes: the wire protocol's and the engine's limit
/// (`dlog_protocol::MASTER_KEY_BYTES_MAX`; dlog-replication asserts they are equal).
pub const MASTER_KEY_BYTES_MAX: usize = 64;

/// How entries are checksummed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestType {
    /// CRC32C of the entry (wire 1).
    Crc32c,
}

/// Where a segment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    /// Its writer may add entries.
    Open,
    /// A recoverer fenced it and is closing it.
    InRecovery,
    /// Sealed: no entry after `last_entry_id` (None: it has no entry) exists or ever will.
    Closed {
        /// The last entry, `None` for an empty segment.
        last_entry_id: Option<u64>,
        /// Bytes of payload in it.
        length: u64,
    },
}

/// The log a segment belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentOwner {
    /// The namespace.
    pub namespace: String,
    /// The log.
    pub log: String,
    /// The segment's sequence number in the log.
    pub seq: u64,
}

/// A segment's metadata (`segments/<id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentMetadata {
    /// E: bookies each ensemble holds.
    pub ensemble_size: u32,
    /// Qw: bookies each entry is written to.
    pub write_quorum_size: u32,
    /// Qa: acknowledgements an entry needs.
    pub ack_quorum_size: u32,
    /// The entries' checksum.
    pub digest_type: DigestType,
    /// The segment's master key, which bookies check on every ADD (see the module doc for who
    /// may read it).
    pub master_key: Bytes,
    /// Open, in recovery, or closed.
    pub state: SegmentState,
    /// Bookie ids by the first entry they hold (SG2).
    pub ensembles: BTreeMap<u64, Vec<String>>,
    /// ms since the Unix epoch.
    pub created_ms: u64,
    /// The log it belongs to, if any.
    pub owner: Option<SegmentOwner>,
}

impl SegmentMetadata {
    /// The ensemble that holds `entry`.
    pub fn ensemble_at(&self, entry: u64) -> &[String] {
        self.ensembles.range(..=entry).next_back().map_or(&[], |(_, e)| e.as_slice())
    }

    /// The ensemble new entries go to.
    pub fn current_ensemble(&self) -> &[String] {
        self.ensembles.values().next_back().map_or(&[], Vec::as_slice)
    }

    /// Checks SG1-SG3; the reason when broken.
    pub fn validate(&self) -> Result<(), String> {
        let (e, w, a) = (self.ensemble_size, self.write_quorum_size, self.ack_quorum_size);
        if !(1 <= a && a <= w && w <= e && e <= ENSEMBLE_MAX) {
            return Err(format!("quorums E={e} Qw={w} Qa={a}: need 1 <= Qa <= Qw <= E <= {ENSEMBLE_MAX}"));
        }
        if self.ensembles.keys().next() != Some(&0) {
            return Err("the first ensemble must start at entry 0".into());
        }
        for (first, bookies) in &self.ensembles {
            if bookies.len() != e as usize {
                return Err(format!("ensemble at entry {first} has {} bookies, E = {e}", bookies.len()));
            }
            for (i, b) in bookies.iter().enumerate() {
                check_name("bookie", b).map_err(|err| err.to_string())?;
                if bookies[..i].contains(b) {
                    return Err(format!("ensemble at entry {first} holds {b} twice"));
                }
            }
        }
        if self.master_key.len() > MASTER_KEY_BYTES_MAX {
            return Err(format!(
                "master key of {} bytes (max {MASTER_KEY_BYTES_MAX})",
                self.master_key.len()
            ));
        }
        if let Some(o) = &self.owner {
            check_name("namespace", &o.namespace).map_err(|e| e.to_string())?;
            check_name("log", &o.log).map_err(|e| e.to_string())?;
        }
        if let SegmentState::Closed { last_entry_id, .. } = self.state {
            if last_entry_id == Some(u64::MAX) {
                return Err("last entry id u64::MAX".into());
            }
            let end = last_entry_id.map_or(0, |l| l + 1);
            if let Some(first) = self.ensembles.keys().find(|f| **f > end) {
                return Err(format!("ensemble at entry {first} is past the closed end {end}"));
            }
        }
        Ok(())
    }

    /// The stored value (wire.rs); `Invalid` if it breaks an invariant.
    pub fn encode(&self) -> Result<Bytes, MetaError> {
        self.validate().map_err(|e| MetaError::Invalid(format!("segment metadata: {e}")))?;
        let (state, entry_count, length) = match self.state {
            SegmentState::Open => (1, 0, 0),
            SegmentState::InRecovery => (2, 0, 0),
            SegmentState::Closed { last_entry_id, length } => (3, last_entry_id.map_or(0, |l| l + 1), length),
        };
        let (log, log_seq) = match &self.owner {
            Some(o) => (format!("{}/{}", o.namespace, o.log), o.seq),
            None => (String::new(), 0),
        };
        Ok(wire::encode(&wire::SegmentMetadata {
            ensemble_size: self.ensemble_size,
            write_quorum_size: self.write_quorum_size,
            ack_quorum_size: self.ack_quorum_size,
            digest_type: match self.digest_type {
                DigestType::Crc32c => 1,
            },
            master_key: self.master_key.clone(),
            state,
            entry_count,
            length,
            ensembles: self
                .ensembles
                .iter()
                .map(|(first, bookies)| wire::Ensemble { first_entry_id: *first, bookies: bookies.clone() })
                .collect(),
            created_ms: self.created_ms,
            log,
            log_seq,
        }))
    }

    /// Reads the value stored at `key`; `Invalid` naming the key when it is not a valid one.
    pub fn decode(key: &str, value: &[u8]) -> Result<SegmentMetadata, MetaError> {
        let bad = |why: String| MetaError::Corrupt(format!("{key}: {why}"));
        let w: wire::SegmentMetadata = wire::decode(key, value)?;
        let digest_type = match w.digest_type {
            1 => DigestType::Crc32c,
            d => return Err(bad(format!("unknown digest type {d}"))),
        };
        let state = match w.state {
            1 => SegmentState::Open,
            2 => SegmentState::InRecovery,
            3 => SegmentState::Closed { last_entry_id: w.entry_count.checked_sub(1), length: w.length },
            s => return Err(bad(format!("unknown state {s}"))),
        };
        if w.state != 3 && (w.entry_count != 0 || w.length != 0) {
            return Err(bad("an entry count or length on a segment that is not closed".into())); // SG5
        }
        if w.log.is_empty() && w.log_seq != 0 {
            return Err(bad("a log sequence number without a log".into())); // SG5
        }
        let mut ensembles = BTreeMap::new();
        for e in w.ensembles {
            if ensembles.keys().next_back().is_some_and(|last| *last >= e.first_entry_id) {
                return Err(bad(format!("ensembles out of order at entry {}", e.first_entry_id)));
            }
            ensembles.insert(e.first_entry_id, e.bookies);
        }
        let owner = if w.log.is_empty() {
            None
        } else {
            let (namespace, log) =
                w.log.split_once('/').ok_or_else(|| bad(format!("log {:?} is not ns/log", w.log)))?;
            Some(SegmentOwner { namespace: namespace.into(), log: log.into(), seq: w.log_seq })
        };
        let segment = SegmentMetadata {
            ensemble_size: w.ensemble_size,
            write_quorum_size: w.write_quorum_size,
            ack_quorum_size: w.ack_quorum_size,
            digest_type,
            master_key: w.master_key,
            state,
            ensembles,
            created_ms: w.created_ms,
            owner,
        };
        segment.validate().map_err(bad)?;
        Ok(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> SegmentMetadata {
        SegmentMetadata {
            ensemble_size: 3,
            write_quorum_size: 3,
            ack_quorum_size: 2,
            digest_type: DigestType::Crc32c,
            master_key: Bytes::from_static(&[7; 32]),
            state: SegmentState::Open,
            ensembles: BTreeMap::from([(0, vec!["b1".into(), "b2".into(), "b3".into()])]),
            created_ms: 1_700_000_000_000,
            owner: Some(SegmentOwner { namespace: "ns".into(), log: "orders".into(), seq: 4 }),
        }
    }

    #[test]
    fn round_trips_every_state() {
        for state in [
            SegmentState::Open,
            SegmentState::InRecovery,
            SegmentState::Closed { last_entry_id: None, length: 0 },
            SegmentState::Closed { last_entry_id: Some(99), length: 12_345 },
        ] {
            let mut s = sample();
            s.state = state;
            s.ensembles.insert(50, vec!["b1".into(), "b4".into(), "b3".into()]);
            if state == (SegmentState::Closed { last_entry_id: None, length: 0 }) {
                s.ensembles.remove(&50);
            }
            assert_eq!(SegmentMetadata::decode("k", &s.encode().unwrap()).unwrap(), s);
        }
        assert_eq!(sample().ensemble_at(10), ["b1", "b2", "b3"]);
    }

    #[test]
    fn broken_invariants_are_refused_both_ways() {
        let cases: Vec<fn(&mut SegmentMetadata)> = vec![
            |s| s.ack_quorum_size = 4,
            |s| s.ack_quorum_size = 0,
            |s| s.write_quorum_size = 4,
            |s| s.ensembles = BTreeMap::new(),
            |s| s.ensembles = BTreeMap::from([(1, vec!["a".into(), "b".into(), "c".into()])]),
            |s| s.ensembles = BTreeMap::from([(0, vec!["a".into(), "b".into()])]),
            |s| s.ensembles = BTreeMap::from([(0, vec!["a".into(), "a".into(), "c".into()])]),
            |s| s.ensembles = BTreeMap::from([(0, vec!["a/x".into(), "b".into(), "c".into()])]),
            |s| {
                s.ensembles.insert(20, vec!["a".into(), "b".into(), "c".into()]);
                s.state = SegmentState::Closed { last_entry_id: Some(10), length: 1 };
            },
            |s| s.state = SegmentState::Closed { last_entry_id: Some(u64::MAX), length: 1 },
            |s| s.master_key = Bytes::from(vec![0; 65]),
            |s| s.owner = Some(SegmentOwner { namespace: "a/b".into(), log: "c".into(), seq: 1 }),
        ];
        for (i, break_it) in cases.into_iter().enumerate() {
            let mut s = sample();
            break_it(&mut s);
            assert!(s.encode().is_err(), "case {i} encoded");
        }
        // A stored value with a broken invariant (written by a buggy or foreign writer).
        let mut w: wire::SegmentMetadata = wire::decode("k", &sample().encode().unwrap()).unwrap();
        w.ack_quorum_size = 9;
        assert!(matches!(SegmentMetadata::decode("k", &wire::encode(&w)), Err(MetaError::Corrupt(_))));
        w.ack_quorum_size = 2;
        let mut open_with_length = w.clone();
        open_with_length.length = 5;
        assert!(matches!(
            SegmentMetadata::decode("k", &wire::encode(&open_with_length)),
            Err(MetaError::Corrupt(_))
        ));
        let mut seq_without_log = w.clone();
        (seq_without_log.log, seq_without_log.log_seq) = (String::new(), 3);
        assert!(matches!(
            SegmentMetadata::decode("k", &wire::encode(&seq_without_log)),
            Err(MetaError::Corrupt(_))
        ));
        let mut bad_owner = w.clone();
        bad_owner.log = "ns/a/b".into();
        assert!(matches!(
            SegmentMetadata::decode("k", &wire::encode(&bad_owner)),
            Err(MetaError::Corrupt(_))
        ));
        w.ensembles
            .push(wire::Ensemble { first_entry_id: 0, bookies: vec!["x".into(), "y".into(), "z".into()] });
        assert!(matches!(SegmentMetadata::decode("k", &wire::encode(&w)), Err(MetaError::Corrupt(_))));
        assert!(matches!(SegmentMetadata::decode("k", &[2, 0]), Err(MetaError::Corrupt(_))));
        assert!(matches!(SegmentMetadata::decode("k", &[]), Err(MetaError::Corrupt(_))));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SegmentMetadata::decode("k", &bytes);
            let mut framed = vec![wire::FORMAT];
            framed.extend_from_slice(&bytes);
            let _ = SegmentMetadata::decode("k", &framed);
        }

        #[test]
        fn mutated_valid_values_never_panic(at in 0usize..200, byte in any::<u8>()) {
            let mut v = sample().encode().unwrap().to_vec();
            let i = at % v.len();
            v[i] = byte;
            let _ = SegmentMetadata::decode("k", &v);
        }
    }
}
