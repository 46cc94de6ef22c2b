//! The timeline picture: operations per second, faults and anomalies against time.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Report, fault_windows};
use crate::history::{Event, Record};

const W: f64 = 1200.0;
const LEFT: f64 = 210.0;
const RIGHT: f64 = 20.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn fault_color(f: &str) -> &'static str {
    match f {
        f if f.starts_with("partition") => "#e8a33d",
        "kill" => "#c0392b",
        "pause" => "#8e44ad",
        "slow" => "#2980b9",
        _ => "#7f8c8d",
    }
}

/// Renders the timeline of `records` with the findings of `report`.
pub fn timeline(records: &[Record], report: &Report) -> String {
    let end = report.duration_ms.max(1) as f64;
    let x = |t: u64| LEFT + (t as f64 / end) * (W - LEFT - RIGHT);
    // Operations per second: invocations and acknowledgements of each kind.
    let mut series: BTreeMap<&str, BTreeMap<u64, u32>> = BTreeMap::new();
    for r in records {
        let name = match &r.event {
            Event::Publish { .. } | Event::Op { .. } => "invoked",
            Event::PublishOk { .. } | Event::OpOk { .. } => "acknowledged",
            Event::Deliver { .. } => "delivered",
            Event::Connect { ok: true, .. } => "connected",
            Event::Connect { ok: false, .. } => "connect failed",
            _ => continue,
        };
        *series.entry(name).or_default().entry(r.t / 1000).or_default() += 1;
    }
    let rows = series.len() + 2 + report.violations.len() + report.allowed.len();
    let row_h = 46.0;
    let h = 60.0 + rows as f64 * row_h + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let i = &report.info;
    let verdict = if report.ok() { "GREEN" } else { "RED" };
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">vmq-jepsen test — workload {} | nemesis {} | {} | {} nodes | seed {} — {verdict}</text>"#,
        esc(&i.workload),
        esc(&i.nemesis),
        esc(&i.backend),
        i.nodes,
        i.seed
    );
    let mut y = 40.0;
    // Time axis.
    let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#333"/>"##, W - RIGHT);
    let step = ((end / 1000.0 / 12.0).ceil() as u64).max(1);
    let mut t = 0;
    while (t * 1000) as f64 <= end {
        let xx = x(t * 1000);
        let _ = writeln!(
            s,
            r##"<line x1="{xx}" y1="{}" x2="{xx}" y2="{}" stroke="#ccc"/><text x="{xx}" y="{}" text-anchor="middle">{t}s</text>"##,
            y,
            h - 25.0,
            y - 4.0
        );
        t += step;
    }
    y += 10.0;
    // Faults.
    let _ = writeln!(s, r#"<text x="10" y="{}">nemesis</text>"#, y + 20.0);
    for (start, stop, fault) in fault_windows(records) {
        let (x0, x1) = (x(start), x(stop).max(x(start) + 2.0));
        let _ = writeln!(
            s,
            r#"<rect x="{x0}" y="{}" width="{}" height="28" fill="{}" opacity="0.8"><title>{} {}-{} ms</title></rect>"#,
            y + 4.0,
            x1 - x0,
            fault_color(&fault),
            esc(&fault),
            start,
            stop
        );
        let label = fault.trim_start_matches("partition-");
        if x1 - x0 > 8.0 * label.len() as f64 * 0.75 {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" fill="white" font-size="11">{}</text>"#,
                x0 + 3.0,
                y + 22.0,
                esc(label)
            );
        }
    }
    for r in records {
        if let Event::Nemesis { fault, .. } = &r.event
            && fault == "heal"
        {
            let xx = x(r.t);
            let _ = writeln!(
                s,
                r##"<line x1="{xx}" y1="{}" x2="{xx}" y2="{}" stroke="#27ae60" stroke-width="3"><title>final heal</title></line>"##,
                y,
                y + 36.0
            );
        }
    }
    // Phases after the faults: quiet, settle.
    for r in records {
        if let Event::Phase { name } = &r.event
            && (name == "quiet" || name == "settle")
        {
            let xx = x(r.t);
            let _ = writeln!(
                s,
                r##"<line x1="{xx}" y1="{y}" x2="{xx}" y2="{}" stroke="#27ae60" stroke-dasharray="4 3"/><text x="{}" y="{}" fill="#27ae60" font-size="11">{name}</text>"##,
                h - 25.0,
                xx + 3.0,
                y + 46.0
            );
        }
    }
    y += row_h;
    // Operations per second.
    for (name, per_s) in &series {
        let max = per_s.values().copied().max().unwrap_or(1).max(1) as f64;
        let _ = writeln!(s, r#"<text x="10" y="{}">{name} /s (max {max})</text>"#, y + 20.0);
        let mut path = String::new();
        // Every second of the run, zeros included, so that a stall shows as a drop to zero.
        for sec in 0..=(report.duration_ms / 1000) {
            let n = per_s.get(&sec).copied().unwrap_or(0);
            let yy = y + 36.0 - (f64::from(n) / max) * 32.0;
            let _ = write!(path, "{}{:.1},{:.1} ", if path.is_empty() { "M" } else { "L" }, x(sec * 1000), yy);
        }
        let _ = writeln!(s, r##"<path d="{path}" fill="none" stroke="#34495e" stroke-width="1.2"/>"##);
        y += row_h;
    }
    // Findings: one tick per instance.
    for (f, color) in
        report.violations.iter().map(|f| (f, "#e30000")).chain(report.allowed.iter().map(|f| (f, "#f1c40f")))
    {
        let _ = writeln!(s, r#"<text x="10" y="{}" fill="{color}">{} ({})</text>"#, y + 20.0, esc(&f.kind), f.count);
        // One tick per pixel column: thousands of instances in a second draw the same line.
        let columns: std::collections::BTreeSet<i64> = f.times.iter().map(|&t| x(t).round() as i64).collect();
        for xx in columns {
            let _ = writeln!(s, r#"<line x1="{xx}" y1="{}" x2="{xx}" y2="{}" stroke="{color}"/>"#, y + 6.0, y + 34.0);
        }
        y += row_h;
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#555">bars: partition (orange), kill (red), pause (purple), slow (blue); green line: final heal, dashed: quiet and settle phases; red ticks: violations; yellow: allowed anomalies</text>"##,
        h - 8.0
    );
    s.push_str("</svg>\n");
    s
}
