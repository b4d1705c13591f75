//! Tests of the copy plan (AR3), the answer verdicts (AR4) and the ensemble change (AR5).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use dlog_metadata::schema::{DigestType, SegmentMetadata, SegmentState};
use dlog_protocol::{Response, Status};
use proptest::prelude::*;

use super::*;
use crate::entry_envelope;
use crate::transport::TransportError;

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn closed(last: Option<u64>) -> SegmentState {
    SegmentState::Closed { last_entry_id: last, length: 0 }
}

fn segment(e: u32, w: u32, state: SegmentState, ensembles: &[(u64, &[&str])]) -> SegmentMetadata {
    SegmentMetadata {
        ensemble_size: e,
        write_quorum_size: w,
        ack_quorum_size: 2.min(w),
        digest_type: DigestType::Crc32c,
        master_key: Bytes::from_static(b"key"),
        state,
        ensembles: ensembles.iter().map(|(first, b)| (*first, ids(b))).collect(),
        created_ms: 0,
        owner: None,
    }
}

/// (first entry, index, entries) of every fragment.
fn summary(plan: &CopyPlan) -> Vec<(u64, usize, Vec<u64>)> {
    plan.fragments.iter().map(|f| (f.first_entry, f.index, f.entries().collect())).collect()
}

#[test]
fn striped_ensemble_copies_only_the_lost_index_entries() {
    // E=3, Qw=2: W(e) = {e%3, (e+1)%3}; index 1 is in W(e) for e%3 in {0, 1}.
    let meta = segment(3, 2, closed(Some(9)), &[(0, &["a", "b", "c"])]);
    let plan = plan(7, &meta, &set(&["b"]), false).unwrap();
    assert_eq!(summary(&plan), vec![(0, 1, vec![0, 1, 3, 4, 6, 7, 9])]);
    assert_eq!(plan.last_ensemble, LastEnsemble::Settled);
    let fragment = &plan.fragments[0];
    assert_eq!((fragment.segment, fragment.lost.as_str(), fragment.end), (7, "b", 10));
    // Index 0 is in W(e) for e%3 in {0, 2}.
    let plan = super::plan(7, &meta, &set(&["a"]), false).unwrap();
    assert_eq!(summary(&plan), vec![(0, 0, vec![0, 2, 3, 5, 6, 8, 9])]);
}

#[test]
fn full_write_sets_copy_every_entry() {
    // E = Qw = 3: every entry is on every member.
    let meta = segment(3, 3, closed(Some(4)), &[(0, &["a", "b", "c"])]);
    let plan = plan(1, &meta, &set(&["c"]), false).unwrap();
    assert_eq!(summary(&plan), vec![(0, 2, vec![0, 1, 2, 3, 4])]);
}

#[test]
fn several_ensembles_each_copy_their_own_range() {
    let ensembles: &[(u64, &[&str])] =
        &[(0, &["a", "b", "c"]), (10, &["a", "d", "c"]), (20, &["e", "d", "c"])];
    let meta = segment(3, 3, closed(Some(24)), ensembles);
    // `a` is in the first two ensembles only.
    let plan = plan(1, &meta, &set(&["a"]), false).unwrap();
    assert_eq!(summary(&plan), vec![(0, 0, (0..10).collect()), (10, 0, (10..20).collect())]);
    // `c` in all three: the last one up to the closed end.
    let plan = super::plan(1, &meta, &set(&["c"]), false).unwrap();
    let ranges: Vec<(u64, u64)> = plan.fragments.iter().map(|f| (f.first_entry, f.end)).collect();
    assert_eq!(ranges, vec![(0, 10), (10, 20), (20, 25)]);
    // Two missing bookies in one ensemble: one fragment each.
    let plan = super::plan(1, &meta, &set(&["d", "e"]), false).unwrap();
    let slots: Vec<(u64, usize, &str)> =
        plan.fragments.iter().map(|f| (f.first_entry, f.index, f.lost.as_str())).collect();
    assert_eq!(slots, vec![(10, 1, "d"), (20, 0, "e"), (20, 1, "d")]);
    // Nobody missing: done.
    assert!(super::plan(1, &meta, &set(&["x"]), false).unwrap().is_done());
}

#[test]
fn an_open_segments_last_ensemble_is_the_writers() {
    let ensembles: &[(u64, &[&str])] = &[(0, &["a", "b", "c"]), (10, &["a", "d", "c"])];
    for state in [SegmentState::Open, SegmentState::InRecovery] {
        let meta = segment(3, 2, state, ensembles);
        // `b` is only in the first ensemble, whose range is settled.
        let plan = plan(1, &meta, &set(&["b"]), false).unwrap();
        assert_eq!(plan.fragments.len(), 1);
        assert_eq!(plan.fragments[0].end, 10);
        assert_eq!(plan.last_ensemble, LastEnsemble::Settled);
        assert!(!plan.is_done());
        // `a` is in the last one too: never planned; wait for the writer, then recover.
        let waiting = super::plan(1, &meta, &set(&["a"]), false).unwrap();
        assert_eq!(summary(&waiting), vec![(0, 0, vec![0, 2, 3, 5, 6, 8, 9])]);
        assert_eq!(waiting.last_ensemble, LastEnsemble::WaitForWriter);
        let late = super::plan(1, &meta, &set(&["a"]), true).unwrap();
        assert_eq!(late.last_ensemble, LastEnsemble::Recover);
        assert_eq!(late.fragments, waiting.fragments);
        // Only in the last one.
        let only_last = super::plan(1, &meta, &set(&["d"]), true).unwrap();
        assert!(only_last.fragments.is_empty() && only_last.last_ensemble == LastEnsemble::Recover);
    }
}

#[test]
fn ranges_past_the_closed_end_hold_nothing() {
    // SG3 allows an ensemble starting one past the last entry: nothing to copy, but the
    // member is still replaced.
    let meta = segment(3, 3, closed(Some(9)), &[(0, &["a", "b", "c"]), (10, &["a", "d", "c"])]);
    let plan = plan(1, &meta, &set(&["d"]), false).unwrap();
    assert_eq!(summary(&plan), vec![(10, 1, vec![])]);
    // An empty closed segment.
    let meta = segment(3, 3, closed(None), &[(0, &["a", "b", "c"])]);
    assert_eq!(summary(&plan_of(&meta, "a")), vec![(0, 0, vec![])]);
}

fn plan_of(meta: &SegmentMetadata, missing: &str) -> CopyPlan {
    plan(1, meta, &set(&[missing]), false).unwrap()
}

#[test]
fn sources_are_the_write_set_present_members_first() {
    let meta = segment(5, 3, closed(Some(20)), &[(0, &["a", "b", "c", "d", "e"])]);
    let plan = plan(1, &meta, &set(&["c", "d"]), false).unwrap();
    let for_c = &plan.fragments[0];
    assert_eq!(for_c.index, 2);
    // W(1) = {1, 2, 3}: b first, then the missing c (the lost index itself) and d.
    assert_eq!(for_c.sources(1, &set(&["c", "d"])), vec![1, 2, 3]);
    // W(2) = {2, 3, 4}: e first.
    assert_eq!(for_c.sources(2, &set(&["c", "d"])), vec![4, 2, 3]);
    // W(0) = {0, 1, 2}.
    assert_eq!(for_c.sources(0, &set(&["c"])), vec![0, 1, 2]);
}

#[test]
fn bad_metadata_is_an_error_not_a_panic() {
    let mut meta = segment(3, 3, closed(Some(9)), &[(0, &["a", "b", "c"])]);
    meta.ack_quorum_size = 0;
    assert!(matches!(plan(1, &meta, &set(&["a"]), false), Err(PlanError::BadMetadata { .. })));
    let mut meta = segment(3, 3, closed(Some(9)), &[(0, &["a", "b", "c"])]);
    meta.ensembles.insert(5, ids(&["a", "b"]));
    assert!(matches!(plan(1, &meta, &set(&["a"]), false), Err(PlanError::BadMetadata { .. })));
}

#[test]
fn the_ensemble_change_replaces_exactly_one_slot() {
    let ensembles: &[(u64, &[&str])] = &[(0, &["a", "b", "c"]), (10, &["a", "d", "c"])];
    let meta = segment(3, 3, closed(Some(19)), ensembles);
    let plan = plan(1, &meta, &set(&["a"]), false).unwrap();
    let fragment = &plan.fragments[1];
    let ReplaceDecision::Replace(next) = replace_member(&meta, fragment, "x") else { panic!("replaced") };
    assert_eq!(next.ensembles[&10], ids(&["x", "d", "c"]));
    assert_eq!(next.ensembles[&0], ids(&["a", "b", "c"]), "the other ensemble keeps its member");
    assert_eq!(ReplaceDecision::Replace(next.clone()), replace_member(&meta, fragment, "x"));
    // Replaced already (by another worker): nothing to do.
    assert_eq!(replace_member(&next, fragment, "y"), ReplaceDecision::AlreadyReplaced);
    // The replacement became a member meanwhile: plan again.
    let mut member = meta.clone();
    member.ensembles.insert(10, ids(&["a", "d", "x"]));
    assert!(matches!(replace_member(&member, fragment, "x"), ReplaceDecision::Replan(_)));
    // The ensemble's range grew past the copy (an open segment closed later than planned).
    let mut grown = meta.clone();
    grown.state = closed(Some(29));
    assert!(matches!(replace_member(&grown, fragment, "x"), ReplaceDecision::Replan(_)));
    let mut open = meta.clone();
    open.state = SegmentState::Open;
    assert!(matches!(replace_member(&open, fragment, "x"), ReplaceDecision::Replan(_)));
    // The ensemble is gone (a writer replaced it whole).
    let mut gone = meta.clone();
    gone.ensembles.remove(&10);
    assert_eq!(replace_member(&gone, fragment, "x"), ReplaceDecision::AlreadyReplaced);
}

#[test]
fn only_a_valid_envelope_of_that_entry_is_a_copy() {
    let stored = entry_envelope::encode(7, 3, 100, b"payload");
    let read =
        |segment, entry, payload: &Bytes| Ok(Response::Read { segment, entry, payload: payload.clone() });
    assert_eq!(judge_read(7, 3, read(7, 3, &stored)), ReadVerdict::Copy(stored.clone()));
    // Another entry's (or segment's) bytes, answered under this entry's id: corrupt.
    let other = entry_envelope::encode(7, 4, 100, b"payload");
    assert!(matches!(judge_read(7, 3, read(7, 3, &other)), ReadVerdict::Corrupt(_)));
    let mut flipped = stored.to_vec();
    flipped[14] ^= 1;
    assert!(matches!(judge_read(7, 3, read(7, 3, &Bytes::from(flipped))), ReadVerdict::Corrupt(_)));
    assert!(matches!(judge_read(7, 3, read(7, 3, &Bytes::from_static(b"x"))), ReadVerdict::Corrupt(_)));
    // An answer about another entry is not an answer.
    assert!(matches!(judge_read(7, 3, read(7, 4, &stored)), ReadVerdict::Failed(_)));
    let refused = |status| Ok(Response::refused(2, status, "why"));
    assert_eq!(judge_read(7, 3, refused(Status::NoSuchEntry)), ReadVerdict::Absent);
    assert_eq!(judge_read(7, 3, refused(Status::NoSuchSegment)), ReadVerdict::Absent);
    assert_eq!(judge_read(7, 3, refused(Status::Corrupt)), ReadVerdict::Corrupt("why".into()));
    assert!(matches!(judge_read(7, 3, refused(Status::Internal)), ReadVerdict::Failed(_)));
    assert!(matches!(judge_read(7, 3, Ok(Response::DeleteSegment)), ReadVerdict::Failed(_)));
    assert!(matches!(judge_read(7, 3, Err(TransportError::Timeout)), ReadVerdict::Failed(_)));
}

#[test]
fn add_answers_are_stored_retried_or_fatal() {
    assert_eq!(judge_add(7, 3, Ok(Response::Add { segment: 7, entry: 3 })), AddVerdict::Stored);
    assert!(matches!(judge_add(7, 3, Ok(Response::Add { segment: 7, entry: 4 })), AddVerdict::Retry(_)));
    let refused = |status| Ok(Response::refused(1, status, "why"));
    for status in [Status::WrongMasterKey, Status::BadRequest, Status::TooLarge] {
        assert!(matches!(judge_add(7, 3, refused(status)), AddVerdict::Fatal(_)), "{status:?}");
    }
    for status in [Status::Internal, Status::Overloaded, Status::ReadOnly, Status::NoSuchSegment] {
        assert!(matches!(judge_add(7, 3, refused(status)), AddVerdict::Retry(_)), "{status:?}");
    }
    assert!(matches!(judge_add(7, 3, Err(TransportError::Timeout)), AddVerdict::Retry(_)));
}

/// A closed segment with random quorums, ensembles and end, and a random missing set.
fn arbitrary_segment() -> impl Strategy<Value = (SegmentMetadata, BTreeSet<String>)> {
    (1usize..=6, 0u64..60, prop::collection::vec((1u64..15, any::<u64>()), 0..4), any::<u64>())
        .prop_flat_map(|(e, last, steps, seed)| (Just((e, last, steps, seed)), 1..=e))
        .prop_map(|((e, last, steps, seed), w)| {
            let pool: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
            let pick = |salt: u64| -> Vec<String> {
                let start = (salt % 8) as usize;
                (0..e).map(|i| pool[(start + i * 3) % 8].clone()).collect()
            };
            let mut ensembles = BTreeMap::from([(0, pick(seed))]);
            let mut first = 0;
            for (step, salt) in steps {
                first += step;
                if first > last + 1 {
                    break;
                }
                ensembles.insert(first, pick(salt));
            }
            let missing: BTreeSet<String> = pool
                .iter()
                .enumerate()
                .filter(|(i, _)| (seed >> (2 * i)) % 3 == 0)
                .map(|(_, b)| b.clone())
                .collect();
            let mut meta = segment(e as u32, w as u32, closed(Some(last)), &[]);
            meta.ensembles = ensembles;
            (meta, missing)
        })
}

proptest! {
    /// AR3: every (entry, index) replica of a closed segment held by a missing bookie is in
    /// exactly one fragment of that index, and no other entry is.
    #[test]
    fn the_plan_covers_exactly_the_lost_replicas((meta, missing) in arbitrary_segment()) {
        prop_assert_eq!(meta.validate(), Ok(()));
        let plan = plan(9, &meta, &missing, false).unwrap();
        prop_assert_eq!(plan.last_ensemble, LastEnsemble::Settled);
        let quorum = quorum_of(9, &meta).unwrap();
        let SegmentState::Closed { last_entry_id: Some(last), .. } = meta.state else { unreachable!() };
        let mut expected = BTreeSet::new();
        for entry in 0..=last {
            let first = *meta.ensembles.range(..=entry).next_back().unwrap().0;
            for index in quorum.write_set(entry).iter() {
                if missing.contains(&meta.ensembles[&first][index]) {
                    expected.insert((first, index, entry));
                }
            }
        }
        let mut planned = BTreeSet::new();
        for fragment in &plan.fragments {
            prop_assert!(missing.contains(&fragment.lost));
            prop_assert_eq!(&meta.ensembles[&fragment.first_entry][fragment.index], &fragment.lost);
            for entry in fragment.entries() {
                prop_assert!(planned.insert((fragment.first_entry, fragment.index, entry)), "twice");
            }
        }
        prop_assert_eq!(planned, expected);
        // Every slot naming a missing bookie has its fragment, even with no entry to copy.
        let slots = meta.ensembles.values().flatten().filter(|b| missing.contains(*b)).count();
        prop_assert_eq!(plan.fragments.len(), slots);
    }
}
