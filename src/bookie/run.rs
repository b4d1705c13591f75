//! `run`: the `dlog bookie` process: engine, server, registration, metrics, signals.
//!
//! Owns: the order things start and stop in, the control thread (a small tokio runtime for the
//! metadata store, the registration, the metrics endpoint and the signals), and sampling the
//! engine for the read-only signal and the metrics.
//! Does not own: serving (server.rs), cookies and the registry (registration.rs), the engine.
//!
//! Start: resolve the configuration; load the TLS config, the authenticator and the permissions
//! (before any
//! disk is touched, so a bad certificate costs nothing); install the metrics exporter (before
//! any handle is made); open the metadata store; open the engine (its deletion check asks the store); start
//! the network threads; check the cookies and register under a lease; print one `serving`
//! line on stdout. Stop on SIGTERM or SIGINT: stop accepting and reading, answer what was read
//! (up to `DRAIN_TIMEOUT`), deregister, close the engine. A SIGKILL loses nothing acknowledged:
//! an answered ADD is durable before it is answered.
//!
//! Invariant RN1: the bookie is registered only while it can serve: the network threads start
//! before registering, and deregistration comes after the drain (clients that still choose it
//! meanwhile get refused connections and pick another bookie).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dlog_engine::{Bookie, CoreStats, DeletionHook, OpenError, ShardId};
use dlog_metadata::{AnyStore, MetaError};
use dlog_replication::autorecovery::{Autorecovery, AutorecoveryConfig};
use tokio::sync::watch;

use crate::bookie::config::{BookieArgs, ConfigError, ServerConfig};
use crate::bookie::metrics;
use crate::bookie::registration::{Registration, RegistrationConfig, RegistrationError};
use crate::bookie::security::{AuthMode, SecurityError, ServerSecurity};
use crate::bookie::segment_owners::{MetadataOwners, PermissionGate};
use crate::bookie::server::{BookieServer, ServerError, ServerOptions};
use crate::deletion_check::MetadataDeletionCheck;

/// How long a shutdown waits for requests already read to be answered.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the engine is sampled for the read-only signal and the metrics.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Why the bookie stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metadata store could not be opened.
    #[error("metadata store {uri}: {source}")]
    Metadata {
        /// Its URI.
        uri: String,
        /// Why.
        source: MetaError,
    },
    /// The engine did not open.
    #[error("storage engine: {0}")]
    Open(#[from] OpenError),
    /// The server did not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A TLS or authentication file no longer loads (it did when the configuration resolved).
    #[error("security: {0}")]
    Security(#[from] SecurityError),
    /// Cookies or registration failed.
    #[error("registration: {0}")]
    Registration(#[from] RegistrationError),
    /// The metrics endpoint did not start.
    #[error("metrics on {addr}: {why}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
    /// The process could not set itself up (runtime, signals).
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs a bookie until SIGTERM or SIGINT (or a registration failure retrying cannot mend).
pub fn run(args: BookieArgs) -> Result<(), RunError> {
    let config = ServerConfig::resolve(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dlog-control")
        .enable_all()
        .build()
        .map_err(|source| RunError::Setup { what: "control runtime", source })?;
    let handle = runtime.handle().clone();
    runtime.block_on(serve(config, handle))
}

async fn serve(config: ServerConfig, runtime: tokio::runtime::Handle) -> Result<(), RunError> {
    let security = config.security.load()?;
    let client_security = config.security.client_security()?;
    warn_about_security(&config, &security, &client_security);
    if let Some(addr) = config.metrics_listen {
        // Histograms with buckets, not summaries: buckets add up across bookies and over time
        // windows, and count and sum cover the same samples as the buckets.
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let refused =
            |e: metrics_exporter_prometheus::BuildError| RunError::Metrics { addr, why: e.to_string() };
        PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(
                Matcher::Full(metrics::REQUEST_SECONDS.into()),
                metrics::REQUEST_SECONDS_BUCKETS,
            )
            .map_err(refused)?
            .set_buckets_for_metric(
                Matcher::Full(metrics::RESPONSES_PER_SEND.into()),
                metrics::RESPONSES_PER_SEND_BUCKETS,
            )
            .map_err(refused)?
            .install()
            .map_err(refused)?;
    }
    let store = Arc::new(
        AnyStore::open(&config.metadata)
            .await
            .map_err(|source| RunError::Metadata { uri: config.metadata.clone(), source })?,
    );
    // The disks' identity first: a bookie on a wiped or foreign disk must not replay it, nor
    // answer a single request (a recovery counting its "no such entry" could cut a segment
    // short). Registration checks again, on the same files.
    crate::bookie::registration::check_cookies(
        &store,
        &config.bookie_id,
        &config.journal_dirs,
        &config.ledger_dirs,
    )
    .await?;
    let mut engine = config.engine_config();
    engine.deletion_check =
        Some(DeletionHook(Arc::new(MetadataDeletionCheck::new(store.clone(), runtime.clone()))));
    let bookie = tokio::task::spawn_blocking(move || Bookie::open(engine))
        .await
        .map_err(|e| RunError::Setup { what: "opening the engine", source: std::io::Error::other(e) })??;
    let bookie = Arc::new(bookie);
    for (shard, report) in bookie.replay_reports().iter().enumerate() {
        tracing::info!(shard, ?report, "journal replayed");
    }
    // Caught from here on: a signal while registering (which may wait out a previous
    // incarnation's lease) or right after the serving line stops the bookie cleanly.
    let mut signals = std::pin::pin!(shutdown_signal()?);
    let mut options = ServerOptions::new(config.listen, config.limits);
    options.tls = security.tls;
    options.auth = security.auth;
    options.permissions = security.permissions.map(|permissions| {
        let owners = MetadataOwners::new(store.clone(), runtime.clone());
        Arc::new(PermissionGate::new(permissions, Arc::new(owners)))
    });
    let server = BookieServer::start(bookie.clone(), options)?;
    let addr = server.local_addr();
    let mut registration_config = RegistrationConfig::for_server(&config);
    registration_config.endpoint = endpoint(&config, addr);
    let (read_only_tx, read_only_rx) = watch::channel(read_only(&bookie));
    registration_config.read_only = *read_only_rx.borrow();
    let registration = tokio::select! {
        registration = Registration::start(store.clone(), registration_config) => registration,
        () = &mut signals => {
            tracing::info!(bookie = %config.bookie_id, "stopped before registering");
            stop(server, bookie).await;
            return Ok(());
        }
    };
    let mut registration = match registration {
        Ok(registration) => registration,
        Err(e) => {
            stop(server, bookie).await;
            return Err(e.into());
        }
    };
    println!(
        "bookie {} serving on {addr} (backend {}, {} shards)",
        config.bookie_id,
        bookie.backend(),
        bookie.shard_count()
    );
    tracing::info!(bookie = %config.bookie_id, %addr, "registered and serving");
    let (stop_sampling, sampling_stopped) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(sample(bookie.clone(), config.clone(), read_only_tx, sampling_stopped));
    let autorecovery = match config.autorecovery {
        Some(settings) => {
            let mut recovery = AutorecoveryConfig::new(config.bookie_id.clone());
            recovery.lease_ttl = config.lease_ttl;
            recovery.lost_bookie_grace = settings.lost_bookie_grace;
            recovery.open_segment_grace = settings.open_segment_grace;
            recovery.replication.transport.security = client_security;
            match Autorecovery::start(store.clone(), runtime.clone(), recovery) {
                Ok(autorecovery) => Some(autorecovery),
                Err(e) => {
                    // Serving goes on; lost replicas wait for another bookie's worker.
                    tracing::error!(error = %e, "autorecovery did not start");
                    None
                }
            }
        }
        None => None,
    };
    let outcome = registration.run(read_only_rx, signals).await;
    if let Some(autorecovery) = autorecovery {
        autorecovery.stop().await;
    }
    let _ = stop_sampling.send(());
    let _ = sampler.await; // its engine handle is gone after this
    tracing::info!(bookie = %config.bookie_id, "shutting down: draining");
    stop(server, bookie).await;
    if let Err(e) = registration.deregister().await {
        tracing::warn!(error = %e, "deregistration failed; the registration vanishes with its lease");
    }
    outcome.map_err(RunError::from)
}

/// Logs the settings that work but are likely mistakes: a token sent in plaintext, and
/// autorecovery connecting to bookies that will refuse it.
fn warn_about_security(
    config: &ServerConfig,
    security: &ServerSecurity,
    client: &dlog_replication::transport::ClientSecurity,
) {
    let settings = &config.security;
    if settings.auth == AuthMode::Token && security.tls.is_none() {
        tracing::warn!("auth = \"token\" without TLS: tokens cross the network in plaintext");
    }
    if config.autorecovery.is_some() {
        let refused = match settings.auth {
            AuthMode::None => false,
            AuthMode::Token => client.token.is_none(),
            AuthMode::Mtls => client.tls.is_none(),
        };
        if refused || (security.tls.is_some() && client.tls.is_none()) {
            tracing::warn!(
                "autorecovery connects to other bookies without the TLS or credentials this bookie \
                 requires: set the [client] table (tls_ca_file, tls_cert_file, tls_key_file, auth_token_file)"
            );
        }
    }
    let certificates = settings.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
    if security.permissions.is_some() && settings.auth == AuthMode::None && !certificates {
        tracing::warn!(
            "permissions_file with auth = \"none\": every client is \"anonymous\" and gets its grants"
        );
    }
    if let (Some(permissions), Some(path)) = (&security.permissions, &settings.auth_tokens_file) {
        // Names the tokens file does not know can never connect: likely a typo.
        if let Ok(tokens) = crate::bookie::auth::TokenAuthenticator::from_file(path) {
            for identity in permissions.identities() {
                if !tokens.identities().any(|known| known == identity) {
                    tracing::warn!(
                        identity,
                        "the permissions file names an identity the tokens file does not"
                    );
                }
            }
        }
    }
    tracing::info!(
        tls = security.tls.is_some(),
        auth = ?settings.auth,
        permissions = security.permissions.is_some(),
        "client security"
    );
}

/// Drains the server and closes the engine (blocking work, off the runtime's threads).
async fn stop(server: BookieServer, bookie: Arc<Bookie>) {
    let closing = tokio::task::spawn_blocking(move || {
        server.shutdown(DRAIN_TIMEOUT);
        match Arc::try_unwrap(bookie) {
            Ok(bookie) => bookie.close(),
            Err(_) => tracing::warn!("engine still referenced at shutdown; it closes when dropped"),
        }
    });
    if closing.await.is_err() {
        tracing::error!("shutdown panicked");
    }
}

/// What clients are told to connect to: the listen address, or, when it is a wildcard, the
/// bookie id if that is an address.
fn endpoint(config: &ServerConfig, addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    match config.bookie_id.parse::<SocketAddr>() {
        Ok(id) if !id.ip().is_unspecified() => id.to_string(),
        _ => {
            tracing::warn!(%addr, "wildcard listen address: give --bookie-id ip:port");
            addr.to_string()
        }
    }
}

/// Whether the bookie cannot take plain adds: a shard read-only (disk nearly full), poisoned
/// (a journal write failed) or stopped. Any of them makes it register read-only, so placement
/// stops choosing it.
fn read_only(bookie: &Bookie) -> bool {
    (0..bookie.shard_count()).any(|s| takes_no_adds(bookie.stats(ShardId(s)).as_ref().ok()))
}

/// Whether a shard, by its stats (`None`: it has stopped), takes no plain adds.
fn takes_no_adds(stats: Option<&CoreStats>) -> bool {
    stats.is_none_or(|stats| stats.read_only || stats.poisoned)
}

/// Every `SAMPLE_EVERY`: the engine's counters and queue depths and the disks' usage to the
/// metrics, and the read-only state to the registration.
async fn sample(
    bookie: Arc<Bookie>,
    config: ServerConfig,
    read_only_tx: watch::Sender<bool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => return,
        }
        let bookie = bookie.clone();
        let dirs: Vec<_> = config.journal_dirs.iter().chain(&config.ledger_dirs).cloned().collect();
        let sampled = tokio::task::spawn_blocking(move || {
            let mut any_read_only = false;
            for shard in 0..bookie.shard_count() {
                let stats = bookie.stats(ShardId(shard)).ok();
                any_read_only |= takes_no_adds(stats.as_ref());
                if let Some(stats) = stats {
                    metrics::record_shard(shard, &stats, bookie.queue_depth(ShardId(shard)));
                }
            }
            for dir in dirs {
                if let Ok(fs) = rustix::fs::statvfs(&dir) {
                    let total = fs.f_blocks.saturating_mul(fs.f_frsize);
                    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
                    metrics::record_disk(&dir.display().to_string(), total, free);
                }
            }
            any_read_only
        })
        .await;
        if let Ok(read_only) = sampled {
            read_only_tx.send_if_modified(|was| std::mem::replace(was, read_only) != read_only);
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl Future<Output = ()>, RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let setup = |source| RunError::Setup { what: "signal handlers", source };
    let mut term = signal(SignalKind::terminate()).map_err(setup)?;
    let mut int = signal(SignalKind::interrupt()).map_err(setup)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
