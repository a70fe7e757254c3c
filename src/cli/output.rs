//! Human output: aligned tables, relative times, and severity in colour on a terminal.

use std::io::IsTerminal;

use crate::clock::Timestamp;
use crate::incident::Severity;

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (no-color.org).
pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The severity, in colour when `on`: sev1 bold red, sev2 red, sev3 yellow, sev4 cyan.
pub fn severity(s: Severity, on: bool) -> String {
    if !on {
        return s.to_string();
    }
    let code = match s {
        Severity::Sev1 => "1;31",
        Severity::Sev2 => "31",
        Severity::Sev3 => "33",
        Severity::Sev4 => "36",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

/// The colour sequences [`severity`] writes: the only ones let through to the terminal.
pub const COLOURS: [&str; 5] = ["\x1b[1;31m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[0m"];

/// Characters a terminal shows: ANSI colour sequences take no room.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// A value shown on one line: its control characters, newlines included, escaped (incident
/// text is untrusted: a newline could forge a row).
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    crate::escape::escape_controls(s, false, false, &[])
}

/// Prints rows under headers with columns padded to their widest cell. Cells are shown on
/// one line with control characters escaped; the severity colours are kept.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| crate::escape::escape_controls(c, false, false, &COLOURS).into_owned())
                .collect()
        })
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| visible_len(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible_len(cell));
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
            l.push_str(c);
            l.extend(std::iter::repeat_n(' ', w.saturating_sub(visible_len(c))));
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
    fn coloured_cells_keep_the_columns_aligned() {
        let red = severity(Severity::Sev1, true);
        assert_eq!(red, "\x1b[1;31msev1\x1b[0m");
        assert_eq!(severity(Severity::Sev1, false), "sev1");
        let t = table(
            &["SEV", "TITLE"],
            &[
                vec![red.clone(), "disk".into()],
                vec!["sev3".into(), "x".into()],
            ],
        );
        assert_eq!(t, format!("SEV   TITLE\n{red}  disk\nsev3  x\n"));
    }

    #[test]
    fn relative_times() {
        let now = Timestamp(10_000_000);
        assert_eq!(ago(Timestamp(10_000_000 - 5_000), now), "5s ago");
        assert_eq!(ago(Timestamp(10_000_000 - 720_000), now), "12m ago");
        assert_eq!(ago(Timestamp(10_000_000 + 5_000), now), "in 5s");
    }
}
