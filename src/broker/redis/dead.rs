//! The dead-letter list: bounded by count and bytes, with a TTL, each record keeping the
//! delivery's bytes exactly (`raw` when they are UTF-8, `raw_b64` when not), so a record can be
//! replayed byte for byte (docs/RELIABILITY.md, "Replaying a dead letter").

use base64::Engine;
use serde_json::{json, Value};

use super::keys;
use crate::config::DeadLetterCaps;

/// Push the record (ARGV[5]) after forgetting the holding (fence preamble), then drop the oldest
/// records until both caps hold, and (re)arm the TTL. KEYS[5]: the list, KEYS[6]: its byte
/// count. ARGV[6..8]: max count, max bytes, ttl seconds.
pub(crate) const DEAD_BODY: &str = "if not (ours or gone) then return 0 end; \
    redis.call('zrem', KEYS[2], ARGV[1]); redis.call('hdel', KEYS[1], ARGV[1]); \
    redis.call('zrem', KEYS[3], ARGV[1]); \
    redis.call('set', KEYS[4], ARGV[3], 'EX', ARGV[4]); \
    if redis.call('exists', KEYS[5]) == 0 then redis.call('del', KEYS[6]) end; \
    redis.call('lpush', KEYS[5], ARGV[5]); \
    local total = redis.call('incrby', KEYS[6], string.len(ARGV[5])); \
    local n = redis.call('llen', KEYS[5]); \
    local max_n = tonumber(ARGV[6]); local max_b = tonumber(ARGV[7]); \
    while n > 0 and (n > max_n or total > max_b) do \
      local old = redis.call('rpop', KEYS[5]); \
      total = redis.call('decrby', KEYS[6], string.len(old)); n = n - 1 end; \
    if n > 0 then redis.call('expire', KEYS[5], ARGV[8]); redis.call('expire', KEYS[6], ARGV[8]) \
    else redis.call('del', KEYS[6]) end; \
    if gone then return 2 end; return 1";

/// The byte-count key beside the list.
pub fn bytes_key(list: &str) -> String {
    format!("{list}.bytes")
}

/// Room kept in a record for everything but the payload.
const ENVELOPE_ROOM: usize = 1024;

/// One dead-letter record. The payload is kept exactly when the record fits the byte cap;
/// otherwise its size and first 512 bytes are kept (`payload_omitted`), so a flood of huge
/// junk cannot push everything else out.
pub fn record(queue: &str, tag: &str, reason: &str, raw: &[u8], caps: &DeadLetterCaps) -> String {
    let mut r = json!({
        "reason": reason,
        "queue": queue,
        "tag": tag,
        "size": raw.len(),
        "at": chrono::Utc::now().to_rfc3339(),
    });
    let room = usize::try_from(caps.max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_sub(ENVELOPE_ROOM);
    // The payload fields are appended as text (one pass of `json_string`, not serde_json's).
    let mut tail = String::new();
    match std::str::from_utf8(raw) {
        Ok(text) => tail = format!(",\"raw\":{}", keys::json_string(text)),
        Err(_) => {
            let exact = base64::engine::general_purpose::STANDARD.encode(raw);
            let lossy = keys::json_string(&String::from_utf8_lossy(raw));
            if lossy.len() + exact.len() <= room {
                tail = format!(",\"raw\":{lossy}");
            }
            tail.push_str(&format!(",\"raw_b64\":\"{exact}\""));
        }
    }
    if tail.len() > room {
        r["payload_omitted"] = Value::Bool(true);
        let head = &raw[..raw.len().min(512)];
        r["head_b64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(head));
        return r.to_string();
    }
    let mut text = r.to_string();
    text.pop(); // the closing brace
    text.push_str(&tail);
    text.push('}');
    text
}

/// The exact bytes a record keeps, if it kept them (`raw_b64` first, else `raw`).
pub fn payload(record: &Value) -> Option<Vec<u8>> {
    if let Some(b) = record["raw_b64"].as_str() {
        return base64::engine::general_purpose::STANDARD.decode(b).ok();
    }
    record["raw"].as_str().map(|s| s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_bytes: u64) -> DeadLetterCaps {
        DeadLetterCaps {
            max_bytes,
            ..DeadLetterCaps::default()
        }
    }

    #[test]
    fn payloads_are_kept_byte_exact_utf8_or_not() {
        for raw in [
            b"{\"not\": json".to_vec(),
            vec![0xff, 0xfe, 0x00, 0x80, 0x7b],
        ] {
            let rec: Value =
                serde_json::from_str(&record("q", "t", "x", &raw, &caps(1 << 20))).unwrap();
            assert_eq!(payload(&rec).unwrap(), raw);
            assert_eq!(rec["size"], raw.len());
        }
    }

    #[test]
    fn a_payload_larger_than_the_cap_is_summarised_not_stored() {
        let raw = vec![b'x'; 10_000];
        let text = record("q", "t", "x", &raw, &caps(4096));
        assert!(text.len() <= 4096, "{}", text.len());
        let rec: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(rec["payload_omitted"], true);
        assert_eq!(payload(&rec), None);
        assert_eq!(rec["size"], 10_000);
    }
}
