//! Pure dispatch decisions: what to do with a fresh delivery ([`classify`]), what arguments
//! that do not bind come to ([`bad_args`]), and how an [`Outcome`] becomes a result document,
//! an optional republish and an ack or requeue ([`settle`]).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::broker::Delivery;
use crate::celery::args::ArgsError;
use crate::celery::message::{OutgoingTask, TaskMessage};
use crate::celery::result::TaskResult;
use crate::tasks::{Outcome, TaskError};

/// What to do with a delivery right after it is fetched (or again just before it runs).
#[derive(Debug, Clone, PartialEq)]
pub enum Triage {
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

/// Classify a delivery. `known`: the name is registered; `revoked`: the id is in the revoked set.
pub fn classify(delivery: &Delivery, known: bool, revoked: bool, now: DateTime<Utc>) -> Triage {
    let task = match &delivery.message {
        Err(e) => return Triage::DeadLetter(e.to_string()),
        Ok(t) => t,
    };
    if !known {
        return Triage::Unknown(task.name.clone());
    }
    if let Some(gone) = stale(task, revoked, now) {
        return gone;
    }
    match task.eta {
        Some(eta) if eta > now => Triage::Hold(eta),
        _ => Triage::Run,
    }
}

/// Revoked or expired: checked at intake and again just before a held task runs (it may have
/// been revoked, or expired, while it waited for its ETA or a slot). `Some` is
/// [`Triage::Revoked`] or [`Triage::Expired`].
pub fn stale(task: &TaskMessage, revoked: bool, now: DateTime<Utc>) -> Option<Triage> {
    if revoked {
        return Some(Triage::Revoked);
    }
    task.expires
        .is_some_and(|exp| exp < now)
        .then_some(Triage::Expired)
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
    /// Our lease is lost: another worker holds the delivery now. Stop, touch nothing.
    LeaseLost,
}

/// What finishing a delivery means for the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Ack,
    Requeue,
    /// The lease is lost: no result, no publish, no ack or requeue — the delivery is its new
    /// holder's.
    Abandon,
}

/// Every effect of finishing one delivery, applied in order by the pool's apply step:
/// follow-ups, republish, result (with the published follow-ups as `children`), ack/requeue.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// What the job handed over to be sent (create_hls, chunk encodes, update_search_vector),
    /// already children of the task; published only once the lease fence is claimed.
    pub follow_ups: Vec<OutgoingTask>,
    /// The task itself again: a retry, or an unknown name forwarded. Its publish must succeed,
    /// else the delivery is requeued instead of acked.
    pub publish: Option<OutgoingTask>,
    pub result: Option<TaskResult>,
    pub action: Action,
}

impl Settlement {
    /// The follow-ups the job handed over (its family's), to publish when it settles.
    pub fn with_follow_ups(mut self, follow_ups: Vec<OutgoingTask>) -> Self {
        self.follow_ups = follow_ups;
        self
    }

    /// What the job sends goes out as ours unless it names its producer already (a retry
    /// keeps the request's `origin`).
    pub fn stamp_origin(&mut self, origin: &str) {
        let sent = self.follow_ups.iter_mut().chain(self.publish.as_mut());
        sent.for_each(|t| t.stamp_origin(origin));
    }

    pub(crate) fn ack(result: Option<TaskResult>) -> Self {
        Self {
            follow_ups: Vec::new(),
            publish: None,
            result,
            action: Action::Ack,
        }
    }
    fn requeue() -> Self {
        Self {
            follow_ups: Vec::new(),
            publish: None,
            result: None,
            action: Action::Requeue,
        }
    }
}

/// Arguments that do not fit the task's signature: Python raises `TypeError` before the task
/// body runs, so the result is that FAILURE and nothing else happens. Decided here, once, for
/// every task name (the handler never runs).
pub fn bad_args(e: &ArgsError) -> Outcome {
    Outcome::Failure(TaskError::new("TypeError", "builtins", e.to_string()))
}

/// REVOKED with `TaskRevokedError(reason)` (reason: revoked | terminated | expired | …).
pub fn revoked_result(task_id: &str, reason: &str, now: DateTime<Utc>) -> TaskResult {
    TaskResult::revoked(task_id, reason, now)
}

/// FAILURE `NotRegistered(name)`, what Celery stores for an unknown task name (§4.6).
pub fn not_registered_result(task_id: &str, name: &str, now: DateTime<Utc>) -> TaskResult {
    TaskResult::failure(task_id, "NotRegistered", "celery.exceptions", name, now)
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
    if reason == Some(CancelReason::LeaseLost) {
        return Settlement {
            follow_ups: Vec::new(),
            publish: None,
            result: None,
            action: Action::Abandon,
        };
    }
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
    let mut settlement = match outcome {
        Outcome::Success(_) if ignores_result(task) => Settlement::ack(None),
        Outcome::Success(v) => Settlement::ack(Some(TaskResult::success(id, v, now))),
        Outcome::Failure(e) => Settlement::ack(Some(TaskResult::failure(
            id,
            &e.exc_type,
            &e.exc_module,
            &e.message,
            now,
        ))),
        Outcome::Retry { countdown, error } => Settlement {
            follow_ups: Vec::new(),
            publish: Some(OutgoingTask::retry_of(task, countdown, now)),
            result: Some(TaskResult::retry(
                id,
                &error.exc_type,
                &error.exc_module,
                &error.message,
                now,
            )),
            action: Action::Ack,
        },
        Outcome::Revoked(reason) => Settlement::ack(Some(revoked_result(id, &reason, now))),
        Outcome::Aborted => Settlement::requeue(),
    };
    // Celery writes the request's parent_id into every result of a child task.
    settlement.result = settlement
        .result
        .map(|r| r.with_parent(task.parent_id.clone()));
    settlement
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
        // Forwarded as received: a tuple repr stays a tuple.
        argsrepr_tuple: task
            .headers
            .get("argsrepr")
            .and_then(Value::as_str)
            .is_some_and(|r| r.starts_with('(')),
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
