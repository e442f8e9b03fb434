//! The family each model belongs to (DESIGN.md section 2, README's table), for charts drawn
//! as small multiples: one panel per family, so no panel has more than six series.

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

/// A model's family; a model this table does not know is its own.
pub fn family(model: &str) -> &str {
    FAMILIES
        .iter()
        .find(|(_, models)| models.contains(&model))
        .map_or(model, |(name, _)| name)
}

/// `models` grouped by family, families in table order, then unknown models each alone.
pub fn group<'a>(models: &[&'a str]) -> Vec<(String, Vec<&'a str>)> {
    let mut groups: Vec<(String, Vec<&'a str>)> = FAMILIES
        .iter()
        .map(|(name, _)| (name.to_string(), Vec::new()))
        .collect();
    for &m in models {
        let f = family(m);
        match groups.iter_mut().find(|(name, _)| name == f) {
            Some((_, members)) => members.push(m),
            None => groups.push((f.to_string(), vec![m])),
        }
    }
    groups.retain(|(_, members)| !members.is_empty());
    groups
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
        let grouped = group(&["tokio", "epoll-et", "threads", "custom"]);
        let names: Vec<&str> = grouped.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            ["blocking", "multiplexing", "reference runtime", "custom"]
        );
    }
}
