//! The forest plot of `compare.html`: one row per cell and metric, the change of its median
//! between two runs as a dot and its 95% interval as a bar, on one axis oriented so that
//! better is right whatever the metric (more throughput, lower latency), with the regression
//! threshold drawn on both sides. Rows come in the order given (regressions first), top down.
//!
//! plotters with default features off, as in `charts.rs`: SVG `<text>`, no font library.

use plotters::coord::Shift;
use plotters::prelude::*;

/// One row: a cell's change, oriented (positive is better), in percent.
pub struct Row {
    pub label: String,
    pub change: f64,
    pub ci: (f64, f64),
    pub kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regression,
    Improvement,
    /// Within noise, or below the threshold.
    Neutral,
}

const WIDTH: u32 = 900;
const ROW: u32 = 22;
const RED: RGBColor = RGBColor(200, 30, 30);
const GREEN: RGBColor = RGBColor(30, 140, 50);
const GREY: RGBColor = RGBColor(110, 110, 110);

/// The forest plot as SVG; `threshold` in percent, `x_desc` the axis description.
pub fn forest(x_desc: &str, rows: &[Row], threshold: f64) -> Result<String, String> {
    let mut svg = String::new();
    {
        let height = 70 + ROW * rows.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw(&root, x_desc, rows, threshold).map_err(|e| format!("forest plot: {e}"))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw(
    root: &DrawingArea<SVGBackend, Shift>,
    x_desc: &str,
    rows: &[Row],
    threshold: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let n = rows.len().max(1);
    // Symmetric around zero, wide enough for every interval and the threshold lines.
    let reach = rows
        .iter()
        .flat_map(|r| [r.ci.0.abs(), r.ci.1.abs(), r.change.abs()])
        .filter(|v| v.is_finite())
        .fold(threshold * 1.5, f64::max)
        * 1.1;
    // Segment 0 is at the bottom: the first row goes to the top, so the plot reads down.
    let at = |i: usize| SegmentValue::CenterOf(n - 1 - i);
    let labels: Vec<&str> = rows.iter().rev().map(|r| r.label.as_str()).collect();
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(300)
        .build_cartesian_2d(-reach..reach, (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|v| format!("{v:+.0}%"))
        .y_labels(n)
        .disable_y_mesh()
        // Only the labelled ticks: the faint lines between them drowned the thresholds.
        .light_line_style(WHITE)
        .label_style(("sans-serif", 12))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).map(|s| s.to_string()).unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    let vertical = |x: f64, style: ShapeStyle| {
        PathElement::new(
            vec![(x, SegmentValue::Exact(0)), (x, SegmentValue::Exact(n))],
            style,
        )
    };
    chart.draw_series(std::iter::once(vertical(0.0, BLACK.stroke_width(1))))?;
    for x in [-threshold, threshold] {
        chart.draw_series(std::iter::once(vertical(x, RED.mix(0.45).stroke_width(1))))?;
    }
    for (i, row) in rows.iter().enumerate() {
        let color = match row.kind {
            Kind::Regression => RED,
            Kind::Improvement => GREEN,
            Kind::Neutral => GREY,
        };
        let (lo, hi) = (row.ci.0.max(-reach), row.ci.1.min(reach));
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(lo, at(i)), (hi, at(i))],
            color.stroke_width(2),
        )))?;
        chart.draw_series(std::iter::once(Circle::new(
            (row.change.clamp(-reach, reach), at(i)),
            4,
            color.filled(),
        )))?;
    }
    Ok(())
}
