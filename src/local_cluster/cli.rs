//! `dlog local`: a `LocalCluster` in the foreground until Ctrl-C or SIGTERM.
//!
//! Output (stdout, one line each, in this order, once every part is up):
//! `data <dir>`, `metadata <uri>`, `bookie <id> <addr>` per bookie, then `ready` last, so a
//! script or a test can wait for it. Then, at the signal, a clean shutdown (module doc of
//! mod.rs) and exit 0. Errors are one line on stderr and a non-zero exit (main.rs).
//!
//! Invariant CL1: the signal handlers are installed before the cluster starts, so a signal
//! during the start is not lethal: the start finishes, then the cluster stops cleanly at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{DEFAULT_METADATA_LISTEN, LocalCluster, LocalClusterError, LocalClusterOptions};

/// `dlog local`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// The cluster's directory: `metadata/` (the store) and `bookies/bookie-<i>/` (created if
    /// missing). Starting again on the same directory keeps the data.
    #[arg(long, default_value = "./dlog-local")]
    pub dir: PathBuf,
    /// Bookies to run (`bookie-0` ...). A restart may add bookies, not drop any.
    #[arg(long, default_value_t = super::BOOKIES_DEFAULT)]
    pub bookies: usize,
    /// Where other processes reach the metadata (`dlog://ADDR`); port 0 picks one (the address
    /// is printed).
    #[arg(long, default_value_t = DEFAULT_METADATA_LISTEN)]
    pub metadata_listen: SocketAddr,
    /// The bookies' ports on 127.0.0.1, comma-separated, one per bookie (default: picked by the
    /// system at each start; clients find bookies by id).
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    pub bookie_ports: Option<Vec<u16>>,
    /// The bookies' TLS, authentication and permissions (as `dlog bookie` takes them).
    #[command(flatten)]
    pub security: crate::bookie::SecurityArgs,
}

/// Runs `dlog local` (see the module doc) on a runtime of its own.
pub fn run(args: LocalArgs) -> Result<(), LocalClusterError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dlog-local")
        .enable_all()
        .build()
        .map_err(|source| LocalClusterError::Setup { what: "runtime", source })?;
    runtime.block_on(serve(args))
}

async fn serve(args: LocalArgs) -> Result<(), LocalClusterError> {
    use tokio::signal::unix::{SignalKind, signal};
    let setup = |source| LocalClusterError::Setup { what: "signal handlers", source };
    let mut term = signal(SignalKind::terminate()).map_err(setup)?;
    let mut int = signal(SignalKind::interrupt()).map_err(setup)?;
    let security = crate::bookie::SecuritySettings::from_flags(args.security)
        .map_err(|e| LocalClusterError::InvalidOptions(e.to_string()))?;
    let options = LocalClusterOptions {
        security,
        bookies: args.bookies,
        metadata_listen: Some(args.metadata_listen),
        bookie_ports: args.bookie_ports,
        ..LocalClusterOptions::default()
    };
    let cluster = LocalCluster::start(&args.dir, options).await?;
    let mut lines = format!("data {}\nmetadata {}\n", cluster.dir().display(), cluster.metadata_uri());
    for (id, addr) in cluster.bookies() {
        lines.push_str(&format!("bookie {id} {addr}\n"));
    }
    lines.push_str("ready\n");
    // A closed stdout (`dlog local | head -1`) must not panic the cluster: it runs on.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    }
    // CL1: a signal that came during the start is delivered now.
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    cluster.shutdown().await;
    Ok(())
}
