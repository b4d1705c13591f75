//! `AckSet`: one entry's acks and failures from its write set, and whether they acknowledge it
//! (Q3).

use super::{BookieSet, QuorumSizes, WriteSet};

/// The acks and failures one entry has collected from its write set (Q3). The state is the set
/// of members that acked and the set that failed without acking, so the same events in any
/// order leave the same state: an ack beats a failure of the same member whichever came first
/// (the bookie holds the entry durably; a failure before it was an attempt that a retry made
/// good).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckSet {
    entry: u64,
    write_set: WriteSet,
    ack_quorum_size: usize,
    acked: BookieSet,
    failed: BookieSet,
}

/// What `AckSet::record_ack` did with an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// A member's first ack: counted (clearing a failure recorded for it, if any).
    Counted,
    /// The member had already acked: not counted again.
    Duplicate,
    /// The index is not in the entry's write set: ignored (a caller bug or a stale response).
    NotInWriteSet,
}

/// What `AckSet::record_failure` did with a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureOutcome {
    /// A member's first failure: recorded.
    Counted,
    /// The member had already failed: nothing changes.
    Duplicate,
    /// The member had acked: its ack stands and the failure is ignored. Whether to replace the
    /// bookie is the caller's decision (`AckSet::reset_member` after an ensemble change).
    AlreadyAcked,
    /// The index is not in the entry's write set: ignored.
    NotInWriteSet,
}

impl AckSet {
    /// No acks and no failures yet for `entry`.
    pub fn new(sizes: &QuorumSizes, entry: u64) -> Self {
        Self {
            entry,
            write_set: sizes.write_set(entry),
            ack_quorum_size: sizes.ack_quorum_size(),
            acked: BookieSet::EMPTY,
            failed: BookieSet::EMPTY,
        }
    }

    /// The entry this set is for.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The entry's write set.
    pub fn write_set(&self) -> WriteSet {
        self.write_set
    }

    /// The members that acked.
    pub fn acked(&self) -> BookieSet {
        self.acked
    }

    /// The members that failed and have not acked.
    pub fn failed(&self) -> BookieSet {
        self.failed
    }

    /// The members that have neither acked nor failed.
    pub fn pending(&self) -> BookieSet {
        self.write_set.members().difference(self.acked).difference(self.failed)
    }

    /// The number of distinct members that acked.
    pub fn ack_count(&self) -> usize {
        self.acked.len()
    }

    /// Records an ack from `ensemble_index`.
    pub fn record_ack(&mut self, ensemble_index: usize) -> AckOutcome {
        if !self.write_set.contains(ensemble_index) {
            return AckOutcome::NotInWriteSet;
        }
        if !self.acked.insert(ensemble_index) {
            return AckOutcome::Duplicate;
        }
        self.failed.remove(ensemble_index);
        AckOutcome::Counted
    }

    /// Records that `ensemble_index` failed to store the entry (an error answer, a lost
    /// connection, a timeout).
    pub fn record_failure(&mut self, ensemble_index: usize) -> FailureOutcome {
        if !self.write_set.contains(ensemble_index) {
            return FailureOutcome::NotInWriteSet;
        }
        if self.acked.contains(ensemble_index) {
            return FailureOutcome::AlreadyAcked;
        }
        if !self.failed.insert(ensemble_index) {
            return FailureOutcome::Duplicate;
        }
        FailureOutcome::Counted
    }

    /// Forgets the ack and the failure of `ensemble_index`: the bookie at that index was
    /// replaced (ensemble change) and the entry must be written to its successor. True if
    /// anything was forgotten.
    pub fn reset_member(&mut self, ensemble_index: usize) -> bool {
        let acked = self.acked.remove(ensemble_index);
        let failed = self.failed.remove(ensemble_index);
        acked || failed
    }

    /// Whether Qa distinct members acked: the entry is acknowledged (Q3).
    pub fn is_complete(&self) -> bool {
        self.acked.len() >= self.ack_quorum_size
    }

    /// Whether Qa members could still ack: false once more than Qw − Qa members failed, and
    /// then only replacing a failed bookie (`reset_member`) makes the entry completable again.
    /// True when complete.
    pub fn can_complete(&self) -> bool {
        self.write_set.len() - self.failed.len() >= self.ack_quorum_size
    }
}
