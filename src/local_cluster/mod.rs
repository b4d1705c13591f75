//! `LocalCluster`: a whole dlog cluster in one process, on one directory, for development and
//! demos (`dlog local`): the embedded metadata store, optionally served to other processes
//! over TCP, and `bookies` bookie servers on 127.0.0.1, each registered in the store.
//!
//! Layout of the directory (the same on every start, so a restart keeps the data):
//! - `local.lock`: flocked while a cluster runs here (a second one is refused: `InUse`);
//! - `metadata/`: the embedded store (`local://<dir>/metadata`, dlog-metadata's `LocalStore`);
//! - `bookies/bookie-<i>/`: bookie `bookie-<i>`'s journal, entry logs and cookie file.
//!
//! Owns: the layout, the order the parts start and stop in, removing this cluster's stale
//! registrations, and the read-only sampling of its bookies. `node.rs` is one bookie; `cli.rs`
//! is the `dlog local` command.
//! Does not own: the engine, serving, cookies and registration (bookie/), the store.
//!
//! Invariants:
//! - LC1: one cluster per directory at a time: `local.lock` is taken before anything is read
//!   and held until everything stopped.
//! - LC2: a restart after a crash (SIGKILL) is not held up by the crashed run's registrations.
//!   Those are bound to leases the store keeps across a restart (they expire a lease ttl after
//!   it opens), and `Registration::start` waits such a registration out (registration.rs RG3),
//!   since elsewhere it may belong to a live process. Here it cannot: with LC1 no other process
//!   holds this store, so any registration of this cluster's bookie ids is stale; start revokes
//!   its lease (or deletes it) before the metadata is served or any bookie registers.
//! - LC3: every bookie's cookie is checked before its engine opens (node.rs ND1): a bookie
//!   directory swapped between ids, or wiped, is refused as `dlog bookie` refuses it. The
//!   directory is made absolute first (the cookies record paths); a cluster directory moved as a
//!   whole keeps its bookies (node.rs `adopt_moved_dirs`).
//! - LC4: directories of bookies past `bookies` are refused rather than left out: their replicas
//!   would be unreachable.
//!
//! Not here: autorecovery. Every bookie shares the process's fate, so a bookie is never lost
//! while the others run to re-replicate it; the bookies run without it.
//!
//! Stopping: `shutdown` deregisters every bookie, drains the servers, flushes and closes the
//! engines, stops the metadata server and closes the store. `Drop` stops the same parts in place
//! without the drain, the flush and the deregistration (it needs the runtime); the leases then
//! expire, and the next start removes the registrations anyway (LC2).

mod cli;
mod node;

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dlog_engine::{BookieConfig, OpenError};
use dlog_metadata::{AnyStore, BookieRegistry, LocalStore, MetaError, MetadataServer, MetadataStore};
use tokio::task::JoinHandle;

pub use cli::{LocalArgs, run};

use crate::bookie::ServerError;
use crate::bookie::registration::{LEASE_TTL_DEFAULT, LEASE_TTL_MIN, RegistrationError};
use node::Node;

/// Where `dlog local` serves the metadata by default: a well-known port, so other commands'
/// default `--metadata` (`DEFAULT_METADATA_URI`) finds it.
pub const DEFAULT_METADATA_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7480));
/// The URI other processes reach a default `dlog local` with.
pub const DEFAULT_METADATA_URI: &str = "dlog://127.0.0.1:7480";
/// Bookies by default: enough for an ensemble of 3.
pub const BOOKIES_DEFAULT: usize = 3;
/// Most bookies one local cluster runs.
pub const BOOKIES_MAX: usize = 64;
/// The lock file (LC1).
pub const LOCK_FILE: &str = "local.lock";
/// The metadata store's directory.
pub const METADATA_DIR: &str = "metadata";
/// The directory of the bookies' directories.
pub const BOOKIES_DIR: &str = "bookies";
/// How often the bookies are sampled for the read-only signal.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long start waits for the store's own lock when it got `local.lock`: a cluster of this
/// process that was dropped (not shut down) may still be closing the store on its runtime.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last other handles of the store to go (see there).
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How a local cluster runs. Engine sizes are small enough for a laptop running several bookies.
#[derive(Clone, Debug)]
pub struct LocalClusterOptions {
    /// Bookies, `bookie-0` to `bookie-<n-1>`. Default 3; 1 to `BOOKIES_MAX`. A restart may add
    /// bookies, not drop any (LC4).
    pub bookies: usize,
    /// Serve the metadata store to other processes here (`metadata_uri` is then
    /// `dlog://<addr>`; port 0 picks one). Default `None`: the store is this process's only.
    pub metadata_listen: Option<SocketAddr>,
    /// Bookie `i` listens on `127.0.0.1:<bookie_ports[i]>` (one port per bookie; 0 picks one).
    /// Default `None`: every port picked by the system, a new one at each start (clients find
    /// bookies by id in the registry).
    pub bookie_ports: Option<Vec<u16>>,
    /// Ttl of the bookies' registration leases. Default `LEASE_TTL_DEFAULT` (10 s); at least
    /// `LEASE_TTL_MIN`.
    pub lease_ttl: Duration,
    /// Storage shards per bookie (threads, unpinned: the bookies share the machine). Default 1.
    /// Fixed for the life of the directory (the engine refuses another count).
    pub shards_per_bookie: u32,
    /// Journal file size (zero-filled before use). Default 32 MiB (the engine's: 256 MiB).
    pub journal_file_bytes: u64,
    /// Write cache per shard. Default 16 MiB (the engine's: 256 MiB).
    pub write_cache_bytes_max: usize,
    /// Read cache per shard. Default 8 MiB (the engine's: 64 MiB).
    pub read_cache_bytes_max: usize,
    /// Entry log size. Default 256 MiB (the engine's: 1 GiB).
    pub entry_log_bytes: u64,
    /// A bookie turns read-only under this many free bytes on its disk. Default 256 MiB (the
    /// engine's: 1 GiB).
    pub disk_free_bytes_min: u64,
    /// And writable again at this many. Default 512 MiB (the engine's: 2 GiB).
    pub disk_free_bytes_resume: u64,
    /// The bookies' TLS, authentication and permissions, as `dlog bookie` takes them. Default:
    /// plaintext, nobody authenticates, everything allowed. Clients of the cluster then need
    /// the matching `ClientSecurity`.
    pub security: crate::bookie::SecuritySettings,
}

impl Default for LocalClusterOptions {
    fn default() -> LocalClusterOptions {
        LocalClusterOptions {
            bookies: BOOKIES_DEFAULT,
            metadata_listen: None,
            bookie_ports: None,
            lease_ttl: LEASE_TTL_DEFAULT,
            shards_per_bookie: 1,
            journal_file_bytes: 32 << 20,
            write_cache_bytes_max: 16 << 20,
            read_cache_bytes_max: 8 << 20,
            entry_log_bytes: 256 << 20,
            disk_free_bytes_min: 256 << 20,
            disk_free_bytes_resume: 512 << 20,
            security: crate::bookie::SecuritySettings::default(),
        }
    }
}

impl LocalClusterOptions {
    /// Checks the options the engine does not check itself.
    fn validate(&self) -> Result<(), LocalClusterError> {
        let bad = |why: String| Err(LocalClusterError::InvalidOptions(why));
        if self.bookies == 0 || self.bookies > BOOKIES_MAX {
            return bad(format!("bookies {} is not in 1..={BOOKIES_MAX}", self.bookies));
        }
        if let Some(ports) = &self.bookie_ports
            && ports.len() != self.bookies
        {
            return bad(format!("{} bookie ports for {} bookies", ports.len(), self.bookies));
        }
        if self.lease_ttl < LEASE_TTL_MIN {
            return bad(format!("lease ttl {:?} is below {LEASE_TTL_MIN:?}", self.lease_ttl));
        }
        self.bookie_config(Path::new("/"))
            .validate()
            .map_err(|e| LocalClusterError::InvalidOptions(e.to_string()))
    }

    /// The engine configuration of a bookie whose directory is `dir` (journal, entry logs and
    /// cookie all there), without its deletion check.
    pub fn bookie_config(&self, dir: &Path) -> BookieConfig {
        let mut config = BookieConfig::new(dir);
        config.shard_count = self.shards_per_bookie;
        config.pin_shards = false;
        config.entry_bytes_max = crate::bookie::ServerLimits::default().entry_bytes_max as usize;
        config.journal_file_bytes = self.journal_file_bytes;
        config.journal_files_recycled_max = 2;
        config.write_cache_bytes_max = self.write_cache_bytes_max;
        config.read_cache_bytes_max = self.read_cache_bytes_max;
        config.entry_log_bytes = self.entry_log_bytes;
        config.disk_free_bytes_min = self.disk_free_bytes_min;
        config.disk_free_bytes_resume = self.disk_free_bytes_resume;
        config
    }
}

/// Why a local cluster did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalClusterError {
    /// The options were refused.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Another local cluster runs on the directory (LC1).
    #[error("{}: in use by another dlog local cluster (its {LOCK_FILE} is locked)", dir.display())]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory holds more bookies than asked for (LC4).
    #[error(
        "{} holds {found} bookies but {asked} were asked for: the replicas of the others would be \
         unreachable; start with at least {found} bookies, or use another directory",
        dir.display()
    )]
    BookiesMissing {
        /// The directory.
        dir: PathBuf,
        /// Bookies found (one past the highest index).
        found: usize,
        /// Bookies asked for.
        asked: usize,
    },
    /// A file or directory of the layout could not be made or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The metadata store could not be opened or cleaned up.
    #[error("metadata store {uri}: {source}")]
    Metadata {
        /// Its URI.
        uri: String,
        /// Why.
        source: MetaError,
    },
    /// The metadata store could not be served over TCP (its port taken, say).
    #[error("serving the metadata on {addr}: {source}")]
    MetadataServer {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A bookie's engine did not open.
    #[error("bookie {bookie}: storage engine: {source}")]
    Engine {
        /// The bookie.
        bookie: String,
        /// Why.
        source: OpenError,
    },
    /// A bookie's server did not start (its port taken, say).
    #[error("bookie {bookie}: {source}")]
    Server {
        /// The bookie.
        bookie: String,
        /// Why.
        source: ServerError,
    },
    /// A bookie's cookies were refused, or it could not register.
    #[error("bookie {bookie}: {source}")]
    Registration {
        /// The bookie.
        bookie: String,
        /// Why.
        source: RegistrationError,
    },
    /// The process could not set itself up (the runtime, a task, signal handlers).
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A running local cluster (see the module doc).
///
/// Fields drop in the order they stop in: the sampler, the bookies, the metadata server, the
/// store, then the lock (LC1).
pub struct LocalCluster {
    sampler: Option<Sampler>,
    nodes: Vec<Node>,
    metadata_server: Option<MetadataServer>,
    store: Arc<AnyStore>,
    lock: File,
    dir: PathBuf,
    metadata_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.dir)
            .field("bookies", &self.bookies())
            .field("metadata_addr", &self.metadata_addr)
            .finish()
    }
}

/// Takes `dir/local.lock` (LC1).
fn lock(dir: &Path) -> Result<File, LocalClusterError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LocalClusterError::Io { path, source })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(_) => Err(LocalClusterError::InUse { dir: dir.to_path_buf() }),
    }
}

/// One past the highest bookie index with a directory under `dir/bookies` (0: none).
fn bookies_found(dir: &Path) -> Result<usize, LocalClusterError> {
    let path = dir.join(BOOKIES_DIR);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(LocalClusterError::Io { path, source }),
    };
    let mut found = 0;
    for entry in entries {
        let entry = entry.map_err(|source| LocalClusterError::Io { path: path.clone(), source })?;
        let name = entry.file_name();
        let index =
            name.to_str().and_then(|n| n.strip_prefix("bookie-")).and_then(|i| i.parse::<usize>().ok());
        if let Some(index) = index
            && node::bookie_id(index) == name.to_string_lossy()
        {
            found = found.max(index.saturating_add(1));
        }
    }
    Ok(found)
}

/// Opens the store in `dir`; waits up to `STORE_LOCK_WAIT` while its lock is held (see there).
async fn open_store(dir: &Path, uri: &str) -> Result<AnyStore, LocalClusterError> {
    let waited_from = tokio::time::Instant::now();
    loop {
        let owned = dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || LocalStore::open(&owned)).await.map_err(|e| {
            LocalClusterError::Setup { what: "opening the store", source: std::io::Error::other(e) }
        })?;
        match opened {
            Ok(store) => return Ok(AnyStore::Local(store)),
            Err(MetaError::Unavailable(why))
                if why.contains("in use") && waited_from.elapsed() < STORE_LOCK_WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => return Err(LocalClusterError::Metadata { uri: uri.to_string(), source }),
        }
    }
}

/// Removes every registration of bookies `bookie-0..bookies` (LC2): revokes the lease it is
/// bound to (which removes the registration with it), else deletes it.
async fn remove_stale_registrations(store: &Arc<AnyStore>, bookies: usize) -> Result<(), MetaError> {
    let registry = BookieRegistry::new(store.clone());
    for index in 0..bookies {
        let id = node::bookie_id(index);
        // A registration that does not decode is deleted as well.
        let lease = match registry.bookie(&id).await {
            Ok(None) => continue,
            Ok(Some(held)) => held.lease,
            Err(MetaError::Corrupt(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(lease) = lease {
            match store.revoke(lease).await {
                Ok(_) | Err(MetaError::LeaseExpired(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match registry.deregister(&id).await {
            Ok(_) | Err(MetaError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(bookie = %id, lease = ?lease.map(|l| l.0), "removed a registration left by a previous run");
    }
    Ok(())
}

impl LocalCluster {
    /// Starts a cluster on `dir` (created if missing; see the module doc for the layout), on the
    /// current tokio runtime, which must be a multi-thread one (the engines' deletion checks
    /// block on it from their own threads). Returns once every bookie is registered and the
    /// metadata is served (if asked). On failure, whatever started is stopped again.
    pub async fn start(dir: &Path, options: LocalClusterOptions) -> Result<LocalCluster, LocalClusterError> {
        options.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .ok_or_else(|| {
                LocalClusterError::InvalidOptions(
                    "LocalCluster::start needs a multi-thread tokio runtime".into(),
                )
            })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalClusterError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // Absolute, so the cookies name the same directories whatever the working directory.
        let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
        let lock = lock(&dir)?;
        let found = bookies_found(&dir)?;
        if found > options.bookies {
            return Err(LocalClusterError::BookiesMissing { dir, found, asked: options.bookies });
        }
        let metadata_dir = dir.join(METADATA_DIR);
        let uri = format!("local://{}", metadata_dir.display());
        let store = Arc::new(open_store(&metadata_dir, &uri).await?);
        let mut cluster = LocalCluster {
            sampler: None,
            nodes: Vec::new(),
            metadata_server: None,
            store,
            lock,
            dir,
            metadata_addr: None,
        };
        match cluster.start_parts(&runtime, &options, &uri).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.shutdown().await;
                Err(e)
            }
        }
    }

    async fn start_parts(
        &mut self,
        runtime: &tokio::runtime::Handle,
        options: &LocalClusterOptions,
        uri: &str,
    ) -> Result<(), LocalClusterError> {
        remove_stale_registrations(&self.store, options.bookies)
            .await
            .map_err(|source| LocalClusterError::Metadata { uri: uri.to_string(), source })?;
        if let Some(listen) = options.metadata_listen {
            let server = MetadataServer::start(self.store.clone(), listen)
                .await
                .map_err(|source| LocalClusterError::MetadataServer { addr: listen, source })?;
            self.metadata_addr = Some(server.local_addr());
            self.metadata_server = Some(server);
        }
        for index in 0..options.bookies {
            let port = options.bookie_ports.as_ref().map_or(0, |ports| ports[index]);
            let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let (id, dir) = (node::bookie_id(index), node::bookie_dir(&self.dir, index));
            let node = Node::start(&self.store, runtime, id, dir, listen, options).await?;
            self.nodes.push(node);
        }
        let sampled: Vec<_> = self.nodes.iter().filter_map(Node::sampled).collect();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        self.sampler = Some(Sampler { stop, task: runtime.spawn(sample(sampled, stopped)) });
        Ok(())
    }

    /// The cluster's directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata store (this process's handle; other processes use `metadata_uri`).
    pub fn store(&self) -> Arc<AnyStore> {
        self.store.clone()
    }

    /// Each bookie's id and address, in index order.
    pub fn bookies(&self) -> Vec<(String, SocketAddr)> {
        self.nodes.iter().map(|n| (n.id.clone(), n.addr)).collect()
    }

    /// Where the metadata is served, if it is.
    pub fn metadata_addr(&self) -> Option<SocketAddr> {
        self.metadata_addr
    }

    /// The URI of the cluster's metadata: `dlog://<addr>` when it is served, else the store's
    /// own `local://<dir>/metadata` (which only this process can open while it runs).
    pub fn metadata_uri(&self) -> String {
        match self.metadata_addr {
            Some(addr) => format!("dlog://{addr}"),
            None => format!("local://{}", self.dir.join(METADATA_DIR).display()),
        }
    }

    /// Stops cleanly (see the module doc). The store closes here unless a handle from `store`
    /// is still held; the directory is free for the next start once this returns.
    pub async fn shutdown(self) {
        let LocalCluster { sampler, nodes, metadata_server, store, lock, dir: _, metadata_addr: _ } = self;
        if let Some(sampler) = sampler {
            sampler.stop().await;
        }
        futures_util::future::join_all(nodes.into_iter().map(Node::stop)).await;
        if let Some(server) = metadata_server {
            server.shutdown().await;
        }
        // Tasks that were aborted (lease keepers) let go of their handles when the runtime
        // drops them, a moment later.
        let waited_from = tokio::time::Instant::now();
        while Arc::strong_count(&store) > 1 && waited_from.elapsed() < STORE_RELEASE_WAIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match Arc::try_unwrap(store) {
            // Dropping the store stops its thread (a join: off the runtime's threads).
            Ok(store) => {
                let _ = tokio::task::spawn_blocking(move || drop(store)).await;
            }
            Err(_) => {
                tracing::warn!("the metadata store is still referenced; it closes when its last handle goes")
            }
        }
        drop(lock);
    }
}

/// The read-only sampler's task; aborted when dropped.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Stops the task and waits for it: no engine handle is held after this.
    async fn stop(mut self) {
        let (never, _) = tokio::sync::oneshot::channel();
        let _ = std::mem::replace(&mut self.stop, never).send(());
        let _ = (&mut self.task).await;
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every `SAMPLE_EVERY` until `stop`, tells each bookie's registration whether it takes plain
/// adds (a disk nearly full or a poisoned shard makes it register read-only, so placement stops
/// choosing it). A bookie is held only while it is asked.
async fn sample(
    bookies: Vec<(std::sync::Weak<dlog_engine::Bookie>, tokio::sync::watch::Sender<bool>)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => return,
        }
        for (bookie, read_only_tx) in &bookies {
            let bookie = bookie.clone();
            let sampled =
                tokio::task::spawn_blocking(move || bookie.upgrade().map(|b| node::read_only(&b))).await;
            if let Ok(Some(read_only)) = sampled {
                read_only_tx.send_if_modified(|was| std::mem::replace(was, read_only) != read_only);
            }
        }
    }
}
