//! The `vmq_acl` ACL file: which topics a client may publish to and which filters it may
//! subscribe to, read and matched as VerneMQ's `vmq_acl` plugin does
//! (`apps/vmq_acl/src/vmq_acl.erl`, topic rules from `apps/vmq_commons/src/vmq_topic.erl`).
//!
//! # Format
//!
//! ```text
//! # ACL for everyone
//! topic bar
//! topic write foo
//! topic read open_to_all
//!
//! # ACL for user 'john'
//! user john
//! topic foo
//! topic read baz
//! topic write open_to_all
//!
//! pattern read sensor/%u/#
//! ```
//!
//! A line is one of these, tried in this order (`parse_acl_line/2`; the first that fits wins):
//! - `#…`: a comment, only with the `#` in the first column;
//! - `topic read <topic>`, `topic write <topic>`, `topic <topic>` (read and write);
//! - `user <name>`: the `topic` lines after it, up to the next `user` line, are that user's;
//! - `pattern read <topic>`, `pattern write <topic>`, `pattern <topic>`;
//! - an empty line.
//!
//! Each keyword is followed by exactly one space, and the rest of the line, with spaces and tabs
//! trimmed from both ends (`trim/1`), is the topic or user name. So `topic  read a` (two spaces)
//! is `topic` on the topic `read a`, and `topic read` is `topic` on `read`. Lines end in `\n` or
//! `\r\n` (`file:read_line/1` drops the `\r`); the last one need not end.
//!
//! Any other line (an unknown keyword, a tab after a keyword, leading white space, a blank line
//! holding spaces) crashes VerneMQ's parser; here it makes the whole file invalid
//! ([`ParseError`]), so that the node keeps the ACL it had. A topic that is not a valid MQTT
//! filter (`vmq_topic:validate_topic(subscribe, _)`) is skipped and [`Acl::warnings`] names its
//! line, as VerneMQ logs a warning and goes on.
//!
//! # Matching
//!
//! [`Acl::allows`] grants access when any of these covers the topic (`check/4`):
//! - a `topic` line above the first `user` line, for every client (`check_all_acl/2`);
//! - a `topic` line of the client's own `user` section (`check_user_acl/3`);
//! - a `pattern` line, for every client, after substitution (`check_pattern_acl/4`, `subst/5`):
//!   a level that is exactly `%c`, `%u` or `%m` stands for the client id, the user name or the
//!   mountpoint. Inside a level, and in `topic` lines, they are plain text. A client without a
//!   user name matches no `%u` level.
//!
//! An ACL topic covers a client's topic level by level (`vmq_topic:match/2`, ACL topic second):
//! a plain level must be equal, `+` takes any one level and `#` takes the rest, including none
//! (`a/#` covers `a`). For a subscription the client's filter is compared the same way, its
//! wildcards as plain levels: `read a/#` allows subscribing `a/b`, `a/+` and `a/#` but not `#`
//! or `+/b`, and `read a/+` allows `a/+` but not `a/b/#`. `read` lines grant subscribing and
//! `write` lines publishing, never the other.
//!
//! Topics starting with `$` are not special (`#` covers `$SYS/…`), and a shared subscription
//! is checked as the whole filter: `$share/g/a/b` needs `read $share/g/a/b`, `$share/+/a/b`
//! or the like; `read a/b` is not enough.
//!
//! # Mountpoints
//!
//! VerneMQ does not scope ACL lines by mountpoint: its tables hold the lines alone, a file has
//! no way to name a mountpoint, and the topic checked is the one the client sent, without its
//! listener's mountpoint. Every line applies on every listener; only `%m` in a `pattern` line
//! tells mountpoints apart (`pattern %m/#` on mountpoint `m` covers `m/…`; on the default
//! mountpoint `""` it covers `/…`).
//!
//! # Where this differs from VerneMQ
//!
//! - A substituted client id, user name or mountpoint is compared as text. VerneMQ puts it into
//!   the topic as a level that `match/2` then reads as a wildcard, so a client named `#` would be
//!   granted everything below `pattern read sensor/%c`.
//! - An ACL `+` does not cover a filter's `#`. VerneMQ lets `read a/+` subscribe to `a/#`, which
//!   delivers `a` and `a/b/c`, neither of which `read a/+` allows.
//! - An unparseable line rejects the file. VerneMQ's reloader crashes on it and is left with the
//!   previous lines plus the new ones above the bad line.
//! - The `topic_max_depth` limit is not applied to ACL topics: it is a broker setting, which
//!   already refuses deeper topics from clients, so the only effect of VerneMQ dropping deeper
//!   ACL lines was on a `#` one level past the limit.
//! - A `user` name that is not UTF-8 gets a warning, and its section applies to no client (MQTT
//!   user names are UTF-8 [MQTT-3.1.3-11]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// `?MAX_LEN` of `vmq_topic`: the longest topic, in bytes.
const MAX_TOPIC_LEN: usize = 65536;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe to a filter (VerneMQ's `auth_on_subscribe`): granted by `read` lines.
    Read,
    /// Publish to a topic (`auth_on_publish`): granted by `write` lines.
    Write,
}

/// The client asking: which `user` section applies, and what `%m`, `%c` and `%u` stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who<'a> {
    /// The mountpoint of the client's listener, `""` for none; only `%m` uses it.
    pub mountpoint: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// The user name the client's CONNECT carried, if any.
    pub username: Option<&'a str>,
}

/// A parsed ACL file; see the [module docs](self). The default one allows nothing.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// `topic` lines above the first `user` line: VerneMQ's `vmq_acl_*_all` tables.
    everyone: Rules,
    /// `topic` lines under `user <name>`, all sections of one name together.
    users: HashMap<Box<str>, Rules>,
    /// `pattern` lines.
    patterns: Rules,
    /// Lines skipped, with why.
    warnings: Vec<(usize, String)>,
}

/// A line that makes the file invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub reason: LineError,
}

/// What is wrong with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a comment, an empty line or one of the keyword forms.
    #[error(
        "expected `topic [read|write] <topic>`, `user <name>`, `pattern [read|write] <topic>`, \
         a `#` comment or an empty line (one space after each keyword)"
    )]
    Unknown,
    /// Spaces or tabs at the start of the line, or a line of nothing else, which VerneMQ does
    /// not accept either.
    #[error("the line starts with white space")]
    LeadingWhitespace,
}

/// Why [`Acl::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read ACL file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line cannot be parsed.
    #[error("ACL file {}:{}: {}", path.display(), error.line, error.reason)]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong with it.
        error: ParseError,
    },
}

impl Acl {
    /// Parses the text of an ACL file.
    pub fn parse(text: &str) -> Result<Acl, ParseError> {
        Acl::parse_bytes(text.as_bytes())
    }

    /// Reads and parses an ACL file. Bytes that are not UTF-8 are read as VerneMQ reads them:
    /// harmless in a comment, a skipped line in a topic.
    pub fn load(path: &Path) -> Result<Acl, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
        Acl::parse_bytes(&bytes).map_err(|error| LoadError::Parse { path: path.to_owned(), error })
    }

    /// Whether `who` may publish to the topic `topic` ([`Access::Write`]) or subscribe to the
    /// filter `topic` ([`Access::Read`]). `topic` is as the client sent it (a shared
    /// subscription with its `$share/<group>/`) and already valid for its use.
    pub fn allows(&self, who: &Who<'_>, access: Access, topic: &str) -> bool {
        let covers = |filter: &Filter| filter.covers(topic, who);
        self.everyone.of(access).iter().any(covers)
            || who
                .username
                .and_then(|name| self.users.get(name))
                .is_some_and(|rules| rules.of(access).iter().any(covers))
            || self.patterns.of(access).iter().any(covers)
    }

    /// Whether the file grants nothing at all.
    pub fn is_empty(&self) -> bool {
        self.everyone.is_empty() && self.users.is_empty() && self.patterns.is_empty()
    }

    /// The lines that were skipped, as `(1-based line number, why)`, in file order: for the
    /// node to log, as VerneMQ logs them.
    pub fn warnings(&self) -> &[(usize, String)] {
        &self.warnings
    }

    fn parse_bytes(text: &[u8]) -> Result<Acl, ParseError> {
        let mut acl = Acl::default();
        let mut section = Section::Everyone;
        for (index, line) in lines(text).enumerate() {
            let number = index + 1;
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let Some((form, rest)) =
                FORMS.iter().find_map(|(prefix, form)| line.strip_prefix(*prefix).map(|rest| (*form, trim(rest))))
            else {
                let reason = if line.first().copied().is_some_and(is_blank) {
                    LineError::LeadingWhitespace
                } else {
                    LineError::Unknown
                };
                return Err(ParseError { line: number, reason });
            };
            let (accesses, substitute) = match form {
                Form::User => {
                    section = match std::str::from_utf8(rest) {
                        Ok(name) => Section::User(name.into()),
                        Err(_) => {
                            acl.warnings.push((number, NOBODY.to_owned()));
                            Section::Nobody
                        }
                    };
                    continue;
                }
                Form::Topic(accesses) => (accesses, false),
                Form::Pattern(accesses) => (accesses, true),
            };
            let filter = match Filter::parse(rest, substitute) {
                Ok(filter) => filter,
                Err(why) => {
                    acl.warnings.push((number, format!("topic `{}`: {why}", String::from_utf8_lossy(rest))));
                    continue;
                }
            };
            let rules = match &section {
                _ if substitute => &mut acl.patterns,
                Section::Everyone => &mut acl.everyone,
                Section::User(name) => acl.users.entry(name.clone()).or_default(),
                Section::Nobody => continue,
            };
            for access in accesses {
                rules.of_mut(*access).push(filter.clone());
            }
        }
        Ok(acl)
    }
}

/// The warning for a `user` line whose name no client can have.
const NOBODY: &str = "the user name is not UTF-8, so no client has it: \
                      the `topic` lines up to the next `user` line apply to no one";

/// The keyword forms, in the order `parse_acl_line/2` tries them. Order matters: `topic read `
/// is tried before `topic `, so `topic  read a` (two spaces) falls through to `topic ` with the
/// topic `read a`, as in VerneMQ.
const FORMS: [(&[u8], Form); 7] = [
    (b"topic read ", Form::Topic(&[Access::Read])),
    (b"topic write ", Form::Topic(&[Access::Write])),
    (b"topic ", Form::Topic(&[Access::Read, Access::Write])),
    (b"user ", Form::User),
    (b"pattern read ", Form::Pattern(&[Access::Read])),
    (b"pattern write ", Form::Pattern(&[Access::Write])),
    (b"pattern ", Form::Pattern(&[Access::Read, Access::Write])),
];

/// What a keyword line adds.
#[derive(Debug, Clone, Copy)]
enum Form {
    Topic(&'static [Access]),
    User,
    Pattern(&'static [Access]),
}

/// Whose the `topic` lines being read are.
enum Section {
    /// Above the first `user` line: every client's.
    Everyone,
    User(Box<str>),
    /// Under a `user` line whose name is not UTF-8.
    Nobody,
}

/// The filters granting each access.
#[derive(Debug, Clone, Default)]
struct Rules {
    read: Vec<Filter>,
    write: Vec<Filter>,
}

impl Rules {
    fn of(&self, access: Access) -> &[Filter] {
        match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        }
    }

    fn of_mut(&mut self, access: Access) -> &mut Vec<Filter> {
        match access {
            Access::Read => &mut self.read,
            Access::Write => &mut self.write,
        }
    }

    fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }
}

/// An ACL topic, split into levels once at parse time so that matching compares the client's
/// levels in place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter(Box<[Level]>);

/// One level of an ACL topic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Text the client's level must equal.
    Exact(Box<str>),
    /// `+`, the single-level wildcard.
    Plus,
    /// `#`, the multi-level wildcard: always the last level.
    Hash,
    /// `%c` in a `pattern` line.
    ClientId,
    /// `%u` in a `pattern` line.
    Username,
    /// `%m` in a `pattern` line.
    Mountpoint,
}

/// Why an ACL topic is skipped: `vmq_topic:validate_topic(subscribe, _)`'s errors, bar the depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvalidTopic {
    Empty,
    TooLong,
    NotUtf8,
    Null,
    PlusInLevel,
    HashNotLast,
    SharedWithoutFilter,
}

impl fmt::Display for InvalidTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidTopic::Empty => "empty topic",
            InvalidTopic::TooLong => "longer than 65536 bytes",
            InvalidTopic::NotUtf8 => "not valid UTF-8",
            InvalidTopic::Null => "contains a NUL character [MQTT-4.7.3-2]",
            InvalidTopic::PlusInLevel => "`+` must be a whole level [MQTT-4.7.1-3]",
            InvalidTopic::HashNotLast => "`#` must be the whole last level [MQTT-4.7.1-2]",
            InvalidTopic::SharedWithoutFilter => "`$share/<group>/` must be followed by a filter",
        })
    }
}

impl Filter {
    /// Validates `topic` as `vmq_topic:validate_topic(subscribe, _)` does and splits it;
    /// `substitute`: whether `%c`, `%u` and `%m` levels are substitutions (`pattern` lines).
    fn parse(topic: &[u8], substitute: bool) -> Result<Filter, InvalidTopic> {
        if topic.is_empty() {
            return Err(InvalidTopic::Empty);
        }
        if topic.len() > MAX_TOPIC_LEN {
            return Err(InvalidTopic::TooLong);
        }
        let topic = std::str::from_utf8(topic).map_err(|_| InvalidTopic::NotUtf8)?;
        if topic.contains('\0') {
            return Err(InvalidTopic::Null);
        }
        let count = topic.split('/').count();
        if count < 3 && topic.split('/').next() == Some("$share") {
            return Err(InvalidTopic::SharedWithoutFilter);
        }
        let mut levels = Vec::with_capacity(count);
        for (index, level) in topic.split('/').enumerate() {
            levels.push(match level {
                "+" => Level::Plus,
                "#" if index + 1 == count => Level::Hash,
                _ if level.contains('#') => return Err(InvalidTopic::HashNotLast),
                _ if level.contains('+') => return Err(InvalidTopic::PlusInLevel),
                "%c" if substitute => Level::ClientId,
                "%u" if substitute => Level::Username,
                "%m" if substitute => Level::Mountpoint,
                _ => Level::Exact(level.into()),
            });
        }
        Ok(Filter(levels.into()))
    }

    /// Whether this ACL topic covers the client's topic or filter `topic` (`vmq_topic:match/2`
    /// with the ACL topic second, bar the two safety differences in the module docs).
    fn covers(&self, topic: &str, who: &Who<'_>) -> bool {
        let mut levels = topic.split('/');
        for acl in &self.0 {
            let Some(level) = levels.next() else {
                // `match(_, [<<"#">>])`: `a/#` covers `a`.
                return matches!(acl, Level::Hash);
            };
            let fits = match acl {
                Level::Hash => return true,
                // A literal ACL level is never `+` or `#`, so it never equals a wildcard of
                // the client's filter: `read a/b` does not allow subscribing `a/+`.
                Level::Exact(exact) => **exact == *level,
                // VerneMQ's `+` also takes a filter's `#`, which reaches levels the `+` does not.
                Level::Plus => level != "#",
                Level::ClientId => is_text(level) && level == who.client_id,
                Level::Username => is_text(level) && who.username == Some(level),
                Level::Mountpoint => is_text(level) && level == who.mountpoint,
            };
            if !fits {
                return false;
            }
        }
        levels.next().is_none()
    }
}

/// Whether a client's level is plain text. A substituted value stands for one literal level,
/// which a filter's `+` or `#` reaches beyond: `pattern read sensor/%c` must not let the client
/// `+` subscribe to `sensor/+`.
fn is_text(level: &str) -> bool {
    level != "+" && level != "#"
}

/// The lines of `text` without their `\n` or `\r\n`, as `file:read_line/1` and `remove_endline/1`
/// give them: the last line need not end, and a `\r` not followed by `\n` stays.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.iter().position(|&byte| byte == b'\n') {
            Some(end) => {
                let (line, after) = text.split_at(end);
                rest = after.get(1..);
                Some(line.strip_suffix(b"\r").unwrap_or(line))
            }
            None => {
                rest = None;
                (!text.is_empty()).then_some(text)
            }
        }
    })
}

/// `trim/1`: spaces and tabs off both ends, nothing else.
fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && is_blank(*first)
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && is_blank(*last)
    {
        bytes = rest;
    }
    bytes
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The "Simple ACL Example" of VerneMQ's documentation (Authorization section).
    const DOCS_EXAMPLE: &str = "\
# ACL for anonymous clients
topic bar
topic write foo
topic read open_to_all


# ACL for user 'john'
user john
topic foo
topic read baz
topic write open_to_all
";

    const ANONYMOUS: Who<'static> = Who { mountpoint: "", client_id: "c1", username: None };
    const JOHN: Who<'static> = Who { mountpoint: "", client_id: "c2", username: Some("john") };

    fn acl(text: &str) -> Acl {
        match Acl::parse(text) {
            Ok(acl) => acl,
            Err(error) => panic!("{text:?} does not parse: {error}"),
        }
    }

    fn user(name: &str) -> Who<'_> {
        Who { mountpoint: "", client_id: "client", username: Some(name) }
    }

    /// The topics `who` may publish to and subscribe to among `topics`.
    fn grants<'a>(acl: &Acl, who: &Who<'_>, topics: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
        let with = |access| topics.iter().copied().filter(|t| acl.allows(who, access, t)).collect();
        (with(Access::Write), with(Access::Read))
    }

    const EXAMPLE_TOPICS: [&str; 4] = ["bar", "foo", "open_to_all", "baz"];

    #[test]
    fn docs_example_anonymous_clients_get_the_first_section() {
        let (publish, subscribe) = grants(&acl(DOCS_EXAMPLE), &ANONYMOUS, &EXAMPLE_TOPICS);
        assert_eq!(publish, ["bar", "foo"]);
        assert_eq!(subscribe, ["bar", "open_to_all"]);
    }

    /// The documentation calls the first section the anonymous clients', but `check/4` tries it
    /// for every client first (the shipped `topic #` relies on that to allow everyone
    /// everything), so john gets it as well as his own.
    #[test]
    fn docs_example_john_gets_his_section_and_the_first_one() {
        let acl = acl(DOCS_EXAMPLE);
        let (publish, subscribe) = grants(&acl, &JOHN, &EXAMPLE_TOPICS);
        assert_eq!(publish, ["bar", "foo", "open_to_all"]);
        assert_eq!(subscribe, ["bar", "foo", "open_to_all", "baz"]);
        let other = user("jane");
        assert_eq!(grants(&acl, &other, &EXAMPLE_TOPICS), grants(&acl, &ANONYMOUS, &EXAMPLE_TOPICS));
        assert!(acl.warnings().is_empty());
    }

    /// Port of `simple_acl_list` in VerneMQ's `vmq_acl_SUITE`.
    #[test]
    fn vernemq_suite_simple_acl_list() {
        let acl = acl("# simple comment\ntopic read a/b/c\n# other comment \ntopic write a/b/c\n\
                       topic write x/y/z\n\n#\n# ACL for user 'test'\nuser test\n\n\n##\n\
                       topic x/y/z/#\n# some patterns\npattern read %m/%u/%c\npattern write %m/%u/%c");
        let test = Who { mountpoint: "", client_id: "my-client-id", username: Some("test") };
        let invalid = Who { username: Some("invalid-user"), ..test };
        for topic in ["a/b/c", "x/y/z/#", "/test/my-client-id"] {
            assert!(acl.allows(&test, Access::Read, topic), "{topic}");
        }
        assert!(!acl.allows(&invalid, Access::Read, "x/y/z/#"));
        for topic in ["a/b/c", "x/y/z/blabla", "/test/my-client-id"] {
            assert!(acl.allows(&test, Access::Write, topic), "{topic}");
        }
        assert!(!acl.allows(&invalid, Access::Write, "x/y/z/blabla"));
        assert!(!acl.allows(&invalid, Access::Write, "/test/my-client-id"));
    }

    /// Port of `spaces_acl_list` and `utf8_simple` in VerneMQ's `vmq_acl_SUITE`.
    #[test]
    fn vernemq_suite_spaces_and_utf8() {
        let acl = acl("topic read  a/b/c \ntopic write   a/b/c\ntopic write  x/y/z  \n\nuser    test   \n\
                       topic  x/y/z/# \ntopic read машина/скорость");
        assert_eq!(grants(&acl, &ANONYMOUS, &["a/b/c", "x/y/z"]), (vec!["a/b/c", "x/y/z"], vec!["a/b/c"]));
        assert!(acl.allows(&user("test"), Access::Read, "x/y/z/w"));
        assert!(acl.allows(&user("test"), Access::Read, "машина/скорость"));
        assert!(!acl.allows(&ANONYMOUS, Access::Read, "машина/скорость"));
    }

    #[test]
    fn keywords_take_exactly_one_space_and_the_rest_is_trimmed() {
        let acl = acl("topic  read a\ntopic read\ntopic write v/w x/y\t\n");
        assert_eq!(grants(&acl, &ANONYMOUS, &["a", "read a"]), (vec!["read a"], vec!["read a"]));
        assert_eq!(grants(&acl, &ANONYMOUS, &["read"]), (vec!["read"], vec!["read"]));
        assert!(acl.allows(&ANONYMOUS, Access::Write, "v/w x/y"));
    }

    #[test]
    fn crlf_and_a_missing_last_newline_are_line_ends() {
        let acl = acl("# c\r\ntopic a\r\n\r\nuser u\r\ntopic b\r\ntopic c\r");
        assert!(acl.allows(&ANONYMOUS, Access::Write, "a"));
        assert!(acl.allows(&user("u"), Access::Write, "b"));
        // Only a `\r` before a `\n` is part of the line end (`file:read_line/1`).
        assert!(acl.allows(&user("u"), Access::Write, "c\r"));
        assert!(!acl.allows(&user("u"), Access::Write, "c"));
    }

    #[test]
    fn pattern_substitutes_the_user_name() {
        let acl = acl("pattern read sensor/%u/#\n");
        let alice = user("alice");
        assert!(acl.allows(&alice, Access::Read, "sensor/alice/#"));
        assert!(acl.allows(&alice, Access::Read, "sensor/alice/temp"));
        assert!(acl.allows(&alice, Access::Read, "sensor/alice"));
        assert!(!acl.allows(&alice, Access::Read, "sensor/bob/temp"));
        assert!(!acl.allows(&alice, Access::Write, "sensor/alice/temp"));
        // `undefined` in VerneMQ's substitution equals no level.
        assert!(!acl.allows(&ANONYMOUS, Access::Read, "sensor/undefined/temp"));
        assert!(!acl.allows(&ANONYMOUS, Access::Read, "sensor//temp"));
    }

    #[test]
    fn pattern_substitutes_client_id_and_mountpoint() {
        let acl = acl("pattern write %m/devices/%c\n");
        let device = Who { mountpoint: "tenant", client_id: "d1", username: None };
        assert!(acl.allows(&device, Access::Write, "tenant/devices/d1"));
        assert!(!acl.allows(&device, Access::Write, "tenant/devices/d2"));
        assert!(!acl.allows(&device, Access::Write, "other/devices/d1"));
        // The default mountpoint is `""`: an empty first level.
        let home = Who { mountpoint: "", ..device };
        assert!(acl.allows(&home, Access::Write, "/devices/d1"));
        // A value with a `/` is one level, which no topic level equals.
        let nested = Who { mountpoint: "a/b", ..device };
        assert!(!acl.allows(&nested, Access::Write, "a/b/devices/d1"));
    }

    #[test]
    fn a_substitution_inside_a_level_is_plain_text() {
        let acl = acl("pattern sensor/%u-data/%cx\n");
        let alice = user("alice");
        assert!(!acl.allows(&alice, Access::Write, "sensor/alice-data/clientx"));
        assert!(acl.allows(&alice, Access::Write, "sensor/%u-data/%cx"));
    }

    #[test]
    fn topic_lines_do_not_substitute() {
        let acl = acl("topic a/%u\nuser alice\ntopic b/%c\n");
        let alice = user("alice");
        assert!(!acl.allows(&alice, Access::Write, "a/alice"));
        assert!(acl.allows(&alice, Access::Write, "a/%u"));
        assert!(!acl.allows(&alice, Access::Write, "b/client"));
        assert!(acl.allows(&alice, Access::Write, "b/%c"));
    }

    /// VerneMQ puts the value into the topic as it is, where `match/2` reads `+` and `#` as
    /// wildcards: a client calling itself `#` would be granted all of `sensor/`. Here a value
    /// is always text.
    #[test]
    fn a_substituted_value_is_never_a_wildcard() {
        let acl = acl("pattern read sensor/%c\npattern write home/%u/#\n");
        let hash = Who { mountpoint: "", client_id: "#", username: Some("+") };
        for topic in ["sensor/x", "sensor/#", "sensor/+"] {
            assert!(!acl.allows(&hash, Access::Read, topic), "{topic}");
        }
        assert!(!acl.allows(&hash, Access::Write, "home/bob/door"));
        // A filter's wildcard does not equal a plain value either.
        let plain = Who { client_id: "x", ..hash };
        assert!(acl.allows(&plain, Access::Read, "sensor/x"));
        assert!(!acl.allows(&plain, Access::Read, "sensor/+"));
    }

    #[test]
    fn read_hash_allows_narrower_filters_only() {
        let acl = acl("topic read a/#\n");
        for filter in ["a/b", "a/+", "a/#", "a", "a/b/c", "a/+/c/#"] {
            assert!(acl.allows(&ANONYMOUS, Access::Read, filter), "{filter}");
        }
        for filter in ["#", "+/b", "+", "b", "ab/c"] {
            assert!(!acl.allows(&ANONYMOUS, Access::Read, filter), "{filter}");
        }
    }

    #[test]
    fn read_plus_allows_one_level() {
        let acl = acl("topic read a/+\n");
        for filter in ["a/b", "a/+", "a/"] {
            assert!(acl.allows(&ANONYMOUS, Access::Read, filter), "{filter}");
        }
        for filter in ["a", "a/b/c", "a/+/c", "+/b"] {
            assert!(!acl.allows(&ANONYMOUS, Access::Read, filter), "{filter}");
        }
    }

    /// VerneMQ's `match([<<"#">>], [<<"+">>])` is true, so `read a/+` lets a client subscribe
    /// to `a/#` and receive `a` and `a/b/c`; here a filter's `#` is covered by an ACL `#` only.
    #[test]
    fn an_acl_plus_does_not_cover_a_filter_hash() {
        let acl = acl("topic read a/+\ntopic read b/+/#\ntopic read +\n");
        for filter in ["a/#", "b/#", "#"] {
            assert!(!acl.allows(&ANONYMOUS, Access::Read, filter), "{filter}");
        }
        assert!(acl.allows(&ANONYMOUS, Access::Read, "b/x/#"));
    }

    #[test]
    fn read_a_plain_topic_does_not_allow_wildcard_filters() {
        let acl = acl("topic read a/b\n");
        assert!(acl.allows(&ANONYMOUS, Access::Read, "a/b"));
        for filter in ["a/+", "a/#", "#", "+/b", "a/b/#"] {
            assert!(!acl.allows(&ANONYMOUS, Access::Read, filter), "{filter}");
        }
    }

    #[test]
    fn write_hash_allows_publishing_below_and_to_the_parent() {
        let acl = acl("topic write a/#\n");
        for topic in ["a", "a/b", "a/b/c", "a/"] {
            assert!(acl.allows(&ANONYMOUS, Access::Write, topic), "{topic}");
        }
        for topic in ["b", "ab", "b/a"] {
            assert!(!acl.allows(&ANONYMOUS, Access::Write, topic), "{topic}");
        }
    }

    #[test]
    fn read_and_write_lines_grant_only_their_access() {
        let acl = acl("topic read r/#\ntopic write w/#\npattern read pr/%c\npattern write pw/%c\n");
        let who = Who { mountpoint: "", client_id: "c", username: None };
        assert_eq!(grants(&acl, &who, &["r/b", "w/b", "pr/c", "pw/c"]), (vec!["w/b", "pw/c"], vec!["r/b", "pr/c"]));
    }

    #[test]
    fn user_sections_apply_to_their_user_only_and_merge() {
        let acl = acl("user alice\ntopic a\nuser bob\ntopic b\npattern p/%u\ntopic b2\nuser alice\ntopic a2\n");
        assert_eq!(grants(&acl, &user("alice"), &["a", "a2", "b", "b2"]).0, ["a", "a2"]);
        // A `pattern` line does not end bob's section.
        assert_eq!(grants(&acl, &user("bob"), &["a", "a2", "b", "b2", "p/bob"]).0, ["b", "b2", "p/bob"]);
        assert_eq!(grants(&acl, &ANONYMOUS, &["a", "b", "b2", "p/"]).0, Vec::<&str>::new());
    }

    #[test]
    fn a_user_line_with_an_empty_name_is_the_empty_user_s_section() {
        let acl = acl("user \ntopic a\n");
        assert!(acl.allows(&user(""), Access::Write, "a"));
        assert!(!acl.allows(&ANONYMOUS, Access::Write, "a"));
    }

    /// VerneMQ's ACL tables hold the lines alone: a line applies on every mountpoint, and only
    /// `%m` tells them apart.
    #[test]
    fn every_line_applies_on_every_mountpoint() {
        let acl = acl("topic a\nuser john\ntopic j\npattern %m/#\n");
        for mountpoint in ["", "m", "other"] {
            let anonymous = Who { mountpoint, ..ANONYMOUS };
            let john = Who { mountpoint, ..JOHN };
            assert!(acl.allows(&anonymous, Access::Write, "a"), "{mountpoint}");
            assert!(acl.allows(&john, Access::Read, "j"), "{mountpoint}");
            assert!(!acl.allows(&anonymous, Access::Read, "j"), "{mountpoint}");
            assert!(acl.allows(&anonymous, Access::Read, &format!("{mountpoint}/x")), "{mountpoint}");
        }
        let m = Who { mountpoint: "m", ..ANONYMOUS };
        assert!(!acl.allows(&m, Access::Read, "other/x"));
        assert!(acl.allows(&m, Access::Read, "m"), "`#` covers its parent");
    }

    /// `auth_on_subscribe` gets the whole filter, `$share` and group included.
    #[test]
    fn a_shared_subscription_is_checked_as_the_whole_filter() {
        let plain = acl("topic read a/b\n");
        assert!(!plain.allows(&ANONYMOUS, Access::Read, "$share/g/a/b"));
        let shared = acl("topic read $share/g/a/b\ntopic read $share/+/c/#\n");
        assert!(shared.allows(&ANONYMOUS, Access::Read, "$share/g/a/b"));
        assert!(!shared.allows(&ANONYMOUS, Access::Read, "$share/h/a/b"));
        assert!(!shared.allows(&ANONYMOUS, Access::Read, "a/b"));
        assert!(shared.allows(&ANONYMOUS, Access::Read, "$share/h/c/d"));
        assert!(acl("topic read #\n").allows(&ANONYMOUS, Access::Read, "$share/g/a/b"));
    }

    /// `match/2` knows nothing of `$` topics, so `#` and `+` in an ACL cover them.
    #[test]
    fn dollar_topics_are_not_special() {
        let acl = acl("topic read #\ntopic write +/x\n");
        assert!(acl.allows(&ANONYMOUS, Access::Read, "$SYS/#"));
        assert!(acl.allows(&ANONYMOUS, Access::Write, "$SYS/x"));
    }

    #[test]
    fn an_unknown_line_rejects_the_file_naming_it() {
        for (text, line, reason) in [
            ("topic a\nthis is not an acl line\n", 2, LineError::Unknown),
            ("topic a\n\ntopic\n", 3, LineError::Unknown),
            ("topic\ta\n", 1, LineError::Unknown),
            ("user\tjohn\n", 1, LineError::Unknown),
            ("Topic a\n", 1, LineError::Unknown),
            ("topic a\n  topic b\n", 2, LineError::LeadingWhitespace),
            ("topic a\n \n", 2, LineError::LeadingWhitespace),
            (" # indented comment\n", 1, LineError::LeadingWhitespace),
            ("topic a\n\r\r\n", 2, LineError::Unknown),
        ] {
            assert_eq!(Acl::parse(text).map(|_| ()), Err(ParseError { line, reason }), "{text:?}");
        }
        let error = Acl::parse("topic a\nbad\n").map(|_| ()).unwrap_err().to_string();
        assert!(error.starts_with("line 2: expected `topic"), "{error}");
    }

    #[test]
    fn invalid_topics_are_skipped_with_a_warning_naming_the_line() {
        let acl = acl("topic read \ntopic a/#/b\ntopic a+\npattern $share/g\ntopic ok\ntopic a\0b\ntopic #x\n");
        let lines: Vec<usize> = acl.warnings().iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 6, 7]);
        assert!(acl.warnings()[1].1.contains("`a/#/b`"), "{:?}", acl.warnings());
        assert_eq!(grants(&acl, &ANONYMOUS, &["ok", "a/#/b", "a+", "$share/g"]).0, ["ok"]);
    }

    #[test]
    fn a_topic_longer_than_vernemq_s_limit_is_skipped() {
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        let acl = acl(&format!("topic {}\ntopic {long}\n", &long[1..]));
        assert!(acl.allows(&ANONYMOUS, Access::Write, &long[1..]));
        assert_eq!(acl.warnings().iter().map(|(line, _)| *line).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn bytes_that_are_not_utf8_skip_a_topic_and_disable_a_user_section() {
        let text = b"# caf\xe9\ntopic a\ntopic b\xff\nuser \xffjohn\ntopic c\npattern p/%c\n";
        let acl = match Acl::parse_bytes(text) {
            Ok(acl) => acl,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(acl.warnings().iter().map(|(line, _)| *line).collect::<Vec<_>>(), [3, 4]);
        assert!(acl.allows(&ANONYMOUS, Access::Write, "a"));
        assert!(!acl.allows(&ANONYMOUS, Access::Write, "c"), "`c` went to the unnamed user");
        assert!(acl.allows(&ANONYMOUS, Access::Write, "p/c1"));
    }

    #[test]
    fn the_empty_acl_allows_nothing() {
        let empty = Acl::default();
        assert!(empty.is_empty());
        assert!(!empty.allows(&ANONYMOUS, Access::Write, "a"));
        assert!(acl("# only comments\n\n").is_empty());
        assert!(acl("topic a/#/b\n").is_empty());
        assert!(!acl("user u\ntopic a\n").is_empty());
        assert!(!acl("pattern a\n").is_empty());
    }

    /// MQTT topic matching, the plain way, for the laws below.
    fn mqtt_matches(filter: &str, topic: &str) -> bool {
        let (filter, topic): (Vec<&str>, Vec<&str>) = (filter.split('/').collect(), topic.split('/').collect());
        for (i, level) in filter.iter().enumerate() {
            match (*level, topic.get(i)) {
                ("#", _) => return true,
                (_, None) => return false,
                ("+", Some(_)) => {}
                (level, Some(t)) if level == *t => {}
                _ => return false,
            }
        }
        filter.len() == topic.len()
    }

    fn concrete_topic() -> impl Strategy<Value = String> {
        prop::collection::vec("[ab$]{0,2}", 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("a topic is at least one character [MQTT-4.7.3-1]", |topic| !topic.is_empty())
    }

    fn wildcard_filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(prop_oneof!["[ab]", Just("+".to_owned())], 1..4), any::<bool>()).prop_map(
            |(mut levels, hash)| {
                if hash {
                    levels.push("#".to_owned());
                }
                levels.join("/")
            },
        )
    }

    fn acl_text() -> impl Strategy<Value = String> {
        let line = (
            prop_oneof!["topic ", "topic read ", "topic write ", "user ", "pattern ", "pattern read ", "#", "", " "],
            "[ab+#%cum/ \t\r$\u{e9}\0]{0,10}",
        )
            .prop_map(|(keyword, rest)| format!("{keyword}{rest}"));
        prop::collection::vec(line, 0..8).prop_map(|lines| lines.join("\n"))
    }

    fn regressions() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
        Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct("../../proptest-regressions/auth-acl.txt")))
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: regressions(), ..ProptestConfig::default() })]

        #[test]
        fn parsing_and_matching_never_panic(
            text in prop_oneof![acl_text(), ".*"],
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            topic in "[ab+#%cum/$\0]{0,12}",
            client_id in "[a+#%c/]{0,3}",
            username in proptest::option::of("[a+#%u/]{0,3}"),
        ) {
            let who = Who { mountpoint: "m", client_id: &client_id, username: username.as_deref() };
            for acl in [Acl::parse(&text), Acl::parse_bytes(&bytes)].into_iter().flatten() {
                for access in [Access::Read, Access::Write] {
                    let _ = acl.allows(&who, access, &topic);
                }
            }
        }

        #[test]
        fn a_topic_line_allows_publishing_to_exactly_its_topic(t in concrete_topic(), u in concrete_topic()) {
            let acl = Acl::parse(&format!("topic {t}\n")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(acl.warnings().is_empty());
            prop_assert!(acl.allows(&ANONYMOUS, Access::Read, &t));
            prop_assert_eq!(acl.allows(&ANONYMOUS, Access::Write, &u), u == t);
        }

        /// For a topic name, an ACL topic grants exactly what it matches as an MQTT filter.
        #[test]
        fn an_acl_topic_covers_the_topics_it_matches(acl_topic in wildcard_filter(), topic in concrete_topic()) {
            let acl = Acl::parse(&format!("topic write {acl_topic}\n")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(acl.allows(&ANONYMOUS, Access::Write, &topic), mqtt_matches(&acl_topic, &topic));
        }

        /// A subscription the ACL allows delivers no topic the ACL does not allow.
        #[test]
        fn an_allowed_filter_receives_only_allowed_topics(
            acl_topic in wildcard_filter(),
            filter in wildcard_filter(),
            topic in concrete_topic(),
        ) {
            let acl = Acl::parse(&format!("topic read {acl_topic}\n")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if acl.allows(&ANONYMOUS, Access::Read, &filter) && mqtt_matches(&filter, &topic) {
                prop_assert!(acl.allows(&ANONYMOUS, Access::Read, &topic), "{} lets {} receive {}", acl_topic, filter, topic);
            }
        }
    }
}
