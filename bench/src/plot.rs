//! `keel-bench plot`: one SVG from one or more `--json` results: IOPS per
//! run on top, latency percentiles (p50 to p99.9, log scale) below, one
//! colour per run — the charts in docs/benchmarks.md.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::prelude::*;
use serde_json::Value;

/// What one result file contributes.
struct Run {
    label: String,
    iops: f64,
    /// p50, p90, p99, p99.9 in microseconds.
    latency: [f64; 4],
}

const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p999", "p99.9"),
];

fn load(path: &Path) -> anyhow::Result<Run> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a keel-bench --json result", path.display()))?;
    let number = |value: &Value, what: &str| {
        value
            .as_f64()
            .with_context(|| format!("{}: no number at {what}", path.display()))
    };
    let iops = number(&json["iops"], "iops")?;
    let mut latency = [0.0; 4];
    for (slot, (key, _)) in latency.iter_mut().zip(PERCENTILES) {
        *slot = number(&json["lat_us"][key], &format!("lat_us.{key}"))?;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Run {
        label: stem,
        iops,
        latency,
    })
}

pub fn run(inputs: &[PathBuf], out: &Path, title: &str) -> anyhow::Result<()> {
    if inputs.is_empty() {
        bail!("give at least one JSON result");
    }
    let runs = inputs
        .iter()
        .map(|p| load(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    draw(&runs, out, title).map_err(|e| anyhow::anyhow!("drawing {}: {e}", out.display()))
}

fn draw(runs: &[Run], out: &Path, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(out, (900, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(330);

    let max_iops = runs.iter().map(|r| r.iops).fold(1.0, f64::max) * 1.15;
    let n = runs.len();
    let mut iops_chart = ChartBuilder::on(&top)
        .caption("IOPS", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..max_iops)?;
    iops_chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            // Only whole positions are bars.
            if (x - x.round()).abs() > 0.01 || *x < -0.01 {
                return String::new();
            }
            // Numbers on the axis; the legend below names them.
            let index = x.round() as usize;
            if index < runs.len() {
                format!("{}", index + 1)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .draw()?;
    iops_chart.draw_series(runs.iter().enumerate().map(|(i, r)| {
        let color = Palette99::pick(i).filled();
        Rectangle::new([(i as f64 - 0.35, 0.0), (i as f64 + 0.35, r.iops)], color)
    }))?;
    iops_chart.draw_series(runs.iter().enumerate().map(|(i, r)| {
        Text::new(
            format!("{:.0}", r.iops),
            (i as f64 - 0.2, r.iops + max_iops * 0.06),
            ("sans-serif", 13),
        )
    }))?;

    let min_lat = runs
        .iter()
        .flat_map(|r| r.latency)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(1e9)
        * 0.7;
    let max_lat = runs.iter().flat_map(|r| r.latency).fold(1.0, f64::max) * 1.5;
    let mut lat_chart = ChartBuilder::on(&bottom)
        .caption("latency percentiles (µs, log scale)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..3f64, (min_lat.max(0.1)..max_lat).log_scale())?;
    lat_chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let index = x.round() as usize;
            PERCENTILES
                .get(index)
                .map(|(_, name)| (*name).to_string())
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = r
            .latency
            .iter()
            .enumerate()
            .map(|(x, y)| (x as f64, y.max(min_lat.max(0.1))))
            .collect();
        lat_chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{} {}", i + 1, r.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        lat_chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    lat_chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
