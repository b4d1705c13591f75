//! `MetadataUri`: the metadata store a URI names, parsed without opening it, in every build
//! (with or without the `etcd` feature): the one parser behind `AnyStore::open`,
//! `EtcdStore::connect` and the checks of configuration files.
//!
//! URIs:
//! - `local:///abs/path` or `local://rel/path`: the embedded store in that directory;
//! - `memory://`: the embedded store in memory;
//! - `etcd://host:port[,host:port...]/scope`: etcd, keys under `/<scope>/`; the scope is one
//!   name of `[A-Za-z0-9._-]` (a nested scope would live inside another cluster's keys).

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
        Err(MetaError::Invalid(format!(
            "metadata URI {uri:?}: expected local:///path, memory:// or etcd://host:port/scope"
        )))
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
    }
}
