//! Control characters in untrusted text — a user name from auth.log, an alert's summary, a
//! label — must not reach a terminal or a log line raw: an escape sequence could rewrite the
//! screen or the window title, a newline could forge a log line. [`escape_controls`] shows
//! them as visible escapes instead. A leaf module: the CLI and the log writer use it.

use std::borrow::Cow;

/// Escapes control characters in `s` (`\e`, `\n`, `\r`, `\t`, `\x07`, `\u{85}`, …).
/// `newlines` keeps `\n` and `\t` as they are (multi-line output); `sgr` keeps colour
/// sequences (`ESC [ digits/semicolons m`) that a formatter added itself; `allowed` are
/// further exact sequences to keep.
pub fn escape_controls<'a>(
    s: &'a str,
    newlines: bool,
    sgr: bool,
    allowed: &[&str],
) -> Cow<'a, str> {
    let needs = s
        .chars()
        .any(|c| c.is_control() && !(newlines && (c == '\n' || c == '\t')));
    if !needs {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b' {
            if let Some(a) = allowed.iter().find(|a| rest.starts_with(**a)) {
                out.push_str(a);
                rest = &rest[a.len()..];
                continue;
            }
            if sgr && let Some(n) = sgr_len(rest) {
                out.push_str(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
        }
        match c {
            '\n' | '\t' if newlines => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// The length of a colour sequence (`ESC [ [0-9;]* m`) at the start of `s`.
fn sgr_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() < 3 || b[0] != 0x1b || b[1] != b'[' {
        return None;
    }
    let end = b[2..]
        .iter()
        .position(|x| !(x.is_ascii_digit() || *x == b';'))?
        + 2;
    (b[end] == b'm').then_some(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert!(matches!(
            escape_controls("plain text", false, false, &[]),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("\x1b]0;pwned\x07\x1b[2J", false, false, &[]),
            "\\e]0;pwned\\x07\\e[2J"
        );
        assert_eq!(
            escape_controls("a\nb\tc\r", false, false, &[]),
            "a\\nb\\tc\\r"
        );
        assert_eq!(escape_controls("a\nb\tc\r", true, false, &[]), "a\nb\tc\\r");
        assert_eq!(
            escape_controls("x\u{85}y\u{7f}", false, false, &[]),
            "x\\u{85}y\\x7f"
        );
        // Colour kept only where asked, and only colour.
        assert_eq!(
            escape_controls("\x1b[1;31msev1\x1b[0m \x1b[2J", false, true, &[]),
            "\x1b[1;31msev1\x1b[0m \\e[2J"
        );
        assert_eq!(
            escape_controls(
                "\x1b[H\x1b[2Jtitle\x1b]0;x\x07",
                true,
                false,
                &["\x1b[H", "\x1b[2J"]
            ),
            "\x1b[H\x1b[2Jtitle\\e]0;x\\x07"
        );
    }
}
