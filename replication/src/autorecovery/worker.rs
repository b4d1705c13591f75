//! The replication worker's core: what to copy for one queued segment, where from, how to
//! judge each answer, and the metadata change that ends a copy. Pure: no I/O, no clock; the
//! shell (shell/replicate.rs) reads, writes and compare-and-sets what this decides.
//!
//! Owns: the copy plan (`plan`: one `Fragment` per (ensemble, index of a missing bookie), the
//! entries of each, the order of the members to read them from, and what to do about the last
//! ensemble of a segment that is not closed), the verdicts on READ and ADD answers, and the
//! ensemble change after a copy (`replace_member`).
//! Does not own: choosing the replacement (placement), sending requests, retries and their
//! pacing, the queue and its claims, recovering an open segment (`ReplicationClient`).
//!
//! Invariants (the numbers are the module's, autorecovery/mod.rs):
//! - AR3: a fragment's entries are exactly the entries e of its ensemble's range with the
//!   missing index in W(e). The range of the ensemble starting at `first` is
//!   `[first, next_first)`, capped at one past the last entry when the segment is Closed; the
//!   last ensemble of an Open or InRecovery segment has no range: it is the writer's, and is
//!   never planned (`LastEnsemble` says to wait or to recover).
//! - AR4: only an answer that is the READ of that very segment and entry, whose bytes pass
//!   `entry_envelope::decode`, is a copy (`ReadVerdict::Copy`, the stored bytes as they are).
//! - AR5: `replace_member` changes only index `index` of the ensemble at `first`, only while
//!   it still names the lost bookie, the replacement is not a member, and the ensemble's range
//!   is within the copied one.

use std::collections::BTreeSet;

use bytes::Bytes;
use dlog_metadata::schema::{SegmentMetadata, SegmentState};
use dlog_protocol::{Response, Status};

use crate::entry_envelope;
use crate::quorum::QuorumSizes;
use crate::transport::TransportError;

/// What to do for one queued segment, from its metadata as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// The (ensemble, missing index) pairs to copy, in ensemble then index order.
    pub fragments: Vec<Fragment>,
    /// What the last ensemble of a segment that is not closed needs.
    pub last_ensemble: LastEnsemble,
}

impl CopyPlan {
    /// Nothing is left to copy, and no ensemble names a missing bookie: the queue entry may be
    /// completed.
    pub fn is_done(&self) -> bool {
        self.fragments.is_empty() && self.last_ensemble == LastEnsemble::Settled
    }
}

/// The last ensemble of an Open or InRecovery segment, when it names a missing bookie (AR3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastEnsemble {
    /// Nothing to do: the segment is closed, or its last ensemble names no missing bookie.
    Settled,
    /// Within the open-segment grace: the writer may still replace the bookie itself.
    WaitForWriter,
    /// The grace is over: fence and close the segment (`recover_segment`), then plan again.
    Recover,
}

/// The entries of one ensemble whose replicas on one missing bookie are to be copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// The segment.
    pub segment: u64,
    /// Its quorum sizes.
    pub quorum: QuorumSizes,
    /// The ensemble's first entry (its key in the metadata).
    pub first_entry: u64,
    /// One past the last entry of the ensemble's range (`first_entry` when it holds none).
    pub end: u64,
    /// The missing bookie's index in the ensemble.
    pub index: usize,
    /// The missing bookie.
    pub lost: String,
    /// The ensemble as read.
    pub ensemble: Vec<String>,
}

impl Fragment {
    /// The entries to copy (AR3), in order: those of `first_entry..end` whose write set holds
    /// `index`.
    pub fn entries(&self) -> impl Iterator<Item = u64> + use<> {
        let (quorum, index) = (self.quorum, self.index);
        (self.first_entry..self.end).filter(move |&entry| quorum.in_write_set(entry, index))
    }

    /// The members to read `entry` from, by ensemble index, in the order to try them: the
    /// other members of its write set that are not missing, then the missing ones (a missing
    /// bookie that came back can still serve; one that did not has no address and is skipped).
    pub fn sources(&self, entry: u64, missing: &BTreeSet<String>) -> Vec<usize> {
        let write_set: Vec<usize> =
            self.quorum.write_set(entry).iter().filter(|&i| i < self.ensemble.len()).collect();
        let is_missing = |i: &usize| missing.contains(&self.ensemble[*i]) || *i == self.index;
        let present = write_set.iter().copied().filter(|i| !is_missing(i));
        present.chain(write_set.iter().copied().filter(is_missing)).collect()
    }
}

/// Why a segment's metadata cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The quorum sizes or ensembles break the metadata's rules.
    #[error("segment {segment}: unusable metadata: {why}")]
    BadMetadata {
        /// The segment.
        segment: u64,
        /// What is wrong.
        why: String,
    },
}

/// The quorum sizes of `meta`.
pub fn quorum_of(segment: u64, meta: &SegmentMetadata) -> Result<QuorumSizes, PlanError> {
    let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    QuorumSizes::new(size(meta.ensemble_size), size(meta.write_quorum_size), size(meta.ack_quorum_size))
        .map_err(|e| PlanError::BadMetadata { segment, why: e.to_string() })
}

/// The entries of the ensemble starting at `first`: `Some(first..end)`, or `None` for the last
/// ensemble of a segment that is not closed (the writer's, AR3). `first` must be a key of
/// `meta.ensembles`.
pub fn ensemble_range(meta: &SegmentMetadata, first: u64) -> Option<std::ops::Range<u64>> {
    let next = meta.ensembles.range(first.saturating_add(1)..).next().map(|(next, _)| *next);
    let end = match (meta.state, next) {
        (SegmentState::Closed { last_entry_id, .. }, next) => {
            let cap = last_entry_id.map_or(0, |last| last.saturating_add(1));
            next.map_or(cap, |next| next.min(cap))
        }
        (SegmentState::Open | SegmentState::InRecovery, Some(next)) => next,
        (SegmentState::Open | SegmentState::InRecovery, None) => return None,
    };
    Some(first..end.max(first))
}

/// The copy plan for `segment` (AR3): a fragment for every index of every ensemble with a
/// range that names a bookie of `missing`; for the last ensemble of an Open or InRecovery
/// segment naming one, `WaitForWriter` until `open_grace_over`, then `Recover`.
pub fn plan(
    segment: u64,
    meta: &SegmentMetadata,
    missing: &BTreeSet<String>,
    open_grace_over: bool,
) -> Result<CopyPlan, PlanError> {
    let quorum = quorum_of(segment, meta)?;
    let mut fragments = Vec::new();
    let mut last_ensemble = LastEnsemble::Settled;
    for (&first, ensemble) in &meta.ensembles {
        if ensemble.len() != quorum.ensemble_size() {
            let why = format!("ensemble at entry {first} has {} bookies", ensemble.len());
            return Err(PlanError::BadMetadata { segment, why });
        }
        let lost: Vec<(usize, &String)> =
            ensemble.iter().enumerate().filter(|(_, id)| missing.contains(*id)).collect();
        if lost.is_empty() {
            continue;
        }
        let Some(range) = ensemble_range(meta, first) else {
            last_ensemble = if open_grace_over { LastEnsemble::Recover } else { LastEnsemble::WaitForWriter };
            continue;
        };
        for (index, id) in lost {
            fragments.push(Fragment {
                segment,
                quorum,
                first_entry: first,
                end: range.end,
                index,
                lost: id.clone(),
                ensemble: ensemble.clone(),
            });
        }
    }
    Ok(CopyPlan { fragments, last_ensemble })
}

/// What to do with the metadata once a fragment's entries are on `replacement` (AR5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplaceDecision {
    /// Write this metadata, by compare-and-set on the version it was read at.
    Replace(SegmentMetadata),
    /// The ensemble no longer names the lost bookie at that index (another worker, or a writer,
    /// replaced it): nothing to do.
    AlreadyReplaced,
    /// The copy no longer fits the metadata: plan again from it.
    Replan(String),
}

/// The metadata change that ends `fragment`'s copy to `replacement`, decided on `meta` as read
/// after the copy (AR5).
pub fn replace_member(meta: &SegmentMetadata, fragment: &Fragment, replacement: &str) -> ReplaceDecision {
    let first = fragment.first_entry;
    let Some(ensemble) = meta.ensembles.get(&first) else {
        return ReplaceDecision::AlreadyReplaced;
    };
    if ensemble.get(fragment.index) != Some(&fragment.lost) {
        return ReplaceDecision::AlreadyReplaced;
    }
    if ensemble.iter().any(|id| id == replacement) {
        return ReplaceDecision::Replan(format!("{replacement} is a member of the ensemble at {first} now"));
    }
    match ensemble_range(meta, first) {
        Some(range) if range.end <= fragment.end => {}
        range => {
            return ReplaceDecision::Replan(format!(
                "the ensemble at {first} covers {range:?} now, the copy ended at {}",
                fragment.end
            ));
        }
    }
    let mut next = meta.clone();
    if let Some(ensemble) = next.ensembles.get_mut(&first)
        && let Some(member) = ensemble.get_mut(fragment.index)
    {
        *member = replacement.to_owned();
    }
    ReplaceDecision::Replace(next)
}

/// What one member's answer to a READ of an entry is worth (AR4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadVerdict {
    /// A valid copy: the stored bytes (envelope included), to write as they are.
    Copy(Bytes),
    /// The member holds no copy (NoSuchEntry, NoSuchSegment): try another.
    Absent,
    /// The member's copy is damaged, or is another entry's: try another, and report it.
    Corrupt(String),
    /// No usable answer (an error status, a transport failure, a wrong answer): try another,
    /// or this one again later.
    Failed(String),
}

/// Judges `answer` to a READ of `entry` of `segment` (AR4).
pub fn judge_read(segment: u64, entry: u64, answer: Result<Response, TransportError>) -> ReadVerdict {
    match answer {
        Ok(Response::Read { segment: s, entry: e, payload }) if s == segment && e == entry => {
            match entry_envelope::decode(segment, entry, &payload) {
                Ok(_) => ReadVerdict::Copy(payload),
                Err(why) => ReadVerdict::Corrupt(why.to_string()),
            }
        }
        Ok(Response::Refused { status: Status::NoSuchEntry | Status::NoSuchSegment, .. }) => {
            ReadVerdict::Absent
        }
        Ok(Response::Refused { status: Status::Corrupt, message, .. }) => ReadVerdict::Corrupt(message),
        Ok(Response::Refused { status, message, .. }) => {
            ReadVerdict::Failed(format!("{status:?}: {message}"))
        }
        Ok(other) => ReadVerdict::Failed(format!("answered {other:?}")),
        Err(e) => ReadVerdict::Failed(e.to_string()),
    }
}

/// What the replacement's answer to a recovery ADD is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddVerdict {
    /// Durable on the replacement.
    Stored,
    /// Not stored now (an error, no answer): send it again.
    Retry(String),
    /// Never to be stored as sent (wrong master key, refused as malformed or too large).
    Fatal(String),
}

/// Judges `answer` to a recovery ADD of `entry` of `segment`.
pub fn judge_add(segment: u64, entry: u64, answer: Result<Response, TransportError>) -> AddVerdict {
    match answer {
        Ok(Response::Add { segment: s, entry: e }) if s == segment && e == entry => AddVerdict::Stored,
        Ok(Response::Refused {
            status: status @ (Status::WrongMasterKey | Status::BadRequest | Status::TooLarge),
            message,
            ..
        }) => AddVerdict::Fatal(format!("{status:?}: {message}")),
        Ok(Response::Refused { status, message, .. }) => AddVerdict::Retry(format!("{status:?}: {message}")),
        Ok(other) => AddVerdict::Retry(format!("answered {other:?}")),
        Err(e) => AddVerdict::Retry(e.to_string()),
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
