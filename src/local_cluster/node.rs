//! `Node`: one bookie of a `LocalCluster`: its engine, its server on 127.0.0.1, its
//! registration (kept in line by `Registration::run` on a task of the cluster's runtime), and
//! the read-only signal the cluster's sampler feeds.
//!
//! Owns: the order one bookie starts and stops in, and the cookie fix-up of a cluster
//! directory that moved (`adopt_moved_dirs`).
//! Does not own: the layout and the store (mod.rs), cookies and registration rules
//! (bookie/cookie_file.rs, bookie/registration.rs), serving (bookie/server.rs).
//!
//! Invariants:
//! - ND1: the engine opens only after the directory's cookie matched the stored cookie (or a new
//!   bookie's was created): a directory swapped between ids is refused before it is replayed.
//! - ND2: registered only while serving: the server starts before the registration, and the
//!   registration is removed before the drain starts.
//! - ND3: `stop` waits at most one lease ttl (deregistration), `DRAIN_TIMEOUT` (the drain)
//!   and one flush of the write cache; `Drop` drains nothing and skips the deregistration (the
//!   lease then expires, and the next start removes it anyway).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dlog_engine::{Bookie, CoreStats, DeletionHook, ShardId};
use dlog_metadata::schema::Cookie;
use dlog_metadata::{AnyStore, BookieRegistry};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{LocalClusterError, LocalClusterOptions};
use crate::bookie::cookie_file;
use crate::bookie::registration::{Registration, RegistrationConfig, RegistrationError};
use crate::bookie::run::DRAIN_TIMEOUT;
use crate::bookie::segment_owners::{MetadataOwners, PermissionGate};
use crate::bookie::{BookieServer, ServerLimits, ServerOptions};
use crate::deletion_check::MetadataDeletionCheck;

/// What the registration task hands back when it stops.
type RegistrationOutcome = (Registration<AnyStore>, Result<(), RegistrationError>);

/// The registration, owned by its `run` task until `stop`.
struct RegistrationTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<RegistrationOutcome>,
}

/// One running bookie (see the module doc).
pub(super) struct Node {
    pub(super) id: String,
    pub(super) addr: SocketAddr,
    registration: Option<RegistrationTask>,
    server: Option<BookieServer>,
    bookie: Option<Arc<Bookie>>,
    read_only: watch::Sender<bool>,
}

/// Wraps a registration error with the bookie it is about.
fn registration_error(id: &str) -> impl FnOnce(RegistrationError) -> LocalClusterError + '_ {
    move |source| LocalClusterError::Registration { bookie: id.to_string(), source }
}

/// The directories as a cookie records them (as cookie_file.rs writes them).
fn dir_names(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter().map(|d| d.to_string_lossy().into_owned()).collect()
}

/// A cluster directory that moved as a whole (renamed, copied elsewhere) keeps its bookies: when
/// the directory's own cookie file is this bookie's (same id, cluster and disk id) and only the
/// recorded paths differ, the stored cookie takes the new paths. Anything else is left to the
/// cookie check, which refuses it (a directory of another id, a wiped one).
async fn adopt_moved_dirs(
    store: &Arc<AnyStore>,
    id: &str,
    dirs: &[PathBuf],
) -> Result<(), RegistrationError> {
    let registry = BookieRegistry::new(store.clone());
    let Some((stored, version)) = registry.cookie(id).await? else { return Ok(()) };
    let configured = dir_names(dirs);
    if stored.journal_dirs == configured && stored.ledger_dirs == configured {
        return Ok(());
    }
    let Some(local) = cookie_file::read(&dirs[0])? else { return Ok(()) };
    let same_disk = local.bookie_id == stored.bookie_id
        && local.instance_id == stored.instance_id
        && local.disk_id == stored.disk_id;
    if !same_disk {
        return Ok(());
    }
    let moved = Cookie { journal_dirs: configured.clone(), ledger_dirs: configured, ..stored };
    registry.update_cookie(&moved, version).await?;
    tracing::info!(bookie = id, dir = %dirs[0].display(), "the cluster directory moved: stored cookie updated");
    Ok(())
}

/// Whether a shard, by its stats (`None`: it has stopped), takes no plain adds: read-only (disk
/// nearly full), poisoned (a journal write failed) or stopped.
fn takes_no_adds(stats: Option<&CoreStats>) -> bool {
    stats.is_none_or(|stats| stats.read_only || stats.poisoned)
}

/// Whether the bookie takes no plain adds on some shard (blocking: asks each shard).
pub(super) fn read_only(bookie: &Bookie) -> bool {
    (0..bookie.shard_count()).any(|s| takes_no_adds(bookie.stats(ShardId(s)).as_ref().ok()))
}

impl Node {
    /// Starts bookie `id` in `dir` listening on `listen`: cookies (ND1), engine, server,
    /// registration (ND2). On failure, whatever started is stopped again.
    pub(super) async fn start(
        store: &Arc<AnyStore>,
        runtime: &tokio::runtime::Handle,
        id: String,
        dir: PathBuf,
        listen: SocketAddr,
        options: &LocalClusterOptions,
    ) -> Result<Node, LocalClusterError> {
        std::fs::create_dir_all(&dir)
            .map_err(|source| LocalClusterError::Io { path: dir.clone(), source })?;
        let dirs = vec![dir.clone()];
        adopt_moved_dirs(store, &id, &dirs).await.map_err(registration_error(&id))?;
        cookie_file::check_or_create(store, &id, &dirs, &dirs).await.map_err(registration_error(&id))?;
        let mut engine = options.bookie_config(&dir);
        engine.deletion_check =
            Some(DeletionHook(Arc::new(MetadataDeletionCheck::new(store.clone(), runtime.clone()))));
        let opened = tokio::task::spawn_blocking(move || Bookie::open(engine)).await;
        let bookie = match opened {
            Ok(Ok(bookie)) => Arc::new(bookie),
            Ok(Err(source)) => return Err(LocalClusterError::Engine { bookie: id, source }),
            Err(e) => {
                let source = std::io::Error::other(e.to_string());
                return Err(LocalClusterError::Setup { what: "opening a bookie's engine", source });
            }
        };
        let mut server_options = ServerOptions::new(listen, ServerLimits::default());
        server_options.threads = Some(1);
        match options.security.load() {
            Ok(security) => {
                server_options.tls = security.tls;
                server_options.auth = security.auth;
                server_options.permissions = security.permissions.map(|permissions| {
                    let owners = MetadataOwners::new(store.clone(), runtime.clone());
                    Arc::new(PermissionGate::new(permissions, Arc::new(owners)))
                });
            }
            Err(e) => {
                close(None, bookie).await;
                return Err(LocalClusterError::InvalidOptions(format!("bookie security: {e}")));
            }
        }
        let server = match BookieServer::start(bookie.clone(), server_options) {
            Ok(server) => server,
            Err(source) => {
                close(None, bookie).await;
                return Err(LocalClusterError::Server { bookie: id, source });
            }
        };
        let addr = server.local_addr();
        let config = RegistrationConfig {
            shards: options.shards_per_bookie,
            lease_ttl: options.lease_ttl,
            ..RegistrationConfig::new(id.clone(), addr.to_string(), dirs.clone(), dirs)
        };
        let (read_only, read_only_rx) = watch::channel(false);
        let registration = match Registration::start(store.clone(), config).await {
            Ok(registration) => registration,
            Err(e) => {
                close(Some(server), bookie).await;
                return Err(registration_error(&id)(e));
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let mut registration = registration;
            let outcome = registration
                .run(read_only_rx, async move {
                    let _ = stopped.await;
                })
                .await;
            (registration, outcome)
        });
        tracing::info!(bookie = %id, %addr, "bookie serving");
        Ok(Node {
            id,
            addr,
            registration: Some(RegistrationTask { stop, task }),
            server: Some(server),
            bookie: Some(bookie),
            read_only,
        })
    }

    /// What the cluster's sampler needs: a handle that does not keep the engine open, and the
    /// sender of the read-only signal.
    pub(super) fn sampled(&self) -> Option<(std::sync::Weak<Bookie>, watch::Sender<bool>)> {
        self.bookie.as_ref().map(|bookie| (Arc::downgrade(bookie), self.read_only.clone()))
    }

    /// Deregisters (ND2), drains the server (up to `DRAIN_TIMEOUT`), flushes and closes the engine.
    pub(super) async fn stop(mut self) {
        if let Some(RegistrationTask { stop, task }) = self.registration.take() {
            let _ = stop.send(());
            match task.await {
                Ok((registration, outcome)) => {
                    if let Err(e) = outcome {
                        tracing::warn!(bookie = %self.id, error = %e, "registration had stopped");
                    }
                    // Bounded by one lease ttl (`deregister`); a failure leaves it to the lease.
                    if let Err(e) = registration.deregister().await {
                        tracing::warn!(bookie = %self.id, error = %e, "deregistration failed");
                    }
                }
                Err(e) => tracing::error!(bookie = %self.id, error = %e, "registration task failed"),
            }
        }
        if let Some(bookie) = self.bookie.take() {
            close(self.server.take(), bookie).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // ND3: no deregistration here (it needs the runtime); the rest stops in place.
        if let Some(RegistrationTask { task, .. }) = self.registration.take() {
            task.abort();
        }
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::ZERO);
        }
        if let Some(bookie) = self.bookie.take() {
            match Arc::try_unwrap(bookie) {
                Ok(bookie) => bookie.close(),
                Err(_) => {
                    tracing::warn!(bookie = %self.id, "engine still referenced; it closes when dropped")
                }
            }
        }
    }
}

/// Drains `server` (if any), then flushes the engine's write cache to its entry logs (so the
/// next start replays little) and closes it, off the runtime's threads.
async fn close(server: Option<BookieServer>, bookie: Arc<Bookie>) {
    let closing = tokio::task::spawn_blocking(move || {
        if let Some(server) = server {
            server.shutdown(DRAIN_TIMEOUT);
        }
        match Arc::try_unwrap(bookie) {
            Ok(bookie) => {
                if let Err(e) = bookie.flush() {
                    tracing::warn!(error = %e, "flush at shutdown failed; the journal keeps the entries");
                }
                bookie.close();
            }
            Err(_) => tracing::warn!("engine still referenced at shutdown; it closes when dropped"),
        }
    });
    if closing.await.is_err() {
        tracing::error!("closing a bookie panicked");
    }
}

/// The directory of bookie `index` under the cluster directory `dir`.
pub(super) fn bookie_dir(dir: &Path, index: usize) -> PathBuf {
    dir.join(super::BOOKIES_DIR).join(bookie_id(index))
}

/// The id of bookie `index`.
pub(super) fn bookie_id(index: usize) -> String {
    format!("bookie-{index}")
}
