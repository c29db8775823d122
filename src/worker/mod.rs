//! The worker pool: prefetch gate, ETA holding, job slots, dispatch and lease renewal — the one
//! place that publishes, acks, requeues and dead-letters deliveries and writes results
//! (ARCHITECTURE decisions 3, 4, 11, 13). A delivery is looked up and bound once, here.
//!
//! Wiring (in `app`): `WorkerPool::new(broker, results, registry, options)`, keep
//! [`WorkerPool::state`] for pidbox/metrics, then `pool.run(signals).await`. Cancelling
//! `signals.intake` stops fetching and gives back not-started deliveries while running jobs finish;
//! cancelling `signals.abort` also cancels every running job, whose delivery is requeued.

pub mod dispatch;
mod fence;
mod job;
mod lease;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use dispatch::{CancelReason, Triage};
pub use state::{Phase, PoolState};

use crate::broker::{Broker, Delivery, ResultStore};
use crate::celery::args::{self, Task};
use crate::celery::control::WorkerSnapshot;
use crate::celery::message::{OutgoingTask, TaskMessage};
use crate::tasks::family::Family;
use crate::tasks::{JobContext, Outcome, Registry, TaskHandler};
use crate::telemetry::{Health, Metrics};

/// Run `handler` on `message` outside the pool (tests, tools): the arguments are bound as the
/// pool binds them (a misfit is the same TypeError failure, and the handler does not run), the
/// handler runs in a fresh job family, and its outcome comes back with the follow-ups it
/// handed over (already children of `message`). Publishing them is the caller's business, as
/// it is the pool's apply step's.
pub async fn run_unpooled(
    handler: &dyn TaskHandler,
    message: &TaskMessage,
    ctx: JobContext,
) -> (Outcome, Vec<OutgoingTask>) {
    let family = Family::of(message);
    let outcome = match args::bind(message) {
        Ok(call) => {
            let task = Task { message, call };
            family.clone().scope(handler.run(&task, ctx)).await
        }
        Err(e) => dispatch::bad_args(&e),
    };
    (outcome, family.take())
}

/// How the pool consumes.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub queues: Vec<String>,
    /// Job slots (Celery's `-c`).
    pub concurrency: usize,
    /// Held deliveries per slot (ETA-held ones excepted); at least one per slot.
    pub prefetch_multiplier: usize,
    /// Celery hostname (`-n`).
    pub hostname: String,
    /// Period of `renew_leases` for all held deliveries.
    pub lease_renew_every: Duration,
    /// Period of `restore_expired` (about half the lease).
    pub restore_every: Duration,
    /// How long one `fetch` waits (kombu's BRPOP timeout is 1 s).
    pub fetch_timeout: Duration,
    /// Re-publish unknown task names to this queue instead of failing them.
    pub forward_unknown_to: Option<String>,
    /// Soft limit for tasks whose `timelimit` header has none.
    pub soft_time_limit: Option<Duration>,
    /// The intake loop's longest silence while it waits (well inside `/healthz`'s 60 s).
    pub beat_every: Duration,
    /// The `origin` header of what jobs send (follow-ups, retries): Celery's
    /// `gen<pid>@<host>`; the app sets the real host name.
    pub origin: String,
}

impl PoolOptions {
    /// Defaults for a 2-minute lease: renew every 30 s, restore every 60 s, fetch timeout 1 s.
    pub fn new(queues: Vec<String>, concurrency: usize, hostname: &str) -> Self {
        Self {
            queues,
            concurrency: concurrency.max(1),
            prefetch_multiplier: 1,
            hostname: hostname.to_owned(),
            lease_renew_every: Duration::from_secs(30),
            restore_every: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(1),
            forward_unknown_to: None,
            soft_time_limit: None,
            beat_every: Duration::from_secs(5),
            origin: crate::celery::message::origin_of(std::process::id(), "localhost"),
        }
    }

    /// `slots × multiplier`, never below `slots` (Celery's prefetch count).
    pub fn prefetch_limit(&self) -> usize {
        let slots = self.concurrency.max(1);
        (slots * self.prefetch_multiplier).max(slots)
    }
}

/// The two shutdown stages, driven by `crate::shutdown` (or a test).
#[derive(Debug, Clone, Default)]
pub struct ShutdownSignals {
    /// First SIGTERM: stop fetching, give back waiting deliveries, let running jobs finish.
    pub intake: CancellationToken,
    /// Deadline or second signal: cancel every running job and requeue it, without a result.
    pub abort: CancellationToken,
}

impl ShutdownSignals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves once either stage has fired.
    pub(crate) async fn stopping(&self) {
        tokio::select! {
            _ = self.intake.cancelled() => {}
            _ = self.abort.cancelled() => {}
        }
    }

    fn is_stopping(&self) -> bool {
        self.intake.is_cancelled() || self.abort.is_cancelled()
    }
}

impl From<&crate::shutdown::Shutdown> for ShutdownSignals {
    fn from(s: &crate::shutdown::Shutdown) -> Self {
        Self {
            intake: s.intake.clone(),
            abort: s.abort.clone(),
        }
    }
}

/// What every job task shares.
pub(crate) struct Core {
    broker: Arc<dyn Broker>,
    results: Arc<dyn ResultStore>,
    registry: Registry,
    opts: PoolOptions,
    state: PoolState,
    slots: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
    /// Intake follows readiness: while this reads `false`, nothing is fetched.
    gate: Option<watch::Receiver<bool>>,
    /// `/healthz`'s heartbeat, beaten by the intake loop itself (a wedged loop goes stale).
    health: Option<Health>,
}

pub struct WorkerPool {
    core: Arc<Core>,
}

impl WorkerPool {
    pub fn new(
        broker: Arc<dyn Broker>,
        results: Arc<dyn ResultStore>,
        registry: Registry,
        opts: PoolOptions,
    ) -> Self {
        let base = WorkerSnapshot {
            hostname: opts.hostname.clone(),
            pid: std::process::id(),
            registered: registry.names(),
            queues: opts.queues.clone(),
            concurrency: opts.concurrency.max(1),
            prefetch_count: opts.prefetch_limit(),
            ..WorkerSnapshot::default()
        };
        let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let state = PoolState::new(base);
        WorkerPool {
            core: Arc::new(Core {
                broker,
                results,
                registry,
                opts,
                state,
                slots,
                metrics: None,
                gate: None,
                health: None,
            }),
        }
    }

    /// Count tasks received / started / finished (by name and outcome) in this catalogue.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let mut core =
            Arc::try_unwrap(self.core).unwrap_or_else(|_| unreachable!("not shared yet"));
        core.metrics = Some(metrics);
        WorkerPool {
            core: Arc::new(core),
        }
    }

    /// Fetch only while `gate` reads `true` (the app opens it while Postgres answers): a
    /// dependency every task needs being down must not bounce the head of the queue.
    pub fn with_intake_gate(self, gate: watch::Receiver<bool>) -> Self {
        let mut core =
            Arc::try_unwrap(self.core).unwrap_or_else(|_| unreachable!("not shared yet"));
        core.gate = Some(gate);
        WorkerPool {
            core: Arc::new(core),
        }
    }

    /// Beat `health` from the intake loop: at every turn, and at least every
    /// [`PoolOptions::beat_every`] while it waits (all slots busy, intake paused) or drains.
    /// Busy encodes never silence it; a loop that is wedged does.
    pub fn with_health(self, health: Health) -> Self {
        let mut core =
            Arc::try_unwrap(self.core).unwrap_or_else(|_| unreachable!("not shared yet"));
        core.health = Some(health);
        WorkerPool {
            core: Arc::new(core),
        }
    }

    /// The shared bookkeeping handle (pidbox, metrics, tests).
    pub fn state(&self) -> PoolState {
        self.core.state.clone()
    }

    /// Consume until `signals.intake` fires, then wait for every held delivery to be settled
    /// (finished, given back, or aborted and requeued). Broker errors are logged and retried.
    pub async fn run(self, signals: ShutdownSignals) {
        let core = self.core;
        let lease_stop = CancellationToken::new();
        let lease = tokio::spawn(lease::lease_loop(
            core.broker.clone(),
            core.state.clone(),
            core.opts.lease_renew_every,
            core.opts.restore_every,
            core.metrics.clone(),
            lease_stop.clone(),
        ));
        let jobs = TaskTracker::new();
        core.clone().intake(&signals, &jobs).await;
        jobs.close();
        // Draining: running jobs may take minutes; the worker is alive meanwhile.
        let drained = jobs.wait();
        tokio::pin!(drained);
        loop {
            if let Some(h) = &core.health {
                h.beat();
            }
            tokio::select! {
                _ = &mut drained => break,
                _ = tokio::time::sleep(core.opts.beat_every) => {}
            }
        }
        lease_stop.cancel();
        let _ = lease.await;
        tracing::info!(hostname = %core.opts.hostname, "worker pool stopped");
    }
}

impl Core {
    /// Fetch while the prefetch gate allows, until intake stops.
    async fn intake(self: Arc<Self>, signals: &ShutdownSignals, jobs: &TaskTracker) {
        loop {
            let changed = self.state.changed();
            if let Some(h) = &self.health {
                h.beat();
            }
            if signals.is_stopping() {
                return;
            }
            if let Some(gate) = self.gate.clone().filter(|g| !*g.borrow()) {
                self.paused(gate, signals).await;
                continue;
            }
            if !self.state.may_fetch() {
                tokio::select! {
                    _ = changed => {}
                    _ = signals.stopping() => {}
                    _ = tokio::time::sleep(self.opts.beat_every) => {}
                }
                continue;
            }
            match self
                .broker
                .fetch(&self.opts.queues, self.opts.fetch_timeout)
                .await
            {
                Ok(Some(d)) => self.accept(d, signals, jobs).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "fetch failed; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = signals.stopping() => {}
                    }
                }
            }
        }
    }

    /// Wait while the intake gate is closed; the pause and its length are logged (the
    /// time-to-resume after an outage).
    async fn paused(&self, mut gate: watch::Receiver<bool>, signals: &ShutdownSignals) {
        let since = std::time::Instant::now();
        tracing::warn!("intake paused: a dependency tasks need (Postgres) is down; not fetching");
        loop {
            if *gate.borrow_and_update() {
                let secs = since.elapsed().as_secs_f64();
                tracing::info!(paused_secs = secs, "intake resumed after {secs:.1}s");
                return;
            }
            if let Some(h) = &self.health {
                h.beat();
            }
            tokio::select! {
                _ = tokio::time::sleep(self.opts.beat_every) => {}
                changed = gate.changed() => if changed.is_err() {
                    // The app is gone: nothing will reopen it, so wait for the shutdown.
                    return signals.stopping().await;
                },
                _ = signals.stopping() => return,
            }
        }
    }

    /// Decide about a fresh delivery: settle it now, or hold it and spawn its job.
    async fn accept(self: &Arc<Self>, d: Delivery, signals: &ShutdownSignals, jobs: &TaskTracker) {
        if signals.is_stopping() {
            // Fetched while intake was stopping: not ours to start any more.
            if let Err(e) = self.broker.requeue(&d).await {
                tracing::error!(tag = %d.tag, error = %e, "requeue failed");
            }
            return;
        }
        let (name, id) = match &d.message {
            Ok(t) => (t.name.as_str(), t.id.as_str()),
            Err(_) => ("", ""),
        };
        if let Some(m) = &self.metrics {
            m.task_received(name);
        }
        // The one name lookup: the closed enum, then this worker's handler for it.
        let found = self.registry.lookup(name);
        let revoked = self.state.is_revoked(id);
        let triage = dispatch::classify(&d, found.is_some(), revoked, Utc::now());
        let (phase, (task_name, handler)) = match (&triage, found) {
            (Triage::Hold(_), Some(f)) => (Phase::Scheduled, f),
            (Triage::Run, Some(f)) => (Phase::Reserved, f),
            _ => return self.settle_now(&d, triage).await,
        };
        let Ok(message) = d.message.clone() else {
            return;
        };
        // The one argument binding; a misfit is settled as Python's TypeError when the job's
        // turn comes (after its ETA, revoke and expiry checks, as Celery does).
        let call = args::bind_as(task_name, &message);
        let cancel = signals.abort.child_token();
        self.state.hold(
            &d.lease,
            &d.tag,
            &message,
            d.redelivered,
            phase,
            cancel.clone(),
        );
        let bound = job::Bound {
            message,
            call,
            handler,
        };
        let job = self.clone().run_delivery(d, bound, signals.clone(), cancel);
        jobs.spawn(job);
    }
}
