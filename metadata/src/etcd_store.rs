//! `EtcdStore`: the `MetadataStore` contract on a real etcd (v3 API, works with 3.4), through
//! `etcd-client`. Built with the `etcd` feature.
//!
//! Owns: the mapping of the contract onto etcd: every key lives under `/<scope>/`; versions
//! are etcd's `mod_revision`; conditions are txn compares; a failed txn reads the keys it
//! compared in the same round trip (the `else` branch) to name the failure exactly.
//!
//! Invariants:
//! - ES1: every call is bounded by `REQUEST_TIMEOUT`; a timeout or a transport failure is
//!   `Unavailable` (the mutation may or may not have happened, as in etcd itself).
//! - ES2: a watch survives an etcd restart or a cut stream: its task reconnects with backoff
//!   and resumes from one past the last revision it delivered or etcd reported as sent to it
//!   (etcd's periodic progress notifications, `--experimental-watch-progress-notify-interval`,
//!   10 minutes by default), so no event is missed or repeated; a compacted start ends the
//!   watch with `Compacted`.
//! - ES3: lease ids are etcd's; a lease etcd no longer knows answers `LeaseExpired`.
//! - ES4: security comes from the URI alone (metadata_uri.rs): `etcds://` files are read and
//!   checked at `connect` (missing, unreadable, not PEM, a key not matching its certificate:
//!   `Invalid` naming the file); with `user=`, `connect` authenticates at once (a wrong
//!   password is `Unauthorized` there, an unreachable etcd `Unavailable`) and the token is
//!   renewed whenever etcd says it expired (etcd-client's auto refresh). etcd refusing the
//!   credentials or a permission is `Unauthorized`, never `Unavailable`: retrying cannot help,
//!   and a watch it refuses ends with it instead of reconnecting. The error names what was
//!   refused (the key read or listed, the first keys of a transaction), since etcd does not;
//!   a watch from "now" reads the revision through its own key, which a role allowed to
//!   watch may read (not the scope's root).
//!
//! etcd's responses are trusted to be well-formed (etcd-client itself panics on an unknown
//! event type or an empty txn response): etcd is part of the cluster, not a client.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use crate::error::MetaError;
pub use crate::metadata_uri::EtcdUri;
use crate::metadata_uri::{EtcdAuth, EtcdTls};
use crate::store::{MetadataStore, check_ops};
use crate::watch::{self, Watch, WatchSender};
use crate::{Cond, Event, EventKind, LeaseId, Op, Page, Version, Versioned};

/// Longest a single etcd call may take before it is `Unavailable` (ES1).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted from etcd (tonic's default is 4 MiB; a page of `LIST_PAGE` values
/// of up to 1 MiB, or a watch catch-up batch, can be far larger).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Longest a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between a watch's reconnection attempts (ES2).
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A metadata store on etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// `/<scope>/`: prepended to every key.
    root: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("root", &self.root).finish_non_exhaustive()
    }
}

/// Maps an etcd-client failure: retryable transport trouble is `Unavailable`, refused
/// credentials or permissions `Unauthorized` (ES4).
fn map_err(e: etcd_client::Error) -> MetaError {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(status) => {
            let message = status.message();
            match status.code() {
                Code::PermissionDenied => MetaError::Unauthorized(format!("etcd: {message}")),
                // After etcd-client's refresh of an expired token failed too.
                Code::Unauthenticated => MetaError::Unauthorized(format!("etcd: {message}")),
                // etcd answers a wrong password, and a request without credentials while its
                // authentication is on, with InvalidArgument.
                Code::InvalidArgument if message.contains("user name is empty") => {
                    MetaError::Unauthorized(format!(
                        "etcd: {message} (etcd has authentication enabled: give user= and \
                         password_file=, or a client certificate whose common name is an etcd user)"
                    ))
                }
                Code::InvalidArgument if message.contains("authentication failed") => {
                    MetaError::Unauthorized(format!("etcd: {message}"))
                }
                // The user's roles changed under a request: etcd's own client retries it.
                Code::InvalidArgument if message.contains("revision of auth store is old") => {
                    MetaError::Unavailable(format!("etcd: {message}"))
                }
                // ResourceExhausted: a request over etcd's `--max-request-bytes` (retrying
                // cannot help).
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::NotFound
                | Code::ResourceExhausted => MetaError::Invalid(message.to_string()),
                _ => MetaError::Unavailable(format!(
                    "etcd: {}",
                    with_causes(message.to_string(), std::error::Error::source(&status))
                )),
            }
        }
        E::InvalidArgs(m) => MetaError::Invalid(m),
        other => MetaError::Unavailable(format!(
            "etcd: {}",
            with_causes(other.to_string(), std::error::Error::source(&other))
        )),
    }
}

/// `text` followed by the chain of `source`s it does not already say: a transport error
/// says only "transport error", its sources why (a refused connection, an untrusted
/// certificate).
fn with_causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

async fn bounded<T>(call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, MetaError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(r) => r.map_err(map_err),
        Err(_) => Err(MetaError::Unavailable(format!("etcd: no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

/// Keys of a refused transaction its error names.
const REFUSED_KEYS_SHOWN: usize = 3;

/// An `Unauthorized` says what was refused (etcd's "permission denied" names no key).
fn refusing(what: impl FnOnce() -> String) -> impl FnOnce(MetaError) -> MetaError {
    move |e| match e {
        MetaError::Unauthorized(m) => MetaError::Unauthorized(format!("{m} ({})", what())),
        e => e,
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// An etcd-client `Client` for `uri`'s endpoints with its TLS and authentication (ES4), for
/// tools that speak to the same etcd directly (test harnesses, benchmark baselines). Not
/// bounded by the scope: the client sees every key its etcd user may.
pub async fn connect_client(uri: &EtcdUri) -> Result<Client, MetaError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &uri.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    if let Some(auth) = &uri.auth {
        options = options.with_user(auth.user.clone(), read_password(auth)?).with_auto_token_refresh(true);
    }
    bounded(Client::connect(&uri.endpoints, Some(options))).await
}

/// Reads `path`, the `what` file of an etcd URI; `Invalid` naming it (ES4).
fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, MetaError> {
    std::fs::read(path).map_err(|e| MetaError::Invalid(format!("etcd {what} file {}: {e}", path.display())))
}

/// Every certificate in the PEM file `path` (at least one).
fn read_certificates(
    what: &str,
    path: &std::path::Path,
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, MetaError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |why: String| MetaError::Invalid(format!("etcd {what} file {}: {why}", path.display()));
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The TLS settings of an `etcds://` URI, every file read and checked (ES4): the CA
/// certificates parse as trust anchors, the key parses and matches its certificate.
fn tls_options(tls: &EtcdTls) -> Result<etcd_client::TlsOptions, MetaError> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let ca_pem = read_file("ca", &tls.ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certificates("ca", &tls.ca, &ca_pem)? {
        roots.add(cert).map_err(|e| {
            MetaError::Invalid(format!("etcd ca file {}: not a CA certificate: {e}", tls.ca.display()))
        })?;
    }
    // TLS to etcd runs on the clock of the whole handshake too, not only the TCP connect.
    let mut options =
        TlsOptions::new().ca_certificate(Certificate::from_pem(ca_pem)).timeout(CONNECT_TIMEOUT);
    if let Some(identity) = &tls.identity {
        let cert_pem = read_file("cert", &identity.cert)?;
        let chain = read_certificates("cert", &identity.cert, &cert_pem)?;
        let key_pem = read_file("key", &identity.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            MetaError::Invalid(format!("etcd key file {}: no PEM private key: {e}", identity.key.display()))
        })?;
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            MetaError::Invalid(format!(
                "etcd key file {} does not go with cert file {}: {e}",
                identity.key.display(),
                identity.cert.display()
            ))
        })?;
        options = options.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Ok(options)
}

/// The password in `auth.password_file`: UTF-8, one trailing newline dropped, not empty.
pub(crate) fn read_password(auth: &EtcdAuth) -> Result<String, MetaError> {
    let path = &auth.password_file;
    let bad = |why: &str| MetaError::Invalid(format!("etcd password file {}: {why}", path.display()));
    let bytes = read_file("password", path)?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let password = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if password.is_empty() {
        return Err(bad("empty"));
    }
    Ok(password.to_string())
}

fn version(revision: i64) -> Version {
    Version(u64::try_from(revision).unwrap_or(0))
}

impl EtcdStore {
    /// Connects to `etcd[s]://host:port[,...]/scope[?...]`. Connections are made lazily and
    /// remade after failures; an unreachable etcd shows as `Unavailable` on calls (with
    /// `user=`, already here: ES4).
    pub async fn connect(uri: &str) -> Result<EtcdStore, MetaError> {
        EtcdStore::connect_to(&EtcdUri::parse(uri)?).await
    }

    /// `connect` with the URI already parsed.
    pub async fn connect_to(uri: &EtcdUri) -> Result<EtcdStore, MetaError> {
        let client = connect_client(uri).await?;
        Ok(EtcdStore { client, root: format!("/{}/", uri.scope) })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client().max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// The contract's key of an etcd key under the root; `None` for a foreign or non-UTF-8
    /// key (skipped with a warning: something outside dlog wrote under its scope).
    fn local_key(&self, key: &[u8]) -> Option<String> {
        let key = key.strip_prefix(self.root.as_bytes())?;
        match std::str::from_utf8(key) {
            Ok(k) => Some(k.to_string()),
            Err(_) => {
                tracing::warn!(root = %self.root, key = ?key, "non-UTF-8 key under the scope skipped");
                None
            }
        }
    }

    fn versioned(kv: &KeyValue) -> Versioned {
        Versioned {
            value: Bytes::copy_from_slice(kv.value()),
            version: version(kv.mod_revision()),
            created: version(kv.create_revision()),
            lease: (kv.lease() != 0).then(|| LeaseId(kv.lease() as u64)),
        }
    }

    /// etcd's current revision (for `watch` from 0), read through the key `full` (count
    /// only): a key the caller may read, since with authentication on etcd refuses a read of a
    /// key outside the user's roles (a role confined to one namespace cannot read the scope's
    /// root key).
    async fn revision_via(&self, full: &str) -> Result<Version, MetaError> {
        let mut kv = self.kv();
        let r = bounded(kv.get(full, Some(GetOptions::new().with_count_only())))
            .await
            .map_err(refusing(|| format!("reading {full}")))?;
        Ok(version(r.header().map_or(0, |h| h.revision())))
    }

    /// Names the failure of a txn whose compares did not all hold, from the state read in the
    /// same revision (`gets`: one response per op, in op order).
    fn conflict(ops: &[Op], gets: &[TxnOpResponse]) -> MetaError {
        for (op, get) in ops.iter().zip(gets) {
            let actual = match get {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| version(kv.mod_revision())),
                _ => None,
            };
            let (key, cond, is_delete) = match op {
                Op::Put { key, cond, .. } => (key, cond, false),
                Op::Delete { key, cond } => (key, cond, true),
            };
            match (cond, actual) {
                (Cond::Absent, Some(_)) => return MetaError::AlreadyExists(key.clone()),
                (Cond::Any | Cond::Version(_), None) if is_delete => return MetaError::NotFound(key.clone()),
                (Cond::Version(v), a) if a != Some(*v) => {
                    return MetaError::VersionConflict { key: key.clone(), expected: Some(*v), actual: a };
                }
                _ => {}
            }
        }
        // Every compare holds now but did not then: the state moved; the caller re-reads.
        MetaError::Unavailable("etcd: transaction conflicted with a concurrent change; retry".into())
    }
}

impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, MetaError> {
        if key.is_empty() {
            return Err(MetaError::Invalid("empty key".into()));
        }
        let mut kv = self.kv();
        let full = self.full(key);
        let r = bounded(kv.get(full.as_str(), None)).await.map_err(refusing(|| format!("reading {full}")))?;
        Ok(r.kvs().first().map(EtcdStore::versioned))
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Version, MetaError> {
        check_ops(&ops)?;
        let mut compares = Vec::new();
        let mut then = Vec::new();
        let mut otherwise = Vec::new();
        for op in &ops {
            match op {
                Op::Put { key, value, cond, lease } => {
                    let full = self.full(key);
                    match cond {
                        Cond::Any => {}
                        Cond::Absent => {
                            compares.push(Compare::create_revision(full.clone(), CompareOp::Equal, 0))
                        }
                        Cond::Version(v) => {
                            compares.push(Compare::mod_revision(full.clone(), CompareOp::Equal, v.0 as i64))
                        }
                    }
                    let options = lease.map(|l| PutOptions::new().with_lease(l.0 as i64));
                    then.push(TxnOp::put(full.clone(), value.to_vec(), options));
                    otherwise.push(TxnOp::get(full, None));
                }
                Op::Delete { key, cond } => {
                    let full = self.full(key);
                    // A delete needs the key (the contract's NotFound), whatever its cond.
                    compares.push(Compare::create_revision(full.clone(), CompareOp::Greater, 0));
                    if let Cond::Version(v) = cond {
                        compares.push(Compare::mod_revision(full.clone(), CompareOp::Equal, v.0 as i64));
                    }
                    then.push(TxnOp::delete(full.clone(), None::<DeleteOptions>));
                    otherwise.push(TxnOp::get(full, None));
                }
            }
        }
        let txn = Txn::new().when(compares).and_then(then).or_else(otherwise);
        let mut kv = self.kv();
        let r = match bounded(kv.txn(txn)).await {
            Err(MetaError::Unavailable(m)) | Err(MetaError::Invalid(m)) if m.contains("lease not found") => {
                let lease = ops.iter().find_map(|op| match op {
                    Op::Put { lease: Some(l), .. } => Some(*l),
                    _ => None,
                });
                return Err(MetaError::LeaseExpired(lease.unwrap_or(LeaseId(0))));
            }
            r => r.map_err(refusing(|| {
                // etcd does not say which key: the first few, so a refusal stays one line.
                let keys: Vec<String> = ops
                    .iter()
                    .take(REFUSED_KEYS_SHOWN)
                    .map(|op| match op {
                        Op::Put { key, .. } | Op::Delete { key, .. } => self.full(key),
                    })
                    .collect();
                let more = ops.len().saturating_sub(REFUSED_KEYS_SHOWN);
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                format!("a transaction on {}{more}", keys.join(", "))
            }))?,
        };
        if !r.succeeded() {
            return Err(EtcdStore::conflict(&ops, &r.op_responses()));
        }
        Ok(version(r.header().map_or(0, |h| h.revision())))
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page, MetaError> {
        let full_prefix = self.full(prefix);
        let mut start = full_prefix.clone().into_bytes();
        if let Some(after) = after {
            let mut past = self.full(after).into_bytes();
            past.push(0);
            start = start.max(past);
        }
        let mut options = GetOptions::new().with_range(prefix_end(full_prefix.as_bytes()));
        if limit > 0 {
            options = options.with_limit(limit as i64);
        }
        let mut kv = self.kv();
        let r = bounded(kv.get(start, Some(options)))
            .await
            .map_err(refusing(|| format!("listing {full_prefix}")))?;
        let items = r
            .kvs()
            .iter()
            .filter_map(|kv| Some((self.local_key(kv.key())?, EtcdStore::versioned(kv))))
            .collect();
        Ok(Page { items, more: r.more(), revision: version(r.header().map_or(0, |h| h.revision())) })
    }

    async fn watch(&self, prefix: &str, from: Version) -> Result<Watch, MetaError> {
        let full = self.full(prefix);
        let from = if from == Version(0) { Version(self.revision_via(&full).await?.0 + 1) } else { from };
        let (events, watch) = watch::channel(from);
        let task = WatchTask { store: self.clone(), prefix: full, next: from, events, denied_once: false };
        let handle = tokio::spawn(task.run());
        Ok(watch.with_guard(handle.abort_handle()))
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        if ttl.is_zero() {
            return Err(MetaError::Invalid("lease of zero ttl".into()));
        }
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs).map_err(|_| MetaError::Invalid(format!("lease ttl {ttl:?}")))?;
        let mut lease = self.client.lease_client();
        let r = bounded(lease.grant(secs, None)).await?;
        if !r.error().is_empty() {
            return Err(MetaError::Unavailable(format!("etcd: lease grant: {}", r.error())));
        }
        Ok(LeaseId(r.id() as u64))
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<(), MetaError> {
        let mut lease = self.client.lease_client();
        let once = async {
            let (mut keeper, mut stream) = lease.keep_alive(id.0 as i64).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        let answer = match bounded(once).await {
            Err(MetaError::Unavailable(m) | MetaError::Invalid(m)) if m.contains("lease not found") => {
                return Err(MetaError::LeaseExpired(id));
            }
            r => r?,
        };
        match answer {
            Some(r) if r.ttl() > 0 => Ok(()),
            Some(_) => Err(MetaError::LeaseExpired(id)),
            None => Err(MetaError::Unavailable("etcd: keep-alive stream ended".into())),
        }
    }

    async fn revoke(&self, id: LeaseId) -> Result<Version, MetaError> {
        let mut lease = self.client.lease_client();
        match bounded(lease.revoke(id.0 as i64)).await {
            Ok(r) => Ok(version(r.header().map_or(0, |h| h.revision()))),
            Err(MetaError::Unavailable(m) | MetaError::Invalid(m)) if m.contains("lease not found") => {
                Err(MetaError::LeaseExpired(id))
            }
            Err(e) => Err(e),
        }
    }
}

/// Feeds one `Watch` from etcd, reconnecting as needed (ES2).
struct WatchTask {
    store: EtcdStore,
    /// The full key prefix watched.
    prefix: String,
    /// The next revision to deliver.
    next: Version,
    events: WatchSender,
    /// etcd refused this watch once and the token was renewed since: a second refusal is
    /// the user's permissions, not a stale token (ES4).
    denied_once: bool,
}

impl WatchTask {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.stream().await {
                Ok(Some(end)) => {
                    self.events.fail(end);
                    return;
                }
                Ok(None) => return, // the watcher is gone
                // Reconnecting cannot make etcd accept these credentials (ES4).
                Err(e @ MetaError::Unauthorized(_)) => {
                    self.events.fail(e);
                    return;
                }
                Err(e) => {
                    let next = self.next.0;
                    tracing::debug!(prefix = %self.prefix, next, error = %e, "watch reconnecting");
                }
            }
            if self.events.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
        }
    }

    /// Follows one watch stream. Ok(Some(e)): the watch is over with `e`; Ok(None): the watcher
    /// left; Err: the stream broke (reconnect).
    async fn stream(&mut self) -> Result<Option<MetaError>, MetaError> {
        let options = WatchOptions::new()
            .with_range(prefix_end(self.prefix.as_bytes()))
            .with_start_revision(self.next.0 as i64)
            .with_progress_notify();
        let mut client = self.store.client.watch_client().max_decoding_message_size(RESPONSE_BYTES_MAX);
        let mut stream = bounded(client.watch(self.prefix.clone(), Some(options))).await?;
        loop {
            let response = match stream.message().await.map_err(map_err) {
                Ok(Some(response)) => response,
                Ok(None) => return Err(MetaError::Unavailable("etcd: watch stream ended".into())),
                // A response this client refuses (too large) would come again at every
                // reconnect: end the watch rather than loop (the caller sees why).
                Err(MetaError::Invalid(m)) => {
                    return Ok(Some(MetaError::Unavailable(format!("etcd: watch response refused: {m}"))));
                }
                Err(e) => return Err(e),
            };
            if response.compact_revision() > 0 {
                return Ok(Some(MetaError::Compacted {
                    requested: self.next,
                    oldest: version(response.compact_revision()),
                }));
            }
            if response.canceled() {
                let reason = response.cancel_reason();
                // etcd checks the token of a watch when creating it and, unlike a call's, tells
                // a stale one (etcd forgets them when it restarts; they expire) only in the
                // cancel reason: renew it, then reconnect (ES4). Older etcd releases say
                // "permission denied" for a stale token too, so the first denial renews it.
                let denied = reason.contains("permission denied");
                if reason.contains("invalid auth token") || (denied && !self.denied_once) {
                    self.denied_once |= denied;
                    bounded(self.store.client.refresh_token()).await?;
                    return Err(MetaError::Unavailable(format!("etcd: watch canceled: {reason}")));
                }
                // A user that may not read the prefix, or no user at all: reconnecting
                // cannot help.
                if denied || reason.contains("user name is empty") {
                    let watched = &self.prefix;
                    return Ok(Some(MetaError::Unauthorized(format!("etcd: watch of {watched}: {reason}"))));
                }
                return Err(MetaError::Unavailable(format!("etcd: watch canceled: {reason}")));
            }
            if response.created() {
                self.denied_once = false;
            }
            // A progress notification for this watcher (etcd's periodic ones carry its id and
            // come only once it has been sent everything up to the revision): moving `next`
            // keeps a quiet watch from resuming at a revision compaction has passed (ES2).
            // Answers to a client's progress request (id -1) are not used: before etcd 3.4.24
            // and 3.5.8 they could overtake events still on their way (etcd issue 15220).
            if response.events().is_empty() && !response.created() {
                if response.watch_id() >= 0
                    && let Some(h) = response.header()
                {
                    self.next = self.next.max(Version(version(h.revision()).0 + 1));
                }
                continue;
            }
            // One revision can hold many events (a transaction, a lease's end), all in one
            // response: skip only what was delivered before this response, then move past it.
            let delivered = self.next;
            let mut batch = Vec::with_capacity(response.events().len());
            for e in response.events() {
                let Some(kv) = e.kv() else { continue };
                let Some(key) = self.store.local_key(kv.key()) else { continue };
                let event = match e.event_type() {
                    EventType::Put => Event {
                        kind: EventKind::Put,
                        key,
                        value: Bytes::copy_from_slice(kv.value()),
                        version: version(kv.mod_revision()),
                    },
                    EventType::Delete => Event {
                        kind: EventKind::Delete,
                        key,
                        value: Bytes::new(),
                        version: version(kv.mod_revision()),
                    },
                };
                if event.version < delivered {
                    continue; // delivered before a reconnect
                }
                self.next = Version(event.version.0 + 1);
                batch.push(event);
            }
            if !self.events.send_all(&batch) {
                return Ok(None);
            }
            if self.events.is_closed() {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
