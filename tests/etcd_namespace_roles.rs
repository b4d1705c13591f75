//! Per-namespace roles on etcd under the log API and the `dlog` commands, end to end
//! (docs/metadata.md, "Per-namespace permissions"): a real etcd with its authentication on,
//! three bookies in this process registered by `root`, and the two roles an operator makes
//! for namespace `orders` as that section says: a writer (readwrite on the namespace's key and
//! prefixes, and on the shared `segments/`, `idgen/`, `deletions/`; read on `bookies/`) and a
//! reader (read on the same keys). What it proves:
//! - a namespace URI carries the etcd store's own parameters next to `namespace=`
//!   (`etcd://.../roles?user=..&password_file=..&namespace=orders`), in the log API and in
//!   `dlog write` / `dlog read` (`NAMESPACE/LOG` adds `&namespace=`);
//! - the writer role creates a log, writes across rolled segments, truncates (queuing the
//!   old segments' deletions) and closes; the reader role reads every record after the
//!   truncation point once, in order, with the bytes written;
//! - every write the reader role tries (creating a log, opening a writer, truncating) is
//!   refused with `Unauthorized` and changes nothing: no lock taken, no epoch bumped, no
//!   segment fenced or deleted;
//! - the reader role also tails: a reader at the tail (a watch from "now") gets what the
//!   writer appends next;
//! - the `orders` writer is refused namespace `billing` (listing, creating, opening a writer,
//!   reading), and nothing of `billing` changes; a command refused so prints one line.
//!
//! Bounded: every wait has a deadline; etcd and every command are killed when the test ends.
#![cfg(feature = "etcd")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use dlog::log::{Dlsn, LogError, Namespace, NamespaceConfig, ReaderConfig, Record, StartPosition};
use dlog_metadata::etcd_server::{EtcdSecurity, EtcdServer};
use dlog_metadata::etcd_store::connect_client;
use dlog_metadata::{EtcdUri, LogMetadataStore, MetaError};
use etcd_client::Permission;

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;

use cluster::Cluster;

/// The key scope in etcd.
const SCOPE: &str = "roles";
/// Longest any one step may take.
const WAIT: Duration = Duration::from_secs(30);

/// etcd's roles for namespace `ns` in `SCOPE`, as docs/metadata.md gives them: `writer` with
/// readwrite where `reader` has read.
async fn make_roles(admin: &mut etcd_client::Client, ns: &str) {
    let s = format!("/{SCOPE}");
    for (role, writes) in [(format!("{ns}-writer"), true), (format!("{ns}-reader"), false)] {
        admin.role_add(role.as_str()).await.unwrap();
        let grant = |key: String| if writes { Permission::read_write(key) } else { Permission::read(key) };
        // The namespace's own key exactly: a prefix would also cover `namespaces/<ns>2`.
        admin.role_grant_permission(role.as_str(), grant(format!("{s}/namespaces/{ns}"))).await.unwrap();
        for prefix in
            [format!("{s}/logs/{ns}/"), format!("{s}/log-segments/{ns}/"), format!("{s}/locks/{ns}/")]
        {
            admin.role_grant_permission(role.as_str(), grant(prefix).with_prefix()).await.unwrap();
        }
        // Shared by every namespace (keyed by segment id): the isolation this layout lacks.
        let shared: &[&str] = if writes { &["segments/", "idgen/", "deletions/"] } else { &["segments/"] };
        for prefix in shared {
            admin
                .role_grant_permission(role.as_str(), grant(format!("{s}/{prefix}")).with_prefix())
                .await
                .unwrap();
        }
        let bookies = Permission::read(format!("{s}/bookies/")).with_prefix();
        admin.role_grant_permission(role.as_str(), bookies).await.unwrap();
    }
}

/// `user` with `role` and its password in a file under `dir`: the store URI it connects with.
async fn make_user(
    admin: &mut etcd_client::Client,
    server: &EtcdServer,
    dir: &Path,
    user: &str,
    role: &str,
) -> String {
    let password = format!("{user}-secret");
    admin.user_add(user, password.as_str(), None).await.unwrap();
    admin.user_grant_role(user, role).await.unwrap();
    let file = dir.join(format!("{user}.password"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    format!("etcd://{}/{SCOPE}?user={user}&password_file={}", server.endpoint(), file.display())
}

/// Refused by etcd's permissions (or authentication): the error says so.
#[track_caller]
fn assert_refused<T>(result: Result<T, LogError>, what: &str) {
    match result {
        Err(LogError::Metadata(MetaError::Unauthorized(_))) => {}
        Err(e) => panic!("{what}: expected Unauthorized from etcd, got {e:?}"),
        Ok(_) => panic!("{what}: expected Unauthorized from etcd, it worked"),
    }
}

/// Every record of `log` from its head to its tail.
async fn read_all(ns: &Namespace, log: &str) -> Vec<(Dlsn, u64, Bytes)> {
    let config = ReaderConfig { stop_at_tail: true };
    let mut reader = ns.open_reader_with(log, StartPosition::Head, config).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = tokio::time::timeout(WAIT, reader.next()).await.unwrap().unwrap() {
        out.push((r.dlsn, r.txid, r.payload));
    }
    out
}

/// `f` on `runtime`, within `WAIT`.
#[track_caller]
fn within<F: std::future::Future>(runtime: &tokio::runtime::Handle, f: F) -> F::Output {
    runtime.block_on(async { tokio::time::timeout(WAIT, f).await.expect("done within WAIT") })
}

/// `dlog ARGS` against `metadata`, to its end (within `WAIT`): status, stdout, stderr.
fn dlog(args: &[&str], metadata: &str, input: &[u8]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command.args(args).args(["--metadata", metadata]);
    command.env_remove("DLOG_METADATA").env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    let output = process::run_fed(command, input, WAIT);
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[test]
fn a_namespace_role_drives_its_logs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let root_password = dir.path().join("root.password");
    std::fs::write(&root_password, "r00t-secret\n").unwrap();
    let security = EtcdSecurity { tls: None, root_password_file: Some(root_password) };
    let server = EtcdServer::start_secure(security).unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start_on(&server.uri(SCOPE), 3);
    let runtime = cluster.runtime.handle().clone();

    // `billing`, another namespace, with a log of its own.
    let root = LogMetadataStore::new(cluster.store.clone());
    within(&runtime, root.create_namespace("billing")).unwrap();
    within(&runtime, root.create_log("billing", "ledger")).unwrap();
    let (writer_uri, reader_uri) = within(&runtime, async {
        let mut admin = connect_client(&EtcdUri::parse(&server.uri(SCOPE)).unwrap()).await.unwrap();
        make_roles(&mut admin, "orders").await;
        let writer = make_user(&mut admin, &server, dir.path(), "orders-app", "orders-writer").await;
        let reader = make_user(&mut admin, &server, dir.path(), "orders-viewer", "orders-reader").await;
        (writer, reader)
    });

    // The writer role: a log written across rolled segments, then truncated.
    let mut config = NamespaceConfig::default();
    config.writer.roll_bytes = 4 << 10;
    let orders =
        within(&runtime, Namespace::open_with(&format!("{writer_uri}&namespace=orders"), config)).unwrap();
    within(&runtime, orders.create_log("events")).unwrap();
    let writer = within(&runtime, orders.open_writer("events")).unwrap();
    let written: Vec<Bytes> =
        (0..300).map(|i| Bytes::from(format!("order-{i:04}-{}", "x".repeat(100)))).collect();
    let acked = within(&runtime, async {
        let mut acked = Vec::new();
        // In batches: a roll happens between entries, and one batch fills a few.
        for batch in written.chunks(20) {
            let pending: Vec<_> = batch.iter().map(|p| writer.write(Record::new(p.clone()))).collect();
            for p in pending {
                acked.push(p.await.unwrap());
            }
        }
        acked
    });
    within(&runtime, writer.close()).unwrap();
    let segments = within(&runtime, orders.log_info("events")).unwrap().segments;
    assert!(segments.len() >= 4, "the log rolled: {} segments", segments.len());
    let kept_from = Dlsn::segment_start(segments[2].seq);
    within(&runtime, orders.truncate("events", kept_from)).unwrap();
    let kept: Vec<_> = acked.iter().zip(&written).filter(|(a, _)| a.dlsn >= kept_from).collect();
    assert!(!kept.is_empty() && kept.len() < written.len());

    // The reader role: every record kept, once, in order, with its bytes.
    let viewer = within(&runtime, Namespace::open(&format!("{reader_uri}&namespace=orders"))).unwrap();
    let read = within(&runtime, read_all(&viewer, "events"));
    let expected: Vec<_> = kept.iter().map(|(a, p)| (a.dlsn, a.txid, (*p).clone())).collect();
    assert_eq!(read, expected, "the reader sees what was kept, once, in order");

    // ... and changes nothing.
    let before = within(&runtime, orders.log_info("events")).unwrap();
    assert_refused(within(&runtime, viewer.create_log("other")), "the reader creates a log");
    assert_refused(within(&runtime, viewer.open_writer("events")), "the reader opens a writer");
    let tail = within(&runtime, viewer.tail_position("events")).unwrap();
    assert_refused(within(&runtime, viewer.truncate("events", tail)), "the reader truncates");
    let after = within(&runtime, orders.log_info("events")).unwrap();
    assert_eq!(after.meta, before.meta, "no epoch bumped, no truncation");
    assert_eq!(after.segments, before.segments);
    assert!(!within(&runtime, orders.log_exists("other")).unwrap());
    assert!(within(&runtime, root.writer_lock("orders", "events")).unwrap().is_none(), "no lock taken");
    assert_eq!(within(&runtime, read_all(&orders, "events")), expected, "nothing fenced or deleted");

    // The reader role tails: a reader at the tail (its watch starts from "now") gets what
    // the writer role appends next.
    let mut tail = within(&runtime, viewer.open_reader("events", StartPosition::Tail)).unwrap();
    let writer = within(&runtime, orders.open_writer("events")).unwrap();
    let more: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("more-{i}"))).collect();
    for payload in &more {
        within(&runtime, writer.write(Record::new(payload.clone()))).unwrap();
    }
    let tailed: Vec<Bytes> =
        (0..more.len()).map(|_| within(&runtime, tail.next()).unwrap().expect("a record").payload).collect();
    assert_eq!(tailed, more, "the tailing reader gets the new records in order");
    within(&runtime, writer.close()).unwrap();
    drop(tail);

    // The writer role in another namespace: refused at each step, nothing of it changes.
    let billing = within(&runtime, Namespace::open(&format!("{writer_uri}&namespace=billing"))).unwrap();
    assert_refused(within(&runtime, billing.logs()), "listing billing's logs");
    assert_refused(within(&runtime, billing.create_log("stolen")), "creating a log in billing");
    assert_refused(within(&runtime, billing.open_writer("ledger")), "opening billing's writer");
    assert_refused(within(&runtime, billing.open_reader("ledger", StartPosition::Head)), "reading billing");
    let billing_logs = within(&runtime, root.logs("billing")).unwrap();
    assert_eq!(billing_logs.iter().map(|(name, _, _)| name.as_str()).collect::<Vec<_>>(), ["ledger"]);
    assert!(within(&runtime, root.writer_lock("billing", "ledger")).unwrap().is_none());

    // The commands with the same URIs: `NAMESPACE/LOG` adds `&namespace=` to them.
    let lines: String = (0..50).map(|i| format!("cli-{i}\n")).collect();
    let (ok, _, stderr) = dlog(&["write", "orders/cli"], &writer_uri, lines.as_bytes());
    assert!(ok, "dlog write: {stderr}");
    let (ok, stdout, stderr) = dlog(&["read", "orders/cli"], &reader_uri, b"");
    assert!(ok, "dlog read: {stderr}");
    assert_eq!(stdout, lines, "dlog read prints what dlog write wrote");
    let (ok, _, stderr) = dlog(&["read", "billing/ledger"], &writer_uri, b"");
    assert!(!ok, "another namespace's log is refused");
    let stderr_lines: Vec<&str> = stderr.lines().collect();
    assert!(
        stderr_lines.len() == 1
            && stderr_lines[0].starts_with("error: ")
            && stderr.contains("permission denied (reading /roles/log-segments/billing/ledger/)"),
        "one line saying why, naming the key: {stderr:?}"
    );
    let (ok, _, stderr) = dlog(&["write", "billing/cli"], &writer_uri, b"x\n");
    assert!(!ok && stderr.contains("permission denied"), "{stderr}");
    assert!(within(&runtime, root.log("billing", "cli")).unwrap().is_none(), "nothing written");

    within(&runtime, viewer.shutdown());
    within(&runtime, billing.shutdown());
    within(&runtime, orders.shutdown());
    drop(cluster);
    drop(server);
}
