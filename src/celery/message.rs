//! Protocol-v2 task messages: decoded [`TaskMessage`] and the [`OutgoingTask`] we publish.
//! (Skeleton contract; the codec helper fills in the functions and tests.)

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

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
    /// `origin` header: `gen<pid>@<host>` in Celery.
    pub origin: String,
}
