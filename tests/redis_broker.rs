//! The Redis broker against real Redis and real Python Celery 5.4 / kombu 5.7: priority order,
//! kombu's unacked bookkeeping, results read by `AsyncResult`, tasks run by a Python worker,
//! lease restore vs. kombu's visibility-timeout restore, and never touching Python's entries.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use mediacms_worker::broker::redis::{RedisBroker, RedisBrokerOptions};
use mediacms_worker::broker::{Broker, BrokerError, Delivery, ResultStore};
use mediacms_worker::celery::message::OutgoingTask;
use mediacms_worker::celery::result::TaskResult;
use serde_json::{json, Map, Value};
use support::redis::{run_py, run_py_raw, PyChild, TestRedis};

const Q: &str = "long_tasks";
const PY_TIMEOUT: Duration = Duration::from_secs(30);
const DEAD_LETTER: &str = "mediacms-worker.dead-letter";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn shared() -> PathBuf {
    std::env::var_os("MEDIACMS_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures").into())
}

fn py_env(r: &TestRedis) -> HashMap<&'static str, String> {
    HashMap::from([("BROKER_URL", r.url.clone())])
}

async fn broker(r: &TestRedis, lease: Duration) -> RedisBroker {
    let opts = RedisBrokerOptions {
        lease,
        dead_letter_key: DEAD_LETTER.into(),
        ..RedisBrokerOptions::default()
    };
    RedisBroker::connect(&r.url, opts).await.expect("connect")
}

fn task(name: &str, args: Value, priority: u8) -> OutgoingTask {
    let args = args.as_array().cloned().unwrap();
    let mut t = OutgoingTask::new(name, Q, args, Map::new());
    t.priority = priority;
    t
}

async fn fetch(b: &RedisBroker, queues: &[&str]) -> Option<Delivery> {
    let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
    b.fetch(&queues, Duration::from_millis(300)).await.unwrap()
}

fn first_arg(d: &Delivery) -> String {
    let m = d.message.as_ref().expect("decodes");
    m.args[0].as_str().unwrap().to_owned()
}

fn q(c: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    args[1..].iter().for_each(|a| {
        cmd.arg(*a);
    });
    cmd.query(c).unwrap()
}

fn get<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    redis::from_redis_value(q(c, args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_priorities_are_fetched_once_in_kombu_order_and_held_like_kombu() {
    let r = TestRedis::claim();
    let sends = json!([
        {"name": "create_hls", "args": ["P9"], "queue": Q, "priority": 9},
        {"name": "create_hls", "args": ["P6"], "queue": Q, "priority": 6},
        {"name": "create_hls", "args": ["P3"], "queue": Q, "priority": 3},
        {"name": "create_hls", "args": ["CD5"], "queue": Q, "priority": 5, "countdown": 60},
        {"name": "encode_media", "args": ["P0", 1, 2], "kwargs": {"force": true}, "queue": Q, "priority": 0},
    ]);
    run_py(&["send.py", &sends.to_string()], &py_env(&r), PY_TIMEOUT);
    let b = broker(&r, Duration::from_secs(90)).await;
    let mut held = Vec::new();
    while let Some(d) = fetch(&b, &[Q]).await {
        held.push(d);
    }
    let order: Vec<String> = held.iter().map(first_arg).collect();
    assert_eq!(order, ["P0", "P3", "CD5", "P6", "P9"]);
    assert!(held[2].message.as_ref().unwrap().eta.is_some());
    let mut c = r.conn();
    for d in &held {
        // kombu's exact value: the message bytes as fetched, then exchange and routing key.
        let value: String = get(&mut c, &["HGET", "unacked", &d.tag]);
        let raw = String::from_utf8(d.raw.clone()).unwrap();
        assert_eq!(value, format!("[{raw}, \"\", \"{Q}\"]"));
        let score: f64 = get(&mut c, &["ZSCORE", "unacked_index", &d.tag]);
        assert!(
            (now() - score).abs() < 30.0,
            "unacked_index score is fetch time"
        );
        let lease: f64 = get(&mut c, &["ZSCORE", "mediacms-worker.leases", &d.tag]);
        assert!(
            (lease - score - 90.0).abs() < 1.0,
            "lease = fetch time + 90 s"
        );
        assert!(!d.redelivered);
    }
    for d in &held {
        b.ack(d).await.unwrap();
    }
    for key in ["unacked", "unacked_index", "mediacms-worker.leases"] {
        assert_eq!(
            get::<i64>(&mut c, &["EXISTS", key]),
            0,
            "{key} emptied by ack"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_consumed_round_robin() {
    let r = TestRedis::claim();
    let b = broker(&r, Duration::from_secs(90)).await;
    for (queue, token) in [("qa", "a1"), ("qa", "a2"), ("qb", "b1"), ("qb", "b2")] {
        let mut t = task("create_hls", json!([token]), 0);
        t.queue = queue.into();
        b.publish(&t).await.unwrap();
    }
    let mut got = Vec::new();
    while let Some(d) = fetch(&b, &["qa", "qb"]).await {
        got.push(first_arg(&d));
        b.ack(&d).await.unwrap();
    }
    assert_eq!(got, ["a1", "b1", "a2", "b2"]);
}

fn py_get(r: &TestRedis, id: &str) -> Value {
    let out = run_py(&["get_result.py", id], &py_env(r), PY_TIMEOUT);
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_read_by_python_asyncresult() {
    let r = TestRedis::claim();
    let b = broker(&r, Duration::from_secs(90)).await;
    let ok = json!({"ok": true, "token": "TOKEN"});
    let mut sub_conn = r.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("celery-task-meta-ok-1").unwrap();
    b.store_result(&TaskResult::success("ok-1", ok.clone(), Utc::now()))
        .await
        .unwrap();
    // PUBLISH on the key's channel carries the same document as the key.
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let published: String = sub.get_message().unwrap().get_payload().unwrap();
    drop(sub);
    let stored: String = get(&mut r.conn(), &["GET", "celery-task-meta-ok-1"]);
    assert_eq!(published, stored);
    assert_eq!(py_get(&r, "ok-1"), json!({ "value": ok }));

    let failed = TaskResult::failure(
        "bad-1",
        "ValueError",
        "builtins",
        "ffmpeg failed",
        Utc::now(),
    );
    b.store_result(&failed.with_traceback("Traceback (most recent call last):\n"))
        .await
        .unwrap();
    let got = py_get(&r, "bad-1");
    assert_eq!(got["error_type"], "ValueError");
    assert_eq!(got["error"], "ffmpeg failed");
    let unknown = TaskResult::failure(
        "bad-2",
        "NotRegistered",
        "celery.exceptions",
        "no_such_task",
        Utc::now(),
    );
    b.store_result(&unknown).await.unwrap();
    assert_eq!(py_get(&r, "bad-2")["error_type"], "NotRegistered");

    // Celery never overwrites a SUCCESS.
    let late = TaskResult::failure("ok-1", "ValueError", "builtins", "late", Utc::now());
    b.store_result(&late).await.unwrap();
    assert_eq!(
        get::<String>(&mut r.conn(), &["GET", "celery-task-meta-ok-1"]),
        stored
    );
    let ttl: i64 = get(&mut r.conn(), &["TTL", "celery-task-meta-bad-1"]);
    assert!((86_000..=86_400).contains(&ttl));
}

/// Poll `celery-task-meta-<id>` until it exists.
fn wait_result(r: &TestRedis, id: &str, log: &std::path::Path) -> Value {
    let key = format!("celery-task-meta-{id}");
    let start = Instant::now();
    loop {
        let doc: Option<String> = get(&mut r.conn(), &["GET", &key]);
        if let Some(doc) = doc {
            return serde_json::from_str(&doc).unwrap();
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            start.elapsed() < PY_TIMEOUT,
            "no result for {id}; worker log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_runs_what_we_publish() {
    let r = TestRedis::claim();
    let b = broker(&r, Duration::from_secs(90)).await;
    // A retry as our worker would publish it: take a delivery, republish via `retry_of`.
    let mut original = task("encode_media", json!(["TOK", 1, 2]), 9);
    original.kwargs.insert("force".into(), json!(true));
    original.time_limit = (None, Some(7200.0));
    b.publish(&original).await.unwrap();
    let held = fetch(&b, &[Q]).await.unwrap();
    let held_msg = held.message.as_ref().unwrap();
    assert_eq!(held_msg.id, original.id);
    let retry = OutgoingTask::retry_of(held_msg, Duration::from_secs(1), Utc::now());
    b.publish(&retry).await.unwrap();
    b.ack(&held).await.unwrap();
    let hls = task("create_hls", json!(["TOKEN"]), 0);
    b.publish(&hls).await.unwrap();
    let member = format!("{Q}\x06\x16\x06\x16{Q}");
    let bound: bool = get(
        &mut r.conn(),
        &["SISMEMBER", "_kombu.binding.long_tasks", &member],
    );
    assert!(bound, "publish declares the binding like kombu");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let worker = "-m celery -A tiny_app worker -Q long_tasks -c 1 --pool solo \
                  --without-gossip --without-mingle --without-heartbeat -l info";
    let worker_args: Vec<&str> = worker.split_whitespace().collect();
    let _worker = PyChild::spawn(&worker_args, &py_env(&r), &log);
    let done = wait_result(&r, &hls.id, &log);
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(done["result"]["task"], "create_hls");
    assert_eq!(done["result"]["args"], json!(["TOKEN"]));
    assert_eq!(done["result"]["queue"], Q);
    let done = wait_result(&r, &retry.id, &log);
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(done["result"]["retries"], 1);
    assert_eq!(done["result"]["kwargs"]["force"], true);
    assert!(
        done["result"]["eta"].is_string(),
        "the worker honoured the ETA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_restored_and_redelivered() {
    let r = TestRedis::claim();
    let lease = Duration::from_secs(60);
    let a = broker(&r, lease).await;
    let t = task("create_hls", json!(["LEASED"]), 0);
    a.publish(&t).await.unwrap();
    let first = fetch(&a, &[Q]).await.unwrap();
    drop(a); // a kill -9: no ack, no renewal, no requeue

    let b = broker(&r, lease).await;
    assert_eq!(b.restore_expired().await.unwrap(), 0, "lease still running");
    expire_lease(&mut r.conn(), &first.tag);
    assert_eq!(b.restore_expired().await.unwrap(), 1);
    let again = fetch(&b, &[Q]).await.expect("restored to the queue");
    assert_eq!(again.tag, first.tag, "kombu keeps the delivery tag");
    assert!(again.redelivered);
    let m = again.message.as_ref().unwrap();
    assert_eq!(m.id, t.id);
    assert_eq!(m.headers["redelivered"], true);
    b.ack(&again).await.unwrap();
    let mut c = r.conn();
    assert_eq!(get::<i64>(&mut c, &["HLEN", "unacked"]), 0);
    assert_eq!(get::<i64>(&mut c, &["ZCARD", "mediacms-worker.leases"]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_survives_celery_inspect_but_a_stale_entry_does_not() {
    let r = TestRedis::claim();
    let a = broker(&r, Duration::from_secs(90)).await;
    a.publish(&task("create_hls", json!(["LIVE"]), 0))
        .await
        .unwrap();
    a.publish(&task("create_hls", json!(["STALE"]), 0))
        .await
        .unwrap();
    let live = fetch(&a, &[Q]).await.unwrap();
    let stale = fetch(&a, &[Q]).await.unwrap();
    let mut c = r.conn();
    // Both look held for 4000 s, past the 3600 s default visibility timeout of a bare client.
    let old = format!("{}", now() - 4000.0);
    for d in [&live, &stale] {
        q(&mut c, &["ZADD", "unacked_index", &old, &d.tag]);
    }
    let held = [(live.tag.clone(), live.lease.clone())];
    assert!(a.renew_leases(&held).await.unwrap().is_empty());

    let inspect = [
        "-m",
        "celery",
        "-b",
        &r.url,
        "inspect",
        "ping",
        "--timeout",
        "0.5",
    ];
    let out = run_py_raw(&inspect, &HashMap::new(), PY_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No nodes replied"), "inspect ran: {stderr}");

    // The renewed delivery is still held by us, untouched by kombu.
    let index: f64 = get(&mut c, &["ZSCORE", "unacked_index", &live.tag]);
    assert!(now() - index < 60.0);
    assert_eq!(get::<i64>(&mut c, &["HEXISTS", "unacked", &live.tag]), 1);
    // The stale one was restored by kombu itself: proof that it reads our unacked format.
    assert_eq!(get::<i64>(&mut c, &["HEXISTS", "unacked", &stale.tag]), 0);
    let queued: Vec<String> = get(&mut c, &["LRANGE", Q, "0", "-1"]);
    assert_eq!(queued.len(), 1);
    let restored: Value = serde_json::from_str(&queued[0]).unwrap();
    assert_eq!(restored["properties"]["delivery_tag"], stale.tag.as_str());
    assert_eq!(restored["headers"]["redelivered"], true);

    // Our bookkeeping notices it lost that one and neither renews nor re-pushes it.
    let held = [(stale.tag.clone(), stale.lease.clone())];
    assert_eq!(
        a.renew_leases(&held).await.unwrap(),
        vec![stale.lease.clone()]
    );
    assert_eq!(get::<i64>(&mut c, &["LLEN", Q]), 1);
    a.ack(&live).await.unwrap();
}

/// Let a lease run out without waiting for it: the delivery's fetch time and lease expiry
/// both move back until the expiry is a second in the past — what a restorer would see had
/// the holder stalled that long (the holder key's TTL is the fence's, not the lease's).
fn expire_lease(c: &mut redis::Connection, tag: &str) {
    let expiry: f64 = get(c, &["ZSCORE", "mediacms-worker.leases", tag]);
    let back = -(expiry - now() + 1.0);
    for key in ["mediacms-worker.leases", "unacked_index"] {
        let _: f64 = get(c, &["ZINCRBY", key, &back.to_string(), tag]);
    }
}

/// Plant an `unacked` entry as a Python worker holding an ETA message would.
fn plant_python_entry(c: &mut redis::Connection, tag: &str, score: f64) {
    let raw = std::fs::read_to_string(shared().join("mediacms/messages/encode_media-1.json"))
        .expect("MediaCMS message fixture");
    let value = format!("[{raw}, \"\", \"{Q}\"]");
    q(c, &["HSET", "unacked", tag, &value]);
    q(c, &["ZADD", "unacked_index", &score.to_string(), tag]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_held_by_python_are_never_restored() {
    let r = TestRedis::claim();
    let mut c = r.conn();
    let ancient = now() - 100_000.0;
    plant_python_entry(&mut c, "python-held", ancient);
    // A tag we once leased, restored by kombu and since fetched by a Python worker.
    plant_python_entry(&mut c, "python-refetched", now());
    q(
        &mut c,
        &[
            "ZADD",
            "mediacms-worker.leases",
            &(now() - 50.0).to_string(),
            "python-refetched",
        ],
    );

    let b = broker(&r, Duration::from_secs(1)).await;
    b.publish(&task("create_hls", json!(["OURS"]), 0))
        .await
        .unwrap();
    let ours = fetch(&b, &[Q]).await.unwrap();
    expire_lease(&mut c, &ours.tag);
    // Restored by another worker of the fleet: a worker never restores its own holding.
    let other = broker(&r, Duration::from_secs(1)).await;
    assert_eq!(
        other.restore_expired().await.unwrap(),
        1,
        "only our fleet's delivery"
    );

    let queued: Vec<String> = get(&mut c, &["LRANGE", Q, "0", "-1"]);
    assert_eq!(queued.len(), 1);
    assert!(queued[0].contains(&ours.tag));
    for tag in ["python-held", "python-refetched"] {
        assert_eq!(get::<i64>(&mut c, &["HEXISTS", "unacked", tag]), 1, "{tag}");
    }
    let score: f64 = get(&mut c, &["ZSCORE", "unacked_index", "python-held"]);
    assert_eq!(score, ancient.to_string().parse::<f64>().unwrap());
    assert_eq!(get::<i64>(&mut c, &["ZCARD", "mediacms-worker.leases"]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_requeue_puts_back_in_front() {
    let r = TestRedis::claim();
    let mut c = r.conn();
    let fixture =
        std::fs::read_to_string(shared().join("mediacms/messages/encode_media-1.json")).unwrap();
    q(&mut c, &["LPUSH", Q, "not json at all"]);
    let p9 = format!("{Q}\x06\x169");
    q(&mut c, &["LPUSH", &p9, &fixture]);
    let b = broker(&r, Duration::from_secs(90)).await;

    let poison = fetch(&b, &[Q]).await.unwrap();
    assert!(poison.message.is_err());
    assert!(uuid::Uuid::parse_str(&poison.tag).is_ok(), "generated tag");
    let value: String = get(&mut c, &["HGET", "unacked", &poison.tag]);
    assert_eq!(value, format!("[\"not json at all\", \"\", \"{Q}\"]"));
    b.dead_letter(&poison, "undecodable").await.unwrap();
    let dead: Vec<String> = get(&mut c, &["LRANGE", DEAD_LETTER, "0", "-1"]);
    let record: Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(record["raw"], "not json at all");
    assert_eq!(
        (record["reason"].as_str(), record["queue"].as_str()),
        (Some("undecodable"), Some(Q))
    );
    assert_eq!(get::<i64>(&mut c, &["HEXISTS", "unacked", &poison.tag]), 0);

    let held = fetch(&b, &[Q]).await.unwrap();
    assert_eq!(held.message.as_ref().unwrap().name, "encode_media");
    b.publish(&task("create_hls", json!(["BEHIND"]), 9))
        .await
        .unwrap();
    b.requeue(&held).await.unwrap();
    let again = fetch(&b, &[Q]).await.unwrap();
    assert_eq!(
        (again.tag.as_str(), again.redelivered),
        (held.tag.as_str(), true)
    );
    b.ack(&again).await.unwrap();
    assert!(matches!(
        b.requeue(&again).await,
        Err(BrokerError::LeaseLost(_))
    ));
    assert_eq!(first_arg(&fetch(&b, &[Q]).await.unwrap()), "BEHIND");
}

/// Kill every client connection on this test's DB (ours only: the DB is private).
fn kill_connections(r: &TestRedis) -> usize {
    let mut admin = redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_connection()
        .unwrap();
    let list: String = get(&mut admin, &["CLIENT", "LIST"]);
    let db = format!(" db={} ", r.db);
    let ids: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(&db))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next())
        .collect();
    for id in &ids {
        q(&mut admin, &["CLIENT", "KILL", "ID", id]);
    }
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_come_back_after_redis_drops_them() {
    let r = TestRedis::claim();
    let b = broker(&r, Duration::from_secs(90)).await;
    b.publish(&task("create_hls", json!(["ONE"]), 0))
        .await
        .unwrap();
    let one = fetch(&b, &[Q]).await.unwrap();
    assert!(kill_connections(&r) >= 2, "command and BRPOP connections");
    b.ack(&one)
        .await
        .expect("ack retries over a fresh connection");

    b.publish(&task("create_hls", json!(["TWO"]), 0))
        .await
        .unwrap();
    assert!(kill_connections(&r) >= 1);
    let mut errors = 0;
    let two = loop {
        match b.fetch(&[Q.to_string()], Duration::from_millis(300)).await {
            Ok(Some(d)) => break d,
            Ok(None) => panic!("the message must still be queued"),
            Err(BrokerError::Connection(_)) if errors < 3 => errors += 1,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(first_arg(&two), "TWO");
    b.ack(&two).await.unwrap();
    assert_eq!(get::<i64>(&mut r.conn(), &["HLEN", "unacked"]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_abandoned_by_its_caller_loses_nothing() {
    let r = TestRedis::claim();
    let b = broker(&r, Duration::from_secs(90)).await;
    let queues = vec![Q.to_string()];
    // The caller gives up (shutdown, select!) while the BRPOP is still blocking …
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        b.fetch(&queues, Duration::from_secs(2)),
    );
    assert!(abandoned.await.is_err());
    // … and a message arrives for that BRPOP: it must go back to the queue, unchanged.
    b.publish(&task("create_hls", json!(["LATE"]), 0))
        .await
        .unwrap();
    let d = b
        .fetch(&queues, Duration::from_secs(3))
        .await
        .unwrap()
        .expect("the popped message was put back");
    assert_eq!(first_arg(&d), "LATE");
    assert!(!d.redelivered);
    b.ack(&d).await.unwrap();
    let mut c = r.conn();
    assert_eq!(get::<i64>(&mut c, &["HLEN", "unacked"]), 0);
    assert_eq!(get::<i64>(&mut c, &["LLEN", Q]), 0);
}
