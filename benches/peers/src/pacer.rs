//! The open-loop pacer: a dedicated OS thread that hands record `i` to the runtime at its
//! intended send time `start + i / rate`. It sleeps with a 1 ns timer slack (not a 1 ms tick),
//! and never waits for acknowledgements, so a stalled peer cannot slow the offered load; a
//! late hand-off is counted as latency by the caller, which measures from the intended time.

use std::num::NonZeroU64;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

/// One record that is due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    /// When the record should have been sent: the origin of its latency.
    pub(crate) intended: Instant,
}

/// Starts the pacer thread: `total` records at `rate` records/s from `start`. It stops early
/// if the receiver is gone. `rate` must be positive and finite (checked by `flags`).
pub(crate) fn spawn(
    start: Instant,
    rate: f64,
    total: u64,
    due: UnboundedSender<Due>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("pacer".into()).spawn(move || {
        // Best effort: without it, each sleep may overshoot by the default 50 µs slack.
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
        let period_ns = 1e9 / rate;
        for index in 0..total {
            // `as u64` saturates; `checked_add` keeps an absurd schedule from panicking.
            let offset = Duration::from_nanos((index as f64 * period_ns) as u64);
            let Some(intended) = start.checked_add(offset) else { return };
            loop {
                let now = Instant::now();
                if now >= intended {
                    break;
                }
                thread::sleep(intended - now);
            }
            if due.send(Due { intended }).is_err() {
                return;
            }
        }
    })
}
