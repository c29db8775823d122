//! Pure pidbox (remote control) and worker-event codec: decode broadcast requests, decide whether
//! one is for us, build Celery-shaped reply payloads and envelopes, and worker event bodies.
//! No I/O: the Redis adapter (`broker::pidbox`) feeds bytes in and sends the values out.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// The exchange replies are published on (`reply.celery.pidbox`).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// Heartbeat period announced in `freq` and used by the adapter (Celery's default, 2 s).
pub const HEARTBEAT_SECS: f64 = 2.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("pidbox envelope: {0}")]
    Envelope(String),
    #[error("pidbox body: {0}")]
    Body(String),
}

/// Where a reply goes: the client's reply queue is bound under `routing_key`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyTo {
    pub exchange: String,
    pub routing_key: String,
}

/// One decoded broadcast request.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRequest {
    pub method: String,
    pub arguments: Map<String, Value>,
    /// `None` = every worker.
    pub destination: Option<Vec<String>>,
    pub ticket: Option<String>,
    /// `None` for casts (e.g. `revoke` without reply): nothing is sent back.
    pub reply_to: Option<ReplyTo>,
    /// Sender's Lamport clock (`headers.clock`).
    pub clock: u64,
    /// Unix seconds after which the request must be dropped (`headers.expires`).
    pub expires: Option<f64>,
}

/// What a request asks of the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Ping,
    Active,
    Reserved,
    Scheduled,
    Revoked,
    Registered,
    ActiveQueues,
    Stats,
    Conf,
    QueryTask(Vec<String>),
    Revoke {
        task_ids: Vec<String>,
        terminate: bool,
    },
    Unknown(String),
}

/// One task as the control plane reports it (active, reserved or scheduled).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    pub id: String,
    pub name: String,
    /// Python repr of the positional args (`headers.argsrepr`).
    pub argsrepr: String,
    pub kwargs: Map<String, Value>,
    pub routing_key: String,
    pub priority: u8,
    pub redelivered: bool,
    /// Unix seconds the job started (active only).
    pub time_start: Option<f64>,
    pub eta: Option<DateTime<Utc>>,
    /// Set for active jobs (our process id; jobs run in-process).
    pub worker_pid: Option<u32>,
}

/// Everything the control plane reads from the pool, taken at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerSnapshot {
    pub hostname: String,
    pub pid: u32,
    pub active: Vec<TaskInfo>,
    pub reserved: Vec<TaskInfo>,
    pub scheduled: Vec<TaskInfo>,
    pub revoked: Vec<String>,
    /// Tasks processed per task name (Celery's `stats.total`).
    pub total: BTreeMap<String, u64>,
    pub registered: Vec<String>,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub prefetch_count: usize,
    pub uptime_secs: f64,
}

fn field<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// Decode a pidbox message as published on `/<db>.celery.pidbox` (a kombu Redis envelope).
pub fn decode_request(raw: &[u8]) -> Result<ControlRequest, ControlError> {
    let env: Value =
        serde_json::from_slice(raw).map_err(|e| ControlError::Envelope(e.to_string()))?;
    let body_b64 = env["body"]
        .as_str()
        .ok_or_else(|| ControlError::Envelope("no body".into()))?;
    let body_bytes = B64
        .decode(body_b64)
        .map_err(|e| ControlError::Body(e.to_string()))?;
    let body: Value =
        serde_json::from_slice(&body_bytes).map_err(|e| ControlError::Body(e.to_string()))?;
    let method = body["method"]
        .as_str()
        .ok_or_else(|| ControlError::Body("no method".into()))?;
    let reply_to = field(&body, "reply_to").and_then(|r| {
        Some(ReplyTo {
            exchange: r["exchange"].as_str().unwrap_or(REPLY_EXCHANGE).to_owned(),
            routing_key: r["routing_key"].as_str()?.to_owned(),
        })
    });
    Ok(ControlRequest {
        method: method.to_owned(),
        arguments: body["arguments"].as_object().cloned().unwrap_or_default(),
        destination: str_list(field(&body, "destination")),
        ticket: field(&body, "ticket")
            .and_then(Value::as_str)
            .map(str::to_owned),
        reply_to,
        clock: env["headers"]["clock"].as_u64().unwrap_or(0),
        expires: env["headers"]["expires"].as_f64(),
    })
}

/// Celery's filter: handle when `destination` is absent or names us, and not yet expired.
pub fn is_for_us(req: &ControlRequest, hostname: &str, now_unix: f64) -> bool {
    let addressed = req
        .destination
        .as_ref()
        .is_none_or(|d| d.is_empty() || d.iter().any(|h| h == hostname));
    addressed && req.expires.is_none_or(|exp| now_unix <= exp)
}

/// What the request asks for.
pub fn command(req: &ControlRequest) -> Command {
    let args = &req.arguments;
    match req.method.as_str() {
        "ping" => Command::Ping,
        "active" => Command::Active,
        "reserved" => Command::Reserved,
        "scheduled" => Command::Scheduled,
        "revoked" => Command::Revoked,
        "registered" => Command::Registered,
        "active_queues" => Command::ActiveQueues,
        "stats" => Command::Stats,
        "conf" => Command::Conf,
        "query_task" => Command::QueryTask(str_list(args.get("ids")).unwrap_or_default()),
        // `celery control terminate <signal> <id>` is a revoke with terminate=True.
        m @ ("revoke" | "terminate") => Command::Revoke {
            task_ids: str_list(args.get("task_id")).unwrap_or_default(),
            terminate: m == "terminate"
                || args
                    .get("terminate")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
        },
        other => Command::Unknown(other.to_owned()),
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// Celery's request dict (`Request.info`). Deliberate deviation: `args` is the argsrepr **string**,
/// not a JSON list, because MediaCMS's `list_tasks` calls `.replace()`/`.split()` on it and breaks
/// on the list that Python workers send (celery-wire.md §0, §11.11).
pub fn task_info_json(t: &TaskInfo, hostname: &str) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "args": t.argsrepr,
        "kwargs": t.kwargs,
        "type": t.name,
        "hostname": hostname,
        "time_start": t.time_start,
        // We ack late (after finalising), so nothing held is acknowledged yet.
        "acknowledged": false,
        "delivery_info": {
            "exchange": "",
            "routing_key": t.routing_key,
            "priority": t.priority,
            "redelivered": t.redelivered,
        },
        "worker_pid": t.worker_pid,
    })
}

fn scheduled_json(t: &TaskInfo, hostname: &str) -> Value {
    json!({
        "eta": t.eta.map(iso),
        "priority": t.priority,
        "request": task_info_json(t, hostname),
    })
}

fn queue_json(name: &str) -> Value {
    json!({
        "name": name,
        "exchange": {"name": name, "type": "direct", "arguments": null, "durable": true,
                     "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false},
        "routing_key": name,
        "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false,
        "alias": null, "bindings": [], "no_declare": null, "expires": null,
        "message_ttl": null, "max_length": null, "max_length_bytes": null, "max_priority": null,
    })
}

/// `stats` payload; `broker` and `rusage` come from the adapter (they need I/O).
/// Celery reports uptime in whole seconds.
#[allow(clippy::cast_possible_truncation)] // float→int `as` saturates (NaN → 0): whole seconds wanted
fn whole_seconds(secs: f64) -> u64 {
    secs.max(0.0) as u64
}

pub fn stats_json(s: &WorkerSnapshot, clock: u64, broker: Value, rusage: Value) -> Value {
    json!({
        "total": s.total,
        "pid": s.pid,
        "clock": clock.to_string(),
        "uptime": whole_seconds(s.uptime_secs),
        "pool": {
            "implementation": "mediacms_worker:tokio",
            "max-concurrency": s.concurrency,
            "processes": [s.pid],
            "max-tasks-per-child": "N/A",
            "put-guarded-by-semaphore": false,
            "timeouts": [0, 0],
        },
        "broker": broker,
        "prefetch_count": s.prefetch_count,
        "rusage": rusage,
    })
}

/// The reply payload for a command, or `None` when Celery sends nothing back.
/// `stats` is built separately ([`stats_json`]) because it needs adapter data.
pub fn reply_payload(cmd: &Command, s: &WorkerSnapshot) -> Value {
    let h = s.hostname.as_str();
    let list =
        |ts: &[TaskInfo]| Value::from(ts.iter().map(|t| task_info_json(t, h)).collect::<Vec<_>>());
    match cmd {
        Command::Ping => json!({"ok": "pong"}),
        Command::Active => list(&s.active),
        Command::Reserved => list(&s.reserved),
        Command::Scheduled => s.scheduled.iter().map(|t| scheduled_json(t, h)).collect(),
        Command::Revoked => json!(s.revoked),
        Command::Registered => json!(s.registered),
        Command::ActiveQueues => s.queues.iter().map(|q| queue_json(q)).collect(),
        Command::Stats => stats_json(s, 0, json!({}), json!({})),
        Command::Conf => json!({}),
        Command::QueryTask(ids) => query_task_json(ids, s),
        Command::Revoke { task_ids, .. } => {
            json!({"ok": format!("tasks {} flagged as revoked", task_ids.join(", "))})
        }
        Command::Unknown(m) => json!({"error": format!("No such control command: {m}")}),
    }
}

fn query_task_json(ids: &[String], s: &WorkerSnapshot) -> Value {
    let mut out = Map::new();
    let groups = [
        ("active", &s.active),
        ("reserved", &s.reserved),
        ("scheduled", &s.scheduled),
    ];
    for (state, tasks) in groups {
        for t in tasks.iter().filter(|t| ids.contains(&t.id)) {
            out.insert(t.id.clone(), json!([state, task_info_json(t, &s.hostname)]));
        }
    }
    Value::Object(out)
}

fn envelope(body: &Value, headers: Value, exchange: &str, rk: &str, tag: &str) -> Value {
    json!({
        "body": B64.encode(body.to_string()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": exchange, "routing_key": rk},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": tag,
        },
    })
}

/// The list entry LPUSHed to the client's reply queue: `{hostname: payload}` wrapped.
pub fn reply_envelope(
    hostname: &str,
    payload: Value,
    req: &ControlRequest,
    clock: u64,
    tag: &str,
) -> Value {
    let body = json!({ hostname: payload });
    let rk = req.reply_to.as_ref().map_or("", |r| r.routing_key.as_str());
    envelope(
        &body,
        json!({"ticket": req.ticket, "clock": clock}),
        REPLY_EXCHANGE,
        rk,
        tag,
    )
}

/// Worker lifecycle events (always sent, even without `-E`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    Online,
    Heartbeat,
    Offline,
}

impl WorkerEvent {
    /// The routing key, also the tail of the channel `/<db>.celeryev/<rk>`.
    pub fn routing_key(self) -> &'static str {
        match self {
            WorkerEvent::Online => "worker.online",
            WorkerEvent::Heartbeat => "worker.heartbeat",
            WorkerEvent::Offline => "worker.offline",
        }
    }
    fn type_name(self) -> &'static str {
        match self {
            WorkerEvent::Online => "worker-online",
            WorkerEvent::Heartbeat => "worker-heartbeat",
            WorkerEvent::Offline => "worker-offline",
        }
    }
}

/// Host facts for an event that need I/O to read.
#[derive(Debug, Clone, PartialEq)]
pub struct EventContext {
    pub clock: u64,
    pub timestamp: f64,
    pub utcoffset: f64,
    pub loadavg: [f64; 3],
}

/// The §6 event body.
pub fn worker_event_body(ev: WorkerEvent, s: &WorkerSnapshot, cx: &EventContext) -> Value {
    json!({
        "hostname": s.hostname,
        "utcoffset": cx.utcoffset,
        "pid": s.pid,
        "clock": cx.clock,
        "freq": HEARTBEAT_SECS,
        "active": s.active.len(),
        "processed": s.total.values().sum::<u64>(),
        "loadavg": cx.loadavg,
        "sw_ident": "mediacms-worker",
        "sw_ver": env!("CARGO_PKG_VERSION"),
        "sw_sys": "Linux",
        "timestamp": cx.timestamp,
        "type": ev.type_name(),
    })
}

/// The message PUBLISHed on `/<db>.celeryev/<rk>`.
pub fn event_envelope(ev: WorkerEvent, hostname: &str, body: &Value, tag: &str) -> Value {
    envelope(
        body,
        json!({"hostname": hostname}),
        "celeryev",
        ev.routing_key(),
        tag,
    )
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
