//! A shard's journal directory: file names, listing, the checkpoint file.
//!
//! ```text
//! <journal_dir>/dlog-layout              "dlog-journal-layout 1\nshard_count N\n"
//! <journal_dir>/shard-<n>/journal-<seq as 16 hex digits>.log   live journal files
//! <journal_dir>/shard-<n>/journal-<seq>.prep                   being prepared (deleted at open)
//! <journal_dir>/shard-<n>/recycle-<seq>.log                     reclaimed, kept for reuse
//! <journal_dir>/shard-<n>/checkpoint                            last checkpoint (docs/format.md)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{IoOp, OpenError};
use crate::ids::{FileSeq, ShardId};
use crate::io::direct::sync_dir;
use crate::shard::request::JournalMark;

const CHECKPOINT_MAGIC: u32 = 0x4450_4B43; // "CKPD"
const LAYOUT_HEADER: &str = "dlog-journal-layout 1";

/// Paths of one shard's journal.
#[derive(Clone, Debug)]
pub struct ShardDir {
    /// The directory.
    pub path: PathBuf,
    /// The shard.
    pub shard: ShardId,
}

fn io_error(op: IoOp, path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { op, file: path.to_path_buf(), source }
}

/// Checks (or, on first use, records) the shard count a journal directory was created with.
pub fn check_layout(journal_dir: &Path, shard_count: u32) -> Result<(), OpenError> {
    fs::create_dir_all(journal_dir).map_err(io_error(IoOp::Open, journal_dir))?;
    let path = journal_dir.join("dlog-layout");
    let expected = format!("{LAYOUT_HEADER}\nshard_count {shard_count}\n");
    match fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(OpenError::Layout {
            path,
            reason: format!(
                "written for {:?}, opened with shard_count {shard_count}; a segment's journal \
                 lives in the shard its id maps to, so the shard count cannot change",
                found.lines().nth(1).unwrap_or("an unknown layout")
            ),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = journal_dir.join("dlog-layout.tmp");
            fs::write(&tmp, expected.as_bytes()).map_err(io_error(IoOp::Open, &tmp))?;
            fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_error(IoOp::Flush, &tmp))?;
            fs::rename(&tmp, &path).map_err(io_error(IoOp::Open, &path))?;
            sync_dir(journal_dir).map_err(io_error(IoOp::Flush, journal_dir))
        }
        Err(e) => Err(OpenError::Io { op: IoOp::Read, file: path, source: e }),
    }
}

impl ShardDir {
    /// The directory of `shard` under `journal_dir`, created if missing.
    pub fn open(journal_dir: &Path, shard: ShardId) -> Result<ShardDir, OpenError> {
        let path = journal_dir.join(format!("shard-{}", shard.0));
        fs::create_dir_all(&path).map_err(io_error(IoOp::Open, &path))?;
        Ok(ShardDir { path, shard })
    }

    /// Path of live journal file `seq`.
    pub fn journal_path(&self, seq: FileSeq) -> PathBuf {
        self.path.join(format!("journal-{seq}.log"))
    }

    /// Path of journal file `seq` while it is being prepared.
    pub fn prep_path(&self, seq: FileSeq) -> PathBuf {
        self.path.join(format!("journal-{seq}.prep"))
    }

    /// Path of a recycled file.
    pub fn recycle_path(&self, seq: FileSeq) -> PathBuf {
        self.path.join(format!("recycle-{seq}.log"))
    }

    /// Live journal files, oldest first, and recycled files. Leftover `.prep` files (a crash
    /// during preparation) are deleted. Unknown names are refused with a clear error.
    pub fn list(&self) -> Result<(Vec<FileSeq>, Vec<FileSeq>), OpenError> {
        let mut live = Vec::new();
        let mut recycled = Vec::new();
        let entries = fs::read_dir(&self.path).map_err(io_error(IoOp::Read, &self.path))?;
        for entry in entries {
            let entry = entry.map_err(io_error(IoOp::Read, &self.path))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == "checkpoint" || name == "checkpoint.tmp" || name.starts_with(".dlog-") {
                continue;
            }
            let parsed = parse_name(&name);
            match parsed {
                Some(("journal", seq, "log")) => live.push(seq),
                Some(("recycle", seq, "log")) => recycled.push(seq),
                Some(("journal", _, "prep")) => {
                    let path = entry.path();
                    fs::remove_file(&path).map_err(io_error(IoOp::Open, &path))?;
                }
                _ => {
                    return Err(OpenError::Layout {
                        path: entry.path(),
                        reason: "unexpected file in a journal directory".into(),
                    });
                }
            }
        }
        live.sort();
        recycled.sort();
        Ok((live, recycled))
    }

    /// The last checkpoint, if one was written.
    pub fn read_checkpoint(&self) -> Result<Option<JournalMark>, OpenError> {
        let path = self.path.join("checkpoint");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OpenError::Io { op: IoOp::Read, file: path, source: e }),
        };
        decode_checkpoint(&bytes)
            .map(Some)
            .ok_or(OpenError::Layout { path, reason: "checkpoint file is damaged".into() })
    }

    /// Writes a checkpoint durably (temporary file, fsync, rename, fsync directory).
    pub fn write_checkpoint(&self, mark: JournalMark) -> io::Result<()> {
        let tmp = self.path.join("checkpoint.tmp");
        fs::write(&tmp, encode_checkpoint(mark))?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.path.join("checkpoint"))?;
        sync_dir(&self.path)
    }
}

fn parse_name(name: &str) -> Option<(&str, FileSeq, &str)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let (kind, hex) = stem.split_once('-')?;
    if hex.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(hex, 16).ok()?;
    Some((kind, FileSeq(seq), ext))
}

fn encode_checkpoint(mark: JournalMark) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[0..4].copy_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
    out[4..12].copy_from_slice(&mark.file.0.to_le_bytes());
    out[12..20].copy_from_slice(&mark.offset.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_checkpoint(bytes: &[u8]) -> Option<JournalMark> {
    if bytes.len() != 24 {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(raw)
    };
    if u32_at(0) != CHECKPOINT_MAGIC || u32_at(20) != crc32c::crc32c(&bytes[0..20]) {
        return None;
    }
    Some(JournalMark { file: FileSeq(u64_at(4)), offset: u64_at(12) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_checkpoint_codec() {
        assert_eq!(parse_name("journal-000000000000000a.log"), Some(("journal", FileSeq(10), "log")));
        assert_eq!(parse_name("journal-a.log"), None);
        let mark = JournalMark { file: FileSeq(3), offset: 8192 };
        let mut bytes = encode_checkpoint(mark);
        assert_eq!(decode_checkpoint(&bytes), Some(mark));
        bytes[5] ^= 1;
        assert_eq!(decode_checkpoint(&bytes), None);
    }
}
