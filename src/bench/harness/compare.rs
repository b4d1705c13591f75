//! `dlog bench --compare A.json B.json`: two reports of one benchmark side by side, B over A
//! for each figure (the harness's chosen figures; every number of the other benchmarks'
//! reports), and the configuration and machine settings that differ (a comparison of runs that
//! differ in more than one thing says so).
//!
//! Invariant: only reports of one benchmark are compared (their `bench` keys match); where a
//! run wrote and the machine's load are not reported as differences.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The harness's reports' `bench`.
pub(crate) const HARNESS: &str = "harness";

/// The harness's figures compared: label and JSON pointer.
const ROWS: &[(&str, &str)] = &[
    ("records/s", "/records_per_s"),
    ("MB/s", "/mb_per_s"),
    ("errors", "/errors"),
    ("publish p50 us", "/publish_latency_us/p50"),
    ("publish p90 us", "/publish_latency_us/p90"),
    ("publish p99 us", "/publish_latency_us/p99"),
    ("publish p99.9 us", "/publish_latency_us/p999"),
    ("publish max us", "/publish_latency_us/max"),
    ("e2e p50 us", "/e2e_latency_us/p50"),
    ("e2e p90 us", "/e2e_latency_us/p90"),
    ("e2e p99 us", "/e2e_latency_us/p99"),
    ("e2e p99.9 us", "/e2e_latency_us/p999"),
    ("e2e max us", "/e2e_latency_us/max"),
    ("latency at records/s", "/latency_at_records_per_s"),
    ("disk baseline MB/s", "/baseline/mb_per_s"),
    ("disk baseline p99 us", "/baseline/latency_us/p99"),
    ("throughput / (disk / replicas)", "/ratios/throughput_vs_disk_per_replica"),
    ("publish p99 / disk p99", "/ratios/publish_p99_vs_disk_p99"),
    ("wall time s", "/wall_s"),
];

fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    if value.get("bench").and_then(Value::as_str).is_none() {
        bail!("{}: not a `dlog bench` report (no \"bench\" key)", path.display());
    }
    Ok(value)
}

/// Every number in `v` that is not about when or where it ran, by dotted path, in order.
fn numbers(v: &Value, path: &str, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) => out.extend(n.as_f64().map(|x| (path.to_owned(), x))),
        Value::Object(fields) => {
            for (k, v) in fields {
                if !matches!(k.as_str(), "machine" | "started_unix_s" | "series" | "command" | "version") {
                    numbers(v, &if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                numbers(v, &format!("{path}.{i}"), out);
            }
        }
        _ => {}
    }
}

/// The comparison table of two report files of the same benchmark: the harness's figures, or
/// every number of another benchmark's report.
pub(crate) fn compare(a_path: &Path, b_path: &Path) -> Result<String> {
    use std::fmt::Write;
    let (a, b) = (load(a_path)?, load(b_path)?);
    let (bench_a, bench_b) = (&a["bench"], &b["bench"]);
    if bench_a != bench_b {
        bail!(
            "{} is a {bench_a} report and {} a {bench_b} report: compare runs of one benchmark",
            a_path.display(),
            b_path.display()
        );
    }
    let rows: Vec<(String, Option<f64>, Option<f64>)> = if bench_a == HARNESS {
        let number = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64);
        ROWS.iter()
            .map(|(label, pointer)| ((*label).to_owned(), number(&a, pointer), number(&b, pointer)))
            .collect()
    } else {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        numbers(&a, "", &mut xs);
        numbers(&b, "", &mut ys);
        let ys: std::collections::HashMap<String, f64> = ys.into_iter().collect();
        xs.into_iter()
            .map(|(k, x)| {
                let y = ys.get(&k).copied();
                (k, Some(x), y)
            })
            .collect()
    };
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(32);
    let mut t = String::new();
    let _ = writeln!(t, "A: {}\nB: {}\n", a_path.display(), b_path.display());
    let _ = writeln!(t, "{:<width$} {:>14} {:>14} {:>8}", "figure", "A", "B", "B/A");
    for (label, x, y) in rows {
        if x.is_none() && y.is_none() {
            continue;
        }
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let ratio = match (x, y) {
            (Some(x), Some(y)) if x != 0.0 => format!("{:.3}", y / x),
            _ => "-".to_owned(),
        };
        let _ = writeln!(t, "{label:<width$} {:>14} {:>14} {ratio:>8}", show(x), show(y));
    }
    let mut differences = Vec::new();
    for section in ["config", "machine"] {
        let (Some(Value::Object(x)), Some(Value::Object(y))) = (a.get(section), b.get(section)) else {
            continue;
        };
        let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let (vx, vy) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
            // Where a run wrote (its temp directory) and how busy the machine was are not
            // differences of the machine.
            let without_dir = |v: &Value| {
                let mut v = v.clone();
                if let Some(fields) = v.as_object_mut() {
                    fields.remove("dir");
                }
                v
            };
            if without_dir(vx) != without_dir(vy) && k != "load_avg_1m" {
                differences.push(format!("  {section}.{k}: A {vx}, B {vy}"));
            }
        }
    }
    let _ = writeln!(t);
    if differences.is_empty() {
        let _ = writeln!(t, "same configuration and machine");
    } else {
        let _ = writeln!(t, "differences:\n{}", differences.join("\n"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_with_ratios_and_differences() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: Value| {
            let p = dir.path().join(name);
            std::fs::write(&p, v.to_string()).unwrap();
            p
        };
        let a = write(
            "a.json",
            serde_json::json!({"bench": "harness", "records_per_s": 100.0, "mb_per_s": 1.0, "errors": 0,
                "publish_latency_us": {"p99": 500.0}, "config": {"writers": 1}, "machine": {"cores": 2}}),
        );
        let b = write(
            "b.json",
            serde_json::json!({"bench": "harness", "records_per_s": 250.0, "mb_per_s": 2.5, "errors": 0,
                "publish_latency_us": {"p99": 250.0}, "config": {"writers": 4}, "machine": {"cores": 2}}),
        );
        let t = compare(&a, &b).unwrap();
        assert!(t.lines().any(|l| l.starts_with("records/s") && l.ends_with("2.500")), "{t}");
        assert!(t.lines().any(|l| l.starts_with("publish p99 us") && l.ends_with("0.500")), "{t}");
        assert!(t.contains("config.writers: A 1, B 4") && !t.contains("machine.cores"), "{t}");
        let other = write(
            "j1.json",
            serde_json::json!({"bench": "journal", "machine": {"cores": 2, "disk": {"dir": "/a", "device": "vda"}},
            "workloads": [{"entries_per_s": 10.0, "latency_us": {"p99": 4.0}}]}),
        );
        let other2 = write(
            "j2.json",
            serde_json::json!({"bench": "journal", "machine": {"cores": 4, "disk": {"dir": "/b", "device": "vda"}},
            "workloads": [{"entries_per_s": 30.0, "latency_us": {"p99": 2.0}}]}),
        );
        let t = compare(&other, &other2).unwrap();
        assert!(t.lines().any(|l| l.starts_with("workloads.0.entries_per_s") && l.ends_with("3.000")), "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("workloads.0.latency_us.p99") && l.ends_with("0.500")),
            "{t}"
        );
        assert!(t.contains("machine.cores: A 2, B 4") && !t.contains("machine.disk"), "{t}");
        assert!(compare(&a, &other).unwrap_err().to_string().contains("one benchmark"));
        let bad = write("bad.json", serde_json::json!({"x": 1}));
        assert!(compare(&a, &bad).unwrap_err().to_string().contains("not a `dlog bench` report"));
        let garbage = write("garbage.json", Value::String("{".into()));
        assert!(compare(&garbage, &b).is_err());
        assert!(compare(&dir.path().join("missing.json"), &b).unwrap_err().to_string().contains("reading"));
    }
}
