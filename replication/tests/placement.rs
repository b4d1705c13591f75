//! The placement policy (`placement`): P1 to P5 on hand-made bookie sets, then P1 to P5 by
//! proptest over random candidate sets and every valid quorum size up to E = 7.

use std::collections::{BTreeMap, BTreeSet};

use dlog_replication::placement::{
    Candidate, PlacementError, choose_ensemble, choose_replacement, choose_replacements,
};
use dlog_replication::quorum::QuorumSizes;
use proptest::prelude::*;

fn sizes(e: usize, qw: usize, qa: usize) -> QuorumSizes {
    QuorumSizes::new(e, qw, qa).unwrap()
}

fn bookie(id: &str, zone: &str, rack: &str, load: u64) -> Candidate {
    Candidate { id: id.into(), zone: zone.into(), rack: rack.into(), free_bytes: 1 << 30, load }
}

/// `per_zone` bookies in each of `zones`, all on their own rack, ids "z{zone}-{i}", load 0.
fn zoned(zones: &[&str], per_zone: usize) -> Vec<Candidate> {
    zones
        .iter()
        .flat_map(|zone| {
            (0..per_zone).map(move |i| bookie(&format!("{zone}-{i}"), zone, &format!("r{i}"), 0))
        })
        .collect()
}

fn by_id(candidates: &[Candidate]) -> BTreeMap<&str, &Candidate> {
    candidates.iter().map(|c| (c.id.as_str(), c)).collect()
}

/// The labels (zone, or (zone, rack) when `racks`) of each write set of `ensemble`, entries 0..E.
fn write_set_labels(
    quorum: QuorumSizes,
    ensemble: &[String],
    candidates: &[Candidate],
    racks: bool,
) -> Vec<Vec<String>> {
    let by_id = by_id(candidates);
    (0..quorum.ensemble_size() as u64)
        .map(|entry| {
            quorum
                .write_set(entry)
                .iter()
                .map(|index| {
                    let c = by_id[ensemble[index].as_str()];
                    if racks { format!("{}/{}", c.zone, c.rack) } else { c.zone.clone() }
                })
                .collect()
        })
        .collect()
}

/// Whether every write set holds Qw distinct known zones (P2's conclusion).
fn zones_spread(quorum: QuorumSizes, ensemble: &[String], candidates: &[Candidate]) -> bool {
    write_set_labels(quorum, ensemble, candidates, false).iter().all(|zones| {
        let distinct: BTreeSet<&String> = zones.iter().collect();
        distinct.len() == zones.len() && zones.iter().all(|zone| !zone.is_empty())
    })
}

/// The fewest distinct labels in a write set.
fn min_distinct(labels: &[Vec<String>]) -> usize {
    labels.iter().map(|set| set.iter().collect::<BTreeSet<_>>().len()).min().unwrap()
}

/// P2's condition: Σ min(c_z, ⌊E/Qw⌋) ≥ E over the known zones of the eligible candidates.
fn spread_possible(quorum: QuorumSizes, eligible: &[&Candidate]) -> bool {
    let per_write_set = quorum.ensemble_size() / quorum.write_quorum_size();
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for c in eligible.iter().filter(|c| !c.zone.is_empty()) {
        *per_zone.entry(c.zone.as_str()).or_default() += 1;
    }
    per_zone.values().map(|&n| n.min(per_write_set)).sum::<usize>() >= quorum.ensemble_size()
}

// ---- choose_ensemble ------------------------------------------------------------------------

#[test]
fn too_few_eligible_bookies_is_not_enough_bookies() {
    let candidates = zoned(&["a", "b"], 2);
    let q = sizes(3, 2, 2);
    assert_eq!(
        choose_ensemble(q, &candidates, &["a-0", "b-1"], 1),
        Err(PlacementError::NotEnoughBookies { needed: 3, available: 2 })
    );
    assert_eq!(
        choose_ensemble(q, &[], &[], 1),
        Err(PlacementError::NotEnoughBookies { needed: 3, available: 0 })
    );
    assert_eq!(choose_ensemble(q, &candidates, &["a-0"], 1).unwrap().len(), 3);
}

#[test]
fn a_repeated_candidate_id_is_refused() {
    let mut candidates = zoned(&["a"], 3);
    candidates.push(bookie("a-1", "b", "", 0));
    assert_eq!(
        choose_ensemble(sizes(3, 3, 2), &candidates, &[], 1),
        Err(PlacementError::DuplicateCandidate { id: "a-1".into() })
    );
}

#[test]
fn p1_excluded_bookies_are_never_chosen() {
    let candidates = zoned(&["a", "b", "c"], 3);
    let exclude = ["a-0", "b-0", "c-0", "a-1"];
    let ensemble = choose_ensemble(sizes(5, 3, 2), &candidates, &exclude, 9).unwrap();
    assert_eq!(ensemble.iter().collect::<BTreeSet<_>>().len(), 5);
    assert!(ensemble.iter().all(|id| !exclude.contains(&id.as_str())));
}

#[test]
fn p2_spreads_write_sets_over_zones_even_against_load() {
    // Zone a is much less loaded: P4 alone would take all six from it.
    let mut candidates = zoned(&["b", "c"], 4);
    candidates.extend((0..6).map(|i| bookie(&format!("a-{i}"), "a", "", 0)));
    for c in candidates.iter_mut().filter(|c| c.zone != "a") {
        c.load = 100;
    }
    let q = sizes(6, 3, 2);
    let ensemble = choose_ensemble(q, &candidates, &[], 3).unwrap();
    assert!(zones_spread(q, &ensemble, &candidates), "{ensemble:?}");
}

#[test]
fn p2_needs_more_than_qw_zones_when_e_is_not_a_multiple() {
    // E = 5, Qw = 3: every pair of indexes shares a write set, so full spread needs 5 zones.
    let q = sizes(5, 3, 2);
    let three = zoned(&["a", "b", "c"], 4);
    let ensemble = choose_ensemble(q, &three, &[], 1).unwrap();
    assert!(!zones_spread(q, &ensemble, &three));
    // Best effort: zone counts 2, 2, 1 leave at least 2 zones in every write set.
    assert_eq!(min_distinct(&write_set_labels(q, &ensemble, &three, false)), 2);
    let five = zoned(&["a", "b", "c", "d", "e"], 1);
    let ensemble = choose_ensemble(q, &five, &[], 1).unwrap();
    assert!(zones_spread(q, &ensemble, &five));
}

#[test]
fn best_effort_with_fewer_zones_spreads_as_many_write_sets_as_possible() {
    // E = 3, Qw = 2 over two zones: one write set must repeat a zone, the other two do not.
    let q = sizes(3, 2, 2);
    let candidates = zoned(&["a", "b"], 3);
    let ensemble = choose_ensemble(q, &candidates, &[], 5).unwrap();
    let labels = write_set_labels(q, &ensemble, &candidates, false);
    let spread = labels.iter().filter(|set| set[0] != set[1]).count();
    assert_eq!(spread, 2, "{labels:?}");
    // E = 6, Qw = 3 over two zones: every write set holds both.
    let q = sizes(6, 3, 2);
    let ensemble = choose_ensemble(q, &candidates, &[], 5).unwrap();
    assert_eq!(min_distinct(&write_set_labels(q, &ensemble, &candidates, false)), 2);
}

#[test]
fn one_zone_never_fails() {
    let candidates = zoned(&["a"], 7);
    for e in 1..=7 {
        for qw in 1..=e {
            let ensemble = choose_ensemble(sizes(e, qw, 1), &candidates, &[], 0).unwrap();
            assert_eq!(ensemble.iter().collect::<BTreeSet<_>>().len(), e);
        }
    }
}

#[test]
fn known_zones_are_preferred_to_unknown_ones_when_they_can_spread() {
    let mut candidates = zoned(&["a", "b", "c"], 1);
    candidates.extend((0..5).map(|i| bookie(&format!("u-{i}"), "", "", 0)));
    for c in candidates.iter_mut().filter(|c| !c.zone.is_empty()) {
        c.load = 50;
    }
    let q = sizes(3, 3, 2);
    let ensemble = choose_ensemble(q, &candidates, &[], 2).unwrap();
    assert_eq!(
        ensemble.iter().collect::<BTreeSet<_>>(),
        ["a-0", "b-0", "c-0"].iter().map(|s| s.to_string()).collect::<Vec<_>>().iter().collect()
    );
    // Two known zones for three: the unknown zone counts as a third, rather than repeating one.
    let ensemble = choose_ensemble(q, &candidates, &["c-0"], 2).unwrap();
    let zones: BTreeSet<String> =
        ensemble.iter().map(|id| by_id(&candidates)[id.as_str()].zone.clone()).collect();
    assert_eq!(zones.len(), 3, "{ensemble:?}");
}

#[test]
fn racks_spread_write_sets_within_one_zone() {
    // No zones at all (unknown), three racks of three: every write set on three racks.
    let candidates: Vec<Candidate> =
        (0..9).map(|i| bookie(&format!("b{i}"), "", &format!("r{}", i % 3), 0)).collect();
    for (e, qw) in [(3, 3), (6, 3), (3, 2), (6, 2), (5, 2)] {
        let q = sizes(e, qw, 1);
        let ensemble = choose_ensemble(q, &candidates, &[], 11).unwrap();
        let labels = write_set_labels(q, &ensemble, &candidates, true);
        assert_eq!(min_distinct(&labels), qw, "E={e} Qw={qw}: {labels:?}");
    }
    // Racks come after zones: zones a and b, racks only in a.
    let mut candidates = zoned(&["b"], 6);
    candidates.extend((0..6).map(|i| bookie(&format!("a-{i}"), "a", &format!("r{}", i % 3), 0)));
    let q = sizes(6, 3, 2);
    let ensemble = choose_ensemble(q, &candidates, &[], 4).unwrap();
    assert_eq!(min_distinct(&write_set_labels(q, &ensemble, &candidates, false)), 2);
    assert_eq!(min_distinct(&write_set_labels(q, &ensemble, &candidates, true)), 3);
}

#[test]
fn p3_the_same_inputs_in_any_order_give_the_same_ensemble() {
    let mut candidates = zoned(&["a", "b", "c", "d"], 5);
    for (i, c) in candidates.iter_mut().enumerate() {
        c.load = (i % 3) as u64;
    }
    let q = sizes(5, 3, 2);
    let first = choose_ensemble(q, &candidates, &["a-1", "c-2"], 77).unwrap();
    assert_eq!(choose_ensemble(q, &candidates, &["a-1", "c-2"], 77).unwrap(), first);
    candidates.reverse();
    candidates.swap(3, 11);
    assert_eq!(choose_ensemble(q, &candidates, &["c-2", "a-1"], 77).unwrap(), first);
}

#[test]
fn p3_the_seed_breaks_ties() {
    let candidates: Vec<Candidate> = (0..20).map(|i| bookie(&format!("b{i}"), "", "", 0)).collect();
    let q = sizes(3, 2, 2);
    let chosen: BTreeSet<Vec<String>> =
        (0..20).map(|seed| choose_ensemble(q, &candidates, &[], seed).unwrap()).collect();
    assert!(chosen.len() > 10, "20 seeds gave only {} ensembles", chosen.len());
}

#[test]
fn p4_least_loaded_then_most_free_space_first() {
    let mut candidates: Vec<Candidate> = (0..8).map(|i| bookie(&format!("b{i}"), "a", "r", 10 - i)).collect();
    // Loads b7 = 3 .. b0 = 10; b1 joins b7 at 3, b0 joins b6 at 4 with more free space.
    candidates[1].load = 3;
    candidates[0].load = 4;
    candidates[0].free_bytes = 1 << 40;
    candidates[6].free_bytes = 1;
    let ensemble = choose_ensemble(sizes(3, 2, 2), &candidates, &[], 0).unwrap();
    let expected: BTreeSet<String> = ["b7", "b1", "b0"].iter().map(|s| s.to_string()).collect();
    assert_eq!(ensemble.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn a_thousand_candidates_are_cheap() {
    let candidates: Vec<Candidate> = (0..1000)
        .map(|i| bookie(&format!("b{i}"), &format!("z{}", i % 3), &format!("r{}", i % 40), i % 17))
        .collect();
    for (e, qw) in [(7, 3), (7, 7), (6, 3), (64, 3), (64, 64)] {
        let q = sizes(e, qw, 1);
        let ensemble = choose_ensemble(q, &candidates, &[], 1).unwrap();
        assert_eq!(ensemble.iter().collect::<BTreeSet<_>>().len(), e);
        if e == 6 {
            assert!(zones_spread(q, &ensemble, &candidates));
        }
    }
}

// ---- choose_replacement ---------------------------------------------------------------------

#[test]
fn replacement_avoids_the_zones_of_its_write_sets_even_against_load() {
    // E = 6, Qw = 3 over zones a, b, c; index 0 shares write sets with indexes 4, 5, 1, 2.
    let candidates = zoned(&["a", "b", "c", "d"], 3);
    let q = sizes(6, 3, 2);
    let ensemble = choose_ensemble(q, &candidates, &["d-0", "d-1", "d-2"], 1).unwrap();
    let zone_of = |id: &str| by_id(&candidates)[id].zone.clone();
    let mut loaded = candidates.clone();
    for c in loaded.iter_mut().filter(|c| c.zone == "d") {
        c.load = 1000;
    }
    // The failed member's own zone is also free of conflicts once it leaves: it and d both are.
    let replacement = choose_replacement(q, &ensemble, 0, &loaded, &[], 1).unwrap();
    assert!(!ensemble.contains(&replacement));
    let mut changed = ensemble.clone();
    changed[0] = replacement;
    assert!(zones_spread(q, &changed, &loaded), "{changed:?}");
    // With the failed member's zone excluded, only d avoids the neighbours, however loaded.
    let same_zone: Vec<&str> =
        candidates.iter().filter(|c| c.zone == zone_of(&ensemble[0])).map(|c| c.id.as_str()).collect();
    let replacement = choose_replacement(q, &ensemble, 0, &loaded, &same_zone, 1).unwrap();
    assert_eq!(zone_of(&replacement), "d");
}

#[test]
fn replacement_falls_back_to_least_loaded_when_no_zone_is_free() {
    let q = sizes(3, 3, 2);
    let candidates = zoned(&["a", "b", "c"], 2);
    let ensemble: Vec<String> = ["a-0", "b-0", "c-0"].iter().map(|s| s.to_string()).collect();
    let mut loaded = candidates.clone();
    loaded.iter_mut().for_each(|c| c.load = 5);
    loaded.iter_mut().find(|c| c.id == "b-1").unwrap().load = 1;
    // a-1 avoids the other members' zones; with a excluded, nothing does: the least loaded.
    assert_eq!(choose_replacement(q, &ensemble, 0, &loaded, &[], 3).unwrap(), "a-1");
    assert_eq!(choose_replacement(q, &ensemble, 0, &loaded, &["a-1"], 3).unwrap(), "b-1");
}

#[test]
fn replacement_errors() {
    let q = sizes(3, 2, 2);
    let candidates = zoned(&["a", "b", "c"], 1);
    let ensemble: Vec<String> = ["a-0", "b-0", "c-0"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        choose_replacement(q, &ensemble, 0, &candidates, &[], 0),
        Err(PlacementError::NotEnoughBookies { needed: 1, available: 0 })
    );
    assert_eq!(
        choose_replacement(q, &ensemble, 3, &candidates, &[], 0),
        Err(PlacementError::IndexOutOfRange { index: 3, ensemble_size: 3 })
    );
    assert_eq!(
        choose_replacement(q, &ensemble[..2], 0, &candidates, &[], 0),
        Err(PlacementError::EnsembleSizeMismatch { expected: 3, actual: 2 })
    );
    assert_eq!(
        choose_replacements(q, &ensemble, &[1, 1], &candidates, &[], 0),
        Err(PlacementError::DuplicateIndex { index: 1 })
    );
    let more = zoned(&["d"], 1);
    assert_eq!(
        choose_replacements(q, &ensemble, &[0, 2], &more, &[], 0),
        Err(PlacementError::NotEnoughBookies { needed: 2, available: 1 })
    );
}

#[test]
fn several_replacements_are_distinct_and_spread_against_each_other() {
    // E = 4, Qw = 2 on zones a, b, a, b; indexes 1 and 2 (neighbours) fail. Zones c and d are
    // free, equally loaded and the least loaded: the two replacements must not share a zone.
    let q = sizes(4, 2, 2);
    let mut candidates = zoned(&["a", "b"], 2);
    candidates.extend((0..3).map(|i| bookie(&format!("c-{i}"), "c", "", 0)));
    candidates.extend((0..3).map(|i| bookie(&format!("d-{i}"), "d", "", 1)));
    for c in candidates.iter_mut().filter(|c| c.zone == "a" || c.zone == "b") {
        c.load = 10;
    }
    let ensemble: Vec<String> = ["a-0", "b-0", "a-1", "b-1"].iter().map(|s| s.to_string()).collect();
    let changed = choose_replacements(q, &ensemble, &[1, 2], &candidates, &[], 0).unwrap();
    assert_eq!((&changed[0], &changed[3]), (&ensemble[0], &ensemble[3]));
    assert!(zones_spread(q, &changed, &candidates), "{changed:?}");
    assert_ne!(changed[1], changed[2]);
}

// ---- proptest -------------------------------------------------------------------------------

/// (E, Qw, Qa) with 1 ≤ Qa ≤ Qw ≤ E ≤ 7, filtered through `QuorumSizes::new`.
fn quorum_strategy() -> impl Strategy<Value = QuorumSizes> {
    (1usize..=7, 1usize..=7, 1usize..=7)
        .prop_filter_map("valid sizes", |(e, qw, qa)| QuorumSizes::new(e, qw, qa).ok())
}

/// Up to 24 candidates over `zones` zones (plus unknown) and 3 racks (plus unknown), small loads
/// so that ties are common.
fn candidates_strategy() -> impl Strategy<Value = Vec<Candidate>> {
    (1usize..=7).prop_flat_map(|zones| {
        prop::collection::vec((0..=zones, 0usize..4, 0u64..4, 0u64..3), 0..24).prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (zone, rack, load, free))| Candidate {
                    id: format!("b{i}"),
                    zone: if zone == 0 { String::new() } else { format!("z{zone}") },
                    rack: if rack == 0 { String::new() } else { format!("r{rack}") },
                    free_bytes: free,
                    load,
                })
                .collect()
        })
    })
}

/// P4's preference key.
fn preference(c: &Candidate) -> (u64, std::cmp::Reverse<u64>) {
    (c.load, std::cmp::Reverse(c.free_bytes))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// P1 to P4 for ensembles over random candidates and exclusions.
    #[test]
    fn ensembles_keep_p1_to_p4(
        quorum in quorum_strategy(),
        candidates in candidates_strategy(),
        excluded in prop::collection::vec(prop::bool::weighted(0.2), 24),
        seed in any::<u64>(),
    ) {
        let exclude: Vec<&str> =
            candidates.iter().zip(&excluded).filter(|(_, x)| **x).map(|(c, _)| c.id.as_str()).collect();
        let eligible: Vec<&Candidate> =
            candidates.iter().filter(|c| !exclude.contains(&c.id.as_str())).collect();
        let e = quorum.ensemble_size();
        let result = choose_ensemble(quorum, &candidates, &exclude, seed);
        if eligible.len() < e {
            let not_enough = PlacementError::NotEnoughBookies { needed: e, available: eligible.len() };
            prop_assert_eq!(result, Err(not_enough));
            return Ok(());
        }
        let ensemble = result.unwrap();
        // P1.
        prop_assert_eq!(ensemble.len(), e);
        prop_assert_eq!(ensemble.iter().collect::<BTreeSet<_>>().len(), e);
        prop_assert!(ensemble.iter().all(|id| eligible.iter().any(|c| &c.id == id)));
        // P2.
        if spread_possible(quorum, &eligible) {
            prop_assert!(zones_spread(quorum, &ensemble, &candidates), "{:?}", ensemble);
        }
        // P3: order does not matter.
        let mut reversed = candidates.clone();
        reversed.reverse();
        let mut exclude_reversed = exclude.clone();
        exclude_reversed.reverse();
        let again = choose_ensemble(quorum, &reversed, &exclude_reversed, seed).unwrap();
        prop_assert_eq!(again, ensemble.clone());
        // P4: a better candidate left out was skipped for spread.
        let per_write_set = e / quorum.write_quorum_size();
        let chosen: Vec<&Candidate> = eligible.iter().copied().filter(|c| ensemble.contains(&c.id)).collect();
        let worst = chosen.iter().map(|c| preference(c)).max().unwrap();
        for skipped in eligible.iter().filter(|c| !ensemble.contains(&c.id) && preference(c) < worst) {
            let same_zone = chosen.iter().filter(|c| c.zone == skipped.zone).count();
            prop_assert!(
                skipped.zone.is_empty() || same_zone >= per_write_set,
                "{} skipped with {} chosen in its zone", skipped.id, same_zone
            );
        }
    }

    /// P1 and P5 for replacements of one or more indexes of a chosen ensemble.
    #[test]
    fn replacements_keep_p1_and_p5(
        quorum in quorum_strategy(),
        candidates in candidates_strategy(),
        excluded in prop::collection::vec(prop::bool::weighted(0.2), 24),
        indexes in prop::collection::vec(0usize..7, 1..4),
        seed in any::<u64>(),
    ) {
        let Ok(ensemble) = choose_ensemble(quorum, &candidates, &[], seed) else { return Ok(()) };
        let e = quorum.ensemble_size();
        let mut unique = BTreeSet::new();
        let indexes: Vec<usize> = indexes.into_iter().map(|i| i % e).filter(|i| unique.insert(*i)).collect();
        let exclude: Vec<&str> =
            candidates.iter().zip(&excluded).filter(|(_, x)| **x).map(|(c, _)| c.id.as_str()).collect();
        let eligible: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| !exclude.contains(&c.id.as_str()) && !ensemble.contains(&c.id))
            .collect();
        let result = choose_replacements(quorum, &ensemble, &indexes, &candidates, &exclude, seed);
        if eligible.len() < indexes.len() {
            prop_assert_eq!(
                result,
                Err(PlacementError::NotEnoughBookies { needed: indexes.len(), available: eligible.len() })
            );
            return Ok(());
        }
        let changed = result.unwrap();
        // P1: only the indexes change, to distinct eligible bookies.
        prop_assert_eq!(changed.iter().collect::<BTreeSet<_>>().len(), e);
        for i in 0..e {
            if indexes.contains(&i) {
                prop_assert!(eligible.iter().any(|c| c.id == changed[i]));
            } else {
                prop_assert_eq!(&changed[i], &ensemble[i]);
            }
        }
        // P5, for the first index: a known zone free of its write sets' zones if one exists.
        let first = indexes[0];
        let by_id = by_id(&candidates);
        let mut neighbour_zones = BTreeSet::new();
        for entry in 0..e as u64 {
            let write_set = quorum.write_set(entry);
            if write_set.contains(first) {
                for other in write_set.iter().filter(|o| *o != first && !indexes.contains(o)) {
                    neighbour_zones.insert(by_id[ensemble[other].as_str()].zone.as_str());
                }
            }
        }
        let free = |c: &Candidate| !c.zone.is_empty() && !neighbour_zones.contains(c.zone.as_str());
        if eligible.iter().any(|c| free(c)) {
            prop_assert!(free(by_id[changed[first].as_str()]), "{:?} -> {:?}", ensemble, changed);
        }
        // P3.
        let single = choose_replacements(quorum, &ensemble, &indexes, &candidates, &exclude, seed).unwrap();
        prop_assert_eq!(single, changed);
    }
}
