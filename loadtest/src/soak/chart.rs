//! The soak as one SVG (plotters): RSS with the compared tenths shaded and the fitted line;
//! open descriptors (all, and without client connections), threads and client connections;
//! throughput per interval; latency per interval on a log scale. Time 0 is the start of the
//! load; samples before and after it show the idle process.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Verdict, own_fds};
use crate::report::{DrawResult, draw_legend};
use crate::run::Summary;
use crate::sample::Sample;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// `Palette99` index of its blue, kept apart from the red fitted line.
const BLUE_INDEX: usize = 3;

/// Draws the soak into an SVG at `path`: RSS, descriptors and threads from the samples,
/// throughput and latency from the run's intervals, over seconds since the window began.
///
/// # Errors
/// The file cannot be written.
pub fn render_svg(
    run: &Summary,
    samples: &[Sample],
    verdict: &Verdict,
    path: &Path,
    title: &str,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1280, 1100)).into_drawing_area();
    draw(&root, run, samples, verdict, title)
        .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn draw(
    root: &Area<'_>,
    run: &Summary,
    samples: &[Sample],
    v: &Verdict,
    title: &str,
) -> DrawResult {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let panels = root.split_evenly((4, 1));
    let window = v.window;
    let t = |s: &Sample| window.t(s);
    let x_lo = samples.iter().map(t).fold(0.0f64, f64::min);
    let x_hi = samples.iter().map(t).fold(window.len_s, f64::max);
    let x = x_lo..x_hi.max(x_lo + 1.0);

    let rss: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (t(s), s.rss_kib as f64 / 1024.0))
        .collect();
    let rss_caption = v.rss.map_or_else(
        || "RSS (MiB)".to_string(),
        |r| {
            format!(
                "RSS (MiB): {:.1} → {:.1} (medians of the shaded tenths), slope {:+.3} MiB/min \
                 over the second half",
                r.start, r.end, r.slope
            )
        },
    );
    let mut chart = panel(&panels[0], &rss_caption, x.clone(), &rss, "MiB", 1.15)?;
    tenths(&mut chart, window.len_s)?;
    series(&mut chart, &rss, BLUE_INDEX, "RSS")?;
    if let Some(fit) = v.rss {
        // The fitted line over the second half, through the mean of its points.
        let half: Vec<&(f64, f64)> = rss
            .iter()
            .filter(|p| p.0 >= window.len_s / 2.0 && p.0 <= window.len_s)
            .collect();
        if let (Some(first), Some(last)) = (half.first(), half.last()) {
            let n = half.len() as f64;
            let (mx, my) = (
                half.iter().map(|p| p.0).sum::<f64>() / n,
                half.iter().map(|p| p.1).sum::<f64>() / n,
            );
            let at = |x: f64| my + fit.slope / 60.0 * (x - mx);
            chart
                .draw_series(LineSeries::new(
                    [(first.0, at(first.0)), (last.0, at(last.0))],
                    RED.stroke_width(2),
                ))?
                .label("least squares, second half")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        }
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;

    let fds: Vec<(f64, f64)> = samples.iter().map(|s| (t(s), s.fds as f64)).collect();
    let own: Vec<(f64, f64)> = samples.iter().map(|s| (t(s), own_fds(s))).collect();
    let threads: Vec<(f64, f64)> = samples.iter().map(|s| (t(s), s.threads as f64)).collect();
    let conns: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.connections.map(|c| (t(s), c)))
        .collect();
    let counts: Vec<(f64, f64)> = fds.iter().chain(&threads).chain(&conns).copied().collect();
    let fd_caption = v.own_fds.map_or_else(
        || "Open FDs, threads, client connections".to_string(),
        |f| {
            format!(
                "Open FDs without client connections: {:.0} → {:.0}, slope {:+.2}/min; all FDs; \
                 threads; client connections",
                f.start, f.end, f.slope
            )
        },
    );
    let mut chart = panel(&panels[1], &fd_caption, x.clone(), &counts, "count", 1.6)?;
    tenths(&mut chart, window.len_s)?;
    series(
        &mut chart,
        &own,
        BLUE_INDEX,
        "open FDs without client connections",
    )?;
    series(&mut chart, &fds, 0, "open FDs, all")?;
    series(&mut chart, &threads, 1, "threads")?;
    if !conns.is_empty() {
        series(&mut chart, &conns, 4, "client connections (gauge)")?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    let throughput: Vec<(f64, f64)> = run
        .intervals
        .iter()
        .map(|i| (i.t_s, i.throughput))
        .collect();
    let tp_caption = match run.rate {
        Some(r) => format!("Throughput per interval (successful req/s; target {r:.0})"),
        None => "Throughput per interval (successful req/s)".to_string(),
    };
    let mut chart = panel(
        &panels[2],
        &tp_caption,
        x.clone(),
        &throughput,
        "req/s",
        1.15,
    )?;
    series(&mut chart, &throughput, BLUE_INDEX, "req/s")?;

    let latency = |f: fn(&crate::run::IntervalStats) -> u64| -> Vec<(f64, f64)> {
        run.intervals
            .iter()
            .map(|i| (i.t_s, f(i).max(1) as f64 / 1e3))
            .collect()
    };
    let (p50, p99, p999) = (
        latency(|i| i.latency_us.p50),
        latency(|i| i.latency_us.p99),
        latency(|i| i.latency_us.p999),
    );
    let all: Vec<f64> = p50.iter().chain(&p999).map(|p| p.1).collect();
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(0.001) / 1.5;
    // A decade and a half above the worst value: room for the legend.
    let hi = all.iter().copied().fold(0.0f64, f64::max).max(lo * 10.0) * 30.0;
    let mut chart = ChartBuilder::on(&panels[3])
        .caption(
            "Latency per interval (ms, log scale; from each request's scheduled time)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(x, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started (before 0: idle)")
        .y_desc("ms")
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    series(&mut chart, &p50, 0, "p50")?;
    series(&mut chart, &p99, 1, "p99")?;
    series(&mut chart, &p999, BLUE_INDEX, "p99.9")?;
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

type Chart<'a, 'b, Y> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;
type Linear = plotters::coord::types::RangedCoordf64;

/// A panel with a linear y axis from 0 to `headroom` times the largest value.
fn panel<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    x: std::ops::Range<f64>,
    points: &[(f64, f64)],
    y_desc: &str,
    headroom: f64,
) -> Result<Chart<'a, 'b, Linear>, Box<dyn std::error::Error>> {
    let top = points.iter().map(|p| p.1).fold(1.0, f64::max) * headroom;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(x, 0.0..top)?;
    chart
        .configure_mesh()
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    Ok(chart)
}

/// Shades the second and the last tenth of the window: the two medians compared.
fn tenths(chart: &mut Chart<'_, '_, Linear>, window_s: f64) -> DrawResult {
    let (lo, hi) = {
        let r = chart.y_range();
        (r.start, r.end)
    };
    let band = BLUE.mix(0.08).filled();
    for k in [1.0, 9.0] {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(k * window_s / 10.0, lo), ((k + 1.0) * window_s / 10.0, hi)],
            band,
        )))?;
    }
    Ok(())
}

fn series<Y>(
    chart: &mut Chart<'_, '_, Y>,
    points: &[(f64, f64)],
    color: usize,
    label: &str,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    let style = Palette99::pick(color).to_rgba().stroke_width(2);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), style))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    Ok(())
}
