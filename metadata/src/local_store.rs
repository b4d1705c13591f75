//! `LocalStore`: the embedded metadata store's shell: one thread that owns a `LocalCore` and
//! its log file, applies requests in batches, makes each batch's log records durable with one
//! write and one fdatasync (group commit), then answers; it expires leases on time and feeds
//! watchers. `LocalStore::in_memory()` runs the same shell with no file (tests).
//!
//! Invariants:
//! - LS1: a mutation is answered only after its log record is durable; a failed log write
//!   answers every request of the batch with `Unavailable` and stops the store (the state in
//!   memory may be ahead of the disk; reopening replays what is durable). Reads are answered
//!   with the batch too, so a read never shows a mutation that is not durable yet.
//! - LS2: a watcher sees every event under its prefix from its `from` version on, once, in
//!   revision order: first the history, then live events, from one thread.
//! - LS3: the log is rewritten, when it grows past `LocalOptions::rewrite_bytes` and four times
//!   its last image, as one State record (tmp file, fsync, rename, directory fsync): a crash
//!   leaves the old log or the new one, never a mix.
//! - LS4: the directory and the log file are fsynced into existence before the first answer.
//! - LS5: one process at a time: the directory's `LOCK` file is flocked while the store is
//!   open; a second `open` fails with `Unavailable` instead of interleaving two logs.
//! - LS6: `open_read_only` reads a snapshot without the lock and never writes: no log, no
//!   mutation, no lease expiry, the directory untouched (not even an interrupted rewrite's tmp
//!   file, which belongs to the owner).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};

use crate::error::MetaError;
use crate::local_core::LocalCore;
use crate::local_log::{self, LogEnd};
use crate::store::{MetadataStore, check_ops};
use crate::watch::{self, Watch, WatchSender};
use crate::{LeaseId, Op, Page, Version, Versioned};

/// Events a store keeps for watches to resume from.
pub const HISTORY_MAX: usize = 100_000;
/// Requests applied in one batch (one write + one fdatasync) at most.
pub const BATCH_MAX: usize = 1024;

type Reply<T> = oneshot::Sender<Result<T, MetaError>>;

enum Request {
    Get(String, Reply<Option<Versioned>>),
    List {
        prefix: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Page>,
    },
    Txn(Vec<Op>, Reply<Version>),
    Grant(Duration, Reply<LeaseId>),
    KeepAlive(LeaseId, Reply<()>),
    Revoke(LeaseId, Reply<Version>),
    /// Answers the version the watch starts at (`from`, or the next revision for `from = 0`).
    Watch {
        prefix: String,
        from: Version,
        events: WatchSender,
        reply: Reply<Version>,
    },
}

/// Knobs of a `LocalStore`.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The log is rewritten as one image once it passes this many bytes (and four times its
    /// last image). Default 64 MiB.
    pub rewrite_bytes: u64,
}

impl Default for LocalOptions {
    fn default() -> LocalOptions {
        LocalOptions { rewrite_bytes: 64 << 20 }
    }
}

/// A durable, single-machine metadata store (`local:///path`).
#[derive(Debug)]
pub struct LocalStore {
    requests: Option<Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[expect(clippy::disallowed_methods, reason = "the shell owns the real clock")]
fn now() -> Instant {
    Instant::now()
}

fn unavailable(e: impl std::fmt::Display) -> MetaError {
    MetaError::Unavailable(e.to_string())
}

/// Replays the log at `path` (none: an empty store); the state and where the valid bytes end
/// (a torn tail or zero-filled space after them). Damage is `Corrupt`: metadata must be exact.
fn replay_log(path: &Path) -> Result<(LocalCore, usize), MetaError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(unavailable(e)),
    };
    let (records, end) = local_log::decode_log(&bytes);
    let valid = match end {
        LogEnd::Clean { end } | LogEnd::Torn { end } => end,
        LogEnd::Damaged { at } => {
            return Err(MetaError::Corrupt(format!(
                "{}: damaged at byte {at} (not a torn tail); refusing to open",
                path.display()
            )));
        }
    };
    let mut core = LocalCore::new(HISTORY_MAX);
    let opened = now();
    for record in records {
        core.replay(record, opened)?;
    }
    Ok((core, valid))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalStore {
    /// Opens (or creates) the store in directory `dir`: replays its log, cutting a torn tail;
    /// refuses to open on damage (metadata must be exact).
    pub fn open(dir: &Path) -> Result<LocalStore, MetaError> {
        LocalStore::open_with(dir, LocalOptions::default())
    }

    /// A store that keeps nothing on disk: same semantics while the process runs (tests).
    pub fn in_memory() -> Result<LocalStore, MetaError> {
        LocalStore::start_shell(LocalCore::new(HISTORY_MAX), None, LocalOptions::default(), false)
    }

    /// A read-only snapshot of the store in `dir` as its log holds it now, without taking the
    /// directory's lock: for inspecting a store another process owns (`dlog admin` while a
    /// local cluster runs). It changes nothing on disk (a torn tail, say an append in progress,
    /// is left out, not cut); reads and watches work, mutations answer `Invalid`, and leases
    /// do not expire in it (LS6).
    pub fn open_read_only(dir: &Path) -> Result<LocalStore, MetaError> {
        if !dir.is_dir() {
            return Err(MetaError::Unavailable(format!("{}: no metadata store here", dir.display())));
        }
        let (core, _) = replay_log(&dir.join("metadata.log"))?;
        LocalStore::start_shell(core, None, LocalOptions::default(), true)
    }

    /// `open` with options.
    pub fn open_with(dir: &Path, options: LocalOptions) -> Result<LocalStore, MetaError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(unavailable)?;
            }
        }
        // One process at a time (LS5): the lock is held as long as the file stays open.
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"));
        let lock = lock.map_err(unavailable)?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(MetaError::Unavailable(format!(
                "{}: in use by another process (its LOCK file is locked)",
                dir.display()
            )));
        }
        let path = dir.join("metadata.log");
        // A rewrite a crash interrupted before its rename (LS3).
        let _ = std::fs::remove_file(dir.join("metadata.log.tmp"));
        let (core, valid) = replay_log(&path)?;
        let file =
            OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(unavailable)?;
        // Cut a torn tail (an append a crash interrupted; never acknowledged) and zero-filled
        // space, so new records follow the last valid one.
        file.set_len(valid as u64).map_err(unavailable)?;
        file.sync_all().map_err(unavailable)?;
        sync_dir(dir).map_err(unavailable)?; // LS4
        let log =
            Log { file, path, dir: dir.to_path_buf(), bytes: valid as u64, image_bytes: 0, _lock: lock };
        LocalStore::start_shell(core, Some(log), options, false)
    }

    fn start_shell(
        core: LocalCore,
        log: Option<Log>,
        options: LocalOptions,
        read_only: bool,
    ) -> Result<LocalStore, MetaError> {
        let (requests, rx) = unbounded();
        let fed = core.revision();
        let shell = Shell { core, log, options, read_only, watchers: Vec::new(), joining: Vec::new(), fed };
        let thread = std::thread::Builder::new()
            .name("dlog-metadata".into())
            .spawn(move || shell.run(rx))
            .map_err(unavailable)?;
        Ok(LocalStore { requests: Some(requests), thread: Some(thread) })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, MetaError> {
        let (tx, rx) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or_else(|| unavailable("store closed"))?;
        requests.send(make(tx)).map_err(|_| unavailable("store stopped"))?;
        rx.await.map_err(|_| unavailable("store stopped"))?
    }

    /// Stops the store after the requests already queued.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl MetadataStore for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, MetaError> {
        self.call(|reply| Request::Get(key.to_string(), reply)).await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Version, MetaError> {
        check_ops(&ops)?;
        self.call(|reply| Request::Txn(ops, reply)).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page, MetaError> {
        let (prefix, after) = (prefix.to_string(), after.map(str::to_string));
        self.call(|reply| Request::List { prefix, after, limit, reply }).await
    }

    async fn watch(&self, prefix: &str, from: Version) -> Result<Watch, MetaError> {
        let (events, mut watch) = watch::channel(from);
        let prefix = prefix.to_string();
        let start = self.call(|reply| Request::Watch { prefix, from, events, reply }).await?;
        watch.set_start(start);
        Ok(watch)
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        if ttl.is_zero() {
            return Err(MetaError::Invalid("lease of zero ttl".into()));
        }
        self.call(|reply| Request::Grant(ttl, reply)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        self.call(|reply| Request::KeepAlive(lease, reply)).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<Version, MetaError> {
        self.call(|reply| Request::Revoke(lease, reply)).await
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The log file and its sizes.
struct Log {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    /// Bytes in the log now, and in its image at the last rewrite.
    bytes: u64,
    image_bytes: u64,
    /// The directory's LOCK file, flocked (LS5).
    _lock: File,
}

struct Watcher {
    prefix: String,
    /// Live events before this version are not for this watcher (it asked from later).
    from: Version,
    events: WatchSender,
}

struct Shell {
    core: LocalCore,
    log: Option<Log>,
    options: LocalOptions,
    /// A snapshot (`open_read_only`): no mutation, no lease expiry (LS6).
    read_only: bool,
    watchers: Vec<Watcher>,
    /// Watches asked for in the batch being applied: registered once it is durable.
    joining: Vec<(Watcher, Reply<Version>)>,
    /// Watchers have been sent every event up to this revision.
    fed: Version,
}

/// A reply owed once the batch is durable.
enum Owed {
    Version(Reply<Version>, Result<Version, MetaError>),
    Lease(Reply<LeaseId>, Result<LeaseId, MetaError>),
    Unit(Reply<()>, Result<(), MetaError>),
    Get(Reply<Option<Versioned>>, Option<Versioned>),
    List(Reply<Page>, Page),
}

impl Owed {
    fn answer(self, failure: Option<&MetaError>) {
        fn pick<T>(r: Result<T, MetaError>, failure: Option<&MetaError>) -> Result<T, MetaError> {
            failure.cloned().map_or(r, Err)
        }
        match self {
            Owed::Version(reply, r) => drop(reply.send(pick(r, failure))),
            Owed::Lease(reply, r) => drop(reply.send(pick(r, failure))),
            Owed::Unit(reply, r) => drop(reply.send(pick(r, failure))),
            Owed::Get(reply, r) => drop(reply.send(pick(Ok(r), failure))),
            Owed::List(reply, r) => drop(reply.send(pick(Ok(r), failure))),
        }
    }
}

impl Shell {
    fn run(mut self, requests: Receiver<Request>) {
        loop {
            // A snapshot expires nothing (LS6): it waits for requests only.
            let deadline = if self.read_only { None } else { self.core.next_deadline() };
            let timeout = deadline.map(|d| d.saturating_duration_since(now()));
            let first = match timeout {
                Some(t) => match requests.recv_timeout(t) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match requests.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                },
            };
            let mut owed = Vec::new();
            let mut batch: Vec<Request> = first.into_iter().collect();
            while batch.len() < BATCH_MAX {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let at = now();
            if !self.read_only {
                self.core.expire(at);
            }
            for request in batch {
                self.apply(request, at, &mut owed);
            }
            if !self.commit(owed) {
                return;
            }
        }
    }

    fn apply(&mut self, request: Request, at: Instant, owed: &mut Vec<Owed>) {
        let refuse = || MetaError::Invalid("a read-only snapshot of the metadata store".into());
        match request {
            Request::Txn(_, reply) | Request::Revoke(_, reply) if self.read_only => {
                owed.push(Owed::Version(reply, Err(refuse())))
            }
            Request::Grant(_, reply) if self.read_only => owed.push(Owed::Lease(reply, Err(refuse()))),
            Request::KeepAlive(_, reply) if self.read_only => owed.push(Owed::Unit(reply, Err(refuse()))),
            // Reads are answered with the batch (LS1): they may see its mutations.
            Request::Get(key, reply) => owed.push(Owed::Get(reply, self.core.get(&key))),
            Request::List { prefix, after, limit, reply } => {
                owed.push(Owed::List(reply, self.core.list(&prefix, after.as_deref(), limit)))
            }
            Request::Txn(ops, reply) => owed.push(Owed::Version(reply, self.core.txn(ops, at))),
            Request::Grant(ttl, reply) => owed.push(Owed::Lease(reply, self.core.grant(ttl, at))),
            Request::KeepAlive(lease, reply) => owed.push(Owed::Unit(reply, self.core.keep_alive(lease, at))),
            Request::Revoke(lease, reply) => owed.push(Owed::Version(reply, self.core.revoke(lease))),
            Request::Watch { prefix, from, events, reply } => {
                self.joining.push((Watcher { prefix, from, events }, reply))
            }
        }
    }

    /// Makes the batch's records durable, then answers and feeds watchers (LS1). False: the
    /// log could not be written; the store stops.
    fn commit(&mut self, owed: Vec<Owed>) -> bool {
        let records = self.core.take_log();
        let mut failure = None;
        if let Some(log) = self.log.as_mut()
            && !records.is_empty()
        {
            // One frame per write, durable before the next (local_log.rs LL4): usually one, so
            // a crash tears only the last frame, whichever of its pages reached the disk.
            for bytes in local_log::encode_batches(&records) {
                log.bytes += bytes.len() as u64;
                if let Err(e) = log.file.write_all(&bytes).and_then(|()| log.file.sync_data()) {
                    failure = Some(unavailable(format!("{}: {e}", log.path.display())));
                    break;
                }
            }
        }
        for o in owed {
            o.answer(failure.as_ref());
        }
        if let Some(e) = failure {
            for (_, reply) in self.joining.drain(..) {
                let _ = reply.send(Err(e.clone()));
            }
            for w in self.watchers.drain(..) {
                w.events.fail(e.clone());
            }
            return false;
        }
        self.feed_watchers();
        if let Some(log) = self.log.as_mut()
            && log.bytes > self.options.rewrite_bytes.max(4 * log.image_bytes)
        {
            match log.rewrite(&self.core) {
                Ok(()) => {}
                Err((e, false)) => {
                    // Before the rename: the old log is intact and stays in use.
                    tracing::warn!(path = %log.path.display(), error = %e, "log rewrite failed; log kept");
                }
                Err((e, true)) => {
                    // The rename may not be durable: later appends could be lost. Stop (LS1).
                    tracing::error!(path = %log.path.display(), error = %e, "log rewrite failed; store stopped");
                    return false;
                }
            }
        }
        // New watchers join now that everything is durable: the history up to here, then the
        // live events of later batches (LS2).
        let next = Version(self.core.revision().0 + 1);
        for (mut watcher, reply) in std::mem::take(&mut self.joining) {
            if watcher.from == Version(0) {
                watcher.from = next;
            }
            match self.core.events_since(&watcher.prefix, watcher.from.min(next)) {
                Ok(history) => {
                    if watcher.events.send_all(&history) {
                        let _ = reply.send(Ok(watcher.from));
                        self.watchers.push(watcher);
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        true
    }

    /// Sends watchers the events after `fed`, which are all durable now; forgets watchers that
    /// are gone or cut off.
    fn feed_watchers(&mut self) {
        let revision = self.core.revision();
        if revision == self.fed {
            return;
        }
        match self.core.events_since("", Version(self.fed.0 + 1)) {
            Ok(events) => self.watchers.retain(|w| {
                !w.events.is_closed()
                    && w.events.send_all(
                        events.iter().filter(|e| e.version >= w.from && e.key.starts_with(w.prefix.as_str())),
                    )
            }),
            Err(e) => {
                // More changes in one batch than the history holds: watchers must re-list.
                for w in self.watchers.drain(..) {
                    w.events.fail(e.clone());
                }
            }
        }
        self.fed = revision;
    }
}

impl Log {
    /// Rewrites the log as one State record (LS3). Err((e, true)): the failure came after the
    /// rename, so the store cannot go on safely.
    fn rewrite(&mut self, core: &LocalCore) -> Result<(), (io::Error, bool)> {
        let mut bytes = Vec::new();
        local_log::encode(&local_log::LogRecord::State(Box::new(core.image())), &mut bytes);
        let tmp = self.dir.join("metadata.log.tmp");
        let before = |e| (e, false);
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&tmp).map_err(before)?;
        file.set_len(0).map_err(before)?;
        file.write_all(&bytes).map_err(before)?;
        file.sync_all().map_err(before)?;
        // The handle follows the file through the rename: appends go to the new log.
        std::fs::rename(&tmp, &self.path).map_err(before)?;
        self.file = file;
        sync_dir(&self.dir).map_err(|e| (e, true))?;
        self.bytes = bytes.len() as u64;
        self.image_bytes = bytes.len() as u64;
        Ok(())
    }
}
