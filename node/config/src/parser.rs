//! The line syntax of `vernemq.conf`, following cuttlefish's grammar (`conf_parse.peg`).
//!
//! - A line is blank, a comment (`#` after optional blanks), or `key = value`.
//! - A key is dot-separated words of `A-Z a-z 0-9 _ -`.
//! - A value runs to the end of the line, or to the first `#` (with the blanks before it):
//!   cuttlefish ends an unquoted value at any `#`, so `password = ab#cd` is `ab`. A value that
//!   must contain `#` is written between single quotes, `password = 'ab#cd'`, which cuttlefish
//!   also accepts. Blanks around the value are not part of it.
//! - `include <file>` lines are part of cuttlefish but not supported here; they are an error
//!   rather than silently dropping the settings of the included file.
//!
//! The parser only splits lines; which keys exist and what their values mean is decided in
//! [`super::keys`] and [`super::listeners`].

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The dotted key, as written.
    pub key: String,
    /// The value, without quotes, surrounding blanks or trailing comment.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A line that is not valid `vernemq.conf` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and how to write it instead.
    pub message: String,
}

/// Splits `text` into its settings, in file order. Duplicates are kept; the caller decides.
pub fn parse_lines(text: &str) -> Result<Vec<RawEntry>, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(entry) = parse_line(raw, line)? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

fn parse_line(raw: &str, line: usize) -> Result<Option<RawEntry>, SyntaxError> {
    let rest = raw.trim_start_matches(is_blank);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let error = |message: String| SyntaxError { line, message };
    let key_end = rest.find(|c: char| !is_key_char(c)).unwrap_or(rest.len());
    let key = &rest[..key_end];
    let after_key = rest[key_end..].trim_start_matches(is_blank);
    if key == "include" && !after_key.starts_with('=') {
        return Err(error("'include' directives are not supported; copy the settings into this file".into()));
    }
    let Some(after_eq) = after_key.strip_prefix('=') else {
        return Err(error(format!(
            "cannot parse '{}': expected 'key = value' (keys are dot-separated words of \
             letters, digits, '_' and '-'; comments start with '#')",
            rest.trim_end_matches(is_blank)
        )));
    };
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(error(format!(
            "'{key}' is not a valid key: expected dot-separated words of letters, digits, '_' \
             and '-'"
        )));
    }
    let value_text = after_eq.trim_start_matches(is_blank);
    let value = if let Some(quoted) = value_text.strip_prefix('\'') {
        let Some(close) = quoted.find('\'') else {
            return Err(error(format!("{key}: the value opens a quote (') that is not closed on this line")));
        };
        let trailing = quoted[close + 1..].trim_start_matches(is_blank);
        if !trailing.is_empty() && !trailing.starts_with('#') {
            return Err(error(format!("{key}: unexpected text '{trailing}' after the quoted value")));
        }
        quoted[..close].to_string()
    } else {
        let end = value_text.find('#').unwrap_or(value_text.len());
        let value = value_text[..end].trim_end_matches(is_blank);
        if value.is_empty() {
            return Err(error(format!("{key}: missing value (write '' for an empty value, or comment the line out)")));
        }
        value.to_string()
    };
    Ok(Some(RawEntry { key: key.to_string(), value, line }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, line: usize) -> RawEntry {
        RawEntry { key: key.into(), value: value.into(), line }
    }

    #[test]
    fn settings_comments_and_blank_lines() {
        let text = "## a comment\n\nallow_anonymous = on\n   # indented comment\n\t\n\
                    listener.tcp.default=127.0.0.1:1883\n";
        assert_eq!(
            parse_lines(text).unwrap(),
            [entry("allow_anonymous", "on", 3), entry("listener.tcp.default", "127.0.0.1:1883", 6),]
        );
    }

    #[test]
    fn indented_settings_and_crlf_line_ends() {
        let text = "    max_inflight_messages = 20\r\n\tretry_interval\t=\t30 \r\n";
        assert_eq!(
            parse_lines(text).unwrap(),
            [entry("max_inflight_messages", "20", 1), entry("retry_interval", "30", 2),]
        );
    }

    #[test]
    fn trailing_comment_is_stripped_from_value() {
        let text = "max_online_messages = 1000 # per session\nnodename = a@b#c\n";
        assert_eq!(
            parse_lines(text).unwrap(),
            [
                entry("max_online_messages", "1000", 1),
                // cuttlefish ends an unquoted value at any '#'.
                entry("nodename", "a@b", 2),
            ]
        );
    }

    #[test]
    fn quoted_value_keeps_hash_and_blanks() {
        let text = "distributed_cookie = 'se#cret value' # comment\nx.y = ''\n";
        assert_eq!(parse_lines(text).unwrap(), [entry("distributed_cookie", "se#cret value", 1), entry("x.y", "", 2),]);
    }

    #[test]
    fn value_may_contain_equals_and_colons() {
        let text = "listener.ssl.ciphers = A:B=C\n";
        assert_eq!(parse_lines(text).unwrap(), [entry("listener.ssl.ciphers", "A:B=C", 1)]);
    }

    #[test]
    fn line_without_equals_is_an_error_with_its_line() {
        let err = parse_lines("a = 1\nallow_anonymous on\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("expected 'key = value'"), "{}", err.message);
    }

    #[test]
    fn bad_keys_are_errors() {
        for text in ["max inflight = 3", ".a = 1", "a..b = 1", "= 5", "a$b = 1"] {
            let err = parse_lines(text).unwrap_err();
            assert_eq!(err.line, 1, "{text}");
        }
    }

    #[test]
    fn missing_value_is_an_error() {
        let err = parse_lines("\n\nlistener.ssl.ciphers = \n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("missing value"));
        let err = parse_lines("graphite_prefix = # none\n").unwrap_err();
        assert!(err.message.contains("missing value"));
    }

    #[test]
    fn unclosed_quote_and_trailing_text_are_errors() {
        assert!(parse_lines("a = 'abc\n").unwrap_err().message.contains("not closed"));
        assert!(parse_lines("a = 'abc' def\n").unwrap_err().message.contains("unexpected text"));
    }

    #[test]
    fn include_is_rejected() {
        let err = parse_lines("include conf.d/*.conf\n").unwrap_err();
        assert!(err.message.contains("include"));
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        assert_eq!(parse_lines("\u{feff}allow_anonymous = on").unwrap(), [entry("allow_anonymous", "on", 1)]);
    }
}
