//! A timeline entry's `data`: a JSON value that may already be encoded.
//!
//! Most entries are built as a [`serde_json::Value`]. Detection entries come by the thousand
//! under a dense attack, and building a value tree for each one, encoding it for the store
//! and dropping it again was a fifth of the incident manager's time. They are encoded once,
//! straight from the detection, as JSON text ([`EntryData::encoded`]). The store writes that
//! text as it is, and whoever reads the entry in memory gets the value parsed from it the
//! first time they look (entries read from the store are values already).

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON value, or the same value as JSON text, parsed when it is first read. Reads go
/// through [`Deref`] to the value, so `data.get("rule")` works on either.
#[derive(Default)]
pub struct EntryData {
    /// The JSON text, for data encoded when the entry was made.
    raw: Option<Box<RawValue>>,
    /// The value: set at once for data made as a value; parsed from `raw` on first read.
    value: OnceLock<Value>,
}

impl EntryData {
    /// `data` encoded as JSON text now (the store writes it as it is).
    pub fn encoded<T: Serialize + ?Sized>(data: &T) -> Result<EntryData, serde_json::Error> {
        Ok(EntryData {
            raw: Some(serde_json::value::to_raw_value(data)?),
            value: OnceLock::new(),
        })
    }

    /// The value (parsed from the JSON text the first time).
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| match &self.raw {
            // The text was made by serde_json from a value it could encode: it parses.
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            None => Value::Null,
        })
    }

    pub fn is_null(&self) -> bool {
        match &self.raw {
            Some(_) => false,
            None => self.value().is_null(),
        }
    }
}

impl Deref for EntryData {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl From<Value> for EntryData {
    fn from(v: Value) -> Self {
        EntryData {
            raw: None,
            value: OnceLock::from(v),
        }
    }
}

impl Clone for EntryData {
    fn clone(&self) -> Self {
        EntryData {
            raw: self.raw.clone(),
            value: self.value.clone(),
        }
    }
}

impl PartialEq for EntryData {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl PartialEq<Value> for EntryData {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl fmt::Debug for EntryData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.value(), f)
    }
}

impl fmt::Display for EntryData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.raw {
            Some(raw) => f.write_str(raw.get()),
            None => fmt::Display::fmt(self.value(), f),
        }
    }
}

impl EntryData {
    /// Serializes for a serializer that writes JSON (serde_json's, as the store's is): the
    /// JSON text as it is where there is one. Any other serializer (a template's context)
    /// would see the text's wrapper, not the value: [`Serialize`] gives those the value.
    pub fn serialize_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.raw {
            Some(raw) => raw.serialize(s),
            None => self.value().serialize(s),
        }
    }
}

impl Serialize for EntryData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for EntryData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(EntryData::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Made<'a> {
        rule: &'a str,
        count: u64,
        labels: std::collections::BTreeMap<&'a str, &'a str>,
    }

    #[test]
    fn encoded_data_reads_writes_and_compares_as_its_value() {
        let made = Made {
            rule: "ssh\n\"x\"",
            count: 3,
            labels: [("ip", "1.2.3.4")].into_iter().collect(),
        };
        let value = serde_json::to_value(&made).unwrap();
        let encoded = EntryData::encoded(&made).unwrap();
        assert_eq!(
            encoded.get("rule").and_then(Value::as_str),
            Some("ssh\n\"x\"")
        );
        assert_eq!(encoded, EntryData::from(value.clone()));
        assert_eq!(encoded, value);
        assert!(!encoded.is_null());
        assert!(EntryData::default().is_null());
        assert!(EntryData::from(Value::Null).is_null());
        // Written as the same JSON, read back as the same value.
        let text = serde_json::to_string(&encoded).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        let back: EntryData = serde_json::from_str(&text).unwrap();
        assert_eq!(back, encoded);
        assert_eq!(
            serde_json::from_str::<Value>(&encoded.to_string()).unwrap(),
            value
        );
        assert_eq!(encoded.clone().value(), &value);
        // In a struct, as the store writes entries: the text as it is.
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(serialize_with = "json")]
            data: &'a EntryData,
        }
        fn json<S: Serializer>(d: &&EntryData, s: S) -> Result<S::Ok, S::Error> {
            d.serialize_json(s)
        }
        let text = serde_json::to_string(&Entry { data: &encoded }).unwrap();
        assert_eq!(text, format!("{{\"data\":{encoded}}}"));
        // A template's context sees the value, not the text's wrapper.
        let ctx = minijinja::Value::from(minijinja::value::Serde(&encoded));
        assert_eq!(ctx.get_attr("rule").unwrap().as_str(), Some("ssh\n\"x\""));
        assert_eq!(ctx.get_attr("count").unwrap(), minijinja::Value::from(3));
    }
}
