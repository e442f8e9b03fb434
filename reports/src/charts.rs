//! SVG charts with plotters (default features off: no font library; text is SVG `<text>`).
//!
//! A chart of several models is a small multiple: one panel per family of models
//! (`families::panels`), every panel of a chart on the same x and y ranges, at most six series
//! a panel, so each line can be followed and panels compare at a glance. A model keeps its
//! colour and marker (`identity`) on every chart; the legend stands right of the plotting
//! area, where it covers no data. Axes carry units. The SVG keeps plotters' `viewBox`, so the
//! stylesheet scales it to the screen's width.

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::families;
use crate::identity::{Identity, Shape};
use crate::render::escape;

/// A panel: two or three to a row on a laptop, one on a phone.
const PANEL: (u32, u32) = (500, 330);

/// Series longer than this are drawn as lines without markers.
const MAX_MARKED_POINTS: usize = 40;

/// Font sizes as plotters counts them: its SVG writes a size divided by 1.24, so labels are
/// 12 px in a panel's own size, about 9 px on a phone and 16 px on a laptop.
const TEXT: f64 = 15.0;
const CAPTION: f64 = 18.0;

/// Legend and bar names: the width they are given per character at `TEXT` (a sans-serif
/// average, a little generous), and the most characters shown.
const CHAR_PX: u32 = 7;
const MAX_NAME_CHARS: usize = 24;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
    /// A latency spectrum's percentile, as 1 / (1 - quantile) on a log axis: 2 is p50, 10 is
    /// p90, 100 is p99; labelled as percentiles.
    Percentile,
}

pub struct Series {
    pub name: String,
    pub identity: Identity,
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

pub struct Axes<'a> {
    pub x: &'a str,
    pub y: &'a str,
    pub x_scale: Scale,
    pub y_scale: Scale,
}

fn range(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let log = scale != Scale::Linear;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if log {
        // Just below the power of ten at or under the smallest value: plotters puts log
        // ticks only from the first power of ten in range, so a smallest value of 50 would
        // otherwise sit left of every labelled tick; and a smallest value of 10 starts the
        // axis near 10, not a whole empty decade earlier at 1.
        let decade = 10f64.powf(lo.log10().floor());
        (decade / 1.3, hi * 1.5)
    } else {
        (0.0, if hi > 0.0 { hi * 1.1 } else { 1.0 })
    }
}

/// Small multiples as one `<figure>`: `title` as its caption, then the panels, every one on
/// the same x range and the same y range (`y`, or the range of all panels' data).
pub fn multiples(
    title: &str,
    axes: &Axes,
    panels: &[Panel],
    y: Option<(f64, f64)>,
) -> Result<String, String> {
    let points = || {
        panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let x = range(points().map(|p| p.0), axes.x_scale);
    let y = y.unwrap_or_else(|| range(points().map(|p| p.1), axes.y_scale));
    let mut html = format!(
        "<figure class=\"multiples\"><figcaption>{}</figcaption><div class=\"panels\">",
        escape(title)
    );
    // One legend width for all panels, so that their plotting areas line up too.
    let legend = 40
        + name_width(
            panels
                .iter()
                .flat_map(|p| &p.series)
                .map(|s| s.name.chars().count()),
        );
    for panel in panels {
        html.push_str(&panel_svg(axes, panel, x, y, legend)?);
    }
    html.push_str("</div></figure>");
    Ok(html)
}

/// Series put in the panels of their models' families (`families::panels`).
pub fn panels(series: Vec<Series>) -> Vec<Panel> {
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    let grouping: Vec<(String, Vec<String>)> = families::panels(&names)
        .into_iter()
        .map(|(title, members)| (title, members.into_iter().map(String::from).collect()))
        .collect();
    let mut series: Vec<Option<Series>> = series.into_iter().map(Some).collect();
    grouping
        .into_iter()
        .map(|(title, members)| Panel {
            title,
            series: members
                .iter()
                .filter_map(|m| {
                    series
                        .iter_mut()
                        .find(|s| s.as_ref().is_some_and(|s| &s.name == m))?
                        .take()
                })
                .collect(),
        })
        .collect()
}

fn panel_svg(
    axes: &Axes,
    panel: &Panel,
    x: (f64, f64),
    y: (f64, f64),
    legend: u32,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PANEL).into_drawing_area();
        draw_panel(&root, axes, panel, x, y, legend)
            .map_err(|e| format!("chart panel '{}': {e}", panel.title))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(without_repeated_text(&svg))
}

/// The SVG without a `<text>` element that repeats one before it exactly (same place, same
/// words): plotters' log axis yields the tick at a power of ten twice, and the label drawn
/// twice over itself reads as bold.
fn without_repeated_text(svg: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(start) = rest.find("<text") {
        let Some(len) = rest[start..].find("</text>") else {
            break;
        };
        let element = &rest[start..start + len + "</text>".len()];
        out.push_str(&rest[..start]);
        if seen.insert(element) {
            out.push_str(element);
        }
        rest = &rest[start + element.len()..];
    }
    out.push_str(rest);
    out
}

fn name_width(names: impl Iterator<Item = usize>) -> u32 {
    names.max().unwrap_or(0).min(MAX_NAME_CHARS) as u32 * CHAR_PX
}

/// A name cut to what its column holds.
fn shown(name: &str) -> String {
    if name.chars().count() > MAX_NAME_CHARS {
        name.chars().take(MAX_NAME_CHARS - 1).collect::<String>() + "…"
    } else {
        name.to_string()
    }
}

fn draw_panel(
    root: &DrawingArea<SVGBackend, Shift>,
    axes: &Axes,
    panel: &Panel,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    legend: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (plot, _) = root.split_horizontally(PANEL.0 - legend);
    let mut builder = ChartBuilder::on(&plot);
    builder
        .caption(&panel.title, ("sans-serif", CAPTION))
        .margin(10)
        .x_label_area_size(46)
        .y_label_area_size(70);
    let (log_x, log_y) = (axes.x_scale != Scale::Linear, axes.y_scale != Scale::Linear);
    match (log_x, log_y) {
        (true, true) => plot_lines(
            builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?,
            root,
            axes,
            panel,
        )?,
        (true, false) => plot_lines(
            builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?,
            root,
            axes,
            panel,
        )?,
        (false, true) => plot_lines(
            builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?,
            root,
            axes,
            panel,
        )?,
        (false, false) => plot_lines(
            builder.build_cartesian_2d(x0..x1, y0..y1)?,
            root,
            axes,
            panel,
        )?,
    }
    // The legend, right of the plotting area, a row per series from the plot's top.
    let left = (PANEL.0 - legend) as i32 + 4;
    for (i, s) in panel.series.iter().enumerate() {
        let y = 46 + 22 * i as i32;
        let colour = s.identity.colour;
        root.draw(&PathElement::new(
            vec![(left, y), (left + 24, y)],
            colour.stroke_width(2),
        ))?;
        draw_name(root, (left + 12, y), &s.name, s.identity)?;
    }
    Ok(())
}

fn plot_lines<X, Y>(
    mut chart: ChartContext<SVGBackend, Cartesian2d<X, Y>>,
    root: &DrawingArea<SVGBackend, Shift>,
    axes: &Axes,
    panel: &Panel,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    // A percentile axis spans four decades or more, where plotters thins 30 log ticks out to
    // the powers of ten and would drop p50's tick at 2.
    let ticks = |scale: Scale| match scale {
        Scale::Linear => 8,
        Scale::Log => 30,
        Scale::Percentile => 100,
    };
    let light = |scale: Scale| if scale == Scale::Linear { 4 } else { 0 };
    chart
        .configure_mesh()
        .x_desc(axes.x)
        .y_desc(axes.y)
        .label_style(("sans-serif", TEXT))
        // On a log axis: a tick at every multiple of a power of ten (asking for 30 labels
        // makes plotters place them; `axis_label` names 1, 2 and 5 only), and no light
        // lines, which come 99 to a decade and merge into grey bands.
        .x_labels(ticks(axes.x_scale))
        .y_labels(ticks(axes.y_scale))
        .x_max_light_lines(light(axes.x_scale))
        .y_max_light_lines(light(axes.y_scale))
        .x_label_formatter(&|v| tick_label(*v, axes.x_scale))
        .y_label_formatter(&|v| tick_label(*v, axes.y_scale))
        // Faint: a log axis has a line at every unnamed multiple, which must not compete
        // with the data.
        .bold_line_style(BLACK.mix(0.1))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    for s in &panel.series {
        let style = s.identity.colour.stroke_width(2);
        chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?;
        // A long series (a run over time) is a line: markers on every point would merge
        // into a band. The legend keeps the marker that names the model.
        if s.points.len() <= MAX_MARKED_POINTS {
            for p in &s.points {
                draw_marker(root, chart.backend_coord(p), s.identity, 4.0)?;
            }
        }
    }
    Ok(())
}

/// A model's marker centred at `at`, in `area`'s pixels.
fn draw_marker(
    area: &DrawingArea<SVGBackend, Shift>,
    at: (i32, i32),
    identity: Identity,
    r: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let colour = identity.colour;
    let px = |(x, y): (f64, f64)| (at.0 + x.round() as i32, at.1 + y.round() as i32);
    match identity.marker.shape(r) {
        Shape::Circle { r, filled } => {
            let r = r.round() as i32;
            if !filled {
                area.draw(&Circle::new(at, r, WHITE.filled()))?;
            }
            let style = if filled {
                colour.filled()
            } else {
                colour.stroke_width(2)
            };
            area.draw(&Circle::new(at, r, style))?;
        }
        Shape::Polygon(points) => {
            area.draw(&Polygon::new(
                points.into_iter().map(px).collect::<Vec<_>>(),
                colour.filled(),
            ))?;
        }
        Shape::Strokes(strokes) => {
            for [a, b] in strokes {
                area.draw(&PathElement::new(
                    vec![px(a), px(b)],
                    colour.stroke_width(2),
                ))?;
            }
        }
    }
    Ok(())
}

/// A model's marker at `at` and its name after it: how the legends and the bar charts name a
/// model.
fn draw_name(
    area: &DrawingArea<SVGBackend, Shift>,
    at: (i32, i32),
    name: &str,
    identity: Identity,
) -> Result<(), Box<dyn std::error::Error>> {
    draw_marker(area, at, identity, 4.0)?;
    area.draw(&Text::new(
        shown(name),
        (at.0 + 18, at.1),
        ("sans-serif", TEXT)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center)),
    ))?;
    Ok(())
}

/// One row of a bar chart: a model, its bar, and its 95% interval as a whisker or a note
/// written beside the bar.
pub struct Row {
    pub name: String,
    pub identity: Identity,
    pub value: f64,
    pub ci: Option<(f64, f64)>,
    pub note: Option<String>,
}

/// A bar chart's value axis: what it measures, whether on a log scale, and its range when
/// fixed (Jain's index: 0 to 1).
pub struct ValueAxis<'a> {
    pub desc: &'a str,
    pub log: bool,
    pub range: Option<(f64, f64)>,
}

/// One bar per row, top to bottom in the order given, each named beside its model's marker.
pub fn bars(title: &str, axis: &ValueAxis, rows: &[Row]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let height = 104 + 26 * rows.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (PANEL.0, height)).into_drawing_area();
        draw_bars(&root, title, axis, rows).map_err(|e| format!("chart '{title}': {e}"))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(without_repeated_text(&svg))
}

fn draw_bars(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    axis: &ValueAxis,
    rows: &[Row],
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let scale = if axis.log { Scale::Log } else { Scale::Linear };
    let (x0, x1) = axis.range.unwrap_or_else(|| {
        range(
            rows.iter()
                .flat_map(|r| [Some(r.value), r.ci.map(|c| c.0), r.ci.map(|c| c.1)])
                .flatten(),
            scale,
        )
    });
    let n = rows.len() as f64;
    let names = 28 + name_width(rows.iter().map(|r| r.name.chars().count()));
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", CAPTION))
        .margin(10)
        .x_label_area_size(46)
        .y_label_area_size(names);
    if axis.log {
        let chart = builder.build_cartesian_2d((x0..x1).log_scale(), 0.0..n)?;
        plot_bars(chart, root, axis, rows, scale, x0)
    } else {
        let chart = builder.build_cartesian_2d(x0..x1, 0.0..n)?;
        plot_bars(chart, root, axis, rows, scale, x0)
    }
}

fn plot_bars<X>(
    mut chart: ChartContext<SVGBackend, Cartesian2d<X, RangedCoordf64>>,
    root: &DrawingArea<SVGBackend, Shift>,
    axis: &ValueAxis,
    rows: &[Row],
    scale: Scale,
    x0: f64,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(axis.desc)
        .label_style(("sans-serif", TEXT))
        .x_labels(if axis.log { 30 } else { 6 })
        .x_max_light_lines(if axis.log { 0 } else { 4 })
        .x_label_formatter(&|v| tick_label(*v, scale))
        .bold_line_style(BLACK.mix(0.1))
        // Rows are named by hand beside their marker: no y ticks, no empty category.
        .y_labels(0)
        .disable_y_mesh()
        .draw()?;
    let n = rows.len() as f64;
    for (i, row) in rows.iter().enumerate() {
        // Row 0 at the top: y counts up from the bottom.
        let top = n - i as f64;
        let mid = top - 0.5;
        let fill = row.identity.colour.mix(0.7).filled();
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x0, top - 0.15), (row.value.max(x0), top - 0.85)],
            fill,
        )))?;
        if let Some((lo, hi)) = row.ci {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(lo.max(x0), mid), (hi.max(x0), mid)],
                BLACK.stroke_width(2),
            )))?;
        }
        if let Some(note) = &row.note {
            let end = chart.backend_coord(&(row.value.max(x0), mid));
            let right =
                chart.backend_coord(&(x0, mid)).0 + chart.plotting_area().dim_in_pixel().0 as i32;
            // Inside the bar's end when the bar is long, past it when short.
            let (x, pos) = if right - end.0 < 8 * note.chars().count() as i32 {
                (end.0 - 6, Pos::new(HPos::Right, VPos::Center))
            } else {
                (end.0 + 6, Pos::new(HPos::Left, VPos::Center))
            };
            root.draw(&Text::new(
                note.clone(),
                (x, end.1),
                ("sans-serif", TEXT).into_font().color(&BLACK).pos(pos),
            ))?;
        }
        let (_, y) = chart.backend_coord(&(x0, mid));
        draw_name(root, (18, y), &row.name, row.identity)?;
    }
    Ok(())
}

/// A tick's label on an axis of `scale`: percentiles by name, log axes at 1, 2 and 5 times a
/// power of ten only.
fn tick_label(v: f64, scale: Scale) -> String {
    match scale {
        Scale::Percentile => percentile_label(v),
        Scale::Log => axis_label(v, true),
        Scale::Linear => axis_label(v, false),
    }
}

/// 1 / (1 - q) named as the percentile q: 2 -> "p50", 1000 -> "p99.9"; ticks between the
/// percentiles a reader quotes stay unnamed.
fn percentile_label(v: f64) -> String {
    let named = [2.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0];
    if !named.iter().any(|n| (v / n - 1.0).abs() < 1e-6) {
        return String::new();
    }
    let percent = 100.0 * (1.0 - 1.0 / v);
    let mut s = format!("{percent:.3}");
    while s.ends_with('0') {
        s.pop();
    }
    format!("p{}", s.trim_end_matches('.'))
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
        // 0.001, not "0": two decimals would round a small tick to nothing.
        a if a < 0.01 => trim(format!("{v:.*}", crate::tiers::significant_decimals(v))),
        _ => trim(format!("{v:.2}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{axis_label, percentile_label, without_repeated_text};

    #[test]
    fn a_label_is_drawn_once() {
        let svg = "<svg><text x=\"1\">10</text><line/><text x=\"1\">10</text><text x=\"2\">10</text></svg>";
        assert_eq!(
            without_repeated_text(svg),
            "<svg><text x=\"1\">10</text><line/><text x=\"2\">10</text></svg>"
        );
    }

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
        assert_eq!(
            axis_label(0.001, true),
            "0.001",
            "a small tick keeps its digit"
        );
        assert_eq!(axis_label(0.002, true), "0.002");
    }

    #[test]
    fn a_percentile_axis_names_the_percentiles_readers_quote() {
        let named: Vec<String> = [2.0, 5.0, 10.0, 20.0, 100.0, 1000.0, 10000.0]
            .iter()
            .map(|&v| percentile_label(v))
            .collect();
        assert_eq!(named, ["p50", "", "p90", "", "p99", "p99.9", "p99.99"]);
    }
}
