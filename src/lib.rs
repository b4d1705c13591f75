//! dlog: a replicated log service on BookKeeper-style storage.
//!
//! Today this crate holds the `dlog` binary's commands (`bench journal`); the log API
//! (namespace, log, writer, reader, DLSN, transaction ids, truncation) arrives with the
//! replication and metadata layers. The bookie storage engine is `dlog_engine`.

pub mod admin;
pub mod bench;
pub mod bookie;
pub mod cli;
pub mod deletion_check;
pub mod local_cluster;
pub mod log;
