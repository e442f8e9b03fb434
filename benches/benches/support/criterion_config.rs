//! The criterion settings every micro-benchmark shares.

use criterion::Criterion;

/// 1 s of warm-up and 3 s of measurement per benchmark (100 samples still): the whole
/// `cargo bench -p benches` stays within ten minutes on 2 cores.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}
