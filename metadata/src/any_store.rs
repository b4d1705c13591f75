//! `AnyStore`: the backend a metadata URI names, behind one type, so binaries and the log API
//! take `--metadata URI` without generics.
//!
//! URIs are parsed by `MetadataUri` (metadata_uri.rs): `local://DIR`, `memory://` (tests;
//! gone with the process), `etcd://host:port[,...]/scope` and `etcds://...?ca=FILE...` (TLS
//! and etcd's authentication, configured by the URI's parameters; both need the `etcd`
//! feature; without it the URI is refused with a message saying so), `dlog://host:port` (the
//! store a `MetadataServer` serves, through `RemoteStore`; every build).

use std::time::Duration;

use crate::error::MetaError;
use crate::local_store::LocalStore;
use crate::metadata_uri::MetadataUri;
use crate::remote::RemoteStore;
use crate::store::MetadataStore;
use crate::watch::Watch;
use crate::{LeaseId, Op, Page, Version, Versioned};

/// One of the backends.
#[derive(Debug)]
pub enum AnyStore {
    /// The embedded store (on disk or in memory).
    Local(LocalStore),
    /// etcd.
    #[cfg(feature = "etcd")]
    Etcd(Box<crate::etcd_store::EtcdStore>),
    /// A store served by a `MetadataServer` (`dlog://host:port`).
    Remote(RemoteStore),
}

impl AnyStore {
    /// Opens the store `uri` names (see the module doc).
    pub async fn open(uri: &str) -> Result<AnyStore, MetaError> {
        AnyStore::open_parsed(uri, MetadataUri::parse(uri)?, false).await
    }

    /// Opens `uri` for reading only: for `local://`, a snapshot that does not take the
    /// directory's lock (`LocalStore::open_read_only`), so a store another process owns can
    /// be inspected; other backends open as `open` does (reads never conflict there; a
    /// `dlog://` server is how a running process's store is read live).
    pub async fn open_read_only(uri: &str) -> Result<AnyStore, MetaError> {
        AnyStore::open_parsed(uri, MetadataUri::parse(uri)?, true).await
    }

    #[cfg_attr(
        feature = "etcd",
        expect(unused_variables, reason = "`uri` names the store only in the no-etcd refusal")
    )]
    async fn open_parsed(uri: &str, parsed: MetadataUri, read_only: bool) -> Result<AnyStore, MetaError> {
        match parsed {
            MetadataUri::Local(dir) if read_only => Ok(AnyStore::Local(LocalStore::open_read_only(&dir)?)),
            MetadataUri::Local(dir) => Ok(AnyStore::Local(LocalStore::open(&dir)?)),
            MetadataUri::Memory => Ok(AnyStore::Local(LocalStore::in_memory()?)),
            MetadataUri::Remote(addr) => Ok(AnyStore::Remote(RemoteStore::connect_to(&addr).await?)),
            #[cfg(feature = "etcd")]
            MetadataUri::Etcd(etcd) => {
                Ok(AnyStore::Etcd(Box::new(crate::etcd_store::EtcdStore::connect_to(&etcd).await?)))
            }
            #[cfg(not(feature = "etcd"))]
            MetadataUri::Etcd(_) => Err(MetaError::Invalid(format!(
                "metadata URI {uri:?}: this build has no etcd backend (build with `--features etcd`)"
            ))),
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Local($s) => $call,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd($s) => $call,
            AnyStore::Remote($s) => $call,
        }
    };
}

impl MetadataStore for AnyStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, MetaError> {
        each!(self, s => s.get(key).await)
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Version, MetaError> {
        each!(self, s => s.txn(ops).await)
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page, MetaError> {
        each!(self, s => s.list(prefix, after, limit).await)
    }

    async fn watch(&self, prefix: &str, from: Version) -> Result<Watch, MetaError> {
        each!(self, s => s.watch(prefix, from).await)
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        each!(self, s => s.grant(ttl).await)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        each!(self, s => s.keep_alive(lease).await)
    }

    async fn revoke(&self, lease: LeaseId) -> Result<Version, MetaError> {
        each!(self, s => s.revoke(lease).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uris_open_their_backend_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("local://{}", dir.path().display());
        let store = AnyStore::open(&uri).await.unwrap();
        store.put("k", bytes::Bytes::from_static(b"v")).await.unwrap();
        drop(store);
        let store = AnyStore::open(&uri).await.unwrap();
        assert!(store.get("k").await.unwrap().is_some(), "local:// is durable");
        assert!(AnyStore::open("memory://").await.unwrap().get("k").await.unwrap().is_none());
        for bad in ["local://", "zk://x:1/a", "", "memory://x", "dlog://h:1/x"] {
            assert!(matches!(AnyStore::open(bad).await, Err(MetaError::Invalid(_))), "{bad}");
        }
        // dlog:// in every build: a server must answer (nothing listens on a port just freed).
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        match AnyStore::open(&format!("dlog://{free}")).await {
            Err(MetaError::Unavailable(m)) => assert!(m.contains(&free.to_string()), "{m}"),
            other => panic!("{other:?}"),
        }
        #[cfg(not(feature = "etcd"))]
        match AnyStore::open("etcd://127.0.0.1:2379/x").await {
            Err(MetaError::Invalid(m)) => assert!(m.contains("--features etcd"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
