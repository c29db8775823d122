//! The pool's side of the lease fence: a job's [`Fence`] asks the broker to `claim_finish` its
//! delivery; a lost lease cancels the job with [`CancelReason::LeaseLost`] so the pool settles
//! nothing for it. While the broker cannot answer, the claim waits (a fence that cannot be
//! checked is closed), until the job is cancelled.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::state::PoolState;
use super::{CancelReason, Core};
use crate::broker::{Broker, Delivery};
use crate::tasks::{Fence, FinishGate};
use crate::telemetry::Metrics;

/// Pause between claim attempts while the broker is unreachable.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long the pool's own claim waits for an unreachable broker before it requeues instead.
const CLAIM_PATIENCE: Duration = Duration::from_secs(30);

struct Gate {
    broker: Arc<dyn Broker>,
    state: PoolState,
    metrics: Option<Arc<Metrics>>,
    delivery: Delivery,
    cancel: CancellationToken,
}

impl Gate {
    fn new(core: &Core, d: &Delivery, cancel: CancellationToken) -> Gate {
        Gate {
            broker: core.broker.clone(),
            state: core.state.clone(),
            metrics: core.metrics.clone(),
            delivery: d.clone(),
            cancel,
        }
    }
}

#[async_trait]
impl FinishGate for Gate {
    async fn claim(&self) -> bool {
        loop {
            match self.broker.claim_finish(&self.delivery).await {
                Ok(true) => return true,
                Ok(false) => {
                    let d = &self.delivery;
                    tracing::warn!(tag = %d.tag, lease = %d.lease, "lease lost before finishing: another worker holds this delivery now; writing nothing");
                    if let Some(m) = &self.metrics {
                        m.lease_lost();
                    }
                    self.state.cancel_job(&d.lease, CancelReason::LeaseLost);
                    return false;
                }
                Err(e) => {
                    tracing::warn!(tag = %self.delivery.tag, error = %e, "cannot check the lease before finishing; waiting");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = self.cancel.cancelled() => return false,
            }
        }
    }

    async fn release(&self) {
        // Best effort: if it fails the window simply lasts longer (restore is delayed).
        if let Err(e) = self.broker.release_finish(&self.delivery).await {
            tracing::warn!(tag = %self.delivery.tag, error = %e, "ending the finishing window failed");
        }
    }
}

/// The fence handed to the job running `d`.
pub(crate) fn fence_for(core: &Core, d: &Delivery, cancel: &CancellationToken) -> Fence {
    Fence::new(Arc::new(Gate::new(core, d, cancel.clone())))
}

/// The pool's own claim before it settles a job that ran: `Some(true)` ours, `Some(false)`
/// lost, `None` the broker did not answer for a long while (the caller requeues: redoing the
/// work later is safe, writing unfenced is not).
pub(crate) async fn claim(core: &Core, d: &Delivery) -> Option<bool> {
    if core.state.cancel_reason(&d.lease) == Some(CancelReason::LeaseLost) {
        return Some(false);
    }
    let gate = Gate::new(core, d, CancellationToken::new());
    // Bounded: settling must not hang forever on an unreachable broker.
    tokio::time::timeout(CLAIM_PATIENCE, gate.claim())
        .await
        .ok()
}
