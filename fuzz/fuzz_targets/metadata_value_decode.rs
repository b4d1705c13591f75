//! Every metadata schema value decoder (`SegmentMetadata`, `LogSegment`, each wire message) on
//! arbitrary bytes: must never panic; a value that decodes must round-trip through `encode`
//! (see `dlog_fuzz::metadata::check_value_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dlog_fuzz::metadata::check_value_decode(data));
