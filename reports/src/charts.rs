//! SVG charts with plotters (default features off: no font library; text is SVG `<text>`).
//!
//! Every series has its own colour and its own marker shape, and the legend shows both, so
//! models stay apart in print. Axes carry units.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Sized for a laptop screen, two charts per row.
const SIZE: (u32, u32) = (640, 400);

/// Series longer than this are drawn as lines without markers.
const MAX_MARKED_POINTS: usize = 40;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Axes<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
    pub log_x: bool,
    pub log_y: bool,
}

/// A stable style per model: the same model looks the same in every chart.
pub fn style_index(models: &[String], name: &str) -> usize {
    models.iter().position(|m| m == name).unwrap_or(0)
}

fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if log {
        // From a power of ten: plotters puts log ticks only from the first power of ten in
        // range, so a smallest value of 50 would otherwise sit left of every labelled tick.
        (10f64.powf((lo / 1.5).log10().floor()), hi * 1.5)
    } else {
        (0.0, if hi > 0.0 { hi * 1.1 } else { 1.0 })
    }
}

/// Lines with markers, one series per model; `styles[i]` picks series i's colour and shape.
pub fn lines(axes: &Axes, series: &[Series], styles: &[usize]) -> Result<String, String> {
    lines_in(axes, series, styles, None)
}

/// `lines` with the y axis spanning `y` instead of the data's own range: small multiples of
/// one quantity share their scale, so panels compare at a glance.
pub fn lines_in(
    axes: &Axes,
    series: &[Series],
    styles: &[usize],
    y: Option<(f64, f64)>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_lines(&root, axes, series, styles, y)
            .map_err(|e| format!("chart '{}': {e}", axes.title))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_lines(
    root: &DrawingArea<SVGBackend, Shift>,
    axes: &Axes,
    series: &[Series],
    styles: &[usize],
    y: Option<(f64, f64)>,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (x0, x1) = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        axes.log_x,
    );
    // Free room on the right for the legend, so it never covers the last points.
    let x1 = if axes.log_x { x1 * 4.0 } else { x1 * 1.4 };
    let (y0, y1) = y.unwrap_or_else(|| {
        range(
            series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
            axes.log_y,
        )
    });
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(axes.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(72);
    macro_rules! plot {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(axes.x)
                .y_desc(axes.y)
                .label_style(("sans-serif", 12))
                // On a log axis: a tick at every multiple of a power of ten (asking for 30
                // labels makes plotters place them; `axis_label` names 1, 2 and 5 only), and
                // no light lines, which come 99 to a decade and merge into grey bands.
                .x_labels(if axes.log_x { 30 } else { 10 })
                .y_labels(if axes.log_y { 30 } else { 10 })
                .x_max_light_lines(if axes.log_x { 0 } else { 10 })
                .y_max_light_lines(if axes.log_y { 0 } else { 10 })
                .x_label_formatter(&|v| axis_label(*v, axes.log_x))
                .y_label_formatter(&|v| axis_label(*v, axes.log_y))
                .draw()?;
            for (s, &i) in series.iter().zip(styles) {
                let color = PALETTE[i % PALETTE.len()];
                let style = color.stroke_width(2);
                let anno = chart
                    .draw_series(LineSeries::new(s.points.clone(), style))?
                    .label(s.name.as_str());
                let line = move |p: (i32, i32)| {
                    EmptyElement::at(p) + PathElement::new(vec![(-12, 0), (12, 0)], style)
                };
                // A long series (a run over time) is a line: markers on every point would
                // merge into a band. The legend keeps the marker that names the model.
                let dense = s.points.len() > MAX_MARKED_POINTS;
                let marked: &[(f64, f64)] = if dense { &[] } else { &s.points };
                match (i / PALETTE.len()) % 2 * 4 + i % 4 {
                    0 | 4 => {
                        anno.legend(move |p| line(p) + Circle::new((0, 0), 4, style.filled()));
                        chart.draw_series(
                            marked.iter().map(|&p| Circle::new(p, 4, style.filled())),
                        )?;
                    }
                    1 | 5 => {
                        anno.legend(move |p| {
                            line(p) + TriangleMarker::new((0, 0), 6, style.filled())
                        });
                        chart.draw_series(
                            marked
                                .iter()
                                .map(|&p| TriangleMarker::new(p, 6, style.filled())),
                        )?;
                    }
                    2 | 6 => {
                        anno.legend(move |p| line(p) + Cross::new((0, 0), 5, style));
                        chart.draw_series(marked.iter().map(|&p| Cross::new(p, 5, style)))?;
                    }
                    _ => {
                        anno.legend(move |p| line(p) + Circle::new((0, 0), 4, style));
                        chart.draw_series(marked.iter().map(|&p| Circle::new(p, 4, style)))?;
                    }
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 12))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }};
    }
    match (axes.log_x, axes.log_y) {
        (true, true) => {
            plot!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?)
        }
        (true, false) => plot!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?),
        (false, true) => plot!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?),
        (false, false) => plot!(builder.build_cartesian_2d(x0..x1, y0..y1)?),
    }
    Ok(())
}

/// One bar per model with its 95% interval as a whisker, longest first.
pub struct Bar {
    pub name: String,
    pub value: f64,
    pub ci: (f64, f64),
}

pub fn bars(title: &str, unit: &str, bars: &[Bar], styles: &[usize]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let height = (80 + 26 * bars.len() as u32).max(160);
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
        draw_bars(&root, title, unit, bars, styles).map_err(|e| format!("chart '{title}': {e}"))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_bars(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    unit: &str,
    bars: &[Bar],
    styles: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let max = bars
        .iter()
        .map(|b| b.ci.1.max(b.value))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let n = bars.len();
    let names: Vec<String> = bars.iter().map(|b| b.name.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(120)
        .build_cartesian_2d(0.0..max, (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .x_label_formatter(&|v| compact(*v))
        .y_labels(n.max(1))
        .disable_y_mesh()
        .label_style(("sans-serif", 12))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (i, (bar, &style)) in bars.iter().zip(styles).enumerate() {
        let fill = bar_fill(style);
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (bar.value, SegmentValue::Exact(i + 1)),
            ],
            fill,
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![
                (bar.ci.0, SegmentValue::CenterOf(i)),
                (bar.ci.1, SegmentValue::CenterOf(i)),
            ],
            BLACK.stroke_width(2),
        )))?;
    }
    Ok(())
}

/// One model's fairness in one scenario: Jain's index, and a note when some of its
/// connections were never served ("64 of 500 served").
pub struct FairBar {
    pub name: String,
    pub jain: f64,
    pub note: Option<String>,
}

/// Jain's index per model on a fixed 0 to 1 axis, a dashed line at 1 (every connection
/// served alike), the note written beside a bar.
pub fn fairness(title: &str, bars: &[FairBar], styles: &[usize]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let height = (80 + 26 * bars.len() as u32).max(160);
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
        draw_fairness(&root, title, bars, styles).map_err(|e| format!("chart '{title}': {e}"))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_fairness(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    bars: &[FairBar],
    styles: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let n = bars.len();
    // Segment 0 is at the bottom: the first bar goes to the top, so the chart reads down.
    let row = |i: usize| n - 1 - i;
    let names: Vec<String> = bars.iter().rev().map(|b| b.name.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(120)
        .build_cartesian_2d(0.0..1.0, (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .x_desc("Jain's fairness index (1: every connection served alike)")
        .x_labels(6)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_labels(n.max(1))
        .disable_y_mesh()
        .label_style(("sans-serif", 12))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (i, (bar, &style)) in bars.iter().zip(styles).enumerate() {
        let fill = bar_fill(style);
        let value = bar.jain.clamp(0.0, 1.0);
        let r = row(i);
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (0.0, SegmentValue::Exact(r)),
                (value, SegmentValue::Exact(r + 1)),
            ],
            fill,
        )))?;
        let label = match &bar.note {
            Some(note) => format!("{value:.2}  {note}"),
            None => format!("{value:.2}"),
        };
        // Inside the bar's end when the bar is long, past it when short.
        let (x, anchor) = if value > 0.6 {
            (value - 0.01, Pos::new(HPos::Right, VPos::Center))
        } else {
            (value + 0.01, Pos::new(HPos::Left, VPos::Center))
        };
        chart.draw_series(std::iter::once(Text::new(
            label,
            (x, SegmentValue::CenterOf(r)),
            ("sans-serif", 12).into_font().color(&BLACK).pos(anchor),
        )))?;
    }
    Ok(())
}

/// A tick's label. On a log axis only 1, 2 and 5 times a power of ten are named: plotters
/// puts a tick at every multiple (..., 800, 900, 1k), whose labels would run together.
fn axis_label(v: f64, log: bool) -> String {
    if log && v > 0.0 {
        let mantissa = v / 10f64.powf(v.log10().floor());
        if ![1.0, 2.0, 5.0, 10.0]
            .iter()
            .any(|m| (mantissa - m).abs() < 1e-6)
        {
            return String::new();
        }
    }
    compact(v)
}

/// Axis labels: 20000 -> "20k", 1500000 -> "1.5M", 0.5 -> "0.5".
fn compact(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    match v.abs() {
        a if a >= 1e6 => trim(format!("{:.1}", v / 1e6)) + "M",
        a if a >= 1e3 => trim(format!("{:.1}", v / 1e3)) + "k",
        a if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => trim(format!("{v:.2}")),
    }
}

/// A bar's fill for series style `style`: its palette colour, lighter on the palette's
/// second round so two series never look alike.
fn bar_fill(style: usize) -> ShapeStyle {
    let color = PALETTE[style % PALETTE.len()];
    if (style / PALETTE.len()).is_multiple_of(2) {
        color.mix(0.75).filled()
    } else {
        color.mix(0.35).filled()
    }
}

#[cfg(test)]
mod tests {
    use super::axis_label;

    #[test]
    fn a_log_axis_names_one_two_and_five_only() {
        let named: Vec<String> = [
            10.0, 20.0, 30.0, 50.0, 90.0, 100.0, 200.0, 500.0, 900.0, 1000.0,
        ]
        .iter()
        .map(|&v| axis_label(v, true))
        .collect();
        assert_eq!(
            named,
            ["10", "20", "", "50", "", "100", "200", "500", "", "1k"]
        );
        assert_eq!(
            axis_label(300.0, false),
            "300",
            "a linear axis names every tick"
        );
        assert_eq!(axis_label(0.5, true), "0.5");
    }
}
