//! The command line: global options parsed by clap, then the command words and arguments of
//! the table in `vmq-admin-commands`; the help is built from both.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use vmq_admin_commands::{COMMANDS, Command, ParamKind};

use crate::command::{self, Format, Invocation};

/// The first line of the help.
pub const USAGE: &str =
    "usage: vmq-admin [-c FILE] [--url HOST:PORT] [--api-key KEY] <command> [key=value ...] [--format=json]";

/// The global options, then the command's words as given.
#[derive(Debug, Parser)]
#[command(name = "vmq-admin", disable_help_flag = true, disable_version_flag = true)]
pub struct Cli {
    /// The node's configuration file, to find its management API (default ./vernemq.conf, then
    /// /etc/vernemq/vernemq.conf).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The management API of another node.
    #[arg(long, value_name = "HOST:PORT")]
    pub url: Option<String>,
    /// API key for a node that is not on this host.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// Output: VerneMQ's tables (human) or the API's JSON (json).
    #[arg(long, value_name = "FORMAT", value_parser = command::parse_format)]
    pub format: Option<Format>,
    /// Prints this help, or a command's.
    #[arg(short = 'h', long = "help")]
    pub help: bool,
    /// The command words and its arguments.
    #[arg(value_name = "COMMAND", trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Request {
    /// Print this text.
    Help(String),
    /// Run a command.
    Run(Invocation),
}

impl Cli {
    /// What to do: the help when asked for or when no command is given, else the command.
    pub fn request(&self) -> anyhow::Result<Request> {
        let asks_help = |w: &String| w == "-h" || w == "--help";
        if self.words.is_empty() {
            return Ok(Request::Help(help()));
        }
        if self.help || self.words.iter().any(asks_help) {
            let words: Vec<String> = self.words.iter().filter(|w| !asks_help(w)).cloned().collect();
            return Ok(Request::Help(match vmq_admin_commands::by_words(&words) {
                Ok((command, _)) => command_help(command),
                Err(_) => help(),
            }));
        }
        Ok(Request::Run(command::parse(&self.words, self.format.unwrap_or(Format::Human))?))
    }
}

/// `vmq-admin --help`: the usage, the global options and every command.
pub fn help() -> String {
    let mut out = format!("{USAGE}\n\noptions:\n");
    out += &options();
    out += "\ncommands:\n";
    let width = COMMANDS.iter().map(|c| c.words.len()).max().unwrap_or(0);
    for c in COMMANDS {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  {:<width$}  {}", c.words, c.help_line());
    }
    out
}

/// `vmq-admin <command> --help`: its usage, what it does and each argument.
pub fn command_help(c: &Command) -> String {
    let usage = c.usage();
    let sep = if usage.is_empty() { "" } else { " " };
    let mut out = format!("usage: vmq-admin [options] {}{sep}{usage} [--format=json]\n\n{}\n", c.words, c.summary);
    if c.params.is_empty() {
        return out;
    }
    let rows: Vec<(String, &str)> = c
        .params
        .iter()
        .map(|p| {
            let form = match (p.kind, p.short) {
                (ParamKind::KeyValue { value, .. }, _) => format!("{}={value}", p.name),
                (ParamKind::Pairs { .. }, _) => format!("{}=VALUE", p.name),
                (ParamKind::Flag, Some(s)) => format!("-{s}, --{}", p.name),
                (ParamKind::Flag, None) => format!("--{}", p.name),
                (ParamKind::Option { value }, Some(s)) => format!("-{s} {value}, --{}={value}", p.name),
                (ParamKind::Option { value }, None) => format!("--{}={value}", p.name),
            };
            (form, p.help)
        })
        .collect();
    out += "\narguments:\n";
    let width = rows.iter().map(|(form, _)| form.len()).max().unwrap_or(0);
    for (form, help) in rows {
        let _ = writeln!(out, "  {form:<width$}  {help}");
    }
    out
}

/// The global options as clap knows them, one line each.
fn options() -> String {
    let cmd = Cli::command();
    let rows: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional())
        .map(|a| {
            let short = a.get_short().map_or("    ".to_string(), |s| format!("-{s}, "));
            let long = a.get_long().map(|l| format!("--{l}")).unwrap_or_default();
            let value = match a.get_value_names() {
                Some(names) if a.get_action().takes_values() => format!(" <{}>", names.join(" ")),
                _ => String::new(),
            };
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            (format!("{short}{long}{value}"), help)
        })
        .collect();
    let width = rows.iter().map(|(form, _)| form.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (form, help) in rows {
        let _ = writeln!(out, "  {form:<width$}  {help}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &str) -> Cli {
        Cli::try_parse_from(std::iter::once("vmq-admin").chain(args.split_whitespace())).expect("parses")
    }

    #[test]
    fn global_options_come_before_the_command_words() {
        let c = cli("-c /etc/vmq.conf --url 10.0.0.1:8888 --api-key k --format json cluster leave node=a@b -k -t 5");
        assert_eq!(c.config, Some(PathBuf::from("/etc/vmq.conf")));
        assert_eq!(c.url.as_deref(), Some("10.0.0.1:8888"));
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.words, ["cluster", "leave", "node=a@b", "-k", "-t", "5"]);
        let Request::Run(inv) = c.request().expect("a command") else { panic!("not a command") };
        assert_eq!(inv.format, Format::Json);
        assert_eq!(inv.args.len(), 3);
    }

    #[test]
    fn help_is_asked_for_with_or_without_a_command() {
        assert!(matches!(cli("--help").request(), Ok(Request::Help(h)) if h == help()));
        assert!(matches!(cli("").request(), Ok(Request::Help(h)) if h == help()));
        let leave = vmq_admin_commands::by_path("cluster/leave").expect("in the table");
        assert!(matches!(cli("cluster leave --help").request(), Ok(Request::Help(h)) if h == command_help(leave)));
        assert!(matches!(cli("-h cluster leave").request(), Ok(Request::Help(h)) if h == command_help(leave)));
    }

    #[test]
    fn a_bad_global_option_is_refused_by_clap() {
        let args = ["vmq-admin", "--format", "xml", "cluster", "show"];
        assert!(Cli::try_parse_from(args).unwrap_err().to_string().contains("unknown format 'xml'"));
        assert!(Cli::try_parse_from(["vmq-admin", "-c"]).is_err());
    }
}
