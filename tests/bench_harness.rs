//! `dlog bench` (the harness) as a user runs it: a short default-workload run writes a JSON
//! report with the documented schema, every record sent was acknowledged or counted as an
//! error (and, on a healthy embedded cluster, none was lost or misread), the plot and the
//! HdrHistogram files are written, `--compare` reads two reports back, the temp directory is
//! removed; bad flags are one-line errors.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn dlog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dlog"))
}

fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("{pointer} is not a number in {v:#}"))
}

fn percentiles(v: &Value, key: &str) {
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(number(v, &format!("/{key}/{p}")) > 0.0, "{key}.{p} in {v:#}");
    }
    let (p50, p99, max) = (
        number(v, &format!("/{key}/p50")),
        number(v, &format!("/{key}/p99")),
        number(v, &format!("/{key}/max")),
    );
    assert!(p50 <= p99 && p99 <= max, "{key} percentiles in order: {v:#}");
}

fn run_bench(dir: &Path, extra: &[&str]) -> Value {
    let json = dir.join("report.json");
    let output = dlog()
        .args(["bench", "--duration", "3s", "--warmup", "500ms", "--quiet", "--dir"])
        .arg(dir)
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .expect("run dlog bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "dlog bench failed:\n{stderr}\n{stdout}");
    assert!(stdout.contains("throughput (peak)") && stdout.contains("disk baseline"), "{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON")
}

#[test]
fn a_short_default_run_reports_the_schema_and_accounts_for_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plot = dir.path().join("run.svg");
    let hgrm = dir.path().join("publish.hgrm");
    let extra = ["--plot", plot.to_str().unwrap(), "--hgrm", hgrm.to_str().unwrap()];
    let r = run_bench(dir.path(), &extra);

    // The figures.
    assert!(number(&r, "/records_per_s") > 0.0 && number(&r, "/mb_per_s") > 0.0, "{r:#}");
    percentiles(&r, "publish_latency_us");
    percentiles(&r, "e2e_latency_us");
    assert!(number(&r, "/baseline/mb_per_s") > 0.0, "{r:#}");
    percentiles(&r["baseline"], "latency_us");
    assert!(number(&r, "/latency_at_records_per_s") > 0.0, "the rated phase is open loop: {r:#}");
    assert!(number(&r, "/ratios/throughput_vs_disk_per_replica") > 0.0, "{r:#}");
    // The configuration, whole, and the machine.
    for key in ["workload", "writers", "logs", "readers", "record_size", "rate", "duration_s", "warmup_s"] {
        assert!(r["config"].get(key).is_some(), "config.{key} in {r:#}");
    }
    for key in ["ensemble_size", "write_quorum_size", "ack_quorum_size"] {
        assert!(number(&r["config"], &format!("/{key}")) >= 2.0, "config.{key}");
    }
    assert_eq!(r["config"]["workload"], "mixed");
    assert!(number(&r, "/machine/cores") >= 1.0 && r["machine"]["kernel"].is_string(), "{r:#}");
    assert!(r["machine"]["disk"]["filesystem"].is_string(), "{r:#}");

    // Every record sent was acknowledged or counted as an error, per phase and in total; a
    // healthy embedded cluster loses nothing and readers see every record once, in order.
    let (sent, acked, write_errors) =
        (number(&r, "/sent"), number(&r, "/acked"), number(&r, "/write_errors"));
    assert!(sent > 0.0, "{r:#}");
    assert_eq!(sent, acked + write_errors, "{r:#}");
    let phases = r["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["warmup", "peak", "settle", "rated"]);
    for p in phases {
        assert_eq!(number(p, "/sent"), number(p, "/acked") + number(p, "/write_errors"), "{p:#}");
    }
    assert_eq!(number(&r, "/errors"), 0.0, "{r:#}");
    assert!(number(&phases[3], "/records_read") > 0.0, "the tailing readers read the rated phase: {r:#}");
    let series = r["series"].as_array().expect("series");
    assert!(series.len() >= 4, "a point a second: {r:#}");
    let acked_in_series: f64 = series
        .windows(2)
        .map(|w| number(&w[1], "/records_per_s") * (number(&w[1], "/t_s") - number(&w[0], "/t_s")))
        .sum::<f64>()
        + number(&series[0], "/records_per_s") * number(&series[0], "/t_s");
    assert!(
        (acked_in_series - acked).abs() <= acked * 0.01 + 10.0,
        "the series adds up: {acked_in_series} of {acked}"
    );

    // The other outputs.
    let svg = std::fs::read_to_string(&plot).expect("plot");
    assert!(svg.starts_with("<svg") && svg.contains("records/s"), "{svg:.200}");
    let text = std::fs::read_to_string(&hgrm).expect("hgrm");
    assert!(text.contains("Percentile") && text.contains("#[Max"), "{text}");
    assert!(dir.path().join("publish.e2e.hgrm").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("dlog-bench-"))
        .collect();
    assert!(leftovers.is_empty(), "the temp directory is removed: {leftovers:?}");

    let report = dir.path().join("report.json");
    let output = dlog().args(["bench", "--compare"]).arg(&report).arg(&report).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("records/s") && l.ends_with("1.000")), "{stdout}");
    assert!(stdout.contains("same configuration and machine"), "{stdout}");
}

#[test]
fn bad_flags_are_one_line_errors() {
    let cases: &[&[&str]] = &[
        &["bench", "--rate", "0"],
        &["bench", "--record-size", "8"],
        &["bench", "--writers", "4", "--logs", "2"],
        &["bench", "--ack-quorum", "4"],
        &["bench", "--duration", "0s"],
        &["bench", "--rate", "1e300"],
        &["bench", "--writers", "1000", "--logs", "1000"],
        &["bench", "--in-flight-mib", "0"],
        &["bench", "--json", "/nonexistent/dir/report.json"],
        &["bench", "--plot", "x.png"],
        &["bench", "--workload", "nope"],
        &["bench", "--compare", "/nonexistent/a.json", "/nonexistent/b.json"],
    ];
    // In a directory of its own: a check that regressed would run a benchmark there.
    let dir = tempfile::tempdir().expect("tempdir");
    for args in cases {
        let output = dlog().args(*args).arg("--dir").arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got:\n{stderr}");
        assert!(lines[0].starts_with("error"), "{args:?}: {stderr}");
    }
}
