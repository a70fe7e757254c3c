//! The elements of a JSON array held as bytes, decoded one at a time.
//!
//! `POST /v1/events` takes a JSON array of events as well as NDJSON. Decoding the whole array
//! into values first held about sixteen times the body in memory; here the array is checked
//! once, each element decoded and dropped at once, so a malformed body (bad syntax, bytes that
//! are not UTF-8, an element serde_json refuses) is still refused whole, and then each
//! element is decoded again when it is asked for.

use serde_json::Value;

/// See the module documentation.
pub struct JsonArray<'a> {
    /// What follows the elements decoded so far (after their separating comma).
    rest: &'a [u8],
    done: bool,
}

impl<'a> JsonArray<'a> {
    /// The array in `bytes` (leading and trailing whitespace allowed), or serde_json's error
    /// when `bytes` are not one JSON array.
    pub fn new(bytes: &'a [u8]) -> Result<JsonArray<'a>, serde_json::Error> {
        struct OnlyArray;
        impl<'de> serde::de::Visitor<'de> for OnlyArray {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                // Each element decoded as it will be, and dropped: skipping it would let
                // through what decoding refuses (a number out of range, a lone surrogate
                // escape, nesting past serde_json's limit), after the elements before it had
                // been handed on.
                while seq.next_element::<Value>()?.is_some() {}
                Ok(())
            }
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde::Deserializer::deserialize_seq(&mut de, OnlyArray)?;
        de.end()?;
        let open = bytes.trim_ascii_start();
        Ok(JsonArray {
            // Checked above: the first byte after the whitespace is `[`.
            rest: open.get(1..).unwrap_or_default(),
            done: false,
        })
    }
}

impl Iterator for JsonArray<'_> {
    /// Each element as a value. An element cannot fail to decode (the array was checked by
    /// decoding it), but if it did, it is an error and the rest is not read.
    type Item = Result<Value, serde_json::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let start = self.rest.trim_ascii_start();
        if start.first() == Some(&b']') {
            self.done = true;
            return None;
        }
        let mut values = serde_json::Deserializer::from_slice(start).into_iter::<Value>();
        let value = match values.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(e));
            }
            None => {
                self.done = true;
                return None;
            }
        };
        let after = start.get(values.byte_offset()..).unwrap_or_default();
        let after = after.trim_ascii_start();
        match after.split_first() {
            Some((b',', rest)) => self.rest = rest,
            _ => self.done = true,
        }
        Some(Ok(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &str) -> Result<Vec<Value>, String> {
        let array = JsonArray::new(body.as_bytes()).map_err(|e| e.to_string())?;
        array.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    #[test]
    fn elements_come_one_at_a_time_as_serde_json_reads_them() {
        for body in [
            "[]",
            "  [ ] \n",
            r#"[{"a":1}]"#,
            "[1,2.5,-3e2,\"x\",null,true,[1,[2]],{\"k\":[]}]",
            " \n[ {\"message\": \"a, b ] c\"} ,\r\n {\"message\":\"\\\"]\"} ]\n",
            "[\"\\u00e9\\ud83d\\ude00\", 0]",
        ] {
            let want: Vec<Value> = serde_json::from_str(body).unwrap();
            assert_eq!(all(body).unwrap(), want, "{body}");
        }
        let mut a = JsonArray::new(b"[1, 2, 3]").unwrap();
        assert_eq!(a.next().unwrap().unwrap(), 1);
        assert_eq!(a.next().unwrap().unwrap(), 2);
        assert_eq!(a.next().unwrap().unwrap(), 3);
        assert!(a.next().is_none() && a.next().is_none());
    }

    #[test]
    fn a_body_that_is_not_one_array_is_refused_whole() {
        for body in [
            "[1,2",
            "[1,,2]",
            "[1,2,]",
            "[1 2]",
            "[1,2] [3]",
            "[1,2]x",
            "{\"a\":1}",
            "[\"unterminated]",
            "",
            // What skipping an element would let through and decoding it refuses.
            "[{\"kind\":\"marker\"}, 1e400, 2]",
            "[1, \"\\ud800\", 2]",
            "[1, {\"\\udc00\": 1}]",
        ] {
            assert!(JsonArray::new(body.as_bytes()).is_err(), "{body:?}");
        }
        // Invalid UTF-8 inside a string.
        assert!(JsonArray::new(b"[\"\xff\"]").is_err());
        // Nesting: refused exactly where decoding the whole body refused it.
        let nested = |n: usize| format!("[{}{}]", "[".repeat(n), "]".repeat(n));
        let whole = |n: usize| serde_json::from_str::<Vec<Value>>(&nested(n)).is_ok();
        assert!(whole(100) && !whole(200));
        for n in [100, 125, 126, 127, 128, 129, 200] {
            assert_eq!(
                JsonArray::new(nested(n).as_bytes()).is_ok(),
                whole(n),
                "{n}"
            );
        }
    }
}
