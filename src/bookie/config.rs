//! The `dlog bookie` server's configuration: clap flags (`BookieArgs`), a TOML file
//! (`--config FILE`, example with every key in docs/bookie.example.toml), defaults, and
//! validation, resolved into one `ServerConfig`; plus the engine configuration derived from it
//! (`ServerConfig::engine_config`). The TLS and authentication keys are security.rs's, the
//! `[engine]` table engine_knobs.rs's.
//!
//! Owns: where each setting comes from, its default, its bounds, and error messages that name
//! it. Does not own: the server (listeners, shard event loops, registration, cookies, metrics:
//! server.rs, registration.rs, run.rs), the engine's own bounds (checked by
//! `dlog_engine::BookieConfig::validate`, which `resolve` calls), or opening the metadata store
//! (only the URI's syntax is checked here; `AnyStore::open` connects).
//!
//! Defaults: listen `127.0.0.1:3181`; ledger dirs = the journal dirs (the engine keeps
//! `shard-n` and `storage-n` side by side); metadata `local://<parent of the first journal
//! dir>/metadata` (next to the journal, not inside it: the engine owns the journal dir; a
//! relative journal dir gives a relative store path, as `local://` allows); shards = CPUs;
//! bookie id = the listen `ip:port` (refused for an unspecified address, port 0 or IPv6,
//! which give no usable id: give `--bookie-id`); no metrics listener; limits as
//! `ServerLimits::default`; engine knobs as `BookieConfig::new`; registration lease ttl 10 s.
//!
//! Paths are taken as written (relative ones against the working directory), in the file as
//! on the command line.
//!
//! Invariants:
//! - C1: a `ServerConfig` from `resolve` is valid: at least one journal and one ledger dir,
//!   shards in 1..=1024, a bookie id `check_name` accepts, a metadata URI of a scheme
//!   `AnyStore` opens (`local://DIR`, `memory://`, `etcd://host:port[,...]/scope`), protocol
//!   limits `dlog_protocol::Limits::validate` accepts, and an `engine_config()` that
//!   `BookieConfig::validate` accepts.
//! - C2: per setting, a flag beats the file, and the file beats the default. A repeatable
//!   flag (`--journal-dir`, `--ledger-dir`) given at least once replaces the file's list.
//! - C3: every refusal is a `ConfigError` naming the setting and where its value came from
//!   (the flag, `FILE:LINE`, or the default); no input panics.
//! - C4: unknown keys in the file are refused, so a misspelt key is never silently ignored.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dlog_engine::BookieConfig;
use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use crate::bookie::engine_knobs::{BackendChoice, DirectIoChoice, EngineKnobs};
use crate::bookie::engine_knobs::{EngineFile, resolve_engine};
use crate::bookie::security::{self, AuthMode, ClientFile, SecurityArgs, SecurityFile, SecuritySettings};

/// Listen address when neither `--listen` nor `listen` is given (BookKeeper's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3181";
/// Most shards a bookie runs (the engine's bound).
pub const SHARDS_MAX: u32 = 1024;
/// Default bound on requests in flight per connection (the RFC's `max_in_flight`).
pub const IN_FLIGHT_MAX_DEFAULT: u32 = 1024;
/// Largest accepted `in_flight_max`.
pub const IN_FLIGHT_MAX_BOUND: u32 = 1 << 16;
/// Default idle timeout, in seconds (5 min).
pub const IDLE_TIMEOUT_S_DEFAULT: u64 = 300;
/// Largest accepted idle timeout, in seconds (one day).
pub const IDLE_TIMEOUT_S_BOUND: u64 = 86_400;
/// Accepted registration lease ttls, in milliseconds (`LEASE_TTL_MIN` to 10 min).
pub const LEASE_TTL_MS_BOUNDS: std::ops::RangeInclusive<u64> = 100..=600_000;

/// Bounds of the autorecovery grace periods, in milliseconds.
pub const GRACE_MS_BOUNDS: std::ops::RangeInclusive<u64> = 100..=86_400_000;

/// `dlog bookie` flags. Every one of them overrides the same setting in `--config`'s file.
#[derive(clap::Args, Debug, Default, Clone, PartialEq, Eq)]
pub struct BookieArgs {
    /// TOML configuration file (see docs/bookie.example.toml); flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve the bookie protocol on, ip:port [default: 127.0.0.1:3181].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Journal directory; repeat for several (shard n uses dir n % count).
    #[arg(long = "journal-dir", value_name = "DIR")]
    pub journal_dirs: Vec<PathBuf>,
    /// Entry log (ledger) directory; repeat for several [default: the journal dirs].
    #[arg(long = "ledger-dir", value_name = "DIR")]
    pub ledger_dirs: Vec<PathBuf>,
    /// Metadata store: local:///path, memory:// or etcd://host:port[,host:port]/scope
    /// [default: local://<parent of the first journal dir>/metadata].
    #[arg(long, value_name = "URI")]
    pub metadata: Option<String>,
    /// Storage shards (threads) [default: the number of CPUs]. Fixed for the directories'
    /// life: the engine refuses to reopen them with another count.
    #[arg(long)]
    pub shards: Option<u32>,
    /// The bookie's id in the metadata: [A-Za-z0-9._:-], at most 255 bytes
    /// [default: the listen ip:port].
    #[arg(long, value_name = "ID")]
    pub bookie_id: Option<String>,
    /// Address to serve Prometheus metrics on, ip:port [default: none].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// I/O backend of the storage shards [default: auto].
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Pin shard n (and its network thread) to CPU n: true or false [default: true]. Set false
    /// when several bookies share one machine, or they all pin to the same CPUs.
    #[arg(long, value_name = "BOOL")]
    pub pin_shards: Option<bool>,
    /// Placement label: the zone (availability zone, data centre) the bookie is in; segments
    /// spread their replicas over zones [default: none].
    #[arg(long, value_name = "LABEL")]
    pub zone: Option<String>,
    /// Placement label: the rack within its zone [default: none].
    #[arg(long, value_name = "LABEL")]
    pub rack: Option<String>,
    /// Run autorecovery in this process (an auditor candidate and a replication worker that
    /// rebuild the replicas of lost bookies): true or false [default: true].
    #[arg(long, value_name = "BOOL")]
    pub autorecovery: Option<bool>,
    /// TLS and authentication.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Per-connection and per-frame bounds of the server (the file's `[limits]` table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest frame, header included, in bytes. Default 16 MiB + 16.
    pub frame_bytes_max: u32,
    /// Largest entry payload, in bytes; also the engine's `entry_bytes_max`. Default 1 MiB;
    /// at most 256 MiB (the engine's bound).
    pub entry_bytes_max: u32,
    /// Most payload bytes one READ_RANGE is served with. Default 8 MiB.
    pub range_bytes_max: u32,
    /// Requests in flight per connection; past it the server stops reading that connection.
    /// Default 1024; 1 to 65536.
    pub in_flight_max: u32,
    /// A connection with nothing in flight for this long is closed. Default 300 s; 1 s to
    /// one day.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        let protocol = dlog_protocol::Limits::default();
        ServerLimits {
            frame_bytes_max: protocol.frame_bytes_max,
            entry_bytes_max: protocol.entry_bytes_max,
            range_bytes_max: protocol.range_bytes_max,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            idle_timeout: Duration::from_secs(IDLE_TIMEOUT_S_DEFAULT),
        }
    }
}

impl ServerLimits {
    /// The codec's limits.
    pub fn protocol(&self) -> dlog_protocol::Limits {
        dlog_protocol::Limits {
            frame_bytes_max: self.frame_bytes_max,
            entry_bytes_max: self.entry_bytes_max,
            range_bytes_max: self.range_bytes_max,
        }
    }
}

/// Everything `dlog bookie` needs, resolved and valid (C1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the bookie protocol is served.
    pub listen: SocketAddr,
    /// Journal directories (at least one).
    pub journal_dirs: Vec<PathBuf>,
    /// Entry log directories (at least one; by default the journal dirs).
    pub ledger_dirs: Vec<PathBuf>,
    /// The metadata store's URI.
    pub metadata: String,
    /// Storage shards.
    pub shards: u32,
    /// The id the bookie registers under.
    pub bookie_id: String,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Frame and connection bounds.
    pub limits: ServerLimits,
    /// Engine knobs passed through.
    pub engine: EngineKnobs,
    /// The registration's lease ttl: a bookie that stops renewing disappears from the
    /// metadata after it, and a restarted one waits up to two of them for its predecessor's
    /// registration to expire. Default 10 s (`LEASE_TTL_DEFAULT`).
    pub lease_ttl: Duration,
    /// Placement labels registered with the bookie (empty: unknown).
    pub zone: String,
    /// See `zone`.
    pub rack: String,
    /// Autorecovery in this process, if on.
    pub autorecovery: Option<AutorecoverySettings>,
    /// TLS and authentication (default: plaintext, none).
    pub security: SecuritySettings,
}

/// The file's `[autorecovery]` table, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutorecoverySettings {
    /// A bookie whose registration stays gone this long is lost. Default 30 s.
    pub lost_bookie_grace: Duration,
    /// An open segment's last ensemble is left to its writer this long after it was queued;
    /// then the segment is fenced and closed. Default 30 s.
    pub open_segment_grace: Duration,
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--listen`.
    Flag(&'static str),
    /// The configuration file, at this 1-based line.
    File {
        /// The file.
        path: PathBuf,
        /// The line of the value.
        line: usize,
    },
    /// The built-in default.
    Default,
}

/// Why a configuration was refused (C3).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, has an unknown key, or a value of the wrong type.
    #[error("config file {}:{line}:{column}: {message} (in `{text}`)", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the parser gave no position).
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The parser's message.
        message: String,
        /// The offending line, trimmed.
        text: String,
    },
    /// A value is out of bounds or malformed.
    #[error("{}: {reason}", describe(field, at))]
    Invalid {
        /// The setting, as the file spells it (`listen`, `journal_dirs`, `limits.in_flight_max`).
        field: &'static str,
        /// Where the value came from.
        at: Origin,
        /// What is wrong, with the value.
        reason: String,
    },
    /// No journal directory anywhere.
    #[error("no journal directory: give --journal-dir DIR or `journal_dirs` in the config file")]
    NoJournalDir,
    /// The engine refused the derived configuration (its message names the engine field).
    #[error("engine configuration: {0}")]
    Engine(String),
}

fn describe(field: &str, at: &Origin) -> String {
    match at {
        Origin::Flag(flag) => flag.to_string(),
        Origin::File { path, line } => format!("{}:{line}: {field}", path.display()),
        Origin::Default => format!("{field} (default)"),
    }
}

impl ConfigError {
    /// The setting the error is about, as the file spells it; `None` for a file that cannot be
    /// read or parsed and for engine refusals.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::NoJournalDir => Some("journal_dirs"),
            _ => None,
        }
    }
}

/// The file's schema. Every value is spanned so a refusal can cite its line (C3).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listen: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal_dirs: Option<Spanned<Vec<PathBuf>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ledger_dirs: Option<Spanned<Vec<PathBuf>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shards: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bookie_id: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_cert_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_key_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_client_ca_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<Spanned<AuthMode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_tokens_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permissions_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    engine: Option<EngineFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registration: Option<RegistrationFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    autorecovery: Option<AutorecoveryFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<ClientFile>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutorecoveryFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lost_bookie_grace_ms: Option<Spanned<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_segment_grace_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_ttl_ms: Option<Spanned<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rack: Option<Spanned<String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frame_bytes_max: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entry_bytes_max: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range_bytes_max: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_flight_max: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_timeout_s: Option<Spanned<u64>>,
}

/// The file being read, to turn byte spans into lines.
pub(super) struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// 1-based (line, column) of byte `offset`, clamped to the text.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    fn origin(&self, span: Range<usize>) -> Origin {
        Origin::File { path: self.path.to_path_buf(), line: self.position(span.start).0 }
    }

    fn syntax(&self, error: &toml::de::Error) -> ConfigError {
        let (line, column, text) = match error.span() {
            Some(span) => {
                let (line, column) = self.position(span.start);
                let text = self.text.lines().nth(line - 1).unwrap_or_default().trim().to_string();
                (line, column, text)
            }
            None => (0, 0, String::new()),
        };
        ConfigError::Syntax {
            path: self.path.to_path_buf(),
            line,
            column,
            message: error.message().trim().to_string(),
            text,
        }
    }
}

/// A setting's value and where it came from: the flag if given, else the file, else none.
pub(super) fn pick<T>(
    flag: Option<T>,
    flag_name: &'static str,
    file: Option<Spanned<T>>,
    source: Option<&Source<'_>>,
) -> Option<(T, Origin)> {
    if let Some(value) = flag {
        return Some((value, Origin::Flag(flag_name)));
    }
    let (file, source) = (file?, source?);
    let origin = source.origin(file.span());
    Some((file.into_inner(), origin))
}

/// A value from the file, or the default.
pub(super) fn file_or<T>(file: Option<Spanned<T>>, source: Option<&Source<'_>>, default: T) -> (T, Origin) {
    pick(None, "", file, source).unwrap_or((default, Origin::Default))
}

pub(super) fn invalid(field: &'static str, at: Origin, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, at, reason: reason.into() }
}

fn parse_addr(field: &'static str, (text, at): (String, Origin)) -> Result<SocketAddr, ConfigError> {
    text.trim()
        .parse()
        .map_err(|_| invalid(field, at, format!("{text:?} is not a socket address (expected ip:port)")))
}

/// Checks `uri` against the schemes `dlog_metadata::AnyStore::open` accepts, without opening
/// it (`dlog_metadata::MetadataUri`, the parser `AnyStore` uses, in every build).
pub fn check_metadata_uri(uri: &str) -> Result<(), String> {
    dlog_metadata::MetadataUri::parse(uri).map(|_| ()).map_err(|e| e.to_string())
}

/// The default metadata URI: `local://<parent of the first journal dir>/metadata`.
fn default_metadata(first_journal_dir: &Path) -> String {
    let parent = first_journal_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    format!("local://{}", parent.join("metadata").display())
}

/// The default bookie id: the listen `ip:port`, when that names this bookie.
fn default_bookie_id(listen: SocketAddr) -> Result<String, String> {
    let why = if listen.ip().is_unspecified() {
        "is unspecified (any interface), which names no bookie"
    } else if listen.port() == 0 {
        "has port 0 (chosen at bind), which names no bookie"
    } else if listen.ip().is_ipv6() {
        "is IPv6, and '[' ']' are not allowed in ids"
    } else {
        return Ok(listen.to_string());
    };
    Err(format!("the listen address {listen} {why}: give --bookie-id"))
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })
}

impl ServerConfig {
    /// Resolves flags over the file (if `--config` is given) over the defaults (C2), and
    /// validates the result (C1); every refusal names its setting (C3).
    pub fn resolve(args: BookieArgs) -> Result<ServerConfig, ConfigError> {
        let text = match &args.config {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        let source = args.config.as_deref().zip(text.as_deref()).map(|(path, text)| Source { path, text });
        let file: FileConfig = match &source {
            Some(source) => toml::from_str(source.text).map_err(|e| source.syntax(&e))?,
            None => FileConfig::default(),
        };
        let source = source.as_ref();
        let limits_file = file.limits.unwrap_or_default();
        let engine_file = file.engine.unwrap_or_default();
        let registration_file = file.registration.unwrap_or_default();
        let autorecovery_file = file.autorecovery.unwrap_or_default();
        let security_file = SecurityFile {
            tls_cert_file: file.tls_cert_file,
            tls_key_file: file.tls_key_file,
            tls_client_ca_file: file.tls_client_ca_file,
            auth: file.auth,
            auth_tokens_file: file.auth_tokens_file,
            permissions_file: file.permissions_file,
            client: file.client,
        };

        let listen = match pick(args.listen, "--listen", file.listen, source) {
            Some(value) => parse_addr("listen", value)?,
            None => DEFAULT_LISTEN.parse().map_err(|_| invalid("listen", Origin::Default, DEFAULT_LISTEN))?,
        };
        let metrics_listen = match pick(args.metrics_listen, "--metrics-listen", file.metrics_listen, source)
        {
            Some((text, at)) => {
                let addr = parse_addr("metrics_listen", (text, at.clone()))?;
                if addr == listen {
                    return Err(invalid(
                        "metrics_listen",
                        at,
                        format!("{addr} is the bookie's listen address"),
                    ));
                }
                Some(addr)
            }
            None => None,
        };

        let nonempty =
            |flag: Vec<PathBuf>, flag_name| (!flag.is_empty()).then_some(flag).map(|f| (f, flag_name));
        let journal_dirs = match nonempty(args.journal_dirs, "--journal-dir") {
            Some((dirs, name)) => (dirs, Origin::Flag(name)),
            None => pick(None, "", file.journal_dirs, source).ok_or(ConfigError::NoJournalDir)?,
        };
        let journal_dirs = check_dirs("journal_dirs", journal_dirs)?;
        let ledger_dirs = match nonempty(args.ledger_dirs, "--ledger-dir") {
            Some((dirs, name)) => check_dirs("ledger_dirs", (dirs, Origin::Flag(name)))?,
            None => match pick(None, "", file.ledger_dirs, source) {
                Some(value) => check_dirs("ledger_dirs", value)?,
                None => journal_dirs.clone(),
            },
        };

        let (metadata, at) = pick(args.metadata, "--metadata", file.metadata, source)
            .unwrap_or_else(|| (default_metadata(&journal_dirs[0]), Origin::Default));
        check_metadata_uri(&metadata).map_err(|reason| invalid("metadata", at, reason))?;

        let cpus =
            std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(SHARDS_MAX));
        let (shards, at) = pick(args.shards, "--shards", file.shards, source)
            .unwrap_or((cpus.min(SHARDS_MAX), Origin::Default));
        if !(1..=SHARDS_MAX).contains(&shards) {
            return Err(invalid("shards", at, format!("{shards} is not in 1..={SHARDS_MAX}")));
        }

        let bookie_id = match pick(args.bookie_id, "--bookie-id", file.bookie_id, source) {
            Some((id, at)) => {
                dlog_metadata::schema::check_name("bookie", &id).map_err(|e| match e {
                    dlog_metadata::MetaError::Invalid(why) => invalid("bookie_id", at, why),
                    other => invalid("bookie_id", at, other.to_string()),
                })?;
                id
            }
            None => {
                default_bookie_id(listen).map_err(|reason| invalid("bookie_id", Origin::Default, reason))?
            }
        };

        let limits = resolve_limits(limits_file, source)?;
        let engine = resolve_engine(engine_file, args.backend, args.pin_shards, source)?;
        let default_ttl = crate::bookie::registration::LEASE_TTL_DEFAULT.as_millis() as u64;
        let (lease_ttl_ms, at) = file_or(registration_file.lease_ttl_ms, source, default_ttl);
        if !LEASE_TTL_MS_BOUNDS.contains(&lease_ttl_ms) {
            let reason = format!("{lease_ttl_ms} is not in {LEASE_TTL_MS_BOUNDS:?} milliseconds");
            return Err(invalid("registration.lease_ttl_ms", at, reason));
        }
        let label = |field: &'static str, (value, at): (String, Origin)| -> Result<String, ConfigError> {
            if value.is_empty() {
                return Ok(value);
            }
            dlog_metadata::schema::check_name("label", &value)
                .map_err(|e| invalid(field, at, e.to_string()))?;
            Ok(value)
        };
        let zone = label(
            "registration.zone",
            pick(args.zone, "--zone", registration_file.zone, source)
                .unwrap_or((String::new(), Origin::Default)),
        )?;
        let rack = label(
            "registration.rack",
            pick(args.rack, "--rack", registration_file.rack, source)
                .unwrap_or((String::new(), Origin::Default)),
        )?;
        let (enabled, _) = pick(args.autorecovery, "--autorecovery", autorecovery_file.enabled, source)
            .unwrap_or((true, Origin::Default));
        let grace = |field: &'static str, value: Option<Spanned<u64>>| -> Result<Duration, ConfigError> {
            let (ms, at) = file_or(value, source, 30_000);
            if !GRACE_MS_BOUNDS.contains(&ms) {
                return Err(invalid(field, at, format!("{ms} is not in {GRACE_MS_BOUNDS:?} milliseconds")));
            }
            Ok(Duration::from_millis(ms))
        };
        let lost_bookie_grace =
            grace("autorecovery.lost_bookie_grace_ms", autorecovery_file.lost_bookie_grace_ms)?;
        let open_segment_grace =
            grace("autorecovery.open_segment_grace_ms", autorecovery_file.open_segment_grace_ms)?;
        let autorecovery = enabled.then_some(AutorecoverySettings { lost_bookie_grace, open_segment_grace });
        let security = security::resolve(args.security, security_file, source)?;
        let config = ServerConfig {
            listen,
            journal_dirs,
            ledger_dirs,
            metadata,
            shards,
            bookie_id,
            metrics_listen,
            limits,
            engine,
            lease_ttl: Duration::from_millis(lease_ttl_ms),
            zone,
            rack,
            autorecovery,
            security,
        };
        config.engine_config().validate().map_err(|e| ConfigError::Engine(e.to_string()))?;
        Ok(config)
    }

    /// The storage engine's configuration: the directories, shards, entry size bound and the
    /// engine knobs; everything else at the engine's defaults. The deletion check
    /// (`MetadataDeletionCheck`) is the server's to install.
    pub fn engine_config(&self) -> BookieConfig {
        let mut engine = BookieConfig::new(self.journal_dirs[0].clone());
        engine.journal_dirs = self.journal_dirs.clone();
        engine.storage_dirs = self.ledger_dirs.clone();
        engine.shard_count = self.shards;
        engine.entry_bytes_max = self.limits.entry_bytes_max as usize;
        self.engine.apply(&mut engine);
        engine
    }

    /// The autorecovery grace periods in milliseconds (the defaults when it is off).
    fn autorecovery_settings(&self) -> (u64, u64) {
        self.autorecovery.map_or((30_000, 30_000), |a| {
            (a.lost_bookie_grace.as_millis() as u64, a.open_segment_grace.as_millis() as u64)
        })
    }

    /// The configuration as a TOML file with every key set: `--config` of it resolves to the
    /// same `ServerConfig`.
    pub fn to_toml(&self) -> String {
        let at = |v| Some(Spanned::new(0..0, v));
        let security = self.security.to_file();
        let file = FileConfig {
            listen: at(self.listen.to_string()),
            journal_dirs: Some(Spanned::new(0..0, self.journal_dirs.clone())),
            ledger_dirs: Some(Spanned::new(0..0, self.ledger_dirs.clone())),
            metadata: at(self.metadata.clone()),
            shards: Some(Spanned::new(0..0, self.shards)),
            bookie_id: at(self.bookie_id.clone()),
            metrics_listen: self.metrics_listen.map(|a| Spanned::new(0..0, a.to_string())),
            tls_cert_file: security.tls_cert_file,
            tls_key_file: security.tls_key_file,
            tls_client_ca_file: security.tls_client_ca_file,
            auth: security.auth,
            auth_tokens_file: security.auth_tokens_file,
            permissions_file: security.permissions_file,
            client: security.client,
            limits: Some(LimitsFile {
                frame_bytes_max: Some(Spanned::new(0..0, self.limits.frame_bytes_max)),
                entry_bytes_max: Some(Spanned::new(0..0, self.limits.entry_bytes_max)),
                range_bytes_max: Some(Spanned::new(0..0, self.limits.range_bytes_max)),
                in_flight_max: Some(Spanned::new(0..0, self.limits.in_flight_max)),
                idle_timeout_s: Some(Spanned::new(0..0, self.limits.idle_timeout.as_secs())),
            }),
            engine: Some(self.engine.to_file()),
            registration: Some(RegistrationFile {
                lease_ttl_ms: Some(Spanned::new(0..0, self.lease_ttl.as_millis() as u64)),
                zone: (!self.zone.is_empty()).then(|| Spanned::new(0..0, self.zone.clone())),
                rack: (!self.rack.is_empty()).then(|| Spanned::new(0..0, self.rack.clone())),
            }),
            autorecovery: Some(AutorecoveryFile {
                enabled: Some(Spanned::new(0..0, self.autorecovery.is_some())),
                lost_bookie_grace_ms: Some(Spanned::new(0..0, self.autorecovery_settings().0)),
                open_segment_grace_ms: Some(Spanned::new(0..0, self.autorecovery_settings().1)),
            }),
        };
        // Serializing plain strings, integers and tables cannot fail; an empty string would
        // only ever show up as a resolve error on reading it back.
        toml::to_string(&file).unwrap_or_default()
    }
}

fn check_dirs(field: &'static str, (dirs, at): (Vec<PathBuf>, Origin)) -> Result<Vec<PathBuf>, ConfigError> {
    if dirs.is_empty() {
        return Err(invalid(field, at, "the list is empty (give at least one directory)"));
    }
    if let Some(i) = dirs.iter().position(|d| d.as_os_str().is_empty()) {
        return Err(invalid(field, at, format!("entry {i} is an empty path")));
    }
    Ok(dirs)
}

fn resolve_limits(file: LimitsFile, source: Option<&Source<'_>>) -> Result<ServerLimits, ConfigError> {
    let defaults = ServerLimits::default();
    let (frame_bytes_max, frame_at) = file_or(file.frame_bytes_max, source, defaults.frame_bytes_max);
    let (entry_bytes_max, entry_at) = file_or(file.entry_bytes_max, source, defaults.entry_bytes_max);
    let (range_bytes_max, range_at) = file_or(file.range_bytes_max, source, defaults.range_bytes_max);
    let (in_flight_max, at) = file_or(file.in_flight_max, source, defaults.in_flight_max);
    if !(1..=IN_FLIGHT_MAX_BOUND).contains(&in_flight_max) {
        let reason = format!("{in_flight_max} is not in 1..={IN_FLIGHT_MAX_BOUND}");
        return Err(invalid("limits.in_flight_max", at, reason));
    }
    let (idle_timeout_s, at) = file_or(file.idle_timeout_s, source, IDLE_TIMEOUT_S_DEFAULT);
    if !(1..=IDLE_TIMEOUT_S_BOUND).contains(&idle_timeout_s) {
        let reason = format!("{idle_timeout_s} is not in 1..={IDLE_TIMEOUT_S_BOUND} seconds");
        return Err(invalid("limits.idle_timeout_s", at, reason));
    }
    let limits = ServerLimits {
        frame_bytes_max,
        entry_bytes_max,
        range_bytes_max,
        in_flight_max,
        idle_timeout: Duration::from_secs(idle_timeout_s),
    };
    limits.protocol().validate().map_err(|e| match e {
        dlog_protocol::LimitsError::Zero("range_bytes_max") => {
            invalid("limits.range_bytes_max", range_at, e.to_string())
        }
        dlog_protocol::LimitsError::Zero(_) => invalid("limits.entry_bytes_max", entry_at, e.to_string()),
        dlog_protocol::LimitsError::FrameTooSmall { .. } => {
            invalid("limits.frame_bytes_max", frame_at, e.to_string())
        }
    })?;
    Ok(limits)
}

/// What `dlog bookie --check-config` prints: resolves and validates the
/// configuration as `dlog bookie` would, also refusing an `etcd://` store in a build without
/// the `etcd` feature, and returns the effective configuration as TOML. Touches no directory
/// and no store.
pub fn check_config(args: BookieArgs) -> Result<String, ConfigError> {
    let config = ServerConfig::resolve(args)?;
    if !cfg!(feature = "etcd") && config.metadata.starts_with("etcd://") {
        let reason =
            format!("{:?}: this build has no etcd backend (build with `--features etcd`)", config.metadata);
        return Err(invalid("metadata", Origin::Default, reason));
    }
    Ok(config.to_toml())
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
