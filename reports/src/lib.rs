//! `reports` turns a run directory into a self-contained HTML report with charts, compares two
//! runs for regressions, and exports results as CSV, Markdown or bencher.dev's BMF.
//!
//! Not built yet: its issue fills this crate. Nothing here pretends to work before then.
