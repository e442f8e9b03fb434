//! `report`: render a run as HTML, compare two runs, export a run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use reports::compare::{self, Verdict};
use reports::metrics::Metric;
use reports::run::Run;
use reports::text::Lang;
use reports::{export, render};

/// Reports for iomodels runs (a directory holding results.jsonl and env.json).
#[derive(Parser)]
#[command(name = "report", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Refuse a run with a damaged line in results.jsonl instead of skipping the line with a
    /// warning.
    #[arg(long, global = true)]
    strict: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Write RUN_DIR/report.html: the verdict, tiers, charts, the models, failures, the
    /// environment.
    Render {
        run: PathBuf,
        /// The page's language: en (default) or zh (Chinese; numbers and model names
        /// unchanged).
        #[arg(long, default_value = "en", value_parser = lang)]
        lang: Lang,
    },
    /// Compare two runs; exit 1 when a change is worse than the threshold and its 95%
    /// confidence interval excludes zero. Writes NEW_RUN/compare.html.
    Compare {
        base: PathBuf,
        new: PathBuf,
        /// Percent change that counts as a regression.
        #[arg(long, default_value_t = 5.0)]
        threshold: f64,
        /// Metrics to compare (throughput, latency_p99, cpu_per_request, pss_per_conn).
        #[arg(long, value_delimiter = ',', default_value = "throughput,latency_p99")]
        metric: Vec<String>,
        /// compare.html's language: en (default) or zh.
        #[arg(long, default_value = "en", value_parser = lang)]
        lang: Lang,
    },
    /// Calibrate the tier rule on a run holding one model under two names (A/A) and,
    /// optionally, a slowed variant (A/B): in how many groups they share a tier / separate.
    Calibrate {
        run: PathBuf,
        /// Two names of the same server, e.g. epoll-et,epoll-et#2.
        #[arg(long, value_delimiter = ',', required = true)]
        same: Vec<String>,
        /// The plain server and its slowed variant, e.g. epoll-et,epoll-et+extra-work=3000.
        #[arg(long, value_delimiter = ',')]
        slowed: Option<Vec<String>>,
    },
    /// Tier stability over several runs of one suite: per scenario, how many models land in
    /// the same tier in every run.
    Stability {
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
    },
    /// Print the run as CSV, Markdown, or BMF (bencher.dev's JSON).
    Export {
        run: PathBuf,
        #[arg(long, value_enum)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Markdown,
    Bmf,
}

/// `--lang`: a code of a text table; clap refuses anything else with exit 2.
fn lang(code: &str) -> Result<Lang, String> {
    Lang::parse(code).ok_or_else(|| {
        let codes: Vec<&str> = Lang::ALL.iter().map(|l| l.code()).collect();
        format!("unknown language '{code}' (one of: {})", codes.join(", "))
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("report: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let load = |dir: &PathBuf| -> Result<Run, String> {
        let run = if cli.strict {
            Run::load_strict(dir)?
        } else {
            Run::load(dir)?
        };
        for warning in run.warnings() {
            eprintln!("{warning}");
        }
        Ok(run)
    };
    match cli.command {
        Command::Render { run, lang } => {
            let data = load(&run)?;
            let out = run.join("report.html");
            render::render_in(&data, &out, lang)?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            base,
            new,
            threshold,
            metric,
            lang,
        } => {
            let metrics: Vec<Metric> = metric
                .iter()
                .map(|m| Metric::parse(m).ok_or_else(|| format!("unknown metric '{m}' (throughput, latency_p99, cpu_per_request, pss_per_conn)")))
                .collect::<Result<_, _>>()?;
            let (base_run, new_run) = (load(&base)?, load(&new)?);
            let rows = compare::compare(&base_run, &new_run, threshold / 100.0, &metrics);
            if rows.is_empty() {
                return Err("the two runs share no cell".into());
            }
            let changes = compare::tier_changes(&base_run, &new_run, Lang::En);
            print!("{}", compare::markdown(&rows, threshold / 100.0));
            print!("{}", compare::tiers_markdown(&changes));
            let page_changes = if lang == Lang::En {
                changes
            } else {
                compare::tier_changes(&base_run, &new_run, lang)
            };
            let page = compare::html(
                (&base_run, &new_run),
                &rows,
                threshold / 100.0,
                &page_changes,
                lang,
            )?;
            let html = new.join("compare.html");
            reports::run::replace_file(&html, page.as_bytes())?;
            let regressed = rows.iter().any(|r| r.verdict == Verdict::Regression);
            Ok(if regressed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Calibrate { run, same, slowed } => {
            let pair = |v: &Vec<String>, flag: &str| match v.as_slice() {
                [a, b] => Ok((a.clone(), b.clone())),
                _ => Err(format!("--{flag} takes two models: A,B")),
            };
            let same = pair(&same, "same")?;
            let slowed = slowed.as_ref().map(|s| pair(s, "slowed")).transpose()?;
            let data = Run::load(&run)?;
            let slowed = slowed.as_ref().map(|s| (s.0.as_str(), s.1.as_str()));
            print!(
                "{}",
                reports::calibration::calibrate_text(&data, (&same.0, &same.1), slowed)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Stability { runs } => {
            let runs: Vec<Run> = runs
                .iter()
                .map(|r| Run::load(r))
                .collect::<Result<_, _>>()?;
            print!("{}", reports::calibration::stability_text(&runs));
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { run, format } => {
            let data = load(&run)?;
            match format {
                Format::Csv => print!("{}", export::csv(&data)),
                Format::Markdown => print!("{}", export::markdown(&data)),
                Format::Bmf => println!(
                    "{}",
                    serde_json::to_string_pretty(&export::bmf(&data)).expect("BMF serialises")
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
