//! `FileHeader::decode` on arbitrary bytes: must never panic; an accepted header must round-trip
//! through `encode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dlog_fuzz::check_file_header_decode(data));
