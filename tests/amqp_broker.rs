//! `AmqpBroker` against a real RabbitMQ and real Python Celery 5.4: Python-produced tasks fetched
//! once, our create_hls run by a Python worker, redelivery after our worker dies or RabbitMQ
//! drops the connection, Celery's wire properties, poison dead-lettering, the ETA QoS increment.

#[path = "amqp_broker/rabbit.rs"]
mod rabbit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use serde_json::{json, Map, Value};

use mediacms_worker::broker::amqp::AmqpBroker;
use mediacms_worker::broker::{Broker, BrokerError, Delivery};
use mediacms_worker::celery::envelope::encode_amqp_body;
use mediacms_worker::celery::message::OutgoingTask;

fn python() -> PathBuf {
    let py = std::env::var_os("MEDIACMS_WORKER_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        py.exists(),
        "Python with celery 5.4 is required at {} (or set MEDIACMS_WORKER_PY)",
        py.display()
    );
    py
}

fn py_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// Fetch until `n` deliveries arrived (or `within` passed).
async fn fetch_n(b: &AmqpBroker, queue: &str, n: usize, within: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        if let Some(d) = b
            .fetch(&[queue.to_owned()], Duration::from_millis(500))
            .await
            .unwrap()
        {
            got.push(d);
        }
    }
    got
}

async fn fetch_one(b: &AmqpBroker, queue: &str) -> Delivery {
    fetch_n(b, queue, 1, Duration::from_secs(10))
        .await
        .pop()
        .expect("a delivery within 10 s")
}

fn create_hls(queue: &str, token: &str) -> OutgoingTask {
    OutgoingTask::new("create_hls", queue, vec![json!(token)], Map::new())
}

/// `d` is the task `t` that amqp_send.py sent at `sent_at` to `q`.
fn assert_as_sent(d: &Delivery, t: &Value, sent_at: f64, q: &str) {
    let m = d.message.as_ref().unwrap();
    assert!(!d.redelivered);
    assert_eq!(d.queue, q);
    assert_eq!(
        (m.name.as_str(), m.routing_key.as_str()),
        ("encode_media", q)
    );
    assert_eq!(Value::Array(m.args.clone()), t["args"]);
    assert_eq!(m.kwargs["force"], json!(true));
    assert_eq!(m.priority, t["priority"].as_u64().unwrap_or(0) as u8);
    match t["countdown"].as_f64() {
        Some(c) => {
            let eta = m.eta.expect("countdown sends an eta").timestamp_millis() as f64 / 1e3;
            assert!(
                (sent_at + c - 1.0..sent_at + c + 10.0).contains(&eta),
                "eta {eta} vs sent {sent_at}+{c}"
            );
        }
        None => assert_eq!(m.eta, None),
    }
}

#[tokio::test]
async fn python_send_task_is_fetched_exactly_once_with_ids_args_and_eta() {
    let q = rabbit::unique("py");
    let broker = rabbit::broker(&q, 10).await;
    assert!(broker
        .fetch(std::slice::from_ref(&q), Duration::ZERO)
        .await
        .unwrap()
        .is_none());
    let out = tokio::process::Command::new(python())
        .arg(py_dir().join("amqp_send.py"))
        .args([&rabbit::url(), &q])
        .output()
        .await
        .expect("run amqp_send.py");
    assert!(
        out.status.success(),
        "amqp_send.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).expect("amqp_send.py prints JSON");

    let got = fetch_n(&broker, &q, 3, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 3, "all three Python tasks arrive");
    let extra = broker
        .fetch(std::slice::from_ref(&q), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(extra.is_none(), "each task is delivered exactly once");
    let by_id: HashMap<String, &Delivery> = got
        .iter()
        .map(|d| (d.message.as_ref().unwrap().id.clone(), d))
        .collect();
    let sent_at = sent["sent_at"].as_f64().unwrap();
    for t in sent["tasks"].as_array().unwrap() {
        assert_as_sent(by_id[t["id"].as_str().unwrap()], t, sent_at, &q);
    }
    for d in &got {
        broker.ack(d).await.unwrap();
    }
    broker.close().await;
    assert_eq!(rabbit::depth(&q).await, 0, "acked tasks are gone");
    rabbit::delete(&[&q]).await;
}

/// `celery -A amqp_app worker -Q <q> -c 1 --pool solo`, writing side files to `side`.
fn python_worker(q: &str, side: &Path) -> tokio::process::Child {
    tokio::process::Command::new(python())
        .args(["-m", "celery", "-A", "amqp_app", "worker", "-Q", q])
        .args(["-c", "1", "--pool", "solo", "-l", "warning"])
        .args([
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ])
        .current_dir(py_dir())
        .env("AMQP_URL", rabbit::url())
        .env("SIDE_DIR", side)
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python Celery worker")
}

/// Wait for the side file `<dir>/<id>.json` a Python worker writes.
async fn side_file(dir: &Path, id: &str, worker: &mut tokio::process::Child) -> Value {
    let path = dir.join(format!("{id}.json"));
    for _ in 0..240 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).unwrap();
        }
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("Python worker exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Python worker did not run task {id} within 60 s");
}

#[tokio::test]
async fn python_worker_runs_the_create_hls_we_publish_including_an_eta_retry() {
    let q = rabbit::unique("pyworker");
    let broker = rabbit::broker(&q, 1).await;
    // We declare first: the Python worker's own declarations must agree with ours.
    let plain = create_hls(&q, "tokA");
    broker.publish(&plain).await.unwrap();
    let mut retry = create_hls(&q, "tokB");
    retry.priority = 9;
    retry.retries = 1;
    retry.parent_id = Some(retry.id.clone());
    let eta = Utc::now() + chrono::Duration::seconds(2);
    retry.eta = Some(eta);
    broker.publish(&retry).await.unwrap();

    let side = tempfile::tempdir().unwrap();
    let mut worker = python_worker(&q, side.path());
    let a = side_file(side.path(), &plain.id, &mut worker).await;
    let b = side_file(side.path(), &retry.id, &mut worker).await;
    worker.kill().await.unwrap();

    assert_eq!(a["args"], json!(["tokA"]));
    assert_eq!(
        (a["retries"].clone(), a["routing_key"].clone()),
        (json!(0), json!(q))
    );
    assert_eq!(
        (
            b["args"].clone(),
            b["retries"].clone(),
            b["priority"].clone()
        ),
        (json!(["tokB"]), json!(1), json!(9))
    );
    assert!(
        b["eta"].is_string(),
        "the Python worker saw the eta header: {b}"
    );
    let started = b["started"].as_f64().unwrap();
    assert!(
        started >= eta.timestamp_millis() as f64 / 1e3 - 0.05,
        "the ETA task ran before its ETA"
    );
    broker.close().await;
    rabbit::delete(&[&q]).await;
}

#[tokio::test]
async fn a_delivery_our_dead_worker_held_is_redelivered_to_the_next() {
    let q = rabbit::unique("redeliver");
    let a = rabbit::broker(&q, 1).await;
    let task = create_hls(&q, "tokR");
    a.publish(&task).await.unwrap();
    let first = fetch_one(&a, &q).await;
    assert!(!first.redelivered);
    a.close().await; // the worker dies mid-task: no ack
    assert!(matches!(
        a.ack(&first).await,
        Err(BrokerError::LeaseLost(_))
    ));

    let b = rabbit::broker(&q, 1).await;
    let again = fetch_one(&b, &q).await;
    assert_eq!(again.message.as_ref().unwrap().id, task.id);
    assert!(again.redelivered, "RabbitMQ marks it redelivered");
    b.ack(&again).await.unwrap();
    b.close().await;
    assert_eq!(rabbit::depth(&q).await, 0);
    rabbit::delete(&[&q]).await;
}

#[tokio::test]
async fn reconnects_after_rabbitmq_drops_the_connection_and_gets_the_task_back() {
    let q = rabbit::unique("drop");
    let broker = rabbit::broker(&q, 1).await;
    let task = create_hls(&q, "tokD");
    broker.publish(&task).await.unwrap();
    let held = fetch_one(&broker, &q).await;
    rabbit::close_connection(&format!("{q}-conn")).await;
    // The pool keeps calling fetch through errors; the broker reconnects with backoff.
    let mut again = None;
    for _ in 0..60 {
        if let Ok(Some(d)) = broker
            .fetch(std::slice::from_ref(&q), Duration::from_millis(500))
            .await
        {
            again = Some(d);
            break;
        }
    }
    let again = again.expect("the task comes back after reconnecting");
    assert_eq!(again.message.as_ref().unwrap().id, task.id);
    assert!(again.redelivered);
    assert!(
        broker.ack(&held).await.is_err(),
        "the old connection's tag is void"
    );
    broker.ack(&again).await.unwrap();
    broker.close().await;
    assert_eq!(rabbit::depth(&q).await, 0);
    rabbit::delete(&[&q]).await;
}

fn header<'a>(props: &'a BasicProperties, key: &str) -> &'a AMQPValue {
    let headers = props.headers().as_ref().expect("application_headers");
    headers
        .inner()
        .get(key)
        .unwrap_or_else(|| panic!("header {key}"))
}

#[tokio::test]
async fn what_we_publish_carries_celerys_properties_and_header_types() {
    let q = rabbit::unique("props");
    let broker = rabbit::broker(&q, 1).await;
    let mut task = create_hls(&q, "tokP");
    task.time_limit = (Some(7200.0), None);
    broker.publish(&task).await.unwrap();
    task.priority = 9;
    task.id = uuid::Uuid::new_v4().to_string();
    broker.publish(&task).await.unwrap();
    let got = rabbit::drain(&q).await;
    assert_eq!(got.len(), 2);
    for (m, priority) in got.iter().zip([None, Some(9)]) {
        let (d, p) = (&m.delivery, &m.delivery.properties);
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("", q.as_str())
        );
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(p.content_encoding().as_ref().unwrap().as_str(), "utf-8");
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), priority, "priority only when non-zero");
        let id = p.correlation_id().as_ref().unwrap().as_str().to_owned();
        assert!(p.reply_to().is_some());
        assert!(matches!(header(p, "id"), AMQPValue::LongString(s) if s.to_string() == id));
        assert_eq!(header(p, "shadow"), &AMQPValue::Void, "None is void");
        assert_eq!(header(p, "retries"), &AMQPValue::LongInt(0));
        let AMQPValue::FieldArray(limits) = header(p, "timelimit") else {
            panic!("timelimit is an array")
        };
        assert_eq!(
            limits.as_slice(),
            [AMQPValue::LongInt(7200), AMQPValue::Void]
        );
        assert!(matches!(header(p, "stamps"), AMQPValue::FieldTable(_)));
        assert_eq!(p.headers().as_ref().unwrap().inner().len(), 19);
        let sent = OutgoingTask {
            id: id.clone(),
            priority: priority.unwrap_or(0),
            ..task.clone()
        };
        assert_eq!(d.data, encode_amqp_body(&sent), "raw JSON body");
    }
    broker.close().await;
    rabbit::delete(&[&q]).await;
}

#[tokio::test]
async fn an_undecodable_delivery_is_dead_lettered_with_its_raw_body() {
    let q = rabbit::unique("poison");
    let broker = rabbit::broker(&q, 1).await;
    assert!(broker
        .fetch(std::slice::from_ref(&q), Duration::ZERO)
        .await
        .unwrap()
        .is_none()); // declares
    let admin = rabbit::admin().await;
    let props = BasicProperties::default().with_content_type("application/json".into());
    admin
        .ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"[1, 2",
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let d = fetch_one(&broker, &q).await;
    assert!(d.message.is_err(), "a decode error still yields a delivery");
    broker.dead_letter(&d, "not JSON").await.unwrap();
    broker.close().await;
    let dlq = rabbit::dead_letter_queue(&q);
    let records = rabbit::drain(&dlq).await;
    assert_eq!(records.len(), 1);
    let record: Value = serde_json::from_slice(&records[0].delivery.data).unwrap();
    assert_eq!(
        (record["body"].clone(), record["reason"].clone()),
        (json!("[1, 2"), json!("not JSON"))
    );
    assert_eq!(record["queue"], json!(q));
    assert_eq!(
        rabbit::depth(&q).await,
        0,
        "the poison message is acked, not requeued"
    );
    rabbit::delete(&[&q, &dlq]).await;
}

#[tokio::test]
async fn an_eta_hold_raises_the_qos_so_a_one_slot_worker_keeps_fetching() {
    let q = rabbit::unique("eta");
    let broker = rabbit::broker(&q, 1).await;
    let mut later = create_hls(&q, "tokLater");
    later.eta = Some(Utc::now() + chrono::Duration::seconds(60));
    broker.publish(&later).await.unwrap();
    let now = create_hls(&q, "tokNow");
    broker.publish(&now).await.unwrap();
    let held = fetch_one(&broker, &q).await;
    assert_eq!(held.message.as_ref().unwrap().id, later.id);
    // With prefetch 1 and no increment, RabbitMQ would send nothing more until the ack.
    let next = fetch_one(&broker, &q).await;
    assert_eq!(next.message.as_ref().unwrap().id, now.id);
    broker.ack(&next).await.unwrap();
    broker.ack(&held).await.unwrap();
    broker.close().await;
    assert_eq!(rabbit::depth(&q).await, 0);
    rabbit::delete(&[&q]).await;
}
