//! `reports` turns a run directory into a self-contained HTML report with charts, compares two
//! runs for regressions, and exports results as CSV, Markdown or bencher.dev's BMF.
//!
//! `run` loads a run directory; `stats` holds medians, bootstrap confidence intervals and
//! coefficients of variation; `metrics` says what each scenario is judged by; `charts` draws
//! SVG with plotters; `render`, `compare` and `export` are the three commands.

pub mod calibration;
pub mod charts;
pub mod compare;
pub mod export;
pub mod metrics;
pub mod noise;
pub mod render;
pub mod run;
pub mod stats;
pub mod tiers;
