//! A read-only snapshot whose replayed leases' deadlines have passed sits idle (it expires
//! nothing, so it must not spin on those deadlines). Alone in its test binary: it measures the
//! whole process's CPU time.

use std::time::Duration;

use dlog_metadata::{LocalStore, MetadataStore};

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// CPU time this process has used, from /proc/self/stat (user + system, in clock ticks).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_past_lease_deadlines_sits_idle() {
    let dir = tempfile::tempdir().unwrap();
    let owner = LocalStore::open(dir.path()).unwrap();
    owner.grant(Duration::from_millis(50)).await.unwrap();
    owner.close();
    let snapshot = LocalStore::open_read_only(dir.path()).unwrap();
    pause(200).await; // the lease's deadline passes: a snapshot does not expire it
    let before = cpu_ticks();
    pause(1000).await;
    let used = cpu_ticks() - before;
    assert!(used < 30, "an idle snapshot used {used} ticks of CPU in 1 s (spinning on the deadline)");
    drop(snapshot);
}
