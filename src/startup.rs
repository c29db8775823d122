//! Start-up waits: the broker (Redis/RabbitMQ) and Postgres may come up after the worker
//! (compose start order, a restarted container). Like Celery, the worker retries with backoff
//! and one clear log line per attempt instead of exiting; `/healthz` stays alive meanwhile
//! (each attempt beats it) and `/readyz` stays not ready. Only a configuration error (a URL
//! that can never work) ends the wait.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::broker::BrokerError;
use crate::telemetry::Health;

/// The longest pause between attempts: a dependency that returns is used within this (plus one
/// connect), well inside the 5 s the fault suite allows.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// 250 ms, 500 ms, 1 s, then every 2 s.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), BACKOFF_CAP);

/// Whether waiting can help: not for a broker URL that can never work.
pub fn is_permanent(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<BrokerError>(),
            Some(BrokerError::Config(_))
        )
    })
}

/// Call `attempt` until it succeeds; `None` when `stop` fires first. A permanent error is
/// returned at once.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    health: &Health,
    stop: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    for n in 1u32.. {
        health.beat();
        match attempt().await {
            Ok(v) => {
                if n > 1 {
                    let waited = started.elapsed().as_secs_f64();
                    tracing::info!(
                        attempts = n,
                        waited_secs = waited,
                        "{what} is reachable after {waited:.1}s"
                    );
                }
                return Ok(Some(v));
            }
            Err(e) if is_permanent(&e) => return Err(e),
            Err(e) => {
                let pause = BACKOFF.delay(n);
                tracing::warn!(
                    attempt = n,
                    retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "waiting for {what} (attempt {n}, next in {:.2}s): {e:#}",
                    pause.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return Ok(None),
                }
            }
        }
    }
    unreachable!("the attempt counter does not overflow in practice")
}

/// A job directory another worker sharing TEMP_DIRECTORY just created is empty for a moment;
/// only empty ones older than this are stale.
pub const STALE_JOB_DIR_AGE: Duration = Duration::from_secs(600);

/// Remove the empty `mediacms-worker-*` job directories a killed worker (kill -9, OOM) left in
/// TEMP_DIRECTORY: a job's own directory is removed when the job ends, but nothing runs after
/// a SIGKILL. Only empty directories older than `older_than` go (`rmdir` never removes a
/// non-empty one, so a live job elsewhere is safe). Returns how many were removed.
pub fn clean_stale_job_dirs(temp_root: &std::path::Path, older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(temp_root) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let stale = name.to_string_lossy().starts_with("mediacms-worker-")
            && e.file_type().is_ok_and(|t| t.is_dir())
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= older_than);
        if stale && std::fs::remove_dir(e.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %temp_root.display(), "removed stale empty job directories");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_empty_job_dirs_are_removed_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let mk = |name: &str, age: u64, file: bool| {
            let d = root.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if file {
                std::fs::write(d.join("out.mp4"), b"x").unwrap();
            }
            let then = std::time::SystemTime::now() - Duration::from_secs(age);
            std::fs::File::open(&d).unwrap().set_modified(then).unwrap();
            d
        };
        let stale = mk("mediacms-worker-old", 3600, false);
        let fresh = mk("mediacms-worker-new", 5, false);
        let busy = mk("mediacms-worker-busy", 3600, true);
        let other = mk("someone-else", 3600, false);
        assert_eq!(clean_stale_job_dirs(root.path(), STALE_JOB_DIR_AGE), 1);
        assert!(!stale.exists());
        assert!(fresh.exists() && busy.exists() && other.exists());
    }

    #[test]
    fn backoff_grows_then_stays_at_the_cap() {
        assert_eq!(BACKOFF.delay(1), Duration::from_millis(250));
        assert_eq!(BACKOFF.delay(2), Duration::from_millis(500));
        assert_eq!(BACKOFF.delay(3), Duration::from_secs(1));
        assert_eq!(BACKOFF.delay(4), BACKOFF_CAP);
        assert_eq!(BACKOFF.delay(1000), BACKOFF_CAP);
    }

    #[test]
    fn only_configuration_errors_are_permanent() {
        let config = anyhow::Error::new(BrokerError::Config("bad url".into())).context("broker");
        assert!(is_permanent(&config));
        let refused = anyhow::Error::new(BrokerError::Connection("refused".into()));
        assert!(!is_permanent(&refused.context("broker")));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_the_dependency_answers_and_stops_on_shutdown() {
        let health = Health::default();
        let stop = CancellationToken::new();
        let mut calls = 0;
        let got = wait_for("thing", &health, &stop, || {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1..=3 => Err(anyhow::anyhow!("down")),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), Some(4));
        stop.cancel();
        let never = wait_for("gone", &health, &stop, || async {
            Err::<(), _>(anyhow::anyhow!("down"))
        });
        assert_eq!(never.await.unwrap(), None);
    }
}
