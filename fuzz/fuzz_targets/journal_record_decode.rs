//! `record::decode` on arbitrary bytes: input = 8-byte little-endian epoch, then the record
//! bytes. Must never panic; an accepted record must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dlog_fuzz::check_record_decode(data));
