//! O_DIRECT: probing a directory and opening files with the chosen mode.
//!
//! Filesystems differ: ext4 and xfs take O_DIRECT, tmpfs before Linux 6.6 refuses it at open
//! (EINVAL), some network and FUSE filesystems refuse it at the first write. The probe
//! opens and writes one aligned sector in a scratch file, so a refusal at either step is seen.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::constants::SECTOR_BYTES;
use crate::io::buf::AlignedBuf;

/// Whether `dir` accepts O_DIRECT writes of `SECTOR_BYTES`-aligned buffers.
pub fn probe(dir: &Path) -> io::Result<bool> {
    let path = dir.join(".dlog-direct-io-probe");
    let result = (|| {
        let file = match OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut buf = AlignedBuf::with_capacity(SECTOR_BYTES);
        buf.set_len(SECTOR_BYTES);
        match file.write_at(buf.as_slice(), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&path);
    match result {
        // A full disk cannot take the scratch sector: read a sector of a file already there
        // with O_DIRECT instead (a bookie must open on a full disk, to serve reads and free
        // space).
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => probe_read(dir).map(|r| r.unwrap_or(false)),
        other => other,
    }
}

/// Whether an O_DIRECT read of one sector of a file in `dir` works; `None` if no file has one.
fn probe_read(dir: &Path) -> io::Result<Option<bool>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.metadata().is_ok_and(|m| m.is_file() && m.len() >= SECTOR_BYTES as u64) {
            continue;
        }
        let file = match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Some(false)),
            Err(e) => return Err(e),
        };
        let mut buf = AlignedBuf::with_capacity(SECTOR_BYTES);
        buf.set_len(SECTOR_BYTES);
        return match file.read_at(buf.as_mut_slice(), 0) {
            Ok(_) => Ok(Some(true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Some(false)),
            Err(e) => Err(e),
        };
    }
    Ok(None)
}

/// Opens an existing file for reading and writing, with O_DIRECT when `direct`.
pub fn open(path: &Path, direct: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path)
}

/// Opens a file read-only, with O_DIRECT when `direct`.
pub fn open_read(path: &Path, direct: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path)
}

/// Fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads into all of `buf` from `offset`, retrying interrupted and partial reads. Returns the
/// bytes read (fewer than `buf.len()` only at the end of the file) and the error that stopped
/// it, if any.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}
