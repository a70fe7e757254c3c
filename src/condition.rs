//! `where` conditions: one test on one text value (equality, regexes, lists, substrings,
//! presence, IP networks, comparisons, negation). Rules test event keys with them; routes,
//! silences and inhibitions test incident fields with them (the incident layer's matcher).

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::de::Pattern;

/// One `where` condition on an event key. A condition that asks for something (`regex`,
/// `in`, `contains`, `cidr`, a comparison) fails on a missing key; one that excludes
/// (`ne`, `not_in`, `not_regex`, `not_cidr`) holds on it.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Equals(String),
    Ne(String),
    Regex(Pattern),
    NotRegex(Pattern),
    In(Vec<String>),
    NotIn(Vec<String>),
    Contains(String),
    Exists(bool),
    Cidr(Networks),
    NotCidr(Networks),
    Not(Box<Condition>),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
}

impl Condition {
    /// Whether the condition holds for a key's text (None: the key is missing); `number`
    /// gives the key as a number for the comparisons.
    pub fn holds(&self, text: Option<&str>, number: impl Fn() -> Option<f64>) -> bool {
        match self {
            Condition::Equals(want) => text == Some(want.as_str()),
            Condition::Ne(not) => text != Some(not.as_str()),
            Condition::Regex(p) => text.is_some_and(|v| p.0.is_match(v)),
            Condition::NotRegex(p) => !text.is_some_and(|v| p.0.is_match(v)),
            Condition::In(list) => text.is_some_and(|v| list.iter().any(|w| w == v)),
            Condition::NotIn(list) => !text.is_some_and(|v| list.iter().any(|w| w == v)),
            Condition::Contains(part) => text.is_some_and(|v| v.contains(part.as_str())),
            Condition::Exists(want) => text.is_some() == *want,
            Condition::Cidr(n) => text.is_some_and(|v| n.contains(v)),
            Condition::NotCidr(n) => !text.is_some_and(|v| n.contains(v)),
            Condition::Not(c) => !c.holds(text, number),
            Condition::Gt(n) => number().is_some_and(|v| v > *n),
            Condition::Ge(n) => number().is_some_and(|v| v >= *n),
            Condition::Lt(n) => number().is_some_and(|v| v < *n),
            Condition::Le(n) => number().is_some_and(|v| v <= *n),
        }
    }

    /// Whether the condition excludes (holds on a missing key): `ne`, `not_in`,
    /// `not_regex`, `not_cidr`, `exists = false`, and `not` around one that asks.
    pub fn excludes(&self) -> bool {
        match self {
            Condition::Ne(_)
            | Condition::NotIn(_)
            | Condition::NotRegex(_)
            | Condition::NotCidr(_)
            | Condition::Exists(false) => true,
            Condition::Not(c) => !c.excludes(),
            _ => false,
        }
    }

    /// For a field with several values (an incident's rules): a condition that asks holds
    /// when one value passes it, one that excludes when every value does (`rule = { ne =
    /// "x" }` means no rule is x). No values is a missing key.
    pub fn holds_for_all_of<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> bool {
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() {
            return self.holds(None, || None);
        }
        let number = |v: &str| v.trim().parse::<f64>().ok();
        if self.excludes() {
            values.all(|v| self.holds(Some(v), || number(v)))
        } else {
            values.any(|v| self.holds(Some(v), || number(v)))
        }
    }
}

/// Written back the way it is read: a plain value for equality, else `{ operator = value }`
/// (silences are stored this way and read again at start).
impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if let Condition::Equals(v) = self {
            return s.serialize_str(v);
        }
        let mut m = s.serialize_map(Some(1))?;
        match self {
            // Written as a plain value above; kept total for the compiler.
            Condition::Equals(v) => m.serialize_entry("equals", v)?,
            Condition::Ne(v) => m.serialize_entry("ne", v)?,
            Condition::Regex(p) => m.serialize_entry("regex", p)?,
            Condition::NotRegex(p) => m.serialize_entry("not_regex", p)?,
            Condition::In(l) => m.serialize_entry("in", l)?,
            Condition::NotIn(l) => m.serialize_entry("not_in", l)?,
            Condition::Contains(v) => m.serialize_entry("contains", v)?,
            Condition::Exists(b) => m.serialize_entry("exists", b)?,
            Condition::Cidr(n) => m.serialize_entry("cidr", n)?,
            Condition::NotCidr(n) => m.serialize_entry("not_cidr", n)?,
            Condition::Not(c) => m.serialize_entry("not", c)?,
            Condition::Gt(n) => m.serialize_entry("gt", n)?,
            Condition::Ge(n) => m.serialize_entry("ge", n)?,
            Condition::Lt(n) => m.serialize_entry("lt", n)?,
            Condition::Le(n) => m.serialize_entry("le", n)?,
        }
        m.end()
    }
}

/// IP networks (`"10.0.0.0/8"`, `"2001:db8::/32"`, a bare address for one host), as one
/// string or a list.
#[derive(Clone, Debug, PartialEq)]
pub struct Networks(Vec<(std::net::IpAddr, u8)>);

impl Networks {
    pub fn parse(text: &str) -> Result<(std::net::IpAddr, u8), String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network it maps, as
        // the addresses tested against it are.
        if let std::net::IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
            && len >= 96
        {
            return Ok((std::net::IpAddr::V4(v4), len - 96));
        }
        Ok((ip, len))
    }

    /// Whether `text` is an address inside one of the networks (IPv4-mapped IPv6 addresses
    /// count as IPv4; anything that is no address is in none).
    pub fn contains(&self, text: &str) -> bool {
        let Ok(ip) = text.trim().parse::<std::net::IpAddr>() else {
            return false;
        };
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|(net, len)| match (net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

impl Serialize for Networks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let list: Vec<String> = self.0.iter().map(|(ip, l)| format!("{ip}/{l}")).collect();
        list.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        list.iter()
            .map(|t| Networks::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map(Networks)
            .map_err(de::Error::custom)
    }
}

const OPERATORS: &str =
    "ne, regex, not_regex, in, not_in, contains, exists, cidr, not_cidr, not, gt, ge, lt, le";

/// A string, number or boolean compared as text (`ne = 5` is `ne = "5"`).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Condition::deserialize(d)? {
            Condition::Equals(s) => Ok(Scalar(s)),
            _ => Err(de::Error::custom(
                "`ne` takes a string, a number or a boolean",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a table with one of ne, regex, not_regex, in, not_in, contains, exists, cidr, not_cidr, not, gt, ge, lt, le")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Condition, E> {
                Ok(Condition::Equals(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Condition, E> {
                Ok(Condition::Equals(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Condition, E> {
                Ok(Condition::Equals(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Condition, E> {
                Ok(Condition::Equals(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| {
                    de::Error::custom(format!("empty condition table; use one of {OPERATORS}"))
                })?;
                let cond = match key.as_str() {
                    "ne" => Condition::Ne(map.next_value::<Scalar>()?.0),
                    "regex" => Condition::Regex(map.next_value()?),
                    "not_regex" => Condition::NotRegex(map.next_value()?),
                    "in" => Condition::In(map.next_value()?),
                    "not_in" => Condition::NotIn(map.next_value()?),
                    "contains" => Condition::Contains(map.next_value()?),
                    "exists" => Condition::Exists(map.next_value()?),
                    "cidr" => Condition::Cidr(map.next_value()?),
                    "not_cidr" => Condition::NotCidr(map.next_value()?),
                    "not" => Condition::Not(Box::new(map.next_value()?)),
                    "gt" => Condition::Gt(map.next_value()?),
                    "ge" => Condition::Ge(map.next_value()?),
                    "lt" => Condition::Lt(map.next_value()?),
                    "le" => Condition::Le(map.next_value()?),
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown condition `{other}`; use one of {OPERATORS}"
                        )));
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a condition takes exactly one operator; `{key}` is followed by `{extra}`"
                    )));
                }
                Ok(cond)
            }
        }
        d.deserialize_any(V)
    }
}
