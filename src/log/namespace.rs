//! `Namespace`: the entry point of the log API. Opened from a URI, it names a metadata store
//! and a namespace in it, and gives the logs there: create, list, delete, describe, open a
//! writer or a reader, truncate.
//!
//! URIs (an optional `namespace=NAME` parameter picks the namespace, `default` otherwise; it is
//! created with its first log, so opening a namespace writes nothing; the URI's other
//! parameters are the metadata store's, e.g. an `etcds://` URI's files and user):
//! - `local:///path`: everything in this process: the embedded metadata store and bookies
//!   under `path` (`LocalCluster`, 3 bookies), for one machine. One process at a time.
//! - `dlog://host:port`: a cluster whose metadata a `dlog local` serves (the CLI's default).
//! - `etcd://host:port[,...]/scope`, `etcds://...`: a cluster on etcd (built with the `etcd`
//!   feature; docs/metadata.md gives the parameters), e.g.
//!   `etcds://10.0.0.1:2379/prod?ca=ca.pem&user=app&password_file=pw&namespace=orders`.
//!
//! Invariants:
//! - NS1: a log is deleted only after its segments: each is removed from the log's list and
//!   its metadata in one transaction that queues its data for deletion on its bookies
//!   (truncation.rs), so nothing is left behind if the deletion stops halfway.

use std::path::PathBuf;
use std::sync::Arc;

use dlog_metadata::metadata_uri::redacted;
use dlog_metadata::schema::{LogMetadata, LogSegment};
use dlog_metadata::{
    AnyStore, LeaseKeeper, LogMetadataStore, MetaError, MetadataStore, SegmentMetadataStore,
};
use dlog_replication::client::{ReplicationClient, ReplicationConfig};

use super::dlsn::Dlsn;
use super::error::LogError;
use super::log_segments::LogSegments;
use super::reader::{LogReader, ReaderConfig, StartPosition};
use super::truncation;
use super::writer::{LogWriter, WriterConfig};
use crate::local_cluster::{LocalCluster, LocalClusterOptions};

/// The namespace a URI without `?namespace=` opens.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How a namespace's writers, readers and replication client work.
#[derive(Clone, Debug, Default)]
pub struct NamespaceConfig {
    /// Writers' settings (`open_writer`).
    pub writer: WriterConfig,
    /// Readers' settings (`open_reader`).
    pub reader: ReaderConfig,
    /// The replication client's settings.
    pub replication: ReplicationConfig,
    /// The cluster a `local://` URI starts in this process.
    pub local: LocalClusterOptions,
}

/// A log's metadata and segments, as `Namespace::log_info` reads them.
#[derive(Clone, Debug)]
pub struct LogInfo {
    /// The log's metadata (writer epoch, next segment, next transaction id, truncation point).
    pub meta: LogMetadata,
    /// Its segments in order.
    pub segments: Vec<LogSegment>,
}

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) store: Arc<AnyStore>,
    pub(crate) logs: LogMetadataStore<AnyStore>,
    pub(crate) segments: SegmentMetadataStore<AnyStore>,
    pub(crate) client: ReplicationClient<AnyStore>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) config: NamespaceConfig,
    /// The cluster of a `local://` namespace, stopped with the last clone.
    cluster: tokio::sync::Mutex<Option<LocalCluster>>,
}

/// A namespace of logs (see the module doc). Clones share the connection to the cluster.
#[derive(Clone)]
pub struct Namespace {
    inner: Arc<Inner>,
}

/// Splits a namespace URI into the metadata store's URI and the namespace it names, if any:
/// `namespace=NAME` is one parameter of the query, wherever it stands, given at most once; the
/// other parameters are the store's (`etcds://h:1/s?ca=F&namespace=ns` opens
/// `etcds://h:1/s?ca=F`) and are left in their order. Only etcd URIs have parameters of their
/// own; an empty parameter (`?&`, a trailing `&`) is refused. Errors show the URI with any
/// password hidden.
pub fn split_namespace(uri: &str) -> Result<(String, Option<String>), LogError> {
    let Some((base, query)) = uri.split_once('?') else { return Ok((uri.to_owned(), None)) };
    let bad = |why: &str| LogError::Invalid(format!("URI {:?}: {why}", redacted(uri)));
    let mut namespace = None;
    let mut rest = Vec::new();
    for parameter in query.split('&') {
        match parameter.strip_prefix("namespace=") {
            _ if parameter.is_empty() => return Err(bad("an empty parameter (`?&` or a trailing `&`)")),
            Some(_) if namespace.is_some() => return Err(bad("`namespace=` is given twice")),
            Some(name) => namespace = Some(name.to_owned()),
            None => rest.push(parameter),
        }
    }
    if rest.is_empty() {
        return Ok((base.to_owned(), namespace));
    }
    if !(base.starts_with("etcd://") || base.starts_with("etcds://")) {
        return Err(bad("only etcd:// and etcds:// URIs take parameters besides `namespace=`"));
    }
    Ok((format!("{base}?{}", rest.join("&")), namespace))
}

impl Namespace {
    /// Opens the namespace `uri` names with the default settings. Must run on a tokio runtime
    /// (multi-threaded), which the namespace's background work then uses.
    pub async fn open(uri: &str) -> Result<Namespace, LogError> {
        Namespace::open_with(uri, NamespaceConfig::default()).await
    }

    /// Opens the namespace `uri` names with `config`.
    pub async fn open_with(uri: &str, config: NamespaceConfig) -> Result<Namespace, LogError> {
        let (base, name) = split_namespace(uri)?;
        let name = name.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        dlog_metadata::schema::check_name("namespace", &name)?;
        let base = base.as_str();
        let (store, cluster) = match base.strip_prefix("local://") {
            Some(path) if !path.is_empty() => {
                let cluster = LocalCluster::start(&PathBuf::from(path), config.local.clone())
                    .await
                    .map_err(|e| LogError::Invalid(format!("local cluster at {path}: {e}")))?;
                (cluster.store(), Some(cluster))
            }
            _ => (Arc::new(AnyStore::open(base).await?), None),
        };
        let runtime = tokio::runtime::Handle::current();
        let client = ReplicationClient::new(store.clone(), runtime.clone(), config.replication.clone())?;
        let logs = LogMetadataStore::new(store.clone());
        let inner = Inner {
            name,
            segments: SegmentMetadataStore::new(store.clone()),
            store,
            logs,
            client,
            runtime,
            config,
            cluster: tokio::sync::Mutex::new(cluster),
        };
        Ok(Namespace { inner: Arc::new(inner) })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The metadata store underneath.
    pub fn store(&self) -> &Arc<AnyStore> {
        &self.inner.store
    }

    /// The replication client the namespace's writers and readers use.
    pub fn replication(&self) -> &ReplicationClient<AnyStore> {
        &self.inner.client
    }

    fn full(&self, log: &str) -> String {
        format!("{}/{log}", self.inner.name)
    }

    /// Creates log `log` (and the namespace, with its first log); `LogExists` if it exists.
    pub async fn create_log(&self, log: &str) -> Result<(), LogError> {
        let namespace_key = dlog_metadata::schema::namespace_key(&self.inner.name);
        for _ in 0..2 {
            match self.inner.logs.create_log(&self.inner.name, log).await {
                Ok(_) => return Ok(()),
                Err(MetaError::AlreadyExists(_)) => return Err(LogError::LogExists(self.full(log))),
                Err(MetaError::NotFound(key)) if key == namespace_key => {
                    match self.inner.logs.create_namespace(&self.inner.name).await {
                        Ok(_) | Err(MetaError::AlreadyExists(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogError::Metadata(MetaError::Unavailable(format!(
            "namespace {} keeps vanishing",
            self.inner.name
        ))))
    }

    /// The namespace's logs, in name order.
    pub async fn logs(&self) -> Result<Vec<String>, LogError> {
        Ok(self.inner.logs.logs(&self.inner.name).await?.into_iter().map(|(name, _, _)| name).collect())
    }

    /// True when log `log` exists.
    pub async fn log_exists(&self, log: &str) -> Result<bool, LogError> {
        Ok(self.inner.logs.log(&self.inner.name, log).await?.is_some())
    }

    /// A log's metadata and segments.
    pub async fn log_info(&self, log: &str) -> Result<LogInfo, LogError> {
        let (meta, _) = self
            .inner
            .logs
            .log(&self.inner.name, log)
            .await?
            .ok_or_else(|| LogError::NoSuchLog(self.full(log)))?;
        let segments = self.inner.logs.segments(&self.inner.name, log).await?;
        Ok(LogInfo { meta, segments: segments.into_iter().map(|(s, _)| s).collect() })
    }

    /// Deletes log `log` with its records (NS1). Fails with `LockHeld` while a writer holds it.
    pub async fn delete_log(&self, log: &str) -> Result<(), LogError> {
        // The log's lock is held (never taken over) for the whole deletion, so no writer adds
        // a segment meanwhile; taking it recovers a segment a dead writer left in progress.
        let config = WriterConfig { take_over: false, ..self.inner.config.writer.clone() };
        let writer = self.open_writer_with(log, config).await?;
        let removed = async {
            // Truncated to the tail first: a reader still reading gets `Truncated`, never a
            // silent jump over the segments removed under it.
            let tail = self.tail_position(log).await?;
            truncation::truncate(&self.inner, log, tail).await
        }
        .await;
        let closed = writer.close().await;
        removed?;
        closed?;
        let (_, version) = self
            .inner
            .logs
            .log(&self.inner.name, log)
            .await?
            .ok_or_else(|| LogError::NoSuchLog(self.full(log)))?;
        self.inner.logs.delete_log(&self.inner.name, log, version).await?;
        Ok(())
    }

    /// Opens the single writer of `log` with the namespace's writer settings.
    pub async fn open_writer(&self, log: &str) -> Result<LogWriter, LogError> {
        self.open_writer_with(log, self.inner.config.writer.clone()).await
    }

    /// Opens the single writer of `log`: takes its lock (taking it over from a live writer
    /// when `config.take_over`), recovers and completes any segment a previous writer left in
    /// progress, so that writer can add nothing more; then records go to new segments.
    pub async fn open_writer_with(&self, log: &str, config: WriterConfig) -> Result<LogWriter, LogError> {
        let inner = &self.inner;
        // Checked before the lock is taken: a bad setting must not fence the current writer.
        let entry_bytes_max =
            usize::try_from(inner.config.replication.writer.entry_bytes_max).unwrap_or(usize::MAX);
        let checked = config.check(entry_bytes_max)?;
        if inner.logs.log(&inner.name, log).await?.is_none() {
            return Err(LogError::NoSuchLog(self.full(log)));
        }
        let lease = LeaseKeeper::grant(inner.store.clone(), config.lock_ttl).await?;
        let segments = async {
            let lock = self.acquire(log, &config, &lease).await?;
            let (meta, version) =
                inner.logs.log(&inner.name, log).await?.ok_or_else(|| LogError::NoSuchLog(self.full(log)))?;
            // Another writer took the log since the lock was taken: do not recover (fence) its
            // segments.
            if meta.writer_epoch != lock.epoch {
                return Err(LogError::Fenced { log: self.full(log) });
            }
            let mut segments = LogSegments::new(inner.logs.clone(), lock, meta, version);
            segments.recover_in_progress(&inner.client).await?;
            Ok(segments)
        }
        .await;
        match segments {
            Ok(segments) => LogWriter::start(inner, segments, lease, checked, &config),
            Err(e) => {
                // The lock goes with the lease now, not after its ttl.
                let _ = lease.revoke(&*inner.store).await;
                Err(e)
            }
        }
    }

    async fn acquire(
        &self,
        log: &str,
        config: &WriterConfig,
        lease: &LeaseKeeper,
    ) -> Result<dlog_metadata::WriterLock, LogError> {
        let inner = &self.inner;
        for _ in 0..8 {
            match inner.logs.acquire_writer_lock(&inner.name, log, &config.owner, lease.id()).await {
                Ok(lock) => return Ok(lock),
                Err(MetaError::AlreadyExists(key)) => {
                    let Some(holder) = inner.logs.writer_lock(&inner.name, log).await? else { continue };
                    if !config.take_over {
                        return Err(LogError::LockHeld { log: self.full(log), owner: holder.lock.owner });
                    }
                    tracing::info!(log = %self.full(log), previous = %holder.lock.owner, "taking the log over");
                    // Removing the holder's lock fences its metadata updates (LM5); recovery
                    // then fences its segment.
                    match inner.store.delete_if(&key, holder.version).await {
                        Ok(_) | Err(MetaError::VersionConflict { .. }) | Err(MetaError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(MetaError::NotFound(_)) => return Err(LogError::NoSuchLog(self.full(log))),
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogError::Metadata(MetaError::Unavailable(format!(
            "log {}: the lock kept changing hands",
            self.full(log)
        ))))
    }

    /// Opens a reader of `log` from `from` with the namespace's reader settings.
    pub async fn open_reader(&self, log: &str, from: StartPosition) -> Result<LogReader, LogError> {
        self.open_reader_with(log, from, self.inner.config.reader.clone()).await
    }

    /// Opens a reader of `log` from `from`.
    pub async fn open_reader_with(
        &self,
        log: &str,
        from: StartPosition,
        config: ReaderConfig,
    ) -> Result<LogReader, LogError> {
        LogReader::open(self.inner.clone(), log, from, config).await
    }

    /// Truncates `log` before `before`: records before it are no longer read, and the
    /// segments wholly before it are deleted with their data on the bookies.
    pub async fn truncate(&self, log: &str, before: Dlsn) -> Result<(), LogError> {
        truncation::truncate(&self.inner, log, before).await
    }

    /// The position after the last durable record of `log` (what a reader from the tail starts
    /// at).
    pub async fn tail_position(&self, log: &str) -> Result<Dlsn, LogError> {
        super::reader::tail_position(&self.inner, log).await
    }

    /// Stops the namespace's connections, and a `local://` namespace's cluster, cleanly (clones
    /// still in use lose both; writers should be closed first).
    pub async fn shutdown(self) {
        let cluster = self.inner.cluster.lock().await.take();
        self.inner.client.shutdown();
        // The cluster waits for the store's other handles: ours go first.
        drop(self);
        if let Some(cluster) = cluster {
            cluster.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(uri: &str) -> Result<(String, Option<String>), String> {
        split_namespace(uri).map_err(|e| e.to_string())
    }

    #[test]
    fn the_namespace_is_one_parameter_among_the_stores() {
        let none = |s: &str| Ok((s.to_owned(), None));
        let named = |s: &str| Ok((s.to_owned(), Some("ns".to_owned())));
        assert_eq!(split("dlog://h:1"), none("dlog://h:1"));
        assert_eq!(split("dlog://h:1?namespace=ns"), named("dlog://h:1"));
        assert_eq!(split("local:///d?namespace=ns"), named("local:///d"));
        assert_eq!(
            split("etcd://h:1/s?user=u&password_file=/p"),
            none("etcd://h:1/s?user=u&password_file=/p")
        );
        // Wherever it stands, the store's parameters keep their order.
        for uri in ["etcds://h:1/s?namespace=ns&ca=/c&user=u", "etcds://h:1/s?ca=/c&namespace=ns&user=u"] {
            assert_eq!(split(uri), named("etcds://h:1/s?ca=/c&user=u"), "{uri}");
        }
        // An empty name is left to the name check (it is refused there).
        assert_eq!(split("dlog://h:1?namespace="), Ok(("dlog://h:1".to_owned(), Some(String::new()))));
    }

    #[test]
    fn bad_parameters_are_refused_saying_why_without_the_password() {
        let refused = |uri: &str, why: &str| {
            let e = split(uri).expect_err(uri);
            assert!(e.contains(why), "{uri}: {e}");
            assert!(!e.contains("s3cret"), "{uri}: {e}");
        };
        refused("etcd://h:1/s?namespace=a&password=s3cret&namespace=b", "given twice");
        refused("etcd://h:1/s?user=u&&namespace=a", "empty parameter");
        refused("etcd://h:1/s?namespace=a&", "empty parameter");
        refused("dlog://h:1?", "empty parameter");
        refused("dlog://h:1?password=s3cret", "only etcd:// and etcds://");
        refused("local:///d?namespace=a&x=1", "only etcd:// and etcds://");
        refused("memory://?x=1", "only etcd:// and etcds://");
    }
}
