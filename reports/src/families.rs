//! The family each model belongs to (DESIGN.md section 2, README's table), and the panels
//! charts are drawn in as small multiples: the seven families gathered into four kinds of
//! wait (blocking, readiness, completion, libraries and runtimes), at most six series a panel.

/// Families in the order panels are drawn, each with its models.
pub const FAMILIES: [(&str, &[&str]); 7] = [
    (
        "blocking",
        &["iterative", "threads", "prethreaded", "fork", "prefork"],
    ),
    ("non-blocking", &["spin"]),
    ("multiplexing", &["select", "poll", "epoll-lt", "epoll-et"]),
    ("signal-driven", &["sigio"]),
    ("library reactor", &["mio", "polling"]),
    ("completion", &["uring", "uring-multishot"]),
    ("reference runtime", &["tokio"]),
];

/// The family of servers run by command (a suite's `[[server]]`, `bench run --server`): their
/// result lines carry an `external` object, whatever their name, and they share the charts'
/// last panel.
pub const EXTERNAL: &str = "external";

/// A model's family; a model this table does not know is its own.
pub fn family(model: &str) -> &str {
    FAMILIES
        .iter()
        .find(|(_, models)| models.contains(&model))
        .map_or(model, |(name, _)| name)
}

/// The panels of a small multiple: each names the README families it gathers and its models
/// in a fixed order. A model's place in its panel is its identity (`identity`): its colour.
pub const PANELS: [(&str, &[&str]); 4] = [
    (
        "blocking",
        &["iterative", "threads", "prethreaded", "fork", "prefork"],
    ),
    (
        "readiness",
        &["spin", "select", "poll", "epoll-lt", "epoll-et", "sigio"],
    ),
    ("completion", &["uring", "uring-multishot"]),
    ("libraries and runtimes", &["mio", "polling", "tokio"]),
];

/// At most this many series share a panel: more cannot be told apart (and followed) by eye.
pub const MAX_PER_PANEL: usize = 6;

/// The model an alias runs: `epoll-et#2` and `epoll-et+extra-work=5000` are `epoll-et`.
pub fn base_model(model: &str) -> &str {
    model.split(['#', '+']).next().unwrap_or(model)
}

/// The panel a model is drawn in (its base model's), and its slot there; `None` for a model
/// no panel lists.
pub fn panel_of(model: &str) -> Option<(usize, usize)> {
    let base = base_model(model);
    PANELS.iter().enumerate().find_map(|(p, (_, members))| {
        members
            .iter()
            .position(|m| *m == base)
            .map(|slot| (p, slot))
    })
}

/// `models` in panels: panels in table order, each model in its panel's order (an alias
/// after its base model), models of no panel (external servers: bench refuses any other
/// unknown name) together in an "external" panel; a panel of more
/// than `MAX_PER_PANEL` split into numbered parts.
pub fn panels<'a>(models: &[&'a str]) -> Vec<(String, Vec<&'a str>)> {
    let mut sorted: Vec<(usize, usize, bool, usize, &'a str)> = models
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let (p, slot) = panel_of(m).unwrap_or((PANELS.len(), 0));
            (p, slot, base_model(m) != m, i, m)
        })
        .collect();
    sorted.sort();
    let mut out = Vec::new();
    for p in 0..=PANELS.len() {
        let members: Vec<&str> = sorted.iter().filter(|s| s.0 == p).map(|s| s.4).collect();
        let name = PANELS.get(p).map_or(EXTERNAL, |(name, _)| name);
        let parts = members.len().div_ceil(MAX_PER_PANEL);
        for (k, chunk) in members.chunks(MAX_PER_PANEL).enumerate() {
            let title = if parts > 1 {
                format!("{name} ({} of {parts})", k + 1)
            } else {
                name.to_string()
            };
            out.push((title, chunk.to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's model table is what users read: this table must say the same.
    #[test]
    fn every_model_in_the_readme_table_has_its_family() {
        let readme = include_str!("../../README.md");
        let mut rows = 0;
        let table = readme
            .lines()
            .skip_while(|l| !l.starts_with("| model | family |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'));
        for row in table {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() != 3 {
                continue;
            }
            for model in cells[0].split(',').map(|m| m.trim().trim_matches('`')) {
                assert_eq!(family(model), cells[1], "{model}");
                rows += 1;
            }
        }
        assert_eq!(rows, 16, "the README's table lists 16 models");
        let paneled: usize = PANELS.iter().map(|(_, m)| m.len()).sum();
        assert_eq!(paneled, rows, "every model of the table is in one panel");
    }

    #[test]
    fn panels_hold_at_most_six_models_in_a_fixed_order_aliases_beside_their_model() {
        let all: Vec<&str> = PANELS.iter().flat_map(|(_, m)| m.iter().copied()).collect();
        let mut models: Vec<&str> = all.iter().rev().copied().collect();
        models.extend(["epoll-et#2", "epoll-et+extra-work=5000", "custom"]);
        let panels = panels(&models);
        let names: Vec<&str> = panels.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "blocking",
                "readiness (1 of 2)",
                "readiness (2 of 2)",
                "completion",
                "libraries and runtimes",
                "external"
            ]
        );
        assert!(panels.iter().all(|p| p.1.len() <= MAX_PER_PANEL));
        assert_eq!(
            panels[0].1, PANELS[0].1,
            "the table's order, not the input's"
        );
        let readiness: Vec<&str> = panels[1].1.iter().chain(&panels[2].1).copied().collect();
        assert_eq!(
            readiness,
            [
                "spin",
                "select",
                "poll",
                "epoll-lt",
                "epoll-et",
                "epoll-et#2",
                "epoll-et+extra-work=5000",
                "sigio"
            ]
        );
        assert_eq!(panels[5].1, ["custom"]);
        let count: usize = panels.iter().map(|p| p.1.len()).sum();
        assert_eq!(count, models.len(), "every model in exactly one panel");
    }
}
