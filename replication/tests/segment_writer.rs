//! `SegmentWriter` driven by a scripted harness that plays the bookies: every `Output::Send` is
//! kept as a request in flight, and each test answers the ones it wants, in the order it wants,
//! with an ack, a refusal or a transport failure. Time is a base `Instant` plus offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_protocol::{Request, Response, Status};
use dlog_replication::quorum::{BookieSet, QuorumSizes};
use dlog_replication::segment_writer::{
    EnsembleChangeError, Output, SegmentWriter, Tag, TagKind, TransportFailure, WriterError, WriterSettings,
};
use proptest::prelude::*;

const SEGMENT: u64 = 7;
const FLUSH: Duration = Duration::from_millis(1);
const RETRY: Duration = Duration::from_millis(2);

#[expect(clippy::disallowed_methods, reason = "a base instant for the test clock")]
fn base() -> Instant {
    Instant::now()
}

struct Harness {
    writer: SegmentWriter<u32>,
    t0: Instant,
    /// Requests sent and not answered yet, by tag: the ensemble index, the bookie it went to,
    /// the request. (A request re-sent to a replacement overwrites the replaced one's.)
    in_flight: BTreeMap<u64, (usize, u32, Request)>,
    /// Every Send seen.
    sent: Vec<(usize, Tag, Request)>,
    completed: Vec<(u64, Result<(), WriterError>)>,
    lacs: Vec<u64>,
    failed: Vec<(usize, u64)>,
    close_requests: Vec<(Option<u64>, u64)>,
    closed: Vec<Result<(), WriterError>>,
    /// Every `ChangeEnsemble`; `pending_change` is the one not answered yet.
    changes: Vec<(u64, BookieSet)>,
    pending_change: Option<(u64, BookieSet)>,
    /// The ensembles as the metadata would hold them after the changes answered `Ok`.
    ensembles: BTreeMap<u64, Vec<u32>>,
    next_bookie: u32,
}

impl Harness {
    fn new(e: usize, qw: usize, qa: usize) -> Harness {
        Harness::with_settings(
            e,
            qw,
            qa,
            WriterSettings {
                lac_flush_delay: FLUSH,
                ensemble_change_retry: RETRY,
                ..WriterSettings::default()
            },
        )
    }

    fn with_settings(e: usize, qw: usize, qa: usize, settings: WriterSettings) -> Harness {
        let t0 = base();
        let quorum = QuorumSizes::new(e, qw, qa).expect("valid sizes");
        let ensemble: Vec<u32> = (0..e as u32).collect();
        let writer =
            SegmentWriter::new(SEGMENT, Bytes::from_static(b"key"), quorum, ensemble.clone(), settings, t0)
                .expect("valid writer");
        Harness {
            writer,
            t0,
            in_flight: BTreeMap::new(),
            sent: Vec::new(),
            completed: Vec::new(),
            lacs: Vec::new(),
            failed: Vec::new(),
            close_requests: Vec::new(),
            closed: Vec::new(),
            changes: Vec::new(),
            pending_change: None,
            ensembles: BTreeMap::from([(0, ensemble)]),
            next_bookie: 100,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn pump(&mut self) {
        while let Some(output) = self.writer.poll_output() {
            match output {
                Output::Send { bookie_index, tag, request } => {
                    assert_eq!(tag.bookie_index(), bookie_index);
                    let bookie = match &request {
                        Request::Add { entry, .. } => self.writer.ensemble_of(*entry)[bookie_index],
                        Request::WriteLastAddConfirmed { .. } => self.writer.ensemble()[bookie_index],
                        other => panic!("the writer sent {other:?}"),
                    };
                    self.in_flight.insert(tag.raw(), (bookie_index, bookie, request.clone()));
                    self.sent.push((bookie_index, tag, request));
                }
                Output::Completed { entry, result } => self.completed.push((entry, result)),
                Output::LastAddConfirmed(lac) => self.lacs.push(lac),
                Output::BookieFailed { bookie_index, entry } => self.failed.push((bookie_index, entry)),
                Output::CloseRequested { last_entry, length } => {
                    self.close_requests.push((last_entry, length))
                }
                Output::Closed(result) => self.closed.push(result),
                Output::ChangeEnsemble { first_entry, replace } => {
                    assert!(self.pending_change.is_none(), "W7: one change in flight");
                    self.changes.push((first_entry, replace));
                    self.pending_change = Some((first_entry, replace));
                }
            }
        }
    }

    fn add(&mut self, payload: &'static [u8]) -> Result<u64, WriterError> {
        let result = self.writer.add(Bytes::from_static(payload), self.t0);
        self.pump();
        result
    }

    fn adds(&mut self, count: usize) {
        for _ in 0..count {
            self.add(b"entry").expect("room in the window");
        }
    }

    fn tag(kind: TagKind, entry: u64, bookie: usize) -> Tag {
        // The layout is documented on `Tag`; tests rebuild it to answer a given request.
        let kind_bit = if kind == TagKind::Add { 0 } else { 1 << 62 };
        Tag::from_raw(entry | (bookie as u64) << 56 | kind_bit)
    }

    /// Answers the request `(kind, entry, bookie)` with `result` (whether or not in flight).
    fn answer(
        &mut self,
        kind: TagKind,
        entry: u64,
        bookie: usize,
        result: Result<Response, TransportFailure>,
    ) {
        let tag = Self::tag(kind, entry, bookie);
        let from = match self.in_flight.remove(&tag.raw()) {
            Some((_, from, _)) => from,
            None => self.writer.ensemble_of(entry)[bookie],
        };
        self.writer.on_response(tag, &from, result, self.t0);
        self.pump();
    }

    /// Answers the pending `ChangeEnsemble` with a new ensemble: fresh bookies at the replaced
    /// indexes. Returns it.
    fn change_ok(&mut self) -> Vec<u32> {
        let (first, replace) = self.pending_change.take().expect("a change in flight");
        let mut ensemble = self.writer.ensemble().to_vec();
        for index in replace.iter() {
            ensemble[index] = self.next_bookie;
            self.next_bookie += 1;
        }
        let _ = self.ensembles.split_off(&first);
        self.ensembles.insert(first, ensemble.clone());
        self.writer.on_ensemble_changed(Ok(ensemble.clone()), self.t0);
        self.pump();
        ensemble
    }

    fn change_err(&mut self, error: EnsembleChangeError, now: Instant) {
        self.pending_change.take().expect("a change in flight");
        self.writer.on_ensemble_changed(Err(error), now);
        self.pump();
    }

    fn ack(&mut self, entry: u64, bookie: usize) {
        self.answer(TagKind::Add, entry, bookie, Ok(Response::Add { segment: SEGMENT, entry }));
    }

    fn refuse(&mut self, entry: u64, bookie: usize, status: Status) {
        self.answer(TagKind::Add, entry, bookie, Ok(Response::refused(1, status, "no")));
    }

    fn completed_ok(&self) -> Vec<u64> {
        self.completed.iter().filter(|(_, r)| r.is_ok()).map(|(e, _)| *e).collect()
    }

    fn piggybacked(&self, entry: u64) -> Vec<Option<u64>> {
        self.sent
            .iter()
            .filter_map(|(_, _, r)| match r {
                Request::Add { entry: e, last_add_confirmed, .. } if *e == entry => Some(*last_add_confirmed),
                _ => None,
            })
            .collect()
    }
}

fn order_holds(completed: &[(u64, Result<(), WriterError>)]) {
    for (i, (entry, _)) in completed.iter().enumerate() {
        assert_eq!(*entry, i as u64, "W1: completions in entry order, each once: {completed:?}");
    }
}

/// Acks arriving newest first still complete entries 0..n in order, with E=3 Qw=2 Qa=2.
#[test]
fn out_of_order_acks_complete_in_order_striped() {
    let mut h = Harness::new(3, 2, 2);
    h.adds(4);
    assert_eq!(h.sent.len(), 8);
    for entry in (0..4).rev() {
        for bookie in [(entry as usize) % 3, (entry as usize + 1) % 3] {
            h.ack(entry, bookie);
        }
        if entry > 0 {
            assert!(h.completed.is_empty(), "entry 0 is not acked yet");
        }
    }
    assert_eq!(h.completed_ok(), vec![0, 1, 2, 3]);
    order_holds(&h.completed);
    assert_eq!(h.lacs, vec![3]);
    assert_eq!(h.writer.held_entries(), 0);
}

/// E=3 Qw=3 Qa=2: an entry completes at its second ack, the third is late; acks only from
/// outside the write set never count.
#[test]
fn out_of_order_acks_complete_in_order_qa_below_qw() {
    let mut h = Harness::new(3, 3, 2);
    h.adds(3);
    h.ack(2, 0);
    h.ack(2, 2);
    h.ack(1, 1);
    h.ack(0, 2);
    assert!(h.completed.is_empty());
    h.ack(0, 0);
    assert_eq!(h.completed_ok(), vec![0]);
    h.ack(1, 0);
    assert_eq!(h.completed_ok(), vec![0, 1, 2]);
    assert_eq!(h.lacs, vec![0, 2]);
    h.ack(0, 1);
    assert_eq!(h.writer.stats().late_acks, 1);
    // W3 with a striped ensemble: bookie 2 is not in W(0) for E=3 Qw=2.
    let mut h = Harness::new(3, 2, 1);
    h.adds(1);
    h.ack(0, 2);
    assert!(h.completed.is_empty());
    assert_eq!(h.writer.stats().ignored_responses, 1);
}

/// Each ADD carries the LAC when it was sent; the LAC never moves back.
#[test]
fn lac_is_piggybacked_and_monotonic() {
    let mut h = Harness::new(3, 3, 2);
    h.adds(1);
    assert_eq!(h.piggybacked(0), vec![None; 3]);
    h.ack(0, 0);
    h.ack(0, 1);
    assert_eq!(h.writer.last_add_confirmed(), Some(0));
    h.adds(2);
    assert_eq!(h.piggybacked(1), vec![Some(0); 3]);
    assert_eq!(h.piggybacked(2), vec![Some(0); 3]);
    h.ack(2, 0);
    h.ack(2, 1);
    h.ack(1, 2);
    h.ack(1, 1);
    h.adds(1);
    assert_eq!(h.piggybacked(3), vec![Some(2); 3]);
    // Late acks of old entries do not move anything.
    h.ack(0, 2);
    h.ack(1, 0);
    assert_eq!(h.lacs, vec![0, 2]);
    assert_eq!(h.writer.last_add_confirmed(), Some(2));
}

/// After `lac_flush_delay` without adds, the LAC goes out once as WRITE_LAC to every member of
/// the ensemble; not before, and not again for the same LAC.
#[test]
fn explicit_lac_after_idle() {
    let mut h = Harness::new(3, 2, 2);
    h.adds(2);
    assert_eq!(h.writer.next_deadline(), None, "no LAC yet");
    for (entry, bookie) in [(0, 0), (0, 1), (1, 1), (1, 2)] {
        h.ack(entry, bookie);
    }
    assert_eq!(h.writer.next_deadline(), Some(h.at(1)));
    h.writer.on_tick(h.t0);
    h.pump();
    assert_eq!(h.sent.len(), 4, "not idle long enough");
    h.writer.on_tick(h.at(1));
    h.pump();
    let lac_writes: Vec<_> = h.sent[4..].iter().map(|(b, t, r)| (*b, t.kind(), r.clone())).collect();
    let request = |b| {
        let r = Request::WriteLastAddConfirmed {
            segment: SEGMENT,
            last_add_confirmed: 1,
            master_key: "key".into(),
        };
        (b, Some(TagKind::WriteLastAddConfirmed), r)
    };
    assert_eq!(lac_writes, vec![request(0), request(1), request(2)]);
    assert_eq!(h.writer.next_deadline(), None);
    h.writer.on_tick(h.at(5));
    h.pump();
    assert_eq!(h.sent.len(), 7, "the same LAC is written once");
    h.answer(TagKind::WriteLastAddConfirmed, 1, 1, Ok(Response::WriteLastAddConfirmed));
    h.answer(TagKind::WriteLastAddConfirmed, 1, 2, Err(TransportFailure::Timeout));
    h.answer(TagKind::WriteLastAddConfirmed, 1, 2, Ok(Response::WriteLastAddConfirmed));
    let stats = h.writer.stats();
    assert_eq!((stats.lac_writes, stats.lac_write_failures, stats.ignored_responses), (3, 1, 1));
    // A LAC already piggybacked is not written again.
    h.adds(1);
    h.ack(2, 2);
    h.ack(2, 0);
    h.adds(1);
    assert_eq!(h.piggybacked(3), vec![Some(2); 2]);
    assert_eq!(h.writer.next_deadline(), None);
}

/// The window refuses the entry that would pass either bound, and has room again once
/// entries complete and every request for them was answered.
#[test]
fn window_full() {
    let settings = WriterSettings {
        window_entries_max: 2,
        window_bytes_max: 10,
        lac_flush_delay: FLUSH,
        ensemble_change_retry: RETRY,
        ..WriterSettings::default()
    };
    let mut h = Harness::with_settings(3, 3, 2, settings);
    assert_eq!(h.add(b"0123456789a"), Err(WriterError::EntryTooLarge { bytes: 11, max: 10 }));
    assert_eq!(h.add(b"012345"), Ok(0));
    assert_eq!(h.add(b"01234"), Err(WriterError::WindowFull), "bytes");
    assert_eq!(h.add(b"0123"), Ok(1));
    assert_eq!(h.add(b""), Err(WriterError::WindowFull), "entries");
    h.ack(0, 0);
    h.ack(0, 1);
    assert_eq!(h.completed_ok(), vec![0]);
    assert_eq!(h.add(b""), Err(WriterError::WindowFull), "entry 0 still has a request in flight");
    h.ack(0, 2);
    assert_eq!(h.add(b"0123456"), Err(WriterError::WindowFull), "bytes of entry 1");
    assert_eq!(h.add(b"012345"), Ok(2));
    assert_eq!(h.writer.next_entry(), 3);
}

/// One bookie refuses or times out: the writer replaces it from the first entry not completed,
/// holds completions until the change lands (W7), re-sends to the replacement, and the
/// replaced bookie's later answers count for nothing (W6).
#[test]
fn failed_bookie_is_replaced_and_entries_resent() {
    let mut h = Harness::new(3, 3, 2);
    h.adds(3);
    h.ack(0, 0);
    h.ack(0, 1);
    assert_eq!(h.completed_ok(), vec![0]);
    h.refuse(1, 1, Status::ReadOnly);
    assert_eq!(h.failed, vec![(1, 1)]);
    assert_eq!(h.changes, vec![(1, BookieSet::from_iter([1]))]);
    h.answer(TagKind::Add, 2, 1, Err(TransportFailure::Disconnected));
    assert_eq!(h.changes.len(), 1, "bookie 1 is already being replaced");
    for entry in 1..3 {
        h.ack(entry, 0);
        h.ack(entry, 2);
    }
    assert_eq!(h.completed_ok(), vec![0], "W7: completions wait for the change");
    // A new entry meanwhile goes to the members that did not fail.
    h.adds(1);
    let sent_to: Vec<_> = h.sent.iter().filter(|(_, t, _)| t.entry() == 3).map(|(b, _, _)| *b).collect();
    assert_eq!(sent_to, vec![0, 2]);
    let before = h.sent.len();
    let ensemble = h.change_ok();
    assert_eq!(ensemble, vec![0, 100, 2]);
    // Entries 1, 2 and 3 go to the replacement; 1 and 2 had Qa acks from members kept.
    let resent: Vec<_> = h.sent[before..].iter().map(|(b, t, _)| (*b, t.entry())).collect();
    assert_eq!(resent, vec![(1, 1), (1, 2), (1, 3)]);
    assert_eq!(h.writer.stats().resent_adds, 3);
    assert_eq!(h.completed_ok(), vec![0, 1, 2]);
    // The replaced bookie 1 acks entry 3: ignored; the replacement's ack counts.
    let tag = Harness::tag(TagKind::Add, 3, 1);
    let ignored = h.writer.stats().ignored_responses;
    h.writer.on_response(tag, &1, Ok(Response::Add { segment: SEGMENT, entry: 3 }), h.t0);
    h.pump();
    assert_eq!(h.writer.stats().ignored_responses, ignored + 1);
    assert_eq!(h.completed_ok(), vec![0, 1, 2]);
    h.ack(3, 1);
    h.ack(3, 0);
    assert_eq!(h.completed_ok(), vec![0, 1, 2, 3]);
    assert_eq!(h.writer.ensemble(), &[0, 100, 2]);
    assert_eq!(h.writer.stats().ensemble_changes, 1);
    // Entry 0's late ack from bookie 2 counts as late (its ensemble is the first one).
    h.ack(0, 2);
    assert_eq!(h.writer.stats().late_acks, 1);
}

/// A failure after the entry completed still replaces the bookie (BookKeeper's #1390); from
/// the next entry when the writer is idle.
#[test]
fn failure_after_completion_replaces_the_bookie() {
    let mut h = Harness::new(3, 3, 2);
    h.adds(1);
    h.ack(0, 0);
    h.ack(0, 1);
    h.refuse(0, 2, Status::Internal);
    assert_eq!(h.changes, vec![(1, BookieSet::from_iter([2]))]);
    h.change_ok();
    assert_eq!(h.writer.ensemble(), &[0, 1, 100]);
    h.adds(1);
    h.ack(1, 2);
    h.ack(1, 0);
    assert_eq!(h.completed_ok(), vec![0, 1]);
}

/// A member failing while a change is in flight goes into the next change, from the first
/// entry not completed then.
#[test]
fn failures_during_a_change_make_the_next_change() {
    let mut h = Harness::new(4, 3, 2);
    h.adds(4);
    h.refuse(0, 1, Status::Internal);
    h.answer(TagKind::Add, 1, 2, Err(TransportFailure::Timeout));
    assert_eq!(h.changes, vec![(0, BookieSet::from_iter([1]))]);
    for entry in 0..4 {
        for index in [0, 3] {
            if QuorumSizes::new(4, 3, 2).expect("valid").in_write_set(entry, index) {
                h.ack(entry, index);
            }
        }
    }
    h.change_ok();
    assert_eq!(h.changes.len(), 2);
    assert_eq!(h.changes[1], (0, BookieSet::from_iter([2])), "nothing completed: W(0) lacks acks");
    h.change_ok();
    assert_eq!(h.writer.ensemble(), &[0, 100, 101, 3]);
    for entry in 0..4 {
        for index in [1, 2] {
            h.ack(entry, index);
        }
    }
    assert_eq!(h.completed_ok(), vec![0, 1, 2, 3]);
}

/// The metadata was fenced: the change answers `Fenced` and every pending entry fails with it.
#[test]
fn change_finding_the_segment_fenced_stops_the_writer() {
    let mut h = Harness::new(3, 3, 2);
    h.adds(2);
    h.ack(0, 0);
    h.ack(0, 2);
    h.ack(1, 0);
    h.ack(1, 2);
    h.refuse(0, 1, Status::Internal);
    assert_eq!(h.completed_ok(), vec![0, 1], "completed before the failure");
    h.adds(1);
    h.change_err(EnsembleChangeError::Fenced, h.t0);
    assert_eq!(h.completed.last(), Some(&(2, Err(WriterError::Fenced))));
    assert_eq!(h.add(b"x"), Err(WriterError::Fenced));
}

/// No replacement: the writer goes on with the members it has while entries can reach Qa
/// (E=3 Qw=3 Qa=2 with one bookie down), sends to the failed member again (it may only be
/// slow), and asks for a replacement again after the retry delay when it fails again.
#[test]
fn no_replacement_degrades_then_retries() {
    let mut h = Harness::new(3, 3, 2);
    h.adds(2);
    h.answer(TagKind::Add, 0, 2, Err(TransportFailure::Disconnected));
    h.change_err(EnsembleChangeError::Unavailable("no bookie".into()), h.t0);
    assert_eq!(h.writer.stats().ensemble_change_failures, 1);
    assert_eq!(h.writer.next_deadline(), Some(h.t0 + RETRY));
    for entry in 0..2 {
        h.ack(entry, 0);
        h.ack(entry, 1);
    }
    assert_eq!(h.completed_ok(), vec![0, 1]);
    h.adds(1);
    assert!(h.sent.iter().any(|(b, t, _)| t.entry() == 2 && *b == 2), "the failed member is tried again");
    h.answer(TagKind::Add, 2, 2, Err(TransportFailure::Disconnected));
    h.ack(2, 0);
    h.ack(2, 1);
    assert_eq!(h.completed_ok(), vec![0, 1, 2]);
    assert_eq!(h.changes.len(), 1, "the next change waits for the retry time");
    h.writer.on_tick(h.t0 + RETRY);
    h.pump();
    assert_eq!(h.changes.len(), 2);
    assert_eq!(h.changes[1], (3, BookieSet::from_iter([2])));
    h.change_ok();
    h.adds(1);
    h.ack(3, 2);
    h.ack(3, 0);
    assert_eq!(h.completed_ok(), vec![0, 1, 2, 3]);
}

/// With Qw = Qa, one failure and no replacement, `ensemble_change_attempts_max` times: the
/// entries that cannot reach Qa fail with `QuorumUnreachable`, and every entry after them,
/// while entries before still complete.
#[test]
fn no_replacement_with_qa_unreachable_fails_from_the_stuck_entry() {
    let settings = WriterSettings {
        lac_flush_delay: FLUSH,
        ensemble_change_retry: RETRY,
        ensemble_change_attempts_max: 1,
        ..WriterSettings::default()
    };
    let mut h = Harness::with_settings(3, 2, 2, settings);
    h.adds(4);
    h.ack(1, 1);
    h.ack(1, 2);
    h.ack(3, 0);
    h.ack(3, 1);
    h.answer(TagKind::Add, 2, 2, Err(TransportFailure::Timeout));
    assert_eq!(h.failed, vec![(2, 2)]);
    assert!(h.completed.is_empty(), "entry 0 is still pending");
    h.change_err(EnsembleChangeError::Unavailable("no bookie".into()), h.t0);
    let unreachable = WriterError::QuorumUnreachable { entry: 2, reason: "no bookie".into() };
    assert_eq!(h.add(b"x"), Err(unreachable.clone()));
    assert_eq!(h.writer.close(h.t0), Err(unreachable.clone()));
    h.ack(0, 0);
    h.ack(0, 1);
    let expected = vec![(0, Ok(())), (1, Ok(())), (2, Err(unreachable.clone())), (3, Err(unreachable))];
    assert_eq!(h.completed, expected);
    assert_eq!(h.lacs, vec![1]);
    h.ack(2, 0);
    assert_eq!(h.completed.len(), 4);
}

/// `Fenced` from one bookie: every pending entry fails `Fenced` in order, even those with Qa
/// acks, later acks complete nothing, and adds and close are refused.
#[test]
fn fenced_fails_everything_in_order() {
    let mut h = Harness::new(3, 3, 2);
    h.adds(4);
    h.ack(0, 0);
    h.ack(0, 1);
    h.ack(2, 0);
    h.ack(2, 1);
    h.ack(3, 0);
    assert_eq!(h.completed_ok(), vec![0]);
    h.refuse(1, 2, Status::Fenced);
    let expected: Vec<_> =
        [(0, Ok(()))].into_iter().chain((1..4).map(|e| (e, Err(WriterError::Fenced)))).collect();
    assert_eq!(h.completed, expected);
    h.ack(1, 0);
    h.ack(1, 1);
    h.ack(3, 1);
    assert_eq!(h.completed.len(), 4);
    assert_eq!(h.writer.last_add_confirmed(), Some(0));
    assert_eq!(h.add(b"x"), Err(WriterError::Fenced));
    assert_eq!(h.writer.close(h.t0), Err(WriterError::Fenced));
    assert_eq!(h.writer.next_deadline(), None);
    // WrongMasterKey is just as fatal, and from a WRITE_LAC as well.
    let mut h = Harness::new(3, 3, 2);
    h.adds(2);
    h.ack(0, 0);
    h.ack(0, 1);
    h.writer.on_tick(h.at(1));
    h.pump();
    h.answer(TagKind::WriteLastAddConfirmed, 0, 1, Ok(Response::refused(4, Status::WrongMasterKey, "")));
    assert_eq!(h.completed, vec![(0, Ok(())), (1, Err(WriterError::WrongMasterKey))]);
}

/// Duplicate answers, answers for entries long gone or never sent, and made-up tags change
/// nothing and are counted.
#[test]
fn duplicate_and_stale_responses_are_ignored() {
    let mut h = Harness::new(3, 2, 2);
    h.adds(2);
    h.ack(0, 0);
    h.ack(0, 0);
    assert!(h.completed.is_empty(), "one member acked twice is one ack");
    h.refuse(0, 0, Status::Fenced);
    assert_eq!(h.writer.failure(), None, "a duplicate Fenced is ignored too");
    h.ack(0, 1);
    assert_eq!(h.completed_ok(), vec![0]);
    h.ack(0, 1);
    h.ack(5, 0);
    h.ack(1, 0);
    h.writer.on_response(Tag::from_raw(u64::MAX), &0, Err(TransportFailure::Other), h.t0);
    h.answer(TagKind::WriteLastAddConfirmed, 0, 0, Ok(Response::WriteLastAddConfirmed));
    assert_eq!(h.writer.stats().ignored_responses, 7);
    // An answer that does not match its request is that bookie's failure, not an ack.
    h.answer(TagKind::Add, 1, 1, Ok(Response::Add { segment: SEGMENT + 1, entry: 1 }));
    assert_eq!(h.failed, vec![(1, 1)]);
    assert_eq!(h.changes, vec![(1, BookieSet::from_iter([1]))]);
}

/// Close waits for pending entries, requests the CAS at the last completed entry with the
/// length, and ends when the shell reports the metadata closed.
#[test]
fn close_requests_the_last_completed_entry() {
    let mut h = Harness::new(3, 3, 2);
    assert_eq!(h.add(b"abc"), Ok(0));
    assert_eq!(h.add(b"de"), Ok(1));
    h.ack(0, 0);
    h.ack(0, 1);
    assert_eq!(h.writer.close(h.t0), Ok(()));
    assert_eq!(h.writer.close(h.t0), Err(WriterError::Closed));
    assert_eq!(h.add(b"x"), Err(WriterError::Closed));
    assert!(h.close_requests.is_empty(), "entry 1 is pending");
    h.ack(1, 2);
    h.ack(1, 0);
    assert_eq!(h.close_requests, vec![(Some(1), 5)]);
    h.writer.on_closed(Ok(()));
    h.pump();
    assert_eq!(h.closed, vec![Ok(())]);
    h.writer.on_closed(Ok(()));
    h.pump();
    assert_eq!(h.closed.len(), 1);
    // An empty segment closes at no entry; a fence while draining ends the close in error.
    let mut h = Harness::new(3, 3, 2);
    h.writer.close(h.t0).expect("open");
    h.pump();
    assert_eq!(h.close_requests, vec![(None, 0)]);
    let mut h = Harness::new(3, 3, 2);
    h.adds(1);
    h.writer.close(h.t0).expect("open");
    h.refuse(0, 0, Status::Fenced);
    assert_eq!(h.completed, vec![(0, Err(WriterError::Fenced))]);
    assert!(h.close_requests.is_empty());
    assert_eq!(h.closed, vec![Err(WriterError::Fenced)]);
}

/// How the proptest's bookies answer one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ack,
    Refuse(Status),
    Lost(TransportFailure),
}

fn answer_strategy() -> impl Strategy<Value = Answer> {
    prop_oneof![
        12 => Just(Answer::Ack),
        2 => prop::sample::select(vec![Status::ReadOnly, Status::Internal, Status::Overloaded])
            .prop_map(Answer::Refuse),
        1 => Just(Answer::Refuse(Status::Fenced)),
        2 => prop::sample::select(vec![TransportFailure::Timeout, TransportFailure::Disconnected])
            .prop_map(Answer::Lost),
    ]
}

fn sizes_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..=5).prop_flat_map(|e| (Just(e), 1..=e)).prop_flat_map(|(e, qw)| (Just(e), Just(qw), 1..=qw))
}

proptest! {
    /// Any answers in any order, with duplicates and idle ticks: W1 to W4 hold, and once every
    /// request is answered every entry has completed.
    #[test]
    fn random_answers_keep_the_invariants(
        (e, qw, qa) in sizes_strategy(),
        entries in 1usize..12,
        answers in prop::collection::vec((answer_strategy(), any::<usize>(), any::<bool>()), 0..200),
    ) {
        let mut h = Harness::new(e, qw, qa);
        // Acks by entry: the bookies (not indexes) that acked it.
        let mut acked: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        let mut fenced = false;
        let mut added = 0;
        let mut answers = answers.into_iter();
        let mut step = 0u64;
        loop {
            prop_assert!(step < 10_000, "the writer must finish");
            if added < entries && h.add(b"p").is_ok() {
                added += 1;
            }
            let ok_before = h.completed_ok().len();
            let done = h.writer.failure().is_some() || h.completed.len() == entries;
            if h.in_flight.is_empty() && h.pending_change.is_none() {
                if done && added == h.completed.len() { break; }
                step += 1;
                h.writer.on_tick(h.at(step));
                h.pump();
                continue;
            }
            // Once the script runs out, every request left is acked and every change lands.
            let (answer, pick, duplicate) = answers.next().unwrap_or((Answer::Ack, 0, false));
            if h.pending_change.is_some() && (h.in_flight.is_empty() || pick % 3 == 0) {
                match answer {
                    Answer::Refuse(Status::Fenced) => {
                        fenced = true;
                        h.change_err(EnsembleChangeError::Fenced, h.at(step));
                    }
                    Answer::Lost(_) => h.change_err(EnsembleChangeError::Unavailable("none".into()), h.at(step)),
                    _ => { h.change_ok(); }
                }
                continue;
            }
            let raw = *h.in_flight.keys().nth(pick % h.in_flight.len()).expect("picked in range");
            let tag = Tag::from_raw(raw);
            let (_, bookie, request) = h.in_flight[&raw].clone();
            let response = match (answer, &request) {
                (Answer::Ack, Request::Add { entry, .. }) => Ok(Response::Add { segment: SEGMENT, entry: *entry }),
                (Answer::Ack, _) => Ok(Response::WriteLastAddConfirmed),
                (Answer::Refuse(status), _) => Ok(Response::refused(1, status, "")),
                (Answer::Lost(failure), _) => Err(failure),
            };
            if matches!(answer, Answer::Refuse(Status::Fenced)) { fenced = true; }
            if matches!((answer, tag.kind()), (Answer::Ack, Some(TagKind::Add))) {
                acked.entry(tag.entry()).or_default().push(bookie);
            }
            let repeat = if duplicate { 2 } else { 1 };
            for _ in 0..repeat {
                h.in_flight.remove(&raw);
                h.writer.on_response(tag, &bookie, response.clone(), h.at(step));
                h.pump();
            }
            step += 1;
            h.writer.on_tick(h.at(step));
            h.pump();
            // W4: after a Fenced answer nothing new completes Ok.
            if fenced { prop_assert_eq!(h.completed_ok().len(), ok_before); }
        }
        // W1: in order, once each; and every entry completed once every request was answered.
        order_holds(&h.completed);
        prop_assert_eq!(h.completed.len(), added);
        // W2: the LAC reports increase and end at the last Ok entry, with every entry before it Ok.
        prop_assert!(h.lacs.windows(2).all(|w| w[0] < w[1]));
        let ok = h.completed_ok();
        prop_assert_eq!(h.lacs.last().copied(), ok.last().copied());
        prop_assert_eq!(h.writer.last_add_confirmed(), ok.last().copied());
        prop_assert!(ok.iter().enumerate().all(|(i, e)| *e == i as u64));
        // W3, W7: every Ok entry had Qa distinct acks from its write set in the ensemble the
        // metadata names for it.
        let quorum = QuorumSizes::new(e, qw, qa).expect("valid");
        for entry in ok {
            let ensemble = h.ensembles.range(..=entry).next_back().expect("an ensemble").1;
            let members: Vec<u32> = quorum.write_set(entry).iter().map(|i| ensemble[i]).collect();
            let mut counted: Vec<u32> = acked.get(&entry).cloned().unwrap_or_default();
            counted.retain(|b| members.contains(b));
            counted.sort_unstable();
            counted.dedup();
            prop_assert!(counted.len() >= qa, "entry {} completed with {:?} acks", entry, acked.get(&entry));
        }
        prop_assert_eq!(h.writer.held_entries(), 0);
    }
}

/// No replacement, but the member that failed was only slow: the writer sends to it again
/// (rather than fail the entries that need it) and they complete when it answers.
#[test]
fn no_replacement_retries_a_slow_member() {
    let mut h = Harness::new(3, 2, 2);
    h.adds(3);
    h.answer(TagKind::Add, 1, 2, Err(TransportFailure::Timeout));
    assert_eq!(h.changes, vec![(0, BookieSet::from_iter([2]))]);
    let before = h.sent.len();
    h.change_err(EnsembleChangeError::Unavailable("no bookie".into()), h.t0);
    let again: Vec<_> = h.sent[before..].iter().map(|(b, t, _)| (*b, t.entry())).collect();
    assert_eq!(again, vec![(2, 1)], "entry 1's ADD goes to member 2 again");
    assert_eq!(h.writer.failure(), None);
    h.adds(1);
    assert!(
        h.sent.iter().any(|(b, t, _)| t.entry() == 3 && *b == 2)
            || !QuorumSizes::new(3, 2, 2).unwrap().in_write_set(3, 2)
    );
    for (entry, members) in [(0, [0, 1]), (1, [1, 2]), (2, [2, 0]), (3, [0, 1])] {
        for member in members {
            h.ack(entry, member);
        }
    }
    assert_eq!(h.completed_ok(), vec![0, 1, 2, 3]);
    assert_eq!(h.writer.stats().retried_adds, 1);
}

/// Two members failed and placement found one replacement: it lands, the other member stays
/// failed and is asked for again at the next attempt.
#[test]
fn a_partial_replacement_lands_and_keeps_the_rest_failed() {
    let mut h = Harness::new(4, 3, 2);
    h.adds(1);
    h.refuse(0, 1, Status::Internal);
    assert_eq!(h.changes, vec![(0, BookieSet::from_iter([1]))]);
    h.change_err(EnsembleChangeError::Unavailable("none".into()), h.t0);
    // Member 1 is asked again; it fails again, and so does member 2, while the retry waits.
    h.refuse(0, 1, Status::Internal);
    h.refuse(0, 2, Status::Internal);
    assert_eq!(h.changes.len(), 1, "no change before the retry time");
    h.writer.on_tick(h.t0 + RETRY);
    h.pump();
    assert_eq!(h.changes[1], (0, BookieSet::from_iter([1, 2])));
    // Placement finds one bookie: index 1 is replaced, index 2 is not.
    h.pending_change = None;
    let mut partial = h.writer.ensemble().to_vec();
    partial[1] = 300;
    h.writer.on_ensemble_changed(Ok(partial.clone()), h.t0 + RETRY);
    h.pump();
    assert_eq!(h.writer.ensemble(), &partial[..]);
    assert_eq!(h.writer.failed_members(), BookieSet::from_iter([2]));
    assert_eq!(h.writer.failure(), None);
    // Entry 0 completes with the replacement and member 0.
    h.ack(0, 0);
    h.ack(0, 1);
    assert_eq!(h.completed_ok(), vec![0]);
    // The other member is asked for again after the retry delay.
    h.writer.on_tick(h.t0 + RETRY * 3);
    h.pump();
    assert_eq!(h.changes.last(), Some(&(1, BookieSet::from_iter([2]))));
}

/// An entry over the bookies' limit is refused at `add`; one a bookie refuses anyway (its
/// limits are smaller) fails with every entry after it, and no bookie is replaced for it.
#[test]
fn oversized_entries_fail_without_ensemble_changes() {
    let settings = WriterSettings { entry_bytes_max: 8, ..WriterSettings::default() };
    let mut h = Harness::with_settings(3, 3, 2, settings);
    assert_eq!(h.add(b"123456789"), Err(WriterError::EntryTooLarge { bytes: 9, max: 8 }));
    h.adds(2);
    h.refuse(0, 1, Status::TooLarge);
    h.answer(TagKind::Add, 0, 2, Err(TransportFailure::Invalid));
    assert!(h.changes.is_empty(), "a refused entry is no bookie's failure");
    h.ack(0, 0);
    h.ack(1, 0);
    h.ack(1, 1);
    assert!(matches!(h.completed.first(), Some((0, Err(WriterError::EntryRefused { entry: 0, .. })))));
    assert_eq!(h.completed.len(), 2, "entry 1 fails after it: {:?}", h.completed);
}
