//! The harness's statistics: what one phase of a run measured (`PhaseStats`), the open-loop
//! schedule (`OpenLoop`), the run's timeline of phases (`Timeline`), and the live view the
//! progress line and the throughput-over-time series read (`Live`).
//!
//! Invariants:
//! - Latencies are nanoseconds in histograms and microseconds in reports.
//! - Open loop: a record's latency is measured from its *intended* send time, `start + i /
//!   rate`, never from when the sender got round to it, so a stall of the system under test
//!   shows as latency of every record that should have gone during it (no coordinated
//!   omission). `OpenLoop::due` tells the sender how many records are due by a time.
//! - A record belongs to the phase it was sent in (its latency lands there); an acknowledgement
//!   counts for throughput in the phase whose time window it falls in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(test)]
use crate::bench::stats::Latency;
pub(crate) use crate::bench::stats::histogram;
use hdrhistogram::Histogram;

/// Records offered at a fixed rate from `start`: record `i` is intended at `start + i / rate`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenLoop {
    /// Nanoseconds (on the run's clock) of record 0.
    start_ns: u64,
    /// Records per second, > 0.
    rate: f64,
}

impl OpenLoop {
    pub(crate) fn new(start_ns: u64, rate: f64) -> OpenLoop {
        assert!(rate > 0.0 && rate.is_finite(), "an open loop needs a positive rate");
        OpenLoop { start_ns, rate }
    }

    /// When record `i` is intended, ns on the run's clock.
    pub(crate) fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns.saturating_add((i as f64 * 1e9 / self.rate) as u64)
    }

    /// How many records are due by `now_ns` (records `0..due` are intended at or before it).
    pub(crate) fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        let elapsed = (now_ns - self.start_ns) as f64 / 1e9;
        let mut due = ((elapsed * self.rate).floor() as u64).saturating_add(1);
        // Float rounding: make `intended_ns(due - 1) <= now < intended_ns(due)` exact.
        while due > 0 && self.intended_ns(due - 1) > now_ns {
            due -= 1;
        }
        while self.intended_ns(due) <= now_ns {
            due += 1;
        }
        due
    }
}

/// The run's phases back to back from 0 ns. One phase may be elastic (the settle): it lasts at
/// most its planned length, and ends earlier once `end_elastic` is called; the phases after it
/// move with its end. Until then, they are placed as if it lasted its whole length.
#[derive(Clone, Debug)]
pub(crate) struct Timeline {
    /// Each phase's planned length, ns.
    lengths: Vec<u64>,
    /// The elastic phase, and its end (ns, once set; `u64::MAX` until then).
    elastic: Option<(usize, Arc<AtomicU64>)>,
}

impl Timeline {
    /// Phases of these lengths, the first starting at 0; phase `elastic` may end early.
    pub(crate) fn new(lengths: &[Duration], elastic: Option<usize>) -> Timeline {
        let lengths = lengths.iter().map(|l| l.as_nanos() as u64).collect();
        Timeline { lengths, elastic: elastic.map(|p| (p, Arc::new(AtomicU64::new(u64::MAX)))) }
    }

    /// Start of phase `p` (of the end of the last, for `p` = the number of phases), ns.
    pub(crate) fn start(&self, p: usize) -> u64 {
        let mut at = 0;
        for (i, length) in self.lengths.iter().enumerate().take(p) {
            at += length;
            if let Some((e, end)) = &self.elastic
                && *e == i
            {
                at = at.min(end.load(Ordering::Acquire));
            }
        }
        at
    }

    /// End of phase `p`, ns.
    pub(crate) fn end(&self, p: usize) -> u64 {
        self.start(p + 1)
    }

    /// The phase `t_ns` falls in; `None` after the last.
    pub(crate) fn phase_at(&self, t_ns: u64) -> Option<usize> {
        (0..self.phases()).find(|&p| t_ns < self.end(p))
    }

    /// How many phases.
    pub(crate) fn phases(&self) -> usize {
        self.lengths.len()
    }

    /// The elastic phase, if any.
    pub(crate) fn elastic(&self) -> Option<usize> {
        self.elastic.as_ref().map(|(p, _)| *p)
    }

    /// Whether the elastic phase's end is known (or there is none).
    pub(crate) fn settled(&self) -> bool {
        self.elastic.as_ref().is_none_or(|(_, end)| end.load(Ordering::Acquire) != u64::MAX)
    }

    /// Ends the elastic phase at `t_ns` (at most its planned end); once.
    pub(crate) fn end_elastic(&self, t_ns: u64) {
        if let Some((p, end)) = &self.elastic {
            let planned = self.start(*p) + self.lengths[*p];
            let _ = end.compare_exchange(u64::MAX, t_ns.min(planned), Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// What one phase measured, merged from every writer and reader.
#[derive(Clone, Debug)]
pub(crate) struct PhaseStats {
    /// Records written (the `write` call returned) in this phase.
    pub(crate) sent: u64,
    /// ... of which acknowledged durable.
    pub(crate) acked: u64,
    /// ... of which failed (refused, or their acknowledgement was an error).
    pub(crate) write_errors: u64,
    /// Payload bytes acknowledged, of records sent in this phase.
    pub(crate) acked_bytes: u64,
    /// Acknowledgements whose time fell in this phase (whatever phase sent them).
    pub(crate) acked_in_window: u64,
    /// ... their payload bytes.
    pub(crate) acked_bytes_in_window: u64,
    /// Send (open loop: intended) time to the durable acknowledgement, ns.
    pub(crate) publish: Histogram<u64>,
    /// Send (open loop: intended) time to a tailing reader having the record, ns.
    pub(crate) e2e: Histogram<u64>,
    /// Records the tailing readers read (each reader counts).
    pub(crate) read: u64,
    /// Records read out of order, twice, or missing (a gap), by any reader.
    pub(crate) read_errors: u64,
}

impl Default for PhaseStats {
    fn default() -> PhaseStats {
        PhaseStats {
            sent: 0,
            acked: 0,
            write_errors: 0,
            acked_bytes: 0,
            acked_in_window: 0,
            acked_bytes_in_window: 0,
            publish: histogram(),
            e2e: histogram(),
            read: 0,
            read_errors: 0,
        }
    }
}

impl PhaseStats {
    /// Adds `other` into this.
    pub(crate) fn merge(&mut self, other: &PhaseStats) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.write_errors += other.write_errors;
        self.acked_bytes += other.acked_bytes;
        self.acked_in_window += other.acked_in_window;
        self.acked_bytes_in_window += other.acked_bytes_in_window;
        self.publish.add(&other.publish).expect("same histogram bounds");
        self.e2e.add(&other.e2e).expect("same histogram bounds");
        self.read += other.read;
        self.read_errors += other.read_errors;
    }
}

/// One task's statistics, one `PhaseStats` per phase, merged at the end of the run; and what it
/// hands to `Live` for the progress line every `LIVE_EVERY`.
pub(crate) struct Recorder {
    pub(crate) phases: Vec<PhaseStats>,
    timeline: Timeline,
    /// Since the last hand-over to `Live`.
    interval: Interval,
    handed_at: u64,
}

/// How often a recorder hands its interval to `Live` (a quiet recorder holds at most this much
/// of a second's figures until its next event or its end).
const LIVE_EVERY: u64 = 10_000_000;

impl Recorder {
    pub(crate) fn new(timeline: &Timeline) -> Recorder {
        Recorder {
            phases: (0..timeline.phases()).map(|_| PhaseStats::default()).collect(),
            timeline: timeline.clone(),
            interval: Interval::default(),
            handed_at: 0,
        }
    }

    /// A record of phase `phase` written.
    pub(crate) fn sent(&mut self, phase: usize) {
        self.phases[phase].sent += 1;
    }

    /// A record of phase `phase`, `bytes` of payload, sent at `sent_ns`, acknowledged at
    /// `now_ns`: the phase whose window the acknowledgement fell in.
    pub(crate) fn acked(
        &mut self,
        phase: usize,
        bytes: u64,
        sent_ns: u64,
        now_ns: u64,
        live: &Live,
    ) -> Option<usize> {
        let latency = now_ns.saturating_sub(sent_ns).max(1);
        let p = &mut self.phases[phase];
        p.acked += 1;
        p.acked_bytes += bytes;
        p.publish.saturating_record(latency);
        let window = self.timeline.phase_at(now_ns);
        if let Some(w) = window {
            let w = &mut self.phases[w];
            w.acked_in_window += 1;
            w.acked_bytes_in_window += bytes;
        }
        self.interval.acked += 1;
        self.interval.bytes += bytes;
        self.interval.publish.saturating_record(latency);
        self.hand_over(now_ns, live);
        window
    }

    /// A record of phase `phase` failed.
    pub(crate) fn write_error(&mut self, phase: usize) {
        self.phases[phase].write_errors += 1;
        self.interval.errors += 1;
    }

    /// A tailing reader read a record of phase `phase`, sent at `sent_ns`, at `now_ns`.
    pub(crate) fn read(&mut self, phase: usize, sent_ns: u64, now_ns: u64, live: &Live) {
        let latency = now_ns.saturating_sub(sent_ns).max(1);
        let p = &mut self.phases[phase];
        p.read += 1;
        p.e2e.saturating_record(latency);
        self.interval.e2e.saturating_record(latency);
        self.hand_over(now_ns, live);
    }

    /// A reader saw `n` records out of order, twice, or missing (a gap of `n`).
    pub(crate) fn read_error(&mut self, phase: usize, n: u64) {
        self.phases[phase].read_errors += n;
        self.interval.errors += n;
    }

    fn hand_over(&mut self, now_ns: u64, live: &Live) {
        if now_ns >= self.handed_at + LIVE_EVERY {
            self.flush(live);
            self.handed_at = now_ns;
        }
    }

    /// Hands what is gathered to `live` now (at the end of a task).
    pub(crate) fn flush(&mut self, live: &Live) {
        live.add(&std::mem::take(&mut self.interval));
    }
}

/// What happened in a stretch of time, for the progress line and the series.
#[derive(Clone, Debug)]
pub(crate) struct Interval {
    pub(crate) acked: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
    pub(crate) publish: Histogram<u64>,
    pub(crate) e2e: Histogram<u64>,
}

impl Default for Interval {
    fn default() -> Interval {
        Interval { acked: 0, bytes: 0, errors: 0, publish: histogram(), e2e: histogram() }
    }
}

/// The interval every recorder hands into; the progress line takes it once a second.
#[derive(Default)]
pub(crate) struct Live {
    interval: Mutex<Option<Interval>>,
}

impl Live {
    fn add(&self, from: &Interval) {
        let mut guard = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        let into = guard.get_or_insert_with(Interval::default);
        into.acked += from.acked;
        into.bytes += from.bytes;
        into.errors += from.errors;
        into.publish.add(&from.publish).expect("same histogram bounds");
        into.e2e.add(&from.e2e).expect("same histogram bounds");
    }

    /// What was handed in since the last take.
    pub(crate) fn take(&self) -> Interval {
        let mut guard = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        guard.take().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn percentiles_of_known_values() {
        let mut h = histogram();
        // 1..=1000 us, once each.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Latency::of(&h).unwrap();
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.001;
        assert!(near(p.p50, 500.0), "{p:?}");
        assert!(near(p.p90, 900.0), "{p:?}");
        assert!(near(p.p99, 990.0), "{p:?}");
        assert!(near(p.p999, 999.0), "{p:?}");
        assert!(near(p.max, 1000.0), "{p:?}");
        assert_eq!(Latency::of(&histogram()), None);
    }

    #[test]
    fn open_loop_due_and_intended_agree() {
        let l = OpenLoop::new(5 * MS, 3000.0);
        assert_eq!(l.due(0), 0);
        assert_eq!(l.due(5 * MS - 1), 0);
        assert_eq!(l.due(5 * MS), 1);
        for now in (5 * MS..25 * MS).step_by(7_919) {
            let due = l.due(now);
            assert!(l.intended_ns(due - 1) <= now && l.intended_ns(due) > now, "at {now}: {due}");
        }
        // One second holds `rate` records.
        assert_eq!(l.due(5 * MS + 1_000 * MS) - l.due(5 * MS), 3000);
    }

    /// A 100 ms stall at 1000 records/s: the records that should have gone during it carry it
    /// as latency, as they would for a client that kept sending (coordinated omission is what
    /// measuring from the actual send time would do: one slow record).
    #[test]
    fn a_stall_shows_as_latency_of_every_record_it_delayed() {
        let l = OpenLoop::new(0, 1000.0);
        let service = 200_000; // 200 us per record when the system answers.
        let stall = (500 * MS, 600 * MS); // the system answers nothing in this window.
        let mut open = histogram();
        let mut closed = histogram();
        let mut free_at = 0u64;
        for i in 0..1000u64 {
            // The sender sends when due, or when it can (a blocking client waits for the last).
            let send = l.intended_ns(i).max(free_at);
            let mut done = send + service;
            if done > stall.0 && send < stall.1 {
                done = stall.1 + service;
            }
            free_at = done;
            open.record(done - l.intended_ns(i)).unwrap();
            closed.record(done - send).unwrap();
        }
        let open = Latency::of(&open).unwrap();
        let closed = Latency::of(&closed).unwrap();
        // About 100 records were due during the stall: 10% of them, so p90 sees it.
        assert!(open.p90 > 5_000.0, "open loop p90 {open:?}");
        assert!(open.max >= 99_000.0, "{open:?}");
        // Timed from the actual send, only one record is slow: p99 looks fine.
        assert!(closed.p99 < 1_000.0, "closed loop p99 {closed:?}");
        assert!(closed.max >= 99_000.0, "{closed:?}");
    }

    #[test]
    fn timeline_phases() {
        let t = Timeline::new(&[Duration::from_secs(1), Duration::from_secs(2)], None);
        assert_eq!(t.phases(), 2);
        assert_eq!(t.phase_at(0), Some(0));
        assert_eq!(t.phase_at(999_999_999), Some(0));
        assert_eq!(t.phase_at(1_000_000_000), Some(1));
        assert_eq!(t.phase_at(2_999_999_999), Some(1));
        assert_eq!(t.phase_at(3_000_000_000), None);
        assert_eq!((t.start(1), t.end(1)), (1_000_000_000, 3_000_000_000));
        assert!(t.settled());
    }

    #[test]
    fn an_elastic_phase_ends_early_and_the_rest_follow() {
        let s = Duration::from_secs;
        let t = Timeline::new(&[s(1), s(5), s(2)], Some(1));
        assert!(!t.settled());
        // Planned: 0..1, 1..6, 6..8.
        assert_eq!((t.start(2), t.end(2)), (6 * SEC, 8 * SEC));
        assert_eq!(t.phase_at(5 * SEC), Some(1));
        t.end_elastic(2 * SEC + 500);
        assert!(t.settled());
        assert_eq!((t.end(1), t.start(2), t.end(2)), (2 * SEC + 500, 2 * SEC + 500, 4 * SEC + 500));
        assert_eq!(t.phase_at(2 * SEC + 499), Some(1));
        assert_eq!(t.phase_at(2 * SEC + 500), Some(2));
        assert_eq!(t.phase_at(4 * SEC + 500), None);
        // Once: a later call changes nothing; and never past the planned end.
        t.end_elastic(3 * SEC);
        assert_eq!(t.end(1), 2 * SEC + 500);
        let late = Timeline::new(&[s(1), s(5), s(2)], Some(1));
        late.end_elastic(60 * SEC);
        assert_eq!(late.end(1), 6 * SEC);
        // Clones share the end.
        let u = Timeline::new(&[s(1), s(5)], Some(1));
        let v = u.clone();
        u.end_elastic(3 * SEC);
        assert_eq!(v.end(1), 3 * SEC);
    }

    #[test]
    fn recorder_attributes_latency_to_the_sending_phase_and_throughput_to_the_window() {
        let t = Timeline::new(&[Duration::from_millis(100), Duration::from_millis(100)], None);
        let live = Live::default();
        let mut r = Recorder::new(&t);
        r.sent(0);
        r.sent(0);
        r.sent(1);
        // Sent in phase 0, acknowledged in phase 1's window.
        r.acked(0, 10, 90 * MS, 110 * MS, &live);
        r.acked(0, 10, 95 * MS, 96 * MS, &live);
        r.write_error(1);
        r.read(0, 90 * MS, 120 * MS, &live);
        r.read_error(1, 1);
        r.flush(&live);
        let (p0, p1) = (&r.phases[0], &r.phases[1]);
        assert_eq!((p0.sent, p0.acked, p0.acked_bytes, p0.write_errors), (2, 2, 20, 0));
        assert_eq!((p0.acked_in_window, p1.acked_in_window, p1.acked_bytes_in_window), (1, 1, 10));
        assert_eq!((p1.sent, p1.acked, p1.write_errors, p1.read_errors), (1, 0, 1, 1));
        let publish = Latency::of(&p0.publish).unwrap();
        assert!((publish.max - 20_000.0).abs() < 20.0 && (publish.p50 - 1_000.0).abs() < 2.0, "{publish:?}");
        assert_eq!(p0.e2e.len(), 1);
        let interval = live.take();
        assert_eq!((interval.acked, interval.bytes, interval.errors, interval.e2e.len()), (2, 20, 2, 1));
        assert_eq!(live.take().acked, 0);
        let mut merged = PhaseStats::default();
        merged.merge(p0);
        merged.merge(p0);
        assert_eq!((merged.acked, merged.publish.len()), (4, 4));
    }
}
