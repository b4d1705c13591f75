//! Writes seed inputs that get past the checksums into `corpus/<target>/` (next to this
//! crate's Cargo.toml), so the fuzzer starts from well-formed records, headers, journals,
//! metadata logs and values, and wire frames, instead of having to find a CRC32C by itself:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//! ```
//!
//! The metadata, wire and storage seeds are committed (force-added: `corpus/` is ignored); all
//! but `metadata_*/local-store` come out the same on every run.

use std::fs;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use dlog_engine::journal::record::{self, LAC_NONE, RecordHeader, RecordKind};
use dlog_engine::storage::manifest::Manifest;
use dlog_fuzz::metadata::{sample_log, sample_log_segment, sample_segment};
use dlog_fuzz::protocol::sample_wire_input;
use dlog_fuzz::storage::{sample_entry_log, sample_manifest};
use dlog_fuzz::{Rng, replay_file_header, sample_journal_body};
use dlog_metadata::schema::wire;
use dlog_metadata::{LocalOptions, LocalStore, MetadataStore};

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
    metadata_seeds(&write);
    for (seed, frames, responses, piece) in [
        (1u64, 1usize, false, 0u8),
        (2, 8, false, 7),
        (3, 16, false, 1),
        (4, 1, true, 0),
        (5, 8, true, 13),
        (6, 16, true, 1),
    ] {
        let direction = if responses { "responses" } else { "requests" };
        let input = sample_wire_input(seed, frames, responses, piece);
        write("wire_frame_decode", format!("{direction}-{frames}-piece-{piece}"), &input);
    }
    storage_seeds(&write);
    println!("seeds written under {}", corpus.display());
}

/// Entry logs of one to four runs (one cut after its footer, the rest whole), and manifests:
/// empty, without a checkpoint, and as a shard writes them.
fn storage_seeds(write: &impl Fn(&str, String, &[u8])) {
    for (seed, runs, trim) in
        [(1u64, 1usize, true), (2, 1, false), (3, 2, false), (4, 3, true), (5, 4, false)]
    {
        let (input, _) = sample_entry_log(seed, runs, trim);
        let name = format!("runs-{runs}{}", if trim { "-trimmed" } else { "" });
        write("entry_log_decode", name, &input);
    }
    write("manifest_decode", "empty".into(), &Manifest::default().encode());
    let mut rng = Rng::new(11);
    for i in 0..5 {
        let mut manifest = sample_manifest(&mut rng);
        if i == 0 {
            manifest.checkpoint = None;
        }
        write("manifest_decode", format!("shard-{i}"), &manifest.encode());
    }
}

fn metadata_seeds(write: &impl Fn(&str, String, &[u8])) {
    let logs = ["metadata_log_decode", "metadata_replay"];
    for (seed, commits, rewrite) in [(1u64, 3usize, None), (2, 12, None), (3, 12, Some(6)), (4, 30, Some(20))]
    {
        let (log, _) = sample_log(seed, commits, rewrite);
        let name = format!("core-{commits}{}", rewrite.map_or(String::new(), |r| format!("-rewrite-{r}")));
        for target in logs {
            write(target, name.clone(), &log);
        }
    }
    let log = local_store_log();
    for target in logs {
        write(target, "local-store".into(), &log);
    }

    let values = "metadata_value_decode";
    let mut rng = Rng::new(9);
    for i in 0..6 {
        let segment = sample_segment(&mut rng).encode().expect("a sample segment encodes");
        write(values, format!("segment-{i}"), &segment);
        let log_segment = sample_log_segment(&mut rng).encode().expect("a sample log segment encodes");
        write(values, format!("log-segment-{i}"), &log_segment);
    }
    let id = "0123456789abcdef0123456789abcdef".to_string();
    let dlsn = wire::Dlsn { segment_seq: 3, entry_id: 41, slot: 2 };
    let wires: [(&str, Bytes); 8] = [
        (
            "cluster",
            wire::encode(&wire::ClusterInfo { instance_id: id.clone(), created_ms: 1_700_000_000_000 }),
        ),
        (
            "bookie",
            wire::encode(&wire::BookieInfo {
                endpoint: "10.0.0.7:3181".into(),
                shards: 4,
                rack: "r1".into(),
                zone: "z1".into(),
                version: "0.1.0".into(),
                registered_ms: 1_700_000_000_000,
                free_bytes: 1 << 40,
            }),
        ),
        (
            "cookie",
            wire::encode(&wire::Cookie {
                bookie_id: "bookie-1:3181".into(),
                instance_id: id.clone(),
                journal_dirs: vec!["/j0".into(), "/j1".into()],
                ledger_dirs: vec!["/l0".into()],
                disk_id: id.clone(),
            }),
        ),
        ("namespace", wire::encode(&wire::NamespaceInfo { created_ms: 5 })),
        (
            "log",
            wire::encode(&wire::LogMetadata {
                created_ms: 5,
                next_txid: 100,
                truncated_before: Some(dlsn),
                writer_epoch: 2,
                next_segment_seq: 4,
            }),
        ),
        (
            "writer-lock",
            wire::encode(&wire::WriterLock { owner: "host-1/4242".into(), epoch: 2, acquired_ms: 9 }),
        ),
        (
            "under-replicated",
            wire::encode(&wire::UnderReplicated { missing: vec!["bookie-1:3181".into()], since_ms: 9 }),
        ),
        ("claim", wire::encode(&wire::Claim { owner: "auditor-1".into(), since_ms: 9 })),
    ];
    for (name, value) in wires {
        write(values, name.into(), &value);
    }
}

/// The log of a real `LocalStore` (rewritten past 2 KiB): transactions, group commits of
/// concurrent puts, leases granted, kept alive, revoked and expired, a rewrite, and records
/// after it.
fn local_store_log() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("dlog-fuzz-seed-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let store =
        LocalStore::open_with(&dir, LocalOptions { rewrite_bytes: 2 << 10 }).expect("open a local store");
    let value = |n: usize| Bytes::from(vec![b'v'; n]);
    for i in 0..8 {
        block_on(store.put(&format!("segments/{i:020}"), value(40 + i))).expect("put");
    }
    let lease = block_on(store.grant(Duration::from_secs(30))).expect("grant");
    block_on(store.create("bookies/writable/bookie-1:3181", value(20), Some(lease))).expect("create");
    block_on(store.keep_alive(lease)).expect("keep alive");
    let short = block_on(store.grant(Duration::from_millis(1))).expect("grant");
    let _ = block_on(store.create("underreplicated-locks/00000000000000000001", value(8), Some(short)));
    // Concurrent puts, applied as group commits of several records (Batch frames).
    std::thread::scope(|s| {
        for t in 0..6 {
            let store = &store;
            s.spawn(move || {
                for i in 0..4 {
                    block_on(store.put(&format!("logs/ns/log-{t}-{i}"), value(16))).expect("put");
                }
            });
        }
    });
    // The short lease has expired by now, or expires while this waits: an End record.
    while block_on(store.get("underreplicated-locks/00000000000000000001")).expect("get").is_some() {}
    block_on(store.delete("segments/00000000000000000003")).expect("delete");
    block_on(store.revoke(lease)).expect("revoke");
    block_on(store.put("cluster", value(30))).expect("put");
    store.close();
    let log = fs::read(dir.join("metadata.log")).expect("read the store's log");
    let _ = fs::remove_dir_all(&dir);
    log
}

/// Runs a future on this thread (the store's replies arrive from its own thread).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
