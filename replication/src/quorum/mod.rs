//! Quorum arithmetic: which bookies of an ensemble an entry goes to, when it is acknowledged,
//! when a fence is complete, and when recovery may call an entry absent. Pure: no I/O, no
//! async, no clock, no allocation; every answer is a function of its arguments.
//!
//! Owns: the quorum sizes and their rules (`QuorumSizes`), striping (`WriteSet`), a set of
//! ensemble indexes (`BookieSet`), one entry's acknowledgements (`AckSet`), fence and LAC read
//! coverage, and recovery's verdict on one entry (`EntryAnswers`, `EntryVerdict`).
//! Does not own: bookies' addresses, ensemble changes, sending requests, timeouts, or the
//! segment metadata; the sans-I/O writer, reader and recovery cores feed answers in here and act
//! on what comes back. Entry ids are plain `u64`, as on the wire (`dlog-protocol`). Ensemble
//! indexes are `usize` positions in the segment's current ensemble, `0..ensemble_size`.
//!
//! Notation: E = `ensemble_size`, Qw = `write_quorum_size`, Qa = `ack_quorum_size`, W(e) = the
//! write set of entry e, QC = Qw − Qa + 1 (BookKeeper's "quorum coverage", BP-46).
//!
//! # Invariants
//!
//! - Q1 (sizes): 1 ≤ Qa ≤ Qw ≤ E ≤ 64 (`ENSEMBLE_SIZE_MAX`). `QuorumSizes::new` refuses
//!   anything else with the rule it breaks; everything below relies on it.
//! - Q2 (striping, BookKeeper's round-robin distribution schedule): W(e) = ((e + i) mod E for
//!   i in 0..Qw), in that order: Qw distinct indexes. W(e + 1) is W(e) shifted by one index, W
//!   depends only on e mod E (E distinct write sets, one when Qw = E), and each index is in
//!   exactly Qw of any E consecutive write sets, so load spreads evenly.
//! - Q3 (acknowledgement): an entry is acknowledged once Qa distinct members of W(e) have acked
//!   it; acks from outside W(e) and repeats never count. It can no longer be acknowledged once
//!   more than Qw − Qa members have failed (fewer than Qa left that could ack). Both depend only
//!   on the set of acks and failures, never on their order (`AckSet`).
//! - Q4 (intersection): in a write set of Qw members, any QC of them and any Qa of them share at
//!   least one member, because QC + Qa = Qw + 1 > Qw. Q5 to Q7 are this pigeonhole, applied to
//!   "fenced" and to "answered NoSuchEntry".
//! - Q5 (fence coverage): a fence is complete when every write set of the segment's last
//!   ensemble has at least QC fenced members, i.e. no write set has Qa unfenced members
//!   (`QuorumSizes::fence_covers_every_write_set`). From then on, any add the old writer sends
//!   reaches at most Qa − 1 bookies that accept it (fenced bookies refuse plain adds), so it is
//!   never acknowledged. Adds already stored on a bookie before its fence may still collect
//!   acks: that is why recovery reads fence too (Q6). Earlier ensembles are immutable and need
//!   no fence. Sizes: the smallest covering set has E − ⌊E(Qa − 1)/Qw⌋ bookies (the unfenced
//!   ones spread evenly), any E − Qa + 1 bookies always cover (BookKeeper's "ensemble
//!   coverage"), and some E − Qa bookies do not (Qa unfenced members of one write set).
//! - Q6 (absence): recovery calls an entry `ConfirmedAbsent` only when no member of W(e)
//!   answered Present and at least QC members answered NoSuchEntry to a fencing read (or while
//!   already fenced). Each of those holds no copy and, fenced, never accepts one from the old
//!   writer; by Q4 any Qa members of W(e) include one of them, so at most Qa − 1 members ever
//!   hold the writer's copy: the entry was never acknowledged and never will be. A replica that
//!   is corrupt, unreadable or answered an error (`ReplicaAnswer::Failed`), and a bookie that
//!   has not answered, never count as absence: a corrupt copy may be one of the Qa acks.
//! - Q7 (convergence): recovery reads forward from the fenced LAC until the first
//!   `ConfirmedAbsent` entry L + 1, recovery-adds every entry up to L to its whole write set, and
//!   closes the segment at L. Let A be the writer's last acknowledged entry (it acknowledges in
//!   entry order, so every entry ≤ A is acknowledged). Every entry ≤ A has Qa holders, so by Q6
//!   it is never `ConfirmedAbsent`: a recoverer reads it Present or stays `Undecided` (waits, or
//!   gives up), and never closes before A. Entry L + 1 is, by Q6, never acknowledged, by the old
//!   writer or later. So every recoverer's close point keeps every acknowledged entry and
//!   nothing after it can appear later. Entries past A that reached fewer than Qa bookies may be
//!   read Present by one recoverer and not by another: either close is correct, and the close
//!   is a compare-and-set of the segment metadata from InRecovery to Closed, so the first one
//!   wins and a later recoverer finds the segment Closed and takes its last entry. That is how
//!   every recoverer ends with the same last entry: the arithmetic makes every candidate safe,
//!   the compare-and-set makes one of them final.
//! - Q8 (why not fewer): a threshold of QC − 1 = Qw − Qa NoSuchEntry answers is unsafe: the
//!   other Qa members may hold an acknowledged copy and simply not have answered yet (slow,
//!   partitioned). Example Qw = 3, Qa = 2: B answers NoSuchEntry, A and C hold the acknowledged
//!   entry but are slow; with a threshold of 1 the segment would close before an entry the
//!   writer acknowledged and a reader may already have read. Counting a Failed answer as
//!   absence is the same mistake. A higher threshold is safe but less live: QC lets recovery
//!   finish with Qa − 1 members of each write set down, the most Q6 allows.
//! - Q9 (LAC read): the recoverer's fencing LAC read is the fence: it has enough responses when
//!   the bookies that answered it (with a LAC, NoSuchEntry or no such segment: each of those
//!   fenced the segment first; an error did not) cover every write set as in Q5
//!   (`QuorumSizes::lac_responses_sufficient`). The largest LAC among them is a safe start for
//!   Q7, which reads forward from any entry known to be acknowledged.
//!
//! Assumptions (the bookie's, docs/protocol.md): a bookie acks an add only once it is durable;
//! it answers NoSuchEntry only from intact storage that does not hold the entry (never for a
//! corrupt or unreadable one), and a fence is applied after the adds it already admitted; a
//! fence is never undone; disks that lost their data come back under a cookie check, not as an
//! empty bookie under the same identity.

mod ack_set;
mod bookie_set;
mod entry_answers;
#[cfg(test)]
mod tests;

use std::fmt;

pub use ack_set::{AckOutcome, AckSet, FailureOutcome};
pub use bookie_set::{BookieSet, BookieSetIter};
pub use entry_answers::{AnswerOutcome, EntryAnswers, EntryVerdict, ReplicaAnswer};

/// The largest `ensemble_size` supported (Q1): a `BookieSet` is one `u64`.
pub const ENSEMBLE_SIZE_MAX: usize = 64;

/// A segment's quorum sizes, valid by construction (Q1): 1 ≤ `ack_quorum_size` ≤
/// `write_quorum_size` ≤ `ensemble_size` ≤ `ENSEMBLE_SIZE_MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuorumSizes {
    ensemble_size: usize,
    write_quorum_size: usize,
    ack_quorum_size: usize,
}

/// A quorum size rule (Q1) that `QuorumSizes::new` was asked to break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumError {
    /// `ack_quorum_size` must be at least 1.
    AckQuorumZero,
    /// `ack_quorum_size` must not exceed `write_quorum_size`.
    AckQuorumAboveWriteQuorum {
        /// The requested `ack_quorum_size`.
        ack_quorum_size: usize,
        /// The requested `write_quorum_size`.
        write_quorum_size: usize,
    },
    /// `write_quorum_size` must not exceed `ensemble_size`.
    WriteQuorumAboveEnsemble {
        /// The requested `write_quorum_size`.
        write_quorum_size: usize,
        /// The requested `ensemble_size`.
        ensemble_size: usize,
    },
    /// `ensemble_size` must not exceed `ENSEMBLE_SIZE_MAX`.
    EnsembleTooLarge {
        /// The requested `ensemble_size`.
        ensemble_size: usize,
    },
}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AckQuorumZero => write!(f, "ack_quorum_size must be at least 1"),
            Self::AckQuorumAboveWriteQuorum { ack_quorum_size, write_quorum_size } => {
                write!(f, "ack_quorum_size {ack_quorum_size} exceeds write_quorum_size {write_quorum_size}")
            }
            Self::WriteQuorumAboveEnsemble { write_quorum_size, ensemble_size } => {
                write!(f, "write_quorum_size {write_quorum_size} exceeds ensemble_size {ensemble_size}")
            }
            Self::EnsembleTooLarge { ensemble_size } => {
                write!(f, "ensemble_size {ensemble_size} exceeds the maximum {ENSEMBLE_SIZE_MAX}")
            }
        }
    }
}

impl std::error::Error for QuorumError {}

impl QuorumSizes {
    /// Checks Q1 and returns the sizes, or the first rule broken (checked from `ack_quorum_size`
    /// up: at least 1, at most `write_quorum_size`, which is at most `ensemble_size`, which is at
    /// most `ENSEMBLE_SIZE_MAX`).
    pub fn new(
        ensemble_size: usize,
        write_quorum_size: usize,
        ack_quorum_size: usize,
    ) -> Result<Self, QuorumError> {
        if ack_quorum_size == 0 {
            return Err(QuorumError::AckQuorumZero);
        }
        if ack_quorum_size > write_quorum_size {
            return Err(QuorumError::AckQuorumAboveWriteQuorum { ack_quorum_size, write_quorum_size });
        }
        if write_quorum_size > ensemble_size {
            return Err(QuorumError::WriteQuorumAboveEnsemble { write_quorum_size, ensemble_size });
        }
        if ensemble_size > ENSEMBLE_SIZE_MAX {
            return Err(QuorumError::EnsembleTooLarge { ensemble_size });
        }
        Ok(Self { ensemble_size, write_quorum_size, ack_quorum_size })
    }

    /// E: the number of bookies the segment's entries are striped over.
    pub fn ensemble_size(&self) -> usize {
        self.ensemble_size
    }

    /// Qw: the number of bookies each entry is written to.
    pub fn write_quorum_size(&self) -> usize {
        self.write_quorum_size
    }

    /// Qa: the number of acks from an entry's write set that acknowledge it.
    pub fn ack_quorum_size(&self) -> usize {
        self.ack_quorum_size
    }

    /// QC = Qw − Qa + 1: the members of a write set that meet every Qa of its members (Q4); the
    /// fenced members every write set needs (Q5), and the NoSuchEntry answers that make an entry
    /// absent (Q6).
    pub fn coverage_size(&self) -> usize {
        self.write_quorum_size - self.ack_quorum_size + 1
    }

    /// Every index of the ensemble, `0..ensemble_size`.
    pub fn ensemble(&self) -> BookieSet {
        BookieSet::first_n(self.ensemble_size)
    }

    /// The number of distinct write sets (Q2): E, or 1 when Qw = E.
    pub fn distinct_write_set_count(&self) -> usize {
        if self.write_quorum_size == self.ensemble_size { 1 } else { self.ensemble_size }
    }

    /// The write set of `entry` (Q2).
    pub fn write_set(&self, entry: u64) -> WriteSet {
        // E ≤ 64, so the remainder fits any integer type.
        let first_index = (entry % self.ensemble_size as u64) as usize;
        WriteSet { first_index, write_quorum_size: self.write_quorum_size, ensemble_size: self.ensemble_size }
    }

    /// Whether `ensemble_index` is in the write set of `entry`; false for an index outside the
    /// ensemble.
    pub fn in_write_set(&self, entry: u64, ensemble_index: usize) -> bool {
        self.write_set(entry).contains(ensemble_index)
    }

    /// Where `ensemble_index` sits in the write set of `entry` (0 = the first bookie written), or
    /// `None` if it is not a member.
    pub fn position_in_write_set(&self, entry: u64, ensemble_index: usize) -> Option<usize> {
        self.write_set(entry).position_of(ensemble_index)
    }

    /// Q5: whether `fenced` (the indexes that confirmed the fence) leaves no write set with Qa
    /// members outside it, so the old writer can no longer get an add it sends acknowledged.
    /// Indexes outside the ensemble are ignored.
    pub fn fence_covers_every_write_set(&self, fenced: &BookieSet) -> bool {
        let unfenced = self.ensemble().difference(*fenced);
        (0..self.distinct_write_set_count() as u64)
            .all(|entry| self.write_set(entry).members().intersection(unfenced).len() < self.ack_quorum_size)
    }

    /// Q9: whether the bookies that answered the fencing LAC read (`responded`) are enough: the
    /// same coverage as `fence_covers_every_write_set`, since answering it is fencing.
    pub fn lac_responses_sufficient(&self, responded: &BookieSet) -> bool {
        self.fence_covers_every_write_set(responded)
    }

    /// The fewest fenced bookies that can cover every write set (Q5): E − ⌊E(Qa − 1)/Qw⌋,
    /// reached only when the unfenced ones are spread evenly around the ensemble.
    pub fn fence_responses_min(&self) -> usize {
        let unfenced_max = self.ensemble_size * (self.ack_quorum_size - 1) / self.write_quorum_size;
        self.ensemble_size - unfenced_max
    }

    /// The number of fenced bookies that covers every write set whichever they are (Q5):
    /// E − Qa + 1; one fewer may leave Qa unfenced members in a write set.
    pub fn fence_responses_always_sufficient(&self) -> usize {
        self.ensemble_size - self.ack_quorum_size + 1
    }

    /// An empty `AckSet` for `entry`.
    pub fn ack_set(&self, entry: u64) -> AckSet {
        AckSet::new(self, entry)
    }

    /// An empty `EntryAnswers` for recovery's read of `entry`.
    pub fn entry_answers(&self, entry: u64) -> EntryAnswers {
        EntryAnswers::new(self, entry)
    }

    /// Q6 on answers given by position in the write set (`answers[i]` is the answer of its i-th
    /// member), for callers that hold them that way. Panics if `answers.len()` is not Qw (a
    /// programmer error).
    pub fn entry_verdict(&self, answers: &[ReplicaAnswer]) -> EntryVerdict {
        assert_eq!(answers.len(), self.write_quorum_size, "one answer per member of the write set");
        let write_set = self.write_set(0);
        let mut entry_answers = self.entry_answers(0);
        for (position, answer) in answers.iter().enumerate() {
            if let Some(ensemble_index) = write_set.get(position) {
                entry_answers.record(ensemble_index, *answer);
            }
        }
        entry_answers.verdict()
    }
}

/// The write set of one entry (Q2): Qw ensemble indexes, (first + i) mod E for i in 0..Qw, in
/// the order the writer sends to them. Small and `Copy`; holds no bookie addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriteSet {
    first_index: usize,
    write_quorum_size: usize,
    ensemble_size: usize,
}

impl WriteSet {
    /// Qw, the number of members.
    pub fn len(&self) -> usize {
        self.write_quorum_size
    }

    /// Always false (Qw ≥ 1); here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.write_quorum_size == 0
    }

    /// The ensemble index of the first member: the entry id mod E.
    pub fn first_index(&self) -> usize {
        self.first_index
    }

    /// The ensemble index at `position` (0-based) in the write set, or `None` past its end.
    pub fn get(&self, position: usize) -> Option<usize> {
        (position < self.write_quorum_size).then(|| (self.first_index + position) % self.ensemble_size)
    }

    /// Whether `ensemble_index` is a member; false for an index outside the ensemble.
    pub fn contains(&self, ensemble_index: usize) -> bool {
        self.position_of(ensemble_index).is_some()
    }

    /// The position of `ensemble_index` in the write set, or `None` if it is not a member.
    pub fn position_of(&self, ensemble_index: usize) -> Option<usize> {
        if ensemble_index >= self.ensemble_size {
            return None;
        }
        let position = (ensemble_index + self.ensemble_size - self.first_index) % self.ensemble_size;
        (position < self.write_quorum_size).then_some(position)
    }

    /// The members as a set.
    pub fn members(&self) -> BookieSet {
        let tail = self.ensemble_size - self.first_index;
        if self.write_quorum_size <= tail {
            BookieSet::first_n(self.write_quorum_size).shifted_up(self.first_index)
        } else {
            BookieSet::first_n(tail)
                .shifted_up(self.first_index)
                .union(BookieSet::first_n(self.write_quorum_size - tail))
        }
    }

    /// The members' ensemble indexes in write order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + use<> {
        let WriteSet { first_index, write_quorum_size, ensemble_size } = *self;
        (0..write_quorum_size).map(move |position| (first_index + position) % ensemble_size)
    }
}
