//! `Acl::load` on files as VerneMQ users write them: CRLF line ends, Latin-1 comments, and the
//! errors that name the file.

use std::path::Path;

use vmq_auth::acl::{Access, Acl, LineError, LoadError, Who};

fn write(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("vmq.acl");
    std::fs::write(&path, bytes).expect("write the ACL file");
    path
}

#[test]
fn a_crlf_file_with_a_latin1_comment_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), b"# f\xfcr alle\r\ntopic read public/#\r\n\r\nuser john\r\ntopic john/#\r\n");
    let acl = Acl::load(&path).expect("the file loads");
    assert!(acl.warnings().is_empty(), "{:?}", acl.warnings());
    let john = Who { mountpoint: "", client_id: "c", username: Some("john") };
    assert!(acl.allows(&john, Access::Read, "public/news"));
    assert!(acl.allows(&john, Access::Write, "john/x"));
    assert!(!acl.allows(&john, Access::Write, "public/news"));
}

#[test]
fn a_skipped_topic_is_a_warning_naming_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = Acl::load(&write(dir.path(), b"topic a\ntopic a/#/b\n")).expect("the file loads");
    assert_eq!(acl.warnings().len(), 1);
    assert_eq!(acl.warnings()[0].0, 2);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.acl");
    let error = Acl::load(&path).map(|_| ()).expect_err("no file");
    assert!(matches!(error, LoadError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.acl"), "{error}");
}

#[test]
fn a_bad_line_is_an_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), b"topic a\n\n  topic b\n");
    match Acl::load(&path) {
        Err(LoadError::Parse { error, .. }) => {
            assert_eq!((error.line, error.reason), (3, LineError::LeadingWhitespace));
        }
        other => panic!("{other:?}"),
    }
    let message = Acl::load(&path).map(|_| ()).expect_err("a bad line").to_string();
    assert!(message.contains(&format!("{}:3: ", path.display())), "{message}");
}
