//! In-memory [`Broker`] + [`ResultStore`] with the Redis transport's semantics, for orchestration
//! tests: priority 0 first, FIFO within a priority, round-robin across queues, an unacked set with
//! leases, requeue/restore to the front, a dead-letter list; everything inspectable.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    priority_step, Broker, BrokerError, Delivery, DeliveryTag, LeaseId, ResultStore, PRIORITY_STEPS,
};
use crate::celery::message::{OutgoingTask, TaskMessage};
use crate::celery::result::TaskResult;

/// One queue: a FIFO list per priority step (index = position in [`PRIORITY_STEPS`]).
type Lists = [VecDeque<Delivery>; 4];

#[derive(Default)]
struct State {
    queues: HashMap<String, Lists>,
    /// Queue names in round-robin order; the queue that delivered moves to the end (kombu's cycle).
    rotation: Vec<String>,
    unacked: HashMap<DeliveryTag, (Delivery, Instant)>,
    max_unacked: usize,
    acked: Vec<DeliveryTag>,
    requeued: Vec<DeliveryTag>,
    renewed: usize,
    /// Lease ids handed out so far (each fetch gets a new one).
    leases: u64,
    dead: Vec<(Delivery, String)>,
    published: Vec<OutgoingTask>,
    results: Vec<TaskResult>,
}

/// The in-memory broker. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    lease: Duration,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(Duration::from_secs(120))
    }
}

fn step_index(priority: u8) -> usize {
    let step = priority_step(priority);
    PRIORITY_STEPS.iter().position(|s| *s == step).unwrap_or(0)
}

fn priority_of(delivery: &Delivery) -> u8 {
    delivery.message.as_ref().map(|m| m.priority).unwrap_or(0)
}

impl MemoryBroker {
    /// A broker whose leases last `lease` unless renewed.
    pub fn new(lease: Duration) -> Self {
        Self {
            state: Arc::default(),
            arrived: Arc::new(Notify::new()),
            lease,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the assertions that follow.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueue at the back (like an LPUSH by a producer).
    pub fn push(&self, delivery: Delivery) {
        let mut st = self.lock();
        let idx = step_index(priority_of(&delivery));
        queue_lists(&mut st, &delivery.queue)[idx].push_back(delivery);
        drop(st);
        self.arrived.notify_waiters();
    }

    /// Enqueue a decoded task on `queue` with the task id as delivery tag.
    pub fn push_task(&self, queue: &str, task: TaskMessage) {
        self.push(Delivery {
            tag: task.id.clone(),
            lease: String::new(),
            queue: queue.to_owned(),
            raw: Vec::new(),
            message: Ok(task),
            redelivered: false,
        });
    }

    pub fn queue_len(&self, queue: &str) -> usize {
        self.lock()
            .queues
            .get(queue)
            .map_or(0, |l| l.iter().map(VecDeque::len).sum())
    }
    pub fn unacked_tags(&self) -> Vec<DeliveryTag> {
        let mut tags: Vec<_> = self.lock().unacked.keys().cloned().collect();
        tags.sort();
        tags
    }
    /// The most deliveries ever held unacked at once (the prefetch gate's high-water mark).
    pub fn max_unacked(&self) -> usize {
        self.lock().max_unacked
    }
    /// Every ack, in order (a tag twice means a double ack).
    pub fn acked(&self) -> Vec<DeliveryTag> {
        self.lock().acked.clone()
    }
    pub fn requeued(&self) -> Vec<DeliveryTag> {
        self.lock().requeued.clone()
    }
    /// How many `renew_leases` calls have been made.
    pub fn renew_calls(&self) -> usize {
        self.lock().renewed
    }
    pub fn dead_letters(&self) -> Vec<(Delivery, String)> {
        self.lock().dead.clone()
    }
    pub fn published(&self) -> Vec<OutgoingTask> {
        self.lock().published.clone()
    }
    /// Every stored result, in write order.
    pub fn results(&self) -> Vec<TaskResult> {
        self.lock().results.clone()
    }

    fn pop_next(&self, queues: &[String]) -> Option<Delivery> {
        let mut st = self.lock();
        let order = rotation_order(&mut st.rotation, queues);
        for idx in 0..PRIORITY_STEPS.len() {
            for q in &order {
                let popped = st.queues.get_mut(q).and_then(|l| l[idx].pop_front());
                if let Some(mut d) = popped {
                    st.leases += 1;
                    d.lease = format!("{}#{}", d.tag, st.leases);
                    st.rotation.retain(|r| r != q);
                    st.rotation.push(q.clone());
                    let expiry = Instant::now() + self.lease;
                    st.unacked.insert(d.tag.clone(), (d.clone(), expiry));
                    st.max_unacked = st.max_unacked.max(st.unacked.len());
                    return Some(d);
                }
            }
        }
        None
    }

    /// Forget a holding, only while it is still this lease's (a restored and re-fetched
    /// delivery belongs to its new holder).
    fn take_unacked(&self, held: &Delivery) -> Result<Delivery, BrokerError> {
        let mut st = self.lock();
        let ours = st
            .unacked
            .get(&held.tag)
            .is_some_and(|(d, _)| d.lease == held.lease);
        let lost = || BrokerError::LeaseLost(held.tag.clone());
        if !ours {
            return Err(lost());
        }
        st.unacked
            .remove(&held.tag)
            .map(|(d, _)| d)
            .ok_or_else(lost)
    }

    /// Pretend another worker restored the delivery and fetched it (tests of lease loss): the
    /// holding is now under a lease nobody in the test has.
    pub fn take_away(&self, tag: &str) -> bool {
        let mut st = self.lock();
        match st.unacked.get_mut(tag) {
            Some((d, _)) => {
                d.lease = format!("{tag}#elsewhere");
                true
            }
            None => false,
        }
    }

    /// Put a delivery at the front of its priority list, marked redelivered.
    fn restore_front(&self, mut delivery: Delivery) {
        delivery.redelivered = true;
        let mut st = self.lock();
        st.requeued.push(delivery.tag.clone());
        let idx = step_index(priority_of(&delivery));
        queue_lists(&mut st, &delivery.queue)[idx].push_front(delivery);
        drop(st);
        self.arrived.notify_waiters();
    }
}

fn queue_lists<'a>(st: &'a mut State, queue: &str) -> &'a mut Lists {
    st.queues.entry(queue.to_owned()).or_default()
}

/// `queues` ordered by the persistent rotation; unseen queues keep their given order at the end.
fn rotation_order(rotation: &mut Vec<String>, queues: &[String]) -> Vec<String> {
    for q in queues {
        if !rotation.contains(q) {
            rotation.push(q.clone());
        }
    }
    rotation
        .iter()
        .filter(|r| queues.contains(r))
        .cloned()
        .collect()
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn fetch(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<Option<Delivery>, BrokerError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Register interest before looking, so a push between look and wait is not missed.
            let notified = self.arrived.notified();
            if let Some(d) = self.pop_next(queues) {
                return Ok(Some(d));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        self.take_unacked(delivery)?;
        self.lock().acked.push(delivery.tag.clone());
        Ok(())
    }

    async fn requeue(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        let held = self.take_unacked(delivery)?;
        self.restore_front(held);
        Ok(())
    }

    async fn renew_leases(
        &self,
        held: &[(DeliveryTag, LeaseId)],
    ) -> Result<Vec<LeaseId>, BrokerError> {
        let expiry = Instant::now() + self.lease;
        let mut st = self.lock();
        st.renewed += 1;
        let mut lost = Vec::new();
        for (tag, lease) in held {
            match st.unacked.get_mut(tag) {
                Some(entry) if entry.0.lease == *lease => entry.1 = expiry,
                _ => lost.push(lease.clone()),
            }
        }
        Ok(lost)
    }

    async fn claim_finish(&self, delivery: &Delivery) -> Result<bool, BrokerError> {
        let mut st = self.lock();
        let Some(entry) = st.unacked.get_mut(&delivery.tag) else {
            return Ok(false);
        };
        if entry.0.lease != delivery.lease {
            return Ok(false);
        }
        // Nobody restores it while it finishes (a long time, not forever: see the Redis one).
        entry.1 = Instant::now() + self.lease * 100;
        Ok(true)
    }

    async fn restore_expired(&self) -> Result<usize, BrokerError> {
        let now = Instant::now();
        let expired: Vec<Delivery> = {
            let mut st = self.lock();
            let tags: Vec<_> = st
                .unacked
                .iter()
                .filter(|(_, (_, exp))| *exp <= now)
                .map(|(t, _)| t.clone())
                .collect();
            tags.iter()
                .filter_map(|t| st.unacked.remove(t))
                .map(|(d, _)| d)
                .collect()
        };
        let n = expired.len();
        for d in expired {
            self.restore_front(d);
        }
        Ok(n)
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let held = self.take_unacked(delivery)?;
        self.lock().dead.push((held, reason.to_owned()));
        Ok(())
    }

    async fn publish(&self, task: &OutgoingTask) -> Result<(), BrokerError> {
        self.lock().published.push(task.clone());
        Ok(())
    }
}

#[async_trait]
impl ResultStore for MemoryBroker {
    async fn store_result(&self, result: &TaskResult) -> Result<(), BrokerError> {
        self.lock().results.push(result.clone());
        Ok(())
    }
}

/// A minimal decoded task for tests: `name`, `id`, the fewest arguments that bind for a long
/// task name (none for any other name), priority 0, no ETA.
pub fn test_task(name: &str, id: &str) -> TaskMessage {
    let token = || Value::String("tok".into());
    let args = match name {
        "encode_media" => vec![token(), Value::from(1), Value::from(1)],
        "create_hls" | "produce_sprite_from_video" | "whisper_transcribe" => vec![token()],
        "chunkize_media" => vec![token(), Value::Array(Vec::new())],
        _ => Vec::new(),
    };
    TaskMessage {
        name: name.to_owned(),
        id: id.to_owned(),
        args,
        kwargs: Map::new(),
        embed: Value::Null,
        eta: None,
        expires: None,
        retries: 0,
        time_limit: (None, None),
        root_id: Some(id.to_owned()),
        parent_id: None,
        priority: 0,
        routing_key: "long_tasks".to_owned(),
        headers: Map::new(),
        properties: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn prio(id: &str, p: u8) -> TaskMessage {
        TaskMessage {
            priority: p,
            ..test_task("t", id)
        }
    }

    async fn ids(b: &MemoryBroker, queues: &[String], n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let d = b.fetch(queues, Duration::ZERO).await.unwrap().unwrap();
            out.push(d.tag.clone());
        }
        out
    }

    #[tokio::test]
    async fn priority_zero_first_then_fifo() {
        let b = MemoryBroker::default();
        b.push_task("a", prio("p9", 9));
        b.push_task("a", prio("p0a", 0));
        b.push_task("a", prio("p5", 5));
        b.push_task("a", prio("p0b", 2));
        assert_eq!(ids(&b, &q(&["a"]), 4).await, ["p0a", "p0b", "p5", "p9"]);
        assert_eq!(b.unacked_tags().len(), 4);
    }

    #[tokio::test]
    async fn round_robin_across_queues() {
        let b = MemoryBroker::default();
        for id in ["a1", "a2"] {
            b.push_task("a", prio(id, 0));
        }
        for id in ["b1", "b2"] {
            b.push_task("b", prio(id, 0));
        }
        assert_eq!(ids(&b, &q(&["a", "b"]), 4).await, ["a1", "b1", "a2", "b2"]);
    }

    #[tokio::test]
    async fn requeue_goes_to_front_marked_redelivered() {
        let b = MemoryBroker::default();
        b.push_task("a", prio("x", 0));
        b.push_task("a", prio("y", 0));
        let d = b.fetch(&q(&["a"]), Duration::ZERO).await.unwrap().unwrap();
        b.requeue(&d).await.unwrap();
        let again = b.fetch(&q(&["a"]), Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(again.tag, "x");
        assert!(again.redelivered);
        assert_ne!(again.lease, d.lease, "a new holding gets a new lease");
        // The first holding is over: it can neither requeue nor ack the second one.
        assert!(matches!(
            b.requeue(&d).await,
            Err(BrokerError::LeaseLost(_))
        ));
        assert!(matches!(b.ack(&d).await, Err(BrokerError::LeaseLost(_))));
        assert!(matches!(b.requeue(&again).await, Ok(())));
        assert!(matches!(
            b.ack(&again).await,
            Err(BrokerError::LeaseLost(_))
        ));
    }

    #[tokio::test]
    async fn expired_leases_are_restored_renewed_ones_kept() {
        let b = MemoryBroker::new(Duration::from_millis(100));
        b.push_task("a", prio("x", 0));
        b.push_task("a", prio("y", 0));
        let _x = b.fetch(&q(&["a"]), Duration::ZERO).await.unwrap().unwrap();
        let y = b.fetch(&q(&["a"]), Duration::ZERO).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let lost = b.renew_leases(&[(y.tag.clone(), y.lease.clone())]).await;
        assert!(lost.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(b.restore_expired().await.unwrap(), 1);
        assert_eq!(b.unacked_tags(), ["y"]);
        assert_eq!(b.queue_len("a"), 1);
    }

    #[tokio::test]
    async fn fetch_waits_for_a_push() {
        let b = MemoryBroker::default();
        let b2 = b.clone();
        let waiter =
            tokio::spawn(async move { b2.fetch(&q(&["a"]), Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        b.push_task("a", prio("late", 0));
        let got = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(got.tag, "late");
        assert!(b
            .fetch(&q(&["a"]), Duration::from_millis(5))
            .await
            .unwrap()
            .is_none());
    }
}
