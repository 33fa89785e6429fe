//! `loadtest report`: reads the `--json` summaries of several runs, draws them side by side in
//! one SVG (throughput bars on the left, latency percentile curves on a log scale on the
//! right) with plotters, and prints a markdown table of the same runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::run::Summary;
use crate::run::stats::format_us;

/// The percentiles on the latency panel's x axis.
const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];
/// Width of one character of a 12 px axis label, roughly.
const LABEL_CHAR_WIDTH: f64 = 7.0;
/// Height of one legend row in pixels, roughly.
const LEGEND_ROW: f64 = 18.0;
/// Longest run name shown under a bar; longer ones are cut with "…".
const MAX_BAR_LABEL: usize = 22;

/// `loadtest report`: the command line.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// JSON files written by `loadtest run --json`, in the order to show them.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write the chart.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: PathBuf,
    /// Title above both panels.
    #[arg(long, default_value = "Load test")]
    pub title: String,
}

/// Reads the runs, writes the SVG and prints the markdown table.
///
/// # Errors
/// An unreadable or malformed JSON file, or an SVG that cannot be written.
pub fn execute(args: &ReportArgs) -> anyhow::Result<()> {
    let runs = load(&args.files)?;
    render_svg(&runs, &args.svg, &args.title)?;
    print!("{}", markdown(&runs));
    Ok(())
}

/// The summaries in `paths`, in order.
///
/// # Errors
/// A file that cannot be read or is not a `loadtest run --json` summary.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<Summary>> {
    paths
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a loadtest run summary", p.display()))
        })
        .collect()
}

/// A markdown table of `runs`: one row each, latencies in µs or ms.
pub fn markdown(runs: &[Summary]) -> String {
    let mut out = String::from(
        "| run | scenario | load | protocol | requests | req/s | p50 | p90 | p99 | p99.9 | max \
         | errors | client CPU |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let load = match (r.concurrency, r.rate) {
            (Some(n), _) => format!("{n} conc."),
            (_, Some(rate)) => format!("{rate} req/s"),
            _ => r.mode.clone(),
        };
        let protocol = format!(
            "{}{}{}",
            if r.protocol == "http2" { "h2" } else { "h1" },
            if r.tls { "+TLS" } else { "" },
            if r.connection == "per-request" {
                ", new conn"
            } else {
                ""
            }
        );
        let l = &r.latency_us;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.2} s |",
            r.name.replace('|', "\\|"),
            r.scenario,
            load,
            protocol,
            r.requests,
            r.throughput,
            format_us(l.p50),
            format_us(l.p90),
            format_us(l.p99),
            format_us(l.p999),
            format_us(l.max),
            r.failed(),
            r.client_cpu_seconds,
        );
    }
    out
}

/// Draws `runs` into an SVG file at `path`: throughput bars and latency percentile curves.
///
/// # Errors
/// No runs, or the file cannot be written.
pub fn render_svg(runs: &[Summary], path: &Path, title: &str) -> anyhow::Result<()> {
    if runs.is_empty() {
        bail!("no runs to draw");
    }
    let width = 1280u32.max(200 * runs.len() as u32);
    let root = SVGBackend::new(path, (width, 600)).into_drawing_area();
    draw(&root, runs, title).map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

pub(crate) type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(root: &DrawingArea<SVGBackend<'_>, Shift>, runs: &[Summary], title: &str) -> DrawResult {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    throughput_panel(&left, runs)?;
    latency_panel(&right, runs)?;
    Ok(())
}

fn throughput_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, runs: &[Summary]) -> DrawResult {
    let n = runs.len();
    let top = runs.iter().map(|r| r.throughput).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput (successful requests/s)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)?;
    let numbered = use_numbers(runs, area.dim_in_pixel().0);
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if numbered => format!("#{}", i + 1),
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            runs.get(*i).map(|r| short(&r.name)).unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .x_label_style(("sans-serif", 12))
        .y_desc("req/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(runs.iter().enumerate().map(|(i, r)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), r.throughput),
            ],
            Palette99::pick(i).mix(0.85).filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        bar
    }))?;
    chart.draw_series(runs.iter().enumerate().map(|(i, r)| {
        Text::new(
            format!("{:.0}", r.throughput),
            (SegmentValue::CenterOf(i), r.throughput + top * 0.02),
            ("sans-serif", 13)
                .into_font()
                .into_text_style(area)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    }))?;
    Ok(())
}

fn latency_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, runs: &[Summary]) -> DrawResult {
    let points = |r: &Summary| {
        let l = &r.latency_us;
        [l.p50, l.p90, l.p99, l.p999].map(|v| v.max(1) as f64)
    };
    let all = runs.iter().flat_map(points);
    let (lo, hi) = all.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = ((lo / 2.0).max(1.0), hi * 2.0);
    // Room above the curves for the legend: its share of the height, in decades.
    let legend = (LEGEND_ROW * runs.len() as f64 + 30.0) / f64::from(area.dim_in_pixel().1);
    let legend = legend.min(0.6);
    let hi = hi * 10f64.powf((hi / lo).log10() * legend / (1.0 - legend));
    let numbered = use_numbers(runs, area.dim_in_pixel().0);
    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile (log scale)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0..PERCENTILES.len() - 1).into_segmented(),
            (lo..hi).log_scale(),
        )?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => PERCENTILES
            .get(*i)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .x_labels(PERCENTILES.len())
        .x_label_formatter(&label)
        .y_labels(12)
        .y_desc("latency")
        .y_label_formatter(&|v| format_us(*v as u64))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line: Vec<(SegmentValue<usize>, f64)> = points(r)
            .iter()
            .enumerate()
            .map(|(x, y)| (SegmentValue::CenterOf(x), *y))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(if numbered {
                format!("#{} {}", i + 1, r.name)
            } else {
                r.name.clone()
            })
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// The legend of `chart`'s labelled series, boxed, at `position`.
pub(crate) fn draw_legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// Whether the bars are labelled `#1`, `#2`, … (named in the legend) because the names would
/// not fit under them in a panel `width` pixels wide.
fn use_numbers(runs: &[Summary], width: u32) -> bool {
    let per_bar = f64::from(width.saturating_sub(120)) / runs.len().max(1) as f64;
    let longest = runs
        .iter()
        .map(|r| short(&r.name).chars().count())
        .max()
        .unwrap_or(0);
    longest as f64 * LABEL_CHAR_WIDTH > per_bar
}

fn short(name: &str) -> String {
    if name.chars().count() <= MAX_BAR_LABEL {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(MAX_BAR_LABEL - 1).collect();
        s.push('…');
        s
    }
}
