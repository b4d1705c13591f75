//! `SegmentReader` driven by a scripted harness that plays the bookies (segment_reader/
//! harness.rs): scenarios for each behaviour (envelope checks in segment_reader/envelopes.rs),
//! then a proptest over random answer orders, failures, damaged replicas, ticks, LAC growth and
//! closes that checks R1 to R5 and R7.

#[path = "segment_reader/envelopes.rs"]
mod envelopes;
#[path = "segment_reader/harness.rs"]
mod harness;

use std::time::Duration;

use bytes::Bytes;
use dlog_protocol::{Request, Response, Status};
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::segment_reader::{
    ReaderError, ReaderSettings, SegmentEnd, SegmentReader, SetupError, Tag, TransportFailure,
};
use harness::{Harness, SEGMENT, base, damaged, ensembles, payload, settings, stored};
use proptest::prelude::*;

/// Answers arriving newest first still come out 0..=4 in order, once each, then `End`.
#[test]
fn in_order_delivery_with_out_of_order_answers() {
    let mut h = Harness::new((3, 2, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(4) });
    for entry in 0..5 {
        assert_eq!(h.reads_of(entry), vec![10 + (entry % 3) as u32], "first member of W({entry})");
    }
    for entry in (1..5).rev() {
        h.read_ok(entry, 10 + (entry % 3) as u32);
        assert!(h.entries.is_empty(), "entry 0 is not read yet");
    }
    h.read_ok(0, 10);
    assert_eq!(h.delivered(), vec![0, 1, 2, 3, 4]);
    assert!(h.entries.iter().all(|(entry, bytes)| *bytes == payload(*entry)));
    assert_eq!((h.ends, h.after_stop), (1, 0));
    assert_eq!(h.sent.len(), 5);
    assert!(h.reader.is_ended());
    assert_eq!(h.reader.next_deadline(), None);
}

/// No answer within `speculative_timeout`: the next member is asked; the first answer wins,
/// the slow one's later answer is stale, and the slow bookie is asked last afterwards.
#[test]
fn speculative_read_when_a_replica_is_slow() {
    let one_at_a_time = ReaderSettings { read_ahead_entries: 1, ..settings() };
    let end = SegmentEnd::Closed { last_entry: Some(3) };
    let mut h = Harness::with((3, 3, 2), &[(0, &[10, 11, 12])], 0, end, one_at_a_time);
    assert_eq!(h.reads_of(0), vec![10]);
    assert_eq!(h.reader.next_deadline(), Some(h.t0 + Duration::from_millis(50)));
    h.tick(49);
    assert_eq!(h.reads_of(0), vec![10]);
    h.tick(50);
    assert_eq!(h.reads_of(0), vec![10, 11]);
    assert_eq!(h.reader.stats().speculative_reads, 1);
    h.read_ok(0, 11);
    assert_eq!(h.delivered(), vec![0]);
    h.read_ok(0, 10);
    assert_eq!(h.delivered(), vec![0], "the slower answer is not delivered again");
    assert_eq!(h.reader.stats().stale_answers, 1);
    h.read_ok(1, 11);
    h.read_ok(2, 12);
    // W(3) starts at bookie 10, which was slow: 11 is asked first.
    assert_eq!(h.reads_of(3), vec![11]);
    h.read_ok(3, 11);
    assert_eq!(h.delivered(), vec![0, 1, 2, 3]);
    assert_eq!(h.ends, 1);
}

/// `Corrupt` from one replica: the next is asked at once and the bad replica is reported.
#[test]
fn corrupt_replica_is_reported_and_the_next_asked() {
    let mut h = Harness::new((3, 3, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(0) });
    h.refuse(0, 10, Status::Corrupt);
    assert_eq!(h.bad, vec![(0, 10)]);
    assert_eq!(h.reads_of(0), vec![11]);
    h.read_ok(0, 11);
    assert_eq!((h.delivered(), h.ends), (vec![0], 1));
    assert_eq!(h.reader.stats().corrupt_replies, 1);
}

/// With Qa < Qw a replica may lack an entry: `NoSuchEntry` / `NoSuchSegment` move on to the
/// next member, with no bad replica reported.
#[test]
fn missing_replica_with_qa_below_qw_asks_the_next() {
    let mut h = Harness::new((3, 3, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(0) });
    h.refuse(0, 10, Status::NoSuchEntry);
    assert_eq!(h.reads_of(0), vec![11]);
    h.refuse(0, 11, Status::NoSuchSegment);
    assert_eq!(h.reads_of(0), vec![12]);
    h.read_ok(0, 12);
    assert_eq!((h.delivered(), h.ends), (vec![0], 1));
    assert!(h.bad.is_empty());
    assert_eq!(h.reader.stats().missing_replies, 2);
    // An answer for another entry is that bookie's failure, not the entry.
    let mut h = Harness::new((3, 2, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(0) });
    h.answer_read(0, 10, Ok(Response::Read { segment: SEGMENT, entry: 1, payload: stored(1) }));
    assert!(h.entries.is_empty());
    assert_eq!(h.reads_of(0), vec![11]);
}

/// A closed segment is read to its last entry, then `End`, and nothing is asked past it.
#[test]
fn closed_segment_reads_to_its_end_and_never_past() {
    let mut h = Harness::new((3, 2, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(2) });
    assert_eq!(h.sent.len(), 3, "the window has room for more, the segment has not");
    for entry in 0..3 {
        h.read_ok(entry, 10 + entry as u32);
    }
    assert_eq!((h.delivered(), h.ends), (vec![0, 1, 2], 1));
    h.tick(60_000);
    h.reader.on_last_add_confirmed(9, h.now);
    h.pump();
    assert_eq!((h.sent.len(), h.after_stop, h.reader.next_deadline()), (3, 0, None));
    assert!(h.sent.iter().all(|(_, r)| matches!(r, Request::Read { entry, .. } if *entry <= 2)));
    // An empty segment, or a start past the end: `End` at once, nothing sent.
    for (first, last_entry) in [(0, None), (3, Some(2))] {
        let end = SegmentEnd::Closed { last_entry };
        let h = Harness::with((3, 2, 2), &[(0, &[10, 11, 12])], first, end, settings());
        assert_eq!((h.ends, h.sent.len()), (1, 0));
    }
}

/// Tailing: one LONG_POLL on W(LAC + 1); its piggybacked entry is delivered without a READ;
/// smaller LACs are ignored (R3); a timeout polls the same bookie again, a failure another
/// after the backoff; the close stops the polling and the reader ends at the last entry.
#[test]
fn tailing_with_long_poll() {
    let list: &[(u64, &[u32])] = &[(0, &[10, 11, 12])];
    let mut h = Harness::new((3, 2, 2), list, SegmentEnd::Open { last_add_confirmed: Some(1) });
    assert_eq!((h.reads_of(0), h.reads_of(1)), (vec![10], vec![11]));
    let polls = h.polls();
    let known = |k| Request::LongPoll { segment: SEGMENT, known: Some(k), timeout_ms: 10_000 };
    assert_eq!(polls.iter().map(|p| (p.1, p.2.clone())).collect::<Vec<_>>(), vec![(12, known(1))]);
    h.read_ok(0, 10);
    h.read_ok(1, 11);
    let entry = Some((2, stored(2)));
    h.respond(polls[0].0, Ok(Response::LongPoll { last_add_confirmed: Some(3), entry }));
    assert_eq!(h.delivered(), vec![0, 1, 2]);
    assert_eq!(h.reader.stats().piggybacked_entries, 1);
    assert!(h.reads_of(2).is_empty(), "entry 2 came with the poll");
    assert_eq!(h.reads_of(3), vec![10]);
    h.read_ok(3, 10);
    let polls = h.polls();
    assert_eq!(polls.iter().map(|p| (p.1, p.2.clone())).collect::<Vec<_>>(), vec![(11, known(3))]);
    // A lagging bookie's smaller LAC, then a timeout: the same bookie is polled again.
    h.respond(polls[0].0, Ok(Response::LongPoll { last_add_confirmed: Some(2), entry: None }));
    let polls = h.polls();
    assert_eq!(polls.iter().map(|p| (p.1, p.2.clone())).collect::<Vec<_>>(), vec![(11, known(3))]);
    h.respond(polls[0].0, Ok(Response::LongPoll { last_add_confirmed: Some(3), entry: None }));
    let polls = h.polls();
    assert_eq!(polls.len(), 1);
    assert_eq!(h.reader.stats().long_poll_timeouts, 2);
    // A failure: after the backoff, the other member of W(4).
    h.respond(polls[0].0, Err(TransportFailure::Disconnected));
    assert!(h.polls().is_empty());
    assert_eq!(h.reader.next_deadline(), Some(h.now + Duration::from_millis(100)));
    h.tick(100);
    assert_eq!(h.polls().iter().map(|p| p.1).collect::<Vec<_>>(), vec![12]);
    // LACs from the shell: a smaller one is ignored, a larger one is read (11 failed: 12 first).
    h.reader.on_last_add_confirmed(2, h.now);
    h.reader.on_last_add_confirmed(4, h.now);
    h.pump();
    assert_eq!(h.lacs, vec![3, 4]);
    assert_eq!(h.reads_of(4), vec![12]);
    assert_eq!(h.polls().len(), 1, "one LONG_POLL in flight at most");
    h.read_ok(4, 12);
    assert_eq!(h.delivered(), vec![0, 1, 2, 3, 4]);
    // The close: the poll's answer becomes stale; entry 5 is read, then End.
    let poll = h.polls()[0].0;
    h.reader.on_metadata(ensembles(list), SegmentEnd::Closed { last_entry: Some(5) }, h.now).expect("close");
    h.pump();
    h.respond(poll, Ok(Response::LongPoll { last_add_confirmed: Some(6), entry: None }));
    assert_eq!(h.reader.stats().stale_answers, 1);
    h.read_ok(5, 12);
    assert_eq!((h.delivered(), h.ends, h.lacs.clone()), (vec![0, 1, 2, 3, 4, 5], 1, vec![3, 4]));
    assert!(h.sent.iter().all(|(_, r)| !matches!(r, Request::Read { entry, .. } if *entry > 5)));
}

/// A reader that starts past the LAC polls for its first entry, not for LAC + 1.
#[test]
fn tailing_from_past_the_lac() {
    let end = SegmentEnd::Open { last_add_confirmed: Some(3) };
    let mut h = Harness::with((3, 2, 2), &[(0, &[10, 11, 12])], 10, end, settings());
    let polls = h.polls();
    let request = Request::LongPoll { segment: SEGMENT, known: Some(9), timeout_ms: 10_000 };
    assert_eq!(polls.iter().map(|p| (p.1, p.2.clone())).collect::<Vec<_>>(), vec![(11, request)]);
    let entry = Some((10, stored(10)));
    h.respond(polls[0].0, Ok(Response::LongPoll { last_add_confirmed: Some(10), entry }));
    assert_eq!((h.delivered(), h.lacs.clone()), (vec![10], vec![10]));
    assert_eq!(h.sent.len(), 2, "entry 10 came with the poll; the next poll waits past it");
}

/// No LAC known at start: READ_LAC to every bookie of the last ensemble; reading starts at the
/// first answer, and the LAC only grows with the others.
#[test]
fn unknown_lac_is_read_from_the_last_ensemble() {
    let list: &[(u64, &[u32])] = &[(0, &[10, 11, 12]), (2, &[10, 13, 12])];
    let mut h = Harness::new((3, 2, 2), list, SegmentEnd::Open { last_add_confirmed: None });
    let lac_reads = h.pending(|r| matches!(r, Request::ReadLastAddConfirmed { fence: None, .. }));
    assert_eq!(lac_reads.iter().map(|p| p.1).collect::<Vec<_>>(), vec![10, 13, 12]);
    assert_eq!(h.sent.len(), 3, "no read or poll before a LAC answer");
    h.respond(lac_reads[1].0, Ok(Response::ReadLastAddConfirmed { last_add_confirmed: Some(1) }));
    assert_eq!((h.reads_of(0), h.reads_of(1), h.polls().len()), (vec![10], vec![11], 1));
    h.respond(lac_reads[0].0, Ok(Response::ReadLastAddConfirmed { last_add_confirmed: Some(0) }));
    assert_eq!(h.lacs, vec![1]);
    h.respond(lac_reads[2].0, Ok(Response::ReadLastAddConfirmed { last_add_confirmed: Some(3) }));
    assert_eq!(h.lacs, vec![1, 3]);
    // Entries 2 and 3 are in the second ensemble: W(2) = [12, 10], W(3) = [10, 13].
    assert_eq!((h.reads_of(2), h.reads_of(3)), (vec![12], vec![10]));
    assert_eq!(h.polls().len(), 1);
    h.reads_hit_write_sets();
}

/// Entries after an ensemble change are read from the new bookies; a change while reading
/// sends the members not yet asked to the new ensemble.
#[test]
fn ensemble_change_across_entries() {
    let list: &[(u64, &[u32])] = &[(0, &[10, 11, 12]), (3, &[13, 11, 14])];
    let mut h = Harness::new((3, 2, 2), list, SegmentEnd::Closed { last_entry: Some(5) });
    let firsts: Vec<Vec<u32>> = (0..6).map(|entry| h.reads_of(entry)).collect();
    assert_eq!(firsts, vec![vec![10], vec![11], vec![12], vec![13], vec![11], vec![14]]);
    // Bookie 10 is replaced by 15 in the first ensemble while entry 2 (W = [12, 10]) is read.
    let replaced: &[(u64, &[u32])] = &[(0, &[15, 11, 12]), (3, &[13, 11, 14])];
    h.reader.on_metadata(ensembles(replaced), SegmentEnd::Closed { last_entry: Some(5) }, h.now).expect("ok");
    h.ensembles = ensembles(replaced);
    h.refuse(2, 12, Status::Internal);
    assert_eq!(h.reads_of(2), vec![15]);
    for (entry, bookie) in [(0, 10), (1, 11), (2, 15), (3, 13), (4, 11), (5, 14)] {
        h.read_ok(entry, bookie);
    }
    assert_eq!((h.delivered(), h.ends), (vec![0, 1, 2, 3, 4, 5], 1));
}

/// Every replica of entry 1 fails, round after round with a growing backoff: `Unreadable` in
/// entry 1's place, after entry 0; entries 2 and 3 are read but never delivered (no gap).
#[test]
fn all_replicas_failing_retry_then_unreadable_never_skip() {
    let mut h = Harness::new((3, 2, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(3) });
    h.read_ok(0, 10);
    h.read_ok(2, 12);
    h.read_ok(3, 10);
    let rounds = u64::from(ReaderSettings::default().read_rounds_max);
    let mut elapsed = 0;
    for round in 1..=rounds {
        assert_eq!(h.reads_of(1), vec![11], "round {round}");
        h.refuse(1, 11, Status::Corrupt);
        h.answer_read(1, 12, Err(TransportFailure::Timeout));
        if round < rounds {
            let backoff = (100 << (round - 1)).min(2000);
            assert_eq!(h.reader.next_deadline(), Some(h.now + Duration::from_millis(backoff)));
            h.tick(elapsed + backoff - 1);
            assert!(h.reads_of(1).is_empty(), "not before the backoff");
            elapsed += backoff;
            h.tick(elapsed);
        }
    }
    assert_eq!(h.delivered(), vec![0]);
    assert_eq!(h.failures, vec![ReaderError::Unreadable { entry: 1, rounds: rounds as u32 }]);
    assert_eq!(h.reader.stats().retry_rounds, rounds - 1);
    assert_eq!(h.bad, vec![(1, 11); rounds as usize]);
    assert_eq!(h.reader.next_entry(), 1, "a new reader resumes here");
    let sent = h.sent.len();
    h.tick(60_000);
    assert_eq!((h.sent.len(), h.after_stop, h.reader.next_deadline()), (sent, 0, None));
}

/// Duplicates, answers after the entry was read, and made-up tags change nothing and are
/// counted.
#[test]
fn duplicate_and_stale_answers_are_ignored() {
    let mut h = Harness::new((3, 3, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(1) });
    h.tick(50);
    let raw = h.pending(|r| matches!(r, Request::Read { entry: 0, .. }))[0].0;
    let read = |entry| Ok(Response::Read { segment: SEGMENT, entry, payload: stored(entry) });
    h.respond(raw, read(0));
    h.respond(raw, read(0));
    h.respond(raw, Ok(Response::refused(2, Status::Corrupt, "")));
    h.read_ok(0, 11);
    h.reader.on_response(Tag::from_raw(1 << 40), read(1), h.now);
    h.reader.on_response(Tag::from_raw(u64::MAX), Err(TransportFailure::Other), h.now);
    h.pump();
    assert_eq!(h.delivered(), vec![0]);
    assert!(h.bad.is_empty(), "a stale Corrupt is not reported");
    let stats = h.reader.stats();
    assert_eq!((stats.stale_answers, stats.unknown_answers), (3, 2));
    h.read_ok(1, 11);
    assert_eq!((h.delivered(), h.ends), (vec![0, 1], 1));
}

/// Reads stop at `read_ahead_entries` held and at `read_ahead_bytes`, and resume as delivered
/// entries are consumed (R4).
#[test]
fn read_ahead_is_bounded_until_consumed() {
    let bounded = ReaderSettings { read_ahead_entries: 4, read_ahead_bytes: 10, ..settings() };
    let end = SegmentEnd::Closed { last_entry: Some(99) };
    let mut h = Harness::with((3, 2, 2), &[(0, &[10, 11, 12])], 0, end, bounded);
    h.auto_consume = false;
    assert_eq!(h.sent.len(), 4);
    for entry in 0..4 {
        h.read_ok(entry, 10 + (entry % 3) as u32);
    }
    assert_eq!(h.delivered(), vec![0, 1, 2, 3]);
    assert_eq!((h.reader.held_entries(), h.reader.held_bytes(), h.sent.len()), (4, 28, 4));
    h.reader.consumed(1, h.now);
    h.pump();
    assert_eq!((h.reader.held_entries(), h.reader.held_bytes()), (2, 14));
    assert_eq!(h.sent.len(), 4, "room for 2 entries, but 14 bytes held: the bytes bound waits");
    h.reader.consumed(3, h.now);
    h.pump();
    assert_eq!((h.sent.len(), h.reader.held_entries(), h.reader.held_bytes()), (8, 4, 0));
    assert!(h.reader.requests_in_flight() <= 4 * 2);
}

/// Catch-up with E == Qw: READ_RANGE for runs within the window; a short answer continues
/// from the entry after the last returned; a failed or silent range gives its first entry to a
/// READ of another bookie and the rest to the next range; short runs are read one by one.
#[test]
fn catch_up_with_read_range() {
    let ranges = ReaderSettings {
        read_ahead_entries: 8,
        range_read_entries_min: Some(4),
        ranges_in_flight: 1,
        ..settings()
    };
    let end = SegmentEnd::Closed { last_entry: Some(17) };
    let mut h = Harness::with((3, 3, 2), &[(0, &[10, 11, 12])], 0, end, ranges);
    let range = |first, last| Request::ReadRange { segment: SEGMENT, first, last, max_bytes: 16 << 20 };
    let answer = |first: u64, last: u64| {
        Ok(Response::ReadRange { entries: (first..=last).map(|entry| (entry, stored(entry))).collect() })
    };
    let first = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert_eq!(first.iter().map(|p| p.2.clone()).collect::<Vec<_>>(), vec![range(0, 7)]);
    h.respond(first[0].0, answer(0, 4));
    assert_eq!(h.delivered(), vec![0, 1, 2, 3, 4]);
    assert_eq!(h.reader.stats().short_ranges, 1);
    let second = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert_eq!(second[0].2, range(5, 12));
    assert_ne!(second[0].1, first[0].1, "ranges rotate over the bookies");
    h.respond(second[0].0, Err(TransportFailure::Disconnected));
    let reads = h.reads_of(5);
    assert_eq!(reads.len(), 1);
    assert_ne!(reads[0], second[0].1, "the failed range's bookie counts as asked");
    let third = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert_eq!(third[0].2, range(6, 12));
    // No answer within range_read_timeout: entry 6 is read alone, 7..=12 by another range.
    h.tick(1000);
    assert_eq!(h.reads_of(6).len(), 1);
    let fourth = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert_eq!(fourth.len(), 2, "the given-up range and the next one");
    assert_eq!(fourth[1].2, range(7, 12));
    let fourth = fourth[1].0;
    h.respond(third[0].0, answer(6, 12));
    assert_eq!(h.reader.stats().stale_answers, 1);
    h.read_ok(5, reads[0]);
    let reader_of_6 = h.reads_of(6)[0];
    h.read_ok(6, reader_of_6);
    h.respond(fourth, answer(7, 12));
    // 13..=17: five entries left, a range of them.
    let fifth = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert_eq!(fifth[0].2, range(13, 17));
    h.respond(fifth[0].0, answer(13, 17));
    assert_eq!(h.delivered(), (0..=17).collect::<Vec<_>>());
    assert_eq!(h.ends, 1);
    assert_eq!(h.reader.stats().failed_ranges, 2);
}

/// Malformed setups and contradicting metadata are refused with nothing changed.
#[test]
fn setup_and_metadata_errors() {
    let quorum = QuorumSizes::new(3, 2, 2).expect("valid");
    let open = SegmentEnd::Open { last_add_confirmed: Some(3) };
    let new = |list: &[(u64, &[u32])], settings| {
        SegmentReader::new(SEGMENT, quorum, ensembles(list), 0, open, settings, base()).map(|_| ())
    };
    assert_eq!(new(&[], settings()), Err(SetupError::NoEnsemble));
    assert_eq!(new(&[(1, &[10, 11, 12])], settings()), Err(SetupError::FirstEnsemble(1)));
    let short = SetupError::EnsembleSize { first_entry: 0, expected: 3, actual: 2 };
    assert_eq!(new(&[(0, &[10, 11])], settings()), Err(short));
    assert_eq!(new(&[(0, &[10, 11, 10])], settings()), Err(SetupError::DuplicateBookie { first_entry: 0 }));
    let zero = ReaderSettings { read_ahead_entries: 0, ..settings() };
    assert_eq!(new(&[(0, &[10, 11, 12])], zero), Err(SetupError::Zero("read_ahead_entries")));
    let wide = ReaderSettings { range_read_entries_min: Some(65), ..settings() };
    assert_eq!(new(&[(0, &[10, 11, 12])], wide), Err(SetupError::RangeOverWindow { min: 65, window: 64 }));
    let list: &[(u64, &[u32])] = &[(0, &[10, 11, 12])];
    let mut h = Harness::new((3, 2, 2), list, open);
    let closed = |last_entry| SegmentEnd::Closed { last_entry };
    let before = SetupError::EndBeforeLastAddConfirmed { last_entry: Some(2), last_add_confirmed: 3 };
    assert_eq!(h.reader.on_metadata(ensembles(list), closed(Some(2)), h.now), Err(before));
    assert_eq!(h.reader.end(), open);
    h.reader.on_metadata(ensembles(list), closed(Some(4)), h.now).expect("a close past the LAC");
    let changed = SetupError::EndChanged { was: Some(4), now: Some(5) };
    assert_eq!(h.reader.on_metadata(ensembles(list), closed(Some(5)), h.now), Err(changed));
    assert_eq!(h.reader.on_metadata(ensembles(list), open, h.now), Err(SetupError::Reopened));
}

/// How the proptest's bookies answer one request.
#[derive(Clone, Copy, Debug)]
enum How {
    /// As their stored data says.
    Truth,
    /// As their data says, twice.
    Twice,
    Lost(TransportFailure),
    Refused(Status),
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Answer(usize, How),
    Tick(u64),
    Consume,
    /// The writer's LAC grows by this much; the shell tells the reader if the flag is set.
    Advance(u64, bool),
    Close,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let how = prop_oneof![
        8 => Just(How::Truth),
        1 => Just(How::Twice),
        1 => prop::sample::select(vec![TransportFailure::Timeout, TransportFailure::Disconnected])
            .prop_map(How::Lost),
        1 => prop::sample::select(vec![Status::Internal, Status::Overloaded]).prop_map(How::Refused),
    ];
    prop_oneof![
        10 => (any::<usize>(), how).prop_map(|(pick, how)| Step::Answer(pick, how)),
        3 => (0u64..300).prop_map(Step::Tick),
        3 => Just(Step::Consume),
        2 => (1u64..4, any::<bool>()).prop_map(|(by, tell)| Step::Advance(by, tell)),
        1 => Just(Step::Close),
    ]
}

/// What the bookies store and what the writer has confirmed.
struct World {
    written: u64,
    /// Per (entry, bookie): 0 missing, 1 `Corrupt`, 2 a flipped bit, 3 the next entry's
    /// envelope, anything else held (`HELD`).
    fates: Vec<u8>,
    writer_lac: Option<u64>,
    closed: bool,
    /// The largest end the reader was told by anyone (R2's bound).
    told: Option<u64>,
}

/// The first fate of a replica that holds the entry intact.
const HELD: u8 = 4;

impl World {
    fn fate(&self, entry: u64, bookie: u32) -> u8 {
        if entry >= self.written {
            return 0;
        }
        self.fates[(entry as usize * 7 + bookie as usize) % self.fates.len()] % 7
    }

    /// The bytes a bookie with fate 2 or more sends for `entry`: only `HELD` ones check.
    fn bytes(fate: u8, entry: u64) -> Bytes {
        match fate {
            2 => damaged(entry),
            3 => stored(entry + 1),
            _ => stored(entry),
        }
    }

    fn tell(&mut self, lac: Option<u64>) -> Option<u64> {
        self.told = self.told.max(lac);
        lac
    }

    fn refusal(fate: u8) -> Response {
        let status = if fate == 1 { Status::Corrupt } else { Status::NoSuchEntry };
        Response::refused(2, status, "")
    }

    fn answer(&mut self, bookie: u32, request: &Request) -> Response {
        match *request {
            Request::Read { entry, .. } => match self.fate(entry, bookie) {
                fate @ (0 | 1) => World::refusal(fate),
                fate => Response::Read { segment: SEGMENT, entry, payload: World::bytes(fate, entry) },
            },
            Request::ReadRange { first, last, max_bytes, .. } => {
                let mut entries: Vec<(u64, Bytes)> = Vec::new();
                let mut bytes = 0;
                for entry in first..=last {
                    // The bookie does not know its bytes are bad: it sends them like good ones.
                    let data = World::bytes(self.fate(entry, bookie), entry);
                    let fits = entries.is_empty() || bytes + data.len() <= max_bytes as usize;
                    if self.fate(entry, bookie) < 2 || !fits {
                        break;
                    }
                    bytes += data.len();
                    entries.push((entry, data));
                }
                if entries.is_empty() {
                    return World::refusal(self.fate(first, bookie));
                }
                Response::ReadRange { entries }
            }
            Request::LongPoll { known, .. } => {
                let lac = self.tell(self.writer_lac);
                let next = known.map_or(0, |k| k + 1);
                let fate = self.fate(next, bookie);
                let entry = (lac > known && fate >= 2).then(|| (next, World::bytes(fate, next)));
                Response::LongPoll { last_add_confirmed: lac, entry }
            }
            Request::ReadLastAddConfirmed { .. } => {
                Response::ReadLastAddConfirmed { last_add_confirmed: self.tell(self.writer_lac) }
            }
            ref other => panic!("the reader sent {other:?}"),
        }
    }
}

fn sizes_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..=4).prop_flat_map(|e| (Just(e), 1..=e)).prop_flat_map(|(e, qw)| (Just(e), Just(qw), 1..=qw))
}

fn settings_strategy() -> impl Strategy<Value = ReaderSettings> {
    (1usize..6, 8u64..40, 1u32..=3, any::<bool>()).prop_flat_map(|(window, bytes, rounds, ranges)| {
        (1..=window).prop_map(move |min| ReaderSettings {
            read_ahead_entries: window,
            read_ahead_bytes: bytes,
            read_rounds_max: rounds,
            range_read_entries_min: ranges.then_some(min),
            ..settings()
        })
    })
}

proptest! {
    /// Any answer order, failures, duplicates, ticks, LAC growth and a close: R1 (in order,
    /// once, nothing after the end), R2 (nothing read or delivered past what the reader was
    /// told), R3, R4 and R5 (an end only after every entry, an error only in its entry's place)
    /// hold; the reader never gets stuck; and with no failure injected and a held replica of
    /// every entry, it reads to the end.
    #[test]
    fn random_answers_keep_the_invariants(
        sizes in sizes_strategy(),
        settings in settings_strategy(),
        written in 0u64..12,
        first_entry in 0u64..6,
        split in 1u64..12,
        open in any::<bool>(),
        start_lac in any::<u64>(),
        fates in prop::collection::vec(any::<u8>(), 1..40),
        steps in prop::collection::vec(step_strategy(), 0..150),
    ) {
        let e = sizes.0;
        let first: Vec<u32> = (10..10 + e as u32).collect();
        let mut second = first.clone();
        second[split as usize % e] = 100;
        let list: Vec<(u64, &[u32])> = vec![(0, &first), (split, &second)];
        let last = written.checked_sub(1);
        let lac = last.and_then(|last| (start_lac % (last + 2)).checked_sub(1));
        let (end, writer_lac) = if open {
            (SegmentEnd::Open { last_add_confirmed: lac.filter(|_| start_lac % 3 > 0) }, lac)
        } else {
            (SegmentEnd::Closed { last_entry: last }, last)
        };
        let mut world = World { written, fates, writer_lac, closed: !open, told: None };
        world.told = match end {
            SegmentEnd::Open { last_add_confirmed } => last_add_confirmed,
            SegmentEnd::Closed { last_entry } => last_entry,
        };
        let mut h = Harness::with(sizes, &list, first_entry, end, settings);
        h.auto_consume = false;
        let mut faults = false;
        let (mut sent_checked, mut entries_checked) = (0, 0);
        let mut check = |h: &Harness, world: &World| -> Result<(), TestCaseError> {
            for (_, request) in &h.sent[sent_checked..] {
                match request {
                    Request::Read { entry, .. } | Request::ReadRange { last: entry, .. } => {
                        prop_assert!(Some(*entry) <= world.told, "R2: {:?} past {:?}", request, world.told);
                    }
                    _ => {}
                }
            }
            for (i, (entry, bytes)) in h.entries.iter().enumerate().skip(entries_checked) {
                prop_assert_eq!(*entry, first_entry + i as u64, "R1/R5: in order, no gap");
                prop_assert!(Some(*entry) <= world.told, "R2: entry {} past {:?}", entry, world.told);
                prop_assert_eq!(bytes, &payload(*entry));
            }
            (sent_checked, entries_checked) = (h.sent.len(), h.entries.len());
            prop_assert!(h.reader.held_entries() <= settings.read_ahead_entries, "R4");
            prop_assert!(h.reader.requests_in_flight() <= settings.read_ahead_entries * sizes.1 + 2 + e);
            prop_assert!(h.lacs.windows(2).all(|w| w[0] < w[1]), "R3: {:?}", h.lacs);
            prop_assert!(h.ends + h.failures.len() <= 1 && h.after_stop == 0, "R1");
            Ok(())
        };
        for step in steps {
            match step {
                Step::Answer(pick, how) if !h.in_flight.is_empty() => {
                    let index = pick % h.in_flight.len();
                    let (&raw, (bookie, request)) = h.in_flight.iter().nth(index).unwrap();
                    let (bookie, request) = (*bookie, request.clone());
                    let response = match how {
                        How::Truth | How::Twice => Ok(world.answer(bookie, &request)),
                        How::Lost(failure) => Err(failure),
                        How::Refused(status) => Ok(Response::refused(2, status, "")),
                    };
                    faults |= matches!(how, How::Lost(_) | How::Refused(_));
                    h.respond(raw, response.clone());
                    if matches!(how, How::Twice) {
                        h.respond(raw, response);
                    }
                }
                Step::Answer(..) => {}
                Step::Tick(ms) => {
                    h.now += Duration::from_millis(ms);
                    h.reader.on_tick(h.now);
                    h.pump();
                }
                Step::Consume => {
                    if let Some((last, _)) = h.entries.last() {
                        h.reader.consumed(*last, h.now);
                        h.pump();
                    }
                }
                Step::Advance(by, tell) if open && !world.closed => {
                    world.writer_lac = last.min(Some(world.writer_lac.map_or(by - 1, |lac| lac + by)));
                    if tell && let Some(lac) = world.tell(world.writer_lac) {
                        h.reader.on_last_add_confirmed(lac, h.now);
                        h.pump();
                    }
                }
                Step::Advance(..) => {}
                Step::Close => {
                    if open && !world.closed {
                        world.closed = true;
                        world.written = world.writer_lac.map_or(0, |lac| lac + 1);
                        world.tell(world.writer_lac);
                        let end = SegmentEnd::Closed { last_entry: world.writer_lac };
                        prop_assert_eq!(h.reader.on_metadata(ensembles(&list), end, h.now), Ok(()));
                        h.pump();
                    }
                }
            }
            check(&h, &world)?;
        }
        // Drain: close, answer everything truthfully, consume, follow the deadlines.
        if open && !world.closed {
            world.closed = true;
            world.written = world.writer_lac.map_or(0, |lac| lac + 1);
            world.tell(world.writer_lac);
            let end = SegmentEnd::Closed { last_entry: world.writer_lac };
            prop_assert_eq!(h.reader.on_metadata(ensembles(&list), end, h.now), Ok(()));
            h.pump();
        }
        for _ in 0..10_000 {
            if h.ends + h.failures.len() > 0 {
                break;
            }
            if let Some((last, _)) = h.entries.last() {
                h.reader.consumed(*last, h.now);
                h.pump();
            }
            if let Some((&raw, &(bookie, ref request))) = h.in_flight.iter().next() {
                let request = request.clone();
                let response = world.answer(bookie, &request);
                h.respond(raw, Ok(response));
            } else if let Some(deadline) = h.reader.next_deadline() {
                h.now = h.now.max(deadline);
                h.reader.on_tick(h.now);
                h.pump();
            } else {
                prop_assert!(false, "stuck: nothing in flight, no deadline, not ended");
            }
            check(&h, &world)?;
        }
        prop_assert_eq!(h.ends + h.failures.len(), 1, "the reader ends or fails");
        let delivered = h.delivered();
        let expected: Vec<u64> = (first_entry..world.writer_lac.map_or(0, |lac| lac + 1)).collect();
        if h.ends == 1 {
            prop_assert_eq!(&delivered, &expected, "End only after every entry");
        } else {
            let next = first_entry + delivered.len() as u64;
            let unreadable = ReaderError::Unreadable { entry: next, rounds: settings.read_rounds_max };
            prop_assert_eq!(&h.failures, &vec![unreadable]);
            // With no fault injected, only an entry no member holds is unreadable.
            let ensemble = if next >= split { &second } else { &first };
            let quorum = QuorumSizes::new(sizes.0, sizes.1, sizes.2).unwrap();
            let held = quorum.write_set(next).iter().any(|i| world.fate(next, ensemble[i]) >= HELD);
            prop_assert!(faults || !held, "entry {} has a replica but was unreadable", next);
        }
        h.reads_hit_write_sets();
        for (entry, bookie) in &h.bad {
            let fate = world.fate(*entry, *bookie);
            prop_assert!((1..HELD).contains(&fate), "R7: good replica {} of {} reported", bookie, entry);
        }
    }
}

/// Catch-up keeps two READ_RANGEs in flight, each within half the window and half the bytes
/// (R4); answers taken in any order are delivered in entry order; a short answer before a later
/// range has its rest asked again at once as a range of its own, in its place.
#[test]
fn two_ranges_in_flight_deliver_in_order() {
    let ranges = ReaderSettings { read_ahead_entries: 16, range_read_entries_min: Some(4), ..settings() };
    let end = SegmentEnd::Closed { last_entry: Some(15) };
    let mut h = Harness::with((3, 3, 2), &[(0, &[10, 11, 12])], 0, end, ranges);
    let range = |first, last| Request::ReadRange { segment: SEGMENT, first, last, max_bytes: 8 << 20 };
    let answer = |first: u64, last: u64| {
        Ok(Response::ReadRange { entries: (first..=last).map(|entry| (entry, stored(entry))).collect() })
    };
    let sent = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert_eq!(sent.iter().map(|p| p.2.clone()).collect::<Vec<_>>(), vec![range(0, 7), range(8, 15)]);
    assert_ne!(sent[0].1, sent[1].1, "on two bookies");
    h.respond(sent[1].0, answer(8, 15));
    assert!(h.delivered().is_empty(), "nothing before entry 0");
    h.respond(sent[0].0, answer(0, 5));
    assert_eq!(h.delivered(), (0..=5).collect::<Vec<_>>());
    // The rest is asked again as a range in its place, within what the first had reserved.
    let rest = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert!(matches!(rest[..], [(_, _, Request::ReadRange { first: 6, last: 7, .. })]), "{rest:?}");
    assert!(h.reads_of(6).is_empty() && h.reads_of(7).is_empty(), "not entry by entry");
    h.respond(rest[0].0, answer(6, 7));
    assert_eq!(h.entries.iter().map(|(e, _)| *e).collect::<Vec<_>>(), (0..=15).collect::<Vec<_>>());
    assert_eq!(h.ends, 1);
}
