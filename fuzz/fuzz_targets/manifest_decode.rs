//! `Manifest::decode` (a shard's storage manifest) on arbitrary bytes: must never panic, must
//! accept exactly what the format does, and a manifest it accepts must re-encode to the
//! canonical form of its bytes (see `dlog_fuzz::storage::check_manifest_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dlog_fuzz::storage::check_manifest_decode(data));
