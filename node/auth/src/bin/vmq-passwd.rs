//! `vmq-passwd`: creates and edits the password files of the `vmq_passwd` plugin.
//!
//! ```text
//! vmq-passwd [-c | -cf | -D] passwordfile username
//! vmq-passwd -U passwordfile
//! ```
//!
//! The password is read twice from the terminal with echo off or, when standard input is not a
//! terminal, as two lines from it. Files are replaced atomically and keep their permissions and
//! owner; new files are readable by their owner only.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, fchown};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use vmq_auth::passwd::{self, LoadError, PasswordFile};

const USAGE: &str = "\
vmq-passwd is a tool for managing password files for VerneMQ.

Usage: vmq-passwd [-c | -cf | -D] passwordfile username
       vmq-passwd -U passwordfile
 -c    : create a new password file; refuses to overwrite an existing one.
 -cf   : create a new password file, overwriting an existing one.
 -D    : delete the username rather than adding/updating its password.
 -U    : update a plain text password file to use hashed passwords.
With no option, the user is added to, or its password updated in, an existing file.
";

/// What the command line asks for.
enum Action {
    Help,
    Create { file: PathBuf, username: String, overwrite: bool },
    Set { file: PathBuf, username: String },
    Delete { file: PathBuf, username: String },
    HashPlainText { file: PathBuf },
}

/// An error for the user, printed after `Error: `.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(action) = parse_args(&args) else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match run(action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `None` for a command line that is not one of the usage lines.
fn parse_args(args: &[OsString]) -> Option<Action> {
    let username = |arg: &OsString| arg.to_str().map(str::to_owned);
    let file = |arg: &OsString| (!arg.to_string_lossy().starts_with('-')).then(|| PathBuf::from(arg));
    match args {
        [option] if option == "-h" || option == "--help" => Some(Action::Help),
        [option, path] if option == "-U" => Some(Action::HashPlainText { file: file(path)? }),
        [path, user] => Some(Action::Set { file: file(path)?, username: username(user)? }),
        [option, path, user] => {
            let (file, username) = (file(path)?, username(user)?);
            match option.to_str()? {
                "-c" => Some(Action::Create { file, username, overwrite: false }),
                "-cf" => Some(Action::Create { file, username, overwrite: true }),
                "-D" => Some(Action::Delete { file, username }),
                _ => None,
            }
        }
        _ => None,
    }
}

fn run(action: Action) -> Result<(), Failure> {
    match action {
        Action::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Action::Create { file, username, overwrite } => {
            passwd::validate_username(&username)?;
            if file.exists() {
                if !overwrite {
                    return Err(Failure(format!(
                        "File {} already exists. Please use -cf in case you want to overwrite the file.",
                        file.display()
                    )));
                }
                eprintln!("Warning: {} already exists and will be overwritten.", file.display());
            }
            let password = read_new_password()?;
            let entry = passwd::hash_entry(&username, &password)?;
            write_file(&file, &format!("{entry}\n"), !overwrite)
        }
        Action::Set { file, username } => {
            passwd::validate_username(&username)?;
            let text = read_file(&file)?;
            let password = read_new_password()?;
            let edited = passwd::set_user(&text, &username, &password)?;
            save_edit(&file, &edited)
        }
        Action::Delete { file, username } => {
            let text = read_file(&file)?;
            match passwd::delete_user(&text, &username) {
                Some(edited) => save_edit(&file, &edited),
                None => {
                    eprintln!("Warning: User {username} not found in password file {}.", file.display());
                    Ok(())
                }
            }
        }
        Action::HashPlainText { file } => {
            let text = read_file(&file)?;
            let converted = passwd::hash_plain_text(&text).map_err(|error| match error {
                passwd::ConvertError::Line(error) => {
                    Failure(format!("{}:{}: {}; nothing was changed.", file.display(), error.line, error.reason))
                }
                passwd::ConvertError::Entry(error) => Failure(error.to_string()),
            })?;
            save_edit(&file, &converted)
        }
    }
}

fn read_file(file: &Path) -> Result<String, Failure> {
    passwd::read_text(file).map_err(|error| match error {
        LoadError::Io { source, .. } => Failure(format!("Unable to open password file {}: {source}.", file.display())),
        parse @ LoadError::Parse { .. } => Failure(parse.to_string()),
    })
}

/// Writes an edited file, warning when the broker would still refuse it: the edit keeps lines
/// it does not touch, malformed ones included.
fn save_edit(file: &Path, text: &str) -> Result<(), Failure> {
    write_file(file, text, false)?;
    if let Err(error) = PasswordFile::parse(text) {
        eprintln!(
            "Warning: {}:{}: {}; the broker will not load this file until that line is fixed.",
            file.display(),
            error.line,
            error.reason
        );
    }
    Ok(())
}

/// Asks for the password twice.
fn read_new_password() -> Result<Vec<u8>, Failure> {
    let stdin = io::stdin();
    let terminal = stdin.is_terminal();
    let mut input = stdin.lock();
    let first = prompt("Password: ", &mut input, terminal)?;
    let second = prompt("Reenter password: ", &mut input, terminal)?;
    if first != second {
        return Err(Failure("Passwords do not match.".to_owned()));
    }
    Ok(first)
}

/// Reads one line without its line ending; an empty one is an error.
fn prompt(text: &str, input: &mut impl BufRead, terminal: bool) -> Result<Vec<u8>, Failure> {
    let mut stdout = io::stdout();
    write!(stdout, "{text}")?;
    stdout.flush()?;
    let mut line = Vec::new();
    {
        let _echo_off = terminal.then(EchoOff::new);
        input.read_until(b'\n', &mut line)?;
    }
    // The Enter key was not echoed either.
    writeln!(stdout)?;
    while line.last().is_some_and(|&byte| byte == b'\n' || byte == b'\r') {
        line.pop();
    }
    if line.is_empty() {
        return Err(Failure("Empty password.".to_owned()));
    }
    Ok(line)
}

/// Turns the terminal's echo off until dropped.
///
/// `stty` does it because this workspace forbids the `unsafe` that calling `tcsetattr` needs. No
/// signal handler turns the echo back on after Ctrl-C: the shell (bash, for one) restores the
/// terminal settings of a job that a signal killed.
struct EchoOff {
    active: bool,
}

impl EchoOff {
    fn new() -> EchoOff {
        let active = stty("-echo");
        if !active {
            eprintln!("Warning: cannot turn off echo; the password will be visible.");
        }
        EchoOff { active }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.active && !stty("echo") {
            eprintln!("Warning: cannot turn echo back on; run `stty echo`.");
        }
    }
}

/// Runs `stty` on standard input, which it inherits.
fn stty(setting: &str) -> bool {
    Command::new("stty").arg(setting).status().is_ok_and(|status| status.success())
}

/// Replaces or creates `file` with `text` through a temporary file in the same directory, so
/// that the broker, which rereads the file on its own schedule, sees the old or the new file and
/// never a partial one. With `create_only`, an existing file is left alone and is an error.
fn write_file(file: &Path, text: &str, create_only: bool) -> Result<(), Failure> {
    let existing = fs::metadata(file).ok();
    // Replacing a symlink would cut it; replace what it points at instead.
    let target = match existing {
        Some(_) => fs::canonicalize(file).map_err(|error| describe(file, error))?,
        None => file.to_owned(),
    };
    let name = target.file_name().ok_or_else(|| Failure(format!("{} is not a file name.", file.display())))?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".vmq-passwd-{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);

    let result = write_temp(&temp, text, existing.as_ref()).and_then(|()| {
        if create_only {
            // A hard link, unlike a rename, fails when the name has been taken meanwhile.
            fs::hard_link(&temp, &target).map_err(|error| describe(file, error))?;
            fs::remove_file(&temp).map_err(|error| describe(&temp, error))
        } else {
            fs::rename(&temp, &target).map_err(|error| describe(file, error))
        }
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    // Make the new directory entry durable too; not every file system lets a directory be synced.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes the temporary file with the permissions and owner of the file it replaces, or readable
/// by its owner only.
fn write_temp(temp: &Path, text: &str, existing: Option<&fs::Metadata>) -> Result<(), Failure> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|error| describe(temp, error))?;
    if let Some(existing) = existing {
        out.set_permissions(existing.permissions()).map_err(|error| describe(temp, error))?;
        // Only root may give a file away; anyone else keeps the file but becomes its owner.
        let owner = fs::metadata(temp).map(|temp| (temp.uid(), temp.gid()));
        if owner.is_ok_and(|owner| owner != (existing.uid(), existing.gid()))
            && fchown(&out, Some(existing.uid()), Some(existing.gid())).is_err()
        {
            eprintln!(
                "Warning: cannot keep owner {}:{} of the password file; it will belong to this user.",
                existing.uid(),
                existing.gid()
            );
        }
    }
    out.write_all(text.as_bytes()).map_err(|error| describe(temp, error))?;
    out.sync_all().map_err(|error| describe(temp, error))
}

fn describe(path: &Path, error: io::Error) -> Failure {
    Failure(format!("{}: {error}.", path.display()))
}
