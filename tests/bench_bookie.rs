//! Smoke test of `dlog bench bookie`: the binary runs a short benchmark (an in-process server
//! over the same engine it measures embedded) and its JSON report holds both figures, their
//! baselines and targets; `--target` runs the TCP rounds only, against a running server.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["bench", "bookie", "--duration", "300ms", "--rounds", "1", "--concurrency", "256", "--dir"])
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("run dlog");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dlog bench bookie {args:?} failed:\n{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert!(!dir.path().join("data").exists(), "the bench data directory is removed");
    report
}

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x > 0.0)
}

#[test]
fn bench_bookie_reports_both_figures_against_the_embedded_engine() {
    let report = bench(&[]);
    let t = &report["throughput"];
    for key in ["embedded_entries_per_s", "tcp_entries_per_s", "ratio_median", "target_ratio_min"] {
        assert!(positive(&t[key]), "throughput.{key} in {report}");
    }
    let l = &report["one_in_flight"];
    assert!(positive(&l["embedded_us"]["p50"]) && positive(&l["tcp_us"]["p50"]), "{report}");
    assert!(l["tcp_minus_embedded_p50_us"].is_f64(), "{report}");
    assert_eq!(report["entry_bytes"], 1024);
}

#[test]
fn bench_bookie_target_measures_a_running_server_over_tcp_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = dlog_engine::BookieConfig::new(dir.path().join("journal"));
    config.shard_count = 1;
    config.pin_shards = false;
    let bookie = std::sync::Arc::new(dlog_engine::Bookie::open(config).expect("bookie"));
    let options = dlog::bookie::ServerOptions::new("127.0.0.1:0".parse().expect("addr"), Default::default());
    let server = dlog::bookie::BookieServer::start(bookie, options).expect("server");
    let report = bench(&["--target", &server.local_addr().to_string()]);
    assert!(positive(&report["tcp"]["entries_per_s"]), "{report}");
    assert!(positive(&report["tcp"]["one_in_flight_us"]["p50"]), "{report}");
}
