//! The log API: namespaces of named logs, each a series of segments written by one writer at a
//! time and read by any number of readers, with DistributedLog's positions (DLSN) and
//! transaction ids, truncation and retention (docs/ARCHITECTURE.md, "The log").
//!
//! Layers: `entry_codec` (records in an entry's bytes) and `writer_core` (batching, DLSNs,
//! rolls: sans-I/O) under the shells that drive them through the replication client and the
//! metadata store.

pub mod dlsn;
pub mod entry_codec;
pub mod error;
mod log_segments;
pub mod namespace;
pub mod reader;
pub mod truncation;
pub mod wal;
pub mod writer;
pub mod writer_core;

pub use dlsn::Dlsn;
pub use error::LogError;
pub use namespace::{LogInfo, Namespace, NamespaceConfig};
pub use reader::{LogReader, LogRecord, ReaderConfig, StartPosition};
pub use truncation::Retention;
pub use wal::{Replay, WriteAheadLog};
pub use writer::{Appended, LogWriter, Record, WriterConfig};
pub use writer_core::TransmitPolicy;
