//! The load generator: keeps a number of entries in flight against a `Bookie` and records the
//! latency of every call (submission to durable acknowledgement).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use dlog_engine::{AddEntry, AddFlags, Bookie, EntryId, SegmentId, ShardId};
use hdrhistogram::Histogram;

use crate::bench::stats::histogram;

/// What to load.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Payload bytes per entry.
    pub entry_bytes: usize,
    /// Entries in flight.
    pub concurrency: usize,
    /// Entries per `add_entries` call (each call targets one segment).
    pub batch: usize,
    /// How long to run.
    pub duration: Duration,
    /// Poll for completions instead of blocking (lowest latency at low concurrency).
    pub spin: bool,
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// Unpins the calling thread.
pub fn unpin() -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for cpu in 0..cpus {
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// What a load run did.
#[derive(Debug)]
pub struct LoadResult {
    /// Entries acknowledged.
    pub entries: u64,
    /// Payload bytes acknowledged.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Per-call latency, ns.
    pub histogram: Histogram<u64>,
}

/// Segments and their next entry ids; persists across rounds so ids keep growing.
#[derive(Debug)]
pub struct Segments {
    next: Vec<(SegmentId, u64)>,
    turn: usize,
    payload: Bytes,
    key: Bytes,
}

impl Segments {
    /// `per_shard` segments for each shard of `bookie`, ids starting at `base`.
    pub fn new(bookie: &Bookie, per_shard: usize, base: u64, entry_bytes: usize) -> Segments {
        Self::on_shards(bookie, per_shard, base, entry_bytes, bookie.shard_count())
    }

    /// Like `new`, but only on the first `shards` shards.
    pub fn on_shards(
        bookie: &Bookie,
        per_shard: usize,
        base: u64,
        entry_bytes: usize,
        shards: u32,
    ) -> Segments {
        let mut count = vec![0usize; bookie.shard_count() as usize];
        for c in count.iter_mut().skip(shards as usize) {
            *c = per_shard;
        }
        let mut next = Vec::new();
        let mut id = base;
        while count.iter().any(|c| *c < per_shard) {
            let shard = bookie.shard_of(SegmentId(id));
            if count[shard.0 as usize] < per_shard {
                count[shard.0 as usize] += 1;
                next.push((SegmentId(id), 0));
            }
            id += 1;
        }
        // Static bytes: cloning and dropping them costs no atomic operations on the hot path.
        let payload: Vec<u8> = (0..entry_bytes).map(|i| (i * 31 + 7) as u8).collect();
        let payload = Bytes::from_static(Box::leak(payload.into_boxed_slice()));
        let key = Bytes::from_static(b"dlog-bench-master-key");
        Segments { next, turn: 0, payload, key }
    }

    fn call(&mut self, n: usize) -> Vec<AddEntry> {
        let turn = self.turn % self.next.len();
        let (segment, next) = &mut self.next[turn];
        self.turn += 1;
        let segment = *segment;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(AddEntry {
                segment,
                entry: EntryId(*next),
                last_add_confirmed: next.checked_sub(1).map(EntryId),
                master_key: self.key.clone(),
                payload: self.payload.clone(),
                flags: AddFlags::NONE,
            });
            *next += 1;
        }
        entries
    }
}

#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
fn now() -> Instant {
    Instant::now()
}

/// Runs `spec` against `bookie`. With `checkpoint_every`, a helper thread checkpoints every
/// shard at its durable position that often, standing in for segment storage so that journal
/// files are recycled (the benchmark keeps no data).
pub fn run(
    bookie: &Bookie,
    segments: &mut Segments,
    spec: &LoadSpec,
    checkpoint_every: Option<Duration>,
) -> Result<LoadResult> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if let Some(every) = checkpoint_every {
            let stop = &stop;
            scope.spawn(move || {
                let mut last = now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(10));
                    if now() - last < every {
                        continue;
                    }
                    last = now();
                    for shard in 0..bookie.shard_count() {
                        if let Ok(mark) = bookie.journal_position(ShardId(shard)).wait() {
                            let _ = bookie.checkpoint(ShardId(shard), mark).wait();
                        }
                    }
                }
            });
        }
        let result = generate(bookie, segments, spec);
        stop.store(true, Ordering::Relaxed);
        result
    })
}

fn generate(bookie: &Bookie, segments: &mut Segments, spec: &LoadSpec) -> Result<LoadResult> {
    let batch = spec.batch.max(1);
    let calls_max = (spec.concurrency / batch).max(1);
    let mut window = VecDeque::with_capacity(calls_max);
    let mut histogram = histogram();
    let mut entries = 0u64;
    let started = now();
    let deadline = started + spec.duration;
    loop {
        let time = now();
        if time < deadline {
            while window.len() < calls_max {
                let call = segments.call(batch);
                window.push_back((now(), bookie.add_entries(call)));
            }
        }
        let Some((sent, mut pending)) = window.pop_front() else { break };
        let result = if spec.spin {
            loop {
                if let Some(result) = pending.poll_ready() {
                    break result;
                }
                std::hint::spin_loop();
            }
        } else {
            pending.wait()
        };
        if let Err(errors) = result {
            bail!("add failed: {:?}", errors.first());
        }
        histogram.record((now() - sent).as_nanos() as u64).ok();
        entries += batch as u64;
    }
    let elapsed = now() - started;
    Ok(LoadResult { entries, bytes: entries * spec.entry_bytes as u64, elapsed, histogram })
}
