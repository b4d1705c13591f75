//! `MetadataUri`: the metadata store a URI names, parsed without opening it, in every build
//! (with or without the `etcd` feature): the one parser behind `AnyStore::open`,
//! `EtcdStore::connect` and the checks of configuration files.
//!
//! URIs:
//! - `local:///abs/path` or `local://rel/path`: the embedded store in that directory;
//! - `memory://`: the embedded store in memory;
//! - `etcd://host:port[,host:port...]/scope[?user=NAME&password_file=FILE]`: etcd over plain
//!   gRPC, keys under `/<scope>/`; the scope is one name of `[A-Za-z0-9._-]` (a nested scope
//!   would live inside another cluster's keys);
//! - `etcds://host:port[,...]/scope?ca=FILE[&cert=FILE&key=FILE][&user=NAME&password_file=FILE]`:
//!   etcd over TLS, trusting the CA certificates in `ca` (PEM) and, for etcd's
//!   `--client-cert-auth`, presenting the certificate chain `cert` with its private key `key`;
//! - `dlog://host:port` (a trailing `/` is ignored; no path): the store a `MetadataServer`
//!   serves there (`dlog local` serves its embedded store so, e.g. `dlog://127.0.0.1:7480`),
//!   reached through `RemoteStore`. `host` is a name, an IPv4 address or `[IPv6]`.
//!
//! Invariants of an etcd URI's parameters (MU1-MU4), each refused with `Invalid` naming it:
//! - MU1: every parameter is `name=value` with a known name, given at most once, with a
//!   non-empty value taken literally (no %-decoding; a path cannot hold `&`).
//! - MU2: `ca`, `cert` and `key` only with `etcds://`; `etcds://` needs `ca` (this build
//!   trusts no system roots); `cert` and `key` come together.
//! - MU3: `user` and `password_file` come together; a password is never in the URI itself
//!   (`password=` is refused saying so), so URIs can be logged and shown.
//! - MU4: parsing reads no file: `EtcdStore::connect` reads and checks them (missing,
//!   unreadable or not PEM: `Invalid` naming the file), so a URI can be checked anywhere.

use std::path::PathBuf;

use crate::error::MetaError;

/// A parsed metadata URI (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataUri {
    /// `local://DIR`.
    Local(PathBuf),
    /// `memory://`.
    Memory,
    /// `etcd://...` or `etcds://...`.
    Etcd(EtcdUri),
    /// `dlog://host:port`: the `host:port` of a `MetadataServer`.
    Remote(String),
}

/// Where a cluster's metadata is: `etcd[s]://host:port[,host:port...]/scope[?parameters]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUri {
    /// `host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// The key space this cluster owns in etcd (one name): keys live under `/<scope>/`.
    pub scope: String,
    /// TLS (`etcds://`): what to trust and what to present.
    pub tls: Option<EtcdTls>,
    /// etcd authentication (`user=`, `password_file=`).
    pub auth: Option<EtcdAuth>,
}

/// The files of an `etcds://` URI (PEM), read when connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// `ca=`: the CA certificates etcd's server certificate must chain to. The server
    /// certificate must name the endpoint's host in its subject alternative names (an IP SAN
    /// for an address such as `127.0.0.1`; the common name is not used).
    pub ca: PathBuf,
    /// `cert=` and `key=`: the client certificate chain and its private key, for an etcd run
    /// with `--client-cert-auth`.
    pub identity: Option<EtcdIdentity>,
}

/// A client certificate and its key (`cert=`, `key=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdIdentity {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// etcd's own authentication: a user and the file holding its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdAuth {
    /// `user=`: the etcd user.
    pub user: String,
    /// `password_file=`: a file holding the password (one trailing newline is ignored).
    pub password_file: PathBuf,
}

impl MetadataUri {
    /// Parses `uri`; `Invalid` saying what is wrong.
    pub fn parse(uri: &str) -> Result<MetadataUri, MetaError> {
        if let Some(path) = uri.strip_prefix("local://") {
            if path.is_empty() {
                return Err(MetaError::Invalid(format!("metadata URI {uri:?}: no directory after local://")));
            }
            return Ok(MetadataUri::Local(PathBuf::from(path)));
        }
        if uri == "memory://" {
            return Ok(MetadataUri::Memory);
        }
        if uri.starts_with("etcd://") || uri.starts_with("etcds://") {
            return Ok(MetadataUri::Etcd(EtcdUri::parse(uri)?));
        }
        if let Some(rest) = uri.strip_prefix("dlog://") {
            return MetadataUri::parse_remote(uri, rest);
        }
        Err(MetaError::Invalid(format!(
            "metadata URI {:?}: expected local:///path, memory://, etcd://host:port/scope, \
             etcds://host:port/scope?ca=FILE or dlog://host:port",
            redacted(uri)
        )))
    }

    /// `host:port` after `dlog://`: a name or address, and a port.
    fn parse_remote(uri: &str, rest: &str) -> Result<MetadataUri, MetaError> {
        let bad = |why: &str| {
            MetaError::Invalid(format!("metadata URI {uri:?}: {why} (expected dlog://host:port)"))
        };
        let addr = rest.strip_suffix('/').unwrap_or(rest);
        if addr.contains('/') {
            return Err(bad("a dlog:// URI has no path"));
        }
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no :port"))?;
        if port.parse::<u16>().is_err() {
            return Err(bad(&format!("bad port {port:?}")));
        }
        let name_ok = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            && !host.starts_with(['-', '.']);
        let v6_ok = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
        if !name_ok && !v6_ok {
            return Err(bad(&format!("bad host {host:?}")));
        }
        Ok(MetadataUri::Remote(addr.to_string()))
    }
}

impl EtcdUri {
    /// Parses `etcd[s]://host:port[,host:port...]/scope[?parameters]` (MU1-MU4; no file is read).
    pub fn parse(uri: &str) -> Result<EtcdUri, MetaError> {
        let bad = |why: &str| MetaError::Invalid(format!("metadata URI {:?}: {why}", redacted(uri)));
        let (secure, rest) = match (uri.strip_prefix("etcd://"), uri.strip_prefix("etcds://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(bad("expected etcd://host:port/scope or etcds://host:port/scope?ca=FILE")),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (hosts, scope) = rest.split_once('/').ok_or_else(|| bad("missing /scope after the endpoints"))?;
        let scope = scope.trim_end_matches('/');
        // One segment: a nested scope (`a/segments`) would live inside another cluster's keys.
        if scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(bad("scope must be one name of [A-Za-z0-9._-] (no '/')"));
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host.rsplit_once(':').ok_or_else(|| bad("endpoint without :port"))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad(&format!("bad endpoint {host:?}")));
            }
            endpoints.push(host.to_string());
        }
        let params = Params::parse(query).map_err(|why| bad(&why))?;
        let (tls, auth) = params.security(secure).map_err(|why| bad(&why))?;
        Ok(EtcdUri { endpoints, scope: scope.to_string(), tls, auth })
    }
}

/// `uri` with the value of any `password=` parameter hidden, to be shown in an error (MU3).
pub fn redacted(uri: &str) -> String {
    let Some((head, query)) = uri.split_once('?') else { return uri.to_string() };
    let pairs: Vec<&str> =
        query.split('&').map(|p| if p.starts_with("password=") { "password=<hidden>" } else { p }).collect();
    format!("{head}?{}", pairs.join("&"))
}

/// The parameters of an etcd URI, each at most once (MU1).
#[derive(Default)]
struct Params {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, String> {
        let mut params = Params::default();
        let Some(query) = query else { return Ok(params) };
        for pair in query.split('&') {
            let (name, value) =
                pair.split_once('=').ok_or_else(|| format!("parameter {pair:?} is not name=value"))?;
            if value.is_empty() {
                return Err(format!("parameter {name:?} has an empty value"));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("parameter {name:?} holds a control character"));
            }
            let slot_path = |slot: &mut Option<PathBuf>| {
                slot.replace(PathBuf::from(value))
                    .map_or(Ok(()), |_| Err(format!("parameter {name:?} given twice")))
            };
            match name {
                "ca" => slot_path(&mut params.ca)?,
                "cert" => slot_path(&mut params.cert)?,
                "key" => slot_path(&mut params.key)?,
                "password_file" => slot_path(&mut params.password_file)?,
                "user" => {
                    if params.user.replace(value.to_string()).is_some() {
                        return Err("parameter \"user\" given twice".into());
                    }
                }
                "password" => {
                    return Err("a password never goes in the URI: put it in a file and give \
                                password_file=FILE"
                        .into());
                }
                _ => {
                    return Err(format!(
                        "unknown parameter {name:?} (known: ca, cert, key, user, password_file)"
                    ));
                }
            }
        }
        Ok(params)
    }

    /// The TLS and authentication settings the parameters make (MU2, MU3).
    fn security(self, secure: bool) -> Result<(Option<EtcdTls>, Option<EtcdAuth>), String> {
        let identity = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some(EtcdIdentity { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err("cert= needs key= (the certificate's private key)".into()),
            (None, Some(_)) => return Err("key= needs cert= (the certificate of the key)".into()),
        };
        let tls = match (secure, self.ca) {
            (true, Some(ca)) => Some(EtcdTls { ca, identity }),
            (true, None) => {
                return Err(
                    "etcds:// needs ca=FILE (the CA certificates etcd's certificate chains to)".into()
                );
            }
            (false, ca) => {
                if ca.is_some() || identity.is_some() {
                    return Err("ca=, cert= and key= are TLS settings: use etcds://".into());
                }
                None
            }
        };
        let auth = match (self.user, self.password_file) {
            (Some(user), Some(password_file)) => Some(EtcdAuth { user, password_file }),
            (None, None) => None,
            (Some(_), None) => return Err("user= needs password_file= (a file holding the password)".into()),
            (None, Some(_)) => return Err("password_file= needs user=".into()),
        };
        Ok((tls, auth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_or_say_why_not() {
        let u = EtcdUri::parse("etcd://127.0.0.1:2379,localhost:2380/dlog-prod").unwrap();
        assert_eq!(u.endpoints, vec!["127.0.0.1:2379", "localhost:2380"]);
        assert_eq!(u.scope, "dlog-prod");
        for bad in
            ["etcd://h:1", "etcd://h:1/", "etcd://h/x", "etcd://h:x/x", "http://h:1/x", "etcd://h:1/a/b"]
        {
            assert!(matches!(EtcdUri::parse(bad), Err(MetaError::Invalid(_))), "{bad}");
        }
        assert_eq!(MetadataUri::parse("local://rel").unwrap(), MetadataUri::Local("rel".into()));
        assert_eq!(MetadataUri::parse("memory://").unwrap(), MetadataUri::Memory);
        assert!(matches!(MetadataUri::parse("etcd://h:1/s").unwrap(), MetadataUri::Etcd(_)));
        for bad in ["", "local://", "memory://x", "zk://h:1/a", "etcd://h:1"] {
            assert!(matches!(MetadataUri::parse(bad), Err(MetaError::Invalid(_))), "{bad}");
        }
        for (uri, addr) in [
            ("dlog://127.0.0.1:7480", "127.0.0.1:7480"),
            ("dlog://localhost:1/", "localhost:1"),
            ("dlog://[::1]:7480", "[::1]:7480"),
            ("dlog://meta-1.example.com:7480", "meta-1.example.com:7480"),
        ] {
            assert_eq!(MetadataUri::parse(uri).unwrap(), MetadataUri::Remote(addr.into()), "{uri}");
        }
        for bad in [
            "dlog://",
            "dlog://h",
            "dlog://h:",
            "dlog://h:99999",
            "dlog://:1",
            "dlog://h:1/x",
            "dlog://h h:1",
            "dlog://::1:7480",
            "dlog://[zz]:1",
        ] {
            assert!(matches!(MetadataUri::parse(bad), Err(MetaError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn etcd_security_parameters_parse() {
        let u = EtcdUri::parse("etcd://h:1/s/").unwrap();
        assert_eq!((u.tls, u.auth), (None, None));
        let u = EtcdUri::parse("etcds://h:1,g:2/s?ca=/c/ca.pem").unwrap();
        assert_eq!(u.endpoints, vec!["h:1", "g:2"]);
        assert_eq!(u.tls, Some(EtcdTls { ca: "/c/ca.pem".into(), identity: None }));
        let u = EtcdUri::parse("etcds://h:1/s/?key=k.pem&ca=ca.pem&cert=/c/c.pem&user=u&password_file=/p")
            .unwrap();
        assert_eq!(u.scope, "s");
        let identity = EtcdIdentity { cert: "/c/c.pem".into(), key: "k.pem".into() };
        assert_eq!(u.tls, Some(EtcdTls { ca: "ca.pem".into(), identity: Some(identity) }));
        assert_eq!(u.auth, Some(EtcdAuth { user: "u".into(), password_file: "/p".into() }));
        // Authentication without TLS is etcd's choice to allow (the password crosses in clear).
        let u = EtcdUri::parse("etcd://h:1/s?user=root&password_file=p").unwrap();
        assert_eq!((u.tls, u.auth.map(|a| a.user)), (None, Some("root".into())));
        assert!(matches!(MetadataUri::parse("etcds://h:1/s?ca=c").unwrap(), MetadataUri::Etcd(_)));
    }

    #[test]
    fn bad_etcd_parameters_say_what_is_wrong() {
        for (uri, why) in [
            ("etcds://h:1/s", "needs ca=FILE"),
            ("etcds://h:1/s?", "is not name=value"),
            ("etcds://h:1/s?ca", "is not name=value"),
            ("etcds://h:1/s?ca=", "empty value"),
            ("etcds://h:1/s?ca=a&&cert=b", "is not name=value"),
            ("etcds://h:1/s?ca=a&ca=b", "\"ca\" given twice"),
            ("etcds://h:1/s?ca=a&user=u&user=v&password_file=p", "\"user\" given twice"),
            ("etcds://h:1/s?ca=a&cafile=b", "unknown parameter \"cafile\""),
            ("etcds://h:1/s?ca=a&cert=c", "cert= needs key="),
            ("etcds://h:1/s?ca=a&key=k", "key= needs cert="),
            ("etcd://h:1/s?ca=a", "use etcds://"),
            ("etcd://h:1/s?cert=c&key=k", "use etcds://"),
            ("etcd://h:1/s?user=u", "user= needs password_file="),
            ("etcd://h:1/s?password_file=p", "password_file= needs user="),
            ("etcd://h:1/s?user=u&password=secret", "never goes in the URI"),
            ("etcds://h:1/s?ca=a\tb", "control character"),
            ("etcds://h:1?ca=a", "missing /scope"),
            ("etcds://h:1/a/b?ca=a", "scope must be one name"),
            ("etcds://h/s?ca=a", "endpoint without :port"),
        ] {
            match EtcdUri::parse(uri) {
                Err(MetaError::Invalid(m)) => assert!(m.contains(why), "{uri}: {m}"),
                other => panic!("{uri}: {other:?}"),
            }
            assert!(matches!(MetadataUri::parse(uri), Err(MetaError::Invalid(_))), "{uri}");
        }
        // A password put in the URI by mistake is not repeated in the error.
        let e = EtcdUri::parse("etcd://h:1/s?user=u&password=hunter2").unwrap_err().to_string();
        assert!(e.contains("password_file") && !e.contains("hunter2"), "{e}");
    }
}
