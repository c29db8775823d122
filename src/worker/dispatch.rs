//! Pure dispatch decisions: what to do with a fresh delivery ([`classify`]) and how an
//! [`Outcome`] becomes a result document, an optional republish and an ack or requeue ([`settle`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::broker::Delivery;
use crate::celery::message::{OutgoingTask, TaskMessage};
use crate::celery::result::{TaskResult, TaskState};
use crate::tasks::{Outcome, TaskError};

/// What to do with a delivery right after it is fetched (or again just before it runs).
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Undecodable: park it in the dead-letter list with this reason.
    DeadLetter(String),
    /// No handler for this task name.
    Unknown(String),
    /// `expires` has passed: REVOKED("expired"), ack, skip.
    Expired,
    /// Its id is in the revoked set: REVOKED("revoked"), ack, skip.
    Revoked,
    /// Hold (unacked, lease renewed) until the ETA, then run.
    Hold(DateTime<Utc>),
    /// Run as soon as a job slot is free.
    Run,
}

/// Classify a delivery. `known`: a handler exists; `revoked`: the id is in the revoked set.
pub fn classify(
    delivery: &Delivery,
    known: bool,
    revoked: bool,
    now: DateTime<Utc>,
) -> Disposition {
    let task = match &delivery.message {
        Err(e) => return Disposition::DeadLetter(e.to_string()),
        Ok(t) => t,
    };
    if !known {
        return Disposition::Unknown(task.name.clone());
    }
    if revoked {
        return Disposition::Revoked;
    }
    if task.expires.is_some_and(|exp| exp < now) {
        return Disposition::Expired;
    }
    match task.eta {
        Some(eta) if eta > now => Disposition::Hold(eta),
        _ => Disposition::Run,
    }
}

/// Why the pool cancelled a running job's token (decides how its outcome is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `revoke(terminate=True)`.
    Terminated,
    /// The soft time limit passed.
    SoftTimeLimit,
    /// Shutdown abort (deadline or second signal).
    Abort,
}

/// What finishing a delivery means for the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Ack,
    Requeue,
}

/// Every effect of finishing one delivery, applied in order: publish, store result, ack/requeue.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub publish: Option<OutgoingTask>,
    pub result: Option<TaskResult>,
    pub action: Action,
}

impl Settlement {
    fn ack(result: Option<TaskResult>) -> Self {
        Self {
            publish: None,
            result,
            action: Action::Ack,
        }
    }
    fn requeue() -> Self {
        Self {
            publish: None,
            result: None,
            action: Action::Requeue,
        }
    }
}

/// Celery's exception value `{exc_type, exc_message: [..], exc_module}`; an empty message means
/// an exception raised without arguments (`exc_message: []`).
pub fn exception_value(e: &TaskError) -> Value {
    let args: Vec<&str> = if e.message.is_empty() {
        vec![]
    } else {
        vec![e.message.as_str()]
    };
    json!({"exc_type": e.exc_type, "exc_message": args, "exc_module": e.exc_module})
}

fn result_doc(task_id: &str, state: TaskState, result: Value, now: DateTime<Utc>) -> TaskResult {
    TaskResult {
        task_id: task_id.to_owned(),
        state,
        result,
        traceback: None,
        date_done: now,
    }
}

/// REVOKED with `TaskRevokedError(reason)` (reason: revoked | terminated | expired | …).
pub fn revoked_result(task_id: &str, reason: &str, now: DateTime<Utc>) -> TaskResult {
    let e = TaskError::new("TaskRevokedError", "celery.exceptions", reason);
    result_doc(task_id, TaskState::Revoked, exception_value(&e), now)
}

/// FAILURE `NotRegistered(name)`, what Celery stores for an unknown task name (§4.6).
pub fn not_registered_result(task_id: &str, name: &str, now: DateTime<Utc>) -> TaskResult {
    let e = TaskError::new("NotRegistered", "celery.exceptions", name);
    result_doc(task_id, TaskState::Failure, exception_value(&e), now)
}

/// What billiard raises at the soft limit (no arguments, module `billiard.exceptions`).
pub fn soft_time_limit_error() -> TaskError {
    TaskError::new("SoftTimeLimitExceeded", "billiard.exceptions", "")
}

/// What Celery reports when the process running a task dies; used for a panicking handler.
pub fn worker_lost_error(detail: &str) -> TaskError {
    TaskError::new("WorkerLostError", "billiard.exceptions", detail)
}

fn ignores_result(task: &TaskMessage) -> bool {
    task.headers.get("ignore_result").and_then(Value::as_bool) == Some(true)
}

/// Map a finished job to its effects. `reason` is why the pool cancelled it, if it did.
pub fn settle(
    outcome: Outcome,
    reason: Option<CancelReason>,
    task: &TaskMessage,
    now: DateTime<Utc>,
) -> Settlement {
    let outcome = match (reason, outcome) {
        // Celery: a terminated task is REVOKED("terminated") whatever it was doing.
        (Some(CancelReason::Terminated), _) => Outcome::Revoked("terminated".into()),
        // Work that completed before the abort landed is kept; anything else runs again later.
        (Some(CancelReason::Abort), o @ Outcome::Success(_)) => o,
        (Some(CancelReason::Abort), _) => Outcome::Aborted,
        // The handler saw its token cancelled and gave up: that is the soft limit's exception.
        (Some(CancelReason::SoftTimeLimit), Outcome::Aborted | Outcome::Revoked(_)) => {
            Outcome::Failure(soft_time_limit_error())
        }
        (_, o) => o,
    };
    let id = task.id.as_str();
    match outcome {
        Outcome::Success(_) if ignores_result(task) => Settlement::ack(None),
        Outcome::Success(v) => Settlement::ack(Some(result_doc(id, TaskState::Success, v, now))),
        Outcome::Failure(e) => Settlement::ack(Some(result_doc(
            id,
            TaskState::Failure,
            exception_value(&e),
            now,
        ))),
        Outcome::Retry { countdown, error } => Settlement {
            publish: Some(retry_of(task, countdown, now)),
            result: Some(result_doc(
                id,
                TaskState::Retry,
                exception_value(&error),
                now,
            )),
            action: Action::Ack,
        },
        Outcome::Revoked(reason) => Settlement::ack(Some(revoked_result(id, &reason, now))),
        Outcome::Aborted => Settlement::requeue(),
    }
}

/// Celery's `self.retry(countdown=…)`: same id, `retries + 1`, ETA now + countdown, same queue and
/// priority, `parent_id` = own id. (Local until the codec's `OutgoingTask::retry_of` lands.)
pub fn retry_of(task: &TaskMessage, countdown: Duration, now: DateTime<Utc>) -> OutgoingTask {
    let eta = chrono::Duration::from_std(countdown).ok().map(|c| now + c);
    OutgoingTask {
        retries: task.retries + 1,
        eta: eta.or(Some(now)),
        parent_id: Some(task.id.clone()),
        ..forward_of(task, &task.routing_key)
    }
}

/// The same task, addressed to `queue` (forwarding an unknown name, or the base of a retry).
pub fn forward_of(task: &TaskMessage, queue: &str) -> OutgoingTask {
    let origin = task
        .headers
        .get("origin")
        .and_then(Value::as_str)
        .unwrap_or_default();
    OutgoingTask {
        name: task.name.clone(),
        id: task.id.clone(),
        queue: queue.to_owned(),
        args: task.args.clone(),
        kwargs: task.kwargs.clone(),
        priority: task.priority,
        eta: task.eta,
        retries: task.retries,
        time_limit: task.time_limit,
        root_id: task.root_id.clone(),
        parent_id: task.parent_id.clone(),
        origin: origin.to_owned(),
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
