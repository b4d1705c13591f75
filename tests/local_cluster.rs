//! `LocalCluster` and `dlog local`: a cluster in one process on one directory. In process: the
//! bookies are registered at their addresses; a segment written through the replication client
//! reads back after a shutdown and a start on the same directory (same bookie ids); a restart
//! after a drop without shutdown is not held up by the old registrations' leases; a directory
//! in use, a bookie directory swapped between ids, fewer bookies than the directory holds and
//! bad options are refused, each with a clear error. As a process (the binary cargo built): the
//! endpoints and `ready` are printed, a restart after SIGKILL comes up promptly and serves, and
//! SIGTERM stops it with exit 0; refusals are one line and a non-zero exit.
//!
//! Everything listens on 127.0.0.1; every wait has a deadline; every child process is killed and
//! reaped by a guard when a test ends.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dlog::local_cluster::{LocalCluster, LocalClusterError, LocalClusterOptions};
use dlog_metadata::{AnyStore, BookieRegistry, MetadataStore};
use dlog_replication::client::{ReadItem, ReplicationClient, ReplicationConfig};
use dlog_replication::quorum::QuorumSizes;

#[path = "support/process.rs"]
mod process;

use process::{Running, now};

/// Longest any one step (a start, a shutdown, a write, a read) may take.
const WAIT: Duration = Duration::from_secs(30);
/// The registration lease ttl of these tests: long, so a restart that waited for the old leases
/// would show (`PROMPT` is well under it).
const TTL: Duration = Duration::from_secs(10);
/// Longest a restart after a crash may take: well under `TTL`.
const PROMPT: Duration = Duration::from_secs(5);
const KEY: &[u8] = b"local-cluster-test";

fn options(bookies: usize) -> LocalClusterOptions {
    LocalClusterOptions { bookies, lease_ttl: TTL, ..LocalClusterOptions::default() }
}

async fn start(dir: &Path, options: LocalClusterOptions) -> Result<LocalCluster, LocalClusterError> {
    tokio::time::timeout(WAIT, LocalCluster::start(dir, options)).await.expect("start within WAIT")
}

async fn shutdown(cluster: LocalCluster) {
    tokio::time::timeout(WAIT, cluster.shutdown()).await.expect("shutdown within WAIT");
}

/// The writable registrations in `store`: id and endpoint, in id order.
async fn registered<S: MetadataStore + 'static>(store: std::sync::Arc<S>) -> Vec<(String, String)> {
    let registry = BookieRegistry::new(store);
    let listed = registry.writable().await.unwrap();
    listed.into_iter().map(|b| b.unwrap()).map(|b| (b.id, b.info.endpoint)).collect()
}

fn expected(cluster: &LocalCluster) -> Vec<(String, String)> {
    cluster.bookies().into_iter().map(|(id, addr)| (id, addr.to_string())).collect()
}

fn payload(entry: u64) -> Bytes {
    Bytes::from(format!("entry {entry} ").repeat(1 + entry as usize % 50))
}

fn client(cluster: &LocalCluster) -> ReplicationClient<AnyStore> {
    let runtime = tokio::runtime::Handle::current();
    ReplicationClient::new(cluster.store(), runtime, ReplicationConfig::default()).unwrap()
}

/// Reads `segment` (closed) whole through a client of `cluster`.
async fn read_all(cluster: &LocalCluster, segment: u64) -> Vec<(u64, Bytes)> {
    let client = client(cluster);
    let mut reader = client.open_reader(segment, 0).await.unwrap();
    let mut entries = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, reader.next()).await.expect("read within WAIT") {
            Some(ReadItem::Entry(entry, bytes)) => entries.push((entry, bytes)),
            Some(ReadItem::End) => return entries,
            other => panic!("reading segment {segment}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_registers_bookies_and_keeps_data_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), options(3)).await.unwrap();
    let ids: Vec<String> = cluster.bookies().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["bookie-0", "bookie-1", "bookie-2"]);
    assert_eq!(registered(cluster.store()).await, expected(&cluster));
    for (_, addr) in cluster.bookies() {
        assert!(addr.ip().is_loopback(), "{addr}");
        TcpStream::connect(addr).unwrap();
    }
    assert_eq!(cluster.dir(), dir.path().canonicalize().unwrap());
    assert!(cluster.metadata_uri().starts_with("local://"), "{}", cluster.metadata_uri());
    assert_eq!(cluster.metadata_addr(), None);

    // A segment over all three bookies, closed.
    let segment = {
        let client = client(&cluster);
        let quorum = QuorumSizes::new(3, 3, 2).unwrap();
        let writer = client.create_segment(quorum, Bytes::from_static(KEY), None).await.unwrap();
        for entry in 0..100 {
            let id = tokio::time::timeout(WAIT, writer.add(payload(entry))).await.unwrap().unwrap();
            assert_eq!(id, entry);
        }
        tokio::time::timeout(WAIT, writer.close()).await.unwrap().unwrap();
        writer.id()
    };
    shutdown(cluster).await;

    // Deregistered at shutdown (read without the lock, as `dlog admin` does).
    let uri = format!("local://{}", dir.path().join("metadata").display());
    let snapshot = std::sync::Arc::new(AnyStore::open_read_only(&uri).await.unwrap());
    assert_eq!(registered(snapshot).await, []);

    // Same ids, data kept (every replica was closed: reads need Qa of them).
    let cluster = start(dir.path(), options(3)).await.unwrap();
    let ids: Vec<String> = cluster.bookies().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["bookie-0", "bookie-1", "bookie-2"]);
    assert_eq!(registered(cluster.store()).await, expected(&cluster));
    let entries = read_all(&cluster, segment).await;
    let want: Vec<(u64, Bytes)> = (0..100).map(|e| (e, payload(e))).collect();
    assert_eq!(entries, want);

    // More bookies is fine; fewer than the directory holds is refused.
    shutdown(cluster).await;
    let cluster = start(dir.path(), options(4)).await.unwrap();
    assert_eq!(registered(cluster.store()).await.len(), 4);
    shutdown(cluster).await;
    match start(dir.path(), options(3)).await {
        Err(e @ LocalClusterError::BookiesMissing { found: 4, asked: 3, .. }) => {
            assert!(e.to_string().contains("at least 4 bookies"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_serves_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let cluster =
        start(dir.path(), LocalClusterOptions { metadata_listen: listen, ..options(2) }).await.unwrap();
    let addr = cluster.metadata_addr().expect("served");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert_eq!(cluster.metadata_uri(), format!("dlog://{addr}"));
    let remote = std::sync::Arc::new(AnyStore::open(&cluster.metadata_uri()).await.unwrap());
    assert_eq!(registered(remote.clone()).await, expected(&cluster));

    // A client in "another process" (over dlog://) writes; the cluster's own store reads it.
    let runtime = tokio::runtime::Handle::current();
    let client = ReplicationClient::new(remote.clone(), runtime, ReplicationConfig::default()).unwrap();
    let quorum = QuorumSizes::new(2, 2, 2).unwrap();
    let writer = client.create_segment(quorum, Bytes::from_static(KEY), None).await.unwrap();
    for entry in 0..10 {
        tokio::time::timeout(WAIT, writer.add(payload(entry))).await.unwrap().unwrap();
    }
    tokio::time::timeout(WAIT, writer.close()).await.unwrap().unwrap();
    let entries = read_all(&cluster, writer.id()).await;
    assert_eq!(entries.len(), 10);
    drop((writer, client, remote));

    // The metadata port taken: refused, and what started is stopped again.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = LocalClusterOptions { metadata_listen: Some(taken.local_addr().unwrap()), ..options(2) };
    shutdown(cluster).await;
    match start(dir.path(), busy).await {
        Err(e @ LocalClusterError::MetadataServer { .. }) => {
            assert!(e.to_string().starts_with("serving the metadata on 127.0.0.1:"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let cluster = start(dir.path(), options(2)).await.unwrap();
    shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), options(1)).await.unwrap();
    match start(dir.path(), options(1)).await {
        Err(e @ LocalClusterError::InUse { .. }) => assert!(e.to_string().contains("in use"), "{e}"),
        other => panic!("{other:?}"),
    }
    // The refused start touched nothing: the first still serves.
    assert_eq!(registered(cluster.store()).await, expected(&cluster));
    shutdown(cluster).await;
    let cluster = start(dir.path(), options(1)).await.unwrap();
    shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_restart_after_a_drop_is_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), options(3)).await.unwrap();
    // No shutdown: the registrations stay, bound to leases the store keeps for `TTL` after it
    // opens again.
    drop(cluster);
    let began = tokio::time::Instant::now();
    let cluster = start(dir.path(), options(3)).await.unwrap();
    let took = began.elapsed();
    assert!(took < PROMPT, "restart took {took:?} (lease ttl {TTL:?})");
    assert_eq!(registered(cluster.store()).await, expected(&cluster));
    shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_refuses_a_bookie_dir_swapped_between_ids() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), options(2)).await.unwrap();
    shutdown(cluster).await;
    let bookies = dir.path().join("bookies");
    std::fs::rename(bookies.join("bookie-0"), bookies.join("swap")).unwrap();
    std::fs::rename(bookies.join("bookie-1"), bookies.join("bookie-0")).unwrap();
    std::fs::rename(bookies.join("swap"), bookies.join("bookie-1")).unwrap();
    match start(dir.path(), options(2)).await {
        Err(e @ LocalClusterError::Registration { .. }) => {
            let message = e.to_string();
            assert!(message.starts_with("bookie bookie-0: "), "{message}");
            assert!(message.contains("do not match its stored cookie"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The refusal left the directory free (refused again, not `InUse`).
    assert!(matches!(start(dir.path(), options(2)).await, Err(LocalClusterError::Registration { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_moved_dir_keeps_its_bookies() {
    let parent = tempfile::tempdir().unwrap();
    let (first, second) = (parent.path().join("first"), parent.path().join("second"));
    let cluster = start(&first, options(2)).await.unwrap();
    shutdown(cluster).await;
    std::fs::rename(&first, &second).unwrap();
    let cluster = start(&second, options(2)).await.unwrap();
    assert_eq!(registered(cluster.store()).await, expected(&cluster));
    shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_refuses_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, says) in [
        (LocalClusterOptions { bookies: 0, ..options(1) }, "bookies 0"),
        (LocalClusterOptions { bookie_ports: Some(vec![0]), ..options(2) }, "1 bookie ports for 2 bookies"),
        (LocalClusterOptions { lease_ttl: Duration::ZERO, ..options(1) }, "lease ttl"),
        (LocalClusterOptions { write_cache_bytes_max: 1, ..options(1) }, "write_cache_bytes_max"),
    ] {
        match start(dir.path(), bad).await {
            Err(e @ LocalClusterError::InvalidOptions(_)) => assert!(e.to_string().contains(says), "{e}"),
            other => panic!("{says}: {other:?}"),
        }
    }
    // A bookie port in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let bad = LocalClusterOptions { bookie_ports: Some(vec![0, port]), ..options(2) };
    match start(dir.path(), bad).await {
        Err(e @ LocalClusterError::Server { .. }) => {
            assert!(e.to_string().starts_with("bookie bookie-1: cannot listen on"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The failed start stopped what it had started: the directory is free.
    let cluster = start(dir.path(), options(2)).await.unwrap();
    shutdown(cluster).await;
}

#[test]
fn local_cluster_needs_a_multi_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    match runtime.block_on(LocalCluster::start(dir.path(), options(1))) {
        Err(e @ LocalClusterError::InvalidOptions(_)) => {
            assert!(e.to_string().contains("multi-thread"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

// ---- `dlog local` as a process ----

/// What a `dlog local` printed before `ready`.
#[derive(Debug)]
struct Endpoints {
    metadata: String,
    bookies: Vec<(String, SocketAddr)>,
    data: String,
}

/// A running `dlog local`.
struct Local(Running);

impl Local {
    /// Starts `dlog local` on `dir`, its metadata served on a port the system picks.
    fn launch(dir: &Path, extra: &[&str]) -> Local {
        Local::launch_on(dir, "127.0.0.1:0", extra)
    }

    fn launch_on(dir: &Path, metadata_listen: &str, extra: &[&str]) -> Local {
        static LAUNCHED: AtomicUsize = AtomicUsize::new(0);
        let n = LAUNCHED.fetch_add(1, Ordering::Relaxed);
        let stderr = dir.with_extension(format!("stderr-{n}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
        command
            .args(["local", "--dir"])
            .arg(dir)
            .args(["--metadata-listen", metadata_listen])
            .args(extra)
            .env("RUST_LOG", "info");
        Local(Running::spawn(command, Stdio::null(), stderr))
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// Waits up to `within` for `ready`; what was printed before it.
    fn ready(&self, within: Duration) -> Endpoints {
        let deadline = now() + within;
        let (mut metadata, mut bookies, mut data) = (None, Vec::new(), None);
        loop {
            let left = deadline.saturating_duration_since(now());
            let line = match self.0.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!("no `ready` within {within:?} ({e}); log:\n{}", self.log()),
            };
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["ready"] => break,
                ["metadata", uri] => metadata = Some(uri.to_string()),
                ["data", dir] => data = Some(dir.to_string()),
                ["bookie", id, addr] => bookies.push((id.to_string(), addr.parse().unwrap())),
                _ => panic!("unexpected line {line:?}"),
            }
        }
        Endpoints { metadata: metadata.expect("a metadata line"), bookies, data: data.expect("a data line") }
    }

    fn sigkill(self) {
        self.0.kill();
    }

    /// SIGTERM; the exit status, within `WAIT`.
    fn terminate(mut self) -> ExitStatus {
        self.0.terminate(WAIT).0
    }

    /// Waits for the process to exit by itself (a refusal); its status and log.
    fn refused(mut self) -> (ExitStatus, String) {
        let status = self.0.exit(WAIT);
        (status, self.log())
    }
}

/// The bookies registered in the metadata at `uri` (another process's `dlog://` server).
fn registered_at(uri: &str) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let store = tokio::time::timeout(WAIT, AnyStore::open(uri)).await.unwrap().unwrap();
        tokio::time::timeout(WAIT, registered(std::sync::Arc::new(store))).await.unwrap()
    })
}

fn serves(endpoints: &Endpoints) {
    assert!(endpoints.metadata.starts_with("dlog://127.0.0.1:"), "{endpoints:?}");
    let want: Vec<(String, String)> =
        endpoints.bookies.iter().map(|(id, addr)| (id.clone(), addr.to_string())).collect();
    assert_eq!(registered_at(&endpoints.metadata), want);
    for (_, addr) in &endpoints.bookies {
        TcpStream::connect(addr).unwrap();
    }
}

#[test]
fn dlog_local_restart_after_sigkill_is_prompt_and_serves() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cluster");
    let local = Local::launch(&dir, &[]);
    let endpoints = local.ready(WAIT);
    let ids: Vec<&str> = endpoints.bookies.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["bookie-0", "bookie-1", "bookie-2"]);
    assert_eq!(Path::new(&endpoints.data), dir.canonicalize().unwrap());
    serves(&endpoints);
    local.sigkill();

    // The default lease ttl is 10 s: a restart waiting out the old registrations would show.
    let began = now();
    let local = Local::launch(&dir, &[]);
    let endpoints = local.ready(WAIT);
    let took = began.elapsed();
    assert!(took < PROMPT, "restart after SIGKILL took {took:?}; log:\n{}", local.log());
    serves(&endpoints);
    let status = local.terminate();
    assert!(status.success(), "{status:?}");

    // After a clean stop, the next start finds no registration left and its data in place.
    let local = Local::launch(&dir, &["--bookies", "4"]);
    let endpoints = local.ready(WAIT);
    assert_eq!(endpoints.bookies.len(), 4);
    serves(&endpoints);
    assert!(local.terminate().success());
}

/// The one `error:` line of a refused start (info logs may come before it).
fn error_line(log: &str) -> &str {
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    errors[0]
}

#[test]
fn dlog_local_refusals_are_one_line_and_fail() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cluster");
    let (status, log) = Local::launch(&dir, &["--bookies", "0"]).refused();
    assert!(!status.success());
    assert_eq!(log.trim_end().lines().count(), 1, "{log}");
    assert!(log.starts_with("error: invalid options: bookies 0 is not in 1..="), "{log}");

    // The directory in use by another `dlog local`.
    let running = Local::launch(&dir, &[]);
    running.ready(WAIT);
    let (status, log) = Local::launch(&dir, &[]).refused();
    assert!(!status.success());
    assert!(error_line(&log).contains("in use by another dlog local cluster"), "{log}");
    assert!(running.terminate().success());

    // The metadata port taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, log) = Local::launch_on(&dir, &addr, &[]).refused();
    assert!(!status.success());
    assert!(error_line(&log).starts_with(&format!("error: serving the metadata on {addr}")), "{log}");
}

/// A fresh client's reader rides out bookies that are briefly unregistered (their leases
/// lost, as in a store outage, and registering again): it retries for about 3 s (reader
/// rounds), and the client asks the registry again every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_reader_rides_out_bookies_registering_again() {
    let dir = tempfile::tempdir().unwrap();
    // A short ttl: a bookie notices its lease is gone within a third of it, as the chaos
    // test's bookies (2 s) do after an etcd pause.
    let short = LocalClusterOptions { lease_ttl: Duration::from_millis(1500), ..options(3) };
    let cluster = start(dir.path(), short).await.unwrap();
    let segment = {
        let writer_client = client(&cluster);
        let quorum = QuorumSizes::new(3, 3, 2).unwrap();
        let writer = writer_client.create_segment(quorum, Bytes::from_static(KEY), None).await.unwrap();
        for entry in 0..20 {
            tokio::time::timeout(WAIT, writer.add(payload(entry))).await.unwrap().unwrap();
        }
        tokio::time::timeout(WAIT, writer.close()).await.unwrap().unwrap();
        writer.id()
    };
    let registry = BookieRegistry::new(cluster.store());
    for (id, _) in cluster.bookies() {
        let lease = registry.bookie(&id).await.unwrap().expect("registered").lease.expect("a lease");
        cluster.store().revoke(lease).await.unwrap();
    }
    assert_eq!(registered(cluster.store()).await, [], "every lease gone: nobody registered");
    let reader_client = client(&cluster);
    let mut reader = reader_client.open_reader(segment, 0).await.unwrap();
    for entry in 0..20 {
        let item = tokio::time::timeout(WAIT, reader.next()).await.unwrap();
        assert!(
            matches!(&item, Some(ReadItem::Entry(e, bytes)) if *e == entry && *bytes == payload(entry)),
            "{item:?}"
        );
    }
    shutdown(cluster).await;
}
