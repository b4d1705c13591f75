//! Journal replay on arbitrary file content: the input is what follows a valid header block in
//! `shard-0/journal-0000000000000000.log` (zero-padded to the file size). `Bookie::open` must
//! return `Ok` or `Err`, never panic (see `dlog_fuzz::check_journal_replay`).
//!
//! Each process works in one directory, `$DLOG_FUZZ_DIR` or `/dev/shm` (tmpfs: flushes are
//! free) or the temporary directory, named `dlog-fuzz-replay-<pid>`, emptied for every input.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = std::env::var_os("DLOG_FUZZ_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() { shm } else { std::env::temp_dir() }
    });
    base.join(format!("dlog-fuzz-replay-{}", std::process::id()))
});

fuzz_target!(|data: &[u8]| dlog_fuzz::check_journal_replay(&DIR, data));
