//! The `vmq_passwd` password file: reading and checking it, and the line edits that `vmq-passwd`
//! makes to it.
//!
//! # Format
//!
//! One entry per line:
//!
//! ```text
//! username:$6$<salt>$<hash>
//! ```
//!
//! - `username` is everything before the first `:`, taken as it is (no trimming). It cannot
//!   contain `:`; it may be empty, which matches an MQTT client that sends an empty username.
//! - `6` names the only hash type: salted SHA-512.
//! - `<salt>` is the salt in standard base64. New entries get 12 random bytes; any length is read.
//! - `<hash>` is `SHA-512(password bytes ‖ salt bytes)`, the 64-byte digest in standard base64
//!   (88 characters with the `==` padding). The password is the MQTT password, byte for byte.
//! - Padding may be left out of either base64 field, and blanks around the part after the `:` are
//!   ignored.
//! - Empty or blank lines and lines starting with `#` are skipped; edits keep them as they are.
//! - Lines end in `\n` or `\r\n`; the last one need not end at all.
//! - When a username has several lines, the last one counts.
//!
//! Any other line makes the whole file invalid: [`PasswordFile::parse`] names the first such
//! line, so that the node can log it and keep the file it had. Errors and `Debug` output never
//! contain a password or a line's text, since a plain-text line holds one.
//!
//! The `vmq-passwd` tool edits a file with [`set_user`], [`delete_user`] and
//! [`hash_plain_text`], which keep every other line, including malformed ones, as they are.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::digest;
use ring::rand::{SecureRandom as _, SystemRandom};
use subtle::ConstantTimeEq as _;

/// Bytes of random salt in a new entry.
pub const SALT_LEN: usize = 12;

/// Bytes in a SHA-512 digest.
const HASH_LEN: usize = 64;

/// Writes padded base64, as every other writer of the format does, and reads it with or without
/// padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The users of a password file and their salted hashes.
#[derive(Clone, Default)]
pub struct PasswordFile {
    entries: BTreeMap<String, Entry>,
}

/// A user's salt and `SHA-512(password ‖ salt)`.
#[derive(Clone)]
struct Entry {
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

/// The outcome of [`PasswordFile::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The user is in the file and the password matches.
    Ok,
    /// The user is in the file and the password does not match: the client is refused.
    WrongPassword,
    /// The user is not in the file: VerneMQ answers `next`, so that the next authentication
    /// plugin decides.
    UnknownUser,
}

/// A line of a password file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub reason: LineError,
}

/// What is wrong with a line. The messages never quote the line, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// No `:` separates the username from the rest.
    #[error("no ':' after the username")]
    MissingColon,
    /// More than one `:`: a username cannot contain one, and base64 has none.
    #[error("more than one ':' (usernames cannot contain ':')")]
    ExtraColon,
    /// The part after the `:` is not `$<type>$<salt>$<hash>`.
    #[error("expected '$6$<salt>$<hash>' after the username (is the password still in plain text? see vmq-passwd -U)")]
    NotHashed,
    /// `$7$`, mosquitto 2's PBKDF2 hash.
    #[error(
        "hash type $7$ (PBKDF2) is not supported, only $6$: rewrite it with vmq-passwd or mosquitto_passwd -H sha512"
    )]
    Pbkdf2,
    /// A hash type other than `$6$` or `$7$`.
    #[error("unsupported hash type, only $6$ (salted SHA-512) is supported")]
    UnsupportedHashType,
    /// The salt is not base64.
    #[error("the salt is not valid base64")]
    SaltNotBase64,
    /// The hash is not base64.
    #[error("the hash is not valid base64")]
    HashNotBase64,
    /// The hash decodes to the wrong number of bytes for SHA-512.
    #[error("the hash is {0} bytes long, a SHA-512 digest is 64")]
    HashLength(usize),
    /// A plain-text line with nothing before the `:` (only when converting with [`hash_plain_text`]).
    #[error("empty username")]
    EmptyUsername,
    /// A plain-text line with nothing after the `:` (only when converting with [`hash_plain_text`]).
    #[error("empty password")]
    EmptyPassword,
}

/// Why [`PasswordFile::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read password file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line cannot be parsed.
    #[error("password file {}:{}: {}", path.display(), error.line, error.reason)]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong with it.
        error: ParseError,
    },
}

/// Why an entry cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A file may hold an empty username, but asking for one is most likely a slip.
    #[error("the username is empty")]
    EmptyUsername,
    /// The `:` would end the username early.
    #[error("the username contains ':'")]
    ColonInUsername,
    /// A line break would split the entry.
    #[error("the username contains a line break")]
    LineBreakInUsername,
    /// The entry would read back as a comment.
    #[error("the username starts with '#'")]
    HashSignUsername,
    /// No salt could be drawn from the system's random number generator.
    #[error("the system random number generator failed")]
    NoRandomness,
}

/// Why [`hash_plain_text`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A line is not `username:password`.
    #[error(transparent)]
    Line(#[from] ParseError),
    /// An entry cannot be made.
    #[error(transparent)]
    Entry(#[from] EntryError),
}

impl PasswordFile {
    /// Parses the text of a password file; see the [module docs](self) for the format.
    pub fn parse(text: &str) -> Result<PasswordFile, ParseError> {
        let mut entries = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            if is_skipped(line) {
                continue;
            }
            let (username, entry) = parse_entry(line).map_err(|reason| ParseError { line: index + 1, reason })?;
            entries.insert(username.to_owned(), entry);
        }
        Ok(PasswordFile { entries })
    }

    /// Reads and parses a password file.
    pub fn load(path: &Path) -> Result<PasswordFile, LoadError> {
        let text = read_text(path)?;
        PasswordFile::parse(&text).map_err(|error| LoadError::Parse { path: path.to_owned(), error })
    }

    /// Checks a user's password, comparing the digests in constant time.
    ///
    /// Whether a CONNECT without a username or password gets here is the caller's business
    /// (VerneMQ answers `next` without looking at the file).
    pub fn check(&self, username: &str, password: &[u8]) -> Check {
        let Some(entry) = self.entries.get(username) else {
            return Check::UnknownUser;
        };
        let digest = salted_digest(password, &entry.salt);
        if bool::from(digest.as_ref().ct_eq(&entry.hash)) { Check::Ok } else { Check::WrongPassword }
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The usernames, in byte order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// Shows the usernames only.
impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile").field("users", &self.entries.keys().collect::<Vec<_>>()).finish()
    }
}

/// Reads a password file as text; a byte sequence that is not UTF-8 is a parse error on its line.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
        LoadError::Parse { path: path.to_owned(), error: ParseError { line, reason: LineError::NotUtf8 } }
    })
}

/// Makes a password file line, without its line ending, for `username` with a fresh random
/// salt of [`SALT_LEN`] bytes.
pub fn hash_entry(username: &str, password: &[u8]) -> Result<String, EntryError> {
    validate_username(username)?;
    let mut salt = [0; SALT_LEN];
    SystemRandom::new().fill(&mut salt).map_err(|_| EntryError::NoRandomness)?;
    Ok(entry_line(username, password, &salt))
}

/// Checks that `username` can be written as an entry that reads back as the same user.
pub fn validate_username(username: &str) -> Result<(), EntryError> {
    if username.is_empty() {
        Err(EntryError::EmptyUsername)
    } else if username.contains(':') {
        Err(EntryError::ColonInUsername)
    } else if username.contains(['\n', '\r']) {
        Err(EntryError::LineBreakInUsername)
    } else if username.starts_with('#') {
        Err(EntryError::HashSignUsername)
    } else {
        Ok(())
    }
}

/// Sets `username`'s password in the text of a password file: its first line gets a new entry
/// and any later lines of the same user go, or the entry is appended when the user has none.
/// Every other line is kept as it is.
pub fn set_user(text: &str, username: &str, password: &[u8]) -> Result<String, EntryError> {
    let entry = hash_entry(username, password)?;
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    let mut replaced = false;
    for (line, ending) in lines_with_endings(text) {
        if line_user(line) != Some(username) {
            out.push_str(line);
            out.push_str(ending);
        } else if !replaced {
            out.push_str(&entry);
            out.push_str(if ending.is_empty() { "\n" } else { ending });
            replaced = true;
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&entry);
        out.push('\n');
    }
    Ok(out)
}

/// Removes every line of `username` from the text of a password file, keeping the other lines
/// as they are; `None` when the user has no line.
pub fn delete_user(text: &str, username: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for (line, ending) in lines_with_endings(text) {
        if line_user(line) == Some(username) {
            found = true;
        } else {
            out.push_str(line);
            out.push_str(ending);
        }
    }
    found.then_some(out)
}

/// Replaces each plain-text `username:password` line with an entry for that password.
///
/// The password is everything after the first `:`, `:`s included. Lines already in the
/// `$6$<salt>$<hash>` form are kept, so converting twice changes nothing; so are blank lines and
/// comments.
pub fn hash_plain_text(text: &str) -> Result<String, ConvertError> {
    let mut out = String::with_capacity(text.len() * 2);
    for (index, (line, ending)) in lines_with_endings(text).enumerate() {
        if is_skipped(line) || parse_entry(line).is_ok() {
            out.push_str(line);
            out.push_str(ending);
            continue;
        }
        let error = |reason| ParseError { line: index + 1, reason };
        let (username, password) = line.split_once(':').ok_or(error(LineError::MissingColon))?;
        if username.is_empty() {
            return Err(error(LineError::EmptyUsername).into());
        }
        if password.is_empty() {
            return Err(error(LineError::EmptyPassword).into());
        }
        let mut salt = [0; SALT_LEN];
        SystemRandom::new().fill(&mut salt).map_err(|_| EntryError::NoRandomness)?;
        out.push_str(&entry_line(username, password.as_bytes(), &salt));
        out.push_str(if ending.is_empty() { "\n" } else { ending });
    }
    Ok(out)
}

/// Lines that are neither entries nor errors.
fn is_skipped(line: &str) -> bool {
    line.trim().is_empty() || line.starts_with('#')
}

/// The user an editable line belongs to: what precedes its first `:`, if it is not skipped.
fn line_user(line: &str) -> Option<&str> {
    if is_skipped(line) { None } else { line.split_once(':').map(|(username, _)| username) }
}

/// Splits text into lines and their endings (`"\n"`, `"\r\n"`, or `""` for a last line without
/// one), so that edited text can be put back together byte for byte.
fn lines_with_endings(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_inclusive('\n').map(|line| {
        let content = line.strip_suffix('\n').map_or(line, |rest| rest.strip_suffix('\r').unwrap_or(rest));
        line.split_at(content.len())
    })
}

fn parse_entry(line: &str) -> Result<(&str, Entry), LineError> {
    let (username, rest) = line.split_once(':').ok_or(LineError::MissingColon)?;
    let rest = rest.trim();
    if rest.contains(':') {
        return Err(LineError::ExtraColon);
    }
    let mut fields = rest.split('$');
    if fields.next() != Some("") {
        return Err(LineError::NotHashed);
    }
    match fields.next() {
        Some("6") => {}
        Some("7") => return Err(LineError::Pbkdf2),
        Some(_) => return Err(LineError::UnsupportedHashType),
        None => return Err(LineError::NotHashed),
    }
    let (Some(salt), Some(hash), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(LineError::NotHashed);
    };
    let salt = BASE64.decode(salt).map_err(|_| LineError::SaltNotBase64)?;
    let hash = BASE64.decode(hash).map_err(|_| LineError::HashNotBase64)?;
    let hash = <[u8; HASH_LEN]>::try_from(hash).map_err(|hash| LineError::HashLength(hash.len()))?;
    Ok((username, Entry { salt, hash }))
}

fn entry_line(username: &str, password: &[u8], salt: &[u8]) -> String {
    let digest = salted_digest(password, salt);
    format!("{username}:$6${}${}", BASE64.encode(salt), BASE64.encode(digest))
}

fn salted_digest(password: &[u8], salt: &[u8]) -> digest::Digest {
    let mut context = digest::Context::new(&digest::SHA512);
    context.update(password);
    context.update(salt);
    context.finish()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `alice` / `hunter2` with salt `8c2f1a9e04d7b3165ea0c4f1`, computed outside this crate as
    /// `base64(sha512(b"hunter2" + salt))`.
    const ALICE: &str = "alice:$6$jC8angTXsxZeoMTx$XMq0p8rZBI98qWroIDwRyGkHU0qe61EqoqaLjIPrhBWQWGAuHz1zboD5EhBEOtYMhWgiDL3x9b72qoXP9bsPUw==";
    const ALICE_SALT: [u8; SALT_LEN] = [0x8c, 0x2f, 0x1a, 0x9e, 0x04, 0xd7, 0xb3, 0x16, 0x5e, 0xa0, 0xc4, 0xf1];

    /// `bob` / `päss:wörd` (UTF-8, with a ':') with salt `0102030405060708090a0b0c`, computed the
    /// same way.
    const BOB: &str = "bob:$6$AQIDBAUGBwgJCgsM$cATcn7d1VlXBuZgM3HnxD1yDtJduLXyrfBrqNt6gTv2zrqAe+MWnaIMmJ30npY0HyG1REtqgrckcGKpHfhSWxw==";

    fn parse_error(text: &str) -> ParseError {
        match PasswordFile::parse(text) {
            Ok(file) => panic!("parsed {file:?}"),
            Err(error) => error,
        }
    }

    fn parse(text: &str) -> PasswordFile {
        PasswordFile::parse(text).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn entry_line_matches_the_golden_vector() {
        assert_eq!(entry_line("alice", b"hunter2", &ALICE_SALT), ALICE);
    }

    #[test]
    fn golden_vectors_check_ok() {
        let file = parse(&format!("{ALICE}\n{BOB}\n"));
        assert_eq!(file.len(), 2);
        assert_eq!(file.check("alice", b"hunter2"), Check::Ok);
        assert_eq!(file.check("bob", "päss:wörd".as_bytes()), Check::Ok);
    }

    #[test]
    fn wrong_password_and_unknown_user_are_told_apart() {
        let file = parse(ALICE);
        assert_eq!(file.check("alice", b"hunter3"), Check::WrongPassword);
        assert_eq!(file.check("alice", b""), Check::WrongPassword);
        assert_eq!(file.check("alice", b"hunter2\n"), Check::WrongPassword);
        assert_eq!(file.check("Alice", b"hunter2"), Check::UnknownUser);
        assert_eq!(file.check("", b"hunter2"), Check::UnknownUser);
    }

    #[test]
    fn blank_lines_comments_and_crlf_are_accepted() {
        let text = format!("# users\n\n   \n{ALICE}\r\n#bob:$6$x$y\n{BOB}");
        let file = parse(&text);
        assert_eq!(file.usernames().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(file.check("alice", b"hunter2"), Check::Ok);
    }

    #[test]
    fn empty_text_has_no_users() {
        assert!(parse("").is_empty());
        assert!(parse("\n# nobody\n").is_empty());
    }

    #[test]
    fn the_last_line_of_a_user_counts() {
        let other_password = entry_line("alice", b"other", &[7; SALT_LEN]);
        let file = parse(&format!("{ALICE}\n{other_password}\n"));
        assert_eq!(file.len(), 1);
        assert_eq!(file.check("alice", b"other"), Check::Ok);
        assert_eq!(file.check("alice", b"hunter2"), Check::WrongPassword);
    }

    #[test]
    fn usernames_are_not_trimmed() {
        let file = parse(&entry_line(" carol", b"pw", &ALICE_SALT));
        assert_eq!(file.check(" carol", b"pw"), Check::Ok);
        assert_eq!(file.check("carol", b"pw"), Check::UnknownUser);
    }

    #[test]
    fn unpadded_base64_and_blanks_around_the_hash_are_accepted() {
        let unpadded = ALICE.trim_end_matches('=');
        assert_eq!(parse(unpadded).check("alice", b"hunter2"), Check::Ok);
        let spaced = ALICE.replacen(':', ": ", 1) + " \t";
        assert_eq!(parse(&spaced).check("alice", b"hunter2"), Check::Ok);
    }

    #[test]
    fn a_salt_of_any_length_is_read() {
        let file = parse(&entry_line("dave", b"pw", &[]));
        assert_eq!(file.check("dave", b"pw"), Check::Ok);
        let file = parse(&entry_line("erin", b"pw", &[1; 16]));
        assert_eq!(file.check("erin", b"pw"), Check::Ok);
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        let cases = [
            ("alice hunter2", LineError::MissingColon),
            ("al:ice:$6$jC8angTXsxZeoMTx$AAAA", LineError::ExtraColon),
            ("alice:hunter2", LineError::NotHashed),
            ("alice:", LineError::NotHashed),
            ("alice:$6$", LineError::NotHashed),
            ("alice:$6$jC8angTXsxZeoMTx", LineError::NotHashed),
            ("alice:$6$a$b$c", LineError::NotHashed),
            ("alice:$7$101$jC8angTXsxZeoMTx$AAAA", LineError::Pbkdf2),
            ("alice:$1$jC8angTXsxZeoMTx$AAAA", LineError::UnsupportedHashType),
            ("alice:$6$not base64$AAAA", LineError::SaltNotBase64),
            ("alice:$6$jC8angTXsxZeoMTx$not*base64", LineError::HashNotBase64),
            ("alice:$6$jC8angTXsxZeoMTx$AAAA", LineError::HashLength(3)),
        ];
        for (line, reason) in cases {
            let text = format!("# header\n{ALICE}\n\n{line}\n{BOB}\n");
            assert_eq!(parse_error(&text), ParseError { line: 4, reason }, "{line}");
        }
    }

    #[test]
    fn errors_do_not_quote_the_line() {
        let error = parse_error("alice:$s3cret$x\n");
        assert_eq!(error, ParseError { line: 1, reason: LineError::UnsupportedHashType });
        assert!(!error.to_string().contains("s3cret"), "{error}");
        let error = parse_error("alice:s3cret\n");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn debug_shows_usernames_only() {
        let debug = format!("{:?}", parse(ALICE));
        assert_eq!(debug, r#"PasswordFile { users: ["alice"] }"#);
    }

    #[test]
    fn load_names_the_path_and_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("vmq.passwd");
        std::fs::write(&path, format!("{ALICE}\nbroken\n")).unwrap_or_else(|error| panic!("{error}"));
        let error = PasswordFile::load(&path).err().map(|error| error.to_string());
        assert_eq!(error, Some(format!("password file {}:2: no ':' after the username", path.display())));

        std::fs::write(&path, b"# \xff\n\xfe").unwrap_or_else(|error| panic!("{error}"));
        let error = PasswordFile::load(&path).err().map(|error| error.to_string());
        assert_eq!(error, Some(format!("password file {}:1: not valid UTF-8", path.display())));

        let missing = dir.path().join("missing");
        let error = PasswordFile::load(&missing).err();
        assert!(matches!(error, Some(LoadError::Io { path, .. }) if path == missing));
    }

    #[test]
    fn hash_entry_round_trips() {
        let line = hash_entry("frank", b"secret").unwrap_or_else(|error| panic!("{error}"));
        assert!(line.starts_with("frank:$6$"), "{line}");
        assert!(!line.contains('\n'));
        let file = parse(&line);
        assert_eq!(file.check("frank", b"secret"), Check::Ok);
        // 12 salt bytes are 16 base64 characters, 64 hash bytes 88.
        let fields: Vec<&str> = line.split('$').collect();
        assert_eq!((fields[2].len(), fields[3].len()), (16, 88));
    }

    #[test]
    fn hash_entry_draws_a_fresh_salt_each_time() {
        let first = hash_entry("frank", b"secret");
        let second = hash_entry("frank", b"secret");
        assert!(first.is_ok());
        assert_ne!(first, second);
    }

    #[test]
    fn hash_entry_refuses_usernames_that_would_not_read_back() {
        assert_eq!(hash_entry("", b"pw"), Err(EntryError::EmptyUsername));
        assert_eq!(hash_entry("a:b", b"pw"), Err(EntryError::ColonInUsername));
        assert_eq!(hash_entry("a\nb", b"pw"), Err(EntryError::LineBreakInUsername));
        assert_eq!(hash_entry("a\r", b"pw"), Err(EntryError::LineBreakInUsername));
        assert_eq!(hash_entry("#a", b"pw"), Err(EntryError::HashSignUsername));
    }

    #[test]
    fn set_user_appends_a_new_user_and_keeps_other_lines() {
        let text = format!("# users\n{ALICE}\r\n\nnot an entry");
        let edited = set_user(&text, "grace", b"pw").unwrap_or_else(|error| panic!("{error}"));
        let (kept, added) = edited.split_at(text.len() + 1);
        assert_eq!(kept, format!("{text}\n"));
        assert!(added.starts_with("grace:$6$") && added.ends_with('\n'), "{added}");
        let file = parse(&edited.replace("not an entry\n", ""));
        assert_eq!(file.check("grace", b"pw"), Check::Ok);
        assert_eq!(file.check("alice", b"hunter2"), Check::Ok);
    }

    #[test]
    fn set_user_replaces_the_first_line_of_the_user_and_drops_the_others() {
        let text = format!("{ALICE}\n# keep\n{BOB}\r\n{ALICE}\n");
        let edited = set_user(&text, "bob", b"new").unwrap_or_else(|error| panic!("{error}"));
        let lines: Vec<&str> = edited.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 4);
        assert_eq!((lines[0], lines[1], lines[3]), (&*format!("{ALICE}\n"), "# keep\n", &*format!("{ALICE}\n")));
        assert!(lines[2].starts_with("bob:$6$") && lines[2].ends_with("\r\n"));
        assert_eq!(parse(&edited).check("bob", b"new"), Check::Ok);

        let edited = set_user(&text, "alice", b"new").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(edited.lines().filter(|line| line.starts_with("alice:")).count(), 1);
        assert!(edited.lines().nth(1) == Some("# keep") && edited.lines().nth(2) == Some(BOB));
        assert_eq!(parse(&edited).check("alice", b"new"), Check::Ok);
    }

    #[test]
    fn set_user_does_not_touch_comments_that_look_like_the_user() {
        let text = "#alice:old\n";
        let edited = set_user(text, "alice", b"pw").unwrap_or_else(|error| panic!("{error}"));
        assert!(edited.starts_with("#alice:old\nalice:$6$"), "{edited}");
    }

    #[test]
    fn delete_user_removes_every_line_of_the_user_only() {
        let text = format!("# users\n{ALICE}\n{BOB}\r\n\n{ALICE}");
        assert_eq!(delete_user(&text, "alice"), Some(format!("# users\n{BOB}\r\n\n")));
        assert_eq!(delete_user(&text, "bob"), Some(format!("# users\n{ALICE}\n\n{ALICE}")));
        assert_eq!(delete_user(&text, "carol"), None);
        assert_eq!(delete_user(&text, "# users"), None);
    }

    #[test]
    fn hash_plain_text_converts_plain_lines_and_keeps_the_rest() {
        let text = format!("# plain\nalice:hunter2\n\nbob:päss:wörd\r\n{BOB}\ncarol:last");
        let converted = hash_plain_text(&text).unwrap_or_else(|error| panic!("{error}"));
        let lines: Vec<&str> = converted.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 6);
        assert_eq!((lines[0], lines[2], lines[4]), ("# plain\n", "\n", &*format!("{BOB}\n")));
        assert!(lines[3].ends_with("\r\n") && lines[5].ends_with('\n'));
        let file = parse(&converted);
        assert_eq!(file.check("alice", b"hunter2"), Check::Ok);
        assert_eq!(file.check("carol", b"last"), Check::Ok);
        // The fourth line is overridden by the fifth, the golden vector, with the same password.
        assert_eq!(file.check("bob", "päss:wörd".as_bytes()), Check::Ok);
        assert!(lines[3].starts_with("bob:$6$") && lines[3] != format!("{BOB}\r\n"));
    }

    #[test]
    fn hash_plain_text_twice_changes_nothing_more() {
        let once = hash_plain_text("alice:hunter2\n").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(hash_plain_text(&once), Ok(once.clone()));
    }

    #[test]
    fn hash_plain_text_refuses_lines_it_cannot_convert() {
        let line_error = |line, reason| Err(ConvertError::Line(ParseError { line, reason }));
        assert_eq!(hash_plain_text("alice:pw\nbob\n"), line_error(2, LineError::MissingColon));
        assert_eq!(hash_plain_text(":pw\n"), line_error(1, LineError::EmptyUsername));
        assert_eq!(hash_plain_text("# x\nalice:\n"), line_error(2, LineError::EmptyPassword));
    }

    proptest! {
        #[test]
        fn hash_entry_checks_its_own_password_only(
            username in "[^:#\r\n][^:\r\n]{0,20}",
            password in proptest::collection::vec(any::<u8>(), 0..40),
            other in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let line = hash_entry(&username, &password).map_err(|error| TestCaseError::fail(error.to_string()))?;
            let file = PasswordFile::parse(&line).map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert_eq!(file.len(), 1);
            prop_assert_eq!(file.check(&username, &password), Check::Ok);
            if other != password {
                prop_assert_eq!(file.check(&username, &other), Check::WrongPassword);
            }
        }
    }
}
