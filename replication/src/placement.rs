//! Placement policy: which bookies a new segment's ensemble gets, in which order, and which
//! bookie replaces a failed member (docs/rfcs/2026-11-26-replication.md, "Write path" → Create;
//! after BookKeeper's rack-aware and region-aware policies). Pure: no I/O, no clock, no global
//! randomness; every answer is a function of its arguments.
//!
//! Owns: the preference order between bookies, the zone and rack spread of write sets, and the
//! ensemble order. Does not own: the bookie registry, read-only detection (the caller passes
//! only writable bookies, or names the others in `exclude`), how `load` is computed, or the
//! segment metadata.
//!
//! Notation: E, Qw, Qa and W(e) as in `quorum`; q = ⌊E / Qw⌋. A label is a zone, or a rack
//! within its zone (rack "r1" in zone "a" and rack "r1" in zone "b" are different racks). An
//! empty zone or rack is unknown: all unknown zones count as one zone, all unknown racks of a
//! zone as one rack (BookKeeper's default rack), and an unknown zone never counts towards P2.
//! The eligible candidates are those not excluded (and, for a replacement, not in the ensemble).
//!
//! # Invariants
//!
//! - P1 (distinct, eligible): an ensemble is E distinct eligible candidates; a replacement is
//!   an eligible candidate, distinct from the other replacements. Fewer eligible candidates
//!   than needed is `NotEnoughBookies`; placement never fails because of zones or racks.
//! - P2 (zone spread): if Σ min(c_z, q) ≥ E over the known zones z, where c_z is the number
//!   of eligible candidates in zone z, every write set of the ensemble holds Qw bookies of Qw
//!   distinct known zones. This is exactly when such an ensemble exists: a zone that appears
//!   twice within Qw consecutive indexes breaks a write set, so a zone fits at most q times
//!   in the ring. "At least Qw zones" is not enough (E = 5, Qw = 3 needs 5 zones; E = 3,
//!   Qw = 2 needs 3); Qw zones are enough when E is a multiple of Qw and each has E / Qw
//!   bookies. Otherwise the spread is best effort (below).
//! - P3 (deterministic): the result depends only on the quorum sizes, the candidates and
//!   `exclude` as sets (not their order), the ensemble and indexes, and `seed`.
//! - P4 (least loaded): the preference order is `load` ascending, then `free_bytes`
//!   descending, then a hash of (`seed`, id), then id. An eligible candidate that precedes a
//!   chosen one in that order but was not chosen was skipped for spread: its zone is unknown or
//!   holds at least q chosen bookies. With one zone and one rack, the ensemble is the first E.
//! - P5 (replacement spread): a replacement for index i minimises, over the eligible
//!   candidates, the number of (write set containing i, other member) pairs that share its
//!   zone, a known zone first on a tie; then the same count for its rack; then P4's order. So
//!   when some eligible candidate has a known zone that no other member of a write set
//!   containing i has, the replacement has one too. A member's labels are read from
//!   `candidates` by id (members are never chosen, so the caller may pass them, excluded or
//!   not); a member missing from `candidates` counts as unknown.
//!
//! # Algorithm (`choose_ensemble`)
//!
//! 1. Rank the eligible candidates by P4's order.
//! 2. Caps: if P2's condition holds, at most q per known zone and no unknown zone. Otherwise
//!    the smallest zone cap from q up that lets E through (the unknown zone now counts as one
//!    zone), then the smallest rack cap from q up to it that still lets E through.
//! 3. Walk the ranking and take every candidate whose zone and rack are under their caps,
//!    until E are taken. Racks nest in zones, so the caps form a laminar matroid: the walk
//!    takes E exactly when the caps allow E, and takes the best ranked such set (P4).
//! 4. Order them (`spread`): group by zone, longest group first, and deal the groups column
//!    by column into B blocks of consecutive indexes, B = the longest group (each block
//!    ⌊E / B⌋ or one more indexes). Each zone lands in distinct blocks, its copies at least
//!    ⌊E / B⌋ ≥ Qw apart when every zone holds at most q, which gives P2. Inside a zone, its
//!    racks are dealt the same way first.
//! 5. Polish: swap pairs of indexes while that strictly improves (fewest distinct zones in a
//!    write set, total distinct zones over write sets, the same two for racks), at most
//!    `POLISH_PASSES_MAX` passes. The zones come first, so this never undoes P2.
//!
//! Cost: O(n log n) for n candidates, at most 2E cap trials of O(n) each, O(n) for the walk,
//! and O(E³) per polish pass (E ≤ 64).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::quorum::QuorumSizes;

/// At most this many improving passes of pairwise swaps over the ensemble order (step 5).
const POLISH_PASSES_MAX: usize = 8;

/// A bookie that placement may choose: a writable bookie of the registry with its labels and
/// its load hints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The bookie's id in the registry; unique among the candidates.
    pub id: String,
    /// Its zone (availability zone, region, data centre); empty when unknown.
    pub zone: String,
    /// Its rack within the zone; empty when unknown.
    pub rack: String,
    /// Free space, a hint: more is preferred when loads are equal.
    pub free_bytes: u64,
    /// A load hint computed by the caller (open segments hosted, shards): less is preferred.
    pub load: u64,
}

/// Why placement found no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer eligible candidates than bookies to choose (P1).
    #[error("placement needs {needed} bookies and only {available} are eligible")]
    NotEnoughBookies {
        /// The bookies to choose: E, or the number of indexes to replace.
        needed: usize,
        /// The eligible candidates.
        available: usize,
    },
    /// Two candidates have the same id.
    #[error("candidate {id} is listed more than once")]
    DuplicateCandidate {
        /// The repeated id.
        id: String,
    },
    /// The ensemble to change does not have E members.
    #[error("the ensemble has {actual} members, the quorum sizes say {expected}")]
    EnsembleSizeMismatch {
        /// E.
        expected: usize,
        /// The ensemble's length.
        actual: usize,
    },
    /// An index to replace is outside the ensemble.
    #[error("ensemble index {index} is outside an ensemble of {ensemble_size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// E.
        ensemble_size: usize,
    },
    /// An index to replace is listed more than once.
    #[error("ensemble index {index} is listed more than once")]
    DuplicateIndex {
        /// The repeated index.
        index: usize,
    },
}

/// Chooses a new segment's ensemble: E distinct eligible bookies, in ensemble order (index 0
/// first), spread over zones (P2) and racks, least loaded first (P4). Candidates whose id is
/// in `exclude` are never chosen; `seed` breaks ties (P3).
pub fn choose_ensemble(
    quorum: QuorumSizes,
    candidates: &[Candidate],
    exclude: &[&str],
    seed: u64,
) -> Result<Vec<String>, PlacementError> {
    let ensemble_size = quorum.ensemble_size();
    let pool = rank_eligible(candidates, exclude, &[], seed)?;
    if pool.len() < ensemble_size {
        return Err(PlacementError::NotEnoughBookies { needed: ensemble_size, available: pool.len() });
    }
    let labels = Labels::new(&pool);
    let caps = choose_caps(quorum, &labels);
    let chosen = take_under_caps(&labels, caps, ensemble_size);
    let ring = arrange(quorum, &labels, &chosen);
    Ok(ring.into_iter().map(|rank| pool[rank].id.clone()).collect())
}

/// Chooses the bookie that replaces `ensemble[index]` (P5): eligible (not excluded, not in
/// `ensemble`), spread away from the zones and racks of the write sets containing `index`,
/// then least loaded (P4).
pub fn choose_replacement(
    quorum: QuorumSizes,
    ensemble: &[String],
    index: usize,
    candidates: &[Candidate],
    exclude: &[&str],
    seed: u64,
) -> Result<String, PlacementError> {
    let mut changed = choose_replacements(quorum, ensemble, &[index], candidates, exclude, seed)?;
    Ok(changed.swap_remove(index))
}

/// Replaces `ensemble[i]` for every i in `indexes` and returns the new ensemble. The
/// replacements are chosen one at a time in the order of `indexes`, each by P5 against the
/// members already in place: the members still to be replaced do not count, the replacements
/// already chosen do.
pub fn choose_replacements(
    quorum: QuorumSizes,
    ensemble: &[String],
    indexes: &[usize],
    candidates: &[Candidate],
    exclude: &[&str],
    seed: u64,
) -> Result<Vec<String>, PlacementError> {
    let ensemble_size = quorum.ensemble_size();
    if ensemble.len() != ensemble_size {
        return Err(PlacementError::EnsembleSizeMismatch { expected: ensemble_size, actual: ensemble.len() });
    }
    let mut vacant = vec![false; ensemble_size];
    for &index in indexes {
        if index >= ensemble_size {
            return Err(PlacementError::IndexOutOfRange { index, ensemble_size });
        }
        if std::mem::replace(&mut vacant[index], true) {
            return Err(PlacementError::DuplicateIndex { index });
        }
    }
    let members: Vec<&str> = ensemble.iter().map(String::as_str).collect();
    let pool = rank_eligible(candidates, exclude, &members, seed)?;
    if pool.len() < indexes.len() {
        return Err(PlacementError::NotEnoughBookies { needed: indexes.len(), available: pool.len() });
    }
    let by_id: BTreeMap<&str, &Candidate> = candidates.iter().map(|c| (c.id.as_str(), c)).collect();
    // The (zone, rack) of each index; `None` while vacant.
    let mut placed: Vec<Option<(&str, &str)>> = (0..ensemble_size)
        .map(|i| {
            (!vacant[i])
                .then(|| by_id.get(members[i]).map_or(("", ""), |c| (c.zone.as_str(), c.rack.as_str())))
        })
        .collect();
    let mut taken = vec![false; pool.len()];
    let mut changed = ensemble.to_vec();
    for &index in indexes {
        let shared = shared_write_sets(quorum, index);
        let mut zone_weight: BTreeMap<&str, usize> = BTreeMap::new();
        let mut rack_weight: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (other, labels) in placed.iter().enumerate() {
            if let Some((zone, rack)) = *labels {
                *zone_weight.entry(zone).or_default() += shared[other];
                *rack_weight.entry((zone, rack)).or_default() += shared[other];
            }
        }
        let (rank, candidate) = pool
            .iter()
            .enumerate()
            .filter(|(rank, _)| !taken[*rank])
            .min_by_key(|(rank, c)| {
                let zone_conflicts = zone_weight.get(c.zone.as_str()).copied().unwrap_or(0);
                let rack_conflicts =
                    rack_weight.get(&(c.zone.as_str(), c.rack.as_str())).copied().unwrap_or(0);
                (zone_conflicts, c.zone.is_empty(), rack_conflicts, *rank)
            })
            .expect("the pool holds at least one candidate per index to replace");
        taken[rank] = true;
        placed[index] = Some((candidate.zone.as_str(), candidate.rack.as_str()));
        changed[index] = candidate.id.clone();
    }
    Ok(changed)
}

/// For each ensemble index, the number of distinct write sets it shares with `index` (0 for
/// `index` itself).
fn shared_write_sets(quorum: QuorumSizes, index: usize) -> Vec<usize> {
    let mut shared = vec![0; quorum.ensemble_size()];
    for entry in 0..quorum.distinct_write_set_count() as u64 {
        let write_set = quorum.write_set(entry);
        if write_set.contains(index) {
            write_set.iter().filter(|&other| other != index).for_each(|other| shared[other] += 1);
        }
    }
    shared
}

/// The eligible candidates (not in `exclude`, not in `members`) in P4's preference order, best
/// first. Refuses a candidate id listed twice.
fn rank_eligible<'a>(
    candidates: &'a [Candidate],
    exclude: &[&str],
    members: &[&str],
    seed: u64,
) -> Result<Vec<&'a Candidate>, PlacementError> {
    let mut ids = BTreeSet::new();
    if let Some(repeated) = candidates.iter().find(|c| !ids.insert(c.id.as_str())) {
        return Err(PlacementError::DuplicateCandidate { id: repeated.id.clone() });
    }
    let ineligible: BTreeSet<&str> = exclude.iter().chain(members).copied().collect();
    let mut pool: Vec<&Candidate> =
        candidates.iter().filter(|c| !ineligible.contains(c.id.as_str())).collect();
    pool.sort_by_cached_key(|c| (c.load, Reverse(c.free_bytes), tie_break(seed, &c.id), c.id.clone()));
    Ok(pool)
}

/// A pseudo-random rank for `id` under `seed`: splitmix64 folded over the id's bytes.
fn tie_break(seed: u64, id: &str) -> u64 {
    id.bytes().fold(splitmix64(seed), |hash, byte| splitmix64(hash ^ u64::from(byte)))
}

/// The splitmix64 finaliser (Steele, Lea, Flood 2014): a bijection that mixes every input bit.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ranked pool's labels as dense ids: zones, and racks within zones.
struct Labels {
    /// Zone id of each rank.
    zone: Vec<usize>,
    /// Rack id of each rank.
    rack: Vec<usize>,
    /// Whether each zone id is a known (non-empty) zone.
    zone_known: Vec<bool>,
    /// The zone id of each rack id.
    rack_zone: Vec<usize>,
    /// The candidates of each rack id.
    rack_size: Vec<usize>,
}

impl Labels {
    /// Interns the labels in rank order, so ids depend only on the ranking (P3).
    fn new(pool: &[&Candidate]) -> Labels {
        let mut zone_ids: BTreeMap<&str, usize> = BTreeMap::new();
        let mut rack_ids: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut labels =
            Labels { zone: vec![], rack: vec![], zone_known: vec![], rack_zone: vec![], rack_size: vec![] };
        for candidate in pool {
            let next_zone = zone_ids.len();
            let zone = *zone_ids.entry(candidate.zone.as_str()).or_insert(next_zone);
            if zone == next_zone {
                labels.zone_known.push(!candidate.zone.is_empty());
            }
            let next_rack = rack_ids.len();
            let rack =
                *rack_ids.entry((candidate.zone.as_str(), candidate.rack.as_str())).or_insert(next_rack);
            if rack == next_rack {
                labels.rack_zone.push(zone);
                labels.rack_size.push(0);
            }
            labels.rack_size[rack] += 1;
            labels.zone.push(zone);
            labels.rack.push(rack);
        }
        labels
    }

    /// How many bookies the walk of step 3 takes under `caps` (the laminar matroid's rank).
    fn capacity(&self, caps: Caps) -> usize {
        let mut per_zone = vec![0; self.zone_known.len()];
        for (rack, &zone) in self.rack_zone.iter().enumerate() {
            per_zone[zone] += self.rack_size[rack].min(caps.rack);
        }
        per_zone
            .iter()
            .enumerate()
            .filter(|&(zone, _)| caps.unknown_zone || self.zone_known[zone])
            .map(|(_, &n)| n.min(caps.zone))
            .sum()
    }
}

/// The most bookies of one zone and of one rack an ensemble may take, and whether the unknown
/// zone may be used (step 2).
#[derive(Clone, Copy, Debug)]
struct Caps {
    zone: usize,
    rack: usize,
    unknown_zone: bool,
}

/// Step 2: P2's caps when they allow E bookies, else the tightest zone cap, then rack cap.
fn choose_caps(quorum: QuorumSizes, labels: &Labels) -> Caps {
    let ensemble_size = quorum.ensemble_size();
    let per_write_set = ensemble_size / quorum.write_quorum_size();
    let strict = Caps { zone: per_write_set, rack: per_write_set, unknown_zone: false };
    if labels.capacity(strict) >= ensemble_size {
        return strict;
    }
    let fits = |zone, rack| labels.capacity(Caps { zone, rack, unknown_zone: true }) >= ensemble_size;
    // With every cap at E the walk takes every candidate, and the caller checked there are E.
    let zone = (per_write_set..=ensemble_size).find(|&zone| fits(zone, zone)).unwrap_or(ensemble_size);
    let rack = (per_write_set..=zone).find(|&rack| fits(zone, rack)).unwrap_or(zone);
    Caps { zone, rack, unknown_zone: true }
}

/// Step 3: the best ranked `count` candidates under `caps`, as ranks, best first.
fn take_under_caps(labels: &Labels, caps: Caps, count: usize) -> Vec<usize> {
    let mut zone_taken = vec![0; labels.zone_known.len()];
    let mut rack_taken = vec![0; labels.rack_size.len()];
    let mut chosen = Vec::with_capacity(count);
    for (rank, (&zone, &rack)) in labels.zone.iter().zip(&labels.rack).enumerate() {
        if chosen.len() == count {
            break;
        }
        let allowed = caps.unknown_zone || labels.zone_known[zone];
        if allowed && zone_taken[zone] < caps.zone && rack_taken[rack] < caps.rack {
            zone_taken[zone] += 1;
            rack_taken[rack] += 1;
            chosen.push(rank);
        }
    }
    assert_eq!(chosen.len(), count, "the caps were chosen to let {count} bookies through");
    chosen
}

/// Steps 4 and 5: the ensemble order of the `chosen` ranks.
fn arrange(quorum: QuorumSizes, labels: &Labels, chosen: &[usize]) -> Vec<usize> {
    // Racks, in the order their best bookie was chosen, with their chosen ranks.
    let mut racks: Vec<(usize, Vec<usize>)> = Vec::new();
    for &rank in chosen {
        let rack = labels.rack[rank];
        match racks.iter_mut().find(|(r, _)| *r == rack) {
            Some((_, ranks)) => ranks.push(rank),
            None => racks.push((rack, vec![rank])),
        }
    }
    // Zones, in the same order; each is its racks dealt by `spread`.
    let mut zones: Vec<usize> = Vec::new();
    for (rack, _) in &racks {
        let zone = labels.rack_zone[*rack];
        if !zones.contains(&zone) {
            zones.push(zone);
        }
    }
    let groups = zones
        .iter()
        .map(|&zone| {
            let in_zone = racks.iter().filter(|(rack, _)| labels.rack_zone[*rack] == zone);
            spread(in_zone.map(|(_, ranks)| ranks.clone()).collect())
        })
        .collect();
    polish(quorum, labels, spread(groups))
}

/// Step 4's deal: lays the groups' items on a ring so that each group's items are far apart.
/// Groups go longest first (ties keep their order); B = the longest group's length; the ring
/// is cut into B blocks of consecutive indexes (the first E mod B one longer), filled column
/// by column: the first index of every block, then the second, and so on.
fn spread(mut groups: Vec<Vec<usize>>) -> Vec<usize> {
    groups.sort_by_key(|group| Reverse(group.len()));
    let len: usize = groups.iter().map(Vec::len).sum();
    let blocks = groups.first().map_or(0, Vec::len);
    if blocks == 0 {
        return Vec::new();
    }
    let (short, long_count) = (len / blocks, len % blocks);
    let block_start = |block: usize| block * short + block.min(long_count);
    let slots = (0..=short).flat_map(|column| {
        (0..blocks)
            .filter(move |&block| column < short + usize::from(block < long_count))
            .map(move |b| (b, column))
    });
    let mut ring = vec![usize::MAX; len];
    for ((block, column), item) in slots.zip(groups.into_iter().flatten()) {
        ring[block_start(block) + column] = item;
    }
    assert!(ring.iter().all(|&item| item != usize::MAX), "the deal fills every index");
    ring
}

/// Step 5: improving pairwise swaps of `ring`, at most `POLISH_PASSES_MAX` passes.
fn polish(quorum: QuorumSizes, labels: &Labels, ring: Vec<usize>) -> Vec<usize> {
    // Dense label ids below E, so that scoring a ring costs O(E) whatever the pool's size.
    let zones = dense_ids(ring.iter().map(|&rank| labels.zone[rank]));
    let racks = dense_ids(ring.iter().map(|&rank| labels.rack[rank]));
    let mut slots: Vec<Slot> =
        ring.iter().zip(zones).zip(racks).map(|((&rank, zone), rack)| Slot { rank, zone, rack }).collect();
    let mut best = score(quorum, &slots);
    for _ in 0..POLISH_PASSES_MAX {
        let mut improved = false;
        for first in 0..slots.len() {
            for second in first + 1..slots.len() {
                if slots[first].rack == slots[second].rack {
                    continue; // Same rack, so same zone: the swap changes nothing.
                }
                slots.swap(first, second);
                let candidate = score(quorum, &slots);
                if candidate > best {
                    best = candidate;
                    improved = true;
                } else {
                    slots.swap(first, second);
                }
            }
        }
        if !improved {
            break;
        }
    }
    slots.into_iter().map(|slot| slot.rank).collect()
}

/// One ensemble index during step 5: its bookie's rank and dense zone and rack ids.
#[derive(Clone, Copy, Debug)]
struct Slot {
    rank: usize,
    zone: usize,
    rack: usize,
}

/// Renumbers ids 0, 1, ... in order of first appearance.
fn dense_ids(ids: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut seen: Vec<usize> = Vec::new();
    ids.map(|id| {
        seen.iter().position(|&s| s == id).unwrap_or_else(|| {
            seen.push(id);
            seen.len() - 1
        })
    })
    .collect()
}

/// Step 5's order on rings, larger is better: (fewest distinct zones in a write set, distinct
/// zones summed over the E write sets, the same two for racks). The unknown zone counts as one.
fn score(quorum: QuorumSizes, slots: &[Slot]) -> (usize, usize, usize, usize) {
    let (zone_min, zone_sum) = distinct_per_write_set(quorum, slots, |slot| slot.zone);
    let (rack_min, rack_sum) = distinct_per_write_set(quorum, slots, |slot| slot.rack);
    (zone_min, zone_sum, rack_min, rack_sum)
}

/// The fewest distinct labels (dense ids below E) in a write set of the ring, and their sum
/// over the write sets of entries 0..E, by a sliding window.
fn distinct_per_write_set(
    quorum: QuorumSizes,
    slots: &[Slot],
    label: impl Fn(&Slot) -> usize,
) -> (usize, usize) {
    let (len, width) = (slots.len(), quorum.write_quorum_size());
    let mut in_window = vec![0usize; len];
    let mut distinct = 0;
    for slot in &slots[..width] {
        in_window[label(slot)] += 1;
        distinct += usize::from(in_window[label(slot)] == 1);
    }
    let (mut min, mut sum) = (distinct, distinct);
    for first in 1..len {
        let (leaving, entering) = (label(&slots[first - 1]), label(&slots[(first + width - 1) % len]));
        in_window[leaving] -= 1;
        distinct -= usize::from(in_window[leaving] == 0);
        in_window[entering] += 1;
        distinct += usize::from(in_window[entering] == 1);
        min = min.min(distinct);
        sum += distinct;
    }
    (min, sum)
}
