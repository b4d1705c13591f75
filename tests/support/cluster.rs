//! A cluster in this process for the replication tests: bookie servers on 127.0.0.1 (one shard
//! each, unpinned), registered under a lease in an embedded `memory://` metadata store (or the
//! one `start_on` names), and a tokio runtime for the store and the clients. Bookies can be
//! stopped as a crash would stop them (no drain), deregistered, registered again, or restarted
//! on a new port.
//!
//! Shared by tests/replication.rs, tests/autorecovery.rs and tests/etcd_namespace_roles.rs
//! (`#[path]` module); each uses a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dlog::bookie::registration::{Registration, RegistrationConfig};
use dlog::bookie::{BookieServer, ServerLimits, ServerOptions};
use dlog_engine::{Bookie, BookieConfig};
use dlog_metadata::schema::SegmentMetadata;
use dlog_metadata::{AnyStore, SegmentMetadataStore};

pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) server: Option<BookieServer>,
    pub(crate) registration: Option<Registration<AnyStore>>,
    pub(crate) config: RegistrationConfig,
    pub(crate) bookie: Arc<Bookie>,
    _dir: tempfile::TempDir,
}

pub(crate) struct Cluster {
    pub(crate) store: Arc<AnyStore>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) runtime: tokio::runtime::Runtime,
}

impl Cluster {
    /// `bookies` bookies named `bookie-<i>`, without zone labels.
    pub(crate) fn start(bookies: usize) -> Cluster {
        Cluster::start_on("memory://", bookies)
    }

    /// `start`, registering the bookies in the metadata store `uri` names.
    pub(crate) fn start_on(uri: &str, bookies: usize) -> Cluster {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = Arc::new(runtime.block_on(AnyStore::open(uri)).unwrap());
        let mut cluster = Cluster { store, nodes: Vec::new(), runtime };
        for i in 0..bookies {
            cluster.add_bookie(&format!("bookie-{i}"));
        }
        cluster
    }

    pub(crate) fn add_bookie(&mut self, id: &str) {
        self.add_bookie_in(id, "");
    }

    /// A bookie registered with the zone label `zone` (empty: none).
    pub(crate) fn add_bookie_in(&mut self, id: &str, zone: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BookieConfig::new(dir.path().join("journal"));
        config.shard_count = 1;
        config.pin_shards = false;
        let bookie = Arc::new(Bookie::open(config).unwrap());
        let server = start_server(&bookie);
        let cookies: Vec<PathBuf> = vec![dir.path().join("cookie")];
        let config = RegistrationConfig {
            lease_ttl: Duration::from_secs(30),
            zone: zone.to_owned(),
            ..RegistrationConfig::new(id, server.local_addr().to_string(), cookies.clone(), cookies)
        };
        let registration =
            self.runtime.block_on(Registration::start(self.store.clone(), config.clone())).unwrap();
        self.nodes.push(Node {
            id: id.to_owned(),
            server: Some(server),
            registration: Some(registration),
            config,
            bookie,
            _dir: dir,
        });
    }

    pub(crate) fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("known bookie")
    }

    /// Stops a bookie's server and its registration, as a crash would (no drain).
    pub(crate) fn stop(&mut self, id: &str) {
        let node = self.node(id);
        if let Some(server) = node.server.take() {
            server.shutdown(Duration::ZERO);
        }
        self.deregister(id);
    }

    /// Removes a bookie's registration; its server keeps running.
    pub(crate) fn deregister(&mut self, id: &str) {
        let registration = self.node(id).registration.take();
        if let Some(registration) = registration {
            let _ = self.runtime.block_on(registration.deregister());
        }
    }

    /// Registers a bookie again, as it does when it restarts.
    pub(crate) fn register(&mut self, id: &str) {
        let config = self.node(id).config.clone();
        let registration = self.runtime.block_on(Registration::start(self.store.clone(), config)).unwrap();
        self.node(id).registration = Some(registration);
    }

    /// Starts a new server for a stopped one (same storage, a new port) and registers it there
    /// (its old registration, if any, is removed first).
    pub(crate) fn restart_server(&mut self, id: &str) {
        self.deregister(id);
        let node = self.node(id);
        let server = start_server(&node.bookie);
        node.config.endpoint = server.local_addr().to_string();
        node.server = Some(server);
        self.register(id);
    }

    /// Where a running bookie listens.
    pub(crate) fn addr_of(&self, id: &str) -> Option<SocketAddr> {
        self.nodes.iter().find(|n| n.id == id).and_then(|n| n.server.as_ref()).map(BookieServer::local_addr)
    }

    /// A segment's metadata.
    pub(crate) fn segment(&self, segment: u64) -> SegmentMetadata {
        let segments = SegmentMetadataStore::new(self.store.clone());
        self.runtime.block_on(segments.get(segment)).unwrap().unwrap().0
    }
}

fn start_server(bookie: &Arc<Bookie>) -> BookieServer {
    let mut options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), ServerLimits::default());
    options.threads = Some(1);
    BookieServer::start(bookie.clone(), options).unwrap()
}
