//! Durable journal appends through the embedded API: `Bookie::add_entries(batch).wait()`, one
//! batch at a time from one caller, so each iteration is one group commit (write + flush)
//! plus the queue hand-offs. This is latency-bound; it measures the floor a single writer sees,
//! not the shard's throughput under many concurrent writers.
//!
//! One shard, 64 MiB journal files, 4 recycled. The benchmark stands in for segment storage:
//! every 1000 iterations (and at the start of every measurement batch) it checkpoints at the
//! journal's durable position so that files are reclaimed and reused and the journal does not
//! grow without bound.
//!
//! The journal directory is a temporary directory under `$DLOG_BENCH_DIR` if set, otherwise
//! under the system temporary directory: the numbers are those of that filesystem's device.
//! Run: `cargo bench --bench journal_append`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dlog_engine::{AddEntry, AddFlags, Bookie, BookieConfig, EntryId, SegmentId, ShardId};

/// Checkpoint (and so reclaim files) at least this often.
const CHECKPOINT_EVERY_ITERATIONS: u64 = 1000;
/// ... or once this many payload bytes were appended since the last checkpoint (a quarter of
/// a journal file), whichever comes first.
const CHECKPOINT_EVERY_BYTES: u64 = 16 << 20;

struct Case {
    name: &'static str,
    entries: usize,
    entry_bytes: usize,
    throughput: Throughput,
}

fn cases() -> Vec<Case> {
    let elements = |name, entries: usize, entry_bytes| Case {
        name,
        entries,
        entry_bytes,
        throughput: Throughput::Elements(entries as u64),
    };
    let bytes = |name, entries: usize, entry_bytes: usize| Case {
        name,
        entries,
        entry_bytes,
        throughput: Throughput::Bytes((entries * entry_bytes) as u64),
    };
    vec![
        elements("1x100B", 1, 100),
        elements("16x100B", 16, 100),
        elements("256x100B", 256, 100),
        bytes("16x4KiB", 16, 4 << 10),
        bytes("4x64KiB", 4, 64 << 10),
    ]
}

fn payload(len: usize) -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// Checkpoints the shard at its durable end: everything before it is reclaimable.
fn checkpoint(bookie: &Bookie) {
    let mark = bookie.journal_position(ShardId(0)).wait().expect("journal position");
    bookie.checkpoint(ShardId(0), mark).wait().expect("checkpoint");
}

fn journal_append(c: &mut Criterion) {
    let dir = match std::env::var_os("DLOG_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("temporary journal directory");
    let mut config = BookieConfig::new(dir.path());
    config.shard_count = 1;
    config.journal_file_bytes = 64 << 20;
    config.journal_files_recycled_max = 4;
    // Files must be at least 4 x max(batch_bytes_max, entry_bytes_max) + 1 MiB; 1 MiB entries
    // cover every case here and keep 64 MiB files valid whatever the defaults are.
    config.entry_bytes_max = 1 << 20;
    let bookie = Bookie::open(config).expect("open bookie");
    eprintln!(
        "journal_append: {} backend, direct I/O {}, journal in {}",
        bookie.backend(),
        if bookie.direct_io() { "on" } else { "off" },
        dir.path().display()
    );
    let master_key = Bytes::from_static(b"bench-master-key");

    let mut group = c.benchmark_group("journal_append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (index, case) in cases().into_iter().enumerate() {
        let segment = SegmentId(index as u64 + 1);
        let data = payload(case.entry_bytes);
        let mut next_entry = 0u64;
        let mut make_batch = || -> Vec<AddEntry> {
            let batch = (0..case.entries as u64)
                .map(|i| {
                    let entry = next_entry + i;
                    AddEntry {
                        segment,
                        entry: EntryId(entry),
                        last_add_confirmed: entry.checked_sub(1).map(EntryId),
                        master_key: master_key.clone(),
                        payload: data.clone(),
                        flags: AddFlags::NONE,
                    }
                })
                .collect();
            next_entry += case.entries as u64;
            batch
        };
        let batch_bytes = (case.entries * case.entry_bytes) as u64;
        group.throughput(case.throughput);
        group.bench_function(BenchmarkId::from_parameter(case.name), |b| {
            b.iter_custom(|iters| {
                checkpoint(&bookie);
                let mut since_checkpoint = (0u64, 0u64);
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    let batch = make_batch();
                    #[expect(clippy::disallowed_methods, reason = "a benchmark times its iterations")]
                    let started = Instant::now();
                    bookie.add_entries(batch).wait().expect("durable append");
                    measured += started.elapsed();
                    since_checkpoint.0 += 1;
                    since_checkpoint.1 += batch_bytes;
                    if since_checkpoint.0 >= CHECKPOINT_EVERY_ITERATIONS
                        || since_checkpoint.1 >= CHECKPOINT_EVERY_BYTES
                    {
                        checkpoint(&bookie);
                        since_checkpoint = (0, 0);
                    }
                }
                measured
            });
        });
    }
    group.finish();
    let stats = bookie.stats(ShardId(0)).expect("stats");
    eprintln!("journal_append: shard 0 {stats:?}");
    bookie.close();
}

criterion_group!(benches, journal_append);
criterion_main!(benches);
