//! `Authenticator`: who a connection's client is, from its AUTH steps or its TLS certificate.
//!
//! Owns: the handshake's contract (a mechanism byte and a token in; another token out, done
//! with the client's identity, or a refusal), and the three authenticators `dlog bookie` runs
//! (`auth = "none" | "token" | "mtls"`): `AllowAll`, `TokenAuthenticator` (mechanism 1, a
//! bearer token checked against a file of SHA-256 hashes) and `MutualTls` (the identity of the
//! client certificate the TLS handshake verified; no AUTH step).
//! Does not own: connection state (connection.rs keeps each connection's identity), the TLS
//! handshake (the certificate arrives verified), permissions (a later per-namespace check reads
//! the identity connection.rs keeps).
//!
//! Invariants:
//! - AU1: when `required()` is true, a connection gets `Unauthorized` for every request but
//!   AUTH until it has an identity: from `on_connect` (a verified client certificate, with
//!   `MutualTls`) or an AUTH step answered `Done`; nothing it sent before is executed.
//! - AU2: a connection keeps its identity for its whole life (connection.rs, `Identity`): a
//!   later AUTH step naming another identity is refused (`Unauthorized`) and changes nothing,
//!   so the permission decisions a connection keeps stay its identity's. When authentication
//!   is not required, AUTH steps are answered done and leave the identity it connected with.
//! - AU3: the tokens file holds only SHA-256 hashes of the tokens, never tokens; a presented
//!   token is hashed and compared with every hash in constant time (no early exit), so neither
//!   the file nor the timing of a refusal tells a token.
//! - AU4: an identity is 1 to 255 bytes of printable UTF-8 (no control characters): safe in
//!   logs and as a key of later permission rules.

use std::path::Path;

use bytes::Bytes;
use dlog_replication::transport::MECHANISM_TOKEN;
use rustls::pki_types::CertificateDer;

/// The identity of connections that did not have to authenticate.
pub const ANONYMOUS: &str = "anonymous";
/// Longest identity (AU4).
pub const IDENTITY_BYTES_MAX: usize = 255;

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

    /// The identity a new connection has before any AUTH step; `certificate` is the identity
    /// of the client certificate its TLS handshake verified, if any. `None`: it must
    /// authenticate first. By default: none when `required`, else the certificate's identity
    /// or `ANONYMOUS`.
    fn on_connect(&self, certificate: Option<&str>) -> Option<String> {
        if self.required() { None } else { Some(certificate.unwrap_or(ANONYMOUS).to_owned()) }
    }
}

/// Requires nothing; accepts any handshake (`auth = "none"`, the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn required(&self) -> bool {
        false
    }

    fn step(&self, _mechanism: u8, _token: &[u8]) -> Result<AuthStep, String> {
        Ok(AuthStep::Done { identity: ANONYMOUS.into() })
    }
}

/// Mutual TLS (`auth = "mtls"`): a connection is its client certificate's identity
/// (`certificate_identity`) from the handshake on; the server's TLS config requires a
/// certificate from the configured CA, so one without is refused in the handshake. No AUTH
/// mechanism: an AUTH step is refused (the client is misconfigured).
#[derive(Clone, Copy, Debug, Default)]
pub struct MutualTls;

impl Authenticator for MutualTls {
    fn required(&self) -> bool {
        true
    }

    fn step(&self, mechanism: u8, _token: &[u8]) -> Result<AuthStep, String> {
        Err(format!(
            "mechanism {mechanism} refused: this bookie authenticates clients by their TLS certificate only"
        ))
    }

    fn on_connect(&self, certificate: Option<&str>) -> Option<String> {
        certificate.map(str::to_owned)
    }
}

/// Bearer tokens (`auth = "token"`, mechanism 1): the token is the whole AUTH body; it is
/// the identity whose hash it has in the tokens file (AU3).
#[derive(Clone, Debug)]
pub struct TokenAuthenticator {
    /// (identity, SHA-256 of its token).
    tokens: Vec<(String, [u8; 32])>,
}

impl TokenAuthenticator {
    /// Reads a tokens file: TOML, one `identity = "<SHA-256 of the token, 64 hex digits>"`
    /// per line (quote identities that are not bare keys: `"CN=app" = "..."`).
    pub fn from_file(path: &Path) -> Result<TokenAuthenticator, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        TokenAuthenticator::parse(&text)
    }

    /// Parses the text of a tokens file (`from_file`).
    pub fn parse(text: &str) -> Result<TokenAuthenticator, String> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| format!("not TOML: {}", e.message().trim()))?;
        let mut tokens: Vec<(String, [u8; 32])> = Vec::with_capacity(table.len());
        for (identity, value) in table {
            check_identity(&identity).map_err(|why| format!("identity {identity:?}: {why}"))?;
            let hash = value
                .as_str()
                .and_then(parse_sha256_hex)
                .ok_or_else(|| format!("{identity}: expected the SHA-256 of its token as 64 hex digits"))?;
            if let Some((other, _)) = tokens.iter().find(|(_, h)| *h == hash) {
                return Err(format!("{identity} and {other} have the same token hash"));
            }
            tokens.push((identity, hash));
        }
        if tokens.is_empty() {
            return Err("no tokens (one `identity = \"<sha256 hex>\"` per line): nobody could connect".into());
        }
        Ok(TokenAuthenticator { tokens })
    }

    /// The identities the file names.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|(identity, _)| identity.as_str())
    }
}

/// The SHA-256 of `token` in lowercase hex: what a tokens file holds for it.
pub fn token_hash_hex(token: &[u8]) -> String {
    sha256(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equality of two digests in time independent of where they differ (AU3).
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

impl Authenticator for TokenAuthenticator {
    fn required(&self) -> bool {
        true
    }

    fn step(&self, mechanism: u8, token: &[u8]) -> Result<AuthStep, String> {
        if mechanism != MECHANISM_TOKEN {
            return Err(format!("mechanism {mechanism} refused: this bookie takes tokens (mechanism 1)"));
        }
        let hash = sha256(token);
        let mut found = None;
        for (identity, expected) in &self.tokens {
            if same_digest(&hash, expected) {
                found = Some(identity);
            }
        }
        match found {
            Some(identity) => Ok(AuthStep::Done { identity: identity.clone() }),
            None => Err("unknown token".into()),
        }
    }
}

/// An identity as AU4 allows it.
pub fn check_identity(identity: &str) -> Result<(), &'static str> {
    if identity.is_empty() {
        Err("empty")
    } else if identity.len() > IDENTITY_BYTES_MAX {
        Err("over 255 bytes")
    } else if identity.chars().any(char::is_control) {
        Err("holds a control character")
    } else {
        Ok(())
    }
}

/// The identity of a client certificate: its subject's common name (CN), else its first DNS
/// subject alternative name, else its first URI one; `None` when it has none that AU4 allows.
pub fn certificate_identity(certificate: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(certificate).ok()?;
    let common_name = common_name(parsed.subject()).and_then(|cn| std::str::from_utf8(cn).ok());
    let name = common_name
        .map(str::to_owned)
        .or_else(|| parsed.valid_dns_names().next().map(str::to_owned))
        .or_else(|| parsed.valid_uri_names().next().map(str::to_owned))?;
    check_identity(&name).ok().map(|()| name)
}

/// DER tag of an X.500 attribute's OID, and the OID of commonName (2.5.4.3).
const TAG_OID: u8 = 0x06;
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
/// String types a common name comes in that are UTF-8 compatible: UTF8String, PrintableString,
/// IA5String.
const TAGS_TEXT: [u8; 3] = [0x0c, 0x13, 0x16];

/// The value of the first commonName in `subject` (the DER contents of an X.509 Name: a
/// sequence of sets of (OID, value) sequences), if it is text.
fn common_name(subject: &[u8]) -> Option<&[u8]> {
    let mut names = subject;
    while !names.is_empty() {
        let (_, set) = der_next(&mut names)?;
        let mut set = set;
        while !set.is_empty() {
            let (_, mut attribute) = der_next(&mut set)?;
            let (oid_tag, oid) = der_next(&mut attribute)?;
            let (value_tag, value) = der_next(&mut attribute)?;
            if oid_tag == TAG_OID && oid == OID_COMMON_NAME && TAGS_TEXT.contains(&value_tag) {
                return Some(value);
            }
        }
    }
    None
}

/// Takes one DER TLV off `input`: its tag and contents (lengths up to 4 bytes long).
fn der_next<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    *input = after;
    Some((tag, contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_by_hash_only() {
        let file = format!(
            "writer = \"{}\"\n\"CN=reader\" = \"{}\"\n",
            token_hash_hex(b"t-1"),
            token_hash_hex(b"t-2")
        );
        let auth = TokenAuthenticator::parse(&file).unwrap();
        assert_eq!(auth.step(1, b"t-1"), Ok(AuthStep::Done { identity: "writer".into() }));
        assert_eq!(auth.step(1, b"t-2"), Ok(AuthStep::Done { identity: "CN=reader".into() }));
        assert_eq!(auth.step(1, b"t-3"), Err("unknown token".into()));
        assert!(auth.step(2, b"t-1").unwrap_err().contains("mechanism 2"));
        assert!(auth.step(1, b"").is_err());
        assert!(auth.required() && auth.on_connect(Some("cert")).is_none());
    }

    #[test]
    fn bad_tokens_files_are_refused_with_reasons() {
        let hash = token_hash_hex(b"x");
        for (text, needle) in [
            ("", "no tokens"),
            ("a = 1", "64 hex digits"),
            ("a = \"abc\"", "64 hex digits"),
            (&format!("a = \"{hash}\"\nb = \"{hash}\""), "same token hash"),
            (&format!("\"\" = \"{hash}\""), "empty"),
            ("not toml", "not TOML"),
        ] {
            let err = TokenAuthenticator::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn der_walk_finds_the_common_name_and_survives_garbage() {
        // SET { SEQUENCE { OID 2.5.4.6 (C), PrintableString "FR" } },
        // SET { SEQUENCE { OID 2.5.4.3 (CN), UTF8String "app" } }
        let subject = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'F', b'R', 0x31, 0x0c, 0x30,
            0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'a', b'p', b'p',
        ];
        assert_eq!(common_name(&subject), Some(&b"app"[..]));
        assert_eq!(common_name(&subject[..13]), None, "no CN");
        for cut in 0..subject.len() {
            let _ = common_name(&subject[..cut]); // never panics
        }
        assert_eq!(der_next(&mut &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..]), None);
    }

    #[test]
    fn identities_are_printable_and_bounded() {
        assert!(check_identity("app-1").is_ok());
        assert!(check_identity("").is_err());
        assert!(check_identity("a\nb").is_err());
        assert!(check_identity(&"x".repeat(256)).is_err());
        assert_eq!(MutualTls.on_connect(Some("app")), Some("app".into()));
        assert_eq!(MutualTls.on_connect(None), None);
        assert_eq!(AllowAll.on_connect(Some("app")), Some("app".into()));
        assert_eq!(AllowAll.on_connect(None), Some(ANONYMOUS.into()));
    }
}
