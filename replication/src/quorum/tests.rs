//! Exhaustive checks for every ensemble_size up to `E_MAX` and every valid (Qw, Qa), each
//! against a definition by enumeration written independently of the code (plain `u64` masks and
//! `(e + i) % E`), plus proptests up to E = 64 against counting definitions.

use proptest::prelude::*;

use super::*;

/// The largest ensemble_size checked exhaustively.
const E_MAX: usize = 7;

/// Every valid `QuorumSizes` with `ensemble_size <= e_max`.
fn all_sizes(e_max: usize) -> Vec<QuorumSizes> {
    let mut sizes = Vec::new();
    for e in 1..=e_max {
        for qw in 1..=e {
            for qa in 1..=qw {
                sizes.push(QuorumSizes::new(e, qw, qa).expect("valid sizes"));
            }
        }
    }
    sizes
}

/// The definition of striping: member i of entry's write set is (entry + i) mod E.
fn write_set_by_definition(sizes: &QuorumSizes, entry: u64) -> Vec<usize> {
    let e = sizes.ensemble_size() as u128;
    (0..sizes.write_quorum_size()).map(|i| ((u128::from(entry) + i as u128) % e) as usize).collect()
}

fn mask_of(indexes: &[usize]) -> u64 {
    indexes.iter().fold(0, |mask, index| mask | (1u64 << index))
}

/// Entries whose write sets are all of the ensemble's, plus entries near the top of the range.
fn sample_entries(sizes: &QuorumSizes) -> Vec<u64> {
    let e = sizes.ensemble_size() as u64;
    (0..2 * e).chain(u64::MAX - 2 * e..=u64::MAX).collect()
}

#[test]
fn quorum_sizes_accept_exactly_rule_q1() {
    for e in 0..=66 {
        for qw in 0..=66 {
            for qa in 0..=66 {
                let result = QuorumSizes::new(e, qw, qa);
                let expected = if qa == 0 {
                    Err(QuorumError::AckQuorumZero)
                } else if qa > qw {
                    Err(QuorumError::AckQuorumAboveWriteQuorum { ack_quorum_size: qa, write_quorum_size: qw })
                } else if qw > e {
                    Err(QuorumError::WriteQuorumAboveEnsemble { write_quorum_size: qw, ensemble_size: e })
                } else if e > 64 {
                    Err(QuorumError::EnsembleTooLarge { ensemble_size: e })
                } else {
                    Ok((e, qw, qa))
                };
                let got = result.map(|s| (s.ensemble_size(), s.write_quorum_size(), s.ack_quorum_size()));
                assert_eq!(got, expected, "E={e} Qw={qw} Qa={qa}");
                if let Err(error) = result {
                    assert!(!error.to_string().is_empty());
                }
            }
        }
    }
}

#[test]
fn quorum_write_sets_match_round_robin_definition_exhaustive() {
    for sizes in all_sizes(E_MAX) {
        let e = sizes.ensemble_size();
        for entry in sample_entries(&sizes) {
            let expected = write_set_by_definition(&sizes, entry);
            let write_set = sizes.write_set(entry);
            assert_eq!(write_set.iter().collect::<Vec<_>>(), expected, "{sizes:?} entry {entry}");
            assert_eq!(write_set.len(), expected.len());
            assert!(!write_set.is_empty());
            assert_eq!(write_set.first_index(), expected[0]);
            assert_eq!(write_set.get(expected.len()), None);
            assert_eq!(write_set.members().bits(), mask_of(&expected), "{sizes:?} entry {entry}");
            assert_eq!(write_set.members().len(), sizes.write_quorum_size(), "members are distinct");
            for (position, index) in expected.iter().enumerate() {
                assert_eq!(write_set.get(position), Some(*index));
            }
            for index in 0..e + 3 {
                let position = expected.iter().position(|member| *member == index);
                assert_eq!(sizes.position_in_write_set(entry, index), position, "{sizes:?} {entry} {index}");
                assert_eq!(sizes.in_write_set(entry, index), position.is_some());
            }
        }
    }
}

#[test]
fn quorum_striping_spreads_each_index_over_qw_of_any_e_consecutive_entries_exhaustive() {
    for sizes in all_sizes(E_MAX) {
        let e = sizes.ensemble_size() as u64;
        for start in (0..2 * e).chain(u64::MAX - 2 * e..=u64::MAX - e + 1) {
            for index in 0..sizes.ensemble_size() {
                let count =
                    (start..=start + (e - 1)).filter(|entry| sizes.in_write_set(*entry, index)).count();
                assert_eq!(count, sizes.write_quorum_size(), "{sizes:?} start {start} index {index}");
            }
        }
        let distinct: std::collections::HashSet<u64> =
            (0..e).map(|entry| sizes.write_set(entry).members().bits()).collect();
        assert_eq!(distinct.len(), sizes.distinct_write_set_count(), "{sizes:?}");
    }
}

#[test]
fn quorum_consecutive_write_sets_rotate_exhaustive() {
    for sizes in all_sizes(E_MAX) {
        let (e, qw) = (sizes.ensemble_size(), sizes.write_quorum_size());
        for entry in sample_entries(&sizes).into_iter().filter(|entry| *entry < u64::MAX) {
            let (this, next) = (sizes.write_set(entry), sizes.write_set(entry + 1));
            for position in 0..qw {
                let shifted = this.get(position).map(|index| (index + 1) % e);
                assert_eq!(next.get(position), shifted, "{sizes:?} entry {entry}");
                if position + 1 < qw {
                    assert_eq!(this.get(position + 1), next.get(position), "{sizes:?} entry {entry}");
                }
            }
            assert_eq!(sizes.write_set(entry), sizes.write_set(entry % e as u64), "depends on e mod E only");
        }
    }
}

/// The definition of Q5: every Qa-subset of every write set meets `fenced`.
fn fence_covers_by_enumeration(sizes: &QuorumSizes, fenced: u64) -> bool {
    let (qw, qa) = (sizes.write_quorum_size(), sizes.ack_quorum_size());
    (0..sizes.ensemble_size() as u64).all(|entry| {
        let members = write_set_by_definition(sizes, entry);
        (0u32..1 << qw).filter(|positions| positions.count_ones() as usize == qa).all(|positions| {
            let subset: Vec<usize> =
                (0..qw).filter(|p| positions & (1 << p) != 0).map(|p| members[p]).collect();
            mask_of(&subset) & fenced != 0
        })
    })
}

#[test]
fn quorum_fence_coverage_matches_enumeration_exhaustive() {
    for sizes in all_sizes(E_MAX) {
        let e = sizes.ensemble_size();
        let mut covering_min = usize::MAX;
        for fenced in 0u64..1 << e {
            let expected = fence_covers_by_enumeration(&sizes, fenced);
            let set = BookieSet::from_bits(fenced);
            assert_eq!(sizes.fence_covers_every_write_set(&set), expected, "{sizes:?} fenced {set:?}");
            assert_eq!(sizes.lac_responses_sufficient(&set), expected, "{sizes:?} responded {set:?}");
            // Indexes outside the ensemble never help.
            let with_outsiders = BookieSet::from_bits(fenced | !((1u64 << e) - 1));
            assert_eq!(sizes.fence_covers_every_write_set(&with_outsiders), expected, "{sizes:?}");
            if expected {
                covering_min = covering_min.min(set.len());
            }
            if set.len() >= sizes.fence_responses_always_sufficient() {
                assert!(expected, "{sizes:?}: {set:?} has E - Qa + 1 bookies but does not cover");
            }
        }
        assert_eq!(covering_min, sizes.fence_responses_min(), "{sizes:?}");
        // E - Qa bookies may not cover: leave out Qa members of one write set.
        let left_out: BookieSet = sizes.write_set(0).iter().take(sizes.ack_quorum_size()).collect();
        let fenced = sizes.ensemble().difference(left_out);
        assert_eq!(fenced.len(), sizes.fence_responses_always_sufficient() - 1);
        assert!(!sizes.fence_covers_every_write_set(&fenced), "{sizes:?}");
    }
}

/// The definition of `ConfirmedAbsent` (Q6), by enumeration: no assignment of "holds it" to the
/// members that did not answer NoSuchEntry (those that answered Present must hold it) gives Qa
/// holders; and no member answered Present.
fn verdict_by_enumeration(qw: usize, qa: usize, answers: &[ReplicaAnswer]) -> EntryVerdict {
    if answers.contains(&ReplicaAnswer::Present) {
        return EntryVerdict::Present;
    }
    let acknowledgeable = (0u32..1 << qw).any(|holders| {
        let consistent = (0..qw).all(|p| holders & (1 << p) == 0 || answers[p] != ReplicaAnswer::NoSuchEntry);
        consistent && holders.count_ones() as usize >= qa
    });
    if acknowledgeable { EntryVerdict::Undecided } else { EntryVerdict::ConfirmedAbsent }
}

const ANSWERS: [ReplicaAnswer; 4] =
    [ReplicaAnswer::Present, ReplicaAnswer::NoSuchEntry, ReplicaAnswer::Failed, ReplicaAnswer::NoAnswer];

/// Every vector of `len` answers (4^len).
fn answer_vectors(len: usize) -> impl Iterator<Item = Vec<ReplicaAnswer>> {
    (0..4usize.pow(len as u32)).map(move |code| (0..len).map(|p| ANSWERS[(code >> (2 * p)) & 3]).collect())
}

#[test]
fn quorum_entry_verdict_matches_enumeration_exhaustive() {
    for sizes in all_sizes(E_MAX).into_iter().filter(|s| s.ensemble_size() == s.write_quorum_size()) {
        let (qw, qa) = (sizes.write_quorum_size(), sizes.ack_quorum_size());
        // The verdict depends on the write set's answers only; check it through an ensemble of
        // E = Qw and of E = E_MAX, for an entry whose write set wraps around.
        let wide = QuorumSizes::new(E_MAX, qw, qa).expect("valid");
        for answers in answer_vectors(qw) {
            let expected = verdict_by_enumeration(qw, qa, &answers);
            assert_eq!(sizes.entry_verdict(&answers), expected, "Qw={qw} Qa={qa} {answers:?}");
            let entry = E_MAX as u64 * 3 - 2;
            let mut by_index = wide.entry_answers(entry);
            for (position, answer) in answers.iter().enumerate() {
                by_index.record(wide.write_set(entry).get(position).expect("member"), *answer);
            }
            assert_eq!(by_index.verdict(), expected, "Qw={qw} Qa={qa} {answers:?}");
            // Safety stated directly: ConfirmedAbsent leaves fewer than Qa possible holders.
            let possible_holders = answers.iter().filter(|a| **a != ReplicaAnswer::NoSuchEntry).count();
            if expected == EntryVerdict::ConfirmedAbsent {
                assert!(possible_holders < qa);
            }
            // absence_possible: some way the unanswered members could still answer confirms
            // absence (enumerated for Qw <= 5 to keep the run short).
            if qw <= 5 {
                let unanswered: Vec<usize> =
                    (0..qw).filter(|p| answers[*p] == ReplicaAnswer::NoAnswer).collect();
                let completions_confirm = (0..3usize.pow(unanswered.len() as u32)).any(|code| {
                    let mut merged = answers.clone();
                    for (k, p) in unanswered.iter().enumerate() {
                        merged[*p] = ANSWERS[code / 3usize.pow(k as u32) % 3];
                    }
                    verdict_by_enumeration(qw, qa, &merged) == EntryVerdict::ConfirmedAbsent
                });
                assert_eq!(by_index.absence_possible(), completions_confirm, "Qw={qw} Qa={qa} {answers:?}");
            }
        }
    }
}

#[test]
fn quorum_entry_answers_commute_and_keep_the_strongest_exhaustive() {
    for sizes in all_sizes(5).into_iter().filter(|s| s.ack_quorum_size() == 1) {
        let e = sizes.ensemble_size();
        let entry = 1;
        let events: Vec<(usize, ReplicaAnswer)> =
            (0..=e).flat_map(|index| ANSWERS.iter().map(move |answer| (index, *answer))).collect();
        for answers in answer_vectors(sizes.write_quorum_size()) {
            let mut state = sizes.entry_answers(entry);
            for (position, answer) in answers.iter().enumerate() {
                state.record(sizes.write_set(entry).get(position).expect("member"), *answer);
            }
            for a in &events {
                for b in &events {
                    let (mut ab, mut ba) = (state.clone(), state.clone());
                    ab.record(a.0, a.1);
                    ab.record(b.0, b.1);
                    ba.record(b.0, b.1);
                    ba.record(a.0, a.1);
                    assert_eq!(ab, ba, "{sizes:?} {answers:?} {a:?} {b:?}");
                }
            }
        }
        // Strongest wins, and outcomes say so.
        let member = sizes.write_set(entry).first_index();
        let mut answers = sizes.entry_answers(entry);
        assert_eq!(answers.record(member, ReplicaAnswer::NoAnswer), AnswerOutcome::Unchanged);
        assert_eq!(answers.record(member, ReplicaAnswer::Failed), AnswerOutcome::Recorded);
        assert_eq!(answers.record(member, ReplicaAnswer::NoSuchEntry), AnswerOutcome::Recorded);
        assert_eq!(answers.record(member, ReplicaAnswer::Failed), AnswerOutcome::Unchanged);
        assert_eq!(answers.absent(), BookieSet::from_bits(1 << member));
        assert_eq!(answers.record(member, ReplicaAnswer::Present), AnswerOutcome::Recorded);
        assert_eq!(answers.record(member, ReplicaAnswer::NoSuchEntry), AnswerOutcome::Unchanged);
        assert_eq!(answers.present(), BookieSet::from_bits(1 << member));
        assert!(answers.absent().is_empty() && answers.failed().is_empty());
        assert_eq!(answers.record(e, ReplicaAnswer::Present), AnswerOutcome::NotInWriteSet);
        assert_eq!(answers.record(usize::MAX, ReplicaAnswer::Present), AnswerOutcome::NotInWriteSet);
    }
}

/// What an `AckSet` must hold after a set of events, whatever their order (Q3).
fn check_ack_set_by_definition(sizes: &QuorumSizes, set: &AckSet, acks: u64, failures: u64) {
    let members = mask_of(&write_set_by_definition(sizes, set.entry()));
    let (acked, failed) = (acks & members, failures & members & !acks);
    assert_eq!(set.acked().bits(), acked);
    assert_eq!(set.failed().bits(), failed);
    assert_eq!(set.pending().bits(), members & !acked & !failed);
    assert_eq!(set.ack_count(), acked.count_ones() as usize);
    assert_eq!(set.is_complete(), acked.count_ones() as usize >= sizes.ack_quorum_size());
    let could_ack = (members & !failed).count_ones() as usize;
    assert_eq!(set.can_complete(), could_ack >= sizes.ack_quorum_size());
}

/// All orders of `events` (Heap's algorithm, iterative).
fn for_each_order<T: Clone>(events: &[T], mut visit: impl FnMut(&[T])) {
    let mut order = events.to_vec();
    let mut counters = vec![0; order.len()];
    visit(&order);
    let mut i = 1;
    while i < order.len() {
        if counters[i] < i {
            order.swap(if i % 2 == 0 { 0 } else { counters[i] }, i);
            visit(&order);
            counters[i] += 1;
            i = 1;
        } else {
            counters[i] = 0;
            i += 1;
        }
    }
}

#[test]
fn quorum_ack_set_is_order_independent_over_all_orders() {
    // Per member: nothing, an ack, a failure, or (Qw <= 3) both, or both plus a repeated ack;
    // plus an ack and a failure from outside the write set when there is an outside. At most 7
    // events (5040 orders) per case, to keep the run short.
    for sizes in all_sizes(4) {
        let (e, qw) = (sizes.ensemble_size(), sizes.write_quorum_size());
        let entry = e as u64 + 2;
        let members = write_set_by_definition(&sizes, entry);
        let choices = if qw <= 3 { 5usize } else { 3 };
        for code in 0..choices.pow(qw as u32) {
            let mut events: Vec<(usize, bool)> = Vec::new();
            let (mut acks, mut failures) = (0u64, 0u64);
            for (position, index) in members.iter().enumerate() {
                let choice = code / choices.pow(position as u32) % choices;
                let (ack, fail, repeat) = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 1, 1)][choice];
                for _ in 0..ack + repeat {
                    events.push((*index, true));
                }
                for _ in 0..fail {
                    events.push((*index, false));
                }
                acks |= (ack as u64) << index;
                failures |= (fail as u64) << index;
            }
            if let Some(outsider) = (0..e).find(|index| !members.contains(index)) {
                events.push((outsider, true));
                events.push((outsider, false));
            }
            if events.len() > 7 {
                continue;
            }
            for_each_order(&events, |order| {
                let mut set = sizes.ack_set(entry);
                let (mut seen_acks, mut seen_failures) = (0u64, 0u64);
                for (index, is_ack) in order {
                    let member = members.contains(index);
                    let bit = 1u64 << index;
                    if *is_ack {
                        let expected = match (member, seen_acks & bit != 0) {
                            (false, _) => AckOutcome::NotInWriteSet,
                            (true, true) => AckOutcome::Duplicate,
                            (true, false) => AckOutcome::Counted,
                        };
                        assert_eq!(set.record_ack(*index), expected, "{sizes:?} {order:?}");
                        seen_acks |= bit;
                    } else {
                        let expected = match (member, seen_acks & bit != 0, seen_failures & bit != 0) {
                            (false, _, _) => FailureOutcome::NotInWriteSet,
                            (true, true, _) => FailureOutcome::AlreadyAcked,
                            (true, false, true) => FailureOutcome::Duplicate,
                            (true, false, false) => FailureOutcome::Counted,
                        };
                        assert_eq!(set.record_failure(*index), expected, "{sizes:?} {order:?}");
                        seen_failures |= bit;
                    }
                    check_ack_set_by_definition(&sizes, &set, seen_acks, seen_failures);
                }
                check_ack_set_by_definition(&sizes, &set, acks, failures);
            });
        }
    }
}

#[test]
fn quorum_ack_set_events_commute_exhaustive() {
    // Every state (each member acked, failed or pending) and every pair of events, E <= 7.
    for sizes in all_sizes(E_MAX).into_iter().filter(|s| s.ack_quorum_size() == 1) {
        let (e, qw) = (sizes.ensemble_size(), sizes.write_quorum_size());
        let entry = 5;
        let events: Vec<(usize, bool)> = (0..=e).flat_map(|index| [(index, true), (index, false)]).collect();
        for code in 0..3usize.pow(qw as u32) {
            let mut state = sizes.ack_set(entry);
            for (position, index) in sizes.write_set(entry).iter().enumerate() {
                match code / 3usize.pow(position as u32) % 3 {
                    1 => assert_eq!(state.record_ack(index), AckOutcome::Counted),
                    2 => assert_eq!(state.record_failure(index), FailureOutcome::Counted),
                    _ => {}
                }
            }
            let apply = |set: &mut AckSet, (index, is_ack): (usize, bool)| {
                if is_ack {
                    set.record_ack(index);
                } else {
                    set.record_failure(index);
                }
            };
            for a in &events {
                for b in &events {
                    let (mut ab, mut ba) = (state.clone(), state.clone());
                    apply(&mut ab, *a);
                    apply(&mut ab, *b);
                    apply(&mut ba, *b);
                    apply(&mut ba, *a);
                    assert_eq!(ab, ba, "{sizes:?} {a:?} {b:?}");
                }
            }
        }
    }
}

#[test]
fn quorum_ack_set_reset_member_forgets_and_reopens() {
    let sizes = QuorumSizes::new(3, 3, 2).expect("valid");
    let mut set = sizes.ack_set(0);
    assert_eq!(set.record_failure(0), FailureOutcome::Counted);
    assert_eq!(set.record_failure(1), FailureOutcome::Counted);
    assert!(!set.can_complete(), "two of three failed with Qa = 2");
    assert!(set.reset_member(1), "bookie 1 replaced");
    assert!(set.can_complete());
    assert_eq!(set.record_ack(2), AckOutcome::Counted);
    assert_eq!(set.record_failure(2), FailureOutcome::AlreadyAcked);
    assert_eq!(set.record_ack(1), AckOutcome::Counted);
    assert!(set.is_complete() && set.can_complete());
    assert!(set.reset_member(2));
    assert!(!set.is_complete());
    assert!(!set.reset_member(2), "nothing left to forget");
    assert!(!set.reset_member(99), "outside the ensemble: nothing to forget");
    assert_eq!(set.record_ack(99), AckOutcome::NotInWriteSet);
    assert_eq!(set.pending(), BookieSet::from_bits(0b100));
}

#[test]
fn quorum_examples_from_the_docs() {
    // BookKeeper's striping example (E = 4, Qw = 3; bookies B1..B4 are indexes 0..3).
    let sizes = QuorumSizes::new(4, 3, 2).expect("valid");
    let write_sets: Vec<Vec<usize>> = (0..4).map(|entry| sizes.write_set(entry).iter().collect()).collect();
    assert_eq!(write_sets, [vec![0, 1, 2], vec![1, 2, 3], vec![2, 3, 0], vec![3, 0, 1]]);
    // Q5 sizes for E = 6, Qw = 3, Qa = 2: 6 - 6*1/3 = 4 can cover ({0,1,3,4}: unfenced 2 and 5
    // are never together in a write set); any 5 always do; {0,1,2,3} does not ({4,5} unfenced).
    let sizes = QuorumSizes::new(6, 3, 2).expect("valid");
    assert_eq!((sizes.fence_responses_min(), sizes.fence_responses_always_sufficient()), (4, 5));
    assert!(sizes.fence_covers_every_write_set(&[0, 1, 3, 4].into_iter().collect()));
    assert!(!sizes.fence_covers_every_write_set(&[0, 1, 2, 3].into_iter().collect()));
    // Q8: Qw = 3, Qa = 2. One NoSuchEntry is not absence: the other two may hold an acked copy.
    let sizes = QuorumSizes::new(3, 3, 2).expect("valid");
    use ReplicaAnswer::{Failed, NoAnswer, NoSuchEntry, Present};
    assert_eq!(sizes.coverage_size(), 2);
    assert_eq!(sizes.entry_verdict(&[NoAnswer, NoSuchEntry, NoAnswer]), EntryVerdict::Undecided);
    assert_eq!(sizes.entry_verdict(&[Failed, NoSuchEntry, Failed]), EntryVerdict::Undecided);
    assert_eq!(sizes.entry_verdict(&[NoSuchEntry, NoSuchEntry, Failed]), EntryVerdict::ConfirmedAbsent);
    assert_eq!(sizes.entry_verdict(&[NoSuchEntry, NoSuchEntry, Present]), EntryVerdict::Present);
    let mut answers = sizes.entry_answers(0);
    answers.record(0, Failed);
    answers.record(1, Failed);
    assert!(!answers.absence_possible(), "two corrupt replicas may be the two acks");
}

#[test]
fn quorum_bookie_set_operations() {
    let mut set = BookieSet::EMPTY;
    assert!(set.is_empty() && set.insert(63) && set.insert(0) && !set.insert(63));
    assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63]);
    assert_eq!(set.iter().len(), 2);
    assert!(set.contains(63) && !set.contains(64) && !set.contains(usize::MAX));
    assert!(!set.remove(64) && set.remove(0) && !set.remove(0));
    assert_eq!(BookieSet::first_n(64).len(), 64);
    assert_eq!(BookieSet::first_n(0), BookieSet::EMPTY);
    let (a, b): (BookieSet, BookieSet) = ([1, 2, 3].into_iter().collect(), [3, 4].into_iter().collect());
    assert_eq!(a.union(b).bits(), 0b11110);
    assert_eq!(a.intersection(b).bits(), 0b1000);
    assert_eq!(a.difference(b).bits(), 0b110);
    assert!(a.intersection(b).is_subset(a) && !a.is_subset(b));
    assert_eq!(format!("{a:?}"), "{1, 2, 3}");
    let sizes = QuorumSizes::new(64, 64, 33).expect("valid");
    assert_eq!(sizes.write_set(u64::MAX).members(), sizes.ensemble());
    assert_eq!(sizes.distinct_write_set_count(), 1);
}

fn sizes_strategy() -> impl Strategy<Value = QuorumSizes> {
    (1..=ENSEMBLE_SIZE_MAX)
        .prop_flat_map(|e| (Just(e), 1..=e))
        .prop_flat_map(|(e, qw)| (Just(e), Just(qw), 1..=qw))
        .prop_map(|(e, qw, qa)| QuorumSizes::new(e, qw, qa).expect("valid"))
}

proptest! {
    #[test]
    fn quorum_prop_write_sets_match_definition(sizes in sizes_strategy(), entry in any::<u64>()) {
        let expected = write_set_by_definition(&sizes, entry);
        let write_set = sizes.write_set(entry);
        prop_assert_eq!(write_set.iter().collect::<Vec<_>>(), expected.clone());
        prop_assert_eq!(write_set.members().bits(), mask_of(&expected));
        for (position, index) in expected.iter().enumerate() {
            prop_assert_eq!(sizes.position_in_write_set(entry, *index), Some(position));
        }
        let outside = (0..sizes.ensemble_size()).filter(|index| !expected.contains(index));
        for index in outside.chain([sizes.ensemble_size(), usize::MAX]) {
            prop_assert!(!sizes.in_write_set(entry, index));
        }
    }

    #[test]
    fn quorum_prop_fence_coverage_matches_counting(sizes in sizes_strategy(), fenced in any::<u64>()) {
        // Counting form of Q5: every write set has fewer than Qa unfenced members.
        let expected = (0..sizes.ensemble_size() as u64).all(|entry| {
            let unfenced = write_set_by_definition(&sizes, entry).iter().filter(|i| fenced & (1 << *i) == 0).count();
            unfenced < sizes.ack_quorum_size()
        });
        let set = BookieSet::from_bits(fenced);
        prop_assert_eq!(sizes.fence_covers_every_write_set(&set), expected);
        prop_assert_eq!(sizes.lac_responses_sufficient(&set), expected);
        if set.intersection(sizes.ensemble()).len() >= sizes.fence_responses_always_sufficient() {
            prop_assert!(expected);
        }
        if set.intersection(sizes.ensemble()).len() < sizes.fence_responses_min() {
            prop_assert!(!expected);
        }
    }

    #[test]
    fn quorum_prop_evenly_spread_fence_reaches_the_minimum(sizes in sizes_strategy()) {
        // Leave unfenced floor(i * E / m) for i < m = floor(E (Qa - 1) / Qw): at most Qa - 1 per write set.
        let e = sizes.ensemble_size();
        let unfenced_count = e - sizes.fence_responses_min();
        let unfenced: BookieSet = (0..unfenced_count).map(|i| i * e / unfenced_count).collect();
        prop_assert_eq!(unfenced.len(), unfenced_count);
        prop_assert!(sizes.fence_covers_every_write_set(&sizes.ensemble().difference(unfenced)));
    }

    #[test]
    fn quorum_prop_entry_verdict_matches_counting(
        sizes in sizes_strategy(),
        entry in any::<u64>(),
        codes in proptest::collection::vec(0usize..4, ENSEMBLE_SIZE_MAX),
    ) {
        let answers: Vec<ReplicaAnswer> =
            codes[..sizes.write_quorum_size()].iter().map(|code| ANSWERS[*code]).collect();
        let absent = answers.iter().filter(|a| **a == ReplicaAnswer::NoSuchEntry).count();
        let expected = if answers.contains(&ReplicaAnswer::Present) {
            EntryVerdict::Present
        } else if sizes.write_quorum_size() - absent < sizes.ack_quorum_size() {
            EntryVerdict::ConfirmedAbsent
        } else {
            EntryVerdict::Undecided
        };
        prop_assert_eq!(sizes.entry_verdict(&answers), expected);
        let mut by_index = sizes.entry_answers(entry);
        for (index, answer) in sizes.write_set(entry).iter().zip(&answers) {
            by_index.record(index, *answer);
        }
        prop_assert_eq!(by_index.verdict(), expected);
    }

    #[test]
    fn quorum_prop_ack_set_matches_definition(
        sizes in sizes_strategy(),
        entry in any::<u64>(),
        events in proptest::collection::vec((0usize..70, any::<bool>()), 0..200),
    ) {
        let mut set = sizes.ack_set(entry);
        let (mut acks, mut failures) = (0u64, 0u64);
        for (index, is_ack) in events {
            if is_ack {
                set.record_ack(index);
            } else {
                set.record_failure(index);
            }
            if index < ENSEMBLE_SIZE_MAX {
                if is_ack { acks |= 1 << index } else { failures |= 1 << index }
            }
        }
        check_ack_set_by_definition(&sizes, &set, acks, failures);
    }
}
