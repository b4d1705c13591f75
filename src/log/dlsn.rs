//! `Dlsn`: the position of a record in a log (DistributedLog sequence number): the segment's
//! sequence number in the log, the entry id in the segment, the record's slot in the entry;
//! ordered in that order.
//!
//! Text form `<segment_seq>:<entry_id>:<slot>` (`3:17:0`), what `dlog write --print-dlsn`
//! prints and `dlog read --from-dlsn` and `dlog admin truncate` take. Parsing refuses anything
//! else with the reason (DL1): a position typed by a person is never guessed.

use std::fmt;
use std::str::FromStr;

use dlog_metadata::schema::Dlsn as StoredDlsn;

/// A record's position in a log. `Dlsn::HEAD` is before every record of every log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dlsn {
    /// The segment's sequence number in its log (the first segment is 0).
    pub segment_seq: u64,
    /// The entry in the segment.
    pub entry_id: u64,
    /// The record's slot in the entry.
    pub slot: u64,
}

impl Dlsn {
    /// Before every record: a reader from here starts at the log's first record.
    pub const HEAD: Dlsn = Dlsn { segment_seq: 0, entry_id: 0, slot: 0 };

    /// The position `(segment_seq, entry_id, slot)`.
    pub const fn new(segment_seq: u64, entry_id: u64, slot: u64) -> Dlsn {
        Dlsn { segment_seq, entry_id, slot }
    }

    /// The first position of segment `segment_seq`.
    pub const fn segment_start(segment_seq: u64) -> Dlsn {
        Dlsn { segment_seq, entry_id: 0, slot: 0 }
    }
}

impl fmt::Display for Dlsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.segment_seq, self.entry_id, self.slot)
    }
}

/// Why a text is not a DLSN.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("DLSN {text:?}: {reason} (expected <segment_seq>:<entry_id>:<slot>, e.g. 3:17:0)")]
pub struct DlsnParseError {
    text: String,
    reason: &'static str,
}

impl FromStr for Dlsn {
    type Err = DlsnParseError;

    fn from_str(text: &str) -> Result<Dlsn, DlsnParseError> {
        let error = |reason| DlsnParseError { text: text.to_owned(), reason };
        let mut parts = text.split(':');
        let mut next = || -> Result<u64, DlsnParseError> {
            let part = parts.next().ok_or_else(|| error("three numbers are needed"))?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error("each part is a decimal number"));
            }
            part.parse().map_err(|_| error("a number is too large"))
        };
        let dlsn = Dlsn { segment_seq: next()?, entry_id: next()?, slot: next()? };
        match parts.next() {
            Some(_) => Err(error("more than three parts")),
            None => Ok(dlsn),
        }
    }
}

impl From<StoredDlsn> for Dlsn {
    fn from(d: StoredDlsn) -> Dlsn {
        Dlsn { segment_seq: d.segment_seq, entry_id: d.entry_id, slot: d.slot }
    }
}

impl From<Dlsn> for StoredDlsn {
    fn from(d: Dlsn) -> StoredDlsn {
        StoredDlsn { segment_seq: d.segment_seq, entry_id: d.entry_id, slot: d.slot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_segment_then_entry_then_slot_and_round_trips_as_text() {
        let a = Dlsn::new(1, 5, 9);
        assert!(a < Dlsn::new(1, 6, 0) && Dlsn::new(1, 6, 0) < Dlsn::new(2, 0, 0));
        assert!(Dlsn::HEAD < Dlsn::segment_start(1));
        for d in [a, Dlsn::HEAD, Dlsn::new(u64::MAX, u64::MAX, u64::MAX)] {
            assert_eq!(d.to_string().parse::<Dlsn>(), Ok(d));
        }
        for bad in
            ["", "1", "1:2", "1:2:3:4", "1::3", "-1:2:3", "1:2:x", " 1:2:3", "99999999999999999999:0:0"]
        {
            let e = bad.parse::<Dlsn>().unwrap_err();
            assert!(e.to_string().contains("expected <segment_seq>"), "{bad}: {e}");
        }
    }
}
