//! The Broker contract: what the worker pool needs from a transport (Redis or AMQP).
//!
//! Semantics every transport keeps (ARCHITECTURE decisions 3 and 4):
//! - `fetch` hands out one [`Delivery`] and records our **Lease** on it; nothing is acked at start.
//! - `ack` happens only after the task is finalised (DB committed, files renamed into place).
//! - `renew_leases` is called periodically for every held delivery so no kombu client restores a
//!   live task; a dead worker's deliveries come back through `restore_expired` within the lease.
//!   A transport never restores a delivery its own process still holds.
//! - A lease is a fence, not a timer (decision 4): every holding gets its own [`LeaseId`], so two
//!   holders of one restored delivery (same kombu tag) are told apart. `renew_leases` reports the
//!   holdings that are no longer ours; `claim_finish` atomically checks the lease and keeps every
//!   restorer away while the final writes happen; `ack`/`requeue`/`dead_letter` act only while the
//!   lease is ours, so one holder never deletes another's bookkeeping.
//! - `requeue` puts a delivery back at the front of its queue with `redelivered = true`, from our
//!   own bytes when the transport lost its bookkeeping (a restarted Redis).
//! - What we publish must be byte-compatible with Celery 5.4 (a Python worker must run it).

pub mod amqp;
pub mod memory;
pub mod pidbox;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::celery::message::{DecodeError, OutgoingTask, TaskMessage};
use crate::celery::result::TaskResult;

/// Opaque delivery tag: kombu's `properties.delivery_tag` on Redis, the delivery tag on AMQP.
pub type DeliveryTag = String;
/// One holding of a delivery by this process: unique per fetch (a restored and re-fetched
/// delivery keeps its tag but gets a new lease id).
pub type LeaseId = String;

/// One received message plus what is needed to ack or requeue it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub tag: DeliveryTag,
    /// This holding's lease (see [`LeaseId`]).
    pub lease: LeaseId,
    /// The queue (routing key) it came from, e.g. `long_tasks`.
    pub queue: String,
    /// Raw bytes exactly as fetched (Redis: the JSON envelope; AMQP: the body).
    pub raw: Vec<u8>,
    /// The decoded task, or why it could not be decoded (a poison message).
    pub message: Result<TaskMessage, DecodeError>,
    pub redelivered: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker connection: {0}")]
    Connection(String),
    #[error("broker protocol: {0}")]
    Protocol(String),
    #[error("delivery {0} is no longer held by us")]
    LeaseLost(DeliveryTag),
    /// A broker URL that can never work (unparseable, unsupported scheme): waiting is useless.
    #[error("broker configuration: {0}")]
    Config(String),
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Wait up to `timeout` for the next delivery from `queues`, in kombu's priority order and
    /// round-robin across queues. Records our lease on it.
    async fn fetch(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<Option<Delivery>, BrokerError>;
    /// The task is finalised: forget the delivery.
    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError>;
    /// Return the delivery to the front of its queue, marked redelivered (shutdown, abort).
    async fn requeue(&self, delivery: &Delivery) -> Result<(), BrokerError>;
    /// Keep our lease on the holdings we still have (`(tag, lease)` pairs). Returns the lease ids
    /// that are no longer ours (another holder restored or took the delivery): their jobs must
    /// stop at once and touch nothing.
    async fn renew_leases(
        &self,
        held: &[(DeliveryTag, LeaseId)],
    ) -> Result<Vec<LeaseId>, BrokerError>;
    /// The fence before a job's final writes: `true` when the lease is still ours, and from then
    /// on no restorer may take the delivery (until it is acked or requeued, or a long finishing
    /// window passes after a crash). `false`: the lease is lost, write nothing.
    async fn claim_finish(&self, delivery: &Delivery) -> Result<bool, BrokerError>;
    /// The final writes are done but work remains (a chunk's concatenation): back to the
    /// ordinary lease, so a crash from here on is restored after the lease, not the window.
    async fn release_finish(&self, delivery: &Delivery) -> Result<bool, BrokerError> {
        self.claim_finish(delivery).await
    }
    /// Return deliveries whose lease expired (a dead worker of our fleet) to their queues.
    /// Never touches deliveries held by other (Python) consumers.
    async fn restore_expired(&self) -> Result<usize, BrokerError>;
    /// Move an undecodable delivery to the dead-letter list and forget it (nothing is lost).
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError>;
    /// Publish a task exactly as Celery 5.4 would.
    async fn publish(&self, task: &OutgoingTask) -> Result<(), BrokerError>;
    /// Connections re-established after a loss, since start (`broker_reconnects_total`).
    fn reconnects(&self) -> u64 {
        0
    }
}

/// Where task results go (`celery-task-meta-<id>`); Redis in every MediaCMS deployment.
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    async fn store_result(&self, result: &TaskResult) -> Result<(), BrokerError>;
}

/// kombu's priority steps on Redis: a priority rounds **down** to one of these.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// kombu's `priority(n)`: the step a priority is stored under.
pub fn priority_step(priority: u8) -> u8 {
    PRIORITY_STEPS
        .iter()
        .rev()
        .copied()
        .find(|s| *s <= priority)
        .unwrap_or(0)
}
