//! The wall clock for timestamps stored in metadata values (`created_ms` and the like): the
//! one place the metadata layer reads it. Timestamps are informative (shown to operators,
//! used by retention); no decision about safety depends on them.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
#[expect(clippy::disallowed_methods, reason = "stored timestamps are wall-clock by definition")]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
