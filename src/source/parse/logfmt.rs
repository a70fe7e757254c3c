//! logfmt: `key=value key2="quoted \"value\"" flag` pairs separated by spaces.

use std::borrow::Cow;

/// The pairs of a logfmt line, in order; a bare key has the value `true`. `None` when the line
/// has no `key=value` pair at all or an unterminated quote.
pub fn pairs(line: &str) -> Option<Vec<(&str, Cow<'_, str>)>> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut any_value = false;
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &line[start..i];
        if i >= b.len() || b[i] != b'=' {
            if key.starts_with('"') {
                return None;
            }
            out.push((key, Cow::Borrowed("true")));
            continue;
        }
        i += 1; // '='
        any_value = true;
        if key.is_empty() {
            return None;
        }
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let vstart = i;
            let mut escaped = false;
            let mut owned: Option<String> = None;
            loop {
                if i >= b.len() {
                    return None;
                }
                match b[i] {
                    // An escape takes the next byte only when it is ASCII; before anything
                    // else the backslash stays as it is (and no character is split).
                    b'\\' if i + 1 < b.len() && b[i + 1].is_ascii() => {
                        let s = owned.get_or_insert_with(|| line[vstart..i].to_owned());
                        s.push(match b[i + 1] {
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            c => c as char,
                        });
                        escaped = true;
                        i += 2;
                        continue;
                    }
                    b'"' => break,
                    _ => {}
                }
                // Copy the whole character once escapes made the value owned.
                let ch_len = utf8_len(b[i]);
                if let Some(s) = owned.as_mut() {
                    s.push_str(&line[i..i + ch_len]);
                }
                i += ch_len;
            }
            let value = match owned {
                Some(s) if escaped => Cow::Owned(s),
                _ => Cow::Borrowed(&line[vstart..i]),
            };
            i += 1; // closing quote
            out.push((key, value));
        } else {
            let vstart = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push((key, Cow::Borrowed(&line[vstart..i])));
        }
    }
    any_value.then_some(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_quotes_and_flags() {
        let p = pairs(r#"a=1 b="two words" c="say \"hi\" é" debug d="#).unwrap();
        let got: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        assert_eq!(
            got,
            vec![
                ("a", "1"),
                ("b", "two words"),
                ("c", r#"say "hi" é"#),
                ("debug", "true"),
                ("d", "")
            ]
        );
        assert!(pairs("just some words").is_none());
        assert!(pairs(r#"a="unterminated"#).is_none());
        assert!(pairs("=x").is_none());
        // A backslash before a multi-byte character is kept, and nothing panics.
        let p = pairs(r#"a="x\é\"y" b=1"#).unwrap();
        assert_eq!(p[0].1, r#"x\é"y"#);
        assert_eq!(p[1].1, "1");
    }
}
