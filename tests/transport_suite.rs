//! Transport-level scenarios written once over `Arc<dyn Broker>` and run against every
//! transport (memory, AMQP on RabbitMQ, Redis on a private DB): publish→fetch round trip, priority order, requeue, ack, dead-letter, and a
//! `WorkerPool` driving the broker end to end. A transport plugs in with one `Transport` impl
//! and one `transport_tests!` line.

#[path = "amqp_broker/rabbit.rs"]
mod rabbit;
#[path = "support/redis.rs"]
#[allow(dead_code)]
mod test_redis;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use mediacms_worker::broker::memory::MemoryBroker;
use mediacms_worker::broker::redis::{RedisBroker, RedisBrokerOptions};
use mediacms_worker::broker::{Broker, BrokerError, Delivery, DeliveryTag, LeaseId};
use mediacms_worker::celery::envelope::{decode_amqp, encode_amqp_body, v2_headers};
use mediacms_worker::celery::message::{OutgoingTask, TaskMessage};
use mediacms_worker::celery::result::TaskState;
use mediacms_worker::tasks::{JobContext, Outcome, Registry, Task, TaskHandler, TaskName};
use mediacms_worker::worker::{PoolOptions, ShutdownSignals, WorkerPool};

/// How a transport orders priorities 9, 0, 5 published in that order.
#[derive(Debug, Clone, Copy)]
enum PriorityOrder {
    /// kombu on Redis (and the memory broker): priority 0 first.
    LowFirst,
    /// RabbitMQ without `x-max-priority` (Celery declares none): priority is ignored.
    Fifo,
}

/// One transport under test: its broker, its (unique) queue, and how to inspect it.
#[async_trait]
trait Transport: Send + Sync {
    fn broker(&self) -> Arc<dyn Broker>;
    fn queue(&self) -> String;
    fn priority_order(&self) -> PriorityOrder;
    /// Dead-lettered deliveries as (raw message, reason).
    async fn dead_letters(&self) -> Vec<(Vec<u8>, String)>;
    /// Remove what the test created.
    async fn finish(&self);
}

/// The prefetch every transport is built with; the pool scenario uses 2 slots × 2.
const PREFETCH: u16 = 4;

// ---- memory -------------------------------------------------------------------------------

/// `MemoryBroker` records publishes instead of queueing them; this wrapper loops a publish
/// back into its queue (encoded and decoded like an AMQP message) so scenarios can round-trip.
struct Loopback(MemoryBroker);

#[async_trait]
impl Broker for Loopback {
    async fn fetch(&self, q: &[String], t: Duration) -> Result<Option<Delivery>, BrokerError> {
        self.0.fetch(q, t).await
    }
    async fn ack(&self, d: &Delivery) -> Result<(), BrokerError> {
        self.0.ack(d).await
    }
    async fn requeue(&self, d: &Delivery) -> Result<(), BrokerError> {
        self.0.requeue(d).await
    }
    async fn renew_leases(
        &self,
        held: &[(DeliveryTag, LeaseId)],
    ) -> Result<Vec<LeaseId>, BrokerError> {
        self.0.renew_leases(held).await
    }
    async fn claim_finish(&self, d: &Delivery) -> Result<bool, BrokerError> {
        self.0.claim_finish(d).await
    }
    async fn restore_expired(&self) -> Result<usize, BrokerError> {
        self.0.restore_expired().await
    }
    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<(), BrokerError> {
        self.0.dead_letter(d, reason).await
    }
    async fn publish(&self, task: &OutgoingTask) -> Result<(), BrokerError> {
        let raw = encode_amqp_body(task);
        let message = decode_amqp(&raw, v2_headers(task), &task.queue, Some(task.priority));
        self.0.push(Delivery {
            tag: uuid::Uuid::new_v4().to_string(),
            lease: String::new(),
            queue: task.queue.clone(),
            raw,
            message,
            redelivered: false,
        });
        Ok(())
    }
}

struct Memory {
    inner: MemoryBroker,
    broker: Arc<dyn Broker>,
}

impl Memory {
    async fn start() -> Box<dyn Transport> {
        let inner = MemoryBroker::default();
        let broker = Arc::new(Loopback(inner.clone()));
        Box::new(Memory { inner, broker })
    }
}

#[async_trait]
impl Transport for Memory {
    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }
    fn queue(&self) -> String {
        "long_tasks".into()
    }
    fn priority_order(&self) -> PriorityOrder {
        PriorityOrder::LowFirst
    }
    async fn dead_letters(&self) -> Vec<(Vec<u8>, String)> {
        self.inner
            .dead_letters()
            .into_iter()
            .map(|(d, r)| (d.raw, r))
            .collect()
    }
    async fn finish(&self) {}
}

// ---- AMQP ---------------------------------------------------------------------------------

struct Amqp {
    broker: mediacms_worker::broker::amqp::AmqpBroker,
    queue: String,
}

impl Amqp {
    async fn start() -> Box<dyn Transport> {
        let queue = rabbit::unique("suite");
        let broker = rabbit::broker(&queue, PREFETCH).await;
        Box::new(Amqp { broker, queue })
    }
}

#[async_trait]
impl Transport for Amqp {
    fn broker(&self) -> Arc<dyn Broker> {
        Arc::new(self.broker.clone())
    }
    fn queue(&self) -> String {
        self.queue.clone()
    }
    fn priority_order(&self) -> PriorityOrder {
        PriorityOrder::Fifo
    }
    async fn dead_letters(&self) -> Vec<(Vec<u8>, String)> {
        let records = rabbit::drain(&rabbit::dead_letter_queue(&self.queue)).await;
        records
            .iter()
            .map(|m| {
                let r: Value = serde_json::from_slice(&m.delivery.data).expect("JSON record");
                let body = r["body"].as_str().expect("UTF-8 body").as_bytes().to_vec();
                (body, r["reason"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }
    async fn finish(&self) {
        self.broker.close().await;
        rabbit::delete(&[&self.queue, &rabbit::dead_letter_queue(&self.queue)]).await;
    }
}

// ---- Redis ---------------------------------------------------------------------------------

struct Redis {
    broker: RedisBroker,
    /// The claimed private DB, flushed and released on drop.
    db: test_redis::TestRedis,
}

impl Redis {
    async fn start() -> Box<dyn Transport> {
        let db = tokio::task::spawn_blocking(test_redis::TestRedis::claim)
            .await
            .expect("claim a test Redis DB");
        let broker = RedisBroker::connect(&db.url, RedisBrokerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("Redis at {} is required: {e}", db.url));
        Box::new(Redis { broker, db })
    }
}

#[async_trait]
impl Transport for Redis {
    fn broker(&self) -> Arc<dyn Broker> {
        Arc::new(self.broker.clone())
    }
    fn queue(&self) -> String {
        "long_tasks".into()
    }
    fn priority_order(&self) -> PriorityOrder {
        PriorityOrder::LowFirst
    }
    async fn dead_letters(&self) -> Vec<(Vec<u8>, String)> {
        let key = RedisBrokerOptions::default().dead_letter_key;
        let records: Vec<String> = ::redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut self.db.conn())
            .expect("LRANGE dead letters");
        records
            .iter()
            .map(|r| {
                let r: Value = serde_json::from_str(r).expect("JSON record");
                let raw = r["raw"].as_str().expect("raw").as_bytes().to_vec();
                (raw, r["reason"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }
    async fn finish(&self) {}
}

// ---- scenarios ----------------------------------------------------------------------------

fn task(t: &dyn Transport, name: &str, args: Vec<Value>) -> OutgoingTask {
    let mut kwargs = Map::new();
    kwargs.insert("force".into(), json!(true));
    OutgoingTask::new(name, &t.queue(), args, kwargs)
}

async fn fetch(t: &dyn Transport, within: Duration) -> Option<Delivery> {
    t.broker().fetch(&[t.queue()], within).await.expect("fetch")
}

async fn must_fetch(t: &dyn Transport) -> Delivery {
    fetch(t, Duration::from_secs(10))
        .await
        .expect("a delivery within 10 s")
}

fn decoded(d: &Delivery) -> &TaskMessage {
    d.message.as_ref().expect("decodable")
}

async fn assert_empty(t: &dyn Transport) {
    assert!(
        fetch(t, Duration::from_millis(300)).await.is_none(),
        "queue should be empty"
    );
}

async fn round_trip(t: &dyn Transport) {
    let sent = task(t, "create_hls", vec![json!("tok"), json!(1)]);
    t.broker().publish(&sent).await.unwrap();
    let d = must_fetch(t).await;
    let m = decoded(&d);
    assert_eq!(
        (m.name.as_str(), m.id.as_str()),
        ("create_hls", sent.id.as_str())
    );
    assert_eq!((&m.args, &m.kwargs), (&sent.args, &sent.kwargs));
    assert_eq!(d.queue, t.queue());
    assert!(!d.redelivered);
    t.broker().ack(&d).await.unwrap();
    // A second ack is harmless: memory and AMQP say LeaseLost, Redis (like kombu's HDEL) Ok.
    let again = t.broker().ack(&d).await;
    assert!(
        matches!(again, Ok(()) | Err(BrokerError::LeaseLost(_))),
        "{again:?}"
    );
    assert_empty(t).await; // ack removed it
}

async fn priority_order(t: &dyn Transport) {
    let mut ids = Vec::new();
    for p in [9u8, 0, 5] {
        let mut sent = task(t, "create_hls", vec![json!(p)]);
        sent.priority = p;
        t.broker().publish(&sent).await.unwrap();
        ids.push(sent.id);
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = must_fetch(t).await;
        got.push(decoded(&d).id.clone());
        t.broker().ack(&d).await.unwrap();
    }
    let want = match t.priority_order() {
        PriorityOrder::LowFirst => vec![ids[1].clone(), ids[2].clone(), ids[0].clone()],
        PriorityOrder::Fifo => ids,
    };
    assert_eq!(got, want, "{:?}", t.priority_order());
}

async fn requeue_marks_redelivered(t: &dyn Transport) {
    let sent = task(t, "create_hls", vec![json!("rq")]);
    t.broker().publish(&sent).await.unwrap();
    let d = must_fetch(t).await;
    t.broker().requeue(&d).await.unwrap();
    let again = must_fetch(t).await;
    assert_eq!(decoded(&again).id, sent.id);
    assert!(
        again.redelivered,
        "a requeued delivery comes back redelivered"
    );
    t.broker().ack(&again).await.unwrap();
    assert_empty(t).await;
}

async fn dead_letter_keeps_the_raw_message(t: &dyn Transport) {
    let sent = task(t, "create_hls", vec![json!("dl")]);
    t.broker().publish(&sent).await.unwrap();
    let d = must_fetch(t).await;
    t.broker().dead_letter(&d, "suite: poison").await.unwrap();
    assert_empty(t).await;
    let dead = t.dead_letters().await;
    assert_eq!(dead, vec![(d.raw.clone(), "suite: poison".to_owned())]);
    assert!(!d.raw.is_empty());
}

/// Returns `Success(args[0])`.
struct Echo;

#[async_trait]
impl TaskHandler for Echo {
    async fn run(&self, task: &Task<'_>, _ctx: JobContext) -> Outcome {
        Outcome::Success(task.args.first().cloned().unwrap_or(Value::Null))
    }
}

async fn worker_pool_end_to_end(t: &dyn Transport) {
    let mut sent_args = BTreeMap::new();
    for i in 0..5 {
        // The closed set of names: an encode_media whose token carries `i`.
        let i = format!("tok-{i}");
        let sent = task(t, "encode_media", vec![json!(i), json!(1), json!(1)]);
        t.broker().publish(&sent).await.unwrap();
        sent_args.insert(sent.id, json!(i));
    }
    let mut registry = Registry::default();
    registry.register(TaskName::EncodeMedia, Arc::new(Echo));
    let mut opts = PoolOptions::new(vec![t.queue()], 2, "suite@test");
    opts.prefetch_multiplier = usize::from(PREFETCH) / 2;
    opts.fetch_timeout = Duration::from_millis(200);
    let results = MemoryBroker::default();
    let pool = WorkerPool::new(t.broker(), Arc::new(results.clone()), registry, opts);
    let signals = ShutdownSignals::new();
    let run = tokio::spawn(pool.run(signals.clone()));
    for _ in 0..300 {
        if results.results().len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signals.intake.cancel();
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap();
    let results = results.results();
    assert!(results.iter().all(|r| r.state == TaskState::Success));
    let got: BTreeMap<String, Value> = results
        .iter()
        .map(|r| (r.task_id.clone(), r.result.clone()))
        .collect();
    assert_eq!(
        got, sent_args,
        "every task ran with its args and has a result"
    );
    assert_eq!(results.len(), 5, "exactly once");
    assert_empty(t).await;
}

macro_rules! transport_tests {
    ($transport:ident, $start:path) => {
        mod $transport {
            use super::*;
            transport_tests!(@each $start; round_trip, priority_order, requeue_marks_redelivered,
                dead_letter_keeps_the_raw_message, worker_pool_end_to_end);
        }
    };
    (@each $start:path; $($scenario:ident),*) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                let t = $start().await;
                super::$scenario(t.as_ref()).await;
                t.finish().await;
            }
        )*
    };
}

transport_tests!(memory, Memory::start);
transport_tests!(amqp, Amqp::start);
transport_tests!(redis, Redis::start);
