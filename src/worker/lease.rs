//! Lease keeping: renew our claim on every held delivery, and restore deliveries whose lease
//! expired (a dead worker of our fleet), each on its own period, until the pool has finished.
//! A holding the broker reports as no longer ours is a first-class event: its job is cancelled
//! at once (ffmpeg killed, temp output removed) and settles nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::dispatch::CancelReason;
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
                let held = state.held_leases();
                if held.is_empty() { continue; }
                match broker.renew_leases(&held).await {
                    Ok(lost) => stop_lost(&state, &lost, metrics.as_deref()),
                    Err(e) => tracing::warn!(error = %e, held = held.len(), "lease renewal failed"),
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

/// Cancel the jobs whose lease another worker holds now.
fn stop_lost(state: &PoolState, lost: &[String], metrics: Option<&Metrics>) {
    for lease in lost {
        tracing::warn!(%lease, "lease lost: another worker holds this delivery now; stopping the job");
        if let Some(m) = metrics {
            m.lease_lost();
        }
        state.cancel_job(lease, CancelReason::LeaseLost);
    }
}
