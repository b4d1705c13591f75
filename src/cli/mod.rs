//! The log commands of the `dlog` binary: `dlog write` (stdin lines to a log, write.rs) and
//! `dlog read` (a log's records to stdout, read.rs), and what they and the changing `dlog admin`
//! commands share: the `--metadata` flag, `NAMESPACE/LOG` names, opening the namespace, and
//! the runtime they run on.
//!
//! Every command finds the cluster with `--metadata URI` (or `DLOG_METADATA`), by default the
//! metadata a running `dlog local` serves (`DEFAULT_METADATA_URI`), and secures its
//! connections to bookies as the environment says (`ClientSecurity::from_env`: `DLOG_TLS_*`,
//! `DLOG_AUTH_TOKEN[_FILE]`; default plaintext). Errors are returned to main.rs, which prints
//! them on one line and exits non-zero.

pub mod read;
pub mod write;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlog_metadata::metadata_uri::redacted;

use crate::log::namespace::split_namespace;
use crate::log::{Namespace, NamespaceConfig};

pub use crate::local_cluster::DEFAULT_METADATA_URI;
pub use read::ReadArgs;
pub use write::WriteArgs;

/// What `--metadata` says, for `--help`.
pub const METADATA_HELP: &str = "The cluster: dlog://host:port (the metadata a running `dlog local` serves), \
                                 local:///DIR (a cluster run in this process on DIR, one process at a time) or \
                                 etcd[s]://host:port/scope[?PARAMETERS] (docs/metadata.md); the parameter \
                                 `namespace=NAME` picks the namespace (default `default`)";

/// How long the runtime's background work may take to stop once a command is done.
const RUNTIME_STOP: Duration = Duration::from_secs(2);

/// A log as the commands name it: `LOG` (in the URI's namespace) or `NAMESPACE/LOG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogName {
    /// The namespace, when the name gave one.
    pub namespace: Option<String>,
    /// The log.
    pub log: String,
}

impl std::str::FromStr for LogName {
    type Err = String;

    fn from_str(text: &str) -> Result<LogName, String> {
        let (namespace, log) = match text.split_once('/') {
            Some((ns, log)) => (Some(ns.to_owned()), log.to_owned()),
            None => (None, text.to_owned()),
        };
        if log.is_empty() || log.contains('/') || namespace.as_deref().is_some_and(str::is_empty) {
            return Err(format!("log {text:?}: expected LOG or NAMESPACE/LOG"));
        }
        Ok(LogName { namespace, log })
    }
}

/// The namespace URI for `log` under `metadata`: the name's namespace goes into the URI as its
/// `namespace=` parameter (after the store's own parameters, e.g. an `etcds://` URI's files);
/// one that disagrees with a `namespace=` already there is refused.
pub fn namespace_uri(metadata: &str, log: &LogName) -> Result<String> {
    let Some(ns) = &log.namespace else { return Ok(metadata.to_owned()) };
    match split_namespace(metadata)? {
        (_, Some(given)) if &given == ns => Ok(metadata.to_owned()),
        (_, Some(given)) => {
            bail!("log {ns}/{}: the namespace disagrees with the metadata URI's namespace={given}", log.log)
        }
        (_, None) if metadata.contains('?') => Ok(format!("{metadata}&namespace={ns}")),
        (_, None) => Ok(format!("{metadata}?namespace={ns}")),
    }
}

/// The full name of `log` in the namespace `ns`, for messages.
pub fn full_name(ns: &Namespace, log: &LogName) -> String {
    format!("{}/{}", ns.name(), log.log)
}

/// Opens the namespace of `log` under `metadata`.
pub async fn open(metadata: &str, log: &LogName) -> Result<Namespace> {
    let uri = namespace_uri(metadata, log)?;
    Namespace::open_with(&uri, namespace_config()?)
        .await
        .with_context(|| format!("opening {}", redacted(&uri)))
}

/// The namespace settings of a command: the defaults, with the environment's TLS and token.
pub fn namespace_config() -> Result<NamespaceConfig> {
    let mut config = NamespaceConfig::default();
    config.replication.transport.security = dlog_replication::transport::ClientSecurity::from_env()
        .context("client security from the environment")?;
    Ok(config)
}

/// Runs `command` on a multi-thread runtime of its own (the namespace's background work needs
/// one), then stops the runtime without waiting long for what is left in it.
pub fn block_on<T>(command: impl Future<Output = Result<T>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dlog-cli")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(command);
    runtime.shutdown_timeout(RUNTIME_STOP);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_and_their_namespaces_go_into_the_uri() {
        let plain: LogName = "events".parse().unwrap();
        assert_eq!(plain, LogName { namespace: None, log: "events".into() });
        assert_eq!(namespace_uri("dlog://h:1", &plain).unwrap(), "dlog://h:1");
        let nested: LogName = "ns/events".parse().unwrap();
        assert_eq!(namespace_uri("dlog://h:1", &nested).unwrap(), "dlog://h:1?namespace=ns");
        assert_eq!(namespace_uri("dlog://h:1?namespace=ns", &nested).unwrap(), "dlog://h:1?namespace=ns");
        assert!(namespace_uri("dlog://h:1?namespace=other", &nested).is_err());
        // The store's own parameters stay, before or after the namespace.
        let etcds = "etcds://h:1/s?ca=/c.pem&user=u&password_file=/p";
        assert_eq!(namespace_uri(etcds, &nested).unwrap(), format!("{etcds}&namespace=ns"));
        assert_eq!(
            namespace_uri(&format!("{etcds}&namespace=ns"), &nested).unwrap(),
            format!("{etcds}&namespace=ns")
        );
        assert!(namespace_uri(&format!("{etcds}&namespace=other"), &nested).is_err());
        assert!(namespace_uri("etcd://h:1/s?namespace=a&namespace=ns", &nested).is_err());
        assert_eq!(namespace_uri(etcds, &plain).unwrap(), etcds);
        for bad in ["", "/x", "ns/", "a/b/c"] {
            assert!(bad.parse::<LogName>().is_err(), "{bad}");
        }
    }
}
