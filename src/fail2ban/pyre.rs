//! Python regular expressions as fail2ban writes them, made into patterns this engine runs.
//!
//! A small parser keeps the pattern's structure (groups, alternations, quantifiers, classes)
//! so that what Python has and the `regex` crate lacks can be rewritten where an equivalent
//! exists, and named where it does not:
//! - a conditional `(?(name)yes|no)` on an optional group (`(?P<name>…)?`) or on one branch
//!   of an alternation is expanded into the two cases it chooses between (exact);
//! - the tempered token `(?:(?!X).)*` ("any text without X") becomes `.*` (a superset: the
//!   engine has no look-ahead), and is reported as approximate;
//! - `\Z` becomes `\z`; a `{` that opens no repetition is escaped (Python reads it literally);
//! - other look-arounds, back-references, atomic groups and possessive quantifiers are
//!   refused with the reason.

/// A pattern that could not be made into one this engine runs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    /// `open` is what the group begins with: `(`, `(?:`, `(?P<name>`, `(?i:`.
    Group {
        open: String,
        name: Option<String>,
        body: Box<Node>,
    },
    Cond {
        name: String,
        yes: Box<Node>,
        no: Box<Node>,
    },
    Look {
        ahead: bool,
        negative: bool,
        body: Box<Node>,
    },
    Quant {
        node: Box<Node>,
        q: String,
    },
    Atom(String),
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    /// Groups open around the current position (deep nesting is refused, not recursed).
    depth: usize,
}

/// Groups nested deeper than this are refused (as the regex crate refuses them).
const MAX_DEPTH: usize = 200;

impl Parser<'_> {
    fn alt(&mut self) -> Result<Node, Refused> {
        let mut branches = vec![self.seq()?];
        while self.i < self.s.len() && self.s[self.i] == b'|' {
            self.i += 1;
            branches.push(self.seq()?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Seq(Vec::new()))
        } else {
            Node::Alt(branches)
        })
    }

    fn seq(&mut self) -> Result<Node, Refused> {
        let mut items = Vec::new();
        while self.i < self.s.len() && self.s[self.i] != b'|' && self.s[self.i] != b')' {
            let atom = self.atom()?;
            let atom = self.quantified(atom)?;
            items.push(atom);
        }
        Ok(Node::Seq(items))
    }

    fn quantified(&mut self, node: Node) -> Result<Node, Refused> {
        let start = self.i;
        match self.s.get(self.i) {
            Some(b'*' | b'+' | b'?') => self.i += 1,
            Some(b'{') => match repetition_len(&self.text[self.i..]) {
                Some(n) => {
                    // Python's `{,n}` is `{0,n}` here.
                    let q = &self.text[self.i..self.i + n];
                    self.i += n;
                    let q = q.replacen("{,", "{0,", 1);
                    let lazy = self.s.get(self.i) == Some(&b'?');
                    if lazy {
                        self.i += 1;
                    }
                    return Ok(Node::Quant {
                        node: Box::new(node),
                        q: if lazy { format!("{q}?") } else { q },
                    });
                }
                None => return Ok(node),
            },
            _ => return Ok(node),
        }
        match self.s.get(self.i) {
            Some(b'?') => self.i += 1,
            Some(b'+') => {
                return Err(Refused(
                    "a possessive quantifier (Python 3.11 only; no equivalent here)".into(),
                ));
            }
            _ => {}
        }
        Ok(Node::Quant {
            node: Box::new(node),
            q: self.text[start..self.i].to_owned(),
        })
    }

    fn atom(&mut self) -> Result<Node, Refused> {
        let c = self.s[self.i];
        match c {
            b'\\' => {
                let ch = self.text[self.i + 1..]
                    .chars()
                    .next()
                    .ok_or_else(|| Refused("the pattern ends with a lone backslash".into()))?;
                self.i += 1 + ch.len_utf8();
                if ch.is_ascii_digit() && ch != '0' {
                    return Err(Refused(format!(
                        "a back-reference (\\{ch}): this engine has none"
                    )));
                }
                Ok(Node::Atom(match ch {
                    'Z' => "\\z".to_owned(),
                    // Python escapes any punctuation to mean itself; here `\<` and `\>` are
                    // word boundaries, and only meta characters may be escaped.
                    c if c.is_ascii_punctuation() => regex::escape(&c.to_string()),
                    _ => format!("\\{ch}"),
                }))
            }
            b'[' => {
                let start = self.i;
                self.i += 1;
                if self.s.get(self.i) == Some(&b'^') {
                    self.i += 1;
                }
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                }
                while self.i < self.s.len() && self.s[self.i] != b']' {
                    if self.s[self.i] == b'\\' {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return Err(Refused("a character class is not closed".into()));
                }
                self.i += 1;
                // Python reads `[` inside a class as itself; this engine nests classes.
                let class = &self.text[start..self.i];
                let mut out = String::with_capacity(class.len() + 4);
                let mut chars = class[1..class.len() - 1].chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            out.push('\\');
                            out.extend(chars.next());
                        }
                        '[' => out.push_str("\\["),
                        c => out.push(c),
                    }
                }
                Ok(Node::Atom(format!("[{out}]")))
            }
            b'(' => self.group(),
            b'{' => {
                // Not a repetition (that would have been read as a quantifier): literal.
                self.i += 1;
                Ok(Node::Atom("\\{".into()))
            }
            b'}' => {
                self.i += 1;
                Ok(Node::Atom("\\}".into()))
            }
            _ => {
                let ch = self.text[self.i..].chars().next().unwrap_or(' ');
                self.i += ch.len_utf8();
                Ok(Node::Atom(ch.to_string()))
            }
        }
    }

    fn group(&mut self) -> Result<Node, Refused> {
        self.depth += 1;
        let g = self.group_inner();
        self.depth -= 1;
        g
    }

    fn group_inner(&mut self) -> Result<Node, Refused> {
        if self.depth > MAX_DEPTH {
            return Err(Refused(format!("groups nested deeper than {MAX_DEPTH}")));
        }
        let rest = &self.text[self.i..];
        let close = |p: &mut Self| -> Result<(), Refused> {
            if p.s.get(p.i) == Some(&b')') {
                p.i += 1;
                Ok(())
            } else {
                Err(Refused("a group is not closed".into()))
            }
        };
        if let Some(r) = rest.strip_prefix("(?(") {
            let end = r
                .find(')')
                .ok_or_else(|| Refused("a conditional group is not closed".into()))?;
            let name = r[..end].to_owned();
            self.i += 3 + end + 1;
            let yes = self.seq()?;
            let no = if self.s.get(self.i) == Some(&b'|') {
                self.i += 1;
                self.seq()?
            } else {
                Node::Seq(Vec::new())
            };
            close(self)?;
            return Ok(Node::Cond {
                name,
                yes: Box::new(yes),
                no: Box::new(no),
            });
        }
        for (prefix, ahead, negative) in [
            ("(?=", true, false),
            ("(?!", true, true),
            ("(?<=", false, false),
            ("(?<!", false, true),
        ] {
            if rest.starts_with(prefix) {
                self.i += prefix.len();
                let body = self.alt()?;
                close(self)?;
                return Ok(Node::Look {
                    ahead,
                    negative,
                    body: Box::new(body),
                });
            }
        }
        if rest.starts_with("(?P=") {
            return Err(Refused(
                "a back-reference ((?P=name)): this engine has none".into(),
            ));
        }
        if rest.starts_with("(?>") {
            return Err(Refused(
                "an atomic group ((?>…)): no equivalent here".into(),
            ));
        }
        if let Some(r) = rest.strip_prefix("(?#") {
            let end = r
                .find(')')
                .ok_or_else(|| Refused("a comment group is not closed".into()))?;
            self.i += 3 + end + 1;
            return Ok(Node::Seq(Vec::new()));
        }
        let (open, name) = if let Some(r) = rest.strip_prefix("(?P<") {
            let end = r
                .find('>')
                .ok_or_else(|| Refused("a group name is not closed".into()))?;
            (format!("(?P<{}>", &r[..end]), Some(r[..end].to_owned()))
        } else if rest.starts_with("(?:") {
            ("(?:".to_owned(), None)
        } else if let Some(r) = rest.strip_prefix("(?") {
            // Flags: `(?i)` alone, or `(?i:…)`.
            let end = r
                .find([')', ':'])
                .ok_or_else(|| Refused("a flag group is not closed".into()))?;
            let flags = &r[..end];
            if let Some(bad) = flags.chars().find(|c| !"imsxu-".contains(*c)) {
                return Err(Refused(format!("the flag `{bad}` has no equivalent here")));
            }
            let flags: String = flags.chars().filter(|c| *c != 'u').collect();
            if r.as_bytes()[end] == b')' {
                self.i += 2 + end + 1;
                return Ok(Node::Atom(if flags.is_empty() {
                    String::new()
                } else {
                    format!("(?{flags})")
                }));
            }
            (format!("(?{flags}:"), None)
        } else {
            ("(".to_owned(), None)
        };
        self.i += if open == "(" {
            1
        } else if open.starts_with("(?P<") {
            open.len()
        } else {
            rest.find(':').map_or(open.len(), |c| c + 1)
        };
        let body = self.alt()?;
        close(self)?;
        Ok(Node::Group {
            open,
            name,
            body: Box::new(body),
        })
    }
}

/// The length of a `{n}`, `{n,}`, `{,m}` or `{n,m}` repetition at the start of `s`.
fn repetition_len(s: &str) -> Option<usize> {
    let end = s.find('}')?;
    let inner = &s[1..end];
    let ok = !inner.is_empty()
        && inner.chars().all(|c| c.is_ascii_digit() || c == ',')
        && inner.matches(',').count() <= 1
        && inner != ",";
    ok.then_some(end + 1)
}

fn render(n: &Node, out: &mut String) {
    match n {
        Node::Seq(items) => items.iter().for_each(|i| render(i, out)),
        Node::Alt(branches) => {
            for (k, b) in branches.iter().enumerate() {
                if k > 0 {
                    out.push('|');
                }
                render(b, out);
            }
        }
        Node::Group { open, body, .. } => {
            out.push_str(open);
            render(body, out);
            out.push(')');
        }
        Node::Quant { node, q } => {
            render(node, out);
            out.push_str(q);
        }
        Node::Atom(a) => out.push_str(a),
        // Only reached for what `lower` leaves, which it refuses first.
        Node::Cond { .. } | Node::Look { .. } => {}
    }
}

/// What translating a pattern did beyond copying it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Notes(pub Vec<String>);

/// The pattern in this engine's syntax, with notes on what was rewritten.
pub fn translate(pattern: &str) -> Result<(String, Notes), Refused> {
    translate_excluding(pattern, None).map(|t| (t.pattern, t.notes))
}

/// What [`translate_excluding`] says of a pattern that only matches lines its `exclude`
/// group marks.
pub const NOT_A_FAILURE: &str = "not a failure";

/// A translated pattern, and the lines its excluded group marks (when it is one case).
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub pattern: String,
    pub notes: Notes,
    /// Matches the lines where the excluded group takes part: they are to be ignored.
    pub marked: Option<String>,
}

/// Like [`translate`], keeping only the cases where the group `exclude` takes no part (a
/// branch of an alternation holding it, or an optional group, goes); the cases where it does
/// are returned apart, as lines to ignore (Python tries alternatives in order, so "\S+ but
/// not the marked word" needs both). A pattern that cannot match without the group is
/// refused with [`NOT_A_FAILURE`].
pub fn translate_excluding(pattern: &str, exclude: Option<&str>) -> Result<Translation, Refused> {
    let mut p = Parser {
        s: pattern.as_bytes(),
        text: pattern,
        i: 0,
        depth: 0,
    };
    let tree = p.alt()?;
    if p.i < p.s.len() {
        return Err(Refused("an unbalanced `)`".into()));
    }
    let mut notes = Notes::default();
    let (tree, marked) = match exclude {
        Some(x) if contains_group(&tree, x) => {
            let without = decide(&tree, x, false)
                .filter(|t| !contains_group(t, x))
                .ok_or_else(|| Refused(NOT_A_FAILURE.into()))?;
            let with = decide(&tree, x, true).ok_or_else(|| Refused(NOT_A_FAILURE.into()))?;
            notes.0.push(
                "the lines marked as not failures (<F-NOFAIL>) are ignored rather than counted"
                    .into(),
            );
            (without, Some(finish(with, &mut Notes::default())?))
        }
        _ => (tree, None),
    };
    let pattern = finish(tree, &mut notes)?;
    let mut seen = std::collections::HashSet::new();
    notes.0.retain(|n| seen.insert(n.clone()));
    Ok(Translation {
        pattern,
        notes,
        marked,
    })
}

/// Expands the conditionals, rewrites the look-arounds, and renders.
fn finish(mut tree: Node, notes: &mut Notes) -> Result<String, Refused> {
    // Each conditional doubles the pattern into the two cases it chooses between.
    for _ in 0..8 {
        let Some(name) = first_cond(&tree) else { break };
        let missing = || {
            Refused(format!(
                "the conditional on `{name}` has no optional group `{name}` to depend on"
            ))
        };
        let present = decide(&tree, &name, true).ok_or_else(missing)?;
        let absent = decide(&tree, &name, false).ok_or_else(missing)?;
        let group = |body| Node::Group {
            open: "(?:".into(),
            name: None,
            body: Box::new(body),
        };
        tree = Node::Alt(vec![group(present), group(absent)]);
        notes.0.push(format!(
            "conditional (?({name})…) expanded into its two cases"
        ));
    }
    if first_cond(&tree).is_some() {
        return Err(Refused("too many conditional groups".into()));
    }
    let tree = lower_looks(tree, notes)?;
    let mut out = String::new();
    render(&tree, &mut out);
    Ok(out)
}

fn first_cond(n: &Node) -> Option<String> {
    match n {
        Node::Cond { name, .. } => Some(name.clone()),
        Node::Seq(v) | Node::Alt(v) => v.iter().find_map(first_cond),
        Node::Group { body, .. } | Node::Look { body, .. } => first_cond(body),
        Node::Quant { node, .. } => first_cond(node),
        Node::Atom(_) => None,
    }
}

/// The tree for one case of the conditionals on `name`: the group took part (`present`) or
/// did not. None when the group is neither optional nor one branch of an alternation.
fn decide(n: &Node, name: &str, present: bool) -> Option<Node> {
    let mut found = false;
    let out = choose(n, name, present, &mut found);
    found.then_some(out)
}

fn is_named(n: &Node, name: &str) -> bool {
    matches!(n, Node::Group { name: Some(g), .. } if g == name)
}

fn contains_group(n: &Node, name: &str) -> bool {
    is_named(n, name)
        || match n {
            Node::Seq(v) | Node::Alt(v) => v.iter().any(|x| contains_group(x, name)),
            Node::Group { body, .. } | Node::Look { body, .. } => contains_group(body, name),
            Node::Quant { node, .. } => contains_group(node, name),
            Node::Cond { yes, no, .. } => contains_group(yes, name) || contains_group(no, name),
            Node::Atom(_) => false,
        }
}

fn choose(n: &Node, name: &str, present: bool, found: &mut bool) -> Node {
    match n {
        Node::Cond { name: c, yes, no } if c == name => {
            if present {
                choose(yes, name, present, found)
            } else {
                choose(no, name, present, found)
            }
        }
        // `(?P<name>…)?`: required, or gone.
        Node::Quant { node, q } if is_named(node, name) && q.starts_with('?') => {
            *found = true;
            if present {
                (**node).clone()
            } else {
                Node::Seq(Vec::new())
            }
        }
        // One branch holds the group: that branch, or the others.
        Node::Alt(branches)
            if branches.iter().any(|b| contains_group(b, name))
                && !branches.iter().all(|b| contains_group(b, name)) =>
        {
            *found = true;
            let kept: Vec<Node> = branches
                .iter()
                .filter(|b| contains_group(b, name) == present)
                .map(|b| choose(b, name, present, found))
                .collect();
            if kept.len() == 1 {
                kept.into_iter().next().unwrap_or(Node::Seq(Vec::new()))
            } else {
                Node::Alt(kept)
            }
        }
        Node::Seq(v) => Node::Seq(v.iter().map(|x| choose(x, name, present, found)).collect()),
        Node::Alt(v) => Node::Alt(v.iter().map(|x| choose(x, name, present, found)).collect()),
        Node::Group {
            open,
            name: g,
            body,
        } => Node::Group {
            open: open.clone(),
            name: g.clone(),
            body: Box::new(choose(body, name, present, found)),
        },
        Node::Quant { node, q } => Node::Quant {
            node: Box::new(choose(node, name, present, found)),
            q: q.clone(),
        },
        other => other.clone(),
    }
}

/// The text a node matches when it is a plain literal (letters, digits, spaces and
/// escaped punctuation).
fn literal(n: &Node) -> Option<String> {
    let mut out = String::new();
    let items = match n {
        Node::Seq(v) => v.as_slice(),
        other => std::slice::from_ref(other),
    };
    for i in items {
        let Node::Atom(a) = i else { return None };
        let c = match a.strip_prefix('\\') {
            Some(e) if e.chars().count() == 1 && !e.chars().all(|c| c.is_ascii_alphanumeric()) => e,
            Some(_) => return None,
            None if a.chars().count() == 1 && !".^$*+?()[]{}|".contains(a.as_str()) => a,
            None => return None,
        };
        out.push_str(c);
    }
    (!out.is_empty()).then_some(out)
}

/// A regex for "any text (no newline) that does not contain `word`", for a word no proper
/// prefix of which ends it again (no border: " from " qualifies), so that a mismatch never
/// needs to look back: from the state "matched k characters", the word's first character
/// restarts at 1 and any other mismatch returns to 0. None for other words.
fn not_containing(word: &str, lazy: bool) -> Option<String> {
    let w: Vec<char> = word.chars().collect();
    let n = w.len();
    if n < 2 {
        return None;
    }
    // The word's first character must not reappear inside it (before its last character):
    // then no proper prefix can restart a match.
    if w[1..n - 1].contains(&w[0]) {
        return None;
    }
    let esc = |c: char| regex::escape(&c.to_string());
    let class_esc = |c: char| match c {
        '\\' | ']' | '[' | '^' | '-' | '&' | '~' => format!("\\{c}"),
        '\n' => "\\n".to_owned(),
        c => c.to_string(),
    };
    let x0 = w[0];
    // State k: the last k characters read are the word's first k. From state k (1..n-1) a
    // character equal to w[k] goes to k+1 (n: the word, refused), x0 goes to 1, any other
    // to 0.
    // Runs from state 1 back to state 1: w[1..k] then x0 (k = 1 is x0 right away); at
    // state n-1, x0 is the word's last character when they are equal: no run then.
    let mut loops = Vec::new();
    // Runs from state 1 to state 0: w[1..k] then neither w[k] nor x0.
    let mut exits = Vec::new();
    let mut prefix = String::new();
    for k in 1..n {
        if k < n - 1 || w[n - 1] != x0 {
            loops.push(format!("{prefix}{}", esc(x0)));
        }
        exits.push(format!(
            "{prefix}[^{}{}\\n]",
            class_esc(w[k]),
            class_esc(x0)
        ));
        prefix.push_str(&esc(w[k]));
    }
    // The text may end inside a partial match: x0 then w[1..k] for k < n-1.
    let mut tail = String::new();
    for k in (1..n - 1).rev() {
        tail = format!("(?:{}{tail})?", esc(w[k]));
    }
    let star = if lazy { "*?" } else { "*" };
    Some(format!(
        "(?:(?:[^{x0c}\\n]|{x0e}(?:{loops})*(?:{exits})){star}(?:{x0e}(?:{loops})*{tail})?)",
        x0c = class_esc(x0),
        x0e = esc(x0),
        loops = loops.join("|"),
        exits = exits.join("|"),
    ))
}

/// Rewrites the tempered token `(?:(?!X).)*` (exactly, for a literal X; else as `.*`, a
/// superset); refuses any other look-around.
fn lower_looks(n: Node, notes: &mut Notes) -> Result<Node, Refused> {
    Ok(match n {
        Node::Quant { node, q } => {
            if let Node::Group {
                body, name: None, ..
            } = &*node
                && let Node::Seq(items) = &**body
                && items.len() == 2
                && let Node::Look {
                    ahead: true,
                    negative: true,
                    body: word,
                } = &items[0]
                && items[1] == Node::Atom(".".into())
            {
                // A literal word: "text without it" is written out exactly.
                if let Some(w) = literal(word)
                    && let Some(exact) = not_containing(&w, q.ends_with('?'))
                {
                    notes.0.push(
                        "(?:(?!…).)* (text without a word) written out without look-ahead".into(),
                    );
                    return Ok(Node::Atom(exact));
                }
                notes.0.push(
                    "(?:(?!…).)* (text without a word) read as .* (this engine has no look-ahead; it matches a little more)".into(),
                );
                return Ok(Node::Quant {
                    node: Box::new(Node::Atom(".".into())),
                    q,
                });
            }
            Node::Quant {
                node: Box::new(lower_looks(*node, notes)?),
                q,
            }
        }
        Node::Look {
            ahead, negative, ..
        } => {
            return Err(Refused(format!(
                "a {}{} ((?{}{}…)): this engine has no look-around",
                if negative { "negative " } else { "" },
                if ahead { "look-ahead" } else { "look-behind" },
                if ahead { "" } else { "<" },
                if negative { "!" } else { "=" },
            )));
        }
        Node::Seq(v) => Node::Seq(
            v.into_iter()
                .map(|x| lower_looks(x, notes))
                .collect::<Result<_, _>>()?,
        ),
        Node::Alt(v) => Node::Alt(
            v.into_iter()
                .map(|x| lower_looks(x, notes))
                .collect::<Result<_, _>>()?,
        ),
        Node::Group { open, name, body } => Node::Group {
            open,
            name,
            body: Box::new(lower_looks(*body, notes)?),
        },
        Node::Cond { .. } => return Err(Refused("a conditional group is left".into())),
        a @ Node::Atom(_) => a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> String {
        translate(p).unwrap().0
    }

    #[test]
    fn conditionals_expand_and_tempered_tokens_become_dot_star() {
        let (p, notes) = translate(
            r"^Failed \S+ for (?P<inv>invalid user )?(?P<user>(?P<plain>\S+)|(?(inv)(?:(?! from ).)*?|[^:]+)) from (?P<ip>\S+)(?: port \d+)?(?(plain): |(?:(?:(?! from ).)*)$)",
        )
        .unwrap();
        assert_eq!(notes.0.len(), 3, "{notes:?} {p}");
        assert_eq!(p.matches("(?P<ip>").count(), 4, "{p}");
        let re = regex::Regex::new(&crate::de::number_repeated_names(&p)).unwrap();
        let ip = |line: &str| {
            re.captures(line).map(|c| {
                re.capture_names()
                    .enumerate()
                    .filter(|(_, n)| n.is_some_and(|n| crate::de::Pattern::label_of(n) == "ip"))
                    .find_map(|(i, _)| c.get(i))
                    .map(|m| m.as_str().to_owned())
            })
        };
        assert_eq!(
            ip("Failed password for root from 1.2.3.4 port 22 ssh2")
                .flatten()
                .as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            ip("Failed publickey for root from 1.2.3.4 port 22: RSA x")
                .flatten()
                .as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            ip("Failed password for invalid user a b from 1.2.3.4 port 22 ssh2")
                .flatten()
                .as_deref(),
            Some("1.2.3.4")
        );
    }

    #[test]
    fn python_only_syntax_is_named_and_small_differences_are_rewritten() {
        assert_eq!(t(r"a\Z"), r"a\z");
        // "text without ` from `", exactly.
        let no_from =
            regex::Regex::new(&format!("^{}$", not_containing(" from ", false).unwrap())).unwrap();
        for ok in [
            "",
            "x",
            "a fro",
            " fr from",
            "user  fro",
            "x from",
            "from fromage",
        ] {
            assert!(no_from.is_match(ok), "{ok:?}");
        }
        for bad in [" from ", "x  from  y", "a from b", " f from x"] {
            assert!(!no_from.is_match(bad), "{bad:?}");
        }
        assert!(
            not_containing("abab", false).is_none(),
            "a word with a border"
        );
        assert_eq!(t(r"x{json} y{2,3}"), r"x\{json\} y{2,3}");
        assert_eq!(t(r"[[:alpha:]x]"), r"[\[:alpha:]x]");
        assert_eq!(t(r"\<a\> \d{,3}"), r"<a> \d{0,3}");
        assert!(
            translate(&"(".repeat(100_000))
                .unwrap_err()
                .0
                .contains("nested deeper")
        );
        assert_eq!(t(r"[^\[\]]+"), r"[^\[\]]+");
        assert_eq!(t(r"(?i)a(?#note)b"), r"(?i)ab");
        for (p, says) in [
            (r"(?<=a)b", "look-behind"),
            (r"a(?=b)", "look-ahead"),
            (r"(a)\1", "back-reference"),
            (r"(?P<a>x)(?P=a)", "back-reference"),
            (r"(?>a)", "atomic group"),
            (r"a++", "possessive"),
            (r"(?(x)a|b)", "no optional group `x`"),
            (r"(?L)a", "flag `L`"),
            (r"(a", "not closed"),
        ] {
            let e = translate(p).unwrap_err().0;
            assert!(e.contains(says), "{p}: {e}");
        }
    }
}
