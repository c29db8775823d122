//! Tests of the pure pidbox/event codec against the shapes captured in celery-wire.md §6–§7.

use super::*;

fn request_envelope(body: Value, clock: u64, expires: Option<f64>) -> Vec<u8> {
    json!({
        "body": B64.encode(body.to_string()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"clock": clock, "expires": expires},
        "properties": {"delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
                       "body_encoding": "base64", "delivery_tag": "t1", "priority": 0},
    })
    .to_string()
    .into_bytes()
}

fn ping_body(destination: Value) -> Value {
    json!({"method": "ping", "arguments": {}, "destination": destination, "pattern": null,
           "matcher": null, "ticket": "a5c97007",
           "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "4ada8919"}})
}

fn info(id: &str) -> TaskInfo {
    TaskInfo {
        id: id.into(),
        name: "encode_media".into(),
        argsrepr: "('TOKEN', 3, 101)".into(),
        kwargs: json!({"force": true}).as_object().cloned().unwrap(),
        routing_key: "long_tasks".into(),
        priority: 9,
        redelivered: false,
        time_start: Some(1795747721.87),
        eta: None,
        worker_pid: Some(42),
    }
}

fn snapshot() -> WorkerSnapshot {
    WorkerSnapshot {
        hostname: "w1@vm".into(),
        pid: 42,
        active: vec![info("a1")],
        scheduled: vec![TaskInfo {
            eta: "2026-11-27T02:50:41.867054Z".parse().ok(),
            time_start: None,
            worker_pid: None,
            ..info("s1")
        }],
        revoked: vec!["r1".into()],
        registered: vec!["create_hls".into(), "encode_media".into()],
        queues: vec!["long_tasks".into()],
        ..Default::default()
    }
}

#[test]
fn decodes_a_ping_request() {
    let raw = request_envelope(ping_body(Value::Null), 3, Some(1795748086.87));
    let req = decode_request(&raw).unwrap();
    assert_eq!(req.method, "ping");
    assert_eq!(req.clock, 3);
    assert_eq!(req.expires, Some(1795748086.87));
    assert_eq!(req.ticket.as_deref(), Some("a5c97007"));
    assert_eq!(req.reply_to.as_ref().unwrap().routing_key, "4ada8919");
    assert_eq!(req.destination, None);
    assert_eq!(command(&req), Command::Ping);
}

#[test]
fn destination_and_expiry_filter() {
    let mine = decode_request(&request_envelope(ping_body(json!(["w1@vm"])), 1, None)).unwrap();
    let other = decode_request(&request_envelope(ping_body(json!(["w2@vm"])), 1, None)).unwrap();
    let expiring =
        decode_request(&request_envelope(ping_body(Value::Null), 1, Some(100.0))).unwrap();
    assert!(is_for_us(&mine, "w1@vm", 1e9));
    assert!(!is_for_us(&other, "w1@vm", 1e9));
    assert!(is_for_us(&expiring, "w1@vm", 99.0));
    assert!(!is_for_us(&expiring, "w1@vm", 101.0));
}

#[test]
fn revoke_cast_is_parsed_without_reply_to() {
    let body = json!({"method": "revoke",
        "arguments": {"task_id": "b4c044be", "terminate": true, "signal": "SIGTERM"},
        "destination": null, "pattern": null, "matcher": null});
    let req = decode_request(&request_envelope(body, 5, None)).unwrap();
    assert_eq!(req.reply_to, None);
    let expected = Command::Revoke {
        task_ids: vec!["b4c044be".into()],
        terminate: true,
    };
    assert_eq!(command(&req), expected);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(matches!(
        decode_request(b"nope"),
        Err(ControlError::Envelope(_))
    ));
    let bad = json!({"body": "!!!"}).to_string();
    assert!(matches!(
        decode_request(bad.as_bytes()),
        Err(ControlError::Body(_))
    ));
}

#[test]
fn reply_envelope_wraps_payload_under_hostname() {
    let req = decode_request(&request_envelope(ping_body(Value::Null), 3, None)).unwrap();
    let env = reply_envelope(
        "w1@vm",
        reply_payload(&Command::Ping, &snapshot()),
        &req,
        4,
        "tag",
    );
    let body: Value =
        serde_json::from_slice(&B64.decode(env["body"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(body, json!({"w1@vm": {"ok": "pong"}}));
    assert_eq!(env["headers"], json!({"ticket": "a5c97007", "clock": 4}));
    let di = &env["properties"]["delivery_info"];
    assert_eq!(
        di,
        &json!({"exchange": "reply.celery.pidbox", "routing_key": "4ada8919"})
    );
    assert_eq!(env["properties"]["body_encoding"], "base64");
}

#[test]
fn active_reports_args_as_repr_string_for_mediacms_list_tasks() {
    let v = reply_payload(&Command::Active, &snapshot());
    let t = &v[0];
    assert_eq!(t["args"], "('TOKEN', 3, 101)");
    assert_eq!(t["kwargs"], json!({"force": true}));
    assert_eq!(t["name"], "encode_media");
    assert_eq!(t["hostname"], "w1@vm");
    assert_eq!(t["time_start"], 1795747721.87);
    assert_eq!(t["worker_pid"], 42);
    assert_eq!(t["delivery_info"]["routing_key"], "long_tasks");
}

#[test]
fn scheduled_revoked_registered_queues_query() {
    let s = snapshot();
    let sched = reply_payload(&Command::Scheduled, &s);
    assert_eq!(sched[0]["eta"], "2026-11-27T02:50:41.867054+00:00");
    assert_eq!(sched[0]["request"]["id"], "s1");
    assert_eq!(reply_payload(&Command::Revoked, &s), json!(["r1"]));
    assert_eq!(
        reply_payload(&Command::Registered, &s),
        json!(["create_hls", "encode_media"])
    );
    assert_eq!(
        reply_payload(&Command::ActiveQueues, &s)[0]["name"],
        "long_tasks"
    );
    let q = reply_payload(&Command::QueryTask(vec!["a1".into(), "zz".into()]), &s);
    assert_eq!(q["a1"][0], "active");
    assert!(q.get("zz").is_none());
    let unknown = reply_payload(&Command::Unknown("shutdown".into()), &s);
    assert_eq!(unknown["error"], "No such control command: shutdown");
}

#[test]
fn heartbeat_body_and_envelope() {
    let mut s = snapshot();
    s.total.insert("encode_media".into(), 9);
    let cx = EventContext {
        clock: 7,
        timestamp: 1.5,
        utcoffset: 0.0,
        loadavg: [0.1, 0.2, 0.3],
    };
    let body = worker_event_body(WorkerEvent::Heartbeat, &s, &cx);
    assert_eq!(body["type"], "worker-heartbeat");
    assert_eq!(body["freq"], 2.0);
    assert_eq!(body["active"], 1);
    assert_eq!(body["processed"], 9);
    assert_eq!(body["clock"], 7);
    let env = event_envelope(WorkerEvent::Heartbeat, "w1@vm", &body, "tag");
    assert_eq!(env["headers"], json!({"hostname": "w1@vm"}));
    let di = &env["properties"]["delivery_info"];
    assert_eq!(
        di,
        &json!({"exchange": "celeryev", "routing_key": "worker.heartbeat"})
    );
    let stats = stats_json(&s, 3, json!({"transport": "redis"}), json!({}));
    assert_eq!(stats["total"]["encode_media"], 9);
    assert_eq!(stats["broker"]["transport"], "redis");
}

#[test]
fn terminate_method_is_a_terminating_revoke() {
    let body = json!({"method": "terminate", "arguments": {"signal": "SIGTERM", "task_id": ["x", "y"]},
        "destination": ["w1@vm"], "ticket": "t", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "r"}});
    let req = decode_request(&request_envelope(body, 1, None)).unwrap();
    let expected = Command::Revoke {
        task_ids: vec!["x".into(), "y".into()],
        terminate: true,
    };
    assert_eq!(command(&req), expected);
}
