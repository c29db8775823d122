//! One delivery's life after intake: hold until its ETA, wait for a job slot, run the handler
//! (or settle arguments that did not bind) under its cancel token and soft limit, then apply the
//! [`Settlement`] — the pool's only publishes, acks, requeues and result writes.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::dispatch::{self, Action, CancelReason, Settlement, Triage};
use super::state::{Phase, PoolState};
use super::{Core, ShutdownSignals};
use crate::broker::Delivery;
use crate::celery::args::{ArgsError, LongTask, Task};
use crate::celery::message::{OutgoingTask, TaskMessage};
use crate::clock::unix_now;
use crate::tasks::family::Family;
use crate::tasks::{JobContext, Outcome, Stop, StopCause, TaskHandler};

/// A held delivery's task: the decoded message and its arguments, bound once at intake.
pub(crate) struct Bound {
    pub message: TaskMessage,
    pub call: Result<LongTask, ArgsError>,
    pub handler: Arc<dyn TaskHandler>,
}

/// Time from now until `at` (zero if past).
fn until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

impl Core {
    /// Settle a delivery that never reaches a handler (unknown, expired, revoked, poison).
    pub(crate) async fn settle_now(&self, d: &Delivery, triage: Triage) {
        let now = Utc::now();
        let Ok(task) = &d.message else {
            if let Triage::DeadLetter(reason) = triage {
                tracing::error!(tag = %d.tag, queue = %d.queue, %reason, "undecodable message: dead-lettered");
                if let Err(e) = self.broker.dead_letter(d, &reason).await {
                    tracing::error!(tag = %d.tag, error = %e, "dead-letter failed");
                }
                if let Some(m) = &self.metrics {
                    m.dead_lettered(&reason);
                }
            }
            return;
        };
        let settlement = match triage {
            Triage::Unknown(name) => return self.unknown(d, task, &name).await,
            Triage::Expired => revoked(task, "expired", now),
            Triage::Revoked => revoked(task, "revoked", now),
            // Hold/Run always come with a handler and never reach here; leave it held, not lost.
            other => return tracing::error!(id = %task.id, ?other, "settle_now: nothing to settle"),
        };
        tracing::info!(task = %task.name, id = %task.id, "Discarding revoked/expired task");
        self.apply(d, task, settlement, false).await;
    }

    async fn unknown(&self, d: &Delivery, task: &TaskMessage, name: &str) {
        if let Some(queue) = &self.opts.forward_unknown_to {
            let forwarded = dispatch::forward_of(task, queue);
            let settlement = Settlement {
                follow_ups: Vec::new(),
                publish: Some(forwarded),
                result: None,
                action: Action::Ack,
            };
            tracing::info!(task = %name, id = %task.id, %queue, "forwarding unregistered task");
            return self.apply(d, task, settlement, false).await;
        }
        tracing::error!(
            "Received unregistered task of type '{name}'. The message has been ignored and discarded."
        );
        let result = Some(dispatch::not_registered_result(&task.id, name, Utc::now()));
        self.apply(d, task, Settlement::ack(result), false).await;
    }

    /// The whole life of a held delivery; `d` is already recorded in the state.
    pub(crate) async fn run_delivery(
        self: Arc<Self>,
        d: Delivery,
        bound: Bound,
        signals: ShutdownSignals,
        cancel: CancellationToken,
    ) {
        let task = &bound.message;
        if let Some(eta) = task.eta.filter(|eta| *eta > Utc::now()) {
            tokio::select! {
                _ = tokio::time::sleep(until(eta)) => self.state.set_phase(&d.lease, Phase::Reserved),
                _ = signals.stopping() => return self.give_back(&d).await,
                _ = cancel.cancelled() => return self.give_back(&d).await,
            }
        }
        let permit = tokio::select! {
            biased;
            p = self.slots.clone().acquire_owned() => p.expect("job slots are never closed"),
            _ = signals.stopping() => return self.give_back(&d).await,
            _ = cancel.cancelled() => return self.give_back(&d).await,
        };
        let now = Utc::now();
        // Not a second classification: only what can change while a task waits.
        match dispatch::stale(task, self.state.is_revoked(&task.id), now) {
            Some(Triage::Expired) => {
                return self
                    .apply(&d, task, revoked(task, "expired", now), false)
                    .await
            }
            Some(_) => {
                return self
                    .apply(&d, task, revoked(task, "revoked", now), false)
                    .await
            }
            None => {}
        }
        let started = std::time::Instant::now();
        let family = Family::of(task);
        let (outcome, reason) = self
            .execute(&d, &bound, cancel, &signals.abort, &family)
            .await;
        drop(permit);
        self.state.set_phase(&d.lease, Phase::Settling);
        // The follow-ups travel in the settlement; apply publishes them, nothing else does.
        let mut settlement =
            dispatch::settle(outcome, reason, task, Utc::now()).with_follow_ups(family.take());
        settlement.stamp_origin(&self.opts.origin);
        self.observe(task, &settlement, started.elapsed());
        self.apply(&d, task, settlement, true).await;
    }

    /// Run the handler with its job token (a child of abort) and the soft time limit.
    async fn execute(
        &self,
        d: &Delivery,
        bound: &Bound,
        cancel: CancellationToken,
        abort: &CancellationToken,
        family: &Family,
    ) -> (Outcome, Option<CancelReason>) {
        let task = &bound.message;
        self.state.start(&d.lease, unix_now());
        let soft = task
            .time_limit
            .1
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        let deadline = soft
            .or(self.opts.soft_time_limit)
            .map(|s| tokio::time::Instant::now() + s);
        if let Some(m) = &self.metrics {
            m.task_started(&task.name);
        }
        let ctx = JobContext {
            cancel: cancel.clone(),
            hostname: self.opts.hostname.clone(),
            deadline,
            fence: super::fence::fence_for(self, d, &cancel),
            stop: stop_cause(self.state.clone(), d.lease.clone(), abort.clone()),
        };
        tracing::info!(task = %task.name, id = %task.id, "Task {}[{}] received", task.name, task.id);
        let started = std::time::Instant::now();
        let job = async move {
            match &bound.call {
                Ok(call) => {
                    let call = call.clone();
                    let task = Task {
                        message: task,
                        call,
                    };
                    bound.handler.run(&task, ctx).await
                }
                Err(e) => dispatch::bad_args(e),
            }
        };
        let run = AssertUnwindSafe(family.clone().scope(job)).catch_unwind();
        tokio::pin!(run);
        let result = match deadline {
            None => run.await,
            Some(at) => tokio::select! {
                r = &mut run => r,
                _ = tokio::time::sleep_until(at) => {
                    tracing::warn!(id = %task.id, "soft time limit exceeded; cancelling");
                    self.state.cancel_job(&d.lease, CancelReason::SoftTimeLimit);
                    run.await
                }
            },
        };
        let outcome = result.unwrap_or_else(|_| {
            tracing::error!(id = %task.id, "task handler panicked");
            Outcome::Failure(dispatch::worker_lost_error("task handler panicked"))
        });
        let reason = self
            .state
            .cancel_reason(&d.lease)
            .or(abort.is_cancelled().then_some(CancelReason::Abort));
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(task = %task.name, id = %task.id, ?reason, "Task {}[{}] finished in {secs:.3}s", task.name, task.id);
        (outcome, reason)
    }

    async fn requeue_only(&self, d: &Delivery) {
        if let Err(e) = self.broker.requeue(d).await {
            tracing::error!(tag = %d.tag, error = %e, "requeue failed");
        }
        self.state.release(&d.lease, None);
    }

    /// Put a not-yet-started delivery back (shutdown while it waited for its ETA or a slot),
    /// unless its lease was lost: then it is another holder's and is only forgotten here.
    async fn give_back(&self, d: &Delivery) {
        if self.state.cancel_reason(&d.lease) == Some(CancelReason::LeaseLost) {
            tracing::warn!(tag = %d.tag, "lease lost before the task started: left to its new holder");
        } else if let Err(e) = self.broker.requeue(d).await {
            tracing::error!(tag = %d.tag, error = %e, "requeue failed");
        }
        self.state.release(&d.lease, None);
    }

    /// Apply a settlement in order: follow-ups, republish, result, then ack or requeue — the
    /// only place any of them happens. A failed republish requeues instead of acking, so a
    /// retry is never lost. `ran`: count it as processed.
    pub(crate) async fn apply(&self, d: &Delivery, task: &TaskMessage, s: Settlement, ran: bool) {
        let mut action = s.action;
        // The fence (idempotent when the handler already claimed it): a job that ran may have
        // stalled past its lease; then its effects — result, ack, follow-ups — are another
        // holder's to produce.
        if ran && (action == Action::Ack || !s.follow_ups.is_empty()) {
            match super::fence::claim(self, d).await {
                Some(true) => {}
                Some(false) => action = Action::Abandon,
                None => {
                    tracing::error!(id = %task.id, "cannot verify the lease: requeueing instead of finishing");
                    return self.requeue_only(d).await;
                }
            }
        }
        if action == Action::Abandon {
            tracing::warn!(id = %task.id, tag = %d.tag, "lease lost: nothing written, nothing acked");
            self.state.release(&d.lease, None);
            return;
        }
        let children = self.publish_follow_ups(&s.follow_ups).await;
        if let Some(out) = &s.publish {
            if let Err(e) = self.broker.publish(out).await {
                tracing::error!(id = %task.id, error = %e, "publish failed; requeueing instead of acking");
                action = Action::Requeue;
            }
        }
        if action == Action::Ack {
            // Celery's request trail: what the job sent is listed as its result's children.
            if let Some(r) = s.result.map(|r| r.with_children(children)) {
                if let Err(e) = self.results.store_result(&r).await {
                    tracing::error!(id = %task.id, error = %e, "storing the result failed");
                }
            }
        }
        let done = match action {
            Action::Ack => self.broker.ack(d).await,
            Action::Requeue | Action::Abandon => self.broker.requeue(d).await,
        };
        if let Err(e) = done {
            tracing::error!(tag = %d.tag, ?action, error = %e, "finishing the delivery failed");
        }
        let processed = (ran && action == Action::Ack).then_some(task.name.as_str());
        self.state.release(&d.lease, processed);
    }
}

impl Core {
    /// Publish a job's follow-ups in the order it handed them over; the ids published are its
    /// result's `children`. A failed one is logged only: the rows behind it are committed, and
    /// MediaCMS's own beat/admin actions regenerate HLS, so failing or re-running the task
    /// would only redo finished work.
    async fn publish_follow_ups(&self, follow_ups: &[OutgoingTask]) -> Vec<String> {
        let mut children = Vec::with_capacity(follow_ups.len());
        for t in follow_ups {
            match self.broker.publish(t).await {
                Ok(()) => {
                    tracing::info!(task = %t.name, id = %t.id, "published follow-up");
                    children.push(t.id.clone());
                }
                Err(e) => {
                    tracing::error!(task = %t.name, id = %t.id, error = %e, "publishing follow-up failed")
                }
            }
        }
        children
    }

    /// One finished job in the metrics catalogue (outcome from what the settlement does).
    fn observe(&self, task: &TaskMessage, s: &Settlement, took: Duration) {
        use crate::celery::result::TaskState;
        use crate::telemetry::OutcomeLabel as M;
        let Some(m) = &self.metrics else { return };
        let outcome = match (&s.action, s.result.as_ref().map(|r| r.state)) {
            (Action::Requeue | Action::Abandon, _) => M::Requeued,
            (_, Some(TaskState::Failure)) => M::Failure,
            (_, Some(TaskState::Retry)) => M::Retry,
            (_, Some(TaskState::Revoked)) => M::Revoked,
            _ => M::Success,
        };
        m.task_finished(&task.name, outcome, took);
    }
}

/// The handler's view of why its token fired: the pool's recorded reason, else a shutdown
/// abort (the abort token cancels every job token without recording a reason per job).
fn stop_cause(state: PoolState, lease: String, abort: CancellationToken) -> StopCause {
    StopCause::new(Arc::new(move || {
        let stop = match state.cancel_reason(&lease) {
            Some(CancelReason::Terminated) => Stop::Terminated,
            Some(CancelReason::SoftTimeLimit) => Stop::SoftTimeLimit,
            Some(CancelReason::LeaseLost) => Stop::LeaseLost,
            Some(CancelReason::Abort) => Stop::Shutdown,
            None if abort.is_cancelled() => Stop::Shutdown,
            None => return None,
        };
        Some(stop)
    }))
}

fn revoked(task: &TaskMessage, reason: &str, now: DateTime<Utc>) -> Settlement {
    Settlement::ack(Some(dispatch::revoked_result(&task.id, reason, now)))
}
