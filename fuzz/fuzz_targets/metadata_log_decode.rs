//! `local_log::decode_log` (the embedded metadata store's log) on arbitrary bytes: must never
//! panic; its end offset, valid prefix, torn-tail cut and re-encoding must hold up (see
//! `dlog_fuzz::metadata::check_log_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dlog_fuzz::metadata::check_log_decode(data));
