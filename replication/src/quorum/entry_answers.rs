//! `EntryAnswers`: recovery's read of one entry from its write set, and the verdict it gives
//! (Q6, Q7).

use super::{BookieSet, QuorumSizes, WriteSet};

/// One write set member's answer to recovery's (fencing) read of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaAnswer {
    /// It returned the entry, intact (digest checked): a copy exists.
    Present,
    /// It answered, from intact storage, that it does not hold the entry (NoSuchEntry, or no
    /// such segment), to a read that fenced the segment or with the segment already fenced.
    NoSuchEntry,
    /// It holds a corrupt or unreadable copy, answered an error, or the request failed: whether
    /// it holds the entry is unknown. Never counts as absence.
    Failed,
    /// No answer yet. Recording it changes nothing.
    NoAnswer,
}

/// Recovery's verdict on one entry (Q6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryVerdict {
    /// A member returned it: recover it (recovery-add it to its whole write set).
    Present,
    /// At least QC members answered NoSuchEntry and none returned it: it was never
    /// acknowledged, and the segment closes before it.
    ConfirmedAbsent,
    /// Neither yet: wait for more answers, or give up if none can come.
    Undecided,
}

/// What `EntryAnswers::record` did with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// The answer changed what is known of the member.
    Recorded,
    /// The member had already given this answer or a stronger one (Present over NoSuchEntry over
    /// Failed over NoAnswer): nothing changes.
    Unchanged,
    /// The index is not in the entry's write set: ignored.
    NotInWriteSet,
}

/// The answers recovery has for one entry, by member of its write set. Each member keeps its
/// strongest answer (Present over NoSuchEntry over Failed): a copy once returned exists for
/// good; a fenced member that once did not hold the writer's copy never will (Q6); a later
/// failure to answer changes neither. So the verdict depends on the answers, not their order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryAnswers {
    entry: u64,
    write_set: WriteSet,
    coverage_size: usize,
    present: BookieSet,
    absent: BookieSet,
    failed: BookieSet,
}

impl EntryAnswers {
    /// No answers yet for `entry`.
    pub fn new(sizes: &QuorumSizes, entry: u64) -> Self {
        Self {
            entry,
            write_set: sizes.write_set(entry),
            coverage_size: sizes.coverage_size(),
            present: BookieSet::EMPTY,
            absent: BookieSet::EMPTY,
            failed: BookieSet::EMPTY,
        }
    }

    /// The entry these answers are for.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The entry's write set.
    pub fn write_set(&self) -> WriteSet {
        self.write_set
    }

    /// Records `answer` from `ensemble_index`.
    pub fn record(&mut self, ensemble_index: usize, answer: ReplicaAnswer) -> AnswerOutcome {
        if !self.write_set.contains(ensemble_index) {
            return AnswerOutcome::NotInWriteSet;
        }
        let changed = match answer {
            ReplicaAnswer::Present => {
                self.absent.remove(ensemble_index);
                self.failed.remove(ensemble_index);
                self.present.insert(ensemble_index)
            }
            ReplicaAnswer::NoSuchEntry if !self.present.contains(ensemble_index) => {
                self.failed.remove(ensemble_index);
                self.absent.insert(ensemble_index)
            }
            ReplicaAnswer::Failed if !self.present.union(self.absent).contains(ensemble_index) => {
                self.failed.insert(ensemble_index)
            }
            ReplicaAnswer::NoSuchEntry | ReplicaAnswer::Failed | ReplicaAnswer::NoAnswer => false,
        };
        if changed { AnswerOutcome::Recorded } else { AnswerOutcome::Unchanged }
    }

    /// The members that returned the entry.
    pub fn present(&self) -> BookieSet {
        self.present
    }

    /// The members whose strongest answer is NoSuchEntry.
    pub fn absent(&self) -> BookieSet {
        self.absent
    }

    /// The members whose strongest answer is Failed.
    pub fn failed(&self) -> BookieSet {
        self.failed
    }

    /// The members that have not answered.
    pub fn unanswered(&self) -> BookieSet {
        self.write_set.members().difference(self.present).difference(self.absent).difference(self.failed)
    }

    /// The verdict (Q6): `Present` if any member returned the entry, else `ConfirmedAbsent` if
    /// at least QC members answered NoSuchEntry, else `Undecided`. A Present answer after QC
    /// NoSuchEntry answers turns `ConfirmedAbsent` into `Present`: such an entry was never
    /// acknowledged, so a recoverer that already closed before it was right too (Q7).
    pub fn verdict(&self) -> EntryVerdict {
        if !self.present.is_empty() {
            EntryVerdict::Present
        } else if self.absent.len() >= self.coverage_size {
            EntryVerdict::ConfirmedAbsent
        } else {
            EntryVerdict::Undecided
        }
    }

    /// Whether `ConfirmedAbsent` can still be reached: nothing returned the entry, and the
    /// NoSuchEntry answers plus the members yet to answer reach QC. When this is false and the
    /// verdict is `Undecided`, only a Present answer can decide it.
    pub fn absence_possible(&self) -> bool {
        self.present.is_empty() && self.absent.len() + self.unanswered().len() >= self.coverage_size
    }
}
