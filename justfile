# iomodels: compare Linux server I/O models. `just --list` shows every recipe.
# Every recipe is a thin wrapper over a cargo command given in the README, so nothing here
# needs `just` itself.

set shell := ["bash", "-eu", "-o", "pipefail", "-c"]

# Show the recipes.
default:
    @just --list

# Run a benchmark suite: quick (default), smoke, full, c10k, uring, or a TOML path
# (`target/release/bench list` says how long each takes on this machine).
# Fails when a cell failed (listed at the end); `just bench quick --allow-failures` does not.
bench SUITE="quick" *ARGS:
    cargo build --release --workspace
    target/release/bench run --suite {{SUITE}} {{ARGS}}

# Open the latest run's report (or print its path when there is no opener).
report RUN="results/latest":
    cargo build --release -q -p reports
    target/release/report render {{RUN}} > /dev/null
    if command -v xdg-open > /dev/null; then xdg-open {{RUN}}/report.html; else echo {{RUN}}/report.html; fi

# Compare two runs: a Markdown table, compare.html in NEW, exit 1 on a regression.
compare BASE NEW *ARGS:
    cargo build --release -q -p reports
    target/release/report compare {{BASE}} {{NEW}} {{ARGS}}

# The quick suite (the same as `just bench`).
quick *ARGS:
    just bench quick {{ARGS}}

# What each suite runs and roughly how long, and the models.
suites:
    cargo build --release --workspace -q
    target/release/bench list

# Drive a running server by hand, e.g. `just load echo -a 127.0.0.1:7000 -c 50 -t 5`.
load *ARGS:
    cargo run --release -q -p loadgen -- {{ARGS}}

# Criterion micro-benchmarks (readiness waits, workers, round trips); HTML in target/criterion.
# Save a baseline with `just micro --save-baseline main`, compare with `just micro --baseline main`.
micro *ARGS:
    cargo bench -p benches -- {{ARGS}}

# Run every test: protocol units and the conformance suite against every model.
test:
    cargo test --workspace

# List the models, their family and whether this machine supports them.
models:
    cargo run --release -q -p servers --bin server -- --list

# Run one server by hand, e.g. `just serve epoll-et http --addr 127.0.0.1:8080`.
serve MODEL PROTOCOL *ARGS:
    cargo run --release -q -p servers --bin server -- --model {{MODEL}} --protocol {{PROTOCOL}} {{ARGS}}

# Compare the current build with BASE (a ref): the callgrind gate (fails on +2% instructions
# per request) and the wall-clock cells interleaved (advisory). Markdown on stdout. docs/CI.md.
ci-bench BASE="HEAD~1" *ARGS:
    cargo build --release --workspace
    target/release/bench ci {{BASE}} {{ARGS}}

# The checks CI runs (format, lints, tests).
ci:
    bash .ci/run

# Fuzz one parser for a while (needs cargo-fuzz): `just fuzz http_head 300`.
fuzz TARGET SECONDS="300":
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {{TARGET}} -- -max_total_time={{SECONDS}}
