//! An entry log's runs on arbitrary bytes: input = 8-byte little-endian epoch (the log's
//! `LogSeq`), then the log. `run::decode_header`, `decode_footer`, `decode_element` and
//! `decode_entry` must never panic; what they accept must obey the format and round-trip, and
//! the run index built from it must answer as the footers say (see
//! `dlog_fuzz::storage::check_entry_log_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dlog_fuzz::storage::check_entry_log_decode(data));
