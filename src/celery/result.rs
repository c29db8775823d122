//! Celery result documents as the Redis backend stores them (`celery-task-meta-<id>`).

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Success,
    Failure,
    Retry,
    Revoked,
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
}
