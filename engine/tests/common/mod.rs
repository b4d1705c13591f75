//! Helpers shared by the engine's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use bytes::Bytes;
use dlog_engine::{AddEntry, AddFlags, Backend, BookieConfig, EntryId, SegmentId};

/// Both backends, so every test runs against each.
pub const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Portable];

/// A small configuration for tests: 2 shards, 8 MiB files, no idle spinning.
pub fn config(dir: &Path, backend: Backend) -> BookieConfig {
    let mut config = BookieConfig::new(dir);
    config.shard_count = 2;
    config.journal_file_bytes = 8 << 20;
    config.batch_bytes_max = 64 << 10;
    config.entry_bytes_max = 1 << 20;
    config.idle_spin_us = 0;
    config.backend = backend;
    config
}

/// The master key tests use.
pub fn key() -> Bytes {
    Bytes::from_static(b"test-master-key")
}

/// Deterministic payload for (segment, entry).
pub fn payload(segment: u64, entry: u64, len: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(len);
    let mut x = segment.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ entry.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.push(x as u8);
    }
    Bytes::from(bytes)
}

/// An add of entry `entry` of `segment` with its deterministic payload.
pub fn add(segment: u64, entry: u64, len: usize) -> AddEntry {
    AddEntry {
        segment: SegmentId(segment),
        entry: EntryId(entry),
        last_add_confirmed: entry.checked_sub(1).map(EntryId),
        master_key: key(),
        payload: payload(segment, entry, len),
        flags: AddFlags::NONE,
    }
}

/// A small deterministic generator (SplitMix64), seeded by tests so failures replay.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
