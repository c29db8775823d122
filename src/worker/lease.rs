//! Lease keeping: renew our claim on every held delivery, and restore deliveries whose lease
//! expired (a dead worker of our fleet), each on its own period, until the pool has finished.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::state::PoolState;
use crate::broker::Broker;
use crate::telemetry::Metrics;

/// Runs until `stop` fires. Errors are logged and retried on the next tick: a transient broker
/// outage must not stop renewals for the jobs that keep running meanwhile.
pub(crate) async fn lease_loop(
    broker: Arc<dyn Broker>,
    state: PoolState,
    renew_every: Duration,
    restore_every: Duration,
    metrics: Option<Arc<Metrics>>,
    stop: CancellationToken,
) {
    let mut renew = tokio::time::interval(renew_every.max(Duration::from_millis(1)));
    let mut restore = tokio::time::interval(restore_every.max(Duration::from_millis(1)));
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    restore.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = renew.tick() => {
                let tags = state.held_tags();
                if tags.is_empty() { continue; }
                if let Err(e) = broker.renew_leases(&tags).await {
                    tracing::warn!(error = %e, held = tags.len(), "lease renewal failed");
                }
            }
            _ = restore.tick() => match broker.restore_expired().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(restored = n, "restored deliveries whose lease expired");
                    if let Some(m) = &metrics {
                        m.restored(n as u64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "restoring expired deliveries failed"),
            },
        }
    }
}
