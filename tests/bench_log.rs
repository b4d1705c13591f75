//! Smoke test of `dlog bench log`: a very short run of all three phases writes a JSON report
//! holding every figure with its baseline and ratio, every record sent was acknowledged (and,
//! in the latency phase, read by the tailing reader), and the data directory is removed.

use std::process::Command;

use serde_json::Value;

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x > 0.0)
}

#[test]
fn bench_log_reports_three_figures_and_every_record_is_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["bench", "log", "--duration", "1s", "--rounds", "1", "--catchup-mib", "16", "--rate", "5000"])
        .args(["--in-flight", "20000", "--dir"])
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run dlog");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dlog bench log failed:\n{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert!(!dir.path().join("data").exists(), "the bench data directory is removed");
    // The envelope every `dlog bench` report shares.
    assert_eq!(report["bench"], "log", "{report}");
    assert!(report["machine"]["cores"].as_u64().is_some_and(|c| c >= 1), "{report}");

    let t = &report["throughput"];
    for key in
        ["records_per_s", "raw_records_per_s", "disk_records_per_s", "ratio_to_disk", "ratio_to_raw_adds"]
    {
        assert!(positive(&t[key]), "throughput.{key} in {report}");
    }
    assert!(positive(&t["records_sent"]), "{report}");
    assert_eq!(t["records_sent"], t["records_acked"], "every record written was acknowledged: {report}");

    let l = &report["latency"];
    for key in ["e2e_us", "publish_us", "raw_open_loop_us", "raw_one_in_flight_us"] {
        assert!(positive(&l[key]["p50"]) && positive(&l[key]["p99"]), "latency.{key} in {report}");
    }
    assert_eq!(l["records_sent"], 5000, "{report}");
    assert_eq!(l["records_sent"], l["records_acked"], "{report}");
    assert_eq!(l["records_sent"], l["records_received"], "{report}");

    let c = &report["catchup"];
    for key in ["log_mb_per_s", "raw_mb_per_s", "ratio", "write_mb_per_s"] {
        assert!(positive(&c[key]), "catchup.{key} in {report}");
    }
    assert_eq!(c["records"], 16 << 10, "{report}");

    let figures = report["figures"].as_array().expect("figures");
    for f in figures {
        for key in ["figure", "target", "baseline_is"] {
            assert!(f[key].is_string(), "{f}");
        }
        for key in ["measured", "baseline", "ratio"] {
            assert!(f[key].is_f64(), "{f}");
        }
    }
    for name in ["throughput (records/s)", "e2e p99", "catch-up (payload MB/s)"] {
        assert!(
            figures.iter().any(|f| f["figure"].as_str().is_some_and(|s| s.starts_with(name))),
            "figure {name:?} in {report}"
        );
    }
}
