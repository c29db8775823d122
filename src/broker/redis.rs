//! kombu-exact Redis transport: priority lists, `unacked` hash + `unacked_index` zset, our own
//! lease zset for early restore, `celery-task-meta-*` results (celery-wire.md §1, §3–§5, §11).
//!
//! Connections: one dedicated to BRPOP, one for commands (multiplexed), one for WATCH
//! transactions (used by one caller at a time). Each reconnects with capped exponential backoff.

mod conn;
pub mod dead;
mod fence;
mod keys;
mod restore;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Pipeline, Script};
use tokio::sync::{oneshot, Mutex};

use self::conn::Slot;
use self::fence::{Fenced, HOLDER_TTL_SECS};
use self::keys::{Rotation, LEASES, UNACKED, UNACKED_INDEX};
use crate::broker::{Broker, BrokerError, Delivery, DeliveryTag, LeaseId, ResultStore};
use crate::celery::envelope;
use crate::celery::message::OutgoingTask;
use crate::celery::result::{self as result_codec, TaskResult};
use crate::clock::unix_now;

/// Default dead-letter list for undecodable deliveries.
pub const DEFAULT_DEAD_LETTER_KEY: &str = "mediacms-worker.dead-letter";
/// Celery's `result_expires` default (one day), used as the result key TTL.
const RESULT_TTL_SECS: u64 = 86_400;
/// The result write: leave a stored SUCCESS alone (Celery checks the current meta first).
const STORE_RESULT_LUA: &str = "local cur = redis.call('get', KEYS[1]); \
    if cur then local ok, meta = pcall(cjson.decode, cur); \
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end end; \
    redis.call('setex', KEYS[1], ARGV[2], ARGV[1]); redis.call('publish', KEYS[1], ARGV[1]); \
    return 1";
/// Commands other than BRPOP must answer within this (a loaded 2-core box is slow, not dead).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// A BRPOP reply later than its own timeout plus this means the connection is gone.
const BRPOP_GRACE: Duration = Duration::from_secs(10);
/// Idempotent operations are attempted this many times across reconnects.
const ATTEMPTS: u32 = 3;
/// How long a popped message is retried into `unacked` before it is handed out unheld.
const HOLD_RETRY_FOR: Duration = Duration::from_secs(60);
/// After `claim_finish`, restorers stay away this long (at least): the final writes take well
/// under a second, so only a worker that died (or stalled this long) mid-finish is restored.
const FINISH_WINDOW_MIN: Duration = Duration::from_secs(600);

/// Tunables of [`RedisBroker`].
#[derive(Debug, Clone, PartialEq)]
pub struct RedisBrokerOptions {
    /// Our Lease: a held delivery not renewed for this long is restored by `restore_expired`.
    pub lease: Duration,
    /// Redis list that receives dead-lettered deliveries (LPUSH, newest first).
    pub dead_letter_key: String,
    /// Its bounds (count, bytes, TTL).
    pub dead_letter_caps: crate::config::DeadLetterCaps,
}

impl Default for RedisBrokerOptions {
    fn default() -> Self {
        RedisBrokerOptions {
            lease: Duration::from_secs(crate::config::defaults::LEASE_SECS),
            dead_letter_key: DEFAULT_DEAD_LETTER_KEY.to_owned(),
            dead_letter_caps: Default::default(),
        }
    }
}

/// The Redis [`Broker`] and [`ResultStore`]. Cheap to clone (shared connections).
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    cmd: Slot,
    brpop: Slot,
    txn: restore::TxnConn,
    /// One BRPOP at a time on the dedicated connection; held by the spawned fetch.
    fetch_gate: Arc<Mutex<()>>,
    rotation: std::sync::Mutex<Rotation>,
    opts: RedisBrokerOptions,
    /// Our producer id, kombu's `reply_to` (`oid`) on every message we publish.
    reply_to: String,
    /// Reconnections of any of the three connections (the `broker_reconnects_total` source).
    reconnects: Arc<AtomicU64>,
    /// Holdings of this process: lease id → (tag, `unacked` value). Never restored by us, and
    /// re-established from these bytes when Redis lost them.
    held: std::sync::Mutex<HashMap<LeaseId, (DeliveryTag, String)>>,
}

impl RedisBroker {
    /// Connect to `url` (its DB number is honoured: MediaCMS uses `/1`) and check it answers.
    pub async fn connect(url: &str, opts: RedisBrokerOptions) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url).map_err(|e| {
            let shown = crate::config::redact_url(url);
            BrokerError::Config(format!("redis url `{shown}`: {e}"))
        })?;
        let reconnects = Arc::new(AtomicU64::new(0));
        let slot = |timeout| Slot::new(client.clone(), timeout, reconnects.clone());
        let inner = Inner {
            cmd: slot(Some(COMMAND_TIMEOUT)),
            brpop: slot(None),
            txn: restore::TxnConn::new(slot(Some(COMMAND_TIMEOUT))),
            reconnects: reconnects.clone(),
            fetch_gate: Arc::new(Mutex::new(())),
            rotation: std::sync::Mutex::new(Rotation::default()),
            opts,
            reply_to: uuid::Uuid::new_v4().to_string(),
            held: std::sync::Mutex::new(HashMap::new()),
        };
        let broker = RedisBroker {
            inner: Arc::new(inner),
        };
        let mut c = broker.inner.cmd.get().await?;
        let pong = redis::cmd("PING").query_async::<String>(&mut c).await;
        broker.inner.cmd.check(pong).await?;
        Ok(broker)
    }

    /// The lease length this broker records and renews.
    pub fn lease(&self) -> Duration {
        self.inner.opts.lease
    }

    /// Messages waiting per queue and priority step (`LLEN` of kombu's four lists), for the
    /// queue-depth gauge.
    pub async fn queue_depths(
        &self,
        queues: &[String],
    ) -> Result<Vec<(String, u8, u64)>, BrokerError> {
        let mut p = redis::pipe();
        let mut keys = Vec::new();
        for q in queues {
            for step in crate::broker::PRIORITY_STEPS {
                p.cmd("LLEN").arg(keys::priority_list(q, step));
                keys.push((q.clone(), step));
            }
        }
        let lens: Vec<u64> = self.inner.run(&p, true).await?;
        Ok(keys
            .into_iter()
            .zip(lens)
            .map(|((q, s), n)| (q, s, n))
            .collect())
    }
}

impl Inner {
    /// Run a pipeline on the command connection; `retry` only for idempotent ones.
    async fn run<T: FromRedisValue>(&self, p: &Pipeline, retry: bool) -> Result<T, BrokerError> {
        let attempts = if retry { ATTEMPTS } else { 1 };
        self.on_cmd(attempts, |mut c| async move { p.query_async(&mut c).await })
            .await
    }

    /// `op` on (a handle to) the command connection, attempted up to `attempts` times across
    /// reconnects (connection errors only; anything else is returned as is).
    async fn on_cmd<T, F, Fut>(&self, attempts: u32, mut op: F) -> Result<T, BrokerError>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = BrokerError::Connection("no attempt".into());
        for _ in 0..attempts {
            let c = match self.cmd.get().await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match self.cmd.check(op(c).await).await {
                Err(e @ BrokerError::Connection(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// BRPOP once across `queues` (kombu order), then record the delivery as held.
    async fn fetch_one(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<Option<Delivery>, BrokerError> {
        let _one_at_a_time = self.fetch_gate.lock().await;
        let keys = {
            let mut rotation = self.rotation.lock().expect("rotation lock");
            keys::brpop_keys(rotation.sync(queues))
        };
        let mut c = self.brpop.get().await?;
        // Redis ≥ 6 takes a float timeout; 0 would block forever.
        let secs = timeout.as_secs_f64().max(0.01);
        let brpop = redis::cmd("BRPOP").arg(&keys).arg(secs).to_owned();
        let reply = tokio::time::timeout(timeout + BRPOP_GRACE, brpop.query_async(&mut c)).await;
        let popped: Option<(String, Vec<u8>)> = match reply {
            Ok(r) => self.brpop.check(r).await?,
            Err(_) => {
                self.brpop.reset().await;
                return Err(BrokerError::Connection("BRPOP reply overdue".into()));
            }
        };
        let Some((list, raw)) = popped else {
            return Ok(None);
        };
        let queue = keys::queue_of_list(&list).to_owned();
        self.rotation.lock().expect("rotation lock").rotate(&queue);
        Ok(Some(self.hold(queue, raw).await))
    }

    /// kombu's `MULTI; ZADD unacked_index; HSET unacked; EXEC` plus our lease, retried while
    /// Redis is away: the message exists only in our memory until this succeeds.
    async fn hold(&self, queue: String, raw: Vec<u8>) -> Delivery {
        // The envelope's one parse: bookkeeping facts and the decoded task together.
        let (facts, message) = envelope::read_redis(&raw);
        let tag = facts
            .tag
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let rk = facts.routing_key.clone().unwrap_or_else(|| queue.clone());
        let value = keys::unacked_value(&raw, facts.is_object, &facts.exchange, &rk);
        let lease = uuid::Uuid::new_v4().simple().to_string();
        self.local()
            .insert(lease.clone(), (tag.clone(), value.clone()));
        let deadline = tokio::time::Instant::now() + HOLD_RETRY_FOR;
        loop {
            let now = unix_now();
            let mut p = redis::pipe();
            p.atomic();
            p.cmd("ZADD").arg(UNACKED_INDEX).arg(now).arg(&tag).ignore();
            p.cmd("HSET").arg(UNACKED).arg(&tag).arg(&value).ignore();
            let expiry = now + self.opts.lease.as_secs_f64();
            p.cmd("ZADD").arg(LEASES).arg(expiry).arg(&tag).ignore();
            p.cmd("SET").arg(fence::holder_key(&tag)).arg(&lease);
            p.arg("EX").arg(HOLDER_TTL_SECS).ignore();
            match self.run::<()>(&p, false).await {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(%tag, error = %e, "holding a fetched delivery failed; retrying");
                }
                Err(e) => {
                    tracing::error!(%tag, error = %e, "delivery handed out without an unacked entry");
                    break;
                }
            }
        }
        Delivery {
            message,
            tag,
            lease,
            queue,
            redelivered: facts.redelivered,
            raw,
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn fetch(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<Option<Delivery>, BrokerError> {
        if queues.is_empty() {
            return Err(BrokerError::Protocol(
                "fetch needs at least one queue".into(),
            ));
        }
        // The BRPOP runs in its own task so a caller that gives up (shutdown, select!) cannot
        // drop a popped message: an unclaimed delivery goes straight back to its queue.
        let (tx, rx) = oneshot::channel();
        let inner = self.inner.clone();
        let queues = queues.to_vec();
        tokio::spawn(async move {
            let got = inner.fetch_one(&queues, timeout).await;
            if let Err(Ok(Some(unclaimed))) = tx.send(got) {
                if let Err(e) = inner.give_back(&unclaimed, false).await {
                    tracing::error!(tag = %unclaimed.tag, error = %e, "unclaimed delivery stays held until its lease expires");
                }
            }
        });
        rx.await
            .map_err(|_| BrokerError::Connection("fetch task ended without a reply".into()))?
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        match self.inner.forget(delivery, "acked", None).await?.held() {
            true => Ok(()),
            false => Err(BrokerError::LeaseLost(delivery.tag.clone())),
        }
    }

    /// Back to the front of its queue while the lease is ours — also when Redis lost the
    /// bookkeeping (re-published from our bytes); never when another holder has it.
    async fn requeue(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        match self.inner.give_back(delivery, true).await?.held() {
            true => Ok(()),
            false => Err(BrokerError::LeaseLost(delivery.tag.clone())),
        }
    }

    /// Renews every holding still ours; returns the lease ids that are not (their jobs must
    /// stop). A holding whose bookkeeping Redis lost is held again from our bytes.
    async fn renew_leases(
        &self,
        held: &[(DeliveryTag, LeaseId)],
    ) -> Result<Vec<LeaseId>, BrokerError> {
        let mut lost = Vec::new();
        for (tag, lease) in held {
            let expiry = unix_now() + self.inner.opts.lease.as_secs_f64();
            if !self.inner.renew(tag, lease, expiry, false).await?.held() {
                lost.push(lease.clone());
            }
        }
        Ok(lost)
    }

    async fn claim_finish(&self, delivery: &Delivery) -> Result<bool, BrokerError> {
        let window = (self.inner.opts.lease * 10).max(FINISH_WINDOW_MIN);
        let expiry = unix_now() + window.as_secs_f64();
        let got = self
            .inner
            .renew(&delivery.tag, &delivery.lease, expiry, false);
        Ok(got.await?.held())
    }

    async fn release_finish(&self, delivery: &Delivery) -> Result<bool, BrokerError> {
        let expiry = unix_now() + self.inner.opts.lease.as_secs_f64();
        let got = self
            .inner
            .renew(&delivery.tag, &delivery.lease, expiry, true);
        Ok(got.await?.held())
    }

    async fn restore_expired(&self) -> Result<usize, BrokerError> {
        self.inner.restore_expired().await
    }

    /// Into the capped dead-letter list, atomically with forgetting the holding (only while the
    /// lease is ours): the record keeps the bytes exactly (`dead::record`).
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let opts = &self.inner.opts;
        let caps = &opts.dead_letter_caps;
        let record = dead::record(&delivery.queue, &delivery.tag, reason, &delivery.raw, caps);
        tracing::warn!(tag = %delivery.tag, queue = %delivery.queue, %reason, "dead-lettered");
        let mut call = fence::DEAD.prepare_invoke();
        for k in fence::keys(&delivery.tag) {
            call.key(k);
        }
        call.key(&opts.dead_letter_key)
            .key(dead::bytes_key(&opts.dead_letter_key));
        call.arg(&delivery.tag).arg(&delivery.lease).arg("dead");
        call.arg(HOLDER_TTL_SECS).arg(record);
        call.arg(caps.max_count)
            .arg(caps.max_bytes)
            .arg(caps.ttl.as_secs());
        let got = self.inner.script(&call).await.map(Fenced::from_reply);
        self.inner.local().remove(&delivery.lease);
        match got?.held() {
            true => Ok(()),
            false => Err(BrokerError::LeaseLost(delivery.tag.clone())),
        }
    }

    fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    async fn publish(&self, task: &OutgoingTask) -> Result<(), BrokerError> {
        let tag = uuid::Uuid::new_v4().to_string();
        let raw = envelope::encode_redis(task, &tag, &self.inner.reply_to);
        let (binding, member) = keys::binding(&task.queue);
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("SADD").arg(binding).arg(member).ignore();
        let list = keys::priority_list(&task.queue, task.priority);
        p.cmd("LPUSH").arg(list).arg(raw).ignore();
        // Not retried: a lost reply after EXEC would publish the task twice.
        self.inner.run(&p, false).await
    }
}

#[async_trait]
impl ResultStore for RedisBroker {
    /// Celery's `_store_result`: never overwrite a SUCCESS; SETEX and PUBLISH. One round trip
    /// (a script), as it is on the path of every task.
    async fn store_result(&self, result: &TaskResult) -> Result<(), BrokerError> {
        static SCRIPT: std::sync::LazyLock<Script> =
            std::sync::LazyLock::new(|| Script::new(STORE_RESULT_LUA));
        let key = result_codec::result_key(&result.task_id);
        let doc = result_codec::encode_result(result);
        let mut call = SCRIPT.key(&key);
        call.arg(&doc).arg(RESULT_TTL_SECS);
        // Idempotent: the same document written twice, a repeated PUBLISH is harmless.
        self.inner
            .on_cmd(ATTEMPTS, |mut c| {
                let call = &call;
                async move { call.invoke_async::<i64>(&mut c).await }
            })
            .await
            .map(drop)
    }
}
