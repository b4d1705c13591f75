//! The bookie's TLS and authentication settings (issue 9): flags, the file's keys, their
//! checks, and what they build: the server's rustls config and authenticator, and the client
//! security of the bookie's own connections to other bookies (autorecovery).
//!
//! Keys (top level of the file, and flags of the same name): `tls_cert_file`, `tls_key_file`
//! (PEM; together they turn TLS on), `tls_client_ca_file` (PEM; clients must then present a
//! certificate from these CAs: mutual TLS), `auth` (`none`, `token`, `mtls`),
//! `auth_tokens_file` (with `auth = "token"`), `permissions_file` (TOML of per-identity
//! namespace grants, permissions.rs: without it, every authenticated client may read and
//! write every segment). The `[client]` table (file only): `tls_ca_file`,
//! `tls_cert_file`, `tls_key_file`, `auth_token_file`, for autorecovery's connections.
//!
//! Invariants:
//! - SC1: a resolved `SecuritySettings` loads: every file it names was read and parsed at
//!   resolve time and the combinations make sense (TLS needs both the certificate and the key;
//!   a client CA needs TLS; `mtls` needs a client CA; `token` needs a tokens file, and a tokens
//!   file needs `token`; a permissions file is checked whole, PM6); a refusal names the key
//!   and where its value came from (config C3).
//! - SC2: the default is what the server did before: plaintext, no authentication.

use std::path::PathBuf;
use std::sync::Arc;

use dlog_replication::transport::security::{
    crypto_provider, load_certificates, load_private_key, load_roots,
};
use dlog_replication::transport::{AuthToken, ClientSecurity, ClientTls, TlsFileError};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::bookie::auth::{AllowAll, Authenticator, MutualTls, TokenAuthenticator};
use crate::bookie::config::{ConfigError, Origin, Source, invalid, pick};
use crate::bookie::permissions::Permissions;

/// How the bookie authenticates clients (`auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Nobody has to authenticate.
    #[default]
    None,
    /// A token in an AUTH step (mechanism 1), checked against `auth_tokens_file`.
    Token,
    /// The client certificate mutual TLS verified (`tls_client_ca_file`).
    Mtls,
}

/// The security flags of `dlog bookie`; each overrides the file's key of the same name.
#[derive(clap::Args, Debug, Default, Clone, PartialEq, Eq)]
pub struct SecurityArgs {
    /// PEM certificate chain the bookie presents (turns TLS on, with --tls-key-file). It must
    /// name the address clients connect to (an IP subject alternative name, e.g. 127.0.0.1).
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate they signed (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How clients authenticate [default: none].
    #[arg(long, value_enum)]
    pub auth: Option<AuthMode>,
    /// With --auth token: TOML of `identity = "<sha256 of its token, hex>"` lines.
    #[arg(long, value_name = "FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// TOML of per-identity namespace grants (`[identity] read = [..] write = [..]`); without
    /// it, every authenticated client may read and write every segment.
    #[arg(long, value_name = "FILE")]
    pub permissions_file: Option<PathBuf>,
}

/// The file's `[client]` table: how autorecovery connects to other bookies.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_ca_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_cert_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_key_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_token_file: Option<Spanned<PathBuf>>,
}

/// The security keys of the file, as config.rs read them.
#[derive(Default)]
pub(super) struct SecurityFile {
    pub(super) tls_cert_file: Option<Spanned<PathBuf>>,
    pub(super) tls_key_file: Option<Spanned<PathBuf>>,
    pub(super) tls_client_ca_file: Option<Spanned<PathBuf>>,
    pub(super) auth: Option<Spanned<AuthMode>>,
    pub(super) auth_tokens_file: Option<Spanned<PathBuf>>,
    pub(super) permissions_file: Option<Spanned<PathBuf>>,
    pub(super) client: Option<ClientFile>,
}

/// The bookie's TLS certificate files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// `tls_cert_file`.
    pub cert_file: PathBuf,
    /// `tls_key_file`.
    pub key_file: PathBuf,
    /// `tls_client_ca_file`: mutual TLS when set.
    pub client_ca_file: Option<PathBuf>,
}

/// The `[client]` table, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA certificates to trust other bookies by; TLS when set.
    pub tls_ca_file: Option<PathBuf>,
    /// Certificate chain to present (mutual TLS), with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key.
    pub tls_key_file: Option<PathBuf>,
    /// A file holding the token to authenticate with.
    pub auth_token_file: Option<PathBuf>,
}

/// Everything security, resolved and loadable (SC1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecuritySettings {
    /// TLS, or plaintext when `None`.
    pub tls: Option<ServerTlsFiles>,
    /// How clients authenticate.
    pub auth: AuthMode,
    /// The tokens file of `AuthMode::Token`.
    pub auth_tokens_file: Option<PathBuf>,
    /// The permissions file: per-namespace grants, or everything allowed when `None`.
    pub permissions_file: Option<PathBuf>,
    /// Autorecovery's connections to other bookies.
    pub client: ClientFiles,
}

/// What the server runs with.
#[derive(Clone)]
pub struct ServerSecurity {
    /// The TLS config, or plaintext when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The authenticator.
    pub auth: Arc<dyn Authenticator>,
    /// The per-namespace grants, or everything allowed when `None`.
    pub permissions: Option<Permissions>,
}

/// A security setting that does not load (at run time; `resolve` turns these into
/// `ConfigError::Invalid` naming where the value came from).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SecurityError {
    /// The key, as the file spells it.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn refuse<E: std::fmt::Display>(field: &'static str) -> impl Fn(E) -> SecurityError {
    move |e| SecurityError { field, reason: e.to_string() }
}

impl SecuritySettings {
    /// The server's TLS config and authenticator.
    pub fn load(&self) -> Result<ServerSecurity, SecurityError> {
        let tls = self.tls.as_ref().map(server_tls).transpose()?;
        let auth: Arc<dyn Authenticator> = match self.auth {
            AuthMode::None => Arc::new(AllowAll),
            AuthMode::Mtls => Arc::new(MutualTls),
            AuthMode::Token => {
                let path = self.auth_tokens_file.as_ref().ok_or_else(|| SecurityError {
                    field: "auth_tokens_file",
                    reason: "auth = \"token\" needs a tokens file".into(),
                })?;
                let tokens = TokenAuthenticator::from_file(path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .map_err(refuse("auth_tokens_file"))?;
                Arc::new(tokens)
            }
        };
        let permissions = match &self.permissions_file {
            None => None,
            Some(path) => Some(
                Permissions::from_file(path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .map_err(refuse("permissions_file"))?,
            ),
        };
        Ok(ServerSecurity { tls, auth, permissions })
    }

    /// The settings of the security flags alone (no file; `dlog local`), checked as
    /// `dlog bookie` checks them (SC1).
    pub fn from_flags(args: SecurityArgs) -> Result<SecuritySettings, ConfigError> {
        resolve(args, SecurityFile::default(), None)
    }

    /// How autorecovery connects to other bookies (`[client]`).
    pub fn client_security(&self) -> Result<ClientSecurity, SecurityError> {
        let client = &self.client;
        let identity = match (&client.tls_cert_file, &client.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                let reason = "client.tls_cert_file and client.tls_key_file go together";
                return Err(SecurityError { field: "client.tls_cert_file", reason: reason.into() });
            }
        };
        let tls = match (&client.tls_ca_file, identity) {
            (None, None) => None,
            (None, Some(_)) => {
                let reason = "a client certificate needs client.tls_ca_file (TLS)";
                return Err(SecurityError { field: "client.tls_ca_file", reason: reason.into() });
            }
            (Some(ca), identity) => Some(ClientTls::from_files(ca, identity).map_err(|e| {
                let field = match &e {
                    TlsFileError::Read { path, .. } | TlsFileError::Pem { path, .. } if path == ca => {
                        "client.tls_ca_file"
                    }
                    TlsFileError::Read { path, .. } | TlsFileError::Pem { path, .. }
                        if Some(path) == client.tls_cert_file.as_ref() =>
                    {
                        "client.tls_cert_file"
                    }
                    _ => "client.tls_key_file",
                };
                SecurityError { field, reason: e.to_string() }
            })?),
        };
        let token = match &client.auth_token_file {
            None => None,
            Some(path) => Some(AuthToken::from_file(path).map_err(refuse("client.auth_token_file"))?),
        };
        Ok(ClientSecurity { tls, token })
    }

    /// The file's keys for this configuration (`ServerConfig::to_toml`): `auth` always, the
    /// files when set.
    pub(super) fn to_file(&self) -> SecurityFile {
        let at = |path: Option<&PathBuf>| path.cloned().map(|p| Spanned::new(0..0, p));
        let client = &self.client;
        let client_file = ClientFile {
            tls_ca_file: at(client.tls_ca_file.as_ref()),
            tls_cert_file: at(client.tls_cert_file.as_ref()),
            tls_key_file: at(client.tls_key_file.as_ref()),
            auth_token_file: at(client.auth_token_file.as_ref()),
        };
        let tls = self.tls.as_ref();
        SecurityFile {
            tls_cert_file: at(tls.map(|t| &t.cert_file)),
            tls_key_file: at(tls.map(|t| &t.key_file)),
            tls_client_ca_file: at(tls.and_then(|t| t.client_ca_file.as_ref())),
            auth: Some(Spanned::new(0..0, self.auth)),
            auth_tokens_file: at(self.auth_tokens_file.as_ref()),
            permissions_file: at(self.permissions_file.as_ref()),
            client: (*client != ClientFiles::default()).then_some(client_file),
        }
    }
}

/// The server's rustls config: its certificate and key, and with a client CA, a verifier that
/// requires a client certificate signed by it.
fn server_tls(files: &ServerTlsFiles) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
    let chain = load_certificates(&files.cert_file).map_err(refuse("tls_cert_file"))?;
    let key = load_private_key(&files.key_file).map_err(refuse("tls_key_file"))?;
    let builder = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(refuse("tls_cert_file"))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = load_roots(path).map_err(refuse("tls_client_ca_file"))?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                crypto_provider(),
            )
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))
            .map_err(refuse("tls_client_ca_file"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| SecurityError {
        field: "tls_key_file",
        reason: format!("{} with certificate {}: {e}", files.key_file.display(), files.cert_file.display()),
    })?;
    Ok(Arc::new(config))
}

/// Resolves the security settings: flags over the file over the defaults (SC2), checked and
/// loaded once (SC1).
pub(super) fn resolve(
    args: SecurityArgs,
    file: SecurityFile,
    source: Option<&Source<'_>>,
) -> Result<SecuritySettings, ConfigError> {
    let mut origins: Vec<(&'static str, Origin)> = Vec::new();
    let mut path = |field: &'static str, flag: Option<PathBuf>, flag_name, value| {
        pick(flag, flag_name, value, source).map(|(path, at)| {
            origins.push((field, at));
            path
        })
    };
    let cert = path("tls_cert_file", args.tls_cert_file, "--tls-cert-file", file.tls_cert_file);
    let key = path("tls_key_file", args.tls_key_file, "--tls-key-file", file.tls_key_file);
    let client_ca =
        path("tls_client_ca_file", args.tls_client_ca_file, "--tls-client-ca-file", file.tls_client_ca_file);
    let tokens = path("auth_tokens_file", args.auth_tokens_file, "--auth-tokens-file", file.auth_tokens_file);
    let permissions =
        path("permissions_file", args.permissions_file, "--permissions-file", file.permissions_file);
    let client = file.client.unwrap_or_default();
    let client = ClientFiles {
        tls_ca_file: path("client.tls_ca_file", None, "", client.tls_ca_file),
        tls_cert_file: path("client.tls_cert_file", None, "", client.tls_cert_file),
        tls_key_file: path("client.tls_key_file", None, "", client.tls_key_file),
        auth_token_file: path("client.auth_token_file", None, "", client.auth_token_file),
    };
    let (auth, auth_at) =
        pick(args.auth, "--auth", file.auth, source).unwrap_or((AuthMode::None, Origin::Default));
    origins.push(("auth", auth_at));
    let origin = |field: &'static str| {
        origins.iter().find(|(f, _)| *f == field).map_or(Origin::Default, |(_, at)| at.clone())
    };
    let tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => {
            Some(ServerTlsFiles { cert_file, key_file, client_ca_file: client_ca })
        }
        (None, None) if client_ca.is_some() => {
            let reason = "mutual TLS needs TLS: give tls_cert_file and tls_key_file too";
            return Err(invalid("tls_client_ca_file", origin("tls_client_ca_file"), reason));
        }
        (None, None) => None,
        (Some(_), None) => {
            let reason = "tls_cert_file is set: give its key too";
            return Err(invalid("tls_key_file", origin("tls_cert_file"), reason));
        }
        (None, Some(_)) => {
            let reason = "tls_key_file is set: give its certificate too";
            return Err(invalid("tls_cert_file", origin("tls_key_file"), reason));
        }
    };
    let mutual = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    if auth == AuthMode::Mtls && !mutual {
        let reason = "\"mtls\" needs tls_cert_file, tls_key_file and tls_client_ca_file";
        return Err(invalid("auth", origin("auth"), reason));
    }
    if auth == AuthMode::Token && tokens.is_none() {
        return Err(invalid("auth_tokens_file", origin("auth"), "auth = \"token\" needs a tokens file"));
    }
    if auth != AuthMode::Token && tokens.is_some() {
        let reason = "set auth = \"token\" to use a tokens file";
        return Err(invalid("auth_tokens_file", origin("auth_tokens_file"), reason));
    }
    let settings =
        SecuritySettings { tls, auth, auth_tokens_file: tokens, permissions_file: permissions, client };
    settings.load().map_err(|e| invalid(e.field, origin(e.field), e.reason))?;
    settings.client_security().map_err(|e| invalid(e.field, origin(e.field), e.reason))?;
    Ok(settings)
}
