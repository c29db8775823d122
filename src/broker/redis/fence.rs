//! The lease as a fence (ARCHITECTURE decision 4): every holding writes its own lease id into
//! `mediacms-worker.holder.<tag>`, and renewals, the finish claim, acks and requeues are Lua
//! scripts that act only while that key still names our lease — atomically, so no timing
//! window lets two holders of one delivery both finish it, or one delete the other's entry.
//!
//! The holder key outlives the entry as a tombstone (`acked`, `requeued`, `restored`, `dead`)
//! for a day, so "no holder key and no `unacked` entry" means one thing only: Redis lost its
//! data (a restart without persistence), and the holding is ours to re-establish from our bytes.

use redis::Script;

use super::keys::{LEASES, UNACKED, UNACKED_INDEX};

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
