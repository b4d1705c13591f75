//! `EtcdServer`: a real single-member etcd started for tests and benchmarks: free 127.0.0.1
//! ports, a temporary data directory (`start`) or one under a directory the caller owns
//! (`start_in`, e.g. on the disk a benchmark measures), stopped (killed and reaped) when dropped.
//!
//! The binary is `$DLOG_ETCD_BIN` or `etcd` on the PATH (Debian's `etcd-server`). When it is
//! missing `start` fails with a message saying how to install it: tests fail, they never skip.
//! `restart` keeps the data directory and the ports, so clients reconnect to the same place.
//! `EtcdCluster` runs several members the same way, for failover tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd member (see the module doc).
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
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
        let mut last = String::new();
        // A port found free may be taken before etcd binds it: try a few pairs.
        for _ in 0..3 {
            let (client_port, peer_port) =
                (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
            let data = dir.join("etcd");
            let name = "dlog-test".to_string();
            let cluster = format!("{name}=http://127.0.0.1:{peer_port}");
            let mut server =
                EtcdServer { child: None, name, cluster, client_port, peer_port, data, _temp: None };
            match server.launch() {
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
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {:?} ({e}); install etcd (Debian: apt-get install etcd-server) or set DLOG_ETCD_BIN",
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

    /// etcd answers `/health` with `"health":"true"`.
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else { return false };
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

    /// A metadata URI for this server with key scope `scope`.
    pub fn uri(&self, scope: &str) -> String {
        format!("etcd://{}/{scope}", self.endpoint())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
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
