//! dlog-metadata: what a cluster agrees on.
//!
//! Will own (see docs/rfcs/2026-11-25-metadata.md): the `MetadataStore` contract (versioned
//! get, create, compare-and-set, transactions, prefix list and watch, leases) with two backends,
//! etcd for clusters and an embedded durable store for one machine; and the cluster schema on
//! top of it: namespaces, logs, segments, bookie registration and cookies, segment id
//! generation, writer ownership.
//!
//! Today: the contract (`MetadataStore`, its types and errors), the embedded backend
//! (`LocalStore` over the sans-I/O `LocalCore`), with the `etcd` feature `EtcdStore` (TLS and
//! etcd's authentication configured by the URI, `etcds://`, metadata_uri.rs), and
//! remote access to any store (`MetadataServer` serves it, `RemoteStore` is its client,
//! `dlog://host:port`).

pub mod any_store;
pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd_server;
#[cfg(feature = "etcd")]
pub mod etcd_store;
pub mod id_generator;
pub mod lease_keeper;
pub mod local_core;
pub mod local_log;
pub mod local_store;
pub mod log_store;
pub mod metadata_uri;
pub mod remote;
pub mod schema;
pub mod segment_store;
pub mod store;
pub mod wall_clock;
pub mod watch;
pub mod writer_lock;

// Cluster identity, bookie registration and cookies, the under-replication queue.
pub mod bookie_registry;
pub mod cluster;
pub mod replication_queue;
pub use bookie_registry::{BookieRegistry, RegisteredBookie};
pub use cluster::Cluster;
pub use replication_queue::{AuditorWatch, ClaimHolder, QueuedSegment, ReplicationQueue};

use bytes::Bytes;

pub use any_store::AnyStore;
pub use error::MetaError;
#[cfg(feature = "etcd")]
pub use etcd_store::EtcdStore;
pub use id_generator::IdGenerator;
pub use lease_keeper::LeaseKeeper;
pub use local_core::LocalCore;
pub use local_store::{LocalOptions, LocalStore};
pub use log_store::LogMetadataStore;
pub use metadata_uri::{EtcdAuth, EtcdIdentity, EtcdTls, EtcdUri, MetadataUri};
pub use remote::{MetadataServer, RemoteStore};
pub use segment_store::SegmentMetadataStore;
pub use store::MetadataStore;
pub use watch::Watch;
pub use writer_lock::{LockHolder, WriterLock};

/// A store revision: every mutation takes the next one; a key's version is the revision that
/// last wrote it (etcd's `mod_revision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

/// A lease: keys bound to it vanish when it expires or is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub u64);

/// A value with its versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The revision that last wrote it.
    pub version: Version,
    /// The revision that created it.
    pub created: Version,
    /// The lease it is bound to.
    pub lease: Option<LeaseId>,
}

/// The condition a write is made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Whatever is there.
    Any,
    /// Only if the key does not exist (create).
    Absent,
    /// Only if the key's version is this one (compare-and-set).
    Version(Version),
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `value` at `key` under `cond`, bound to `lease` if given.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// The condition.
        cond: Cond,
        /// The lease to bind the key to.
        lease: Option<LeaseId>,
    },
    /// Delete `key` under `cond`; the key must exist.
    Delete {
        /// The key.
        key: String,
        /// The condition.
        cond: Cond,
    },
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted (explicitly or by a lease's end).
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The new value (empty for a delete).
    pub value: Bytes,
    /// The revision of the change.
    pub version: Version,
}

/// One page of a prefix listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// (key, value) in key order.
    pub items: Vec<(String, Versioned)>,
    /// More keys follow the last one.
    pub more: bool,
    /// The store revision the page was read at (watch from the next one to follow changes).
    pub revision: Version,
}
