//! One look per model, the same on every chart and beside its name in every table: a colour
//! and a marker shape, so a line can be followed from panel to panel and still be told apart
//! in black and white.
//!
//! A model's colour is its place in its panel (`families::PANELS`), so the models of one panel
//! never share a colour, and its marker is that place shifted by the panel's number, so no two
//! models of the whole table share both. The identity of a listed model does not depend on
//! which other models a run has: `epoll-et` looks the same in every report.

use std::collections::BTreeMap;

use plotters::style::RGBColor;

use crate::families;

/// Okabe and Ito's palette (tells apart under the common colour blindnesses), its yellow
/// left out (unreadable on white), then a dark grey.
pub const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(110, 110, 110),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Marker {
    Disc,
    Triangle,
    Square,
    Cross,
    Ring,
    Diamond,
    Plus,
    InvertedTriangle,
}

const MARKERS: [Marker; 8] = [
    Marker::Disc,
    Marker::Triangle,
    Marker::Square,
    Marker::Cross,
    Marker::Ring,
    Marker::Diamond,
    Marker::Plus,
    Marker::InvertedTriangle,
];

/// What a marker is made of, in pixels around its centre, for both the charts (plotters)
/// and the tables' swatches (hand-written SVG): one geometry, so they match.
pub enum Shape {
    Circle { r: f64, filled: bool },
    Polygon(Vec<(f64, f64)>),
    Strokes(Vec<[(f64, f64); 2]>),
}

impl Marker {
    /// The shape at size `r` (about the radius).
    pub fn shape(self, r: f64) -> Shape {
        let t = r * 1.2;
        match self {
            Marker::Disc => Shape::Circle { r, filled: true },
            Marker::Ring => Shape::Circle { r, filled: false },
            Marker::Triangle => Shape::Polygon(vec![(0.0, -t), (t, t * 0.8), (-t, t * 0.8)]),
            Marker::InvertedTriangle => {
                Shape::Polygon(vec![(0.0, t), (t, -t * 0.8), (-t, -t * 0.8)])
            }
            Marker::Square => Shape::Polygon(vec![(-r, -r), (r, -r), (r, r), (-r, r)]),
            Marker::Diamond => Shape::Polygon(vec![(0.0, -t), (t, 0.0), (0.0, t), (-t, 0.0)]),
            Marker::Cross => Shape::Strokes(vec![[(-r, -r), (r, r)], [(-r, r), (r, -r)]]),
            Marker::Plus => Shape::Strokes(vec![[(-t, 0.0), (t, 0.0)], [(0.0, -t), (0.0, t)]]),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub colour: RGBColor,
    pub marker: Marker,
}

/// The identities of a run's models.
pub struct Identities(BTreeMap<String, Identity>);

impl Identities {
    /// Listed models take their panel's slot. An alias (`epoll-et#2`) or a model no panel
    /// lists takes the lowest slot its panel's table leaves free, in the order given.
    pub fn new(models: &[String]) -> Identities {
        let mut map = BTreeMap::new();
        let mut taken: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let others = families::PANELS.len();
        for (p, (_, members)) in families::PANELS.iter().enumerate() {
            taken.insert(p, (0..members.len()).collect());
        }
        for model in models {
            let (panel, slot) = match families::panel_of(model) {
                Some((p, slot)) if families::base_model(model) == model => (p, slot),
                found => {
                    let p = found.map_or(others, |(p, _)| p);
                    let used = taken.entry(p).or_default();
                    let slot = (0..)
                        .find(|s| !used.contains(s))
                        .expect("slots are unbounded");
                    used.push(slot);
                    (p, slot)
                }
            };
            map.insert(
                model.clone(),
                Identity {
                    colour: COLOURS[slot % COLOURS.len()],
                    marker: MARKERS[(slot + panel) % MARKERS.len()],
                },
            );
        }
        Identities(map)
    }

    /// A model's identity; a model not given to `new` gets the first one.
    pub fn of(&self, model: &str) -> Identity {
        self.0.get(model).copied().unwrap_or(Identity {
            colour: COLOURS[0],
            marker: MARKERS[0],
        })
    }

    /// A small inline SVG of the model's marker on a stroke of its colour, to stand beside
    /// its name in a table.
    pub fn swatch(&self, model: &str) -> String {
        let id = self.of(model);
        let RGBColor(r, g, b) = id.colour;
        let colour = format!("rgb({r},{g},{b})");
        let shape = match id.marker.shape(4.0) {
            Shape::Circle { r, filled } => format!(
                "<circle cx=\"0\" cy=\"0\" r=\"{r}\" fill=\"{}\" stroke=\"{colour}\" stroke-width=\"1.5\"/>",
                if filled { colour.as_str() } else { "white" }
            ),
            Shape::Polygon(points) => format!(
                "<polygon points=\"{}\" fill=\"{colour}\"/>",
                points
                    .iter()
                    .map(|(x, y)| format!("{x:.1},{y:.1}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Shape::Strokes(strokes) => strokes
                .iter()
                .map(|[(x0, y0), (x1, y1)]| {
                    format!("<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y1:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>")
                })
                .collect(),
        };
        format!(
            "<svg class=\"swatch\" width=\"22\" height=\"12\" viewBox=\"-11 -6 22 12\" aria-hidden=\"true\"><line x1=\"-11\" y1=\"0\" x2=\"11\" y2=\"0\" stroke=\"{colour}\" stroke-width=\"2\"/>{shape}</svg>"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_of_one_panel_differ_in_colour_and_marker_and_no_two_models_look_alike() {
        let all: Vec<String> = families::PANELS
            .iter()
            .flat_map(|(_, m)| m.iter().map(|s| s.to_string()))
            .chain(["epoll-et#2", "epoll-et+extra-work=5000", "custom"].map(String::from))
            .collect();
        let ids = Identities::new(&all);
        for (_, members) in families::panels(&all.iter().map(String::as_str).collect::<Vec<_>>()) {
            for (i, a) in members.iter().enumerate() {
                for b in &members[i + 1..] {
                    let (x, y) = (ids.of(a), ids.of(b));
                    assert!(x.colour != y.colour && x.marker != y.marker, "{a} and {b}");
                }
            }
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(ids.of(a), ids.of(b), "{a} and {b} look alike");
            }
        }
    }

    #[test]
    fn a_listed_model_looks_the_same_whatever_else_the_run_has() {
        let alone = Identities::new(&["epoll-et".to_string()]);
        let crowd =
            Identities::new(&["tokio", "epoll-et#2", "select", "epoll-et"].map(String::from));
        assert_eq!(alone.of("epoll-et"), crowd.of("epoll-et"));
        assert_eq!(alone.swatch("epoll-et"), crowd.swatch("epoll-et"));
        assert_ne!(crowd.of("epoll-et#2"), crowd.of("epoll-et"));
    }
}
