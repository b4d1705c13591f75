//! The log commands of the `dlog` binary end to end, as processes against a `dlog local`
//! process: `dlog write` (2,000 lines, DLSNs and transaction ids printed in order), `dlog read`
//! from the head, a DLSN, a transaction id and the tail, a `dlog read --follow` that prints what
//! a second writer appends and exits 0 on SIGTERM and when its stdout closes, `dlog admin
//! truncate` and the read commands of `dlog admin` over `dlog://`; then a SIGKILL of the cluster
//! while a writer holds the log, a prompt restart on the same directory, everything read back,
//! and a new writer that recovers the log and goes on. And refusals: one line, non-zero exit.
//!
//! Everything listens on 127.0.0.1; every wait has a deadline; every child process is killed
//! and reaped by a guard when a test ends.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use dlog::log::Dlsn;

#[path = "support/process.rs"]
mod process;

use process::{Running, now, run_fed, wait_exit};

/// Longest any one step (a start, a command, a line awaited) may take.
const WAIT: Duration = Duration::from_secs(30);
/// Longest a restart after a SIGKILL may take: well under the 10 s of the old leases.
const PROMPT: Duration = Duration::from_secs(5);
const LOG: &str = "events";

/// `dlog ARGS`, without the environment's `DLOG_METADATA` and `RUST_LOG`.
fn dlog(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command.args(args).env_remove("DLOG_METADATA").env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    command
}

/// What a finished command left.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Finished {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.stdout.clone()).unwrap().lines().map(str::to_owned).collect()
    }

    /// Succeeded (else fails the test with its stderr); its stdout lines.
    fn ok(&self) -> Vec<String> {
        self.ok_bytes();
        self.lines()
    }

    /// Succeeded; its stdout.
    fn ok_bytes(&self) -> &[u8] {
        assert!(self.status.success(), "{:?}: {}", self.status, self.stderr);
        &self.stdout
    }

    /// Failed with one `error:` line on stderr; that line.
    fn refused(&self) -> &str {
        assert!(!self.status.success(), "succeeded: {}", String::from_utf8_lossy(&self.stdout));
        assert!(self.status.code().is_some(), "exited by a signal: {:?}", self.status);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(lines.len() == 1 && lines[0].starts_with("error: "), "{:?}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        lines[0]
    }
}

/// Runs `command` with `input` on its stdin to its end within `WAIT`.
fn run(command: Command, input: &[u8]) -> Finished {
    let output = run_fed(command, input, WAIT);
    let stderr = String::from_utf8(output.stderr).unwrap();
    Finished { status: output.status, stdout: output.stdout, stderr }
}

/// Spawns `command` with `stdin`, its stderr in a new file under `logs`.
fn spawn(command: Command, stdin: Stdio, logs: &Path) -> Running {
    static SPAWNED: AtomicUsize = AtomicUsize::new(0);
    let stderr = logs.join(format!("stderr-{}", SPAWNED.fetch_add(1, Ordering::Relaxed)));
    Running::spawn(command, stdin, stderr)
}

/// A running `dlog local` and the metadata URI it printed.
struct Local {
    process: Running,
    uri: String,
}

impl Local {
    /// Starts `dlog local` on `dir` (metadata on a port the system picks) and waits for `ready`.
    fn start(dir: &Path, logs: &Path) -> Local {
        let mut command = dlog(&["local", "--metadata-listen", "127.0.0.1:0", "--dir"]);
        command.arg(dir).env("RUST_LOG", "info");
        let process = spawn(command, Stdio::null(), logs);
        let mut uri = None;
        loop {
            let line = process.line(WAIT);
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["ready"] => break,
                ["metadata", u] => uri = Some(u.to_string()),
                ["data" | "bookie", ..] => {}
                _ => panic!("unexpected line {line:?}"),
            }
        }
        let uri = uri.expect("a metadata line");
        assert!(uri.starts_with("dlog://127.0.0.1:"), "{uri}");
        Local { process, uri }
    }

    /// `dlog ARGS --metadata URI`.
    fn dlog(&self, args: &[&str]) -> Command {
        let mut command = dlog(args);
        command.args(["--metadata", &self.uri]);
        command
    }

    fn run(&self, args: &[&str], input: &[u8]) -> Finished {
        run(self.dlog(args), input)
    }

    fn sigkill(self) {
        self.process.kill();
    }
}

/// `<dlsn> <txid>` lines as `dlog write --print-dlsn` prints them.
fn acks(lines: &[String]) -> Vec<(Dlsn, u64)> {
    lines
        .iter()
        .map(|line| {
            let (dlsn, txid) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            (dlsn.parse().unwrap(), txid.parse().unwrap())
        })
        .collect()
}

/// Checks that DLSNs increase and transaction ids are consecutive.
fn in_order(acks: &[(Dlsn, u64)]) {
    for w in acks.windows(2) {
        assert!(w[0].0 < w[1].0, "DLSNs increase: {w:?}");
        assert_eq!(w[0].1 + 1, w[1].1, "transaction ids are consecutive: {w:?}");
    }
}

fn input(lines: &[String]) -> Vec<u8> {
    lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
}

#[test]
fn write_read_follow_truncate_then_kill_restart_and_go_on() {
    let parent = tempfile::tempdir().unwrap();
    let (dir, logs) = (parent.path().join("cluster"), parent.path());
    let local = Local::start(&dir, logs);

    // 2,000 lines in, one DLSN and transaction id each, in order.
    let lines: Vec<String> = (0..2000).map(|i| format!("line {i:04} {}", "x".repeat(i % 37))).collect();
    let written = local.run(&["write", LOG, "--print-dlsn"], &input(&lines));
    let first = acks(&written.ok());
    assert_eq!(first.len(), 2000);
    in_order(&first);
    assert!(written.stderr.contains("created log default/events"), "{}", written.stderr);

    // Back from the head, in order; with --print-dlsn, at the positions the writer printed.
    assert_eq!(local.run(&["read", LOG], b"").ok(), lines);
    let read = local.run(&["read", LOG, "--print-dlsn"], b"").ok();
    for (i, (line, (dlsn, txid))) in read.iter().zip(&first).enumerate() {
        assert_eq!(line, &format!("{dlsn} {txid} {}", lines[i]));
    }
    assert_eq!(read.len(), 2000);
    // The environment names the cluster as --metadata does.
    let mut command = dlog(&["read", &format!("default/{LOG}")]);
    command.env("DLOG_METADATA", &local.uri);
    assert_eq!(run(command, b"").ok(), lines);
    // From a DLSN, a transaction id, the tail.
    let from = first[1234].0.to_string();
    assert_eq!(local.run(&["read", LOG, "--from-dlsn", &from], b"").ok(), lines[1234..]);
    let txid = first[1500].1.to_string();
    assert_eq!(local.run(&["read", LOG, "--from-txid", &txid], b"").ok(), lines[1500..]);
    assert_eq!(local.run(&["read", LOG, "--from", "tail"], b"").ok(), Vec::<String>::new());
    assert_eq!(local.run(&["read", LOG, "--from", "head"], b"").ok().len(), 2000);

    // A follower from the next transaction id prints what a second writer appends, at once.
    let next = (first[1999].1 + 1).to_string();
    let mut follower = spawn(
        local.dlog(&["read", LOG, "--follow", "--print-dlsn", "--from-txid", &next]),
        Stdio::null(),
        logs,
    );
    let more: Vec<String> = (0..100).map(|i| format!("more {i}")).collect();
    let second = acks(&local.run(&["write", LOG, "--print-dlsn"], &input(&more)).ok());
    assert_eq!(second.len(), 100);
    in_order(&[&first[..], &second[..]].concat());
    for (i, (dlsn, txid)) in second.iter().enumerate() {
        assert_eq!(follower.line(WAIT), format!("{dlsn} {txid} {}", more[i]));
    }
    follower.signal("TERM");
    let status = follower.exit(WAIT);
    assert!(status.success(), "a follower stops with 0 at SIGTERM: {status:?}");
    // A follower whose stdout closes (`| head -1`) exits 0 at its next record.
    let mut head = spawn(local.dlog(&["read", LOG, "--follow"]), Stdio::null(), logs);
    assert_eq!(head.line(WAIT), lines[0]);
    drop(std::mem::replace(&mut head.lines, mpsc::channel().1));
    let closed = now();
    let mut status = None;
    while status.is_none() && closed.elapsed() < WAIT {
        // Until its reader thread has seen the channel go and closed the pipe: a record each time.
        local.run(&["write", LOG], b"poke\n").ok();
        status = wait_exit(&mut head.child.0, now() + Duration::from_millis(200));
    }
    let status = status.unwrap_or_else(|| panic!("still following a closed stdout; log:\n{}", head.log()));
    assert!(status.success(), "{status:?}: {}", head.log());
    let pokes = local.run(&["read", LOG, "--from-txid", &(second[99].1 + 1).to_string()], b"").ok();
    assert!(!pokes.is_empty() && pokes.iter().all(|p| p == "poke"), "{pokes:?}");

    // The admin read commands over dlog://.
    let listed = local.run(&["admin", "logs", "default"], b"").ok();
    assert!(listed.iter().any(|l| l.starts_with(LOG)), "{listed:?}");
    let segments = local.run(&["admin", "--json", "segments", "default/events"], b"").ok().join("\n");
    let segments: serde_json::Value = serde_json::from_str(&segments).unwrap();
    assert!(segments["segments"].as_array().unwrap().len() >= 2, "{segments}");

    // Truncated at a DLSN: a read from the head starts there.
    let cut = first[1000].0.to_string();
    let said = local.run(&["admin", "truncate", LOG, &cut], b"").ok();
    assert_eq!(said, [format!("truncated default/events before {cut}")]);
    let mut kept: Vec<String> = lines[1000..].iter().chain(&more).cloned().collect();
    kept.extend(pokes);
    let read = local.run(&["read", LOG, "--print-dlsn"], b"").ok();
    assert!(read[0].starts_with(&format!("{cut} ")), "{}", read[0]);
    assert_eq!(local.run(&["read", LOG], b"").ok(), kept);
    let before = local.run(&["read", LOG, "--from-dlsn", &first[10].0.to_string()], b"");
    assert!(before.refused().contains(&format!("records before {cut} were truncated")), "{before:?}");

    // A writer holding the log, with acknowledged records in an open segment, when the cluster
    // is killed.
    let mut holder = spawn(local.dlog(&["write", LOG, "--print-dlsn"]), Stdio::piped(), logs);
    let mut holder_in = holder.child.0.stdin.take().unwrap();
    let open: Vec<String> = (0..10).map(|i| format!("open {i}")).collect();
    let mut held = Vec::new();
    for line in &open {
        holder_in.write_all(format!("{line}\n").as_bytes()).unwrap();
        holder_in.flush().unwrap();
        held.push(holder.line(WAIT));
    }
    let held = acks(&held);
    local.sigkill();
    drop(holder);
    drop(holder_in);

    // A restart on the same directory comes up promptly and serves everything kept.
    let began = now();
    let mut local = Local::start(&dir, logs);
    let took = began.elapsed();
    assert!(took < PROMPT, "restart after SIGKILL took {took:?}");
    kept.extend(open.iter().cloned());
    let read = local.run(&["read", LOG], b"").ok();
    // The open segment's last entry may wait for the next writer's recovery (LR2): it is
    // there, or not yet; nothing else differs.
    assert!(
        read.len() + 1 >= kept.len() && kept.starts_with(&read),
        "{:?}",
        &read[read.len().saturating_sub(3)..]
    );

    // A new writer recovers the log and goes on after every acknowledged record.
    let after: Vec<String> = (0..50).map(|i| format!("after {i}")).collect();
    let third = acks(&local.run(&["write", LOG, "--print-dlsn"], &input(&after)).ok());
    in_order(&third);
    assert!(third[0].0 > held[9].0 && third[0].1 > held[9].1, "{:?} after {:?}", third[0], held[9]);
    kept.extend(after);
    let read = local.run(&["read", LOG], b"").ok();
    assert_eq!(read.len(), kept.len());
    assert_eq!(read, kept);
    let read = local.run(&["read", LOG, "--print-dlsn"], b"").ok();
    let txids: Vec<u64> = read.iter().map(|l| l.split(' ').nth(1).unwrap().parse().unwrap()).collect();
    assert!(txids.windows(2).all(|w| w[0] < w[1]), "transaction ids increase across the restart");
    local.process.signal("TERM");
    assert!(local.process.exit(WAIT).success());
}

#[test]
fn bad_arguments_and_failures_are_one_line_and_a_non_zero_exit() {
    let parent = tempfile::tempdir().unwrap();
    let mut local = Local::start(&parent.path().join("cluster"), parent.path());
    local.run(&["write", LOG], b"one\ntwo\n").ok();

    let refused = |args: &[&str], says: &str| {
        let finished = local.run(args, b"");
        let line = finished.refused();
        assert!(line.contains(says), "{args:?}: {line}");
        finished.status.code()
    };
    // Refused by the command line (exit 2) ...
    let usage = [
        (&["read", LOG, "--from-dlsn", "garbage"][..], "DLSN \"garbage\""),
        (&["read", LOG, "--from-dlsn", "0:0:0", "--from-txid", "1"], "cannot be used with"),
        (&["read", LOG, "--from", "tail", "--from-txid", "1"], "cannot be used with"),
        (&["read", LOG, "--from", "middle"], "invalid value 'middle'"),
        (&["read", "a/b/c"], "expected LOG or NAMESPACE/LOG"),
        (&["write", LOG, "--in-flight", "0"], "--in-flight"),
        (&["admin", "truncate", LOG, "1:2"], "three numbers are needed"),
    ];
    for (args, says) in usage {
        assert_eq!(refused(args, says), Some(2), "{args:?}");
    }
    // ... and by the cluster (exit 1).
    let failing = [
        (&["read", "nosuch"][..], "log default/nosuch does not exist"),
        (&["admin", "truncate", LOG, "99:0:0"], "its tail is at"),
        (&["admin", "truncate", "nosuch", "0:0:0"], "does not exist"),
        (&["admin", "recover", "999999"], "segment 999999"),
    ];
    for (args, says) in failing {
        assert_eq!(refused(args, says), Some(1), "{args:?}");
    }
    // A transaction id that does not increase, and a line without one.
    let finished = local.run(&["write", LOG, "--txid-from-input"], b"1 again\n");
    assert!(
        finished.refused().contains("line 1: transaction id 1 is not above the last one"),
        "{finished:?}"
    );
    let finished =
        local.run(&["write", LOG, "--txid-from-input", "--print-dlsn"], b"100 a\n101 b\nnone\n102 c\n");
    assert!(finished.refused().contains("line 3: expected `<txid> <payload>`"), "{finished:?}");
    // The records before the bad line are written, and said so.
    assert_eq!(acks(&finished.lines()).iter().map(|a| a.1).collect::<Vec<_>>(), [100, 101]);
    assert_eq!(local.run(&["read", LOG, "--from-txid", "100"], b"").ok(), ["a", "b"]);
    // A line the writer refuses stops the command there: the lines after it are not written
    // (a hole a retry from it would fill twice).
    let finished = local.run(&["write", LOG, "--txid-from-input", "--print-dlsn"], b"200 d\n200 e\n201 f\n");
    assert!(finished.refused().contains("line 2: transaction id 200 is not above"), "{finished:?}");
    assert_eq!(acks(&finished.lines()).iter().map(|a| a.1).collect::<Vec<_>>(), [200]);
    assert_eq!(local.run(&["read", LOG, "--from-txid", "200"], b"").ok(), ["d"]);
    // Lines need not be UTF-8.
    local.run(&["write", "bytes"], b"\xff\xfe\x00x\nlast, no newline").ok();
    assert_eq!(local.run(&["read", "bytes"], b"").ok_bytes(), b"\xff\xfe\x00x\nlast, no newline\n");
    // A writer whose segment `dlog admin recover` fences stops at its next record: one line.
    let mut holder = spawn(local.dlog(&["write", LOG, "--print-dlsn"]), Stdio::piped(), parent.path());
    let mut holder_in = holder.child.0.stdin.take().unwrap();
    holder_in.write_all(b"held\n").unwrap();
    holder_in.flush().unwrap();
    let held = acks(&[holder.line(WAIT)]);
    let listed = local.run(&["admin", "--json", "segments", "default/events"], b"").ok().join("\n");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let open = listed["segments"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(open["state"], "in-progress", "{listed}");
    let id = open["segment_id"].as_u64().unwrap().to_string();
    let said = local.run(&["admin", "recover", &id], b"").ok();
    // One entry (its length is the entry's, framing included).
    assert!(
        said.len() == 1 && said[0].starts_with(&format!("segment {id} closed: last entry 0, ")),
        "{said:?}"
    );
    holder_in.write_all(b"fenced\n").unwrap();
    drop(holder_in);
    let log = holder.stderr.clone();
    let status = holder.exit(WAIT);
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.lines().count() == 1 && log.starts_with("error: line 2: writer fenced"), "{log}");
    // The next writer completes the recovered segment and goes on.
    let next = acks(&local.run(&["write", LOG, "--print-dlsn"], b"next\n").ok());
    assert!(next[0].0.segment_seq > held[0].0.segment_seq && next[0].1 > held[0].1, "{next:?}");
    let read = local.run(&["read", LOG, "--from-txid", &held[0].1.to_string()], b"").ok();
    assert_eq!(read, ["held", "next"]);
    // No cluster there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let finished = run(dlog(&["read", LOG, "--metadata", &format!("dlog://{closed}")]), b"");
    finished.refused();
    local.process.signal("TERM");
    assert!(local.process.exit(WAIT).success());
}
