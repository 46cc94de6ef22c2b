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
    ("cluster leave", "node=<Node> [-k]: removes <Node> from the cluster."),
];

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
    for w in words {
        if let Some(f) = w.strip_prefix("--format=") {
            format = match f {
                "json" => Format::Json,
                "human" => Format::Human,
                other => bail!("unknown format '{other}' (accepted: human, json)"),
            };
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
    let joined = path.join(" ");
    if !COMMANDS.iter().any(|(c, _)| *c == joined) {
        let known: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
        bail!("unknown command '{joined}'; known commands: {}", known.join(", "));
    }
    Ok(Invocation { path, args, format })
}

/// Runs `inv` against `endpoint` and returns what to print.
pub fn run(endpoint: &Endpoint, inv: &Invocation) -> anyhow::Result<String> {
    let mut url = format!("/api/v1/{}", inv.path.join("/"));
    for (i, (k, v)) in inv.args.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&encode_component(k));
        if !v.is_empty() {
            url.push('=');
            url.push_str(&encode_component(v));
        }
    }
    let answer = endpoint.get(&url)?;
    Ok(render(&answer, inv.format))
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
    }
}
