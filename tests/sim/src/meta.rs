//! `SimMeta`: the simulated metadata store's copy of the one segment, with the semantics of the
//! replication client's metadata operations (replication/src/client/metadata_ops.rs, MO1-MO4):
//! every change is a compare-and-set on the state it read, applied atomically when the call
//! reaches the store.
//!
//! Invariants:
//! - M1: the state only moves Open → InRecovery → Closed, or Open → Closed; once Closed its
//!   end never changes (the first close wins).
//! - M2: an ensemble change and a writer's close apply only while Open; otherwise `Fenced`.
//! - M3: a recoverer's close of a segment already Closed answers the stored end.
//! - M4: a call whose answer is lost after it applied is answered as the real client's re-read
//!   decides (the truth), except `BeginRecovery`, which the real client reports failed: the
//!   segment is InRecovery and the recoverer tries again.

use std::collections::BTreeMap;

use dlog_replication::recovery::{RecoveredEnd, RecoveryError};
use dlog_replication::segment_writer::{EnsembleChangeError, WriterError};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// The segment's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegState {
    Open,
    InRecovery,
    Closed(RecoveredEnd),
}

/// A call to the store.
#[derive(Clone, Debug)]
pub(crate) enum MetaOp {
    /// Replace the members at these indexes of the current ensemble from `first_entry` on.
    ChangeEnsemble { first_entry: u64, replace: Vec<usize> },
    /// The writer's close.
    CloseWritten { last_entry: Option<u64>, length: u64 },
    /// A recoverer's start: Open → InRecovery.
    BeginRecovery,
    /// A recoverer's close, with the ensembles it wrote to (RC7).
    CloseRecovered { end: RecoveredEnd, change: Option<BTreeMap<u64, Vec<usize>>> },
}

/// How a recovery starts.
#[derive(Clone, Debug)]
pub(crate) enum Begin {
    Closed(RecoveredEnd),
    Recover(BTreeMap<u64, Vec<usize>>),
}

/// The store's answer.
#[derive(Clone, Debug)]
pub(crate) enum MetaResult {
    Ensemble(Result<Vec<usize>, EnsembleChangeError>),
    Closed(Result<(), WriterError>),
    Begin(Result<Begin, String>),
    Recovered(Result<RecoveredEnd, RecoveryError>),
}

/// The segment's metadata (M1-M3).
pub(crate) struct SimMeta {
    pub(crate) state: SegState,
    pub(crate) ensembles: BTreeMap<u64, Vec<usize>>,
    /// Bumped at each change.
    pub(crate) version: u64,
}

impl SimMeta {
    pub(crate) fn new(ensemble: Vec<usize>) -> SimMeta {
        SimMeta { state: SegState::Open, ensembles: BTreeMap::from([(0, ensemble)]), version: 1 }
    }

    /// Ensembles holding no entry go at a close; the first one stays (SG2).
    fn drop_empty_ensembles(&mut self, last_entry: Option<u64>) {
        let next = last_entry.map_or(0, |l| l + 1);
        let _ = self.ensembles.split_off(&next.max(1));
    }

    fn current(&self) -> &Vec<usize> {
        self.ensembles.values().next_back().expect("an ensemble from entry 0")
    }

    /// Applies `op`; `up` says which bookies placement may choose (registered ones).
    pub(crate) fn apply(&mut self, op: MetaOp, up: &[bool], rng: &mut ChaCha8Rng) -> MetaResult {
        match op {
            MetaOp::ChangeEnsemble { first_entry, replace } => {
                if self.state != SegState::Open {
                    return MetaResult::Ensemble(Err(EnsembleChangeError::Fenced));
                }
                let current = self.current().clone();
                let new = replace_members(&current, &replace, up, rng);
                if new == current {
                    let error = EnsembleChangeError::Unavailable("no bookie to replace with".into());
                    return MetaResult::Ensemble(Err(error));
                }
                let _ = self.ensembles.split_off(&first_entry);
                self.ensembles.insert(first_entry, new.clone());
                self.version += 1;
                MetaResult::Ensemble(Ok(new))
            }
            MetaOp::CloseWritten { last_entry, length } => MetaResult::Closed(match self.state {
                SegState::Open => {
                    self.state = SegState::Closed(RecoveredEnd { last_entry, length });
                    self.drop_empty_ensembles(last_entry);
                    self.version += 1;
                    Ok(())
                }
                SegState::Closed(end) if end.last_entry == last_entry => Ok(()),
                _ => Err(WriterError::Fenced),
            }),
            MetaOp::BeginRecovery => MetaResult::Begin(match self.state {
                SegState::Open => {
                    self.state = SegState::InRecovery;
                    self.version += 1;
                    Ok(Begin::Recover(self.ensembles.clone()))
                }
                SegState::InRecovery => Ok(Begin::Recover(self.ensembles.clone())),
                SegState::Closed(end) => Ok(Begin::Closed(end)),
            }),
            MetaOp::CloseRecovered { end, change } => MetaResult::Recovered(match self.state {
                SegState::InRecovery => {
                    if let Some(change) = change
                        && let Some(first) = change.keys().next()
                    {
                        let _ = self.ensembles.split_off(first);
                        self.ensembles.extend(change);
                    }
                    self.state = SegState::Closed(end);
                    self.drop_empty_ensembles(end.last_entry);
                    self.version += 1;
                    Ok(end)
                }
                SegState::Closed(stored) => Ok(stored),
                SegState::Open => Err(RecoveryError::Metadata("segment is open".into())),
            }),
        }
    }
}

/// `current` with the members at `replace` swapped for bookies not in it, chosen among the
/// registered ones (placement); as many as there are.
pub(crate) fn replace_members(
    current: &[usize],
    replace: &[usize],
    up: &[bool],
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let mut spare: Vec<usize> = (0..up.len()).filter(|b| up[*b] && !current.contains(b)).collect();
    // Placement does not know every failure at once: now and then it picks a bookie that is down.
    if rng.random_bool(0.1) {
        spare.extend((0..up.len()).filter(|b| !up[*b] && !current.contains(b)));
    }
    spare.shuffle(rng);
    let mut new = current.to_vec();
    for index in replace {
        if let Some(bookie) = spare.pop()
            && let Some(slot) = new.get_mut(*index)
        {
            *slot = bookie;
        }
    }
    new
}
