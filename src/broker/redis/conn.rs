//! One lazily (re)connected Redis connection with capped exponential backoff between attempts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::broker::BrokerError;

/// 100 ms, 200 ms, 400 ms … capped at 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// A connection slot: hands out the live connection, or reconnects (waiting out the backoff of
/// earlier failed attempts first). A connection-class error empties the slot.
pub(crate) struct Slot {
    client: Client,
    config: AsyncConnectionConfig,
    state: Mutex<State>,
    /// Connections made after this slot's first one (shared by a broker's slots).
    reconnects: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    failures: u32,
    next_try: Option<Instant>,
    connected_before: bool,
}

impl Slot {
    /// `response_timeout: None` for the BRPOP connection, whose replies take as long as the block.
    pub(crate) fn new(
        client: Client,
        response_timeout: Option<Duration>,
        reconnects: Arc<AtomicU64>,
    ) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(response_timeout);
        Slot {
            client,
            config,
            state: Mutex::new(State::default()),
            reconnects,
        }
    }

    pub(crate) async fn get(&self) -> Result<MultiplexedConnection, BrokerError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.conn {
            return Ok(c.clone());
        }
        if let Some(at) = st.next_try {
            tokio::time::sleep_until(at).await;
        }
        let attempt = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await;
        match attempt {
            Ok(c) => {
                if st.connected_before {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(after_failures = st.failures, "redis reconnected");
                }
                *st = State {
                    conn: Some(c.clone()),
                    connected_before: true,
                    ..State::default()
                };
                Ok(c)
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                st.next_try = Some(Instant::now() + RECONNECT.delay(st.failures));
                tracing::warn!(error = %e, failures = st.failures, "redis connect failed");
                Err(BrokerError::Connection(e.to_string()))
            }
        }
    }

    /// Map a command error; a connection-class error drops the connection so the next `get`
    /// reconnects.
    pub(crate) async fn check<T>(&self, r: Result<T, RedisError>) -> Result<T, BrokerError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) if is_connection_error(&e) => {
                self.reset().await;
                Err(BrokerError::Connection(e.to_string()))
            }
            Err(e) => Err(BrokerError::Protocol(e.to_string())),
        }
    }

    /// Forget the connection (its state is unknown, e.g. a transaction was interrupted).
    pub(crate) async fn reset(&self) {
        self.state.lock().await.conn = None;
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}
