//! `vmq-admin`: administers a running node through its management API.
//!
//! The node is found from its configuration file (`-c FILE`, default `./vernemq.conf`, then
//! `/etc/vernemq/vernemq.conf`): the first `listener.http.<name>` address. `--url host:port` and
//! `--api-key KEY` reach another node.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vmq_admin::cli::{Cli, Request};
use vmq_admin::client::Endpoint;
use vmq_admin::command;
use vmq_config::Config;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmq-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let inv = match cli.request()? {
        Request::Help(text) => {
            print!("{text}");
            return Ok(());
        }
        Request::Run(inv) => inv,
    };
    let endpoint = match cli.url {
        Some(u) => Endpoint::parse(u.trim_start_matches("http://"), cli.api_key)?,
        None => Endpoint::parse(&local_api(cli.config.as_deref())?, cli.api_key)?,
    };
    command::run(&endpoint, &inv, &mut std::io::stdout())
}

/// The management API address from the node's configuration file.
fn local_api(explicit: Option<&Path>) -> anyhow::Result<String> {
    let candidates = [Path::new("vernemq.conf"), Path::new("/etc/vernemq/vernemq.conf")];
    let cfg = match explicit {
        Some(p) => Config::load(p)?,
        None => match candidates.iter().find(|p| p.exists()) {
            Some(p) => Config::load(p)?,
            None => Config::embedded_default(),
        },
    };
    let listeners = vmq_config::http::http_listeners(&cfg)?;
    let first = listeners.first().with_context(|| {
        format!("{} has no listener.http.<name>: the node serves no management API", cfg.file_label())
    })?;
    let mut addr = first.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr.to_string())
}
