//! Baselines: what the disk does with no dlog in the way, measured through the same io_uring
//! layer the engine uses (so no unsafe code lives here).
//!
//! - `write_flush_loop`: one O_DIRECT write of `write_bytes` followed by one fdatasync (linked),
//!   one at a time, overwriting a preallocated, zeroed file, like a hand-written durable log.
//! - `read_sequential`: O_DIRECT reads of 4 MiB, one at a time, of given file ranges.
//! - `pread_loop`: 4 KiB O_DIRECT preads at scattered offsets of a scratch file, one at a time.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dlog_engine::io::buf::AlignedBuf;
use dlog_engine::io::uring::UringDisk;
use dlog_engine::io::waker::Waker;
use dlog_engine::io::{Disk, DiskOp};
use dlog_engine::{FileSeq, JournalSync};
use hdrhistogram::Histogram;

use crate::bench::stats::histogram;

/// A preallocated, zero-filled scratch file for write baselines.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
    bytes: u64,
}

impl ScratchFile {
    /// Creates and zero-fills `bytes` at `path` (so overwrites carry no metadata, as the
    /// journal's prepared files).
    pub fn create(path: &Path, bytes: u64) -> Result<ScratchFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        let mut zeros = AlignedBuf::with_capacity(1 << 20);
        zeros.set_len(1 << 20);
        let mut at = 0;
        while at < bytes {
            file.write_all_at(zeros.as_slice(), at)?;
            at += 1 << 20;
        }
        file.sync_all()?;
        Ok(ScratchFile { path: path.to_path_buf(), bytes })
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Result of a write+flush loop.
#[derive(Debug)]
pub struct WriteLoop {
    /// Bytes per write.
    pub write_bytes: usize,
    /// Writes done.
    pub writes: u64,
    /// Time taken.
    pub elapsed: Duration,
    /// Per-write latency (write + flush), ns.
    pub histogram: Histogram<u64>,
}

impl WriteLoop {
    /// Throughput in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.writes as f64 * self.write_bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
fn now() -> Instant {
    Instant::now()
}

/// Writes `write_bytes` (rounded up to 4 KiB) then fdatasync, serially, for `duration`.
pub fn write_flush_loop(file: &ScratchFile, write_bytes: usize, duration: Duration) -> Result<WriteLoop> {
    let write_bytes = write_bytes.max(4096).next_multiple_of(4096);
    let mut disk = UringDisk::new().context("io_uring for the baseline")?;
    let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&file.path)?;
    disk.register_file(FileSeq(0), f)?;
    let waker = Waker::new()?;
    let mut buf = AlignedBuf::with_capacity(write_bytes);
    buf.set_len(write_bytes);
    buf.as_mut_slice().fill(0x5A);
    let mut histogram = histogram();
    let mut offset = 0u64;
    let mut writes = 0u64;
    let mut completions = Vec::new();
    let started = now();
    while now() - started < duration {
        if offset + write_bytes as u64 > file.bytes {
            offset = 0;
        }
        let t = now();
        disk.submit(
            writes,
            DiskOp::Write { file: FileSeq(0), offset, buf, sync: Some(JournalSync::Fdatasync) },
        );
        while completions.is_empty() {
            disk.reap(&mut completions, Some(Duration::from_secs(1)), &waker)?;
        }
        let done = completions.pop().expect("one completion");
        if let Err((op, e)) = done.result {
            anyhow::bail!("baseline {op:?} failed: {e}");
        }
        histogram.record((now() - t).as_nanos() as u64).ok();
        buf = done.buf;
        offset += write_bytes as u64;
        writes += 1;
    }
    Ok(WriteLoop { write_bytes, writes, elapsed: now() - started, histogram })
}

/// Reads the given `(path, from, to)` ranges sequentially with 4 MiB O_DIRECT reads; returns
/// bytes read and time taken.
pub fn read_sequential(ranges: &[(PathBuf, u64, u64)]) -> Result<(u64, Duration)> {
    let chunk = 4 << 20;
    let mut buf = AlignedBuf::with_capacity(chunk);
    let started = now();
    let mut total = 0u64;
    for (path, from, to) in ranges {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)?;
        let mut at = *from - *from % 4096;
        while at < *to {
            let n = ((*to - at) as usize).min(chunk).next_multiple_of(4096);
            buf.set_len(n);
            let got = file.read_at(buf.as_mut_slice(), at)?;
            if got == 0 {
                break;
            }
            total += got as u64;
            at += got as u64;
        }
    }
    Ok((total, now() - started))
}

/// Times 4 KiB O_DIRECT preads (plain `pread`, one at a time) at scattered 4 KiB-aligned offsets
/// of `file` for `duration`: what one read from the disk costs, for context beside reads that
/// dlog answers from memory. Returns the per-read latency, ns.
pub fn pread_loop(file: &ScratchFile, duration: Duration) -> Result<Histogram<u64>> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&file.path)?;
    let blocks = (file.bytes / 4096).max(1);
    let mut buf = AlignedBuf::with_capacity(4096);
    buf.set_len(4096);
    let mut histogram = histogram();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let started = now();
    while now() - started < duration {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let offset = (x >> 33) % blocks * 4096;
        let t = now();
        let got = f.read_at(buf.as_mut_slice(), offset)?;
        histogram.record((now() - t).as_nanos() as u64).ok();
        anyhow::ensure!(got == 4096, "baseline pread at {offset}: {got} bytes");
    }
    Ok(histogram)
}
