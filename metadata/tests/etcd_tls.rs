//! TLS and authentication to etcd, configured by the metadata URI alone (metadata_uri.rs
//! MU1-MU4, etcd_store.rs ES4), against a real etcd (`EtcdServer::start_secure`) with
//! certificates each test makes with rcgen: a CA, a server certificate whose only name is
//! the IP SAN 127.0.0.1, client certificates, and a rogue CA nobody trusts.
//!
//! Covered: the store over TLS (get, create, compare-and-set, list, watch, lease; through
//! `AnyStore::open` as every binary opens it); a client trusting the wrong CA, speaking plain
//! gRPC to a TLS etcd, or naming the server by a name its certificate lacks fails with
//! `Unavailable` saying why, within the request timeout; under `--client-cert-auth` a client
//! without a certificate or with one from the rogue CA is refused; with etcd's authentication
//! on, the right password works, a wrong one and none at all are `Unauthorized` and write
//! nothing; a user with read-only permission on one namespace's keys reads its logs through
//! `LogMetadataStore` but cannot create one (`Unauthorized`), and a watch it may not read
//! ends with `Unauthorized` instead of reconnecting forever; files missing, unreadable or not
//! PEM, and a key that does not go with its certificate, are `Invalid` naming the file.
#![cfg(feature = "etcd")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::etcd_server::{EtcdSecurity, EtcdServer, ServerTls};
use dlog_metadata::etcd_store::{REQUEST_TIMEOUT, connect_client};
use dlog_metadata::{
    AnyStore, Cond, EtcdIdentity, EtcdStore, EtcdTls, EtcdUri, EventKind, LogMetadataStore, MetaError,
    MetadataStore, Op,
};
use etcd_client::Permission;
use rcgen::{ExtendedKeyUsagePurpose, SanType};

#[path = "../../tests/support/pki.rs"]
mod pki;
use pki::{Pem, leaf, new_ca, write_file, write_pem};

impl Pem {
    fn identity(&self) -> EtcdIdentity {
        EtcdIdentity { cert: self.cert.clone(), key: self.key.clone() }
    }
}

/// Every file a test needs, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    rogue_ca: PathBuf,
    /// etcd's certificate: the IP SAN 127.0.0.1 and nothing else.
    server: Pem,
    /// A client certificate signed by the CA (CN "dlog-client").
    client: Pem,
    /// A client certificate signed by the rogue CA.
    intruder: Pem,
    /// A client certificate signed by the CA (CN "stranger", no etcd user of that name).
    stranger: Pem,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca_cert, ca) = new_ca("dlog etcd test CA");
        let (rogue_cert, rogue) = new_ca("rogue CA");
        let write = |name: &str, text: &str| write_file(dir.path(), name, text);
        let pem = |name: &str, leaf: (String, String)| write_pem(dir.path(), name, leaf);
        let ip = SanType::IpAddress("127.0.0.1".parse().unwrap());
        let server = leaf(&ca, "etcd", vec![ip], ExtendedKeyUsagePurpose::ServerAuth);
        let client = leaf(&ca, "dlog-client", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        let intruder = leaf(&rogue, "intruder", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = leaf(&ca, "stranger", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            rogue_ca: write("rogue-ca.pem", &rogue_cert.pem()),
            server: pem("server", server),
            client: pem("client", client),
            intruder: pem("intruder", intruder),
            stranger: pem("stranger", stranger),
            dir,
        }
    }

    /// Writes `text` to the file `name` and names it.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        write_file(self.dir.path(), name, text)
    }

    /// etcd served over TLS; with `client_certs`, under `--client-cert-auth` (the harness
    /// presenting the CA's client certificate).
    fn server_tls(&self, client_certs: bool) -> ServerTls {
        ServerTls {
            cert: self.server.cert.clone(),
            key: self.server.key.clone(),
            client: EtcdTls { ca: self.ca.clone(), identity: client_certs.then(|| self.client.identity()) },
        }
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `etcds://` to `server` with `scope` and `query` (the parameters after `?`).
fn etcds(server: &EtcdServer, scope: &str, query: &str) -> String {
    format!("etcds://{}/{scope}?{query}", server.endpoint())
}

/// A store call that must fail: its error, asserting it came within the request timeout
/// (plus slack for a loaded machine), not after a hang.
async fn refused<T: std::fmt::Debug>(call: impl Future<Output = Result<T, MetaError>>) -> MetaError {
    match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), call).await {
        Ok(Err(e)) => e,
        Ok(Ok(v)) => panic!("expected a refusal, got {v:?}"),
        Err(_) => panic!("no answer within the request timeout"),
    }
}

/// What a store opened from `uri` answers to one `get` (connect and call: a lazy connection
/// shows its failure at the first call).
async fn first_get(uri: &str) -> MetaError {
    refused(async {
        let store = EtcdStore::connect(uri).await?;
        store.get("k").await
    })
    .await
}

async fn next_event(watch: &mut dlog_metadata::Watch) -> Result<dlog_metadata::Event, MetaError> {
    tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("an event within 20 s")
}

/// The store over TLS (server authentication only), opened as binaries open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_over_tls() {
    let pki = Pki::new();
    let tls = EtcdSecurity { tls: Some(pki.server_tls(false)), root_password_file: None };
    let server = EtcdServer::start_secure(tls).unwrap_or_else(|e| panic!("{e}"));
    let uri = server.uri("tls");
    assert!(uri.starts_with("etcds://127.0.0.1:") && uri.contains("?ca="), "{uri}");
    let store = Arc::new(AnyStore::open(&uri).await.unwrap());

    let first = store.create("a", b("1"), None).await.unwrap();
    assert!(matches!(store.create("a", b("2"), None).await, Err(MetaError::AlreadyExists(_))));
    let second = store.put_if("a", b("2"), first).await.unwrap();
    match store.put_if("a", b("3"), first).await {
        Err(MetaError::VersionConflict { expected, actual, .. }) => {
            assert_eq!((expected, actual), (Some(first), Some(second)));
        }
        other => panic!("{other:?}"),
    }
    let got = store.get("a").await.unwrap().unwrap();
    assert_eq!((got.value, got.version, got.created), (b("2"), second, first));

    let mut watch = store.watch("w/", second).await.unwrap();
    let lease = store.grant(Duration::from_secs(5)).await.unwrap();
    let leased = Op::Put { key: "w/leased".into(), value: b("x"), cond: Cond::Absent, lease: Some(lease) };
    let put = store.txn(vec![leased]).await.unwrap();
    store.keep_alive(lease).await.unwrap();
    assert_eq!(store.list("w/", None, 0).await.unwrap().items.len(), 1);
    let revoked = store.revoke(lease).await.unwrap();
    let e = next_event(&mut watch).await.unwrap();
    assert_eq!((e.kind, e.key.as_str(), e.version), (EventKind::Put, "w/leased", put));
    let e = next_event(&mut watch).await.unwrap();
    assert_eq!((e.kind, e.key.as_str(), e.version), (EventKind::Delete, "w/leased", revoked));
    assert!(store.get("w/leased").await.unwrap().is_none());
}

/// Clients that cannot verify etcd's certificate, or do not speak TLS, fail fast and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_misnamed_server_is_refused() {
    let pki = Pki::new();
    let tls = EtcdSecurity { tls: Some(pki.server_tls(false)), root_password_file: None };
    let server = EtcdServer::start_secure(tls).unwrap_or_else(|e| panic!("{e}"));

    // The rogue CA did not sign etcd's certificate.
    let wrong_ca = etcds(&server, "s", &format!("ca={}", pki.rogue_ca.display()));
    match first_get(&wrong_ca).await {
        MetaError::Unavailable(m) => assert!(m.contains("certificate"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Plain gRPC to a TLS port.
    match first_get(&format!("etcd://{}/s", server.endpoint())).await {
        MetaError::Unavailable(_) => {}
        other => panic!("{other:?}"),
    }
    // The certificate names 127.0.0.1 only (an IP SAN): "localhost" does not match it, so the
    // name is verified, not only the chain.
    let port = server.endpoint().rsplit_once(':').unwrap().1.to_string();
    let by_name = format!("etcds://localhost:{port}/s?ca={}", pki.ca.display());
    match first_get(&by_name).await {
        MetaError::Unavailable(m) => assert!(m.contains("certificate"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The right CA and the address the certificate names: works.
    let right = etcds(&server, "s", &format!("ca={}", pki.ca.display()));
    assert!(EtcdStore::connect(&right).await.unwrap().get("k").await.unwrap().is_none());
}

/// Under `--client-cert-auth` only clients with a certificate from the trusted CA get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required() {
    let pki = Pki::new();
    let tls = EtcdSecurity { tls: Some(pki.server_tls(true)), root_password_file: None };
    let server = EtcdServer::start_secure(tls).unwrap_or_else(|e| panic!("{e}"));
    let trusted = server.uri("mtls");
    assert!(trusted.contains("&cert=") && trusted.contains("&key="), "{trusted}");
    let store = EtcdStore::connect(&trusted).await.unwrap();
    store.put("k", b("v")).await.unwrap();

    let ca = format!("ca={}", pki.ca.display());
    let without = etcds(&server, "mtls", &ca);
    assert!(matches!(first_get(&without).await, MetaError::Unavailable(_)));
    let intruder = pki.intruder.identity();
    let rogue = etcds(
        &server,
        "mtls",
        &format!("{ca}&cert={}&key={}", intruder.cert.display(), intruder.key.display()),
    );
    assert!(matches!(first_get(&rogue).await, MetaError::Unavailable(_)));
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b("v"));
}

/// etcd's users: the right password works; a wrong one and none are refused, writing nothing.
/// A user allowed to read one namespace reads it through `LogMetadataStore` and can write
/// nothing; a watch it may not read ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_passwords_and_namespace_permissions() {
    let pki = Pki::new();
    let root_password = pki.file("root.password", "r00t-secret\n");
    let security = EtcdSecurity { tls: Some(pki.server_tls(false)), root_password_file: Some(root_password) };
    let mut server = EtcdServer::start_secure(security).unwrap_or_else(|e| panic!("{e}"));
    let root = Arc::new(EtcdStore::connect(&server.uri("auth")).await.unwrap());
    let logs = LogMetadataStore::new(root.clone());
    logs.create_namespace("ns").await.unwrap();
    logs.create_log("ns", "orders").await.unwrap();

    // Users made as an operator would (etcdctl role add / grant-permission / user add): one
    // that may read and write the whole scope, one that may only read namespace `ns`.
    let mut admin = connect_client(&EtcdUri::parse(&server.uri("auth")).unwrap()).await.unwrap();
    admin.role_add("dlog").await.unwrap();
    admin.role_grant_permission("dlog", Permission::read_write("/auth/").with_prefix()).await.unwrap();
    admin.user_add("app", "app-secret", None).await.unwrap();
    admin.user_grant_role("app", "dlog").await.unwrap();
    admin.role_add("ns-reader").await.unwrap();
    // The namespace's own key exactly (a prefix would also cover namespaces/ns2), then its
    // prefixes (docs/metadata.md, "Per-namespace permissions").
    admin.role_grant_permission("ns-reader", Permission::read("/auth/namespaces/ns")).await.unwrap();
    for prefix in ["/auth/logs/ns/", "/auth/log-segments/ns/", "/auth/locks/ns/"] {
        admin.role_grant_permission("ns-reader", Permission::read(prefix).with_prefix()).await.unwrap();
    }
    admin.user_add("reader", "reader-secret", None).await.unwrap();
    admin.user_grant_role("reader", "ns-reader").await.unwrap();

    let ca = format!("ca={}", pki.ca.display());
    let as_user = |user: &str, password: &str| {
        let file = pki.file(&format!("{user}.password"), password);
        etcds(&server, "auth", &format!("{ca}&user={user}&password_file={}", file.display()))
    };

    // The right password: reads and writes in its scope.
    let app = EtcdStore::connect(&as_user("app", "app-secret")).await.unwrap();
    app.put("from-app", b("1")).await.unwrap();
    assert!(app.get("from-app").await.unwrap().is_some());

    // A wrong password: refused when connecting (authentication happens there).
    match refused(EtcdStore::connect(&as_user("app", "wrong"))).await {
        MetaError::Unauthorized(m) => assert!(m.contains("authentication failed"), "{m}"),
        other => panic!("{other:?}"),
    }
    // No credentials: connecting needs none, every call is refused, nothing is written.
    let anonymous = EtcdStore::connect(&etcds(&server, "auth", &ca)).await.unwrap();
    match refused(anonymous.put("from-anonymous", b("1"))).await {
        MetaError::Unauthorized(m) => assert!(m.contains("password_file"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(refused(anonymous.get("from-app")).await, MetaError::Unauthorized(_)));
    assert!(root.get("from-anonymous").await.unwrap().is_none(), "a refused write wrote nothing");
    let mut watch = anonymous.watch("logs/", dlog_metadata::Version(1)).await.unwrap();
    assert!(matches!(next_event(&mut watch).await, Err(MetaError::Unauthorized(_))));

    // Read-only on namespace `ns`: its logs read, any write refused and absent.
    let reader = Arc::new(EtcdStore::connect(&as_user("reader", "reader-secret")).await.unwrap());
    let reader_logs = LogMetadataStore::new(reader.clone());
    assert!(reader_logs.log("ns", "orders").await.unwrap().is_some());
    assert_eq!(reader_logs.logs("ns").await.unwrap().len(), 1);
    assert!(matches!(refused(reader_logs.create_log("ns", "new")).await, MetaError::Unauthorized(_)));
    assert!(logs.log("ns", "new").await.unwrap().is_none(), "a refused create wrote nothing");
    assert!(matches!(refused(reader.put("logs/ns/x", b("1"))).await, MetaError::Unauthorized(_)));
    assert!(matches!(refused(reader.get("cluster")).await, MetaError::Unauthorized(_)));
    // A watch it may not read ends with the refusal (no endless reconnecting).
    let mut watch = reader.watch("segments/", dlog_metadata::Version(1)).await.unwrap();
    assert!(matches!(next_event(&mut watch).await, Err(MetaError::Unauthorized(_))));
    // ... and one it may read follows changes.
    let from = dlog_metadata::Version(root.get("logs/ns/orders").await.unwrap().unwrap().version.0 + 1);
    let mut watch = reader.watch("logs/ns/", from).await.unwrap();
    logs.create_log("ns", "payments").await.unwrap();
    assert_eq!(next_event(&mut watch).await.unwrap().key, "logs/ns/payments");

    // etcd forgets its tokens when it restarts: clients authenticate again by themselves,
    // and the watch resumes.
    server.restart().unwrap();
    let mut wrote = None;
    for _ in 0..100 {
        match app.put("after-restart", b("1")).await {
            Ok(v) => {
                wrote = Some(v);
                break;
            }
            Err(MetaError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(wrote.is_some(), "writes work again after the restart");
    logs.create_log("ns", "refunds").await.unwrap();
    assert_eq!(next_event(&mut watch).await.unwrap().key, "logs/ns/refunds");
    assert!(reader_logs.log("ns", "refunds").await.unwrap().is_some());
}

/// Under `--client-cert-auth` with authentication on, etcd takes a client's user from its
/// certificate's common name: no password needed; a name that is no user gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_its_etcd_user() {
    let pki = Pki::new();
    let root_password = pki.file("root.password", "r00t-secret");
    let security = EtcdSecurity { tls: Some(pki.server_tls(true)), root_password_file: Some(root_password) };
    let server = EtcdServer::start_secure(security).unwrap_or_else(|e| panic!("{e}"));
    let root = EtcdStore::connect(&server.uri("cn")).await.unwrap();
    let mut admin = connect_client(&EtcdUri::parse(&server.uri("cn")).unwrap()).await.unwrap();
    admin.role_add("dlog").await.unwrap();
    admin.role_grant_permission("dlog", Permission::read_write("/cn/").with_prefix()).await.unwrap();
    admin.user_add("dlog-client", "unused-password", None).await.unwrap();
    admin.user_grant_role("dlog-client", "dlog").await.unwrap();

    let with_cert = |pem: &Pem| {
        let query = format!("ca={}&cert={}&key={}", pki.ca.display(), pem.cert.display(), pem.key.display());
        etcds(&server, "cn", &query)
    };
    let client = EtcdStore::connect(&with_cert(&pki.client)).await.unwrap();
    client.put("by-certificate", b("1")).await.unwrap();
    assert!(root.get("by-certificate").await.unwrap().is_some());
    let stranger = EtcdStore::connect(&with_cert(&pki.stranger)).await.unwrap();
    assert!(matches!(refused(stranger.put("by-stranger", b("1"))).await, MetaError::Unauthorized(_)));
    assert!(root.get("by-stranger").await.unwrap().is_none(), "a refused write wrote nothing");
}

/// Files are read and checked at connect: each problem is `Invalid` naming the file, before
/// anything is sent (no etcd listens here at all).
#[tokio::test]
async fn bad_files_are_refused_with_their_name() {
    let pki = Pki::new();
    let endpoint = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let uri = |query: String| format!("etcds://{endpoint}/s?{query}");
    let missing = pki.dir.path().join("missing.pem");
    let garbage = pki.file("garbage.pem", "not a certificate\n");
    let broken = pki.file("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let key_only = pki.server.key.clone();
    let not_utf8 = pki.dir.path().join("not-utf8");
    std::fs::write(&not_utf8, [0xff, 0xfe, b'\n']).unwrap();
    let ca = pki.ca.display();
    let cases = [
        (uri(format!("ca={}", missing.display())), "missing.pem"),
        (uri(format!("ca={}", garbage.display())), "no PEM certificate"),
        (uri(format!("ca={}", key_only.display())), "no PEM certificate"),
        (uri(format!("ca={}", broken.display())), "broken.pem"),
        (uri(format!("ca={}", pki.dir.path().display())), "etcd ca file"),
        (uri(format!("ca={ca}&cert={}&key={}", pki.client.cert.display(), missing.display())), "missing.pem"),
        (uri(format!("ca={ca}&cert={}&key={}", garbage.display(), pki.client.key.display())), "garbage.pem"),
        (uri(format!("ca={ca}&cert={}&key={}", pki.client.cert.display(), garbage.display())), "no PEM"),
        // The server's key with the client's certificate.
        (
            uri(format!("ca={ca}&cert={}&key={}", pki.client.cert.display(), pki.server.key.display())),
            "does not go with",
        ),
        (uri(format!("ca={ca}&user=u&password_file={}", missing.display())), "password file"),
        (uri(format!("ca={ca}&user=u&password_file={}", pki.file("empty", "\n").display())), "empty"),
        (format!("etcd://{endpoint}/s?user=u&password_file={}", not_utf8.display()), "not UTF-8"),
    ];
    for (uri, why) in cases {
        match AnyStore::open(&uri).await {
            Err(MetaError::Invalid(m)) => assert!(m.contains(why), "{uri}: {m}"),
            other => panic!("{uri}: {other:?}"),
        }
    }
}
