//! The [`Broker`] operations of [`AmqpBroker`]: fetch from the internal delivery queue, ack /
//! reject by delivery tag, dead-letter, publish, and Celery's QoS increment for ETA holds.

use super::*;

/// Tags are `<generation>.<delivery tag>`: AMQP delivery tags restart at 1 on every channel,
/// so the generation keeps a stale tag from an old connection from matching a new delivery.
fn tag_of(generation: u64, delivery_tag: u64) -> DeliveryTag {
    format!("{generation}.{delivery_tag}")
}

impl AmqpBroker {
    /// Turn a lapin delivery into ours and hold it. A decode error still yields a Delivery.
    async fn accept(
        &self,
        generation: u64,
        queue: String,
        d: lapin::message::Delivery,
    ) -> Delivery {
        let headers = d
            .properties
            .headers()
            .as_ref()
            .map(table::table_to_json)
            .unwrap_or_default();
        let routing_key = if d.routing_key.as_str().is_empty() {
            queue.clone()
        } else {
            d.routing_key.to_string()
        };
        let message = table::check_content_type(&d.properties).and_then(|()| {
            decode_amqp(
                &d.data,
                headers.clone(),
                &routing_key,
                *d.properties.priority(),
            )
        });
        let envelope = Envelope {
            exchange: d.exchange.to_string(),
            routing_key,
            headers,
            properties: table::properties_json(&d.properties),
        };
        let tag = tag_of(generation, d.delivery_tag);
        let eta = message.as_ref().ok().and_then(future_eta);
        let held = Held {
            generation,
            acker: d.acker,
            envelope,
            eta_bump: eta.is_some(),
        };
        lock(&self.inner.held).insert(tag.clone(), held);
        if let Some(wait) = eta {
            self.raise_qos_for_eta(generation, &tag, wait).await;
        }
        Delivery {
            lease: tag.clone(),
            tag,
            queue,
            raw: d.data,
            message,
            redelivered: d.redelivered,
        }
    }

    /// Celery's `qos.increment_eventually`: a delivery held for its ETA must not use up the
    /// prefetch budget, or one retry with a countdown would stall a one-slot worker. The
    /// increment is undone when the ETA passes or the delivery is settled, whichever is first.
    async fn raise_qos_for_eta(&self, generation: u64, tag: &str, wait: Duration) {
        self.adjust_eta_qos(generation, 1).await;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let tag = tag.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(inner) = weak.upgrade() {
                AmqpBroker { inner }.release_eta_bump(&tag).await;
            }
        });
    }

    async fn release_eta_bump(&self, tag: &str) {
        let generation = match lock(&self.inner.held).get_mut(tag) {
            Some(h) if h.eta_bump => {
                h.eta_bump = false;
                h.generation
            }
            _ => return,
        };
        self.adjust_eta_qos(generation, -1).await;
    }

    async fn adjust_eta_qos(&self, generation: u64, by: i16) {
        let mut guard = self.inner.session.lock().await;
        let Some(s) = guard.as_mut().filter(|s| s.generation == generation) else {
            return; // a new connection starts from the base prefetch
        };
        s.eta_held = s.eta_held.saturating_add_signed(by);
        if let Err(e) = s.apply_qos().await {
            tracing::warn!(error = %e, "basic.qos for an ETA hold failed");
        }
    }

    /// Held on the live connection (not settled, and its channel has not been replaced).
    fn still_held(&self, tag: &str) -> bool {
        let live = self.inner.live.load(Ordering::SeqCst);
        lock(&self.inner.held)
            .get(tag)
            .is_some_and(|h| h.generation == live)
    }

    /// Remove a held delivery, undoing its ETA increment; LeaseLost if it is not ours (any
    /// more): acked already, or its connection is gone and RabbitMQ has requeued it.
    async fn take_held(&self, tag: &str) -> Result<Held, BrokerError> {
        let held = lock(&self.inner.held).remove(tag);
        let live = self.inner.live.load(Ordering::SeqCst);
        match held {
            Some(h) if h.generation == live => {
                if h.eta_bump {
                    self.adjust_eta_qos(h.generation, -1).await;
                }
                Ok(h)
            }
            _ => Err(BrokerError::LeaseLost(tag.to_owned())),
        }
    }

    async fn settle(
        &self,
        tag: &str,
        held: Held,
        requeue: Option<bool>,
    ) -> Result<(), BrokerError> {
        let done = match requeue {
            None => held.acker.ack(BasicAckOptions::default()).await,
            Some(requeue) => held.acker.reject(BasicRejectOptions { requeue }).await,
        };
        match done {
            Ok(true) => Ok(()),
            // Poisoned acker: the channel closed, RabbitMQ has already requeued the delivery.
            Ok(false) => Err(BrokerError::LeaseLost(tag.to_owned())),
            Err(e) => Err(connection_error(&e)),
        }
    }
}

/// How long until a decoded task's ETA, if it is in the future.
fn future_eta(task: &TaskMessage) -> Option<Duration> {
    let eta = task.eta?;
    (eta - chrono::Utc::now())
        .to_std()
        .ok()
        .filter(|d| !d.is_zero())
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn fetch(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<Option<Delivery>, BrokerError> {
        let deadline = Instant::now() + timeout;
        let tx = self.inner.tx.clone();
        self.with_session(deadline, async |s: &mut Session| {
            for q in queues {
                s.consume(q, &tx).await?;
            }
            Ok(())
        })
        .await?;
        let mut rx = self.inner.rx.lock().await;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                return Ok(None);
            };
            let live = self.inner.live.load(Ordering::SeqCst);
            match next.expect("the broker keeps a sender") {
                Incoming::Message {
                    generation,
                    queue,
                    delivery,
                } if generation == live => {
                    return Ok(Some(self.accept(generation, queue, *delivery).await));
                }
                // Left over from a dead connection: RabbitMQ has requeued it already.
                Incoming::Message { .. } => {}
                Incoming::Lost { generation, error } => {
                    if generation == live {
                        self.lost(generation, &error).await;
                        return Err(BrokerError::Connection(error));
                    }
                }
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        let held = self.take_held(&delivery.tag).await?;
        self.settle(&delivery.tag, held, None).await
    }

    /// `basic.reject(requeue=true)`, as Celery's `Reject(requeue=True)`.
    async fn requeue(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        let held = self.take_held(&delivery.tag).await?;
        self.settle(&delivery.tag, held, Some(true)).await
    }

    /// RabbitMQ holds unacked deliveries for the connection's lifetime: nothing to renew, but a
    /// delivery of a connection that is gone has been requeued by RabbitMQ and is lost to us.
    async fn renew_leases(
        &self,
        held: &[(DeliveryTag, LeaseId)],
    ) -> Result<Vec<LeaseId>, BrokerError> {
        Ok(held
            .iter()
            .filter(|(tag, _)| !self.still_held(tag))
            .map(|(_, lease)| lease.clone())
            .collect())
    }

    /// Ours while its channel lives: RabbitMQ redelivers only after the channel closed.
    async fn claim_finish(&self, delivery: &Delivery) -> Result<bool, BrokerError> {
        Ok(self.still_held(&delivery.tag))
    }

    /// RabbitMQ itself redelivers a dead worker's deliveries when its connection drops.
    async fn restore_expired(&self) -> Result<usize, BrokerError> {
        Ok(0)
    }

    /// Publish a JSON record of the delivery to the dead-letter queue (confirmed), then ack.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let record = {
            let held = lock(&self.inner.held);
            let h = held
                .get(&delivery.tag)
                .ok_or_else(|| BrokerError::LeaseLost(delivery.tag.clone()))?;
            table::dead_letter_record(
                &delivery.queue,
                &delivery.raw,
                &h.envelope,
                delivery.redelivered,
                reason,
            )
        };
        let dlq = self.inner.opts.dead_letter_queue.clone();
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        self.with_session(Instant::now(), async |s: &mut Session| {
            s.declare_plain(&dlq).await?;
            s.publish(&dlq, &record, props).await
        })
        .await?;
        self.ack(delivery).await
    }

    fn reconnects(&self) -> u64 {
        self.inner
            .connects
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    async fn publish(&self, task: &OutgoingTask) -> Result<(), BrokerError> {
        let props = table::task_properties(task, &self.inner.oid);
        let body = encode_amqp_body(task);
        self.with_session(Instant::now(), async |s: &mut Session| {
            s.declare(&task.queue).await?;
            s.publish(&task.queue, &body, props).await
        })
        .await
    }
}
