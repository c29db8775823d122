//! Orchestration tests of `worker::WorkerPool` against `MemoryBroker` with fake handlers:
//! ordering, prefetch gate, ETA, exactly-once ack, unknown/poison/retry/abort/drain/revoke.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;

use mediacms_worker::broker::memory::{test_task, MemoryBroker};
use mediacms_worker::broker::Delivery;
use mediacms_worker::celery::message::{DecodeError, TaskMessage};
use mediacms_worker::celery::result::TaskState;
use mediacms_worker::tasks::{
    JobContext, Outcome, Registry, Task, TaskError, TaskHandler, TaskName,
};
use mediacms_worker::worker::{PoolOptions, PoolState, ShutdownSignals, WorkerPool};

const Q: &str = "long_tasks";

/// Returns `outcome` after `hold`, or `Aborted` as soon as its token is cancelled.
struct Fake {
    outcome: Outcome,
    hold: Duration,
    log: Mutex<Vec<(String, chrono::DateTime<Utc>, bool)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Fake {
    fn new(outcome: Outcome, hold_ms: u64) -> Arc<Self> {
        Arc::new(Fake {
            outcome,
            hold: Duration::from_millis(hold_ms),
            log: Mutex::default(),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        })
    }
    fn ran(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect()
    }
}

#[async_trait]
impl TaskHandler for Fake {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        let n = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(n, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap()
            .push((task.id.clone(), Utc::now(), ctx.deadline.is_some()));
        let out = tokio::select! {
            _ = tokio::time::sleep(self.hold) => self.outcome.clone(),
            _ = ctx.cancel.cancelled() => Outcome::Aborted,
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

struct Running {
    signals: ShutdownSignals,
    state: PoolState,
    join: tokio::task::JoinHandle<()>,
}

fn options(slots: usize, multiplier: usize) -> PoolOptions {
    let mut o = PoolOptions::new(vec![Q.into()], slots, "rust@test");
    o.prefetch_multiplier = multiplier;
    o.fetch_timeout = Duration::from_millis(20);
    o.lease_renew_every = Duration::from_millis(30);
    o.restore_every = Duration::from_millis(20);
    o
}

fn start(broker: &MemoryBroker, handler: Arc<Fake>, opts: PoolOptions) -> Running {
    let mut registry = Registry::default();
    registry.register(TaskName::EncodeMedia, handler);
    let b = Arc::new(broker.clone());
    let pool = WorkerPool::new(b.clone(), b, registry, opts);
    let signals = ShutdownSignals::new();
    let state = pool.state();
    let join = tokio::spawn(pool.run(signals.clone()));
    Running {
        signals,
        state,
        join,
    }
}

impl Running {
    async fn drain(self) {
        self.signals.intake.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.join)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn task(id: &str, priority: u8) -> TaskMessage {
    TaskMessage {
        priority,
        ..test_task("encode_media", id)
    }
}

#[tokio::test]
async fn priority_zero_first_then_fifo_with_one_slot() {
    let broker = MemoryBroker::default();
    for (id, p) in [("p9", 9), ("p0a", 0), ("p3", 3), ("p0b", 1)] {
        broker.push_task(Q, task(id, p));
    }
    let h = Fake::new(Outcome::Success(json!(true)), 5);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("4 acks", || broker.acked().len() == 4).await;
    run.drain().await;
    assert_eq!(h.ran(), ["p0a", "p0b", "p3", "p9"]);
}

#[tokio::test]
async fn prefetch_gate_and_exactly_once_ack() {
    let broker = MemoryBroker::default();
    for i in 0..8 {
        broker.push_task(Q, task(&format!("t{i}"), 0));
    }
    let h = Fake::new(Outcome::Success(json!(true)), 30);
    let run = start(&broker, h.clone(), options(2, 2));
    eventually("8 acks", || broker.acked().len() == 8).await;
    run.drain().await;
    assert!(
        broker.max_unacked() <= 4,
        "held {} > 2 slots × 2",
        broker.max_unacked()
    );
    assert_eq!(h.max_running.load(Ordering::SeqCst), 2);
    let mut acked = broker.acked();
    acked.sort();
    acked.dedup();
    assert_eq!(acked.len(), 8, "every delivery acked exactly once");
    let results = broker.results();
    assert_eq!(results.len(), 8);
    assert!(results
        .iter()
        .all(|r| r.state == TaskState::Success && r.result == json!(true)));
    assert!(broker.unacked_tags().is_empty());
}

#[tokio::test]
async fn eta_task_is_held_then_runs_and_does_not_block_the_gate() {
    let broker = MemoryBroker::default();
    let eta = Utc::now() + chrono::Duration::milliseconds(800);
    broker.push_task(
        Q,
        TaskMessage {
            eta: Some(eta),
            ..task("later", 0)
        },
    );
    broker.push_task(Q, task("now1", 0));
    broker.push_task(Q, task("now2", 0));
    let h = Fake::new(Outcome::Success(json!(true)), 5);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("scheduled visible", || {
        run.state.snapshot().scheduled.len() == 1
    })
    .await;
    eventually("3 acks", || broker.acked().len() == 3).await;
    let state = run.state.clone();
    run.drain().await;
    assert_eq!(h.ran(), ["now1", "now2", "later"]);
    let started_later = h.log.lock().unwrap()[2].1;
    assert!(started_later >= eta, "ETA task started before its ETA");
    assert!(
        broker.max_unacked() <= 2,
        "ETA hold raises the limit by one only"
    );
    assert_eq!(state.snapshot().total.get("encode_media"), Some(&3));
}

#[tokio::test]
async fn expired_task_is_revoked_not_run() {
    let broker = MemoryBroker::default();
    let expires = Some(Utc::now() - chrono::Duration::seconds(1));
    broker.push_task(
        Q,
        TaskMessage {
            expires,
            ..task("old", 0)
        },
    );
    let h = Fake::new(Outcome::Success(json!(true)), 1);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("ack", || broker.acked().len() == 1).await;
    run.drain().await;
    assert!(h.ran().is_empty());
    let r = &broker.results()[0];
    assert_eq!(
        (r.state, &r.result["exc_message"]),
        (TaskState::Revoked, &json!(["expired"]))
    );
}

#[tokio::test]
async fn unknown_task_fails_not_registered_and_is_acked() {
    let broker = MemoryBroker::default();
    broker.push_task(Q, test_task("no_such_task", "u1"));
    let run = start(
        &broker,
        Fake::new(Outcome::Success(json!(1)), 1),
        options(1, 1),
    );
    eventually("ack", || broker.acked() == ["u1"]).await;
    run.drain().await;
    let r = &broker.results()[0];
    assert_eq!(r.state, TaskState::Failure);
    assert_eq!(
        r.result,
        json!({"exc_type": "NotRegistered", "exc_message": ["no_such_task"], "exc_module": "celery.exceptions"})
    );
    assert!(broker.published().is_empty());
}

#[tokio::test]
async fn unknown_task_is_forwarded_when_configured() {
    let broker = MemoryBroker::default();
    broker.push_task(
        Q,
        TaskMessage {
            priority: 9,
            ..test_task("media_init", "f1")
        },
    );
    let mut opts = options(1, 1);
    opts.forward_unknown_to = Some("python_long".into());
    let run = start(&broker, Fake::new(Outcome::Success(json!(1)), 1), opts);
    eventually("ack", || broker.acked() == ["f1"]).await;
    run.drain().await;
    let p = broker.published();
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].name.as_str(), p[0].id.as_str(), p[0].queue.as_str()),
        ("media_init", "f1", "python_long")
    );
    assert_eq!((p[0].priority, p[0].retries), (9, 0));
    assert!(broker.results().is_empty(), "forwarding writes no result");
}

#[tokio::test]
async fn poison_message_is_dead_lettered() {
    let broker = MemoryBroker::default();
    broker.push(Delivery {
        lease: String::new(),
        tag: "bad".into(),
        queue: Q.into(),
        raw: b"{not json".to_vec(),
        message: Err(DecodeError::Json("eof".into())),
        redelivered: false,
    });
    broker.push_task(Q, task("good", 0));
    let h = Fake::new(Outcome::Success(json!(true)), 1);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("good acked", || broker.acked() == ["good"]).await;
    run.drain().await;
    let dead = broker.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.tag, "bad");
    assert!(dead[0].1.contains("JSON"), "reason: {}", dead[0].1);
    assert!(broker.unacked_tags().is_empty());
    assert_eq!(h.ran(), ["good"]);
}

#[tokio::test]
async fn retry_is_republished_with_eta_and_retry_result() {
    let broker = MemoryBroker::default();
    broker.push_task(Q, task("r1", 9));
    let error = TaskError::new("VideoEncodingError", "files.backends", "ffmpeg died");
    let h = Fake::new(
        Outcome::Retry {
            countdown: Duration::from_secs(5),
            error,
        },
        1,
    );
    let before = Utc::now();
    let run = start(&broker, h, options(1, 1));
    eventually("ack", || broker.acked() == ["r1"]).await;
    run.drain().await;
    let p = &broker.published()[0];
    assert_eq!(
        (p.id.as_str(), p.retries, p.priority, p.queue.as_str()),
        ("r1", 1, 9, Q)
    );
    let eta = p.eta.expect("retry has an ETA");
    assert!(
        eta >= before + chrono::Duration::seconds(5)
            && eta <= Utc::now() + chrono::Duration::seconds(5)
    );
    let r = &broker.results()[0];
    assert_eq!(
        (r.state, &r.result["exc_type"]),
        (TaskState::Retry, &json!("VideoEncodingError"))
    );
}

#[tokio::test]
async fn abort_requeues_running_job_without_result() {
    let broker = MemoryBroker::default();
    broker.push_task(Q, task("long", 0));
    let h = Fake::new(Outcome::Success(json!(true)), 60_000);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("running", || run.state.snapshot().active.len() == 1).await;
    run.signals.abort.cancel();
    run.drain().await;
    assert_eq!(broker.requeued(), ["long"]);
    assert!(broker.acked().is_empty());
    assert!(broker.results().is_empty());
    assert_eq!(broker.queue_len(Q), 1, "back in its queue");
}

#[tokio::test]
async fn drain_lets_running_job_finish_and_gives_back_reserved() {
    let broker = MemoryBroker::default();
    broker.push_task(Q, task("running", 0));
    broker.push_task(Q, task("waiting", 0));
    let h = Fake::new(Outcome::Success(json!("done")), 600);
    let run = start(&broker, h.clone(), options(1, 2));
    eventually("one active, one reserved", || {
        let s = run.state.snapshot();
        s.active.len() == 1 && s.reserved.len() == 1
    })
    .await;
    run.drain().await;
    assert_eq!(broker.acked(), ["running"]);
    assert_eq!(broker.requeued(), ["waiting"]);
    assert_eq!(h.ran(), ["running"]);
    assert_eq!(broker.results()[0].result, json!("done"));
}

#[tokio::test]
async fn revoke_terminates_running_and_skips_reserved() {
    let broker = MemoryBroker::default();
    broker.push_task(Q, task("victim", 0));
    broker.push_task(Q, task("queued", 0));
    let h = Fake::new(Outcome::Success(json!(true)), 60_000);
    let run = start(&broker, h.clone(), options(1, 2));
    eventually("held both", || run.state.held() == 2).await;
    assert_eq!(run.state.revoke(&["queued".into()], false), 0);
    assert_eq!(run.state.revoke(&["victim".into()], true), 1);
    eventually("both acked", || broker.acked().len() == 2).await;
    let state = run.state.clone();
    run.drain().await;
    assert_eq!(h.ran(), ["victim"], "a revoked reserved task never runs");
    let reasons: Vec<_> = broker
        .results()
        .iter()
        .map(|r| r.result["exc_message"][0].clone())
        .collect();
    assert_eq!(reasons, [json!("terminated"), json!("revoked")]);
    assert!(broker
        .results()
        .iter()
        .all(|r| r.state == TaskState::Revoked));
    assert_eq!(state.snapshot().revoked, ["queued", "victim"]);
}

#[tokio::test]
async fn soft_time_limit_cancels_and_fails() {
    let broker = MemoryBroker::default();
    broker.push_task(
        Q,
        TaskMessage {
            time_limit: (None, Some(0.1)),
            ..task("slow", 0)
        },
    );
    let h = Fake::new(Outcome::Success(json!(true)), 60_000);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("ack", || broker.acked() == ["slow"]).await;
    run.drain().await;
    assert!(h.log.lock().unwrap()[0].2, "handler was given its deadline");
    let r = &broker.results()[0];
    assert_eq!(r.state, TaskState::Failure);
    assert_eq!(r.result["exc_type"], "SoftTimeLimitExceeded");
}

#[tokio::test]
async fn leases_are_renewed_while_a_job_runs() {
    let broker = MemoryBroker::new(Duration::from_millis(100));
    broker.push_task(Q, task("lease", 0));
    let h = Fake::new(Outcome::Success(json!(true)), 400);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("ack", || broker.acked() == ["lease"]).await;
    run.drain().await;
    assert!(
        broker.renew_calls() >= 3,
        "renewed {} times",
        broker.renew_calls()
    );
    assert!(
        broker.requeued().is_empty(),
        "our own live delivery was never restored"
    );
    assert_eq!(h.ran(), ["lease"]);
}

#[tokio::test]
async fn task_runs_twice_after_a_stall_past_the_lease_job_stops_and_settles_nothing() {
    let broker = MemoryBroker::new(Duration::from_secs(60));
    broker.push_task(
        Q,
        TaskMessage {
            eta: Some(Utc::now() + chrono::Duration::seconds(60)),
            ..task("held", 0)
        },
    );
    broker.push_task(Q, task("stalled", 0));
    let h = Fake::new(Outcome::Success(json!(true)), 60_000);
    let run = start(&broker, h.clone(), options(1, 1));
    eventually("running and held", || {
        let snap = run.state.snapshot();
        snap.active.len() == 1 && snap.scheduled.len() == 1
    })
    .await;
    // Another worker restored and took both while this one was stalled.
    assert!(broker.take_away("stalled") && broker.take_away("held"));
    eventually("both holdings dropped", || run.state.held() == 0).await;
    assert_eq!(h.running.load(Ordering::SeqCst), 0, "the job was cancelled");
    run.drain().await;
    assert!(
        broker.acked().is_empty(),
        "never acks another holder's delivery"
    );
    assert!(broker.requeued().is_empty(), "never requeues it either");
    assert!(broker.results().is_empty() && broker.published().is_empty());
    assert_eq!(
        broker.unacked_tags(),
        ["held", "stalled"],
        "the new holder's"
    );
}

#[tokio::test]
async fn intake_follows_readiness_nothing_is_fetched_while_the_gate_is_closed() {
    let broker = MemoryBroker::default();
    broker.push_task(Q, task("waits", 0));
    let (open, gate) = tokio::sync::watch::channel(false);
    let h = Fake::new(Outcome::Success(json!(true)), 5);
    let mut registry = Registry::default();
    registry.register(TaskName::EncodeMedia, h.clone());
    let b = Arc::new(broker.clone());
    let pool = WorkerPool::new(b.clone(), b, registry, options(1, 1)).with_intake_gate(gate);
    let signals = ShutdownSignals::new();
    let join = tokio::spawn(pool.run(signals.clone()));
    // A bounded look at "nothing happens" (the assertion is about absence).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        broker.queue_len(Q),
        1,
        "the queue is untouched while closed"
    );
    assert!(broker.unacked_tags().is_empty());
    open.send(true).unwrap();
    eventually("ran after reopening", || broker.acked() == ["waits"]).await;
    signals.intake.cancel();
    join.await.unwrap();
    assert_eq!(h.ran(), ["waits"]);
}

// Paused time: the job, the beat period and the staleness limit all run on tokio's clock, so
// "never stale" is checked at exact virtual instants, however loaded the machine is.
#[tokio::test(start_paused = true)]
async fn healthz_is_beaten_by_the_intake_loop_while_every_slot_is_busy() {
    let broker = MemoryBroker::default();
    broker.push_task(Q, task("long", 0));
    broker.push_task(Q, task("next", 0));
    let h = Fake::new(Outcome::Success(json!(true)), 1_500);
    let mut registry = Registry::default();
    registry.register(TaskName::EncodeMedia, h.clone());
    let b = Arc::new(broker.clone());
    let health = mediacms_worker::telemetry::Health::new(Duration::from_millis(300));
    let mut opts = options(1, 1);
    opts.beat_every = Duration::from_millis(50);
    let pool = WorkerPool::new(b.clone(), b, registry, opts).with_health(health.clone());
    let signals = ShutdownSignals::new();
    let join = tokio::spawn(pool.run(signals.clone()));
    eventually("running", || h.running.load(Ordering::SeqCst) == 1).await;
    // Busy for 1.5 s with the prefetch gate closed: 5× the staleness limit, never stale.
    for _ in 0..12 {
        assert!(health.is_alive(), "stale while a job ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signals.intake.cancel(); // draining: still beaten until the job is done
    for _ in 0..5 {
        assert!(health.is_alive(), "stale while draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    join.await.unwrap();
}

#[path = "worker_pool/pidbox_python.rs"]
mod pidbox_python;

/// Hands two create_hls over from inside the job, as `TaskEnv::hand_over_follow_ups` does.
struct Publisher;

#[async_trait]
impl TaskHandler for Publisher {
    async fn run(&self, _task: &Task<'_>, _ctx: JobContext) -> Outcome {
        use mediacms_worker::celery::message::OutgoingTask;
        use mediacms_worker::tasks::family;
        for _ in 0..2 {
            let child = OutgoingTask::new("create_hls", Q, vec![json!("tok")], Default::default());
            family::follow_up(child);
        }
        Outcome::Success(json!(true))
    }
}

/// Regression (issue 15): what a job published had no parent and its result no children.
#[tokio::test]
async fn published_children_missing_from_the_result() {
    let broker = MemoryBroker::default();
    let mut parent = test_task("encode_media", "enc-1");
    parent.parent_id = Some("chunkize-0".into());
    parent.root_id = Some("root-0".into());
    broker.push_task(Q, parent);
    let mut registry = Registry::default();
    registry.register(TaskName::EncodeMedia, Arc::new(Publisher));
    let b = Arc::new(broker.clone());
    let pool = WorkerPool::new(b.clone(), b, registry, options(1, 1));
    let signals = ShutdownSignals::new();
    let join = tokio::spawn(pool.run(signals.clone()));
    eventually("ack", || broker.acked() == ["enc-1"]).await;
    signals.intake.cancel();
    tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .unwrap()
        .unwrap();
    let children = broker.published();
    assert_eq!(children.len(), 2);
    for c in &children {
        assert_eq!(c.parent_id.as_deref(), Some("enc-1"));
        assert_eq!(c.root_id.as_deref(), Some("root-0"));
    }
    let r = &broker.results()[0];
    let ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
    assert_eq!(r.children, ids);
    assert_eq!(r.parent_id.as_deref(), Some("chunkize-0"));
}

/// Hands a create_hls over, then runs until its token fires.
struct HandsOverThenWaits;

#[async_trait]
impl TaskHandler for HandsOverThenWaits {
    async fn run(&self, _task: &Task<'_>, ctx: JobContext) -> Outcome {
        use mediacms_worker::celery::message::OutgoingTask;
        let child = OutgoingTask::new("create_hls", Q, vec![json!("tok")], Default::default());
        mediacms_worker::tasks::family::follow_up(child);
        ctx.cancel.cancelled().await;
        Outcome::Aborted
    }
}

/// Follow-ups travel in the settlement: a job whose lease is lost publishes none of what it
/// handed over, and acks and writes nothing.
#[tokio::test]
async fn lease_lost_job_publishes_none_of_its_follow_ups() {
    let broker = MemoryBroker::new(Duration::from_secs(60));
    broker.push_task(Q, task("lost", 0));
    let mut registry = Registry::default();
    registry.register(TaskName::EncodeMedia, Arc::new(HandsOverThenWaits));
    let b = Arc::new(broker.clone());
    let pool = WorkerPool::new(b.clone(), b, registry, options(1, 1));
    let (signals, state) = (ShutdownSignals::new(), pool.state());
    let join = tokio::spawn(pool.run(signals.clone()));
    eventually("running", || state.snapshot().active.len() == 1).await;
    assert!(broker.take_away("lost"));
    eventually("holding dropped", || state.held() == 0).await;
    signals.intake.cancel();
    tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .unwrap()
        .unwrap();
    assert!(
        broker.published().is_empty(),
        "the follow-up died with the lease"
    );
    assert!(broker.acked().is_empty() && broker.results().is_empty());
}
