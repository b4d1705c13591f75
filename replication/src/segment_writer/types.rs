//! The writer's settings, errors, outputs and counters.

use std::time::Duration;

use dlog_protocol::{MASTER_KEY_BYTES_MAX, Request};

use super::Tag;
use crate::quorum::BookieSet;

/// How the writer bounds its window and flushes its LAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterSettings {
    /// Most entries held (W5). Default 1024; at least 1.
    pub window_entries_max: usize,
    /// Most payload bytes of entries not yet completed (W5). Default 64 MiB; at least 1.
    pub window_bytes_max: u64,
    /// The largest payload an add takes: the bookies' entry limit less the entry envelope's
    /// header (`dlog_protocol::Limits::entry_bytes_max` − `ENVELOPE_HEADER_BYTES`). Default
    /// 1 MiB − 12 bytes; at least 1.
    pub entry_bytes_max: u64,
    /// After no add for this long, a LAC not yet sent is written with WRITE_LAC to every
    /// member of the current ensemble. Default 1 ms.
    pub lac_flush_delay: Duration,
    /// After an ensemble change failed for want of a replacement or a store, the next attempt
    /// waits this long (the writer goes on with the members it has meanwhile, W7). Default 1 s.
    pub ensemble_change_retry: Duration,
    /// Ensemble changes that may fail in a row for want of a replacement before the entries
    /// that cannot reach Qa without the failed members fail; until then those members are
    /// sent to again (they may only be slow). Default 10; at least 1.
    pub ensemble_change_attempts_max: u32,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            window_entries_max: 1024,
            window_bytes_max: 64 << 20,
            entry_bytes_max: u64::from(dlog_protocol::Limits::default().entry_bytes_max)
                - crate::entry_envelope::ENVELOPE_HEADER_BYTES as u64,
            lac_flush_delay: Duration::from_millis(1),
            ensemble_change_retry: Duration::from_secs(1),
            ensemble_change_attempts_max: 10,
        }
    }
}

/// Why `SegmentWriter::new` refused its arguments.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The ensemble does not have `ensemble_size` members.
    #[error("ensemble of {actual} bookies for ensemble_size {expected}")]
    EnsembleSize {
        /// `QuorumSizes::ensemble_size`.
        expected: usize,
        /// The ensemble's length.
        actual: usize,
    },
    /// A window bound is zero.
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    /// The master key is longer than the wire allows.
    #[error("master key of {0} bytes is over {MASTER_KEY_BYTES_MAX}")]
    MasterKeyTooLong(usize),
}

/// Why an add was refused or failed, or why the writer stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriterError {
    /// The window is full (W5): add again after completions.
    #[error("write window full")]
    WindowFull,
    /// The payload is larger than `entry_bytes_max` (or `window_bytes_max`).
    #[error("entry of {bytes} bytes is over the limit of {max}")]
    EntryTooLarge {
        /// The payload's length.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A bookie refused the entry itself (too large for it, or malformed): no bookie will take
    /// it, so it and every entry after it fail; no bookie is replaced for it.
    #[error("entry {entry} refused: {reason}")]
    EntryRefused {
        /// The entry.
        entry: u64,
        /// The status or transport error.
        reason: String,
    },
    /// The segment has used every entry id (`ENTRY_ID_LIMIT`).
    #[error("entry ids exhausted")]
    EntryIdsExhausted,
    /// A bookie answered `Fenced`: a recoverer took the segment over (W4).
    #[error("segment fenced")]
    Fenced,
    /// A bookie answered `WrongMasterKey`: this writer does not own the segment.
    #[error("wrong master key")]
    WrongMasterKey,
    /// A bookie answered `Unauthorized`: this client's identity may not write the segment (its
    /// credentials, or the bookies' permissions for the segment's namespace). Another bookie
    /// would answer the same, so no ensemble change is tried.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// The write set of `entry` cannot reach Qa acks and the ensemble change that would have
    /// replaced its failed members failed (no replacement bookie, or the store): that entry
    /// and every one after it fail.
    #[error("entry {entry} cannot reach its ack quorum: {reason}")]
    QuorumUnreachable {
        /// The first entry that could not reach Qa.
        entry: u64,
        /// Why the ensemble change failed.
        reason: String,
    },
    /// The writer is closing or closed.
    #[error("writer closed")]
    Closed,
    /// The close's metadata update failed (given to `on_closed` by the shell).
    #[error("closing the segment metadata failed: {0}")]
    Metadata(String),
}

impl WriterError {
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, WriterError::Fenced | WriterError::WrongMasterKey | WriterError::Unauthorized(_))
    }
}

/// Work for the shell, drained with `SegmentWriter::poll_output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `request` to the bookie at `bookie_index` of an ensemble, tagged `tag`; give its
    /// answer to `on_response` with the same tag.
    Send {
        /// The index in the ensemble holding the entry for an ADD (`ensemble_of(entry)`), in
        /// the current ensemble (`ensemble()`) for a WRITE_LAC.
        bookie_index: usize,
        /// The tag to submit with.
        tag: Tag,
        /// An ADD or a WRITE_LAC.
        request: Request,
    },
    /// Entry `entry` is done (W1): acknowledged, or failed with the error.
    Completed {
        /// The entry.
        entry: u64,
        /// `Ok` once Qa members of its write set acked it (W3).
        result: Result<(), WriterError>,
    },
    /// The LAC advanced to this entry (W2).
    LastAddConfirmed(u64),
    /// The bookie at `bookie_index` failed `entry` (an error answer or no answer); for logs and
    /// metrics. A `ChangeEnsemble` follows unless that bookie is already being replaced.
    BookieFailed {
        /// The ensemble index.
        bookie_index: usize,
        /// The entry it failed.
        entry: u64,
    },
    /// Replace the bookies at `replace` (indexes of `SegmentWriter::ensemble()`) from
    /// `first_entry` on: choose a replacement for each (not a member of the ensemble), then
    /// compare-and-set the segment metadata, if it is still Open, to hold the new ensemble from
    /// `first_entry` (replacing an ensemble that starts there already), and give the new
    /// ensemble, or why not, to `on_ensemble_changed`. Completions wait meanwhile (W7).
    ChangeEnsemble {
        /// The first entry the new ensemble holds: the first entry not yet completed.
        first_entry: u64,
        /// The indexes to replace.
        replace: BookieSet,
    },
    /// Every entry completed `Ok`: compare-and-set the metadata to Closed at `last_entry`
    /// (`None`: the segment is empty) and `length`, then call `on_closed`.
    CloseRequested {
        /// The LAC: the last entry.
        last_entry: Option<u64>,
        /// The total payload bytes of entries `0..=last_entry`.
        length: u64,
    },
    /// The close ended: `Ok` once the metadata says Closed at `last_entry`.
    Closed(Result<(), WriterError>),
}

/// Why an ensemble change did not happen (the shell's answer to `ChangeEnsemble`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnsembleChangeError {
    /// The metadata is no longer Open (a recoverer fenced or closed the segment): the writer
    /// stops with `Fenced`.
    #[error("segment no longer open")]
    Fenced,
    /// No bookie could replace a failed one, or the store failed: the writer goes on with the
    /// members it has while every entry can still reach Qa, and tries again later (W7).
    #[error("{0}")]
    Unavailable(String),
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Answers ignored because their tag named no request in flight (W6).
    pub ignored_responses: u64,
    /// Acks that arrived after their entry had completed (normal when Qw > Qa).
    pub late_acks: u64,
    /// Failed ADDs (error answers, no answers, answers that do not match the request).
    pub add_failures: u64,
    /// WRITE_LAC requests sent (one per member of the current ensemble).
    pub lac_writes: u64,
    /// WRITE_LACs that failed (harmless: the next ADD carries the LAC too).
    pub lac_write_failures: u64,
    /// Ensemble changes that landed.
    pub ensemble_changes: u64,
    /// Ensemble changes that failed (`EnsembleChangeError::Unavailable`).
    pub ensemble_change_failures: u64,
    /// ADDs re-sent to a replacement bookie.
    pub resent_adds: u64,
    /// ADDs sent again to a failed member for want of a replacement.
    pub retried_adds: u64,
}
