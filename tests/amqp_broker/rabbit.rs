//! RabbitMQ helpers shared by `tests/amqp_broker.rs` and `tests/transport_suite.rs`: the URL,
//! unique names, an admin connection for inspection/cleanup, and `rabbitmqctl`.
//! Every helper fails loudly when RabbitMQ is missing: a test must never pass without it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use mediacms_worker::broker::amqp::{AmqpBroker, AmqpOptions};

/// `MEDIACMS_WORKER_AMQP` or the local RabbitMQ.
pub fn url() -> String {
    std::env::var("MEDIACMS_WORKER_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A name no other test (or test process) uses: `t_<pid>_<what>_<n>`.
pub fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("t_{}_{what}_{n}", std::process::id())
}

/// Our broker for `queue`, with a connection name and dead-letter queue derived from it.
pub async fn broker(queue: &str, prefetch: u16) -> AmqpBroker {
    let mut opts = AmqpOptions::new(prefetch);
    opts.connection_name = format!("{queue}-conn-{}", unique("c"));
    opts.dead_letter_queue = dead_letter_queue(queue);
    AmqpBroker::connect(&url(), opts).await.unwrap_or_else(|e| {
        panic!(
            "RabbitMQ at {} is required (start it with `rabbitmq-server -detached`): {e}",
            url()
        )
    })
}

pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead-letter")
}

/// A channel on a separate admin connection (closed when dropped).
pub struct Admin {
    pub ch: Channel,
    _conn: Connection,
}

pub async fn admin() -> Admin {
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ at {} is required (start it with `rabbitmq-server -detached`): {e}",
                url()
            )
        });
    let ch = conn.create_channel().await.expect("admin channel");
    Admin { ch, _conn: conn }
}

/// Messages ready in `queue` (passive declare).
pub async fn depth(queue: &str) -> u32 {
    let admin = admin().await;
    let ch = &admin.ch;
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("queue {queue} should exist: {e}"));
    q.message_count()
}

/// Take (and ack) every ready message of `queue`.
pub async fn drain(queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let admin = admin().await;
    let ch = &admin.ch;
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .expect("basic_get")
    {
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        out.push(m);
    }
    out
}

/// Delete the queues and same-named exchanges a test created.
pub async fn delete(names: &[&str]) {
    let admin = admin().await;
    let ch = &admin.ch;
    for name in names {
        let _ = ch
            .queue_delete((*name).into(), QueueDeleteOptions::default())
            .await;
        let _ = ch
            .exchange_delete((*name).into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// Force-close (server side) the connection whose client properties mention `needle`.
pub async fn close_connection(needle: &str) {
    for _ in 0..40 {
        // Tab-separated `pid<TAB>client_properties`: the JSON formatter prints pids in a form
        // `close_connection` does not accept.
        let out = tokio::process::Command::new("rabbitmqctl")
            .args(["list_connections", "pid", "client_properties", "-q"])
            .output()
            .await
            .expect("rabbitmqctl must be on PATH for this test");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let pid = text
            .lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split('\t').next())
            .map(str::to_owned);
        if let Some(pid) = pid {
            let status = tokio::process::Command::new("rabbitmqctl")
                .args(["close_connection", &pid, "test: simulated connection loss"])
                .status()
                .await
                .expect("rabbitmqctl close_connection");
            assert!(status.success(), "rabbitmqctl close_connection failed");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no RabbitMQ connection mentions {needle}");
}
