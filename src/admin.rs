//! `dlog admin`: read commands over the cluster metadata (bookies, logs, a log's segments, one
//! segment), printed for people or, with `--json`, for scripts. They read through the typed
//! accessors of `dlog_metadata` only; nothing here builds a key by hand. And three commands
//! that change a log through the log API (`Namespace`): `truncate`, `recover` (fence and
//! close a segment) and `delete-log`.
//!
//! A value that does not decode is reported with its key and the command fails (exit 1): an
//! operator must see damage, not a shorter list. For the read commands a `local://` URI names
//! a metadata store's directory, read as a snapshot without its lock, so it can be inspected
//! while the process that owns it runs; for the changing ones it names a cluster's directory
//! (as for `dlog write`), which they run in this process, so it must not be in use. By
//! default every command goes to the metadata a running `dlog local` serves.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use dlog_metadata::metadata_uri::redacted;
use dlog_metadata::schema::{Dlsn, LogSegmentState, SegmentMetadata, SegmentState};
use dlog_metadata::{AnyStore, BookieRegistry, LogMetadataStore, SegmentMetadataStore};
use serde_json::{Value, json};
use std::sync::Arc;

use crate::cli::LogName;
use crate::log::namespace::split_namespace;
use crate::log::{Dlsn as LogDlsn, Namespace};

/// Where commands find the metadata when `--metadata` and `DLOG_METADATA` are not given: the
/// metadata a running `dlog local` serves, as for every other command.
pub const DEFAULT_METADATA: &str = crate::local_cluster::DEFAULT_METADATA_URI;

/// `dlog admin` flags.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The metadata: dlog://host:port (a running `dlog local`), etcd[s]://host:port[,...]/scope[?..]
    /// (docs/metadata.md), or local:///DIR (read commands: a metadata store's directory, read as a snapshot;
    /// truncate, recover, delete-log: a cluster's directory, run in this process).
    #[arg(long, env = "DLOG_METADATA", default_value = DEFAULT_METADATA, global = true)]
    pub metadata: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to show.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `dlog admin` commands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Registered bookies (writable and read-only) and their endpoints.
    Bookies,
    /// Namespaces, or the logs of one namespace.
    Logs {
        /// The namespace (when omitted: the metadata URI's `namespace=`, or else all namespaces).
        namespace: Option<String>,
    },
    /// A log's segments in order: NAMESPACE/LOG.
    Segments {
        /// The log, as NAMESPACE/LOG.
        log: String,
    },
    /// One segment's metadata: quorums, state, ensembles.
    Segment {
        /// The segment id.
        id: u64,
    },
    /// Truncate a log before a position: readers no longer see the records before it, and the
    /// segments wholly before it are deleted with their data.
    Truncate {
        /// The log: LOG or NAMESPACE/LOG.
        log: LogName,
        /// The first position kept, `<segment_seq>:<entry_id>:<slot>` (as `dlog write
        /// --print-dlsn` prints it).
        dlsn: LogDlsn,
    },
    /// Fence and recover a segment (its writer can add nothing more) and close it; prints its
    /// last entry. A segment closed already is left as it is.
    Recover {
        /// The segment id.
        segment: u64,
    },
    /// Delete a log with its records (refused while a writer holds it).
    DeleteLog {
        /// The log: LOG or NAMESPACE/LOG.
        log: LogName,
    },
}

/// Runs `dlog admin`.
pub fn main(args: AdminArgs) -> Result<()> {
    // Multi-thread: the changing commands' namespace does background work on it.
    let out = crate::cli::block_on(run(&args))?;
    // A reader of the output that went away (`| head`) is not an error, and must not panic.
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing stdout"))
        }
        _ => Ok(()),
    }
}

/// Runs one command and returns its output (text or JSON).
pub async fn run(args: &AdminArgs) -> Result<String> {
    // The URI's namespace, if it names one: the default of `logs`; a namespace a read command
    // names must agree with it (as the changing commands' `NAMESPACE/LOG` must).
    let (store_uri, uri_namespace) = split_namespace(&args.metadata)?;
    let open_read_only = || open_read_only(&store_uri, &args.metadata);
    let agreeing = |named: &str| match &uri_namespace {
        Some(ns) if ns != named => {
            bail!("namespace {named} disagrees with the metadata URI's namespace={ns}")
        }
        _ => Ok(()),
    };
    let (text, json) = match &args.command {
        AdminCommand::Bookies => bookies(open_read_only().await?, args.json).await?,
        AdminCommand::Logs { namespace } => {
            if let Some(named) = namespace {
                agreeing(named)?;
            }
            let namespace = namespace.as_deref().or(uri_namespace.as_deref());
            logs(open_read_only().await?, namespace).await?
        }
        AdminCommand::Segments { log } => {
            agreeing(split_log(log)?.0)?;
            segments(open_read_only().await?, log).await?
        }
        AdminCommand::Segment { id } => segment(open_read_only().await?, *id).await?,
        AdminCommand::Truncate { log, dlsn } => truncate(&args.metadata, log, *dlsn).await?,
        AdminCommand::Recover { segment } => recover(&args.metadata, *segment).await?,
        AdminCommand::DeleteLog { log } => delete_log(&args.metadata, log).await?,
    };
    Ok(if args.json { format!("{}\n", serde_json::to_string_pretty(&json)?) } else { text })
}

/// The store the read commands read, `store_uri` (`metadata` without its `namespace=`, which
/// `run` checks against the namespace a command names). Read-only: a local store owned by a
/// running process is read as a snapshot.
async fn open_read_only(store_uri: &str, metadata: &str) -> Result<Arc<AnyStore>> {
    let store = AnyStore::open_read_only(store_uri)
        .await
        .with_context(|| format!("opening metadata {}", redacted(metadata)))?;
    Ok(Arc::new(store))
}

/// Runs `change` on the namespace of `log`, then stops the namespace (a `local://` cluster
/// with it) whatever the outcome.
async fn on_namespace<T>(
    metadata: &str,
    log: &LogName,
    change: impl AsyncFnOnce(&Namespace) -> Result<T>,
) -> Result<(String, T)> {
    let ns = crate::cli::open(metadata, log).await?;
    let name = crate::cli::full_name(&ns, log);
    let result = change(&ns).await;
    ns.shutdown().await;
    Ok((name, result?))
}

async fn truncate(metadata: &str, log: &LogName, before: LogDlsn) -> Result<(String, Value)> {
    let (name, ()) = on_namespace(metadata, log, async |ns| Ok(ns.truncate(&log.log, before).await?)).await?;
    let text = format!("truncated {name} before {before}\n");
    Ok((text, json!({ "log": name, "truncated_before": before.to_string() })))
}

async fn delete_log(metadata: &str, log: &LogName) -> Result<(String, Value)> {
    let (name, ()) = on_namespace(metadata, log, async |ns| Ok(ns.delete_log(&log.log).await?)).await?;
    Ok((format!("deleted log {name}\n"), json!({ "deleted": name })))
}

/// `dlog admin recover`: the segment's master key from its metadata, then the recovery.
async fn recover(metadata: &str, id: u64) -> Result<(String, Value)> {
    // The namespace only carries the replication client: the URI's own namespace does.
    let ns = Namespace::open_with(metadata, crate::cli::namespace_config()?)
        .await
        .with_context(|| format!("opening {}", redacted(metadata)))?;
    let recovered = async {
        let client = ns.replication();
        let meta = client.segment(id).await.with_context(|| format!("segment {id}"))?;
        client.recover_segment(id, meta.master_key).await.with_context(|| format!("recovering segment {id}"))
    }
    .await;
    ns.shutdown().await;
    let end = recovered?;
    let text = match end.last_entry {
        Some(last) => format!("segment {id} closed: last entry {last}, {} bytes\n", end.length),
        None => format!("segment {id} closed: empty\n"),
    };
    Ok((text, json!({ "segment": id, "last_entry": end.last_entry, "length": end.length })))
}

async fn bookies(store: Arc<AnyStore>, json: bool) -> Result<(String, Value)> {
    let registry = BookieRegistry::new(store);
    let mut text = format!(
        "{:<24} {:<10} {:<22} {:>6} {:<10} {:<10}\n",
        "BOOKIE", "STATE", "ENDPOINT", "SHARDS", "RACK", "ZONE"
    );
    let mut rows = Vec::new();
    let mut damaged = Vec::new();
    for entry in registry.writable().await?.into_iter().chain(registry.read_only().await?) {
        let b = match entry {
            Ok(b) => b,
            Err(e) => {
                damaged.push(e.to_string());
                continue;
            }
        };
        let state = if b.read_only { "read-only" } else { "writable" };
        let info = &b.info;
        let _ = writeln!(
            text,
            "{:<24} {state:<10} {:<22} {:>6} {:<10} {:<10}",
            b.id, info.endpoint, info.shards, info.rack, info.zone
        );
        rows.push(json!({
            "id": b.id, "state": state, "endpoint": info.endpoint, "shards": info.shards,
            "rack": info.rack, "zone": info.zone, "version": info.version,
            "registered_ms": info.registered_ms, "free_bytes": info.free_bytes,
            "lease": b.lease.map(|l| l.0),
        }));
    }
    // Damage fails the command (on stderr), after what could be read (on stdout, as asked).
    if !damaged.is_empty() {
        if json {
            println!("{}", serde_json::to_string_pretty(&json!({ "bookies": rows }))?);
        } else {
            print!("{text}");
        }
        bail!("damaged bookie registrations:\n  {}", damaged.join("\n  "));
    }
    Ok((text, json!({ "bookies": rows })))
}

async fn logs(store: Arc<AnyStore>, namespace: Option<&str>) -> Result<(String, Value)> {
    let logs = LogMetadataStore::new(store);
    let Some(ns) = namespace else {
        let names = logs.namespaces().await?;
        let text = names.iter().map(|n| format!("{n}\n")).collect();
        return Ok((text, json!({ "namespaces": names })));
    };
    if logs.namespace(ns).await?.is_none() {
        bail!("no namespace {ns:?}");
    }
    let mut text = format!(
        "{:<32} {:>8} {:>12} {:>12} {:<20}\n",
        "LOG", "EPOCH", "NEXT_SEQ", "NEXT_TXID", "TRUNCATED_BEFORE"
    );
    let mut rows = Vec::new();
    for (name, meta, version) in logs.logs(ns).await? {
        let truncated = meta.truncated_before.map(dlsn).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            text,
            "{name:<32} {:>8} {:>12} {:>12} {truncated:<20}",
            meta.writer_epoch, meta.next_segment_seq, meta.next_txid
        );
        rows.push(json!({
            "log": name, "writer_epoch": meta.writer_epoch, "next_segment_seq": meta.next_segment_seq,
            "next_txid": meta.next_txid, "truncated_before": meta.truncated_before.map(dlsn_json),
            "created_ms": meta.created_ms, "version": version.0,
        }));
    }
    Ok((text, json!({ "namespace": ns, "logs": rows })))
}

fn dlsn(d: Dlsn) -> String {
    format!("{}:{}:{}", d.segment_seq, d.entry_id, d.slot)
}

fn dlsn_json(d: Dlsn) -> Value {
    json!({ "segment_seq": d.segment_seq, "entry_id": d.entry_id, "slot": d.slot })
}

fn split_log(log: &str) -> Result<(&str, &str)> {
    log.split_once('/').with_context(|| format!("log {log:?}: expected NAMESPACE/LOG"))
}

async fn segments(store: Arc<AnyStore>, log: &str) -> Result<(String, Value)> {
    let (ns, name) = split_log(log)?;
    let logs = LogMetadataStore::new(store);
    if logs.log(ns, name).await?.is_none() {
        bail!("no log {ns}/{name}");
    }
    let mut text = format!(
        "{:>6} {:>20} {:<11} {:>6} {:>12} {:>12} {:>10} {:<16}\n",
        "SEQ", "SEGMENT", "STATE", "EPOCH", "FIRST_TXID", "LAST_TXID", "RECORDS", "LAST_DLSN"
    );
    let mut rows = Vec::new();
    for (s, version) in logs.segments(ns, name).await? {
        let (state, last_txid, count, last) = match s.state {
            LogSegmentState::InProgress => ("in-progress", None, None, None),
            LogSegmentState::Completed { last_txid, record_count, last_dlsn, .. } => {
                ("completed", Some(last_txid), Some(record_count), last_dlsn)
            }
        };
        let dash = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        let _ = writeln!(
            text,
            "{:>6} {:>20} {state:<11} {:>6} {:>12} {:>12} {:>10} {:<16}",
            s.seq,
            s.segment_id,
            s.epoch,
            s.first_txid,
            dash(last_txid),
            dash(count),
            last.map_or("-".into(), dlsn)
        );
        rows.push(json!({
            "seq": s.seq, "segment_id": s.segment_id, "state": state, "epoch": s.epoch,
            "first_txid": s.first_txid, "last_txid": last_txid, "record_count": count,
            "last_dlsn": last.map(dlsn_json), "created_ms": s.created_ms, "version": version.0,
        }));
    }
    Ok((text, json!({ "log": format!("{ns}/{name}"), "segments": rows })))
}

fn state_json(state: SegmentState) -> Value {
    match state {
        SegmentState::Open => json!("open"),
        SegmentState::InRecovery => json!("in-recovery"),
        SegmentState::Closed { last_entry_id, length } => {
            json!({ "closed": { "last_entry_id": last_entry_id, "length": length } })
        }
    }
}

async fn segment(store: Arc<AnyStore>, id: u64) -> Result<(String, Value)> {
    let segments = SegmentMetadataStore::new(store);
    let Some((meta, version)) = segments.get(id).await? else { bail!("no segment {id}") };
    let SegmentMetadata { ensemble_size, write_quorum_size, ack_quorum_size, .. } = meta;
    let state = match meta.state {
        SegmentState::Open => "open".to_string(),
        SegmentState::InRecovery => "in recovery".to_string(),
        SegmentState::Closed { last_entry_id: Some(l), length } => {
            format!("closed at entry {l}, {length} bytes")
        }
        SegmentState::Closed { last_entry_id: None, .. } => "closed, empty".to_string(),
    };
    let owner = meta.owner.as_ref().map(|o| format!("{}/{} seq {}", o.namespace, o.log, o.seq));
    let mut text = format!(
        "segment {id} (version {})\n  state: {state}\n  ensemble_size {ensemble_size}, \
         write_quorum_size {write_quorum_size}, ack_quorum_size {ack_quorum_size}, digest {:?}\n  log: {}\n  \
         ensembles:\n",
        version.0,
        meta.digest_type,
        owner.as_deref().unwrap_or("-")
    );
    for (first, bookies) in &meta.ensembles {
        let _ = writeln!(text, "    from entry {first}: {}", bookies.join(", "));
    }
    let ensembles: Vec<Value> =
        meta.ensembles.iter().map(|(first, b)| json!({ "first_entry_id": first, "bookies": b })).collect();
    let json = json!({
        "id": id, "version": version.0, "state": state_json(meta.state),
        "ensemble_size": ensemble_size, "write_quorum_size": write_quorum_size,
        "ack_quorum_size": ack_quorum_size, "digest_type": format!("{:?}", meta.digest_type),
        "master_key": meta.master_key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "created_ms": meta.created_ms, "log": owner, "ensembles": ensembles,
    });
    Ok((text, json))
}
