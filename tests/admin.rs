//! `dlog admin` end to end: metadata written through the typed accessors into an embedded
//! store, then read back by the binary, as text and as JSON; a damaged value makes the command
//! fail naming its key; bad arguments fail with a message, not a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_metadata::schema::{
    self, BookieInfo, Cookie, DigestType, Dlsn, LogSegment, LogSegmentState, SegmentMetadata, SegmentOwner,
    SegmentState,
};
use dlog_metadata::{BookieRegistry, LocalStore, LogMetadataStore, MetadataStore, SegmentMetadataStore};

fn admin(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .arg("admin")
        .arg("--metadata")
        .arg(format!("local://{}", dir.display()))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// A namespace with one log of two segments (one completed), a segment's metadata, a bookie.
async fn populate(dir: &Path) -> u64 {
    let store = Arc::new(LocalStore::open(dir).unwrap());
    let logs = LogMetadataStore::new(store.clone());
    logs.create_namespace("ns").await.unwrap();
    logs.create_log("ns", "orders").await.unwrap();
    let lease = store.grant(Duration::from_secs(600)).await.unwrap();
    let mut lock = logs.acquire_writer_lock("ns", "orders", "admin-test", lease).await.unwrap();
    let (meta, v) = logs.log("ns", "orders").await.unwrap().unwrap();
    let segments = SegmentMetadataStore::new(store.clone());
    let segment = SegmentMetadata {
        ensemble_size: 3,
        write_quorum_size: 3,
        ack_quorum_size: 2,
        digest_type: DigestType::Crc32c,
        master_key: Bytes::from_static(&[0xab; 32]),
        state: SegmentState::Closed { last_entry_id: Some(41), length: 4200 },
        ensembles: BTreeMap::from([
            (0, vec!["b1".into(), "b2".into(), "b3".into()]),
            (20, vec!["b1".into(), "b4".into(), "b3".into()]),
        ]),
        created_ms: 1,
        owner: Some(SegmentOwner { namespace: "ns".into(), log: "orders".into(), seq: 0 }),
    };
    let (id, _) = segments.create(&segment).await.unwrap();
    let done = LogSegment {
        seq: 0,
        segment_id: id,
        first_txid: 1,
        epoch: 1,
        created_ms: 1,
        state: LogSegmentState::Completed {
            last_txid: 42,
            record_count: 42,
            last_dlsn: Some(Dlsn { segment_seq: 0, entry_id: 41, slot: 0 }),
            completed_ms: 2,
        },
    };
    let (meta, v) = logs.add_segment(&mut lock, &done, &meta, v).await.unwrap();
    let open =
        LogSegment { seq: 1, segment_id: id + 1, first_txid: 43, state: LogSegmentState::InProgress, ..done };
    logs.add_segment(&mut lock, &open, &meta, v).await.unwrap();
    let registry = BookieRegistry::new(store.clone());
    drop(lock);
    let cookie = Cookie {
        bookie_id: "b1".into(),
        instance_id: "0".repeat(32),
        disk_id: "1".repeat(32),
        journal_dirs: vec!["/j".into()],
        ledger_dirs: vec!["/l".into()],
    };
    registry.create_cookie(&cookie).await.unwrap();
    let info =
        BookieInfo { endpoint: "127.0.0.1:3181".into(), shards: 2, zone: "z1".into(), ..Default::default() };
    registry.register("b1", &info, lease, false).await.unwrap();
    drop(registry);
    drop((logs, segments));
    Arc::into_inner(store).unwrap().close();
    id
}

#[tokio::test]
async fn admin_prints_what_the_accessors_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let id = populate(dir.path()).await;

    let (ok, out, err) = admin(dir.path(), &["logs"]);
    assert!(ok, "{err}");
    assert_eq!(out, "ns\n");
    let (ok, out, err) = admin(dir.path(), &["logs", "ns"]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with("orders"), "{out}");
    let (ok, out, err) = admin(dir.path(), &["segments", "ns/orders"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].contains("completed") && rows[0].contains("0:41:0"), "{out}");
    assert!(rows[1].contains("in-progress"), "{out}");
    let (ok, out, err) = admin(dir.path(), &["segment", &id.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("closed at entry 41, 4200 bytes"), "{out}");
    assert!(out.contains("from entry 20: b1, b4, b3"), "{out}");
    let (ok, out, err) = admin(dir.path(), &["bookies"]);
    assert!(ok, "{err}");
    assert!(out.contains("b1") && out.contains("127.0.0.1:3181") && out.contains("writable"), "{out}");

    // The URI `dlog write` and `dlog read` take, with its namespace, serves the read commands:
    // its namespace is what `logs` lists, and one a command names must agree with it.
    let with_namespace = |ns: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dlog"))
            .arg("admin")
            .args(args)
            .arg("--metadata")
            .arg(format!("local://{}?namespace={ns}", dir.path().display()))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    for args in [&["logs", "ns"][..], &["logs"]] {
        let (ok, out, err) = with_namespace("ns", args);
        assert!(ok, "{args:?}: {err}");
        assert!(out.lines().nth(1).unwrap().starts_with("orders"), "{args:?}: {out}");
    }
    assert!(with_namespace("ns", &["segments", "ns/orders"]).0);
    for args in [&["logs", "ns"][..], &["segments", "ns/orders"]] {
        let (ok, _, err) = with_namespace("other", args);
        assert!(!ok && err.contains("disagrees"), "{args:?}: {err}");
    }

    // JSON for scripts.
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = admin(dir.path(), &all);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let s = json(&["segment", &id.to_string()]);
    assert_eq!(s["state"]["closed"]["last_entry_id"], 41);
    assert_eq!(s["ensembles"][1]["first_entry_id"], 20);
    assert_eq!(s["ack_quorum_size"], 2);
    let l = json(&["segments", "ns/orders"]);
    assert_eq!(l["segments"][0]["last_dlsn"]["entry_id"], 41);
    assert_eq!(l["segments"][1]["state"], "in-progress");
    let b = json(&["bookies"]);
    assert_eq!(b["bookies"][0]["zone"], "z1");
    assert_eq!(json(&["logs"])["namespaces"][0], "ns");

    // Missing things and bad arguments: a message and a failure, no panic.
    for args in
        [&["segment", "999999"][..], &["segments", "ns/none"], &["segments", "nslash"], &["logs", "zz"]]
    {
        let (ok, _, err) = admin(dir.path(), args);
        assert!(!ok && err.starts_with("error: ") && !err.contains("panicked"), "{args:?}: {err}");
    }

    // A store another process owns (its lock held) is read as a snapshot.
    let owner = LocalStore::open(dir.path()).unwrap();
    let (ok, out, err) = admin(dir.path(), &["logs"]);
    assert!(ok && out == "ns\n", "{err}");
    owner.close();

    // A damaged value fails the command and names its key.
    let store = LocalStore::open(dir.path()).unwrap();
    store.put(&schema::segment_key(id), Bytes::from_static(b"\x01\x08")).await.unwrap();
    store.close();
    let (ok, _, err) = admin(dir.path(), &["segment", &id.to_string()]);
    assert!(!ok && err.contains(&schema::segment_key(id)), "{err}");
}
