//! `vmq-admin`: administers a running node through its management API.
//!
//! The node is found from its configuration file (`-c FILE`, default `./vernemq.conf`, then
//! `/etc/vernemq/vernemq.conf`): the first `listener.http.<name>` address. `--url host:port` and
//! `--api-key KEY` reach another node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use vmq_admin::client::Endpoint;
use vmq_admin::command;
use vmq_config::Config;

const USAGE: &str = "usage: vmq-admin [-c FILE] [--url HOST:PORT] [--api-key KEY] <command> [key=value ...] [--format=json]";

fn main() -> ExitCode {
    match run() {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vmq-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<String> {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    let mut config: Option<PathBuf> = None;
    let mut url: Option<String> = None;
    let mut api_key: Option<String> = None;
    while let Some(first) = args.first().cloned() {
        let take_value = |args: &mut Vec<String>| -> anyhow::Result<String> {
            args.remove(0);
            if args.is_empty() {
                anyhow::bail!("{first} needs a value\n{USAGE}");
            }
            Ok(args.remove(0))
        };
        match first.as_str() {
            "-c" | "--config" => config = Some(take_value(&mut args)?.into()),
            "--url" => url = Some(take_value(&mut args)?),
            "--api-key" => api_key = Some(take_value(&mut args)?),
            "-h" | "--help" => return Ok(help()),
            _ => break,
        }
    }
    if args.is_empty() {
        return Ok(help());
    }
    let inv = command::parse(&args, command::Format::Human)?;
    let endpoint = match url {
        Some(u) => Endpoint::parse(u.trim_start_matches("http://"), api_key)?,
        None => Endpoint::parse(&local_api(config.as_deref())?, api_key)?,
    };
    let mut out = std::io::stdout();
    command::run(&endpoint, &inv, &mut out)?;
    Ok(String::new())
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
    let first = listeners
        .first()
        .with_context(|| format!("{} has no listener.http.<name>: the node serves no management API", cfg.file_label()))?;
    let mut addr = first.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr.to_string())
}

fn help() -> String {
    let mut out = format!("{USAGE}\n\ncommands:\n");
    let width = vmq_admin_commands::COMMANDS.iter().map(|c| c.words.len()).max().unwrap_or(0);
    for c in vmq_admin_commands::COMMANDS {
        out.push_str(&format!("  {:<width$}  {}\n", c.words, c.help_line()));
    }
    out
}
