//! AMQP field tables ↔ JSON, Celery's publish properties, the dead-letter record and the
//! `consumer_timeout` classifier: the lapin-typed but I/O-free half of the AMQP transport.

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::{json, Map, Number, Value};

use crate::celery::envelope::v2_headers;
use crate::celery::message::{DecodeError, OutgoingTask};

const JSON_CONTENT_TYPE: &str = "application/json";

/// A JSON header value as py-amqp encodes it: `None` → void `V`, ints → `I` when they fit 32
/// bits else `l`, floats → `d`, lists → `A`, dicts → `F`, strings → `S` (celery-wire §9).
pub fn json_to_amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => number_to_amqp(n),
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(json_to_amqp).collect::<Vec<_>>(),
        )),
        Value::Object(map) => AMQPValue::FieldTable(json_to_table(map)),
    }
}

fn number_to_amqp(n: &Number) -> AMQPValue {
    match n.as_i64() {
        Some(i) => match i32::try_from(i) {
            Ok(small) => AMQPValue::LongInt(small),
            Err(_) => AMQPValue::LongLongInt(i),
        },
        // u64 above i64::MAX or a float: py-amqp would send a double for the float; the huge
        // unsigned never occurs in Celery headers, and a double keeps it readable.
        None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
    }
}

/// A JSON object as a field table. Keys longer than 255 bytes cannot be AMQP short strings;
/// none of Celery's headers come close, so such a key is skipped rather than failing a publish.
pub fn json_to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        if let Ok(key) = ShortString::try_new(key.as_str()) {
            table.insert(key, json_to_amqp(value));
        }
    }
    table
}

/// An AMQP value as the JSON Python would see after py-amqp decodes it.
pub fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Void => Value::Null,
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
    }
}

/// NaN/inf have no JSON form; they only ever appear in hand-made messages.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), amqp_to_json(v)))
        .collect()
}

/// The message properties Celery 5.4 publishes a task with (celery-wire §9): priority only
/// when non-zero, `reply_to` = the producer's oid, the 19 v2 headers as `application_headers`.
pub fn task_properties(task: &OutgoingTask, reply_to: &str) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type(JSON_CONTENT_TYPE.into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_correlation_id(task.id.as_str().into())
        .with_reply_to(reply_to.into())
        .with_headers(json_to_table(&v2_headers(task)));
    if task.priority == 0 {
        props
    } else {
        props.with_priority(task.priority)
    }
}

/// Only JSON bodies are accepted, as on Redis (MediaCMS accepts `application/json` only).
pub fn check_content_type(props: &BasicProperties) -> Result<(), DecodeError> {
    match props.content_type().as_ref().map(ShortString::as_str) {
        Some(JSON_CONTENT_TYPE) => {}
        Some(other) => return Err(DecodeError::ContentType(other.to_owned())),
        None => return Err(DecodeError::ContentType("<missing>".into())),
    }
    match props.content_encoding().as_ref().map(ShortString::as_str) {
        None => Ok(()),
        Some(enc) if enc.eq_ignore_ascii_case("utf-8") => Ok(()),
        Some(enc) => Err(DecodeError::ContentType(format!(
            "{JSON_CONTENT_TYPE}; encoding {enc}"
        ))),
    }
}

/// What survives of a delivery besides its body, kept while we hold it (for the dead-letter
/// record).
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub exchange: String,
    pub routing_key: String,
    pub headers: Map<String, Value>,
    pub properties: Map<String, Value>,
}

/// The properties worth keeping, as JSON.
pub fn properties_json(props: &BasicProperties) -> Map<String, Value> {
    let short = |s: &Option<ShortString>| s.as_ref().map(|s| json!(s.as_str()));
    let fields = [
        ("content_type", short(props.content_type())),
        ("content_encoding", short(props.content_encoding())),
        ("delivery_mode", props.delivery_mode().map(|m| json!(m))),
        ("priority", props.priority().map(|p| json!(p))),
        ("correlation_id", short(props.correlation_id())),
        ("reply_to", short(props.reply_to())),
    ];
    fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect()
}

/// The JSON record published to the dead-letter queue: everything needed to inspect or
/// re-publish the message by hand. The body is kept verbatim when it is UTF-8, else base64.
pub fn dead_letter_record(
    queue: &str,
    raw: &[u8],
    envelope: &Envelope,
    redelivered: bool,
    reason: &str,
) -> Vec<u8> {
    use base64::Engine as _;
    let (body, encoding) = match std::str::from_utf8(raw) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(raw),
            "base64",
        ),
    };
    let record = json!({
        "reason": reason,
        "queue": queue,
        "exchange": envelope.exchange,
        "routing_key": envelope.routing_key,
        "redelivered": redelivered,
        "headers": envelope.headers,
        "properties": envelope.properties,
        "body": body,
        "body_encoding": encoding,
        "dead_lettered_at": chrono::Utc::now().to_rfc3339(),
    });
    record.to_string().into_bytes()
}

/// RabbitMQ closes a channel whose delivery stayed unacked past `consumer_timeout` with
/// `406 PRECONDITION_FAILED - delivery acknowledgement on channel N timed out …`.
pub fn is_consumer_timeout(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("acknowledgement") && e.contains("timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_a_field_table() {
        let v = json!({"n": null, "i": 7, "big": 5_000_000_000i64, "f": 1.5, "s": "x",
                       "a": [3600, null], "t": {"k": true}});
        let Value::Object(map) = v.clone() else {
            unreachable!()
        };
        let table = json_to_table(&map);
        let inner = table.inner();
        assert_eq!(inner.get("n"), Some(&AMQPValue::Void));
        assert_eq!(inner.get("i"), Some(&AMQPValue::LongInt(7)));
        assert_eq!(
            inner.get("big"),
            Some(&AMQPValue::LongLongInt(5_000_000_000))
        );
        assert_eq!(inner.get("f"), Some(&AMQPValue::Double(1.5)));
        assert!(matches!(inner.get("a"), Some(AMQPValue::FieldArray(_))));
        assert_eq!(Value::Object(table_to_json(&table)), v);
    }

    #[test]
    fn priority_is_only_set_when_non_zero() {
        let mut task = OutgoingTask::new("create_hls", "long_tasks", vec![json!("t")], Map::new());
        assert_eq!(*task_properties(&task, "oid").priority(), None);
        task.priority = 9;
        let props = task_properties(&task, "oid");
        assert_eq!(*props.priority(), Some(9));
        assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), task.id);
        assert_eq!(*props.delivery_mode(), Some(2));
    }

    #[test]
    fn consumer_timeout_close_is_recognised() {
        let msg = "protocol error: PRECONDITION_FAILED - delivery acknowledgement on channel 1 \
                   timed out. Timeout value used: 1800000 ms.";
        assert!(is_consumer_timeout(msg));
        assert!(!is_consumer_timeout("IO error: connection reset by peer"));
    }

    #[test]
    fn non_json_content_is_poison() {
        let props =
            BasicProperties::default().with_content_type("application/x-python-serialize".into());
        assert!(matches!(
            check_content_type(&props),
            Err(DecodeError::ContentType(_))
        ));
        let ok = BasicProperties::default()
            .with_content_type(JSON_CONTENT_TYPE.into())
            .with_content_encoding("utf-8".into());
        assert_eq!(check_content_type(&ok), Ok(()));
    }
}
