//! Redis control-plane adapter: listens on `/<db>.celery.pidbox` (PUB/SUB), answers
//! ping/inspect/revoke from [`PoolState`], LPUSHes replies to the client's reply queue, and
//! publishes worker.online / heartbeat (every 2 s) / offline on `/<db>.celeryev/…`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Client, ConnectionAddr};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::celery::control::{self, Command, ControlRequest, EventContext, WorkerEvent};
use crate::clock::unix_now;
use crate::worker::PoolState;

/// kombu's binding-table separator.
const SEP: &str = "\x06\x16";
const PIDBOX_BINDINGS: &str = "_kombu.binding.celery.pidbox";
const REPLY_BINDINGS: &str = "_kombu.binding.reply.celery.pidbox";
const EVENT_BINDINGS: &str = "_kombu.binding.celeryev";

#[derive(Debug, thiserror::Error)]
pub enum PidboxError {
    #[error("pidbox redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("pidbox subscription ended")]
    StreamEnded,
}

/// The control-plane adapter for one worker.
pub struct Pidbox {
    client: Client,
    state: PoolState,
    hostname: String,
    db: i64,
    clock: AtomicU64,
    /// Identifies our gossip binding (kombu binds `celeryev.<uuid>`).
    node_id: String,
}

/// The pidbox binding member for `hostname` (fanout: empty routing key and pattern).
pub fn pidbox_member(hostname: &str) -> String {
    format!("{SEP}{SEP}{hostname}.celery.pidbox")
}

/// The reply queue bound under `routing_key` among `SMEMBERS _kombu.binding.reply.celery.pidbox`.
pub fn reply_queue(members: &[String], routing_key: &str) -> Option<String> {
    members.iter().find_map(|m| {
        let mut parts = m.split(SEP);
        let rk = parts.next()?;
        let _pattern = parts.next()?;
        let queue = parts.next()?;
        (rk == routing_key).then(|| queue.to_owned())
    })
}

fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

fn rusage() -> Value {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    json!({"utime": secs(ru.ru_utime), "stime": secs(ru.ru_stime), "maxrss": ru.ru_maxrss,
           "minflt": ru.ru_minflt, "majflt": ru.ru_majflt, "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw})
}

impl Pidbox {
    pub fn new(client: Client, state: PoolState) -> Self {
        let hostname = state.snapshot().hostname;
        let db = client.get_connection_info().redis_settings().db();
        Self {
            client,
            state,
            hostname,
            db,
            clock: AtomicU64::new(0),
            node_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Lamport clock: advance past whatever we saw, then tick.
    fn tick(&self, seen: u64) -> u64 {
        self.clock.fetch_max(seen, Ordering::SeqCst);
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Serve until `stop` fires, reconnecting after errors; then send worker.offline.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self.session(&stop).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pidbox session failed; reconnecting in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        }
        if let Err(e) = self.goodbye().await {
            tracing::warn!(error = %e, "sending worker.offline failed");
        }
    }

    async fn session(&self, stop: &CancellationToken) -> Result<(), PidboxError> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        // Subscribe before advertising the binding: a client that finds us in the binding set
        // publishes at once, and a message sent before PSUBSCRIBE would be lost.
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub
            .psubscribe(format!("/{}.celery.pidbox", self.db))
            .await?;
        let gossip = format!("worker.#{SEP}{SEP}celeryev.{}", self.node_id);
        let _: () = conn
            .sadd(PIDBOX_BINDINGS, pidbox_member(&self.hostname))
            .await?;
        let _: () = conn.sadd(EVENT_BINDINGS, gossip).await?;
        let mut messages = pubsub.on_message();
        self.send_event(&mut conn, WorkerEvent::Online).await?;
        let freq = Duration::from_secs_f64(control::HEARTBEAT_SECS);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + freq, freq);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = heartbeat.tick() => self.send_event(&mut conn, WorkerEvent::Heartbeat).await?,
                msg = messages.next() => {
                    let msg = msg.ok_or(PidboxError::StreamEnded)?;
                    self.handle(&mut conn, msg.get_payload_bytes()).await?;
                }
            }
        }
    }

    /// Decode, filter, act (revoke), reply. Bad requests are logged and dropped.
    async fn handle(
        &self,
        conn: &mut MultiplexedConnection,
        raw: &[u8],
    ) -> Result<(), PidboxError> {
        let req = match control::decode_request(raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring undecodable pidbox message");
                return Ok(());
            }
        };
        let clock = self.tick(req.clock);
        if !control::is_for_us(&req, &self.hostname, unix_now()) {
            return Ok(());
        }
        let cmd = control::command(&req);
        tracing::debug!(method = %req.method, "pidbox request");
        if let Command::Revoke {
            task_ids,
            terminate,
        } = &cmd
        {
            tracing::info!(ids = ?task_ids, terminate, "revoke received");
            self.state.revoke(task_ids, *terminate);
        }
        if req.reply_to.is_some() {
            self.reply(conn, &req, &cmd, clock).await?;
        }
        Ok(())
    }

    async fn reply(
        &self,
        conn: &mut MultiplexedConnection,
        req: &ControlRequest,
        cmd: &Command,
        clock: u64,
    ) -> Result<(), PidboxError> {
        let snapshot = self.state.snapshot();
        let payload = match cmd {
            Command::Stats => control::stats_json(&snapshot, clock, self.broker_info(), rusage()),
            other => control::reply_payload(other, &snapshot),
        };
        let rk = req.reply_to.as_ref().map_or("", |r| r.routing_key.as_str());
        let members: Vec<String> = conn.smembers(REPLY_BINDINGS).await?;
        let Some(queue) = reply_queue(&members, rk) else {
            // The client already gave up and unbound its queue; kombu drops such replies too.
            tracing::debug!(routing_key = rk, "no reply queue bound; reply dropped");
            return Ok(());
        };
        let tag = uuid::Uuid::new_v4().to_string();
        let envelope = control::reply_envelope(&self.hostname, payload, req, clock, &tag);
        let _: () = conn.lpush(queue, envelope.to_string()).await?;
        Ok(())
    }

    fn broker_info(&self) -> Value {
        let (host, port) = match self.client.get_connection_info().addr() {
            ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            _ => (String::new(), 0),
        };
        json!({"hostname": host, "port": port, "transport": "redis",
               "virtual_host": self.db.to_string(), "userid": null, "ssl": false})
    }

    async fn send_event(
        &self,
        conn: &mut MultiplexedConnection,
        ev: WorkerEvent,
    ) -> Result<(), PidboxError> {
        let offset = chrono::Local::now().offset().local_minus_utc();
        let cx = EventContext {
            clock: self.tick(0),
            timestamp: unix_now(),
            // Celery's utcoffset is hours *west* of UTC.
            utcoffset: (-f64::from(offset) / 3600.0).floor(),
            loadavg: loadavg(),
        };
        let body = control::worker_event_body(ev, &self.state.snapshot(), &cx);
        let tag = uuid::Uuid::new_v4().to_string();
        let envelope = control::event_envelope(ev, &self.hostname, &body, &tag);
        let channel = format!("/{}.celeryev/{}", self.db, ev.routing_key());
        let _: () = conn.publish(channel, envelope.to_string()).await?;
        Ok(())
    }

    /// worker.offline and our pidbox binding removed, as a Python worker does at shutdown.
    async fn goodbye(&self) -> Result<(), PidboxError> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        self.send_event(&mut conn, WorkerEvent::Offline).await?;
        let _: () = conn
            .srem(PIDBOX_BINDINGS, pidbox_member(&self.hostname))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_queue_is_found_by_routing_key() {
        let members = vec![
            format!("aaa{SEP}{SEP}aaa.reply.celery.pidbox"),
            format!("4ada8919{SEP}{SEP}4ada8919.reply.celery.pidbox"),
        ];
        assert_eq!(
            reply_queue(&members, "4ada8919").as_deref(),
            Some("4ada8919.reply.celery.pidbox")
        );
        assert_eq!(reply_queue(&members, "zzz"), None);
        assert_eq!(reply_queue(&["garbage".into()], "garbage"), None);
    }

    #[test]
    fn pidbox_member_matches_kombu_fanout_binding() {
        assert_eq!(
            pidbox_member("w1@vm"),
            "\x06\x16\x06\x16w1@vm.celery.pidbox"
        );
    }
}
