//! `vmq-jepsen`: drives real broker processes from outside.
//!
//! `vmq-jepsen bench SCENARIO [OPTIONS]` runs one benchmark against a broker on loopback and
//! prints a table (or `--json`). It exits with status 2 when a QoS 1/2 run lost a message the
//! broker had acknowledged, and 1 on any other error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmq_jepsen::bench::{self, BenchArgs};

#[derive(Parser)]
#[command(
    name = "vmq-jepsen",
    version,
    about = "Load generator, benchmark and fault harness for MQTT brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one benchmark scenario against a broker on loopback.
    Bench(BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmq-jepsen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
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
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("vmq-jepsen bench: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
