//! `WriteAheadLog`: the log API cut down to what a storage system needs from its write-ahead
//! log: take ownership (fencing any previous owner), replay from a position, append, and
//! truncate what a checkpoint made unnecessary. examples/kv_store.rs uses it as the log of a
//! small replicated key-value store.
//!
//! Invariants:
//! - WA1: `open` returns only after any previous owner's segment was fenced and recovered: a
//!   `replay` after it sees every record that owner was told was durable, and that owner can
//!   append nothing more (it gets `Fenced`).
//! - WA2: `replay` reads to the log's end as of the call and stops there; records appended
//!   after it are not in that replay.

use std::future::Future;

use bytes::Bytes;

use super::dlsn::Dlsn;
use super::error::LogError;
use super::namespace::Namespace;
use super::reader::{LogReader, LogRecord, ReaderConfig, StartPosition};
use super::writer::{Appended, LogWriter, Record, WriterConfig};

/// A write-ahead log owned by this process (see the module doc).
pub struct WriteAheadLog {
    ns: Namespace,
    log: String,
    writer: LogWriter,
}

/// The records of a replay, in order.
pub struct Replay {
    reader: LogReader,
}

impl Replay {
    /// The next record, `None` at the end of the log as of `replay` (WA2).
    pub async fn next(&mut self) -> Result<Option<LogRecord>, LogError> {
        self.reader.next().await
    }
}

impl WriteAheadLog {
    /// Opens `log` (created when missing) as its only writer (WA1), with the namespace's
    /// writer settings.
    pub async fn open(ns: &Namespace, log: &str) -> Result<WriteAheadLog, LogError> {
        WriteAheadLog::open_with(ns, log, WriterConfig::default()).await
    }

    /// Opens `log` with `config`.
    pub async fn open_with(
        ns: &Namespace,
        log: &str,
        config: WriterConfig,
    ) -> Result<WriteAheadLog, LogError> {
        match ns.create_log(log).await {
            Ok(()) | Err(LogError::LogExists(_)) => {}
            Err(e) => return Err(e),
        }
        let writer = ns.open_writer_with(log, config).await?;
        Ok(WriteAheadLog { ns: ns.clone(), log: log.to_owned(), writer })
    }

    /// Appends `record`; the future resolves once it is durable (at the ack quorum), with its
    /// position and transaction id. The order of calls is the order in the log.
    pub fn append(
        &self,
        record: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Appended, LogError>> + Send + 'static {
        self.writer.write(Record::new(record))
    }

    /// Resolves once an append of `bytes` would not be refused with `Backpressure`.
    pub async fn ready(&self, bytes: usize) {
        self.writer.ready(bytes).await;
    }

    /// Replays the log from `from` (`Dlsn::HEAD`: from its first record) to its end (WA2).
    pub async fn replay(&self, from: Dlsn) -> Result<Replay, LogError> {
        let config = ReaderConfig { stop_at_tail: true };
        let start = if from == Dlsn::HEAD { StartPosition::Head } else { StartPosition::Dlsn(from) };
        let reader = self.ns.open_reader_with(&self.log, start, config).await?;
        Ok(Replay { reader })
    }

    /// Drops the records before `before` (a checkpoint covers them).
    pub async fn truncate(&self, before: Dlsn) -> Result<(), LogError> {
        self.ns.truncate(&self.log, before).await
    }

    /// Waits until every record appended so far is durable.
    pub async fn sync(&self) -> Result<(), LogError> {
        self.writer.flush().await
    }

    /// Syncs and gives the log up.
    pub async fn close(self) -> Result<(), LogError> {
        self.writer.close().await
    }
}
