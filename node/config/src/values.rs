//! Value syntax of `vernemq.conf`, as VerneMQ's cuttlefish schemas read it.
//!
//! Every parser takes the value text exactly as the line parser produced it (surrounding
//! whitespace already stripped) and returns either the typed value or a [`ValueError`] that
//! says what was wrong and what is accepted, so the caller can add file, line and key.
//!
//! The datatypes follow cuttlefish (`cuttlefish_datatypes`) and the translations in VerneMQ's
//! `vmq_server.schema`: `flag` is `on`/`off`, `integer` is a decimal with an optional sign,
//! `bytesize` is an integer with an optional `KB`/`MB`/`GB` suffix (powers of 1024), `ip` is
//! `address:port`, and the two period settings use VerneMQ's own suffixes (see
//! [`parse_expiration`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A value that does not fit its key's syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// What is wrong with the value, e.g. "'abc' is not an integer".
    pub message: String,
    /// What the key accepts, e.g. "an integer from 0 to 65535".
    pub accepted: String,
}

impl ValueError {
    /// An error for `value`, described by `problem`, with the accepted syntax.
    pub fn new(value: &str, problem: &str, accepted: impl Into<String>) -> Self {
        ValueError { message: format!("'{value}' {problem}"), accepted: accepted.into() }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; accepted: {}", self.message, self.accepted)
    }
}

/// What a flag accepts, shared by every on/off key.
pub const FLAG_ACCEPTED: &str = "on or off";

/// Parses a cuttlefish `flag`: `on` or `off`.
///
/// cuttlefish matches the words exactly, so `On`, `true` or `1` are rejected as VerneMQ
/// rejects them; accepting them would let a file work here and fail on VerneMQ.
pub fn parse_flag(value: &str) -> Result<bool, ValueError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ValueError::new(value, "is not a flag", FLAG_ACCEPTED)),
    }
}

/// Parses a cuttlefish `integer` (Erlang `list_to_integer`: decimal digits, optional sign).
pub fn parse_integer(value: &str) -> Result<i64, ValueError> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new(value, "is not an integer", "an integer"));
    }
    value.parse::<i64>().map_err(|_| ValueError::new(value, "is out of range", "an integer"))
}

/// Parses an integer within `min..=max` (inclusive), describing the range when it is not.
pub fn parse_integer_in(value: &str, min: i64, max: i64) -> Result<i64, ValueError> {
    let accepted = || format!("an integer from {min} to {max}");
    let n = parse_integer(value).map_err(|e| ValueError { accepted: accepted(), ..e })?;
    if n < min || n > max {
        return Err(ValueError::new(value, "is out of range", accepted()));
    }
    Ok(n)
}

/// Parses an unsigned integer that fits `usize` and is at least `min`.
pub fn parse_usize_from(value: &str, min: usize) -> Result<usize, ValueError> {
    let max = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
    let min_i = i64::try_from(min).unwrap_or(i64::MAX);
    let n = parse_integer_in(value, min_i, max)
        .map_err(|e| ValueError { accepted: format!("an integer of at least {min}"), ..e })?;
    // The range check above guarantees 0 <= n <= usize::MAX.
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Parses an integer in `min..=u16::MAX`.
pub fn parse_u16_from(value: &str, min: u16) -> Result<u16, ValueError> {
    let n = parse_integer_in(value, i64::from(min), i64::from(u16::MAX))?;
    Ok(u16::try_from(n).unwrap_or(u16::MAX))
}

/// Parses an integer in `0..=u32::MAX`.
pub fn parse_u32(value: &str) -> Result<u32, ValueError> {
    let n = parse_integer_in(value, 0, i64::from(u32::MAX))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Parses a queue limit: `-1` means unlimited (`None`), otherwise a count (`0` is allowed and
/// blocks the queue, as VerneMQ documents for `max_online_messages`).
pub fn parse_queue_limit(value: &str) -> Result<Option<usize>, ValueError> {
    const ACCEPTED: &str = "-1 (no limit) or an integer of at least 0";
    let n = parse_integer(value).map_err(|e| ValueError { accepted: ACCEPTED.into(), ..e })?;
    match n {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        _ => Err(ValueError::new(value, "is out of range", ACCEPTED)),
    }
}

/// Parses an integer or the text `infinity` (cuttlefish `[integer, {atom, infinity}]`);
/// `infinity` is `None`.
pub fn parse_integer_or_infinity(value: &str) -> Result<Option<usize>, ValueError> {
    const ACCEPTED: &str = "an integer of at least 0 or the text \"infinity\"";
    if value == "infinity" {
        return Ok(None);
    }
    parse_usize_from(value, 0).map(Some).map_err(|e| ValueError { accepted: ACCEPTED.into(), ..e })
}

/// Parses a byte count: a plain integer (the form VerneMQ's `max_message_size` takes) or a
/// cuttlefish `bytesize` such as `64KB`, `10MB`, `1GB` (1 KB = 1024 bytes).
pub fn parse_bytes(value: &str) -> Result<usize, ValueError> {
    const ACCEPTED: &str = "an integer number of bytes, optionally followed by KB, MB or GB";
    let (number, multiplier) = if let Some(n) = value.strip_suffix("KB") {
        (n, 1u64 << 10)
    } else if let Some(n) = value.strip_suffix("MB") {
        (n, 1u64 << 20)
    } else if let Some(n) = value.strip_suffix("GB") {
        (n, 1u64 << 30)
    } else {
        (value, 1)
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new(value, "is not a byte size", ACCEPTED));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ValueError::new(value, "is out of range", ACCEPTED))
}

/// Seconds in VerneMQ's period units. VerneMQ counts a month as four weeks and a year as
/// twelve such months (`vmq_server.schema`, translation of `persistent_client_expiration`);
/// we keep its arithmetic so a session expires when it would have on VerneMQ.
const HOUR: u64 = 60 * 60;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
const MONTH: u64 = 4 * WEEK;
const YEAR: u64 = 12 * MONTH;

/// Parses an integer followed by one unit letter from `units` (subset of `s h d w m y`).
fn parse_period(value: &str, units: &[char], accepted: &str) -> Result<Duration, ValueError> {
    let Some(unit) = value.chars().last() else {
        return Err(ValueError::new(value, "is not a period", accepted));
    };
    let number = &value[..value.len() - unit.len_utf8()];
    if !units.contains(&unit) || number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new(value, "is not a period", accepted));
    }
    let scale = match unit {
        's' => 1,
        'h' => HOUR,
        'd' => DAY,
        'w' => WEEK,
        'm' => MONTH,
        _ => YEAR,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_secs)
        .ok_or_else(|| ValueError::new(value, "is out of range", accepted))
}

/// Parses `persistent_client_expiration`: `never`, or an integer followed by `h`, `d`, `w`,
/// `m` or `y` (hour, day, week, 4-week month, 48-week year). `never` and a zero period are
/// `None`: VerneMQ translates `never` to 0 and treats 0 as "never expire".
pub fn parse_expiration(value: &str) -> Result<Option<Duration>, ValueError> {
    const ACCEPTED: &str = "never, or an integer followed by h, d, w, m or y (e.g. 1w)";
    if value == "never" {
        return Ok(None);
    }
    let period = parse_period(value, &['h', 'd', 'w', 'm', 'y'], ACCEPTED)?;
    Ok((!period.is_zero()).then_some(period))
}

/// Parses `max_last_will_delay`: `client` (`None`: use the client's Will Delay Interval) or an
/// integer followed by `s`, `h`, `d`, `w`, `m` or `y` capping it.
pub fn parse_will_delay(value: &str) -> Result<Option<Duration>, ValueError> {
    const ACCEPTED: &str = "client, or an integer followed by s, h, d, w, m or y (e.g. 1h)";
    if value == "client" {
        return Ok(None);
    }
    parse_period(value, &['s', 'h', 'd', 'w', 'm', 'y'], ACCEPTED).map(Some)
}

/// What an address accepts, shared by the listener keys.
pub const ADDR_ACCEPTED: &str = "an IP address and port, e.g. 127.0.0.1:1883, 0.0.0.0:1883 or [::1]:1883";

/// Parses a cuttlefish `ip`: `address:port`, where an IPv6 address may be bracketed
/// (`[::1]:1883`) or bare (`::1:1883`, split at the last colon as cuttlefish does). Host names
/// are rejected: cuttlefish requires an address, and binding must not depend on DNS.
pub fn parse_socket_addr(value: &str) -> Result<SocketAddr, ValueError> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let err = || ValueError::new(value, "is not an IP address and port", ADDR_ACCEPTED);
    let (ip, port) = value.rsplit_once(':').ok_or_else(err)?;
    let ip: IpAddr = ip.parse().map_err(|_| err())?;
    let port: u16 = port.parse().map_err(|_| err())?;
    Ok(SocketAddr::new(ip, port))
}

/// Parses a comma-separated list, trimming blanks around items (`3,4,5` or `3, 4, 5`).
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

/// Parses non-empty free text (names, cookies, paths).
pub fn parse_text(value: &str) -> Result<&str, ValueError> {
    if value.is_empty() {
        return Err(ValueError::new(value, "is empty", "a non-empty text"));
    }
    Ok(value)
}

/// Parses one of a fixed set of words, returning its index in `choices`.
pub fn parse_choice(value: &str, choices: &[&str]) -> Result<usize, ValueError> {
    choices
        .iter()
        .position(|c| *c == value)
        .ok_or_else(|| ValueError::new(value, "is not a valid choice", one_of(choices)))
}

/// "one of: a, b, c", the phrase the VerneMQ template uses.
pub fn one_of(choices: &[&str]) -> String {
    format!("one of: {}", choices.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_accepts_only_on_and_off() {
        assert_eq!(parse_flag("on"), Ok(true));
        assert_eq!(parse_flag("off"), Ok(false));
        for bad in ["On", "true", "1", "yes", ""] {
            let err = parse_flag(bad).unwrap_err();
            assert_eq!(err.accepted, "on or off", "{bad}");
        }
    }

    #[test]
    fn integer_follows_list_to_integer() {
        assert_eq!(parse_integer("20"), Ok(20));
        assert_eq!(parse_integer("-1"), Ok(-1));
        assert_eq!(parse_integer("+7"), Ok(7));
        for bad in ["", "-", "1.5", "20s", "0x10", " 1", "99999999999999999999"] {
            assert!(parse_integer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_are_checked_and_described() {
        assert_eq!(parse_u16_from("65535", 1), Ok(65535));
        let err = parse_u16_from("0", 1).unwrap_err();
        assert_eq!(err.accepted, "an integer from 1 to 65535");
        assert!(parse_u16_from("65536", 0).is_err());
        assert_eq!(parse_usize_from("0", 0), Ok(0));
        assert_eq!(parse_usize_from("-3", 1).unwrap_err().accepted, "an integer of at least 1");
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        assert!(parse_u32("-1").is_err());
    }

    #[test]
    fn queue_limit_minus_one_is_unlimited() {
        assert_eq!(parse_queue_limit("-1"), Ok(None));
        assert_eq!(parse_queue_limit("0"), Ok(Some(0)));
        assert_eq!(parse_queue_limit("1000"), Ok(Some(1000)));
        assert!(parse_queue_limit("-2").is_err());
        assert!(parse_queue_limit("infinity").is_err());
    }

    #[test]
    fn infinity_or_integer() {
        assert_eq!(parse_integer_or_infinity("infinity"), Ok(None));
        assert_eq!(parse_integer_or_infinity("10000"), Ok(Some(10000)));
        let err = parse_integer_or_infinity("lots").unwrap_err();
        assert!(err.accepted.contains("infinity"));
    }

    #[test]
    fn byte_sizes_use_binary_units() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64KB"), Ok(64 * 1024));
        assert_eq!(parse_bytes("10MB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_bytes("1GB"), Ok(1 << 30));
        for bad in ["KB", "1.5MB", "10 MB", "10mb", "-1", "1TB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiration_uses_vernemq_units() {
        assert_eq!(parse_expiration("never"), Ok(None));
        assert_eq!(parse_expiration("0d"), Ok(None));
        assert_eq!(parse_expiration("2h"), Ok(Some(Duration::from_secs(2 * 3600))));
        assert_eq!(parse_expiration("1w"), Ok(Some(Duration::from_secs(7 * 86_400))));
        // VerneMQ's month is four weeks and its year twelve of those.
        assert_eq!(parse_expiration("1m"), Ok(Some(Duration::from_secs(28 * 86_400))));
        assert_eq!(parse_expiration("1y"), Ok(Some(Duration::from_secs(336 * 86_400))));
        for bad in ["1", "w", "1s", "1 w", "forever", "1W", "-1d"] {
            let err = parse_expiration(bad).unwrap_err();
            assert!(err.accepted.starts_with("never"), "{bad}");
        }
    }

    #[test]
    fn will_delay_is_client_or_period() {
        assert_eq!(parse_will_delay("client"), Ok(None));
        assert_eq!(parse_will_delay("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_will_delay("0s"), Ok(Some(Duration::ZERO)));
        assert!(parse_will_delay("30").is_err());
        assert!(parse_will_delay("never").is_err());
    }

    #[test]
    fn socket_addresses_in_cuttlefish_forms() {
        assert_eq!(parse_socket_addr("127.0.0.1:1883"), Ok("127.0.0.1:1883".parse().unwrap()));
        assert_eq!(parse_socket_addr("[::1]:1883"), Ok("[::1]:1883".parse().unwrap()));
        assert_eq!(parse_socket_addr("::1:1883"), Ok("[::1]:1883".parse().unwrap()));
        assert_eq!(parse_socket_addr("0.0.0.0:0"), Ok("0.0.0.0:0".parse().unwrap()));
        for bad in ["localhost:1883", "127.0.0.1", "127.0.0.1:65536", "1883", ""] {
            let err = parse_socket_addr(bad).unwrap_err();
            assert_eq!(err.accepted, ADDR_ACCEPTED, "{bad}");
        }
    }

    #[test]
    fn choices_list_what_is_accepted() {
        assert_eq!(parse_choice("lifo", &["fifo", "lifo"]), Ok(1));
        let err = parse_choice("LIFO", &["fifo", "lifo"]).unwrap_err();
        assert_eq!(err.accepted, "one of: fifo, lifo");
        assert_eq!(err.message, "'LIFO' is not a valid choice");
    }

    #[test]
    fn lists_are_trimmed() {
        let items: Vec<_> = split_list("3, 4 ,5").collect();
        assert_eq!(items, ["3", "4", "5"]);
    }
}
