//! `Quarantine`: the bookies this client replaced in an ensemble lately, which its next
//! placements avoid while other bookies can serve.
//!
//! Why: a bookie that died stays registered until its lease expires (the registration ttl,
//! 10 s by default). Without memory, an ensemble change replacing a dead member could choose
//! another dead bookie still registered, whose failure makes the next change choose the first
//! one again (it is no longer a member): the chaos test saw a segment reach 140 ensembles in
//! 600 s that way.
//!
//! Invariants:
//! - QU1: a bookie is avoided for `QUARANTINE` after the last change that replaced it, then
//!   forgotten; the map holds at most `QUARANTINED_MAX` bookies (the oldest go first).
//! - QU2: avoidance never makes placement fail: when the bookies not avoided are too few,
//!   placement runs again over all of them (`placing`), as it did before quarantine existed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::placement::PlacementError;

/// How long a replaced bookie is avoided (QU1): longer than a registration's default ttl, so
/// a dead bookie is avoided until its registration is gone.
pub(crate) const QUARANTINE: Duration = Duration::from_secs(30);
/// Most bookies remembered (QU1).
const QUARANTINED_MAX: usize = 1024;

/// Bookies replaced lately, with when their quarantine ends.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    until: Mutex<HashMap<String, Instant>>,
}

impl Quarantine {
    /// Avoid `ids` until `now + QUARANTINE`.
    pub(crate) fn add<'a>(&self, ids: impl IntoIterator<Item = &'a String>, now: Instant) {
        let mut until = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids {
            until.insert(id.clone(), now + QUARANTINE);
        }
        until.retain(|_, end| *end > now);
        while until.len() > QUARANTINED_MAX {
            let Some(oldest) = until.iter().min_by_key(|(_, end)| **end).map(|(id, _)| id.clone()) else {
                break;
            };
            until.remove(&oldest);
        }
    }

    /// The bookies avoided at `now`.
    pub(crate) fn avoided(&self, now: Instant) -> Vec<String> {
        let until = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        until.iter().filter(|(_, end)| **end > now).map(|(id, _)| id.clone()).collect()
    }
}

/// Runs `place` excluding `avoided`, and again excluding nothing if that fails (QU2).
pub(crate) fn placing<T>(
    avoided: &[String],
    place: impl Fn(&[&str]) -> Result<T, PlacementError>,
) -> Result<T, PlacementError> {
    if !avoided.is_empty() {
        let exclude: Vec<&str> = avoided.iter().map(String::as_str).collect();
        if let Ok(placed) = place(&exclude) {
            return Ok(placed);
        }
    }
    place(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{self, Candidate};
    use crate::quorum::QuorumSizes;

    fn candidate(id: &str) -> Candidate {
        Candidate { id: id.into(), zone: String::new(), rack: String::new(), free_bytes: 1 << 30, load: 0 }
    }

    #[test]
    #[expect(clippy::disallowed_methods, reason = "an arbitrary origin: the test adds durations to it")]
    fn replaced_bookies_are_avoided_then_forgotten() {
        let quarantine = Quarantine::default();
        let t0 = Instant::now();
        quarantine.add(&["c".to_string()], t0);
        assert_eq!(quarantine.avoided(t0), ["c"]);
        assert_eq!(quarantine.avoided(t0 + QUARANTINE - Duration::from_millis(1)), ["c"]);
        assert!(quarantine.avoided(t0 + QUARANTINE).is_empty(), "QU1");
        let many: Vec<String> = (0..QUARANTINED_MAX + 10).map(|i| format!("b{i}")).collect();
        for (i, id) in many.iter().enumerate() {
            quarantine.add([id], t0 + Duration::from_micros(i as u64));
        }
        let avoided = quarantine.avoided(t0);
        assert_eq!(avoided.len(), QUARANTINED_MAX, "QU1: bounded");
        assert!(!avoided.contains(&"b0".to_string()), "the oldest went first");
    }

    #[test]
    fn a_replacement_skips_quarantined_bookies_while_others_remain() {
        let quorum = QuorumSizes::new(3, 3, 2).unwrap();
        let current: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // c died; d is dead too but still registered; e is alive.
        let candidates: Vec<Candidate> = ["a", "b", "c", "d", "e"].map(candidate).to_vec();
        let avoided = vec!["c".to_string(), "d".to_string()];
        for seed in 0..64 {
            let placed = placing(&avoided, |exclude| {
                placement::choose_replacements(quorum, &current, &[2], &candidates, exclude, seed)
            })
            .unwrap();
            assert_eq!(placed, ["a", "b", "e"], "seed {seed}");
        }
        // Only quarantined spares: placement still finds one (QU2).
        let candidates: Vec<Candidate> = ["a", "b", "c", "d"].map(candidate).to_vec();
        let placed = placing(&avoided, |exclude| {
            placement::choose_replacements(quorum, &current, &[2], &candidates, exclude, 1)
        })
        .unwrap();
        assert_eq!(placed, ["a", "b", "d"]);
    }
}
