//! The auditor's core: which bookies are lost, from registry snapshots and the clock, and
//! which segments to queue for them. Pure: no I/O; time is an input. The shell
//! (shell/audit.rs) feeds it registry listings and segment scans, and marks what it answers.
//!
//! Owns: the grace period of each vanished bookie, its cancellation, the set of lost bookies,
//! and which bookies a segment names that are lost (`lost_in`).
//! Does not own: the election (`ReplicationQueue`), listing, marking, timers.
//!
//! Invariants (the numbers are the module's, autorecovery/mod.rs):
//! - AR1: a bookie is reported lost only once no snapshot observed during the last `grace`
//!   showed it registered (writable or read-only): a snapshot showing it cancels its grace,
//!   and a later disappearance starts a new one. It is reported once per disappearance (`poll`
//!   moves it to the lost set), and forgotten once it re-registers. A bookie named by segments
//!   but never seen registered (it vanished before this auditor started) starts its grace
//!   when the auditor first sees it named.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dlog_metadata::schema::SegmentMetadata;

/// Lost-bookie detection with a grace period (AR1).
#[derive(Clone, Debug)]
pub struct LostBookies {
    grace: Duration,
    /// The bookies registered at the last snapshot.
    registered: BTreeSet<String>,
    /// Unregistered bookies within their grace: since when they are gone.
    vanished: BTreeMap<String, Instant>,
    /// Bookies whose grace ended, while they stay unregistered.
    lost: BTreeSet<String>,
}

impl LostBookies {
    /// A detector that calls a bookie lost after `grace` without registration.
    pub fn new(grace: Duration) -> LostBookies {
        LostBookies { grace, registered: BTreeSet::new(), vanished: BTreeMap::new(), lost: BTreeSet::new() }
    }

    /// A registry snapshot taken at `now`: every registered bookie id. A bookie registered
    /// before and absent now starts its grace; one present again cancels its grace or leaves
    /// the lost set (AR1).
    pub fn observe_registry(&mut self, registered: BTreeSet<String>, now: Instant) {
        for gone in self.registered.difference(&registered) {
            if !self.lost.contains(gone) {
                self.vanished.entry(gone.clone()).or_insert(now);
            }
        }
        for back in &registered {
            if self.vanished.remove(back).is_some() {
                tracing::info!(bookie = %back, "bookie registered again within its grace: not lost");
            }
            if self.lost.remove(back) {
                tracing::info!(bookie = %back, "a lost bookie registered again");
            }
        }
        self.registered = registered;
    }

    /// The bookies the segments name, from a complete scan at `now`: one not registered and
    /// not known gone starts its grace now (AR1). Lost bookies no segment names any more are
    /// forgotten (nothing is left to do for them), so the lost set stays bounded.
    pub fn observe_named(&mut self, named: &BTreeSet<String>, now: Instant) {
        for id in named {
            if !self.registered.contains(id) && !self.lost.contains(id) {
                self.vanished.entry(id.clone()).or_insert(now);
            }
        }
        self.lost.retain(|id| named.contains(id));
    }

    /// The bookies whose grace ended by `now`, each reported once per disappearance; they join
    /// the lost set (AR1).
    pub fn poll(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .vanished
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= self.grace)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            self.vanished.remove(id);
            self.lost.insert(id.clone());
        }
        due
    }

    /// When the next grace ends, if any bookie is within one.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.vanished.values().min().map(|since| *since + self.grace)
    }

    /// The bookies lost now.
    pub fn lost(&self) -> &BTreeSet<String> {
        &self.lost
    }

    /// Whether `id` is within its grace.
    pub fn is_vanishing(&self, id: &str) -> bool {
        self.vanished.contains_key(id)
    }
}

/// The bookies `meta`'s ensembles name.
pub fn named_bookies(meta: &SegmentMetadata) -> impl Iterator<Item = &String> {
    meta.ensembles.values().flatten()
}

/// The bookies of `lost` that `meta` names in some ensemble, sorted, without repeats: what to
/// queue the segment with (empty: nothing to queue).
pub fn lost_in(meta: &SegmentMetadata, lost: &BTreeSet<String>) -> Vec<String> {
    let named: BTreeSet<&String> = named_bookies(meta).filter(|id| lost.contains(*id)).collect();
    named.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use dlog_metadata::schema::{DigestType, SegmentState};

    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    const GRACE: Duration = Duration::from_secs(30);

    #[expect(clippy::disallowed_methods, reason = "an arbitrary origin: the tests add durations to it")]
    fn origin() -> Instant {
        Instant::now()
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_bookie_gone_for_the_grace_is_lost_once() {
        let t0 = origin();
        let mut d = LostBookies::new(GRACE);
        d.observe_registry(set(&["a", "b", "c"]), t0);
        assert!(d.poll(at(t0, 100)).is_empty(), "nothing vanished");
        d.observe_registry(set(&["a", "c"]), at(t0, 10));
        assert!(d.is_vanishing("b"));
        assert_eq!(d.next_deadline(), Some(at(t0, 40)));
        assert!(d.poll(at(t0, 39)).is_empty(), "within the grace");
        // Later snapshots without it do not restart the grace.
        d.observe_registry(set(&["a", "c"]), at(t0, 35));
        assert_eq!(d.poll(at(t0, 40)), vec!["b".to_owned()]);
        assert_eq!(d.lost(), &set(&["b"]));
        assert!(d.poll(at(t0, 1000)).is_empty(), "reported once");
        d.observe_registry(set(&["a", "c"]), at(t0, 1001));
        assert!(d.poll(at(t0, 5000)).is_empty(), "still reported once");
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn coming_back_within_the_grace_cancels() {
        let t0 = origin();
        let mut d = LostBookies::new(GRACE);
        d.observe_registry(set(&["a", "b"]), t0);
        d.observe_registry(set(&["a"]), at(t0, 1));
        d.observe_registry(set(&["a", "b"]), at(t0, 29));
        assert!(!d.is_vanishing("b"));
        assert!(d.poll(at(t0, 100)).is_empty());
        // A new disappearance starts a new grace, from its own start.
        d.observe_registry(set(&["a"]), at(t0, 200));
        assert!(d.poll(at(t0, 229)).is_empty());
        assert_eq!(d.poll(at(t0, 230)), vec!["b".to_owned()]);
    }

    #[test]
    fn a_lost_bookie_that_returns_is_forgotten_and_can_be_lost_again() {
        let t0 = origin();
        let mut d = LostBookies::new(GRACE);
        d.observe_registry(set(&["a", "b"]), t0);
        d.observe_registry(set(&["a"]), t0);
        assert_eq!(d.poll(at(t0, 30)), vec!["b".to_owned()]);
        d.observe_registry(set(&["a", "b"]), at(t0, 60));
        assert!(d.lost().is_empty());
        d.observe_registry(set(&["a"]), at(t0, 70));
        assert_eq!(d.poll(at(t0, 100)), vec!["b".to_owned()]);
    }

    #[test]
    fn a_named_bookie_never_seen_registered_gets_a_grace_from_first_sight() {
        let t0 = origin();
        let mut d = LostBookies::new(GRACE);
        d.observe_registry(set(&["a"]), t0);
        d.observe_named(&set(&["a", "z"]), at(t0, 5));
        assert!(d.poll(at(t0, 34)).is_empty());
        // A second scan does not restart it.
        d.observe_named(&set(&["a", "z"]), at(t0, 20));
        assert_eq!(d.poll(at(t0, 35)), vec!["z".to_owned()]);
        // Still named: stays lost; once no segment names it, forgotten.
        d.observe_named(&set(&["a", "z"]), at(t0, 40));
        assert_eq!(d.lost(), &set(&["z"]));
        d.observe_named(&set(&["a"]), at(t0, 50));
        assert!(d.lost().is_empty());
        assert!(d.poll(at(t0, 500)).is_empty(), "not named, not registered: not vanishing again");
    }

    #[test]
    fn a_registered_named_bookie_is_never_lost() {
        let t0 = origin();
        let mut d = LostBookies::new(Duration::ZERO);
        d.observe_registry(set(&["a", "b"]), t0);
        d.observe_named(&set(&["a", "b"]), t0);
        assert!(d.poll(at(t0, 1000)).is_empty());
    }

    #[test]
    fn segments_are_queued_with_the_lost_bookies_they_name() {
        let meta = SegmentMetadata {
            ensemble_size: 3,
            write_quorum_size: 2,
            ack_quorum_size: 2,
            digest_type: DigestType::Crc32c,
            master_key: Bytes::from_static(b"k"),
            state: SegmentState::Open,
            ensembles: BTreeMap::from([
                (0, vec!["a".into(), "b".into(), "c".into()]),
                (10, vec!["a".into(), "d".into(), "c".into()]),
            ]),
            created_ms: 0,
            owner: None,
        };
        assert_eq!(lost_in(&meta, &set(&["b", "c", "x"])), vec!["b".to_owned(), "c".to_owned()]);
        assert_eq!(lost_in(&meta, &set(&["d"])), vec!["d".to_owned()]);
        assert!(lost_in(&meta, &set(&["x"])).is_empty());
        assert_eq!(named_bookies(&meta).count(), 6);
    }
}
