//! `EtcdServer`: a real single-member etcd started for tests and benchmarks: free 127.0.0.1
//! ports, a temporary data directory (`start`) or one under a directory the caller owns
//! (`start_in`, e.g. on the disk a benchmark measures), stopped (killed and reaped) when dropped.
//!
//! The binary is `$DLOG_ETCD_BIN` or `etcd` on the PATH (Debian's `etcd-server`). When it is
//! missing `start` fails with a message saying how to install it: tests fail, they never skip.
//! `restart` keeps the data directory and the ports, so clients reconnect to the same place.
//! `EtcdCluster` runs several members the same way, for failover tests.
//!
//! `start_secure` serves clients over TLS (`https` client URLs, `--cert-file`, `--key-file`;
//! with a client identity also `--client-cert-auth --trusted-ca-file`) and/or with etcd's
//! authentication on (a `root` user with the `root` role, then `auth enable`, done through
//! the etcd API as root, before `start_secure` returns). Its health is then read on a plain
//! `--listen-metrics-urls` port, and `uri` names everything a privileged client needs
//! (`etcds://...?ca=...&cert=...&key=...&user=root&password_file=...`). The certificate files
//! are the caller's (tests make them with rcgen); the server certificate must name 127.0.0.1
//! in an IP subject alternative name.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::metadata_uri::{EtcdAuth, EtcdTls, EtcdUri};

/// How long etcd may take to answer `/health` after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How a test etcd serves its clients (see the module doc); the default is plain, no
/// authentication.
#[derive(Clone, Debug, Default)]
pub struct EtcdSecurity {
    /// Serve clients over TLS.
    pub tls: Option<ServerTls>,
    /// Turn etcd's authentication on, with user `root` whose password is in this file.
    pub root_password_file: Option<PathBuf>,
}

/// The TLS files of a test etcd (PEM).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// `--cert-file`: the server's certificate (an IP SAN 127.0.0.1).
    pub cert: PathBuf,
    /// `--key-file`: its private key.
    pub key: PathBuf,
    /// What the harness and `uri` use as a client: `ca` is the CA the server certificate
    /// chains to; with an `identity`, etcd runs with `--client-cert-auth` and that same CA as
    /// `--trusted-ca-file` (so client certificates must chain to it too), and the identity is
    /// the harness's own client certificate.
    pub client: EtcdTls,
}

/// A running etcd member (see the module doc).
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    security: EtcdSecurity,
    /// The plain HTTP port `/health` is read on when clients are served over TLS.
    metrics_port: Option<u16>,
    /// The member's name, and `--initial-cluster` (every member's `name=peer-url`).
    name: String,
    cluster: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    /// Holds the data directory when the server made it itself.
    _temp: Option<tempfile::TempDir>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[expect(clippy::disallowed_methods, reason = "a test harness waits for a real process in real time")]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[expect(clippy::disallowed_methods, reason = "a test harness waits for a real process in real time")]
fn now() -> Instant {
    Instant::now()
}

impl EtcdServer {
    /// Starts etcd on free ports with a fresh temporary data directory (in `$TMPDIR`), removed
    /// when dropped.
    pub fn start() -> Result<EtcdServer, String> {
        let temp = tempfile::tempdir().map_err(|e| format!("etcd data dir: {e}"))?;
        let mut server = EtcdServer::start_in(temp.path())?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// Starts etcd on free ports with its data in `dir/etcd` and its log in `dir/etcd.log`.
    /// `dir` must exist and is the caller's: nothing in it is removed when the server drops, and
    /// the caller must not remove it before (a failed start removes its own `dir/etcd`). `dir/etcd`
    /// should not hold an earlier member's data.
    pub fn start_in(dir: &Path) -> Result<EtcdServer, String> {
        EtcdServer::start_in_with(dir, EtcdSecurity::default())
    }

    /// `start` with TLS and/or authentication (see the module doc).
    pub fn start_secure(security: EtcdSecurity) -> Result<EtcdServer, String> {
        let temp = tempfile::tempdir().map_err(|e| format!("etcd data dir: {e}"))?;
        let mut server = EtcdServer::start_in_with(temp.path(), security)?;
        server._temp = Some(temp);
        Ok(server)
    }

    fn start_in_with(dir: &Path, security: EtcdSecurity) -> Result<EtcdServer, String> {
        let mut last = String::new();
        // A port found free may be taken before etcd binds it: try a few pairs.
        for _ in 0..3 {
            let (client_port, peer_port) =
                (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
            let data = dir.join("etcd");
            let name = "dlog-test".to_string();
            let cluster = format!("{name}=http://127.0.0.1:{peer_port}");
            let metrics_port = match security.tls {
                Some(_) => Some(free_port().map_err(|e| e.to_string())?),
                None => None,
            };
            let mut server = EtcdServer {
                child: None,
                security: security.clone(),
                metrics_port,
                name,
                cluster,
                client_port,
                peer_port,
                data,
                _temp: None,
            };
            match server.launch().and_then(|()| server.enable_auth()) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last = e;
                    server.kill();
                    let _ = std::fs::remove_dir_all(&server.data);
                }
            }
        }
        Err(last)
    }

    /// The binary run.
    pub fn binary() -> String {
        std::env::var("DLOG_ETCD_BIN").unwrap_or_else(|_| "etcd".into())
    }

    fn launch(&mut self) -> Result<(), String> {
        self.spawn()?;
        self.wait_healthy()
    }

    /// Starts the process (a member of a cluster is healthy only once a quorum runs).
    fn spawn(&mut self) -> Result<(), String> {
        let scheme = if self.security.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(tls) = &self.security.tls {
            tls_args.extend(["--cert-file".into(), tls.cert.clone().into()]);
            tls_args.extend(["--key-file".into(), tls.key.clone().into()]);
            if tls.client.identity.is_some() {
                tls_args.extend(["--client-cert-auth".into(), "--trusted-ca-file".into()]);
                tls_args.push(tls.client.ca.clone().into());
            }
        }
        if let Some(port) = self.metrics_port {
            tls_args.extend(["--listen-metrics-urls".into(), format!("http://127.0.0.1:{port}").into()]);
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("etcd log: {e}"))?;
        let child = Command::new(EtcdServer::binary())
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            // Quiet watches learn the store's progress every second (etcd_store.rs ES2).
            .args(["--experimental-watch-progress-notify-interval", "1s"])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {:?} ({e}); install etcd (Debian: apt-get install etcd-server) \
                     or set DLOG_ETCD_BIN",
                    EtcdServer::binary()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("etcd exited at start ({status}); log: {}", self.log_tail()));
            }
            if self.healthy() {
                return Ok(());
            }
            if now() > deadline {
                return Err(format!("etcd not healthy after {START_TIMEOUT:?}; log: {}", self.log_tail()));
            }
            pause(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    }

    /// etcd answers `/health` with `"health":"true"` (on the metrics port under TLS).
    fn healthy(&self) -> bool {
        let port = self.metrics_port.unwrap_or(self.client_port);
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// The `host:port` clients connect to.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A metadata URI for this server with key scope `scope`: `etcd://` or, under TLS,
    /// `etcds://` with the harness's CA and client identity, and `root`'s credentials when
    /// authentication is on.
    pub fn uri(&self, scope: &str) -> String {
        let mut params = Vec::new();
        if let Some(tls) = &self.security.tls {
            params.push(format!("ca={}", tls.client.ca.display()));
            if let Some(identity) = &tls.client.identity {
                params.push(format!("cert={}", identity.cert.display()));
                params.push(format!("key={}", identity.key.display()));
            }
        }
        if let Some(file) = &self.security.root_password_file {
            params.push(format!("user=root&password_file={}", file.display()));
        }
        let scheme = if self.security.tls.is_some() { "etcds" } else { "etcd" };
        let query = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
        format!("{scheme}://{}/{scope}{query}", self.endpoint())
    }

    /// Creates user `root` with the `root` role and turns authentication on, when asked to
    /// (etcd 3.4 refuses `auth enable` without a root user holding the root role). Runs the
    /// etcd client on a thread of its own, so it works from inside a runtime too.
    fn enable_auth(&self) -> Result<(), String> {
        let Some(password_file) = self.security.root_password_file.clone() else { return Ok(()) };
        let uri = EtcdUri {
            endpoints: vec![self.endpoint()],
            scope: "setup".into(),
            tls: self.security.tls.as_ref().map(|t| t.client.clone()),
            auth: None,
        };
        let root = EtcdAuth { user: "root".into(), password_file };
        let password = crate::etcd_store::read_password(&root).map_err(|e| e.to_string())?;
        let setup = move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("etcd auth setup: runtime: {e}"))?;
            runtime.block_on(async {
                let mut client = crate::etcd_store::connect_client(&uri)
                    .await
                    .map_err(|e| format!("etcd auth setup: {e}"))?;
                let step =
                    |what: &'static str| move |e: etcd_client::Error| format!("etcd auth setup: {what}: {e}");
                client.user_add("root", password, None).await.map_err(step("user add root"))?;
                client.user_grant_role("root", "root").await.map_err(step("grant role root"))?;
                client.auth_enable().await.map_err(step("auth enable"))?;
                Ok(())
            })
        };
        std::thread::spawn(setup).join().map_err(|_| "etcd auth setup panicked".to_string())?
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The process id of the running etcd (for tests that pause it with SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills etcd (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd and starts it again on the same data and ports.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.launch()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real etcd cluster of several members on 127.0.0.1 (temporary data), for failover tests:
/// members are killed and restarted one by one; the others keep their quorum.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
    _temp: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each is healthy (they elect a leader first).
    pub fn start(n: usize) -> Result<EtcdCluster, String> {
        let temp = tempfile::tempdir().map_err(|e| format!("etcd data dir: {e}"))?;
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            ports.push((free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?));
        }
        let cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
        let cluster = cluster.join(",");
        let mut members = Vec::with_capacity(n);
        for (i, (client_port, peer_port)) in ports.into_iter().enumerate() {
            let data = temp.path().join(format!("m{i}"));
            let name = format!("m{i}");
            let mut member = EtcdServer {
                child: None,
                security: EtcdSecurity::default(),
                metrics_port: None,
                name,
                cluster: cluster.clone(),
                client_port,
                peer_port,
                data,
                _temp: None,
            };
            member.spawn()?;
            members.push(member);
        }
        for m in &mut members {
            m.wait_healthy()?;
        }
        Ok(EtcdCluster { members, _temp: temp })
    }

    /// A metadata URI naming every member, with key scope `scope`.
    pub fn uri(&self, scope: &str) -> String {
        let endpoints: Vec<String> = self.members.iter().map(EtcdServer::endpoint).collect();
        format!("etcd://{}/{scope}", endpoints.join(","))
    }

    /// Member `i`.
    pub fn member(&mut self, i: usize) -> &mut EtcdServer {
        &mut self.members[i]
    }

    /// Starts member `i` again after a `kill` and, unlike `EtcdServer::restart`, does not wait
    /// for its health (it rejoins the others in the background).
    pub fn rejoin(&mut self, i: usize) -> Result<(), String> {
        self.members[i].kill();
        self.members[i].spawn()
    }
}
