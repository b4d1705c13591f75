//! The cluster schema: every key dlog keeps in a metadata store and the value stored there.
//! docs/metadata.md is the byte-for-byte reference; this module is the only place keys are
//! built (typed accessors elsewhere use these functions).
//!
//! Key space (under the store's root; etcd adds `/<scope>/`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `cluster` | `ClusterInfo` | |
//! | `bookies/writable/<bookie>`, `bookies/readonly/<bookie>` | `BookieInfo` | the bookie's |
//! | `cookies/<bookie>` | `Cookie` | |
//! | `idgen/<00..15>` | empty (its revision is the id) | |
//! | `segments/<id %020>` | `SegmentMetadata` | |
//! | `namespaces/<ns>` | `NamespaceInfo` | |
//! | `logs/<ns>/<log>` | `LogMetadata` | |
//! | `log-segments/<ns>/<log>/<seq %020>` | `LogSegment` | |
//! | `locks/<ns>/<log>` | `WriterLock` | the writer's |
//! | `underreplicated/<id %020>` | `UnderReplicated` | |
//! | `underreplicated-locks/<id %020>` | `Claim` | the worker's |
//! | `deletions/<id %020>` | `PendingDeletion` | |
//! | `auditor` | `Claim` | the auditor's |
//!
//! Invariants:
//! - SC1: names (namespace, log, bookie id) are 1..=`NAME_MAX` bytes of `[A-Za-z0-9._:-]`,
//!   not `.` or `..`: a name never contains `/`, so a prefix listing never mixes levels.
//! - SC2: numbers in keys are 20-digit zero-padded decimals, so key order is numeric order.

pub mod log_segment;
pub mod segment;
pub mod wire;

pub use log_segment::{LogSegment, LogSegmentState};
pub use segment::{DigestType, SegmentMetadata, SegmentOwner, SegmentState};
pub use wire::{
    BookieInfo, Claim, ClusterInfo, Cookie, Dlsn, LogMetadata, NamespaceInfo, PendingDeletion,
    UnderReplicated, WriterLock,
};

use crate::error::MetaError;

/// Longest name (namespace, log, bookie id), in bytes.
pub const NAME_MAX: usize = 255;
/// Buckets segment ids are drawn from (`idgen/<bucket>`).
pub const IDGEN_BUCKETS: u64 = 16;

/// Checks a namespace, log or bookie name (SC1).
pub fn check_name(kind: &str, name: &str) -> Result<(), MetaError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!("{kind} name {name:?}: 1..={NAME_MAX} bytes of [A-Za-z0-9._:-]")))
    }
}

/// The key of the cluster's identity.
pub const CLUSTER: &str = "cluster";
/// The auditor's claim.
pub const AUDITOR: &str = "auditor";
/// Prefix of every bookie registration, writable and read-only.
pub const BOOKIES: &str = "bookies/";
/// Prefix of writable bookies.
pub const BOOKIES_WRITABLE: &str = "bookies/writable/";
/// Prefix of read-only bookies.
pub const BOOKIES_READONLY: &str = "bookies/readonly/";
/// Prefix of cookies.
pub const COOKIES: &str = "cookies/";
/// Prefix of id buckets.
pub const IDGEN: &str = "idgen/";
/// Prefix of segments.
pub const SEGMENTS: &str = "segments/";
/// Prefix of namespaces.
pub const NAMESPACES: &str = "namespaces/";
/// Prefix of logs.
pub const LOGS: &str = "logs/";
/// Prefix of logs' segment lists.
pub const LOG_SEGMENTS: &str = "log-segments/";
/// Prefix of writer locks.
pub const LOCKS: &str = "locks/";
/// Prefix of the under-replicated queue.
pub const UNDER_REPLICATED: &str = "underreplicated/";
/// Prefix of claims on queued segments.
pub const UNDER_REPLICATED_LOCKS: &str = "underreplicated-locks/";

/// Prefix of segments whose data is still to be deleted from bookies.
pub const DELETIONS: &str = "deletions/";

/// `deletions/<id>`.
pub fn deletion_key(segment: u64) -> String {
    format!("{DELETIONS}{segment:020}")
}

/// `bookies/{writable|readonly}/<id>`.
pub fn bookie_key(id: &str, read_only: bool) -> String {
    format!("{}{id}", if read_only { BOOKIES_READONLY } else { BOOKIES_WRITABLE })
}

/// The bookie id of a `bookies/{writable|readonly}/<id>` key, and whether it is read-only.
pub fn bookie_of(key: &str) -> Option<(&str, bool)> {
    match key.strip_prefix(BOOKIES_WRITABLE) {
        Some(id) => Some((id, false)),
        None => key.strip_prefix(BOOKIES_READONLY).map(|id| (id, true)),
    }
}

/// `cookies/<id>`.
pub fn cookie_key(id: &str) -> String {
    format!("{COOKIES}{id}")
}

/// `idgen/<bucket>`.
pub fn idgen_key(bucket: u64) -> String {
    format!("{IDGEN}{:02}", bucket % IDGEN_BUCKETS)
}

/// `segments/<id>`.
pub fn segment_key(id: u64) -> String {
    format!("{SEGMENTS}{id:020}")
}

/// The segment id of a `segments/` key.
pub fn segment_id_of(key: &str) -> Option<u64> {
    parse_number(key.strip_prefix(SEGMENTS)?)
}

/// `namespaces/<ns>`.
pub fn namespace_key(ns: &str) -> String {
    format!("{NAMESPACES}{ns}")
}

/// `logs/<ns>/<log>`.
pub fn log_key(ns: &str, log: &str) -> String {
    format!("{LOGS}{ns}/{log}")
}

/// `logs/<ns>/`: every log of a namespace.
pub fn logs_prefix(ns: &str) -> String {
    format!("{LOGS}{ns}/")
}

/// `log-segments/<ns>/<log>/`.
pub fn log_segments_prefix(ns: &str, log: &str) -> String {
    format!("{LOG_SEGMENTS}{ns}/{log}/")
}

/// `log-segments/<ns>/<log>/<seq>`.
pub fn log_segment_key(ns: &str, log: &str, seq: u64) -> String {
    format!("{LOG_SEGMENTS}{ns}/{log}/{seq:020}")
}

/// `locks/<ns>/<log>`.
pub fn lock_key(ns: &str, log: &str) -> String {
    format!("{LOCKS}{ns}/{log}")
}

/// `underreplicated/<id>`.
pub fn under_replicated_key(segment: u64) -> String {
    format!("{UNDER_REPLICATED}{segment:020}")
}

/// The segment id of an `underreplicated/` key.
pub fn under_replicated_id_of(key: &str) -> Option<u64> {
    parse_number(key.strip_prefix(UNDER_REPLICATED)?)
}

/// `underreplicated-locks/<id>`.
pub fn under_replicated_lock_key(segment: u64) -> String {
    format!("{UNDER_REPLICATED_LOCKS}{segment:020}")
}

/// A 20-digit key number (SC2).
pub fn parse_number(s: &str) -> Option<u64> {
    (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_hold_a_separator() {
        for good in ["a", "log-1", "my.log", "host:3181", &"x".repeat(NAME_MAX)] {
            check_name("log", good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(NAME_MAX + 1)] {
            assert!(check_name("log", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbered_keys_sort_numerically_and_parse_back() {
        assert!(segment_key(9) < segment_key(10));
        assert!(log_segment_key("n", "l", 99) < log_segment_key("n", "l", 100));
        assert_eq!(segment_id_of(&segment_key(u64::MAX)), Some(u64::MAX));
        assert_eq!(segment_id_of("segments/12"), None);
        assert_eq!(segment_id_of("segments/0000000000000000000x"), None);
        assert_eq!(idgen_key(17), "idgen/01");
        assert_eq!(under_replicated_id_of(&under_replicated_key(42)), Some(42));
        assert_eq!(under_replicated_id_of(&under_replicated_lock_key(42)), None);
    }

    #[test]
    fn bookie_keys_parse_back() {
        assert_eq!(bookie_of(&bookie_key("b:1", false)), Some(("b:1", false)));
        assert_eq!(bookie_of(&bookie_key("b:1", true)), Some(("b:1", true)));
        assert!(bookie_key("b", true).starts_with(BOOKIES) && bookie_key("b", false).starts_with(BOOKIES));
        assert_eq!(bookie_of(&cookie_key("b")), None);
    }
}
