//! The lease as a fence (ARCHITECTURE decision 4): every holding writes its own lease id into
//! `mediacms-worker.holder.<tag>`, and renewals, the finish claim, acks and requeues are Lua
//! scripts that act only while that key still names our lease — atomically, so no timing
//! window lets two holders of one delivery both finish it, or one delete the other's entry.
//!
//! The holder key outlives the entry as a tombstone (`acked`, `requeued`, `restored`, `dead`)
//! for a day, so "no holder key and no `unacked` entry" means one thing only: Redis lost its
//! data (a restart without persistence), and the holding is ours to re-establish from our bytes.

use std::collections::HashMap;

use redis::Script;

use super::keys::{self as kombu, LEASES, UNACKED, UNACKED_INDEX};
use super::{Inner, ATTEMPTS};
use crate::broker::{BrokerError, Delivery, DeliveryTag, LeaseId};
use crate::celery::envelope;
use crate::clock::unix_now;

/// How long the holder key (and its tombstone) lives: kombu's default visibility timeout.
pub(crate) const HOLDER_TTL_SECS: u64 = 86_400;

/// Shared preamble: `ours` (the key names our lease and the entry is still held: a kombu
/// client that restored it by visibility timeout does not know our key) and `gone` (no key, no
/// entry: lost data).
const STATE: &str = "local h = redis.call('get', KEYS[4]); \
    local held = redis.call('hexists', KEYS[1], ARGV[1]) == 1; \
    local ours = (h == ARGV[2]) and held; \
    local gone = (not h) and not held; ";

/// Renew (or claim the finish, with a longer expiry): 1 renewed, 2 re-established after lost
/// data, 0 not ours. ARGV: tag, lease, now, expiry, unacked value, ttl, mode. Mode `GT` so a
/// renewal never shortens the finishing window a claim set; `CH` (a plain update) to end that
/// window early once the final writes are done.
const RENEW_BODY: &str = "if ours then \
      redis.call('zadd', KEYS[2], 'XX', ARGV[3], ARGV[1]); \
      redis.call('zadd', KEYS[3], 'XX', ARGV[7], ARGV[4], ARGV[1]); \
      redis.call('expire', KEYS[4], ARGV[6]); return 1 end; \
    if gone then \
      redis.call('hset', KEYS[1], ARGV[1], ARGV[5]); \
      redis.call('zadd', KEYS[2], ARGV[3], ARGV[1]); \
      redis.call('zadd', KEYS[3], ARGV[4], ARGV[1]); \
      redis.call('set', KEYS[4], ARGV[2], 'EX', ARGV[6]); return 2 end; \
    return 0";

/// Forget the holding (ack; dead-letter with KEYS[5]/ARGV[5]; requeue with RPUSH of ARGV[5] to
/// KEYS[5]) and leave tombstone ARGV[3]: 1 done, 2 done though the bookkeeping was gone, 0 not
/// ours (nothing touched). ARGV: tag, lease, tombstone, ttl, [payload]; ARGV[6]: `lpush`|`rpush`.
const FORGET_BODY: &str = "if not (ours or gone) then return 0 end; \
    redis.call('zrem', KEYS[2], ARGV[1]); redis.call('hdel', KEYS[1], ARGV[1]); \
    redis.call('zrem', KEYS[3], ARGV[1]); \
    redis.call('set', KEYS[4], ARGV[3], 'EX', ARGV[4]); \
    if KEYS[5] then redis.call(ARGV[6], KEYS[5], ARGV[5]) end; \
    if gone then return 2 end; return 1";

/// The holder key of a delivery tag.
pub(crate) fn holder_key(tag: &str) -> String {
    format!("mediacms-worker.holder.{tag}")
}

fn script(body: &str) -> Script {
    Script::new(&format!("{STATE}{body}"))
}

pub(crate) static RENEW: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| script(RENEW_BODY));
pub(crate) static FORGET: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| script(FORGET_BODY));
pub(crate) static DEAD: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| script(super::dead::DEAD_BODY));

/// What a fence script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fenced {
    Ours,
    /// Ours by default: Redis had lost the bookkeeping (re-established, or nothing to forget).
    Recovered,
    /// Another holder has it, or it was restored/acked meanwhile: nothing was touched.
    Lost,
}

impl Fenced {
    pub(crate) fn from_reply(n: i64) -> Fenced {
        match n {
            1 => Fenced::Ours,
            2 => Fenced::Recovered,
            _ => Fenced::Lost,
        }
    }

    pub(crate) fn held(self) -> bool {
        self != Fenced::Lost
    }
}

/// The four keys every fence script reads, in order.
pub(crate) fn keys(tag: &str) -> [String; 4] {
    [
        UNACKED.to_owned(),
        UNACKED_INDEX.to_owned(),
        LEASES.to_owned(),
        holder_key(tag),
    ]
}

/// The holding side of the fence: this process's holdings, and the scripts run on them.
impl Inner {
    pub(crate) fn local(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<LeaseId, (DeliveryTag, String)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this process holds `tag` under any lease (never restored by us).
    pub(crate) fn holds_tag(&self, tag: &str) -> bool {
        self.local().values().any(|(t, _)| t == tag)
    }

    /// Renew one holding, the lease running until `expiry` (unix seconds); `shorten`: also
    /// when that is earlier than the current expiry (ending a finishing window).
    pub(crate) async fn renew(
        &self,
        tag: &str,
        lease: &str,
        expiry: f64,
        shorten: bool,
    ) -> Result<Fenced, BrokerError> {
        let Some(value) = self.local().get(lease).map(|(_, v)| v.clone()) else {
            return Ok(Fenced::Lost);
        };
        let mut call = RENEW.prepare_invoke();
        for k in keys(tag) {
            call.key(k);
        }
        call.arg(tag).arg(lease).arg(unix_now()).arg(expiry);
        call.arg(value)
            .arg(HOLDER_TTL_SECS)
            .arg(if shorten { "CH" } else { "GT" });
        let got = self.script(&call).await.map(Fenced::from_reply)?;
        match got {
            Fenced::Recovered => {
                tracing::warn!(%tag, "held delivery was missing from Redis (data lost?): held again")
            }
            // Not ours any more: forget it here too, so our own restorer may take it again
            // once its new holder is gone.
            Fenced::Lost => drop(self.local().remove(lease)),
            Fenced::Ours => {}
        }
        Ok(got)
    }

    /// End a holding: forget its bookkeeping (leaving `tombstone`), and with `push`, put
    /// `(command, list, payload)` in the same step. Acts only while the lease is ours.
    pub(crate) async fn forget(
        &self,
        d: &Delivery,
        tombstone: &str,
        push: Option<(&str, &str, &[u8])>,
    ) -> Result<Fenced, BrokerError> {
        let mut call = FORGET.prepare_invoke();
        for k in keys(&d.tag) {
            call.key(k);
        }
        call.arg(&d.tag)
            .arg(&d.lease)
            .arg(tombstone)
            .arg(HOLDER_TTL_SECS);
        if let Some((command, list, payload)) = push {
            call.key(list).arg(payload).arg(command);
        }
        let got = self.script(&call).await.map(Fenced::from_reply);
        self.local().remove(&d.lease);
        got
    }

    /// One fence script; retried across reconnects (each is idempotent: the tombstone or the
    /// renewed score makes a repeat a no-op).
    pub(crate) async fn script(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<i64, BrokerError> {
        self.on_cmd(ATTEMPTS, |mut c| async move {
            call.invoke_async::<i64>(&mut c).await
        })
        .await
    }

    /// Put a holding back at the front of its list from our own bytes (`redelivered` unless it
    /// was never handed out), unless another holder has it.
    pub(crate) async fn give_back(
        &self,
        d: &Delivery,
        redelivered: bool,
    ) -> Result<Fenced, BrokerError> {
        let facts = envelope::redis_facts(&d.raw);
        let rk = facts.routing_key.unwrap_or_else(|| d.queue.clone());
        let list = kombu::priority_list(&rk, facts.priority);
        let payload = match redelivered {
            true => envelope::mark_redelivered(&d.raw).unwrap_or_else(|_| d.raw.clone()),
            false => d.raw.clone(),
        };
        let got = self
            .forget(d, "requeued", Some(("rpush", &list, &payload)))
            .await?;
        if got == Fenced::Recovered {
            tracing::warn!(tag = %d.tag, "requeued from our own copy: Redis had lost it");
        }
        Ok(got)
    }
}
