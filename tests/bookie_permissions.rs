//! Per-namespace permissions enforced by bookies (issue 9), end to end: a `LocalCluster` of
//! three bookies whose security is `auth = "token"` with a permissions file, as `dlog bookie`
//! and `dlog local` take them; clients are the log API (`Namespace` over `dlog://`), the
//! replication client, and raw requests through the transport.
//!
//! The identities: `orders-app` writes namespace `orders`; `analyst` reads `orders`; `admin`
//! writes everything (`"*"`); `stranger` has a valid token and no permissions. Covered: each
//! writes and reads what it was granted; a write, a fence, a recovery, a read or a delete it
//! was not granted is refused with `Unauthorized` (typed at every layer: `LogError`,
//! `WriterError`, `RecoveryError`, `ReaderError`), and the bookies hold nothing of it (no
//! entry, no LAC, the segment not fenced: its writer goes on); segments of no log are the
//! admin's; a delete of a segment whose metadata is gone needs some write grant; a connection
//! cannot authenticate again as someone else; a bad permissions file is refused by name.

use std::time::Duration;

use bytes::Bytes;
use dlog::bookie::auth::token_hash_hex;
use dlog::bookie::{AuthMode, SecurityArgs, SecuritySettings};
use dlog::local_cluster::{LocalCluster, LocalClusterOptions};
use dlog::log::{LogError, Namespace, NamespaceConfig, ReaderConfig, Record, StartPosition};
use dlog_metadata::schema::SegmentOwner;
use dlog_protocol::{Request, Response, Status};
use dlog_replication::client::{ReadItem, ReplicationClient, ReplicationConfig, ReplicationError};
use dlog_replication::quorum::QuorumSizes;
use dlog_replication::recovery::RecoveryError;
use dlog_replication::segment_reader::ReaderError;
use dlog_replication::segment_writer::WriterError;
use dlog_replication::transport::{AuthToken, ClientConfig, ClientPool, ClientSecurity};

const WAIT: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"permissions-test";
const IDENTITIES: [&str; 4] = ["orders-app", "analyst", "admin", "stranger"];
const PERMISSIONS: &str = r#"
[orders-app]
write = ["orders"]
[analyst]
read = ["orders"]
[admin]
write = ["*"]
"#;

fn token_of(identity: &str) -> String {
    format!("token-of-{identity}-5b2e9d")
}

fn security_of(identity: &str) -> ClientSecurity {
    ClientSecurity { tls: None, token: Some(AuthToken::new(token_of(identity)).unwrap()) }
}

/// A cluster of three bookies requiring tokens, with `PERMISSIONS`.
async fn cluster(dir: &tempfile::TempDir) -> LocalCluster {
    let tokens: String = IDENTITIES
        .iter()
        .map(|id| format!("{id} = \"{}\"\n", token_hash_hex(token_of(id).as_bytes())))
        .collect();
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(&tokens_file, tokens).unwrap();
    let permissions_file = dir.path().join("permissions.toml");
    std::fs::write(&permissions_file, PERMISSIONS).unwrap();
    let security = SecuritySettings::from_flags(SecurityArgs {
        auth: Some(AuthMode::Token),
        auth_tokens_file: Some(tokens_file),
        permissions_file: Some(permissions_file),
        ..SecurityArgs::default()
    })
    .unwrap();
    let options = LocalClusterOptions {
        bookies: 3,
        metadata_listen: Some("127.0.0.1:0".parse().unwrap()),
        security,
        ..LocalClusterOptions::default()
    };
    let cluster_dir = dir.path().join("cluster");
    let start = LocalCluster::start(&cluster_dir, options);
    tokio::time::timeout(WAIT, start).await.expect("start within WAIT").unwrap()
}

async fn namespace(cluster: &LocalCluster, name: &str, identity: &str) -> Namespace {
    let mut config = NamespaceConfig::default();
    config.replication.transport.security = security_of(identity);
    let uri = format!("{}?namespace={name}", cluster.metadata_uri());
    Namespace::open_with(&uri, config).await.unwrap()
}

fn client(cluster: &LocalCluster, identity: &str) -> ReplicationClient<dlog_metadata::AnyStore> {
    let mut config = ReplicationConfig::default();
    config.transport.security = security_of(identity);
    ReplicationClient::new(cluster.store(), tokio::runtime::Handle::current(), config).unwrap()
}

fn pool(identity: &str) -> ClientPool {
    let config = ClientConfig { security: security_of(identity), ..ClientConfig::default() };
    ClientPool::new(config).unwrap()
}

/// The status of `request` sent by `identity` to every bookie of `cluster`.
async fn statuses(cluster: &LocalCluster, identity: &str, request: Request) -> Vec<Status> {
    let pool = pool(identity);
    let mut out = Vec::new();
    for (_, addr) in cluster.bookies() {
        let answer = tokio::time::timeout(WAIT, pool.submit(addr, request.clone())).await.unwrap();
        out.push(match answer.unwrap() {
            Response::Refused { status, .. } => status,
            _ => Status::Ok,
        });
    }
    out
}

/// Whether no bookie holds anything of `segment`: every READ_LAC the admin sends answers
/// `NoSuchSegment` (no entry ever reached it).
async fn no_bookie_holds(cluster: &LocalCluster, segment: u64) -> bool {
    let lac = Request::ReadLastAddConfirmed { segment, fence: None };
    statuses(cluster, "admin", lac).await.iter().all(|s| *s == Status::NoSuchSegment)
}

fn owned_by(namespace: &str) -> Option<SegmentOwner> {
    Some(SegmentOwner { namespace: namespace.into(), log: "raw".into(), seq: 1 })
}

async fn read_log(ns: &Namespace, log: &str) -> Result<Vec<Bytes>, LogError> {
    let config = ReaderConfig { stop_at_tail: true };
    let mut reader = ns.open_reader_with(log, StartPosition::Head, config).await?;
    let mut out = Vec::new();
    while let Some(record) = tokio::time::timeout(WAIT, reader.next()).await.expect("read within WAIT")? {
        out.push(record.payload);
    }
    Ok(out)
}

fn is_unauthorized(result: &Result<impl std::fmt::Debug, LogError>, needle: &str) -> bool {
    matches!(result, Err(LogError::Unauthorized { reason }) if reason.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_written_and_read_by_their_namespaces_grantees_only() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir).await;

    // orders-app writes its namespace.
    let orders = namespace(&cluster, "orders", "orders-app").await;
    orders.create_log("payments").await.unwrap();
    let writer = orders.open_writer("payments").await.unwrap();
    for i in 0..20 {
        writer.write(Record::new(format!("payment-{i}"))).await.unwrap();
    }
    writer.close().await.unwrap();

    // ... and nothing else: the first write is refused, typed, and no bookie holds it.
    let clicks = namespace(&cluster, "clicks", "orders-app").await;
    clicks.create_log("views").await.unwrap();
    let writer = clicks.open_writer("views").await.unwrap();
    let refused = writer.write(Record::new("not mine")).await;
    assert!(is_unauthorized(&refused, "orders-app may not write"), "{refused:?}");
    let segments = clicks.log_info("views").await.unwrap().segments;
    assert!(!segments.is_empty(), "the segment was created (the metadata is not the bookies')");
    for segment in &segments {
        assert!(no_bookie_holds(&cluster, segment.segment_id).await, "segment {}", segment.segment_id);
    }

    // analyst reads orders, and may not write there (nothing stored).
    let as_analyst = namespace(&cluster, "orders", "analyst").await;
    let read = read_log(&as_analyst, "payments").await.unwrap();
    assert_eq!(read.len(), 20);
    assert_eq!(read[7], Bytes::from("payment-7"));
    let writer = as_analyst.open_writer("payments").await.unwrap();
    let refused = writer.write(Record::new("forged")).await;
    assert!(is_unauthorized(&refused, "analyst may not write"), "{refused:?}");
    let segments = as_analyst.log_info("payments").await.unwrap().segments;
    let analysts = segments.last().unwrap().segment_id;
    assert!(no_bookie_holds(&cluster, analysts).await);

    // stranger authenticates, but has no permissions at all; analyst has none on clicks.
    let as_stranger = namespace(&cluster, "orders", "stranger").await;
    let refused = read_log(&as_stranger, "payments").await;
    assert!(is_unauthorized(&refused, "stranger may not read"), "{refused:?}");
    let refused = read_log(&namespace(&cluster, "clicks", "analyst").await, "views").await;
    assert!(matches!(refused, Err(LogError::Unauthorized { .. })), "{refused:?}");

    // admin reads everything.
    let as_admin = namespace(&cluster, "orders", "admin").await;
    assert_eq!(read_log(&as_admin, "payments").await.unwrap(), read);

    // orders-app deletes a log of its own: the truncation's deletes are allowed (the bookies
    // cached the segments' namespace; one that restarted since finds the queued deletion
    // instead, segment_owners.rs), and the data is gone from the bookies.
    orders.create_log("refunds").await.unwrap();
    let writer = orders.open_writer("refunds").await.unwrap();
    for i in 0..5 {
        writer.write(Record::new(format!("refund-{i}"))).await.unwrap();
    }
    writer.close().await.unwrap();
    let refunds = orders.log_info("refunds").await.unwrap().segments;
    orders.delete_log("refunds").await.unwrap();
    let queued = dlog_metadata::LogMetadataStore::new(cluster.store()).pending_deletions().await.unwrap();
    assert!(queued.is_empty(), "every deletion confirmed: {queued:?}");
    for segment in refunds {
        let read = Request::Read { segment: segment.segment_id, entry: 0, fence: None };
        assert!(statuses(&cluster, "admin", read).await.iter().all(|s| *s == Status::NoSuchSegment));
    }
    tokio::time::timeout(WAIT, cluster.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_recovery_and_reads_need_their_grants() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir).await;
    let quorum = QuorumSizes::new(3, 3, 2).unwrap();
    let key = Bytes::from_static(KEY);
    let writer_client = client(&cluster, "orders-app");
    let segment = writer_client.create_segment(quorum, key.clone(), owned_by("orders")).await.unwrap();
    for i in 0..5u64 {
        segment.add(Bytes::from(format!("entry-{i}"))).await.unwrap();
    }

    // A reader may not fence: recovery is refused, typed, and the writer goes on.
    let analyst = client(&cluster, "analyst");
    let refused = analyst.recover_segment(segment.id(), key.clone()).await;
    assert!(
        matches!(&refused, Err(ReplicationError::Recovery(RecoveryError::Unauthorized(why))) if why.contains("analyst")),
        "{refused:?}"
    );
    let fence = Request::ReadLastAddConfirmed { segment: segment.id(), fence: Some(key.clone()) };
    assert!(statuses(&cluster, "analyst", fence).await.iter().all(|s| *s == Status::Unauthorized));
    assert_eq!(segment.add(Bytes::from_static(b"entry-5")).await.unwrap(), 5, "not fenced");

    // It may read (the LAC trails the acknowledgements by one add: 0..=4 at least).
    let mut reader = analyst.open_reader(segment.id(), 0).await.unwrap();
    for i in 0..5u64 {
        let item = tokio::time::timeout(WAIT, reader.next()).await.unwrap();
        assert!(
            matches!(&item, Some(ReadItem::Entry(e, bytes)) if *e == i && bytes == &format!("entry-{i}"))
        );
    }
    // A stranger's reader fails at once, typed (not after rounds of retries).
    let stranger = client(&cluster, "stranger");
    let mut reader = stranger.open_reader(segment.id(), 0).await.unwrap();
    let item = tokio::time::timeout(WAIT, reader.next()).await.unwrap();
    assert!(matches!(&item, Some(ReadItem::Failed(ReaderError::Unauthorized { .. }))), "{item:?}");

    // A writer of another namespace is refused, typed, on a segment it created itself.
    let foreign = writer_client.create_segment(quorum, key.clone(), owned_by("clicks")).await.unwrap();
    let refused = foreign.add(Bytes::from_static(b"x")).await;
    assert!(matches!(&refused, Err(WriterError::Unauthorized(_))), "{refused:?}");
    assert!(no_bookie_holds(&cluster, foreign.id()).await);

    // The admin may recover it: the writer is fenced from then on.
    let admin = client(&cluster, "admin");
    let end = admin.recover_segment(segment.id(), key).await.unwrap();
    assert!(end.last_entry >= Some(4), "{end:?}");
    let fenced = segment.add(Bytes::from_static(b"late")).await;
    assert!(matches!(fenced, Err(WriterError::Fenced)), "{fenced:?}");
    tokio::time::timeout(WAIT, cluster.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_of_no_log_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir).await;
    let quorum = QuorumSizes::new(3, 3, 2).unwrap();
    let key = Bytes::from_static(KEY);

    // A segment of no log is the admin's only ("*").
    let orders_app = client(&cluster, "orders-app");
    let unowned = orders_app.create_segment(quorum, key.clone(), None).await.unwrap();
    let refused = unowned.add(Bytes::from_static(b"x")).await;
    assert!(matches!(&refused, Err(WriterError::Unauthorized(_))), "{refused:?}");
    assert!(no_bookie_holds(&cluster, unowned.id()).await);
    let admin = client(&cluster, "admin");
    let admins = admin.create_segment(quorum, key.clone(), None).await.unwrap();
    assert_eq!(admins.add(Bytes::from_static(b"x")).await.unwrap(), 0);

    // Deleting a segment with metadata needs write on its namespace: the analyst's delete is
    // refused and the data stays readable.
    let orders = orders_app.create_segment(quorum, key.clone(), owned_by("orders")).await.unwrap();
    orders.add(Bytes::from_static(b"keep me")).await.unwrap();
    let delete = Request::DeleteSegment { segment: orders.id() };
    assert!(statuses(&cluster, "analyst", delete.clone()).await.iter().all(|s| *s == Status::Unauthorized));
    let read = Request::Read { segment: orders.id(), entry: 0, fence: None };
    // (Qa of 3 acknowledged the add: the third copy may still be on its way.)
    let read = statuses(&cluster, "analyst", read).await;
    assert!(read.iter().filter(|s| **s == Status::Ok).count() >= 2, "{read:?}");
    assert!(read.iter().all(|s| matches!(s, Status::Ok | Status::NoSuchEntry)), "{read:?}");
    assert_eq!(orders.add(Bytes::from_static(b"still writable")).await.unwrap(), 1);
    // A segment with neither metadata nor a queued deletion (never created: a delete would
    // mark the id deleted for good, before its namespace's writer creates it) is "*"'s only.
    let unborn = Request::DeleteSegment { segment: u64::MAX / 3 };
    assert!(statuses(&cluster, "analyst", unborn.clone()).await.iter().all(|s| *s == Status::Unauthorized));
    assert!(
        statuses(&cluster, "orders-app", unborn.clone()).await.iter().all(|s| *s == Status::Unauthorized)
    );
    assert!(statuses(&cluster, "admin", unborn).await.iter().all(|s| *s == Status::Ok));
    // Its writer may delete an orders segment (the data goes once the metadata is gone).
    assert!(statuses(&cluster, "orders-app", delete).await.iter().all(|s| *s == Status::Ok));
    tokio::time::timeout(WAIT, cluster.shutdown()).await.unwrap();
}

#[test]
fn bad_permissions_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[app]\nwrite = [\"no/slashes\"]\n").unwrap();
    for (path, needle) in [(missing, "No such file"), (bad, "namespace name")] {
        let args = SecurityArgs { permissions_file: Some(path), ..SecurityArgs::default() };
        let error = SecuritySettings::from_flags(args).unwrap_err().to_string();
        assert!(error.contains("--permissions-file") && error.contains(needle), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cannot_change_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir).await;
    let quorum = QuorumSizes::new(3, 3, 2).unwrap();
    let key = Bytes::from_static(KEY);
    let orders_app = client(&cluster, "orders-app");
    let segment = orders_app.create_segment(quorum, key.clone(), owned_by("orders")).await.unwrap();
    segment.add(Bytes::from_static(b"entry-0")).await.unwrap();
    let (_, addr) = cluster.bookies()[0];
    let add = |entry: u64| Request::Add {
        segment: segment.id(),
        entry,
        last_add_confirmed: None,
        master_key: key.clone(),
        payload: Bytes::from_static(b"raw"),
        recovery: true,
    };
    let status = |answer: Response| match answer {
        Response::Refused { status, .. } => status,
        _ => Status::Ok,
    };
    // One connection: orders-app's decision on the segment is made (and kept); an AUTH step
    // as another identity is refused and changes nothing (AU2); the same one is accepted.
    let orders = pool("orders-app");
    assert_eq!(status(orders.submit(addr, add(10)).await.unwrap()), Status::Ok);
    let auth = |identity: &str| Request::Auth { mechanism: 1, token: Bytes::from(token_of(identity)) };
    assert_eq!(status(orders.submit(addr, auth("analyst")).await.unwrap()), Status::Unauthorized);
    assert_eq!(status(orders.submit(addr, auth("orders-app")).await.unwrap()), Status::Ok);
    assert_eq!(status(orders.submit(addr, add(11)).await.unwrap()), Status::Ok, "still orders-app");
    // The analyst's own connection is refused, and nothing of it is stored.
    let analyst = pool("analyst");
    assert_eq!(status(analyst.submit(addr, add(12)).await.unwrap()), Status::Unauthorized);
    let read = Request::Read { segment: segment.id(), entry: 12, fence: None };
    assert_eq!(status(analyst.submit(addr, read).await.unwrap()), Status::NoSuchEntry, "nothing stored");
    tokio::time::timeout(WAIT, cluster.shutdown()).await.unwrap();
}
