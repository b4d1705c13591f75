//! `dlog bookie`: the bookie server (docs/rfcs/2026-11-26-bookie-server.md, issue 5).
//!
//! `config` resolves flags and the TOML file; `server` runs the network threads over an open
//! engine, `connection` serves one client, `dispatch` maps requests to the engine, `auth` is
//! the handshake hook and its authenticators, `permissions` and `segment_owners` the
//! per-namespace permission check, `security` the TLS and authentication settings,
//! `metrics` names what is published; `run` is the process around them.

pub mod auth;
pub mod config;
pub mod connection;
pub mod cookie_file;
pub mod dispatch;
pub mod engine_knobs;
pub mod metrics;
pub mod outbox;
pub mod permissions;
pub mod registration;
pub mod run;
pub mod security;
pub mod segment_owners;
pub mod server;

pub use config::{BookieArgs, ConfigError, Origin, ServerConfig, ServerLimits, check_config};
pub use security::{AuthMode, SecurityArgs, SecuritySettings, ServerSecurity};
pub use server::{BookieServer, ServerError, ServerOptions};
