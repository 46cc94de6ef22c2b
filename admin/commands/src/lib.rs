//! The admin commands, in one table. The node's management API dispatches through it
//! (`GET /api/v1/<words joined by '/'>?<arguments>`) and `vmq-admin` builds its parsing and its
//! help from it (`vmq-admin <words> <arguments>`), so the two cannot drift: both refuse an
//! unknown command or argument with the same [`CommandError`].
//!
//! Arguments follow VerneMQ's command line and travel as query pairs in the order given:
//! - `key=value` ([`ParamKind::KeyValue`], or any key for [`ParamKind::Pairs`]) goes as it is;
//! - a flag, `-k` or `--kill_sessions` ([`ParamKind::Flag`]), goes as the word typed with no
//!   value; `--require_certificate=true` (or `=false`, VerneMQ 2.1's form for some flags) goes
//!   as `require_certificate=true`;
//! - an option, `-t 120`, `--timeout 120` or `--timeout=120` ([`ParamKind::Option`]), goes as
//!   `timeout=120`.
//!
//! A new command is a row in [`COMMANDS`] and a variant of [`CommandId`]; the node does not
//! compile until it serves the new variant.

/// What a command does. The node matches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandId {
    /// `cluster show`.
    ClusterShow,
    /// `cluster join`.
    ClusterJoin,
    /// `cluster leave`.
    ClusterLeave,
    /// `cluster leave-status`.
    ClusterLeaveStatus,
    /// `set`.
    Set,
    /// `listener show`.
    ListenerShow,
    /// `listener start`.
    ListenerStart,
    /// `listener stop`.
    ListenerStop,
    /// `listener restart`.
    ListenerRestart,
    /// `listener delete`.
    ListenerDelete,
    /// `metrics show`.
    MetricsShow,
}

/// One admin command.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// What the node runs.
    pub id: CommandId,
    /// The command words, space-separated (`cluster show`); the API path joins them with `/`.
    pub words: &'static str,
    /// What it does, for the help.
    pub summary: &'static str,
    /// The arguments it takes, in the order the help shows them.
    pub params: &'static [Param],
}

/// One argument of a command.
#[derive(Debug, PartialEq, Eq)]
pub struct Param {
    /// The key it is sent as (`node`, `timeout`), and the long form of a flag or an option.
    pub name: &'static str,
    /// The one-letter form of a flag or an option (`-k`, `-t`).
    pub short: Option<char>,
    /// How it is written.
    pub kind: ParamKind,
    /// What it means, for the help.
    pub help: &'static str,
}

/// How an argument is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// `name=<value>`.
    KeyValue {
        /// The value's placeholder in the help (`<Node>`).
        value: &'static str,
        /// The command is refused without it.
        required: bool,
    },
    /// `-k` or `--name`, no value; `--name=true` or `--name=false` too.
    Flag,
    /// `-t <value>`, `--name <value>` or `--name=<value>`, sent as `name=<value>`.
    Option {
        /// The value's placeholder in the help (`<secs>`).
        value: &'static str,
    },
    /// Any number of `KEY=VALUE` pairs, whose keys the node checks (`set`).
    Pairs {
        /// The command is refused without at least one.
        required: bool,
    },
}

const NODE: Param = Param {
    name: "node",
    short: None,
    kind: ParamKind::KeyValue { value: "<Node>", required: true },
    help: "the node, as `cluster show` names it",
};

/// `address=<IpAddr>` with [`PORT`]: how the `listener` commands name a listener, as VerneMQ
/// does (a Unix socket listener: `address=local:<path> port=0`).
const ADDRESS: Param = Param {
    name: "address",
    short: None,
    kind: ParamKind::KeyValue { value: "<IpAddr>", required: true },
    help: "the IP address the listener is bound to, or local:<path> for a Unix socket",
};

const PORT: Param = Param {
    name: "port",
    short: None,
    kind: ParamKind::KeyValue { value: "<Port>", required: true },
    help: "its port (0 for a Unix socket)",
};

const fn flag(name: &'static str, help: &'static str) -> Param {
    Param { name, short: None, kind: ParamKind::Flag, help }
}

const fn option(name: &'static str, value: &'static str, help: &'static str) -> Param {
    Param { name, short: None, kind: ParamKind::Option { value }, help }
}

/// Every admin command.
pub const COMMANDS: &[Command] = &[
    Command {
        id: CommandId::ClusterShow,
        words: "cluster show",
        summary: "Prints the cluster members and whether each is running.",
        params: &[],
    },
    Command {
        id: CommandId::ClusterJoin,
        words: "cluster join",
        summary: "joins this node to the cluster of <Node>.",
        params: &[Param {
            name: "discovery-node",
            short: None,
            kind: ParamKind::KeyValue { value: "<Node>", required: true },
            help: "a member of the cluster to join: <name>@<host>[:<port>]",
        }],
    },
    Command {
        id: CommandId::ClusterLeave,
        words: "cluster leave",
        summary: "stops <Node>'s MQTT listeners; -k also disconnects its clients, moves its remaining queues after \
                  -t seconds (default 60) with progress every -i seconds (default 5), and removes it from the \
                  cluster. A node that is down is removed at once.",
        params: &[
            NODE,
            Param {
                name: "kill_sessions",
                short: Some('k'),
                kind: ParamKind::Flag,
                help: "disconnect its clients, move its queues and remove it from the cluster",
            },
            Param {
                name: "interval",
                short: Some('i'),
                kind: ParamKind::Option { value: "<secs>" },
                help: "seconds between progress reports with -k (default 5)",
            },
            Param {
                name: "timeout",
                short: Some('t'),
                kind: ParamKind::Option { value: "<secs>" },
                help: "seconds to wait for clients to leave before moving the queues (default 60)",
            },
        ],
    },
    Command {
        id: CommandId::ClusterLeaveStatus,
        words: "cluster leave-status",
        summary: "prints how far the leave of <Node> is.",
        params: &[NODE],
    },
    Command {
        id: CommandId::Set,
        words: "set",
        summary: "changes settings at runtime, not written back to vernemq.conf \
                  (allow_register|publish|subscribe|unsubscribe_during_netsplit=on|off, systree_enabled=on|off, systree_interval=<ms>).",
        params: &[Param {
            name: "KEY",
            short: None,
            kind: ParamKind::Pairs { required: true },
            help: "a runtime setting and its value",
        }],
    },
    Command {
        id: CommandId::MetricsShow,
        words: "metrics show",
        summary: "prints the node's metrics, one `counter.<name> = <value>` or `gauge.<name> = <value>` line per \
                  series (labelled series with their labels); -d adds each metric's description; a label option \
                  keeps the series with that label value.",
        params: &[
            Param {
                name: "describe",
                short: Some('d'),
                kind: ParamKind::Flag,
                help: "print each metric's description above it",
            },
            Param {
                name: "request",
                short: None,
                kind: ParamKind::Option { value: "<connect|publish|subscribe|unsubscribe>" },
                help: "only series with this request label (netsplit_refused)",
            },
            Param {
                name: "peer",
                short: None,
                kind: ParamKind::Option { value: "<Node>" },
                help: "only series with this peer label (the metadata exchanges)",
            },
        ],
    },
    Command {
        id: CommandId::ListenerShow,
        words: "listener show",
        summary: "prints every listener: type (mqtt, mqtts, mqttws, mqttwss, vmq, http), status, address, port, \
                  mountpoint, max_conns, active_conns and all_conns (connections accepted since it was first \
                  started).",
        params: &[
            Param {
                name: "tls",
                short: Some('t'),
                kind: ParamKind::Flag,
                help: "also print the TLS settings (tls_version, certfile, cafile, keyfile, ...)",
            },
            Param {
                name: "mqtt",
                short: Some('m'),
                kind: ParamKind::Flag,
                help: "also print allowed_protocol_versions and allow_anonymous_override",
            },
        ],
    },
    Command {
        id: CommandId::ListenerStart,
        words: "listener start",
        summary: "creates and starts an MQTT listener on <IpAddr>:<Port> (port 0: a free port, printed), until the \
                  node stops: it is not written to vernemq.conf. Settings not given take VerneMQ's defaults.",
        params: &[
            ADDRESS,
            PORT,
            Param {
                name: "mountpoint",
                short: Some('m'),
                kind: ParamKind::Option { value: "<Mountpoint>" },
                help: "the prefix isolating this listener's topics",
            },
            option("max_connections", "<n|infinity>", "concurrent connections at most (default 10000)"),
            option(
                "nr_of_acceptors",
                "<n>",
                "accepted for VerneMQ's command line and ignored: one task accepts per listener",
            ),
            option("allowed_protocol_versions", "<3,4,5>", "the MQTT versions accepted (default 3,4,5)"),
            flag("allow_anonymous_override", "accept clients without credentials on this listener"),
            flag("proxy_protocol", "connections start with a PROXY protocol (v1 or v2) header"),
            flag(
                "proxy_protocol_use_cn_as_username",
                "with --proxy_protocol: the client certificate's common name from the header is the user name",
            ),
            flag("websocket", "MQTT over WebSocket (on /mqtt)"),
            flag("ssl", "TLS; with --websocket, secure WebSocket. The options below need it"),
            option("certfile", "<file>", "with --ssl: the PEM server certificate (required)"),
            option("keyfile", "<file>", "with --ssl: the PEM key of certfile (required)"),
            option("cafile", "<file>", "with --ssl: the PEM CA certificates client certificates are checked against"),
            option("crlfile", "<file>", "with --ssl: a PEM revocation list for client certificates"),
            option("ciphers", "<list>", "with --ssl: the cipher suites allowed, separated by colons"),
            option("eccs", "<list>", "with --ssl: the elliptic curves allowed"),
            option("tls_version", "<tlsv1.2|tlsv1.3>", "with --ssl: the only TLS version accepted (default both)"),
            flag("require_certificate", "with --ssl: refuse clients without a certificate signed by cafile"),
            flag("use_identity_as_username", "with --ssl: the client certificate's common name is the user name"),
        ],
    },
    Command {
        id: CommandId::ListenerStop,
        words: "listener stop",
        summary: "stops accepting new connections on the listener at <IpAddr>:<Port>; its connections go on unless \
                  -k closes them.",
        params: &[
            ADDRESS,
            PORT,
            Param {
                name: "kill_sessions",
                short: Some('k'),
                kind: ParamKind::Flag,
                help: "also disconnect the clients it accepted",
            },
        ],
    },
    Command {
        id: CommandId::ListenerRestart,
        words: "listener restart",
        summary: "accepts new connections again on a stopped listener, with the settings it had.",
        params: &[ADDRESS, PORT],
    },
    Command {
        id: CommandId::ListenerDelete,
        words: "listener delete",
        summary: "removes a stopped listener (closing the connections it still has) until the node restarts.",
        params: &[ADDRESS, PORT],
    },
];

/// Why a command line or an API request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No command has these words.
    #[error("unknown command '{words}'; known commands: {}", known())]
    UnknownCommand {
        /// The words given, space-separated.
        words: String,
    },
    /// The command takes no such argument.
    #[error("'{command}' takes no argument '{argument}' (usage: {})", usage_of(command))]
    UnknownArgument {
        /// The command's words.
        command: &'static str,
        /// The argument as given.
        argument: String,
    },
    /// A required argument is absent (or empty).
    #[error("missing {0}")]
    MissingArgument(String),
    /// An option came last, without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A flag was given a value other than `true` or `false`.
    #[error("{flag} takes no value, or true or false, not '{value}'")]
    FlagValue {
        /// The flag as given.
        flag: String,
        /// The value given.
        value: String,
    },
    /// A word that is not an argument came after the arguments.
    #[error("unexpected word '{0}' after arguments")]
    UnexpectedWord(String),
}

fn known() -> String {
    COMMANDS.iter().map(|c| c.words).collect::<Vec<_>>().join(", ")
}

/// `cluster leave node=<Node> [-k] ...`.
fn usage_of(words: &str) -> String {
    match COMMANDS.iter().find(|c| c.words == words).map(Command::usage) {
        Some(usage) if !usage.is_empty() => format!("{words} {usage}"),
        _ => words.to_string(),
    }
}

/// The command an API path names (`cluster/show`).
pub fn by_path(path: &str) -> Result<&'static Command, CommandError> {
    let words = path.trim_matches('/').replace('/', " ");
    COMMANDS.iter().find(|c| c.words == words).ok_or(CommandError::UnknownCommand { words })
}

/// The command a command line names, and the words after its own: the leading words that are
/// neither `key=value` nor `-flag` are the command's.
pub fn by_words(words: &[String]) -> Result<(&'static Command, &[String]), CommandError> {
    let n = words.iter().take_while(|w| !w.contains('=') && !w.starts_with('-')).count();
    let joined = words[..n].join(" ");
    let command = COMMANDS.iter().find(|c| c.words == joined).ok_or(CommandError::UnknownCommand { words: joined })?;
    Ok((command, &words[n..]))
}

impl Command {
    /// The API path, relative to `/api/v1/`.
    pub fn path(&self) -> String {
        self.words.replace(' ', "/")
    }

    /// The arguments as the help shows them: `node=<Node> [-k] [-i <secs>] [-t <secs>]`. A
    /// command with many optional arguments shows them as `[arguments]` (its `--help` lists
    /// them), so that the list of commands stays readable.
    pub fn usage(&self) -> String {
        let optional = self.params.iter().filter(|p| !p.required()).count();
        let collapse = optional > MAX_INLINE_OPTIONAL;
        let mut parts: Vec<String> = self
            .params
            .iter()
            .filter(|p| !collapse || p.required())
            .map(|p| {
                let text = match p.kind {
                    ParamKind::KeyValue { value, .. } => format!("{}={value}", p.name),
                    ParamKind::Flag => flag_form(p),
                    ParamKind::Option { value } if p.short.is_some() => format!("{} {value}", flag_form(p)),
                    ParamKind::Option { value } => format!("--{}={value}", p.name),
                    ParamKind::Pairs { .. } => format!("{}=VALUE ...", p.name),
                };
                if p.required() { text } else { format!("[{text}]") }
            })
            .collect();
        if collapse {
            parts.push("[arguments]".to_string());
        }
        parts.join(" ")
    }

    /// The one-line help: the usage, then what the command does.
    pub fn help_line(&self) -> String {
        match self.usage() {
            usage if usage.is_empty() => self.summary.to_string(),
            usage => format!("{usage}: {}", self.summary),
        }
    }

    /// Turns command-line arguments into the query pairs the API takes, refusing what the
    /// command does not take and checking what it requires.
    pub fn parse_args(&self, words: &[String]) -> Result<Vec<(String, String)>, CommandError> {
        let mut args = Vec::with_capacity(words.len());
        // An option waiting for its value in the next word, and the word that named it.
        let mut pending: Option<(&Param, &String)> = None;
        for w in words {
            if let Some((p, _)) = pending.take() {
                args.push((p.name.to_string(), w.clone()));
                continue;
            }
            let short = w.strip_prefix('-').filter(|s| !s.starts_with('-')).and_then(|s| {
                let mut chars = s.chars();
                chars.next().filter(|_| chars.next().is_none())
            });
            if let Some(c) = short {
                match self.params.iter().find(|p| p.short == Some(c)) {
                    Some(p) if p.kind == ParamKind::Flag => args.push((w.clone(), String::new())),
                    Some(p) => pending = Some((p, w)),
                    None => return Err(self.unknown(w)),
                }
            } else if let Some(long) = w.strip_prefix("--") {
                let (name, value) = long.split_once('=').map_or((long, None), |(n, v)| (n, Some(v)));
                let Some(p) = self.param(name) else { return Err(self.unknown(w)) };
                match (p.kind, value) {
                    (ParamKind::Flag, None) => args.push((w.clone(), String::new())),
                    (ParamKind::Flag, Some(v)) => {
                        check_flag_value(&format!("--{name}"), v)?;
                        args.push((name.to_string(), v.to_string()));
                    }
                    (ParamKind::Option { .. }, None) => pending = Some((p, w)),
                    (ParamKind::Option { .. }, Some(v)) => args.push((name.to_string(), v.to_string())),
                    _ => return Err(self.unknown(w)),
                }
            } else if let Some((k, v)) = w.split_once('=') {
                let takes = |p: &Param| match p.kind {
                    ParamKind::KeyValue { .. } => p.name == k,
                    ParamKind::Pairs { .. } => true,
                    _ => false,
                };
                if !self.params.iter().any(takes) {
                    return Err(self.unknown(w));
                }
                args.push((k.to_string(), v.to_string()));
            } else {
                return Err(CommandError::UnexpectedWord(w.clone()));
            }
        }
        if let Some((_, typed)) = pending {
            return Err(CommandError::MissingValue(typed.clone()));
        }
        self.check(&args)?;
        Ok(args)
    }

    /// Checks query pairs as the API receives them: every key is one the command takes, a
    /// flag's value is empty, `true` or `false`, and every required argument is there with a
    /// value.
    pub fn check(&self, args: &[(String, String)]) -> Result<(), CommandError> {
        for (k, v) in args {
            match self.params.iter().find(|p| p.takes_pair(k)) {
                None => {
                    let argument = if v.is_empty() { k.clone() } else { format!("{k}={v}") };
                    return Err(self.unknown(&argument));
                }
                Some(p) if p.kind == ParamKind::Flag && !v.is_empty() => check_flag_value(k, v)?,
                Some(_) => {}
            }
        }
        for p in self.params {
            match p.kind {
                ParamKind::KeyValue { value, required: true } if self.value(args, p.name).is_none() => {
                    return Err(CommandError::MissingArgument(format!("{}={value}", p.name)));
                }
                ParamKind::Pairs { required: true } if args.is_empty() => {
                    return Err(CommandError::MissingArgument(format!("{}=VALUE", p.name)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The last non-empty value of `name` in the query pairs.
    pub fn value<'a>(&self, args: &'a [(String, String)], name: &str) -> Option<&'a str> {
        args.iter().rev().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// True when the flag `name` is among the query pairs, in any of its forms, and its last
    /// occurrence is not `name=false`.
    pub fn flag(&self, args: &[(String, String)], name: &str) -> bool {
        self.param(name)
            .and_then(|p| args.iter().rev().find(|(k, _)| p.takes_pair(k)))
            .is_some_and(|(_, v)| v != "false")
    }

    fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == name && !matches!(p.kind, ParamKind::Pairs { .. }))
    }

    fn unknown(&self, argument: &str) -> CommandError {
        CommandError::UnknownArgument { command: self.words, argument: argument.to_string() }
    }
}

impl Param {
    /// True when the command is refused without it.
    fn required(&self) -> bool {
        matches!(self.kind, ParamKind::KeyValue { required: true, .. } | ParamKind::Pairs { required: true })
    }

    /// True when a query key is this argument: its name, or for a flag also `-k` / `--name`.
    fn takes_pair(&self, key: &str) -> bool {
        match self.kind {
            ParamKind::Pairs { .. } => true,
            ParamKind::Flag => {
                key == self.name
                    || key.strip_prefix("--") == Some(self.name)
                    || self.short.is_some_and(|c| {
                        let mut rest = key.chars();
                        rest.next() == Some('-') && rest.next() == Some(c) && rest.next().is_none()
                    })
            }
            ParamKind::KeyValue { .. } | ParamKind::Option { .. } => key == self.name,
        }
    }
}

/// More optional arguments than this are shown as `[arguments]` in a command's usage.
const MAX_INLINE_OPTIONAL: usize = 4;

/// A flag's value, when one is given: `true` or `false` (VerneMQ 2.1 writes
/// `--require_certificate=true`).
fn check_flag_value(flag: &str, value: &str) -> Result<(), CommandError> {
    match value {
        "true" | "false" => Ok(()),
        _ => Err(CommandError::FlagValue { flag: flag.to_string(), value: value.to_string() }),
    }
}

/// `-k`, or `--name` for an argument without a short form.
fn flag_form(p: &Param) -> String {
    match p.short {
        Some(c) => format!("-{c}"),
        None => format!("--{}", p.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn command(words: &str) -> &'static Command {
        COMMANDS.iter().find(|c| c.words == words).expect("in the table")
    }

    #[test]
    fn paths_and_words_name_the_same_commands() {
        for c in COMMANDS {
            assert_eq!(by_path(&c.path()).map(|f| f.id), Ok(c.id));
            assert_eq!(by_words(&words(c.words)).map(|(f, rest)| (f.id, rest.len())), Ok((c.id, 0)));
        }
        let err = by_path("cluster/shwo").unwrap_err();
        assert_eq!(by_words(&words("cluster shwo node=x")).unwrap_err(), err);
        assert!(err.to_string().starts_with("unknown command 'cluster shwo'; known commands: cluster show, "), "{err}");
    }

    #[test]
    fn leave_arguments_parse_as_vernemq_writes_them() {
        let leave = command("cluster leave");
        let args = leave.parse_args(&words("node=vmq3@127.0.0.1 -k -i 2 --timeout=30")).unwrap();
        let want = [("node", "vmq3@127.0.0.1"), ("-k", ""), ("interval", "2"), ("timeout", "30")];
        assert_eq!(args, want.map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(leave.flag(&args, "kill_sessions"));
        assert_eq!(leave.value(&args, "timeout"), Some("30"));
        let long = leave.parse_args(&words("node=a@b --kill_sessions")).unwrap();
        assert!(leave.flag(&long, "kill_sessions"));
        assert!(!leave.flag(&leave.parse_args(&words("node=a@b")).unwrap(), "kill_sessions"));
        assert_eq!(leave.parse_args(&words("node=a@b -t")), Err(CommandError::MissingValue("-t".into())));
        assert_eq!(leave.parse_args(&words("node=a@b --timeout")), Err(CommandError::MissingValue("--timeout".into())));
        assert_eq!(leave.parse_args(&words("-k")), Err(CommandError::MissingArgument("node=<Node>".into())));
        assert!(matches!(leave.parse_args(&words("node=a@b -x")), Err(CommandError::UnknownArgument { .. })));
        assert!(matches!(
            leave.parse_args(&words("node=a@b --kill_sessions=yes")),
            Err(CommandError::FlagValue { .. })
        ));
        assert_eq!(leave.parse_args(&words("node=a@b stray")), Err(CommandError::UnexpectedWord("stray".into())));
    }

    #[test]
    fn the_api_checks_query_pairs_against_the_same_table() {
        let pairs =
            |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let leave = command("cluster leave");
        assert_eq!(leave.check(&pairs(&[("node", "a@b"), ("-k", ""), ("timeout", "1")])), Ok(()));
        assert!(leave.flag(&pairs(&[("kill_sessions", "")]), "kill_sessions"));
        assert_eq!(leave.check(&pairs(&[("node", "")])), Err(CommandError::MissingArgument("node=<Node>".into())));
        let err = command("cluster show").check(&pairs(&[("foo", "1")])).unwrap_err();
        assert_eq!(err.to_string(), "'cluster show' takes no argument 'foo=1' (usage: cluster show)");
        let set = command("set");
        assert_eq!(set.check(&pairs(&[("allow_publish_during_netsplit", "on")])), Ok(()));
        assert_eq!(set.check(&[]), Err(CommandError::MissingArgument("KEY=VALUE".into())));
    }

    #[test]
    fn listener_start_takes_vernemq_forms_of_options_and_flags() {
        let start = command("listener start");
        let line = "address=127.0.0.1 port=1884 --mountpoint /test -m /other --nr_of_acceptors=10 \
                    --max_connections=1000 --websocket --ssl --certfile=c.pem --keyfile k.pem --require_certificate=true \
                    --use_identity_as_username=false";
        let args = start.parse_args(&words(line)).unwrap();
        assert_eq!(start.value(&args, "address"), Some("127.0.0.1"));
        assert_eq!(start.value(&args, "mountpoint"), Some("/other"));
        assert_eq!(start.value(&args, "nr_of_acceptors"), Some("10"));
        assert_eq!(start.value(&args, "keyfile"), Some("k.pem"));
        assert!(start.flag(&args, "websocket") && start.flag(&args, "ssl") && start.flag(&args, "require_certificate"));
        assert!(!start.flag(&args, "use_identity_as_username") && !start.flag(&args, "proxy_protocol"));
        let err = start.parse_args(&words("address=127.0.0.1 port=1 --ssl=yes")).unwrap_err();
        assert_eq!(err.to_string(), "--ssl takes no value, or true or false, not 'yes'");
        assert_eq!(
            start.parse_args(&words("port=1884")),
            Err(CommandError::MissingArgument("address=<IpAddr>".into()))
        );
        assert_eq!(start.parse_args(&words("address=a port=1 -m")), Err(CommandError::MissingValue("-m".into())));
        let err = start.parse_args(&words("address=a port=1 --http")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'listener start' takes no argument '--http' (usage: listener start address=<IpAddr> port=<Port> [arguments])"
        );
    }

    #[test]
    fn listener_commands_name_a_listener_by_address_and_port() {
        for words_ in ["listener stop", "listener restart", "listener delete"] {
            let c = command(words_);
            assert_eq!(c.usage().split(' ').take(2).collect::<Vec<_>>(), ["address=<IpAddr>", "port=<Port>"]);
            assert_eq!(c.parse_args(&words("address=::1")), Err(CommandError::MissingArgument("port=<Port>".into())));
        }
        let stop = command("listener stop");
        assert!(stop.flag(&stop.parse_args(&words("address=127.0.0.1 port=1 -k")).unwrap(), "kill_sessions"));
        let pairs =
            |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            stop.check(&pairs(&[("address", "a"), ("port", "1"), ("kill_sessions", "maybe")])),
            Err(CommandError::FlagValue { flag: "kill_sessions".into(), value: "maybe".into() })
        );
        let show = command("listener show");
        assert_eq!(show.usage(), "[-t] [-m]");
        assert!(show.flag(&show.parse_args(&words("--tls")).unwrap(), "tls"));
    }

    #[test]
    fn help_lines_show_usage_then_summary() {
        assert_eq!(command("cluster show").help_line(), "Prints the cluster members and whether each is running.");
        let join = "discovery-node=<Node>: joins this node to the cluster of <Node>.";
        assert_eq!(command("cluster join").help_line(), join);
        let leave = "node=<Node> [-k] [-i <secs>] [-t <secs>]: stops <Node>'s";
        assert!(command("cluster leave").help_line().starts_with(leave));
        let start = "address=<IpAddr> port=<Port> [arguments]: creates and starts";
        assert!(command("listener start").help_line().starts_with(start));
    }
}
