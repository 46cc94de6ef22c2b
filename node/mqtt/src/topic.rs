//! Topic names and topic filters (MQTT 5.0 section 4.7, 3.1.1 section 4.7).

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty topic [MQTT-4.7.3-1].
    #[error("topic is empty")]
    Empty,
    /// Contains U+0000 [MQTT-4.7.3-2].
    #[error("topic contains the null character")]
    NullCharacter,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2].
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` not alone in the last level, or `+` not alone in its level [MQTT-4.7.1-1],
    /// [MQTT-4.7.1-2].
    #[error("misplaced wildcard in topic filter")]
    MisplacedWildcard,
    /// More levels than `topic_max_depth`.
    #[error("topic has {depth} levels, the maximum is {max}")]
    TooDeep {
        /// Levels found.
        depth: usize,
        /// Configured maximum.
        max: usize,
    },
    /// `$share/` filter without a valid share name or filter [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    #[error("invalid shared subscription")]
    InvalidShare,
}

/// Number of levels of a topic or filter (`a/b` has 2, `/` has 2).
pub fn depth(topic: &str) -> usize {
    topic.split('/').count()
}

/// Checks a PUBLISH topic name; `max_depth` 0 means unlimited.
///
/// Examples of invalid names: `""`, `"a/+"`, `"#"`, `"a\0b"`.
pub fn validate_topic_name(topic: &str, max_depth: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    check_depth(topic, max_depth)
}

/// Checks a SUBSCRIBE / UNSUBSCRIBE topic filter (after removing any `$share/group/` part).
///
/// Examples of invalid filters: `""`, `"a/#/b"`, `"a+"`, `"#a"`.
pub fn validate_topic_filter(filter: &str, max_depth: usize) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if !last => return Err(TopicError::MisplacedWildcard),
            "#" | "+" => {}
            l if l.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    check_depth(filter, max_depth)
}

fn check_depth(topic: &str, max: usize) -> Result<(), TopicError> {
    let depth = depth(topic);
    if max > 0 && depth > max {
        return Err(TopicError::TooDeep { depth, max });
    }
    Ok(())
}

/// A subscription filter split into its share group (for `$share/group/filter`) and filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFilter<'a> {
    /// The share name, for shared subscriptions.
    pub share: Option<&'a str>,
    /// The topic filter to match.
    pub filter: &'a str,
}

/// Splits `$share/<group>/<filter>`; other filters are returned whole.
///
/// The share name must be non-empty and contain no `/`, `+` or `#` [MQTT-4.8.2-2]; the filter
/// must be non-empty [MQTT-4.8.2-1].
pub fn parse_filter(filter: &str) -> Result<ParsedFilter<'_>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        if filter == "$share" {
            return Err(TopicError::InvalidShare);
        }
        return Ok(ParsedFilter { share: None, filter });
    };
    let (group, filter) = rest.split_once('/').ok_or(TopicError::InvalidShare)?;
    if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
        return Err(TopicError::InvalidShare);
    }
    Ok(ParsedFilter { share: Some(group), filter })
}

/// True when `filter` matches `topic`. Filters starting with a wildcard do not match topics
/// starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_with_wildcards_are_invalid_mqtt_3_3_2_2() {
        for bad in ["a/+", "#", "a/#", "+", "a+b"] {
            assert_eq!(validate_topic_name(bad, 0), Err(TopicError::WildcardInName), "{bad}");
        }
        assert_eq!(validate_topic_name("", 0), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0", 0), Err(TopicError::NullCharacter));
        assert!(validate_topic_name("/", 0).is_ok());
        assert!(validate_topic_name("$SYS/x", 0).is_ok());
    }

    #[test]
    fn wildcards_must_fill_their_level_mqtt_4_7_1_1_and_4_7_1_2() {
        for bad in ["a/#/b", "a+", "#a", "a/b#", "++", "##"] {
            assert_eq!(validate_topic_filter(bad, 0), Err(TopicError::MisplacedWildcard), "{bad}");
        }
        for good in ["#", "+", "a/+/b", "a/#", "+/+", "/+", "$SYS/#"] {
            assert!(validate_topic_filter(good, 0).is_ok(), "{good}");
        }
    }

    #[test]
    fn depth_limit_counts_levels() {
        assert!(validate_topic_name("a/b/c", 3).is_ok());
        assert_eq!(validate_topic_name("a/b/c/d", 3), Err(TopicError::TooDeep { depth: 4, max: 3 }));
        assert_eq!(depth("/"), 2);
    }

    #[test]
    fn shared_filters_parse_mqtt_4_8_2() {
        assert_eq!(parse_filter("$share/g/a/+").unwrap(), ParsedFilter { share: Some("g"), filter: "a/+" });
        assert_eq!(parse_filter("a/b").unwrap(), ParsedFilter { share: None, filter: "a/b" });
        for bad in ["$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_wildcard_rules_mqtt_4_7() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/b", true),
            ("+", "/b", false),
            ("a/+/c", "a//c", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }
}
