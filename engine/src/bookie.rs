//! `Bookie`: the embedded API of the storage engine.
//!
//! Owns: opening (layout check, preparer, shard start and replay), routing each request to the
//! shard that owns its segment, and turning shard replies into typed results.
//! Does not own: any protocol decision (shards decide), any I/O (shards do it).
//!
//! Every call returns a `Pending` at once; it resolves when the shard answers. `Pending` is a
//! `Future` and can also be waited on from a plain thread (`wait`, or `poll_ready` in a spin).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::config::BookieConfig;
use crate::error::{Error, OpenError};
use crate::ids::{EntryId, SegmentId, ShardId};
use crate::journal::files::check_layout;
use crate::journal::preparer::Preparer;
use crate::journal::replay::ReplayReport;
use crate::shard::core::CoreStats;
use crate::shard::request::{AddEntry, JournalMark, Reply, Request};
use crate::shard::{Msg, ShardHandle, start};

/// For a request split over shards: each part's positions in the caller's request.
type Indices = Option<Vec<usize>>;
/// The replies of every part of a request.
type Replies = Vec<(Reply, Indices)>;
/// Turns replies into the caller's result.
type Mapper<R> = fn(Replies) -> R;

/// A running bookie storage engine.
pub struct Bookie {
    shards: Vec<ShardHandle>,
    cpus: Vec<Option<usize>>,
    reports: Vec<ReplayReport>,
    backend: &'static str,
    direct_io: bool,
    _preparer: Arc<crate::journal::preparer::Preparer>,
    /// The journal directories' `dlog.lock` files, flocked while the bookie lives.
    _locks: Vec<std::fs::File>,
}

/// Takes `dir/dlog.lock` (an exclusive flock): `InUse` when another process holds it.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, OpenError> {
    let path = dir.join("dlog.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| OpenError::Io { op: crate::error::IoOp::Open, file: path.clone(), source })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(OpenError::InUse(dir.to_path_buf())),
        Err(e) => Err(OpenError::Io { op: crate::error::IoOp::Open, file: path, source: e.into() }),
    }
}

impl std::fmt::Debug for Bookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bookie").field("shards", &self.shards.len()).field("backend", &self.backend).finish()
    }
}

/// A shard's reply channel: blocking until first polled as a future, then async for good.
enum Receiving {
    Blocking(oneshot::Receiver<Reply>),
    Async(oneshot::AsyncReceiver<Reply>),
}

/// Replies on their way from one or more shards; `map` turns them into the caller's result.
/// Every part is awaited: the result is built only once all have answered.
pub struct Pending<R> {
    /// Reply channels still awaited, each with its entries' indices and its shard.
    parts: Vec<(Receiving, Indices, ShardId)>,
    map: Mapper<R>,
    done: Replies,
    failed: Option<R>,
}

impl<R> Pending<R> {
    fn new(rx: oneshot::Receiver<Reply>, shard: ShardId, map: Mapper<R>, indices: Indices) -> Self {
        Pending {
            parts: vec![(Receiving::Blocking(rx), indices, shard)],
            map,
            done: Vec::new(),
            failed: None,
        }
    }

    fn failed(result: R, map: Mapper<R>) -> Self {
        Pending { parts: Vec::new(), map, done: Vec::new(), failed: Some(result) }
    }

    fn push_part(&mut self, rx: oneshot::Receiver<Reply>, indices: Indices, shard: ShardId) {
        self.parts.push((Receiving::Blocking(rx), indices, shard));
    }

    /// Blocks the calling thread until the result is ready.
    pub fn wait(mut self) -> R {
        if let Some(result) = self.failed.take() {
            return result;
        }
        for (rx, indices, shard) in std::mem::take(&mut self.parts) {
            let reply = match rx {
                Receiving::Blocking(rx) => rx.recv().ok(),
                // Polled as a future before: finish on this thread.
                Receiving::Async(future) => block_on(future).ok(),
            };
            // A part whose shard stopped is refused for all of its entries; the other parts
            // keep their own answers.
            let reply = reply.unwrap_or(Reply::Refused(Error::ShardStopped(shard)));
            self.done.push((reply, indices));
        }
        (self.map)(std::mem::take(&mut self.done))
    }

    /// Takes the result if it is ready, without blocking (for callers that poll in a loop).
    pub fn poll_ready(&mut self) -> Option<R> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_parts(&mut cx, false)
    }

    /// Polls every outstanding part once; the result once all have answered.
    fn poll_parts(&mut self, cx: &mut Context<'_>, as_future: bool) -> Option<R> {
        if let Some(result) = self.failed.take() {
            return Some(result);
        }
        let mut i = 0;
        while i < self.parts.len() {
            let answer = match &mut self.parts[i].0 {
                Receiving::Blocking(rx) if !as_future => match rx.try_recv() {
                    Ok(reply) => Some(Ok(reply)),
                    Err(oneshot::TryRecvError::Empty) => None,
                    Err(oneshot::TryRecvError::Disconnected) => Some(Err(())),
                },
                receiving => {
                    if let Receiving::Blocking(_) = receiving {
                        // A future registers its waker: switch to the async receiver for good.
                        let Receiving::Blocking(rx) =
                            std::mem::replace(receiving, Receiving::Blocking(oneshot::channel().1))
                        else {
                            unreachable!("checked above")
                        };
                        *receiving = Receiving::Async(std::future::IntoFuture::into_future(rx));
                    }
                    let Receiving::Async(future) = receiving else { unreachable!("set above") };
                    match Pin::new(future).poll(cx) {
                        Poll::Ready(Ok(reply)) => Some(Ok(reply)),
                        Poll::Ready(Err(_)) => Some(Err(())),
                        Poll::Pending => None,
                    }
                }
            };
            match answer {
                Some(Ok(reply)) => {
                    let (_, indices, _) = self.parts.swap_remove(i);
                    self.done.push((reply, indices));
                }
                Some(Err(())) => {
                    let (_, indices, shard) = self.parts.swap_remove(i);
                    self.done.push((Reply::Refused(Error::ShardStopped(shard)), indices));
                }
                None => i += 1,
            }
        }
        self.parts.is_empty().then(|| (self.map)(std::mem::take(&mut self.done)))
    }
}

impl<R: Unpin> Future for Pending<R> {
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        match self.poll_parts(cx, true) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

/// Drives one future to completion on the calling thread, parking between polls.
fn block_on<F: Future + Unpin>(mut future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

fn single_error(replies: &[(Reply, Option<Vec<usize>>)]) -> Option<Error> {
    match replies.first() {
        Some((Reply::Refused(e), _)) => Some(crate::error::clone_error(e)),
        _ => None,
    }
}

fn map_add(replies: Replies) -> Result<(), Error> {
    if let Some(e) = single_error(&replies) {
        return Err(e);
    }
    match replies.into_iter().next() {
        Some((Reply::Added(Ok(())), _)) => Ok(()),
        Some((Reply::Added(Err(mut errors)), _)) if !errors.is_empty() => Err(errors.swap_remove(0).1),
        other => unreachable!("add answered with {other:?}"),
    }
}

/// Every entry of a batch is accounted for: a part refused as a whole (its shard stopped, or
/// its queue refused it) refuses each of its entries by index, never only the first.
fn map_add_batch(replies: Replies) -> Result<(), Vec<(usize, Error)>> {
    let mut all = Vec::new();
    for (reply, indices) in replies {
        match reply {
            Reply::Refused(e) => match &indices {
                Some(indices) => all.extend(indices.iter().map(|i| (*i, crate::error::clone_error(&e)))),
                // Batches always carry their indices (`add_entries`); refuse everything.
                None => all.push((usize::MAX, e)),
            },
            Reply::Added(Ok(())) => {}
            Reply::Added(Err(errors)) => {
                for (i, error) in errors {
                    let original = indices.as_ref().and_then(|ix| ix.get(i).copied()).unwrap_or(i);
                    all.push((original, error));
                }
            }
            other => unreachable!("add answered with {other:?}"),
        }
    }
    if all.is_empty() {
        Ok(())
    } else {
        all.sort_by_key(|(i, _)| *i);
        Err(all)
    }
}

macro_rules! mapper {
    ($name:ident, $variant:ident, $out:ty) => {
        fn $name(replies: Replies) -> $out {
            if let Some(e) = single_error(&replies) {
                return Err(e);
            }
            match replies.into_iter().next() {
                Some((Reply::$variant(result), _)) => result,
                other => unreachable!("answered with {other:?}"),
            }
        }
    };
}
mapper!(map_fence, Fenced, Result<Option<EntryId>, Error>);
mapper!(map_lac_written, LacWritten, Result<(), Error>);
mapper!(map_lac, Lac, Result<Option<EntryId>, Error>);
mapper!(map_entry, Entry, Result<Bytes, Error>);
mapper!(map_checkpoint, Checkpointed, Result<(), Error>);
mapper!(map_flushed, Flushed, Result<(), Error>);
mapper!(map_deleted, Deleted, Result<(), Error>);
mapper!(map_lac_waited, LacWaited, Result<Option<EntryId>, Error>);
mapper!(map_entries, Entries, Result<Vec<(EntryId, Bytes)>, Error>);

fn map_position(replies: Replies) -> Result<JournalMark, Error> {
    if let Some(e) = single_error(&replies) {
        return Err(e);
    }
    match replies.into_iter().next() {
        Some((Reply::Position(mark), _)) => Ok(mark),
        other => unreachable!("answered with {other:?}"),
    }
}

impl Bookie {
    /// Opens a bookie: checks the configuration and directory layout, then starts every shard,
    /// each replaying its journal in parallel. Fails with a clear error, losing nothing, when
    /// the journal is damaged beyond what `journal_recovery` tolerates.
    pub fn open(config: BookieConfig) -> Result<Bookie, OpenError> {
        config.validate()?;
        // One process per directory: a second engine replaying and appending to a live one's
        // journal would corrupt it (a `dlog bookie` started by mistake on a `dlog local`'s
        // bookie directory). The locks go when the bookie is dropped.
        let mut locks = Vec::with_capacity(config.journal_dirs.len());
        for dir in &config.journal_dirs {
            check_layout(dir, config.shard_count)?;
            locks.push(lock_dir(dir)?);
        }
        let mut preparer = Preparer::start().map_err(|source| OpenError::Io {
            op: crate::error::IoOp::Setup,
            file: "preparer thread".into(),
            source,
        })?;
        let gate = preparer.take_gate();
        let preparer = Arc::new(preparer);
        // Every shard replays at once, each as one sequential read stream. Measured here:
        // when the disk is the limit, parallel and one-after-another replays took the same
        // time; when the data came from a cache below the guest, parallel replay was twice as
        // fast because parsing then uses both CPUs.
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..config.shard_count)
                .map(|i| {
                    let config = &config;
                    let preparer = preparer.clone();
                    scope.spawn(move || start(ShardId(i), config, preparer))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("shard start panicked")).collect()
        });
        let mut shards = Vec::new();
        let mut reports = Vec::new();
        let mut backend = "";
        let mut direct_io = true;
        let mut first_error = None;
        for result in results {
            match result {
                Ok((handle, started)) => {
                    backend = started.backend;
                    direct_io &= started.direct_io;
                    reports.push(started.report);
                    shards.push(handle);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Every shard has replayed: file preparation may use the disk now.
        drop(gate);
        let cpus = (0..config.shard_count).map(|i| crate::shard::shard_cpu(ShardId(i), &config)).collect();
        let bookie = Bookie { shards, cpus, reports, backend, direct_io, _preparer: preparer, _locks: locks };
        if let Some(e) = first_error {
            bookie.close();
            return Err(e);
        }
        Ok(bookie)
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The shard that owns a segment.
    pub fn shard_of(&self, segment: SegmentId) -> ShardId {
        segment.shard(self.shard_count())
    }

    /// The CPU a shard is pinned to, if shards are pinned.
    pub fn shard_cpu(&self, shard: ShardId) -> Option<usize> {
        self.cpus.get(shard.0 as usize).copied().flatten()
    }

    /// What each shard's replay did, by shard.
    pub fn replay_reports(&self) -> &[ReplayReport] {
        &self.reports
    }

    /// The I/O backend in use ("io_uring" or "portable").
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Whether journals use O_DIRECT.
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    fn send<R>(
        &self,
        shard: ShardId,
        map: Mapper<R>,
        make: impl FnOnce(crate::shard::ReplyTo) -> Request<crate::shard::ReplyTo>,
    ) -> Pending<R> {
        self.send_indexed(shard, map, None, make)
    }

    /// `send`, for a request whose reply `map` reads by the caller's `indices` (a batch).
    fn send_indexed<R>(
        &self,
        shard: ShardId,
        map: Mapper<R>,
        indices: Indices,
        make: impl FnOnce(crate::shard::ReplyTo) -> Request<crate::shard::ReplyTo>,
    ) -> Pending<R> {
        let (tx, rx) = oneshot::channel();
        let sent = match self.shards.get(shard.0 as usize) {
            Some(handle) => handle.send(Msg::Request(make(tx))),
            None => Err(Error::InvalidRequest(format!("no {shard}: this bookie has {}", self.shards.len()))),
        };
        match sent {
            Ok(()) => Pending::new(rx, shard, map, indices),
            Err(e) => Pending::failed(map(vec![(Reply::Refused(e), indices)]), map),
        }
    }

    /// Adds one entry; resolves once it is durable, or with why it was refused.
    pub fn add_entry(&self, entry: AddEntry) -> Pending<Result<(), Error>> {
        let shard = self.shard_of(entry.segment);
        self.send(shard, map_add, |reply| Request::Add { entries: vec![entry], reply })
    }

    /// Adds many entries in one call (one queue hand-off per shard); resolves once all are
    /// durable, or with the refused ones by index in `entries`.
    ///
    /// Every call that queues work blocks the calling thread while the shard's queue is full
    /// (`queue_capacity`): that is the engine's backpressure. Async callers that must never
    /// block should size the queue for their concurrency or call from a blocking-capable task.
    pub fn add_entries(&self, entries: Vec<AddEntry>) -> Pending<Result<(), Vec<(usize, Error)>>> {
        let count = self.shard_count();
        let first = entries.first().map_or(ShardId(0), |e| e.segment.shard(count));
        if entries.iter().all(|e| e.segment.shard(count) == first) {
            let indices = Some((0..entries.len()).collect());
            return self.send_indexed(first, map_add_batch, indices, |reply| Request::Add { entries, reply });
        }
        let mut per_shard: Vec<(Vec<AddEntry>, Vec<usize>)> =
            (0..count).map(|_| (Vec::new(), Vec::new())).collect();
        for (i, entry) in entries.into_iter().enumerate() {
            let part = &mut per_shard[entry.segment.shard(count).0 as usize];
            part.0.push(entry);
            part.1.push(i);
        }
        let mut pending = Pending { parts: Vec::new(), map: map_add_batch, done: Vec::new(), failed: None };
        for (shard, (entries, indices)) in per_shard.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let handle = &self.shards[shard];
            if let Err(e) = handle.send(Msg::Request(Request::Add { entries, reply: tx })) {
                let errors = indices.iter().map(|i| (*i, crate::shard::core::clone_error(&e))).collect();
                pending.done.push((Reply::Added(Err(errors)), None));
                continue;
            }
            pending.push_part(rx, Some(indices), ShardId(shard as u32));
        }
        pending
    }

    /// Fences a segment: plain adds are refused from now on. Resolves once the fence is
    /// durable, with the segment's `last_add_confirmed`.
    pub fn fence(&self, segment: SegmentId, master_key: Bytes) -> Pending<Result<Option<EntryId>, Error>> {
        self.send(self.shard_of(segment), map_fence, |reply| Request::Fence { segment, master_key, reply })
    }

    /// Writes an explicit `last_add_confirmed`; resolves once durable.
    pub fn write_last_add_confirmed(
        &self,
        segment: SegmentId,
        master_key: Bytes,
        last_add_confirmed: EntryId,
    ) -> Pending<Result<(), Error>> {
        self.send(self.shard_of(segment), map_lac_written, |reply| Request::WriteLac {
            segment,
            master_key,
            last_add_confirmed,
            reply,
        })
    }

    /// The highest `last_add_confirmed` this bookie has seen for the segment (S5): carried by an
    /// accepted entry or LAC write, durable here or not yet; every such LAC is true.
    pub fn read_last_add_confirmed(&self, segment: SegmentId) -> Pending<Result<Option<EntryId>, Error>> {
        self.send(self.shard_of(segment), map_lac, |reply| Request::ReadLac { segment, reply })
    }

    /// Reads an entry: from the write cache, or the entry logs (or, in `JournalOnly` mode, the
    /// journal). A missing entry is `NoSuchEntry`; damaged bytes are `Corrupt`, never
    /// `NoSuchEntry`.
    pub fn read_entry(&self, segment: SegmentId, entry: EntryId) -> Pending<Result<Bytes, Error>> {
        self.send(self.shard_of(segment), map_entry, |reply| Request::ReadEntry { segment, entry, reply })
    }

    /// Long-poll for tailing readers: resolves once the segment's seen `last_add_confirmed` (S5)
    /// is past `known` (any LAC when `None`), or after `timeout` with the LAC as it is then.
    pub fn wait_for_last_add_confirmed(
        &self,
        segment: SegmentId,
        known: Option<EntryId>,
        timeout: std::time::Duration,
    ) -> Pending<Result<Option<EntryId>, Error>> {
        self.send(self.shard_of(segment), map_lac_waited, |reply| Request::WaitLac {
            segment,
            known,
            timeout,
            reply,
        })
    }

    /// Reads entries `from..=to` in order, as many as fit in `max_bytes` (at least one), from
    /// one place (the write cache or one run, read sequentially): ask again from the entry after
    /// the last returned for the rest. The first entry missing is `NoSuchEntry` (or `Corrupt`
    /// where damage may have held it); a damaged entry after the first ends the batch early and
    /// answers `Corrupt` when asked for first.
    pub fn read_range(
        &self,
        segment: SegmentId,
        from: EntryId,
        to: EntryId,
        max_bytes: usize,
    ) -> Pending<Result<Vec<(EntryId, Bytes)>, Error>> {
        self.send(self.shard_of(segment), map_entries, |reply| Request::ReadRange {
            segment,
            from,
            to,
            max_bytes,
            reply,
        })
    }

    /// The durable end of a shard's journal.
    pub fn journal_position(&self, shard: ShardId) -> Pending<Result<JournalMark, Error>> {
        self.send(shard, map_position, |reply| Request::Position { reply })
    }

    /// Declares every entry in a shard's journal before `mark` stored elsewhere: journals a
    /// snapshot of every segment's state (key, fence, LAC) after the mark, persists the
    /// checkpoint once that is durable, and reclaims files wholly before it. `mark` must be a
    /// batch boundary of a live journal file, as `journal_position` returns; others are
    /// `InvalidRequest`. Only in `StorageMode::JournalOnly`, for an application that keeps the
    /// data itself (the journal benchmark's journal-only bookie uses it); with entry logs,
    /// shards checkpoint themselves after each flush (`InvalidRequest` here).
    pub fn checkpoint(&self, shard: ShardId, mark: JournalMark) -> Pending<Result<(), Error>> {
        self.send(shard, map_checkpoint, |reply| Request::Checkpoint { mark, reply })
    }

    /// Deletes a segment on this bookie: resolves once the deletion is durable. From then on
    /// adds are refused (`Deleted`) and entry reads answer `NoSuchSegment` (LAC reads still
    /// answer the last LAC); the entries are dropped
    /// once the deletion check (`BookieConfig::deletion_check`) confirms, and compaction
    /// reclaims their space.
    pub fn delete_segment(&self, segment: SegmentId) -> Pending<Result<(), Error>> {
        self.send(self.shard_of(segment), map_deleted, |reply| Request::DeleteSegment { segment, reply })
    }

    /// Flushes one shard: resolves once every entry it acknowledged before the call is in an
    /// entry log and its journal is checkpointed past them (at once in `JournalOnly` mode).
    pub fn flush_shard(&self, shard: ShardId) -> Pending<Result<(), Error>> {
        self.send(shard, map_flushed, |reply| Request::Flush { reply })
    }

    /// Flushes every shard (see `flush_shard`), waiting for all.
    pub fn flush(&self) -> Result<(), Error> {
        let pending: Vec<_> = (0..self.shard_count()).map(|s| self.flush_shard(ShardId(s))).collect();
        pending.into_iter().try_for_each(Pending::wait)
    }

    /// Requests queued for a shard and not yet taken by it (for metrics).
    pub fn queue_depth(&self, shard: ShardId) -> usize {
        self.shards.get(shard.0 as usize).map_or(0, |handle| handle.requests.len())
    }

    /// Counters of a shard.
    pub fn stats(&self, shard: ShardId) -> Result<CoreStats, Error> {
        let (tx, rx) = oneshot::channel();
        let handle = self.shards.get(shard.0 as usize).ok_or_else(|| {
            Error::InvalidRequest(format!("no {shard}: this bookie has {}", self.shards.len()))
        })?;
        handle.send(Msg::Stats(tx))?;
        rx.recv().map_err(|_| Error::ShardStopped(shard))
    }

    /// Stops every shard after its queued and in-flight work completes.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for shard in &self.shards {
            shard.stop.store(true, std::sync::atomic::Ordering::Release);
            shard.waker.wake();
        }
        for shard in &mut self.shards {
            if let Some(thread) = shard.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Bookie {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_refused_as_a_whole_refuses_every_entry_of_it() {
        let stopped = Reply::Refused(Error::ShardStopped(ShardId(1)));
        let fenced = Reply::Added(Err(vec![(0, Error::Fenced(SegmentId(4)))]));
        let result = map_add_batch(vec![(stopped, Some(vec![0, 2, 5])), (fenced, Some(vec![1, 3, 4]))]);
        let refused: Vec<usize> = result.expect_err("refused").iter().map(|(i, _)| *i).collect();
        assert_eq!(refused, vec![0, 1, 2, 5], "every entry of the stopped part, and the fenced one");
    }

    #[test]
    fn a_part_whose_shard_stopped_keeps_the_other_parts_answers() {
        let (tx, rx) = oneshot::channel::<Reply>();
        drop(tx);
        let (tx_ok, rx_ok) = oneshot::channel::<Reply>();
        tx_ok.send(Reply::Added(Ok(()))).expect("receiver alive");
        let mut pending = Pending { parts: Vec::new(), map: map_add_batch, done: Vec::new(), failed: None };
        pending.push_part(rx, Some(vec![0, 1]), ShardId(1));
        pending.push_part(rx_ok, Some(vec![2]), ShardId(0));
        let refused = pending.wait().expect_err("refused");
        assert_eq!(refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1]);
        assert!(
            refused.iter().all(|(_, e)| matches!(e, Error::ShardStopped(ShardId(1)))),
            "names the stopped shard"
        );
    }
}
