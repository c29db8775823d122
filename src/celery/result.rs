//! Celery result documents as the Redis backend stores them (`celery-task-meta-<id>`).
//!
//! Layout (celery-wire §5): `{"status", "result", "traceback", "children": [], "date_done",
//! "task_id"}` in that order, Python `json.dumps` separators. Exceptions are
//! `{"exc_type", "exc_message": [message], "exc_module"}`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::python::py_json;
use super::time::format_celery_time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Success,
    Failure,
    Retry,
    Revoked,
}

impl TaskState {
    /// The `status` string Celery writes.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
        }
    }
}

/// One result document: `{status, result, traceback, children, date_done, task_id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub task_id: String,
    pub state: TaskState,
    /// SUCCESS: the return value; otherwise `{exc_type, exc_message: [..], exc_module}`.
    pub result: Value,
    pub traceback: Option<String>,
    pub date_done: DateTime<Utc>,
    /// Ids of the tasks published while it ran (Celery's `request.children`), in order.
    pub children: Vec<String>,
    /// The `parent_id` of the message that ran; Celery writes the key only when it is set.
    pub parent_id: Option<String>,
}

/// Celery's serialized exception: `{"exc_type", "exc_message": [message], "exc_module"}`; an
/// empty message is an exception raised without arguments (`exc_message: []`).
pub fn exception_value(exc_type: &str, exc_module: &str, message: &str) -> Value {
    let args: Vec<&str> = if message.is_empty() {
        vec![]
    } else {
        vec![message]
    };
    json!({"exc_type": exc_type, "exc_message": args, "exc_module": exc_module})
}

impl TaskResult {
    /// SUCCESS with the task's return value (MediaCMS tasks return `true`/`false`/`null`).
    pub fn success(task_id: &str, value: Value, now: DateTime<Utc>) -> Self {
        Self::new(task_id, TaskState::Success, value, now)
    }

    /// FAILURE for an exception such as `("ValueError", "builtins", "ffmpeg failed")`.
    pub fn failure(
        task_id: &str,
        exc_type: &str,
        exc_module: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self::raised(
            task_id,
            TaskState::Failure,
            (exc_type, exc_module, message),
            now,
        )
    }

    /// RETRY, written after the retry message is published; same exception shape as FAILURE.
    /// `now` is kept on the value but not written (`date_done` is null for RETRY).
    pub fn retry(
        task_id: &str,
        exc_type: &str,
        exc_module: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self::raised(
            task_id,
            TaskState::Retry,
            (exc_type, exc_module, message),
            now,
        )
    }

    /// REVOKED with reason `"revoked"`, `"terminated"` or `"expired"` (`TaskRevokedError`).
    pub fn revoked(task_id: &str, reason: &str, now: DateTime<Utc>) -> Self {
        let exc = exception_value("TaskRevokedError", "celery.exceptions", reason);
        Self::new(task_id, TaskState::Revoked, exc, now)
    }

    /// Attach a traceback text (Python writes one for FAILURE/RETRY).
    pub fn with_traceback(mut self, traceback: impl Into<String>) -> Self {
        self.traceback = Some(traceback.into());
        self
    }

    /// The tasks it published, listed as `children` (each an `AsyncResult` tuple).
    pub fn with_children(mut self, children: Vec<String>) -> Self {
        self.children = children;
        self
    }

    /// The message's `parent_id`, written after `date_done` as Celery does.
    pub fn with_parent(mut self, parent_id: Option<String>) -> Self {
        self.parent_id = parent_id;
        self
    }

    /// A document whose result is an exception `(exc_type, exc_module, message)`.
    fn raised(
        task_id: &str,
        state: TaskState,
        exc: (&str, &str, &str),
        now: DateTime<Utc>,
    ) -> Self {
        let value = exception_value(exc.0, exc.1, exc.2);
        Self::new(task_id, state, value, now)
    }

    fn new(task_id: &str, state: TaskState, result: Value, now: DateTime<Utc>) -> Self {
        TaskResult {
            task_id: task_id.to_owned(),
            state,
            result,
            traceback: None,
            date_done: now,
            children: Vec::new(),
            parent_id: None,
        }
    }
}

/// The JSON text stored with SETEX and PUBLISHed on `celery-task-meta-<id>`.
/// Captured in `proto/golden`: Celery sets `date_done` only for ready states, so a RETRY
/// document has `"date_done": null`, and it lists the republished retry (same id) as its one
/// child. Children are `AsyncResult` tuples, `[[id, null], null]`; `parent_id` comes between
/// `date_done` and `task_id`, and only when the message had one.
pub fn encode_result(r: &TaskResult) -> String {
    let child = |id: &String| json!([[id, null], null]);
    let (date_done, children): (Value, Vec<Value>) = match r.state {
        TaskState::Retry => (Value::Null, vec![child(&r.task_id)]),
        _ => (
            Value::String(format_celery_time(r.date_done)),
            r.children.iter().map(child).collect(),
        ),
    };
    let mut doc = serde_json::Map::new();
    doc.insert("status".into(), json!(r.state.as_str()));
    doc.insert("result".into(), r.result.clone());
    doc.insert("traceback".into(), json!(r.traceback));
    doc.insert("children".into(), Value::Array(children));
    doc.insert("date_done".into(), date_done);
    if let Some(parent) = &r.parent_id {
        doc.insert("parent_id".into(), json!(parent));
    }
    doc.insert("task_id".into(), json!(r.task_id));
    py_json(&Value::Object(doc))
}

/// The Redis key (and PUBLISH channel) of a task's result.
pub fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn unknown_task_failure_matches_capture() {
        // celery-wire §4.6, captured from celery 5.7 (same layout as 5.4).
        let now = Utc.timestamp_micros(1_795_747_632_343_541).unwrap();
        let r = TaskResult::failure(
            "820c781b",
            "NotRegistered",
            "celery.exceptions",
            "no_such_task",
            now,
        );
        assert_eq!(
            encode_result(&r),
            r#"{"status": "FAILURE", "result": {"exc_type": "NotRegistered", "exc_message": ["no_such_task"], "exc_module": "celery.exceptions"}, "traceback": null, "children": [], "date_done": "2026-11-27T02:47:12.343541+00:00", "task_id": "820c781b"}"#
        );
        assert_eq!(result_key("x"), "celery-task-meta-x");
    }
}
