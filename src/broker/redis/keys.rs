//! Pure naming and layout rules of kombu's Redis transport: priority lists, BRPOP key order,
//! round-robin rotation, and the `unacked` hash value `[message, exchange, routing_key]`.

use serde_json::Value;

use crate::broker::{priority_step, PRIORITY_STEPS};

/// kombu's priority separator (`"\x06\x16"`), also used inside binding members.
pub(crate) const SEP: &str = "\x06\x16";
/// kombu's hash of held messages: tag → `[message, exchange, routing_key]`.
pub(crate) const UNACKED: &str = "unacked";
/// kombu's index of held messages: tag scored by fetch (for us: last renewal) time.
pub(crate) const UNACKED_INDEX: &str = "unacked_index";
/// kombu's restore mutex.
pub(crate) const UNACKED_MUTEX: &str = "unacked_mutex";
/// Our own zset of leases: tag scored by lease expiry (unix seconds). Only entries here are ever
/// restored early by us; anything else in `unacked` belongs to a kombu consumer.
pub(crate) const LEASES: &str = "mediacms-worker.leases";
/// kombu's mutex lifetime (`SET … NX PX 300000`).
pub(crate) const MUTEX_PX: u64 = 300_000;

/// The Redis list holding `queue` messages of `priority` (kombu `_q_for_pri`).
pub(crate) fn priority_list(queue: &str, priority: u8) -> String {
    match priority_step(priority) {
        0 => queue.to_owned(),
        n => format!("{queue}{SEP}{n}"),
    }
}

/// The queue a priority list belongs to (`q\x06\x169` → `q`).
pub(crate) fn queue_of_list(key: &str) -> &str {
    key.split_once(SEP).map_or(key, |(q, _)| q)
}

/// The binding set key and member a producer SADDs when declaring `queue` (anonymous exchange).
pub(crate) fn binding(queue: &str) -> (String, String) {
    (
        format!("_kombu.binding.{queue}"),
        format!("{queue}{SEP}{SEP}{queue}"),
    )
}

/// BRPOP keys in kombu's order: every queue at step 0, then every queue at step 3, …
pub(crate) fn brpop_keys(order: &[String]) -> Vec<String> {
    PRIORITY_STEPS
        .iter()
        .flat_map(|p| order.iter().map(move |q| priority_list(q, *p)))
        .collect()
}

/// kombu's round-robin cycle over the consumed queues.
#[derive(Debug, Default)]
pub(crate) struct Rotation {
    order: Vec<String>,
}

impl Rotation {
    /// Adopt the caller's queue set, keeping the current rotation for queues already known.
    pub(crate) fn sync(&mut self, queues: &[String]) -> &[String] {
        self.order.retain(|q| queues.contains(q));
        for q in queues {
            if !self.order.contains(q) {
                self.order.push(q.clone());
            }
        }
        &self.order
    }

    /// The queue that just delivered goes to the end of the cycle.
    pub(crate) fn rotate(&mut self, queue: &str) {
        if let Some(i) = self.order.iter().position(|q| q == queue) {
            let q = self.order.remove(i);
            self.order.push(q);
        }
    }
}

/// `s` as a JSON string literal, escaped exactly as serde_json does (`\"`, `\\`, the short
/// escapes, `\u00XX` for other control bytes; everything else verbatim). Hand-written because
/// it runs over multi-megabyte junk payloads on the fetch path, where serde_json's per-byte
/// writer calls cost ~0.4 s per 5 MB in an unoptimised build; runs of plain bytes are copied
/// in one go.
pub(crate) fn json_string(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        // 32 plain bytes at a time (no control byte, quote or backslash among them).
        if let Some(chunk) = bytes.get(i..i + 32) {
            let word = |k: usize| u64::from_le_bytes(chunk[k..k + 8].try_into().expect("8"));
            if special(word(0)) | special(word(8)) | special(word(16)) | special(word(24)) == 0 {
                i += 32;
                continue;
            }
        }
        let b = bytes[i];
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => b'u',
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if short == b'u' {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
    String::from_utf8(out).expect("escaping keeps UTF-8 valid")
}

/// Non-zero when some byte of `w` is below 0x20, a quote or a backslash (the classic
/// has-zero-byte trick, exact for "any byte").
fn special(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = LO * b'"' as u64;
    const SLASHES: u64 = LO * b'\\' as u64;
    let (q, b) = (w ^ QUOTES, w ^ SLASHES);
    let below_space = w.wrapping_sub(LO * 0x20);
    ((below_space & !w) | (q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI
}

/// kombu's `unacked` value. A JSON-object message is embedded byte for byte (what Python's
/// `dumps([message, ex, rk])` writes for a message it produced); anything else becomes a JSON
/// string so the hash always holds valid JSON for kombu clients that read it.
pub(crate) fn unacked_value(raw: &[u8], object: bool, exchange: &str, routing_key: &str) -> String {
    let tail = unacked_tail(exchange, routing_key);
    let message = if object {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        json_string(&String::from_utf8_lossy(raw))
    };
    format!("[{message}{tail}")
}

fn unacked_tail(exchange: &str, routing_key: &str) -> String {
    let s = |x: &str| Value::String(x.to_owned()).to_string();
    format!(", {}, {}]", s(exchange), s(routing_key))
}

/// A held entry read back from `unacked`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Held {
    pub raw: Vec<u8>,
    pub exchange: String,
    pub routing_key: String,
}

/// Parse an `unacked` value. The message bytes are recovered verbatim when we wrote the value
/// (known tail); otherwise (another writer's spacing) the message is re-serialized.
pub(crate) fn parse_unacked(value: &str) -> Option<Held> {
    let parts: Vec<Value> = serde_json::from_str(value).ok()?;
    let [message, exchange, routing_key] = <[Value; 3]>::try_from(parts).ok()?;
    let exchange = exchange.as_str()?.to_owned();
    let routing_key = routing_key.as_str()?.to_owned();
    let tail = unacked_tail(&exchange, &routing_key);
    let raw = match (
        &message,
        value.strip_prefix('[').and_then(|v| v.strip_suffix(&tail)),
    ) {
        (Value::String(s), _) => s.clone().into_bytes(),
        (_, Some(verbatim)) => verbatim.as_bytes().to_vec(),
        (m, None) => m.to_string().into_bytes(),
    };
    Some(Held {
        raw,
        exchange,
        routing_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_lists_round_down_like_kombu() {
        assert_eq!(priority_list("q", 0), "q");
        assert_eq!(priority_list("q", 2), "q");
        assert_eq!(priority_list("q", 5), "q\x06\x163");
        assert_eq!(priority_list("q", 8), "q\x06\x166");
        assert_eq!(priority_list("q", 9), "q\x06\x169");
        assert_eq!(queue_of_list("q\x06\x169"), "q");
        assert_eq!(queue_of_list("q"), "q");
    }

    #[test]
    fn brpop_order_interleaves_queues_per_priority_as_captured() {
        let keys = brpop_keys(&["long_tasks".into(), "short_tasks".into()]);
        let want = "long_tasks short_tasks long_tasks\x06\x163 short_tasks\x06\x163 \
                    long_tasks\x06\x166 short_tasks\x06\x166 long_tasks\x06\x169 short_tasks\x06\x169";
        assert_eq!(keys.join(" "), want);
    }

    #[test]
    fn rotation_moves_the_delivering_queue_last_and_follows_the_queue_set() {
        let mut r = Rotation::default();
        let qs = vec!["a".to_string(), "b".into(), "c".into()];
        assert_eq!(r.sync(&qs), qs.as_slice());
        r.rotate("a");
        assert_eq!(r.sync(&qs), ["b", "c", "a"]);
        assert_eq!(r.sync(&["a".into(), "d".into()]), ["a", "d"]);
    }

    #[test]
    fn unacked_value_embeds_the_message_verbatim_and_reads_back() {
        let raw = br#"{"body": "W10=", "headers": {"id": "x"}}"#;
        let v = unacked_value(raw, true, "", "long_tasks");
        assert_eq!(
            v,
            r#"[{"body": "W10=", "headers": {"id": "x"}}, "", "long_tasks"]"#
        );
        let held = parse_unacked(&v).unwrap();
        assert_eq!(held.raw, raw.to_vec());
        assert_eq!(held.routing_key, "long_tasks");
    }

    #[test]
    fn json_string_escapes_exactly_as_serde_json() {
        for s in [
            "",
            "plain",
            "quote\" back\\slash",
            "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "ünïcødé ✓ \u{10ffff}",
            "\u{fffd}\u{fffd}{",
            "0123456\"89abcdef\\ghijklmn\u{1}pqrstuvwxyz0123456789 long enough for chunks",
        ] {
            assert_eq!(json_string(s), Value::String(s.into()).to_string(), "{s:?}");
        }
    }

    #[test]
    fn json_string_matches_serde_json_on_random_strings() {
        let alphabet = [
            'a', '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', 'é', '✓', '\u{7f}', 'z',
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let len = (seed >> 58) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            assert_eq!(
                json_string(&s),
                Value::String(s.clone()).to_string(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn non_json_messages_are_stored_as_strings_and_foreign_spacing_is_tolerated() {
        let v = unacked_value(b"garbage", false, "", "q");
        assert_eq!(v, r#"["garbage", "", "q"]"#);
        assert_eq!(parse_unacked(&v).unwrap().raw, b"garbage".to_vec());
        let foreign = parse_unacked(r#"[{"a":1},"","q"]"#).unwrap();
        assert_eq!(foreign.raw, br#"{"a":1}"#.to_vec());
        assert!(parse_unacked("[1, 2]").is_none());
    }
}
