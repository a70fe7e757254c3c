//! Human output: aligned tables and relative times.

use crate::clock::Timestamp;

/// Prints rows under headers with columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let w = widths.get(i).copied().unwrap_or(0);
            l.push_str(&format!("{c:<w$}"));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// "12m ago", "3h ago", "2d ago"; "in 5s" for times ahead.
pub fn ago(t: Timestamp, now: Timestamp) -> String {
    let secs = (now.millis() - t.millis()) / 1000;
    let (n, future) = if secs < 0 {
        (-secs, true)
    } else {
        (secs, false)
    };
    let text = match n {
        0..=59 => format!("{n}s"),
        60..=3599 => format!("{}m", n / 60),
        3600..=86_399 => format!("{}h", n / 3600),
        _ => format!("{}d", n / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "TITLE"],
            &[
                vec!["7".into(), "disk".into()],
                vec!["12".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID  TITLE\n7   disk\n12  x\n");
    }

    #[test]
    fn relative_times() {
        let now = Timestamp(10_000_000);
        assert_eq!(ago(Timestamp(10_000_000 - 5_000), now), "5s ago");
        assert_eq!(ago(Timestamp(10_000_000 - 720_000), now), "12m ago");
        assert_eq!(ago(Timestamp(10_000_000 + 5_000), now), "in 5s");
    }
}
