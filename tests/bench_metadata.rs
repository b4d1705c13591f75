//! Smoke tests of `dlog bench metadata`: the binary runs a short benchmark and its JSON report
//! has every figure (CAS updates of real segment metadata and their watch latency, throughput,
//! baselines, ratios, targets, the encoded segment metadata's size). The etcd case runs a real
//! etcd (`EtcdServer::start_in`, its data under `--dir`) and needs the `etcd` feature; without
//! it the binary must refuse `--backend etcd` with a message saying how to get it.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `dlog bench metadata` with `args` plus a short load and a JSON report, its data under
/// `dir/data`; the report and the standard error.
fn bench(dir: &Path, args: &[&str]) -> (Value, String) {
    let json = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["bench", "metadata", "--duration", "300ms", "--warmup", "0s", "--dir"])
        .arg(dir.join("data"))
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("run dlog");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dlog bench metadata {args:?} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ours/baseline"), "no results table:\n{stdout}");
    assert!(stdout.contains("segment metadata:"), "no segment value size:\n{stdout}");
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    let report: Value = serde_json::from_str(&text).expect("valid JSON");
    check_settings(&report["settings"]);
    // Whatever was started (store, scratch files, etcd) is removed; the directory given is kept.
    let left: Vec<_> = std::fs::read_dir(dir.join("data")).expect("data dir").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    (report, stderr.into_owned())
}

/// The segment values' sizes: a cycle of growing encoded sizes (1 to 4 ensembles of three
/// bookies), their mean reported as `segment_value_bytes`.
fn check_settings(s: &Value) {
    let sizes: Vec<u64> = s["segment_value_sizes"]
        .as_array()
        .unwrap_or_else(|| panic!("segment_value_sizes missing in {s:#}"))
        .iter()
        .map(|v| v.as_u64().expect("a size"))
        .collect();
    assert_eq!(sizes.len(), 4, "{s:#}");
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    // A real segment's metadata: about a hundred bytes with one ensemble, more with each change.
    assert!((80..200).contains(&sizes[0]) && sizes[3] < 400, "{sizes:?}");
    let mean = positive(s, "/segment_value_bytes") as u64;
    assert!(sizes[0] <= mean && mean <= sizes[3], "{mean} outside {sizes:?}");
    assert!(s.get("value_size").is_none(), "--value-size no longer applies: {s:#}");
}

/// The scratch directory: under the target directory (on a disk: a tmpfs /tmp has no O_DIRECT).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory")
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = v.pointer(path).and_then(Value::as_f64).unwrap_or_else(|| panic!("{path} missing in {v:#}"));
    assert!(x.is_finite() && x > 0.0, "{path} = {x}");
    x
}

/// The fields every backend's report has.
fn check_backend(r: &Value, backend: &str) {
    assert_eq!(r["backend"], backend);
    assert!(r["store"].as_str().is_some_and(|s| s.starts_with(&format!("{backend}://"))), "{r:#}");
    let ops = positive(r, "/cas/ops");
    assert_eq!(positive(r, "/watch/events"), ops, "the watcher sees every update once");
    for side in ["cas", "baseline_writes"] {
        positive(r, &format!("/{side}/ops_per_s"));
        for p in ["p50", "p99", "p999", "max"] {
            positive(r, &format!("/{side}/latency_us/{p}"));
        }
    }
    for p in ["p50", "p99"] {
        positive(r, &format!("/watch/latency_us/{p}"));
    }
    for ratio in ["cas_p50", "cas_p99", "ops_per_s", "watch_p50", "watch_p99"] {
        positive(r, &format!("/ratios/{ratio}"));
    }
    positive(r, "/context/writes/ops_per_s");
    positive(r, "/context/writes/latency_us/p99");
    positive(r, "/context/cas_p50");
    positive(r, "/context/cas_p99");
    positive(r, "/target_p99_us");
    assert!(r["cas_pass"].is_boolean() && r["watch_pass"].is_boolean(), "{r:#}");
}

#[test]
fn local_backend_reports_every_figure() {
    let dir = scratch();
    let (report, _) = bench(dir.path(), &["--backend", "local"]);
    assert_eq!(report["settings"]["inflight"], 1);
    assert_eq!(report["settings"]["keys"], 64);
    let backends = report["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 1);
    let r = &backends[0];
    check_backend(r, "local");
    assert!(r["baseline_watch"].is_null());
}

#[test]
fn local_backend_with_clients_in_flight() {
    let dir = scratch();
    let (report, _) = bench(dir.path(), &["--backend", "local", "--inflight", "4", "--keys", "8"]);
    assert_eq!(report["settings"]["inflight"], 4);
    assert_eq!(report["settings"]["keys"], 8);
    check_backend(&report["backends"][0], "local");
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_backend_reports_every_figure() {
    let dir = scratch();
    let (report, stderr) = bench(dir.path(), &["--backend", "etcd"]);
    let backends = report["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 1);
    let r = &backends[0];
    check_backend(r, "etcd");
    assert_eq!(r["started"], true);
    positive(r, "/baseline_watch/latency_us/p99");
    assert_eq!(positive(r, "/baseline_watch/events"), positive(r, "/baseline_writes/ops"));
    // The started etcd keeps its data on the disk under test (`--dir`), not in $TMPDIR.
    let data = dir.path().join("data");
    let line = stderr.lines().find(|l| l.contains("started etcd")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&format!("data in {}", data.display())), "{line}");
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_backend_needs_the_feature() {
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["bench", "metadata", "--backend", "etcd"])
        .output()
        .expect("run dlog");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features etcd"), "{stderr}");
}
