//! `reports` turns a run directory into a self-contained HTML report with charts, compares two
//! runs for regressions, and exports results as CSV, Markdown or bencher.dev's BMF.
//!
//! `run` loads a run directory; `series` reads a cell's interval series and fairness;
//! `families` groups models for small multiples and `identity` gives each its colour and
//! marker; `stats` holds medians, bootstrap and moderated
//! (Student's t) confidence intervals, coefficients of variation and stalls; `metrics` says what each scenario is judged
//! by; `tiers` judges models, `verdict` says what the tiers mean in words, `text` holds every
//! sentence in each language; `charts` draws SVG with plotters; `render`, `compare` and `export` are the three
//! commands.

pub mod calibration;
pub mod charts;
pub mod compare;
pub mod export;
pub mod families;
pub mod forest;
pub mod identity;
pub mod metrics;
pub mod noise;
pub mod render;
pub mod run;
pub mod series;
pub mod stats;
pub mod text;
pub mod tiers;
pub mod verdict;
