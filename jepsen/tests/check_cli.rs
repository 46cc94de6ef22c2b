//! `vmq-jepsen check` on saved histories, through the binary as a user runs it: the exit status,
//! the summary, the timeline and the comparison with a known-violations list. Needs no root and
//! no cluster: the histories are synthetic, with anomalies placed on purpose.

use std::path::Path;
use std::process::{Command, Output};

const RUN: &str = r#"{"t":0,"type":"run","workload":"queue","nemesis":"partition,kill","backend":"vmq_swc","nodes":3,"seed":1,"time_s":10,"netsplit_settings":{},"register_bound_s":10}"#;

/// A queue history: subscriber `s` (QoS 1) subscribed, publishes #1 and #2 acknowledged, only
/// #2 delivered when `lose` (else both).
fn queue_history(lose: bool) -> String {
    let mut lines = vec![
        RUN,
        r#"{"t":1,"type":"subscribed","client":"s","node":1,"topic":"jq/1/#","qos":1}"#,
        r#"{"t":5,"type":"publish","publisher":"p","epoch":1,"seq":1,"node":1,"qos":1}"#,
        r#"{"t":6,"type":"publish_ok","publisher":"p","seq":1}"#,
        r#"{"t":7,"type":"publish","publisher":"p","epoch":1,"seq":2,"node":1,"qos":1}"#,
        r#"{"t":8,"type":"publish_ok","publisher":"p","seq":2}"#,
    ];
    if !lose {
        lines.push(r#"{"t":9,"type":"deliver","subscriber":"s","publisher":"p","seq":1,"qos":1,"dup":false}"#);
    }
    lines.push(r#"{"t":10,"type":"deliver","subscriber":"s","publisher":"p","seq":2,"qos":1,"dup":false}"#);
    lines.join("\n") + "\n"
}

fn check(dir: &Path, history: &str, known: Option<&str>) -> Output {
    let path = dir.join("history.jsonl");
    std::fs::write(&path, history).expect("write history");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmq-jepsen"));
    cmd.arg("check").arg(&path).arg("--no-color");
    if let Some(list) = known {
        let list_path = dir.join("known.txt");
        std::fs::write(&list_path, list).expect("write list");
        cmd.arg("--known-violations").arg(&list_path);
    }
    cmd.output().expect("run vmq-jepsen check")
}

#[test]
fn a_lost_acknowledged_publish_makes_check_exit_1_and_name_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = check(dir.path(), &queue_history(true), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("| VIOLATION | lost-acked | 1 |"), "{stdout}");
    assert!(stdout.contains("p #1"), "{stdout}");
    assert!(stdout.contains("verdict: RED: lost-acked"), "{stdout}");
    let svg = std::fs::read_to_string(dir.path().join("timeline.svg")).expect("timeline written");
    assert!(svg.starts_with("<svg") && svg.contains("lost-acked (1)"), "{svg}");
    assert!(dir.path().join("summary.txt").exists());
}

#[test]
fn a_complete_history_is_green_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = check(dir.path(), &queue_history(false), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("verdict: GREEN"), "{stdout}");
}

#[test]
fn a_listed_violation_passes_and_a_listed_must_that_did_not_occur_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listed = "queue * partition,kill lost-acked may the data path fix\n";
    let out = check(dir.path(), &queue_history(true), Some(listed));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let must = "queue * * lost-acked must the data path fix\n";
    let out = check(dir.path(), &queue_history(false), Some(must));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("listed but did not occur"), "{stdout}");
}

#[test]
fn a_malformed_history_is_an_error_with_status_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = check(dir.path(), "{not json\n", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
