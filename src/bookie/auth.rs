//! `Authenticator`: the hook a connection's AUTH handshake runs through.
//!
//! Owns: the handshake's contract: a mechanism byte and a token in, either another token out
//! (the handshake goes on), done with the client's identity, or a refusal.
//! Does not own: connection state (connection.rs keeps whether a connection is authenticated)
//! nor any real mechanism yet: tokens and mutual TLS come with issue 9. Until then the server
//! runs `AllowAll`, which requires nothing and accepts any handshake.
//!
//! Invariant AU1: when `required()` is true, a connection gets `Unauthorized` for every request
//! but AUTH until a handshake step answered `Done`; nothing it sent before is executed.

use bytes::Bytes;

/// One step of a handshake, as the authenticator answers it.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// The client is who it says: it may send requests now.
    Done {
        /// Who the client is (for logs and, later, permissions).
        identity: String,
    },
    /// Send this token back and expect another AUTH step.
    Continue(Bytes),
}

/// Checks clients' AUTH steps.
pub trait Authenticator: Send + Sync + 'static {
    /// Whether connections must authenticate before any other request (AU1).
    fn required(&self) -> bool;

    /// One AUTH step of a connection: `Err` with why it is refused (answered `Unauthorized`).
    fn step(&self, mechanism: u8, token: &[u8]) -> Result<AuthStep, String>;
}

/// Requires nothing; accepts any handshake (the default until issue 9 brings real mechanisms).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn required(&self) -> bool {
        false
    }

    fn step(&self, _mechanism: u8, _token: &[u8]) -> Result<AuthStep, String> {
        Ok(AuthStep::Done { identity: "anonymous".into() })
    }
}
