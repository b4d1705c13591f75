//! Child processes for the tests that run the binaries cargo built (tests/cli_log.rs,
//! tests/local_cluster.rs, tests/bookie_process.rs, tests/replication_process.rs): the real-time
//! clock and pauses such tests need (`now`, `pause`: the one place they opt out of the clippy
//! ban), a guard that kills and reaps a child when dropped (`Reaper`), waits for an exit by a
//! deadline (`wait_exit`), a spawned process whose stdout lines arrive on a channel and whose
//! stderr goes to a file (`Running`), a port to listen on (`free_port`), and a command run to its
//! end within a timeout (`run`, `run_fed`).
//!
//! Every wait here takes its deadline or timeout from the caller: each test keeps its own.
//!
//! Shared through a `#[path]` module; each test uses a part of it, hence the `dead_code`
//! allowance.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The time now: a test of real processes waits and measures in real time.
#[expect(clippy::disallowed_methods, reason = "a test of real processes waits in real time")]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Sleeps `d`: a test of real processes polls them in real time.
#[expect(clippy::disallowed_methods, reason = "a test of real processes polls them in real time")]
pub(crate) fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Kills and reaps a child when dropped, whatever happened to the test.
pub(crate) struct Reaper(pub(crate) Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `deadline` for `child` to exit (polling every 10 ms); its status, or `None` if it
/// still runs then.
pub(crate) fn wait_exit(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if now() >= deadline {
            return None;
        }
        pause(Duration::from_millis(10));
    }
}

/// A port nobody listened on a moment ago (a race with other processes is the caller's to retry).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends signal `name` (`TERM`, `STOP`, `CONT`, ...) to process `pid`.
pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A spawned process: its stdout lines arrive on `lines` (read by a thread, which stops when the
/// pipe closes or `lines` is dropped), its stderr goes to the file `stderr`. Killed and reaped
/// when dropped.
pub(crate) struct Running {
    pub(crate) child: Reaper,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) stderr: PathBuf,
}

impl Running {
    /// Spawns `command` with `stdin`, its stdout piped to `lines` and its stderr written to the
    /// file `stderr` (created).
    pub(crate) fn spawn(mut command: Command, stdin: Stdio, stderr: PathBuf) -> Running {
        command.stdin(stdin).stdout(Stdio::piped()).stderr(File::create(&stderr).unwrap());
        let mut child = Reaper(command.spawn().unwrap());
        let stdout = child.0.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines, stderr }
    }

    /// What it wrote to stderr so far (empty if unreadable).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends it signal `name`.
    pub(crate) fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// The next stdout line, within `within` (else fails the test with its log).
    pub(crate) fn line(&self, within: Duration) -> String {
        self.lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no line within {within:?} ({e}); log:\n{}", self.log()))
    }

    /// The first stdout line containing `text` before `deadline` (other lines are skipped).
    pub(crate) fn line_with(&self, text: &str, deadline: Instant) -> Result<String, RecvTimeoutError> {
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(now()))?;
            if line.contains(text) {
                return Ok(line);
            }
        }
    }

    /// Waits `within` at most for it to exit (else fails the test with its log); its status.
    pub(crate) fn exit(&mut self, within: Duration) -> ExitStatus {
        wait_exit(&mut self.child.0, now() + within)
            .unwrap_or_else(|| panic!("no exit within {within:?}; log:\n{}", self.log()))
    }

    /// SIGTERM, then its exit within `within` of the signal (else fails the test with its log),
    /// with no panic in its log; its status and how long it took.
    pub(crate) fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let sent = now();
        self.signal("TERM");
        let status = wait_exit(&mut self.child.0, sent + within)
            .unwrap_or_else(|| panic!("no exit within {within:?} of SIGTERM; log:\n{}", self.log()));
        let took = sent.elapsed();
        let log = self.log();
        assert!(!log.contains("panicked"), "{log}");
        (status, took)
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(mut self) {
        self.child.0.kill().unwrap();
        self.child.0.wait().unwrap();
    }
}

/// Runs `command` to its end within `within` (killed and failed past it), its stdin as the
/// command set it; its output.
pub(crate) fn run(command: Command, within: Duration) -> Output {
    finish(command, None, within)
}

/// Runs `command` with `input` on its stdin to its end within `within` (killed and failed past
/// it); its output. A command that exits early may leave `input` unread.
pub(crate) fn run_fed(command: Command, input: &[u8], within: Duration) -> Output {
    finish(command, Some(input.to_vec()), within)
}

fn finish(mut command: Command, input: Option<Vec<u8>>, within: Duration) -> Output {
    // Files, not pipes: nothing to drain, so the deadline bounds the whole run.
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    command.stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = Reaper(command.spawn().unwrap());
    let deadline = now() + within;
    let feeder = input.map(|input| {
        let mut stdin = child.0.stdin.take().unwrap();
        // A command that fails early may close its stdin: that is its error to report, not ours.
        std::thread::spawn(move || drop(stdin.write_all(&input)))
    });
    let status =
        wait_exit(&mut child.0, deadline).unwrap_or_else(|| panic!("{command:?}: no exit within {within:?}"));
    if let Some(feeder) = feeder {
        feeder.join().unwrap();
    }
    Output { status, stdout: std::fs::read(out).unwrap(), stderr: std::fs::read(err).unwrap() }
}
