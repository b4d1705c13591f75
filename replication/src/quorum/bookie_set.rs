//! `BookieSet`: a set of ensemble indexes (0..64) in one `u64`, bit i for index i.

use std::fmt;

use super::ENSEMBLE_SIZE_MAX;

/// A set of bookies of one ensemble, by ensemble index (`0..ENSEMBLE_SIZE_MAX`). `Copy`; the
/// set operations never panic; only `insert` and `first_n` assert their argument's range.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BookieSet {
    bits: u64,
}

impl BookieSet {
    /// The empty set.
    pub const EMPTY: Self = Self { bits: 0 };

    /// The set whose bit i stands for ensemble index i.
    pub const fn from_bits(bits: u64) -> Self {
        Self { bits }
    }

    /// The bits of the set: bit i for ensemble index i.
    pub const fn bits(self) -> u64 {
        self.bits
    }

    /// Indexes `0..count`. Panics if `count > ENSEMBLE_SIZE_MAX` (a programmer error).
    pub fn first_n(count: usize) -> Self {
        assert!(count <= ENSEMBLE_SIZE_MAX, "a set of ensemble indexes holds at most {ENSEMBLE_SIZE_MAX}");
        if count == ENSEMBLE_SIZE_MAX { Self { bits: u64::MAX } } else { Self { bits: (1u64 << count) - 1 } }
    }

    /// Each index moved up by `shift`; indexes that would reach 64 or more are dropped.
    pub(super) fn shifted_up(self, shift: usize) -> Self {
        if shift >= ENSEMBLE_SIZE_MAX { Self::EMPTY } else { Self { bits: self.bits << shift } }
    }

    /// Whether `ensemble_index` is in the set; false for any index of 64 or more.
    pub fn contains(self, ensemble_index: usize) -> bool {
        ensemble_index < ENSEMBLE_SIZE_MAX && self.bits & (1u64 << ensemble_index) != 0
    }

    /// Adds `ensemble_index`; true if it was not there. Panics if `ensemble_index >=
    /// ENSEMBLE_SIZE_MAX` (a programmer error: no ensemble has such an index).
    pub fn insert(&mut self, ensemble_index: usize) -> bool {
        assert!(ensemble_index < ENSEMBLE_SIZE_MAX, "ensemble index {ensemble_index} out of range");
        let added = !self.contains(ensemble_index);
        self.bits |= 1u64 << ensemble_index;
        added
    }

    /// Removes `ensemble_index`; true if it was there.
    pub fn remove(&mut self, ensemble_index: usize) -> bool {
        let removed = self.contains(ensemble_index);
        if removed {
            self.bits &= !(1u64 << ensemble_index);
        }
        removed
    }

    /// The number of indexes in the set.
    pub fn len(self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// Indexes in either set.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self { bits: self.bits | other.bits }
    }

    /// Indexes in both sets.
    #[must_use]
    pub fn intersection(self, other: Self) -> Self {
        Self { bits: self.bits & other.bits }
    }

    /// Indexes in `self` but not in `other`.
    #[must_use]
    pub fn difference(self, other: Self) -> Self {
        Self { bits: self.bits & !other.bits }
    }

    /// Whether every index of `self` is in `other`.
    pub fn is_subset(self, other: Self) -> bool {
        self.bits & !other.bits == 0
    }

    /// The indexes in increasing order.
    pub fn iter(self) -> BookieSetIter {
        BookieSetIter { bits: self.bits }
    }
}

impl fmt::Debug for BookieSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for BookieSet {
    /// Panics on an index of 64 or more, as `insert`.
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for ensemble_index in iter {
            set.insert(ensemble_index);
        }
        set
    }
}

impl IntoIterator for BookieSet {
    type Item = usize;
    type IntoIter = BookieSetIter;

    fn into_iter(self) -> BookieSetIter {
        self.iter()
    }
}

/// The indexes of a `BookieSet` in increasing order.
#[derive(Clone, Debug)]
pub struct BookieSetIter {
    bits: u64,
}

impl Iterator for BookieSetIter {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.bits == 0 {
            return None;
        }
        let ensemble_index = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(ensemble_index)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self.bits.count_ones() as usize;
        (len, Some(len))
    }
}

impl ExactSizeIterator for BookieSetIter {}
