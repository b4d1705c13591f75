//! The real cluster of tests/chaos.rs and what its scheduler does to it: a real etcd
//! (`EtcdServer`: SIGKILLed and restarted on the same data and ports, or SIGSTOPped a while),
//! `dlog bookie` processes on 127.0.0.1 (SIGKILLed and restarted on the same directories, port
//! and id; SIGSTOPped and SIGCONTed), and one bookie whose entry logs live on a small tmpfs
//! that a ballast file fills until the bookie refuses adds (`ReadOnly`) and then frees
//! (`DiskFull`). Also the replica check of a closed segment (`check_replicas`).
//!
//! Does not own: when faults happen (tests/chaos.rs), the clients (chaos_clients.rs), the
//! history and its checks (chaos_history.rs).
//!
//! Invariants:
//! - CC1: every process started here is killed and reaped when the cluster drops, panicking or
//!   not (`Running`'s and `EtcdServer`'s guards), before the tmpfs is unmounted (field order).
//! - CC2: a bookie restarts only on its own directories, under its own id, on its old port
//!   unless another process took that port meanwhile (then on a new one).
//! - CC3: every wait has a deadline. A bookie that exits while starting is relaunched only for
//!   a reason that passes (its port taken, the metadata unreachable, its previous incarnation's
//!   registration not yet expired, its lease lost while it waited for that); any other exit
//!   fails the test with its log.
//!
//! `DLOG_CHAOS_KEEP=1` keeps the bookies' directories (journals, entry logs, one log file per
//! process) after the test, for a post-mortem; their paths are printed at the start.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_metadata::etcd_server::EtcdServer;
use dlog_metadata::schema::{SegmentMetadata, SegmentState};
use dlog_protocol::{Request, Response, Status};
use dlog_replication::entry_envelope;
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::transport::{ClientConfig, ClientPool};

use crate::process::{Running, free_port, now, pause, signal};

/// Longest a bookie may take from its launch to its serving line, relaunches included.
pub(crate) const START_WAIT: Duration = Duration::from_secs(45);
/// Longest a fill or a free of the small disk may take to show in the bookie's answers.
const DISK_WAIT: Duration = Duration::from_secs(20);
/// Registration lease ttl of every bookie: a restart after a SIGKILL waits about this long.
const LEASE_TTL_MS: u64 = 2000;
/// Free-space thresholds of every bookie: the test machine's disk is far above them, the small
/// disk's ballast leaves it under the first.
const FREE_MIN: u64 = 16 << 20;
const FREE_RESUME: u64 = 32 << 20;
/// Journal file size of every bookie: the engine's 256 MiB default made each run write about
/// 8 GB of zero-filled journal files.
const JOURNAL_FILE_BYTES: u64 = 32 << 20;
/// The small disk, and what the ballast leaves free on it.
const TMPFS_MIB: u64 = 128;
const BALLAST_LEAVES: u64 = 8 << 20;
/// Segments no writer makes (the metadata allocates ids from 0): the small disk's probes.
const PROBE_SEGMENT: u64 = 1 << 42;
/// Entries past a closed segment's end the replica check looks for.
const PAST_END_ENTRIES: u64 = 1024;

/// What a bookie is doing, as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BookieState {
    /// Serving.
    Up,
    /// SIGSTOPped: every thread of it stopped.
    Paused,
    /// SIGKILLed, not relaunched yet.
    Down,
    /// Launched, its serving line not seen yet.
    Starting,
}

/// A bookie: its id, directories and port, which outlive its processes.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) state: BookieState,
    /// Its entry logs' directory when they are on the small disk.
    pub(crate) small_disk: Option<PathBuf>,
    process: Option<Running>,
    port: u16,
    dir: tempfile::TempDir,
    launches: u32,
    /// When the current start began (relaunches keep it).
    starting_since: Instant,
    /// Starts that failed for a reason that passes (CC3), by reason.
    pub(crate) relaunches: BTreeMap<&'static str, u64>,
    /// The `dlog` binary it runs.
    binary: PathBuf,
}

impl Node {
    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("bookie.toml");
        let text = format!(
            "[engine]\ndisk_free_bytes_min = {FREE_MIN}\ndisk_free_bytes_resume = {FREE_RESUME}\n\
             journal_file_bytes = {JOURNAL_FILE_BYTES}\n\n\
             [registration]\nlease_ttl_ms = {LEASE_TTL_MS}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Spawns the bookie on its directories and port, without waiting for it.
    fn launch(&mut self, metadata: &str) {
        assert!(self.process.is_none(), "{} runs already", self.id);
        self.launches += 1;
        let log = self.dir.path().join(format!("bookie-{}.log", self.launches));
        let listen = format!("127.0.0.1:{}", self.port);
        let mut command = Command::new(&self.binary);
        command
            .env("RUST_LOG", "info")
            .arg("bookie")
            .arg("--config")
            .arg(self.config())
            .arg("--journal-dir")
            .arg(self.dir.path().join("journal"))
            .args(["--listen", &listen, "--metadata", metadata])
            .args(["--shards", "1", "--pin-shards", "false", "--bookie-id", &self.id]);
        if let Some(ledgers) = &self.small_disk {
            command.arg("--ledger-dir").arg(ledgers);
        }
        self.process = Some(Running::spawn(command, Stdio::null(), log));
        self.state = BookieState::Starting;
    }

    /// What the current (or last) process wrote to stderr.
    pub(crate) fn log(&self) -> String {
        self.process.as_ref().map(Running::log).unwrap_or_default()
    }

    /// Whether a starting bookie serves now: relaunches it after an exit that passes (CC3),
    /// fails the test after any other exit or past `START_WAIT`.
    fn poll_starting(&mut self, metadata: &str) -> bool {
        assert_eq!(self.state, BookieState::Starting);
        let process = self.process.as_mut().expect("launched");
        loop {
            match process.lines.try_recv() {
                Ok(line) if line.contains(" serving on ") => {
                    assert!(line.starts_with(&format!("bookie {} serving on ", self.id)), "{line}");
                    self.state = BookieState::Up;
                    return true;
                }
                Ok(_) => continue,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // Its stdout closed: it exited, or is about to.
                    let _ = crate::process::wait_exit(&mut process.child.0, now() + Duration::from_secs(5));
                    break;
                }
            }
        }
        let elapsed = self.starting_since.elapsed();
        assert!(
            elapsed < START_WAIT,
            "{} not serving {elapsed:?} after its launch; log:\n{}",
            self.id,
            self.log()
        );
        let exited = process.child.0.try_wait().unwrap();
        if let Some(status) = exited {
            let log = self.log();
            // Its port taken; its previous incarnation's registration not expired yet; etcd out
            // of service (before registering, or long enough for the lease of a start waiting
            // for its previous incarnation's registration to end).
            let passes = [
                "in use",
                "still registered by another lease",
                "metadata store unavailable",
                "registration: metadata: lease",
            ];
            let Some(reason) = passes.iter().find(|p| log.contains(*p)) else {
                panic!("{} exited while starting ({status}); log:\n{log}", self.id)
            };
            *self.relaunches.entry(*reason).or_default() += 1;
            if log.contains("in use") {
                self.port = free_port();
            }
            self.process = None;
            pause(Duration::from_millis(200));
            self.launch(metadata);
        }
        false
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").pid()
    }

    /// Where it answers (it may be stopped or starting).
    pub(crate) fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

/// Mounts a tmpfs of `mib` MiB at `dir`; false where the test may not (not root, no mount).
fn mount_tmpfs(dir: &Path, mib: u64) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The small disk: a tmpfs, unmounted when dropped.
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        mount_tmpfs(dir.path(), TMPFS_MIB).then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    stat.f_bavail * stat.f_frsize
}

/// etcd and bookie processes registered in it (see the module doc).
pub(crate) struct ChaosCluster {
    // Dropped in this order (CC1): the bookies, etcd, then the small disk.
    pub(crate) nodes: Vec<Node>,
    pub(crate) etcd: EtcdServer,
    /// etcd is SIGKILLed (restarted by `etcd_up`) or SIGSTOPped (resumed by `etcd_up`).
    pub(crate) etcd_down: Option<EtcdFault>,
    pub(crate) metadata: String,
    small_disk: Option<SmallDisk>,
    _binary: tempfile::TempDir,
    /// How long each bookie start took, from its launch to its serving line.
    pub(crate) starts: Vec<Duration>,
    /// How long each etcd restart took.
    pub(crate) etcd_starts: Vec<Duration>,
}

/// How etcd is out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EtcdFault {
    Killed,
    Paused(u32),
}

impl ChaosCluster {
    /// etcd and `bookies` bookies (`bookie-0`, ...) serving; the last one keeps its entry logs
    /// on a small tmpfs when one can be mounted (`has_small_disk`).
    pub(crate) fn start(bookies: usize, scope: &str) -> ChaosCluster {
        let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
        let metadata = etcd.uri(scope);
        let small_disk = SmallDisk::mount();
        // The bookies run a copy of the binary cargo built for this test: the shared target
        // directory's may be rebuilt meanwhile (with other features).
        let binary = tempfile::tempdir().unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_dlog"), binary.path().join("dlog")).unwrap();
        let nodes = (0..bookies)
            .map(|i| {
                let small_disk = small_disk
                    .as_ref()
                    .filter(|_| i + 1 == bookies)
                    .map(|d| d.path().join(format!("ledgers-{i}")));
                let mut dir = tempfile::tempdir().unwrap();
                if std::env::var_os("DLOG_CHAOS_KEEP").is_some() {
                    dir.disable_cleanup(true);
                    println!("chaos: bookie-{i} keeps its directories in {}", dir.path().display());
                }
                Node {
                    id: format!("bookie-{i}"),
                    state: BookieState::Down,
                    small_disk,
                    process: None,
                    port: free_port(),
                    dir,
                    launches: 0,
                    starting_since: now(),
                    relaunches: BTreeMap::new(),
                    binary: binary.path().join("dlog"),
                }
            })
            .collect();
        let mut cluster = ChaosCluster {
            nodes,
            etcd,
            etcd_down: None,
            metadata,
            small_disk,
            _binary: binary,
            starts: Vec::new(),
            etcd_starts: Vec::new(),
        };
        for i in 0..bookies {
            cluster.relaunch(i);
        }
        cluster.wait_all_up();
        cluster
    }

    /// The `dlog` binary the processes run (a copy of the one cargo built).
    pub(crate) fn binary(&self) -> PathBuf {
        self._binary.path().join("dlog")
    }

    pub(crate) fn has_small_disk(&self) -> bool {
        self.small_disk.is_some()
    }

    /// The index of the bookie on the small disk.
    pub(crate) fn small_disk_bookie(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.small_disk.is_some())
    }

    /// Launches a down bookie again (CC2); `poll` sees it serve.
    pub(crate) fn relaunch(&mut self, i: usize) {
        let metadata = self.metadata.clone();
        let node = &mut self.nodes[i];
        assert_eq!(node.state, BookieState::Down, "{}", node.id);
        node.starting_since = now();
        node.launch(&metadata);
    }

    /// Moves starting bookies that serve now to `Up`.
    pub(crate) fn poll(&mut self) {
        let metadata = self.metadata.clone();
        for node in &mut self.nodes {
            if node.state == BookieState::Starting && node.poll_starting(&metadata) {
                self.starts.push(node.starting_since.elapsed());
            }
        }
    }

    /// Waits until every bookie serves (etcd must be up), within `START_WAIT` each.
    pub(crate) fn wait_all_up(&mut self) {
        while self.nodes.iter().any(|n| n.state != BookieState::Up) {
            self.poll();
            pause(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(matches!(node.state, BookieState::Up | BookieState::Paused), "{}", node.id);
        node.process.take().expect("running").kill();
        node.state = BookieState::Down;
    }

    /// SIGSTOP, and wait until every thread of it is stopped.
    pub(crate) fn pause_bookie(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert_eq!(node.state, BookieState::Up, "{}", node.id);
        let pid = node.pid();
        signal(pid, "STOP");
        let deadline = now() + Duration::from_secs(10);
        while !all_stopped(pid) {
            assert!(now() < deadline, "{} not stopped within 10 s", node.id);
            pause(Duration::from_millis(2));
        }
        node.state = BookieState::Paused;
    }

    /// SIGCONT.
    pub(crate) fn resume_bookie(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert_eq!(node.state, BookieState::Paused, "{}", node.id);
        signal(node.pid(), "CONT");
        node.state = BookieState::Up;
    }

    /// etcd's pid, if it runs (not a zombie).
    fn etcd_pid(&self) -> Option<u32> {
        let pid = etcd_pid(self.etcd.data_dir())?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
        (state != Some(Some('Z'))).then_some(pid)
    }

    /// Whether etcd runs, unless the scheduler took it out of service.
    pub(crate) fn etcd_alive(&self) -> bool {
        self.etcd_down.is_some() || self.etcd_pid().is_some()
    }

    /// Why etcd is gone: the end of its log.
    pub(crate) fn etcd_gone(&self) -> String {
        let log = std::fs::read_to_string(self.etcd.data_dir().with_extension("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        format!(
            "etcd is not running (it exited, or was killed by someone else); its log's end:\n{}",
            tail.join("\n")
        )
    }

    /// etcd out of service: SIGKILLed (`kill`) or SIGSTOPped.
    pub(crate) fn etcd_fault(&mut self, kill: bool) {
        assert!(self.etcd_down.is_none(), "etcd is out of service already");
        if kill {
            self.etcd.kill();
            self.etcd_down = Some(EtcdFault::Killed);
        } else {
            let pid = self.etcd_pid().unwrap_or_else(|| panic!("{}", self.etcd_gone()));
            signal(pid, "STOP");
            self.etcd_down = Some(EtcdFault::Paused(pid));
        }
    }

    /// etcd back: restarted on its data and ports (waits until healthy), or SIGCONTed.
    pub(crate) fn etcd_up(&mut self) {
        match self.etcd_down.take().expect("etcd is out of service") {
            EtcdFault::Killed => {
                let started = now();
                self.etcd.restart().unwrap_or_else(|e| panic!("etcd restart: {e}"));
                self.etcd_starts.push(started.elapsed());
            }
            EtcdFault::Paused(pid) => signal(pid, "CONT"),
        }
    }

    /// What a disk-full cycle of the bookie on the small disk needs: the tmpfs and where the
    /// bookie answers.
    pub(crate) fn small_disk_target(&self) -> Option<(PathBuf, SocketAddr)> {
        let disk = self.small_disk.as_ref()?;
        let node = &self.nodes[self.small_disk_bookie()?];
        Some((disk.path().to_owned(), node.addr()))
    }

    /// Where bookie `id` answers, if it is up.
    pub(crate) fn addr_of(&self, id: &str) -> Option<SocketAddr> {
        self.nodes.iter().find(|n| n.id == id && n.state == BookieState::Up).map(Node::addr)
    }
}

/// What one disk-full cycle saw.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DiskFull {
    /// Ballast bytes written.
    pub(crate) ballast: u64,
    /// From the fill to the first ADD refused `ReadOnly`.
    pub(crate) to_read_only: Duration,
    /// From the free to the first ADD taken again.
    pub(crate) to_writable: Duration,
}

/// One disk-full cycle of the bookie at `addr`, whose entry logs are on the tmpfs at `disk`
/// (run on its own thread; the bookie stays up meanwhile): fills the disk with a ballast file
/// until `BALLAST_LEAVES` bytes are free, waits until the bookie refuses plain ADDs
/// (`ReadOnly`), keeps it so for `hold`, removes the ballast and waits until it takes them
/// again. `Err` when the bookie does not follow within `DISK_WAIT`, or answers anything else.
pub(crate) fn disk_full_cycle(disk: &Path, addr: SocketAddr, hold: Duration) -> Result<DiskFull, String> {
    let pool = ClientPool::new(ClientConfig { request_timeout: DISK_WAIT, ..ClientConfig::default() })
        .map_err(|e| e.to_string())?;
    let ballast_path = disk.join("ballast");
    let result = (|| {
        let ballast = fill(disk, &ballast_path);
        let to_read_only = wait_read_only(&pool, addr, disk, true)?;
        pause(hold);
        std::fs::remove_file(&ballast_path).map_err(|e| format!("ballast: {e}"))?;
        let to_writable = wait_read_only(&pool, addr, disk, false)?;
        Ok(DiskFull { ballast, to_read_only, to_writable })
    })();
    // A failed cycle leaves the disk free too.
    let _ = std::fs::remove_file(&ballast_path);
    pool.close();
    result
}

/// Writes a ballast file at `path` until `BALLAST_LEAVES` bytes are free on `disk`; the bytes
/// written.
fn fill(disk: &Path, path: &Path) -> u64 {
    let mut left = free_bytes(disk).saturating_sub(BALLAST_LEAVES);
    let mut file = std::fs::File::options().create(true).append(true).open(path).unwrap();
    let chunk = vec![0xB5u8; 1 << 20];
    let mut written = 0;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        match file.write_all(&chunk[..n]) {
            Ok(()) => {
                written += n as u64;
                left -= n as u64;
            }
            // The bookie wrote meanwhile: full enough.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("ballast: {e}"),
        }
    }
    written
}

/// Waits until the bookie at `addr` refuses (`read_only`) or takes plain ADDs, probing with
/// small ADDs to a segment no writer makes; how long it took.
fn wait_read_only(
    pool: &ClientPool,
    addr: SocketAddr,
    disk: &Path,
    read_only: bool,
) -> Result<Duration, String> {
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let started = now();
    loop {
        let add = Request::Add {
            segment: PROBE_SEGMENT,
            entry: PROBES.fetch_add(1, Ordering::Relaxed),
            last_add_confirmed: None,
            master_key: Bytes::from_static(b"chaos-probe"),
            payload: Bytes::from_static(b"probe"),
            recovery: false,
        };
        let refused = match pool.submit(addr, add).wait_timeout(DISK_WAIT) {
            Ok(Response::Add { .. }) => false,
            Ok(Response::Refused { status: Status::ReadOnly, .. }) => true,
            other => return Err(format!("probe ADD to the small disk's bookie at {addr}: {other:?}")),
        };
        if refused == read_only {
            return Ok(started.elapsed());
        }
        if started.elapsed() > DISK_WAIT {
            return Err(format!(
                "the small disk's bookie at {addr} still {} {DISK_WAIT:?} after the disk was {}; {} bytes \
                 free",
                if read_only { "takes adds" } else { "refuses adds" },
                if read_only { "filled" } else { "freed" },
                free_bytes(disk)
            ));
        }
        pause(Duration::from_millis(100));
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in /proc).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(Result::ok).all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    })
}

/// The pid of the etcd whose data directory is `data` (`EtcdServer` does not say it).
fn etcd_pid(data: &Path) -> Option<u32> {
    let wanted = data.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let found = args.windows(2).any(|w| w[0] == b"--data-dir" && w[1] == wanted.as_bytes());
        found.then_some(pid)
    })
}

/// What the replicas of one closed segment hold (`check_replicas`).
#[derive(Debug, Default)]
pub(crate) struct Replicas {
    /// Entries up to the closed end.
    pub(crate) entries: u64,
    /// Copies of them read from bookies.
    pub(crate) copies: u64,
    /// The records the entries hold, in order: (entry, slot, txid, payload).
    pub(crate) records: Vec<(u64, u64, u64, Bytes)>,
    /// Copies past the end (left by a writer that was fenced or crashed, never acknowledged).
    pub(crate) past_end: u64,
}

/// Reads every entry of closed segment `segment` up to its end from every member of its
/// write set (all bookies up) and checks: each entry is on at least Qa of them, every copy is
/// the same bytes, each decodes (envelope and records) with the right cumulative length, and
/// the lengths add up to the closed length. Counts the copies past the end the last ensemble
/// holds. `Err` says what is wrong.
pub(crate) fn check_replicas(
    cluster: &ChaosCluster,
    segment: u64,
    meta: &SegmentMetadata,
) -> Result<Replicas, String> {
    let SegmentState::Closed { last_entry_id, length } = meta.state else {
        return Err(format!("segment {segment} is not closed: {:?}", meta.state));
    };
    let end = last_entry_id.map_or(0, |l| l + 1);
    let quorum = QuorumSizes::new(
        meta.ensemble_size as usize,
        meta.write_quorum_size as usize,
        meta.ack_quorum_size as usize,
    )
    .map_err(|e| format!("segment {segment}: {e}"))?;
    let pool =
        ClientPool::new(ClientConfig { request_timeout: Duration::from_secs(20), ..ClientConfig::default() })
            .map_err(|e| e.to_string())?;
    let result = (|| {
        let starts: Vec<u64> = meta.ensembles.keys().copied().chain([end]).collect();
        let mut held: BTreeMap<String, BTreeMap<u64, Bytes>> = BTreeMap::new();
        for (range, ensemble) in starts.windows(2).zip(meta.ensembles.values()) {
            for id in ensemble {
                let addr = cluster.addr_of(id).ok_or_else(|| format!("bookie {id} is not up"))?;
                let range = range[0]..range[1].max(range[0]);
                held.entry(id.clone()).or_default().extend(holdings(&pool, addr, segment, range)?);
            }
        }
        let mut replicas = Replicas { entries: end, ..Replicas::default() };
        let mut cumulative = 0u64;
        for entry in 0..end {
            let ensemble = meta.ensemble_at(entry);
            let mut copy: Option<&Bytes> = None;
            let mut copies = 0;
            for index in quorum.write_set(entry).iter() {
                let id = &ensemble[index];
                if let Some(stored) = held.get(id).and_then(|h| h.get(&entry)) {
                    if copy.is_some_and(|c| c != stored) {
                        return Err(format!("segment {segment} entry {entry}: {id}'s copy differs"));
                    }
                    copy = Some(stored);
                    copies += 1;
                }
            }
            if copies < quorum.ack_quorum_size() {
                let holds: Vec<String> = quorum
                    .write_set(entry)
                    .iter()
                    .map(|i| {
                        let id = &ensemble[i];
                        let held =
                            held.get(id).map(|h| h.keys().copied().collect::<Vec<_>>()).unwrap_or_default();
                        format!(
                            "{id} holds {} entries of it, {:?}..{:?}",
                            held.len(),
                            held.first(),
                            held.last()
                        )
                    })
                    .collect();
                return Err(format!(
                    "segment {segment} entry {entry} (closed at {last_entry_id:?}): {copies} copies in its \
                     write set, under Qa; ensembles {:?}; {}",
                    meta.ensembles,
                    holds.join("; ")
                ));
            }
            replicas.copies += copies as u64;
            let stored = copy.expect("Qa copies");
            let (stored_length, user) = entry_envelope::decode(segment, entry, stored)
                .map_err(|e| format!("segment {segment} entry {entry}: {e}"))?;
            cumulative += user.len() as u64;
            if stored_length != cumulative {
                return Err(format!(
                    "segment {segment} entry {entry}: cumulative length {stored_length}, not {cumulative}"
                ));
            }
            let decoded = dlog::log::entry_codec::decode_entry(&user)
                .map_err(|e| format!("segment {segment} entry {entry}: records: {e}"))?;
            for (slot, record) in (0u64..).zip(decoded.records) {
                replicas.records.push((entry, slot, record.txid, record.payload));
            }
        }
        if cumulative != length {
            return Err(format!("segment {segment}: {cumulative} bytes, closed at length {length}"));
        }
        for id in meta.current_ensemble() {
            let addr = cluster.addr_of(id).ok_or_else(|| format!("bookie {id} is not up"))?;
            let request =
                Request::ReadRange { segment, first: end, last: end + PAST_END_ENTRIES, max_bytes: 8 << 20 };
            match pool.submit(addr, request).wait() {
                Ok(Response::ReadRange { entries }) => replicas.past_end += entries.len() as u64,
                Ok(Response::Refused { status: Status::NoSuchEntry | Status::NoSuchSegment, .. }) => {}
                other => {
                    return Err(format!("READ_RANGE of segment {segment} past its end at {addr}: {other:?}"));
                }
            }
        }
        Ok(replicas)
    })();
    pool.close();
    result
}

/// The stored bytes of the entries of `segment` in `entries` that the bookie at `addr` holds,
/// read with READ_RANGE (a batch ends before an entry the bookie lacks, which is then asked for
/// alone). Any answer but entries or their absence is an error, a `Corrupt` one included.
fn holdings(
    pool: &ClientPool,
    addr: SocketAddr,
    segment: u64,
    entries: std::ops::Range<u64>,
) -> Result<BTreeMap<u64, Bytes>, String> {
    let mut held = BTreeMap::new();
    let mut next = entries.start;
    let mut failures = 0;
    while next < entries.end {
        let request = Request::ReadRange { segment, first: next, last: entries.end - 1, max_bytes: 1 << 20 };
        match pool.submit(addr, request).wait() {
            // A busy machine may be slow: not a property of the replicas.
            Err(e) if failures < 3 => {
                failures += 1;
                eprintln!("READ_RANGE of segment {segment} from {next} at {addr}: {e}; again");
                pause(Duration::from_millis(500));
            }
            Ok(Response::ReadRange { entries: batch }) if !batch.is_empty() => {
                for (entry, stored) in batch {
                    if entry != next {
                        return Err(format!("READ_RANGE of segment {segment} at {addr}: not consecutive"));
                    }
                    held.insert(entry, stored);
                    next += 1;
                }
            }
            Ok(Response::Refused { status: Status::NoSuchEntry | Status::NoSuchSegment, .. }) => next += 1,
            other => return Err(format!("READ_RANGE of segment {segment} from {next} at {addr}: {other:?}")),
        }
    }
    Ok(held)
}
