//! `vernemq`: the broker binary.
//!
//! `vernemq console [-c FILE]` runs the node in the foreground until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use vmq_config::Config;
use vmq_node::server::Node;
use vmq_node::storage::NodeStorage;

#[derive(Parser)]
#[command(name = "vernemq", version, about = "vmq-rs: a clustered MQTT broker compatible with VerneMQ")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the node in the foreground (logs to the console).
    Console {
        /// The configuration file; without it the node runs on embedded defaults
        /// (MQTT on 127.0.0.1:1883, data in ./data, anonymous clients allowed).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Checks a configuration file and prints the warnings; exits non-zero on errors.
    Check {
        /// The configuration file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Console { config } => {
            let cfg = match config {
                Some(path) => match Config::load(&path) {
                    Ok(cfg) => cfg,
                    Err(e) => {
                        eprintln!("vernemq: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::embedded_default(),
            };
            init_logging(&cfg);
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let text = describe(&e);
                    tracing::error!("{text}");
                    eprintln!("vernemq: {text}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    println!("warning: {w}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vernemq: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// The error and its causes, each cause only once: our errors already name their cause in
/// their own message, context added with `anyhow` does not.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(cfg: &Config) {
    let level: tracing::level_filters::LevelFilter = cfg.log_console_level.into();
    // RUST_LOG, when set, refines the level from the file (e.g. `vmq_node::session=debug`).
    let filter = EnvFilter::builder().with_default_directive(level.into()).from_env_lossy();
    let logger = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if cfg.log_console_json {
        logger.json().init();
    } else {
        logger.init();
    }
}

fn run(cfg: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        for w in &cfg.warnings {
            warn!("{w}");
        }
        let anonymous_somewhere = cfg.listeners.iter().any(|l| l.allow_anonymous_override);
        if !cfg.mqtt.allow_anonymous && !anonymous_somewhere && !cfg.auth_files.passwd {
            warn!("allow_anonymous is off and no authentication plugin is enabled: every client will be refused");
        }
        if !cfg.auth_files.acl {
            warn!(
                "plugins.vmq_acl is off and no other plugin authorizes: every publish and subscription will be refused"
            );
        }
        let source = cfg.source.as_ref().map_or_else(|| "embedded defaults".to_string(), |p| p.display().to_string());
        info!(nodename = %cfg.nodename, config = %source, "starting vmq-rs {}", env!("CARGO_PKG_VERSION"));
        let storage = NodeStorage::open(&cfg)?;
        let node = Node::start_with(&cfg, storage).await?;
        for listener in node.listeners().list() {
            info!(listener = %listener.spec.name, addr = %listener.spec.addr, "MQTT listener ready");
        }
        tokio::select! {
            signal = wait_for_signal() => signal?,
            // `vmq-admin cluster leave ... -k`: the node has moved its queues and left.
            _ = node.cluster().left() => {}
        }
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; info!("SIGINT received"); }
    }
    Ok(())
}
