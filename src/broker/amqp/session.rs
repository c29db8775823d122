//! One AMQP connection's worth of state: a consume channel (global QoS, acks) and a publish
//! channel (publisher confirms), Celery's declarations, and the consumer forwarders that feed
//! every delivery into the broker's single internal queue.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::AmqpOptions;

/// What the consumer forwarders send to `fetch`.
pub(super) enum Incoming {
    Message {
        generation: u64,
        queue: String,
        delivery: Box<lapin::message::Delivery>,
    },
    /// The consumer stream failed or ended: the channel or connection is gone.
    Lost { generation: u64, error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    Ok,
    PublishClosed,
    Dead,
}

pub(super) struct Session {
    /// Increases with every connection, so deliveries and tags of a dead one are told apart.
    pub generation: u64,
    conn: Connection,
    consume: Channel,
    publish: Channel,
    declared: HashSet<String>,
    consumed: HashSet<String>,
    /// ETA deliveries currently held: each raises the QoS by one (Celery's qos increment).
    pub eta_held: u16,
    prefetch: u16,
    stop: CancellationToken,
}

impl Session {
    pub async fn open(
        uri: &AMQPUri,
        opts: &AmqpOptions,
        generation: u64,
    ) -> Result<Self, lapin::Error> {
        let props = ConnectionProperties::default()
            .with_connection_name(opts.connection_name.as_str().into());
        let conn = Connection::connect_uri(uri.clone(), props).await?;
        let consume = conn.create_channel().await?;
        // Celery's QoS is global (celery-wire §9): one budget shared by all consumed queues.
        consume
            .basic_qos(opts.prefetch, BasicQosOptions { global: true })
            .await?;
        let publish = conn.create_channel().await?;
        // Confirms: a publish (a retry, create_hls, a dead letter) is stored before we ack the
        // delivery that caused it. They do not change the message on the wire.
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Session {
            generation,
            conn,
            consume,
            publish,
            declared: HashSet::new(),
            consumed: HashSet::new(),
            eta_held: 0,
            prefetch: opts.prefetch,
            stop: CancellationToken::new(),
        })
    }

    /// A dead connection or consume channel means a reconnect (RabbitMQ requeues what we
    /// held); a publish channel closed by a channel error (e.g. a 406 on declare) is reopened.
    pub fn health(&self) -> Health {
        if !self.conn.status().connected() || !self.consume.status().connected() {
            Health::Dead
        } else if !self.publish.status().connected() {
            Health::PublishClosed
        } else {
            Health::Ok
        }
    }

    pub async fn reopen_publish(&mut self) -> Result<(), lapin::Error> {
        let publish = self.conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.publish = publish;
        self.declared.clear();
        Ok(())
    }

    /// Celery's declarations for `queue`: a durable direct exchange named after it, a durable
    /// queue with no arguments, and the binding `queue -> queue` with routing key `queue`.
    pub async fn declare(&mut self, queue: &str) -> Result<(), lapin::Error> {
        if self.declared.contains(queue) {
            return Ok(());
        }
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let ch = &self.publish;
        ch.exchange_declare(
            queue.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            queue.into(),
            queue.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        self.declared.insert(queue.to_owned());
        Ok(())
    }

    /// A durable queue without exchange or binding (the dead-letter queue; published to via
    /// the default exchange).
    pub async fn declare_plain(&mut self, queue: &str) -> Result<(), lapin::Error> {
        if self.declared.insert(queue.to_owned()) {
            let declared = self
                .publish
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await;
            if let Err(e) = declared {
                self.declared.remove(queue);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Declare and start consuming `queue` (ack required) unless this session already does.
    pub async fn consume(
        &mut self,
        queue: &str,
        tx: &UnboundedSender<Incoming>,
    ) -> Result<(), lapin::Error> {
        if self.consumed.contains(queue) {
            return Ok(());
        }
        self.declare(queue).await?;
        let consumer = self
            .consume
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.consumed.insert(queue.to_owned());
        tokio::spawn(forward(
            consumer,
            queue.to_owned(),
            self.generation,
            tx.clone(),
            self.stop.clone(),
        ));
        Ok(())
    }

    /// Publish to the default exchange `""` with routing key `queue` (as Celery does) and wait
    /// for RabbitMQ's confirm.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), lapin::Error> {
        let confirm = self
            .publish
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(lapin::Error::from(std::io::Error::other(
                "RabbitMQ nacked the publish",
            )));
        }
        Ok(())
    }

    /// Re-issue `basic.qos` for the base prefetch plus one per held ETA delivery.
    pub async fn apply_qos(&self) -> Result<(), lapin::Error> {
        let count = self.prefetch.saturating_add(self.eta_held);
        self.consume
            .basic_qos(count, BasicQosOptions { global: true })
            .await
    }

    /// Close the connection: RabbitMQ requeues every delivery we did not ack (`redelivered`).
    pub async fn close(self) {
        self.stop.cancel();
        let closing = self.conn.close(200, "mediacms-worker closing".into());
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Dropping `conn` closes it (lapin's closer); stopping the forwarders drops the
        // consumers so nothing keeps the channel alive.
        self.stop.cancel();
    }
}

/// Forward one consumer's deliveries until it fails, ends, or the session stops.
async fn forward(
    mut consumer: lapin::Consumer,
    queue: String,
    generation: u64,
    tx: UnboundedSender<Incoming>,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            _ = stop.cancelled() => return,
        };
        let incoming = match next {
            Some(Ok(delivery)) => Incoming::Message {
                generation,
                queue: queue.clone(),
                delivery: Box::new(delivery),
            },
            Some(Err(e)) => Incoming::Lost {
                generation,
                error: e.to_string(),
            },
            // RabbitMQ cancelled the consumer (queue deleted) or the channel closed cleanly.
            None => Incoming::Lost {
                generation,
                error: format!("consumer of `{queue}` was cancelled"),
            },
        };
        let lost = matches!(incoming, Incoming::Lost { .. });
        if tx.send(incoming).is_err() || lost {
            return;
        }
    }
}
