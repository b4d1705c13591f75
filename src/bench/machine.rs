//! The machine a run ran on, as the report records it: CPUs, kernel, memory, the disk under the
//! benchmark's directory, and how loaded the machine was when the run started (this machine is
//! shared: a report says so). Read from /proc and /sys.
//!
//! Invariant: describing never fails: what cannot be read is left empty (or `None`).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Machine {
    /// CPUs this process may use.
    pub(crate) cores: usize,
    /// The CPU model.
    pub(crate) cpu_model: String,
    /// The kernel release.
    pub(crate) kernel: String,
    /// Memory, GiB.
    pub(crate) memory_gib: f64,
    /// The disk under the benchmark's directory.
    pub(crate) disk: Disk,
    /// 1-minute load average at the start.
    pub(crate) load_avg_1m: f64,
}

/// A disk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Disk {
    /// The directory the run wrote in.
    pub(crate) dir: String,
    /// The block device ("vda").
    pub(crate) device: String,
    /// Its model, if the kernel says.
    pub(crate) model: String,
    /// Rotational, as the kernel says (virtual disks often say so wrongly).
    pub(crate) rotational: Option<bool>,
    /// Its volatile write cache ("write back", "write through").
    pub(crate) write_cache: String,
    /// The filesystem type.
    pub(crate) filesystem: String,
}

impl Machine {
    /// This machine, with the disk under `dir`.
    pub(crate) fn describe(dir: &Path) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            })
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease"),
            memory_gib: memory_kib / (1 << 20) as f64,
            disk: Disk::under(dir),
            load_avg_1m: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
        }
    }

    /// One line for the report's head.
    pub(crate) fn line(&self) -> String {
        let d = &self.disk;
        format!(
            "{} CPUs ({}), kernel {}, {:.0} GiB; disk {} {}{} ({}, cache {}); load {:.2} at start",
            self.cores,
            if self.cpu_model.is_empty() { "?" } else { &self.cpu_model },
            self.kernel,
            self.memory_gib,
            d.device,
            d.model,
            match d.rotational {
                Some(true) => " rotational",
                Some(false) => " ssd",
                None => "",
            },
            d.filesystem,
            if d.write_cache.is_empty() { "?" } else { &d.write_cache },
            self.load_avg_1m
        )
    }
}

impl Disk {
    fn under(dir: &Path) -> Disk {
        // The directory, or its nearest ancestor that exists (a run may have removed it).
        let dir =
            dir.ancestors().find_map(|d| std::fs::canonicalize(d).ok()).unwrap_or_else(|| dir.to_path_buf());
        let mut disk = Disk { dir: dir.display().to_string(), ..Disk::default() };
        disk.filesystem = filesystem_of(&dir);
        let Ok(meta) = rustix::fs::stat(&dir) else { return disk };
        let (major, minor) = (rustix::fs::major(meta.st_dev), rustix::fs::minor(meta.st_dev));
        // /sys/dev/block/M:m is the partition or the disk; the disk's queue is at the disk.
        let Ok(sys) = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")) else { return disk };
        let whole =
            if sys.join("partition").exists() { sys.parent().map(Path::to_path_buf) } else { Some(sys) };
        let Some(whole) = whole else { return disk };
        let read =
            |p: &str| std::fs::read_to_string(whole.join(p)).map(|s| s.trim().to_owned()).unwrap_or_default();
        disk.device = whole.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        disk.model = read("device/model");
        disk.rotational = match read("queue/rotational").as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        };
        disk.write_cache = read("queue/write_cache");
        disk
    }
}

/// The filesystem type of the longest mount point above `dir`.
fn filesystem_of(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(at), Some(kind)) = (fields.get(1), fields.get(2)) else { continue };
        if dir.starts_with(at) && best.as_ref().is_none_or(|(len, _)| at.len() > *len) {
            best = Some((at.len(), (*kind).to_owned()));
        }
    }
    best.map(|(_, kind)| kind).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_machine() {
        let m = Machine::describe(Path::new("."));
        assert!(m.cores >= 1);
        assert!(!m.kernel.is_empty() && m.memory_gib > 0.0, "{m:?}");
        assert!(!m.disk.filesystem.is_empty(), "{m:?}");
        assert!(!m.line().is_empty());
    }
}
