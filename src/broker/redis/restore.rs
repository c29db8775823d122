//! Putting deliveries whose lease expired back on their queue: kombu's
//! WATCH/HGET/MULTI/ZREM/HDEL/RPUSH/EXEC under `unacked_mutex`, restricted to our fleet's leases
//! and never touching a delivery this process holds itself. The holder key is watched too (every
//! renewal touches it), and a restore leaves the `restored` tombstone there, so the old holder
//! learns it lost the lease (`fence.rs`). Requeues and acks are fence scripts, not this path.

use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};
use serde_json::json;
use tokio::sync::Mutex;

use super::conn::Slot;
use super::fence::{self, HOLDER_TTL_SECS};
use super::keys::{self, LEASES, MUTEX_PX, UNACKED, UNACKED_INDEX, UNACKED_MUTEX};
use super::Inner;
use crate::broker::BrokerError;
use crate::celery::envelope;
use crate::clock::unix_now;

/// The mutex release: delete only if the token is still ours (celery-wire.md §4.4).
const RELEASE_LUA: &str = "local token = redis.call('get', KEYS[1]); \
    if not token or token ~= ARGV[1] then return 0 end; redis.call('del', KEYS[1]); return 1";
/// A transaction aborted by a concurrent writer (any fetch, ack or renewal) is retried this often.
const WATCH_RETRIES: usize = 10;

#[derive(Debug, PartialEq)]
enum Outcome {
    Moved,
    /// Not (or no longer) held under our lease: left alone.
    NotOurs,
    /// The lease was renewed since it was listed as expired.
    Renewed,
    /// EXEC aborted because `unacked` changed after WATCH.
    Aborted,
}

/// The connection used for WATCH transactions: one caller at a time, and a transaction that
/// was interrupted (caller cancelled) leaves it marked dirty so it is replaced before reuse.
pub(crate) struct TxnConn {
    slot: Slot,
    gate: Mutex<()>,
    dirty: AtomicBool,
}

impl TxnConn {
    pub(crate) fn new(slot: Slot) -> Self {
        TxnConn {
            slot,
            gate: Mutex::new(()),
            dirty: AtomicBool::new(false),
        }
    }
}

impl Inner {
    /// Restore every delivery whose lease (ours) expired; holds kombu's mutex while doing so.
    pub(crate) async fn restore_expired(&self) -> Result<usize, BrokerError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut p = redis::pipe();
        p.cmd("SET").arg(UNACKED_MUTEX).arg(&token).arg("NX");
        p.arg("PX").arg(MUTEX_PX);
        let (acquired,): (Option<String>,) = self.run(&p, false).await?;
        if acquired.is_none() {
            return Ok(0); // another restorer (ours or kombu's) is at work
        }
        let restored = self.restore_listed().await;
        let script = Script::new(RELEASE_LUA);
        let mut release = script.key(UNACKED_MUTEX);
        release.arg(&token);
        self.on_cmd(1, |mut c| {
            let release = &release;
            async move { release.invoke_async::<i64>(&mut c).await }
        })
        .await?;
        restored
    }

    async fn restore_listed(&self) -> Result<usize, BrokerError> {
        let now = unix_now();
        let mut p = redis::pipe();
        p.cmd("ZRANGEBYSCORE").arg(LEASES).arg("-inf").arg(now);
        let (expired,): (Vec<String>,) = self.run(&p, true).await?;
        let mut restored = 0;
        for tag in expired {
            if self.holds_tag(&tag) {
                // Our own holding, not renewed in time (this process stalled): still ours.
                continue;
            }
            if self.move_back(&tag, now).await? {
                tracing::info!(%tag, "restored a delivery whose lease expired");
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Move one delivery whose lease expired before `now` back to the front of its priority
    /// list. `Ok(false)` when it is not (or no longer) ours to move.
    async fn move_back(&self, tag: &str, now: f64) -> Result<bool, BrokerError> {
        let txn = &self.txn;
        let _one_at_a_time = txn.gate.lock().await;
        if txn.dirty.swap(true, Ordering::SeqCst) {
            txn.slot.reset().await;
        }
        let mut c = txn.slot.get().await?;
        for _ in 0..WATCH_RETRIES {
            let outcome = self.attempt(&mut c, tag, now).await;
            match txn.slot.check(outcome).await? {
                Outcome::Aborted => continue,
                done => {
                    txn.dirty.store(false, Ordering::SeqCst);
                    return Ok(done == Outcome::Moved);
                }
            }
        }
        txn.dirty.store(false, Ordering::SeqCst);
        Err(BrokerError::Protocol(format!(
            "restoring {tag}: `unacked` kept changing"
        )))
    }

    async fn attempt(
        &self,
        c: &mut MultiplexedConnection,
        tag: &str,
        now: f64,
    ) -> Result<Outcome, RedisError> {
        let holder = fence::holder_key(tag);
        redis::cmd("WATCH")
            .arg(UNACKED)
            .arg(&holder)
            .query_async::<()>(c)
            .await?;
        let mut read = redis::pipe();
        read.cmd("HGET").arg(UNACKED).arg(tag);
        read.cmd("ZSCORE").arg(UNACKED_INDEX).arg(tag);
        read.cmd("ZSCORE").arg(LEASES).arg(tag);
        let (value, index, lease): (Option<String>, Option<f64>, Option<f64>) =
            read.query_async(c).await?;
        // Ours = under our lease, and nobody fetched it after that lease ran out (a kombu
        // client may have restored it and a Python worker taken it since).
        let ours = matches!((&value, lease), (Some(_), Some(l)) if index.is_none_or(|i| i <= l));
        let (Some(value), Some(lease), true) = (value, lease, ours) else {
            redis::cmd("UNWATCH").query_async::<()>(c).await?;
            redis::cmd("ZREM")
                .arg(LEASES)
                .arg(tag)
                .query_async::<()>(c)
                .await?;
            return Ok(Outcome::NotOurs);
        };
        if lease > now {
            redis::cmd("UNWATCH").query_async::<()>(c).await?;
            return Ok(Outcome::Renewed);
        }
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("ZREM").arg(UNACKED_INDEX).arg(tag).ignore();
        p.cmd("HDEL").arg(UNACKED).arg(tag).ignore();
        p.cmd("ZREM").arg(LEASES).arg(tag).ignore();
        p.cmd("SET").arg(&holder).arg("restored");
        p.arg("EX").arg(HOLDER_TTL_SECS).ignore();
        let (list, payload) = self.destination(tag, &value);
        p.cmd(if list == self.opts.dead_letter_key {
            "LPUSH"
        } else {
            "RPUSH"
        });
        p.arg(list).arg(payload).ignore();
        let done: Option<redis::Value> = p.query_async(c).await?;
        Ok(done.map_or(Outcome::Aborted, |_| Outcome::Moved))
    }

    /// Where a held entry goes and with which bytes: RPUSH (front of the queue, consumed next)
    /// to the list of its routing key and priority; an unreadable entry to the dead-letter list.
    fn destination(&self, tag: &str, value: &str) -> (String, Vec<u8>) {
        let Some(held) = keys::parse_unacked(value) else {
            let record = json!({
                "reason": "unreadable unacked entry",
                "queue": null,
                "tag": tag,
                "raw": value,
                "at": chrono::Utc::now().to_rfc3339(),
            });
            return (self.opts.dead_letter_key.clone(), record.to_string().into());
        };
        let priority = envelope::redis_facts(&held.raw).priority;
        let payload = envelope::mark_redelivered(&held.raw).unwrap_or(held.raw);
        (keys::priority_list(&held.routing_key, priority), payload)
    }
}
