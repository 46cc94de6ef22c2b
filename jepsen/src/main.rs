//! `vmq-jepsen`: drives real broker processes from outside.
//!
//! - `vmq-jepsen bench SCENARIO [OPTIONS]` runs one benchmark against a broker on loopback and
//!   prints a table (or `--json`). It exits with status 2 when a QoS 1/2 run lost a message the
//!   broker had acknowledged, and 1 on any other error.
//! - `vmq-jepsen test [OPTIONS]` runs a cluster in network namespaces under faults, records the
//!   history, checks it, and writes a summary and a timeline. Exit status: 0 no violation (or,
//!   with `--known-violations`, exactly the listed ones), 1 violations (or a mismatch with the
//!   list), 2 when it cannot run (not root, no binaries, setup failed).
//! - `vmq-jepsen check HISTORY` re-runs the checkers on a saved history (same exit status).
//! - `vmq-jepsen cleanup` removes namespaces, links and processes a killed run left behind.

use std::process::ExitCode;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use vmq_jepsen::bench::{self, BenchArgs};
use vmq_jepsen::check::{self, known};
use vmq_jepsen::harness::{self, TestArgs, net};
use vmq_jepsen::history;

#[derive(Parser)]
#[command(name = "vmq-jepsen", version, about = "Load generator, benchmark and fault harness for MQTT brokers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one benchmark scenario against a broker on loopback.
    Bench(BenchArgs),
    /// Runs a cluster in network namespaces under faults and checks the history (needs root).
    Test(TestArgs),
    /// Re-runs the checkers on a saved history.
    Check(CheckArgs),
    /// Removes namespaces, links and node processes left by a killed run (needs root).
    Cleanup,
}

#[derive(Args)]
struct CheckArgs {
    /// The history.jsonl of a run.
    history: PathBuf,
    /// Compare the verdict with this known-violations list.
    #[arg(long)]
    known_violations: Option<PathBuf>,
    /// Write the timeline here (default: timeline.svg beside the history).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No ANSI colours.
    #[arg(long)]
    no_color: bool,
}

/// Checks a history, writes summary.txt, report.json and the timeline, prints the summary.
fn check_history(path: &Path, known_list: Option<&Path>, svg: Option<&Path>, color: bool) -> ExitCode {
    let result = (|| -> anyhow::Result<bool> {
        let records = history::read(path)?;
        let report = check::check(&records)?;
        let comparison = match known_list {
            Some(list) => {
                let entries = known::load(list)?;
                let found = report.violations.iter().map(|f| f.kind.clone()).collect();
                Some(known::compare(&entries, &report.info, &found))
            }
            None => None,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let svg_path = svg.map_or_else(|| dir.join("timeline.svg"), Path::to_path_buf);
        std::fs::write(&svg_path, check::svg::timeline(&records, &report))?;
        let plain = check::report::summary(&report, comparison.as_ref(), false);
        std::fs::write(dir.join("summary.txt"), &plain)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        print!("{}", check::report::summary(&report, comparison.as_ref(), color));
        println!(
            "history: {}
timeline: {}",
            path.display(),
            svg_path.display()
        );
        Ok(match &comparison {
            Some(c) => c.ok(),
            None => report.ok(),
        })
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vmq-jepsen check: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Colours only for a terminal, and never with `--no-color` or `NO_COLOR`.
fn color(no_color: bool) -> bool {
    use std::io::IsTerminal;
    !no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

fn run_test(runtime: &tokio::runtime::Runtime, args: &TestArgs) -> ExitCode {
    if !net::is_root() {
        eprintln!("vmq-jepsen test: needs root (it creates network namespaces and packet filters); run it with sudo");
        return ExitCode::from(2);
    }
    // Whatever panics, the namespaces and nodes go: the run future's guards drop on unwind,
    // and this catches panics in other threads too.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        net::cleanup();
    }));
    let outcome = runtime.block_on(async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => return Err(anyhow::anyhow!("cannot watch SIGTERM: {e}")),
        };
        tokio::select! {
            r = harness::run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT); cluster removed")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated (SIGTERM); cluster removed")),
        }
    });
    // Dropping the run future above removed the cluster; this catches anything left over.
    net::cleanup();
    match outcome {
        Ok(files) => check_history(&files.history, args.known_violations.as_deref(), None, color(args.no_color)),
        Err(e) => {
            eprintln!("vmq-jepsen test: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmq-jepsen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Test(args) => run_test(&runtime, &args),
        Command::Check(args) => {
            check_history(&args.history, args.known_violations.as_deref(), args.svg.as_deref(), color(args.no_color))
        }
        Command::Cleanup => {
            if !net::is_root() {
                eprintln!("vmq-jepsen cleanup: needs root");
                return ExitCode::from(2);
            }
            for removed in net::cleanup() {
                println!("removed {removed}");
            }
            ExitCode::SUCCESS
        }
        Command::Bench(args) => match runtime.block_on(bench::run(&args)) {
            Ok(report) => {
                if args.json {
                    match serde_json::to_string(&report) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("vmq-jepsen: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    print!("{}", report.table());
                }
                if report.ok { ExitCode::SUCCESS } else { ExitCode::from(2) }
            }
            Err(e) => {
                eprintln!("vmq-jepsen bench: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
