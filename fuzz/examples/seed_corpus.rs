//! Writes seed inputs that get past the checksums into `corpus/<target>/` (next to this
//! crate's Cargo.toml), so the fuzzer starts from well-formed records, headers and journals
//! instead of having to find a CRC32C by itself:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//! ```

use std::fs;
use std::path::Path;

use dlog_engine::journal::record::{self, LAC_NONE, RecordHeader, RecordKind};
use dlog_fuzz::{Rng, replay_file_header, sample_journal_body};

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        fs::write(dir.join(name), bytes).expect("write seed");
    };

    let mut rng = Rng::new(7);
    let kinds =
        [RecordKind::Entry, RecordKind::MasterKey, RecordKind::Fence, RecordKind::Lac, RecordKind::Batch];
    for (i, kind) in kinds.into_iter().enumerate() {
        for len in [0usize, 1, 100, 1000] {
            let epoch = rng.next_u64() >> (i * 8);
            let header = RecordHeader {
                kind,
                flags: (len % 2) as u8,
                payload_len: len as u32,
                segment_id: rng.next_u64(),
                entry_id: rng.below(1000),
                last_add_confirmed: if len == 1 { LAC_NONE } else { rng.below(1000) },
            };
            let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let mut input = epoch.to_le_bytes().to_vec();
            input.resize(8 + record::record_bytes(len), 0);
            record::encode(&mut input[8..], epoch, &header, &payload);
            write("journal_record_decode", format!("{kind:?}-{len}"), &input);
        }
    }
    let padding = RecordHeader {
        kind: RecordKind::Padding,
        flags: 0,
        payload_len: 4000,
        segment_id: 0,
        entry_id: 0,
        last_add_confirmed: LAC_NONE,
    };
    let mut input = 5u64.to_le_bytes().to_vec();
    input.resize(8 + record::record_bytes(0), 0);
    record::encode(&mut input[8..], 5, &padding, &[]);
    write("journal_record_decode", "Padding".into(), &input);

    let header = replay_file_header();
    write("file_header_decode", "replay-header".into(), &header.encode());
    write("file_header_decode", "replay-header-64".into(), &header.encode()[..64]);

    for (seed, batches) in [(1u64, 1usize), (2, 2), (3, 4), (4, 8), (5, 16)] {
        let body = sample_journal_body(seed, batches);
        write("journal_replay", format!("batches-{batches}"), &body);
    }
    println!("seeds written under {}", corpus.display());
}
