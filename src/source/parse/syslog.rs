//! Syslog lines: RFC 3164 (`<pri>Mmm dd hh:mm:ss host program[pid]: text`, the year supplied
//! by the caller) and RFC 5424 (`<pri>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`). The
//! message is the text after `program[pid]: `; program and pid become fields; the level comes
//! from the priority's severity.

use super::{set, set_field, split_space};
use crate::clock::Timestamp;
use crate::event::{Event, Level};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses one syslog line (RFC 3164, or RFC 5424 with `<pri>1 `). The message is the text after
/// `program[pid]: `; program and pid become fields, the host is the event's host.
pub fn parse_syslog(line: &str, year: i32, default_host: &str) -> Option<Event> {
    let mut ev = Event::log(String::new(), Timestamp(0), default_host);
    parse_syslog_into(&mut ev, line, year, default_host).then_some(ev)
}

/// Like [`parse_syslog`], overwriting `ev` in place so a replay reuses its buffers instead of
/// allocating per line. Returns false (leaving `ev` unspecified) for a line that is not syslog.
pub fn parse_syslog_into(ev: &mut Event, line: &str, year: i32, default_host: &str) -> bool {
    parse_into(ev, line, year, default_host).is_some()
}

fn parse_into(ev: &mut Event, line: &str, year: i32, default_host: &str) -> Option<()> {
    let (level, rest) = match line.strip_prefix('<') {
        Some(r) => {
            let (pri, after) = r.split_once('>')?;
            let pri: u8 = pri.parse().ok()?;
            (Some(level_of(pri & 7)), after)
        }
        None => (None, line),
    };
    if let Some(r5424) = rest.strip_prefix("1 ") {
        *ev = parse_5424(r5424, level, default_host)?;
        return Some(());
    }
    // "Nov 23 10:00:00 host program[pid]: text"; the day may be space-padded.
    let month = MONTHS.iter().position(|m| rest.get(..3) == Some(*m))? as u8 + 1;
    let rest = rest.get(3..)?.trim_start();
    let (day, rest) = split_space(rest)?;
    let (clock, rest) = split_space(rest)?;
    let (h, m, s) = match clock.as_bytes() {
        // The usual `hh:mm:ss`, read byte by byte.
        &[h1, h2, b':', m1, m2, b':', s1, s2]
            if [h1, h2, m1, m2, s1, s2].iter().all(u8::is_ascii_digit) =>
        {
            let two = |a: u8, b: u8| (a - b'0') * 10 + (b - b'0');
            (two(h1, h2), two(m1, m2), two(s1, s2))
        }
        _ => {
            let mut hms = clock.split(':').map(|p| p.parse::<u8>().ok());
            (hms.next()??, hms.next()??, hms.next()??)
        }
    };
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day.parse().ok()?)
            .ok()?;
    let ts = date.with_hms(h, m, s).ok()?.assume_utc();
    let (host, rest) = split_space(rest)?;
    ev.ts = Timestamp((ts.unix_timestamp_nanos() / 1_000_000) as i64);
    ev.level = level.unwrap_or(Level::Info);
    set(
        &mut ev.host,
        if host.is_empty() { default_host } else { host },
    );
    let (tag, message) = match split_tag(rest) {
        Some((tag, msg)) => (Some(tag), msg),
        None => (None, rest),
    };
    let (program, pid) = match tag.map(|t| match memchr::memchr(b'[', t.as_bytes()) {
        Some(i) => (&t[..i], t[i + 1..].strip_suffix(']')),
        None => (t, None),
    }) {
        Some((p, pid)) => (Some(p), pid.and_then(|p| p.parse::<u64>().ok())),
        None => (None, None),
    };
    match program {
        Some(p) => set_field(&mut ev.fields, "program", p),
        None => {
            ev.fields.remove("program");
        }
    }
    match pid {
        Some(n) => match ev.fields.get_mut("pid") {
            Some(v) => *v = n.into(),
            None => {
                ev.fields.insert("pid".into(), n.into());
            }
        },
        None => {
            ev.fields.remove("pid");
        }
    }
    set(ev.message.get_or_insert_with(String::new), message);
    Some(())
}

/// `program[pid]: message` → (`program[pid]`, `message`): the text before the first `": "`,
/// when it has no space. Byte-wise: the first space or `": "` decides.
fn split_tag(rest: &str) -> Option<(&str, &str)> {
    let b = rest.as_bytes();
    let mut from = 0;
    loop {
        let i = from + memchr::memchr2(b':', b' ', &b[from..])?;
        if b[i] == b' ' {
            return None;
        }
        if b.get(i + 1) == Some(&b' ') {
            // ':' and ' ' are ASCII, so these are character boundaries.
            return Some((&rest[..i], &rest[i + 2..]));
        }
        from = i + 1;
    }
}

fn parse_5424(rest: &str, level: Option<Level>, default_host: &str) -> Option<Event> {
    // TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG
    let mut parts = rest.splitn(6, ' ');
    let ts = Timestamp::parse_rfc3339(parts.next()?).ok()?;
    let host = parts.next().filter(|h| *h != "-").unwrap_or(default_host);
    let app = parts.next().filter(|a| *a != "-");
    let pid = parts.next().and_then(|p| p.parse::<u64>().ok());
    let _msgid = parts.next();
    let tail = parts.next().unwrap_or("");
    let message = if let Some(sd) = tail.strip_prefix('-') {
        sd.trim_start()
    } else if tail.starts_with('[') {
        // Skip structured data: balanced [..] groups.
        let mut depth = 0;
        let mut end = tail.len();
        for (i, c) in tail.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 && !tail[i + 1..].starts_with('[') {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        tail[end..].trim_start()
    } else {
        tail
    };
    let mut ev = Event::log(message.trim_start_matches('\u{feff}').to_owned(), ts, host);
    if let Some(a) = app {
        ev.fields.insert("program".into(), a.into());
    }
    if let Some(p) = pid {
        ev.fields.insert("pid".into(), p.into());
    }
    if let Some(l) = level {
        ev.level = l;
    }
    Some(ev)
}

pub fn level_of(severity: u8) -> Level {
    match severity {
        0..=2 => Level::Critical,
        3 => Level::Error,
        4 => Level::Warning,
        5 => Level::Notice,
        6 => Level::Info,
        _ => Level::Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3164_lines() {
        let e = parse_syslog(
            "Nov  3 10:00:07 web-1 sshd[4242]: Failed password for root from 1.2.3.4 port 22 ssh2",
            2026,
            "h",
        )
        .unwrap();
        assert_eq!(e.ts.to_rfc3339(), "2026-11-03T10:00:07.000Z");
        assert_eq!(e.host, "web-1");
        assert_eq!(e.fields["program"], "sshd");
        assert_eq!(e.fields["pid"], 4242);
        assert_eq!(
            e.message.as_deref(),
            Some("Failed password for root from 1.2.3.4 port 22 ssh2")
        );
        let p = parse_syslog(
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            2025,
            "h",
        )
        .unwrap();
        assert_eq!(p.level, Level::Critical);
        assert_eq!(p.fields["program"], "su");
        assert!(parse_syslog("not a syslog line", 2026, "h").is_none());
        assert!(parse_syslog("Foo 12 10:00:00 h x: y", 2026, "h").is_none());
        // Clocks: the usual form, a short one, and ones out of range or not digits.
        let ts = |clock: &str| {
            parse_syslog(&format!("Nov  3 {clock} h x: y"), 2026, "h").map(|e| e.ts.to_rfc3339())
        };
        assert_eq!(ts("23:59:59").as_deref(), Some("2026-11-03T23:59:59.000Z"));
        assert_eq!(ts("9:05:7").as_deref(), Some("2026-11-03T09:05:07.000Z"));
        for bad in ["24:00:00", "10:60:00", "10:00:0x", "10-00-00", "10:00"] {
            assert_eq!(ts(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_tag_is_the_text_before_the_first_colon_space_without_spaces() {
        assert_eq!(split_tag("sshd[1]: a: b"), Some(("sshd[1]", "a: b")));
        assert_eq!(split_tag("a:b:c: d"), Some(("a:b:c", "d")));
        assert_eq!(split_tag("kernel: "), Some(("kernel", "")));
        assert_eq!(split_tag("no tag: here"), None);
        assert_eq!(split_tag("ends with colon:"), None);
        assert_eq!(split_tag("x:"), None);
        assert_eq!(split_tag(""), None);
        for s in [
            "sshd[1]: a: b",
            "a:b:c: d",
            "no tag: here",
            "x:",
            "é: ü",
            "é ü: x",
        ] {
            let old = match s.split_once(": ") {
                Some((tag, msg)) if !tag.contains(' ') => Some((tag, msg)),
                _ => None,
            };
            assert_eq!(split_tag(s), old, "{s}");
        }
        let e = parse_syslog("Nov  3 10:00:07 h cron[12: odd", 2026, "h").unwrap();
        assert_eq!(e.fields["program"], "cron");
        assert!(e.fields.get("pid").is_none());
    }

    #[test]
    fn rfc5424_lines() {
        let e = parse_syslog(
            r#"<165>1 2026-11-23T10:00:00.003Z host1 evntslog 77 ID47 [exampleSDID@32473 iut="3"] An application event"#,
            2026,
            "h",
        )
        .unwrap();
        assert_eq!(e.message.as_deref(), Some("An application event"));
        assert_eq!(e.host, "host1");
        assert_eq!(e.level, Level::Notice);
        assert_eq!(e.fields["pid"], 77);
        let dash = parse_syslog("<13>1 2026-11-23T10:00:00Z h app - - - hello", 2026, "x").unwrap();
        assert_eq!(dash.message.as_deref(), Some("hello"));
    }
}
