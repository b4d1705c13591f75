//! `dlog read LOG`: a log's records on stdout, one line each (the payload, or with
//! `--print-dlsn` `<dlsn> <txid> <payload>`), from the head, the tail, a DLSN or a transaction
//! id. Without `--follow` it stops at the log's tail as of its start; with it, it waits for new
//! records until Ctrl-C, SIGTERM or stdout closing, and exits 0 then.
//!
//! The reader runs in a task of its own and hands records over a bounded channel, so stdout is
//! flushed whenever no record is waiting (a follower shows each record as it comes) without
//! ever cancelling the reader in the middle of a step. Payloads are written as they are, bytes.

use std::io::{ErrorKind, Write as _};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{DEFAULT_METADATA_URI, LogName, METADATA_HELP};
use crate::log::{Dlsn, LogError, LogRecord, Namespace, ReaderConfig, StartPosition};

/// Records read ahead of stdout.
const READ_AHEAD: usize = 1024;

/// `--from`'s named positions.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The log's first readable record.
    Head,
    /// After its last durable record: only records written from now on.
    Tail,
}

/// `dlog read`'s flags.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// The log: LOG or NAMESPACE/LOG.
    pub log: LogName,
    /// The cluster and namespace (`METADATA_HELP`).
    #[arg(long, env = "DLOG_METADATA", default_value = DEFAULT_METADATA_URI, help = METADATA_HELP)]
    pub metadata: String,
    /// Start at this position, `<segment_seq>:<entry_id>:<slot>` as `dlog write --print-dlsn`
    /// prints it (or at the first record after it).
    #[arg(long, value_name = "DLSN", conflicts_with_all = ["from_txid", "from"])]
    pub from_dlsn: Option<Dlsn>,
    /// Start at the first record whose transaction id is at least N.
    #[arg(long, value_name = "N", conflicts_with = "from")]
    pub from_txid: Option<u64>,
    /// Start at the head (the default) or at the tail.
    #[arg(long, value_enum, value_name = "WHERE")]
    pub from: Option<Origin>,
    /// Keep reading new records until Ctrl-C, SIGTERM or stdout closes (default: stop at the
    /// tail as it was at the start).
    #[arg(long)]
    pub follow: bool,
    /// Print `<dlsn> <txid> <payload>` instead of the payload alone.
    #[arg(long)]
    pub print_dlsn: bool,
}

impl ReadArgs {
    fn start(&self) -> StartPosition {
        match (self.from_dlsn, self.from_txid, self.from) {
            (Some(dlsn), _, _) => StartPosition::Dlsn(dlsn),
            (None, Some(txid), _) => StartPosition::Txid(txid),
            (None, None, Some(Origin::Tail)) => StartPosition::Tail,
            (None, None, Some(Origin::Head) | None) => StartPosition::Head,
        }
    }
}

/// Runs `dlog read`.
pub fn main(args: ReadArgs) -> Result<()> {
    super::block_on(async {
        let ns = super::open(&args.metadata, &args.log).await?;
        let result = read(&ns, &args).await;
        ns.shutdown().await;
        result
    })
}

/// What the reader task hands over: a record, the end (`None`), or why reading failed.
type Item = Result<Option<LogRecord>, LogError>;

async fn read(ns: &Namespace, args: &ReadArgs) -> Result<()> {
    let name = super::full_name(ns, &args.log);
    // Installed before anything is read, so a signal is never lethal halfway through a line.
    let mut term = signal(SignalKind::terminate()).context("installing the signal handlers")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the signal handlers")?;
    let config = ReaderConfig { stop_at_tail: !args.follow };
    let mut reader = ns.open_reader_with(&args.log.log, args.start(), config).await?;
    let (tx, mut rx) = mpsc::channel::<Item>(READ_AHEAD);
    let task = tokio::spawn(async move {
        loop {
            let item = reader.next().await;
            let more = matches!(item, Ok(Some(_)));
            if tx.send(item).await.is_err() || !more {
                return;
            }
        }
    });
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let result = async {
        loop {
            // The task sends the end or an error before it stops: a channel closed without
            // either is a reader that died (a panic), never a complete read.
            let died = || anyhow::anyhow!("reading {name}: the reader stopped unexpectedly");
            // A signal ends `--follow` normally; without it, the output is incomplete.
            let signalled = || {
                if args.follow { Ok(()) } else { Err(anyhow::anyhow!("reading {name}: stopped by a signal")) }
            };
            let item = match rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(died()),
                Err(mpsc::error::TryRecvError::Empty) => {
                    out.flush()?;
                    tokio::select! {
                        item = rx.recv() => match item {
                            Some(item) => item,
                            None => return Err(died()),
                        },
                        _ = term.recv() => return signalled(),
                        _ = int.recv() => return signalled(),
                    }
                }
            };
            match item {
                Ok(Some(record)) => {
                    if args.print_dlsn {
                        write!(out, "{} {} ", record.dlsn, record.txid)?;
                    }
                    out.write_all(&record.payload)?;
                    out.write_all(b"\n")?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {name}"))),
            }
        }
    }
    .await
    .and_then(|()| Ok(out.flush()?));
    task.abort();
    match result {
        // Stdout closed (the reader of a pipe went away): done, quietly.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) => {
            Ok(())
        }
        Err(e) if e.is::<std::io::Error>() => Err(e.context("writing stdout")),
        result => result,
    }
}
