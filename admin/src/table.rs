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

    /// `listener show`: VerneMQ's columns; counts the node does not keep (null) are empty.
    #[test]
    fn renders_listener_show_table() {
        let row = |kind: &str,
                   status: &str,
                   address: &str,
                   port: &str,
                   mountpoint: &str,
                   max: Value,
                   active: Value,
                   all: Value| {
            json!({"type": kind, "status": status, "address": address, "port": port, "mountpoint": mountpoint,
                   "max_conns": max, "active_conns": active, "all_conns": all})
        };
        let rows = vec![
            row("vmq", "running", "0.0.0.0", "44053", "", json!("infinity"), json!(2), Value::Null),
            row("mqtt", "running", "127.0.0.1", "1883", "", json!(10000), json!(12), json!(340)),
            row("mqttws", "stopped", "::1", "8080", "/ws", json!("infinity"), json!(0), json!(7)),
            row("mqtt", "running", "local:/run/vernemq/mqtt.sock", "0", "", json!(10000), json!(1), json!(1)),
            row("http", "running", "127.0.0.1", "8888", "", json!("infinity"), Value::Null, Value::Null),
        ];
        let want = "\
+--------+---------+------------------------------+-------+------------+-----------+--------------+-----------+
| type   | status  | address                      | port  | mountpoint | max_conns | active_conns | all_conns |
+--------+---------+------------------------------+-------+------------+-----------+--------------+-----------+
| vmq    | running | 0.0.0.0                      | 44053 |            | infinity  | 2            |           |
| mqtt   | running | 127.0.0.1                    | 1883  |            | 10000     | 12           | 340       |
| mqttws | stopped | ::1                          | 8080  | /ws        | infinity  | 0            | 7         |
| mqtt   | running | local:/run/vernemq/mqtt.sock | 0     |            | 10000     | 1            | 1         |
| http   | running | 127.0.0.1                    | 8888  |            | infinity  |              |           |
+--------+---------+------------------------------+-------+------------+-----------+--------------+-----------+
";
        assert_eq!(render(&rows), want);
    }
}
