//! The Broker contract: what the worker pool needs from a transport (Redis or AMQP).
//!
//! Semantics every transport keeps (ARCHITECTURE decisions 3 and 4):
//! - `fetch` hands out one [`Delivery`] and records our **Lease** on it; nothing is acked at start.
//! - `ack` happens only after the task is finalised (DB committed, files renamed into place).
//! - `renew_leases` is called periodically for every held delivery so no kombu client restores a
//!   live task; a dead worker's deliveries come back through `restore_expired` within the lease.
//! - `requeue` puts a delivery back at the front of its queue with `redelivered = true`.
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

/// One received message plus what is needed to ack or requeue it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub tag: DeliveryTag,
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
    /// Keep our lease on deliveries we still hold.
    async fn renew_leases(&self, tags: &[DeliveryTag]) -> Result<(), BrokerError>;
    /// Return deliveries whose lease expired (a dead worker of our fleet) to their queues.
    /// Never touches deliveries held by other (Python) consumers.
    async fn restore_expired(&self) -> Result<usize, BrokerError>;
    /// Move an undecodable delivery to the dead-letter list and forget it (nothing is lost).
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError>;
    /// Publish a task exactly as Celery 5.4 would.
    async fn publish(&self, task: &OutgoingTask) -> Result<(), BrokerError>;
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
