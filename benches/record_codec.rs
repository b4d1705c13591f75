//! Journal record codec: `record::encode` / `record::decode` at three payload sizes, the two
//! CRC32 implementations we could frame records with, and laying out a whole batch.
//!
//! The `checksum` group weighs the CRC the journal frames records with: CRC32C (Castagnoli,
//! the `crc32c` crate: SSE4.2 / ARMv8 `crc32` instructions) against CRC32 (IEEE, the
//! `crc32fast` crate: carry-less multiply folding), on the same buffers. Which is faster
//! depends on the CPU and the length; `record_decode` at 64 KiB is almost all CRC time.
//! Run: `cargo bench --bench record_codec` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dlog_engine::io::buf::AlignedBuf;
use dlog_engine::journal::batch::BatchBuilder;
use dlog_engine::journal::record::{self, LAC_NONE, RecordHeader, RecordKind};

/// Payload sizes: a small entry, a page, a large entry.
const SIZES: [usize; 3] = [100, 4 << 10, 64 << 10];

const EPOCH: u64 = 0x0123_4567_89AB_CDEF;

fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn entry_header(entry: u64, len: usize) -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Entry,
        flags: 0,
        payload_len: len as u32,
        segment_id: 42,
        entry_id: entry,
        last_add_confirmed: entry.checked_sub(1).unwrap_or(LAC_NONE),
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("record_encode");
    for size in SIZES {
        let data = payload(size);
        let header = entry_header(7, size);
        let mut out = vec![0u8; record::record_bytes(size)];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
            b.iter(|| {
                record::encode(black_box(&mut out), black_box(EPOCH), black_box(&header), black_box(data));
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("record_decode");
    for size in SIZES {
        let data = payload(size);
        let mut encoded = vec![0u8; record::record_bytes(size)];
        record::encode(&mut encoded, EPOCH, &entry_header(7, size), &data);
        assert!(record::decode(&encoded, EPOCH).is_ok());
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &encoded, |b, encoded| {
            b.iter(|| {
                let decoded = record::decode(black_box(encoded), black_box(EPOCH));
                black_box(decoded.is_ok())
            });
        });
    }
    group.finish();
}

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum");
    for size in SIZES {
        let data = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("crc32c", size), &data, |b, data| {
            b.iter(|| crc32c::crc32c(black_box(data)));
        });
        group.bench_with_input(BenchmarkId::new("crc32fast", size), &data, |b, data| {
            b.iter(|| crc32fast::hash(black_box(data)));
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    const ENTRIES: u64 = 100;
    const ENTRY_BYTES: usize = 100;
    let data = payload(ENTRY_BYTES);
    let headers: Vec<RecordHeader> = (0..ENTRIES).map(|e| entry_header(e, ENTRY_BYTES)).collect();
    // Records, plus the batch record and closing slack, rounded up by `AlignedBuf`.
    let capacity = (ENTRIES as usize + 1) * record::record_bytes(ENTRY_BYTES)
        + dlog_engine::journal::batch::BATCH_CLOSE_SLACK_BYTES;
    let mut buf = Some(AlignedBuf::with_capacity(capacity));
    let mut seq = 0u64;
    let mut group = c.benchmark_group("batch_builder");
    group.throughput(Throughput::Elements(ENTRIES));
    group.bench_function("push_close_100x100B", |b| {
        b.iter(|| {
            let mut builder = BatchBuilder::new(buf.take().expect("buffer returned"), EPOCH, seq);
            seq += 1;
            for header in &headers {
                builder.push(black_box(header), black_box(&data));
            }
            let closed = builder.close();
            black_box(closed.len());
            buf = Some(closed);
        });
    });
    group.finish();
}

criterion_group!(benches, codec, checksum, batch);
criterion_main!(benches);
