//! The one shutdown owner: OS signals → the intake and abort tokens every component watches.
//!
//! First SIGTERM/SIGINT: stop intake (no new fetches, readiness flips), let running jobs finish
//! until the drain deadline. Deadline reached or a second signal: abort — running ffmpeg children
//! are killed and their deliveries requeued by the pool. Nothing is lost either way.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Tokens handed to the pool, the HTTP server and the control plane.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled on the first signal: stop taking new work.
    pub intake: CancellationToken,
    /// Cancelled at the drain deadline or on a second signal: stop everything now.
    pub abort: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop intake now and abort after `drain` unless everything finished first.
    /// Idempotent; a second call aborts at once (the "second signal").
    pub fn begin(&self, drain: Duration) {
        if self.intake.is_cancelled() {
            tracing::warn!("second shutdown request: aborting running jobs, requeueing them");
            self.abort.cancel();
            return;
        }
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutdown: intake stopped, draining"
        );
        self.intake.cancel();
        let abort = self.abort.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(drain) => {
                    tracing::warn!("drain deadline reached: aborting running jobs, requeueing them");
                    abort.cancel();
                }
                _ = abort.cancelled() => {}
            }
        });
    }

    /// Listen for SIGTERM/SIGINT until abort; each signal advances the shutdown by one step.
    pub async fn watch_signals(self, drain: Duration) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = term.recv() => self.begin(drain),
                _ = int.recv() => self.begin(drain),
                _ = self.abort.cancelled() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_request_drains_then_aborts_at_deadline() {
        let s = Shutdown::new();
        s.begin(Duration::from_secs(30));
        assert!(s.intake.is_cancelled());
        assert!(!s.abort.is_cancelled());
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!s.abort.is_cancelled());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(s.abort.is_cancelled());
    }

    #[tokio::test]
    async fn second_request_aborts_at_once() {
        let s = Shutdown::new();
        s.begin(Duration::from_secs(3600));
        s.begin(Duration::from_secs(3600));
        assert!(s.abort.is_cancelled());
    }
}
