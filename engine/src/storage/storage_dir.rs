//! `StorageDir`: one shard's segment storage directory, and opening it: reading the manifest,
//! checking every run it lists, or rebuilding the run index by scanning the entry logs when the
//! manifest is missing or damaged.
//!
//! ```text
//! <storage_dir>/storage-<n>/entrylog-<seq as 16 hex digits>.log   entry logs (runs back to back)
//! <storage_dir>/storage-<n>/manifest                              the manifest (docs/format.md)
//! <storage_dir>/storage-<n>/manifest.tmp                          being written (ignored at open)
//! ```
//!
//! Invariant SD1: opening never deletes or overwrites a byte a manifest-listed run uses. Bytes of
//! a log past the manifest's used length belong to a flush whose manifest was never written
//! (its entries are still in the journal) and are cut off, and logs the manifest does not list
//! are deleted; without a manifest nothing is cut or deleted. New runs always go to a new log.
//!
//! Invariant SD2: nothing a file holds panics open or sizes an allocation past the file: a run
//! the index refuses (a seq another run has, RI3) is damage like a run that does not decode,
//! and a run's footer is read only once it is known to end within its log.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::constants::SECTOR_BYTES;
use crate::error::{IoOp, OpenError};
use crate::ids::{LogSeq, ShardId};
use crate::io::buf::AlignedBuf;
use crate::io::direct::{self, sync_dir};
use crate::storage::manifest::Manifest;
use crate::storage::run::{self, RUN_HEADER_BYTES, RunError, RunHeader, Section};
use crate::storage::run_index::{RunIndex, RunInfo};

/// Paths of one shard's storage.
#[derive(Clone, Debug)]
pub struct StorageDir {
    /// The directory.
    pub path: PathBuf,
    /// The shard.
    pub shard: ShardId,
}

/// What opening storage found.
#[derive(Debug, Default)]
pub struct StorageStart {
    /// Runs and their sections.
    pub index: RunIndex,
    /// Entry logs: (seq, bytes used, open file).
    pub logs: Vec<(LogSeq, u64, Option<File>)>,
    /// Sequence number for the next entry log.
    pub next_log: u64,
    /// The manifest, if one was read.
    pub manifest: Option<Manifest>,
    /// Damage found (a listed run that does not decode or is missing, bytes in a log that are
    /// not a whole run, damage recorded by an earlier open in the manifest); while any
    /// exists, a missing entry answers `Corrupt`, never `NoSuchEntry`.
    pub damage: Vec<String>,
    /// Entry logs where damage was found: never deleted or compacted away (G3), whatever the
    /// index says is live in them.
    pub damaged_logs: Vec<LogSeq>,
    /// The run index was rebuilt by scanning entry logs.
    pub rebuilt: bool,
}

fn io_error(op: IoOp, path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { op, file: path.to_path_buf(), source }
}

impl StorageStart {
    /// Indexes a run read whole at (`log`, `offset`); a run the index refuses (RI3) is damage
    /// in its log, which is then kept as it is (SD2).
    fn index_run(&mut self, log: LogSeq, offset: u64, header: RunHeader, sections: &[Section]) {
        if let Err(refused) = self.index.insert(RunInfo { log, offset, header }, sections, |_| false) {
            self.damaged_logs.push(log);
            self.damage.push(format!("entry log {log} offset {offset}: {refused}"));
        }
    }
}

impl StorageDir {
    /// The storage directory of `shard` under `storage_dir`, created if missing.
    pub fn open(storage_dir: &Path, shard: ShardId) -> Result<StorageDir, OpenError> {
        let path = storage_dir.join(format!("storage-{}", shard.0));
        fs::create_dir_all(&path).map_err(io_error(IoOp::Open, &path))?;
        Ok(StorageDir { path, shard })
    }

    /// Path of entry log `seq`.
    pub fn log_path(&self, seq: LogSeq) -> PathBuf {
        self.path.join(format!("entrylog-{seq}.log"))
    }

    /// Creates entry log `seq` (empty) for writing and reading. Runs are appended to it. It is
    /// not preallocated: writes into fallocated (unwritten) extents made the 64 KiB write
    /// benchmark's p99 about 10x worse here (160 ms against 17 ms), for the same throughput.
    pub fn create_log(&self, seq: LogSeq, direct_io: bool) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true);
        if direct_io {
            options.custom_flags(libc::O_DIRECT);
        }
        options.open(self.log_path(seq))
    }

    /// Writes the manifest durably (temporary file, fsync, rename, fsync directory). The
    /// directory fsync also makes new entry logs' names durable.
    pub fn write_manifest(&self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.join("manifest.tmp");
        fs::write(&tmp, bytes)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.path.join("manifest"))?;
        sync_dir(&self.path)
    }

    fn list_logs(&self) -> Result<Vec<LogSeq>, OpenError> {
        let mut logs = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_error(IoOp::Read, &self.path))? {
            let entry = entry.map_err(io_error(IoOp::Read, &self.path))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == "manifest" || name == "manifest.tmp" || name.starts_with(".dlog-") {
                continue;
            }
            let seq = name
                .strip_prefix("entrylog-")
                .and_then(|n| n.strip_suffix(".log"))
                .filter(|hex| hex.len() == 16)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            match seq {
                Some(seq) => logs.push(LogSeq(seq)),
                None => {
                    return Err(OpenError::Layout {
                        path: entry.path(),
                        reason: "unexpected file in a storage directory".into(),
                    });
                }
            }
        }
        logs.sort();
        Ok(logs)
    }

    /// Opens storage: from the manifest when it is readable, else by scanning entry logs.
    pub fn load(&self, direct_io: bool) -> Result<StorageStart, OpenError> {
        let on_disk = self.list_logs()?;
        let manifest_path = self.path.join("manifest");
        let mut start = StorageStart::default();
        let manifest = match fs::read(&manifest_path) {
            Ok(bytes) => match Manifest::decode(&bytes) {
                Ok(m) if m.shard == self.shard.0 => Some(m),
                Ok(m) => {
                    return Err(OpenError::Layout {
                        path: manifest_path,
                        reason: format!(
                            "manifest of shard {} in the directory of shard {}",
                            m.shard, self.shard.0
                        ),
                    });
                }
                Err(reason) => {
                    tracing::error!(path = %manifest_path.display(), %reason,
                        "storage manifest unreadable; rebuilding the index from entry logs");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(OpenError::Io { op: IoOp::Read, file: manifest_path, source: e }),
        };
        start.next_log = on_disk.last().map_or(0, |s| s.0 + 1);
        match &manifest {
            Some(m) => self.load_listed(m, &on_disk, direct_io, &mut start)?,
            None => {
                start.rebuilt = !on_disk.is_empty();
                for seq in &on_disk {
                    self.scan_log(*seq, direct_io, &mut start)?;
                }
            }
        }
        if let Some(m) = &manifest {
            start.next_log = start.next_log.max(m.next_log);
            // Damage stays known across restarts: its entries answer Corrupt, not NoSuchEntry.
            for d in &m.damage {
                if !start.damage.contains(d) {
                    start.damage.push(d.clone());
                }
            }
        }
        start.manifest = manifest;
        Ok(start)
    }

    fn open_log(&self, seq: LogSeq, direct_io: bool) -> Result<File, OpenError> {
        let path = self.log_path(seq);
        direct::open(&path, direct_io).map_err(io_error(IoOp::Open, &path))
    }

    fn load_listed(
        &self,
        manifest: &Manifest,
        on_disk: &[LogSeq],
        direct_io: bool,
        start: &mut StorageStart,
    ) -> Result<(), OpenError> {
        // Each listed log's length once cut to its used length: a run's footer must end within.
        let mut lens: Vec<(LogSeq, u64)> = Vec::new();
        for (seq, used) in &manifest.logs {
            if !on_disk.contains(seq) {
                start.damage.push(format!("entry log {seq} listed in the manifest is missing"));
                continue;
            }
            let file = self.open_log(*seq, direct_io)?;
            let path = self.log_path(*seq);
            let len = file.metadata().map_err(io_error(IoOp::Read, &path))?.len();
            if len > *used {
                // SD1: a flush whose manifest was never written.
                file.set_len(*used).map_err(io_error(IoOp::Write, &path))?;
            }
            lens.push((*seq, len.min(*used)));
            start.logs.push((*seq, *used, Some(file)));
        }
        for run in &manifest.runs {
            let Some((_, _, Some(file))) = start.logs.iter().find(|(s, _, _)| *s == run.log) else {
                start.damage.push(format!("run {} is in entry log {}, which is missing", run.seq, run.log));
                continue;
            };
            let log_bytes = lens.iter().find(|(s, _)| *s == run.log).map_or(0, |(_, len)| *len);
            match read_run(file, run.log, run.offset, log_bytes) {
                Ok((header, sections)) if header.seq == run.seq && header.run_bytes == run.bytes => {
                    start.index_run(run.log, run.offset, header, &sections);
                }
                Ok((header, _)) => {
                    start.damaged_logs.push(run.log);
                    start.damage.push(format!(
                        "entry log {} offset {}: run {} of {} bytes where the manifest lists run {} of {}",
                        run.log, run.offset, header.seq, header.run_bytes, run.seq, run.bytes
                    ));
                }
                Err(reason) => {
                    start.damaged_logs.push(run.log);
                    start.damage.push(format!("entry log {} offset {}: {reason}", run.log, run.offset));
                }
            }
        }
        for seq in on_disk {
            if !manifest.logs.iter().any(|(s, _)| s == seq) {
                // Not listed: created for a flush whose manifest was never written (its entries
                // are still in the journal), or compacted away before a crash. Nothing the
                // manifest relies on is in it.
                let path = self.log_path(*seq);
                fs::remove_file(&path).map_err(io_error(IoOp::Open, &path))?;
                tracing::info!(path = %path.display(), "deleted an entry log the manifest does not list");
            }
        }
        Ok(())
    }

    fn log_len(&self, seq: LogSeq) -> Result<u64, OpenError> {
        let path = self.log_path(seq);
        let len = fs::metadata(&path).map_err(io_error(IoOp::Read, &path))?.len();
        Ok(len.next_multiple_of(SECTOR_BYTES as u64))
    }

    /// Finds every whole run in a log: run after run from the start; after a run that does
    /// not decode, the next sector where one does (reported as damage). Reads in large blocks,
    /// so a log with a long zero tail is scanned at sequential read speed.
    fn scan_log(&self, seq: LogSeq, direct_io: bool, start: &mut StorageStart) -> Result<(), OpenError> {
        let file = self.open_log(seq, direct_io)?;
        let len = self.log_len(seq)?;
        let mut block = AlignedBuf::with_capacity(SCAN_BLOCK_BYTES);
        let mut at = 0u64;
        let mut skipping_from: Option<u64> = None;
        while at + RUN_HEADER_BYTES as u64 <= len {
            if let Ok((header, sections)) = read_run(&file, seq, at, len) {
                if let Some(from) = skipping_from.take() {
                    start.damaged_logs.push(seq);
                    start.damage.push(format!("entry log {seq}: no whole run in bytes {from}..{at}"));
                }
                start.index_run(seq, at, header, &sections);
                at += header.run_bytes;
                continue;
            }
            // Not a run here: find the next sector that starts a run header. Zeroes are the
            // unused tail of a log; anything else may have been a run, so it is damage.
            let n = ((len - at) as usize).min(SCAN_BLOCK_BYTES);
            block.set_len(n.next_multiple_of(SECTOR_BYTES));
            let (got, result) = direct::read_full_at(&file, block.as_mut_slice(), at);
            let path = self.log_path(seq);
            result.map_err(io_error(IoOp::Read, &path))?;
            let bytes = &block.as_slice()[..got];
            if skipping_from.is_none() && bytes.iter().take(SECTOR_BYTES).any(|b| *b != 0) {
                skipping_from = Some(at);
            }
            let next = bytes
                .chunks(SECTOR_BYTES)
                .skip(1)
                .position(|sector| run::decode_header(sector, seq.0).is_ok());
            at = match next {
                Some(i) => at + ((i + 1) * SECTOR_BYTES) as u64,
                None => at + got.max(SECTOR_BYTES) as u64,
            };
        }
        if let Some(from) = skipping_from {
            start.damaged_logs.push(seq);
            start.damage.push(format!("entry log {seq}: bytes from {from} are not a whole run"));
        }
        // New runs never go into a log found at open, so its length is only what it holds.
        start.logs.push((seq, len, Some(file)));
        Ok(())
    }
}

/// Bytes read at a time while looking for runs in an entry log without a manifest.
const SCAN_BLOCK_BYTES: usize = 1 << 20;

/// Why `read_run` found no whole run.
#[derive(Debug, thiserror::Error)]
pub enum ReadRunError {
    /// Reading the log failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The header did not decode.
    #[error("{0}")]
    Header(RunError),
    /// The header places the footer past the end of the log (SD2).
    #[error("run footer ends at byte {footer_end} of the log, past its {log_bytes} bytes")]
    PastLog {
        /// Where the footer would end in the log (saturated at `u64::MAX`).
        footer_end: u64,
        /// The log's length.
        log_bytes: u64,
    },
    /// The footer did not decode, or the log ended inside it.
    #[error("{0}")]
    Footer(RunError),
}

/// Reads and checks a run's header and footer at `offset` of `file`, a log of `log_bytes`
/// bytes: the footer is read only when the header places it within them (SD2), so a
/// damaged header cannot size the read buffer.
pub fn read_run(
    file: &File,
    log: LogSeq,
    offset: u64,
    log_bytes: u64,
) -> Result<(RunHeader, Vec<Section>), ReadRunError> {
    let mut head = AlignedBuf::with_capacity(SECTOR_BYTES);
    head.set_len(SECTOR_BYTES);
    let (n, result) = direct::read_full_at(file, head.as_mut_slice(), offset);
    result?;
    let header = run::decode_header(&head.as_slice()[..n], log.0).map_err(ReadRunError::Header)?;
    let footer_at = offset.saturating_add(header.footer_at);
    let footer_end = footer_at.saturating_add(header.footer_bytes);
    if footer_end > log_bytes {
        return Err(ReadRunError::PastLog { footer_end, log_bytes });
    }
    let start = footer_at / SECTOR_BYTES as u64 * SECTOR_BYTES as u64;
    let end = footer_end.next_multiple_of(SECTOR_BYTES as u64);
    let mut buf = AlignedBuf::with_capacity((end - start) as usize);
    buf.set_len((end - start) as usize);
    let (n, result) = direct::read_full_at(file, buf.as_mut_slice(), start);
    result?;
    let skew = (footer_at - start) as usize;
    let footer = buf.as_slice()[..n]
        .get(skew..skew + header.footer_bytes as usize)
        .ok_or_else(|| ReadRunError::Footer("run footer is cut off".into()))?;
    let sections = run::decode_footer(footer, log.0, &header).map_err(ReadRunError::Footer)?;
    Ok((header, sections))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SegmentId;
    use crate::journal::record::{self, RecordHeader, RecordKind};
    use crate::storage::run::{RUN_BYTES_MAX, RUN_HEADER_PAYLOAD_BYTES, RunEncoder};
    use bytes::Bytes;

    fn run_bytes(epoch: u64) -> Vec<u8> {
        let entries = vec![(SegmentId(1), vec![(0, Bytes::from_static(b"abc"))])];
        let mut encoder = RunEncoder::new(epoch, 0, &entries).unwrap();
        let mut chunk = AlignedBuf::with_capacity(SECTOR_BYTES);
        let mut out = Vec::new();
        while !encoder.is_done() {
            encoder.fill(&mut chunk, &entries);
            out.extend_from_slice(chunk.as_slice());
        }
        out
    }

    /// Regression: a CRC-valid header whose footer lies near 4 GiB made `read_run` allocate
    /// that much before finding the log a sector long (SD2).
    #[test]
    fn read_run_refuses_a_footer_past_the_log_before_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        // A whole run reads back; one byte short of its footer's end, the log is too short.
        let whole = run_bytes(5);
        fs::write(&path, &whole).unwrap();
        let file = File::open(&path).unwrap();
        let (header, _) = read_run(&file, LogSeq(5), 0, whole.len() as u64).unwrap();
        let footer_end = header.footer_at + header.footer_bytes;
        match read_run(&file, LogSeq(5), 0, footer_end - 1) {
            Err(ReadRunError::PastLog { footer_end: end, .. }) => assert_eq!(end, footer_end),
            other => panic!("expected PastLog, got {other:?}"),
        }
        // A forged header: the largest run, its footer filling it, in a one-sector log.
        let run_max = RUN_BYTES_MAX / SECTOR_BYTES as u64 * SECTOR_BYTES as u64;
        let mut payload = [0u8; RUN_HEADER_PAYLOAD_BYTES];
        payload[0..8].copy_from_slice(&72u64.to_le_bytes());
        payload[8..16].copy_from_slice(&80u64.to_le_bytes());
        payload[16..24].copy_from_slice(&(run_max - 80).to_le_bytes());
        let h = RecordHeader {
            kind: RecordKind::RunHeader,
            flags: 0,
            payload_len: RUN_HEADER_PAYLOAD_BYTES as u32,
            segment_id: run_max,
            entry_id: 0,
            last_add_confirmed: 1,
        };
        let mut sector = vec![0u8; SECTOR_BYTES];
        record::encode(&mut sector[..RUN_HEADER_BYTES], 5, &h, &payload);
        assert_eq!(run::decode_header(&sector, 5).unwrap().footer_bytes, run_max - 80);
        fs::write(&path, &sector).unwrap();
        let file = File::open(&path).unwrap();
        match read_run(&file, LogSeq(5), 0, SECTOR_BYTES as u64) {
            Err(ReadRunError::PastLog { footer_end, log_bytes: 4096 }) => assert_eq!(footer_end, run_max),
            other => panic!("expected PastLog, got {other:?}"),
        }
    }
}
