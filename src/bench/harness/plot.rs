//! `--plot PATH`: an SVG of the run, two charts: the latency percentile curves (publish and end
//! to end, of the latency phase) on log scales, percentiles as `1/(1-q)` so the tail spreads
//! out; and durable records/s over time, each second of the run, warm-up included.
//!
//! Invariant: only `.svg` paths are written (checked before the run too); an empty histogram
//! draws no curve rather than failing.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::progress::SeriesPoint;

/// The largest `1/(1-q)` drawn (99.999%).
const X_MAX: f64 = 1e5;

/// A curve: its name and histogram of nanoseconds.
pub(crate) type Curve<'a> = (&'a str, &'a Histogram<u64>);

/// Refuses a path this module cannot write (checked before a run, so a run is not lost).
pub(crate) fn check_path(path: &Path) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        bail!("--plot {}: only SVG is written (give a path ending in .svg)", path.display());
    }
    Ok(())
}

/// Writes the SVG.
pub(crate) fn write_svg(
    path: &Path,
    title: &str,
    curves: &[Curve<'_>],
    series: &[SeriesPoint],
) -> Result<()> {
    check_path(path)?;
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let (top, bottom) = root.split_vertically(520);
    latency_chart(&top, title, curves).map_err(|e| draw(&e))?;
    throughput_chart(&bottom, series).map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

/// `(1/(1-q), us)` points of a histogram, q < 1.
fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1000.0))
        .filter(|(q, _)| *q < 1.0)
        .map(|(q, us)| (1.0 / (1.0 - q), us.max(0.1)))
        .filter(|(x, _)| *x <= X_MAX)
        .collect()
}

/// "99.9%" for x = 1000.
fn percentile_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let decimals = (x.log10().round() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

fn latency_chart(area: &Area<'_>, title: &str, curves: &[Curve<'_>]) -> DrawResult {
    let all: Vec<Vec<(f64, f64)>> = curves.iter().map(|(_, h)| points(h)).collect();
    let values = all.iter().flatten().map(|p| p.1);
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 { (lo / 2.0, hi * 2.0) } else { (1.0, 1000.0) };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..X_MAX).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (i, ((name, _), pts)) in curves.iter().zip(all).enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;
    Ok(())
}

fn throughput_chart(area: &Area<'_>, series: &[SeriesPoint]) -> DrawResult {
    let t_max = series.iter().map(|p| p.t_s).fold(1.0, f64::max);
    let r_max = series.iter().map(|p| p.records_per_s).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("durable records/s over time", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..r_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("records/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    // Steps: each point covers the second before it.
    let mut steps = Vec::new();
    let mut from = 0.0;
    for p in series {
        steps.push((from, p.records_per_s));
        steps.push((p.t_s, p.records_per_s));
        from = p.t_s;
    }
    chart.draw_series(LineSeries::new(steps, BLUE.stroke_width(2)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::harness::recorder::histogram;

    #[test]
    fn labels_and_an_svg() {
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&100.0), "99%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
        let mut h = histogram();
        for us in 1..=5000u64 {
            h.record(us * 1000).unwrap();
        }
        let series: Vec<SeriesPoint> = (1..=5)
            .map(|t| SeriesPoint {
                t_s: t as f64,
                phase: "peak".into(),
                records_per_s: 1000.0 * t as f64,
                mb_per_s: 1.0,
                publish_p99_us: Some(900.0),
                e2e_p99_us: None,
                errors: 0,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        write_svg(&path, "test", &[("publish", &h), ("end to end", &h)], &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("publish") && svg.contains("99.9%"), "{svg:.300}");
        assert!(
            write_svg(&dir.path().join("run.png"), "x", &[], &series)
                .unwrap_err()
                .to_string()
                .contains("SVG")
        );
    }
}
