//! HdrHistogram's percentile distribution text (the `.hgrm` format that HdrHistogram's plotter
//! and `HistogramLogProcessor` read): value (ms), percentile, total count, 1/(1-percentile), 5
//! ticks per half distance, then mean, standard deviation, max and count.
//!
//! Invariant: rows are in increasing value, percentile and count; the last is the 100th
//! percentile with the histogram's whole count.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// Nanoseconds per millisecond: the file's values are milliseconds.
const NS_PER_MS: f64 = 1e6;

/// The distribution of a histogram of nanoseconds.
pub(crate) fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / NS_PER_MS;
        if q < 1.0 {
            let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / NS_PER_MS,
        h.stdev() / NS_PER_MS
    );
    let _ =
        writeln!(out, "#[Max     = {:>12.3}, Total count    = {:>12}]", h.max() as f64 / NS_PER_MS, h.len());
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::harness::recorder::histogram;

    #[test]
    fn distribution_is_monotonic_and_complete() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            h.record(us * 1000).unwrap();
        }
        let text = percentile_distribution(&h);
        let rows: Vec<(f64, f64, u64)> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
            })
            .collect();
        assert!(rows.len() > 20, "{text}");
        assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2), "{text}");
        let last = rows.last().unwrap();
        assert_eq!((last.1, last.2), (1.0, 10_000));
        assert!((last.0 - 10.0).abs() < 0.02, "max {} ms", last.0);
        // The median row is near 5 ms.
        let median = rows.iter().find(|r| r.1 >= 0.5).unwrap();
        assert!((median.0 - 5.0).abs() < 0.02, "{median:?}");
        assert!(text.contains("#[Max     =       10.00"), "{text}");
    }
}
