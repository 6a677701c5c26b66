//! Nomad's output layout: `|`-separated rows aligned into columns
//! (columnize) and `Key = Value` blocks.

/// Aligns `|`-separated rows into columns joined by two spaces.
pub fn list(rows: &[String]) -> String {
    let cells: Vec<Vec<&str>> = rows.iter().map(|r| r.split('|').map(str::trim).collect()).collect();
    let cols = cells.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &cells {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end_matches('\n').to_string()
}

/// Formats `Key|Value` rows as `Key = Value` with aligned `=`.
pub fn kv(rows: &[String]) -> String {
    let pairs: Vec<(&str, &str)> = rows.iter().map(|r| r.split_once('|').unwrap_or((r.as_str(), ""))).collect();
    let w = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:<w$} = {v}").trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_kv() {
        let t = list(&["ID|Type|Status".into(), "example|service|running".into()]);
        assert_eq!(t, "ID       Type     Status\nexample  service  running");
        let k = kv(&["ID|example".into(), "Submit Date|now".into()]);
        assert_eq!(k, "ID          = example\nSubmit Date = now");
    }
}
