//! The command tree: `vmq-admin <group> <command> [key=value ...] [--flag ...]` maps to
//! `GET /api/v1/<group>/<command>?key=value&--flag` on the node, as VerneMQ's HTTP API does.

use anyhow::bail;
use serde_json::Value;

use crate::client::{Endpoint, encode_component};
use crate::table;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// VerneMQ's human tables.
    Human,
    /// The API's JSON.
    Json,
}

/// The commands this version knows, with their help text.
pub const COMMANDS: &[(&str, &str)] = &[
    ("cluster show", "Prints the cluster members and whether each is running."),
    ("cluster join", "discovery-node=<Node>: joins this node to the cluster of <Node>."),
    (
        "cluster leave",
        "node=<Node> [-k] [-i <secs>] [-t <secs>]: stops <Node>'s MQTT listeners; -k also disconnects its \
         clients, moves its remaining queues after -t seconds (default 60) with progress every -i seconds \
         (default 5), and removes it from the cluster. A node that is down is removed at once.",
    ),
];

/// Options that take a value, VerneMQ style (`-t 120` or `--timeout=120`): short form and the
/// key it is sent as.
const VALUE_FLAGS: &[(&str, &str)] = &[("-i", "interval"), ("-t", "timeout")];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Command words, e.g. `["cluster", "show"]`.
    pub path: Vec<String>,
    /// `key=value` arguments and flags (flags have an empty value), in order.
    pub args: Vec<(String, String)>,
    /// Output format.
    pub format: Format,
}

/// Parses the words after the global options.
pub fn parse(words: &[String]) -> anyhow::Result<Invocation> {
    let mut path = Vec::new();
    let mut args = Vec::new();
    let mut format = Format::Human;
    let mut pending_value: Option<String> = None;
    for w in words {
        if let Some(f) = w.strip_prefix("--format=") {
            format = match f {
                "json" => Format::Json,
                "human" => Format::Human,
                other => bail!("unknown format '{other}' (accepted: human, json)"),
            };
        } else if let Some(key) = pending_value.take() {
            args.push((key, w.clone()));
        } else if let Some(key) = VALUE_FLAGS.iter().find(|(short, _)| short == w).map(|(_, key)| key) {
            pending_value = Some(key.to_string());
        } else if let Some((flag, v)) = w.split_once('=').filter(|(f, _)| f.starts_with("--")) {
            let key = VALUE_FLAGS.iter().find(|(_, key)| format!("--{key}") == flag).map_or(flag, |(_, key)| key);
            args.push((key.to_string(), v.to_string()));
        } else if w.starts_with('-') {
            args.push((w.clone(), String::new()));
        } else if let Some((k, v)) = w.split_once('=') {
            args.push((k.to_string(), v.to_string()));
        } else if args.is_empty() {
            path.push(w.clone());
        } else {
            bail!("unexpected word '{w}' after arguments");
        }
    }
    if let Some(key) = pending_value {
        bail!("{key} needs a value");
    }
    let joined = path.join(" ");
    if !COMMANDS.iter().any(|(c, _)| *c == joined) {
        let known: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
        bail!("unknown command '{joined}'; known commands: {}", known.join(", "));
    }
    Ok(Invocation { path, args, format })
}

/// Runs `inv` against `endpoint`, writing what to print to `out` as it comes.
pub fn run(endpoint: &Endpoint, inv: &Invocation, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let answer = endpoint.get(&url(&inv.path.join("/"), &inv.args))?;
    out.write_all(render(&answer, inv.format).as_bytes())?;
    out.flush()?;
    if inv.path == ["cluster", "leave"] && inv.args.iter().any(|(k, _)| k == "-k" || k == "--kill_sessions") {
        follow_leave(endpoint, inv, out)?;
    }
    Ok(())
}

fn url(command: &str, args: &[(String, String)]) -> String {
    let mut url = format!("/api/v1/{command}");
    for (i, (k, v)) in args.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&encode_component(k));
        if !v.is_empty() {
            url.push('=');
            url.push_str(&encode_component(v));
        }
    }
    url
}

/// Prints the progress of a leave every `-i` seconds until the node has left.
fn follow_leave(endpoint: &Endpoint, inv: &Invocation, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let arg = |key: &str| inv.args.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let Some(node) = arg("node") else { return Ok(()) };
    let interval = match arg("interval") {
        Some(v) => v.parse::<u64>().map_err(|_| anyhow::anyhow!("-i expects a number of seconds, not '{v}'"))?,
        None => 5,
    };
    let status_url = url("cluster/leave-status", &[("node".to_string(), node)]);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(interval.max(1)));
        let answer = endpoint.get(&status_url)?;
        out.write_all(render(&answer, inv.format).as_bytes())?;
        out.flush()?;
        if answer.pointer("/status/done").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
    }
}

/// Renders an API answer.
pub fn render(answer: &Value, format: Format) -> String {
    if format == Format::Json {
        return format!("{answer}\n");
    }
    match answer.get("type").and_then(Value::as_str) {
        Some("table") => table::render(answer.get("table").and_then(Value::as_array).map_or(&[][..], |v| v)),
        Some("text") => format!("{}\n", answer.get("text").and_then(Value::as_str).unwrap_or_default()),
        _ => format!("{answer}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_vernemq_style_arguments() {
        let inv = parse(&words("cluster leave node=vmq2@127.0.0.1 -k --format=json")).unwrap();
        assert_eq!(inv.path, ["cluster", "leave"]);
        assert_eq!(inv.args, vec![("node".into(), "vmq2@127.0.0.1".into()), ("-k".into(), String::new())]);
        assert_eq!(inv.format, Format::Json);
        assert!(parse(&words("cluster shwo")).unwrap_err().to_string().contains("cluster show"));
        let inv = parse(&words("cluster leave node=vmq3@127.0.0.1 -k -i 2 --timeout=30")).unwrap();
        assert_eq!(
            inv.args,
            vec![
                ("node".into(), "vmq3@127.0.0.1".into()),
                ("-k".into(), String::new()),
                ("interval".into(), "2".into()),
                ("timeout".into(), "30".into()),
            ]
        );
        assert!(parse(&words("cluster leave node=a@b -t")).is_err());
    }
}
