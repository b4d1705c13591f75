//! `Limits`: the bounds a decoder enforces, and the protocol's fixed constants.
//!
//! Owns: the size limits of frames, entry payloads, master keys, authentication tokens, error
//! messages and range reads, and the check that configured limits fit together.
//! Does not own: per-connection bounds (requests in flight, idle timeouts): the server's.
//!
//! Invariants:
//! - L1: `Limits::validate` accepts only limits under which the largest legal ADD request and
//!   the largest READ_RANGE response the server builds fit in one frame.
//! - L2: the decoder never trusts a length field beyond these limits: it refuses first.

use crate::frame::FRAME_HEADER_BYTES;

/// `last_add_confirmed` (or a known LAC) "none" on the wire: no entry is confirmed yet. The
/// engine's journal uses the same value (`record::LAC_NONE`).
pub const LAC_NONE: u64 = u64::MAX;

/// Largest master key, in bytes: the engine's `MASTER_KEY_BYTES_MAX` (checked equal in
/// tests/fuzz_smoke.rs). On the wire its length is one byte.
pub const MASTER_KEY_BYTES_MAX: usize = 64;

/// Largest authentication token, in bytes (either direction).
pub const AUTH_TOKEN_BYTES_MAX: usize = 64 << 10;

/// Largest message a refusal carries, in bytes of UTF-8; encoders cut longer ones at a
/// character boundary.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// Most entries one READ_RANGE response carries: the engine's range read returns at most
/// 64 Ki entries per call.
pub const RANGE_ENTRIES_MAX: usize = 64 << 10;

/// Bytes a READ_RANGE response spends per entry besides its payload (entry id, length).
pub const RANGE_ENTRY_OVERHEAD_BYTES: usize = 12;

/// Bytes of an ADD request besides its payload, at the longest master key.
pub const ADD_OVERHEAD_BYTES_MAX: usize = FRAME_HEADER_BYTES + 3 * 8 + 1 + MASTER_KEY_BYTES_MAX;

const _: () = assert!(MASTER_KEY_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(AUTH_TOKEN_BYTES_MAX <= u32::MAX as usize);

/// The configurable bounds of a codec endpoint. Both sides should use the same values; the
/// defaults match the engine's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, header included, in bytes. A frame whose length field claims more is
    /// refused before any of its body is read, and the connection closed. Default 16 MiB plus
    /// the 16-byte header.
    pub frame_bytes_max: u32,
    /// Largest entry payload, in bytes, in an ADD request or a READ, LONG_POLL or READ_RANGE
    /// response. Default 1 MiB (the engine's default `entry_bytes_max`).
    pub entry_bytes_max: u32,
    /// Largest `max_bytes` a READ_RANGE is served with: the server reads at most this much
    /// (plus one entry when the first is larger), whatever the request asks. Default 8 MiB.
    pub range_bytes_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: (16 << 20) + FRAME_HEADER_BYTES as u32,
            entry_bytes_max: 1 << 20,
            range_bytes_max: 8 << 20,
        }
    }
}

/// Why a set of limits does not fit together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The field is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The frame limit cannot hold what the other limits allow.
    #[error("frame_bytes_max {frame_bytes_max} is below {needed}, the largest {what}")]
    FrameTooSmall {
        /// The configured frame limit.
        frame_bytes_max: u32,
        /// What it must be at least.
        needed: u64,
        /// Which frame needs it.
        what: &'static str,
    },
}

impl Limits {
    /// Checks that the largest legal ADD request and READ_RANGE response fit in a frame (L1).
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.entry_bytes_max == 0 {
            return Err(LimitsError::Zero("entry_bytes_max"));
        }
        if self.range_bytes_max == 0 {
            return Err(LimitsError::Zero("range_bytes_max"));
        }
        let add = ADD_OVERHEAD_BYTES_MAX as u64 + u64::from(self.entry_bytes_max);
        let range = self.range_response_bytes_max();
        let auth = (FRAME_HEADER_BYTES + 1 + AUTH_TOKEN_BYTES_MAX) as u64;
        for (needed, what) in [(add, "ADD request"), (range, "READ_RANGE response"), (auth, "AUTH frame")] {
            if u64::from(self.frame_bytes_max) < needed {
                return Err(LimitsError::FrameTooSmall {
                    frame_bytes_max: self.frame_bytes_max,
                    needed,
                    what,
                });
            }
        }
        Ok(())
    }

    /// The `max_bytes` the server reads a READ_RANGE with: the request's, capped at
    /// `range_bytes_max`.
    pub fn range_bytes(&self, requested: u32) -> u32 {
        requested.min(self.range_bytes_max)
    }

    /// The largest READ_RANGE response frame a server following `range_bytes` builds: the
    /// engine returns at most `max_bytes` of payloads, or one entry when the first is larger,
    /// and at most `RANGE_ENTRIES_MAX` entries.
    pub fn range_response_bytes_max(&self) -> u64 {
        let payloads = u64::from(self.range_bytes_max.max(self.entry_bytes_max));
        (FRAME_HEADER_BYTES + 1 + 4 + RANGE_ENTRIES_MAX * RANGE_ENTRY_OVERHEAD_BYTES) as u64 + payloads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn frame_too_small_for_entries_is_refused() {
        let limits = Limits { frame_bytes_max: 1 << 20, ..Limits::default() };
        assert!(matches!(limits.validate(), Err(LimitsError::FrameTooSmall { what: "ADD request", .. })));
        let limits = Limits { entry_bytes_max: 0, ..Limits::default() };
        assert_eq!(limits.validate(), Err(LimitsError::Zero("entry_bytes_max")));
    }

    #[test]
    fn range_bytes_are_capped() {
        let limits = Limits::default();
        assert_eq!(limits.range_bytes(100), 100);
        assert_eq!(limits.range_bytes(u32::MAX), limits.range_bytes_max);
    }
}
