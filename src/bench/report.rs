//! What every `dlog bench` report shares: the JSON envelope (which benchmark, dlog's version,
//! the command line, when, and the machine with the disk under the benchmark's directory), the
//! writing of a report, and printing to stdout that a closed pipe (`| head`) does not turn into
//! a panic. `dlog bench --compare` reads any two reports of the same benchmark back.
//!
//! Invariant: the envelope's keys (`bench`, `version`, `command`, `started_unix_s`, `machine`)
//! come first in every report and a report's own keys never replace them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use super::machine::Machine;

/// `body` (an object; anything else goes under "report") with the envelope's keys first:
/// `bench`, `version`, `command`, `started_unix_s`, `machine` (the disk under `dir`).
pub fn envelope(bench: &str, dir: &Path, body: Value) -> Value {
    let mut out = Map::new();
    out.insert("bench".into(), json!(bench));
    out.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    out.insert("command".into(), json!(std::env::args().collect::<Vec<_>>().join(" ")));
    out.insert("started_unix_s".into(), json!(unix_now_s()));
    let machine = serde_json::to_value(Machine::describe(dir)).unwrap_or(Value::Null);
    out.insert("machine".into(), machine);
    match body {
        Value::Object(fields) => {
            for (k, v) in fields {
                out.entry(k).or_insert(v);
            }
        }
        other => {
            out.insert("report".into(), other);
        }
    }
    Value::Object(out)
}

/// Now, in seconds since the Unix epoch (0 if the clock is before it): when a report ran.
pub fn unix_now_s() -> u64 {
    #[expect(clippy::disallowed_methods, reason = "a report says when it ran")]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes `report` as pretty JSON to `path` and says so on stderr.
pub fn write_json(path: &Path, report: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(report)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// `println!` that a closed stdout (`| head`) does not turn into a panic: the benchmarks'
/// tables go through it.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::bench::report::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints `text` to stdout; a closed stdout ends the output quietly (the run's result is
/// still in its JSON file, if asked for).
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_comes_first_and_keeps_the_body() {
        let v = envelope("journal", Path::new("."), json!({"figures": [1, 2], "records_per_s": 5.0}));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[..5], ["bench", "version", "command", "started_unix_s", "machine"]);
        assert_eq!(v["records_per_s"], 5.0);
        assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
        assert_eq!(envelope("x", Path::new("."), json!(3))["report"], 3);
    }
}
