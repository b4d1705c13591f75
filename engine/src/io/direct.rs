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
    result
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
