//! `dlog bookie`: the bookie server (docs/rfcs/2026-11-26-bookie-server.md, issue 5).
//!
//! Today: its configuration only (`config`: flags, the TOML file, defaults, validation, and
//! the engine configuration derived from them). Missing: the server itself (listeners, the
//! per-shard event loops, registration, metrics) and the `bookie` subcommand in src/main.rs.

pub mod config;

pub use config::{BookieArgs, ConfigError, Origin, ServerConfig, ServerLimits, check_config};
