//! Action templates rendered by context. A value from an incident — a label captured from a
//! log line, a service name, an alert's text — is untrusted, so where it lands decides what it
//! may be and how it is written:
//!
//! | where | rule |
//! | --- | --- |
//! | an argv element on its own (`"{{ labels.file }}"`) | may not begin with `-` (it would be an option), unless the action says `allow_options = true` |
//! | an argv element with a `/` in it (`"/srv/cache/{{ labels.v }}"`) | a path component: no `/`, no NUL, not `.` or `..` |
//! | a systemd unit | neither of those, nor a `/` |
//! | the path of a URL | percent-encoded as one path segment (`/`, `?`, `#` included) |
//! | the query of a URL | percent-encoded as a query value |
//! | an HTTP body template | JSON-encoded (`{"service": {{ incident.service }}}` gets a quoted, escaped string) |
//! | a shell script (`shell = true`) | single-quoted for the shell |
//! | an environment value, a header, a process name | as is (headers without control characters) |
//!
//! And everywhere: a value that is missing or null refuses the run with "`X` is not set",
//! instead of rendering `None` or an empty string. Dry runs go through the same code, so they
//! show the same refusals.

use minijinja::value::Value;

/// Where a rendered value lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// An argv element that is one value on its own.
    Arg { allow_options: bool },
    /// A component of a path.
    PathPart,
    /// A systemd unit name.
    Unit,
    /// A segment of a URL's path.
    UrlPath,
    /// A value in a URL's query.
    UrlQuery,
    /// A value inside a JSON document.
    Json,
    /// A value inside a shell script.
    Shell,
    /// Anything else: written as it is.
    Plain,
}

/// The field of argv element `text` (see the table above).
pub fn arg_field(text: &str, allow_options: bool) -> Field {
    let outside: String = outside_placeholders(text);
    if outside.contains('/') {
        Field::PathPart
    } else if outside.trim().is_empty() {
        Field::Arg { allow_options }
    } else {
        Field::Plain
    }
}

/// `text` without its `{{ … }}` placeholders and `{% … %}` statements.
fn outside_placeholders(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let next = [("{{", "}}"), ("{%", "%}")]
            .into_iter()
            .filter_map(|(open, close)| rest.find(open).map(|at| (at, close)))
            .min_by_key(|(at, _)| *at);
        let Some((start, close)) = next else { break };
        out.push_str(&rest[..start]);
        match rest[start..].find(close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The expressions of `text`'s `{{ … }}` placeholders (filters included).
fn expressions(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        out.push(rest[start + 2..start + end].trim());
        rest = &rest[start + end + 2..];
    }
    out
}

/// Renders `text` for `field`; `what` names it in errors.
pub fn render(text: &str, ctx: &Value, what: &str, field: Field) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_owned());
    }
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A missing or null value refuses the run, naming it.
    for expr in expressions(text) {
        let compiled = env
            .compile_expression(expr)
            .map_err(|e| format!("template of {what} (`{text}`): {e}"))?;
        match compiled.eval(ctx) {
            Ok(v) if !v.is_undefined() && !v.is_none() => {}
            _ => return Err(format!("{expr} is not set (needed by {what})")),
        }
    }
    env.set_formatter(move |out, _state, value| {
        let written = place(value, field)
            .map_err(|why| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, why))?;
        out.write_str(&written)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    });
    let rendered = env.render_str(text, ctx).map_err(|e| match e.detail() {
        Some(why) if e.kind() == minijinja::ErrorKind::InvalidOperation => {
            format!("{what}: {why}")
        }
        _ => format!("template of {what} (`{text}`) failed: {e}"),
    })?;
    // Defence in depth: whatever the values, a path holds no more `..` than the template
    // wrote itself.
    if field == Field::PathPart {
        let climbs = |p: &str| p.split('/').filter(|c| *c == "..").count();
        if climbs(&rendered) > climbs(&outside_placeholders(text)) {
            return Err(format!("{what}: `{rendered}` climbs out of its folder"));
        }
    }
    Ok(rendered)
}

/// One value, written for where it lands.
fn place(value: &Value, field: Field) -> Result<String, String> {
    if field == Field::Json {
        return serde_json::to_string(value).map_err(|e| e.to_string());
    }
    let s = match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    };
    match field {
        // Written above.
        Field::Json => Ok(s),
        Field::Arg { allow_options } => {
            if !allow_options && s.starts_with('-') {
                return Err(format!(
                    "`{s}` would be read as an option (a value alone in an argument may not begin with '-'; allow_options = true permits it)"
                ));
            }
            if s.contains('\0') {
                return Err("a value holds a NUL byte".into());
            }
            Ok(s)
        }
        Field::PathPart | Field::Unit => {
            if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
                return Err(format!(
                    "`{s}` may not stand in a path: a value there may not be empty, `.` or `..`, nor hold '/' or NUL"
                ));
            }
            // systemctl reads `*`, `?` and `[` as patterns over every unit.
            if field == Field::Unit
                && (s.starts_with('-')
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ":_.@-\\".contains(c)))
            {
                return Err(format!(
                    "`{s}` is not a unit name (letters, digits and : _ . @ - \\ only)"
                ));
            }
            Ok(s)
        }
        // Everything but RFC 3986's unreserved characters is encoded, which is right for a
        // path segment and for a query value alike.
        Field::UrlPath | Field::UrlQuery => Ok(percent_encode(&s)),
        Field::Shell => Ok(format!("'{}'", s.replace('\'', r"'\''"))),
        Field::Plain => Ok(s),
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Renders a URL template: values before the first `?` as path segments, after it as query
/// values.
pub fn render_url(text: &str, ctx: &Value) -> Result<String, String> {
    // The first '?' outside a placeholder.
    let outside = outside_placeholders(text);
    match outside.find('?') {
        None => render(text, ctx, "url", Field::UrlPath),
        Some(_) => {
            let mut depth = 0usize;
            let bytes = text.as_bytes();
            let mut split = None;
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"{{") {
                    depth += 1;
                    i += 2;
                    continue;
                }
                if bytes[i..].starts_with(b"}}") && depth > 0 {
                    depth -= 1;
                    i += 2;
                    continue;
                }
                if bytes[i] == b'?' && depth == 0 {
                    split = Some(i);
                    break;
                }
                i += 1;
            }
            let at = split.unwrap_or(text.len());
            let path = render(&text[..at], ctx, "url", Field::UrlPath)?;
            let query = render(&text[at..], ctx, "url", Field::UrlQuery)?;
            Ok(path + &query)
        }
    }
}

/// Renders a body given as a TOML table: every string in it is a template whose values are
/// written as they are (the document is then serialized as JSON, which escapes them).
pub fn render_table(
    table: &serde_json::Map<String, serde_json::Value>,
    ctx: &Value,
) -> Result<String, String> {
    fn walk(v: &serde_json::Value, ctx: &Value, at: &str) -> Result<serde_json::Value, String> {
        Ok(match v {
            serde_json::Value::String(s) => {
                serde_json::Value::String(render(s, ctx, &format!("body.{at}"), Field::Plain)?)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| walk(x, ctx, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), walk(x, ctx, &format!("{at}.{k}"))?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
    let doc = walk(&serde_json::Value::Object(table.clone()), ctx, "")?;
    serde_json::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        minijinja::context! {
            incident => minijinja::context! { id => 7, service => Value::from(()) , title => "disk full" },
            labels => minijinja::context! {
                v => "../victim",
                opt => "--version",
                svc => "api\", \"by\": 1000, \"x\": \"",
                path => "../../etc/passwd?x=1#",
                ok => "cache-1",
            },
        }
    }

    #[test]
    fn each_context_refuses_or_escapes_what_does_not_belong() {
        let c = ctx();
        let arg = |t: &str| render(t, &c, "command[1]", arg_field(t, false));
        // A path component may not climb.
        let e = arg("/srv/cache/{{ labels.v }}").unwrap_err();
        assert!(e.contains("may not stand in a path"), "{e}");
        assert_eq!(
            arg("/srv/cache/{{ labels.ok }}").unwrap(),
            "/srv/cache/cache-1"
        );
        // An option-looking value alone in an argument.
        let e = arg("{{ labels.opt }}").unwrap_err();
        assert!(e.contains("read as an option"), "{e}");
        assert_eq!(
            render(
                "{{ labels.opt }}",
                &c,
                "x",
                arg_field("{{ labels.opt }}", true)
            )
            .unwrap(),
            "--version"
        );
        // Inside a larger argument it is data.
        assert_eq!(arg("--name={{ labels.opt }}").unwrap(), "--name=--version");
        // Missing and null values refuse the run, by name.
        let e = render("{{ incident.service }}.service", &c, "unit", Field::Unit).unwrap_err();
        assert_eq!(e, "incident.service is not set (needed by unit)");
        let e = arg("{{ labels.nope }}").unwrap_err();
        assert!(e.contains("labels.nope is not set"), "{e}");
        // URLs: one path segment, a query value.
        assert_eq!(
            render_url("http://h/v1/{{ labels.path }}?q={{ labels.path }}", &c).unwrap(),
            "http://h/v1/..%2F..%2Fetc%2Fpasswd%3Fx%3D1%23?q=..%2F..%2Fetc%2Fpasswd%3Fx%3D1%23"
        );
        // JSON bodies: values are JSON, never spliced text.
        let body = render(
            r#"{"service": {{ labels.svc }}, "by": 1, "incident": {{ incident.id }}}"#,
            &c,
            "body",
            Field::Json,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["by"], 1);
        assert_eq!(v["service"], "api\", \"by\": 1000, \"x\": \"");
        // A table body.
        let table: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"service": "{{ labels.svc }}", "by": 1}"#).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&render_table(&table, &c).unwrap()).unwrap();
        assert_eq!(v["by"], 1);
        assert_eq!(v["service"], "api\", \"by\": 1000, \"x\": \"");
        // Shell scripts get quoted values.
        assert_eq!(
            render("echo {{ labels.svc }}", &c, "command", Field::Shell).unwrap(),
            r#"echo 'api", "by": 1000, "x": "'"#
        );
        // A statement around a value does not turn the checks off.
        let e = arg("{% if 1 %}{{ labels.opt }}{% endif %}").unwrap_err();
        assert!(e.contains("read as an option"), "{e}");
        // A unit name is a unit name, not a pattern.
        let star = minijinja::context! { labels => minijinja::context! { s => "*" } };
        let e = render("{{ labels.s }}.service", &star, "unit", Field::Unit).unwrap_err();
        assert!(e.contains("not a unit name"), "{e}");
        // Non-ASCII before the query.
        assert_eq!(
            render_url("http://h/café?x={{ labels.ok }}", &c).unwrap(),
            "http://h/café?x=cache-1"
        );
        // Text without placeholders is left alone.
        assert_eq!(arg("-rf").unwrap(), "-rf");
    }
}
