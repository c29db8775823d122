//! The `Health` handle: the pool beats a heartbeat, the app flips readiness flags, and the HTTP
//! endpoints read both. Lock-free atomics so the hot loop never waits on a scrape.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// Tokio's clock, not std's: in production they are the same monotonic clock, and tests can
// pause and advance it instead of sleeping past the staleness limit.
use tokio::time::Instant;

use serde::Serialize;

/// Default staleness after which `/healthz` reports the main loop dead: the loop beats at least
/// every few seconds, so a minute of silence means it is stuck, not busy (encodes run off-loop).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60);

/// Cheap to clone; all clones share the same state.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Monotonic origin: a wall-clock jump (NTP) must not make a live loop look dead.
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last_beat_ms: AtomicU64,
    stale_after: Duration,
    broker: AtomicBool,
    db: AtomicBool,
    intake: AtomicBool,
}

/// What `/readyz` reports; ready only when every flag is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub broker: bool,
    pub db: bool,
    pub intake: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.broker && self.db && self.intake
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_STALE_AFTER)
    }
}

impl Health {
    /// Alive from creation (counts as the first beat); not ready until the app says so.
    pub fn new(stale_after: Duration) -> Self {
        Health {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                last_beat_ms: AtomicU64::new(0),
                stale_after,
                broker: AtomicBool::new(false),
                db: AtomicBool::new(false),
                intake: AtomicBool::new(false),
            }),
        }
    }

    /// Record that the main loop is making progress.
    pub fn beat(&self) {
        let ms = u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last_beat_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn since_last_beat(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last_beat_ms.load(Ordering::Relaxed));
        self.inner.origin.elapsed().saturating_sub(last)
    }

    /// True while the last beat is fresher than the staleness limit.
    pub fn is_alive(&self) -> bool {
        self.since_last_beat() <= self.inner.stale_after
    }

    pub fn set_broker_up(&self, up: bool) {
        self.inner.broker.store(up, Ordering::Relaxed);
    }

    pub fn set_db_up(&self, up: bool) {
        self.inner.db.store(up, Ordering::Relaxed);
    }

    /// Intake closes on the first SIGTERM, so a draining worker drops out of readiness.
    pub fn set_intake_open(&self, open: bool) {
        self.inner.intake.store(open, Ordering::Relaxed);
    }

    pub fn readiness(&self) -> Readiness {
        Readiness {
            broker: self.inner.broker.load(Ordering::Relaxed),
            db: self.inner.db.load(Ordering::Relaxed),
            intake: self.inner.intake.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn alive_until_stale_then_beat_revives() {
        let h = Health::new(Duration::from_secs(30));
        assert!(h.is_alive());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(h.is_alive(), "stale only after the limit");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!h.is_alive());
        h.clone().beat();
        assert!(h.is_alive());
    }

    #[test]
    fn ready_needs_all_three_flags() {
        let h = Health::default();
        assert!(!h.readiness().ready());
        h.set_broker_up(true);
        h.set_db_up(true);
        assert!(!h.readiness().ready());
        h.set_intake_open(true);
        assert!(h.readiness().ready());
        h.set_db_up(false);
        assert_eq!(
            h.readiness(),
            Readiness {
                broker: true,
                db: false,
                intake: true
            }
        );
    }
}
