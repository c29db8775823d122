//! Transport framing of protocol-v2 tasks: kombu's Redis list entry and the AMQP body/headers.
//!
//! Redis entry (celery-wire §2.1): `{"body": base64(json [args, kwargs, embed]),
//! "content-encoding", "content-type", "headers": {19 v2 headers}, "properties": {…,
//! "delivery_info": {exchange, routing_key}, "priority", "body_encoding", "delivery_tag"}}`.
//! Everything we write uses Python's `json.dumps` layout so it is byte-identical to kombu's.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::message::{DecodeError, OutgoingTask, TaskMessage};
use super::python::{py_json, py_repr, py_tuple_repr};
use super::time::format_celery_time;

const JSON_CONTENT_TYPE: &str = "application/json";

/// What the Redis transport needs from an entry, read leniently so a poison message still
/// yields usable bookkeeping: a tag to ack or dead-letter by, the list to give it back to, and
/// the `unacked` value (the strict decode is [`read_redis`]'s other half).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisFacts {
    /// `properties.delivery_tag`, when it is a string.
    pub tag: Option<String>,
    pub exchange: String,
    pub routing_key: Option<String>,
    pub priority: u8,
    pub redelivered: bool,
    /// The raw bytes are a JSON object, so they can be embedded verbatim in the unacked value.
    pub is_object: bool,
}

impl RedisFacts {
    fn of(v: &Value) -> Self {
        let props = &v["properties"];
        let info = &props["delivery_info"];
        let flag = |x: &Value| x.as_bool().unwrap_or(false);
        RedisFacts {
            tag: props["delivery_tag"].as_str().map(str::to_owned),
            exchange: info["exchange"].as_str().unwrap_or_default().to_owned(),
            routing_key: info["routing_key"].as_str().map(str::to_owned),
            priority: props["priority"]
                .as_u64()
                .map_or(0, |p| u8::try_from(p).unwrap_or(u8::MAX)),
            redelivered: flag(&info["redelivered"]) || flag(&v["headers"]["redelivered"]),
            is_object: v.is_object(),
        }
    }
}

/// The lenient facts alone (restoring or requeueing an entry: no task decode needed).
pub fn redis_facts(raw: &[u8]) -> RedisFacts {
    RedisFacts::of(&serde_json::from_slice(raw).unwrap_or(Value::Null))
}

/// One fetched Redis entry, parsed once: the transport's facts and the decoded task (or why it
/// is poison), from a single JSON parse of the envelope (the body's own parse follows).
pub fn read_redis(raw: &[u8]) -> (RedisFacts, Result<TaskMessage, DecodeError>) {
    match serde_json::from_slice::<Value>(raw) {
        Ok(v) => (RedisFacts::of(&v), decode_value(v)),
        Err(e) => (
            RedisFacts::of(&Value::Null),
            Err(DecodeError::Json(e.to_string())),
        ),
    }
}

/// Decode one Redis list entry (as BRPOPed or held in `unacked`) into a task.
pub fn decode_redis(raw: &[u8]) -> Result<TaskMessage, DecodeError> {
    read_redis(raw).1
}

/// The strict decode of a parsed envelope.
fn decode_value(v: Value) -> Result<TaskMessage, DecodeError> {
    let Value::Object(mut envelope) = v else {
        return Err(DecodeError::Json("envelope is not a JSON object".into()));
    };
    check_content_type(&envelope)?;
    let headers = take_object(&mut envelope, "headers", "headers")?;
    let properties = take_object(&mut envelope, "properties", "properties")?;
    let delivery_info = match properties.get("delivery_info") {
        Some(Value::Object(info)) => info,
        _ => return Err(DecodeError::Field("properties.delivery_info")),
    };
    let routing_key = match delivery_info.get("routing_key") {
        Some(Value::String(rk)) => rk.clone(),
        _ => return Err(DecodeError::Field("properties.delivery_info.routing_key")),
    };
    if !matches!(properties.get("delivery_tag"), Some(Value::String(_))) {
        return Err(DecodeError::Field("properties.delivery_tag"));
    }
    let priority = priority(properties.get("priority"))?;
    let body = body_bytes(envelope.get("body"), properties.get("body_encoding"))?;
    TaskMessage::from_v2(headers, &body, &routing_key, priority, properties)
}

/// `properties.delivery_tag`, read without decoding the rest, so even a poison message can be
/// acked or dead-lettered by tag.
pub fn delivery_tag(raw: &[u8]) -> Option<String> {
    redis_facts(raw).tag
}

/// What kombu does before restoring or requeueing an entry: `headers.redelivered = true` and
/// `properties.delivery_info.redelivered = true`, everything else (and key order) unchanged.
pub fn mark_redelivered(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut envelope = parse_object(raw)?;
    match envelope.get_mut("headers") {
        Some(Value::Object(headers)) => {
            headers.insert("redelivered".into(), Value::Bool(true));
        }
        _ => return Err(DecodeError::Field("headers")),
    }
    let info = envelope
        .get_mut("properties")
        .and_then(|p| p.get_mut("delivery_info"))
        .and_then(Value::as_object_mut)
        .ok_or(DecodeError::Field("properties.delivery_info"))?;
    info.insert("redelivered".into(), Value::Bool(true));
    Ok(py_json(&Value::Object(envelope)).into_bytes())
}

/// The full Redis list entry Celery 5.4's `apply_async` writes for `task`.
/// `delivery_tag` is a fresh uuid4 per publish; `reply_to` is the producer's oid.
///
/// A task with `retries > 0` is encoded as Celery's `self.retry()` publishes it (captured in
/// `proto/golden`): `argsrepr` is a tuple repr and `properties` carries `origin` after
/// `reply_to`, because the retry re-sends the request's execution options.
pub fn encode_redis(task: &OutgoingTask, delivery_tag: &str, reply_to: &str) -> Vec<u8> {
    let body = BASE64.encode(encode_amqp_body(task));
    let mut properties = Map::new();
    properties.insert("correlation_id".into(), json!(task.id));
    properties.insert("reply_to".into(), json!(reply_to));
    if is_retry(task) {
        properties.insert("origin".into(), json!(task.origin));
    }
    properties.insert("delivery_mode".into(), json!(2));
    properties.insert(
        "delivery_info".into(),
        json!({"exchange": "", "routing_key": task.queue}),
    );
    properties.insert("priority".into(), json!(task.priority));
    properties.insert("body_encoding".into(), json!("base64"));
    properties.insert("delivery_tag".into(), json!(delivery_tag));
    let envelope = json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": JSON_CONTENT_TYPE,
        "headers": Value::Object(v2_headers(task)),
        "properties": Value::Object(properties),
    });
    py_json(&envelope).into_bytes()
}

/// Only Celery's retry path publishes `retries > 0` (OutgoingTask has no other marker).
fn is_retry(task: &OutgoingTask) -> bool {
    task.retries > 0
}

/// `argsrepr`: `apply_async(args=[…])` writes a list repr; `.delay(…)` and a retry (which
/// re-sends the request's args tuple) write a tuple repr.
fn args_repr(task: &OutgoingTask) -> String {
    if is_retry(task) || task.argsrepr_tuple {
        py_tuple_repr(&task.args)
    } else {
        py_repr(&Value::Array(task.args.clone()))
    }
}

/// The serialized body `[args, kwargs, embed]` (raw on AMQP, base64'd inside the Redis entry).
pub fn encode_amqp_body(task: &OutgoingTask) -> Vec<u8> {
    let embed = json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null});
    let body = json!([task.args, task.kwargs, embed]);
    py_json(&body).into_bytes()
}

/// The 19 protocol-v2 headers in Celery's order (also the AMQP `application_headers`).
pub fn v2_headers(task: &OutgoingTask) -> Map<String, Value> {
    let headers = json!({
        "lang": "py",
        "task": task.name,
        "id": task.id,
        "shadow": null,
        "eta": task.eta.map(format_celery_time),
        "expires": null,
        "group": null,
        "group_index": null,
        "retries": task.retries,
        "timelimit": [limit_value(task.time_limit.0), limit_value(task.time_limit.1)],
        "root_id": task.root_id.clone().unwrap_or_else(|| task.id.clone()),
        "parent_id": task.parent_id,
        "argsrepr": args_repr(task),
        "kwargsrepr": py_repr(&Value::Object(task.kwargs.clone())),
        "origin": task.origin,
        "ignore_result": false,
        "replaced_task_nesting": 0,
        "stamped_headers": null,
        "stamps": {},
    });
    match headers {
        Value::Object(map) => map,
        _ => unreachable!("json! object literal"),
    }
}

/// MediaCMS declares its limits as Python ints (`2*60*60`), so whole seconds go out as ints.
fn limit_value(limit: Option<f64>) -> Value {
    match limit {
        None => Value::Null,
        // Exact: the guard admits only whole numbers well inside i64.
        #[allow(clippy::cast_possible_truncation)]
        Some(s) if s.fract() == 0.0 && s.abs() < 1e15 => json!(s as i64),
        Some(s) => json!(s),
    }
}

/// Decode an AMQP delivery: raw JSON body plus the header table already converted to JSON.
pub fn decode_amqp(
    body: &[u8],
    headers: Map<String, Value>,
    routing_key: &str,
    priority: Option<u8>,
) -> Result<TaskMessage, DecodeError> {
    TaskMessage::from_v2(
        headers,
        body,
        routing_key,
        priority.unwrap_or(0),
        Map::new(),
    )
}

fn parse_object(raw: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::Json("envelope is not a JSON object".into())),
        Err(e) => Err(DecodeError::Json(e.to_string())),
    }
}

fn take_object(
    map: &mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Map<String, Value>, DecodeError> {
    match map.remove(key) {
        Some(Value::Object(obj)) => Ok(obj),
        _ => Err(DecodeError::Field(field)),
    }
}

/// Only JSON bodies are accepted (MediaCMS sets `CELERY_ACCEPT_CONTENT=["application/json"]`;
/// a Python worker refuses pickle/yaml too).
fn check_content_type(envelope: &Map<String, Value>) -> Result<(), DecodeError> {
    match envelope.get("content-type") {
        Some(Value::String(ct)) if ct == JSON_CONTENT_TYPE => {}
        Some(Value::String(ct)) => return Err(DecodeError::ContentType(ct.clone())),
        Some(other) => return Err(DecodeError::ContentType(other.to_string())),
        None => return Err(DecodeError::ContentType("<missing>".into())),
    }
    match envelope.get("content-encoding") {
        None => Ok(()),
        Some(Value::String(enc)) if enc.eq_ignore_ascii_case("utf-8") => Ok(()),
        Some(other) => Err(DecodeError::ContentType(format!(
            "{JSON_CONTENT_TYPE}; encoding {other}"
        ))),
    }
}

fn priority(value: Option<&Value>) -> Result<u8, DecodeError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|p| u8::try_from(p).ok())
            .ok_or(DecodeError::Field("properties.priority")),
    }
}

/// kombu base64-encodes the body when `properties.body_encoding == "base64"` and leaves it as
/// a plain string otherwise.
fn body_bytes(body: Option<&Value>, encoding: Option<&Value>) -> Result<Vec<u8>, DecodeError> {
    let Some(Value::String(body)) = body else {
        return Err(DecodeError::Field("body"));
    };
    match encoding {
        Some(Value::String(enc)) if enc == "base64" => BASE64
            .decode(body.as_bytes())
            .map_err(|e| DecodeError::Base64(e.to_string())),
        None | Some(Value::Null) => Ok(body.clone().into_bytes()),
        Some(_) => Err(DecodeError::Field("properties.body_encoding")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_leniently() {
        let raw = br#"{"headers": {"redelivered": true}, "properties": {"priority": 9,
            "delivery_tag": "t-1", "delivery_info": {"exchange": "", "routing_key": "long_tasks"}}}"#;
        let (f, message) = read_redis(raw);
        assert_eq!(f.routing_key.as_deref(), Some("long_tasks"));
        assert_eq!(f.tag.as_deref(), Some("t-1"));
        assert_eq!((f.priority, f.redelivered, f.is_object), (9, true, true));
        assert!(message.is_err(), "no body: poison, but still bookkept");
        let (poison, message) = read_redis(b"\xffnot json");
        assert_eq!((poison.priority, poison.is_object), (0, false));
        assert_eq!((poison.routing_key, poison.tag), (None, None));
        assert!(matches!(message, Err(DecodeError::Json(_))));
        assert_eq!(redis_facts(raw), f);
    }
}
