//! Where the CPU goes during a measurement, from /proc: the machine's busy share (/proc/stat:
//! everything, other processes included, so a noisy neighbour shows), this process's threads'
//! CPU time and run-queue wait (/proc/self/task/*/schedstat), summed by thread name; and the
//! bytes the machine's disks read and wrote (/proc/diskstats, whole disks, other processes
//! included). A thread that ends between two samples is not counted. Linux only; empty
//! elsewhere.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::log::now;

/// A snapshot.
pub(crate) struct Sample {
    at: Instant,
    /// (busy, total) jiffies of the whole machine.
    machine: (u64, u64),
    /// Thread id to (name, ns on a CPU, ns waiting for one).
    threads: BTreeMap<u64, (String, u64, u64)>,
    /// (bytes read, bytes written) of the machine's disks.
    disks: (u64, u64),
}

/// One thread name's share between two samples.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ThreadUse {
    /// The thread name (threads of one name summed).
    pub(crate) name: String,
    /// Threads of that name.
    pub(crate) threads: usize,
    /// CPUs used (CPU time / wall time).
    pub(crate) cpus: f64,
    /// Run-queue wait / wall time: ready to run, no CPU free.
    pub(crate) runqueue_wait: f64,
}

/// The CPU use between two samples.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CpuUse {
    /// Share of the machine's CPUs busy (all processes).
    pub(crate) machine_busy: f64,
    /// CPUs this process used.
    pub(crate) process_cpus: f64,
    /// Run-queue wait of this process's threads, summed, per wall second.
    pub(crate) process_runqueue_wait: f64,
    /// The machine's disks' reads, MB/s.
    pub(crate) disk_read_mb_per_s: f64,
    /// The machine's disks' writes, MB/s.
    pub(crate) disk_write_mb_per_s: f64,
    /// By thread name, most CPU first.
    pub(crate) threads: Vec<ThreadUse>,
}

impl CpuUse {
    /// One line: the machine, the process, the busiest thread names.
    pub(crate) fn summary(&self) -> String {
        let top: Vec<String> = self
            .threads
            .iter()
            .take(6)
            .map(|t| format!("{}x{} {:.2} (wait {:.2})", t.name, t.threads, t.cpus, t.runqueue_wait))
            .collect();
        format!(
            "machine {:.0}% busy, disks read {:.0} MB/s, wrote {:.0} MB/s; process {:.2} CPUs, run-queue wait {:.2}; \
             {}",
            self.machine_busy * 100.0,
            self.disk_read_mb_per_s,
            self.disk_write_mb_per_s,
            self.process_cpus,
            self.process_runqueue_wait,
            top.join(", ")
        )
    }
}

fn machine() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return (0, 0) };
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are not busy.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// (bytes read, bytes written) of whole disks (not loop or RAM devices).
fn disks() -> (u64, u64) {
    let Ok(stats) = std::fs::read_to_string("/proc/diskstats") else { return (0, 0) };
    let mut sum = (0, 0);
    for line in stats.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = fields.get(2) else { continue };
        let whole = std::path::Path::new("/sys/block").join(name).exists();
        if !whole || name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        let sectors = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        sum.0 += sectors(5) * 512;
        sum.1 += sectors(9) * 512;
    }
    sum
}

/// Samples now.
pub(crate) fn sample() -> Sample {
    let mut threads = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else { continue };
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let Ok(stat) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
            let mut fields = stat.split_whitespace().filter_map(|f| f.parse::<u64>().ok());
            let (run, wait) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
            threads.insert(tid, (name.trim().to_owned(), run, wait));
        }
    }
    Sample { at: now(), machine: machine(), threads, disks: disks() }
}

/// The use between `before` and now.
pub(crate) fn since(before: &Sample) -> CpuUse {
    let after = sample();
    let wall = (after.at - before.at).max(Duration::from_micros(1)).as_nanos() as f64;
    let mut by_name: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for (tid, (name, run, wait)) in &after.threads {
        let (run0, wait0) = before.threads.get(tid).map_or((0, 0), |(_, r, w)| (*r, *w));
        let e = by_name.entry(name.clone()).or_default();
        e.0 += 1;
        e.1 += run.saturating_sub(run0);
        e.2 += wait.saturating_sub(wait0);
    }
    let mut threads: Vec<ThreadUse> = by_name
        .into_iter()
        .map(|(name, (threads, run, wait))| ThreadUse {
            name,
            threads,
            cpus: run as f64 / wall,
            runqueue_wait: wait as f64 / wall,
        })
        .collect();
    threads.sort_by(|a, b| b.cpus.total_cmp(&a.cpus));
    let busy = after.machine.0.saturating_sub(before.machine.0);
    let total = after.machine.1.saturating_sub(before.machine.1);
    let mb_per_s = |after: u64, before: u64| after.saturating_sub(before) as f64 / wall * 1e3;
    CpuUse {
        disk_read_mb_per_s: mb_per_s(after.disks.0, before.disks.0),
        disk_write_mb_per_s: mb_per_s(after.disks.1, before.disks.1),
        machine_busy: if total == 0 { 0.0 } else { busy as f64 / total as f64 },
        process_cpus: threads.iter().map(|t| t.cpus).sum(),
        process_runqueue_wait: threads.iter().map(|t| t.runqueue_wait).sum(),
        threads,
    }
}
