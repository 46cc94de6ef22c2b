//! The command tree: `vmq-admin <group> <command> [key=value ...] [--flag ...]` maps to
//! `GET /api/v1/<group>/<command>?key=value&--flag` on the node, as VerneMQ's HTTP API does.
//! The commands and their arguments come from the table in `vmq-admin-commands`, which the
//! node dispatches through.

use anyhow::bail;
use serde_json::Value;

use vmq_admin_commands::{Command, CommandId};

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

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The command, from the table the node dispatches through.
    pub command: &'static Command,
    /// The query pairs to send, in order (flags have an empty value).
    pub args: Vec<(String, String)>,
    /// Output format.
    pub format: Format,
}

/// Parses the words after the global options: the command words, then its arguments.
/// `--format=json` may also come among the arguments, as VerneMQ accepts it there.
pub fn parse(words: &[String], mut format: Format) -> anyhow::Result<Invocation> {
    let mut rest = Vec::with_capacity(words.len());
    for w in words {
        match w.strip_prefix("--format=") {
            Some(f) => format = parse_format(f)?,
            None => rest.push(w.clone()),
        }
    }
    let (command, arg_words) = vmq_admin_commands::by_words(&rest)?;
    let args = command.parse_args(arg_words)?;
    Ok(Invocation { command, args, format })
}

/// `human` or `json`.
pub fn parse_format(f: &str) -> anyhow::Result<Format> {
    match f {
        "json" => Ok(Format::Json),
        "human" => Ok(Format::Human),
        other => bail!("unknown format '{other}' (accepted: human, json)"),
    }
}

/// Runs `inv` against `endpoint`, writing what to print to `out` as it comes.
pub fn run(endpoint: &Endpoint, inv: &Invocation, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    // Checked before anything is sent: a mistyped `-i` must not leave a leave running that
    // the command then does not follow.
    let follow = inv.command.id == CommandId::ClusterLeave && inv.command.flag(&inv.args, "kill_sessions");
    let interval = if follow { Some(leave_interval(inv)?) } else { None };
    let answer = endpoint.get(&url(&inv.command.path(), &inv.args))?;
    out.write_all(render(&answer, inv.format).as_bytes())?;
    out.flush()?;
    if let Some(interval) = interval {
        follow_leave(endpoint, inv, interval, out)?;
    }
    Ok(())
}

/// How often a followed leave is reported (`-i`, seconds; 5 by default).
fn leave_interval(inv: &Invocation) -> anyhow::Result<u64> {
    match inv.command.value(&inv.args, "interval") {
        Some(v) => v.parse::<u64>().map_err(|_| anyhow::anyhow!("-i expects a number of seconds, not '{v}'")),
        None => Ok(5),
    }
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
fn follow_leave(
    endpoint: &Endpoint,
    inv: &Invocation,
    interval: u64,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let Some(node) = inv.command.value(&inv.args, "node") else { return Ok(()) };
    let status_url = url("cluster/leave-status", &[("node".to_string(), node.to_string())]);
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
        let inv = parse(&words("cluster leave node=vmq2@127.0.0.1 -k --format=json"), Format::Human).unwrap();
        assert_eq!(inv.command.id, CommandId::ClusterLeave);
        assert_eq!(inv.args, vec![("node".into(), "vmq2@127.0.0.1".into()), ("-k".into(), String::new())]);
        assert_eq!(inv.format, Format::Json);
        assert!(parse(&words("cluster shwo"), Format::Human).unwrap_err().to_string().contains("cluster show"));
        let inv = parse(&words("cluster leave node=vmq3@127.0.0.1 -k -i 2 --timeout=30"), Format::Json).unwrap();
        assert_eq!(
            inv.args,
            vec![
                ("node".into(), "vmq3@127.0.0.1".into()),
                ("-k".into(), String::new()),
                ("interval".into(), "2".into()),
                ("timeout".into(), "30".into()),
            ]
        );
        assert!(parse(&words("cluster leave node=a@b -t"), Format::Human).is_err());
        assert!(parse(&words("cluster show --format=xml"), Format::Human).is_err());
    }

    #[test]
    fn a_leave_with_a_bad_interval_is_refused_before_the_node_is_asked() {
        let node = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        node.set_nonblocking(true).unwrap();
        let endpoint =
            Endpoint { addr: node.local_addr().unwrap(), api_key: None, timeout: std::time::Duration::from_secs(5) };
        let inv = parse(&words("cluster leave node=vmq3@127.0.0.1 -k -i soon"), Format::Human).unwrap();
        let err = run(&endpoint, &inv, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("-i expects a number"), "{err}");
        assert!(node.accept().is_err(), "the node was asked to leave");
    }

    /// `listener show --format=json` prints the API's answer as it is, one line, in VerneMQ's
    /// column order; `listener start` and the others print their text.
    #[test]
    fn listener_answers_render_as_vernemq_prints_them() {
        let table = serde_json::json!({"type": "table", "table": [
            {"type": "vmq", "status": "running", "address": "0.0.0.0", "port": "44053", "mountpoint": "",
             "max_conns": "infinity", "active_conns": 0, "all_conns": null},
            {"type": "mqtt", "status": "stopped", "address": "127.0.0.1", "port": "1883", "mountpoint": "",
             "max_conns": 10000, "active_conns": 1, "all_conns": 5},
        ]});
        let want = concat!(
            r#"{"type":"table","table":["#,
            r#"{"type":"vmq","status":"running","address":"0.0.0.0","port":"44053","mountpoint":"","#,
            r#""max_conns":"infinity","active_conns":0,"all_conns":null},"#,
            r#"{"type":"mqtt","status":"stopped","address":"127.0.0.1","port":"1883","mountpoint":"","#,
            r#""max_conns":10000,"active_conns":1,"all_conns":5}]}"#,
            "\n"
        );
        assert_eq!(render(&table, Format::Json), want);
        let human = render(&table, Format::Human);
        assert_eq!(
            human.lines().nth(3),
            Some("| vmq  | running | 0.0.0.0   | 44053 |            | infinity  | 0            |           |")
        );
        let started = serde_json::json!({"type": "text", "text": "Done: listening on 127.0.0.1:43567",
                                         "address": "127.0.0.1", "port": "43567"});
        assert_eq!(render(&started, Format::Human), "Done: listening on 127.0.0.1:43567\n");
        let inv = parse(&words("listener stop address=::1 port=1883 -k"), Format::Human).unwrap();
        assert_eq!(url(&inv.command.path(), &inv.args), "/api/v1/listener/stop?address=%3A%3A1&port=1883&-k");
    }

    #[test]
    fn urls_keep_argument_order_and_encode_values() {
        let inv = parse(&words("cluster leave node=a@127.0.0.1 -k --timeout=5"), Format::Human).unwrap();
        assert_eq!(url(&inv.command.path(), &inv.args), "/api/v1/cluster/leave?node=a%40127.0.0.1&-k&timeout=5");
    }
}
