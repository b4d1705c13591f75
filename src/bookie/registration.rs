//! `Registration`: how a bookie process proves its identity and announces itself in the
//! metadata store: the cookie check of its directories (cookie_file.rs), a lease kept alive by
//! `LeaseKeeper`, and its registration (`bookies/writable/<id>` or `bookies/readonly/<id>`,
//! bound to the lease) kept in line with the server's read-only signal until shutdown.
//!
//! Owns: the lease and the registration of one bookie process, their state
//! (`RegistrationState`), and the error a start fails with (`RegistrationError`).
//! Does not own: deciding when the bookie is read-only (the server feeds a watch from the
//! engine's state), the cookie rules (`BookieRegistry`), the cookie files (cookie_file.rs).
//!
//! Invariants:
//! - RG1: nothing is registered before every directory's cookie matched the stored cookie
//!   (or a new bookie's were created): a registration speaks for the disks the cookie names.
//! - RG2: the registration is bound to the process's current lease; once `LeaseKeeper` reports
//!   the lease may be lost, the state says `Unregistered` until a new lease's registration
//!   committed, and the old lease is revoked (best effort) before the new one is granted.
//! - RG3: a registration of another lease under this id (a previous incarnation that crashed,
//!   its lease not yet expired) is never removed here; it is waited out (below).
//! - RG4: every wait is bounded: the stale-registration wait at start, the backoff between
//!   attempts (`BACKOFF_MIN` doubling to `BACKOFF_MAX`), deregistration (one lease ttl).
//! - RG5: start rides out a store that is briefly unavailable (an etcd restart or pause):
//!   errors retrying may mend are retried with the run loop's backoff for `START_RETRY_FOR`;
//!   only the attempts that found the old registration (and their polls) count against the
//!   stale-registration wait, never the outage's; refusals (`Corrupt`,
//!   `Invalid`, `Unauthorized`, a missing cookie) end it at once.
//!
//! A restart within the ttl. A bookie killed and restarted quickly finds its old registration,
//! bound to the old lease, still there: `register` answers `AlreadyExists`. Removing it would
//! be quick but unsafe: if the old process is in fact alive (the same id started twice, a
//! paused VM), the two would take turns deleting each other's registration while clients saw
//! one of them. So start waits (as BookKeeper's etcd driver does) for the old lease to expire,
//! polling every `ttl / 10`, for at most `STALE_WAIT_TTLS` times this process's ttl (the
//! previous incarnation normally ran with the same configuration), then fails with
//! `StaleRegistration` naming the key: a live process holds the id, or it ran with a longer ttl
//! (a restart then succeeds). The run loop treats the same answer as retryable, with backoff.
//!
//! Errors in the run loop: `Corrupt`, `Invalid` and a missing cookie (`cookies/<id>` deleted:
//! the bookie was decommissioned) end `run` with the error; everything else (the store
//! unavailable, a lost lease, a stale registration, conflicts) is logged and retried. A
//! registration removed behind the bookie's back (an operator's `deregister` while it runs) is
//! not watched for: it is noticed at the next move or lease loss.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use dlog_metadata::schema::{self, BookieInfo, Cookie};
use dlog_metadata::{BookieRegistry, LeaseId, LeaseKeeper, MetaError, MetadataStore};
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::ServerConfig;
use super::cookie_file;

/// Lease ttl when none is configured: a bookie that stops answering disappears after it.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(10);
/// Shortest accepted lease ttl.
pub const LEASE_TTL_MIN: Duration = Duration::from_millis(100);
/// How many of its own lease ttls start waits for a previous incarnation's registration.
pub const STALE_WAIT_TTLS: u32 = 2;
/// First pause after a failed attempt in the run loop.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts in the run loop.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long start keeps retrying while the store is unavailable (RG5).
pub const START_RETRY_FOR: Duration = Duration::from_secs(60);

/// Why a bookie could not prove its identity or register (cookie refusals name the directory
/// or the file, and say what to do).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The configuration cannot be registered (an empty directory list, a bad id).
    #[error("registration config: {0}")]
    InvalidConfig(String),
    /// A directory's cookie, or the configured directories, differ from the stored cookie.
    #[error(
        "the bookie's directories do not match its stored cookie: {}. Check the configured \
         directories and the metadata URI; an operator who added or moved a disk on purpose \
         updates the stored cookie",
        differences.join("; ")
    )]
    CookieMismatch {
        /// Every difference, one sentence each, naming the file it was found in.
        differences: Vec<String>,
    },
    /// A directory has no cookie while the bookie has one: a wiped, replaced or unmounted disk.
    #[error(
        "{} has no cookie file, while the bookie's other directories and its stored cookie do: the \
         disk was wiped, replaced or is not mounted, and the replicas it held are gone from it. Mount \
         the right disk; do not copy a cookie file in. If the data is lost, treat the bookie as \
         lost: let its segments be re-replicated, delete its stored cookie, and start it with every \
         directory empty (or under a new bookie id)",
        dir.display()
    )]
    MissingCookie {
        /// The directory.
        dir: PathBuf,
    },
    /// The store has a cookie for this id and no directory has one: the id is reused on empty
    /// disks, which would silently lose the replicas the id still stands for.
    #[error(
        "{key} exists but none of {dirs:?} has a cookie file: this bookie id was already used with \
         other disks, whose replicas would silently be lost. Mount the bookie's disks, or use a new \
         bookie id; if the old bookie is gone for good, re-replicate its segments and delete {key}"
    )]
    NoCookieOnDisks {
        /// The stored cookie's key.
        key: String,
        /// The configured directories.
        dirs: Vec<PathBuf>,
    },
    /// Directories have cookies but the store has none: another store (or a wiped one).
    #[error(
        "{} holds a cookie but the metadata store has no {key}: is the metadata URI the cluster \
         these disks were formatted for? If the store was lost, restore it; to reuse the disks in \
         another cluster, empty them first",
        dir.display()
    )]
    NoStoredCookie {
        /// The cookie's key.
        key: String,
        /// A directory holding a cookie file.
        dir: PathBuf,
    },
    /// A cookie file that is not one this build reads: damaged, foreign or newer.
    #[error("cookie file {}: {why}; move it away only if the directory is not this bookie's", path.display())]
    CorruptCookieFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Another lease's registration of this id outlived the wait at start (see the module doc).
    #[error(
        "{key} is still registered by another lease after {waited:?}: another process runs with this \
         bookie id, or a previous one ran with a longer lease ttl (then retry)"
    )]
    StaleRegistration {
        /// The registration key found.
        key: String,
        /// How long start waited.
        waited: Duration,
    },
    /// The metadata store refused or failed (`Unavailable` is the retryable one).
    #[error("metadata: {0}")]
    Metadata(#[from] MetaError),
    /// A directory or a cookie file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the bookie stands in the metadata, as far as this process knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered, or its lease may be lost (RG2).
    Unregistered,
    /// Registered under `bookies/writable/<id>`.
    Writable,
    /// Registered under `bookies/readonly/<id>`.
    ReadOnly,
}

/// What `Registration::start` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The id registered (a valid bookie name).
    pub bookie_id: String,
    /// `host:port` clients connect to.
    pub endpoint: String,
    /// Storage shards the bookie runs (published for placement).
    pub shards: u32,
    /// Journal directories, in configuration order (at least one).
    pub journal_dirs: Vec<PathBuf>,
    /// Ledger directories, in configuration order.
    pub ledger_dirs: Vec<PathBuf>,
    /// The lease's ttl. Default `LEASE_TTL_DEFAULT`; at least `LEASE_TTL_MIN` (etcd rounds up
    /// to whole seconds, at least its minimum).
    pub lease_ttl: Duration,
    /// Register read-only at start.
    pub read_only: bool,
    /// Placement labels (empty: unknown).
    pub zone: String,
    /// See `zone`.
    pub rack: String,
}

/// Free bytes on the fullest ledger disk (a placement hint; 0 when none can be read).
fn free_bytes(dirs: &[PathBuf]) -> u64 {
    dirs.iter()
        .filter_map(|dir| rustix::fs::statvfs(dir).ok())
        .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize))
        .min()
        .unwrap_or(0)
}

impl RegistrationConfig {
    /// A writable bookie with the default ttl and one shard.
    pub fn new(
        bookie_id: impl Into<String>,
        endpoint: impl Into<String>,
        journal_dirs: Vec<PathBuf>,
        ledger_dirs: Vec<PathBuf>,
    ) -> RegistrationConfig {
        RegistrationConfig {
            bookie_id: bookie_id.into(),
            endpoint: endpoint.into(),
            shards: 1,
            journal_dirs,
            ledger_dirs,
            lease_ttl: LEASE_TTL_DEFAULT,
            read_only: false,
            zone: String::new(),
            rack: String::new(),
        }
    }

    /// The server's: its id, directories, shards and lease ttl, with the listen address as the
    /// endpoint (refused at start if it is unspecified, `0.0.0.0`: clients could not connect
    /// to it).
    pub fn for_server(config: &ServerConfig) -> RegistrationConfig {
        RegistrationConfig {
            shards: config.shards,
            lease_ttl: config.lease_ttl,
            zone: config.zone.clone(),
            rack: config.rack.clone(),
            ..RegistrationConfig::new(
                config.bookie_id.clone(),
                config.listen.to_string(),
                config.journal_dirs.clone(),
                config.ledger_dirs.clone(),
            )
        }
    }

    fn validate(&self) -> Result<(), RegistrationError> {
        let bad = |why: String| Err(RegistrationError::InvalidConfig(why));
        if let Err(e) = schema::check_name("bookie", &self.bookie_id) {
            return bad(e.to_string());
        }
        if self
            .endpoint
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return bad(format!("endpoint {:?} is not host:port", self.endpoint));
        }
        if self
            .endpoint
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return bad(format!("endpoint {:?} is not an address clients can connect to", self.endpoint));
        }
        if self.journal_dirs.is_empty() {
            return bad("no journal directory".into());
        }
        if self.journal_dirs.iter().chain(&self.ledger_dirs).any(|d| d.as_os_str().is_empty()) {
            return bad("an empty directory path".into());
        }
        if self.lease_ttl < LEASE_TTL_MIN {
            return bad(format!("lease ttl {:?} is below {LEASE_TTL_MIN:?}", self.lease_ttl));
        }
        Ok(())
    }
}

/// How one attempt to bring the store in line failed.
enum Failure {
    /// Worth another attempt after a pause (logged).
    Retry(MetaError),
    /// Another lease's registration is in the way (the key; RG3).
    Stale(String),
    /// Ends the run loop.
    Fatal(MetaError),
}

/// What woke the run loop while registered.
enum Wake {
    Shutdown,
    /// The keeper's reason.
    Lost(MetaError),
    /// The read-only signal changed (`true`) or closed (`false`).
    ReadOnly(bool),
}

/// `cookie_file::check_or_create`, retried while the store is unavailable for up to
/// `START_RETRY_FOR` (RG5); its refusals at once.
pub async fn check_cookies<S: MetadataStore>(
    store: &Arc<S>,
    bookie_id: &str,
    journal_dirs: &[PathBuf],
    ledger_dirs: &[PathBuf],
) -> Result<Cookie, RegistrationError> {
    let started = Instant::now();
    let mut backoff = BACKOFF_MIN;
    loop {
        match cookie_file::check_or_create(store, bookie_id, journal_dirs, ledger_dirs).await {
            Ok((cookie, _)) => return Ok(cookie),
            Err(RegistrationError::Metadata(e))
                if started.elapsed() < START_RETRY_FOR
                    && matches!(classify(e.clone(), ""), Failure::Retry(_)) =>
            {
                tracing::warn!(error = %e, ?backoff, "cookie check failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

fn classify(e: MetaError, cookie_key: &str) -> Failure {
    match e {
        // Retrying cannot mend a refused credential or a malformed request.
        MetaError::Corrupt(_) | MetaError::Invalid(_) | MetaError::Unauthorized(_) => Failure::Fatal(e),
        MetaError::NotFound(ref key) if key == cookie_key => Failure::Fatal(e),
        MetaError::AlreadyExists(key) => Failure::Stale(key),
        e => Failure::Retry(e),
    }
}

/// One bookie process's registration (see the module doc). Dropping it without `deregister`
/// stops the keep-alives: the registration vanishes when the lease expires.
#[derive(Debug)]
pub struct Registration<S> {
    store: Arc<S>,
    registry: BookieRegistry<S>,
    config: RegistrationConfig,
    cookie: Cookie,
    info: BookieInfo,
    keeper: Option<LeaseKeeper>,
    /// The path registered under the current lease (`Some(read_only)`), if any.
    registered: Option<bool>,
    state: watch::Sender<RegistrationState>,
}

impl<S: MetadataStore + 'static> Registration<S> {
    /// Checks the directories' cookies (creating them for a new bookie), grants a lease and
    /// registers, writable or read-only as `config.read_only` says. A registration of a
    /// previous incarnation is waited out for up to `STALE_WAIT_TTLS` ttls (module doc). A store
    /// that cannot be reached is retried for `START_RETRY_FOR` (RG5), then fails the start
    /// (`Metadata(Unavailable)`); the cookie check that comes first is retried the same way.
    /// Needs a tokio runtime with timers.
    pub async fn start(
        store: Arc<S>,
        config: RegistrationConfig,
    ) -> Result<Registration<S>, RegistrationError> {
        config.validate()?;
        let started = Instant::now();
        let cookie =
            check_cookies(&store, &config.bookie_id, &config.journal_dirs, &config.ledger_dirs).await?;
        let info = BookieInfo {
            endpoint: config.endpoint.clone(),
            shards: config.shards,
            version: env!("CARGO_PKG_VERSION").to_string(),
            registered_ms: dlog_metadata::wall_clock::now_ms(),
            zone: config.zone.clone(),
            rack: config.rack.clone(),
            free_bytes: free_bytes(&config.ledger_dirs),
        };
        let (state, _) = watch::channel(RegistrationState::Unregistered);
        let mut registration = Registration {
            registry: BookieRegistry::new(store.clone()),
            store,
            cookie,
            info,
            keeper: None,
            registered: None,
            state,
            config,
        };
        let want = registration.config.read_only;
        // RG5: only the time spent finding the old registration counts against its wait.
        let mut stale_waited = Duration::ZERO;
        let wait = registration.config.lease_ttl * STALE_WAIT_TTLS;
        let poll = registration.config.lease_ttl / 10;
        let mut told = false;
        let mut backoff = BACKOFF_MIN;
        loop {
            let attempt_from = Instant::now();
            match registration.align(want).await {
                Ok(()) => return Ok(registration),
                Err(Failure::Retry(e)) if started.elapsed() < START_RETRY_FOR => {
                    tracing::warn!(error = %e, ?backoff, "registering at start failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(Failure::Stale(key)) if stale_waited < wait => {
                    backoff = BACKOFF_MIN;
                    if !told {
                        told = true;
                        tracing::warn!(
                            key,
                            wait = ?wait,
                            "registered by another lease (a previous incarnation?): waiting for it to expire"
                        );
                    }
                    tokio::time::sleep(poll).await;
                    stale_waited += attempt_from.elapsed();
                }
                Err(Failure::Stale(key)) => {
                    return Err(RegistrationError::StaleRegistration { key, waited: stale_waited });
                }
                Err(Failure::Retry(e) | Failure::Fatal(e)) => return Err(e.into()),
            }
        }
    }

    /// Keeps the registration in line until `shutdown` resolves: moves it between writable and
    /// read-only as `read_only` changes, and registers again under a new lease when the
    /// `LeaseKeeper` reports the lease lost, retrying with backoff while the store is
    /// unavailable. `shutdown` is any future (a cancellation token's `cancelled()`, a watch's
    /// `changed()`); it leaves the registration in place, for `deregister`. A closed
    /// `read_only` channel keeps its last value. Ends with an error only for what retrying
    /// cannot mend (module doc). May be called again after it returned.
    pub async fn run(
        &mut self,
        mut read_only: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RegistrationError> {
        let mut shutdown = pin!(shutdown);
        let mut watching = true;
        let mut backoff = BACKOFF_MIN;
        loop {
            let want = *read_only.borrow_and_update();
            if !self.in_line(want) {
                let attempt = tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    attempt = self.align(want) => attempt,
                };
                let why = match attempt {
                    Ok(()) => {
                        backoff = BACKOFF_MIN;
                        continue;
                    }
                    Err(Failure::Fatal(e)) => {
                        tracing::warn!(bookie = %self.config.bookie_id, error = %e, "registration: giving up");
                        return Err(e.into());
                    }
                    Err(Failure::Stale(key)) => format!("{key} is registered by another lease"),
                    Err(Failure::Retry(e)) => e.to_string(),
                };
                tracing::warn!(bookie = %self.config.bookie_id, why, retry_in = ?backoff, "registration failed");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                    changed = read_only.changed(), if watching => watching = changed.is_ok(),
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            let Some(keeper) = self.keeper.as_mut() else { continue };
            let wake = tokio::select! {
                () = &mut shutdown => Wake::Shutdown,
                why = keeper.lost() => Wake::Lost(why),
                changed = read_only.changed(), if watching => Wake::ReadOnly(changed.is_ok()),
            };
            match wake {
                Wake::Shutdown => return Ok(()),
                Wake::Lost(why) => {
                    tracing::warn!(bookie = %self.config.bookie_id, why = %why, "lease lost: registering again");
                    self.drop_lease().await;
                }
                Wake::ReadOnly(true) => {}
                Wake::ReadOnly(false) => {
                    watching = false;
                    tracing::info!(bookie = %self.config.bookie_id, "read-only signal closed: keeping its last value");
                }
            }
        }
    }

    /// Deregisters: revokes the lease, which deletes the registration bound to it (BR3) in
    /// the same step. Bounded by one lease ttl (past it the lease expires anyway); an error is
    /// logged and returned, and the registration then vanishes when the lease expires.
    pub async fn deregister(mut self) -> Result<(), RegistrationError> {
        self.registered = None;
        self.publish();
        let Some(keeper) = self.keeper.take() else { return Ok(()) };
        let (lease, ttl) = (keeper.id(), self.config.lease_ttl);
        let bookie = self.config.bookie_id.clone();
        match tokio::time::timeout(ttl, keeper.revoke(&*self.store)).await {
            Ok(Ok(_)) | Ok(Err(MetaError::LeaseExpired(_))) => {
                tracing::info!(bookie, lease = lease.0, "deregistered");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(bookie, lease = lease.0, error = %e, "deregistration failed: the lease will expire");
                Err(e.into())
            }
            Err(_) => {
                let e = MetaError::Unavailable(format!(
                    "revoking lease {} took longer than {ttl:?}; it expires after its ttl",
                    lease.0
                ));
                tracing::warn!(bookie, error = %e, "deregistration timed out");
                Err(e.into())
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        *self.state.borrow()
    }

    /// A watch of the state, for metrics and tests (it outlives a `run` that owns `self`).
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.subscribe()
    }

    /// The current lease, if one is held.
    pub fn lease(&self) -> Option<LeaseId> {
        self.keeper.as_ref().map(LeaseKeeper::id)
    }

    /// The bookie's cookie, as stored.
    pub fn cookie(&self) -> &Cookie {
        &self.cookie
    }

    /// The configuration it started with.
    pub fn config(&self) -> &RegistrationConfig {
        &self.config
    }

    /// Registered where `want` says, under a lease not known to be lost.
    fn in_line(&self, want: bool) -> bool {
        self.registered == Some(want) && self.keeper.as_ref().is_some_and(LeaseKeeper::is_alive)
    }

    fn publish(&self) {
        let state = match self.registered {
            None => RegistrationState::Unregistered,
            Some(false) => RegistrationState::Writable,
            Some(true) => RegistrationState::ReadOnly,
        };
        self.state.send_replace(state);
    }

    /// Forgets the lease (RG2) and revokes it, best effort, bounded by its ttl.
    async fn drop_lease(&mut self) {
        self.registered = None;
        self.publish();
        let Some(keeper) = self.keeper.take() else { return };
        let lease = keeper.id();
        match tokio::time::timeout(self.config.lease_ttl, keeper.revoke(&*self.store)).await {
            Ok(Ok(_) | Err(MetaError::LeaseExpired(_))) => {}
            Ok(Err(e)) => tracing::debug!(lease = lease.0, error = %e, "revoking a lost lease failed"),
            Err(_) => tracing::debug!(lease = lease.0, "revoking a lost lease timed out"),
        }
    }

    /// One attempt to be registered where `want` says: a new lease if needed, then a
    /// registration or a move.
    async fn align(&mut self, want: bool) -> Result<(), Failure> {
        let cookie_key = schema::cookie_key(&self.config.bookie_id);
        if self.keeper.as_ref().is_some_and(|k| !k.is_alive()) {
            tracing::warn!(bookie = %self.config.bookie_id, "lease may be lost: registering again");
            self.drop_lease().await;
        }
        let lease = match &self.keeper {
            Some(keeper) => keeper.id(),
            None => {
                let keeper = LeaseKeeper::grant(self.store.clone(), self.config.lease_ttl)
                    .await
                    .map_err(|e| classify(e, &cookie_key))?;
                let lease = keeper.id();
                tracing::debug!(bookie = %self.config.bookie_id, lease = lease.0, "lease granted");
                self.keeper = Some(keeper);
                lease
            }
        };
        let id = self.config.bookie_id.clone();
        let result = match self.registered {
            Some(held) if held == want => return Ok(()),
            Some(_) => self.registry.set_read_only(&id, &self.info, lease, want).await,
            None => match self.registry.register(&id, &self.info, lease, want).await {
                // On the other path by this very lease (an earlier attempt that answered
                // `Unavailable` but committed): move it.
                Err(MetaError::AlreadyExists(key)) => match self.registry.bookie(&id).await {
                    Ok(Some(held)) if held.lease == Some(lease) => {
                        self.registry.set_read_only(&id, &self.info, lease, want).await
                    }
                    Ok(_) => Err(MetaError::AlreadyExists(key)),
                    Err(e) => Err(e),
                },
                other => other,
            },
        };
        match result {
            Ok(_) => {
                let moved = self.registered.is_some();
                self.registered = Some(want);
                self.publish();
                let path = if want { "read-only" } else { "writable" };
                if moved {
                    tracing::info!(bookie = %id, lease = lease.0, "moved to {path}");
                } else {
                    tracing::info!(bookie = %id, lease = lease.0, endpoint = %self.info.endpoint, "registered {path}");
                }
                Ok(())
            }
            Err(e) => {
                match &e {
                    // The lease is gone: the next attempt grants a new one.
                    MetaError::LeaseExpired(_) => self.drop_lease().await,
                    // The registration vanished (deregistered by someone) or another lease
                    // holds the id: register again (and wait the other out, RG3).
                    MetaError::NotFound(key) if *key != cookie_key => {
                        self.registered = None;
                        self.publish();
                    }
                    MetaError::AlreadyExists(_) => {
                        self.registered = None;
                        self.publish();
                    }
                    _ => {}
                }
                Err(classify(e, &cookie_key))
            }
        }
    }
}
