//! A small replicated key-value store whose write-ahead log is a dlog log (`WriteAheadLog`).
//!
//! - The leader owns the log: it appends each command (`set k v`, `del k`) and applies it to
//!   its map once durable, so an acknowledged write survives any crash.
//! - A follower tails the same log and applies the same commands in the same order: it is a
//!   replica that can serve reads, and take over as the next leader.
//! - A checkpoint writes the map and the log position it covers to a file, then truncates the
//!   log before it, so the log stays short.
//! - A new leader opens the log (fencing the old one, which can append nothing more), loads the
//!   checkpoint and replays the log from its position.
//!
//! Run: `cargo run --release --example kv_store` (everything in this process, in a temporary
//! directory: the embedded metadata store and three bookies).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dlog::log::{Dlsn, LogError, Namespace, StartPosition, WriteAheadLog};

/// The replicated state: a map, and the position after the last command applied.
#[derive(Default, Debug, PartialEq)]
struct Kv {
    map: BTreeMap<String, String>,
    applied_through: Option<Dlsn>,
}

impl Kv {
    fn apply(&mut self, dlsn: Dlsn, command: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(command).context("command is not UTF-8")?;
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("set"), Some(key), Some(value)) => {
                self.map.insert(key.to_owned(), value.to_owned());
            }
            (Some("del"), Some(key), None) => {
                self.map.remove(key);
            }
            _ => bail!("bad command {text:?} at {dlsn}"),
        }
        self.applied_through = Some(dlsn);
        Ok(())
    }

    /// Writes the map and the position it covers (one `key value` per line after the position).
    fn checkpoint(&self, path: &Path) -> Result<()> {
        let mut text = format!("{}\n", self.applied_through.map_or("none".to_owned(), |d| d.to_string()));
        for (k, v) in &self.map {
            text.push_str(&format!("{k} {v}\n"));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    fn load(path: &Path) -> Result<Kv> {
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(Kv::default()) };
        let mut lines = text.lines();
        let position = lines.next().context("empty checkpoint")?;
        let applied_through = if position == "none" { None } else { Some(position.parse()?) };
        let mut map = BTreeMap::new();
        for line in lines {
            let (k, v) = line.split_once(' ').context("bad checkpoint line")?;
            map.insert(k.to_owned(), v.to_owned());
        }
        Ok(Kv { map, applied_through })
    }
}

/// The leader: owns the log.
struct Leader {
    wal: WriteAheadLog,
    kv: Kv,
    checkpoint: PathBuf,
}

impl Leader {
    /// Takes the log over, loads the checkpoint and replays what follows it.
    async fn start(ns: &Namespace, checkpoint: PathBuf) -> Result<Leader> {
        let wal = WriteAheadLog::open(ns, "kv").await?;
        let mut kv = Kv::load(&checkpoint)?;
        let from = kv.applied_through.map_or(Dlsn::HEAD, next_position);
        let mut replay = wal.replay(from).await?;
        let mut replayed = 0;
        while let Some(record) = replay.next().await? {
            if Some(record.dlsn) > kv.applied_through {
                kv.apply(record.dlsn, &record.payload)?;
                replayed += 1;
            }
        }
        println!("leader: {} keys from the checkpoint, {replayed} commands replayed", kv.map.len());
        Ok(Leader { wal, kv, checkpoint })
    }

    /// Appends commands (pipelined), applying each once durable, in order.
    async fn run(&mut self, commands: Vec<String>) -> Result<()> {
        let pending: Vec<_> = commands.iter().map(|c| self.wal.append(c.clone().into_bytes())).collect();
        for (command, appended) in commands.iter().zip(pending) {
            let appended = appended.await?;
            self.kv.apply(appended.dlsn, command.as_bytes())?;
        }
        Ok(())
    }

    /// Checkpoints the map, then truncates the log before what the checkpoint covers.
    async fn checkpoint(&self) -> Result<()> {
        self.kv.checkpoint(&self.checkpoint)?;
        if let Some(through) = self.kv.applied_through {
            self.wal.truncate(next_position(through)).await?;
        }
        Ok(())
    }
}

/// A position just after `dlsn` (a reader from it starts at the next record).
fn next_position(dlsn: Dlsn) -> Dlsn {
    Dlsn { slot: dlsn.slot + 1, ..dlsn }
}

/// A follower: tails the log, applying every command, until it has applied `through`.
async fn follow(ns: &Namespace, kv: &mut Kv, through: Dlsn) -> Result<()> {
    let mut reader = ns.open_reader("kv", StartPosition::Head).await?;
    while kv.applied_through < Some(through) {
        let Some(record) = reader.next().await? else { break };
        kv.apply(record.dlsn, &record.payload)?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ns = Namespace::open(&format!("local://{}", dir.path().join("cluster").display())).await?;
    let checkpoint = dir.path().join("checkpoint");

    // A leader writes, a follower keeps up.
    let mut leader = Leader::start(&ns, checkpoint.clone()).await?;
    leader.run((0..1000).map(|i| format!("set key{:03} value{i}", i % 300)).collect()).await?;
    leader.run((0..50).map(|i| format!("del key{:03}", i * 3)).collect()).await?;
    let mut follower = Kv::default();
    let through = leader.kv.applied_through.context("something was applied")?;
    follow(&ns, &mut follower, through).await?;
    assert_eq!(follower.map, leader.kv.map, "the follower applied the same commands in the same order");
    println!("follower: {} keys, in step with the leader at {through}", follower.map.len());

    // A checkpoint, more writes, then the leader dies without closing.
    leader.checkpoint().await?;
    leader.run((0..200).map(|i| format!("set late{i} v{i}")).collect()).await?;
    let expected = std::mem::take(&mut leader.kv.map);
    let old_wal = leader.wal;

    // The next leader fences the old one and rebuilds the same state from checkpoint + log.
    let next = Leader::start(&ns, checkpoint).await?;
    assert_eq!(next.kv.map, expected, "checkpoint + replay rebuilt every acknowledged write");
    match old_wal.append(b"set zombie 1".to_vec()).await {
        Err(LogError::Fenced { .. }) => println!("the old leader is fenced: it can append nothing more"),
        other => bail!("the old leader appended after the takeover: {other:?}"),
    }
    next.wal.close().await?;
    ns.shutdown().await;
    println!("ok: {} keys", expected.len());
    Ok(())
}
