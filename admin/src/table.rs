//! VerneMQ's table output (`vmq-admin ... show`): ASCII borders, one space of padding.
//!
//! ```text
//! +------------------+---------+
//! | Node             | Running |
//! +------------------+---------+
//! | VerneMQ@10.0.0.1 | true    |
//! +------------------+---------+
//! ```

use serde_json::Value;

/// Renders rows (JSON objects with the same keys, in column order) as a table. An empty list
/// renders as an empty string.
pub fn render(rows: &[Value]) -> String {
    let Some(first) = rows.first().and_then(Value::as_object) else { return String::new() };
    let headers: Vec<&str> = first.keys().map(String::as_str).collect();
    let cells: Vec<Vec<String>> =
        rows.iter().map(|r| headers.iter().map(|h| r.get(*h).map(cell).unwrap_or_default()).collect()).collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| cells.iter().map(|r| r[i].chars().count()).chain([h.chars().count()]).max().unwrap_or(0))
        .collect();
    let border: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let line = |values: Vec<&str>| -> String {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("| {v}{} ", " ".repeat(w - v.chars().count())))
            .collect::<String>()
            + "|\n"
    };
    let mut out = border.clone();
    out += &line(headers.clone());
    out += &border;
    for r in &cells {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out += &border;
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_vernemq_cluster_show_table() {
        let rows = vec![json!({"Node": "VerneMQ@10.0.0.1", "Running": true}), json!({"Node": "b@h", "Running": false})];
        let want = "\
+------------------+---------+
| Node             | Running |
+------------------+---------+
| VerneMQ@10.0.0.1 | true    |
| b@h              | false   |
+------------------+---------+
";
        assert_eq!(render(&rows), want);
        assert_eq!(render(&[]), "");
    }
}
