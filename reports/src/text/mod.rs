//! Every sentence a reader sees in `report.html` and `compare.html`, as data: one table per
//! language (`en.rs`, `zh.rs`) with the same keys, and the models' own text (docs/MODELS.md
//! and its Chinese counterpart docs/MODELS.zh.md). The renderer asks for a key and fills its
//! `{placeholders}`; it holds no prose of its own, so a language is added by adding a table,
//! and a test checks that every table has every key.
//!
//! Numbers and model names are never translated: they are arguments, formatted once by the
//! caller, so both pages quote the same figures.

use std::fmt::Display;

mod en;
mod zh;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Zh];

    /// The code `--lang` takes and `<html lang>` carries.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.code() == code)
    }

    fn table(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::En => en::TEXT,
            Lang::Zh => zh::TEXT,
        }
    }

    /// The models' descriptions in this language, embedded at build time: the same headings
    /// (a model's name in backquotes) in both, so a model finds its section in either.
    pub fn models_md(self) -> &'static str {
        match self {
            Lang::En => include_str!("../../../docs/MODELS.md"),
            Lang::Zh => include_str!("../../../docs/MODELS.zh.md"),
        }
    }

    /// The text under `key`.
    pub fn get(self, key: &str) -> &'static str {
        self.table()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| {
                panic!(
                    "text key '{key}' missing for {} (every table has every key: text::tests)",
                    self.code()
                )
            })
    }

    /// The text under `key` with each `{name}` replaced by its argument.
    pub fn say(self, key: &str, args: &[(&str, &dyn Display)]) -> String {
        let mut s = self.get(key).to_string();
        for (name, value) in args {
            s = s.replace(&format!("{{{name}}}"), &value.to_string());
        }
        s
    }

    /// Names in a list: "a, b and c" / "a、b 和 c".
    pub fn list<S: AsRef<str>>(self, items: &[S]) -> String {
        match items {
            [] => String::new(),
            [one] => one.as_ref().to_string(),
            [init @ .., last] => {
                let init: Vec<&str> = init.iter().map(|s| s.as_ref()).collect();
                format!(
                    "{}{}{}",
                    init.join(self.get("list.sep")),
                    self.get("list.and"),
                    last.as_ref()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_table_has_every_key_once_and_the_same_placeholders() {
        let keys =
            |lang: Lang| -> BTreeSet<&str> { lang.table().iter().map(|(k, _)| *k).collect() };
        for lang in Lang::ALL {
            assert_eq!(
                keys(lang).len(),
                lang.table().len(),
                "{}: a key twice",
                lang.code()
            );
            assert_eq!(keys(lang), keys(Lang::En), "{} and en differ", lang.code());
        }
        // A translation that dropped or renamed a placeholder would print it raw.
        let holes = |s: &str| -> BTreeSet<String> {
            s.split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|(name, _)| name.to_string()))
                .collect()
        };
        for (key, en) in Lang::En.table() {
            for lang in Lang::ALL {
                assert_eq!(holes(lang.get(key)), holes(en), "{} {key}", lang.code());
            }
        }
    }

    #[test]
    fn every_model_section_has_its_translation() {
        // The models a heading names, in backquotes: how the report finds a model's text.
        let named = |md: &str| -> BTreeSet<String> {
            md.lines()
                .filter(|l| l.starts_with("### `") || l.starts_with("## `"))
                .flat_map(|l| l.split('`').skip(1).step_by(2).map(str::to_string))
                .collect()
        };
        let en = named(Lang::En.models_md());
        assert!(en.len() >= 16, "{en:?}");
        assert_eq!(
            named(Lang::Zh.models_md()),
            en,
            "MODELS.zh.md and MODELS.md"
        );
        assert!(Lang::Zh
            .models_md()
            .lines()
            .any(|l| l.starts_with(Lang::Zh.get("doc.silent_heading"))));
        assert!(Lang::En
            .models_md()
            .lines()
            .any(|l| l.starts_with(Lang::En.get("doc.silent_heading"))));
    }

    #[test]
    fn placeholders_are_filled_and_lists_read_naturally() {
        assert_eq!(Lang::En.list(&["a", "b", "c"]), "a, b and c");
        assert_eq!(Lang::Zh.list(&["a", "b"]), "a 和 b");
        assert_eq!(Lang::parse("zh"), Some(Lang::Zh));
        assert_eq!(Lang::parse("fr"), None);
    }
}
