//! How a JSON record is stored: one version byte, then its body.
//!
//! - [`RECORD_V1`]: one value as JSON.
//! - [`RECORD_PACK`]: several timeline entries of one change, as a JSON array.
//! - [`RECORD_LZ4`] (schema 4): a record of one of the kinds above, compressed as one LZ4
//!   block with its length in front. A record of at least [`COMPRESS_FROM`] bytes is stored
//!   so when that makes it shorter. Under a dense attack most of what the manager writes is
//!   detection entries that repeat their rule, key, labels and message; compressed they are
//!   about a fifth of their size, and sled writes, relocates and caches a fifth of the bytes.
//!
//! Every reader goes through [`decode`] or [`decode_entries`].

use std::borrow::Cow;

use crate::port::StoreError;

/// One value as JSON.
pub(super) const RECORD_V1: u8 = 1;

/// The entries of one incident written by one change (consecutive `seq`s), as a JSON array
/// under the first one's key. A dense log's detections that join one incident within one
/// batch of the manager are one key, not one each.
pub(super) const RECORD_PACK: u8 = 2;

/// A [`RECORD_V1`] or [`RECORD_PACK`] record compressed: its length (u32, little-endian)
/// and one LZ4 block.
pub(super) const RECORD_LZ4: u8 = 3;

/// Records shorter than this are stored as they are: a snapshot of an incident is about
/// 3 KB and a detection entry about 800 bytes; counters and small runs gain nothing.
pub(super) const COMPRESS_FROM: usize = 512;

/// The longest record a compressed one may stand for. Nothing the daemon writes comes near
/// (a pack is at most one batch of entries); a damaged length must not make a reader
/// allocate gigabytes.
const MAX_UNPACKED: usize = 256 << 20;

pub(super) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    // Serializing our own plain structs to JSON cannot fail (string keys, no custom errors).
    serde_json::to_writer(&mut out, v).expect("records serialize to JSON");
    compressed(out)
}

/// The `incident_log` record for `entries` of one change: one entry as itself, several as a
/// pack under the first one's key.
pub(super) fn encode_entries<T: serde::Serialize>(entries: &[T]) -> Vec<u8> {
    match entries {
        [one] => encode(one),
        many => {
            let mut out = vec![RECORD_PACK];
            serde_json::to_writer(&mut out, many).expect("records serialize to JSON");
            compressed(out)
        }
    }
}

/// `record` as [`RECORD_LZ4`] when it is long enough and that makes it shorter.
fn compressed(record: Vec<u8>) -> Vec<u8> {
    if record.len() < COMPRESS_FROM {
        return record;
    }
    let Ok(len) = u32::try_from(record.len()) else {
        return record;
    };
    let mut out = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(record.len())];
    out[0] = RECORD_LZ4;
    out[1..5].copy_from_slice(&len.to_le_bytes());
    match lz4_flex::block::compress_into(&record, &mut out[5..]) {
        Ok(n) if 5 + n < record.len() => {
            out.truncate(5 + n);
            out
        }
        // Incompressible, or (never with a buffer of the maximum size) no room.
        _ => record,
    }
}

/// The record `bytes` stand for: themselves, or a compressed record unpacked.
fn unpacked<'a>(
    tree: &'static str,
    key: &[u8],
    bytes: &'a [u8],
) -> Result<Cow<'a, [u8]>, StoreError> {
    let Some((&RECORD_LZ4, body)) = bytes.split_first() else {
        return Ok(Cow::Borrowed(bytes));
    };
    let err = |message: String| StoreError::Record {
        tree,
        key: hex(key),
        message,
    };
    let (len, block) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| err("compressed record without its length".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    // LZ4 expands at most 255 times (plus a little for the last literals).
    if len > MAX_UNPACKED || len > block.len().saturating_mul(255).saturating_add(16) {
        return Err(err(format!(
            "compressed record of {} bytes claims {len} bytes",
            block.len()
        )));
    }
    let mut out = vec![0u8; len];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(n) if n == len => {}
        Ok(n) => {
            return Err(err(format!(
                "compressed record unpacks to {n} bytes, not {len}"
            )));
        }
        Err(e) => return Err(err(format!("compressed record: {e}"))),
    }
    if out.first() == Some(&RECORD_LZ4) {
        return Err(err("compressed record holds a compressed record".into()));
    }
    Ok(Cow::Owned(out))
}

/// The timeline entries an `incident_log` record holds: one, or a pack's.
pub(super) fn decode_entries(
    key: &[u8],
    bytes: &[u8],
) -> Result<Vec<crate::incident::TimelineEntry>, StoreError> {
    let bytes = unpacked("incident_log", key, bytes)?;
    match bytes.split_first() {
        Some((&RECORD_PACK, body)) => {
            serde_json::from_slice(body).map_err(|e| StoreError::Record {
                tree: "incident_log",
                key: hex(key),
                message: e.to_string(),
            })
        }
        _ => decode("incident_log", key, &bytes).map(|e| vec![e]),
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let err = |message: String| StoreError::Record {
        tree,
        key: hex(key),
        message,
    };
    let bytes = unpacked(tree, key, bytes)?;
    match bytes.split_first() {
        Some((&RECORD_V1, body)) => serde_json::from_slice(body).map_err(|e| err(e.to_string())),
        Some((v, _)) => Err(err(format!("unknown record version {v}"))),
        None => Err(err("empty record".into())),
    }
}

pub(super) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64, message: &str) -> serde_json::Value {
        serde_json::json!({
            "incident_id": 7, "seq": n, "ts": "2026-12-05T10:00:00.000Z", "type": "detection",
            "actor": "system", "change": n,
            "data": {"rule": "ssh-brute-force", "message": message,
                     "labels": {"ip": "203.0.113.9", "user": "root"}}
        })
    }

    #[test]
    fn long_records_are_stored_compressed_and_read_back_as_written() {
        let short = serde_json::json!({"a": 1});
        assert_eq!(
            encode(&short)[0],
            RECORD_V1,
            "a short record stays as it is"
        );
        assert_eq!(
            decode::<serde_json::Value>("t", b"k", &encode(&short)).unwrap(),
            short
        );

        let one = entry(
            1,
            &"Failed password for root from 203.0.113.9 port 22 ssh2 ".repeat(12),
        );
        let stored = encode(&one);
        assert_eq!(stored[0], RECORD_LZ4);
        assert!(stored.len() < serde_json::to_vec(&one).unwrap().len() / 2);
        assert_eq!(
            decode::<serde_json::Value>("t", b"k", &stored).unwrap(),
            one
        );

        let pack: Vec<_> = (1..40)
            .map(|n| entry(n, "Failed password for root"))
            .collect();
        let stored = encode_entries(&pack);
        assert_eq!(stored[0], RECORD_LZ4);
        let plain = serde_json::to_vec(&pack).unwrap().len();
        assert!(
            stored.len() * 4 < plain,
            "{} of {plain} bytes",
            stored.len()
        );
        let back = decode_entries(b"k", &stored).unwrap();
        assert_eq!(back.len(), 39);
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::json!(pack)
        );
    }

    #[test]
    fn incompressible_records_stay_as_they_are() {
        // Distinct bytes with no repeats of four: LZ4 finds nothing to refer back to.
        let noise: String = (0u32..3000)
            .map(|i| char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) >> 20)).unwrap())
            .collect();
        let stored = encode(&noise);
        assert_eq!(stored[0], RECORD_V1);
        assert_eq!(decode::<String>("t", b"k", &stored).unwrap(), noise);
    }

    #[test]
    fn damaged_compressed_records_are_errors_that_name_the_key() {
        let pack: Vec<_> = (1..40).map(|n| entry(n, "Failed password")).collect();
        let stored = encode_entries(&pack);
        assert_eq!(stored[0], RECORD_LZ4);
        let expect_err = |bytes: &[u8], says: &str| {
            let e = decode_entries(b"\x00\x07", bytes).unwrap_err().to_string();
            assert!(e.contains("incident_log") && e.contains("0007"), "{e}");
            assert!(e.contains(says), "{e}");
        };
        // A length no block of this size can stand for: refused before allocating.
        let mut huge = stored.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        expect_err(&huge, "claims 4294967295 bytes");
        // A length one longer than the block unpacks to.
        let mut longer = stored.clone();
        let len = u32::from_le_bytes(stored[1..5].try_into().unwrap());
        longer[1..5].copy_from_slice(&(len + 1).to_le_bytes());
        expect_err(&longer, "not");
        // Cut short, and cut to its version byte.
        expect_err(&stored[..stored.len() / 2], "compressed record");
        expect_err(&stored[..3], "without its length");
        // A compressed record inside a compressed record.
        let mut inner = vec![RECORD_LZ4; 600];
        inner[1] = b'x';
        let len = inner.len() as u32;
        let mut nested = vec![RECORD_LZ4];
        nested.extend(len.to_le_bytes());
        nested.extend(lz4_flex::block::compress(&inner));
        expect_err(&nested, "holds a compressed record");
    }
}
