//! SIGKILL the embedded metadata store mid-write: a child process runs compare-and-set
//! updates (and log rewrites, with a small threshold) and prints each acknowledged one; the
//! parent kills it at fixed moments (40, 120, 75, 200 and 10 ms after it is ready) and reopens: every acknowledged update must be there with
//! at least its value, revisions must not go back, and the store must keep working.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::{Cond, LocalOptions, LocalStore, MetaError, MetadataStore, Op};

const CHILD_DIR: &str = "DLOG_META_CRASH_DIR";
const CHILD_TEST: &str = "crash_child";

fn options() -> LocalOptions {
    LocalOptions { rewrite_bytes: 16 << 10 }
}

/// The child: increments counters k/0..k/7 with compare-and-set, printing "ack KEY VALUE" after
/// each acknowledged update, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let store = LocalStore::open_with(Path::new(&dir), options()).unwrap();
    println!("ready");
    for i in 0u64.. {
        let key = format!("k/{}", i % 8);
        let (current, cond) = match store.get(&key).await.unwrap() {
            Some(v) => {
                (std::str::from_utf8(&v.value).unwrap().parse::<u64>().unwrap(), Cond::Version(v.version))
            }
            None => (0, Cond::Absent),
        };
        let value = current + 1;
        let op = Op::Put { key: key.clone(), value: Bytes::from(value.to_string()), cond, lease: None };
        match store.txn(vec![op]).await {
            Ok(_) => println!("ack {key} {value}"),
            Err(e) => panic!("child: {e}"),
        }
    }
}

fn run_child(dir: &Path, kill_after: Duration) -> Vec<(String, u64)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for "ready", then let it run, then SIGKILL.
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.ends_with("ready") => break,
            Ok(_) => {}
            Err(_) => panic!("the child did not start"),
        }
    }
    std::thread::park_timeout(kill_after);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    rx.try_iter()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next() == Some("ack"))
                .then(|| (parts.next().unwrap().to_string(), parts.next().unwrap().parse().unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_update() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: std::collections::BTreeMap<String, u64> = Default::default();
    let mut revision = dlog_metadata::Version(0);
    for (round, ms) in [40u64, 120, 75, 200, 10].into_iter().enumerate() {
        for (key, value) in run_child(dir.path(), Duration::from_millis(ms)) {
            let slot = acked.entry(key).or_default();
            *slot = (*slot).max(value);
        }
        let store = LocalStore::open_with(dir.path(), options())
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        for (key, value) in &acked {
            let got = store.get(key).await.unwrap().unwrap_or_else(|| panic!("round {round}: {key} lost"));
            let got: u64 = std::str::from_utf8(&got.value).unwrap().parse().unwrap();
            assert!(got >= *value, "round {round}: {key} is {got}, {value} was acknowledged");
        }
        let page = store.list("", None, 100).await.unwrap();
        assert!(page.revision >= revision, "round {round}: revision went back");
        revision = page.revision;
        // Still writable.
        let op = Op::Put { key: "after".into(), value: Bytes::new(), cond: Cond::Any, lease: None };
        match store.txn(vec![op]).await {
            Ok(_) => {}
            Err(MetaError::Unavailable(e)) => panic!("round {round}: not writable after reopen: {e}"),
            Err(e) => panic!("round {round}: {e}"),
        }
        store.close();
    }
    let total: u64 = acked.values().sum();
    assert!(total > 0, "the children acknowledged nothing");
    // Rewrites happened (16 KiB threshold): the log holds about one image of 9 small keys,
    // not every update (each a record of tens of bytes).
    let log_bytes = std::fs::metadata(dir.path().join("metadata.log")).unwrap().len();
    eprintln!("{total} acknowledged updates, log {log_bytes} bytes");
    // Each update is a record of 30 bytes or more: without rewrites 1,500 would pass 32 KiB.
    if total > 1_500 {
        assert!(log_bytes < 32 << 10, "{total} updates left a {log_bytes}-byte log: never rewritten");
    }
}
