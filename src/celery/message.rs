//! Protocol-v2 task messages: decoded [`TaskMessage`] and the [`OutgoingTask`] we publish.
//! Decoding is shared by both transports ([`TaskMessage::from_v2`]); the transport framing lives
//! in [`super::envelope`], Python renderings in [`super::python`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::time::parse_celery_time_field;

/// Why a message could not be decoded. Each variant is a poison class with a deliberate
/// disposition (dead-letter), never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("envelope is not valid JSON: {0}")]
    Json(String),
    #[error("body is not valid base64: {0}")]
    Base64(String),
    #[error("missing or invalid field `{0}`")]
    Field(&'static str),
    #[error("body must be [args, kwargs, embed]: {0}")]
    Body(String),
    #[error("unsupported content type `{0}`")]
    ContentType(String),
    #[error("bad timestamp in `{field}`: {value}")]
    Time { field: &'static str, value: String },
}

/// One decoded Celery task (protocol v2), transport-independent.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// `headers.task`: the Celery task name.
    pub name: String,
    /// `headers.id`: the task id (uuid string).
    pub id: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    /// The third body element (`callbacks`, `errbacks`, `chain`, `chord`).
    pub embed: Value,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub retries: u32,
    /// `timelimit` is `[hard, soft]` in seconds.
    pub time_limit: (Option<f64>, Option<f64>),
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    /// Message priority as sent (0..=9; 0 when absent).
    pub priority: u8,
    /// The routing key / queue from `delivery_info`.
    pub routing_key: String,
    /// All headers as received (kept so a retry/restore re-encodes what Celery would).
    pub headers: Map<String, Value>,
    /// All properties as received (Redis envelope only; empty on AMQP).
    pub properties: Map<String, Value>,
}

/// A task we publish (create_hls, post_trim_action, update_search_vector, a retry).
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingTask {
    pub name: String,
    pub id: String,
    pub queue: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub priority: u8,
    pub eta: Option<DateTime<Utc>>,
    pub retries: u32,
    pub time_limit: (Option<f64>, Option<f64>),
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    /// `origin` header: `gen<pid>@<host>` in Celery. Empty until the publisher stamps its own
    /// ([`OutgoingTask::stamp_origin`]; the pool does it for everything a job sends).
    pub origin: String,
    /// `argsrepr` as a tuple (`"('tok',)"`), as `.delay(…)` writes it (MediaCMS's signals call
    /// `create_hls.delay(token)`); `false` is `apply_async(args=[…])`'s list repr.
    pub argsrepr_tuple: bool,
}

pub use super::python::{py_json, py_repr, py_tuple_repr};

impl TaskMessage {
    /// Build a task from protocol-v2 `headers` and the serialized body `[args, kwargs, embed]`.
    /// Shared by the Redis envelope and AMQP; `properties` is empty on AMQP.
    pub fn from_v2(
        headers: Map<String, Value>,
        body: &[u8],
        routing_key: &str,
        priority: u8,
        properties: Map<String, Value>,
    ) -> Result<Self, DecodeError> {
        let (args, kwargs, embed) = parse_body(body)?;
        Ok(TaskMessage {
            name: req_str(&headers, "task", "headers.task")?,
            id: req_str(&headers, "id", "headers.id")?,
            args,
            kwargs,
            embed,
            eta: opt_time(&headers, "eta")?,
            expires: opt_time(&headers, "expires")?,
            retries: retries(&headers)?,
            time_limit: time_limit(&headers)?,
            root_id: opt_str(&headers, "root_id", "headers.root_id")?,
            parent_id: opt_str(&headers, "parent_id", "headers.parent_id")?,
            priority,
            routing_key: routing_key.to_owned(),
            headers,
            properties,
        })
    }

    /// Whether a broker marked this delivery as redelivered (restore or requeue).
    pub fn redelivered(&self) -> bool {
        let in_info = self
            .properties
            .get("delivery_info")
            .and_then(|d| d.get("redelivered"));
        [in_info, self.headers.get("redelivered")]
            .into_iter()
            .any(|v| v == Some(&Value::Bool(true)))
    }
}

/// `[args, kwargs, embed]`.
type Body = (Vec<Value>, Map<String, Value>, Value);

/// Split the body into `[args, kwargs, embed]`; Celery's 2-element legacy body is rejected
/// because a Python worker crashes on it (celery-wire §2.2) and we never want to pass it on.
fn parse_body(body: &[u8]) -> Result<Body, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Body(format!("not JSON: {e}")))?;
    let Value::Array(parts) = value else {
        return Err(DecodeError::Body("not a JSON array".into()));
    };
    let [args, kwargs, embed]: [Value; 3] = parts
        .try_into()
        .map_err(|p: Vec<Value>| DecodeError::Body(format!("{} elements, want 3", p.len())))?;
    let Value::Array(args) = args else {
        return Err(DecodeError::Body("args is not a list".into()));
    };
    let Value::Object(kwargs) = kwargs else {
        return Err(DecodeError::Body("kwargs is not an object".into()));
    };
    if !matches!(embed, Value::Object(_) | Value::Null) {
        return Err(DecodeError::Body("embed is not an object or null".into()));
    }
    Ok((args, kwargs, embed))
}

fn req_str(
    map: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<String, DecodeError> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(DecodeError::Field(field)),
    }
}

fn opt_str(
    map: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DecodeError::Field(field)),
    }
}

fn opt_time(
    headers: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<DateTime<Utc>>, DecodeError> {
    match headers.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_celery_time_field(key, s).map(Some),
        Some(other) => Err(DecodeError::Time {
            field: key,
            value: other.to_string().chars().take(64).collect(),
        }),
    }
}

fn retries(headers: &Map<String, Value>) -> Result<u32, DecodeError> {
    match headers.get("retries") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(DecodeError::Field("headers.retries")),
    }
}

fn time_limit(headers: &Map<String, Value>) -> Result<(Option<f64>, Option<f64>), DecodeError> {
    let bad = DecodeError::Field("headers.timelimit");
    let limit = |v: &Value| match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(Some).ok_or(bad.clone()),
        _ => Err(bad.clone()),
    };
    match headers.get("timelimit") {
        None | Some(Value::Null) => Ok((None, None)),
        Some(Value::Array(pair)) if pair.len() == 2 => Ok((limit(&pair[0])?, limit(&pair[1])?)),
        Some(_) => Err(bad.clone()),
    }
}

impl OutgoingTask {
    /// A fresh task as `apply_async(args=[…], kwargs={…})` would send it: new uuid4 id, root
    /// id = id, priority 0, no ETA, no time limits (set `time_limit` for tasks that declare one).
    pub fn new(name: &str, queue: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        OutgoingTask {
            name: name.to_owned(),
            root_id: Some(id.clone()),
            id,
            queue: queue.to_owned(),
            args,
            kwargs,
            priority: 0,
            eta: None,
            retries: 0,
            time_limit: (None, None),
            parent_id: None,
            origin: String::new(),
            argsrepr_tuple: false,
        }
    }

    /// Sent by `origin` unless it already names its producer (a retry keeps the request's).
    pub fn stamp_origin(&mut self, origin: &str) {
        if self.origin.is_empty() {
            origin.clone_into(&mut self.origin);
        }
    }

    /// Published from inside `parent` as Celery does from a running task: `parent_id` is the
    /// parent's id and `root_id` its root (the parent itself when it has none).
    pub fn child_of(mut self, parent: &TaskMessage) -> Self {
        self.parent_id = Some(parent.id.clone());
        self.root_id = Some(parent.root_id.clone().unwrap_or_else(|| parent.id.clone()));
        self
    }

    /// The message Celery's `self.retry(countdown=…)` publishes for `task`: same id, name,
    /// args, kwargs, priority and time limits; `retries + 1`; ETA `now + countdown`; the
    /// retried task as parent; same root (celery-wire §5, mediacms-contract §1.2). Like Celery,
    /// the request's `origin` is kept (ours, stamped by the publisher, when the header is
    /// missing).
    pub fn retry_of(task: &TaskMessage, countdown: Duration, now: DateTime<Utc>) -> Self {
        let origin = match task.headers.get("origin") {
            Some(Value::String(o)) => o.clone(),
            _ => String::new(),
        };
        let countdown = chrono::Duration::from_std(countdown).unwrap_or(chrono::Duration::MAX);
        OutgoingTask {
            name: task.name.clone(),
            id: task.id.clone(),
            queue: task.routing_key.clone(),
            args: task.args.clone(),
            kwargs: task.kwargs.clone(),
            priority: task.priority,
            eta: Some(now.checked_add_signed(countdown).unwrap_or(now)),
            retries: task.retries.saturating_add(1),
            time_limit: task.time_limit,
            root_id: Some(task.root_id.clone().unwrap_or_else(|| task.id.clone())),
            parent_id: Some(task.id.clone()),
            origin,
            argsrepr_tuple: true,
        }
    }
}

/// Celery's anonymous producer node name, `gen<pid>@<host>`; the host name is read by the
/// caller (an adapter: `app::host_name`), never by this codec.
pub fn origin_of(pid: u32, host: &str) -> String {
    format!("gen{pid}@{host}")
}
