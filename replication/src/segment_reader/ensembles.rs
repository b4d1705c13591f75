//! The segment's ensembles as the reader sees them (which bookies hold an entry), and which
//! bookies failed or were slow lately (`Health`), to ask them last.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::SetupError;
use crate::quorum::QuorumSizes;

/// The ensembles by first entry: the first at entry 0, each of E distinct bookies.
#[derive(Debug)]
pub(super) struct Ensembles<B> {
    by_first_entry: BTreeMap<u64, Vec<B>>,
}

impl<B: Clone + PartialEq> Ensembles<B> {
    pub(super) fn new(
        by_first_entry: BTreeMap<u64, Vec<B>>,
        quorum: &QuorumSizes,
    ) -> Result<Self, SetupError> {
        match by_first_entry.keys().next() {
            None => return Err(SetupError::NoEnsemble),
            Some(&first) if first != 0 => return Err(SetupError::FirstEnsemble(first)),
            Some(_) => {}
        }
        for (&first_entry, ensemble) in &by_first_entry {
            if ensemble.len() != quorum.ensemble_size() {
                let (expected, actual) = (quorum.ensemble_size(), ensemble.len());
                return Err(SetupError::EnsembleSize { first_entry, expected, actual });
            }
            if ensemble.iter().enumerate().any(|(i, bookie)| ensemble[..i].contains(bookie)) {
                return Err(SetupError::DuplicateBookie { first_entry });
            }
        }
        Ok(Ensembles { by_first_entry })
    }

    /// The ensemble that holds `entry`: the one with the greatest first entry at most `entry`.
    pub(super) fn of(&self, entry: u64) -> &[B] {
        self.by_first_entry
            .range(..=entry)
            .next_back()
            .map(|(_, ensemble)| ensemble.as_slice())
            .unwrap_or_else(|| unreachable!("the first ensemble starts at entry 0"))
    }

    /// The last entry of the ensemble that holds `entry`, if another ensemble follows it.
    pub(super) fn last_of(&self, entry: u64) -> Option<u64> {
        let next = entry.checked_add(1)?;
        self.by_first_entry.range(next..).next().map(|(first, _)| first - 1)
    }

    /// The last ensemble: where an open segment's next entries go.
    pub(super) fn last(&self) -> &[B] {
        self.by_first_entry
            .values()
            .next_back()
            .map(Vec::as_slice)
            .unwrap_or_else(|| unreachable!("there is an ensemble"))
    }

    /// The members of W(`entry`) in write-set order, bookies not suspect first (the order
    /// among each kept).
    pub(super) fn candidates(
        &self,
        quorum: &QuorumSizes,
        entry: u64,
        health: &Health<B>,
        now: Instant,
    ) -> Vec<B> {
        let ensemble = self.of(entry);
        let mut members: Vec<B> =
            quorum.write_set(entry).iter().map(|index| ensemble[index].clone()).collect();
        members.sort_by_key(|bookie| health.is_suspect(bookie, now));
        members
    }
}

impl<B: Clone + PartialEq> Ensembles<B> {
    /// Every bookie of the ensemble holding `entry`, in ensemble order, bookies not suspect
    /// first: the choice for a READ_RANGE when every bookie holds every entry (E == Qw).
    pub(super) fn members(&self, entry: u64, health: &Health<B>, now: Instant) -> Vec<B> {
        let mut members = self.of(entry).to_vec();
        members.sort_by_key(|bookie| health.is_suspect(bookie, now));
        members
    }
}

/// `candidates[rotation]` among the healthy ones (all of them if none is healthy): candidates
/// come healthy first, so the healthy ones are a prefix.
pub(super) fn pick<B: Clone + PartialEq>(
    candidates: &[B],
    health: &Health<B>,
    rotation: usize,
    now: Instant,
) -> B {
    let healthy = candidates.iter().take_while(|bookie| !health.is_suspect(bookie, now)).count();
    let choices = if healthy == 0 { candidates.len() } else { healthy };
    candidates[rotation % choices].clone()
}

/// Bookies that failed a request or were slow, each until when it is asked last. Entries past
/// their time are dropped whenever one is added, so it holds at most the bookies marked within
/// one `suspect_duration`.
#[derive(Debug)]
pub(super) struct Health<B> {
    suspects: Vec<(B, Instant)>,
}

impl<B> Default for Health<B> {
    fn default() -> Self {
        Health { suspects: Vec::new() }
    }
}

impl<B: Clone + PartialEq> Health<B> {
    /// `bookie` failed or was slow at `now`.
    pub(super) fn suspect(&mut self, bookie: &B, now: Instant, duration: Duration) {
        self.suspects.retain(|(other, until)| *until > now && other != bookie);
        self.suspects.push((bookie.clone(), now + duration));
    }

    pub(super) fn is_suspect(&self, bookie: &B, now: Instant) -> bool {
        self.suspects.iter().any(|(other, until)| other == bookie && *until > now)
    }
}
