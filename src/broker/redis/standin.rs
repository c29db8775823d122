//! TEMPORARY stand-in for `crate::celery::envelope` / `crate::celery::result` until the codec
//! branch lands on main; same signatures, minimal behaviour. Delete when switching over.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::celery::message::{DecodeError, OutgoingTask, TaskMessage};
use crate::celery::result::{TaskResult, TaskState};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn envelope(raw: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::from_slice(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(DecodeError::Json("not an object".into())),
        Err(e) => Err(DecodeError::Json(e.to_string())),
    }
}

fn time(h: &Map<String, Value>, field: &'static str) -> Result<Option<DateTime<Utc>>, DecodeError> {
    match h.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| DecodeError::Time {
                field,
                value: s.clone(),
            }),
        Some(v) => Err(DecodeError::Time {
            field,
            value: v.to_string(),
        }),
    }
}

pub fn decode_redis(raw: &[u8]) -> Result<TaskMessage, DecodeError> {
    let env = envelope(raw)?;
    let obj = |k: &'static str| match env.get(k) {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(DecodeError::Field(k)),
    };
    let (headers, properties) = (obj("headers")?, obj("properties")?);
    let body = env
        .get("body")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Field("body"))?;
    let body = B64
        .decode(body)
        .map_err(|e| DecodeError::Base64(e.to_string()))?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| DecodeError::Body(e.to_string()))?;
    let Some([args, kwargs, embed]) = body
        .as_array()
        .and_then(|a| <&[Value; 3]>::try_from(a.as_slice()).ok())
    else {
        return Err(DecodeError::Body("not a 3-element array".into()));
    };
    let text = |k: &'static str| headers.get(k).and_then(Value::as_str).map(str::to_owned);
    let lim = |i: usize| {
        headers
            .get("timelimit")
            .and_then(|t| t.get(i))
            .and_then(Value::as_f64)
    };
    Ok(TaskMessage {
        name: text("task").ok_or(DecodeError::Field("task"))?,
        id: text("id").ok_or(DecodeError::Field("id"))?,
        args: args.as_array().cloned().ok_or(DecodeError::Field("args"))?,
        kwargs: kwargs
            .as_object()
            .cloned()
            .ok_or(DecodeError::Field("kwargs"))?,
        embed: embed.clone(),
        eta: time(&headers, "eta")?,
        expires: time(&headers, "expires")?,
        retries: headers.get("retries").and_then(Value::as_u64).unwrap_or(0) as u32,
        time_limit: (lim(0), lim(1)),
        root_id: text("root_id"),
        parent_id: text("parent_id"),
        priority: properties
            .get("priority")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u8,
        routing_key: properties["delivery_info"]["routing_key"]
            .as_str()
            .ok_or(DecodeError::Field("delivery_info"))?
            .to_owned(),
        headers,
        properties,
    })
}

pub fn delivery_tag(raw: &[u8]) -> Option<String> {
    let env = envelope(raw).ok()?;
    env.get("properties")?
        .get("delivery_tag")?
        .as_str()
        .map(str::to_owned)
}

pub fn mark_redelivered(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut env = Value::Object(envelope(raw)?);
    if let Some(h) = env["headers"].as_object_mut() {
        h.insert("redelivered".into(), Value::Bool(true));
    }
    if let Some(i) = env["properties"]["delivery_info"].as_object_mut() {
        i.insert("redelivered".into(), Value::Bool(true));
    }
    Ok(env.to_string().into_bytes())
}

pub fn encode_redis(task: &OutgoingTask, delivery_tag: &str, reply_to: &str) -> Vec<u8> {
    let body = json!([task.args, task.kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    let eta = task
        .eta
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, false));
    let headers = json!({
        "lang": "py", "task": task.name, "id": task.id, "shadow": null, "eta": eta,
        "expires": null, "group": null, "group_index": null, "retries": task.retries,
        "timelimit": [task.time_limit.0, task.time_limit.1],
        "root_id": task.root_id.clone().unwrap_or_else(|| task.id.clone()),
        "parent_id": task.parent_id, "argsrepr": Value::Array(task.args.clone()).to_string(),
        "kwargsrepr": Value::Object(task.kwargs.clone()).to_string(), "origin": task.origin,
        "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}
    });
    json!({
        "body": B64.encode(body.to_string()), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": headers,
        "properties": {
            "correlation_id": task.id, "reply_to": reply_to, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": task.queue},
            "priority": task.priority, "body_encoding": "base64", "delivery_tag": delivery_tag
        }
    })
    .to_string()
    .into_bytes()
}

pub fn encode_result(r: &TaskResult) -> String {
    let status = match r.state {
        TaskState::Success => "SUCCESS",
        TaskState::Failure => "FAILURE",
        TaskState::Retry => "RETRY",
        TaskState::Revoked => "REVOKED",
    };
    json!({
        "status": status, "result": r.result, "traceback": r.traceback, "children": [],
        "date_done": r.date_done.to_rfc3339_opts(SecondsFormat::Micros, false),
        "task_id": r.task_id
    })
    .to_string()
}
