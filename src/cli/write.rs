//! `dlog write LOG`: stdin's lines, each without its newline, as records of log LOG, in order
//! (created if missing, which is said on stderr). Writes are pipelined: up to `--in-flight`
//! records are written and not yet acknowledged at once; at EOF the writer flushes and closes.
//! With `--print-dlsn`, each record's `<dlsn> <txid>` is printed once it is durable, in input
//! order.
//!
//! Stdin is bytes: a line need not be UTF-8 (only `--txid-from-input` reads a number from it).
//! A thread reads it and hands the lines over in batches (those already buffered), so a slow
//! cluster holds stdin back rather than memory filling up. The first failed record stops the
//! command: what was acknowledged before it is printed, then the error (one line, exit 1).
//! Bad input (a line without a transaction id) stops reading; the records before it are
//! written and printed first.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write as _};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::{FutureExt, future::BoxFuture};
use tokio::sync::mpsc;

use super::{DEFAULT_METADATA_URI, LogName, METADATA_HELP};
use crate::log::{Appended, LogError, Namespace, Record};

/// Lines a batch from the stdin thread holds at most.
const BATCH_LINES_MAX: usize = 1024;
/// Batches read ahead of the writer.
const BATCHES_AHEAD: usize = 4;
/// How long a writer that failed may take to close before the command gives up on it.
const CLOSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// `dlog write`'s flags.
#[derive(clap::Args, Debug)]
pub struct WriteArgs {
    /// The log: LOG or NAMESPACE/LOG. Created if missing.
    pub log: LogName,
    /// The cluster and namespace (`METADATA_HELP`).
    #[arg(long, env = "DLOG_METADATA", default_value = DEFAULT_METADATA_URI, help = METADATA_HELP)]
    pub metadata: String,
    /// Print `<dlsn> <txid>` for each record once it is durable, in input order.
    #[arg(long)]
    pub print_dlsn: bool,
    /// Each line is `<txid> <payload>`: the record's transaction id (decimal, above the log's
    /// last one and increasing), one space, then the payload. Without it, ids are assigned.
    #[arg(long)]
    pub txid_from_input: bool,
    /// Records written and not yet acknowledged, at most.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub in_flight: u32,
}

/// What the stdin thread hands over: lines, or why reading stopped.
type Batch = std::io::Result<Vec<Vec<u8>>>;

/// Runs `dlog write`.
pub fn main(args: WriteArgs) -> Result<()> {
    super::block_on(async {
        let ns = super::open(&args.metadata, &args.log).await?;
        let result = write(&ns, &args).await;
        ns.shutdown().await;
        result
    })
}

async fn write(ns: &Namespace, args: &WriteArgs) -> Result<()> {
    let name = super::full_name(ns, &args.log);
    let log = &args.log.log;
    if !ns.log_exists(log).await? {
        match ns.create_log(log).await {
            Ok(()) => eprintln!("created log {name}"),
            Err(LogError::LogExists(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("creating log {name}")),
        }
    }
    let writer = ns.open_writer(log).await?;
    let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
    std::thread::Builder::new().name("dlog-stdin".into()).spawn(move || read_stdin(&tx))?;
    match pipeline(&writer, args, rx).await {
        Ok(()) => writer.close().await.with_context(|| format!("closing the writer of {name}")),
        Err(e) => {
            // Gives the log up now rather than at the end of the lease; the error is the one
            // that stopped the command.
            let _ = tokio::time::timeout(CLOSE_AFTER_FAILURE, writer.close()).await;
            Err(e)
        }
    }
}

/// Reads stdin's lines (bytes, the newline dropped) and sends them in batches: a batch ends
/// when what stdin had buffered is used up, so a line typed at a terminal goes at once.
fn read_stdin(tx: &mpsc::Sender<Batch>) {
    let mut reader = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut batch = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                batch.push(line);
                if (reader.buffer().is_empty() || batch.len() >= BATCH_LINES_MAX)
                    && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
}

/// The record of input line `number`.
fn record(number: u64, line: Vec<u8>, txid_from_input: bool) -> Result<Record> {
    if !txid_from_input {
        return Ok(Record::new(line));
    }
    let space = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let txid = std::str::from_utf8(&line[..space])
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("line {number}: expected `<txid> <payload>` with a decimal txid"))?;
    let start = (space + 1).min(line.len());
    let payload = Bytes::from(line).slice(start..);
    Ok(Record::with_txid(txid, payload))
}

/// Writes what comes from `lines` with up to `--in-flight` records unacknowledged, printing
/// the acknowledgements in order; returns once every record written is acknowledged.
async fn pipeline(
    writer: &crate::log::LogWriter,
    args: &WriteArgs,
    mut lines: mpsc::Receiver<Batch>,
) -> Result<()> {
    let in_flight_max = args.in_flight as usize;
    let mut in_flight: FuturesOrdered<BoxFuture<'static, (u64, Result<Appended, LogError>)>> =
        FuturesOrdered::new();
    let mut queued: VecDeque<Vec<u8>> = VecDeque::new();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let (mut number, mut input_open, mut input_error) = (0u64, true, None);
    loop {
        while in_flight.len() < in_flight_max
            && let Some(line) = queued.pop_front()
        {
            number += 1;
            match record(number, line, args.txid_from_input) {
                Ok(record) => {
                    let n = number;
                    // Within the writer's bound on bytes not yet durable.
                    writer.ready(record.payload.len()).await;
                    match writer.try_write(record) {
                        Ok(written) => in_flight.push_back(written.map(move |r| (n, r)).boxed()),
                        // Refused at the call: no line after it is written, so the log holds
                        // exactly the lines before it (those in flight still complete).
                        Err(e) => {
                            (input_open, input_error) =
                                (false, Some(anyhow::Error::new(e).context(format!("line {n}"))));
                            queued.clear();
                        }
                    }
                }
                Err(e) => {
                    (input_open, input_error) = (false, Some(e));
                    queued.clear();
                }
            }
        }
        if !input_open && queued.is_empty() && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((n, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let appended = result.with_context(|| format!("line {n}"))?;
                if args.print_dlsn {
                    writeln!(out, "{} {}", appended.dlsn, appended.txid).context("writing stdout")?;
                    if in_flight.is_empty() {
                        out.flush().context("writing stdout")?;
                    }
                }
            }
            batch = lines.recv(), if input_open && queued.is_empty() => match batch {
                Some(Ok(batch)) => queued.extend(batch),
                Some(Err(e)) => (input_open, input_error) = (false, Some(anyhow!(e).context("reading stdin"))),
                None => input_open = false,
            },
        }
    }
    out.flush().context("writing stdout")?;
    match input_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
