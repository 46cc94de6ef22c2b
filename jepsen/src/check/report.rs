//! The summary printed at the end of a run (and by `vmq-jepsen check`).

use std::fmt::Write;

use super::Report;
use super::known::Comparison;

/// ANSI red/green when `color`.
fn paint(text: &str, ok: bool, color: bool) -> String {
    if color { format!("\x1b[{}m{text}\x1b[0m", if ok { "32" } else { "31;1" }) } else { text.to_owned() }
}

/// The summary table: parameters, stats, violations, allowed anomalies, verdict.
pub fn summary(r: &Report, known: Option<&Comparison>, color: bool) -> String {
    let mut s = String::new();
    let i = &r.info;
    let settings: Vec<String> = i.netsplit_settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        s,
        "workload {} | nemesis {} | backend {} | {} nodes | {} s of faults | seed {}",
        i.workload, i.nemesis, i.backend, i.nodes, i.time_s, i.seed
    );
    let _ = writeln!(s, "settings: {}", if settings.is_empty() { "defaults".into() } else { settings.join(", ") });
    let width = r.stats.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &r.stats {
        let _ = writeln!(s, "  {k:<width$}  {v}");
    }
    let _ = writeln!(s, "\n| result | kind | count | meaning |\n|---|---|---|---|");
    for f in &r.violations {
        let _ = writeln!(s, "| {} | {} | {} | {} |", paint("VIOLATION", false, color), f.kind, f.count, f.meaning);
    }
    for f in &r.allowed {
        let _ = writeln!(s, "| allowed | {} | {} | {} |", f.kind, f.count, f.meaning);
    }
    if r.violations.is_empty() && r.allowed.is_empty() {
        let _ = writeln!(s, "| {} | - | 0 | no anomaly found |", paint("ok", true, color));
    }
    for f in r.violations.iter().chain(&r.allowed) {
        for e in &f.examples {
            let _ = writeln!(s, "  {}: {e}", f.kind);
        }
    }
    let verdict = if r.ok() {
        paint("GREEN: no violation", true, color)
    } else {
        let kinds: Vec<&str> = r.violations.iter().map(|f| f.kind.as_str()).collect();
        paint(&format!("RED: {}", kinds.join(", ")), false, color)
    };
    let _ = writeln!(s, "\nverdict: {verdict}");
    if let Some(c) = known {
        for k in &c.known {
            let _ = writeln!(s, "  listed: {k}");
        }
        for k in &c.unexpected {
            let _ = writeln!(s, "  {}", paint(&format!("NOT LISTED (new violation): {k}"), false, color));
        }
        for k in &c.missing {
            let _ = writeln!(
                s,
                "  {}",
                paint(&format!("listed but did not occur (fixed? update the list): {k}"), false, color)
            );
        }
        let line =
            if c.ok() { "matches the known-violations list" } else { "does NOT match the known-violations list" };
        let _ = writeln!(s, "known violations: {}", paint(line, c.ok(), color));
    }
    s
}
