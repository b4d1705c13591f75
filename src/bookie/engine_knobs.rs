//! The `[engine]` table of `dlog bookie`'s configuration (and `--backend`, `--pin-shards`):
//! the engine knobs the server passes through to `dlog_engine::BookieConfig`, their defaults
//! (the engine's) and the checks the engine does not do itself.
//!
//! Invariant EK1: every knob has the engine's default when neither the file nor a flag sets
//! it; a value the engine refuses is refused when the configuration resolves
//! (`BookieConfig::validate`, config C1), naming the setting.

use dlog_engine::{Backend, BookieConfig, DirectIo};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::bookie::config::{ConfigError, Origin, Source, file_or, invalid, pick};

/// The engine's I/O backend as the flag and the file spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// io_uring where the kernel allows it, else portable.
    Auto,
    /// io_uring only.
    IoUring,
    /// pwrite + fdatasync.
    Portable,
}

impl From<BackendChoice> for Backend {
    fn from(choice: BackendChoice) -> Backend {
        match choice {
            BackendChoice::Auto => Backend::Auto,
            BackendChoice::IoUring => Backend::IoUring,
            BackendChoice::Portable => Backend::Portable,
        }
    }
}

/// The engine's direct I/O policy as the file spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectIoChoice {
    /// O_DIRECT or refuse to open.
    Required,
    /// O_DIRECT where the filesystem supports it.
    Optional,
    /// Buffered I/O with fdatasync.
    Disabled,
}

impl From<DirectIoChoice> for DirectIo {
    fn from(choice: DirectIoChoice) -> DirectIo {
        match choice {
            DirectIoChoice::Required => DirectIo::Required,
            DirectIoChoice::Optional => DirectIo::Optional,
            DirectIoChoice::Disabled => DirectIo::Disabled,
        }
    }
}

/// Engine knobs the server passes through (the file's `[engine]` table; `--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineKnobs {
    /// I/O backend. Default auto.
    pub backend: BackendChoice,
    /// Direct I/O policy. Default optional.
    pub direct_io: DirectIoChoice,
    /// Write cache per shard, in bytes. Default 256 MiB.
    pub write_cache_bytes_max: u64,
    /// Free bytes under which a shard turns read-only. Default 1 GiB.
    pub disk_free_bytes_min: u64,
    /// Free bytes at which it turns writable again. Default 2 GiB.
    pub disk_free_bytes_resume: u64,
    /// Pin shard n and its network thread to CPU n. Default true.
    pub pin_shards: bool,
    /// Size of each journal file, zero-filled before use. Default 256 MiB.
    pub journal_file_bytes: u64,
}

impl Default for EngineKnobs {
    fn default() -> Self {
        let engine = BookieConfig::new(".");
        EngineKnobs {
            backend: BackendChoice::Auto,
            direct_io: DirectIoChoice::Optional,
            write_cache_bytes_max: engine.write_cache_bytes_max as u64,
            disk_free_bytes_min: engine.disk_free_bytes_min,
            disk_free_bytes_resume: engine.disk_free_bytes_resume,
            pin_shards: engine.pin_shards,
            journal_file_bytes: engine.journal_file_bytes,
        }
    }
}

impl EngineKnobs {
    /// Sets these knobs on an engine configuration.
    pub fn apply(&self, engine: &mut BookieConfig) {
        engine.backend = self.backend.into();
        engine.direct_io = self.direct_io.into();
        engine.write_cache_bytes_max = usize::try_from(self.write_cache_bytes_max).unwrap_or(usize::MAX);
        engine.disk_free_bytes_min = self.disk_free_bytes_min;
        engine.disk_free_bytes_resume = self.disk_free_bytes_resume;
        engine.pin_shards = self.pin_shards;
        engine.journal_file_bytes = self.journal_file_bytes;
    }

    /// The file's `[engine]` table for these knobs (`ServerConfig::to_toml`).
    pub(super) fn to_file(self) -> EngineFile {
        fn at<T>(value: T) -> Option<Spanned<T>> {
            Some(Spanned::new(0..0, value))
        }
        EngineFile {
            backend: at(self.backend),
            direct_io: at(self.direct_io),
            write_cache_bytes_max: at(self.write_cache_bytes_max),
            disk_free_bytes_min: at(self.disk_free_bytes_min),
            disk_free_bytes_resume: at(self.disk_free_bytes_resume),
            pin_shards: at(self.pin_shards),
            journal_file_bytes: at(self.journal_file_bytes),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EngineFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) backend: Option<Spanned<BackendChoice>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) direct_io: Option<Spanned<DirectIoChoice>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) write_cache_bytes_max: Option<Spanned<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) disk_free_bytes_min: Option<Spanned<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) disk_free_bytes_resume: Option<Spanned<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pin_shards: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) journal_file_bytes: Option<Spanned<u64>>,
}

pub(super) fn resolve_engine(
    file: EngineFile,
    backend_flag: Option<BackendChoice>,
    pin_flag: Option<bool>,
    source: Option<&Source<'_>>,
) -> Result<EngineKnobs, ConfigError> {
    let defaults = EngineKnobs::default();
    let (pin_shards, _) = pick(pin_flag, "--pin-shards", file.pin_shards, source)
        .unwrap_or((defaults.pin_shards, Origin::Default));
    let (backend, _) =
        pick(backend_flag, "--backend", file.backend, source).unwrap_or((defaults.backend, Origin::Default));
    let (direct_io, _) = file_or(file.direct_io, source, defaults.direct_io);
    let (write_cache_bytes_max, at) =
        file_or(file.write_cache_bytes_max, source, defaults.write_cache_bytes_max);
    if usize::try_from(write_cache_bytes_max).is_err() {
        return Err(invalid(
            "engine.write_cache_bytes_max",
            at,
            format!("{write_cache_bytes_max} does not fit memory"),
        ));
    }
    let (disk_free_bytes_min, _) = file_or(file.disk_free_bytes_min, source, defaults.disk_free_bytes_min);
    let (disk_free_bytes_resume, at) =
        file_or(file.disk_free_bytes_resume, source, defaults.disk_free_bytes_resume);
    if disk_free_bytes_resume < disk_free_bytes_min {
        let reason = format!("{disk_free_bytes_resume} is below disk_free_bytes_min {disk_free_bytes_min}");
        return Err(invalid("engine.disk_free_bytes_resume", at, reason));
    }
    // The engine checks the size (sector multiple, bounds) when the configuration resolves.
    let (journal_file_bytes, _) = file_or(file.journal_file_bytes, source, defaults.journal_file_bytes);
    Ok(EngineKnobs {
        journal_file_bytes,
        backend,
        direct_io,
        write_cache_bytes_max,
        disk_free_bytes_min,
        disk_free_bytes_resume,
        pin_shards,
    })
}
