//! Cookie files: the copy of a bookie's cookie (`dlog_metadata::schema::Cookie`) kept in every
//! journal and ledger directory, and the start-up check that ties those directories to the
//! cookie stored at `cookies/<id>` (BookKeeper's cookie validation).
//!
//! Owns: the file format, writing it durably, reading it back into errors that name the path,
//! and `check_or_create`, the decision a bookie takes at start about its directories.
//! Does not own: the stored cookie's rules (`BookieRegistry`), registration (registration.rs).
//!
//! Format (`COOKIE_FILE`, UTF-8 JSON, one object):
//! `{"format": "dlog-cookie", "version": 1, "bookie_id", "instance_id", "disk_id",
//! "journal_dirs": [..], "ledger_dirs": [..]}`. A file without the marker is foreign, a newer
//! version is refused (never guessed at), unknown fields are refused; every refusal is
//! `CorruptCookieFile` naming the path. The directory lists in a file record the configuration
//! the directory was formatted with, for operators; the check compares the configured lists
//! with the stored cookie's instead, so an operator who adds a disk updates `cookies/<id>` only.
//!
//! Invariants:
//! - CF1: a cookie file is never overwritten or removed here: it is created once, by a hard
//!   link that fails if the name exists, from a fully written and fsynced file.
//! - CF2: a directory is accepted only if its file names this bookie, this cluster and the
//!   stored disk id; a directory without a file is refused when the bookie has a stored cookie
//!   (a wiped or replaced disk lost its replicas), except as CF3 allows.
//! - CF3: first start writes a pending file (`COOKIE_PENDING`) into every directory, then
//!   creates `cookies/<id>`, then turns each pending file into the cookie file. A start that
//!   finds the stored cookie and pending files equal to it (the same random disk id) finishes
//!   that first start, so a crash between the steps never locks a new bookie out. A pending file
//!   that does not equal the stored cookie proves nothing and counts as no file.
//!
//! Files are read and written with blocking calls: a few small files, once per start.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dlog_metadata::bookie_registry::cookie_differences;
use dlog_metadata::cluster::{is_random_id, random_id};
use dlog_metadata::schema::{self, Cookie};
use dlog_metadata::{BookieRegistry, Cluster, MetaError, MetadataStore, Version};
use serde::{Deserialize, Serialize};

use super::registration::RegistrationError;

/// The cookie file's name in every journal and ledger directory.
pub const COOKIE_FILE: &str = "dlog-cookie";
/// A first start's cookie before `cookies/<id>` exists (CF3).
pub const COOKIE_PENDING: &str = "dlog-cookie.pending";
/// Scratch name while a file is written.
const COOKIE_TEMP: &str = "dlog-cookie.tmp";
/// The marker in the `format` field.
pub const FORMAT: &str = "dlog-cookie";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Larger files are not cookies (and are not read whole).
const FILE_BYTES_MAX: u64 = 64 << 10;

/// The file's fields, in the order written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieFile {
    format: String,
    version: u32,
    bookie_id: String,
    instance_id: String,
    disk_id: String,
    journal_dirs: Vec<String>,
    ledger_dirs: Vec<String>,
}

/// Only what identifies the format: read first, so a foreign or newer file is named as such.
#[derive(Deserialize)]
struct Marker {
    format: Option<String>,
    version: Option<u32>,
}

fn corrupt(path: &Path, why: impl Into<String>) -> RegistrationError {
    RegistrationError::CorruptCookieFile { path: path.to_path_buf(), why: why.into() }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RegistrationError + '_ {
    move |source| RegistrationError::Io { path: path.to_path_buf(), source }
}

/// The file's bytes for `cookie`.
pub fn encode(cookie: &Cookie) -> Vec<u8> {
    let file = CookieFile {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        bookie_id: cookie.bookie_id.clone(),
        instance_id: cookie.instance_id.clone(),
        disk_id: cookie.disk_id.clone(),
        journal_dirs: cookie.journal_dirs.clone(),
        ledger_dirs: cookie.ledger_dirs.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Decodes a cookie file's bytes read from `path`; `CorruptCookieFile` saying why not.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Cookie, RegistrationError> {
    let marker: Marker = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, format!("not a dlog cookie file (not a JSON object: {e})")))?;
    if marker.format.as_deref() != Some(FORMAT) {
        return Err(corrupt(path, format!("not a dlog cookie file (no \"format\": \"{FORMAT}\")")));
    }
    match marker.version {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(corrupt(
                path,
                format!(
                    "format version {v}; this build reads version {FORMAT_VERSION} (written by a newer dlog?)"
                ),
            ));
        }
        None => return Err(corrupt(path, "no format version")),
    }
    let file: CookieFile = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e.to_string()))?;
    if let Err(e) = schema::check_name("bookie", &file.bookie_id) {
        return Err(corrupt(path, e.to_string()));
    }
    for (what, id) in [("instance_id", &file.instance_id), ("disk_id", &file.disk_id)] {
        if !is_random_id(id) {
            return Err(corrupt(path, format!("{what} {id:?} is not 32 lowercase hex digits")));
        }
    }
    if file.journal_dirs.is_empty() {
        return Err(corrupt(path, "no journal dir"));
    }
    Ok(Cookie {
        bookie_id: file.bookie_id,
        instance_id: file.instance_id,
        journal_dirs: file.journal_dirs,
        ledger_dirs: file.ledger_dirs,
        disk_id: file.disk_id,
    })
}

/// The cookie in `dir`'s `name` file; `None` when the file (or the directory) does not exist.
fn read_named(dir: &Path, name: &str) -> Result<Option<Cookie>, RegistrationError> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(io_at(&path))?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(corrupt(&path, format!("larger than {FILE_BYTES_MAX} bytes: not a dlog cookie file")));
    }
    decode(&path, &bytes).map(Some)
}

/// The cookie file in `dir`; `None` when there is none (or no directory).
pub fn read(dir: &Path) -> Result<Option<Cookie>, RegistrationError> {
    read_named(dir, COOKIE_FILE)
}

fn sync_dir(dir: &Path) -> Result<(), RegistrationError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

/// Writes `cookie` durably as `dir/<name>`, replacing a file of that name: temporary file,
/// fsync, rename, fsync of the directory. Only for names that are not `COOKIE_FILE` (CF1).
fn write_replacing(dir: &Path, name: &str, cookie: &Cookie) -> Result<(), RegistrationError> {
    let temp = dir.join(COOKIE_TEMP);
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).open(&temp).map_err(io_at(&temp))?;
    file.write_all(&encode(cookie)).and_then(|()| file.sync_all()).map_err(io_at(&temp))?;
    drop(file);
    let target = dir.join(name);
    fs::rename(&temp, &target).map_err(io_at(&target))?;
    sync_dir(dir)
}

/// Creates `dir`'s cookie file from its pending file (CF1: a hard link, which fails if the
/// cookie file exists), then removes the pending file.
fn promote(dir: &Path) -> Result<(), RegistrationError> {
    let (pending, target) = (dir.join(COOKIE_PENDING), dir.join(COOKIE_FILE));
    fs::hard_link(&pending, &target).map_err(io_at(&target))?;
    sync_dir(dir)?;
    fs::remove_file(&pending).map_err(io_at(&pending))?;
    sync_dir(dir)
}

/// Writes `cookie` as `dir`'s cookie file (creating `dir` if needed); refuses if one exists
/// (CF1). For tools and tests; a bookie's start goes through `check_or_create`.
pub fn create(dir: &Path, cookie: &Cookie) -> Result<(), RegistrationError> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    write_replacing(dir, COOKIE_PENDING, cookie)?;
    promote(dir)
}

/// The directories as the cookie records them: paths as configured (lossy for non-UTF-8).
fn dir_names(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter().map(|d| d.to_string_lossy().into_owned()).collect()
}

/// What start found in one directory.
enum Found {
    /// A cookie file.
    Cookie(Cookie),
    /// No cookie file; a pending one, if it decodes (CF3).
    Pending(Option<Cookie>),
}

/// Checks the bookie's directories against `cookies/<bookie_id>`, or formats a new bookie
/// (see the module doc); the stored cookie and its version. The cluster's identity is read
/// (created on a store that has none: `Cluster::init`) for a new bookie's cookie.
///
/// Refusals: `CookieMismatch` listing every difference (a directory's cookie, or the
/// configured directories, against the stored cookie); `MissingCookie` for a directory without
/// a cookie while the bookie has one; `NoCookieOnDisks` when the store has a cookie and no
/// directory has one; `NoStoredCookie` when directories have cookies and the store none;
/// `CorruptCookieFile`, `Io`, `Metadata` (store errors, unchanged).
pub async fn check_or_create<S: MetadataStore>(
    store: &Arc<S>,
    bookie_id: &str,
    journal_dirs: &[PathBuf],
    ledger_dirs: &[PathBuf],
) -> Result<(Cookie, Version), RegistrationError> {
    let registry = BookieRegistry::new(store.clone());
    let (journal, ledger) = (dir_names(journal_dirs), dir_names(ledger_dirs));
    // Each directory once: by default the ledger dirs are the journal dirs.
    let mut seen = BTreeSet::new();
    let dirs: Vec<&PathBuf> = journal_dirs.iter().chain(ledger_dirs).filter(|d| seen.insert(*d)).collect();
    let mut found = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let here = match read(dir)? {
            Some(cookie) => Found::Cookie(cookie),
            // A pending file only counts when it equals the stored cookie (CF3).
            None => Found::Pending(read_named(dir, COOKIE_PENDING).ok().flatten()),
        };
        found.push((*dir, here));
    }
    let cluster = Cluster::new(store.clone()).init().await?;
    let Some((stored, version)) = registry.cookie(bookie_id).await? else {
        if let Some((dir, _)) = found.iter().find(|(_, f)| matches!(f, Found::Cookie(_))) {
            return Err(RegistrationError::NoStoredCookie {
                key: schema::cookie_key(bookie_id),
                dir: dir.to_path_buf(),
            });
        }
        let cookie = Cookie {
            bookie_id: bookie_id.to_string(),
            instance_id: cluster.instance_id,
            journal_dirs: journal,
            ledger_dirs: ledger,
            disk_id: random_id(),
        };
        return create_new(&registry, &dirs, cookie).await;
    };
    let mut differences = Vec::new();
    if stored.instance_id != cluster.instance_id {
        differences.push(format!(
            "{}: instance id {} is not the cluster's ({}): the cluster was re-initialised, or this is \
             another cluster's store",
            schema::cookie_key(bookie_id),
            stored.instance_id,
            cluster.instance_id
        ));
    }
    // The configured directories, once; then each directory's identity.
    let configured = Cookie { journal_dirs: journal, ledger_dirs: ledger, ..stored.clone() };
    differences
        .extend(cookie_differences(&stored, &configured).into_iter().map(|d| format!("configured {d}")));
    let (mut missing, mut pending, mut cookies) = (Vec::new(), Vec::new(), 0);
    for (dir, here) in &found {
        match here {
            Found::Cookie(local) => {
                cookies += 1;
                let local = Cookie {
                    journal_dirs: stored.journal_dirs.clone(),
                    ledger_dirs: stored.ledger_dirs.clone(),
                    ..local.clone()
                };
                let path = dir.join(COOKIE_FILE);
                for d in cookie_differences(&stored, &local) {
                    differences.push(format!("{}: {d}", path.display()));
                }
            }
            Found::Pending(Some(local)) if *local == stored => pending.push(*dir),
            Found::Pending(_) => missing.push(*dir),
        }
    }
    if !differences.is_empty() {
        return Err(RegistrationError::CookieMismatch { differences });
    }
    if cookies == 0 && pending.is_empty() {
        return Err(RegistrationError::NoCookieOnDisks {
            key: schema::cookie_key(bookie_id),
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        });
    }
    if let Some(dir) = missing.first() {
        return Err(RegistrationError::MissingCookie { dir: dir.to_path_buf() });
    }
    for dir in pending {
        tracing::info!(dir = %dir.display(), "finishing an interrupted first start: cookie file created");
        promote(dir)?;
    }
    Ok((stored, version))
}

/// A new bookie: pending files, then `cookies/<id>`, then the cookie files (CF3).
async fn create_new<S: MetadataStore>(
    registry: &BookieRegistry<S>,
    dirs: &[&PathBuf],
    cookie: Cookie,
) -> Result<(Cookie, Version), RegistrationError> {
    for dir in dirs {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        write_replacing(dir, COOKIE_PENDING, &cookie)?;
    }
    let version = match registry.create_cookie(&cookie).await {
        Ok(version) => version,
        // Another process with this id won the race (or our own create answered Unavailable
        // after committing): only ours, to the last byte, may go on.
        Err(MetaError::AlreadyExists(key)) => match registry.cookie(&cookie.bookie_id).await? {
            Some((stored, version)) if stored == cookie => version,
            Some((stored, _)) => {
                return Err(RegistrationError::CookieMismatch {
                    differences: cookie_differences(&stored, &cookie)
                        .into_iter()
                        .map(|d| format!("{key} was created meanwhile by another process: {d}"))
                        .collect(),
                });
            }
            None => return Err(MetaError::Unavailable(format!("{key}: created, then gone")).into()),
        },
        Err(e) => return Err(e.into()),
    };
    for dir in dirs {
        promote(dir)?;
    }
    tracing::info!(
        bookie = %cookie.bookie_id,
        disk_id = %cookie.disk_id,
        dirs = dirs.len(),
        "new bookie: cookie stored and written into every directory"
    );
    Ok((cookie, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie() -> Cookie {
        Cookie {
            bookie_id: "b1:3181".into(),
            instance_id: "0".repeat(32),
            journal_dirs: vec!["/j \"quoted\"\n".into()],
            ledger_dirs: vec![],
            disk_id: "a".repeat(32),
        }
    }

    #[test]
    fn files_round_trip_and_bad_ones_are_named() {
        let path = Path::new("/d/dlog-cookie");
        assert_eq!(decode(path, &encode(&cookie())).unwrap(), cookie());
        let text = String::from_utf8(encode(&cookie())).unwrap();
        for (bad, says) in [
            (String::new(), "not a JSON object"),
            ("\u{0}\u{1}binary".into(), "not a JSON object"),
            ("{\"format\": \"other\"}".into(), "no \"format\""),
            (text.replace("\"version\": 1", "\"version\": 2"), "format version 2"),
            (text.replace("\"version\": 1,", ""), "no format version"),
            (text.replace("\"disk_id\"", "\"disk\""), "unknown field"),
            (text.replace(&"a".repeat(32), "xyz"), "disk_id"),
            (text.replace("b1:3181", "a/b"), "bookie name"),
            (text[..text.len() / 2].to_string(), "not a JSON object"),
        ] {
            match decode(path, bad.as_bytes()) {
                Err(RegistrationError::CorruptCookieFile { path: p, why }) => {
                    assert_eq!(p, path);
                    assert!(why.contains(says), "{why:?} should say {says:?}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_cookie_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &cookie()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(cookie()));
        let other = Cookie { disk_id: "b".repeat(32), ..cookie() };
        assert!(matches!(create(dir.path(), &other), Err(RegistrationError::Io { .. })));
        assert_eq!(read(dir.path()).unwrap(), Some(cookie()));
        assert_eq!(read(&dir.path().join("absent")).unwrap(), None);
    }
}
