//! `ClientSecurity`: how a client secures and authenticates its connections to bookies (TLS,
//! a token), and the PEM files both sides configure TLS from.
//!
//! Owns: loading certificates, private keys and CA bundles from PEM files with errors that
//! name the file and what is wrong; the crypto provider every TLS config of the workspace is
//! built with (ring); the client's TLS config and token.
//! Does not own: the handshake and the encrypted stream (tls.rs), the AUTH step on the wire
//! (connection.rs), the bookie's side (the server's `security` module builds its config from the
//! loaders here).
//!
//! Invariants:
//! - SE1: the default is plaintext and no AUTH step: nothing changes for a client that does not
//!   ask for security.
//! - SE2: a token never shows in `Debug` output or errors.
//! - SE3: every TLS config is built with `crypto_provider()` (ring), never the process default
//!   (which panics when a build links two providers).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use dlog_protocol::AUTH_TOKEN_BYTES_MAX;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The AUTH mechanism of a bearer token: the token is the whole AUTH body; the bookie answers
/// done with the identity the token belongs to, or `Unauthorized`.
pub const MECHANISM_TOKEN: u8 = 1;

/// A TLS file that cannot be used, or a TLS config rustls refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file cannot be read (missing, unreadable).
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM, or holds none of what it should.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused what the files hold together (a key that does not match its
    /// certificate, an unsupported key type, a CA certificate it cannot parse).
    #[error("{0}")]
    Refused(String),
}

/// The crypto provider of every TLS config here (SE3): ring, which builds with a C compiler
/// alone (aws-lc-rs also needs cmake), with its cipher suites reordered to prefer AES-128-GCM
/// over AES-256-GCM (fewer rounds per block for the same 128-bit security level against
/// classical attackers; Go and BoringSSL prefer it too). Every suite ring offers stays.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            let rank = |suite: &rustls::SupportedCipherSuite| {
                let name = format!("{:?}", suite.suite());
                (suite.version().version != rustls::ProtocolVersion::TLSv1_3, !name.contains("AES_128"))
            };
            provider.cipher_suites.sort_by_key(rank);
            Arc::new(provider)
        })
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { path: path.to_path_buf(), source })
}

/// The certificates of a PEM file (`BEGIN CERTIFICATE` sections), in order: at least one.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(path)?;
    let bad = |reason: String| TlsFileError::Pem { path: path.to_path_buf(), reason };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certificates.is_empty() {
        return Err(bad("no certificate in the file (expected PEM `BEGIN CERTIFICATE` sections)".into()));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1): the first one.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in the file (expected PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` \
                 or `BEGIN EC PRIVATE KEY`)"
                    .to_owned()
            }
            other => format!("not a PEM private key file: {other}"),
        };
        TlsFileError::Pem { path: path.to_path_buf(), reason }
    })
}

/// The CA certificates of a PEM file, as trust anchors: at least one, each usable.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for (index, certificate) in load_certificates(path)?.into_iter().enumerate() {
        roots.add(certificate).map_err(|e| TlsFileError::Pem {
            path: path.to_path_buf(),
            reason: format!("certificate {index} is not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// How a client secures and authenticates its connections (`ClientConfig::security`).
/// Default: plaintext, no AUTH step (SE1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientSecurity {
    /// TLS to every bookie, or plaintext when `None`.
    pub tls: Option<ClientTls>,
    /// A token sent in an AUTH step (mechanism 1) right after connecting, before any request.
    pub token: Option<AuthToken>,
}

/// Environment variables `ClientSecurity::from_env` reads (the CLI's way to configure it).
pub const ENV_TLS_CA_FILE: &str = "DLOG_TLS_CA_FILE";
/// See `ENV_TLS_CA_FILE`.
pub const ENV_TLS_CERT_FILE: &str = "DLOG_TLS_CERT_FILE";
/// See `ENV_TLS_CA_FILE`.
pub const ENV_TLS_KEY_FILE: &str = "DLOG_TLS_KEY_FILE";
/// See `ENV_TLS_CA_FILE`.
pub const ENV_TLS_SERVER_NAME: &str = "DLOG_TLS_SERVER_NAME";
/// See `ENV_TLS_CA_FILE`.
pub const ENV_AUTH_TOKEN_FILE: &str = "DLOG_AUTH_TOKEN_FILE";
/// See `ENV_TLS_CA_FILE`.
pub const ENV_AUTH_TOKEN: &str = "DLOG_AUTH_TOKEN";

/// Why `ClientSecurity::from_env` refused the environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvSecurityError {
    /// A TLS file named by a variable does not load.
    #[error("{variable}: {source}")]
    Tls {
        /// The variable.
        variable: &'static str,
        /// Why.
        source: TlsFileError,
    },
    /// The token does not load.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Variables that go together were not all given.
    #[error("{0}")]
    Incomplete(&'static str),
}

impl ClientSecurity {
    /// The security the environment asks for: TLS when `DLOG_TLS_CA_FILE` names the CA
    /// certificates to trust bookies by (with `DLOG_TLS_CERT_FILE` and `DLOG_TLS_KEY_FILE`, a
    /// client certificate; with `DLOG_TLS_SERVER_NAME`, the name to verify bookies against
    /// instead of their addresses), and a token from the file `DLOG_AUTH_TOKEN_FILE` names or
    /// from `DLOG_AUTH_TOKEN`. Nothing set: the default (SE1).
    pub fn from_env() -> Result<ClientSecurity, EnvSecurityError> {
        let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let (ca, cert, key) = (path(ENV_TLS_CA_FILE), path(ENV_TLS_CERT_FILE), path(ENV_TLS_KEY_FILE));
        let identity = match (&cert, &key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => {
                return Err(EnvSecurityError::Incomplete(
                    "DLOG_TLS_CERT_FILE and DLOG_TLS_KEY_FILE go together",
                ));
            }
        };
        let tls = match (&ca, identity) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(EnvSecurityError::Incomplete(
                    "a client certificate needs DLOG_TLS_CA_FILE (TLS)",
                ));
            }
            (Some(ca), identity) => {
                let tls = ClientTls::from_files(ca, identity)
                    .map_err(|source| EnvSecurityError::Tls { variable: ENV_TLS_CA_FILE, source })?;
                match std::env::var(ENV_TLS_SERVER_NAME) {
                    Ok(name) if !name.is_empty() => {
                        Some(tls.with_server_name(&name).map_err(|source| EnvSecurityError::Tls {
                            variable: ENV_TLS_SERVER_NAME,
                            source,
                        })?)
                    }
                    _ => Some(tls),
                }
            }
        };
        let token = match path(ENV_AUTH_TOKEN_FILE) {
            Some(file) => Some(AuthToken::from_file(&file)?),
            None => AuthToken::from_env(ENV_AUTH_TOKEN)?,
        };
        Ok(ClientSecurity { tls, token })
    }
}

/// The client's TLS: whom it trusts, what it proves, and the name it checks.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Trusts the CA certificates of `ca_file` (PEM); with `identity` = (certificate chain
    /// file, private key file), presents that certificate to bookies that ask (mutual TLS).
    pub fn from_files(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsFileError> {
        let roots = load_roots(ca_file)?;
        let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFileError::Refused(e.to_string()))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((certificate_file, key_file)) => {
                let chain = load_certificates(certificate_file)?;
                let key = load_private_key(key_file)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsFileError::Refused(format!(
                        "client certificate {} with key {}: {e}",
                        certificate_file.display(),
                        key_file.display()
                    ))
                })?
            }
        };
        Ok(ClientTls::from_config(Arc::new(config)))
    }

    /// A ready rustls config (built with `crypto_provider()`, SE3).
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> ClientTls {
        ClientTls { config, server_name: None }
    }

    /// Verifies every bookie's certificate against `name` (a DNS name or an IP address)
    /// rather than the bookie's own IP address.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls, TlsFileError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| TlsFileError::Refused(format!("server name {name:?}: {e}")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The rustls config.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// The name to verify the bookie at `addr` against.
    pub fn server_name(&self, addr: std::net::SocketAddr) -> ServerName<'static> {
        self.server_name.clone().unwrap_or_else(|| super::tls::server_name_of(addr))
    }
}

impl PartialEq for ClientTls {
    /// The same config object and name: two configs built from the same files separately are
    /// not equal (rustls configs are not comparable).
    fn eq(&self, other: &ClientTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_certificate", &self.config.client_auth_cert_resolver.has_certs())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A bearer token: secret bytes, never shown (SE2).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Bytes);

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file cannot be read.
    #[error("token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token is empty, too long or not in the form asked.
    #[error("token from {from}: {reason}")]
    Invalid {
        /// Where it came from (a file, a variable).
        from: String,
        /// What is wrong.
        reason: String,
    },
}

impl AuthToken {
    /// A token from its bytes: 1 to 64 KiB (`AUTH_TOKEN_BYTES_MAX`).
    pub fn new(token: impl Into<Bytes>) -> Result<AuthToken, TokenError> {
        AuthToken::checked(token.into(), "the caller")
    }

    /// The token a file holds, without the whitespace around it (a trailing newline).
    pub fn from_file(path: &Path) -> Result<AuthToken, TokenError> {
        let text =
            std::fs::read(path).map_err(|source| TokenError::Read { path: path.to_path_buf(), source })?;
        let token = text.trim_ascii();
        AuthToken::checked(Bytes::copy_from_slice(token), &format!("file {}", path.display()))
    }

    /// The token in environment variable `name`, if it is set.
    pub fn from_env(name: &str) -> Result<Option<AuthToken>, TokenError> {
        match std::env::var_os(name) {
            None => Ok(None),
            Some(value) => {
                let from = format!("variable {name}");
                let text = value
                    .into_string()
                    .map_err(|_| TokenError::Invalid { from: from.clone(), reason: "not UTF-8".into() })?;
                AuthToken::checked(Bytes::from(text.trim().to_owned()), &from).map(Some)
            }
        }
    }

    fn checked(token: Bytes, from: &str) -> Result<AuthToken, TokenError> {
        let reason = if token.is_empty() {
            "empty"
        } else if token.len() > AUTH_TOKEN_BYTES_MAX {
            "over 64 KiB"
        } else {
            return Ok(AuthToken(token));
        };
        Err(TokenError::Invalid { from: from.to_owned(), reason: reason.to_owned() })
    }

    /// The token's bytes, for the AUTH request.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthToken({} bytes, not shown)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_never_shown() {
        let token = AuthToken::new(&b"s3cret-value"[..]).unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        let security = ClientSecurity { tls: None, token: Some(token) };
        assert!(!format!("{security:?}").contains("s3cret"));
        assert!(AuthToken::new(Bytes::new()).is_err());
        assert!(AuthToken::new(vec![b'x'; AUTH_TOKEN_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn the_provider_prefers_tls13_aes128() {
        let provider = crypto_provider();
        let names: Vec<String> = provider.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect();
        assert_eq!(names[0], "TLS13_AES_128_GCM_SHA256", "{names:?}");
        assert_eq!(names.len(), rustls::crypto::ring::default_provider().cipher_suites.len());
    }

    #[test]
    fn bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("dlog-security-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = load_certificates(&missing).unwrap_err();
        assert!(matches!(err, TlsFileError::Read { .. }) && err.to_string().contains("missing.pem"), "{err}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let err = load_certificates(&junk).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = load_private_key(&junk).unwrap_err();
        assert!(err.to_string().contains("no private key"), "{err}");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
        let err = load_certificates(&junk).unwrap_err();
        assert!(err.to_string().contains("not a PEM certificate file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
