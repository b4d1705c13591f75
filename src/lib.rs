//! dlog: a replicated log service on BookKeeper-style storage.
//!
//! This crate holds the log API (`log`: namespaces, writers, readers, DLSNs, transaction ids,
//! truncation, the embedded write-ahead log), the all-in-one local cluster (`local_cluster`),
//! the bookie server (`bookie`), and the `dlog` binary's commands (`cli`, `admin`, `bench`).
//! The storage engine is `dlog_engine`, the metadata layer `dlog_metadata`, replication
//! `dlog_replication`.

pub mod admin;
pub mod bench;
pub mod bookie;
pub mod cli;
pub mod deletion_check;
pub mod local_cluster;
pub mod log;
