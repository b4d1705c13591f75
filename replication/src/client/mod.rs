//! `ReplicationClient`: the shell that connects the sans-I/O cores to bookies and to the
//! metadata store (docs/rfcs/2026-11-26-replication.md, "Shape"). `Send + Sync`; callers on
//! any thread or runtime.
//!
//! Owns: one compio I/O thread (io_thread.rs) hosting a connection per bookie and every core
//! started through this client; the commands that reach it (a mailbox); the metadata work,
//! run on the tokio runtime given at `new` (metadata_ops.rs).
//! Gives: `create_segment` (placement, metadata, then a `SegmentHandle` whose `add`s are
//! acknowledged at Qa in entry order, with ensemble changes and `close`), and
//! `recover_segment` (fence, recover, close: the end every recoverer agrees on).
//!
//! Invariants:
//! - CL1: an add's future resolves once, with its entry id when the writer completed it Ok
//!   (Qa acks in its write set, every earlier entry acknowledged), or with the error; adds
//!   resolve in the order they were made.
//! - CL2: when the client closes (or its last clone drops), every pending future resolves
//!   (`Closed`), and the I/O thread ends; so does a panic on that thread.
//! - CL3: `close` is asked for at the call: the adds made before it are accepted (or refused)
//!   first, the adds made after it are refused with `Closed`, in order. A dropped handle
//!   abandons its writer once every add and the close were answered.

mod io_thread;
mod mailbox;
mod metadata_ops;
mod quarantine;
mod reader_queue;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::schema::SegmentOwner;
use dlog_metadata::{MetaError, MetadataStore};

pub use metadata_ops::BookieAddr;
use metadata_ops::{MetadataOps, RecoveryStart};
pub use reader_queue::ReadItem;
use reader_queue::ReaderQueue;

use crate::placement::PlacementError;
use crate::quorum::{QuorumError, QuorumSizes};
use crate::recovery::{RecoveredEnd, RecoveryError, RecoverySettings};
use crate::segment_reader::{ReaderError, ReaderSettings, SegmentEnd};
use crate::segment_writer::{EnsembleChangeError, WriterError, WriterSettings};
use crate::transport::{ClientConfig, ConfigError};

/// Why a replication client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The metadata store failed.
    #[error("metadata: {0}")]
    Metadata(#[from] MetaError),
    /// Placement found no ensemble (too few writable bookies).
    #[error("placement: {0}")]
    Placement(#[from] PlacementError),
    /// The quorum sizes are invalid.
    #[error("quorum sizes: {0}")]
    Quorum(#[from] QuorumError),
    /// The client config is invalid.
    #[error("client config: {0}")]
    Config(#[from] ConfigError),
    /// The settings do not fit together.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// No such segment in the metadata.
    #[error("no segment {0}")]
    NoSuchSegment(u64),
    /// The segment's metadata is not usable.
    #[error("bad segment metadata: {0}")]
    BadMetadata(String),
    /// The writer failed.
    #[error("writer: {0}")]
    Writer(#[from] WriterError),
    /// Recovery failed.
    #[error("recovery: {0}")]
    Recovery(#[from] RecoveryError),
    /// A bookie refused this client (`Unauthorized`): its credentials, or the bookies'
    /// permissions for the segment's namespace, do not allow the request. Not worth retrying
    /// with the same credentials.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// Bookies did not answer (down, unreachable, timed out): worth trying again later.
    #[error("bookies unavailable: {0}")]
    Unavailable(String),
    /// The client is closed.
    #[error("replication client closed")]
    Closed,
    /// The I/O thread could not start.
    #[error("cannot start the client I/O thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How the client talks to bookies, writes and recovers.
#[derive(Clone, Debug, Default)]
pub struct ReplicationConfig {
    /// Connections, timeouts and backoff (a bookie that does not answer an ADD within
    /// `request_timeout` is replaced).
    pub transport: ClientConfig,
    /// The writers' windows and LAC flush.
    pub writer: WriterSettings,
    /// Recovery's window and retries.
    pub recovery: RecoverySettings,
    /// Readers' speculation, read-ahead and long polls.
    pub reader: ReaderSettings,
}

/// The sending half of a one-shot answer; dropping it resolves the future with `Closed`.
pub(crate) struct Reply<T>(oneshot::Sender<T>);

impl<T> Reply<T> {
    fn new() -> (Reply<T>, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        (Reply(tx), rx)
    }

    pub(crate) fn send(self, value: T) {
        // The caller may have stopped waiting: nothing to do then.
        let _ = self.0.send(value);
    }
}

/// Commands for the I/O thread.
pub(crate) enum Command {
    OpenWriter {
        segment: u64,
        master_key: Bytes,
        quorum: QuorumSizes,
        ensemble: Vec<BookieAddr>,
        settings: WriterSettings,
        reply: Reply<Result<u64, String>>,
    },
    Add {
        core: u64,
        payload: Bytes,
        reply: Reply<Result<u64, WriterError>>,
    },
    Close {
        core: u64,
        reply: Reply<Result<(), WriterError>>,
    },
    Abandon {
        core: u64,
    },
    /// A bookie's address, looked up again.
    Found {
        bookie: BookieAddr,
    },
    /// One request to one bookie, answered as the transport answers it.
    Request {
        bookie: BookieAddr,
        request: dlog_protocol::Request,
        reply: Reply<Result<dlog_protocol::Response, crate::transport::TransportError>>,
    },
    Recover {
        segment: u64,
        master_key: Bytes,
        quorum: QuorumSizes,
        ensembles: BTreeMap<u64, Vec<BookieAddr>>,
        settings: RecoverySettings,
        reply: Reply<Result<RecoveredEnd, RecoveryError>>,
    },
    EnsembleChanged {
        core: u64,
        result: Result<Vec<BookieAddr>, EnsembleChangeError>,
    },
    WriterClosed {
        core: u64,
        result: Result<(), WriterError>,
    },
    RecoveryClosed {
        core: u64,
        result: Result<RecoveredEnd, String>,
    },
    RecoveryReplaced {
        core: u64,
        result: Result<Vec<BookieAddr>, String>,
    },
    OpenReader {
        segment: u64,
        quorum: QuorumSizes,
        ensembles: BTreeMap<u64, Vec<BookieAddr>>,
        first_entry: u64,
        end: SegmentEnd,
        settings: ReaderSettings,
        queue: Arc<ReaderQueue>,
        reply: Reply<Result<u64, String>>,
    },
    Consumed {
        core: u64,
        through: u64,
    },
    ReaderMetadata {
        core: u64,
        ensembles: BTreeMap<u64, Vec<BookieAddr>>,
        end: SegmentEnd,
    },
    CloseReader {
        core: u64,
    },
}

pub(crate) struct Inner {
    mailbox: mailbox::Mailbox<Command>,
}

type Done<T> = Box<dyn FnOnce(T) + Send>;

/// The metadata work the I/O thread asks for, run elsewhere (on tokio); each answer comes back
/// through `done`.
pub(crate) trait MetadataRunner: Send + Sync {
    fn change_ensemble(
        &self,
        segment: u64,
        first_entry: u64,
        current: Vec<String>,
        replace: Vec<usize>,
        done: Done<Result<Vec<BookieAddr>, EnsembleChangeError>>,
    );
    fn close_written(
        &self,
        segment: u64,
        last_entry: Option<u64>,
        length: u64,
        done: Done<Result<(), WriterError>>,
    );
    fn close_recovered(
        &self,
        segment: u64,
        end: RecoveredEnd,
        change: Option<BTreeMap<u64, Vec<String>>>,
        done: Done<Result<RecoveredEnd, String>>,
    );
    fn choose_replacements(
        &self,
        segment: u64,
        current: Vec<String>,
        replace: Vec<usize>,
        done: Done<Result<Vec<BookieAddr>, String>>,
    );
    /// A bookie's registered address, if it has one now (`None` on any error).
    fn lookup(&self, id: String, done: Done<Option<BookieAddr>>);
}

struct TokioMetadata<S> {
    ops: Arc<MetadataOps<S>>,
    runtime: tokio::runtime::Handle,
    seed: AtomicU64,
}

impl<S: MetadataStore + 'static> MetadataRunner for TokioMetadata<S> {
    fn change_ensemble(
        &self,
        segment: u64,
        first_entry: u64,
        current: Vec<String>,
        replace: Vec<usize>,
        done: Done<Result<Vec<BookieAddr>, EnsembleChangeError>>,
    ) {
        let ops = self.ops.clone();
        let seed = self.seed.fetch_add(1, Ordering::Relaxed);
        self.runtime.spawn(async move {
            done(ops.change_ensemble(segment, first_entry, current, replace, seed).await);
        });
    }

    fn close_written(
        &self,
        segment: u64,
        last_entry: Option<u64>,
        length: u64,
        done: Done<Result<(), WriterError>>,
    ) {
        let ops = self.ops.clone();
        self.runtime.spawn(async move { done(ops.close_written(segment, last_entry, length).await) });
    }

    fn close_recovered(
        &self,
        segment: u64,
        end: RecoveredEnd,
        change: Option<BTreeMap<u64, Vec<String>>>,
        done: Done<Result<RecoveredEnd, String>>,
    ) {
        let ops = self.ops.clone();
        self.runtime.spawn(async move { done(ops.close_recovered(segment, end, change).await) });
    }

    fn choose_replacements(
        &self,
        segment: u64,
        current: Vec<String>,
        replace: Vec<usize>,
        done: Done<Result<Vec<BookieAddr>, String>>,
    ) {
        let ops = self.ops.clone();
        let seed = self.seed.fetch_add(1, Ordering::Relaxed);
        self.runtime
            .spawn(async move { done(ops.choose_replacements(segment, current, replace, seed).await) });
    }

    fn lookup(&self, id: String, done: Done<Option<BookieAddr>>) {
        let ops = self.ops.clone();
        self.runtime.spawn(async move {
            let found = ops.addresses(std::slice::from_ref(&id)).await.ok().and_then(|mut a| a.pop());
            done(found.filter(|b| b.addr.is_some()));
        });
    }
}

/// The replication client (see the module doc). Clones share the I/O thread.
pub struct ReplicationClient<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for ReplicationClient<S> {
    fn clone(&self) -> Self {
        ReplicationClient { shared: self.shared.clone() }
    }
}

struct Shared<S> {
    store: Arc<S>,
    inner: Arc<Inner>,
    ops: Arc<MetadataOps<S>>,
    runtime: tokio::runtime::Handle,
    config: ReplicationConfig,
    seed: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<S> Drop for Shared<S> {
    fn drop(&mut self) {
        self.inner.mailbox.close();
        let thread = self.thread.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl<S: MetadataStore + 'static> ReplicationClient<S> {
    /// A client over `store`, whose async operations run on `runtime`.
    pub fn new(
        store: Arc<S>,
        runtime: tokio::runtime::Handle,
        config: ReplicationConfig,
    ) -> Result<ReplicationClient<S>, ReplicationError> {
        config.transport.validate()?;
        let envelope = crate::entry_envelope::ENVELOPE_HEADER_BYTES as u64;
        let bookie_limit = u64::from(config.transport.limits.entry_bytes_max);
        if config.writer.entry_bytes_max + envelope > bookie_limit {
            return Err(ReplicationError::Settings(format!(
                "writer.entry_bytes_max {} plus the {envelope}-byte envelope is over the bookies' entry limit {}",
                config.writer.entry_bytes_max, bookie_limit
            )));
        }
        let inner = Arc::new(Inner { mailbox: mailbox::Mailbox::new() });
        let ops = Arc::new(MetadataOps::new(store.clone()));
        let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
        let metadata: Arc<dyn MetadataRunner> = Arc::new(TokioMetadata {
            ops: ops.clone(),
            runtime: runtime.clone(),
            seed: AtomicU64::new(seed),
        });
        let runtime_inner = inner.clone();
        let transport = config.transport.clone();
        let thread = std::thread::Builder::new()
            .name("dlog-replication".into())
            .spawn(move || {
                let runtime = match compio::runtime::Runtime::new() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "cannot start the replication client's runtime");
                        runtime_inner.mailbox.close();
                        return;
                    }
                };
                // Closes the mailbox however the thread ends, a panic included (CL2): later
                // calls fail at once instead of waiting for a thread that is gone.
                struct CloseOnExit(Arc<Inner>);
                impl Drop for CloseOnExit {
                    fn drop(&mut self) {
                        self.0.mailbox.close_and_drain();
                    }
                }
                let _close = CloseOnExit(runtime_inner.clone());
                runtime.block_on(io_thread::run(runtime_inner, transport, metadata));
            })
            .map_err(ReplicationError::Runtime)?;
        Ok(ReplicationClient {
            shared: Arc::new(Shared {
                store,
                inner,
                ops,
                runtime,
                seed: AtomicU64::new(seed ^ 0x5555),
                config,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    async fn on_tokio<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, ReplicationError>> + Send + 'static,
    ) -> Result<T, ReplicationError> {
        self.shared.runtime.spawn(work).await.map_err(|_| ReplicationError::Closed)?
    }

    fn push(&self, command: Command) -> Result<(), ReplicationError> {
        self.shared.inner.mailbox.push(command).map_err(|_| ReplicationError::Closed)
    }

    /// Creates a segment (placement over the writable bookies, metadata Open) and a writer
    /// for it.
    pub async fn create_segment(
        &self,
        quorum: QuorumSizes,
        master_key: Bytes,
        owner: Option<SegmentOwner>,
    ) -> Result<SegmentHandle, ReplicationError> {
        let ops = self.shared.ops.clone();
        let seed = self.shared.seed.fetch_add(1, Ordering::Relaxed);
        let key = master_key.clone();
        let (segment, ensemble) =
            self.on_tokio(async move { ops.create(quorum, &key, owner, seed).await }).await?;
        let (reply, answer) = Reply::new();
        let settings = self.shared.config.writer;
        self.push(Command::OpenWriter { segment, master_key, quorum, ensemble, settings, reply })?;
        let core =
            answer.await.map_err(|_| ReplicationError::Closed)?.map_err(ReplicationError::BadMetadata)?;
        Ok(SegmentHandle { segment, core, inner: self.shared.inner.clone() })
    }

    /// Fences and recovers `segment` (unless it is closed already) and closes it; the end the
    /// metadata holds, the same whoever recovers (Q7).
    pub async fn recover_segment(
        &self,
        segment: u64,
        master_key: Bytes,
    ) -> Result<RecoveredEnd, ReplicationError> {
        let ops = self.shared.ops.clone();
        let start = self
            .on_tokio(async move {
                match ops.begin_recovery(segment).await? {
                    RecoveryStart::Closed(end) => Ok(Err(end)),
                    RecoveryStart::Recover { quorum, ensembles } => {
                        let mut resolved = BTreeMap::new();
                        for (first, ids) in ensembles {
                            resolved.insert(first, ops.addresses(&ids).await?);
                        }
                        Ok(Ok((quorum, resolved)))
                    }
                }
            })
            .await?;
        let (quorum, ensembles) = match start {
            Err(end) => return Ok(end),
            Ok(start) => start,
        };
        let (reply, answer) = Reply::new();
        let settings = self.shared.config.recovery;
        self.push(Command::Recover { segment, master_key, quorum, ensembles, settings, reply })?;
        Ok(answer.await.map_err(|_| ReplicationError::Closed)??)
    }

    /// A reader of `segment` from `first_entry` on: a closed segment is read to its last entry
    /// (then `ReadItem::End`); an open one up to its LAC, tailing it (long polls) and following
    /// its metadata (ensemble changes, the close).
    pub async fn open_reader(
        &self,
        segment: u64,
        first_entry: u64,
    ) -> Result<SegmentReaderHandle, ReplicationError> {
        let ops = self.shared.ops.clone();
        let store = self.shared.store.clone();
        let (meta, version, ensembles) = self
            .on_tokio(async move {
                let segments = dlog_metadata::SegmentMetadataStore::new(store);
                let (meta, version) =
                    segments.get(segment).await?.ok_or(ReplicationError::NoSuchSegment(segment))?;
                let ensembles = resolve(&ops, &meta).await?;
                Ok((meta, version, ensembles))
            })
            .await?;
        let quorum = QuorumSizes::new(
            meta.ensemble_size as usize,
            meta.write_quorum_size as usize,
            meta.ack_quorum_size as usize,
        )?;
        let end = end_of(&meta);
        let queue = Arc::new(ReaderQueue::new());
        let (reply, answer) = Reply::new();
        let settings = self.shared.config.reader;
        let queue_for_core = queue.clone();
        self.push(Command::OpenReader {
            segment,
            quorum,
            ensembles,
            first_entry,
            end,
            settings,
            queue: queue_for_core,
            reply,
        })?;
        let core =
            answer.await.map_err(|_| ReplicationError::Closed)?.map_err(ReplicationError::BadMetadata)?;
        let (stop_following, stopped) = tokio::sync::oneshot::channel();
        if matches!(end, SegmentEnd::Open { .. }) {
            let (ops, inner) = (self.shared.ops.clone(), self.shared.inner.clone());
            let store = self.shared.store.clone();
            self.shared.runtime.spawn(async move {
                // The handle's drop ends the follower, whatever it waits for.
                tokio::select! {
                    () = follow(store, ops, inner, segment, version, core) => {}
                    _ = stopped => {}
                }
            });
        }
        Ok(SegmentReaderHandle {
            core,
            queue,
            inner: self.shared.inner.clone(),
            reported: None,
            _stop_following: stop_following,
        })
    }

    /// The segment's last_add_confirmed as its last ensemble knows it: the largest any member
    /// answers to READ_LAC (every answer is one the writer made, so the largest is safe to read
    /// up to). `None` when no member knows of an entry; an error only when none answered.
    pub async fn last_add_confirmed(&self, segment: u64) -> Result<Option<u64>, ReplicationError> {
        let meta = self.segment(segment).await?;
        let ops = self.shared.ops.clone();
        let ids = meta.current_ensemble().to_vec();
        let bookies = self.on_tokio(async move { Ok(ops.addresses(&ids).await?) }).await?;
        // Asked of every member at once, then the answers taken in turn.
        let answers: Vec<_> = bookies
            .into_iter()
            .map(|bookie| {
                let request = dlog_protocol::Request::ReadLastAddConfirmed { segment, fence: None };
                self.request(bookie, request)
            })
            .collect();
        let mut known = None;
        let mut answered = false;
        let mut last_error = None;
        for answer in answers {
            match answer.await {
                Ok(dlog_protocol::Response::ReadLastAddConfirmed { last_add_confirmed }) => {
                    answered = true;
                    known = known.max(last_add_confirmed);
                }
                Ok(dlog_protocol::Response::Refused {
                    status: dlog_protocol::Status::NoSuchSegment, ..
                }) => {
                    answered = true;
                }
                Ok(dlog_protocol::Response::Refused {
                    status: dlog_protocol::Status::Unauthorized,
                    message,
                    ..
                }) => return Err(ReplicationError::Unauthorized(message)),
                Ok(other) => last_error = Some(format!("unexpected answer {other:?}")),
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        match (answered, last_error) {
            (false, Some(error)) => Err(ReplicationError::Unavailable(format!(
                "segment {segment}: no bookie of its ensemble answered READ_LAC: {error}"
            ))),
            _ => Ok(known),
        }
    }

    /// Deletes the segment's data from `bookies` (DELETE_SEGMENT to each; a bookie that no
    /// longer has it counts as done). The bookies drop it once the segment's metadata is gone
    /// (their deletion check). Errors name the first bookie that did not confirm.
    pub async fn delete_segment_data(
        &self,
        segment: u64,
        bookies: &[String],
    ) -> Result<(), ReplicationError> {
        let ops = self.shared.ops.clone();
        let ids = bookies.to_vec();
        let bookies = self.on_tokio(async move { Ok(ops.addresses(&ids).await?) }).await?;
        let answers: Vec<_> = bookies
            .into_iter()
            .map(|bookie| {
                (bookie.id.clone(), self.request(bookie, dlog_protocol::Request::DeleteSegment { segment }))
            })
            .collect();
        for (id, answer) in answers {
            match answer.await {
                Ok(dlog_protocol::Response::DeleteSegment)
                | Ok(dlog_protocol::Response::Refused {
                    status: dlog_protocol::Status::NoSuchSegment, ..
                }) => {}
                Ok(dlog_protocol::Response::Refused {
                    status: dlog_protocol::Status::Unauthorized,
                    message,
                    ..
                }) => return Err(ReplicationError::Unauthorized(format!("bookie {id}: {message}"))),
                Ok(other) => {
                    return Err(ReplicationError::Unavailable(format!(
                        "bookie {id}: deleting segment {segment}: unexpected answer {other:?}"
                    )));
                }
                Err(e) => {
                    return Err(ReplicationError::Unavailable(format!(
                        "bookie {id}: deleting segment {segment}: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// One request to one bookie through the I/O thread's connections, sent at the call.
    fn request(
        &self,
        bookie: BookieAddr,
        request: dlog_protocol::Request,
    ) -> impl Future<Output = Result<dlog_protocol::Response, crate::transport::TransportError>> + use<S>
    {
        let (reply, answer) = Reply::new();
        let closed = || crate::transport::TransportError::Disconnected { reason: "client closed".into() };
        let pushed = self.push(Command::Request { bookie, request, reply });
        async move {
            pushed.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        }
    }

    /// Stops the client and its clones now (CL2): every pending call resolves `Closed`, the
    /// connections close, the I/O thread ends; later calls fail with `Closed`.
    pub fn shutdown(&self) {
        self.shared.inner.mailbox.close();
    }

    /// A segment's metadata.
    pub async fn segment(
        &self,
        segment: u64,
    ) -> Result<dlog_metadata::schema::SegmentMetadata, ReplicationError> {
        let ops = self.shared.ops.clone();
        self.on_tokio(async move { ops.get(segment).await }).await
    }
}

/// The writer of one segment, hosted on the client's I/O thread. `Send + Sync`. Dropping it
/// without `close` abandons the writer once every add made was answered (the segment stays
/// Open for a recovery to close).
pub struct SegmentHandle {
    segment: u64,
    core: u64,
    inner: Arc<Inner>,
}

impl Drop for SegmentHandle {
    fn drop(&mut self) {
        let _ = self.inner.mailbox.push(Command::Abandon { core: self.core });
    }
}

impl SegmentHandle {
    /// The segment's id.
    pub fn id(&self) -> u64 {
        self.segment
    }

    /// Adds `payload` as the next entry now (the order of calls is the entry order); the future
    /// resolves with its entry id once acknowledged (CL1). Adds beyond the writer's window wait
    /// on the I/O thread.
    pub fn add(&self, payload: Bytes) -> impl Future<Output = Result<u64, WriterError>> + Send + 'static {
        let (reply, answer) = Reply::new();
        let pushed = self.inner.mailbox.push(Command::Add { core: self.core, payload, reply }).is_ok();
        async move {
            if !pushed {
                return Err(WriterError::Closed);
            }
            answer.await.unwrap_or(Err(WriterError::Closed))
        }
    }

    /// Closes the segment once every add made before it (the order of calls) completed:
    /// Closed in the metadata at the last entry. The close is asked for now, not when the
    /// future is first polled.
    pub fn close(&self) -> impl Future<Output = Result<(), WriterError>> + Send + 'static {
        let (reply, answer) = Reply::new();
        let pushed = self.inner.mailbox.push(Command::Close { core: self.core, reply }).is_ok();
        async move {
            if !pushed {
                return Err(WriterError::Closed);
            }
            answer.await.unwrap_or(Err(WriterError::Closed))
        }
    }
}

fn end_of(meta: &dlog_metadata::schema::SegmentMetadata) -> SegmentEnd {
    match meta.state {
        dlog_metadata::schema::SegmentState::Closed { last_entry_id, .. } => {
            SegmentEnd::Closed { last_entry: last_entry_id }
        }
        _ => SegmentEnd::Open { last_add_confirmed: None },
    }
}

async fn resolve<S: MetadataStore + 'static>(
    ops: &MetadataOps<S>,
    meta: &dlog_metadata::schema::SegmentMetadata,
) -> Result<BTreeMap<u64, Vec<BookieAddr>>, ReplicationError> {
    let mut resolved = BTreeMap::new();
    for (first, ids) in &meta.ensembles {
        resolved.insert(*first, ops.addresses(ids).await?);
    }
    Ok(resolved)
}

/// Follows an open segment's metadata for its reader until the segment closes or the watch
/// fails (then the reader goes on tailing with what it knows); the caller stops it when the
/// reader is dropped.
async fn follow<S: MetadataStore + 'static>(
    store: Arc<S>,
    ops: Arc<MetadataOps<S>>,
    inner: Arc<Inner>,
    segment: u64,
    version: dlog_metadata::Version,
    core: u64,
) {
    let segments = dlog_metadata::SegmentMetadataStore::new(store);
    let mut watch = match segments.watch(segment, dlog_metadata::Version(version.0 + 1)).await {
        Ok(watch) => watch,
        Err(error) => return tracing::warn!(segment, %error, "cannot follow the segment's metadata"),
    };
    loop {
        let event = match watch.next().await {
            Ok(event) => event,
            Err(error) => return tracing::warn!(segment, %error, "lost the segment's metadata watch"),
        };
        if event.kind != dlog_metadata::EventKind::Put {
            return;
        }
        let meta = match dlog_metadata::schema::SegmentMetadata::decode(&event.key, &event.value) {
            Ok(meta) => meta,
            Err(error) => return tracing::warn!(segment, %error, "undecodable segment metadata"),
        };
        // The addresses are looked up until they are had: skipping this event could miss the
        // close, and the reader would tail forever.
        let mut backoff = Duration::from_millis(50);
        let ensembles = loop {
            match resolve(&ops, &meta).await {
                Ok(ensembles) => break ensembles,
                Err(error) => {
                    tracing::warn!(segment, %error, "looking up the segment's bookies");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        let end = end_of(&meta);
        if inner.mailbox.push(Command::ReaderMetadata { core, ensembles, end }).is_err() {
            return;
        }
        if matches!(end, SegmentEnd::Closed { .. }) {
            return;
        }
    }
}

/// A reader of one segment, hosted on the client's I/O thread. Dropping it stops the reader.
pub struct SegmentReaderHandle {
    core: u64,
    queue: Arc<ReaderQueue>,
    inner: Arc<Inner>,
    /// The last entry reported consumed to the reader core.
    reported: Option<u64>,
    /// Dropped with the handle: ends the metadata follower.
    _stop_following: tokio::sync::oneshot::Sender<()>,
}

/// Entries taken between two reports of consumption to the reader core (its window frees
/// room then; also when the queue runs dry).
const CONSUMED_REPORT_EVERY: u64 = 16;

impl SegmentReaderHandle {
    /// The next entry (`Entry(id, payload)`, in entry order, each once), then `End` for a closed
    /// segment, or `Failed`; `None` once the client closed.
    pub async fn next(&mut self) -> Option<ReadItem> {
        let (item, drained) = std::future::poll_fn(|cx| self.queue.poll_next(cx)).await?;
        if let ReadItem::Entry(entry, _) = &item {
            let due = self.reported.is_none_or(|r| entry - r >= CONSUMED_REPORT_EVERY);
            if drained || due {
                self.reported = Some(*entry);
                let _ = self.inner.mailbox.push(Command::Consumed { core: self.core, through: *entry });
            }
        }
        Some(item)
    }
}

impl Drop for SegmentReaderHandle {
    fn drop(&mut self) {
        let _ = self.inner.mailbox.push(Command::CloseReader { core: self.core });
    }
}

/// Why reading stopped, for callers matching on `ReadItem::Failed`.
pub type ReadError = ReaderError;
