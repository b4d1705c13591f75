//! `MetadataUri`: the metadata store a URI names, parsed without opening it, in every build
//! (with or without the `etcd` feature): the one parser behind `AnyStore::open`,
//! `EtcdStore::connect` and the checks of configuration files.
//!
//! URIs:
//! - `local:///abs/path` or `local://rel/path`: the embedded store in that directory;
//! - `memory://`: the embedded store in memory;
//! - `etcd://host:port[,host:port...]/scope`: etcd, keys under `/<scope>/`; the scope is one
//!   name of `[A-Za-z0-9._-]` (a nested scope would live inside another cluster's keys);
//! - `dlog://host:port` (a trailing `/` is ignored; no path): the store a `MetadataServer`
//!   serves there (`dlog local` serves its embedded store so, e.g. `dlog://127.0.0.1:7480`),
//!   reached through `RemoteStore`. `host` is a name, an IPv4 address or `[IPv6]`.

use std::path::PathBuf;

use crate::error::MetaError;

/// A parsed metadata URI (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataUri {
    /// `local://DIR`.
    Local(PathBuf),
    /// `memory://`.
    Memory,
    /// `etcd://...`.
    Etcd(EtcdUri),
    /// `dlog://host:port`: the `host:port` of a `MetadataServer`.
    Remote(String),
}

/// Where a cluster's metadata is: `etcd://host:port[,host:port...]/scope`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUri {
    /// `host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// The key space this cluster owns in etcd (one name): keys live under `/<scope>/`.
    pub scope: String,
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
        if uri.starts_with("etcd://") {
            return Ok(MetadataUri::Etcd(EtcdUri::parse(uri)?));
        }
        if let Some(rest) = uri.strip_prefix("dlog://") {
            return MetadataUri::parse_remote(uri, rest);
        }
        Err(MetaError::Invalid(format!(
            "metadata URI {uri:?}: expected local:///path, memory://, etcd://host:port/scope or dlog://host:port"
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
    /// Parses `etcd://host:port[,host:port...]/scope`.
    pub fn parse(uri: &str) -> Result<EtcdUri, MetaError> {
        let bad = |why: &str| MetaError::Invalid(format!("metadata URI {uri:?}: {why}"));
        let rest = uri.strip_prefix("etcd://").ok_or_else(|| bad("expected etcd://host:port/scope"))?;
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
        Ok(EtcdUri { endpoints, scope: scope.to_string() })
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
}
