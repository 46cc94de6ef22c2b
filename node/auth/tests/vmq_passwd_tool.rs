//! Runs the `vmq-passwd` binary on files in a temporary directory and checks the results with
//! [`PasswordFile`].

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vmq_auth::passwd::{Check, PasswordFile};

/// Runs `vmq-passwd` with `stdin` piped in.
fn vmq_passwd(args: &[&Path], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmq-passwd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start vmq-passwd: {error}"));
    if let Some(mut input) = child.stdin.take() {
        // The tool may exit before reading, e.g. on a usage error.
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().unwrap_or_else(|error| panic!("vmq-passwd did not finish: {error}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "vmq-passwd failed: {}", stderr(output));
}

fn assert_failure(output: &Output, message: &str) {
    assert!(!output.status.success(), "vmq-passwd succeeded");
    assert!(stderr(output).contains(message), "stderr {:?} lacks {message:?}", stderr(output));
}

fn load(path: &Path) -> PasswordFile {
    PasswordFile::load(path).unwrap_or_else(|error| panic!("{error}"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("{error}"))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).map(|metadata| metadata.permissions().mode() & 0o777).unwrap_or_else(|error| panic!("{error}"))
}

/// A temporary directory with the path of a password file in it.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let file = dir.path().join("vmq.passwd");
    (dir, file)
}

/// Creates `file` holding `henry` / `first`.
fn create_henry(file: &Path) {
    assert_success(&vmq_passwd(&[Path::new("-c"), file, Path::new("henry")], "first\nfirst\n"));
}

/// The names in `dir`, so that tests can see that no temporary file is left behind.
fn names(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).unwrap_or_else(|error| panic!("{error}"));
    let mut names: Vec<String> =
        entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn create_writes_one_hashed_user_readable_by_its_owner_only() {
    let (dir, file) = scratch();
    let output = vmq_passwd(&[Path::new("-c"), &file, Path::new("henry")], "first\nfirst\n");
    assert_success(&output);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Password: \nReenter password: \n");

    let text = read(&file);
    assert!(text.starts_with("henry:$6$") && text.ends_with('\n') && text.lines().count() == 1, "{text}");
    assert!(!text.contains("first"));
    let passwords = load(&file);
    assert_eq!(passwords.len(), 1);
    assert_eq!(passwords.check("henry", b"first"), Check::Ok);
    assert_eq!(passwords.check("henry", b"second"), Check::WrongPassword);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(names(dir.path()), ["vmq.passwd"]);
}

#[test]
fn create_refuses_to_overwrite_an_existing_file() {
    let (_dir, file) = scratch();
    create_henry(&file);
    let before = read(&file);
    let output = vmq_passwd(&[Path::new("-c"), &file, Path::new("bob")], "pw\npw\n");
    assert_failure(&output, "already exists");
    assert!(stderr(&output).contains("-cf"));
    assert_eq!(read(&file), before);
}

#[test]
fn create_force_overwrites_and_keeps_the_permissions() {
    let (_dir, file) = scratch();
    create_henry(&file);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap_or_else(|error| panic!("{error}"));
    assert_success(&vmq_passwd(&[Path::new("-cf"), &file, Path::new("bob")], "pw\npw\n"));
    let passwords = load(&file);
    assert_eq!(passwords.usernames().collect::<Vec<_>>(), ["bob"]);
    assert_eq!(passwords.check("bob", b"pw"), Check::Ok);
    assert_eq!(mode(&file), 0o640);
}

#[test]
fn no_option_adds_a_second_user_and_keeps_the_first_line() {
    let (dir, file) = scratch();
    create_henry(&file);
    let henry = read(&file);
    assert_success(&vmq_passwd(&[&file, Path::new("bob")], "bobs password\nbobs password\n"));
    let text = read(&file);
    assert!(text.starts_with(&henry), "{text}");
    let passwords = load(&file);
    assert_eq!(passwords.check("henry", b"first"), Check::Ok);
    assert_eq!(passwords.check("bob", b"bobs password"), Check::Ok);
    assert_eq!(names(dir.path()), ["vmq.passwd"]);
}

#[test]
fn no_option_updates_an_existing_user_in_place() {
    let (_dir, file) = scratch();
    fs::write(&file, "# our users\n").unwrap_or_else(|error| panic!("{error}"));
    assert_success(&vmq_passwd(&[&file, Path::new("henry")], "first\nfirst\n"));
    assert_success(&vmq_passwd(&[&file, Path::new("bob")], "pw\npw\n"));
    let bob_line = read(&file).lines().nth(2).map(str::to_owned);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o604)).unwrap_or_else(|error| panic!("{error}"));

    assert_success(&vmq_passwd(&[&file, Path::new("henry")], "second\nsecond\n"));
    let text = read(&file);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "# our users");
    assert!(lines[1].starts_with("henry:$6$"));
    assert_eq!(Some(lines[2].to_owned()), bob_line);
    let passwords = load(&file);
    assert_eq!(passwords.check("henry", b"second"), Check::Ok);
    assert_eq!(passwords.check("henry", b"first"), Check::WrongPassword);
    assert_eq!(passwords.check("bob", b"pw"), Check::Ok);
    assert_eq!(mode(&file), 0o604);
}

#[test]
fn no_option_refuses_a_missing_file() {
    let (_dir, file) = scratch();
    let output = vmq_passwd(&[&file, Path::new("henry")], "pw\npw\n");
    assert_failure(&output, &format!("Unable to open password file {}", file.display()));
    assert!(!file.exists());
}

#[test]
fn delete_removes_the_user_and_keeps_the_others() {
    let (_dir, file) = scratch();
    create_henry(&file);
    assert_success(&vmq_passwd(&[&file, Path::new("bob")], "pw\npw\n"));
    assert_success(&vmq_passwd(&[Path::new("-D"), &file, Path::new("henry")], ""));
    let passwords = load(&file);
    assert_eq!(passwords.usernames().collect::<Vec<_>>(), ["bob"]);
    assert_eq!(passwords.check("henry", b"first"), Check::UnknownUser);
    assert_eq!(passwords.check("bob", b"pw"), Check::Ok);
}

#[test]
fn delete_of_an_unknown_user_warns_and_leaves_the_file_alone() {
    let (_dir, file) = scratch();
    create_henry(&file);
    let before = read(&file);
    let output = vmq_passwd(&[Path::new("-D"), &file, Path::new("nobody")], "");
    assert_success(&output);
    assert!(stderr(&output).contains("User nobody not found"), "{}", stderr(&output));
    assert_eq!(read(&file), before);
}

#[test]
fn convert_hashes_plain_text_passwords() {
    let (dir, file) = scratch();
    fs::write(&file, "# plain\nhenry:first\n\nbob:with:colons\r\n").unwrap_or_else(|error| panic!("{error}"));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap_or_else(|error| panic!("{error}"));
    assert_success(&vmq_passwd(&[Path::new("-U"), &file], ""));
    let text = read(&file);
    assert!(text.starts_with("# plain\nhenry:$6$") && !text.contains("first"), "{text}");
    let passwords = load(&file);
    assert_eq!(passwords.check("henry", b"first"), Check::Ok);
    assert_eq!(passwords.check("bob", b"with:colons"), Check::Ok);
    assert_eq!(names(dir.path()), ["vmq.passwd"]);

    // Hashed lines are kept, so a second run changes nothing.
    assert_success(&vmq_passwd(&[Path::new("-U"), &file], ""));
    assert_eq!(read(&file), text);
}

#[test]
fn convert_refuses_a_line_without_a_password_and_changes_nothing() {
    let (_dir, file) = scratch();
    fs::write(&file, "henry:first\njust a name\n").unwrap_or_else(|error| panic!("{error}"));
    let output = vmq_passwd(&[Path::new("-U"), &file], "");
    assert_failure(&output, &format!("{}:2: no ':' after the username", file.display()));
    assert!(!stderr(&output).contains("first"));
    assert_eq!(read(&file), "henry:first\njust a name\n");
}

#[test]
fn mismatching_passwords_are_refused() {
    let (dir, file) = scratch();
    let output = vmq_passwd(&[Path::new("-c"), &file, Path::new("henry")], "first\nfrist\n");
    assert_failure(&output, "Passwords do not match");
    assert!(!file.exists());

    create_henry(&file);
    let before = read(&file);
    let output = vmq_passwd(&[&file, Path::new("henry")], "second\nsceond\n");
    assert_failure(&output, "Passwords do not match");
    assert_eq!(read(&file), before);
    assert_eq!(names(dir.path()), ["vmq.passwd"]);
}

#[test]
fn empty_passwords_are_refused() {
    let (_dir, file) = scratch();
    assert_failure(&vmq_passwd(&[Path::new("-c"), &file, Path::new("henry")], "\n\n"), "Empty password");
    assert_failure(&vmq_passwd(&[Path::new("-c"), &file, Path::new("henry")], "pw\n"), "Empty password");
    assert_failure(&vmq_passwd(&[Path::new("-c"), &file, Path::new("henry")], ""), "Empty password");
    assert!(!file.exists());
}

#[test]
fn usernames_with_a_colon_are_refused() {
    let (_dir, file) = scratch();
    let output = vmq_passwd(&[Path::new("-c"), &file, Path::new("hen:ry")], "pw\npw\n");
    assert_failure(&output, "the username contains ':'");
    assert!(!file.exists());
}

#[test]
fn passwords_are_the_line_without_its_ending() {
    let (_dir, file) = scratch();
    assert_success(&vmq_passwd(&[Path::new("-c"), &file, Path::new("henry")], " sp ace \r\n sp ace \r\n"));
    assert_eq!(load(&file).check("henry", b" sp ace "), Check::Ok);
}

#[test]
fn editing_through_a_symlink_replaces_the_target() {
    let (dir, file) = scratch();
    create_henry(&file);
    let link = dir.path().join("link.passwd");
    std::os::unix::fs::symlink(&file, &link).unwrap_or_else(|error| panic!("{error}"));
    assert_success(&vmq_passwd(&[&link, Path::new("bob")], "pw\npw\n"));
    assert!(fs::symlink_metadata(&link).is_ok_and(|metadata| metadata.file_type().is_symlink()));
    assert_eq!(load(&file).check("bob", b"pw"), Check::Ok);
}

#[test]
fn edits_warn_about_lines_the_broker_would_refuse() {
    let (_dir, file) = scratch();
    fs::write(&file, "henry:not hashed\n").unwrap_or_else(|error| panic!("{error}"));
    let output = vmq_passwd(&[&file, Path::new("bob")], "pw\npw\n");
    assert_success(&output);
    assert!(stderr(&output).contains(&format!("Warning: {}:1:", file.display())), "{}", stderr(&output));
    assert!(!stderr(&output).contains("not hashed"));
    assert!(read(&file).starts_with("henry:not hashed\nbob:$6$"));
}

#[test]
fn bad_command_lines_print_the_usage() {
    let (_dir, file) = scratch();
    for args in [
        vec![],
        vec![file.as_path()],
        vec![Path::new("-x"), &file, Path::new("henry")],
        vec![Path::new("-c"), &file],
        vec![Path::new("-U"), &file, Path::new("henry")],
        vec![Path::new("-c"), &file, Path::new("henry"), Path::new("extra")],
    ] {
        let output = vmq_passwd(&args, "pw\npw\n");
        assert_failure(&output, "Usage: vmq-passwd");
    }
    assert!(!file.exists());
    let help = vmq_passwd(&[Path::new("--help")], "");
    assert_success(&help);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: vmq-passwd"));
}

/// `mosquitto_passwd` writes the same format (2.x with `-H sha512`, 1.x always); runs only where
/// it is installed.
#[test]
fn mosquitto_passwd_entries_verify() {
    let (_dir, file) = scratch();
    let mosquitto_passwd = |hash_option: &[&str]| {
        Command::new("mosquitto_passwd")
            .args(hash_option)
            .args(["-c", "-b"])
            .arg(&file)
            .args(["henry", "first"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    let Ok(status) = mosquitto_passwd(&["-H", "sha512"]) else {
        return;
    };
    if !status.success() {
        assert!(mosquitto_passwd(&[]).is_ok_and(|status| status.success()), "mosquitto_passwd failed");
    }
    assert_eq!(load(&file).check("henry", b"first"), Check::Ok);
}
