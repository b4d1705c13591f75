//! The bookie wire protocol's streaming decoders on arbitrary bytes: input = mode byte
//! (requests or responses, default or small limits), piece size byte, then the stream. Must
//! never panic, reserve past the frame limit, or decode differently piece by piece than all at
//! once; decoded frames must re-encode to their bytes (see `dlog_fuzz::protocol`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dlog_fuzz::protocol::check_wire_decode(data));
