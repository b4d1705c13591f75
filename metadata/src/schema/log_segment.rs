//! `LogSegment`: one entry of a log's ordered segment list (`log-segments/<ns>/<log>/<seq>`):
//! which segment holds the log's records from a sequence number on, and, once completed,
//! their transaction ids, count and last position.
//!
//! Invariants (checked at encode and decode):
//! - LSG1: a completed segment with records has `first_txid <= last_txid` and a `last_dlsn` in
//!   this segment; one without records has neither.
//! - LSG2: an in-progress segment carries no completion field (decode refuses them).

use bytes::Bytes;

use crate::error::MetaError;
use crate::schema::wire::{self, Dlsn};

/// Where a log's segment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSegmentState {
    /// Its writer is adding records.
    InProgress,
    /// Sealed (rolled, recovered, or closed by a new writer).
    Completed {
        /// The last record's transaction id (meaningless with no record).
        last_txid: u64,
        /// Records in it.
        record_count: u64,
        /// The last record's position, `None` with no record.
        last_dlsn: Option<Dlsn>,
        /// ms since the Unix epoch.
        completed_ms: u64,
    },
}

/// One segment of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSegment {
    /// Its sequence number in the log (key order).
    pub seq: u64,
    /// The segment (`segments/<id>`).
    pub segment_id: u64,
    /// The transaction id of its first record.
    pub first_txid: u64,
    /// The writer epoch that created it.
    pub epoch: u64,
    /// ms since the Unix epoch.
    pub created_ms: u64,
    /// In progress or completed.
    pub state: LogSegmentState,
}

impl LogSegment {
    /// Checks LSG1.
    pub fn validate(&self) -> Result<(), String> {
        if let LogSegmentState::Completed { last_txid, record_count, last_dlsn, .. } = self.state {
            match (record_count, last_dlsn) {
                (0, None) => {}
                (0, Some(_)) => return Err("no records but a last DLSN".into()),
                (_, None) => return Err(format!("{record_count} records but no last DLSN")),
                (_, Some(d)) if d.segment_seq != self.seq => {
                    return Err(format!("last DLSN in segment {}, not {}", d.segment_seq, self.seq));
                }
                (_, Some(_)) if last_txid < self.first_txid => {
                    return Err(format!("last txid {last_txid} before first {}", self.first_txid));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The stored value.
    pub fn encode(&self) -> Result<Bytes, MetaError> {
        self.validate().map_err(|e| MetaError::Invalid(format!("log segment {}: {e}", self.seq)))?;
        let mut w = wire::LogSegment {
            seq: self.seq,
            segment_id: self.segment_id,
            state: 1,
            first_txid: self.first_txid,
            epoch: self.epoch,
            created_ms: self.created_ms,
            ..Default::default()
        };
        if let LogSegmentState::Completed { last_txid, record_count, last_dlsn, completed_ms } = self.state {
            w.state = 2;
            w.last_txid = last_txid;
            w.record_count = record_count;
            w.last_dlsn = last_dlsn;
            w.completed_ms = completed_ms;
        }
        Ok(wire::encode(&w))
    }

    /// Reads the value stored at `key`.
    pub fn decode(key: &str, value: &[u8]) -> Result<LogSegment, MetaError> {
        let w: wire::LogSegment = wire::decode(key, value)?;
        let state = match w.state {
            1 => LogSegmentState::InProgress,
            2 => LogSegmentState::Completed {
                last_txid: w.last_txid,
                record_count: w.record_count,
                last_dlsn: w.last_dlsn,
                completed_ms: w.completed_ms,
            },
            s => return Err(MetaError::Corrupt(format!("{key}: unknown log segment state {s}"))),
        };
        if w.state == 1
            && (w.last_txid != 0 || w.record_count != 0 || w.last_dlsn.is_some() || w.completed_ms != 0)
        {
            return Err(MetaError::Corrupt(format!("{key}: completion fields on an in-progress segment")));
        }
        let segment = LogSegment {
            seq: w.seq,
            segment_id: w.segment_id,
            first_txid: w.first_txid,
            epoch: w.epoch,
            created_ms: w.created_ms,
            state,
        };
        segment.validate().map_err(|e| MetaError::Corrupt(format!("{key}: {e}")))?;
        Ok(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_inconsistent_completions() {
        let mut s = LogSegment {
            seq: 3,
            segment_id: 77,
            first_txid: 100,
            epoch: 2,
            created_ms: 5,
            state: LogSegmentState::InProgress,
        };
        assert_eq!(LogSegment::decode("k", &s.encode().unwrap()).unwrap(), s);
        let done = |count, dlsn, last| LogSegmentState::Completed {
            last_txid: last,
            record_count: count,
            last_dlsn: dlsn,
            completed_ms: 9,
        };
        s.state = done(10, Some(Dlsn { segment_seq: 3, entry_id: 4, slot: 1 }), 109);
        assert_eq!(LogSegment::decode("k", &s.encode().unwrap()).unwrap(), s);
        s.state = done(0, None, 0);
        assert_eq!(LogSegment::decode("k", &s.encode().unwrap()).unwrap(), s);
        for bad in [
            done(0, Some(Dlsn { segment_seq: 3, entry_id: 0, slot: 0 }), 0),
            done(5, None, 104),
            done(5, Some(Dlsn { segment_seq: 2, entry_id: 0, slot: 0 }), 104),
            done(5, Some(Dlsn { segment_seq: 3, entry_id: 0, slot: 0 }), 99),
        ] {
            s.state = bad;
            assert!(s.encode().is_err(), "{bad:?}");
        }
        assert!(LogSegment::decode("k", &[1, 0x18, 9]).is_err(), "unknown state");
        // LSG2: an in-progress value carrying a completion field is refused.
        s.state = LogSegmentState::InProgress;
        let mut w: wire::LogSegment = wire::decode("k", &s.encode().unwrap()).unwrap();
        w.record_count = 1;
        assert!(matches!(LogSegment::decode("k", &wire::encode(&w)), Err(MetaError::Corrupt(_))));
    }
}
