//! `LocalStore`: the embedded metadata store's shell: one thread that owns a `LocalCore` and
//! its log file, applies requests in batches, makes each batch's log records durable with one
//! write and one fdatasync (group commit), then answers; it expires leases on time and feeds
//! watchers.
//!
//! Invariants:
//! - LS1: a mutation is answered only after its log record is durable; a failed log write
//!   answers every request of the batch with `Unavailable` and stops the store (the state in
//!   memory may be ahead of the disk; reopening replays what is durable).
//! - LS2: a watcher sees every event under its prefix from its `from` version on, once, in
//!   revision order: first the history, then live events, from one thread.
//!
//! - LS3: the log is rewritten, when it grows past `LocalOptions::rewrite_bytes` and four times
//!   its last image, as one State record (tmp file, fsync, rename, directory fsync): a crash
//!   leaves the old log or the new one, never a mix.
//!
//! Not yet: the async `MetadataStore` trait over it (docs/rfcs/2026-11-25-metadata.md).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use crate::error::MetaError;
use crate::local_core::LocalCore;
use crate::local_log::{self, LogEnd};
use crate::{Event, LeaseId, Op, Page, Version, Versioned};

/// Events a store keeps for watches to resume from.
pub const HISTORY_MAX: usize = 100_000;
/// Requests applied in one batch (one write + one fdatasync) at most.
pub const BATCH_MAX: usize = 1024;

type Reply<T> = Sender<Result<T, MetaError>>;

enum Request {
    Get(String, Reply<Option<Versioned>>),
    List { prefix: String, after: Option<String>, limit: usize, reply: Reply<Page> },
    Txn(Vec<Op>, Reply<Version>),
    Grant(Duration, Reply<LeaseId>),
    KeepAlive(LeaseId, Reply<()>),
    Revoke(LeaseId, Reply<Version>),
    Watch { prefix: String, from: Version, events: Sender<Result<Event, MetaError>>, reply: Reply<()> },
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

impl LocalStore {
    /// Opens (or creates) the store in directory `dir`: replays its log, cutting a torn tail;
    /// refuses to open on damage (metadata must be exact).
    pub fn open(dir: &Path) -> Result<LocalStore, MetaError> {
        LocalStore::open_with(dir, LocalOptions::default())
    }

    /// `open` with options.
    pub fn open_with(dir: &Path, options: LocalOptions) -> Result<LocalStore, MetaError> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let path = dir.join("metadata.log");
        // A rewrite a crash interrupted before its rename (LS3).
        let _ = std::fs::remove_file(dir.join("metadata.log.tmp"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(unavailable(e)),
        };
        let (records, end) = local_log::decode_log(&bytes);
        let valid = match end {
            LogEnd::Clean => bytes.iter().rposition(|b| *b != 0).map_or(0, |_| bytes.len()),
            LogEnd::Torn(at) => at,
            LogEnd::Damaged(at) => {
                return Err(MetaError::Invalid(format!(
                    "{}: damaged at byte {at}, valid records follow; refusing to open",
                    path.display()
                )));
            }
        };
        let mut core = LocalCore::new(HISTORY_MAX);
        let opened = now();
        for record in records {
            core.replay(record, opened)?;
        }
        let file =
            OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(unavailable)?;
        // Cut a torn tail (an append a crash interrupted; never acknowledged) and zero-filled
        // space, so new records follow the last valid one.
        file.set_len(valid as u64).map_err(unavailable)?;
        file.sync_all().map_err(unavailable)?;
        let (requests, rx) = unbounded();
        let fed = core.revision();
        let log_bytes = valid as u64;
        let shell = Shell {
            core,
            file,
            path,
            dir: dir.to_path_buf(),
            options,
            log_bytes,
            image_bytes: 0,
            watchers: Vec::new(),
            joining: Vec::new(),
            fed,
        };
        let thread = std::thread::Builder::new()
            .name("dlog-metadata".into())
            .spawn(move || shell.run(rx))
            .map_err(unavailable)?;
        Ok(LocalStore { requests: Some(requests), thread: Some(thread) })
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, MetaError> {
        let (tx, rx) = bounded(1);
        let requests = self.requests.as_ref().ok_or_else(|| unavailable("store closed"))?;
        requests.send(make(tx)).map_err(|_| unavailable("store stopped"))?;
        rx.recv().map_err(|_| unavailable("store stopped"))?
    }

    /// A key's value and versions.
    pub fn get(&self, key: &str) -> Result<Option<Versioned>, MetaError> {
        self.call(|reply| Request::Get(key.to_string(), reply))
    }

    /// A page of keys under `prefix` after `after`.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page, MetaError> {
        let (prefix, after) = (prefix.to_string(), after.map(str::to_string));
        self.call(|reply| Request::List { prefix, after, limit, reply })
    }

    /// Applies operations atomically once durable; the new revision.
    pub fn txn(&self, ops: Vec<Op>) -> Result<Version, MetaError> {
        self.call(|reply| Request::Txn(ops, reply))
    }

    /// Grants a lease of `ttl` (durable before it is answered).
    pub fn grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        self.call(|reply| Request::Grant(ttl, reply))
    }

    /// Keeps a lease alive for another `ttl`.
    pub fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        self.call(|reply| Request::KeepAlive(lease, reply))
    }

    /// Ends a lease now, deleting its keys.
    pub fn revoke(&self, lease: LeaseId) -> Result<Version, MetaError> {
        self.call(|reply| Request::Revoke(lease, reply))
    }

    /// Every event under `prefix` from version `from` on (LS2), until the store closes.
    /// `Compacted` when the history no longer reaches `from`.
    pub fn watch(
        &self,
        prefix: &str,
        from: Version,
    ) -> Result<Receiver<Result<Event, MetaError>>, MetaError> {
        let (events, rx) = unbounded();
        let prefix = prefix.to_string();
        self.call(|reply| Request::Watch { prefix, from, events, reply })?;
        Ok(rx)
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

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.stop();
    }
}

type Watcher = (String, Sender<Result<Event, MetaError>>);

struct Shell {
    core: LocalCore,
    file: File,
    path: PathBuf,
    dir: PathBuf,
    options: LocalOptions,
    /// Bytes in the log now, and in its image at the last rewrite.
    log_bytes: u64,
    image_bytes: u64,
    watchers: Vec<Watcher>,
    /// Watches asked for in the batch being applied: registered once it is durable.
    joining: Vec<(Watcher, Version, Reply<()>)>,
    /// Watchers have been sent every event up to this revision.
    fed: Version,
}

/// A reply owed once the batch is durable.
enum Owed {
    Version(Reply<Version>, Result<Version, MetaError>),
    Lease(Reply<LeaseId>, Result<LeaseId, MetaError>),
    Unit(Reply<()>, Result<(), MetaError>),
}

impl Shell {
    fn run(mut self, requests: Receiver<Request>) {
        loop {
            let timeout = self.core.next_deadline().map(|d| d.saturating_duration_since(now()));
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
            self.core.expire(at);
            for request in batch {
                self.apply(request, at, &mut owed);
            }
            if !self.commit(owed) {
                return;
            }
        }
    }

    fn apply(&mut self, request: Request, at: Instant, owed: &mut Vec<Owed>) {
        match request {
            Request::Get(key, reply) => {
                let _ = reply.send(Ok(self.core.get(&key)));
            }
            Request::List { prefix, after, limit, reply } => {
                let _ = reply.send(Ok(self.core.list(&prefix, after.as_deref(), limit)));
            }
            Request::Txn(ops, reply) => owed.push(Owed::Version(reply, self.core.txn(ops, at))),
            Request::Grant(ttl, reply) => owed.push(Owed::Lease(reply, Ok(self.core.grant(ttl, at)))),
            Request::KeepAlive(lease, reply) => owed.push(Owed::Unit(reply, self.core.keep_alive(lease, at))),
            Request::Revoke(lease, reply) => owed.push(Owed::Version(reply, self.core.revoke(lease))),
            Request::Watch { prefix, from, events, reply } => {
                self.joining.push(((prefix, events), from, reply))
            }
        }
    }

    /// Makes the batch's records durable, then answers and feeds watchers (LS1). False: the
    /// log could not be written; the store stops.
    fn commit(&mut self, owed: Vec<Owed>) -> bool {
        let records = self.core.take_log();
        let durable = if records.is_empty() {
            Ok(())
        } else {
            let mut bytes = Vec::new();
            for r in &records {
                local_log::encode(r, &mut bytes);
            }
            self.log_bytes += bytes.len() as u64;
            self.file.write_all(&bytes).and_then(|()| self.file.sync_data())
        };
        let failure = durable.err().map(|e| unavailable(format!("{}: {e}", self.path.display())));
        for o in owed {
            match o {
                Owed::Version(reply, r) => {
                    let _ = reply.send(failure.clone().map_or(r, Err));
                }
                Owed::Lease(reply, r) => {
                    let _ = reply.send(failure.clone().map_or(r, Err));
                }
                Owed::Unit(reply, r) => {
                    let _ = reply.send(failure.clone().map_or(r, Err));
                }
            }
        }
        if failure.is_some() {
            return false;
        }
        self.feed_watchers();
        if self.log_bytes > self.options.rewrite_bytes.max(4 * self.image_bytes) {
            match self.rewrite() {
                Ok(()) => {}
                Err((e, false)) => {
                    // Before the rename: the old log is intact and stays in use.
                    tracing::warn!(path = %self.path.display(), error = %e, "log rewrite failed; log kept");
                }
                Err((e, true)) => {
                    // The rename may not be durable: later appends could be lost. Stop (LS1).
                    tracing::error!(path = %self.path.display(), error = %e, "log rewrite failed; store stopped");
                    return false;
                }
            }
        }
        // New watchers join now that everything is durable: the history up to here, then the
        // live events of later batches (LS2).
        for ((prefix, events), from, reply) in std::mem::take(&mut self.joining) {
            match self.core.events_since(&prefix, from) {
                Ok(history) => {
                    for e in history {
                        let _ = events.send(Ok(e));
                    }
                    self.watchers.push((prefix, events));
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        true
    }

    /// Rewrites the log as one State record (LS3). Err((e, true)): the failure came after the
    /// rename, so the store cannot go on safely.
    fn rewrite(&mut self) -> Result<(), (io::Error, bool)> {
        let mut bytes = Vec::new();
        local_log::encode(&local_log::LogRecord::State(Box::new(self.core.image())), &mut bytes);
        let tmp = self.dir.join("metadata.log.tmp");
        let before = |e| (e, false);
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&tmp).map_err(before)?;
        file.set_len(0).map_err(before)?;
        file.write_all(&bytes).map_err(before)?;
        file.sync_all().map_err(before)?;
        // The handle follows the file through the rename: appends go to the new log.
        std::fs::rename(&tmp, &self.path).map_err(before)?;
        self.file = file;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| (e, true))?;
        self.log_bytes = bytes.len() as u64;
        self.image_bytes = bytes.len() as u64;
        Ok(())
    }

    /// Sends watchers the events after `fed`, which are all durable now.
    fn feed_watchers(&mut self) {
        let revision = self.core.revision();
        if revision == self.fed {
            return;
        }
        match self.core.events_since("", Version(self.fed.0 + 1)) {
            Ok(events) => self.watchers.retain(|(prefix, tx)| {
                events
                    .iter()
                    .filter(|e| e.key.starts_with(prefix.as_str()))
                    .all(|e| tx.send(Ok(e.clone())).is_ok())
            }),
            Err(e) => {
                // More changes in one batch than the history holds: watchers must re-list.
                for (_, tx) in self.watchers.drain(..) {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
        self.fed = revision;
    }
}
