//! The history of a chaos run (tests/chaos.rs) and its checker: every record written
//! (self-describing payloads: log, writer generation, sequence), every acknowledgement, what the
//! tailing readers delivered, the ends concurrent recoverers found, the writers' failures; the
//! properties checked as events arrive (`violation`) and after the run (`check_final`).
//!
//! Properties (numbered for the messages):
//! - H1: every acknowledged record is in the final log once, at the DLSN and with the
//!   transaction id its acknowledgement gave, with its exact bytes.
//! - H2: the final log is in order: DLSNs and transaction ids strictly increase, a generation
//!   never follows a later one, and each generation's records are a prefix of what it wrote
//!   (sequence 0, 1, 2, ... without a gap: nothing lost below an acknowledged record).
//! - H3: a tailing reader delivers records in order (as H2), each once, never moving back, and
//!   only records of the final log (at the same DLSN, with the same bytes): what it delivered
//!   is the final log once it caught up.
//! - H4: a writer's acknowledgements come in order (sequence, DLSN, transaction id), never after
//!   a failure, never for a write made after its successor opened the log; such a write fails
//!   `Fenced` unless the writer had failed for another reason before (no add succeeds after
//!   fencing, and fencing says so).
//! - H5: every recoverer of a segment found the end the segment's metadata closes it at.
//!
//! A violation is printed when found and kept; the test fails with all of them and its seed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use dlog::log::{Appended, Dlsn, LogError, LogRecord};
use dlog_replication::recovery::RecoveredEnd;

/// The payload of record `seq` of writer generation `generation` of log `log`: `<log> <generation> <seq> `
/// then 16 to 400 letters derived from all three, so no other record's bytes pass for it.
pub(crate) fn payload(log: &str, generation: u64, seq: u64) -> Bytes {
    let mut x =
        log.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    x ^= generation.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ 1;
    let mut text = format!("{log} {generation} {seq} ").into_bytes();
    let len = 16 + (x % 385) as usize;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push(b'a' + (x % 26) as u8);
    }
    text.into()
}

/// What a payload says it is: (log, generation, sequence).
pub(crate) fn parse(payload: &[u8]) -> Option<(String, u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(4, ' ');
    let log = parts.next()?.to_owned();
    let generation = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((log, generation, seq))
}

/// Whether a writer's error is the one fencing gives.
pub(crate) fn is_fenced(error: &LogError) -> bool {
    matches!(error, LogError::Fenced { .. })
}

/// An error's kind, for the counts: its debug form, digits masked, cut at 72 characters.
pub(crate) fn kind(error: &impl std::fmt::Debug) -> String {
    let text: String =
        format!("{error:?}").chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
    let mut kind = String::new();
    for c in text.chars() {
        // Runs of masked digits count as one.
        if !(c == '#' && kind.ends_with('#')) {
            kind.push(c);
        }
    }
    kind.chars().take(72).collect()
}

/// A record a tailing reader delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) dlsn: Dlsn,
    pub(crate) txid: u64,
    pub(crate) generation: u64,
    pub(crate) seq: u64,
}

#[derive(Default)]
struct LogState {
    /// Per generation, the records written (sequences 0..n).
    written: BTreeMap<u64, u64>,
    /// Acknowledged records: (generation, sequence) → where.
    acked: BTreeMap<(u64, u64), Appended>,
    /// What its tailing reader delivered, in order.
    seen: Vec<Seen>,
}

/// Counts for the summary.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) acked: u64,
    pub(crate) generations: u64,
    /// Writers whose successor opened the log while they were writing (fenced by a takeover).
    pub(crate) fenced_writers: u64,
    /// Writes that failed `Fenced`, and those of them made after the successor opened.
    pub(crate) fenced_writes: u64,
    pub(crate) after_fence_writes: u64,
    /// Writers that failed on their own (not a takeover, not a crash the test made), by error.
    pub(crate) writer_failures: BTreeMap<String, u64>,
    /// Failed attempts to open a writer, by error.
    pub(crate) open_failures: BTreeMap<String, u64>,
    /// Tailing reader errors (each followed by a reopen), by error.
    pub(crate) reader_errors: BTreeMap<String, u64>,
    /// Segments recovered by the test's own recoverers, and recoveries run.
    pub(crate) recovered_segments: u64,
    pub(crate) recoveries: u64,
    pub(crate) recovery_failures: BTreeMap<String, u64>,
}

#[derive(Default)]
struct State {
    logs: BTreeMap<String, LogState>,
    /// Ends the test's recoverers found, by segment id.
    recovered: BTreeMap<u64, Vec<RecoveredEnd>>,
    counts: Counts,
    violations: Vec<String>,
}

/// The history (see the module doc). Shared by every client task.
#[derive(Default)]
pub(crate) struct History {
    state: Mutex<State>,
}

/// What the final log of one log holds, checked.
#[derive(Debug, Default)]
pub(crate) struct FinalLog {
    pub(crate) records: u64,
    pub(crate) acked: u64,
    /// Records present that were never acknowledged (in flight when their writer crashed or
    /// was fenced).
    pub(crate) unacknowledged: u64,
}

impl History {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a broken property.
    pub(crate) fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.state().violations.push(what);
    }

    pub(crate) fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    pub(crate) fn counts(&self) -> Counts {
        self.state().counts.clone()
    }

    /// Counts with `f`.
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.state().counts);
    }

    /// Record `seq` of generation `generation` is about to be written.
    pub(crate) fn written(&self, log: &str, generation: u64, seq: u64) {
        let mut state = self.state();
        let written = state.logs.entry(log.to_owned()).or_default().written.entry(generation).or_default();
        assert_eq!(*written, seq, "{log}: generation {generation} writes in sequence");
        *written = seq + 1;
    }

    /// Record `seq` of generation `generation` was acknowledged at `at`.
    pub(crate) fn acked(&self, log: &str, generation: u64, seq: u64, at: Appended) {
        let mut state = self.state();
        state.logs.entry(log.to_owned()).or_default().acked.insert((generation, seq), at);
        state.counts.acked += 1;
    }

    /// What a recoverer of `segment` found.
    pub(crate) fn recovered(&self, segment: u64, end: RecoveredEnd) {
        let mut state = self.state();
        state.counts.recoveries += 1;
        let first = !state.recovered.contains_key(&segment);
        state.counts.recovered_segments += u64::from(first);
        state.recovered.entry(segment).or_default().push(end);
    }

    /// Every end the test's recoverers found, by segment.
    pub(crate) fn recovered_ends(&self) -> BTreeMap<u64, Vec<RecoveredEnd>> {
        self.state().recovered.clone()
    }

    /// A tailing reader of `log` delivered `record`; `last` is what it delivered before (H3,
    /// first half: the rest is checked against the final log).
    pub(crate) fn seen(&self, log: &str, record: &LogRecord, last: Option<&Seen>) -> Option<Seen> {
        let Some((name, generation, seq)) = parse(&record.payload) else {
            self.violation(format!(
                "H3 {log}: a record at {} that no writer of this test wrote",
                record.dlsn
            ));
            return None;
        };
        let mut problems = Vec::new();
        if name != log || record.payload != payload(log, generation, seq) {
            problems.push(format!("not the bytes of {name}/{generation}/{seq}"));
        }
        if let Some(last) = last {
            if record.dlsn <= last.dlsn || record.txid <= last.txid {
                problems.push(format!("after {last:?}: not in order"));
            }
            if generation < last.generation || (generation == last.generation && seq != last.seq + 1) {
                problems.push(format!(
                    "generation {generation} sequence {seq} after {}/{}",
                    last.generation, last.seq
                ));
            }
        } else if seq != 0 {
            problems.push(format!("the first of generation {generation} delivered is sequence {seq}"));
        }
        let seen = Seen { dlsn: record.dlsn, txid: record.txid, generation, seq };
        let mut state = self.state();
        let log_state = state.logs.entry(log.to_owned()).or_default();
        if log_state.written.get(&generation).is_none_or(|&n| seq >= n) {
            problems.push(format!("generation {generation} never wrote sequence {seq}"));
        }
        log_state.seen.push(seen.clone());
        drop(state);
        for p in problems {
            self.violation(format!("H3 {log}: tailing reader at {}: {p}", record.dlsn));
        }
        Some(seen)
    }

    /// How many records the tailing reader of `log` delivered.
    pub(crate) fn seen_count(&self, log: &str) -> usize {
        self.state().logs.get(log).map_or(0, |l| l.seen.len())
    }

    /// Checks the final log of `log`, read from its head to its tail after the run (H1, H2,
    /// H3's second half); each problem becomes a violation.
    pub(crate) fn check_final(&self, log: &str, records: &[LogRecord]) -> FinalLog {
        let mut problems = Vec::new();
        let state = self.state();
        let empty = LogState::default();
        let log_state = state.logs.get(log).unwrap_or(&empty);
        let mut found: BTreeMap<(u64, u64), (Dlsn, u64)> = BTreeMap::new();
        let mut last: Option<(Dlsn, u64, u64, u64)> = None;
        for record in records {
            let Some((name, generation, seq)) = parse(&record.payload) else {
                problems.push(format!("H2: a record at {} that no writer of this test wrote", record.dlsn));
                continue;
            };
            if name != log || record.payload != payload(log, generation, seq) {
                problems.push(format!(
                    "H1: the record at {} is not the bytes of {name}/{generation}/{seq}",
                    record.dlsn
                ));
            }
            if log_state.written.get(&generation).is_none_or(|&n| seq >= n) {
                problems.push(format!("H2: {generation}/{seq} at {} was never written", record.dlsn));
            }
            if let Some((dlsn, txid, last_gen, last_seq)) = last {
                if record.dlsn <= dlsn || record.txid <= txid {
                    problems.push(format!(
                        "H2: {} (txid {}) after {dlsn} (txid {txid})",
                        record.dlsn, record.txid
                    ));
                }
                let next_in_gen = generation == last_gen && seq == last_seq + 1;
                let new_gen = generation > last_gen && seq == 0;
                if !next_in_gen && !new_gen {
                    problems.push(format!(
                        "H2: {generation}/{seq} at {} after {last_gen}/{last_seq}",
                        record.dlsn
                    ));
                }
            } else if seq != 0 {
                problems.push(format!("H2: the log starts with {generation}/{seq}"));
            }
            if found.insert((generation, seq), (record.dlsn, record.txid)).is_some() {
                problems.push(format!("H1: {generation}/{seq} twice (again at {})", record.dlsn));
            }
            last = Some((record.dlsn, record.txid, generation, seq));
        }
        let mut summary = FinalLog { records: records.len() as u64, ..FinalLog::default() };
        for (&(generation, seq), appended) in &log_state.acked {
            summary.acked += 1;
            match found.get(&(generation, seq)) {
                None => {
                    problems.push(format!("H1: acknowledged {generation}/{seq} at {} is lost", appended.dlsn))
                }
                Some(&(dlsn, txid)) if (dlsn, txid) != (appended.dlsn, appended.txid) => {
                    problems.push(format!(
                        "H1: acknowledged {generation}/{seq} at {} txid {} is at {dlsn} txid {txid}",
                        appended.dlsn, appended.txid
                    ))
                }
                Some(_) => {}
            }
        }
        summary.unacknowledged = found.keys().filter(|k| !log_state.acked.contains_key(k)).count() as u64;
        // H3: the tailing reader delivered exactly the final log.
        let seen = &log_state.seen;
        let matches = |s: &Seen, r: &LogRecord| {
            parse(&r.payload)
                .is_some_and(|(_, g, q)| (s.dlsn, s.txid, s.generation, s.seq) == (r.dlsn, r.txid, g, q))
        };
        if let Some(i) = seen.iter().zip(records).position(|(s, r)| !matches(s, r)) {
            problems.push(format!(
                "H3: the tailing reader's record {i} is {:?}, the log's is at {}",
                seen[i], records[i].dlsn
            ));
        } else if seen.len() != records.len() {
            problems.push(format!(
                "H3: the tailing reader delivered {} records, the log holds {}",
                seen.len(),
                records.len()
            ));
        }
        drop(state);
        for p in problems.into_iter().take(50) {
            self.violation(format!("{log}: {p}"));
        }
        summary
    }
}
