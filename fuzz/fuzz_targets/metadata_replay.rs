//! `LocalCore::replay` of the records `decode_log` finds in arbitrary bytes: must never panic;
//! a record that does not apply must change nothing (see `dlog_fuzz::metadata::check_replay`).
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// One instant for the whole run, so an input replays the same every time.
static NOW: LazyLock<Instant> = LazyLock::new(dlog_fuzz::metadata::replay_now);

fuzz_target!(|data: &[u8]| dlog_fuzz::metadata::check_replay(data, *NOW));
