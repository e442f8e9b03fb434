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

/// The family of servers run by command (a suite's `[[server]]`, `bench run --server`): their
/// result lines carry an `external` object, whatever their name.
pub const EXTERNAL: &str = "external";

/// The models of `lines` that are external servers.
pub fn external_models(lines: &[serde_json::Value]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in lines.iter().filter(|l| l["external"].is_object()) {
        if let Some(model) = line["model"].as_str() {
            if !names.iter().any(|n| n == model) {
                names.push(model.to_string());
            }
        }
    }
    names
}

/// A model's family; a model this table does not know is its own.
pub fn family(model: &str) -> &str {
    FAMILIES
        .iter()
        .find(|(_, models)| models.contains(&model))
        .map_or(model, |(name, _)| name)
}

/// `models` grouped by family, families in table order, then the `external` servers, then
/// unknown models each alone.
pub fn group<'a>(models: &[&'a str], external: &[String]) -> Vec<(String, Vec<&'a str>)> {
    let mut groups: Vec<(String, Vec<&'a str>)> = FAMILIES
        .iter()
        .map(|(name, _)| name.to_string())
        .chain([EXTERNAL.to_string()])
        .map(|name| (name, Vec::new()))
        .collect();
    for &m in models {
        let f = if external.iter().any(|e| e == m) {
            EXTERNAL
        } else {
            family(m)
        };
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
        let grouped = group(
            &["tokio", "py", "epoll-et", "threads", "custom"],
            &["py".to_string()],
        );
        let names: Vec<&str> = grouped.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "blocking",
                "multiplexing",
                "reference runtime",
                "external",
                "custom"
            ]
        );
        let lines = [
            serde_json::json!({"model": "py", "external": {"command": ["x"]}}),
            serde_json::json!({"model": "epoll-et"}),
            serde_json::json!({"model": "py", "external": {"command": ["x"]}}),
        ];
        assert_eq!(external_models(&lines), ["py"]);
    }
}
