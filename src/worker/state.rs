//! [`PoolState`]: the pool's bookkeeping of held deliveries (scheduled, reserved, active), the
//! revoked set and processed counters, behind a cheap shared handle for pidbox and metrics.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::dispatch::CancelReason;
use crate::broker::{DeliveryTag, LeaseId};
use crate::celery::control::{TaskInfo, WorkerSnapshot};
use crate::celery::message::TaskMessage;

/// Celery keeps at most this many revoked ids (its `LimitedSet` default); the oldest go first.
const REVOKED_CAP: usize = 50_000;

/// Where a held delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its ETA (does not count against prefetch: Celery's `increment_eventually`).
    Scheduled,
    /// Waiting for a job slot.
    Reserved,
    /// Running.
    Active,
    /// The handler returned; its result and ack are being written. Does not count against
    /// prefetch, so the next fetch overlaps these writes (Celery acks before running, so its
    /// next fetch never waits for them either). Reported nowhere: the task is over.
    Settling,
}

struct Job {
    seq: u64,
    /// The kombu delivery tag (two holdings of one restored delivery share it).
    tag: DeliveryTag,
    info: TaskInfo,
    phase: Phase,
    /// Cancelled when the pool stops this job (revoke, soft limit, abort, lease loss), in any
    /// phase: a job waiting for its ETA or a slot stops waiting too.
    cancel: CancellationToken,
    reason: Option<CancelReason>,
}

#[derive(Default)]
struct Revoked {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

struct Inner {
    snapshot_base: WorkerSnapshot,
    prefetch_limit: usize,
    started: Instant,
    seq: u64,
    /// Keyed by lease id: one entry per holding.
    jobs: HashMap<LeaseId, Job>,
    revoked: Revoked,
    total: BTreeMap<String, u64>,
}

/// Shared handle; clones see the same state.
#[derive(Clone)]
pub struct PoolState {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// The control-plane view of a task message.
pub fn task_info(task: &TaskMessage) -> TaskInfo {
    let argsrepr = task
        .headers
        .get("argsrepr")
        .and_then(Value::as_str)
        .map(str::to_owned);
    TaskInfo {
        id: task.id.clone(),
        name: task.name.clone(),
        argsrepr: argsrepr.unwrap_or_else(|| Value::from(task.args.clone()).to_string()),
        kwargs: task.kwargs.clone(),
        routing_key: task.routing_key.clone(),
        priority: task.priority,
        redelivered: false,
        time_start: None,
        eta: task.eta,
        worker_pid: None,
    }
}

impl PoolState {
    /// `base` carries the static fields (hostname, pid, registered, queues, concurrency,
    /// prefetch_count); the dynamic ones are filled in by [`PoolState::snapshot`].
    pub fn new(base: WorkerSnapshot) -> Self {
        let inner = Inner {
            prefetch_limit: base.prefetch_count.max(1),
            snapshot_base: base,
            started: Instant::now(),
            seq: 0,
            jobs: HashMap::new(),
            revoked: Revoked::default(),
            total: BTreeMap::new(),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            changed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Bookkeeping stays readable even if a holder panicked; every update is a single step.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves on the next change; create it *before* checking [`PoolState::may_fetch`].
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// The prefetch gate: held deliveries, ETA-held and settling ones excepted, below the limit.
    pub fn may_fetch(&self) -> bool {
        let st = self.lock();
        let counted = st
            .jobs
            .values()
            .filter(|j| !matches!(j.phase, Phase::Scheduled | Phase::Settling))
            .count();
        counted < st.prefetch_limit
    }

    /// How many deliveries are held (unacked by us), ETA-held included.
    pub fn held(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Every holding as `(tag, lease)`, for lease renewal.
    pub fn held_leases(&self) -> Vec<(DeliveryTag, LeaseId)> {
        let st = self.lock();
        st.jobs
            .iter()
            .map(|(lease, j)| (j.tag.clone(), lease.clone()))
            .collect()
    }

    /// Record a holding; `cancel` is the job's token for its whole life.
    pub(crate) fn hold(
        &self,
        lease: &str,
        tag: &str,
        task: &TaskMessage,
        redelivered: bool,
        phase: Phase,
        cancel: CancellationToken,
    ) {
        let mut st = self.lock();
        st.seq += 1;
        let info = TaskInfo {
            redelivered,
            ..task_info(task)
        };
        let job = Job {
            seq: st.seq,
            tag: tag.to_owned(),
            info,
            phase,
            cancel,
            reason: None,
        };
        st.jobs.insert(lease.to_owned(), job);
        drop(st);
        self.touch();
    }

    pub(crate) fn set_phase(&self, lease: &str, phase: Phase) {
        if let Some(j) = self.lock().jobs.get_mut(lease) {
            j.phase = phase;
        }
        self.touch();
    }

    /// Mark the job running.
    pub(crate) fn start(&self, lease: &str, now_unix: f64) {
        if let Some(j) = self.lock().jobs.get_mut(lease) {
            j.phase = Phase::Active;
            j.info.time_start = Some(now_unix);
            j.info.worker_pid = Some(std::process::id());
        }
        self.touch();
    }

    /// Record why the pool cancels this job, then cancel its token. The first reason wins.
    /// A lost lease overrides any earlier reason: whatever else was planned for the delivery
    /// (a requeue at shutdown, a REVOKED result) is its new holder's business now.
    pub(crate) fn cancel_job(&self, lease: &str, reason: CancelReason) {
        let token = {
            let mut st = self.lock();
            let Some(j) = st.jobs.get_mut(lease) else {
                return;
            };
            match reason {
                CancelReason::LeaseLost => j.reason = Some(reason),
                _ => drop(j.reason.get_or_insert(reason)),
            }
            j.cancel.clone()
        };
        token.cancel();
    }

    pub(crate) fn cancel_reason(&self, lease: &str) -> Option<CancelReason> {
        self.lock().jobs.get(lease).and_then(|j| j.reason)
    }

    /// Forget a holding (acked, requeued, dead-lettered or abandoned); `processed` counts a task
    /// that ran.
    pub(crate) fn release(&self, lease: &str, processed: Option<&str>) {
        let mut st = self.lock();
        st.jobs.remove(lease);
        if let Some(name) = processed {
            *st.total.entry(name.to_owned()).or_default() += 1;
        }
        drop(st);
        self.touch();
    }

    pub fn is_revoked(&self, task_id: &str) -> bool {
        self.lock().revoked.ids.contains(task_id)
    }

    /// Add ids to the revoked set; with `terminate`, cancel the running jobs among them.
    /// Returns how many running jobs were told to terminate.
    pub fn revoke(&self, task_ids: &[String], terminate: bool) -> usize {
        let leases: Vec<LeaseId> = {
            let mut st = self.lock();
            for id in task_ids {
                if st.revoked.ids.insert(id.clone()) {
                    st.revoked.order.push_back(id.clone());
                }
            }
            while st.revoked.order.len() > REVOKED_CAP {
                if let Some(old) = st.revoked.order.pop_front() {
                    st.revoked.ids.remove(&old);
                }
            }
            let running = st.jobs.iter().filter(|(_, j)| j.phase == Phase::Active);
            running
                .filter(|(_, j)| terminate && task_ids.contains(&j.info.id))
                .map(|(t, _)| t.clone())
                .collect()
        };
        for lease in &leases {
            tracing::warn!(%lease, "Terminating task on revoke");
            self.cancel_job(lease, CancelReason::Terminated);
        }
        leases.len()
    }

    /// Everything the control plane reports, at one instant; lists ordered by arrival.
    pub fn snapshot(&self) -> WorkerSnapshot {
        let st = self.lock();
        let mut jobs: Vec<&Job> = st.jobs.values().collect();
        jobs.sort_by_key(|j| j.seq);
        let pick = |p: Phase| {
            jobs.iter()
                .filter(|j| j.phase == p)
                .map(|j| j.info.clone())
                .collect()
        };
        WorkerSnapshot {
            active: pick(Phase::Active),
            reserved: pick(Phase::Reserved),
            scheduled: pick(Phase::Scheduled),
            revoked: st.revoked.order.iter().cloned().collect(),
            total: st.total.clone(),
            uptime_secs: st.started.elapsed().as_secs_f64(),
            ..st.snapshot_base.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::test_task;

    #[test]
    fn settling_and_scheduled_deliveries_do_not_hold_the_prefetch_gate() {
        let state = PoolState::new(WorkerSnapshot {
            prefetch_count: 1,
            ..WorkerSnapshot::default()
        });
        let task = test_task("encode_media", "a");
        let token = CancellationToken::new;
        state.hold("t1", "t1", &task, false, Phase::Reserved, token());
        assert!(
            !state.may_fetch(),
            "one reserved delivery fills a limit of one"
        );
        state.start("t1", 0.0);
        assert!(!state.may_fetch());
        assert_eq!(state.snapshot().active.len(), 1);
        // The handler returned: the next fetch may overlap the result write and the ack.
        state.set_phase("t1", Phase::Settling);
        assert!(state.may_fetch());
        let snap = state.snapshot();
        assert!(snap.active.is_empty() && snap.reserved.is_empty());
        assert_eq!(state.held(), 1, "still held (and leased) until acked");
        state.hold("t2", "t2", &task, false, Phase::Scheduled, token());
        assert!(
            state.may_fetch(),
            "an ETA-held delivery does not count either"
        );
        state.release("t1", Some("encode_media"));
        assert_eq!(state.snapshot().total["encode_media"], 1);
    }
}
