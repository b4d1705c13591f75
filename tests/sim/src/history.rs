//! `History`: what the clients were told, kept for the checkers, and the checks made on it.
//!
//! Checks (each a violation when broken):
//! - H1 (order): the writer completes entries 0, 1, 2, ... in order, once each.
//! - H2 (LAC): every LAC the writer or a reader reports never moves back, and a LAC a reader
//!   learns never passes the writer's (a reader is never told an entry is confirmed that the
//!   writer did not confirm).
//! - H3 (readers): a reader delivers entries 0, 1, 2, ... once each, in order, each with the
//!   bytes the writer added for it.
//! - H4 (durability): once the segment is closed, every entry the writer had acknowledged is at
//!   or below the end, and every LAC anyone saw is too.
//! - H5 (agreement): every recoverer that finishes, and the writer's own close, end the
//!   segment at the end the metadata holds.
//! - H6 (every proposed end is safe): the end each recovery worked out, and the writer's close,
//!   whether or not its close won, holds every acknowledged entry and every LAC, and its length
//!   is the payload bytes up to it: a recovery that would close too short is caught even when
//!   another recovery closed first.

use bytes::Bytes;
use dlog_replication::recovery::RecoveredEnd;

/// The run's history.
#[derive(Default)]
pub(crate) struct History {
    /// The writer's payload of each entry it added, by entry id.
    pub(crate) payloads: Vec<Bytes>,
    /// The writer's next completion (H1).
    pub(crate) next_completion: u64,
    /// Entries the writer completed `Ok`, the highest.
    pub(crate) acked_max: Option<u64>,
    /// Entries acknowledged.
    pub(crate) acked: u64,
    /// The writer's LAC (H2).
    pub(crate) writer_lac: Option<u64>,
    /// The highest LAC any reader reported (H4).
    pub(crate) reader_lac_max: Option<u64>,
    /// Ends recoverers finished with (H5).
    pub(crate) recovered: Vec<RecoveredEnd>,
    /// Every close requested, by whom (H6).
    pub(crate) proposed: Vec<(String, RecoveredEnd)>,
    /// The writer's close: its last entry, when it succeeded.
    pub(crate) writer_closed: Option<Option<u64>>,
    /// Entries delivered to readers.
    pub(crate) delivered: u64,
    /// Violations found, in order.
    pub(crate) violations: Vec<String>,
}

impl History {
    pub(crate) fn violation(&mut self, message: String) {
        self.violations.push(message);
    }

    /// The writer completed `entry` (H1).
    pub(crate) fn completed(&mut self, entry: u64, ok: bool) {
        if entry != self.next_completion {
            let expected = self.next_completion;
            self.violation(format!("H1: writer completed entry {entry} where {expected} was next"));
        }
        self.next_completion = entry + 1;
        if ok {
            if entry > 0 && self.acked_max != Some(entry - 1) {
                self.violation(format!("H1: entry {entry} acknowledged after a failed one"));
            }
            self.acked_max = Some(entry);
            self.acked += 1;
        }
    }

    /// The writer's LAC advanced (H2).
    pub(crate) fn writer_lac(&mut self, lac: u64) {
        if self.writer_lac.is_some_and(|l| l >= lac) || self.acked_max.is_none_or(|a| a < lac) {
            let (was, acked) = (self.writer_lac, self.acked_max);
            self.violation(format!("H2: writer LAC {lac} after {was:?} with {acked:?} acknowledged"));
        }
        self.writer_lac = Some(lac);
    }

    /// A reader's LAC (H2): `previous` is that reader's last one.
    pub(crate) fn reader_lac(&mut self, reader: usize, previous: Option<u64>, lac: u64) {
        if previous.is_some_and(|p| p > lac) {
            self.violation(format!("H2: reader {reader} LAC moved back from {previous:?} to {lac}"));
        }
        if self.writer_lac.is_none_or(|w| w < lac) {
            let writer = self.writer_lac;
            self.violation(format!("H2: reader {reader} told LAC {lac}, the writer's is {writer:?}"));
        }
        self.reader_lac_max = self.reader_lac_max.max(Some(lac));
    }

    /// A reader delivered `entry` with `payload`, expecting `expected` (H3).
    pub(crate) fn delivered(&mut self, reader: usize, expected: u64, entry: u64, payload: &Bytes) {
        self.delivered += 1;
        if entry != expected {
            self.violation(format!("H3: reader {reader} delivered entry {entry} where {expected} was next"));
            return;
        }
        match self.payloads.get(entry as usize) {
            Some(written) if written == payload => {}
            Some(_) => self.violation(format!("H3: reader {reader} delivered other bytes for entry {entry}")),
            None => self.violation(format!("H3: reader {reader} delivered entry {entry}, never added")),
        }
    }

    /// Payload bytes of entries `0..=last`, or `None` if some were never added.
    fn length_through(&self, last: Option<u64>) -> Option<u64> {
        match last {
            None => Some(0),
            Some(l) => self.payloads.get(..=l as usize).map(|p| p.iter().map(|p| p.len() as u64).sum()),
        }
    }

    /// `end` holds every acknowledged entry and LAC, and the bytes up to it (H4, H6).
    fn check_end(&mut self, who: &str, end: RecoveredEnd) {
        let last = end.last_entry;
        if self.acked_max > last {
            let acked = self.acked_max;
            self.violation(format!(
                "H4: entry {acked:?} was acknowledged but {who} ends the segment at {last:?}"
            ));
        }
        for (what, lac) in [("writer", self.writer_lac), ("reader", self.reader_lac_max)] {
            if lac > last {
                self.violation(format!("H4: {what} LAC {lac:?} is past the end {last:?} {who} found"));
            }
        }
        match self.length_through(last) {
            None => self.violation(format!("H4: {who} ends the segment at {last:?}, past every entry added")),
            Some(expected) if expected != end.length => {
                let length = end.length;
                self.violation(format!(
                    "H4: {who} ends with length {length} where the entries hold {expected}"
                ));
            }
            Some(_) => {}
        }
    }

    /// The segment is closed at `end`: H4, H5, H6. Returns whether the end is past every entry
    /// added (nothing can be audited then).
    pub(crate) fn check_closed(&mut self, end: RecoveredEnd) -> bool {
        for (who, proposed) in self.proposed.clone() {
            self.check_end(&who, proposed);
        }
        self.check_end("the metadata", end);
        let last = end.last_entry;
        for recovered in self.recovered.clone() {
            if recovered != end {
                self.violation(format!("H5: a recoverer ended at {recovered:?}, the metadata at {end:?}"));
            }
        }
        if let Some(writer) = self.writer_closed
            && writer != last
        {
            self.violation(format!("H5: the writer closed at {writer:?}, the metadata at {last:?}"));
        }
        self.length_through(last).is_none()
    }
}
