//! R7: the reader delivers only entries whose envelope checks, as the caller's payload; bytes
//! that do not check (a flipped bit, another entry's or segment's envelope) from READ,
//! READ_RANGE or LONG_POLL count as a `Corrupt` answer of that bookie.

use bytes::Bytes;
use dlog_protocol::{Request, Response};
use dlog_replication::entry_envelope;
use dlog_replication::segment_reader::{ReaderError, ReaderSettings, SegmentEnd};

use crate::harness::{Harness, SEGMENT, damaged, payload, settings, stored};

fn read(entry: u64, bytes: Bytes) -> Response {
    Response::Read { segment: SEGMENT, entry, payload: bytes }
}

/// A flipped bit: `BadReplica`, the next member asked at once, the right payload delivered.
#[test]
fn flipped_bit_is_a_bad_replica_and_the_next_is_asked() {
    let mut h = Harness::new((3, 3, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(0) });
    h.answer_read(0, 10, Ok(read(0, damaged(0))));
    assert!(h.entries.is_empty(), "bad bytes are never delivered");
    assert_eq!(h.bad, vec![(0, 10)]);
    assert_eq!(h.reads_of(0), vec![11]);
    h.read_ok(0, 11);
    assert_eq!((h.entries.clone(), h.ends), (vec![(0, payload(0))], 1));
    let stats = h.reader.stats();
    assert_eq!((stats.corrupt_replies, stats.bad_envelopes, stats.read_failures), (1, 1, 0));
    // The bad bookie is asked last from now on: W(0) starts at 10, but 11 goes first.
    let mut h = Harness::new((3, 3, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(3) });
    h.answer_read(0, 10, Ok(read(0, damaged(0))));
    assert_eq!(h.reads_of(3), vec![10], "W(3) was asked before 10 went bad");
}

/// Another entry's (or segment's) valid envelope, under the right entry id: refused like a
/// corrupt replica; when every member sends bad bytes the entry is `Unreadable`, not absent.
#[test]
fn another_entrys_envelope_is_refused() {
    let mut h = Harness::new((3, 3, 2), &[(0, &[10, 11, 12])], SegmentEnd::Closed { last_entry: Some(1) });
    h.read_ok(0, 10);
    h.answer_read(1, 11, Ok(read(1, stored(0))));
    assert_eq!(h.bad, vec![(1, 11)]);
    let other_segment = entry_envelope::encode(SEGMENT + 1, 1, 14, &payload(1));
    h.answer_read(1, 12, Ok(read(1, other_segment)));
    assert_eq!(h.bad, vec![(1, 11), (1, 12)]);
    assert_eq!(h.reads_of(1), vec![10]);
    h.read_ok(1, 10);
    assert_eq!(h.entries, vec![(0, payload(0)), (1, payload(1))]);
    assert_eq!((h.ends, h.reader.stats().bad_envelopes), (1, 2));

    let once = ReaderSettings { read_rounds_max: 1, ..settings() };
    let end = SegmentEnd::Closed { last_entry: Some(0) };
    let mut h = Harness::with((3, 3, 2), &[(0, &[10, 11, 12])], 0, end, once);
    h.answer_read(0, 10, Ok(read(0, stored(1))));
    h.answer_read(0, 11, Ok(read(0, damaged(0))));
    h.answer_read(0, 12, Ok(read(0, Bytes::from_static(b"short"))));
    assert!(h.entries.is_empty());
    assert_eq!(h.failures, vec![ReaderError::Unreadable { entry: 0, rounds: 1 }]);
    assert_eq!((h.bad.len(), h.reader.stats().missing_replies, h.ends), (3, 0, 0));
}

/// READ_RANGE with a damaged entry in the middle: the good prefix is delivered, the damaged
/// entry is a bad replica of that bookie and is read on its own from another, the rest by the
/// next range.
#[test]
fn read_range_with_a_damaged_entry_in_the_middle() {
    let ranges = ReaderSettings {
        read_ahead_entries: 8,
        range_read_entries_min: Some(4),
        ranges_in_flight: 1,
        ..settings()
    };
    let end = SegmentEnd::Closed { last_entry: Some(7) };
    let mut h = Harness::with((3, 3, 2), &[(0, &[10, 11, 12])], 0, end, ranges);
    let range = |first, last| Request::ReadRange { segment: SEGMENT, first, last, max_bytes: 16 << 20 };
    let first = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert_eq!(first.iter().map(|p| p.2.clone()).collect::<Vec<_>>(), vec![range(0, 7)]);
    let bookie = first[0].1;
    let entries = (0..=7).map(|entry| (entry, if entry == 3 { damaged(3) } else { stored(entry) }));
    h.respond(first[0].0, Ok(Response::ReadRange { entries: entries.collect() }));
    assert_eq!(h.entries, (0..3).map(|entry| (entry, payload(entry))).collect::<Vec<_>>());
    assert_eq!(h.bad, vec![(3, bookie)]);
    let reads = h.reads_of(3);
    assert_eq!(reads.len(), 1);
    assert_ne!(reads[0], bookie, "the range's bookie counts as asked");
    let second = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    assert!(matches!(second[..], [(_, _, Request::ReadRange { first: 4, last: 7, .. })]));
    assert_ne!(second[0].1, bookie, "the bad bookie is asked last");
    h.read_ok(3, reads[0]);
    let rest = (4..=7).map(|entry| (entry, stored(entry))).collect();
    h.respond(second[0].0, Ok(Response::ReadRange { entries: rest }));
    assert_eq!(h.entries, (0..=7).map(|entry| (entry, payload(entry))).collect::<Vec<_>>());
    assert_eq!(h.ends, 1);
    let stats = h.reader.stats();
    assert_eq!((stats.short_ranges, stats.failed_ranges, stats.corrupt_replies), (1, 0, 1));
    // A damaged first entry: nothing usable, the range failed, and the entry is read alone.
    let ranges = ReaderSettings { read_ahead_entries: 4, range_read_entries_min: Some(4), ..settings() };
    let end = SegmentEnd::Closed { last_entry: Some(3) };
    let mut h = Harness::with((3, 3, 2), &[(0, &[10, 11, 12])], 0, end, ranges);
    let first = h.pending(|r| matches!(r, Request::ReadRange { .. }));
    let entries = (0..=3).map(|entry| (entry, if entry == 0 { damaged(0) } else { stored(entry) }));
    h.respond(first[0].0, Ok(Response::ReadRange { entries: entries.collect() }));
    assert!(h.entries.is_empty());
    assert_eq!((h.bad.clone(), h.reader.stats().failed_ranges), (vec![(0, first[0].1)], 1));
    assert_eq!(h.reads_of(0).len(), 1);
    assert_ne!(h.reads_of(0)[0], first[0].1);
}

/// A LONG_POLL's piggybacked entry that does not check is not taken: `BadReplica`, and the
/// entry is read from the other member of its write set; the LAC still advances.
#[test]
fn damaged_piggybacked_entry_is_read_elsewhere() {
    let end = SegmentEnd::Open { last_add_confirmed: Some(3) };
    let mut h = Harness::with((3, 2, 2), &[(0, &[10, 11, 12])], 10, end, settings());
    let polls = h.polls();
    assert_eq!(polls[0].1, 11);
    let entry = Some((10, damaged(10)));
    h.respond(polls[0].0, Ok(Response::LongPoll { last_add_confirmed: Some(10), entry }));
    assert!(h.entries.is_empty());
    assert_eq!((h.bad.clone(), h.lacs.clone()), (vec![(10, 11)], vec![10]));
    // W(10) = [11, 12]: 11 sent bad bytes, 12 is asked first.
    assert_eq!(h.reads_of(10), vec![12]);
    h.read_ok(10, 12);
    assert_eq!(h.entries, vec![(10, payload(10))]);
    let stats = h.reader.stats();
    assert_eq!((stats.piggybacked_entries, stats.bad_envelopes, stats.corrupt_replies), (0, 1, 1));
}
