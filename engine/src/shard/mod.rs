//! `Shard`: the thread that runs one `ShardCore` against a `Disk`, a clock and its queues.
//!
//! Owns: the shard thread, its bounded request queue, its event queue (file preparation and
//! reclaim results), its `Waker`, and the loop that moves inputs into the core and outputs out
//! of it. No protocol decisions are made here.
//!
//! Loop: take requests while the core wants them (bounded per turn), tell the core when the
//! queue ran dry, run outputs, then reap completions: without blocking when there is more to
//! do, else polling for `idle_spin_us` (waking a halted vCPU costs about 30 us here), else
//! sleeping in the disk until a completion, a wake-up or the batch deadline.

pub mod core;
pub mod location_index;
pub mod request;
pub mod segment_state;

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, unbounded};

use bytes::Bytes;

use crate::config::{Backend, BookieConfig, DirectIo, StorageMode};
use crate::constants::{SECTOR_BYTES, SHARD_REQUESTS_PER_TURN_MAX};
use crate::error::{Error, IoOp, OpenError};
use crate::ids::{FileSeq, ShardId};
use crate::ids::{LogSeq, SegmentId};
use crate::io::buf::AlignedBuf;
use crate::io::portable::PortableDisk;
use crate::io::uring::UringDisk;
use crate::io::waker::Waker;
use crate::io::{Completion, Disk, direct};
use crate::journal::batch::BATCH_CLOSE_SLACK_BYTES;
use crate::journal::files::ShardDir;
use crate::journal::preparer::{FileSpec, Job, Preparer};
use crate::journal::replay::{ReplayReport, replay};
use crate::storage::manifest::Manifest;
use crate::storage::storage_dir::StorageDir;
use core::flush::{
    FLUSH_CHUNK_BYTES, FLUSH_WRITES_IN_FLIGHT_MAX, StorageSettings, StorageStartState, entry_log_file,
};
use core::{CoreSettings, CoreStats, Output, ShardCore};
use request::{Reply, Request};
use segment_state::SegmentState;

/// The reply handle shards use.
pub type ReplyTo = oneshot::Sender<Reply>;

/// Internal events for a shard.
enum Event {
    FileReady(FileSeq, Result<File, Error>),
    /// The manifest, checkpoint and reclaim after a flush are done (or failed).
    Persisted(Result<(), Error>),
    /// The deletion check answered.
    DeletionConfirmed(SegmentId, bool),
    /// An entry log was created (or could not be).
    LogReady(LogSeq, Result<File, Error>),
}

/// Messages on a shard's bounded request queue.
pub(crate) enum Msg {
    Request(Request<ReplyTo>),
    Stats(oneshot::Sender<CoreStats>),
}

/// A running shard, as seen by the bookie.
pub(crate) struct ShardHandle {
    pub(crate) id: ShardId,
    /// Asks the shard to finish what is queued and stop; read by the shard every turn, so it
    /// is seen even while the shard cannot take more requests.
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) requests: Sender<Msg>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl ShardHandle {
    /// Queues a message (blocking while the queue is full: backpressure) and wakes the shard.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), Error> {
        self.requests.send(msg).map_err(|_| Error::ShardStopped(self.id))?;
        self.waker.wake_if_sleeping();
        Ok(())
    }
}

/// What a shard reports once it has replayed and is serving.
pub(crate) struct Started {
    pub(crate) report: ReplayReport,
    pub(crate) backend: &'static str,
    pub(crate) direct_io: bool,
}

/// Starts shard `id`: replay, then serve. Returns once it serves, or why it cannot.
pub(crate) fn start(
    id: ShardId,
    config: &BookieConfig,
    preparer: Arc<Preparer>,
) -> Result<(ShardHandle, Started), OpenError> {
    let journal_dir = &config.journal_dirs[id.0 as usize % config.journal_dirs.len()];
    let dir = ShardDir::open(journal_dir, id)?;
    let (requests_tx, requests) = bounded(config.queue_capacity);
    let waker = Arc::new(Waker::new().map_err(|source| OpenError::Io {
        op: IoOp::Setup,
        file: dir.path.clone(),
        source,
    })?);
    let (ready_tx, ready_rx) = oneshot::channel::<Result<Started, OpenError>>();
    let cpu = shard_cpu(id, config);
    let config = config.clone();
    let thread_waker = waker.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("dlog-shard-{}", id.0))
        .spawn(move || {
            if let Some(cpu) = cpu {
                let mut set = rustix::thread::CpuSet::new();
                set.set(cpu);
                if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
                    tracing::warn!(shard = id.0, cpu, error = %e, "could not pin shard to its CPU");
                }
            }
            let setup = setup(id, &config, &dir);
            let (disk, core, started, direct_io, storage) = match setup {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let backend = disk.name();
            let _ = ready_tx.send(Ok(Started { report: started, backend, direct_io }));
            let shell = Shell {
                id,
                config,
                dir,
                direct_io,
                storage,
                preparer,
                waker: thread_waker,
                stop: thread_stop,
            };
            shell.run(disk, core, requests);
        })
        .map_err(|source| OpenError::Io { op: IoOp::Setup, file: journal_dir.clone(), source })?;
    #[expect(clippy::disallowed_methods, reason = "startup time for the log")]
    let t0 = std::time::Instant::now();
    let started = match ready_rx.recv() {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(OpenError::Config(format!("shard {} failed to start", id.0)));
        }
    };
    tracing::debug!(shard = id.0, start_ms = t0.elapsed().as_millis() as u64, "shard started");
    let handle = ShardHandle { id, stop, requests: requests_tx, waker, thread: Some(thread) };
    Ok((handle, started))
}

type Setup = (Box<dyn Disk>, ShardCore<ReplyTo>, ReplayReport, bool, Option<(StorageDir, bool)>);

/// Probes whether `path` takes O_DIRECT under `policy`.
fn direct_io_for(id: ShardId, path: &std::path::Path, policy: DirectIo) -> Result<bool, OpenError> {
    if policy == DirectIo::Disabled {
        return Ok(false);
    }
    let supported = direct::probe(path).map_err(|source| OpenError::Io {
        op: IoOp::Setup,
        file: path.to_path_buf(),
        source,
    })?;
    if !supported && policy == DirectIo::Required {
        return Err(OpenError::DirectIoUnsupported(path.to_path_buf()));
    }
    if !supported && id.0 == 0 {
        tracing::warn!(dir = %path.display(), "filesystem refuses O_DIRECT; using buffered I/O + fdatasync");
    }
    Ok(supported)
}

fn setup(id: ShardId, config: &BookieConfig, dir: &ShardDir) -> Result<Setup, OpenError> {
    let direct_io = direct_io_for(id, &dir.path, config.direct_io)?;
    let storage = match config.storage_mode {
        StorageMode::JournalOnly => {
            let manifest = config.storage_dir(id.0).join(format!("storage-{}", id.0)).join("manifest");
            if manifest.exists() {
                // Checkpoints of an entry-logs bookie moved entries out of the journal: opened
                // journal-only, they would silently be missing.
                return Err(OpenError::Layout {
                    path: manifest,
                    reason: "this bookie keeps entries in entry logs; open it with StorageMode::EntryLogs"
                        .into(),
                });
            }
            None
        }
        StorageMode::EntryLogs => {
            let storage_dir = StorageDir::open(config.storage_dir(id.0), id)?;
            let storage_direct = if storage_dir.path.parent() == dir.path.parent() {
                direct_io
            } else {
                direct_io_for(id, &storage_dir.path, config.direct_io)?
            };
            let loaded = storage_dir.load(storage_direct)?;
            Some((storage_dir, storage_direct, loaded))
        }
    };
    let (mut start, report) = replay(dir, config.journal_recovery, direct_io, storage.is_some())?;
    let mut disk: Box<dyn Disk> = match config.backend {
        Backend::Portable => Box::new(PortableDisk::new()),
        Backend::IoUring => Box::new(UringDisk::new().map_err(|source| OpenError::Io {
            op: IoOp::Setup,
            file: "io_uring".into(),
            source,
        })?),
        Backend::Auto => match UringDisk::new() {
            Ok(disk) => Box::new(disk),
            Err(e) => {
                if id.0 == 0 {
                    tracing::warn!(error = %e, "io_uring unavailable; using the portable backend");
                }
                Box::new(PortableDisk::new())
            }
        },
    };
    for seq in &start.files {
        let path = dir.journal_path(*seq);
        let file = direct::open(&path, direct_io).map_err(|source| OpenError::Io {
            op: IoOp::Open,
            file: path.clone(),
            source,
        })?;
        disk.register_file(*seq, file).map_err(|source| OpenError::Io {
            op: IoOp::Open,
            file: path.clone(),
            source,
        })?;
    }
    let mut storage_shell = None;
    if let Some((storage_dir, storage_direct, loaded)) = storage {
        let mut logs = Vec::new();
        for (seq, used, file) in loaded.logs {
            if let Some(file) = file {
                disk.register_file(entry_log_file(seq), file).map_err(|source| OpenError::Io {
                    op: IoOp::Open,
                    file: storage_dir.log_path(seq),
                    source,
                })?;
            }
            logs.push((seq, used));
        }
        if let Some(manifest) = &loaded.manifest {
            merge_manifest_segments(&mut start.segments, manifest);
        }
        if loaded.rebuilt {
            tracing::warn!(
                shard = id.0,
                runs = loaded.index.run_count(),
                "run index rebuilt from entry logs"
            );
        }
        start.storage = Some(StorageStartState {
            index: loaded.index,
            logs,
            next_log: loaded.next_log,
            next_run: loaded.manifest.as_ref().map_or(0, |m| m.next_run),
            damage: loaded.damage,
            damaged_logs: loaded.damaged_logs,
            replayed: Vec::new(),
            checkpoint: None,
        });
        storage_shell = Some((storage_dir, storage_direct));
    }
    let settings = CoreSettings {
        shard: id,
        batch_bytes_max: config.batch_bytes_max,
        batch_delay_max: Duration::from_micros(config.batch_delay_us_max),
        batch_when_idle: config.batch_when_idle,
        writes_in_flight_max: config.writes_in_flight_max,
        journal_file_bytes: config.journal_file_bytes,
        entry_bytes_max: config.entry_bytes_max,
        journal_sync: config.journal_sync,
        storage: (config.storage_mode == StorageMode::EntryLogs).then(|| StorageSettings {
            write_cache_bytes_max: config.write_cache_bytes_max,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            entry_log_bytes: config.entry_log_bytes,
            compaction_live_fraction: config.compaction_live_fraction,
            compaction_bytes_per_s: config.compaction_bytes_per_s,
            read_cache_bytes_max: config.read_cache_bytes_max,
        }),
    };
    #[expect(clippy::disallowed_methods, reason = "the shell owns the real clock")]
    let mut core = ShardCore::new(settings, start, Instant::now());
    // Batch buffers live as long as the shard: register them once (io_uring fixed buffers),
    // so writes skip pinning pages each time.
    // Flush chunk buffers too, when entry logs are on: one registration holds them all.
    let batch_count = config.writes_in_flight_max + 1;
    let chunk_count =
        if config.storage_mode == StorageMode::EntryLogs { FLUSH_WRITES_IN_FLIGHT_MAX + 1 } else { 0 };
    let mut buffers: Vec<AlignedBuf> = (0..batch_count)
        .map(|_| AlignedBuf::with_capacity(core.buffer_capacity()))
        .chain((0..chunk_count).map(|_| AlignedBuf::with_capacity(FLUSH_CHUNK_BYTES)))
        .collect();
    match disk.register_buffers(&mut buffers) {
        Ok(count) => tracing::debug!(shard = id.0, count, "batch and flush buffers registered"),
        Err(e) if id.0 == 0 => tracing::info!(error = %e, "io_uring fixed buffers unavailable"),
        Err(_) => {}
    }
    let chunks = buffers.split_off(batch_count);
    core.provide_buffers(buffers);
    core.provide_flush_buffers(chunks);
    Ok((disk, core, report, direct_io, storage_shell))
}

/// Segment state from the manifest under what journal replay rebuilt (replay is newer).
fn merge_manifest_segments(
    segments: &mut std::collections::BTreeMap<SegmentId, SegmentState>,
    manifest: &Manifest,
) {
    for m in &manifest.segments {
        let state = segments.entry(m.segment).or_insert_with(|| {
            let mut state = SegmentState::new(Bytes::new());
            state.master_key = None;
            state
        });
        if state.master_key.is_none() {
            state.master_key = m.master_key.clone();
        }
        state.fenced |= m.fenced;
        state.deleted |= m.deleted;
        state.observe_lac(m.last_add_confirmed);
    }
}

/// The CPU shard `id` is pinned to, if pinning is on.
pub(crate) fn shard_cpu(id: ShardId, config: &BookieConfig) -> Option<usize> {
    if !config.pin_shards {
        return None;
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Some(id.0 as usize % cpus)
}

/// Longest batch a file can hold with this configuration (written in file headers).
pub(crate) fn batch_bytes_limit(config: &BookieConfig) -> u64 {
    batch_bytes_limit_of(config.batch_bytes_max, config.entry_bytes_max)
}

/// Longest batch a file can hold with these bounds (written in file headers; the simulation
/// prepares its journal files with it too).
pub fn batch_bytes_limit_of(batch_bytes_max: usize, entry_bytes_max: usize) -> u64 {
    let largest = batch_bytes_max.max(entry_bytes_max) + 2 * BATCH_CLOSE_SLACK_BYTES;
    (largest + MASTER_KEY_SLACK).next_multiple_of(SECTOR_BYTES) as u64 + 4 * SECTOR_BYTES as u64
}

const MASTER_KEY_SLACK: usize = 256;

/// The longest a shard sleeps without looking at its queues.
const IDLE_WAIT_MAX: Duration = Duration::from_millis(100);

/// How often a shard samples free disk space.
const SPACE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

struct Shell {
    id: ShardId,
    config: BookieConfig,
    dir: ShardDir,
    direct_io: bool,
    /// The storage directory and whether it uses O_DIRECT (entry logs mode).
    storage: Option<(StorageDir, bool)>,
    preparer: Arc<Preparer>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl Shell {
    #[expect(clippy::disallowed_methods, reason = "the shell owns the real clock")]
    fn now() -> Instant {
        Instant::now()
    }

    fn run(self, mut disk: Box<dyn Disk>, mut core: ShardCore<ReplyTo>, requests: Receiver<Msg>) {
        let (events_tx, events) = unbounded::<Event>();
        let spin = Duration::from_micros(self.config.idle_spin_us);
        let mut completions: Vec<Completion> = Vec::new();
        let mut stopping = false;
        let mut space_check_at = Self::now();
        loop {
            let now = Self::now();
            if now >= space_check_at {
                space_check_at = now + SPACE_CHECK_INTERVAL;
                self.check_space(&mut core);
            }
            stopping |= self.stop.load(Ordering::Acquire);
            while let Ok(event) = events.try_recv() {
                // A file was made or written out: the disk's free space moved by megabytes, so
                // sample it again at once rather than within the second.
                space_check_at = space_check_at.min(now);
                match event {
                    Event::FileReady(seq, result) => {
                        let result = result.and_then(|file| {
                            disk.register_file(seq, file).map_err(|source| Error::Io {
                                op: IoOp::Open,
                                file: self.dir.journal_path(seq),
                                offset: 0,
                                source,
                            })
                        });
                        core.on_file_ready(seq, result, now);
                    }
                    Event::Persisted(result) => core.on_checkpoint_persisted(result, now),
                    Event::DeletionConfirmed(segment, confirmed) => {
                        core.on_deletion_confirmed(segment, confirmed, now);
                    }
                    Event::LogReady(seq, result) => {
                        let result = result.and_then(|file| {
                            disk.register_file(entry_log_file(seq), file).map_err(|source| Error::Io {
                                op: IoOp::Open,
                                file: format!("entry log {seq}").into(),
                                offset: 0,
                                source,
                            })
                        });
                        core.on_entry_log_ready(seq, result, now);
                    }
                }
            }
            let mut taken = 0;
            // When stopping, requests already queued are still served.
            while core.wants_requests() && taken < SHARD_REQUESTS_PER_TURN_MAX {
                match requests.try_recv() {
                    Ok(Msg::Request(request)) => core.on_request(request, now),
                    Ok(Msg::Stats(reply)) => {
                        let _ = reply.send(core.stats());
                    }
                    Err(TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
                taken += 1;
            }
            if stopping {
                core.flush_now(now);
            } else if requests.is_empty() {
                core.on_idle(now);
            }
            if core.deadline().is_some_and(|d| d <= now) {
                core.on_tick(now);
            }
            self.run_outputs(&mut core, disk.as_mut(), &events_tx);
            if stopping && disk.in_flight() == 0 {
                if core.is_quiescent() && requests.is_empty() {
                    self.mark_end(&core, disk.as_mut());
                    break;
                }
                if core.is_stuck() {
                    // Queued work that nothing in flight or on its way can unblock: answer it
                    // rather than wait forever; requests still in the queue are dropped with
                    // it, and their callers see `ShardStopped`.
                    core.abandon(Error::ShardStopped(self.id));
                    self.run_outputs(&mut core, disk.as_mut(), &events_tx);
                    break;
                }
            }
            let more = taken > 0 && !requests.is_empty();
            let result = if more || !completions.is_empty() {
                disk.reap(&mut completions, None, &self.waker)
            } else {
                self.idle(disk.as_mut(), &core, &requests, &events, &mut completions, spin, stopping)
            };
            if let Err(e) = result {
                tracing::error!(shard = self.id.0, error = %e, "disk wait failed");
            }
            let now = Self::now();
            for completion in completions.drain(..) {
                core.on_completion(completion, now);
            }
        }
        // The disk (and its buffer registration) goes before the core that owns the buffers.
        drop(disk);
        drop(core);
    }

    #[expect(clippy::too_many_arguments, reason = "the loop's state, passed explicitly")]
    fn idle(
        &self,
        disk: &mut dyn Disk,
        core: &ShardCore<ReplyTo>,
        requests: &Receiver<Msg>,
        events: &Receiver<Event>,
        completions: &mut Vec<Completion>,
        spin: Duration,
        stopping: bool,
    ) -> std::io::Result<()> {
        let spin_until = Self::now() + spin;
        loop {
            disk.reap(completions, None, &self.waker)?;
            let work = !completions.is_empty()
                || (!requests.is_empty() && core.wants_requests())
                || (stopping != self.stop.load(Ordering::Acquire))
                || !events.is_empty();
            if work {
                return Ok(());
            }
            if Self::now() >= spin_until {
                break;
            }
            std::hint::spin_loop();
        }
        self.waker.set_sleeping(true);
        // Queued requests the core does not take now (it is waiting for a write slot or for
        // the flush to catch up) are no reason to stay awake: a completion, an event or the
        // deadline changes that, and each of them wakes the wait.
        let result = if (!requests.is_empty() && core.wants_requests()) || !events.is_empty() {
            Ok(())
        } else {
            let now = Self::now();
            // At most IDLE_WAIT_MAX: a wake-up lost anyway (a bug) costs that long, not the
            // time to the next deadline (a flush interval is 10 s).
            let timeout = match core.deadline() {
                Some(deadline) => deadline.saturating_duration_since(now).min(IDLE_WAIT_MAX),
                None => IDLE_WAIT_MAX,
            };
            disk.reap(completions, Some(timeout.max(Duration::from_micros(1))), &self.waker)
        };
        self.waker.set_sleeping(false);
        result
    }

    /// Samples free space where the journal and the entry logs live and tells the core.
    fn check_space(&self, core: &mut ShardCore<ReplyTo>) {
        let mut paths = vec![self.dir.path.as_path()];
        if let Some((storage, _)) = &self.storage {
            paths.push(storage.path.as_path());
        }
        let mut free = u64::MAX;
        for path in paths {
            let sampled = match &self.config.free_space {
                Some(hook) => hook.0.free_bytes(path),
                None => rustix::fs::statvfs(path)
                    .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                    .map_err(Into::into),
            };
            match sampled {
                Ok(bytes) => free = free.min(bytes),
                Err(e) => {
                    tracing::warn!(shard = self.id.0, path = %path.display(), error = %e, "free space unknown")
                }
            }
        }
        if free != u64::MAX {
            core.on_free_space(free, self.config.disk_free_bytes_min, self.config.disk_free_bytes_resume);
        }
    }

    /// On a clean stop, zeroes the sector after the last batch (see `end_of_journal`). Failure
    /// only costs a spurious torn-tail report at the next open, so it is logged, not returned.
    fn mark_end(&self, core: &ShardCore<ReplyTo>, disk: &mut dyn Disk) {
        let Some((file, offset)) = core.end_of_journal() else { return };
        let mut zeros = AlignedBuf::with_capacity(SECTOR_BYTES);
        zeros.set_len(SECTOR_BYTES);
        let sync = Some(self.config.journal_sync);
        disk.submit(u64::MAX, crate::io::DiskOp::Write { file, offset, buf: zeros, sync });
        let mut completions = Vec::new();
        while completions.is_empty() {
            if let Err(e) = disk.reap(&mut completions, Some(Duration::from_secs(1)), &self.waker) {
                tracing::warn!(shard = self.id.0, error = %e, "could not mark the journal's end");
                return;
            }
        }
        if let Some(Completion { result: Err((op, e)), .. }) = completions.pop() {
            tracing::warn!(shard = self.id.0, ?op, error = %e, "could not mark the journal's end");
        }
    }

    fn run_outputs(&self, core: &mut ShardCore<ReplyTo>, disk: &mut dyn Disk, events: &Sender<Event>) {
        while let Some(output) = core.poll_output() {
            match output {
                Output::Disk(op, disk_op) => disk.submit(op, disk_op),
                Output::Reply(reply, answer) => {
                    let _ = reply.send(answer);
                }
                Output::PrepareFile(seq) => {
                    let events = events.clone();
                    let waker = self.waker.clone();
                    let spec = FileSpec {
                        file_bytes: self.config.journal_file_bytes,
                        writes_in_flight_max: self.config.writes_in_flight_max as u32,
                        batch_bytes_limit: batch_bytes_limit(&self.config),
                        direct_io: self.direct_io,
                        recycled_max: self.config.journal_files_recycled_max,
                    };
                    self.preparer.submit(Job::Prepare {
                        dir: self.dir.clone(),
                        seq,
                        spec,
                        done: Box::new(move |result| {
                            let _ = events.send(Event::FileReady(seq, result));
                            waker.wake();
                        }),
                    });
                }
                Output::Checkpoint { mark, reclaim, reply, manifest } => {
                    for seq in &reclaim {
                        disk.unregister_file(*seq);
                    }
                    let manifest = match (&self.storage, manifest) {
                        (Some((storage_dir, _)), Some(bytes)) => Some((storage_dir.clone(), bytes)),
                        _ => None,
                    };
                    let events = events.clone();
                    let waker = self.waker.clone();
                    self.preparer.submit(Job::Reclaim {
                        dir: self.dir.clone(),
                        manifest,
                        mark,
                        files: reclaim,
                        recycled_max: self.config.journal_files_recycled_max,
                        done: Box::new(move |result| match reply {
                            Some(reply) => {
                                let _ = reply.send(Reply::Checkpointed(result));
                            }
                            None => {
                                let _ = events.send(Event::Persisted(result));
                                waker.wake();
                            }
                        }),
                    });
                }
                Output::PersistManifest(bytes) => {
                    let events = events.clone();
                    let waker = self.waker.clone();
                    let storage_dir = self.storage.as_ref().map(|(d, _)| d.clone());
                    let shard = self.id;
                    self.preparer.submit(Job::Run(Box::new(move || {
                        let result = match storage_dir {
                            Some(dir) => dir.write_manifest(&bytes).map_err(|source| Error::Io {
                                op: IoOp::Write,
                                file: dir.path.join("manifest"),
                                offset: 0,
                                source,
                            }),
                            None => Err(Error::ShardStopped(shard)),
                        };
                        let _ = events.send(Event::Persisted(result));
                        waker.wake();
                    })));
                }
                Output::DeleteEntryLog(seq) => {
                    disk.unregister_file(entry_log_file(seq));
                    if let Some((storage_dir, _)) = &self.storage {
                        let path = storage_dir.log_path(seq);
                        let shard = self.id.0;
                        self.preparer.submit(Job::Run(Box::new(move || {
                            match std::fs::remove_file(&path) {
                                Ok(()) => tracing::info!(shard, path = %path.display(), "entry log deleted"),
                                // A later open deletes a log the manifest does not list.
                                Err(e) => tracing::warn!(shard, path = %path.display(), error = %e,
                                    "could not delete an entry log"),
                            }
                        })));
                    }
                }
                Output::ConfirmDeletion(segment) => match &self.config.deletion_check {
                    None => {
                        #[expect(clippy::disallowed_methods, reason = "the shell owns the real clock")]
                        let now = Instant::now();
                        core.on_deletion_confirmed(segment, true, now);
                    }
                    Some(hook) => {
                        // On a thread of its own: the check may wait on a metadata store, and
                        // the preparer thread is shared by every shard's file work.
                        let hook = hook.clone();
                        let events = events.clone();
                        let waker = self.waker.clone();
                        let spawned =
                            std::thread::Builder::new().name("dlog-deletion-check".into()).spawn(move || {
                                let confirmed = hook.0.confirm_deleted(segment);
                                let _ = events.send(Event::DeletionConfirmed(segment, confirmed));
                                waker.wake();
                            });
                        if let Err(e) = spawned {
                            // Not confirmed now; asked again at the next open.
                            let shard = self.id.0;
                            tracing::warn!(shard, %segment, error = %e, "could not start the deletion check");
                        }
                    }
                },
                Output::OpenEntryLog(seq) => {
                    // Created off the shard thread: file creation touches the filesystem's
                    // journal and may block.
                    let Some((storage_dir, storage_direct)) = self.storage.clone() else { continue };
                    let events = events.clone();
                    let waker = self.waker.clone();
                    let shard = self.id;
                    self.preparer.submit(Job::Run(Box::new(move || {
                        let path = storage_dir.log_path(seq);
                        let result = storage_dir.create_log(seq, storage_direct).map_err(|source| {
                            if source.raw_os_error() == Some(libc::ENOSPC) {
                                Error::NoSpace(shard)
                            } else {
                                Error::Io { op: IoOp::Open, file: path, offset: 0, source }
                            }
                        });
                        let _ = events.send(Event::LogReady(seq, result));
                        waker.wake();
                    })));
                }
            }
        }
    }
}
