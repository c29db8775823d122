//! AMQP (RabbitMQ) [`Broker`] on lapin, with Celery 5.4's declarations and message properties
//! (celery-wire §9).
//!
//! Semantics versus the Redis transport (ARCHITECTURE decisions 3, 4):
//! - Leases are RabbitMQ's own: an unacked delivery stays ours for the connection's lifetime and
//!   is redelivered (`redelivered = true`) when the connection or channel goes away, so
//!   `renew_leases` and `restore_expired` are no-ops.
//! - RabbitMQ's `consumer_timeout` (default 30 min) closes the channel when a delivery stays
//!   unacked longer than that — a long encode does. We detect it, log how to raise it, and
//!   reconnect; RabbitMQ redelivers the task (which then runs again: tasks are idempotent).
//! - No `x-max-priority` (Celery declares none), so RabbitMQ ignores priority: fetch is FIFO.
//! - `amqps://` (TLS) is out of scope: lapin is built without a TLS backend.

mod ops;
mod session;
pub mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::Acker;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::{Broker, BrokerError, Delivery, DeliveryTag, LeaseId};
use crate::celery::envelope::{decode_amqp, encode_amqp_body};
use crate::celery::message::{OutgoingTask, TaskMessage};
use session::{Health, Incoming, Session};
use table::Envelope;

/// Where undecodable deliveries go, as JSON records (see [`table::dead_letter_record`]).
pub const DEAD_LETTER_QUEUE: &str = "mediacms-worker.dead-letter";

/// How to connect and consume.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// `basic.qos` prefetch count: the pool's prefetch limit (free job slots × multiplier).
    pub prefetch: u16,
    /// Heartbeat in seconds when the URL has no `?heartbeat=`; `None` accepts the server's.
    pub heartbeat: Option<u16>,
    /// Shown in RabbitMQ's management UI and `rabbitmqctl list_connections`.
    pub connection_name: String,
    pub dead_letter_queue: String,
    /// Reconnect backoff: 500 ms doubling up to this.
    pub reconnect_max: Duration,
    pub connect_timeout: Duration,
}

impl AmqpOptions {
    pub fn new(prefetch: u16) -> Self {
        Self {
            prefetch: prefetch.max(1),
            heartbeat: Some(60),
            // The app names the host (`app::host_name`); the codec reads no host name.
            connection_name: format!("mediacms-worker gen{}", std::process::id()),
            dead_letter_queue: DEAD_LETTER_QUEUE.to_owned(),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// A delivery we hold unacked.
struct Held {
    generation: u64,
    acker: Acker,
    envelope: Envelope,
    /// Still counted in the session's ETA QoS increment.
    eta_bump: bool,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: String,
}

struct Inner {
    uri: AMQPUri,
    opts: AmqpOptions,
    /// Celery's `reply_to`: the producer's oid, stable for this process.
    oid: String,
    session: tokio::sync::Mutex<Option<Session>>,
    generations: AtomicU64,
    /// The live session's generation (0 = none); read without the session lock.
    live: AtomicU64,
    /// Sessions opened successfully (the first one is a connect, the rest reconnects).
    connects: AtomicU64,
    tx: UnboundedSender<Incoming>,
    rx: tokio::sync::Mutex<UnboundedReceiver<Incoming>>,
    held: Mutex<HashMap<DeliveryTag, Held>>,
    backoff: Mutex<Backoff>,
}

/// The AMQP transport. Cheap to clone (shared state).
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn connection_error(e: &lapin::Error) -> BrokerError {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(_) => BrokerError::Protocol(e.to_string()),
        _ => BrokerError::Connection(e.to_string()),
    }
}

/// Parse an `amqp://` URL (`pyamqp://`, Celery's spelling, is accepted too).
fn parse_url(url: &str, heartbeat: Option<u16>) -> Result<AMQPUri, BrokerError> {
    let url = url.strip_prefix("py").unwrap_or(url);
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e| BrokerError::Config(format!("bad AMQP URL: {e}")))?;
    if uri.scheme == AMQPScheme::AMQPS {
        return Err(BrokerError::Config(
            "amqps:// (TLS) is not supported; use amqp:// or a TLS-terminating proxy".into(),
        ));
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = heartbeat;
    }
    Ok(uri)
}

impl AmqpBroker {
    /// Connect now, so a wrong URL or credentials fail at start-up; later connection losses
    /// are reconnected with capped backoff.
    pub async fn connect(url: &str, opts: AmqpOptions) -> Result<Self, BrokerError> {
        let uri = parse_url(url, opts.heartbeat)?;
        let (tx, rx) = unbounded_channel();
        let broker = AmqpBroker {
            inner: Arc::new(Inner {
                uri,
                opts,
                oid: uuid::Uuid::new_v4().to_string(),
                session: tokio::sync::Mutex::new(None),
                generations: AtomicU64::new(0),
                live: AtomicU64::new(0),
                connects: AtomicU64::new(0),
                tx,
                rx: tokio::sync::Mutex::new(rx),
                held: Mutex::new(HashMap::new()),
                backoff: Mutex::new(Backoff::default()),
            }),
        };
        let session = broker.open_session(Instant::now()).await?;
        *broker.inner.session.lock().await = Some(session);
        Ok(broker)
    }

    /// Close the connection; RabbitMQ requeues everything still unacked, marked redelivered.
    pub async fn close(&self) {
        self.inner.live.store(0, Ordering::SeqCst);
        lock(&self.inner.held).clear();
        if let Some(session) = self.inner.session.lock().await.take() {
            session.close().await;
        }
    }

    /// One connection attempt, waiting out the backoff first (but not past `deadline`).
    async fn open_session(&self, deadline: Instant) -> Result<Session, BrokerError> {
        let (next, last) = {
            let b = lock(&self.inner.backoff);
            (b.next_attempt, b.last_error.clone())
        };
        if let Some(at) = next {
            if at > deadline {
                tokio::time::sleep_until(deadline).await;
                let wait = at.saturating_duration_since(Instant::now());
                return Err(BrokerError::Connection(format!(
                    "reconnecting to RabbitMQ in {wait:.1?} (last error: {last})"
                )));
            }
            tokio::time::sleep_until(at).await;
        }
        let generation = self.inner.generations.fetch_add(1, Ordering::SeqCst) + 1;
        let opts = &self.inner.opts;
        let opened = tokio::time::timeout(
            opts.connect_timeout,
            Session::open(&self.inner.uri, opts, generation),
        )
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("connect timed out").into()));
        match opened {
            Ok(session) => {
                *lock(&self.inner.backoff) = Backoff::default();
                self.inner.live.store(generation, Ordering::SeqCst);
                self.inner.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(host = %self.inner.uri.authority.host, generation, "connected to RabbitMQ");
                Ok(session)
            }
            Err(e) => Err(self.note_failure(&e.to_string())),
        }
    }

    fn note_failure(&self, error: &str) -> BrokerError {
        let mut b = lock(&self.inner.backoff);
        let delay = Duration::from_millis(500)
            .saturating_mul(1 << b.failures.min(16))
            .min(self.inner.opts.reconnect_max);
        b.failures += 1;
        b.next_attempt = Some(Instant::now() + delay);
        b.last_error = error.to_owned();
        tracing::warn!(%error, retry_in = ?delay, "RabbitMQ connection failed");
        BrokerError::Connection(error.to_owned())
    }

    /// Run `op` on a usable session, (re)connecting first. After a failure a dead connection
    /// is dropped so the next call starts fresh instead of on a half-closed channel.
    async fn with_session<T>(
        &self,
        deadline: Instant,
        op: impl AsyncFnOnce(&mut Session) -> Result<T, lapin::Error>,
    ) -> Result<T, BrokerError> {
        let mut guard = self.inner.session.lock().await;
        let health = guard.as_ref().map(Session::health);
        if health == Some(Health::PublishClosed) {
            let session = guard.as_mut().expect("health was read from it");
            if let Err(e) = session.reopen_publish().await {
                tracing::warn!(error = %e, "reopening the publish channel failed");
                self.drop_session(&mut guard);
            }
        } else if health != Some(Health::Ok) {
            self.drop_session(&mut guard);
        }
        if guard.is_none() {
            *guard = Some(self.open_session(deadline).await?);
        }
        let session = guard.as_mut().expect("session set above");
        let result = op(session).await;
        if let Err(e) = &result {
            if session.health() == Health::Dead {
                self.note_failure(&e.to_string());
                self.drop_session(&mut guard);
            }
        }
        result.map_err(|e| connection_error(&e))
    }

    fn drop_session(&self, guard: &mut Option<Session>) {
        if let Some(old) = guard.take() {
            self.inner.live.store(0, Ordering::SeqCst);
            tokio::spawn(old.close());
        }
    }

    /// The consumer of generation `generation` failed: log why, forget the session.
    async fn lost(&self, generation: u64, error: &str) {
        let mut guard = self.inner.session.lock().await;
        if guard.as_ref().map(|s| s.generation) != Some(generation) {
            return;
        }
        if table::is_consumer_timeout(error) {
            tracing::error!(
                %error,
                "RabbitMQ closed the channel: a task ran longer than RabbitMQ's consumer_timeout \
                 (default 30 min). Raise `consumer_timeout` in rabbitmq.conf (milliseconds, e.g. \
                 consumer_timeout = 36000000 for 10 h) above the longest encode. Reconnecting; \
                 RabbitMQ redelivers the task."
            );
        } else {
            tracing::warn!(%error, "RabbitMQ consumer lost; reconnecting");
        }
        self.drop_session(&mut guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celery_style_urls_parse_to_the_default_vhost() {
        for url in [
            "amqp://guest:guest@localhost:5672//",
            "pyamqp://guest:guest@localhost:5672//",
            "amqp://guest:guest@localhost:5672/%2f",
        ] {
            let uri = parse_url(url, Some(60)).unwrap();
            assert_eq!(uri.vhost, "/", "{url}");
            assert_eq!(uri.query.heartbeat, Some(60));
        }
        let uri = parse_url("amqp://h/?heartbeat=10", Some(60)).unwrap();
        assert_eq!(uri.query.heartbeat, Some(10), "the URL's heartbeat wins");
    }

    #[test]
    fn amqps_is_refused_with_a_clear_message() {
        let err = parse_url("amqps://h/", None).err().unwrap().to_string();
        assert!(err.contains("not supported"), "{err}");
    }
}
