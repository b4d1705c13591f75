//! The live progress line (stderr, once a second: elapsed, phase, records/s, MB/s, current
//! publish and end-to-end p99, errors) and the throughput-over-time series it gathers for the
//! report and the plot. On a terminal the line rewrites itself; elsewhere (a log, CI) it is a
//! line per second.
//!
//! Invariant: every interval handed to `Live` lands in exactly one series point (the last
//! point takes what arrived after the timeline's end).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::load::Control;
use crate::bench::log::sleep;
use crate::bench::stats::Latency;

/// One second of the run (the last one may be shorter or longer: the drain).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SeriesPoint {
    /// End of the interval, s after the timeline's 0.
    pub(crate) t_s: f64,
    /// The phase it ended in ("drain" after the last).
    pub(crate) phase: String,
    /// Acknowledgements per second in it.
    pub(crate) records_per_s: f64,
    /// Acknowledged payload MB/s (10^6 bytes) in it.
    pub(crate) mb_per_s: f64,
    /// Publish p99 of the acknowledgements in it, us.
    pub(crate) publish_p99_us: Option<f64>,
    /// End-to-end p99 of the records read in it, us.
    pub(crate) e2e_p99_us: Option<f64>,
    /// Errors in it.
    pub(crate) errors: u64,
}

/// The progress thread.
pub(crate) struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<SeriesPoint>>>,
}

impl Drop for Progress {
    /// A run that failed stops its line too.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Progress {
    /// Starts the line (printed when `show`) and the series.
    pub(crate) fn start(control: Arc<Control>, show: bool) -> std::io::Result<Progress> {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::Builder::new()
            .name("dlog-bench-progress".into())
            .spawn(move || run(&control, &stop, show))?;
        Ok(Progress { done, thread: Some(thread) })
    }

    /// Stops it once the load is over: the series.
    pub(crate) fn finish(mut self) -> Vec<SeriesPoint> {
        self.done.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

fn run(control: &Control, done: &AtomicBool, show: bool) -> Vec<SeriesPoint> {
    let terminal = std::io::stderr().is_terminal();
    let mut series = Vec::new();
    let mut last_ns = 0u64;
    let mut second = 1u64;
    loop {
        // Wake at each whole second of the run, checking for the end every 50 ms.
        let target = second * 1_000_000_000;
        let finished = loop {
            if done.load(Ordering::Relaxed) {
                break true;
            }
            let now = control.clock.ns();
            if now >= target {
                break false;
            }
            sleep(std::time::Duration::from_nanos((target - now).min(50_000_000)));
        };
        let now = control.clock.ns();
        let interval = control.live.take();
        let empty = interval.acked == 0 && interval.errors == 0 && interval.e2e.is_empty();
        if now > last_ns && (!empty || !finished) {
            let seconds = (now - last_ns) as f64 / 1e9;
            // The phase of the interval's middle (its end may be a phase boundary).
            let phase = match control.timeline.phase_at(last_ns + (now - last_ns) / 2) {
                Some(p) => control.plans[p].name.to_owned(),
                None => "drain".to_owned(),
            };
            let point = SeriesPoint {
                t_s: now as f64 / 1e9,
                phase,
                records_per_s: interval.acked as f64 / seconds,
                mb_per_s: interval.bytes as f64 / seconds / 1e6,
                publish_p99_us: Latency::of(&interval.publish).map(|p| p.p99),
                e2e_p99_us: Latency::of(&interval.e2e).map(|p| p.p99),
                errors: interval.errors,
            };
            if show {
                print_line(&point, terminal);
            }
            series.push(point);
            last_ns = now;
        }
        if finished {
            break;
        }
        second = now / 1_000_000_000 + 1;
    }
    if show && terminal {
        eprintln!();
    }
    series
}

fn print_line(p: &SeriesPoint, terminal: bool) {
    let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} us"));
    let line = format!(
        "{:>6.1} s  {:<8} {:>11.0} rec/s {:>9.1} MB/s  publish p99 {:>10}  e2e p99 {:>10}  errors {}",
        p.t_s,
        p.phase,
        p.records_per_s,
        p.mb_per_s,
        us(p.publish_p99_us),
        us(p.e2e_p99_us),
        p.errors
    );
    let mut err = std::io::stderr().lock();
    // A closed stderr is not worth failing the run for.
    let _ = if terminal { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
    let _ = err.flush();
}
