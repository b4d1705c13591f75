//! The real `dlog bookie` process (the binary cargo built for these tests), driven from outside
//! as an operator and a client would: TCP ADDs and READs through the client transport, a
//! SIGKILL with ADDs in flight and a restart that reads back every acknowledged entry
//! byte for byte, registration that follows the process (a killed one's is waited out, a
//! SIGTERMed one's is removed at once) on the embedded store and, with the `etcd` feature, on a
//! real etcd, the Prometheus endpoint, and refusals of bad flags and config files.
//!
//! Every wait has a deadline; every child process is killed and reaped by a guard when a test
//! ends, failing or not. Registration leases are short (`[registration] lease_ttl_ms`), so a
//! restart after a SIGKILL waits a second, not twenty.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use bytes::Bytes;
use dlog_protocol::{Request, Response};
use dlog_replication::transport::{ClientConfig, ClientPool, Completion};

#[path = "support/process.rs"]
mod process;

use process::{Running, free_port, now, pause};

/// Longest a bookie may take to print its `serving` line (a restart waits out its previous
/// incarnation's lease first), a command to finish, or a condition to come true.
const WAIT: Duration = Duration::from_secs(20);
/// Longest a SIGTERMed bookie may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// The bookie id every test registers (fixed, so a restart on other ports is the same bookie).
const ID: &str = "bookie-1";
/// Registration lease ttl on the embedded store.
const LOCAL_TTL_MS: u64 = 1000;

fn dlog() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command.env("RUST_LOG", "info").stdin(Stdio::null());
    command
}

/// `command` run to its end within `WAIT` (killed and failed past it); its output.
fn run(command: Command) -> Output {
    process::run(command, WAIT)
}

/// A bookie's data directory: journal, metadata (when local) and a config file.
struct Disk {
    dir: tempfile::TempDir,
    metadata: String,
}

impl Disk {
    fn local() -> Disk {
        let dir = tempfile::tempdir().unwrap();
        let metadata = format!("local://{}", dir.path().join("metadata").display());
        Disk { dir, metadata }
    }

    #[cfg(feature = "etcd")]
    fn on(metadata: String) -> Disk {
        Disk { dir: tempfile::tempdir().unwrap(), metadata }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config file every bookie here starts with: the short lease, a small write cache
    /// (so a few MiB of ADDs reach the entry logs) and free-space thresholds a busy test
    /// machine's disk passes.
    fn config(&self, ttl_ms: u64) -> PathBuf {
        let path = self.path().join("bookie.toml");
        let text = format!(
            "[engine]\nwrite_cache_bytes_max = {}\ndisk_free_bytes_min = {}\ndisk_free_bytes_resume = {}\n\n\
             [registration]\nlease_ttl_ms = {ttl_ms}\n",
            4 << 20,
            64 << 20,
            128 << 20
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A running `dlog bookie`.
struct Bookie {
    process: Running,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Bookie {
    /// Starts a bookie on `disk` (2 shards, fresh ports) and waits for its `serving` line.
    fn start(disk: &Disk, ttl_ms: u64) -> Bookie {
        for attempt in 0.. {
            let bookie = Bookie::launch(disk, ttl_ms);
            match bookie.serving() {
                Ok(line) => {
                    assert!(line.starts_with(&format!("bookie {ID} serving on {} ", bookie.addr)), "{line}");
                    return bookie;
                }
                // Another process took a port between `free_port` and the bind.
                Err(_) if attempt < 3 && bookie.log().contains("in use") => continue,
                Err(why) => panic!("dlog bookie: {why}; its log:\n{}", bookie.log()),
            }
        }
        unreachable!()
    }

    /// Spawns a bookie on `disk` (2 shards, fresh ports), without waiting for anything.
    fn launch(disk: &Disk, ttl_ms: u64) -> Bookie {
        let config = disk.config(ttl_ms);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stderr = disk.path().join(format!("bookie-{addr}.log"));
        let mut command = dlog();
        command
            .arg("bookie")
            .arg("--config")
            .arg(&config)
            .arg("--journal-dir")
            .arg(disk.path().join("journal"))
            .args(["--listen", &addr.to_string(), "--metadata", &disk.metadata, "--shards", "2"])
            .args(["--metrics-listen", &metrics.to_string(), "--bookie-id", ID]);
        Bookie { process: Running::spawn(command, Stdio::null(), stderr), addr, metrics }
    }

    /// Waits up to `WAIT` for the `serving` line; why not, if it did not come.
    fn serving(&self) -> Result<String, String> {
        self.process.line_with(" serving on ", now() + WAIT).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!("no serving line within {WAIT:?}"),
            RecvTimeoutError::Disconnected => "exited before serving".into(),
        })
    }

    /// Waits up to `WAIT` for `text` in its log.
    fn wait_log(&self, text: &str) {
        let deadline = now() + WAIT;
        while !self.log().contains(text) {
            assert!(now() < deadline, "no {text:?} in the log within {WAIT:?}:\n{}", self.log());
            pause(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL, and reap.
    fn kill(self) {
        self.process.kill();
    }

    /// SIGTERM; the exit status within `EXIT_WAIT`, and how long it took.
    fn terminate(mut self) -> (ExitStatus, Duration) {
        self.process.terminate(EXIT_WAIT)
    }
}

fn pool() -> ClientPool {
    ClientPool::new(ClientConfig::default()).unwrap()
}

const KEY: &[u8] = b"process-test-key";

/// Entry `(segment, entry)`'s payload: 100 B to about 20 KiB of bytes derived from both.
fn payload(segment: u64, entry: u64) -> Bytes {
    let len = 100 + ((segment * 7919 + entry * 104_729) % 20_000) as usize;
    let mut x = segment.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ entry.wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn add(pool: &ClientPool, addr: SocketAddr, segment: u64, entry: u64) -> Completion {
    let request = Request::Add {
        segment,
        entry,
        last_add_confirmed: entry.checked_sub(1),
        master_key: Bytes::from_static(KEY),
        payload: payload(segment, entry),
        recovery: false,
    };
    pool.submit(addr, request)
}

/// Whether an ADD's completion says the entry is durable on the bookie.
fn acknowledged(segment: u64, entry: u64, completion: Completion) -> bool {
    match completion.wait_timeout(WAIT) {
        Ok(Response::Add { segment: s, entry: e }) => {
            assert_eq!((s, e), (segment, entry), "an ADD answered for another entry");
            true
        }
        Ok(other) => panic!("ADD {segment}/{entry} refused: {other:?}"),
        Err(_) => false, // lost with the connection: maybe durable, never acknowledged
    }
}

/// Reads `(segment, entry)` back; its payload.
fn read(pool: &ClientPool, addr: SocketAddr, segment: u64, entry: u64) -> Completion {
    pool.submit(addr, Request::Read { segment, entry, fence: None })
}

fn check_read(segment: u64, entry: u64, completion: Completion) {
    match completion.wait_timeout(WAIT) {
        Ok(Response::Read { segment: s, entry: e, payload: got }) => {
            assert_eq!((s, e), (segment, entry));
            assert!(got == payload(segment, entry), "{segment}/{entry}: payload differs ({} B)", got.len());
        }
        other => panic!("READ {segment}/{entry}: {other:?}"),
    }
}

/// ADDs in flight when a bookie is stopped.
const WINDOW: usize = 512;

/// Keeps `WINDOW` ADDs in flight over `segments` (entries from 0) until `before` of them are
/// acknowledged, then `stop`s the bookie with the window in flight and collects the window's
/// answers. Pushes every acknowledged entry onto `acked`; the number not acknowledged.
fn load_then_stop(
    bookie: Bookie,
    segments: std::ops::RangeInclusive<u64>,
    before: usize,
    acked: &mut Vec<(u64, u64)>,
    stop: impl FnOnce(Bookie),
) -> usize {
    let client = pool();
    let addr = bookie.addr;
    let mut next = (0..).flat_map(|e| segments.clone().map(move |s| (s, e)));
    let mut window = std::collections::VecDeque::new();
    let (mut bookie, mut stop, mut done, mut lost) = (Some(bookie), Some(stop), 0, 0);
    loop {
        while bookie.is_some() && window.len() < WINDOW {
            let (s, e) = next.next().unwrap();
            window.push_back(((s, e), add(&client, addr, s, e)));
        }
        let Some(((s, e), completion)) = window.pop_front() else { break };
        if acknowledged(s, e, completion) {
            acked.push((s, e));
            done += 1;
        } else {
            let log = bookie.as_ref().map(Bookie::log);
            assert!(log.is_none(), "ADD {s}/{e} failed before the bookie was stopped; log:\n{log:?}");
            lost += 1;
        }
        if done == before
            && let (Some(bookie), Some(stop)) = (bookie.take(), stop.take())
        {
            stop(bookie);
        }
    }
    client.close();
    lost
}

/// Restarts a bookie on `disk` and reads every entry of `acked` back, byte for byte.
fn restart_and_read_back(disk: &Disk, acked: &[(u64, u64)]) -> Bookie {
    let bookie = Bookie::start(disk, LOCAL_TTL_MS);
    let client = pool();
    let completions: Vec<_> = acked.iter().map(|&(s, e)| read(&client, bookie.addr, s, e)).collect();
    for (&(s, e), completion) in acked.iter().zip(completions) {
        check_read(s, e, completion);
    }
    client.close();
    bookie
}

#[test]
fn every_acknowledged_entry_survives_sigkill_and_sigterm_with_adds_in_flight() {
    let disk = Disk::local();
    let bookie = Bookie::start(&disk, LOCAL_TTL_MS);
    let client = pool();
    let mut acked = Vec::new();

    // 400 ADDs over 4 segments, all in flight at once, all acknowledged (about 4 MiB: the
    // write cache of 4 MiB per shard flushes some into entry logs).
    let first: Vec<_> = (0..100).flat_map(|e| (1..=4).map(move |s| (s, e))).collect();
    let completions: Vec<_> = first.iter().map(|&(s, e)| add(&client, bookie.addr, s, e)).collect();
    for (&(s, e), completion) in first.iter().zip(completions) {
        assert!(acknowledged(s, e, completion), "ADD {s}/{e} failed; log:\n{}", bookie.log());
        acked.push((s, e));
    }
    check_read(2, 57, read(&client, bookie.addr, 2, 57));
    client.close();

    // SIGKILL with ADDs in flight; after a restart (which waits out the killed process's
    // lease), every acknowledged entry reads back.
    let lost = load_then_stop(bookie, 5..=8, 400, &mut acked, Bookie::kill);
    eprintln!("SIGKILL: {lost} of the {WINDOW} ADDs in flight not acknowledged");
    let bookie = restart_and_read_back(&disk, &acked);

    // SIGTERM with ADDs in flight: the bookie answers what it read and exits 0; after a
    // restart every acknowledged entry, all of them now, reads back.
    let lost = load_then_stop(bookie, 9..=12, 400, &mut acked, |bookie| {
        let (status, took) = bookie.terminate();
        assert!(status.success(), "SIGTERM with ADDs in flight: {status:?}");
        eprintln!("SIGTERM: exited after {took:?}");
    });
    eprintln!("SIGTERM: {lost} of the {WINDOW} ADDs in flight not answered");
    let (status, _) = restart_and_read_back(&disk, &acked).terminate();
    assert!(status.success(), "{status:?}");
}

/// The ids, states and leases `dlog admin bookies --json` lists.
fn registered(metadata: &str) -> Vec<serde_json::Value> {
    let mut command = dlog();
    command.args(["admin", "--metadata", metadata, "--json", "bookies"]);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dlog admin bookies: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["bookies"].as_array().unwrap().clone()
}

/// Polls `dlog admin bookies` until exactly this bookie is registered writable at `addr`; its
/// lease.
fn wait_registered(metadata: &str, addr: SocketAddr) -> u64 {
    let deadline = now() + WAIT;
    loop {
        let bookies = registered(metadata);
        if let [b] = &bookies[..]
            && b["id"] == ID
            && b["state"] == "writable"
            && b["endpoint"] == addr.to_string().as_str()
        {
            return b["lease"].as_u64().unwrap();
        }
        assert!(now() < deadline, "not registered at {addr} within {WAIT:?}: {bookies:?}");
        pause(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_while_waiting_out_a_predecessor_stops_cleanly() {
    let disk = Disk::local();
    // A long lease: the restart below waits for it.
    let bookie = Bookie::start(&disk, 5_000);
    let lease = wait_registered(&disk.metadata, bookie.addr);
    bookie.kill();
    let bookie = Bookie::launch(&disk, 5_000);
    bookie.wait_log("waiting for it to expire");
    let (status, took) = bookie.terminate();
    assert!(status.success(), "SIGTERM while registering: {status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Only the killed process's registration is there (its lease has yet to expire).
    let left = registered(&disk.metadata);
    assert_eq!(left.iter().map(|b| b["lease"].as_u64()).collect::<Vec<_>>(), [Some(lease)]);
}

/// Start, registered; SIGKILL and restart at once (its predecessor's registration waited
/// out); registered under a new lease; SIGTERM with a client connected: exit 0 within
/// `EXIT_WAIT`, and the registration gone right after.
fn registration_follows_the_process(disk: &Disk, ttl_ms: u64) {
    let bookie = Bookie::start(disk, ttl_ms);
    let first_lease = wait_registered(&disk.metadata, bookie.addr);
    bookie.kill();

    let bookie = Bookie::start(disk, ttl_ms);
    let lease = wait_registered(&disk.metadata, bookie.addr);
    assert_ne!(lease, first_lease, "registered under the killed process's lease");
    let client = pool();
    assert!(acknowledged(1, 0, add(&client, bookie.addr, 1, 0)));

    let (status, took) = bookie.terminate();
    assert!(status.success(), "SIGTERM: {status:?}");
    eprintln!("exited {took:?} after SIGTERM");
    let left = registered(&disk.metadata);
    assert!(left.is_empty(), "still registered after a clean exit: {left:?}");
    client.close();
}

#[test]
fn registration_follows_the_process_on_the_embedded_store() {
    registration_follows_the_process(&Disk::local(), LOCAL_TTL_MS);
}

#[cfg(feature = "etcd")]
#[test]
fn registration_follows_the_process_on_etcd() {
    let etcd = dlog_metadata::etcd_server::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    // etcd's shortest lease is about 2 s.
    registration_follows_the_process(&Disk::on(etcd.uri("process")), 2000);
}

/// `GET /metrics` over plain HTTP/1.0.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.") && answer.contains(" 200 "), "{answer}");
    answer
}

/// The sum of the samples of `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn metrics_count_requests_and_journal_batches() {
    let disk = Disk::local();
    let bookie = Bookie::start(&disk, LOCAL_TTL_MS);
    let client = pool();
    let completions: Vec<_> = (0..50).map(|e| add(&client, bookie.addr, 3, e)).collect();
    for (e, completion) in (0..50).zip(completions) {
        assert!(acknowledged(3, e, completion));
    }
    // Engine counters are sampled every second.
    let deadline = now() + WAIT;
    let text = loop {
        let text = scrape(bookie.metrics);
        let adds = sample(&text, "dlog_bookie_requests_total", r#"op="add",status="Ok""#);
        let batches = sample(&text, "dlog_journal_batches_total", "shard=");
        if adds >= 50.0 && batches > 0.0 {
            break text;
        }
        assert!(now() < deadline, "adds {adds}, journal batches {batches} after {WAIT:?}:\n{text}");
        pause(Duration::from_millis(100));
    };
    for name in ["dlog_bookie_request_seconds", "dlog_bookie_connections", "dlog_disk_free_bytes"] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    client.close();
    let (status, _) = bookie.terminate();
    assert!(status.success(), "{status:?}");
}

/// `dlog bookie ARGS`' output, within `WAIT`.
fn bookie_command(args: &[&str]) -> Output {
    let mut command = dlog();
    command.env_remove("RUST_LOG").arg("bookie").args(args);
    run(command)
}

/// The single line a refused start prints.
fn refusal(output: &Output) -> String {
    assert!(!output.status.success(), "started: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    stderr
}

#[test]
fn bad_flags_and_config_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let journal = journal.to_str().unwrap();

    let err = refusal(&bookie_command(&["--listen", "nonsense", "--journal-dir", journal]));
    assert!(err.contains("--listen") && err.contains("nonsense"), "{err}");
    let err = refusal(&bookie_command(&["--journal-dir", journal, "--shards", "0"]));
    assert!(err.contains("--shards"), "{err}");
    // Each cause once (an error that prints its source is not followed by it again).
    let missing = dir.path().join("missing.toml");
    let err = refusal(&bookie_command(&["--config", missing.to_str().unwrap(), "--journal-dir", journal]));
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    // A port in use: the address is named.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err =
        refusal(&bookie_command(&["--listen", &addr, "--journal-dir", journal, "--metadata", "memory://"]));
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    // A journal dir that cannot be made: refused (by the cookie check, which comes first),
    // naming the path, with the cause once.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let under_file = not_a_dir.join("journal");
    let args =
        ["--journal-dir", under_file.to_str().unwrap(), "--metadata", "memory://", "--listen", "127.0.0.1:1"];
    let err = refusal(&bookie_command(&args));
    assert!(err.contains(under_file.to_str().unwrap()), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");

    // An unknown key: the file and the line are named.
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:3181\"\n\n[limits]\nin_flight_mx = 4\n").unwrap();
    let err = refusal(&bookie_command(&["--config", file.to_str().unwrap(), "--journal-dir", journal]));
    assert!(err.contains(&format!("{}:4", file.display())) && err.contains("in_flight_mx"), "{err}");
    // A lease ttl out of bounds: the key, the file and the line.
    std::fs::write(&file, "[registration]\nlease_ttl_ms = 5\n").unwrap();
    let err = refusal(&bookie_command(&["--config", file.to_str().unwrap(), "--journal-dir", journal]));
    assert!(err.contains(&format!("{}:2", file.display())) && err.contains("lease_ttl_ms"), "{err}");

    // --check-config prints the effective configuration as TOML, and touches no directory.
    let journal = dir.path().join("unused-journal");
    let journal = journal.to_str().unwrap();
    std::fs::write(&file, "shards = 3\n[registration]\nlease_ttl_ms = 1500\n").unwrap();
    let output = bookie_command(&[
        "--config",
        file.to_str().unwrap(),
        "--journal-dir",
        journal,
        "--listen",
        "127.0.0.1:4181",
        "--check-config",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rendered: toml::Table = toml::from_str(std::str::from_utf8(&output.stdout).unwrap()).unwrap();
    assert_eq!(rendered["listen"].as_str(), Some("127.0.0.1:4181"));
    assert_eq!(rendered["shards"].as_integer(), Some(3));
    assert_eq!(rendered["bookie_id"].as_str(), Some("127.0.0.1:4181"));
    assert_eq!(rendered["registration"]["lease_ttl_ms"].as_integer(), Some(1500));
    assert!(rendered["limits"].is_table() && rendered["engine"].is_table(), "{rendered}");
    assert!(!Path::new(journal).exists(), "--check-config created the journal dir");
}
