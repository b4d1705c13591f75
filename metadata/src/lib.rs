//! dlog-metadata: what a cluster agrees on.
//!
//! Will own (not yet written; see docs/ARCHITECTURE.md and the open issues): the `MetadataStore`
//! contract (versioned get, create, compare-and-set, transactions, prefix list and watch, leases)
//! with two backends, etcd for clusters and an embedded durable store for one machine; and the
//! cluster schema on top of it: namespaces, logs, segments, bookie registration and cookies,
//! segment id generation, writer ownership.
//!
//! This crate exports nothing yet: there are no placeholder APIs.
